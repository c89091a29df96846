"""Towers of OpenAI's clip package: sequence-first ViT blocks, ModifiedResNet stages, weights."""

from __future__ import annotations

import sys

import pytest
import torch

import dualex
from dualex.errors import UnknownModelError
from dualex.towers.openclip import RandomWeightsWarning
from tests.conftest import random_image

try:
    from dualex.towers.openai_clip import import_clip

    import_clip()
except UnknownModelError:  # pragma: no cover - depends on the environment
    pytest.skip("OpenAI's clip package (clip-anytorch) is not installed", allow_module_level=True)

TEXT = dict(context_length=12, transformer_width=64, transformer_heads=2, transformer_layers=2)
VIT = dict(
    embed_dim=16, image_resolution=32, vision_layers=2, vision_width=64, vision_patch_size=8, **TEXT
)
RESNET = dict(embed_dim=16, image_resolution=32, vision_layers=(1, 1, 1, 1), vision_width=8, **TEXT)
CAPTION = "a red circle left of a blue star"


def _load(name: str, seed: int = 0, **arch):
    torch.manual_seed(seed)
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        return dualex.load(f"openai:{name}", pretrained=False, **arch)


@pytest.fixture(scope="module")
def vit():
    return _load("ViT-B/32", **VIT)


@pytest.fixture(scope="module")
def resnet():
    return _load("RN50", **RESNET)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_vit_explains_first_middle_last_layer(vit, layer):
    image = random_image()
    ex = dualex.explain(vit, CAPTION, image, layers=layer)
    assert ex.matrix.shape == (10, 1 + 16), "tokens <start>..<end> x (CLS + 4x4 patches)"
    assert ex.tokens[0] == "<start_of_text>" and ex.tokens[9] == "<end_of_text>"
    c = ex.completeness
    assert c.relative_error <= 1e-3 and max(c.tower_errors) <= 1e-3, c
    m = vit.module
    with torch.no_grad():
        et = m.encode_text(vit.tower_a.prepare(CAPTION).data["input_ids"])[0]
        ei = m.encode_image(vit.tower_b.prepare(image).data["pixel_values"])[0]
    assert c.score == pytest.approx(float(torch.cosine_similarity(et, ei, dim=0)), abs=1e-6)


def test_sequence_first_hidden_states_are_rows_per_position(vit):
    """Layer 0 of each tower equals the embeddings computed by hand ([S, D], not [B, D])."""
    m = vit.module
    t = vit.tower_a.prepare(CAPTION)
    ids = t.data["input_ids"]
    expected_t = (m.token_embedding(ids) + m.positional_embedding)[0, :10]  # <start>..<end>
    assert torch.allclose(vit.tower_a.hidden(t, 0), expected_t, atol=1e-6)
    i = vit.tower_b.prepare(random_image())
    v = m.visual
    x = v.conv1(i.data["pixel_values"]).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(1, 1, -1), x], dim=1) + v.positional_embedding
    with torch.no_grad():
        expected_i = v.ln_pre(x)[0]
    assert torch.allclose(vit.tower_b.hidden(i, 0), expected_i, atol=1e-5)


def test_resnet_stages_are_layers(resnet):
    image = random_image()
    tower = resnet.tower_b
    inp = tower.prepare(image)
    grids = [tower.positions_at(inp, layer).grid for layer in range(7)]
    assert grids == [(32, 32), (8, 8), (8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    for layer in (1, 4, 5):
        ex = dualex.explain(resnet, CAPTION, image, layers=(1, layer))
        rows, cols = grids[layer]
        assert ex.matrix.shape == (10, rows * cols) and ex.b.grid == (rows, cols)
        assert ex.completeness.relative_error <= 1e-3, ex.completeness


def test_checkpoint_file_and_errors(resnet, tmp_path):
    path = tmp_path / "rn.pt"
    torch.save(resnet.module.state_dict(), path)
    loaded = dualex.load(f"openai:{path}")
    px = resnet.tower_b.prepare(random_image()).data["pixel_values"]
    with torch.no_grad():
        assert torch.equal(loaded.module.encode_image(px), resnet.module.encode_image(px))
    with pytest.raises(UnknownModelError, match=r"no model 'ViT-B/31'.*RN50.*ViT-B/32"):
        dualex.load("openai:ViT-B/31")
    with pytest.raises(UnknownModelError, match=r"not available locally.*ViT-B-32\.pt") as e:
        dualex.load("openai:ViT-B/32", download_root=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "pretrained=False" in str(e.value)
    with pytest.raises(UnknownModelError, match="unknown architecture arguments"):
        dualex.load("openai:RN50", pretrained=False, widht=3)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UnknownModelError, match="neither a CLIP state dict"):
        dualex.load(f"openai:{bad}")


def test_pkg_resources_stand_in_does_not_leak():
    from dualex.towers.openai_clip import import_clip

    import_clip()
    shim = sys.modules.get("pkg_resources")
    assert shim is None or hasattr(shim, "get_distribution"), "the stand-in must be removed"
