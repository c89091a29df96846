"""Shared input handling: reading images, tokenising text with offsets, building references."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, UnidentifiedImageError
from torch import Tensor

from dualex.errors import InvalidInputError
from dualex.towers.positions import Geometry, TextPositions


def load_image(x: Any) -> Image.Image:
    """Read an image from a path, a PIL image, or an ``[H, W, 3]`` uint8 array, as RGB.

    Raises:
        InvalidInputError: if the file is missing or not an image.
    """
    if isinstance(x, Image.Image):
        return x.convert("RGB")
    if isinstance(x, str | Path):
        p = Path(x)
        if not p.is_file():
            raise InvalidInputError(
                f"image file {str(p)!r} does not exist; pass a path to an image"
            )
        try:
            with Image.open(p) as im:
                return im.convert("RGB")
        except (UnidentifiedImageError, OSError) as err:
            raise InvalidInputError(
                f"cannot read {str(p)!r} as an image ({err}); pass a PNG/JPEG/... file"
            ) from err
    if isinstance(x, np.ndarray) and x.ndim == 3 and x.shape[2] in (3, 4):
        arr = x if x.dtype == np.uint8 else np.clip(x * 255, 0, 255).astype(np.uint8)
        return Image.fromarray(arr[..., :3])
    raise InvalidInputError(
        f"cannot use {type(x).__name__} as an image; pass a file path, a PIL image or an "
        "[H, W, 3] array"
    )


def check_text(text: Any) -> str:
    """Validate a text input.

    Raises:
        InvalidInputError: if it is not a non-empty string.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"expected a caption string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("the caption is empty; pass a non-empty text")
    return text


def tokenize_with_offsets(
    tokenizer: Any, text: str, max_length: int | None, *, pad_to: int | None = None
) -> tuple[Tensor, Tensor, TextPositions]:
    """Tokenise one text with a fast HF tokenizer, keeping character offsets.

    Args:
        tokenizer: A Hugging Face (fast) tokenizer.
        text: The text.
        max_length: The model's maximum number of positions (None: no check).
        pad_to: Pad to this many positions (models trained on padded text, e.g. SigLIP).

    Returns:
        ``(input_ids [1, S], attention_mask [1, S], positions)``.

    Raises:
        InvalidInputError: if the text is empty or longer than ``max_length`` tokens.
    """
    text = check_text(text)
    kwargs: dict[str, Any] = dict(
        return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt"
    )
    if pad_to is not None:
        kwargs.update(padding="max_length", max_length=pad_to)
    try:
        enc = tokenizer(text, **kwargs)
    except NotImplementedError as err:  # slow tokenizer: no offsets
        raise InvalidInputError(
            "this tokenizer cannot report character offsets; load a fast tokenizer (use_fast=True)"
        ) from err
    ids = enc["input_ids"]
    n = ids.shape[1]
    if max_length is not None and n > max_length:
        raise InvalidInputError(
            f"the caption has {n} tokens but the model takes at most {max_length}; shorten it"
        )
    special = enc["special_tokens_mask"][0].tolist()
    offsets = enc["offset_mapping"][0].tolist()
    raw_tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    tokens, offs = [], []
    for tok, (a, b), sp in zip(raw_tokens, offsets, special, strict=True):
        if sp or b <= a:
            tokens.append(str(tok))
            offs.append(None)
        else:
            tokens.append(text[a:b])
            offs.append((int(a), int(b)))
    mask = enc.get("attention_mask", torch.ones_like(ids))
    flags = [bool(s) for s in special]
    return ids, mask, TextPositions(text=text, tokens=tokens, offsets=offs, special=flags)


