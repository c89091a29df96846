"""First-order maps for HF CLIP, re-implemented from their published descriptions.

Each returns ``[rows, cols]`` on the image tower's patch grid; see the package docstring for
the table of methods and supported families.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.engine.quadrature import nodes_and_weights
from dualex.errors import SettingError
from dualex.evaluate.baselines._clip import ClipVision

__all__ = [
    "IG_STEPS",
    "clip_surgery",
    "gae",
    "grad_eclip",
    "integrated_gradients",
    "maskclip",
    "random_map",
]

IG_STEPS = 16
"""Default Gauss–Legendre nodes of Integrated Gradients."""


def _patch_grid(values: Tensor, grid: tuple[int, int]) -> Tensor:
    """Patch tokens ``[rows * cols]`` → ``[rows, cols]`` (float64, detached)."""
    return values.detach().double().reshape(grid)


def integrated_gradients(
    model: Any, image: Any, text: str, *, steps: int = IG_STEPS, rule: str = "gauss-legendre"
) -> Tensor:
    """Integrated Gradients of ``cos(image embedding, text embedding)`` w.r.t. the pixels.

    Integrated in normalised pixel space from the all-zeros baseline (the dataset-mean image);
    attribution × (x − baseline), summed over RGB, sum-pooled per patch.

    Args:
        model: A dualex-wrapped HF CLIPModel.
        image: The image (path, PIL image or array).
        text: The text input (a mention's phrase or a caption).
        steps: Quadrature nodes.
        rule: Quadrature rule (``"gauss-legendre"``, ``"riemann"``, ``"trapezoid"``).

    Returns:
        ``[rows, cols]``; its sum ≈ cos(x) − cos(baseline).
    """
    cv = ClipVision(model)
    x, pos = cv.prepare(image)
    t = cv.text_embedding(text)
    alphas, weights = nodes_and_weights(rule, steps, dtype=cv.dtype)
    path = (alphas.view(-1, 1, 1, 1) * x).detach().requires_grad_(True)  # baseline = 0
    with torch.enable_grad():
        emb, _ = cv.forward(path)
        (cv.cosine(emb, t) * weights).sum().backward()
    attr = (path.grad.sum(0, keepdim=True) * x)[0].sum(0)  # [H, W]
    rows, cols = cv.grid(pos)
    p = cv.image_tower.patch
    attr = attr[: rows * p, : cols * p].reshape(rows, p, cols, p).sum((1, 3))
    return attr.detach().double()


def gae(model: Any, image: Any, text: str, *, start_layer: int = 0) -> Tensor:
    """Generic Attention Explainability (Chefer et al., ICCV 2021) for the CLS row.

    Per block from ``start_layer``: ``Ā = mean_heads clamp(∂s/∂A ⊙ A, min=0)``; ``R ← R + Ā R``
    from the identity; the map is ``R[CLS, patches]``; ``s`` = cosine with the text embedding.

    Args:
        start_layer: First block used (negative counts from the end; ``-1``: the last only).
    """
    cv = ClipVision(model)
    x, pos = cv.prepare(image)
    t = cv.text_embedding(text)
    n = len(cv.blocks)
    start = start_layer + n if start_layer < 0 else start_layer
    if not 0 <= start < n:
        raise SettingError(f"start_layer {start_layer} is out of range for {n} blocks")
    with torch.enable_grad():
        emb, atts = cv.forward(x)
        probs = [a.probs for a in atts[start:]]
        grads = torch.autograd.grad(cv.cosine(emb, t).sum(), probs)
    S = probs[0].shape[-1]
    R = torch.eye(S, dtype=cv.dtype)
    for A, g in zip(probs, grads, strict=True):
        cam = (g * A).clamp(min=0).mean(dim=1)[0]  # [S, S]
        R = R + cam @ R
    return _patch_grid(R[0, 1:], cv.grid(pos))


def maskclip(model: Any, image: Any, text: str) -> Tensor:
    """MaskCLIP (Zhou et al., ECCV 2022): the last block's attention replaced by its value path.

    ``x + out_proj(v(ln_1(x)))``, then ``+ MLP(ln_2(·))``; post-layernorm and projection on every
    patch token; cosine with the text embedding; CLS dropped.
    """
    cv = ClipVision(model)
    x, pos = cv.prepare(image)
    t = cv.text_embedding(text)
    with torch.no_grad():
        h = cv.stem(x)
        for blk in cv.blocks[:-1]:
            h, _ = cv.block(blk, h)
        last = cv.blocks[-1]
        h = h + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(h)))
        h = h + last.mlp(last.layer_norm2(h))
        feats = cv.head(h[0, 1:])
        sims = (feats / feats.norm(dim=-1, keepdim=True)) @ t
    return _patch_grid(sims, cv.grid(pos))


def _minmax(v: Tensor, dim: int = -1) -> Tensor:
    lo, hi = v.amin(dim, keepdim=True), v.amax(dim, keepdim=True)
    return (v - lo) / (hi - lo).clamp_min(1e-12)


def grad_eclip(model: Any, image: Any, text: str) -> Tensor:
    """Grad-ECLIP (Zhao et al., 2024) for the image side, in the last block.

    ``map_j = ReLU(Σ_channels ∂s/∂o_cls · v_j · w_j)``: ``o_cls`` is the attention output at the
    CLS row (heads concatenated, before ``out_proj``), ``v_j`` patch ``j``'s values, and ``w_j``
    the min-max normalised cosine of the CLS query with patch ``j``'s key, per head.
    """
    cv = ClipVision(model)
    x, pos = cv.prepare(image)
    t = cv.text_embedding(text)
    with torch.no_grad():
        h = cv.stem(x)
        for blk in cv.blocks[:-1]:
            h, _ = cv.block(blk, h)
    last = cv.blocks[-1]
    with torch.enable_grad():
        at = cv.attention(last, last.layer_norm1(h))
        o_cls = (at.probs[:, :, :1] @ at.v).detach().requires_grad_(True)  # [1, heads, 1, hd]
        xc = h[:, :1] + cv.merge(last, o_cls)
        xc = xc + last.mlp(last.layer_norm2(xc))
        s = cv.cosine(cv.head(xc[:, 0]), t).sum()
        (grad,) = torch.autograd.grad(s, o_cls)  # [1, heads, 1, hd]
    q_cls, k = at.q[0, :, :1].detach(), at.k[0, :, 1:].detach()  # [heads, 1, hd], [heads, N, hd]
    cos = torch.nn.functional.cosine_similarity(q_cls, k, dim=-1)  # [heads, N]
    w = _minmax(cos, dim=-1)
    v = at.v[0, :, 1:].detach()  # [heads, N, hd]
    contrib = (grad[0] * v).sum(-1) * w  # [heads, N]
    return _patch_grid(contrib.sum(0).clamp(min=0), cv.grid(pos))


def clip_surgery(model: Any, image: Any, text: str, *, blocks: int = 6) -> Tensor:
    """CLIP Surgery (Li et al., 2023), without prompt ensembling or multi-text feature surgery.

    The last ``blocks`` blocks get a second path that accumulates value–value self-attention
    (``q = k = v``) of ``ln_1`` of the original stream, no MLP; CLS stays on the original path;
    post-layernorm + projection on all tokens; the text embedding minus the empty text's
    embedding; the map is min-max normalised.
    """
    cv = ClipVision(model)
    x, pos = cv.prepare(image)
    t = cv.text_embedding(text)
    with torch.no_grad():
        enc = cv.text_tower.tokenizer("", return_tensors="pt")
        data = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        e0 = cv.text_tower.encode(data)[0].to(cv.dtype)
    t = t - e0 / e0.norm()
    t = t / t.norm().clamp_min(1e-12)
    n = len(cv.blocks)
    first = max(0, n - blocks)
    with torch.no_grad():
        h = cv.stem(x)
        new = None
        for i, blk in enumerate(cv.blocks):
            if i >= first:
                if new is None:
                    new = h.clone()
                at = cv.attention(blk, blk.layer_norm1(h))
                vv = torch.softmax((at.v @ at.v.transpose(-1, -2)) * blk.self_attn.scale, dim=-1)
                new = new + cv.merge(blk, vv @ at.v)
            h, _ = cv.block(blk, h)
        assert new is not None
        feats = cv.head(new[0, 1:])
        sims = (feats / feats.norm(dim=-1, keepdim=True)) @ t
    return _patch_grid(_minmax(sims), cv.grid(pos))


def random_map(model: Any, image: Any, text: str, *, seed: int | str | None = None) -> Tensor:
    """Uniform noise on the patch grid: the floor every method must beat.

    Args:
        seed: An int, or a string hashed with CRC-32 (stable across runs); ``None``: the text.
    """
    from dualex.model import wrap

    pos = wrap(model).tower_b.prepare(image).positions
    key = text if seed is None else seed
    s = key if isinstance(key, int) else zlib.crc32(str(key).encode("utf-8"))
    rng = np.random.default_rng(s)
    return torch.from_numpy(rng.random(tuple(pos.grid)))


def random_scores(n: int, seed: int | str) -> np.ndarray:
    """Uniform per-token noise ``[n]`` (the image→text floor)."""
    s = seed if isinstance(seed, int) else zlib.crc32(str(seed).encode("utf-8"))
    return np.random.default_rng(s + 1).random(n)
