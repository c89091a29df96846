"""Attention access to a ViT image tower: the pieces attention-based explanation methods need.

dualex's own method only needs a tower's prefix/suffix split; first-order baselines such as
GAE, MaskCLIP, Grad-ECLIP, CLIP Surgery and LeGrad need to open the blocks up: queries, keys,
values and attention probabilities, the value path, the readout. A family module describes
this once for its ViT image tower as a :class:`VisionAccess` and declares the factory as data
(``Family.vision_access``); methods find it with :func:`vision_access`, never by checking
classes themselves.

The manual forward ``stem → blocks → pool → project`` re-computes the tower's own image
embedding (a test checks it per family). Two readouts exist:

* ``"cls"`` (CLIP-like): ``pool`` keeps the CLS row, ``project`` is the final norm and
  projection, and ``head`` (the same function) applies to any token state;
* ``"attention-pool"`` (SigLIP's MAP head: a learnt probe attends to every token): ``pool``
  runs the probe's attention and exposes its probabilities; ``project`` is whatever follows the
  pool. ``head(tokens)`` is the per-token analogue dense methods use: *the embedding the image
  would have if the pool attended to that token alone* (probability 1 on it, so the attention
  output is the token's value): final norm → the pool's value and output projections → the
  pool's MLP → ``project``. For a single-token sequence ``project(pool(x)) == head(x)``.

All tensors are batch first: hidden states ``[B, S, D]`` (S = prefix tokens + patches),
per-head tensors ``[B, heads, S, hd]``, probabilities ``[B, heads, Q, S_keys]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InvalidInputError
from dualex.towers.positions import ImagePositions

__all__ = [
    "Attention",
    "MHABlockAccess",
    "VisionAccess",
    "VisionAccessError",
    "access_families",
    "mha_attention",
    "mha_merge",
    "split_heads",
    "supported_towers",
    "vision_access",
]


class VisionAccessError(InvalidInputError):
    """The model's image tower offers no attention access (not a ViT, or a ViT variant dualex
    cannot open up); the message says why and which towers do."""


@dataclass
class Attention:
    """One attention evaluation.

    Attributes:
        q: Queries ``[B, heads, Q, hd]`` (after any query norm).
        k: Keys ``[B, heads, S_keys, hd]`` (after any key norm).
        v: Values ``[B, heads, S_keys, hd]``.
        probs: Attention probabilities ``[B, heads, Q, S_keys]`` (rows sum to 1).
        first_key: Token index of key column 0 (an attention pool that skips the prefix tokens
            has ``first_key = prefix``); patch columns are ``probs[..., prefix - first_key:]``.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    probs: Tensor
    first_key: int = 0

    def output(self) -> Tensor:
        """Per-head attention outputs ``probs @ v``, ``[B, heads, Q, hd]``."""
        return self.probs @ self.v