def text_reference_ids(
    ids: Tensor,
    special: list[bool],
    spec: Any,
    *,
    fill_id: int,
    bos_id: int | None,
    eos_id: int | None,
    empty_ids: list[int] | None = None,
) -> Tensor:
    """Token ids of a text reference with the same length as ``ids`` (``[1, S]``).

    Args:
        ids: The input's ids, ``[1, S]``.
        special: Special-token flag per position.
        spec: ``"exclip"`` (``[BOS, fill, EOS, fill, …]``, the paper's code), ``"pad"`` (every
            non-special token replaced by ``fill_id``), ``"empty"`` (the empty text's ids, then
            ``fill_id``), or explicit ids (list or 1-D int tensor of length S).
        fill_id: Filler token id.
        bos_id: Begin token id (needed by ``"exclip"``).
        eos_id: End token id (needed by ``"exclip"``).
        empty_ids: Ids of the empty text (needed by ``"empty"``).

    Raises:
        InvalidInputError: on an unknown spec or ids of the wrong length.
    """
    S = ids.shape[1]
    if isinstance(spec, list | tuple) or (
        isinstance(spec, Tensor) and not spec.is_floating_point()
    ):
        ref = torch.as_tensor(spec, dtype=ids.dtype).reshape(1, -1)
        if ref.shape[1] != S:
            raise InvalidInputError(
                f"reference ids have length {ref.shape[1]}, the input has {S} tokens; pass ids "
                "of the input's length"
            )
        return ref
    if spec == "exclip":
        if bos_id is None or eos_id is None:
            raise InvalidInputError(
                "the 'exclip' text reference needs begin and end tokens; use reference='pad'"
            )
        seq = [bos_id, fill_id, eos_id] + [fill_id] * max(S - 3, 0)
        return torch.tensor([seq[:S]], dtype=ids.dtype)
    if spec == "pad":
        ref = ids.clone()
        for i, sp in enumerate(special):
            if not sp:
                ref[0, i] = fill_id
        return ref
    if spec == "empty":
        if empty_ids is None:
            raise InvalidInputError("this tower cannot build an 'empty' reference; use 'pad'")
        seq = (list(empty_ids) + [fill_id] * S)[:S]
        return torch.tensor([seq], dtype=ids.dtype)
    raise InvalidInputError(
        f"unknown text reference {spec!r}; use 'exclip', 'pad', 'empty', token ids, or a "
        "hidden-state tensor [S, D]"
    )


def blurred(image: Image.Image, radius: float | None = None) -> Image.Image:
    """A strongly blurred copy of an image (Gaussian, radius 1/8 of the shorter side by default)."""
    r = radius if radius is not None else max(min(image.size) / 8.0, 1.0)
    return image.filter(ImageFilter.GaussianBlur(r))


def processor_geometry(
    processor: Any, size: tuple[int, int], input_hw: tuple[int, int]
) -> Geometry:
    """Geometry of a Hugging Face image processor for an original image of ``size`` (W, H).

    Handles shortest-edge resize + centre crop (CLIP) and fixed-size resize (SigLIP, ViT);
    ``input_hw`` is the model input's ``(height, width)`` as produced.
    """
    h_in, w_in = input_hw
    rsize = getattr(processor, "size", None) or {}
    get = rsize.get if hasattr(rsize, "get") else (lambda k, d=None: getattr(rsize, k, d))
    short = get("shortest_edge", None)
    do_resize = getattr(processor, "do_resize", True)
    if do_resize and short:
        # Without a crop the "crop" is the whole resized image, at offset 0.
        return Geometry.shortest_edge_center_crop(size, int(short), (w_in, h_in))
    if do_resize:
        return Geometry.resize(size, (w_in, h_in))
    return Geometry(original_size=size, input_size=(w_in, h_in), scale=(1.0, 1.0))


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


# ---------------------------------------------------------------------------------------------
# tensor inputs: token ids and preprocessed pixels, in the tensor's own coordinates
# ---------------------------------------------------------------------------------------------

TOKEN_SOURCE = "token ids"
"""``TextPositions.source`` of a text given as token ids: spans index the tensor's tokens."""

PIXEL_SOURCE = "pixel tensor"
"""``ImagePositions.source`` of an image given as pixels: boxes are in the tensor's pixels."""


