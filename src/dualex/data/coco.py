"""COCO captions + instances as grounded samples.

A *mention* is a caption word or phrase that names a COCO category (its name, a synonym from
:data:`~dualex.data.coco_synonyms.COCO_SYNONYMS`, or their plurals), linked to every box of that
category in the image. Only categories with at least one (non-crowd) instance in the image give
mentions. A generic word of :data:`~dualex.data.coco_synonyms.COCO_GROUPS` (``"vehicles"``,
``"a glass"``) links to the boxes of the group's categories that the image has.

Matching reads the caption as a sequence of table phrases, present in the image or not:

* Overlapping phrases keep the longest: ``"teddy bear"`` beats ``"bear"``, and ``"hot dog"``
  is no dog even in an image without a hot dog.
* A singular phrase directly followed by a phrase of a *different* thing, or by a compound head
  (:data:`~dualex.data.coco_synonyms.COMPOUND_HEADS`), is a modifier, not a mention:
  ``"baseball player"``, ``"baseball game"``, ``"pizza box"``, ``"baby giraffe"``. A plural is
  never a modifier (``"dogs stand"``), and ``"a baseball"`` / ``"the ball"`` stay mentions.
* A phrase directly followed by another phrase of the same thing joins it into one mention
  (``"male tennis player"``, ``"laptop computer"``).

Files: ``captions_<split>.json`` and ``instances_<split>.json`` (the official layout, read with
pycocotools); boxes are COCO ``[x, y, w, h]`` and become ``(x0, y0, x1, y1)``.

Example:
    >>> from dualex.data.coco import load_coco
    >>> samples = load_coco("val2017/", "annotations/captions_val2017.json",
    ...                     "annotations/instances_val2017.json")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dualex.data.coco_synonyms import (
    COCO_GROUPS,
    COCO_SYNONYMS,
    COMPOUND_HEADS,
    MODIFIER_HEADS,
    SINGULAR_ONLY,
    word_forms,
)
from dualex.data.types import Box, ImageRef, Mention, Sample
from dualex.errors import FileFormatError

__all__ = ["find_annotation_files", "find_mentions", "load_coco"]


@dataclass(frozen=True)
class _Word:
    """What a lexicon phrase names: categories (or extra class names), maybe as a group."""

    owners: frozenset[str]
    group: str | None = None  # the COCO_GROUPS name of a generic word
    plural: bool = False


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    form: str
    word: _Word


_TOKEN = re.compile(r"\w+")
_GAP = re.compile(r"[\s-]+")  # what may separate the words of one phrase
_SPACE = re.compile(r"\s+")  # what separates a modifier from its head


@functools.cache
def _lexicon() -> tuple[dict[str, _Word], int]:
    """Every form of every table phrase (all 80 categories and the groups); longest in words."""
    plurals = {f for es in COCO_SYNONYMS.values() for e in es for f in word_forms(e)[1:]}
    lex: dict[str, _Word] = {}
    for name, entries in COCO_SYNONYMS.items():
        for entry in entries:
            for form in word_forms(entry.lower()):
                old = lex.get(form)
                owners = (old.owners if old else frozenset()) | {name}
                lex[form] = _Word(owners, None, form in plurals)
    for group, (words, cats) in COCO_GROUPS.items():
        for w in words:
            forms = (w,) if w in SINGULAR_ONLY else word_forms(w)
            for k, form in enumerate(forms):
                lex.setdefault(form, _Word(frozenset(cats), group, k > 0))
    return lex, max(len(f.split()) for f in lex)


def _extras(names: tuple[str, ...]) -> dict[str, _Word]:
    """Lexicon entries of class names outside the COCO table (they match themselves)."""
    base, _ = _lexicon()
    out: dict[str, _Word] = {}
    for name in names:
        for k, form in enumerate(word_forms(name.lower())):
            old = out.get(form) or base.get(form)
            owners = {name} | (old.owners if old is not None and old.group is None else set())
            out[form] = _Word(frozenset(owners), None, k > 0 or bool(old and old.plural))
    return out


def _hits(caption: str, extra: Mapping[str, _Word], longest: int) -> list[_Hit]:
    """Non-overlapping lexicon phrases of the caption (longest first), in caption order."""
    base, _ = _lexicon()
    toks = [(m.start(), m.end()) for m in _TOKEN.finditer(caption)]
    found: list[_Hit] = []
    for i, (a, _) in enumerate(toks):
        if a > 0 and caption[a - 1] == "-":
            continue
        for n in range(1, min(longest, len(toks) - i) + 1):
            b = toks[i + n - 1][1]
            if b < len(caption) and caption[b] == "-":
                continue
            gaps = [caption[toks[k][1] : toks[k + 1][0]] for k in range(i, i + n - 1)]
            if not all(_GAP.fullmatch(g) for g in gaps):
                break
            form = " ".join(caption[x:y] for x, y in toks[i : i + n]).lower()
            word = extra.get(form) or base.get(form)
            if word is not None:
                found.append(_Hit(a, b, form, word))
    found.sort(key=lambda h: (-(h.end - h.start), h.start))
    taken: list[_Hit] = []
    for h in found:
        if all(h.end <= t.start or h.start >= t.end for t in taken):
            taken.append(h)
    return sorted(taken, key=lambda h: h.start)


def _next_word(caption: str, end: int) -> str | None:
    m = _SPACE.match(caption, end)
    if m is None:
        return None
    w = _TOKEN.match(caption, m.end())
    return w.group(0).lower() if w else None


def _compounds(caption: str, hits: list[_Hit]) -> list[_Hit]:
    """Drop modifiers (a singular phrase before a different thing or a head); join same things."""
    kept: list[_Hit] = []  # reversed caption order
    nxt: _Hit | None = None  # the phrase to the right, kept or not
    for h in reversed(hits):
        adjacent = nxt is not None and bool(_SPACE.fullmatch(caption[h.end : nxt.start]))
        cur: _Hit | None = h
        if h.word.plural:
            pass
        elif adjacent:
            assert nxt is not None
            same = h.word.owners & nxt.word.owners
            if same and kept and kept[-1] is nxt:
                group = nxt.word.group if h.word.group and nxt.word.group else None
                cur = replace(nxt, start=h.start, word=replace(nxt.word, owners=same, group=group))
                kept.pop()
            else:
                cur = None  # "baseball player": the player is another thing
        else:
            w = _next_word(caption, h.end)
            if w is not None and (w in COMPOUND_HEADS or w in MODIFIER_HEADS.get(h.form, ())):
                cur = None  # "baseball game", "glass door"
        if cur is not None:
            kept.append(cur)
        nxt = cur if cur is not None else h
    return kept[::-1]


def find_mentions(caption: str, boxes_by_class: Mapping[str, Sequence[Box]]) -> list[Mention]:
    """Caption spans that name one of the given classes, linked to that class's boxes.

    The rules are the module's: longest phrase wins an overlap (whether or not its category is
    in the image), a singular phrase that modifies a following different thing or compound head
    is no mention, adjacent phrases of one thing join, and a generic word links to the boxes of
    its group's categories that are present (labelled with the category if there is one, else
    with the group name, e.g. ``"vehicle"``).

    Args:
        caption: The caption.
        boxes_by_class: Class name -> its boxes ``(x0, y0, x1, y1)`` in the image. Names in the
            COCO table use their synonyms; other names match themselves (and plurals).

    Returns:
        Non-overlapping mentions in caption order.

    Example:
        >>> boxes = {"person": [(0, 0, 5, 9)], "sports ball": [(6, 1, 7, 2)]}
        >>> [(m.label, m.span) for m in find_mentions("a baseball player hits a baseball", boxes)]
        [('person', (11, 17)), ('sports ball', (25, 33))]
    """
    _, longest = _lexicon()
    extra = _extras(tuple(n for n in boxes_by_class if n not in COCO_SYNONYMS))
    longest = max([longest, *(len(f.split()) for f in extra)])
    out: list[Mention] = []
    for h in _compounds(caption, _hits(caption, extra, longest)):
        if h.word.group is not None:
            present = [c for c in COCO_GROUPS[h.word.group][1] if c in h.word.owners]
            present = [c for c in present if boxes_by_class.get(c)]
            if not present:
                continue
            label = present[0] if len(present) == 1 else h.word.group
            boxes = tuple(b for c in present for b in boxes_by_class[c])
        else:
            names = [n for n, bx in boxes_by_class.items() if bx and n in h.word.owners]
            if not names:
                continue
            label, boxes = names[0], tuple(boxes_by_class[names[0]])
        out.append(Mention(span=(h.start, h.end), boxes=boxes, label=label))
    return out


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
