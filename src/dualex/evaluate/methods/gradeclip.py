"""``gradeclip``: Grad-ECLIP (Zhao et al., 2024) for the image side.

Target ``s = cos(image embedding, text embedding)``. At the readout attention — the last block's
CLS row (CLIP-like) or the attention pool's probe (SigLIP: the pool's query, keys and values):
``map_j = ReLU(Σ_heads Σ_channels ∂s/∂o · v_j · w_j)``, with ``o`` the readout query's attention
output per head (before the output projection), ``v_j`` patch ``j``'s value and ``w_j`` the
min-max normalised (over the patches, per head) cosine of the readout query with patch ``j``'s
key. The texts share one forward; their gradients come from one backward on a batch of copies of
the readout output.
"""

from __future__ import annotations

from typing import Any

import torch

from dualex.evaluate.methods._vit import VIT_FAMILIES, access, access_check, attributions, minmax
from dualex.evaluate.methods.base import Attribution, Method, timed

__all__ = ["METHOD", "grad_eclip"]


def grad_eclip(model: Any, image: Any, texts: list[str]) -> list[Attribution]:
    """Grad-ECLIP maps of the image for every text.

    Args:
        model: A :class:`dualex.DualEncoder` with a ViT image tower.
        image: The image.
        texts: The texts.

    Returns:
        One attribution per text: ``image_map [rows, cols]`` (relative units), ``score`` the
        cosine.

    Raises:
        UnsupportedMethodError: for an image tower without attention access.
    """
    acc = access(model, "gradeclip")

    def go() -> list[Attribution]:
        T = len(texts)
        with acc.session():
            pixels, pos = acc.prepare(image)
            t = acc.text_embedding(texts)  # [T, E]
            with torch.no_grad():
                h = acc.stem(pixels)
                blocks = acc.blocks if acc.pooling != "cls" else acc.blocks[:-1]
                for blk in blocks:
                    h, _ = acc.block(blk, h)
                if acc.pooling == "cls":
                    last = acc.blocks[-1]
                    at = acc.attention(last, acc.norm1(last, h))
                    q, k, v = at.q[:, :, :1], at.k, at.v
                    probs = at.probs[:, :, :1]
                else:
                    at = acc.pool_attention(h)
                    q, k, v, probs = at.q, at.k, at.v, at.probs
            o = (probs @ v).expand(T, -1, -1, -1).clone().requires_grad_(True)  # [T, h, Q, hd]
            with torch.enable_grad():
                if acc.pooling == "cls":
                    xc = h[:, :1].expand(T, -1, -1) + acc.merge(last, o)
                    emb = acc.project(xc + acc.mlp(last, xc))[:, 0]
                else:
                    emb = acc.project(acc.pool_finish(o))
                s = acc.cosine(emb, t)  # [T]
                (grad,) = torch.autograd.grad(s.sum(), o)  # [T, h, Q, hd]
            cols = acc.patch_columns(at)
            kp, vp = k[0, :, cols], v[0, :, cols]  # [h, N, hd]
            w = minmax(torch.nn.functional.cosine_similarity(q[0, :, :1], kp, dim=-1))  # [h, N]
            contrib = torch.einsum("thd,hnd->thn", grad[:, :, 0], vp) * w  # [T, h, N]
            maps = list(contrib.sum(1).clamp(min=0))
        return attributions("gradeclip", pos, maps, scores=s.detach())

    return timed(go)


METHOD = Method(
    name="gradeclip",
    order=1,
    summary="Grad-ECLIP: gradient-weighted values of the readout query (Zhao et al., 2024)",
    run=grad_eclip,
    families=VIT_FAMILIES,
    check=access_check("gradeclip"),
)
"""The ``gradeclip`` method."""
