"""The last-block fast path equals the generic AD path (float64, ≤ 1e-10), on a planted block
and on tiny float64 models of every ViT family; its path points are exactly the quadrature nodes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import dualex
from dualex.engine.lastblock import LastBlock, last_block_forward, last_block_projection
from dualex.engine.projection import integrated_projection
from dualex.engine.quadrature import nodes_and_weights
from tests.conftest import random_image

CAPTION = "a red circle left of a blue star"


def _block(causal: bool, seed: int = 0, D: int = 8, E: int = 5, recorder=None) -> LastBlock:
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * 0.5

    ln1 = nn.LayerNorm(D).double()
    ln2 = nn.LayerNorm(D).double()
    with torch.no_grad():
        for ln in (ln1, ln2):
            ln.weight.copy_(1 + r(D))
            ln.bias.copy_(r(D))
    mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D)).double()
    gamma1, gamma2, proj = r(D), r(D), r(E, D)

    def first(x):
        if recorder is not None:
            recorder.append(x)
        return ln1(x)

    return LastBlock(
        ln1=first,
        w_q=r(D, D),
        b_q=r(D),
        w_k=r(D, D),
        b_k=r(D),
        w_v=r(D, D),
        b_v=None,
        w_o=r(D, D),
        b_o=r(D),
        heads=2,
        scale=0.5,
        ln2=ln2,
        mlp=mlp,
        head=lambda x: torch.tanh(x) @ proj.T,
        causal=causal,
        ls1=lambda x: x * gamma1,
        ls2=lambda x: x * gamma2,
    )


@pytest.mark.parametrize("causal", [False, True])
def test_planted_block_equals_vmapped_jvp(causal):
    blk = _block(causal)
    g = torch.Generator().manual_seed(1)
    H = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    R = torch.randn(3, 6, 8, generator=g, dtype=torch.float64) * 0.1
    rows = torch.tensor([5, 2, 0]) if causal else torch.zeros(3, dtype=torch.long)
    a, w = nodes_and_weights("gauss-legendre", 3)
    fast = last_block_projection(blk, H, R, rows, a, w)

    def suffix(X, items):
        m = X.shape[0] // len(items)
        return last_block_forward(blk, X, rows[list(items)].repeat_interleave(m))

    slow = integrated_projection(suffix, H, R, a, w, mode="forward")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    if causal:
        assert fast[1, :, 3:].abs().max() == 0, "positions after the pooled row cannot matter"


def test_fast_path_points_are_the_quadrature_nodes():
    seen: list[torch.Tensor] = []
    blk = _block(False, recorder=seen)
    g = torch.Generator().manual_seed(2)
    H = torch.randn(1, 4, 8, generator=g, dtype=torch.float64)
    R = torch.zeros_like(H)
    a, w = nodes_and_weights("gauss-legendre", 4)
    last_block_projection(blk, H, R, torch.zeros(1, dtype=torch.long), a, w)
    points = [x for x in seen if x.dim() == 3]
    assert len(points) == 1 and points[0].shape == (4, 4, 8), "the four nodes in one batch"
    for x, alpha in zip(points[0], a.tolist(), strict=True):
        torch.testing.assert_close(x, (R + alpha * (H - R))[0], rtol=0, atol=0)
    seen.clear()
    last_block_projection(blk, H, R, torch.zeros(1, dtype=torch.long), a, w, memory_budget=1)
    assert [x.shape[0] for x in seen if x.dim() == 3] == [1, 1, 1, 1], "chunked to the budget"


def _hf_sdpa():
    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=2, width=32, layers=2, heads=2, image_size=32, patch_size=8)
    for module in m.modules():  # the math SDPA backend: the generic path's softmax in float64
        if hasattr(module, "config"):
            module.config._attn_implementation = "sdpa"
    return dualex.wrap(m.double(), tokenizer=tok, image_processor=proc)


def _openclip():
    pytest.importorskip("open_clip")
    from tests.towers.test_openclip import VIT, _load

    model = _load("openclip:ViT-B-32", **VIT)
    model.module.double()
    model.tower_b.dtype = torch.float64
    return model


def _openai():
    from dualex.towers.openai_clip import import_clip
    from tests.towers.test_openai_clip import VIT, _load

    import_clip()  # (the test patches OpenAI's float32-casting LayerNorm for float64)

    model = _load("ViT-B/32", **VIT)
    model.module.double()
    model.tower_b.dtype = torch.float64
    return model


@pytest.mark.parametrize("build", [_hf_sdpa, _openclip, _openai], ids=["hf", "openclip", "openai"])
def test_fast_path_equals_generic_path_on_every_vit_family(build, monkeypatch):
    if build is _openai:
        from dualex.towers.openai_clip import import_clip

        monkeypatch.setattr(import_clip().model.LayerNorm, "forward", nn.LayerNorm.forward)
    model = build()
    last = (model.tower_a.num_layers - 1, model.tower_b.num_layers - 1)
    image = random_image()
    texts, images = [CAPTION, "a blue star"], [image]
    assert model.tower_a.fast_path([model.tower_a.prepare(CAPTION)], last[0]) is not None
    assert model.tower_b.fast_path([model.tower_b.prepare(image)], last[1]) is not None
    fast = dualex.project(model, texts=texts, images=images, layers=last, steps=4)
    slow = dualex.project(model, texts=texts, images=images, layers=last, steps=4, mode="forward")
    for i in range(2):
        torch.testing.assert_close(fast.matrix(i, 0), slow.matrix(i, 0), rtol=0, atol=1e-10)
    ex = dualex.explain(model, CAPTION, image, layers=last)
    assert ex.completeness.relative_error <= 1e-3, ex.completeness
    assert model.tower_a.fast_path([model.tower_a.prepare(CAPTION)], 0) is None, "last block only"


def test_planted_probe_head_with_masked_keys_equals_vmapped_jvp():
    base = _block(False, seed=3)
    probe = torch.randn(8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    blk = dataclasses.replace(base, probe=probe, ls1=None)
    g = torch.Generator().manual_seed(5)
    H = torch.randn(3, 6, 8, generator=g, dtype=torch.float64)
    R = torch.randn(3, 6, 8, generator=g, dtype=torch.float64) * 0.1
    rows = torch.zeros(3, dtype=torch.long)
    keys = torch.ones(3, 6, dtype=torch.bool)
    keys[1, 4:] = False  # padded rows of input 1
    a, w = nodes_and_weights("gauss-legendre", 3)
    fast = last_block_projection(blk, H, R, rows, a, w, keys=keys)

    def suffix(X, items):
        m = X.shape[0] // len(items)
        return last_block_forward(
            blk,
            X,
            rows[list(items)].repeat_interleave(m),
            keys[list(items)].repeat_interleave(m, 0),
        )

    slow = integrated_projection(suffix, H, R, a, w, mode="forward")
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert fast[1, :, 4:].abs().max() == 0, "masked keys cannot matter"
    assert fast[0, :, 0].abs().max() > 0


def _sdpa(model):
    for module in model.module.modules():  # the math SDPA backend: softmax in the model's dtype
        if hasattr(module, "config"):
            module.config._attn_implementation = "sdpa"
    return model


def _siglip():
    from tests.conftest import tiny_siglip

    return _sdpa(tiny_siglip(seed=1))


def _siglip2():
    from tests.towers.test_access import _siglip2 as build

    return _sdpa(build())


@pytest.mark.parametrize("build", [_siglip, _siglip2], ids=["siglip", "siglip2-naflex"])
def test_attention_pool_towers_split_at_the_head_and_equal_the_generic_path(build):
    model = build()
    ta, tb = model.tower_a, model.tower_b
    assert (ta.default_layer, tb.default_layer) == (ta.num_layers - 1, tb.num_layers), (
        "text: the last block's input; image: the attention-pool head's input"
    )
    image = random_image(w=40, h=24, seed=6)  # NaFlex: fewer patches than its maximum, padded
    texts, images = [CAPTION, "a blue star"], [image]
    inp = tb.prepare(image)
    assert ta.fast_path([ta.prepare(CAPTION)], ta.default_layer) is not None
    fast_b = tb.fast_path([inp], tb.default_layer)
    assert fast_b is not None and fast_b.block.probe is not None
    if "pixel_attention_mask" in inp.data:
        assert not bool(fast_b.keys.all()), "the test image must have padded patches"
    fast = dualex.project(model, texts=texts, images=images, steps=4)
    slow = dualex.project(model, texts=texts, images=images, steps=4, mode="forward")
    for i in range(2):
        torch.testing.assert_close(fast.matrix(i, 0), slow.matrix(i, 0), rtol=0, atol=1e-10)
    ex = dualex.explain(model, CAPTION, image)
    assert ex.completeness.relative_error <= 1e-3, ex.completeness
    assert ex.layers == (ta.num_layers - 1, tb.num_layers)
    assert tb.fast_path([inp], tb.num_layers - 1) is None, "the last block's input: generic"