def split_heads(t: Tensor, heads: int) -> Tensor:
    """``[B, S, heads * hd] → [B, heads, S, hd]``."""
    B, S, D = t.shape
    return t.view(B, S, heads, D // heads).transpose(1, 2)


def merge_heads(o: Tensor) -> Tensor:
    """``[B, heads, S, hd] → [B, S, heads * hd]``."""
    B, h, S, hd = o.shape
    return o.transpose(1, 2).reshape(B, S, h * hd)


def softmax_probs(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax(q kᵀ · scale)`` over the keys, in the tensors' dtype."""
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)


def check_mha(mha: Any, where: str) -> nn.MultiheadAttention:
    """``mha`` if it is a plain packed ``nn.MultiheadAttention``, else a :class:`VisionAccessError`."""
    if (
        not isinstance(mha, nn.MultiheadAttention)
        or not mha._qkv_same_embed_dim
        or mha.bias_k is not None
        or mha.in_proj_weight is None
    ):
        raise VisionAccessError(
            f"{where}: attention access needs a packed nn.MultiheadAttention (one in_proj_weight, "
            f"no bias_k/bias_v), not {type(mha).__name__}"
        )
    return mha


def mha_attention(mha: nn.MultiheadAttention, yq: Tensor, ykv: Tensor) -> Attention:
    """Queries, keys, values and probabilities of a packed ``nn.MultiheadAttention``.

    Args:
        mha: The attention module (``in_proj_weight`` holds q, k, v stacked).
        yq: Query states ``[B, Q, D]`` (batch first, already normalised).
        ykv: Key/value states ``[B, S, D]``.

    Returns:
        The :class:`Attention` (``scale = hd^-0.5``, as ``nn.MultiheadAttention`` computes it).
    """
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    b = mha.in_proj_bias
    bq, bk, bv = b.chunk(3) if b is not None else (None, None, None)
    h = int(mha.num_heads)
    q = split_heads(nn.functional.linear(yq, wq, bq), h)
    k = split_heads(nn.functional.linear(ykv, wk, bk), h)
    v = split_heads(nn.functional.linear(ykv, wv, bv), h)
    return Attention(q=q, k=k, v=v, probs=softmax_probs(q, k, q.shape[-1] ** -0.5))


def mha_merge(mha: nn.MultiheadAttention, o: Tensor) -> Tensor:
    """``[B, heads, S, hd]`` per-head outputs → ``out_proj`` of their concatenation ``[B, S, D]``."""
    return mha.out_proj(merge_heads(o))


class VisionAccess:
    """A ViT image tower opened up for attention-based methods (one subclass per family).

    Subclasses set the attributes in ``__init__`` and implement :meth:`stem`, :meth:`norm1`,
    :meth:`attention`, :meth:`merge`, :meth:`mlp`, :meth:`project` and, for an attention-pool
    readout, :meth:`pool_attention` / :meth:`pool_finish` / :meth:`head`.

    Attributes:
        model: The :class:`dualex.DualEncoder`.
        kind: Which tower this is (``"hf-clip"``, ``"hf-siglip"``, ``"hf-siglip2"``,
            ``"openclip-vit"``, ``"openclip-timm"``, ``"openai-vit"``).
        blocks: The transformer blocks (original modules, not session gates).
        pooling: ``"cls"`` or ``"attention-pool"`` (see the module docstring).
        prefix: Tokens before the patches (CLS, registers).
        patch: ``(ph, pw)`` patch size in model-input pixels.
        dtype: Parameter dtype (pixels are cast to it).
    """

    pooling: str = "cls"

    def __init__(
        self,
        model: Any,
        blocks: Sequence[nn.Module],
        *,
        kind: str,
        prefix: int,
        patch: tuple[int, int],
        dtype: torch.dtype,
    ) -> None:
        from dualex.towers.session import unwrap

        self.model = model
        self.blocks = [unwrap(b) for b in blocks]
        self.kind, self.prefix, self.patch, self.dtype = kind, int(prefix), patch, dtype

    # -- inputs ---------------------------------------------------------------------------------
    def prepare(self, image: Any) -> tuple[Tensor, ImagePositions]:
        """Processed pixels ``[1, 3, H, W]`` and the image positions (grid, geometry)."""
        inp = self.model.tower_b.prepare(image)
        return inp.data["pixel_values"].to(self.dtype), inp.positions

    def text_embedding(self, texts: str | Sequence[str]) -> Tensor:
        """Unit-norm text embeddings (no gradient): ``[E]`` for a string, ``[T, E]`` for a list."""
        ta = self.model.tower_a
        many = not isinstance(texts, str)
        items = list(texts) if many else [texts]
        with torch.no_grad():
            es = [ta.encode(ta.prepare(t).data)[0].to(self.dtype) for t in items]
        e = torch.stack(es)
        e = e / e.norm(dim=-1, keepdim=True)
        return e if many else e[0]

    def empty_text_embedding(self) -> Tensor:
        """Unit-norm embedding ``[E]`` of the empty caption (the text tower's ``"empty"``
        reference: start and end token only)."""
        ta = self.model.tower_a
        with torch.no_grad():
            ref = ta.reference_input(ta.prepare("a"), "empty")
            e = ta.encode(ref.data)[0].to(self.dtype)
        return e / e.norm()

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Eval mode and no parameter gradients on the model while a method runs (restored)."""
        from dualex.towers.session import model_guard

        module = self.model.module
        with model_guard([module] if module is not None else []):
            yield

    # -- the forward pieces (family-specific) ---------------------------------------------------
    def stem(self, pixels: Tensor) -> Tensor:
        """Pixels ``[B, 3, H, W]`` → the input of block 0, ``[B, S, D]``."""
        raise NotImplementedError

    def norm1(self, block: nn.Module, x: Tensor) -> Tensor:
        """The block's pre-attention norm of ``x`` ``[B, S, D]``."""
        raise NotImplementedError

    def attention(self, block: nn.Module, y: Tensor) -> Attention:
        """Self-attention of normalised states ``y`` ``[B, S, D]`` (probabilities ``[B, h, S, S]``)."""
        raise NotImplementedError

    def merge(self, block: nn.Module, o: Tensor) -> Tensor:
        """Per-head outputs ``[B, heads, S, hd]`` → the attention branch ``[B, S, D]`` that is
        added to the residual (output projection, and layer scale where the block has one)."""
        raise NotImplementedError

    def mlp(self, block: nn.Module, x: Tensor) -> Tensor:
        """The MLP branch ``[B, S, D]`` added to the residual ``x`` (norm, MLP, layer scale)."""
        raise NotImplementedError

    def project(self, pooled: Tensor) -> Tensor:
        """What follows the pool: ``[B, D] → [B, E]`` (CLS readout: final norm + projection)."""
        raise NotImplementedError

    def pool_attention(self, x: Tensor) -> Attention:
        """Attention-pool readout: the probe's attention over the last block's output ``x``
        ``[B, S, D]`` (final norm applied inside); probabilities ``[B, heads, Q, S_keys]``."""
        raise VisionAccessError(f"{self.kind} reads its embedding at the CLS token")

    def pool_finish(self, o: Tensor) -> Tensor:
        """Attention-pool readout: per-head probe outputs ``[B, heads, Q, hd]`` → pooled ``[B, D]``
        (output projection, the pool's MLP, the choice of query row)."""
        raise VisionAccessError(f"{self.kind} reads its embedding at the CLS token")

    def pool_values(self, tokens: Tensor) -> Tensor:
        """Attention-pool readout: the pool's per-head values of token states ``[N, D]`` (final
        norm applied inside), shaped as probe outputs ``[N, heads, 1, hd]`` — what the probe reads
        when it attends to that token alone."""
        raise VisionAccessError(f"{self.kind} reads its embedding at the CLS token")

    # -- derived --------------------------------------------------------------------------------
    def block(self, block: nn.Module, x: Tensor) -> tuple[Tensor, Attention]:
        """One pre-norm block: ``x + attn(norm1 x)``, then ``+ mlp``; returns ``(x_out, attention)``."""
        at = self.attention(block, self.norm1(block, x))
        x = x + self.merge(block, at.output())
        return x + self.mlp(block, x), at

    def pool(self, x: Tensor) -> tuple[Tensor, Attention | None]:
        """The last block's output ``[B, S, D]`` → ``(pooled [B, D], the pool's attention or None)``.

        ``"cls"``: row 0 and ``None``; ``"attention-pool"``: the probe's output and its attention.
        """
        if self.pooling == "cls":
            return x[:, 0], None
        at = self.pool_attention(x)
        return self.pool_finish(at.output()), at

    def head(self, tokens: Tensor) -> Tensor:
        """Token states ``[..., D]`` → embedding space ``[..., E]``.

        ``"cls"``: :meth:`project` (final norm + projection). ``"attention-pool"``: the
        embedding if the pool attended to that token alone (module docstring):
        ``project(pool_finish(pool_values(tokens)))``.
        """
        if self.pooling == "cls":
            return self.project(tokens)
        shape = tokens.shape
        out = self.project(self.pool_finish(self.pool_values(tokens.reshape(-1, shape[-1]))))
        return out.reshape(*shape[:-1], out.shape[-1])

    def forward(self, pixels: Tensor) -> tuple[Tensor, list[Attention], Attention | None]:
        """Image embeddings ``[B, E]``, every block's attention, and the pool's attention."""
        x = self.stem(pixels)
        atts = []
        for blk in self.blocks:
            x, at = self.block(blk, x)
            atts.append(at)
        pooled, pool_at = self.pool(x)
        return self.project(pooled), atts, pool_at

    def embed(self, pixels: Tensor) -> Tensor:
        """Image embeddings ``[B, E]`` by the manual forward."""
        return self.forward(pixels)[0]

    def patch_columns(self, at: Attention | None = None) -> slice:
        """Key columns of ``at`` (default: a self-attention over every token) that are patches."""
        first = 0 if at is None else at.first_key
        return slice(self.prefix - first, None)

    @staticmethod
    def cosine(emb: Tensor, t: Tensor) -> Tensor:
        """Cosine of each row of ``emb`` ``[B, E]`` with unit vector(s) ``t`` ``[E]`` or ``[B, E]``."""
        if t.dim() == 1:
            return (emb @ t) / emb.norm(dim=-1)
        return (emb * t).sum(-1) / emb.norm(dim=-1)


class MHABlockAccess(VisionAccess):
    """Blocks of CLIP's ``ResidualAttentionBlock`` shape (open_clip, OpenAI's clip package):
    ``ln_1``, a packed ``nn.MultiheadAttention`` ``attn``, optional layer scales ``ls_1`` /
    ``ls_2``, ``ln_2``, ``mlp``. Batch-first or not, the blocks' own layout does not matter: the
    access computes every piece on ``[B, S, D]`` states itself."""

    def check_blocks(self) -> None:
        """Raise :class:`VisionAccessError` unless every block has that shape."""
        for i, b in enumerate(self.blocks):
            if hasattr(b, "ln_1_kv") or not all(hasattr(b, n) for n in ("ln_1", "ln_2", "mlp")):
                raise VisionAccessError(
                    f"{self.kind}: block {i} is a {type(b).__name__}, not a CLIP residual "
                    "attention block (ln_1, attn, ln_2, mlp)"
                )
            check_mha(getattr(b, "attn", None), f"{self.kind} block {i}")

    def norm1(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.ln_1(x)

    def attention(self, block: nn.Module, y: Tensor) -> Attention:
        return mha_attention(block.attn, y, y)

    def merge(self, block: nn.Module, o: Tensor) -> Tensor:
        out = mha_merge(block.attn, o)
        ls = getattr(block, "ls_1", None)
        return ls(out) if ls is not None else out

    def mlp(self, block: nn.Module, x: Tensor) -> Tensor:
        out = block.mlp(block.ln_2(x))
        ls = getattr(block, "ls_2", None)
        return ls(out) if ls is not None else out


def access_families() -> list[str]:
    """Names of the registered families that declare a vision access."""
    from dualex.towers.registry import families

    return [f.name for f in families() if f.vision_access is not None]


def supported_towers() -> str:
    """The image towers some registered family opens up, for messages: each family's
    ``vision_towers`` with its name (``"HF CLIP, SigLIP, SigLIP-2 (hf); ..."``)."""
    from dualex.towers.registry import families

    return "; ".join(
        f"{f.vision_towers or f.summary} ({f.name})"
        for f in families()
        if f.vision_access is not None
    )


def vision_access(model: Any) -> VisionAccess:
    """The :class:`VisionAccess` of a model's image tower, as its family declares it.

    Args:
        model: A :class:`dualex.DualEncoder` (its family: the one it carries, else the one that
            wraps its module).

    Raises:
        VisionAccessError: when the model's family declares no access, or its image tower is not
            a ViT it can open up (a CNN, a text tower); the message names the supported towers.
    """
    from dualex.towers.registry import family_of

    family = family_of(model)
    factory = getattr(family, "vision_access", None)
    if factory is None:
        name = getattr(model, "name", type(model).__name__)
        tower = getattr(getattr(model, "tower_b", None), "name", "no dualex towers")
        raise VisionAccessError(
            f"{name!r} ({tower}) has no attention access; it exists for {supported_towers()}"
        )
    return factory(model)
