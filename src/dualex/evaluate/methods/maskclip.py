"""``maskclip``: MaskCLIP (Zhou et al., ECCV 2022), a dense map without gradients.

In the last block the attention is replaced by its value path, ``x + merge(v(norm1 x))``, then
``+ MLP``; every patch token goes through the readout head (:meth:`VisionAccess.head`), is
L2-normalised and dotted with the normalised text embedding. CLS readout: the final norm and
projection, CLS dropped. Attention-pool readout (SigLIP): the head is the pool attending to that
token alone (its value and output projections and MLP), the per-token analogue documented in
:mod:`dualex.towers.access`. One forward serves every text.
"""

from __future__ import annotations

from typing import Any

import torch

from dualex.evaluate.methods._vit import VIT_FAMILIES, access, access_check, attributions
from dualex.evaluate.methods.base import Attribution, Method, timed

__all__ = ["METHOD", "maskclip"]


def maskclip(model: Any, image: Any, texts: list[str]) -> list[Attribution]:
    """MaskCLIP maps of the image for every text.

    Args:
        model: A :class:`dualex.DualEncoder` with a ViT image tower.
        image: The image.
        texts: The texts.

    Returns:
        One attribution per text: ``image_map [rows, cols]``, the cosine of each patch's dense
        feature with the text (relative units).

    Raises:
        UnsupportedMethodError: for an image tower without attention access.
    """
    acc = access(model, "maskclip")

    def go() -> list[Attribution]:
        with acc.session(), torch.no_grad():
            pixels, pos = acc.prepare(image)
            t = acc.text_embedding(texts)  # [T, E]
            h = acc.stem(pixels)
            for blk in acc.blocks[:-1]:
                h, _ = acc.block(blk, h)
            last = acc.blocks[-1]
            h = h + acc.merge(last, acc.attention(last, acc.norm1(last, h)).v)
            h = h + acc.mlp(last, h)
            feats = acc.head(h[0, acc.prefix :])  # [N, E]
            sims = (feats / feats.norm(dim=-1, keepdim=True)) @ t.T  # [N, T]
        return attributions("maskclip", pos, list(sims.T))

    return timed(go)


METHOD = Method(
    name="maskclip",
    order=1,
    summary="MaskCLIP: the last block's value path read per patch (Zhou et al., ECCV 2022)",
    run=maskclip,
    families=VIT_FAMILIES,
    check=access_check("maskclip"),
)
"""The ``maskclip`` method."""
