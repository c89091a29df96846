"""COCO captions + instances as grounded samples.

A *mention* is a caption word or phrase that names a COCO category (its name, a synonym from
:data:`~dualex.data.coco_synonyms.COCO_SYNONYMS`, or their plurals), linked to every box of that
category in the image. Only categories with at least one (non-crowd) instance in the image give
mentions; overlapping matches keep the longest (``"teddy bear"`` beats ``"bear"``).

Files: ``captions_<split>.json`` and ``instances_<split>.json`` (the official layout, read with
pycocotools); boxes are COCO ``[x, y, w, h]`` and become ``(x0, y0, x1, y1)``.

Example:
    >>> from dualex.data.coco import load_coco
    >>> samples = load_coco("val2017/", "annotations/captions_val2017.json",
    ...                     "annotations/instances_val2017.json")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from dualex.data.coco_synonyms import COCO_SYNONYMS, word_forms
from dualex.data.types import Box, ImageRef, Mention, Sample
from dualex.errors import FileFormatError

__all__ = ["find_annotation_files", "find_mentions", "load_coco"]


def _pattern(phrase: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in phrase.split()]
    return re.compile(r"(?<![\w-])" + r"[\s-]+".join(words) + r"(?![\w-])", re.IGNORECASE)


def find_mentions(caption: str, boxes_by_class: Mapping[str, Sequence[Box]]) -> list[Mention]:
    """Caption spans that name one of the given classes, linked to that class's boxes.

    Args:
        caption: The caption.
        boxes_by_class: Class name -> its boxes ``(x0, y0, x1, y1)`` in the image. Names in the
            COCO table use their synonyms; other names match themselves (and plurals).

    Returns:
        Non-overlapping mentions in caption order (longest match wins an overlap).
    """
    found: list[tuple[int, int, str]] = []
    for name, boxes in boxes_by_class.items():
        if not boxes:
            continue
        for entry in COCO_SYNONYMS.get(name, (name,)):
            for form in word_forms(entry.lower()):
                for m in _pattern(form).finditer(caption):
                    found.append((m.start(), m.end(), name))
    found.sort(key=lambda t: (-(t[1] - t[0]), t[0]))
    taken: list[tuple[int, int, str]] = []
    for a, b, name in found:
        if all(b <= x or a >= y for x, y, _ in taken):
            taken.append((a, b, name))
    taken.sort()
    return [
        Mention(span=(a, b), boxes=tuple(boxes_by_class[name]), label=name) for a, b, name in taken
    ]


def find_annotation_files(ann_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(captions_X.json, instances_X.json)`` of one split in a COCO annotation folder.

    Raises:
        FileFormatError: if the folder has no matching pair (or several).
    """
    d = Path(ann_dir)
    if not d.is_dir():
        raise FileFormatError(f"COCO annotation folder {str(d)!r} does not exist")
    pairs = [
        (c, d / c.name.replace("captions_", "instances_", 1))
        for c in sorted(d.glob("captions_*.json"))
        if (d / c.name.replace("captions_", "instances_", 1)).is_file()
    ]
    if len(pairs) != 1:
        have = sorted(p.name for p in d.glob("*.json"))
        raise FileFormatError(
            f"{str(d)!r} needs exactly one captions_<split>.json with its instances_<split>.json "
            f"(found {have}); pass the folder of one split"
        )
    return pairs[0]


def _load(path: Path):
    from pycocotools.coco import COCO

    if not path.is_file():
        raise FileFormatError(f"COCO file {str(path)!r} does not exist")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as err:
        raise FileFormatError(f"{str(path)!r} is not a COCO annotation file ({err})") from err


def load_coco(
    image_dir: str | os.PathLike[str],
    captions_file: str | os.PathLike[str],
    instances_file: str | os.PathLike[str],
    *,
    include_crowd: bool = False,
) -> Iterator[Sample]:
    """Yield one :class:`Sample` per caption (images in id order, captions in id order).

    Args:
        image_dir: Folder holding the images (``file_name`` of each image entry).
        captions_file: ``captions_<split>.json``.
        instances_file: ``instances_<split>.json``.
        include_crowd: Also link ``iscrowd`` boxes.

    Yields:
        Samples with ``image_id`` / ``caption_id`` the COCO ids (as strings) and
        ``meta["source"] == "coco"``. Captions without a mention are yielded too (no mentions).

    Raises:
        FileFormatError: on a missing or malformed file.
        InvalidInputError: on an unreadable image, when its ``sample.image`` is first read
            (images are referenced lazily, see :class:`~dualex.data.types.ImageRef`).
    """
    caps, inst = _load(Path(captions_file)), _load(Path(instances_file))
    cats = {c["id"]: c["name"] for c in inst.loadCats(inst.getCatIds())}
    root = Path(image_dir)
    for img_id in sorted(caps.getImgIds()):
        info = caps.loadImgs(img_id)[0]
        boxes: dict[str, list[Box]] = {}
        if img_id in inst.imgs:
            for ann in inst.loadAnns(inst.getAnnIds(imgIds=img_id)):
                if ann.get("iscrowd", 0) and not include_crowd:
                    continue
                x, y, w, h = (float(v) for v in ann["bbox"])
                if w <= 0 or h <= 0:
                    continue
                boxes.setdefault(cats[ann["category_id"]], []).append((x, y, x + w, y + h))
        # indexed, not decoded: the image is read when a sample's ``image`` is first used
        image = ImageRef(
            str(root / info["file_name"]), hint="pass the folder that holds the split's images"
        )
        for ann in sorted(caps.loadAnns(caps.getAnnIds(imgIds=img_id)), key=lambda a: a["id"]):
            caption = ann["caption"].strip()
            yield Sample(
                image=image,
                caption=caption,
                mentions=find_mentions(caption, boxes),
                image_id=str(img_id),
                caption_id=str(ann["id"]),
                meta={"source": "coco", "file_name": info["file_name"]},
            )
