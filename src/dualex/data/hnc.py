"""HNC (Hard Negative Captions, Dönmez et al. 2023) as grounded samples with hard negatives.

Layout: one JSON file keyed by (GQA) image id; each value is ``{"captions": {cpt_id: entry}}``
(optionally with ``"file_name"``), an entry being ``{"caption", "label": 1 | 0, "type",
"textual_label", "bboxes": {obj_id: {"bbox": {"x", "y", "w", "h"}, "name"}}, "replaced":
[original words, new words], "cpt_p_id": id of the positive caption}``. Images are
``<IMAGES>/<image_id>.jpg`` (or ``file_name``).

Each positive caption becomes a :class:`Sample`; its mentions are the caption words that name one
of its boxes' objects (linked to every box of that name), and the negatives whose ``cpt_p_id``
points to it become :class:`Negative` objects whose spans mark the replaced words.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualex.data.coco import find_mentions
from dualex.data.types import Box, ImageRef, Negative, Sample
from dualex.errors import FileFormatError, InvalidInputError

__all__ = ["diff_spans", "load_hnc"]


def diff_spans(a: str, b: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Character spans of the words where ``a`` and ``b`` differ (common prefix/suffix removed).

    Returns:
        ``(span_in_a, span_in_b)``, widened to whole words.
    """
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1

    def widen(t: str, lo: int, hi: int) -> tuple[int, int]:
        while lo > 0 and not t[lo - 1].isspace():
            lo -= 1
        while hi < len(t) and not t[hi].isspace():
            hi += 1
        return lo, max(hi, lo + 1) if t else (0, 0)

    return widen(a, p, len(a) - s), widen(b, p, len(b) - s)


def _find_word(text: str, phrase: str) -> tuple[int, int] | None:
    if not phrase.strip():
        return None
    m = re.search(r"(?<!\w)" + re.escape(phrase.strip()) + r"(?!\w)", text, re.IGNORECASE)
    return (m.start(), m.end()) if m else None


def _boxes(entry: dict[str, Any]) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for obj in (entry.get("bboxes") or {}).values():
        bb = obj["bbox"]
        x, y, w, h = (float(bb[k]) for k in ("x", "y", "w", "h"))
        if w > 0 and h > 0:
            out.setdefault(str(obj["name"]).strip().lower(), []).append((x, y, x + w, y + h))
    return out


def load_hnc(
    json_file: str | os.PathLike[str], image_dir: str | os.PathLike[str]
) -> Iterator[Sample]:
    """Yield one :class:`Sample` per positive HNC caption, with its paired negatives.

    Args:
        json_file: The HNC JSON file.
        image_dir: Folder with the images.

    Yields:
        Samples (``meta["source"] == "hnc"``) whose ``negatives`` carry ``kind`` = the HNC
        ``type``, ``span`` = the new words in the negative and ``original_span`` = the words they
        replaced in the positive.

    Raises:
        FileFormatError: if the file is not HNC-style JSON.
        InvalidInputError: on a missing image.
    """
    path = Path(json_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = sorted(data.items())
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise FileFormatError(f"cannot read HNC file {str(path)!r} ({err})") from err
    for image_id, value in items:
        try:
            caps: dict[str, dict[str, Any]] = value["captions"]
        except (KeyError, TypeError) as err:
            raise FileFormatError(f"HNC entry {image_id!r} has no 'captions' mapping") from err
        name = value.get("file_name") or f"{image_id}.jpg"
        img_path = Path(image_dir) / name
        if not img_path.is_file():
            raise InvalidInputError(f"HNC image {str(img_path)!r} does not exist")
        image = ImageRef(str(img_path))  # decoded on first use
        negs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for cid, e in caps.items():
            if int(e.get("label", 1)) == 0 and e.get("cpt_p_id") is not None:
                negs.setdefault(str(e["cpt_p_id"]), []).append((cid, e))
        for cid, e in sorted(caps.items()):
            if int(e.get("label", 1)) != 1:
                continue
            caption = str(e["caption"]).strip()
            negatives = []
            for _, ne in sorted(negs.get(str(cid), []), key=lambda t: t[0]):
                ncap = str(ne["caption"]).strip()
                old, new = ([*list(ne.get("replaced") or []), "", ""])[:2]
                span, orig = _find_word(ncap, str(new)), _find_word(caption, str(old))
                if span is None or orig is None:
                    orig, span = diff_spans(caption, ncap)
                negatives.append(
                    Negative(
                        caption=ncap,
                        kind=str(ne.get("type", "negative")),
                        span=span,
                        original_span=orig,
                    )
                )
            yield Sample(
                image=image,
                caption=caption,
                mentions=find_mentions(caption, _boxes(e)),
                negatives=negatives,
                image_id=str(image_id),
                caption_id=str(cid),
                meta={"source": "hnc"},
            )
