"""Position metadata of one tower input: what each row/column of an interaction matrix is.

A text side lists tokens with character offsets into the original text; an image side lists the
patch grid with each patch's box in ORIGINAL image pixels (through the processor's exact
resize/crop geometry), after ``prefix`` non-patch positions such as CLS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dualex.errors import BoxError, SpanError


def find_phrase(text: str, phrase: str, k: int = 0) -> int:
    """Where the ``k``-th (0-based) occurrence of ``phrase`` starts in ``text`` (case-insensitive):
    how a string span is read, also before any model runs (e.g. to check ``--span`` early).

    Raises:
        SpanError: if the phrase is empty or has fewer than ``k + 1`` occurrences.
    """
    if not phrase:
        raise SpanError("empty span; pass a non-empty substring of the text")
    low, target = text.lower(), phrase.lower()
    start = -1
    for _ in range(k + 1):
        start = low.find(target, start + 1)
        if start < 0:
            break
    if start < 0:
        count = low.count(target)
        where = f"occurs {count} time(s)" if count else "does not occur"
        raise SpanError(
            f"span {phrase!r} (occurrence {k}) not found: it {where} in {text!r}; "
            "pass a substring of the caption"
        )
    return start


Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in original image pixels (x right, y down)."""


def check_box(box: Any) -> tuple[float, float, float, float]:
    """A box ``(x0, y0, x1, y1)`` as four finite floats, or a :class:`~dualex.errors.BoxError`.

    Only the form is checked here (emptiness and the image bounds are the positions' business).

    Raises:
        BoxError: if ``box`` is not four finite numbers.
    """
    hint = "pass (x0, y0, x1, y1) in original image pixels, e.g. (10, 20, 120, 90)"
    if isinstance(box, str | bytes) or not hasattr(box, "__len__") or len(box) != 4:
        raise BoxError(f"cannot read box {box!r}; {hint}")
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError) as err:
        raise BoxError(f"cannot read box {box!r}: it is not four numbers; {hint}") from err
    if not all(math.isfinite(v) for v in values):
        raise BoxError(f"box {box!r} has NaN or infinite coordinates; {hint}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Geometry:
    """Affine map between model-input pixels and original-image pixels.

    The processor resizes the original image by ``scale`` (per axis) and then crops a window whose
    top-left corner is ``offset`` in resized pixels. A model-input pixel ``(u, v)`` therefore
    comes from original pixel ``((u + offset_x) / scale_x, (v + offset_y) / scale_y)``.

    Attributes:
        original_size: ``(width, height)`` of the original image.
        input_size: ``(width, height)`` of the model input.
        scale: ``(scale_x, scale_y)`` of the resize.
        offset: ``(offset_x, offset_y)`` of the crop, in resized pixels.
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def shortest_edge_center_crop(
        cls, original_size: tuple[int, int], shortest_edge: int, crop_size: tuple[int, int]
    ) -> Geometry:
        """CLIP-style geometry: shorter side resized to ``shortest_edge``, then a centre crop.

        Args:
            original_size: ``(width, height)`` of the original image.
            shortest_edge: Length of the shorter side after resizing.
            crop_size: ``(width, height)`` of the centre crop.
        """
        w, h = original_size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = shortest_edge, int(shortest_edge * long / short)
        rw, rh = (new_short, new_long) if w <= h else (new_long, new_short)
        cw, ch = crop_size
        return cls(
            original_size=(w, h),
            input_size=(cw, ch),
            scale=(rw / w, rh / h),
            offset=(float(round((rw - cw) / 2.0)), float(round((rh - ch) / 2.0))),
        )

    @classmethod
    def resize(cls, original_size: tuple[int, int], size: tuple[int, int]) -> Geometry:
        """Plain resize (aspect ratio not kept) of ``original_size`` to ``size`` (width, height)."""
        w, h = original_size
        return cls(original_size=(w, h), input_size=tuple(size), scale=(size[0] / w, size[1] / h))

    def to_original(self, box: Box) -> Box:
        """Map a box in model-input pixels to original-image pixels."""
        x0, y0, x1, y1 = box
        sx, sy = self.scale
        ox, oy = self.offset
        return ((x0 + ox) / sx, (y0 + oy) / sy, (x1 + ox) / sx, (y1 + oy) / sy)

    def to_input(self, box: Box) -> Box:
        """Map a box in original-image pixels to model-input pixels."""
        x0, y0, x1, y1 = box
        sx, sy = self.scale
        ox, oy = self.offset
        return (x0 * sx - ox, y0 * sy - oy, x1 * sx - ox, y1 * sy - oy)

    def to_json(self) -> dict[str, Any]:
        return {
            "original_size": list(self.original_size),
            "input_size": list(self.input_size),
            "scale": list(self.scale),
            "offset": list(self.offset),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Geometry:
        return cls(
            original_size=tuple(d["original_size"]),
            input_size=tuple(d["input_size"]),
            scale=tuple(d["scale"]),
            offset=tuple(d["offset"]),
        )


@dataclass(frozen=True)
class TextPositions:
    """Token positions of a text input.

    Attributes:
        text: The original text.
        tokens: Display string of every position (special tokens and padding included).
        offsets: ``(start, end)`` character offsets of each token in ``text``; ``None`` for
            special tokens and padding.
        special: Whether each position is a special token (BOS, EOS, CLS, SEP, PAD).
        source: ``"text"`` (tokenised by dualex; offsets index the given text) or
            ``"token ids"`` (given as a tensor; ``text`` is the decoded ids and token indices are
            the tensor's own positions).
        dropped: Tokens cut off the end because the text was longer than the model's context
            (the model saw, and the explanation covers, only the rest; ``0``: none).
        unknown: Positions whose token is the vocabulary's unknown token (the model read the
            word there as one generic "unknown" token, the same for every such word), in
            increasing order; views grey them and leave them out of rankings.
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int] | None]
    special: list[bool]
    source: str = "text"
    dropped: int = 0
    unknown: tuple[int, ...] = ()
    kind: str = field(default="text", init=False)

    def unknown_words(self) -> list[str]:
        """The caption text of each unknown position (see ``unknown``), in order."""
        out = []
        for i in self.unknown:
            off = self.offsets[i]
            out.append(self.text[off[0] : off[1]] if off is not None else self.tokens[i])
        return out

    def __len__(self) -> int:
        return len(self.tokens)

    def span_indices(self, span: Any) -> list[int]:
        """Positions covered by a caption span.

        Args:
            span: One of
                - ``str``: a substring of the text (first occurrence), or
                  ``(substring, k)`` for its k-th occurrence (0-based);
                - ``slice``: token positions;
                - ``(start, end)`` of ints: a character range of the text;
                - a list of ints: token positions.

        Returns:
            Sorted token positions (every token that overlaps the span's characters).

        Raises:
            SpanError: if the span does not occur or covers no token.
        """
        n = len(self.tokens)
        if isinstance(span, slice):
            idx = list(range(n))[span]
            if not idx:
                raise SpanError(f"token slice {span} selects no position of {n} tokens")
            return idx
        if isinstance(span, str) or (
            isinstance(span, tuple) and len(span) == 2 and isinstance(span[0], str)
        ):
            phrase, k = (span, 0) if isinstance(span, str) else span
            start = find_phrase(self.text, phrase, int(k))
            return self._chars_to_tokens(start, start + len(phrase), repr(phrase))
        if (
            isinstance(span, tuple)
            and len(span) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            a, b = span
            if not 0 <= a < b <= len(self.text):
                raise SpanError(
                    f"character range {span} does not fit the text of length {len(self.text)}; "
                    "pass (start, end) with 0 <= start < end <= len(text)"
                )
            return self._chars_to_tokens(a, b, f"characters {a}:{b}")
        if isinstance(span, list | tuple) and all(isinstance(v, int) for v in span):
            bad = [v for v in span if not -n <= v < n]
            if bad or not span:
                raise SpanError(f"token indices {list(span)} out of range for {n} tokens")
            return sorted({v % n for v in span})
        raise SpanError(
            f"cannot read span {span!r}; pass a substring, (substring, occurrence), a slice, "
            "a (start, end) character range, or a list of token indices"
        )

    def _chars_to_tokens(self, a: int, b: int, what: str) -> list[int]:
        idx = [
            i
            for i, off in enumerate(self.offsets)
            if off is not None and off[0] < b and off[1] > a and off[1] > off[0]
        ]
        if not idx:
            raise SpanError(f"{what} covers no token of {self.text!r}")
        return idx

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "text",
            "text": self.text,
            "tokens": self.tokens,
            "offsets": [list(o) if o is not None else None for o in self.offsets],
            "special": self.special,
            "source": self.source,
            "dropped": self.dropped,
            "unknown": list(self.unknown),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TextPositions:
        return cls(
            text=d["text"],
            tokens=list(d["tokens"]),
            offsets=[tuple(o) if o is not None else None for o in d["offsets"]],
            special=list(d["special"]),
            source=str(d.get("source", "text")),
            dropped=int(d.get("dropped", 0)),
            unknown=tuple(int(i) for i in d.get("unknown", ())),  # absent in files before it
        )


@dataclass(frozen=True)
class ImagePositions:
    """Patch positions of an image input.

    Attributes:
        grid: ``(rows, cols)`` of the patch grid (or feature map).
        prefix: Number of non-patch positions before the patches (1 for a CLS token, 0 for none).
        geometry: Processor geometry between model-input and original pixels.
        suffix_count: Number of non-patch positions after the patches (registers, padding),
            usually 0.
        source: ``"image"`` (boxes are in the original image's pixels) or ``"pixel tensor"``
            (given preprocessed; boxes are in the tensor's own pixels).
    """

    grid: tuple[int, int]
    prefix: int
    geometry: Geometry
    suffix_count: int = 0
    source: str = "image"
    kind: str = field(default="image", init=False)

    def __len__(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1] + self.suffix_count

    @property
    def patch_slice(self) -> slice:
        """Positions of the patches, in row-major order."""
        return slice(self.prefix, self.prefix + self.grid[0] * self.grid[1])

    @property
    def labels(self) -> list[str]:
        """A short label of every position (``CLS``, ``r0c3``, ...)."""
        rows, cols = self.grid
        pre = ["CLS"] if self.prefix == 1 else [f"x{i}" for i in range(self.prefix)]
        return (
            pre
            + [f"r{r}c{c}" for r in range(rows) for c in range(cols)]
            + [f"reg{i}" for i in range(self.suffix_count)]
        )

    def patch_boxes(self) -> list[Box]:
        """Box of every patch in original-image pixels, row-major, length ``rows * cols``."""
        rows, cols = self.grid
        w, h = self.geometry.input_size
        pw, ph = w / cols, h / rows
        return [
            self.geometry.to_original((c * pw, r * ph, (c + 1) * pw, (r + 1) * ph))
            for r in range(rows)
            for c in range(cols)
        ]

    def box_patches(self, box: Box, min_overlap: float = 0.5) -> list[int]:
        """Positions (matrix indices) of the patches covered by a box in original pixels.

        A patch counts when at least ``min_overlap`` of its visible area lies in the box; if no
        patch reaches that, the patch containing the box's centre is used.

        Raises:
            BoxError: if the box is empty or outside the image.
        """
        x0, y0, x1, y1 = check_box(box)
        W, H = self.geometry.original_size
        if not (x1 > x0 and y1 > y0):
            raise BoxError(f"box {box} is empty; pass (x0, y0, x1, y1) with x1 > x0 and y1 > y0")
        if x1 <= 0 or y1 <= 0 or x0 >= W or y0 >= H:
            raise BoxError(
                f"box {box} lies outside the {W}x{H} image; boxes are (x0, y0, x1, y1) in "
                "original image pixels"
            )
        out: list[int] = []
        best, best_area = None, -1.0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for i, (a0, b0, a1, b1) in enumerate(self.patch_boxes()):
            va0, vb0, va1, vb1 = max(a0, 0), max(b0, 0), min(a1, W), min(b1, H)
            area = max(va1 - va0, 0) * max(vb1 - vb0, 0)
            inter = max(min(a1, x1) - max(a0, x0), 0) * max(min(b1, y1) - max(b0, y0), 0)
            if area > 0 and inter / area >= min_overlap:
                out.append(self.prefix + i)
            if a0 <= cx < a1 and b0 <= cy < b1 and inter > best_area:
                best, best_area = i, inter
        if not out:
            if best is None:
                raise BoxError(f"box {box} covers no patch inside the model's crop of the image")
            out = [self.prefix + best]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "image",
            "grid": list(self.grid),
            "prefix": self.prefix,
            "suffix_count": self.suffix_count,
            "geometry": self.geometry.to_json(),
            "source": self.source,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImagePositions:
        return cls(
            grid=tuple(d["grid"]),
            prefix=int(d["prefix"]),
            geometry=Geometry.from_json(d["geometry"]),
            suffix_count=int(d.get("suffix_count", 0)),
            source=str(d.get("source", "image")),
        )


Positions = TextPositions | ImagePositions


def positions_from_json(d: dict[str, Any]) -> Positions:
    """Rebuild a positions object saved with ``to_json``."""
    return TextPositions.from_json(d) if d["kind"] == "text" else ImagePositions.from_json(d)


def square_grid(n: int) -> tuple[int, int]:
    """``(r, r)`` for a perfect square ``n``; raises ValueError otherwise."""
    r = math.isqrt(n)
    if r * r != n:
        raise ValueError(f"{n} patches do not form a square grid")
    return (r, r)
