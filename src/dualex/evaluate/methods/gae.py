"""``gae``: Generic Attention Explainability (Chefer et al., ICCV 2021) for the image side.

Target: ``s = cos(image embedding, text embedding)``. For every block from ``start_layer``:
``Ā = mean_heads clamp(∂s/∂A ⊙ A, min=0)`` (``A`` the block's attention probabilities ``[S, S]``)
and ``R ← R + Ā R`` from the identity. CLS readout (CLIP-like): the map is ``R[CLS, patches]``.
Attention-pool readout (SigLIP, no CLS): the pooled query's row ``ā = mean_heads clamp(∂s/∂P ⊙
P, min=0)`` of the pool's probabilities ``P`` (over the tokens) is propagated through the blocks,
``ā R``, and read at the patches. Runs on ViT image towers with attention access
(:mod:`dualex.towers.access`).
"""

from __future__ import annotations

from typing import Any

import torch

from dualex.errors import SettingError
from dualex.evaluate.methods._vit import VIT_FAMILIES, access, access_check, attributions
from dualex.evaluate.methods.base import Attribution, Method, timed

__all__ = ["METHOD", "gae"]


def gae(model: Any, image: Any, texts: list[str], *, start_layer: int = 0) -> list[Attribution]:
    """GAE maps of the image for every text (one forward, one backward per text).

    Args:
        model: A :class:`dualex.DualEncoder` with a ViT image tower.
        image: The image.
        texts: The texts.
        start_layer: First block whose attention is used (negative counts from the end).

    Returns:
        One attribution per text: ``image_map [rows, cols]`` (relative units), ``score`` the
        cosine.

    Raises:
        UnsupportedMethodError: for an image tower without attention access.
        SettingError: for ``start_layer`` out of range.
    """
    acc = access(model, "gae")
    n = len(acc.blocks)
    start = start_layer + n if start_layer < 0 else start_layer
    if not 0 <= start < n:
        raise SettingError(f"gae: start_layer {start_layer} is out of range for {n} blocks")

    def go() -> list[Attribution]:
        with acc.session():
            pixels, pos = acc.prepare(image)
            t = acc.text_embedding(texts)  # [T, E]
            with torch.enable_grad():  # parameters are frozen: the pixels root the graph
                emb, atts, pool_at = acc.forward(pixels.detach().requires_grad_(True))
                probs = [a.probs for a in atts[start:]]
                if pool_at is not None:
                    probs.append(pool_at.probs)
                s = acc.cosine(emb.expand(len(texts), -1), t)  # [T]
                maps = []
                for i in range(len(texts)):
                    grads = torch.autograd.grad(s[i], probs, retain_graph=i < len(texts) - 1)
                    maps.append(_relevance(acc, probs, grads, pool_at))
        return attributions("gae", pos, maps, scores=s.detach())

    return timed(go)


def _relevance(acc: Any, probs: list, grads: tuple, pool_at: Any) -> torch.Tensor:
    """The readout's relevance row over the patches, ``[rows · cols]``."""
    blocks = len(probs) - (pool_at is not None)
    S = probs[0].shape[-1]
    R = torch.eye(S, dtype=probs[0].dtype, device=probs[0].device)
    for A, g in zip(probs[:blocks], grads[:blocks], strict=True):
        R = R + (g * A).clamp(min=0).mean(dim=1)[0].detach() @ R
    if pool_at is None:
        return R[0, acc.prefix :]
    row = (grads[-1] * probs[-1]).clamp(min=0).mean(dim=1)[0].detach().sum(0)  # [S_keys]
    return (row @ R[pool_at.first_key :])[acc.prefix :]


METHOD = Method(
    name="gae",
    order=1,
    summary="Generic Attention Explainability: gradient-weighted attention rollout (Chefer et "
    "al., ICCV 2021)",
    run=gae,
    families=VIT_FAMILIES,
    check=access_check("gae"),
)
"""The ``gae`` method."""
