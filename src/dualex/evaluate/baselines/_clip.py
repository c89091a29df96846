"""Access to a Hugging Face ``CLIPModel``'s vision internals, shared by the first-order baselines.

Supported family: transformers ``CLIPModel`` wrapped by dualex (``dualex.load("builtin")``,
``"hf:<clip>"``, :func:`dualex.wrap`). Every other family raises :class:`InvalidInputError`.
The block arithmetic below is re-written (attention probabilities exposed); a test checks it
reproduces ``get_image_features``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InvalidInputError
from dualex.towers.positions import ImagePositions


@dataclass
class Attn:
    """One attention evaluation: ``q, k, v: [B, heads, S, hd]``, ``probs: [B, heads, S, S]``."""

    q: Tensor
    k: Tensor
    v: Tensor
    probs: Tensor


class ClipVision:
    """The vision side of a dualex-wrapped HF CLIPModel, opened up for baselines.

    Args:
        model: A :class:`dualex.DualEncoder` whose towers are dualex's HF CLIP towers.

    Raises:
        InvalidInputError: for any other model family.
    """

    def __init__(self, model: Any) -> None:
        from dualex.model import wrap
        from dualex.towers.hf import HFImageTower, HFTextTower

        model = wrap(model)
        ta, tb = model.tower_a, model.tower_b
        if not (
            isinstance(ta, HFTextTower)
            and isinstance(tb, HFImageTower)
            and type(tb.model).__name__ == "CLIPModel"
        ):
            raise InvalidInputError(
                "the first-order baselines (ig, gae, maskclip, gradeclip, surgery) support "
                f"Hugging Face CLIPModel only, not {model.name!r}; use --methods dualex,random for "
                "other models"
            )
        self.model = model
        self.text_tower, self.image_tower = ta, tb
        self.clip: nn.Module = tb.model
        self.vm = self.clip.vision_model
        self.blocks = list(self.vm.encoder.layers)
        self.dtype = next(self.clip.parameters()).dtype

    # -- inputs --------------------------------------------------------------------------------
    def prepare(self, image: Any) -> tuple[Tensor, ImagePositions]:
        """Processed pixels ``[1, 3, H, W]`` and the image positions (grid, geometry)."""
        inp = self.image_tower.prepare(image)
        return inp.data["pixel_values"].to(self.dtype), inp.positions

    def text_embedding(self, text: str) -> Tensor:
        """Unit-norm text embedding ``[E]`` (no gradient)."""
        with torch.no_grad():
            inp = self.text_tower.prepare(text)
            e = self.text_tower.encode(inp.data)[0].to(self.dtype)
        return e / e.norm()

    def grid(self, pos: ImagePositions) -> tuple[int, int]:
        """``(rows, cols)`` of the patch grid."""
        return tuple(pos.grid)  # type: ignore[return-value]

    # -- forward pieces ------------------------------------------------------------------------
    def stem(self, pixels: Tensor) -> Tensor:
        """Embeddings + pre-layernorm: the input of block 0, ``[B, S, D]``."""
        return self.vm.pre_layrnorm(self.vm.embeddings(pixels))

    def attention(self, block: nn.Module, y: Tensor) -> Attn:
        """Multi-head attention of normalised states ``y`` (``[B, S, D]``)."""
        a = block.self_attn
        B, S, _D = y.shape
        h, hd = a.num_heads, a.head_dim

        def split(t: Tensor) -> Tensor:
            return t.view(B, S, h, hd).transpose(1, 2)

        q, k, v = split(a.q_proj(y)), split(a.k_proj(y)), split(a.v_proj(y))
        probs = torch.softmax((q @ k.transpose(-1, -2)) * a.scale, dim=-1)
        return Attn(q=q, k=k, v=v, probs=probs)

    def merge(self, block: nn.Module, o: Tensor) -> Tensor:
        """``[B, heads, S, hd]`` per-head outputs → ``out_proj`` of the concatenation."""
        B, h, S, hd = o.shape
        return block.self_attn.out_proj(o.transpose(1, 2).reshape(B, S, h * hd))

    def block(self, block: nn.Module, x: Tensor) -> tuple[Tensor, Attn]:
        """One encoder block; returns the output and its attention."""
        at = self.attention(block, block.layer_norm1(x))
        x = x + self.merge(block, at.probs @ at.v)
        x = x + block.mlp(block.layer_norm2(x))
        return x, at

    def head(self, tokens: Tensor) -> Tensor:
        """post-layernorm + visual projection of token states ``[..., D]`` → ``[..., E]``."""
        return self.clip.visual_projection(self.vm.post_layernorm(tokens))

    def forward(self, pixels: Tensor) -> tuple[Tensor, list[Attn]]:
        """Image embeddings ``[B, E]`` (pooled at CLS) and every block's attention."""
        x = self.stem(pixels)
        atts = []
        for blk in self.blocks:
            x, at = self.block(blk, x)
            atts.append(at)
        return self.head(x[:, 0]), atts

    @staticmethod
    def cosine(emb: Tensor, t: Tensor) -> Tensor:
        """Cosine of each row of ``emb`` ``[B, E]`` with the unit vector ``t`` → ``[B]``."""
        return (emb @ t) / emb.norm(dim=-1)
