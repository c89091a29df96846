"""LeGrad: equal to a direct autograd computation of its formula, and a known answer on a
planted attention pattern (only one patch carries a value, so only its column can move the
score through the last block's attention or the attention pool)."""

from __future__ import annotations

import pytest
import torch

from dualex.evaluate.methods import get
from dualex.evaluate.methods._vit import minmax
from dualex.evaluate.methods.legrad import EMPTY_PROMPT
from dualex.towers.access import vision_access
from tests.towers.test_access import _BUILDERS, test_image, tiny_model

TEXT = "red circle"


def _direct(acc, pixels, t, start):
    """LeGrad's formula with gradients taken in the full forward graph (no shortcut)."""
    x = acc.stem(pixels.detach().requires_grad_(True))
    outs, atts = [], []
    for blk in acc.blocks:
        x, at = acc.block(blk, x)
        outs.append(x)
        atts.append(at)
    rel = 0
    for li in range(start, len(acc.blocks)):
        if acc.pooling == "cls":
            f, A, cols = acc.project(outs[li].mean(1)), atts[li].probs, acc.patch_columns()
        else:
            pat = acc.pool_attention(outs[li])
            f = acc.project(acc.pool_finish(pat.output()))
            A, cols = pat.probs, acc.patch_columns(pat)
        (g,) = torch.autograd.grad(acc.cosine(f, t).sum(), A, retain_graph=True)
        rel = rel + g.clamp(min=0).mean(dim=(1, 2))[0, cols]
    return minmax(rel)


@pytest.mark.parametrize("family", ["hf-clip", "hf-siglip", "openclip-vit", "openclip-timm"])
def test_equals_the_formula_computed_directly(family):
    model = tiny_model(family)
    acc = vision_access(model)
    image = test_image(family)
    (a,) = get("legrad")(model, image, [TEXT], start_layer=0)
    with acc.session(), torch.enable_grad():
        pixels, pos = acc.prepare(image)
        want = _direct(acc, pixels, acc.text_embedding(TEXT), 0)
    torch.testing.assert_close(a.image_map, want.double().reshape(pos.grid), rtol=1e-6, atol=1e-9)
    assert a.image_map.max() == 1.0 and a.image_map.min() == 0.0


def _orthogonal_to(others: torch.Tensor, keep: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A unit vector orthogonal to every row of ``others`` but not to ``keep``."""
    q, _ = torch.linalg.qr(others.T)  # [D, n]
    r = torch.randn(others.shape[1], generator=torch.Generator().manual_seed(seed))
    r = r.to(others) - q @ (q.T @ r.to(others))
    assert abs(float(r @ keep)) > 1e-3 * float(r.norm() * keep.norm())
    return r / r.norm()


def _plant(family: str, patch: int, sign: float):
    """A fresh tiny model whose last block (CLS readout) or attention pool has values that are
    zero for every token but ``patch``."""
    model = _BUILDERS[family]()
    acc = vision_access(model)
    pixels, _ = acc.prepare(test_image(family))
    j = acc.prefix + patch
    with torch.no_grad():
        x = acc.stem(pixels)
        for blk in acc.blocks[:-1]:
            x, _ = acc.block(blk, x)
        last = acc.blocks[-1]
        if acc.pooling == "cls":
            y = acc.norm1(last, x)[0]  # what the last block's values are computed from
        else:
            x, _ = acc.block(last, x)
            y = model.module.vision_model.post_layernorm(x)[0]  # what the pool's values see
        others = torch.cat([y[:j], y[j + 1 :]])
        a = _orthogonal_to(others, y[j])
        D = y.shape[-1]
        w = sign * torch.randn(D, generator=torch.Generator().manual_seed(1)).to(y)
        if family == "hf-clip":
            last.self_attn.v_proj.weight.copy_(torch.outer(w, a))
            last.self_attn.v_proj.bias.zero_()
        else:
            mha = (
                last.attn if family == "openclip-vit" else model.module.vision_model.head.attention
            )
            mha.in_proj_weight[2 * D :].copy_(torch.outer(w, a))
            mha.in_proj_bias[2 * D :].zero_()
    return model


@pytest.mark.parametrize("family", ["hf-clip", "openclip-vit", "hf-siglip"])
def test_known_answer_on_a_planted_attention_pattern(family):
    patch = 5
    for sign in (1.0, -1.0):  # ReLU keeps one sign of the planted column's gradient
        model = _plant(family, patch, sign)
        (a,) = get("legrad")(model, test_image(family), [TEXT], start_layer=-1)
        if a.image_map.max() > 0:
            break
    flat = a.image_map.reshape(-1)
    assert int(flat.argmax()) == patch and flat[patch] == 1.0
    others = torch.cat([flat[:patch], flat[patch + 1 :]])
    assert float(others.abs().max()) < 1e-6, "no other patch carries a value"


def test_empty_prompt_suppression_zeroes_where_the_empty_prompt_is_high():
    model, image = tiny_model("hf-clip"), test_image("hf-clip")
    (plain,) = get("legrad")(model, image, [TEXT])
    (empty,) = get("legrad")(model, image, [EMPTY_PROMPT])
    (supp,) = get("legrad")(model, image, [TEXT], empty_prompt=True, threshold=0.5)
    high = empty.image_map > 0.5
    assert high.any() and (supp.image_map[high] == 0).all()
    torch.testing.assert_close(supp.image_map[~high], plain.image_map[~high])
    assert supp.extra["empty_prompt"] == EMPTY_PROMPT and plain.extra["empty_prompt"] is None
