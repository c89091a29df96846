"""The CLIP-family pieces shared by open_clip, OpenAI's clip package and ALIGN.

* text: :class:`BPETextCodec` (CLIP's BPE or an HF tokenizer, with character offsets) and
  :class:`ClipTextTower` (a causal or bidirectional text transformer split at a block; for a
  causal tower pooled at the end token the rows are the tokens from BOS to EOT — later positions
  cannot reach the embedding, exactly the part of the matrix the paper's code keeps);
* image: :class:`ClipImageTower` — a ViT (prefix tokens + the patch grid) or a CNN whose positions
  are the cells of the feature map entering the split layer (:class:`FeatureMapMixin`);
* geometry: :func:`transform_geometry` follows a torchvision/open_clip preprocessing pipeline so a
  box on the original image lands on the right patches; :func:`image_reference_pixels` builds the
  image references every image tower uses.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.engine.lastblock import LastBlock
from dualex.engine.projection import BatchSuffixFn
from dualex.errors import InvalidInputError, UnknownModelError
from dualex.towers.base import FastPath, HookTower, TowerInput
from dualex.towers.inputs import (
    PIXEL_SOURCE,
    align_pieces,
    blurred,
    check_text,
    id_tensor,
    load_image,
    pixel_tensor,
    positions_of_pieces,
    tensor_geometry,
    text_reference_ids,
    unknown_positions,
    warn_discarded,
    warn_truncated,
)
from dualex.towers.positions import Geometry, ImagePositions, Positions, TextPositions
from dualex.towers.trainable import Trainable

__all__ = [
    "BPETextCodec",
    "ClipImageTower",
    "ClipTextTower",
    "FeatureMapMixin",
    "RandomWeightsWarning",
    "align_pieces",
    "image_reference_pixels",
    "transform_geometry",
    "warn_random",
]


def packed_attention(attn: nn.MultiheadAttention) -> dict[str, Any]:
    """The attention pieces of a :class:`LastBlock` from an ``nn.MultiheadAttention`` with packed
    q/k/v (``in_proj_weight [3D, D]``): ``w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o, heads, scale``."""
    wq, wk, wv = attn.in_proj_weight.chunk(3)
    bias = attn.in_proj_bias
    bq, bk, bv = bias.chunk(3) if bias is not None else (None, None, None)
    heads = int(attn.num_heads)
    return dict(w_q=wq, b_q=bq, w_k=wk, b_k=bk, w_v=wv, b_v=bv, w_o=attn.out_proj.weight,
                b_o=attn.out_proj.bias, heads=heads,
                scale=float((attn.embed_dim // heads) ** -0.5))  # fmt: skip


def mha_last_block(
    block: nn.Module, head: Callable[[Tensor], Tensor], *, causal: bool
) -> LastBlock | None:
    """The pieces of an open_clip / OpenAI ``ResidualAttentionBlock`` (``nn.MultiheadAttention``
    with packed q/k/v), or ``None`` for a block of another shape (the generic path then runs)."""
    attn = getattr(block, "attn", None)
    if (
        not isinstance(attn, nn.MultiheadAttention)
        or not attn._qkv_same_embed_dim
        or attn.bias_k is not None
        or hasattr(block, "ln_1_kv")
        or not all(hasattr(block, n) for n in ("ln_1", "ln_2", "mlp"))
    ):
        return None
    return LastBlock(
        ln1=block.ln_1,
        **packed_attention(attn),
        ln2=block.ln_2,
        mlp=block.mlp,
        head=head,
        causal=causal,
        ls1=getattr(block, "ls_1", None),
        ls2=getattr(block, "ls_2", None),
    )


def project_rows(x: Tensor, proj: Any) -> Tensor:
    """``x @ proj`` for a projection matrix, ``proj(x)`` for a module, ``x`` for none."""
    if proj is None:
        return x
    if isinstance(proj, nn.Module):
        return proj(x)
    return x @ proj


class RandomWeightsWarning(UserWarning):
    """A model was built with random weights: its explanations show no learnt behaviour."""


def warn_random(what: str, hint: str) -> None:
    """Warn loudly that ``what`` has random weights."""
    warnings.warn(
        f"\n{'!' * 78}\n!! {what} has RANDOM weights (no pretrained weights were requested).\n"
        f"!! Its explanations reflect no learnt behaviour. {hint}\n{'!' * 78}",
        RandomWeightsWarning,
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------------------
# text: tokenisation with character offsets for CLIP's BPE and open_clip's HF tokenizers
# ---------------------------------------------------------------------------------------------


class BPETextCodec:
    """Tokenises a caption for a CLIP-family text tower and describes its positions.

    Works with CLIP's ``SimpleTokenizer`` (open_clip's and the clip package's: start/end tokens,
    padding with id 0 after the end token) and open_clip's ``HFTokenizer`` family (anything with a
    Hugging Face ``.tokenizer``; special tokens from its ``all_special_ids``).

    Args:
        tokenizer: The family's tokenizer object.
        context_length: Number of positions the text model takes.
        tokenize: ``text -> ids [1, context_length]``, the family's own tokenisation (default:
            ``tokenizer([text])``).
    """

    def __init__(
        self,
        tokenizer: Any,
        context_length: int,
        tokenize: Callable[[str], Tensor] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = int(context_length)
        self._tokenize = tokenize or (lambda t: tokenizer([t]))
        self.bpe = hasattr(tokenizer, "byte_decoder") and hasattr(tokenizer, "encoder")
        self.hf = None if self.bpe else getattr(tokenizer, "tokenizer", None)
        if not self.bpe and self.hf is None:
            raise UnknownModelError(
                f"dualex cannot read positions from a {type(tokenizer).__name__}; pass CLIP's "
                "SimpleTokenizer or an open_clip HFTokenizer (tokenizer=...)"
            )
        if self.bpe:
            enc = tokenizer.encoder
            sot = getattr(tokenizer, "sot_token_id", None)
            eot = getattr(tokenizer, "eot_token_id", None)
            self.bos_id: int | None = int(sot if sot is not None else enc["<|startoftext|>"])
            self.eos_id: int | None = int(eot if eot is not None else enc["<|endoftext|>"])
            self.fill_id = 0  # CLIP pads with 0 (the BPE token "!")
        else:
            hf = self.hf
            self.bos_id = hf.bos_token_id if hf.bos_token_id is not None else hf.cls_token_id
            self.eos_id = hf.eos_token_id if hf.eos_token_id is not None else hf.sep_token_id
            self.fill_id = int(hf.pad_token_id if hf.pad_token_id is not None else 0)

    # -- pieces ---------------------------------------------------------------------------------
    def _bpe_piece(self, i: int) -> str | None:
        tok = self.tokenizer
        s = tok.decoder.get(i, "").replace("</w>", "")
        try:
            return bytearray(tok.byte_decoder[c] for c in s).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            return None

    def _count(self, text: str) -> int:
        """Number of positions the text needs (special tokens included), before truncation."""
        if self.bpe:
            return len(self.tokenizer.encode(text)) + 2
        clean = getattr(self.tokenizer, "clean_fn", None)
        cleaned = clean(text) if callable(clean) else text
        return len(self.hf(cleaned)["input_ids"])

    def encode(self, text: str) -> tuple[Tensor, TextPositions]:
        """Ids ``[1, context_length]`` and positions of one caption.

        Raises:
            InvalidInputError: if the text is empty or needs more positions than the model has.
        """
        text = check_text(text)
        n = self._count(text)
        dropped = warn_truncated(n, self.context_length, stacklevel=3)  # EOT is kept last
        ids = torch.as_tensor(self._tokenize(text)).reshape(1, -1).long()
        pos = self.describe(ids, text)
        return ids, replace(pos, dropped=dropped) if dropped else pos

    def describe(self, ids: Tensor, text: str | None = None) -> TextPositions:
        """Positions of ids ``[1, T]``: of ``text`` when given, else of the decoded ids.

        Without ``text`` the positions' source is ``"token ids"``: the text is the decoded
        content tokens, and token indices are the tensor's own positions.
        """
        seq = [int(t) for t in ids[0].tolist()]
        if self.bpe:
            end = seq.index(self.eos_id, 1) if self.eos_id in seq[1:] else len(seq) - 1
            special = [i == 0 or i >= end for i in range(len(seq))]
            names = {0: "<start_of_text>", end: "<end_of_text>"}
            pieces = [None if special[i] else self._bpe_piece(t) for i, t in enumerate(seq)]
            shown = [
                names.get(i, "<pad>") if special[i] else (pieces[i] or "?") for i in range(len(seq))
            ]
        else:
            hf = self.hf
            specials = set(hf.all_special_ids) - {hf.unk_token_id}  # unknown: a word
            special = [t in specials for t in seq]
            raw = hf.convert_ids_to_tokens(seq)
            pieces = [None if sp else hf.decode([t]) for t, sp in zip(seq, special, strict=True)]
            shown = [str(r) for r in raw]
        # byte-level BPE has no unknown token; a word-level vocabulary has one
        unk = None if self.bpe else getattr(self.hf, "unk_token_id", None)
        unknown = unknown_positions(seq, unk, special)
        if text is None:
            content = [p or "" for p, sp in zip(pieces, special, strict=True) if not sp]
            joined = "".join(content) if self.bpe else " ".join(content)
            return positions_of_pieces(joined, pieces, shown, special, unknown)
        offsets = align_pieces(text, pieces)
        tokens = [text[o[0] : o[1]] if o else s for o, s in zip(offsets, shown, strict=True)]
        return TextPositions(
            text=text, tokens=tokens, offsets=offsets, special=special, unknown=unknown
        )

    def empty_ids(self) -> list[int]:
        """Ids of the empty caption (start and end token only)."""
        if self.bpe:
            return [int(self.bos_id), int(self.eos_id)]  # type: ignore[arg-type]
        return list(self.hf("")["input_ids"])


class ClipTextTower(HookTower):
    """A CLIP-family text tower split at the input of one of its transformer blocks.

    Args:
        encode: The family's own ``ids [B, T] -> [B, E]`` (e.g. ``model.encode_text``).
        blocks: The transformer blocks in order.
        codec: Tokenisation and positions.
        layout: ``"bsd"`` (batch-first blocks) or ``"sbd"`` (sequence-first).
        reference: Default text reference (``"exclip"``, ``"pad"``, ``"empty"``...).
        name: Display name.
        root: The module that contains the blocks; when given, blocks before the split layer are
            skipped while the suffix runs (their output is replaced anyway).
        trim: Keep only the positions up to the end token (for a causal text transformer pooled
            at the end token, where later positions cannot reach the embedding). The model still
            runs on its full context: the rows after the end token are held at the input's own
            hidden state. ``False`` keeps every position (padding flagged special).
    """

    modality = "text"
    tensor_inputs = True

    def __init__(
        self,
        encode: Callable[[Tensor], Tensor],
        blocks: Sequence[nn.Module],
        codec: BPETextCodec,
        *,
        layout: str = "bsd",
        reference: Any = "exclip",
        name: str = "clip-text",
        root: nn.Module | None = None,
        trim: bool = False,
        last_block: Callable[[], LastBlock | None] | None = None,
        pooled_row: Callable[[Tensor], int] | None = None,
    ) -> None:
        self._encode, self._blocks = encode, list(blocks)
        self.codec, self.layout, self.name = codec, layout, name
        self.default_reference = reference
        self._root = root
        self.trim = trim
        self._last_block, self._pooled_row = last_block, pooled_row

    def root(self) -> nn.Module | None:
        """The module holding the blocks (blocks before the split are skipped in the suffix)."""
        return self._root

    def blocks(self) -> list[nn.Module]:
        return self._blocks

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return self._encode(data["input_ids"])

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            ids = id_tensor(x, length=self.codec.context_length)
            pos = self.codec.describe(ids)
        else:
            ids, pos = self.codec.encode(x)
        if self.trim:
            end = next((i for i in range(1, len(pos)) if pos.special[i]), len(pos) - 1)
            n = end + 1
            pos = replace(
                pos, tokens=pos.tokens[:n], offsets=pos.offsets[:n], special=pos.special[:n]
            )
        return TowerInput(data={"input_ids": ids}, positions=pos, raw=x)

    def fast_path(self, inps: Sequence[TowerInput], layer: int) -> FastPath | None:
        if self._last_block is None or self._pooled_row is None:
            return None
        if self.check_layer(layer) != self.num_layers - 1:
            return None
        block = self._last_block()
        if block is None:
            return None
        layer = self.num_layers - 1
        rows = torch.tensor([self._pooled_row(inp.data["input_ids"][0]) for inp in inps])
        if any(("tail", layer) not in inp.extra for inp in inps):
            self.hidden_batch(inps, layer)
        tails = torch.stack([inp.extra[("tail", layer)] for inp in inps])

        def pad(H: Tensor) -> Tensor:
            return torch.cat([H, tails.to(H.dtype)], dim=1)

        return FastPath(block, rows, pad)

    def hidden_batch(self, inps: Sequence[TowerInput], layer: int) -> Tensor:
        """Hidden states ``[B, S, D]`` over the tower's positions (up to the end token if trimmed).

        The rows after the end token are kept on each input (``extra``) for :meth:`suffix_batch`.
        """
        full = super().hidden_batch(inps, layer)
        n = len(inps[0].positions)
        for inp, h in zip(inps, full, strict=True):
            inp.extra[("tail", self.check_layer(layer))] = h[n:]
        return full[:, :n]

    def suffix_batch(self, inps: Sequence[TowerInput], layer: int) -> BatchSuffixFn:
        layer = self.check_layer(layer)
        run_full = super().suffix_batch(inps, layer)
        n, full = len(inps[0].positions), inps[0].data["input_ids"].shape[1]
        if n == full:
            return run_full
        if any(("tail", layer) not in inp.extra for inp in inps):
            self.hidden_batch(inps, layer)
        tails = torch.stack([inp.extra[("tail", layer)] for inp in inps])  # rows held fixed

        def run(H: Tensor, items: Sequence[int]) -> Tensor:
            m = H.shape[0] // len(items)
            rest = tails[torch.as_tensor(list(items))].repeat_interleave(m, dim=0)
            return run_full(torch.cat([H, rest.to(H.dtype)], dim=1), items)

        return run

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        c = self.codec
        full = inp.data["input_ids"].shape[1]
        is_ids = isinstance(spec, list | tuple) or (
            isinstance(spec, Tensor) and not spec.is_floating_point()
        )
        kept = len(inp.positions)
        if is_ids and torch.as_tensor(spec).numel() == kept < full:  # ids of the kept positions
            spec = [int(v) for v in torch.as_tensor(spec).flatten()] + [c.fill_id] * (full - kept)
        ids = text_reference_ids(
            inp.data["input_ids"],
            inp.positions.special,
            spec,
            fill_id=c.fill_id,
            bos_id=c.bos_id,
            eos_id=c.eos_id,
            empty_ids=c.empty_ids() if spec == "empty" else None,
        )
        return TowerInput(data={"input_ids": ids}, positions=inp.positions, raw=None)


# ---------------------------------------------------------------------------------------------
# image: geometry of torchvision-style preprocessing; ViT and CNN towers
# ---------------------------------------------------------------------------------------------

_NO_GEOMETRY = {
    "ToTensor",
    "Normalize",
    "MaybeToTensor",
    "MaybeConvertMode",
    "ConvertImageDtype",
    "PILToTensor",
    "function",
    "Lambda",
}


class _Sized:
    """Stands in for a PIL image where only ``.size`` is read."""

    def __init__(self, w: int, h: int) -> None:
        self.size = (w, h)


def transform_geometry(transform: Any, size: tuple[int, int]) -> Geometry:
    """Geometry of a torchvision/open_clip preprocessing pipeline for an image of ``size``.

    Follows ``Resize`` (shorter side or exact size), open_clip's ``ResizeKeepRatio``,
    ``CenterCrop`` and ``CenterCropOrPad`` (padding gives a negative offset) exactly as they
    compute sizes; tensor conversion and normalisation do not move pixels.

    Args:
        transform: A ``Compose`` (or a single transform).
        size: ``(width, height)`` of the original image.

    Raises:
        InvalidInputError: on a geometric transform dualex cannot follow.
    """
    w0, h0 = size
    cw, ch = int(w0), int(h0)
    sx = sy = 1.0
    ox = oy = 0.0
    steps = getattr(transform, "transforms", [transform])
    for t in steps:
        kind = type(t).__name__
        new: tuple[int, int] | None = None  # (w, h) after a resize
        if kind == "Resize":
            s = t.size
            if isinstance(s, int) or len(s) == 1:
                target = s if isinstance(s, int) else s[0]
                short, long = (cw, ch) if cw <= ch else (ch, cw)
                n_short, n_long = target, int(target * long / short)
                max_size = getattr(t, "max_size", None)
                if max_size is not None and n_long > max_size:
                    n_short, n_long = int(max_size * n_short / n_long), max_size
                new = (n_short, n_long) if cw <= ch else (n_long, n_short)
            else:
                new = (int(s[1]), int(s[0]))
        elif kind == "ResizeKeepRatio":
            nh, nw = t.get_params(_Sized(cw, ch), t.size, t.longest)
            new = (int(nw), int(nh))
        elif kind in ("CenterCrop", "CenterCropOrPad"):
            th, tw = (t.size, t.size) if isinstance(t.size, int) else tuple(t.size)[-2:]
            if tw > cw or th > ch:
                pad_l = (tw - cw) // 2 if tw > cw else 0
                pad_t = (th - ch) // 2 if th > ch else 0
                pad_r = (tw - cw + 1) // 2 if tw > cw else 0
                pad_b = (th - ch + 1) // 2 if th > ch else 0
                ox, oy = ox - pad_l, oy - pad_t
                cw, ch = cw + pad_l + pad_r, ch + pad_t + pad_b
            top, left = round((ch - th) / 2.0), round((cw - tw) / 2.0)
            ox, oy = ox + left, oy + top
            cw, ch = tw, th
        elif kind in _NO_GEOMETRY or not hasattr(t, "size"):
            continue
        else:
            raise InvalidInputError(
                f"dualex cannot follow the geometry of the preprocessing step {kind}; use a "
                "Resize/CenterCrop pipeline (open_clip's and clip's inference transforms)"
            )
        if new is not None:
            fx, fy = new[0] / cw, new[1] / ch
            sx, sy, ox, oy = sx * fx, sy * fy, ox * fx, oy * fy
            cw, ch = new
    return Geometry(
        original_size=(int(w0), int(h0)), input_size=(cw, ch), scale=(sx, sy), offset=(ox, oy)
    )


def image_reference_pixels(
    pixels: Tensor, raw: Any, spec: Any, to_pixels: Callable[[Any], Tensor]
) -> Tensor:
    """Reference pixels for an image input (shared by every image tower in this package).

    Args:
        pixels: The input's processed pixels ``[1, 3, H, W]``.
        raw: The original image (for ``"blur"``).
        spec: ``"zeros"`` / ``"mean"`` (all-zero normalised input, the dataset-mean colour),
            ``"blur"``, an image (path, PIL, array), or processed pixels of the input's shape.
        to_pixels: The tower's ``image -> [1, 3, H, W]`` preprocessing.

    Raises:
        InvalidInputError: on an unknown spec or pixels of the wrong shape.
    """
    if isinstance(spec, str) and spec in ("zeros", "mean"):
        return torch.zeros_like(pixels)
    if isinstance(spec, str) and spec == "blur":
        if raw is None or isinstance(raw, Tensor):
            raise InvalidInputError("a 'blur' reference needs the original image; pass the image")
        return to_pixels(blurred(raw))
    if isinstance(spec, Tensor) and spec.is_floating_point() and spec.dim() in (3, 4):
        if spec.numel() != pixels.numel():
            raise InvalidInputError(
                f"reference pixels have shape {tuple(spec.shape)}, the input is "
                f"{tuple(pixels.shape)}; pass a tensor of the processed input's shape"
            )
        return spec.reshape(pixels.shape).to(pixels)
    try:
        image = load_image(spec)
    except InvalidInputError as err:
        raise InvalidInputError(
            f"unknown image reference {spec!r}; use 'zeros', 'blur', an image, processed pixels, "
            "or a hidden-state tensor [S, D]"
        ) from err
    return to_pixels(image)


class FeatureMapMixin:
    """Layer-dependent positions for towers whose hidden states are ``[B, C, H, W]`` maps.

    The grid of each layer is read once per input size from a probe forward pass on zeros, with a
    pre-hook on every block; a block output that is ``[B, E]`` (an attention pool) is one position.
    """

    _shape_cache: dict[tuple[int, int], list[tuple[int, int]]]

    def _to_rows(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x.unsqueeze(1)
        return super()._to_rows(x)  # type: ignore[misc]

    def _from_rows(self, rows: Tensor, like: Tensor) -> Tensor:
        if like.dim() == 2:
            return rows[:, 0]
        return super()._from_rows(rows, like)  # type: ignore[misc]

    def feature_grids(self, hw: tuple[int, int]) -> list[tuple[int, int]]:
        """``(rows, cols)`` of the hidden state at every layer ``0..num_layers`` for input ``hw``."""
        cache = self.__dict__.setdefault("_shape_cache", {})
        if hw in cache:
            return cache[hw]
        blocks = self.original_blocks()  # type: ignore[attr-defined]
        shapes: list[tuple[int, ...]] = [()] * (len(blocks) + 1)
        handles = []

        def grab(i: int) -> Callable[..., None]:
            def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
                x = args[0] if args else next(iter(kwargs.values()))
                shapes[i] = tuple(x.shape)

            return pre

        def post(module: nn.Module, args: tuple, out: Any) -> None:
            out = out[0] if isinstance(out, tuple) else out
            shapes[-1] = tuple(out.shape)

        for i, b in enumerate(blocks):
            handles.append(b.register_forward_pre_hook(grab(i), with_kwargs=True))
        handles.append(blocks[-1].register_forward_hook(post))
        try:
            dtype = self.pixel_dtype()  # type: ignore[attr-defined]
            with torch.no_grad(), self.context():  # type: ignore[attr-defined]
                self.encode({"pixel_values": torch.zeros(1, 3, *hw, dtype=dtype)})  # type: ignore[attr-defined]
        finally:
            for h in handles:
                h.remove()
        grids = [(s[-2], s[-1]) if len(s) == 4 else (1, 1) for s in shapes]
        cache[hw] = grids
        return grids


class ClipImageTower(FeatureMapMixin, HookTower):
    """A CLIP-family image tower: ViT (patch tokens) or CNN (feature-map cells).

    Args:
        encode: The family's own ``pixels [B, 3, H, W] -> [B, E]`` (e.g. ``model.encode_image``).
        blocks: For a ViT the transformer blocks; for a CNN the modules whose inputs are the
            layers (``[stem conv, stage 1, ..., stage 4, attention pool]`` for a ModifiedResNet).
        preprocess: The family's inference transform ``PIL -> [3, H, W]``.
        kind: ``"vit"`` or ``"cnn"``.
        layout: ``"bsd"``/``"sbd"`` for a ViT, ``"bchw"`` for a CNN.
        patch: ``(ph, pw)`` patch size of a ViT.
        prefix: Positions before the patches (CLS and registers) of a ViT.
        reference: Default image reference (``"zeros"``: all-zero input in normalised space).
        default_layer: Layer used when none is given (default: the input of the last block).
        name: Display name.
        input_size: ``(H, W)`` of the model input, checked on pixel tensors (``None``: any).
        last_block: ``() -> LastBlock | None``: the last block's pieces and head read at the CLS
            row, for the last-block fast path of a ViT (``None``: the generic AD path).
        root: The module that contains the blocks; for a ViT, blocks before the split layer are
            skipped while the suffix runs. CNN stages change the shape of the hidden state, so a
            CNN always runs its prefix.
    """

    modality = "image"
    tensor_inputs = True

    def __init__(
        self,
        encode: Callable[[Tensor], Tensor],
        blocks: Sequence[nn.Module],
        preprocess: Callable[[Any], Tensor],
        *,
        kind: str,
        layout: str,
        patch: tuple[int, int] = (1, 1),
        prefix: int = 0,
        dtype: torch.dtype = torch.float32,
        reference: Any = "zeros",
        default_layer: int | None = None,
        name: str = "clip-image",
        root: nn.Module | None = None,
        input_size: tuple[int, int] | None = None,
        last_block: Callable[[], LastBlock | None] | None = None,
    ) -> None:
        if kind not in ("vit", "cnn"):
            raise ValueError(f"kind must be 'vit' or 'cnn', got {kind!r}")
        self._encode, self._blocks = encode, list(blocks)
        self.preprocess, self.kind, self.layout = preprocess, kind, layout
        self.patch, self.prefix, self.dtype = patch, prefix, dtype
        self.default_reference, self.name = reference, name
        self._default_layer = default_layer
        self._root = root
        self.skip_prefix = kind == "vit"
        self.input_size = input_size
        self._last_block = last_block

    def root(self) -> nn.Module | None:
        return self._root

    def blocks(self) -> list[nn.Module]:
        return self._blocks

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return self._encode(data["pixel_values"])

    def pixel_dtype(self) -> torch.dtype:
        return self.dtype

    def _pixels(self, image: Any) -> Tensor:
        return torch.as_tensor(self.preprocess(image)).unsqueeze(0).to(self.dtype)

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            pixels = pixel_tensor(x, self.dtype, self.input_size)
            image, geo, source = x, tensor_geometry(pixels), PIXEL_SOURCE
        else:
            image = load_image(x)
            pixels = self._pixels(image)
            geo, source = transform_geometry(self.preprocess, image.size), "image"
            warn_discarded(geo)
        h, w = (int(v) for v in pixels.shape[-2:])
        if self.kind == "vit":
            grid, prefix = (h // self.patch[0], w // self.patch[1]), self.prefix
        else:
            grid, prefix = self.feature_grids((h, w))[self.default_layer], 0
        pos = ImagePositions(grid=grid, prefix=prefix, geometry=geo, source=source)
        return TowerInput(data={"pixel_values": pixels}, positions=pos, raw=image)

    def fast_path(self, inps: Sequence[TowerInput], layer: int) -> FastPath | None:
        """CLS-pooled ViTs: the last block read at row 0 (see ``engine.lastblock``)."""
        if self.kind != "vit" or self._last_block is None:
            return None
        if self.check_layer(layer) != self.num_layers - 1:
            return None
        block = self._last_block()
        return None if block is None else FastPath(block, torch.zeros(len(inps), dtype=torch.long))

    def suffix_key(self, inp: TowerInput, layer: int) -> tuple:
        """The suffix reads nothing but the hidden state (a CNN's prefix output is replaced)."""
        return ()

    def positions_at(self, inp: TowerInput, layer: int) -> Positions:
        """Positions at ``layer``: for a CNN, the cells of the feature map entering it."""
        if self.kind == "vit" or not isinstance(inp.positions, ImagePositions):
            return inp.positions
        hw = tuple(int(v) for v in inp.data["pixel_values"].shape[-2:])
        grid = self.feature_grids(hw)[self.check_layer(layer)]  # type: ignore[index]
        return replace(inp.positions, grid=grid, prefix=0)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        ref = image_reference_pixels(inp.data["pixel_values"], inp.raw, spec, self._pixels)
        return TowerInput(data={"pixel_values": ref}, positions=inp.positions, raw=None)


def cls_patch_tokens(visual: nn.Module, pixels: Tensor, dtype: torch.dtype) -> Tensor:
    """The token sequence of a CLIP-style ViT before its pre-norm (OpenAI and open_clip share
    this layout): patch embeddings of ``visual.conv1``, the class embedding first, plus the
    positional embedding.

    Args:
        visual: The ViT (``conv1``, ``class_embedding``, ``positional_embedding``).
        pixels: ``[B, 3, H, W]``.
        dtype: The ViT's parameter dtype.

    Returns:
        ``[B, 1 + rows · cols, width]``.
    """
    x = visual.conv1(pixels.to(dtype))  # [B, width, rows, cols]
    B, W = x.shape[:2]
    x = x.reshape(B, W, -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(B, 1, W)
    return torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# fine-tuning (dualex.train) through the model's own encode_text / encode_image
# ---------------------------------------------------------------------------------------------


@dataclass
class ClipTrainable(Trainable):
    """An open_clip or OpenAI clip model being fine-tuned (the same forward: ``encode_text`` on
    context-length token ids, ``encode_image`` on transformed pixels). Saved as
    ``open_clip_model.safetensors`` and ``dualex_openclip.json``, which
    ``dualex.load("openclip:ARCH/FOLDER/open_clip_model.safetensors")`` opens.

    Attributes:
        arch: open_clip architecture name (``""`` when not an open_clip model).
    """

    arch: str = ""

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Padded to the context length (id 0 is padding)."""
        ids = self.tokenizer(texts)
        return ids.long(), (ids != 0).long()

    def pixels(self, images: list[Any]) -> Tensor:
        return torch.stack([self.image_processor(im.convert("RGB")) for im in images])

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        return self.model.encode_text(ids)

    def encode_image(self, pixels: Tensor) -> Tensor:
        return self.model.encode_image(pixels)

    def set_checkpointing(self, on: bool) -> bool:
        if not hasattr(self.model, "set_grad_checkpointing"):
            return False
        self.model.set_grad_checkpointing(on)
        return True

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / "open_clip_model.safetensors"))
        spec = f"openclip:{self.arch}/{folder / 'open_clip_model.safetensors'}"
        (folder / "dualex_openclip.json").write_text(
            json.dumps({"arch": self.arch, "spec": spec}, indent=1)
        )
        return folder