def id_tensor(x: Tensor, max_length: int | None = None, length: int | None = None) -> Tensor:
    """Validate one text's token ids (``[S]`` or ``[1, S]``) and return them as ``[1, S]`` int64.

    Args:
        x: The ids.
        max_length: The most positions the model takes (``None``: no limit).
        length: The exact number of positions the model takes (``None``: any).

    Raises:
        InvalidInputError: naming the expected shape.
    """
    want = f"[{length}]" if length else "[S]"
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise InvalidInputError(
            f"token ids must be an integer tensor {want} or [B, {want[1:-1]}], got {x.dtype}"
        )
    if x.dim() == 2 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 1 or x.shape[0] == 0:
        raise InvalidInputError(f"token ids must have shape {want} (one text), got {tuple(x.shape)}")
    if length is not None and x.shape[0] != length:
        raise InvalidInputError(
            f"this text tower takes exactly {length} token ids ([{length}] or [B, {length}], "
            f"padded as its tokenizer pads), got {x.shape[0]}"
        )
    if max_length is not None and x.shape[0] > max_length:
        raise InvalidInputError(
            f"token ids of length {x.shape[0]} exceed the model's {max_length} positions; pass "
            f"[S] with S <= {max_length}"
        )
    return x.detach().to(torch.long).reshape(1, -1).cpu()


def pixel_tensor(
    x: Tensor, dtype: torch.dtype, size: tuple[int, int] | None = None, channels: int = 3
) -> Tensor:
    """Validate one preprocessed image (``[C, H, W]`` or ``[1, C, H, W]``) → ``[1, C, H, W]``.

    Args:
        x: Normalised pixels, as the model's processor makes them.
        dtype: The model's floating dtype.
        size: ``(H, W)`` the model needs (``None``: any).
        channels: Number of channels.

    Raises:
        InvalidInputError: naming the expected shape.
    """
    want = f"[{channels}, {size[0]}, {size[1]}]" if size else f"[{channels}, H, W]"
    if not x.is_floating_point():
        raise InvalidInputError(
            f"pixels must be a float tensor {want} (the processor's output), got {x.dtype}"
        )
    if x.dim() == 4 and x.shape[0] == 1:
        x = x[0]
    if x.dim() != 3 or x.shape[0] != channels or (size and tuple(x.shape[1:]) != tuple(size)):
        raise InvalidInputError(
            f"pixels must have shape {want} or [B, {want[1:-1]}] for this model, got "
            f"{tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("the pixel tensor contains NaN or infinite values")
    return x.detach().to(dtype).unsqueeze(0).cpu()


def tensor_geometry(pixels: Tensor) -> Geometry:
    """Identity geometry of a pixel tensor ``[1, C, H, W]``: boxes are in its own pixels."""
    h, w = (int(v) for v in pixels.shape[-2:])
    return Geometry(original_size=(w, h), input_size=(w, h), scale=(1.0, 1.0))


def hf_id_positions(tokenizer: Any, ids: Tensor) -> TextPositions:
    """Positions of token ids ``[1, S]`` under a Hugging Face tokenizer.

    The text is the decoded ids; each token's characters are found in it, so string spans work
    on that text, and slices / index lists on the tensor's own positions.
    """
    seq = [int(v) for v in ids[0].tolist()]
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    special = [t in specials for t in seq]
    pieces = [None if sp else tokenizer.decode([t]) for t, sp in zip(seq, special, strict=True)]
    shown = [str(t) for t in tokenizer.convert_ids_to_tokens(seq)]
    text = tokenizer.decode([t for t, sp in zip(seq, special, strict=True) if not sp])
    return positions_of_pieces(text, pieces, shown, special)


def positions_of_pieces(
    text: str, pieces: list[str | None], shown: list[str], special: list[bool]
) -> TextPositions:
    """``TextPositions`` (source: token ids) of decoded pieces aligned to ``text``."""
    offsets = align_pieces(text, pieces)
    tokens = [text[o[0] : o[1]] if o else s for o, s in zip(offsets, shown, strict=True)]
    return TextPositions(
        text=text, tokens=tokens, offsets=offsets, special=special, source=TOKEN_SOURCE
    )
