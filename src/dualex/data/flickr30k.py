"""Flickr30k Entities as grounded samples.

Layout (the official release): ``Sentences/<image_id>.txt`` has one caption per line with
phrase markup ``[/EN#<chain>/<type>[/<type2>] words]``; ``Annotations/<image_id>.xml`` is
VOC-style, with one ``<object>`` per box whose ``<name>`` elements list the chain ids it belongs
to and whose ``<bndbox>`` is ``xmin, ymin, xmax, ymax`` in 1-based inclusive pixels (objects with
``<nobndbox>`` or ``<scene>`` have no box). A phrase may have several boxes. Phrases of chain 0 /
type ``notvisual`` and phrases whose chain has no box are skipped. The class label is the
phrase's first entity type (``people``, ``clothing``, ``bodyparts``, ``animals``, ``vehicles``,
``instruments``, ``scene``, ``other``).

Boxes become ``(xmin - 1, ymin - 1, xmax, ymax)``: 0-based, exclusive right/bottom edges.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from dualex.data.types import Box, ImageRef, Mention, Sample
from dualex.errors import FileFormatError, InvalidInputError

__all__ = ["load_flickr30k", "parse_annotation", "parse_sentence"]

_PHRASE = re.compile(r"\[/EN#(\d+)/([^\s\]]+)\s+([^\]]*)\]")
_IMAGE_DIRS = ("flickr30k-images", "flickr30k_images", "images", "Images", ".")


def parse_sentence(line: str) -> tuple[str, list[tuple[tuple[int, int], str, list[str]]]]:
    """Strip the markup of one annotated sentence.

    Returns:
        ``(caption, phrases)``; each phrase is ``((start, end), chain_id, types)`` with
        character offsets into the plain caption.
    """
    out: list[str] = []
    phrases: list[tuple[tuple[int, int], str, list[str]]] = []
    pos, length = 0, 0
    for m in _PHRASE.finditer(line):
        before = line[pos : m.start()]
        out.append(before)
        length += len(before)
        words = m.group(3).strip()
        phrases.append(((length, length + len(words)), m.group(1), m.group(2).split("/")))
        out.append(words)
        length += len(words)
        pos = m.end()
    out.append(line[pos:])
    caption = "".join(out)
    stripped = caption.strip()
    lead = len(caption) - len(caption.lstrip())
    phrases = [((a - lead, b - lead), c, t) for (a, b), c, t in phrases]
    return stripped, phrases


def parse_annotation(path: str | os.PathLike[str]) -> tuple[tuple[int, int], dict[str, list[Box]]]:
    """Read one ``Annotations/<id>.xml``.

    Returns:
        ``((width, height), chain id -> boxes)`` with boxes 0-based, exclusive.

    Raises:
        FileFormatError: if the file is not the VOC-style Flickr30k Entities XML.
    """
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        wh = (int(size.findtext("width")), int(size.findtext("height")))  # type: ignore[union-attr, arg-type]
    except (ET.ParseError, AttributeError, TypeError, ValueError) as err:
        raise FileFormatError(
            f"{str(path)!r} is not a Flickr30k Entities annotation ({err})"
        ) from err
    boxes: dict[str, list[Box]] = {}
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        box = (x0 - 1.0, y0 - 1.0, x1, y1)
        for name in obj.findall("name"):
            if name.text:
                boxes.setdefault(name.text.strip(), []).append(box)
    return wh, boxes


def _image_path(root: Path, image_id: str) -> Path:
    for d in _IMAGE_DIRS:
        p = root / d / f"{image_id}.jpg"
        if p.is_file():
            return p
    raise InvalidInputError(
        f"no image {image_id}.jpg under {str(root)!r} (looked in {list(_IMAGE_DIRS)}); put the "
        "Flickr30k images in ROOT/flickr30k-images"
    )


def load_flickr30k(root: str | os.PathLike[str], split: str | None = None) -> Iterator[Sample]:
    """Yield one :class:`Sample` per caption of Flickr30k Entities.

    Args:
        root: Folder with ``Sentences/``, ``Annotations/`` and the images (in
            ``flickr30k-images/``, ``images/`` or the root itself).
        split: ``"train"``, ``"val"`` or ``"test"`` to read the ids from ``<root>/<split>.txt``;
            ``None``: every annotated image (sorted by id).

    Yields:
        Samples with ``caption_id = "<image_id>-<line>"`` and ``meta["source"] ==
        "flickr30k"``.

    Raises:
        FileFormatError: on a missing folder, split file or malformed annotation.
    """
    root = Path(root)
    sent_dir, ann_dir = root / "Sentences", root / "Annotations"
    if not sent_dir.is_dir() or not ann_dir.is_dir():
        raise FileFormatError(
            f"{str(root)!r} needs Sentences/ and Annotations/ folders (Flickr30k Entities layout)"
        )
    if split is not None:
        split_file = root / f"{split}.txt"
        if not split_file.is_file():
            raise FileFormatError(f"split file {str(split_file)!r} does not exist")
        ids = [s.strip() for s in split_file.read_text().split() if s.strip()]
    else:
        ids = sorted(p.stem for p in sent_dir.glob("*.txt"))
    for image_id in ids:
        sent_file, ann_file = sent_dir / f"{image_id}.txt", ann_dir / f"{image_id}.xml"
        if not sent_file.is_file() or not ann_file.is_file():
            raise FileFormatError(f"image {image_id} lacks {sent_file.name} or {ann_file.name}")
        _, chains = parse_annotation(ann_file)
        image = ImageRef(str(_image_path(root, image_id)))  # decoded on first use
        lines = [ln for ln in sent_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        for k, line in enumerate(lines):
            caption, phrases = parse_sentence(line)
            mentions = [
                Mention(span=span, boxes=tuple(chains[chain]), label=types[0])
                for span, chain, types in phrases
                if chain != "0" and "notvisual" not in types and chains.get(chain)
            ]
            yield Sample(
                image=image,
                caption=caption,
                mentions=mentions,
                image_id=image_id,
                caption_id=f"{image_id}-{k}",
                meta={"source": "flickr30k"},
            )
