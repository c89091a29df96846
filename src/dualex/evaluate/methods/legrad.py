"""``legrad``: LeGrad (Bousselham et al., ICCV 2025), gradients of per-layer scores with respect
to attention probabilities.

For each block ``l`` from ``start_layer`` to the last:

1. CLS readout (CLIP-like): mean-pool the block's output tokens (every token, CLS included),
   apply the final norm and projection (:meth:`VisionAccess.project`) and L2-normalise: ``f_l``.
   Attention-pool readout (SigLIP): ``f_l`` is the attention pool (with its final norm) applied
   to the block's output tokens, then :meth:`~VisionAccess.project`.
2. ``s_l = f_l · t`` with ``t`` the normalised text embedding.
3. ``g_l = ∂s_l / ∂A_l``: ``A_l`` the block's attention probabilities ``[heads, S, S]`` (CLS
   readout) or the pool's probabilities over the tokens ``[heads, Q, S]`` (attention pool). Keep
   the positive part, average over heads and query rows, keep the patch columns (CLS dropped).
4. Sum over the blocks and min-max normalise; the map is on the patch grid (no upsampling).

``s_l`` reaches ``A_l`` only through block ``l``'s attention output (and the pool, for SigLIP),
so each ``g_l`` is computed on a copy of block ``l`` (or of the pool) fed with the fixed inputs of
the forward pass: one forward for the image, one backward for every block and text together.
Texts are batched (the image's states are shared; each text gets its own copy of ``A_l``).

Empty-prompt suppression (LeGrad's option, off by default here): with ``empty_prompt`` (e.g.
``"a photo of a"``), the same map is made for that prompt, and every text's map is set to zero
where the empty prompt's min-max map exceeds ``threshold`` (0.8) — it removes positions that
light up for any text.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dualex.errors import SettingError
from dualex.evaluate.methods._vit import VIT_FAMILIES, access, access_check, attributions, minmax
from dualex.evaluate.methods.base import Attribution, Method, timed

__all__ = ["EMPTY_PROMPT", "METHOD", "START_LAYER", "legrad", "legrad_scores"]

START_LAYER = -2
"""Default first block (negative counts from the end): the last two blocks, the default start of
the LeGrad authors' released wrapper. ``0`` aggregates every block."""

EMPTY_PROMPT = "a photo of a"
"""The empty prompt LeGrad suppresses with, when ``empty_prompt=True``."""


def legrad_scores(acc: Any, pixels: Tensor, t: Tensor, start: int) -> Tensor:
    """Un-normalised LeGrad relevance of every patch, ``[T, rows · cols]``.

    Args:
        acc: The image tower's :class:`~dualex.towers.access.VisionAccess`.
        pixels: ``[1, 3, H, W]``.
        t: Unit text embeddings ``[T, E]``.
        start: First block used (``0 <= start < len(acc.blocks)``).

    Returns:
        ``Σ_l mean_{heads, rows} ReLU(∂s_l/∂A_l)`` at the patch columns.
    """
    T = t.shape[0]
    with torch.no_grad():
        x = acc.stem(pixels)
        states = [x]  # input of block l; states[l + 1] its output
        for blk in acc.blocks:
            x, _ = acc.block(blk, x)
            states.append(x)
    leaves, cols, score = [], [], 0.0
    with torch.enable_grad():
        for li in range(start, len(acc.blocks)):
            if acc.pooling == "cls":
                blk, h = acc.blocks[li], states[li]
                with torch.no_grad():
                    at = acc.attention(blk, acc.norm1(blk, h))
                A = at.probs.expand(T, -1, -1, -1).clone().requires_grad_(True)
                out = h + acc.merge(blk, A @ at.v)
                out = out + acc.mlp(blk, out)
                f = acc.project(out.mean(dim=1))  # [T, E]
            else:
                with torch.no_grad():
                    at = acc.pool_attention(states[li + 1])
                A = at.probs.expand(T, -1, -1, -1).clone().requires_grad_(True)
                f = acc.project(acc.pool_finish(A @ at.v))
            score = score + acc.cosine(f, t).sum()
            leaves.append(A)
            cols.append(acc.patch_columns(at if acc.pooling != "cls" else None))
        grads = torch.autograd.grad(score, leaves)
    rel = sum(g.clamp(min=0).mean(dim=(1, 2))[:, c] for g, c in zip(grads, cols, strict=True))
    return rel.detach()  # type: ignore[union-attr]


def legrad(
    model: Any,
    image: Any,
    texts: list[str],
    *,
    start_layer: int = START_LAYER,
    empty_prompt: str | bool | None = None,
    threshold: float = 0.8,
) -> list[Attribution]:
    """LeGrad maps of the image for every text.

    Args:
        model: A :class:`dualex.DualEncoder` with a ViT image tower.
        image: The image.
        texts: The texts.
        start_layer: First block (negative counts from the end; default the last two).
        empty_prompt: ``None``/``False``: no suppression (default); ``True``: suppress with
            :data:`EMPTY_PROMPT`; a string: suppress with that prompt.
        threshold: Positions where the empty prompt's normalised map exceeds it are zeroed.

    Returns:
        One attribution per text: ``image_map [rows, cols]`` in ``[0, 1]`` (relative units),
        ``score`` the cosine of the image and text embeddings.

    Raises:
        UnsupportedMethodError: for an image tower without attention access.
        SettingError: for ``start_layer`` out of range.
    """
    acc = access(model, "legrad")
    n = len(acc.blocks)
    start = start_layer + n if start_layer < 0 else start_layer
    if not 0 <= start < n:
        raise SettingError(f"legrad: start_layer {start_layer} is out of range for {n} blocks")
    prompt = EMPTY_PROMPT if empty_prompt is True else (empty_prompt or None)

    def go() -> list[Attribution]:
        with acc.session():
            pixels, pos = acc.prepare(image)
            t = acc.text_embedding([*texts, prompt] if prompt else texts)
            maps = minmax(legrad_scores(acc, pixels, t, start), dim=-1)  # [T(+1), N]
            if prompt:
                maps = maps[:-1] * (maps[-1] <= threshold)
            with torch.no_grad():
                scores = acc.cosine(acc.embed(pixels), t[: len(texts)])
        extra = {"start_layer": start, "empty_prompt": prompt}
        return attributions("legrad", pos, list(maps), scores=scores, extra=extra)

    return timed(go)


METHOD = Method(
    name="legrad",
    order=1,
    summary="LeGrad: gradients of per-layer scores w.r.t. attention (Bousselham et al., ICCV 2025)",
    run=legrad,
    families=VIT_FAMILIES,
    check=access_check("legrad"),
)
"""The ``legrad`` method."""
