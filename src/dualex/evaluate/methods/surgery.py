"""``surgery``: CLIP Surgery (Li et al., 2023), without prompt ensembling.

The last ``blocks`` blocks get a second path that accumulates value–value self-attention
(``q = k = v``: ``softmax(v vᵀ · scale) v`` per head, then the block's output projection) of
``norm1`` of the original stream, without MLPs; the original path runs unchanged. Every patch
token of the second path goes through the readout head (:meth:`VisionAccess.head`: the final
norm and projection for CLIP-like towers; for SigLIP the pool attending to that token alone, as
documented in :mod:`dualex.towers.access`), is L2-normalised and dotted with the text embedding
minus the empty caption's embedding (renormalised); each map is min-max normalised. One forward
serves every text.
"""

from __future__ import annotations

from typing import Any

import torch

from dualex.errors import SettingError
from dualex.evaluate.methods._vit import VIT_FAMILIES, access, access_check, attributions, minmax
from dualex.evaluate.methods.base import Attribution, Method, timed

__all__ = ["METHOD", "clip_surgery"]


def clip_surgery(model: Any, image: Any, texts: list[str], *, blocks: int = 6) -> list[Attribution]:
    """CLIP Surgery maps of the image for every text.

    Args:
        model: A :class:`dualex.DualEncoder` with a ViT image tower.
        image: The image.
        texts: The texts.
        blocks: How many of the last blocks get the value–value path (all if fewer exist).

    Returns:
        One attribution per text: ``image_map [rows, cols]`` in ``[0, 1]`` (relative units).

    Raises:
        UnsupportedMethodError: for an image tower without attention access.
        SettingError: for ``blocks < 1``.
    """
    if blocks < 1:
        raise SettingError(f"surgery: blocks must be at least 1, got {blocks}")
    acc = access(model, "surgery")

    def go() -> list[Attribution]:
        with acc.session(), torch.no_grad():
            pixels, pos = acc.prepare(image)
            t = acc.text_embedding(texts) - acc.empty_text_embedding()  # [T, E]
            t = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            first = max(0, len(acc.blocks) - blocks)
            h = acc.stem(pixels)
            new = None
            for i, blk in enumerate(acc.blocks):
                if i >= first:
                    new = h.clone() if new is None else new
                    v = acc.attention(blk, acc.norm1(blk, h)).v
                    vv = torch.softmax((v @ v.transpose(-1, -2)) * v.shape[-1] ** -0.5, dim=-1)
                    new = new + acc.merge(blk, vv @ v)
                h, _ = acc.block(blk, h)
            assert new is not None
            feats = acc.head(new[0, acc.prefix :])  # [N, E]
            sims = (feats / feats.norm(dim=-1, keepdim=True)) @ t.T  # [N, T]
        return attributions("surgery", pos, list(minmax(sims, dim=0).T))

    return timed(go)


METHOD = Method(
    name="surgery",
    order=1,
    summary="CLIP Surgery: value-value attention in the last blocks (Li et al., 2023)",
    run=clip_surgery,
    families=VIT_FAMILIES,
    check=access_check("surgery"),
)
"""The ``surgery`` method."""
