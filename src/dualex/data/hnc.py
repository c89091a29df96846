"""HNC (Hard Negative Captions, Dönmez et al. 2023) as grounded samples with hard negatives.

Layout: one JSON file keyed by (GQA) image id; each value is ``{"captions": {cpt_id: entry}}``
(optionally with ``"file_name"``) or, in some released files, the ``{cpt_id: entry}`` mapping
itself without the ``captions`` wrapper. An entry is ``{"caption", "label": 1 | 0, "type",
"textual_label", "bboxes": {obj_id: {"bbox": {"x", "y", "w", "h"}, "name"}}, "replaced":
[original words, new words], "cpt_p_id": id of the positive caption}``; ``replaced`` may also be
a list of such pairs when a negative changes several word groups. Images are
``<IMAGES>/<image_id>.jpg`` (or ``file_name``).

Each positive caption becomes a :class:`Sample`; its mentions are the caption words that name one
of its boxes' objects (linked to every box of that name), and the negatives whose ``cpt_p_id``
points to it become :class:`Negative` objects whose spans mark the replaced words. Images,
positives and negatives come in numeric id order (``"2"`` before ``"10"``); ids that are not
numbers follow, in string order. Entries whose ``caption`` is missing or null are skipped, with
one :class:`~dualex.errors.InputWarning` per file that counts them.
"""

from __future__ import annotations

import json
import os
import re
import string
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dualex.data.coco import find_mentions
from dualex.data.types import Box, ImageRef, Negative, Sample
from dualex.errors import FileFormatError, InputWarning, InvalidInputError

__all__ = ["diff_spans", "load_hnc"]


_PUNCT = string.punctuation + "“”‘’«»…"


def _trim(t: str, lo: int, hi: int) -> tuple[int, int]:
    """``(lo, hi)`` without leading/trailing punctuation (unchanged if nothing else is left)."""
    a, b = lo, hi
    while a < b and t[a] in _PUNCT:
        a += 1
    while b > a and t[b - 1] in _PUNCT:
        b -= 1
    return (a, b) if a < b else (lo, hi)


