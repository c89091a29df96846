"""Batched projections equal per-item explanations (float64, ≤ 1e-12) for text, ViT, CNN and
text–text towers; reference hidden states are cached per model; tensor inputs (token ids and
the processor's pixels) give the same matrices as text and images."""

from __future__ import annotations

import pytest
import torch

import dualex
from tests.conftest import random_image

CAPTIONS = [
    "a red circle",
    "a blue star",  # same length as the first: one batched pass
    "two blue stars above a square",
    "a green square",
]


def _images():
    return [random_image(seed=1), random_image(seed=2), random_image(w=30, h=50, seed=3)]


def _check_batched_equals_single(model, a_items, b_items, **kw):
    proj = dualex.project(model, a=a_items, b=b_items, batch_size=3, **kw)
    pairs = {(i, i % len(b_items)) for i in range(len(a_items))}
    pairs |= {(j % len(a_items), j) for j in range(len(b_items))}
    for i, j in sorted(pairs):  # every item of each side once
        ex = dualex.explain(model, a_items[i], b_items[j], **kw)
        got = proj.explanation(i, j)
        torch.testing.assert_close(got.matrix, ex.matrix, rtol=0, atol=1e-12)
        assert got.completeness.steps == ex.completeness.steps
        assert got.score == pytest.approx(ex.score, abs=1e-12)
    return proj


@pytest.mark.parametrize(("layers", "steps"), [(1, None), (0, 3)])
def test_hf_text_and_vit_batched_equal_single(clip64, layers, steps):
    proj = _check_batched_equals_single(clip64, CAPTIONS, _images(), layers=layers, steps=steps)
    assert [p.P.shape[1] for p in proj.a][:2] == [5, 5]


def test_cnn_batched_equals_single():
    pytest.importorskip("open_clip")
    from tests.towers.test_openclip import RESNET, _load

    model = _load("openclip:RN50", **RESNET)
    model.module.double()
    model.tower_b.dtype = torch.float64
    _check_batched_equals_single(model, CAPTIONS[:2], _images()[:2], layers=(1, 2), steps=2)


