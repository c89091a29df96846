"""2×2 grid images for FIxLIP's pointing game (Baniecki et al., 2025).

A grid is a square image cut into four quadrants; 1 to 4 of them hold one image each of a
distinct class, the others stay a flat grey (the mean colour). The text names the classes, one
phrase per object, separated by spaces, in a shuffled order (so word position says nothing about
the quadrant). Each phrase is a :class:`~dualex.data.types.Mention` whose one box is its
quadrant, the region the pointing game scores.

Two sources:

- ``synthetic-grid:seed=S,n=N[,domain=D,tile=64]``: each quadrant is a one-object scene of the
  synthetic world, the classes being its shapes (:data:`dualex.data.synthetic.SHAPES`).
- ``grid:FOLDER[,n=N,seed=S,tile=224]``: ``FOLDER`` holds one sub-folder of images per class,
  laid out like ImageNet (``FOLDER/<class name>/*.jpg``); the class name is the folder name with
  ``_`` read as a space (so ``golden_retriever`` → "golden retriever"). A ``classes.json``
  file in ``FOLDER`` mapping folder names to phrases (e.g. ImageNet's wnids to words) takes
  precedence.

Grid ``i`` has ``i % 4 + 1`` objects, so the counts are balanced; which quadrants are filled and
which classes fill them are drawn from ``seed`` and ``i``. Images are rendered lazily from their
recipe (an :class:`~dualex.data.types.ImageRef` with the ``grid:`` scheme).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dualex.data.types import ImageRef, Mention, Sample
from dualex.errors import FileFormatError, SettingError

__all__ = [
    "GRID_SCHEME",
    "folder_classes",
    "iter_folder_grids",
    "iter_synthetic_grids",
    "quadrant_box",
    "render_reference",
]

GRID_SCHEME = "grid:"
"""Prefix of an :class:`ImageRef` path naming a grid (its JSON recipe follows)."""

EMPTY_RGB = (124, 116, 104)
"""Colour of an empty quadrant: CLIP's mean pixel, in 0..255."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


FILLS = ("named", "all")
"""How a grid's quadrants are filled (see :func:`iter_synthetic_grids`)."""


def quadrant_box(q: int, tile: int) -> tuple[float, float, float, float]:
    """Box ``(x0, y0, x1, y1)`` of quadrant ``q`` (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) in a grid of ``2 * tile`` pixels."""
    r, c = divmod(q, 2)
    return (float(c * tile), float(r * tile), float((c + 1) * tile), float((r + 1) * tile))


def _square(img: Image.Image, tile: int) -> Image.Image:
    """Resize the shorter side to ``tile`` and crop the centre square."""
    w, h = img.size
    s = tile / min(w, h)
    img = img.resize((max(tile, round(w * s)), max(tile, round(h * s))), Image.BICUBIC)
    w, h = img.size
    x0, y0 = (w - tile) // 2, (h - tile) // 2
    return img.crop((x0, y0, x0 + tile, y0 + tile))


def _tile_image(source: dict[str, Any], tile: int) -> Image.Image:
    if source["kind"] == "synthetic":
        from dualex.data.synthetic import WorldConfig, make_scene

        cfg = WorldConfig(shapes=(source["shape"],), min_objects=1, max_objects=1)
        scene = make_scene(
            int(source["seed"]),
            int(source["index"]),
            domain=str(source["domain"]),
            image_size=tile,
            config=cfg,
        )
        return scene.image
    from dualex.towers.inputs import load_image

    return _square(load_image(source["path"]), tile)


def render_reference(recipe: dict[str, Any]) -> Image.Image:
    """Render a grid from its recipe.

    Args:
        recipe: ``{"tile": side of a quadrant in pixels, "tiles": [[quadrant, source], ...]}``;
            a source is ``{"kind": "synthetic", "seed", "index", "domain", "shape"}`` or
            ``{"kind": "file", "path"}``.

    Returns:
        The RGB grid, ``2 * tile`` pixels square.
    """
    tile = int(recipe["tile"])
    grid = Image.new("RGB", (2 * tile, 2 * tile), EMPTY_RGB)
    for q, source in recipe["tiles"]:
        x0, y0, _, _ = quadrant_box(int(q), tile)
        grid.paste(_tile_image(source, tile), (int(x0), int(y0)))
    return grid


def _sample(
    i: int,
    tiles: list[tuple[int, dict[str, Any], str]],
    tile: int,
    rng: np.random.Generator,
    meta: dict[str, Any],
    named: int | None = None,
) -> Sample:
    """The sample of grid ``i``: ``tiles`` = (quadrant, source, phrase).

    ``named=None``: every tile is named, in random order; else the first ``named`` tiles in
    quadrant order are named (in that order) and the others are unnamed distractors.
    """
    if named is None:
        order = [tiles[k] for k in rng.permutation(len(tiles))]
    else:
        order = sorted(tiles, key=lambda t: t[0])[:named]
    caption, mentions, pos = "", [], 0
    for q, _source, phrase in order:
        if caption:
            caption += " "
            pos += 1
        mentions.append(
            Mention(span=(pos, pos + len(phrase)), boxes=(quadrant_box(q, tile),), label=phrase)
        )
        caption += phrase
        pos += len(phrase)
    recipe = {"tile": tile, "tiles": [[q, s] for q, s, _ in sorted(tiles, key=lambda t: t[0])]}
    ref = ImageRef(GRID_SCHEME + json.dumps(recipe, sort_keys=True))
    return Sample(
        image=ref,
        caption=caption,
        mentions=mentions,
        image_id=f"grid-{i}",
        caption_id=f"grid-{i}",
        meta=dict(meta, objects=[m.label for m in mentions], quadrants=[q for q, _, _ in order]),
    )


