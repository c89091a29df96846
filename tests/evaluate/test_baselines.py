"""First-order baselines on a tiny random HF CLIP: shapes, exactness of the shared forward, IG
completeness, and errors for unsupported families."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import InvalidInputError
from dualex.evaluate.baselines import BASELINES
from dualex.evaluate.baselines._clip import ClipVision
from dualex.evaluate.baselines.first_order import integrated_gradients, random_map


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_shape_and_finite(name, clip64, image):
    grid = dualex.explain(clip64, "red circle", image, steps=2).grid
    out = BASELINES[name](clip64, image, "red circle")
    assert tuple(out.shape) == grid, f"{name} must return [rows, cols] = {grid}"
    assert torch.isfinite(out).all(), name
    assert out.abs().sum() > 0, f"{name} returned an all-zero map"


@pytest.mark.parametrize("name", ["ig", "gae", "maskclip", "gradeclip", "surgery"])
def test_baselines_depend_on_the_text(name, clip64, image):
    a = BASELINES[name](clip64, image, "red circle")
    b = BASELINES[name](clip64, image, "blue star")
    assert not torch.allclose(a, b), f"{name} ignores its text input"


def test_manual_forward_matches_model(clip64, image):
    cv = ClipVision(clip64)
    x, _ = cv.prepare(image)
    emb, atts = cv.forward(x)
    ref = clip64.tower_b.encode({"pixel_values": x})
    assert torch.allclose(emb, ref, atol=1e-6), (emb - ref).abs().max()
    assert len(atts) == len(cv.blocks)
    assert torch.allclose(atts[0].probs.sum(-1), torch.ones(1, dtype=torch.float64), atol=1e-12)


def test_ig_completeness(clip64, image):
    cv = ClipVision(clip64)
    x, _ = cv.prepare(image)
    t = cv.text_embedding("red circle")
    with torch.no_grad():
        want = cv.cosine(cv.forward(x)[0], t) - cv.cosine(cv.forward(torch.zeros_like(x))[0], t)
    got = integrated_gradients(clip64, image, "red circle", steps=24).sum()
    assert float(got) == pytest.approx(float(want), rel=1e-3, abs=1e-7)


def test_random_map_is_seeded(clip64, image):
    a = random_map(clip64, image, "x", seed="s/0")
    assert torch.equal(a, random_map(clip64, image, "x", seed="s/0"))
    assert not torch.equal(a, random_map(clip64, image, "x", seed="s/1"))


def test_unsupported_family_raises(siglip64, image):
    with pytest.raises(InvalidInputError, match="CLIPModel only"):
        BASELINES["gae"](siglip64, image, "red circle")
    assert tuple(BASELINES["random"](siglip64, image, "a").shape) == (4, 4)