def test_text_text_batched_equals_single(tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from tests.towers.test_registry import _build_bert
    from tests.towers.test_sentence_transformers import _modules

    Transformer, Pooling, _ = _modules()
    st = SentenceTransformer(
        modules=[Transformer(str(_build_bert(tmp_path)), max_seq_length=32), Pooling(32)],
        device="cpu",
    ).double()
    model = dualex.wrap(st)
    texts = ["A man plays a guitar.", "A person plays a drum.", "Dogs run."]
    _check_batched_equals_single(model, texts, texts[::-1], layers=1, steps=3)


def test_reference_hidden_state_is_computed_once_per_shape_and_follows_the_weights(clip64):
    tower = clip64.tower_b
    tower.__dict__.pop("_ref_cache", None)
    calls = []
    handle = clip64.module.vision_model.embeddings.register_forward_hook(
        lambda m, a, o: calls.append(a[0].shape[0])
    )
    try:
        images = [random_image(seed=s) for s in range(4)]
        dualex.project(clip64, texts=["a red circle"], images=images, layers=1, steps=2)
        assert len(tower._ref_cache) == 1, "one all-zero reference for four same-size images"
        n = len(calls)
        dualex.project(clip64, texts=["a red circle"], images=images[:1], layers=1, steps=2)
        prefix_passes = len(calls) - n
        m = clip64.module
        with torch.no_grad():
            m.vision_model.pre_layrnorm.bias.add_(0.25)  # an optimiser step changes the weights
        try:
            after = dualex.explain(clip64, "a red circle", images[0], layers=1, steps=2)
            assert len(tower._ref_cache) == 2, "new weights, new reference"
            tower.__dict__.pop("_ref_cache")
            fresh = dualex.explain(clip64, "a red circle", images[0], layers=1, steps=2)
            torch.testing.assert_close(after.matrix, fresh.matrix, rtol=0, atol=0)
        finally:
            with torch.no_grad():
                m.vision_model.pre_layrnorm.bias.sub_(0.25)
    finally:
        handle.remove()
    assert prefix_passes >= 1
    assert all(c >= 1 for c in calls)


def test_processor_pixels_and_token_ids_equal_image_and_text(clip64):
    image = random_image(seed=7)
    tower_a, tower_b = clip64.tower_a, clip64.tower_b
    pixels = tower_b.processor(images=image, return_tensors="pt")["pixel_values"].double()
    ids = tower_a.prepare("a red circle").data["input_ids"]
    ex = dualex.explain(clip64, "a red circle", image, layers=1, steps=3)
    for a, b in ((ids, pixels), (ids[0], pixels[0]), ("a red circle", pixels)):
        got = dualex.explain(clip64, a, b, layers=1, steps=3)
        torch.testing.assert_close(got.matrix, ex.matrix, rtol=0, atol=1e-12)
    got = dualex.explain(clip64, ids, pixels, layers=1, steps=3)
    assert got.b.source == "pixel tensor" and got.a.source == "token ids"
    assert ex.b.source == "image" and ex.a.source == "text"
    assert got.a.tokens[1:4] == ["a", "red", "circle"]
    heat = got.image_map(slice(1, 4))  # token positions of the tensor
    torch.testing.assert_close(heat, ex.image_map("a red circle"), rtol=0, atol=1e-12)
    # boxes are in the tensor's own pixels: the top-left 16x16 of a 32-px input = 2x2 patches
    assert got.b.box_patches((0, 0, 16, 16)) == [1, 2, 5, 6]
    proj = dualex.project(clip64, texts=ids.repeat(2, 1), images=pixels.repeat(3, 1, 1, 1))
    assert len(proj.a) == 2 and len(proj.b) == 3


def test_bad_tensors_name_the_expected_shape(clip64):
    with pytest.raises(dualex.DualexError, match=r"pixels must have shape \[3, 32, 32\]"):
        dualex.explain(clip64, "a red circle", torch.zeros(3, 16, 16, dtype=torch.float64))
    with pytest.raises(dualex.DualexError, match=r"\[C, H, W\] or \[B, C, H, W\]"):
        dualex.explain(clip64, "a red circle", torch.zeros(5, 3, dtype=torch.float64))
    with pytest.raises(dualex.DualexError, match="integer tensor"):
        dualex.project(clip64, texts=torch.zeros(2, 4, dtype=torch.bool), images=[random_image()])
    with pytest.raises(dualex.DualexError, match="exceed the model's"):
        dualex.explain(clip64, torch.ones(100, dtype=torch.long), random_image())
    with pytest.raises(dualex.DualexError, match=r"use dualex\.project"):
        dualex.explain(clip64, torch.ones(2, 4, dtype=torch.long), random_image())
    with pytest.raises(dualex.DualexError, match="NaN"):
        dualex.explain(clip64, "a red circle", torch.full((3, 32, 32), float("nan")))


def test_a_batch_with_more_references_than_the_cache_holds(clip64):
    """A batch whose cached references are evicted while its new ones are stored still gets
    every reference (the CLI's `concepts train` hit a KeyError here), and the same matrices."""
    tower = clip64.tower_a
    size = tower.reference_cache_size
    texts = ["a red circle", "a blue star", "a green square"]  # one length: one batched pass
    want = [dualex.explain(clip64, t, random_image(seed=1), steps=2).matrix for t in texts]
    for name in ("_ref_cache", "_eref_cache"):
        tower.__dict__.pop(name, None)
    # a caption's reference embedding is keyed by its tokens: the first caption's is cached,
    # then storing the other two evicts it while the batch still needs it
    tower.reference_cache_size = 1
    try:
        dualex.project(clip64, texts=texts[:1], images=[random_image(seed=1)], steps=2)
        proj = dualex.project(clip64, texts=texts, images=[random_image(seed=1)], steps=2)
    finally:
        tower.reference_cache_size = size
    for i, m in enumerate(want):
        torch.testing.assert_close(proj.explanation(i, 0).matrix, m, rtol=0, atol=1e-12)
    assert len(tower._ref_cache) == 1 and len(tower._eref_cache) == 1
