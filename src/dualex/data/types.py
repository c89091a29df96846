"""The sample type every dataset loader yields.

A sample is an image, a caption, and the caption's grounded *mentions*: character spans of the
caption that name something, each with the boxes (``(x0, y0, x1, y1)`` in original image pixels,
exclusive right/bottom edges) where that thing is and a class label. Hard negatives are captions that
differ from the true one in one marked span.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in original image pixels (x right, y down)."""


@dataclass(frozen=True)
class Mention:
    """A caption span that refers to image regions.

    Attributes:
        span: ``(start, end)`` character offsets into the caption (``caption[start:end]``).
        boxes: Ground-truth boxes of the referred object(s), ``(x0, y0, x1, y1)`` pixels.
        label: Class label (e.g. ``"circle"`` or a COCO category name).
    """

    span: tuple[int, int]
    boxes: tuple[Box, ...]
    label: str


@dataclass(frozen=True)
class Negative:
    """A hard-negative caption that differs from the true caption in one span.

    Attributes:
        caption: The negative caption text.
        kind: What was changed (``"colour"``, ``"shape"``, ``"relation"``, ``"absent"``, or a
            dataset's own label).
        span: ``(start, end)`` of the mismatched words in ``caption``.
        original_span: ``(start, end)`` of the words they replaced in the true caption.
    """

    caption: str
    kind: str
    span: tuple[int, int]
    original_span: tuple[int, int] | None = None


@dataclass
class Sample:
    """One image with one caption and its grounded mentions.

    Attributes:
        image: The original image (RGB).
        caption: The caption text.
        mentions: Grounded spans of the caption.
        negatives: Hard negatives of the caption (may be empty).
        image_id: Identifier of the image within its dataset.
        caption_id: Identifier of the caption within its dataset.
        meta: Free-form extra information (domain, split, ...), JSON-serialisable.
    """

    image: Image.Image
    caption: str
    mentions: list[Mention]
    negatives: list[Negative] = field(default_factory=list)
    image_id: str = ""
    caption_id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