def diff_spans(a: str, b: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Character spans of the words where ``a`` and ``b`` differ (common prefix/suffix removed).

    Args:
        a: One text (the positive caption).
        b: The other (the negative caption).

    Returns:
        ``(span_in_a, span_in_b)``, widened to whole words; punctuation at either end of a span
        (``"fence."``, ``"(red"``) is left out, unless the captions differ in punctuation only
        (then the spans are the whole words that hold it).
    """
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    s = 0
    while s < min(len(a), len(b)) - p and a[-1 - s] == b[-1 - s]:
        s += 1

    def widen(t: str, lo: int, hi: int) -> tuple[int, int]:
        if not t:
            return (0, 0)
        words_differ = any(c.isalnum() for c in t[lo:hi])
        while lo > 0 and not t[lo - 1].isspace():
            lo -= 1
        while hi < len(t) and not t[hi].isspace():
            hi += 1
        hi = max(hi, lo + 1)
        return _trim(t, lo, hi) if words_differ else (lo, hi)

    return widen(a, p, len(a) - s), widen(b, p, len(b) - s)


def _find_word(text: str, phrase: str, start: int = 0) -> tuple[int, int] | None:
    phrase = phrase.strip().strip(_PUNCT).strip()
    if not phrase:
        return None
    words = r"\s+".join(re.escape(w) for w in phrase.split())
    m = re.compile(r"(?<!\w)" + words + r"(?!\w)", re.IGNORECASE).search(text, start)
    return (m.start(), m.end()) if m else None


def _words(v: Any) -> str | None:
    """A replaced word group as text: a string, or a (nested) list of words joined by spaces."""
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple)) and v:
        parts = [_words(x) for x in v]
        if all(p is not None for p in parts):
            return " ".join(p for p in parts if p)
    return None


def _pairs(replaced: Any) -> list[list[tuple[str, str]]]:
    """Candidate readings of ``replaced`` as ``(original, new)`` word groups, most likely first.

    ``[old, new]`` is one pair; ``[[old, new], [old, new], ...]`` a list of pairs. Two lists of
    equal length ``[[old1, old2], [new1, new2]]`` read either way, so both readings are tried.
    """
    if not isinstance(replaced, (list, tuple)) or not replaced:
        return []
    readings: list[list[tuple[str, str]]] = []
    if len(replaced) == 2 and all(isinstance(x, str) for x in replaced):
        readings.append([(replaced[0], replaced[1])])
    elif all(isinstance(x, (list, tuple)) and len(x) == 2 for x in replaced):
        pairs = [(_words(x[0]), _words(x[1])) for x in replaced]
        if all(a is not None and b is not None for a, b in pairs):
            readings.append([(str(a), str(b)) for a, b in pairs])
    if (
        len(replaced) == 2
        and all(isinstance(x, (list, tuple)) for x in replaced)
        and len(replaced[0]) == len(replaced[1])
    ):
        olds, news = [_words(x) for x in replaced[0]], [_words(x) for x in replaced[1]]
        if all(w is not None for w in olds + news):
            readings.append([(str(a), str(b)) for a, b in zip(olds, news, strict=True)])
    return readings


def _locate(
    positive: str, negative: str, reading: list[tuple[str, str]], sequential: bool
) -> list[tuple[tuple[int, int], tuple[int, int]]] | None:
    out: list[tuple[tuple[int, int], tuple[int, int]]] = []
    at_pos = at_neg = 0
    for old, new in reading:
        orig, span = _find_word(positive, old, at_pos), _find_word(negative, new, at_neg)
        if orig is None or span is None:
            return None
        out.append((span, orig))
        if sequential:
            at_pos, at_neg = orig[1], span[1]
    return out or None


def _replaced_span(
    positive: str, negative: str, replaced: Any
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``(span in negative, span in positive)`` from the first replaced word group to the last.

    Each group is located on its own (in caption order, else anywhere); the result is kept only
    if the captions agree outside it. None when no reading of ``replaced`` gives such spans.
    """
    for reading in _pairs(replaced):
        for sequential in (True, False):
            groups = _locate(positive, negative, reading, sequential)
            if groups is None:
                continue
            span = (min(g[0][0] for g in groups), max(g[0][1] for g in groups))
            orig = (min(g[1][0] for g in groups), max(g[1][1] for g in groups))
            if (
                positive[: orig[0]] == negative[: span[0]]
                and positive[orig[1] :] == negative[span[1] :]
            ):
                return span, orig
    return None


def _boxes(entry: dict[str, Any]) -> dict[str, list[Box]]:
    out: dict[str, list[Box]] = {}
    for obj in (entry.get("bboxes") or {}).values():
        bb = obj["bbox"]
        x, y, w, h = (float(bb[k]) for k in ("x", "y", "w", "h"))
        if w > 0 and h > 0:
            out.setdefault(str(obj["name"]).strip().lower(), []).append((x, y, x + w, y + h))
    return out


def _id_key(i: Any) -> tuple[int, int, str]:
    """Numeric ids in numeric order (``"2"`` < ``"10"``), then the others in string order."""
    t = str(i).strip()
    return (0, int(t), t) if t.isdigit() else (1, 0, t)


def _captions(image_id: str, value: Any) -> dict[str, dict[str, Any]]:
    """The ``{cpt_id: entry}`` mapping of one image, with or without the ``captions`` wrapper."""
    if isinstance(value, dict):
        caps = value.get("captions")
        if isinstance(caps, dict):
            return {str(k): v for k, v in caps.items() if isinstance(v, dict)}
        if caps is None:  # the bare shape: {cpt_id: entry} (perhaps with "file_name")
            entries = {str(k): v for k, v in value.items() if k != "file_name"}
            if all(
                isinstance(v, dict) and ("caption" in v or "label" in v) for v in entries.values()
            ):
                return entries
    raise FileFormatError(
        f"HNC entry {image_id!r} is neither {{'captions': {{id: caption entry}}}} nor "
        "{id: caption entry}"
    )


def _negative(caption: str, ne: dict[str, Any], ncap: str) -> Negative:
    found = _replaced_span(caption, ncap, ne.get("replaced"))
    span, orig = found if found is not None else diff_spans(caption, ncap)[::-1]
    return Negative(
        caption=ncap, kind=str(ne.get("type", "negative")), span=span, original_span=orig
    )


def load_hnc(
    json_file: str | os.PathLike[str], image_dir: str | os.PathLike[str]
) -> Iterator[Sample]:
    """Yield one :class:`Sample` per positive HNC caption, with its paired negatives.

    Args:
        json_file: The HNC JSON file (either per-image shape, see the module docstring).
        image_dir: Folder with the images.

    Yields:
        Samples (``meta["source"] == "hnc"``) whose ``negatives`` carry ``kind`` = the HNC
        ``type``, ``span`` = the new words in the negative and ``original_span`` = the words they
        replaced in the positive, without surrounding punctuation. When ``replaced`` lists
        several word groups, each group is located on its own and the spans run from the first
        group to the last, so every changed word lies inside them and nothing after them moves.
        When ``replaced`` cannot be located, the spans are the words where the captions differ.
        Images, positives and negatives come in numeric id order.

    Raises:
        FileFormatError: if the file is not HNC-style JSON.
        InvalidInputError: on a missing image.

    Warns:
        InputWarning: once per file, counting the entries skipped for a missing or null
            ``caption`` (and the first of them).
    """
    path = Path(json_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = sorted(data.items(), key=lambda t: _id_key(t[0]))
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise FileFormatError(f"cannot read HNC file {str(path)!r} ({err})") from err
    per_image = [
        (str(image_id), value, _captions(str(image_id), value)) for image_id, value in items
    ]
    skipped = [
        (image_id, cid)
        for image_id, _, caps in per_image
        for cid, e in caps.items()
        if not isinstance(e.get("caption"), str)
    ]
    if skipped:
        warnings.warn(
            f"HNC file {str(path)!r}: skipped {len(skipped)} caption entries without a caption "
            f"text (first: image {skipped[0][0]!r}, caption {skipped[0][1]!r})",
            InputWarning,
            stacklevel=2,
        )
    for image_id, value, all_caps in per_image:
        caps = {k: e for k, e in all_caps.items() if isinstance(e.get("caption"), str)}
        if not caps:
            continue
        name = (value.get("file_name") if isinstance(value.get("file_name"), str) else None) or (
            f"{image_id}.jpg"
        )
        img_path = Path(image_dir) / name
        if not img_path.is_file():
            raise InvalidInputError(f"HNC image {str(img_path)!r} does not exist")
        image = ImageRef(str(img_path))  # decoded on first use
        negs: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for cid, e in caps.items():
            if int(e.get("label", 1)) == 0 and e.get("cpt_p_id") is not None:
                negs.setdefault(str(e["cpt_p_id"]), []).append((cid, e))
        for cid, e in sorted(caps.items(), key=lambda t: _id_key(t[0])):
            if int(e.get("label", 1)) != 1:
                continue
            caption = e["caption"].strip()
            negatives = [
                _negative(caption, ne, ne["caption"].strip())
                for _, ne in sorted(negs.get(cid, []), key=lambda t: _id_key(t[0]))
            ]
            yield Sample(
                image=image,
                caption=caption,
                mentions=find_mentions(caption, _boxes(e)),
                negatives=negatives,
                image_id=image_id,
                caption_id=cid,
                meta={"source": "hnc"},
            )
