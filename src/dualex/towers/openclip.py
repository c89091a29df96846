"""open_clip towers, and the CLIP-family pieces shared with OpenAI's clip package and ALIGN.

``dualex.load("openclip:<arch>[/<pretrained>]")`` builds the model with open_clip's own
``create_model_and_transforms`` and ``get_tokenizer`` and splits it with hooks:

* text: the causal CLIP text transformer (pooled at the EOT token, the largest id) or a
  ``TextTransformer`` of a ``CustomTextCLIP`` (SigLIP: pooled at the last position). For a causal
  tower pooled at the end token the rows are the tokens from BOS to EOT (later positions cannot
  reach the embedding: this is exactly the part of the matrix the paper's code keeps); otherwise
  all ``context_length`` positions the model sees, padding flagged special.
* image, three kinds of tower:

  - ``"vit"``: open_clip's ``VisionTransformer`` (any size and patch) or a timm ViT trunk (SigLIP's
    attention-pool head); positions = prefix tokens (CLS, registers) + the patch grid.
  - ``"cnn"``: ``ModifiedResNet`` (RN50, ...). Layer ``L`` is the input of stage ``layerL``
    (``L = 1..4``), ``L = 5`` the input of the attention pool, ``L = 0`` the normalised pixels
    (input of the stem). Positions are the spatial cells of that feature map, so the grid depends
    on the layer (:meth:`ClipImageTower.positions_at`).

Geometry (box ↔ patch) follows the preprocessing transform step by step
(:func:`transform_geometry`).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InvalidInputError, UnknownModelError
from dualex.towers.base import HookTower, TowerInput
from dualex.towers.inputs import blurred, check_text, load_image, text_reference_ids
from dualex.towers.positions import Geometry, ImagePositions, Positions, TextPositions

__all__ = [
    "BPETextCodec",
    "ClipImageTower",
    "ClipTextTower",
    "RandomWeightsWarning",
    "load_openclip",
    "transform_geometry",
    "wrap_openclip",
]


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


def align_pieces(text: str, pieces: Sequence[str | None]) -> list[tuple[int, int] | None]:
    """Character offsets of token pieces in ``text``, found left to right.

    A piece is matched case-insensitively at or after the end of the previous match, skipping only
    characters that are not letters or digits (whitespace, punctuation a tokenizer dropped).

    Args:
        text: The original text.
        pieces: Surface string of each token (``None`` for special tokens).

    Returns:
        ``(start, end)`` per piece, ``None`` where a piece is special, empty or not found.
    """
    low = text.lower()
    cursor = 0
    out: list[tuple[int, int] | None] = []
    for piece in pieces:
        p = (piece or "").strip().lower()
        if not p:
            out.append(None)
            continue
        at = low.find(p, cursor)
        if at < 0 or any(ch.isalnum() for ch in low[cursor:at]):
            out.append(None)
            continue
        out.append((at, at + len(p)))
        cursor = at + len(p)
    return out


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
        if n > self.context_length:
            raise InvalidInputError(
                f"the caption needs {n} tokens but the model takes at most "
                f"{self.context_length}; shorten it"
            )
        ids = torch.as_tensor(self._tokenize(text)).reshape(1, -1).long()
        seq = ids[0].tolist()
        if self.bpe:
            end = n - 1  # the end token's position
            special = [i == 0 or i >= end for i in range(len(seq))]
            names = {0: "<start_of_text>", end: "<end_of_text>"}
            pieces = [None if special[i] else self._bpe_piece(t) for i, t in enumerate(seq)]
            shown = [
                names.get(i, "<pad>") if special[i] else (pieces[i] or "?") for i in range(len(seq))
            ]
        else:
            hf = self.hf
            specials = set(hf.all_special_ids)
            special = [t in specials for t in seq]
            raw = hf.convert_ids_to_tokens(seq)
            pieces = [None if sp else hf.decode([t]) for t, sp in zip(seq, special, strict=True)]
            shown = [str(r) for r in raw]
        offsets = align_pieces(text, pieces)
        tokens = [text[o[0] : o[1]] if o else s for o, s in zip(offsets, shown, strict=True)]
        return ids, TextPositions(text=text, tokens=tokens, offsets=offsets, special=special)

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
    ) -> None:
        self._encode, self._blocks = encode, list(blocks)
        self.codec, self.layout, self.name = codec, layout, name
        self.default_reference = reference
        self._root = root
        self.trim = trim

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
        ids, pos = self.codec.encode(x)
        if self.trim:
            end = next((i for i in range(1, len(pos)) if pos.special[i]), len(pos) - 1)
            n = end + 1
            pos = TextPositions(
                text=pos.text,
                tokens=pos.tokens[:n],
                offsets=pos.offsets[:n],
                special=pos.special[:n],
            )
        return TowerInput(data={"input_ids": ids}, positions=pos, raw=x)

    def hidden(self, inp: TowerInput, layer: int) -> Tensor:
        """Hidden state ``[S, D]`` over the tower's positions (up to the end token if trimmed)."""
        return super().hidden(inp, layer)[: len(inp.positions)]

    def suffix(self, inp: TowerInput, layer: int) -> Callable[[Tensor], Tensor]:
        run_full = super().suffix(inp, layer)
        n = len(inp.positions)
        tail = super().hidden(inp, layer)[n:]  # rows after the end token, held fixed
        if tail.shape[0] == 0:
            return run_full

        def run(H: Tensor) -> Tensor:
            rest = tail.to(H.dtype).unsqueeze(0).expand(H.shape[0], -1, -1)
            return run_full(torch.cat([H, rest], dim=1))

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
        if raw is None:
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
        blocks = self.blocks()  # type: ignore[attr-defined]
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
        root: The module that contains the blocks; when given (ViT only), blocks before the split
            layer are skipped while the suffix runs. CNN stages change the shape of the hidden
            state, so a CNN always runs its prefix.
    """

    modality = "image"

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
    ) -> None:
        if kind not in ("vit", "cnn"):
            raise ValueError(f"kind must be 'vit' or 'cnn', got {kind!r}")
        self._encode, self._blocks = encode, list(blocks)
        self.preprocess, self.kind, self.layout = preprocess, kind, layout
        self.patch, self.prefix, self.dtype = patch, prefix, dtype
        self.default_reference, self.name = reference, name
        self._default_layer = default_layer
        self._root = root if kind == "vit" else None

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
        image = load_image(x)
        pixels = self._pixels(image)
        h, w = (int(v) for v in pixels.shape[-2:])
        geo = transform_geometry(self.preprocess, image.size)
        if self.kind == "vit":
            grid, prefix = (h // self.patch[0], w // self.patch[1]), self.prefix
        else:
            grid, prefix = self.feature_grids((h, w))[self.default_layer], 0
        pos = ImagePositions(grid=grid, prefix=prefix, geometry=geo)
        return TowerInput(data={"pixel_values": pixels}, positions=pos, raw=image)

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


# ---------------------------------------------------------------------------------------------
# open_clip: building towers from a model, loading by spec
# ---------------------------------------------------------------------------------------------


def _layout_of(transformer: nn.Module) -> str:
    return "bsd" if getattr(transformer, "batch_first", True) else "sbd"


def _openclip_text_tower(model: nn.Module, tokenizer: Any, reference: Any) -> ClipTextTower:
    text = getattr(model, "text", None)
    if text is None:  # CLIP: the text tower's parts live on the model
        transformer, ctx, pool = model.transformer, model.context_length, model.text_pool_type
        encode = model.encode_text
    else:
        if not hasattr(text, "transformer") or not hasattr(text.transformer, "resblocks"):
            raise UnknownModelError(
                f"dualex supports open_clip's own text transformers, not a {type(text).__name__} "
                "text tower; use an open_clip architecture with a CLIP/SigLIP text tower"
            )
        if getattr(text, "cls_emb", None) is not None:
            raise UnknownModelError(
                "CoCa-style text towers (an appended CLS token) are not supported; use a "
                "contrastive CLIP or SigLIP architecture"
            )
        transformer, ctx, pool = text.transformer, text.context_length, text.pool_type
        encode = model.encode_text
    codec = BPETextCodec(tokenizer, ctx)
    if reference is None:
        reference = "exclip" if (codec.bpe and pool == "argmax") else "pad"
    causal = getattr(text if text is not None else model, "attn_mask", None) is not None
    return ClipTextTower(
        encode,
        transformer.resblocks,
        codec,
        layout=_layout_of(transformer),
        reference=reference,
        name="openclip-text",
        root=model,
        trim=causal and pool in ("argmax", "eos"),
    )


def _openclip_image_tower(model: nn.Module, preprocess: Any, reference: Any) -> ClipImageTower:
    visual = model.visual
    dtype = next(model.parameters()).dtype
    kind = type(visual).__name__
    ref = reference if reference is not None else "zeros"
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):  # open_clip VisionTransformer
        p = visual.conv1.kernel_size
        return ClipImageTower(
            model.encode_image,
            visual.transformer.resblocks,
            preprocess,
            kind="vit",
            layout=_layout_of(visual.transformer),
            patch=(int(p[0]), int(p[1])),
            prefix=1,
            dtype=dtype,
            reference=ref,
            name="openclip-vit",
            root=model,
        )
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)) and hasattr(visual, "attnpool"):
        blocks = [visual.conv1, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        return ClipImageTower(
            model.encode_image,
            [*blocks, visual.attnpool],
            preprocess,
            kind="cnn",
            layout="bchw",
            dtype=dtype,
            reference=ref,
            name="openclip-resnet",
        )
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):
        p = trunk.patch_embed.patch_size
        p = (p, p) if isinstance(p, int) else tuple(p)
        return ClipImageTower(
            model.encode_image,
            trunk.blocks,
            preprocess,
            kind="vit",
            layout="bsd",
            patch=(int(p[0]), int(p[1])),
            prefix=int(getattr(trunk, "num_prefix_tokens", 1)),
            dtype=dtype,
            reference=ref,
            name="openclip-timm-vit",
            root=model,
        )
    inner = type(trunk).__name__ if trunk is not None else kind
    raise UnknownModelError(
        f"dualex supports open_clip image towers that are a VisionTransformer, a ModifiedResNet "
        f"or a timm ViT trunk, not {inner}; pick one of those architectures"
    )


def wrap_openclip(
    model: nn.Module,
    preprocess: Any,
    tokenizer: Any,
    *,
    name: str = "openclip",
    text_reference: Any = None,
    image_reference: Any = None,
) -> Any:
    """Wrap an already-built open_clip model as a :class:`dualex.DualEncoder`.

    Args:
        model: An open_clip ``CLIP`` or ``CustomTextCLIP`` (from ``create_model_and_transforms``).
        preprocess: Its inference image transform.
        tokenizer: Its tokenizer (``open_clip.get_tokenizer(arch)``).
        name: Display name.
        text_reference: Default text reference (``None``: ``"exclip"`` for CLIP's BPE with EOT
            pooling, ``"pad"`` otherwise).
        image_reference: Default image reference (``None``: ``"zeros"``).

    Returns:
        A :class:`dualex.DualEncoder` (text tower a, image tower b, cosine similarity).
    """
    from dualex.model import DualEncoder

    model.eval()
    scale = getattr(model, "logit_scale", None)
    return DualEncoder(
        tower_a=_openclip_text_tower(model, tokenizer, text_reference),
        tower_b=_openclip_image_tower(model, preprocess, image_reference),
        similarity="cosine",
        logit_scale=float(scale.detach().exp().reshape(-1)[0]) if scale is not None else None,
        name=name,
        module=model,
    )


def _split_spec(spec: str, known: set[str]) -> tuple[str, str | None]:
    """``"<arch>[/<tag>]"`` → ``(arch, tag)``; the arch may itself contain ``/`` (``ViT-B/32``)."""
    spec = spec.strip()
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    parts = spec.split("/")
    for k in range(len(parts), 0, -1):
        arch = "-".join(parts[:k])
        if arch in known:
            tag = "/".join(parts[k:]) or None
            return arch, tag
    return parts[0], ("/".join(parts[1:]) or None)


def _unknown_arch(arch: str, known: list[str]) -> str:
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"open_clip has no architecture {arch!r}.{hint} Available: {', '.join(sorted(known))}. "
        "Spec form: 'openclip:<arch>[/<pretrained-tag or weights file>]'"
    )


def _hf_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _local_weights(cfg: dict[str, Any], cache_dir: str | None) -> tuple[str | None, list[str]]:
    """A locally cached weights file of a pretrained tag (no network), and where was looked."""
    looked: list[str] = []
    if cfg.get("file"):
        looked.append(str(cfg["file"]))
        return (str(cfg["file"]) if os.path.isfile(cfg["file"]) else None), looked
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = (
            [filename]
            if filename
            else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        )
        if filename.endswith(".bin"):
            names.insert(0, filename[: -len(".bin")] + ".safetensors")
        try:
            from huggingface_hub import try_to_load_from_cache

            for n in names:
                got = try_to_load_from_cache(repo, n, cache_dir=cache_dir)
                if isinstance(got, str) and os.path.isfile(got):
                    return got, looked
        except ImportError:  # pragma: no cover
            pass
        looked.append(
            f"the Hugging Face cache {_hf_cache_dir(cache_dir)} (repo {repo}, file "
            f"{' or '.join(names)})"
        )
    url = cfg.get("url", "")
    if url:
        root = cache_dir or os.path.expanduser("~/.cache/clip")
        path = os.path.join(root, os.path.basename(url))
        if os.path.isfile(path):
            return path, looked
        looked.append(path)
    return None, looked


def load_openclip(
    spec: str,
    *,
    pretrained: str | None = None,
    tokenizer: Any = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    text_reference: Any = None,
    image_reference: Any = None,
    **model_kwargs: Any,
) -> Any:
    """Load an open_clip model by ``"<arch>[/<pretrained>]"`` (the part after ``"openclip:"``).

    Args:
        spec: An open_clip architecture (``ViT-B-32``; ``ViT-B/32`` also works) optionally
            followed by ``/`` and a pretrained tag or a local weights file; or ``hf-hub:<repo>`` /
            ``local-dir:<folder>``. Without a tag the model has random weights (a loud warning).
        pretrained: A pretrained tag or weights file (instead of the tag in the spec).
        tokenizer: A tokenizer to use instead of ``open_clip.get_tokenizer(arch)`` (needed
            offline for architectures whose tokenizer comes from the Hugging Face hub, e.g. SigLIP).
        cache_dir: Where open_clip caches downloads.
        device: Device of the model.
        precision: open_clip precision (``"fp32"``...).
        text_reference: Default text reference of the text tower.
        image_reference: Default image reference of the image tower.
        **model_kwargs: Passed to ``create_model_and_transforms`` (e.g. ``vision_cfg=``,
            ``text_cfg=``, ``embed_dim=`` to override the architecture's config).

    Returns:
        A :class:`dualex.DualEncoder`.

    Raises:
        UnknownModelError: on an unknown architecture or tag, or weights that are not available
            locally (offline), with the choices and where open_clip looks.
    """
    try:
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnknownModelError(
            "'openclip:' models need open_clip: pip install 'dualex[openclip]'"
        ) from err

    known = list(open_clip.list_models())
    arch, tag = _split_spec(spec, set(known))
    if pretrained is not None:
        if tag is not None:
            raise UnknownModelError(
                f"both a pretrained tag in the spec ({tag!r}) and pretrained={pretrained!r}; "
                "give one of them"
            )
        tag = pretrained
    schema = arch.startswith(("hf-hub:", "local-dir:"))
    if not schema and arch not in known:
        raise UnknownModelError(_unknown_arch(arch, known))
    if tokenizer is None:  # before the model: some tokenizers need the hub, fail fast
        ctx = model_kwargs.get("force_context_length") or (model_kwargs.get("text_cfg") or {}).get(
            "context_length"
        )
        try:
            tokenizer = open_clip.get_tokenizer(arch, context_length=ctx)
        except Exception as err:  # the HF tokenizers of some archs need the hub
            raise UnknownModelError(
                f"cannot build the tokenizer of {arch} ({str(err).splitlines()[0][:200]}); "
                "pass tokenizer=... (e.g. an open_clip HFTokenizer of a local folder)"
            ) from err
    kwargs: dict[str, Any] = dict(device=device, precision=precision, cache_dir=cache_dir)
    weights: str | None = None
    if tag and not schema:
        tags = list_pretrained_tags_by_model(arch)
        cfg = get_pretrained_cfg(arch, tag) or None
        if cfg is None and not Path(tag).expanduser().is_file():
            raise UnknownModelError(
                f"open_clip has no pretrained tag {tag!r} for {arch} and no file {tag!r} exists. "
                f"Tags for {arch}: {', '.join(tags) or '(none)'}; or pass a local weights file: "
                f"'openclip:{arch}/<path>' or pretrained='<path>'"
            )
        if cfg is None:
            weights = str(Path(tag).expanduser())
        else:
            weights, looked = _local_weights(cfg, cache_dir)
            for key, arg in (
                ("mean", "image_mean"),
                ("std", "image_std"),
                ("interpolation", "image_interpolation"),
                ("resize_mode", "image_resize_mode"),
            ):
                if key in cfg:
                    kwargs[arg] = cfg[key]
            if cfg.get("quick_gelu") and "force_quick_gelu" not in model_kwargs:
                kwargs["force_quick_gelu"] = True
            if weights is None:
                if os.environ.get("HF_HUB_OFFLINE") == "1":
                    raise UnknownModelError(_missing_weights(arch, tag, looked))
                weights = tag  # let open_clip download it
    elif not schema:
        warn_random(
            f"open_clip {arch}",
            f"Load pretrained weights with 'openclip:{arch}/<tag>' "
            f"(tags: {', '.join(list_pretrained_tags_by_model(arch)) or 'none'}).",
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=weights, **kwargs, **model_kwargs
        )
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if weights is not None and weights == tag:
            raise UnknownModelError(
                _missing_weights(
                    arch, tag, _local_weights(get_pretrained_cfg(arch, tag), cache_dir)[1]
                )
                + f" (open_clip said: {str(err).splitlines()[0][:200]})"
            ) from err
        raise UnknownModelError(f"open_clip could not build {spec!r}: {err}") from err
    name = f"openclip:{arch}" + (f"/{tag}" if tag else "")
    return wrap_openclip(
        model,
        preprocess,
        tokenizer,
        name=name,
        text_reference=text_reference,
        image_reference=image_reference,
    )


def _missing_weights(arch: str, tag: str, looked: list[str]) -> str:
    where = "; ".join(looked) or "(no download location known)"
    return (
        f"the weights of open_clip {arch}/{tag} are not available locally. open_clip looks in: "
        f"{where}. Download them once with network access (open_clip.create_model("
        f"{arch!r}, pretrained={tag!r})), set cache_dir=... to where they are, or point at a local "
        f"file: dualex.load('openclip:{arch}', pretrained='/path/to/open_clip_model.safetensors')"
    )