def _layout(seed: int, i: int, n_classes: int) -> tuple[np.random.Generator, list[int], list[int]]:
    """``(rng, quadrants, class indices)`` of grid ``i``, which has ``i % 4 + 1`` objects."""
    rng = np.random.default_rng([int(seed), int(i), 2])
    k = i % 4 + 1
    if n_classes < k:
        raise SettingError(f"a grid of {k} objects needs {k} classes; only {n_classes} exist")
    quadrants = sorted(int(q) for q in rng.choice(4, size=k, replace=False))
    classes = [int(c) for c in rng.choice(n_classes, size=k, replace=False)]
    return rng, quadrants, classes


def iter_synthetic_grids(
    n: int,
    seed: int = 0,
    domain: str = "plain",
    tile: int = 64,
    start: int = 0,
    fill: str = "named",
) -> Iterator[Sample]:
    """Grids of one-object synthetic scenes (each quadrant a different shape).

    Args:
        n: Number of grids.
        seed: Seed of the layouts and scenes.
        domain: Background domain of the scenes (``plain``, ``textured``, ``cluttered``,
            ``mixed``).
        tile: Side of a quadrant in pixels (the grid is ``2 * tile`` square).
        start: Index of the first grid.
        fill: ``"named"``: only the named objects' quadrants are filled (the rest flat grey),
            named in random order; ``"all"`` (FIxLIP's grids): all four quadrants are filled
            with distinct objects and the first ``i % 4 + 1`` in quadrant order are named, so
            the others are distractors.

    Yields:
        Samples with one mention per named object (its quadrant as the box);
        ``meta["source"] == "synthetic-grid"``, ``meta["domain"]``, ``meta["fill"]``.
    """
    from dualex.data.synthetic import DOMAINS, SHAPES

    if domain not in (*DOMAINS, "mixed"):
        raise SettingError(
            f"domain={domain!r} is unknown; choose from {', '.join((*DOMAINS, 'mixed'))}"
        )
    if fill not in FILLS:
        raise SettingError(f"fill={fill!r} is unknown; choose from {', '.join(FILLS)}")
    for i in range(start, start + n):
        rng, quadrants, classes = _layout(seed, i, len(SHAPES))
        named = None
        if fill == "all":
            named = len(quadrants)
            rest = [int(c) for c in rng.permutation(len(SHAPES)) if int(c) not in classes]
            classes = [*classes, *rest[: 4 - named]]  # the named classes first
            quadrants = [0, 1, 2, 3]  # so the named objects are the first in quadrant order
        tiles = [
            (
                q,
                {
                    "kind": "synthetic",
                    "seed": int(seed),
                    "index": 4 * i + q,
                    "domain": domain,
                    "shape": SHAPES[c],
                },
                SHAPES[c],
            )
            for q, c in zip(quadrants, classes, strict=True)
        ]
        meta = {"source": "synthetic-grid", "domain": domain, "fill": fill}
        yield _sample(i, tiles, tile, rng, meta, named)


def folder_classes(folder: str | os.PathLike[str]) -> list[tuple[str, str, list[Path]]]:
    """The classes of an ImageNet-style folder: ``(folder name, phrase, image files)``, sorted.

    Raises:
        FileFormatError: if the folder does not exist, or fewer than 4 sub-folders hold images.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileFormatError(
            f"grid folder {str(root)!r} does not exist; pass a folder with one sub-folder of "
            "images per class"
        )
    names: dict[str, str] = {}
    mapping = root / "classes.json"
    if mapping.is_file():
        try:
            names = {str(k): str(v) for k, v in json.loads(mapping.read_text("utf-8")).items()}
        except (ValueError, AttributeError) as err:
            raise FileFormatError(
                f"{str(mapping)!r} is not a JSON object of folder name → class phrase ({err})"
            ) from err
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.is_file() and f.name.endswith(IMAGE_SUFFIXES))
        if files:
            phrase = names.get(sub.name, sub.name.replace("_", " ")).strip()
            out.append((sub.name, phrase, files))
    if len(out) < 4:
        raise FileFormatError(
            f"grid folder {str(root)!r} has {len(out)} class sub-folder(s) with images; the 2×2 "
            "pointing game needs at least 4 (FOLDER/<class name>/*.jpg)"
        )
    return out


def iter_folder_grids(
    folder: str | os.PathLike[str], n: int = 100, seed: int = 0, tile: int = 224, start: int = 0
) -> Iterator[Sample]:
    """Grids of a user's images, one sub-folder per class (ImageNet layout).

    Args:
        folder: The folder (see :func:`folder_classes`).
        n: Number of grids.
        seed: Seed of the layouts and the image choice.
        tile: Side of a quadrant in pixels.
        start: Index of the first grid.

    Yields:
        Samples as :func:`iter_synthetic_grids` (``meta["source"] == "grid"``).
    """
    classes = folder_classes(folder)
    for i in range(start, start + n):
        rng, quadrants, picks = _layout(seed, i, len(classes))
        tiles = []
        for q, c in zip(quadrants, picks, strict=True):
            _name, phrase, files = classes[c]
            path = files[int(rng.integers(len(files)))]
            tiles.append((q, {"kind": "file", "path": str(path.absolute())}, phrase))
        yield _sample(i, tiles, tile, rng, {"source": "grid", "domain": ""})
