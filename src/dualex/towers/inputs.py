"""The input boundary: reading images, validating and tokenising text, building references.

Every image and caption enters dualex through this module, so one policy holds everywhere:

- Images (files, PIL images, arrays) become RGB: EXIF orientation applied, alpha composited on
  white, 16-bit and float data scaled, the first frame of an animation used. A file larger than
  :func:`pixel_limit` pixels is refused before it is decoded (the limit is raised with
  ``max_pixels=...``, the ``DUALEX_MAX_PIXELS`` environment variable or the CLI's
  ``--max-pixels``). Truncated files, empty and non-finite arrays are refused.
- Captions are non-empty strings; a caption longer than the model's context is truncated with an
  :class:`~dualex.errors.InputWarning` that says how many tokens were dropped
  (:func:`tokenize_text` records the number), and a caption whose tokens are mostly unknown to the
  vocabulary gets a warning (:func:`warn_unknown_tokens`).
- :func:`discarded_fraction` / :func:`warn_discarded` say how much of an image a processor's crop
  throws away.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from torch import Tensor

from dualex.errors import InputWarning, InvalidInputError, SettingError
from dualex.towers.positions import Geometry, TextPositions, check_box  # noqa: F401  (re-export)

# -- images --------------------------------------------------------------------------------------

DEFAULT_MAX_PIXELS = 100_000_000
"""Largest image file (width × height) read without raising the limit: 100 megapixels."""

MAX_PIXELS_ENV = "DUALEX_MAX_PIXELS"
"""Environment variable that replaces :data:`DEFAULT_MAX_PIXELS`."""

MAX_TEXT_CHARS = 100_000
"""Longest caption (characters) dualex tokenises; longer ones are refused before tokenising."""

_PIL_LIMIT_LOCK = threading.Lock()
_BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def pixel_limit(limit: int | None = None) -> int:
    """The pixel-count limit in force: ``limit`` if given, else ``$DUALEX_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`.

    Raises:
        SettingError: if the limit (argument or environment) is not a positive integer.
    """
    if limit is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return DEFAULT_MAX_PIXELS
        try:
            limit = int(float(env))
        except ValueError:
            limit = 0
        if limit <= 0:
            raise SettingError(
                f"cannot read {MAX_PIXELS_ENV}={env!r}; set it to a positive number of pixels, "
                "e.g. 200000000"
            )
        return limit
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit <= 0:
        raise SettingError(
            f"max_pixels must be a positive number of pixels, got {limit!r}; e.g. 200_000_000"
        )
    return int(limit)


def _too_large(what: str, pixels: int, limit: int, size: tuple[int, int] | None = None) -> str:
    dims = f"{size[0]}×{size[1]} = " if size else ""
    return (
        f"{what} has {dims}{pixels:,} pixels, more than the limit of {limit:,} (it could be a "
        f"decompression bomb); if you trust it, raise the limit with --max-pixels, "
        f"max_pixels=... or {MAX_PIXELS_ENV}"
    )


def _open_checked(p: Path, limit: int) -> Image.Image:
    """Open (lazily) with dualex's limit instead of PIL's, without changing PIL's setting."""
    what = f"image {str(p)!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(p)
        except Image.DecompressionBombError as err:
            found = _BOMB_SIZE.search(str(err))
            pixels = int(found.group(1)) if found else None
            if pixels is None or pixels > limit:
                raise InvalidInputError(
                    _too_large(what, pixels or 0, limit)
                    if pixels
                    else f"{what} is larger than PIL allows ({err}); raise the limit with "
                    f"--max-pixels or {MAX_PIXELS_ENV}"
                ) from err
            # The caller raised the limit above PIL's own: open with PIL's check lifted, briefly.
            with _PIL_LIMIT_LOCK:
                saved = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    im = Image.open(p)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if w * h > limit:
        im.close()
        raise InvalidInputError(_too_large(what, w * h, limit, (w, h)))
    return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode == "P" and "transparency" in im.info
    )


def to_rgb(im: Image.Image) -> Image.Image:
    """An RGB copy of a PIL image under dualex's policy.

    Alpha is composited on white; 16-bit (``I;16``, ``I``) data is scaled to 8 bits rather than
    clipped; float (``F``) data in ``[0, 1]`` is scaled by 255; CMYK, YCbCr, palette, greyscale and
    bilevel images are converted.

    Raises:
        InvalidInputError: if the mode cannot be converted.
    """
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if not np.isfinite(arr).all():
            raise InvalidInputError("the image has NaN or infinite pixel values; pass finite data")
        top = float(arr.max()) if arr.size else 0.0
        if mode.startswith("I;16") or top > 255:
            arr = arr / 257.0
        elif mode == "F" and top <= 1.0:
            arr = arr * 255.0
        grey = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        return grey.convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as err:
        raise InvalidInputError(
            f"cannot convert a {mode} image to RGB ({err}); save it as an RGB PNG or JPEG"
        ) from err


def _check_size(im: Image.Image, what: str) -> None:
    if im.width == 0 or im.height == 0:
        raise InvalidInputError(
            f"{what} is {im.width}×{im.height} pixels: it has no pixels; pass a non-empty image"
        )


def _read_file(p: Path, limit: int, exif: bool = True) -> Image.Image:
    what = f"image {str(p)!r}"
    if not p.exists():
        raise InvalidInputError(f"{what} does not exist; pass a path to a PNG or JPEG file")
    if not p.is_file():
        raise InvalidInputError(f"{what} is not a file; pass a path to a PNG or JPEG file")
    try:
        im = _open_checked(p, limit)
    except UnidentifiedImageError as err:
        raise InvalidInputError(
            f"cannot read {str(p)!r} as an image: it is not an image file; pass a PNG or JPEG file"
        ) from err
    except OSError as err:
        raise InvalidInputError(
            f"cannot open {what} ({err}); pass a readable PNG or JPEG file"
        ) from err
    try:
        with im:
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animations: the first frame
            im.load()
            _check_size(im, what)
            return to_rgb(ImageOps.exif_transpose(im) if exif else im)
    except InvalidInputError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise InvalidInputError(
            f"cannot decode {what} ({err}); the file is damaged or truncated: save it again or "
            "pass another file"
        ) from err


def _from_array(x: Any, limit: int) -> Image.Image:
    arr = np.asarray(x)
    shape = tuple(arr.shape)
    hint = "pass an [H, W, 3] (or [H, W], [H, W, 4]) array"
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        extra = (
            "; it looks channels-first: use arr.transpose(1, 2, 0)"
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4)
            else ""
        )
        raise InvalidInputError(f"cannot use an array of shape {shape} as an image{extra}; {hint}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"the image array has shape {shape}: it has no pixels; {hint}")
    if arr.shape[0] * arr.shape[1] > limit:
        raise InvalidInputError(
            _too_large("the image array", arr.shape[0] * arr.shape[1], limit, shape[1::-1][:2])
        )
    kind = arr.dtype.kind
    if kind == "b":
        arr = arr.astype(np.uint8) * 255
    elif kind == "f":
        if not np.isfinite(arr).all():
            raise InvalidInputError(
                f"the image array (shape {shape}) has NaN or infinite values; pass finite pixels"
            )
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise InvalidInputError(
                f"a float image array must lie in [0, 1], this one spans [{lo:.4g}, {hi:.4g}]; "
                "divide 0–255 data by 255 or pass uint8"
            )
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InvalidInputError(
                f"an integer image array must lie in [0, 255] (or [0, 65535] for 16-bit), this "
                f"one spans [{lo}, {hi}]; pass uint8 pixels"
            )
        if hi > 255 or arr.dtype == np.uint16:
            arr = np.rint(arr / 257.0)
        arr = arr.astype(np.uint8)
    else:
        raise InvalidInputError(f"cannot use a {arr.dtype} array as an image; pass uint8 pixels")
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


def load_image(x: Any, *, max_pixels: int | None = None, exif: bool = True) -> Image.Image:
    """Read an image as RGB: a file path, a PIL image, or an array.

    Args:
        x: A path (``str`` or ``Path``), a PIL image, or an array ``[H, W, 3]``, ``[H, W, 4]``
            or ``[H, W]`` (uint8; uint16; bool; float in ``[0, 1]``).
        max_pixels: Refuse files and arrays with more pixels (width × height) than this; default
            :func:`pixel_limit` (``$DUALEX_MAX_PIXELS`` or 100 megapixels). The limit is checked
            from the file header, before decoding.
        exif: Apply the EXIF orientation (as image viewers do). Datasets whose boxes are given in
            the stored pixel layout (COCO, Flickr30k, HNC) read with ``exif=False``.

    Returns:
        An RGB image with EXIF orientation applied and alpha composited on white. Animated files
        give their first frame.

    Raises:
        InvalidInputError: if the file is missing, damaged or truncated, larger than the limit,
            or the array is empty, non-finite or of the wrong shape.
        SettingError: if ``max_pixels`` is not a positive integer.
    """
    if isinstance(x, Image.Image):
        try:
            x.load()
        except (OSError, ValueError, SyntaxError, EOFError) as err:
            raise InvalidInputError(
                f"cannot decode the PIL image ({err}); it is damaged or truncated"
            ) from err
        _check_size(x, "the image")
        return to_rgb(ImageOps.exif_transpose(x) if exif else x)
    limit = pixel_limit(max_pixels)
    if isinstance(x, str | os.PathLike):
        return _read_file(Path(x), limit, exif)
    if isinstance(x, np.ndarray):
        return _from_array(x, limit)
    raise InvalidInputError(
        f"cannot use {type(x).__name__} as an image; pass a file path, a PIL image or an "
        "[H, W, 3] array"
    )


def discarded_fraction(geometry: Geometry) -> float:
    """Fraction of the original image's area that the processor's crop throws away.

    ``0.0`` for a plain resize; about ``0.99`` for a 4000×30 image centre-cropped to a square.

    Args:
        geometry: The processor's resize/crop geometry for the image.
    """
    w, h = geometry.original_size
    if w <= 0 or h <= 0:
        return 0.0
    x0, y0, x1, y1 = geometry.to_original((0.0, 0.0, *map(float, geometry.input_size)))
    kept_w = max(min(x1, w) - max(x0, 0.0), 0.0)
    kept_h = max(min(y1, h) - max(y0, 0.0), 0.0)
    return float(min(max(1.0 - kept_w * kept_h / (w * h), 0.0), 1.0))


def warn_discarded(geometry: Geometry, threshold: float = 0.5, *, stacklevel: int = 2) -> float:
    """Warn (:class:`~dualex.errors.InputWarning`) when the crop discards more than ``threshold``.

    Args:
        geometry: The processor's geometry for the image.
        threshold: Largest fraction discarded without a warning.
        stacklevel: Passed to :func:`warnings.warn` (2: the caller's caller).

    Returns:
        The discarded fraction (see :func:`discarded_fraction`).
    """
    frac = discarded_fraction(geometry)
    if frac > threshold:
        w, h = geometry.original_size
        x0, y0, x1, y1 = geometry.to_original((0.0, 0.0, *map(float, geometry.input_size)))
        warnings.warn(
            f"the model sees {100 * (1 - frac):.2g} % of the {w}×{h} image (x {max(x0, 0):.0f}–"
            f"{min(x1, w):.0f}, y {max(y0, 0):.0f}–{min(y1, h):.0f}): the processor's crop "
            f"discards the rest, which is not explained; crop or pad the image to the model's "
            "aspect ratio first",
            InputWarning,
            stacklevel=stacklevel + 1,
        )
    return frac


# -- text ----------------------------------------------------------------------------------------


def check_text(text: Any) -> str:
    """Validate a text input.

    Raises:
        InvalidInputError: if it is not a string, is empty or whitespace only, or is longer than
            :data:`MAX_TEXT_CHARS` characters.
    """
    if not isinstance(text, str):
        raise InvalidInputError(f"expected a caption string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidInputError("the caption is empty; pass a non-empty text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInputError(
            f"the caption has {len(text):,} characters, more than dualex reads "
            f"({MAX_TEXT_CHARS:,}); the model sees only its first few dozen tokens: shorten it"
        )
    return text


def warn_truncated(n_tokens: int, max_length: int | None, *, stacklevel: int = 2) -> int:
    """Tokens a model with ``max_length`` positions drops from ``n_tokens``; warns when any.

    The warning (:class:`~dualex.errors.InputWarning`) says how many tokens were dropped, so a
    reader knows the explanation covers only what the model saw. Call it with the number of
    positions the text needs (special tokens included) before truncating.

    Args:
        n_tokens: Positions the whole text needs.
        max_length: Positions the model takes (``None``: no limit).
        stacklevel: Passed to :func:`warnings.warn` (2: the caller's caller).

    Returns:
        The number of tokens dropped (``0`` if it fits).
    """
    if max_length is None or n_tokens <= max_length:
        return 0
    dropped = int(n_tokens - max_length)
    warnings.warn(
        f"the caption needs {n_tokens} tokens but the model takes {max_length}: the last "
        f"{dropped} token(s) were dropped, and the explanation covers only the first "
        f"{max_length} (what the model sees); shorten the caption to explain all of it",
        InputWarning,
        stacklevel=stacklevel + 1,
    )
    return dropped


def unknown_positions(
    ids: Any, unk_id: int | None, special: list[bool] | None = None
) -> tuple[int, ...]:
    """Positions of one text's token ids that are the unknown token (special positions never).

    Args:
        ids: Token ids (a list, or a ``[S]`` / ``[1, S]`` tensor).
        unk_id: The vocabulary's unknown-token id (``None``: the tokenizer has none, e.g. byte
            BPE, so nothing is unknown).
        special: Special-token flag per position.
    """
    if unk_id is None:
        return ()
    seq = [int(t) for t in (ids.reshape(-1).tolist() if isinstance(ids, Tensor) else ids)]
    flags = special if special is not None else [False] * len(seq)
    return tuple(
        i for i, (t, sp) in enumerate(zip(seq, flags, strict=True)) if t == int(unk_id) and not sp
    )


def check_known(positions: TextPositions) -> TextPositions:
    """Refuse a text in which the model knows no word.

    Every content token is the unknown token: the model reads the caption as a row of identical
    "unknown" tokens, so the score and every interaction say nothing about its words.

    Raises:
        InvalidInputError: naming the words, if every non-special token is unknown.
    """
    content = [i for i, sp in enumerate(positions.special) if not sp]
    if content and set(content) <= set(positions.unknown):
        words = positions.unknown_words()
        shown = ", ".join(repr(w) for w in words[:6]) + (", ..." if len(words) > 6 else "")
        raise InvalidInputError(
            f"the model knows none of the words of {positions.text!r} ({shown} are all unknown "
            "to its vocabulary): it would read only 'unknown' tokens, so there is nothing to "
            "explain; use words the model was trained on"
        )
    return positions


def unknown_fraction(
    ids: Any, unk_id: int | None, special: list[bool] | None = None
) -> tuple[int, int]:
    """``(unknown, total)`` over the non-special positions of one text's token ids.

    Args:
        ids: Token ids (a list, or a ``[S]`` / ``[1, S]`` tensor).
        unk_id: The vocabulary's unknown-token id (``None``: nothing is unknown).
        special: Special-token flag per position (excluded from both counts).
    """
    seq = [int(t) for t in (ids.reshape(-1).tolist() if isinstance(ids, Tensor) else ids)]
    flags = special if special is not None else [False] * len(seq)
    content = [t for t, sp in zip(seq, flags, strict=True) if not sp]
    if unk_id is None:
        return 0, len(content)
    return sum(t == int(unk_id) for t in content), len(content)


def warn_unknown_tokens(
    ids: Any,
    unk_id: int | None,
    *,
    special: list[bool] | None = None,
    pieces: list[str | None] | None = None,
    threshold: float = 0.5,
    stacklevel: int = 2,
) -> float:
    """Warn when at least ``threshold`` of a text's tokens are unknown to the vocabulary.

    Unknown tokens all map to one id, so their scores say nothing about the words; a caption of
    emoji or another script on a small vocabulary gives the same explanation as any other.

    Args:
        ids: Token ids of the text (list or tensor).
        unk_id: The tokenizer's unknown-token id (``None``: nothing is unknown, no warning).
        special: Special-token flag per position (not counted).
        pieces: Text of each position, to name a few unknown words in the warning.
        threshold: Smallest unknown fraction that warns.
        stacklevel: Passed to :func:`warnings.warn`.

    Returns:
        The unknown fraction of the non-special tokens (``0.0`` for none).
    """
    unknown, total = unknown_fraction(ids, unk_id, special)
    if not total:
        return 0.0
    frac = unknown / total
    if unknown and frac >= threshold:
        seq = [int(t) for t in (ids.reshape(-1).tolist() if isinstance(ids, Tensor) else ids)]
        flags = special if special is not None else [False] * len(seq)
        names = []
        if pieces is not None:
            names = [
                repr(p)
                for t, sp, p in zip(seq, flags, pieces, strict=True)
                if not sp and t == int(unk_id) and p
            ][:3]
        which = f" ({', '.join(names)}{', ...' if unknown > len(names) else ''})" if names else ""
        warnings.warn(
            f"{unknown} of {total} caption tokens{which} are unknown to the model's vocabulary: "
            "the model reads them all as one 'unknown' token, so the scores cannot tell these "
            "words apart; use words the model was trained on",
            InputWarning,
            stacklevel=stacklevel + 1,
        )
    return frac


@dataclass(frozen=True)
class TokenizedText:
    """One tokenised text, as the model sees it.

    Attributes:
        ids: Token ids ``[1, S]``.
        mask: Attention mask ``[1, S]``.
        positions: Tokens with character offsets into the original text.
        dropped: Tokens cut off because the text exceeded the model's context (``0``: none).
        unknown: Fraction of the non-special tokens that are the unknown token.
    """

    ids: Tensor
    mask: Tensor
    positions: TextPositions
    dropped: int = 0
    unknown: float = 0.0


def tokenize_text(
    tokenizer: Any, text: str, max_length: int | None, *, pad_to: int | None = None
) -> TokenizedText:
    """Tokenise one text with a fast HF tokenizer, keeping character offsets.

    A text longer than ``max_length`` positions is truncated to it (special tokens kept, as the
    tokenizer does) with a warning that says how many tokens were dropped (:func:`warn_truncated`);
    a text whose tokens are mostly unknown warns too (:func:`warn_unknown_tokens`).

    Args:
        tokenizer: A Hugging Face (fast) tokenizer.
        text: The text.
        max_length: The model's maximum number of positions (None: no limit).
        pad_to: Pad to this many positions (models trained on padded text, e.g. SigLIP).

    Returns:
        A :class:`TokenizedText` (ids and mask ``[1, S]``, positions, tokens dropped).

    Raises:
        InvalidInputError: if the text is not a usable caption (see :func:`check_text`) or the
            tokenizer cannot report offsets.
    """
    text = check_text(text)
    kwargs: dict[str, Any] = dict(
        return_offsets_mapping=True, return_special_tokens_mask=True, return_tensors="pt"
    )
    if pad_to is not None:
        kwargs.update(padding="max_length", max_length=pad_to)
    try:  # verbose=False: the over-length case gets dualex's warning, not the tokenizer's
        enc = tokenizer(text, verbose=False, **kwargs)
    except NotImplementedError as err:  # slow tokenizer: no offsets
        raise InvalidInputError(
            "this tokenizer cannot report character offsets; load a fast tokenizer (use_fast=True)"
        ) from err
    n = int(enc["input_ids"].shape[1])
    limit = max_length if pad_to is None or max_length is None else min(max_length, pad_to)
    if pad_to is not None and max_length is None:
        limit = pad_to
    dropped = 0
    if limit is not None and n > limit:
        dropped = warn_truncated(n, limit, stacklevel=3)
        kwargs.update(truncation=True, max_length=limit)
        enc = tokenizer(text, verbose=False, **kwargs)
    ids = enc["input_ids"]
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
    unk_id = getattr(tokenizer, "unk_token_id", None)
    unknown = warn_unknown_tokens(ids, unk_id, special=flags, pieces=tokens, stacklevel=3)
    positions = TextPositions(
        text=text,
        tokens=tokens,
        offsets=offs,
        special=flags,
        dropped=dropped,
        unknown=unknown_positions(ids, unk_id, flags),
    )
    return TokenizedText(ids=ids, mask=mask, positions=positions, dropped=dropped, unknown=unknown)


def tokenize_with_offsets(
    tokenizer: Any, text: str, max_length: int | None, *, pad_to: int | None = None
) -> tuple[Tensor, Tensor, TextPositions]:
    """:func:`tokenize_text` as a tuple ``(input_ids [1, S], attention_mask [1, S], positions)``.

    Over-long texts are truncated with a warning (use :func:`tokenize_text` to get the number of
    tokens dropped).

    Raises:
        InvalidInputError: if the text is not a usable caption.
    """
    out = tokenize_text(tokenizer, text, max_length, pad_to=pad_to)
    return out.ids, out.mask, out.positions


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
        raise InvalidInputError(
            f"token ids must have shape {want} (one text), got {tuple(x.shape)}"
        )
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
    unk_id = getattr(tokenizer, "unk_token_id", None)
    # the unknown token stands for a word of the text: content, not special
    specials = set(getattr(tokenizer, "all_special_ids", []) or []) - {unk_id}
    special = [t in specials for t in seq]
    pieces = [None if sp else tokenizer.decode([t]) for t, sp in zip(seq, special, strict=True)]
    shown = [str(t) for t in tokenizer.convert_ids_to_tokens(seq)]
    text = tokenizer.decode([t for t, sp in zip(seq, special, strict=True) if not sp])
    unknown = unknown_positions(seq, unk_id, special)
    return positions_of_pieces(text, pieces, shown, special, unknown)


def positions_of_pieces(
    text: str,
    pieces: list[str | None],
    shown: list[str],
    special: list[bool],
    unknown: tuple[int, ...] = (),
) -> TextPositions:
    """``TextPositions`` (source: token ids) of decoded pieces aligned to ``text``."""
    offsets = align_pieces(text, pieces)
    tokens = [text[o[0] : o[1]] if o else s for o, s in zip(offsets, shown, strict=True)]
    return TextPositions(
        text=text,
        tokens=tokens,
        offsets=offsets,
        special=special,
        source=TOKEN_SOURCE,
        unknown=tuple(unknown),
    )
