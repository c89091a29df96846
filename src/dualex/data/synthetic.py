"""A synthetic world of coloured shapes with exact ground truth.

Every image holds 1–4 objects (shape × colour × size) on a background from one of three domains
(``"plain"``, ``"textured"``, ``"cluttered"``). Every caption is built from templates, so each
object mention's character span and the tight pixel boxes of the object(s) it refers to are known
exactly, and hard negatives (colour swap, shape swap, relation swap, absent object) differ from the
true caption in one marked span.

Generation is deterministic: sample ``i`` of seed ``s`` depends only on ``(s, i)`` (and the
options), so ``generate(10, s)`` is a prefix of ``generate(100, s)``, and the same seed gives the
same objects and captions in every domain (only the background changes).

Example:
    >>> from dualex.data.synthetic import generate
    >>> samples = generate(4, seed=0, domain="textured")
    >>> s = samples[0]
    >>> s.caption[slice(*s.mentions[0].span)]  # doctest: +SKIP
    'small red circle'
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from dualex.data.types import Box, ImageRef, Mention, Negative, Sample
from dualex.io import atomic_write

__all__ = [
    "COLOURS",
    "DOMAINS",
    "NEGATIVE_KINDS",
    "SHAPES",
    "SIZES",
    "Scene",
    "SceneObject",
    "WorldConfig",
    "caption_holds",
    "export_coco",
    "export_hnc",
    "generate",
    "iter_samples",
    "make_scene",
    "samples_for_scene",
]

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "hexagon",
    "heart",
)
"""Shape classes (also the COCO categories, in this order, ids 1..8)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (40, 80, 235),
    "yellow": (245, 215, 20),
    "purple": (145, 45, 200),
    "orange": (250, 130, 10),
    "pink": (250, 105, 190),
    "cyan": (20, 200, 215),
}
"""Named object colours (saturated RGB). The default world uses the first six."""

SIZES: dict[str, tuple[float, float]] = {
    "small": (0.13, 0.16),
    "large": (0.20, 0.24),
}
"""Object "radius" ranges as fractions of the image side (64 px: small 8–10 px, large 13–15 px)."""

DOMAINS: tuple[str, ...] = ("plain", "textured", "cluttered")
"""Background domains; ``"mixed"`` picks one per image."""

NEGATIVE_KINDS: tuple[str, ...] = ("colour", "shape", "relation", "absent")
"""Kinds of hard negatives, in the order they are generated."""

_RELATIONS: tuple[tuple[str, str, str], ...] = (
    # (axis, phrase for "subject is before object on the axis", swapped phrase)
    ("x", "left of", "right of"),
    ("x", "to the left of", "to the right of"),
    ("x", "on the left of", "on the right of"),
    ("y", "above", "below"),
    ("y", "over", "under"),
)
_COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_LIST_PREFIXES = ("", "", "a picture of ", "an image with ", "a scene with ", "a drawing of ")
_RELATION_FORMS = (
    "{a} {r} {b}",
    "{a} is {r} {b}",
    "a picture of {a} {r} {b}",
    "there is {a} {r} {b}",
)
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class WorldConfig:
    """Options of the synthetic world (all have defaults; override a few via ``generate(**kw)``).

    Attributes:
        shapes: Shape classes to draw from (a subset of :data:`SHAPES`).
        colours: Colour names to draw from (keys of :data:`COLOURS`); at least two.
        sizes: Size name -> ``(min, max)`` object radius as a fraction of the image side.
        min_objects: Fewest objects per image (>= 1). Set ``min_objects=max_objects=1`` for a
            one-object curriculum stage.
        max_objects: Most objects per image. Objects that cannot be placed are dropped, so an
            image can hold fewer than asked.
        max_overlap: Largest allowed intersection of two objects' boxes, as a fraction of the
            smaller box's area.
        duplicate_prob: Chance that an object copies the colour and shape of an earlier one
            (gives counted mentions such as "two green triangles").
        antialias: Render object edges with 4×4 supersampling. Off: every object pixel has
            exactly the object's colour.
        relation_prob: Chance of a relational caption when the scene allows one.
        mention_all: Captions name every object of the scene (identical objects as one
            counted phrase), so a caption describes its image completely and retrieval among
            other scenes is well posed. False: list captions name a random subset half of
            the time and relational captions only the related pair.
        size_word_prob: Chance that a single-object mention carries its size word.
        negative_kinds: Which hard negatives to generate (subset of :data:`NEGATIVE_KINDS`).
        captions_per_image: Samples (captions) per image; they share the image object.
        clutter: ``(min, max)`` number of distractor marks per 64×64 area in ``"cluttered"``.
    """

    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    sizes: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(SIZES))
    min_objects: int = 1
    max_objects: int = 4
    max_overlap: float = 0.1
    duplicate_prob: float = 0.2
    antialias: bool = True
    relation_prob: float = 0.4
    mention_all: bool = True
    size_word_prob: float = 0.5
    negative_kinds: tuple[str, ...] = NEGATIVE_KINDS
    captions_per_image: int = 1
    clutter: tuple[int, int] = (14, 28)

    def __post_init__(self) -> None:
        bad = [s for s in self.shapes if s not in _UNIT_SHAPES]
        if bad or not self.shapes:
            raise ValueError(f"unknown shapes {bad}; choose from {list(SHAPES)}")
        bad = [c for c in self.colours if c not in COLOURS]
        if bad or len(self.colours) < 2:
            raise ValueError(f"need >= 2 colours from {list(COLOURS)}, got {list(self.colours)}")
        if not self.sizes or any(not 0 < lo <= hi < 0.5 for lo, hi in self.sizes.values()):
            raise ValueError(f"sizes must map names to 0 < min <= max < 0.5, got {self.sizes}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        bad = [k for k in self.negative_kinds if k not in NEGATIVE_KINDS]
        if bad:
            raise ValueError(f"unknown negative kinds {bad}; choose from {list(NEGATIVE_KINDS)}")
        if self.captions_per_image < 1:
            raise ValueError("captions_per_image must be >= 1")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object.

    Attributes:
        shape: Shape class name.
        colour: Colour name (key of :data:`COLOURS`).
        size: Size name (key of ``WorldConfig.sizes``).
        centre: ``(x, y)`` centre in pixels.
        radius: Nominal radius in pixels.
        rotation: Rotation in degrees (small jitter; shapes stay upright).
        box: Tight ``(x0, y0, x1, y1)`` box of the object's visible pixels (exclusive x1, y1).
        area: Number of visible pixels (coverage >= 0.5).
    """

    shape: str
    colour: str
    size: str
    centre: tuple[float, float]
    radius: float
    rotation: float
    box: Box
    area: int

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (used in ``Sample.meta["objects"]``)."""
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "box": [float(v) for v in self.box],
            "centre": [round(float(v), 3) for v in self.centre],
            "radius": round(float(self.radius), 3),
            "rotation": round(float(self.rotation), 3),
            "area": int(self.area),
        }


@dataclass
class Scene:
    """A rendered image with its objects.

    Attributes:
        image: RGB image, ``image_size × image_size``.
        objects: The K objects, in drawing order (later ones are on top).
        domain: Background domain actually used.
        seed: Seed of the world.
        index: Index of the image within the seed's stream.
        background: JSON-serialisable description of the background.
        layers: Per drawn object, its pixel window ``(x0, y0, x1, y1)`` and coverage ``"L"``
            image (internal; use :attr:`masks`).
        kept: Indices into ``layers`` of ``objects`` (an object fully hidden would be dropped).
    """

    image: Image.Image
    objects: tuple[SceneObject, ...]
    domain: str
    seed: int
    index: int
    background: dict[str, Any]
    layers: list[tuple[tuple[int, int, int, int], Image.Image]] = field(
        default_factory=list, repr=False
    )
    kept: list[int] = field(default_factory=list, repr=False)

    @functools.cached_property
    def masks(self) -> np.ndarray:
        """Visible coverage of each object, ``float32 [K, H, W]`` in [0, 1] (0 outside it).

        With ``antialias=False`` the values are exactly 0 or 1 and an object's pixels have exactly
        its colour.
        """
        h, w = self.image.height, self.image.width
        out = np.zeros((len(self.kept), h, w), dtype=np.float32)
        for i, k in enumerate(self.kept):
            x0, y0, x1, y1 = self.layers[k][0]
            out[i, y0:y1, x0:x1] = _visible(k, self.layers)
        return out


# --------------------------------------------------------------------------------------------
# shapes


def _regular(n: int, radius: float, phase: float = -90.0) -> list[tuple[float, float]]:
    return [
        (
            radius * math.cos(math.radians(phase + 360.0 * k / n)),
            radius * math.sin(math.radians(phase + 360.0 * k / n)),
        )
        for k in range(n)
    ]


def _star(points: int = 5, outer: float = 1.1, inner: float = 0.47) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        a = math.radians(-90.0 + 180.0 * k / points)
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    t = np.linspace(0.0, 2.0 * math.pi, 64, endpoint=False)
    x = 16.0 * np.sin(t) ** 3
    y = -(13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
    return list(zip(x.tolist(), y.tolist(), strict=True))


def _centred(points: list[tuple[float, float]], half_extent: float) -> np.ndarray:
    """Centre a polygon on its box and scale its larger half-extent to ``half_extent``."""
    arr = np.asarray(points, dtype=np.float64)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    arr = arr - (lo + hi) / 2.0
    return arr * (half_extent / float(np.abs(arr).max()))


# Unit polygons ([N, 2], x right, y down) centred on their box; None = circle.
_UNIT_SHAPES: dict[str, np.ndarray | None] = {
    "circle": None,
    "square": _centred([(-1, -1), (1, -1), (1, 1), (-1, 1)], 0.82),
    "triangle": _centred(_regular(3, 1.0), 1.05),
    "star": _centred(_star(), 1.08),
    "cross": _centred(
        [
            (-0.34, -1),
            (0.34, -1),
            (0.34, -0.34),
            (1, -0.34),
            (1, 0.34),
            (0.34, 0.34),
            (0.34, 1),
            (-0.34, 1),
            (-0.34, 0.34),
            (-1, 0.34),
            (-1, -0.34),
            (-0.34, -0.34),
        ],
        0.98,
    ),
    "diamond": _centred([(0, -1), (0.75, 0), (0, 1), (-0.75, 0)], 1.08),
    "hexagon": _centred(_regular(6, 1.0, phase=0.0), 1.0),
    "heart": _centred(_heart(), 1.0),
}


_UNIT_CIRCLE = _centred(_regular(64, 1.0), 1.0)


def _outline(shape: str, radius: float, rotation: float) -> np.ndarray:
    """Polygon of a shape around the origin, ``[N, 2]`` pixels (circle: 64-gon for extents)."""
    unit = _UNIT_SHAPES[shape]
    if unit is None:
        return _UNIT_CIRCLE * radius
    a = math.radians(rotation)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (unit @ rot.T) * radius


def _coverage(
    shape: str,
    centre: tuple[float, float],
    outline: np.ndarray,
    radius: float,
    window: tuple[int, int, int, int],
    antialias: bool,
) -> Image.Image:
    """Fractional coverage of one object inside a pixel window, an ``"L"`` image (0..255).

    Args:
        shape: Shape name.
        centre: ``(x, y)`` centre in image pixels.
        outline: Polygon around the origin, ``[N, 2]`` pixels (ignored for circles).
        radius: Circle radius in pixels.
        window: ``(x0, y0, x1, y1)`` integer window of the image that contains the object.
        antialias: Supersample 4×4 and box-filter down.
    """
    ss = _SUPERSAMPLE if antialias else 1
    x0, y0, x1, y1 = window
    canvas = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = (centre[0] - x0) * ss, (centre[1] - y0) * ss
    if shape == "circle":
        r = radius * ss
        draw.ellipse([cx - r, cy - r, cx + r - 1, cy + r - 1], fill=255)
    else:
        draw.polygon([(cx + x * ss, cy + y * ss) for x, y in outline.tolist()], fill=255)
    if ss > 1:
        canvas = canvas.reduce(ss)  # box filter: mean of each ss × ss block
    return canvas


# --------------------------------------------------------------------------------------------
# backgrounds


def _too_close(
    rgb: Sequence[float], palette: Sequence[tuple[int, int, int]], min_dist: float
) -> bool:
    return any(math.dist(rgb, c) < min_dist for c in palette)


def _muted_colour(rng: np.random.Generator, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """A desaturated colour far from every object colour, ``float64 [3]`` in 0..255."""
    for _ in range(100):
        h = rng.random()
        s = rng.uniform(0.0, 0.22)
        v = rng.uniform(0.12, 0.92)
        rgb = [c * 255.0 for c in colorsys.hsv_to_rgb(h, s, v)]
        if not _too_close(rgb, palette, 90.0):
            return np.asarray(rgb)
    return np.array([128.0, 128.0, 128.0])


@functools.cache
def _skimage_textures() -> tuple[Image.Image, ...]:
    """Grayscale ``"L"`` textures bundled in scikit-image's wheel (none if it is not installed)."""
    try:
        from skimage import data as skdata
    except ImportError:  # pragma: no cover - optional dependency
        return ()
    return tuple(
        Image.fromarray(np.asarray(getattr(skdata, name)(), dtype=np.uint8))
        for name in ("brick", "grass", "gravel")
    )


def _texture(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A grayscale texture ``float32 [size, size]`` with zero mean and max ``|value|`` 1."""
    bank = _skimage_textures()
    kinds = ["noise", "stripes", "checker"] + [f"photo{i}" for i in range(len(bank))]
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "noise":  # smooth value noise plus grain
        cells = int(rng.integers(3, 9))
        low = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
        tex = np.asarray(low.resize((size, size), Image.Resampling.BICUBIC))
        tex = tex + 0.35 * rng.random((size, size)).astype(np.float32)
    elif kind == "stripes":
        period = rng.uniform(0.08, 0.25) * size
        a = rng.uniform(0.0, math.pi)
        r = np.arange(size, dtype=np.float32)
        phase = r[None, :] * math.cos(a) + r[:, None] * math.sin(a)
        tex = np.sin(phase * np.float32(2 * math.pi / period))
    elif kind == "checker":
        cell = max(2, int(rng.uniform(0.06, 0.16) * size))
        ox, oy = rng.integers(0, cell, size=2).tolist()
        r = np.arange(size)
        tex = ((r[None, :] + ox) // cell + (r[:, None] + oy) // cell) % 2
    else:  # a random crop of a photographed texture, possibly transposed
        src = bank[int(kind[5:])]
        w, h = src.size
        crop = int(rng.integers(min(max(size, 96), h), min(256, h) + 1))
        y0 = int(rng.integers(0, h - crop + 1))
        x0 = int(rng.integers(0, w - crop + 1))
        patch = src.resize((size, size), Image.Resampling.BILINEAR, (x0, y0, x0 + crop, y0 + crop))
        tex = np.frombuffer(patch.tobytes(), dtype=np.uint8).reshape(size, size)
        if rng.random() < 0.5:
            tex = tex.T
    tex = tex.astype(np.float32)
    tex = tex - tex.mean()
    tex = tex / max(float(np.abs(tex).max()), 1e-6)
    return tex, kind


def _background(
    rng: np.random.Generator,
    domain: str,
    size: int,
    palette: Sequence[tuple[int, int, int]],
    clutter: tuple[int, int],
) -> tuple[Image.Image, dict[str, Any]]:
    """An RGB background image (``size × size``) and its JSON description."""
    base = _muted_colour(rng, palette)
    info: dict[str, Any] = {"colour": [round(float(c), 1) for c in base]}
    if domain == "plain":
        return Image.new("RGB", (size, size), tuple(round(c) for c in base.tolist())), info
    tex, kind = _texture(rng, size)
    amp = float(rng.uniform(25.0, 55.0))
    img = base.astype(np.float32)[None, None, :] + np.float32(amp) * tex[:, :, None]
    image = Image.fromarray(np.clip(img.round(), 0.0, 255.0).astype(np.uint8))
    info.update(texture=kind, contrast=round(amp, 2))
    if domain == "cluttered":
        draw = ImageDraw.Draw(image)
        scale = (size / 64.0) ** 2
        count = int(rng.integers(round(clutter[0] * scale), round(clutter[1] * scale) + 1))
        # all random draws at once (scalar draws dominate the cost otherwise); mark colours
        # are muted (grey +- a tint) so they never pass for an object colour
        grey = 25.0 + 215.0 * rng.random((count, 1))
        cols = np.clip(grey + 90.0 * (rng.random((count, 3)) - 0.5), 0, 255).round()
        xy = rng.random((count, 2)) * size
        kinds = rng.integers(0, 3, size=count)
        params = rng.random((count, 2))
        for col, (x, y), kind_m, (p0, p1) in zip(
            cols.astype(int).tolist(), xy.tolist(), kinds.tolist(), params.tolist(), strict=True
        ):
            fill = tuple(col)
            if kind_m == 0:  # dot
                r = 0.6 + 1.0 * p0
                draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
            elif kind_m == 1:  # short stroke
                a = math.pi * p0
                ln = 2.0 + 4.0 * p1
                draw.line([x, y, x + ln * math.cos(a), y + ln * math.sin(a)], fill=fill, width=1)
            else:  # tiny blob
                draw.rectangle([x, y, x + 1.0 + 2.0 * p0, y + 1.0 + 2.0 * p1], fill=fill)
        info["clutter"] = count
    return image, info


# --------------------------------------------------------------------------------------------
# scenes


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection of two ``(x0, y0, x1, y1)`` boxes over the area of the smaller one."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(small, 1e-6)


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index), stream])


def _pick_domain(domain: str, seed: int, index: int) -> str:
    if domain in DOMAINS:
        return domain
    if domain == "mixed":
        return DOMAINS[int(_rng(seed, index, 3).integers(len(DOMAINS)))]
    raise ValueError(f"unknown domain {domain!r}; choose from {[*DOMAINS, 'mixed']}")


def make_scene(
    seed: int,
    index: int = 0,
    *,
    domain: str = "plain",
    image_size: int = 64,
    config: WorldConfig | None = None,
) -> Scene:
    """Sample and render one scene.

    Args:
        seed: Seed of the world.
        index: Index of the image in the seed's stream.
        domain: ``"plain"``, ``"textured"``, ``"cluttered"`` or ``"mixed"``.
        image_size: Side of the square image in pixels (>= 32).
        config: World options (defaults: :class:`WorldConfig`).

    Returns:
        The rendered :class:`Scene` with per-object visible masks ``[K, H, W]``.
    """
    cfg = config or WorldConfig()
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    dom = _pick_domain(domain, seed, index)
    rng = _rng(seed, index, 0)
    size_names = list(cfg.sizes)
    n_target = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))

    placed: list[dict[str, Any]] = []
    smallest = min(size_names, key=lambda s: cfg.sizes[s][0])
    for _ in range(n_target):
        if placed and rng.random() < cfg.duplicate_prob:
            src = placed[int(rng.integers(len(placed)))]
            shape, colour = src["shape"], src["colour"]
        else:
            shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
            colour = cfg.colours[int(rng.integers(len(cfg.colours)))]
        size_order = [size_names[int(rng.integers(len(size_names)))]]
        if size_order[0] != smallest:
            size_order.append(smallest)  # fall back to the smallest size when crowded
        rotation = float(rng.uniform(-12.0, 12.0))
        for size_name in size_order:
            lo, hi = cfg.sizes[size_name]
            radius = float(rng.uniform(lo, hi)) * image_size
            outline = _outline(shape, radius, rotation)
            mn, mx = outline.min(axis=0).tolist(), outline.max(axis=0).tolist()
            x_lo, x_hi = 1.0 - mn[0], image_size - 1.0 - mx[0]
            y_lo, y_hi = 1.0 - mn[1], image_size - 1.0 - mx[1]
            if x_lo >= x_hi or y_lo >= y_hi:
                continue
            # up to 40 candidate centres; keep the first that overlaps little enough
            found = None
            for u, v in zip(*[iter(rng.random(80).tolist())] * 2, strict=True):
                cx = x_lo + (x_hi - x_lo) * u
                cy = y_lo + (y_hi - y_lo) * v
                cand = (cx + mn[0], cy + mn[1], cx + mx[0], cy + mx[1])
                if all(_overlap(cand, p["approx"]) <= cfg.max_overlap for p in placed):
                    found = (cx, cy, cand)
                    break
            if found is None:
                continue
            cx, cy, cand = found
            placed.append(
                {
                    "shape": shape,
                    "colour": colour,
                    "size": size_name,
                    "centre": (cx, cy),
                    "radius": radius,
                    "rotation": rotation,
                    "outline": outline,
                    "approx": cand,
                }
            )
            break

    palette = list(COLOURS.values())  # backgrounds avoid every named colour
    image, bg_info = _background(_rng(seed, index, 1), dom, image_size, palette, cfg.clutter)
    layers: list[tuple[tuple[int, int, int, int], Image.Image]] = []
    for p in placed:
        ax0, ay0, ax1, ay1 = p["approx"]
        win = (
            max(0, math.floor(ax0) - 1),
            max(0, math.floor(ay0) - 1),
            min(image_size, math.ceil(ax1) + 1),
            min(image_size, math.ceil(ay1) + 1),
        )
        cov = _coverage(p["shape"], p["centre"], p["outline"], p["radius"], win, cfg.antialias)
        image.paste(COLOURS[p["colour"]], win, cov)  # alpha-blend the colour through cov
        layers.append((win, cov))

    objects = []
    kept = []
    for k, p in enumerate(placed):
        win, cov = layers[k]
        if any(_overlap(win, w) > 0 for w, _ in layers[k + 1 :]):
            local = _visible(k, layers)
            cols = np.flatnonzero(local.any(axis=0))
            rows = np.flatnonzero(local.any(axis=1))
            if len(cols) == 0:  # fully hidden (cannot happen with a small max_overlap)
                continue
            bb = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
            area = int((local >= 0.5).sum())
        else:
            bb = cov.getbbox()
            if bb is None:
                continue
            area = sum(cov.histogram()[128:])
        x0, y0 = win[0], win[1]
        box = (float(x0 + bb[0]), float(y0 + bb[1]), float(x0 + bb[2]), float(y0 + bb[3]))
        objects.append(
            SceneObject(
                shape=p["shape"],
                colour=p["colour"],
                size=p["size"],
                centre=p["centre"],
                radius=p["radius"],
                rotation=p["rotation"],
                box=box,
                area=area,
            )
        )
        kept.append(k)
    return Scene(
        image=image,
        objects=tuple(objects),
        domain=dom,
        seed=int(seed),
        index=int(index),
        background=bg_info,
        layers=layers,
        kept=kept,
    )


def _visible(k: int, layers: Sequence[tuple[tuple[int, int, int, int], Image.Image]]) -> np.ndarray:
    """Visible coverage of layer ``k`` inside its window: ``float32 [h, w]`` in [0, 1].

    An object is hidden by every object drawn after it (coverage multiplies).
    """
    (x0, y0, x1, y1), cov = layers[k]
    vis = _as_float(cov)
    for (u0, v0, u1, v1), other in layers[k + 1 :]:
        ix0, iy0, ix1, iy1 = max(x0, u0), max(y0, v0), min(x1, u1), min(y1, v1)
        if ix0 >= ix1 or iy0 >= iy1:
            continue
        o = _as_float(other)[iy0 - v0 : iy1 - v0, ix0 - u0 : ix1 - u0]
        vis[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] *= 1.0 - o
    return vis


def _as_float(cov: Image.Image) -> np.ndarray:
    arr = np.frombuffer(cov.tobytes(), dtype=np.uint8).reshape(cov.height, cov.width)
    return arr.astype(np.float32) * np.float32(1.0 / 255.0)


# --------------------------------------------------------------------------------------------
# captions


@dataclass(frozen=True)
class _Phrase:
    """A noun phrase naming one object or a group of identical-looking objects."""

    objects: tuple[int, ...]
    colour: str
    shape: str
    size: str | None  # size word, or None


@dataclass(frozen=True)
class _Rel:
    """A relation phrase slot (index into ``_RELATIONS``, swapped or not)."""

    which: int
    swapped: bool = False

    @property
    def text(self) -> str:
        _, fwd, back = _RELATIONS[self.which]
        return back if self.swapped else fwd


_Part = str | _Phrase | _Rel


def _plural(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _render(parts: Sequence[_Part]) -> tuple[str, list[tuple[int, int]]]:
    """Render parts to text; returns the text and each phrase's span (without its article)."""
    out: list[str] = []
    pos = 0
    spans: list[tuple[int, int]] = []

    def emit(s: str) -> None:
        nonlocal pos
        out.append(s)
        pos += len(s)

    for part in parts:
        if isinstance(part, str):
            emit(part)
        elif isinstance(part, _Rel):
            emit(part.text)
        else:
            n = len(part.objects)
            words = []
            if n > 1:
                words.append(_COUNT_WORDS.get(n, str(n)))
            if part.size:
                words.append(part.size)
            words.append(part.colour)
            words.append(_plural(part.shape) if n > 1 else part.shape)
            if n == 1:
                emit(_article(words[0]) + " ")
            start = pos
            emit(" ".join(words))
            spans.append((start, pos))
    return "".join(out), spans


def _word_diff(a: str, b: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Word-aligned differing regions of two strings: (span in ``a``, span in ``b``)."""
    n = min(len(a), len(b))
    p = 0
    while p < n and a[p] == b[p]:
        p += 1
    q = 0
    while q < n - p and a[len(a) - 1 - q] == b[len(b) - 1 - q]:
        q += 1
    while p > 0 and a[p - 1].isalnum():
        p -= 1
    ea, eb = len(a) - q, len(b) - q
    while ea < len(a) and a[ea].isalnum() and ea > 0 and a[ea - 1].isalnum():
        ea += 1
        eb += 1
    return (p, ea), (p, eb)


def _join_list(items: list[_Part]) -> list[_Part]:
    out: list[_Part] = []
    for i, item in enumerate(items):
        if i > 0:
            out.append(" and " if i == len(items) - 1 else ", ")
        out.append(item)
    return out


def _relation_candidates(
    objects: Sequence[SceneObject], singles: list[int], image_size: int
) -> list[tuple[int, int, int]]:
    """(subject, object, relation index) triples that hold clearly in the scene.

    The subject's centre must precede the object's on the relation's axis by at least 15 % of
    the image side and by more than half their distance on the other axis.
    """
    out = []
    for a in singles:
        for b in singles:
            if a == b:
                continue
            for r, (axis, _, _) in enumerate(_RELATIONS):
                if _precedes(objects[a].centre, objects[b].centre, axis, image_size):
                    out.append((a, b, r))
    return out


def _precedes(a: Sequence[float], b: Sequence[float], axis: str, image_size: int) -> bool:
    """Whether centre ``a`` clearly precedes centre ``b`` on ``axis`` ("x" or "y").

    By at least 15 % of the image side, and by more than half their distance on the other axis:
    the rule under which the generator states a relation and :func:`caption_holds` checks one.
    """
    i = 0 if axis == "x" else 1
    d, other = b[i] - a[i], b[1 - i] - a[1 - i]
    return d >= 0.15 * image_size and d > 0.5 * abs(other)


def caption_holds(sample: Sample, objects: Sequence[dict[str, Any]], image_size: int) -> bool:
    """Whether a synthetic sample's caption is a true description of another scene.

    The caption is read from ``sample.meta`` (its mentions, relation and completeness), the
    scene is given by its objects (``other.meta["objects"]``). A mention of ``n`` objects of a
    colour and shape holds when the scene has exactly ``n`` such objects, all of the mentioned
    size if a size word is used; a complete caption (``WorldConfig.mention_all``) also needs
    every object of the scene to be mentioned; a relation holds by the same rule the generator
    uses to state one. Retrieval metrics use it to count a retrieved caption that describes the
    query image just as well as its own (two scenes with one small red circle each).

    Args:
        sample: A sample from :func:`generate` (its ``meta`` is read).
        objects: The other scene's objects (dicts with ``colour``, ``shape``, ``size``,
            ``centre``).
        image_size: Side of the other scene's image in pixels (for the relation margin).

    Returns:
        True when the caption describes the scene.
    """
    meta = sample.meta
    by_kind: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in objects:
        by_kind.setdefault((o["colour"], o["shape"]), []).append(o)
    named = set()
    for m in meta["mentions"]:
        key = (m["colour"], m["shape"])
        named.add(key)
        found = by_kind.get(key, [])
        if len(found) != m["count"]:
            return False
        if m["size"] and any(o["size"] != m["size"] for o in found):
            return False
    if meta.get("complete") and named != set(by_kind):
        return False
    rel = meta.get("relation")
    if rel:
        own = meta["objects"]
        a = by_kind[(own[rel["subject"]]["colour"], own[rel["subject"]]["shape"])][0]
        b = by_kind[(own[rel["object"]]["colour"], own[rel["object"]]["shape"])][0]
        if rel.get("swapped"):
            a, b = b, a
        if not _precedes(a["centre"], b["centre"], rel["axis"], image_size):
            return False
    return True


def _describe(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, image_size: int
) -> tuple[list[_Part], dict[str, Any]]:
    """Choose a caption for the scene; returns its parts and a JSON description."""
    objs = scene.objects
    groups: dict[tuple[str, str], list[int]] = {}
    for k, o in enumerate(objs):
        groups.setdefault((o.colour, o.shape), []).append(k)
    group_list = list(groups.values())

    def phrase(members: list[int]) -> _Phrase:
        sizes = {objs[k].size for k in members}
        prob = cfg.size_word_prob if len(members) == 1 else cfg.size_word_prob / 2
        size = next(iter(sizes)) if len(sizes) == 1 and rng.random() < prob else None
        o = objs[members[0]]
        return _Phrase(tuple(members), o.colour, o.shape, size)

    singles = [g[0] for g in group_list if len(g) == 1]
    rels = _relation_candidates(objs, singles, image_size)
    if rels and rng.random() < cfg.relation_prob:
        a, b, r = rels[int(rng.integers(len(rels)))]
        # either "a left of b" or "b right of a": both phrases of a relation occur in true
        # captions, so a relation negative cannot be told from the words alone
        swapped = bool(rng.random() < 0.5)
        if swapped:
            a, b = b, a
        form = _RELATION_FORMS[int(rng.integers(len(_RELATION_FORMS)))]
        pa, pb = phrase([a]), phrase([b])
        head, rest = form.split("{a}")
        mid, tail = rest.split("{r}")
        mid2, tail2 = tail.split("{b}")
        parts: list[_Part] = [head, pa, mid, _Rel(r, swapped), mid2, pb, tail2]
        others = [g for g in group_list if g[0] not in (a, b)]
        if cfg.mention_all and others:
            order = [int(i) for i in rng.permutation(len(others))]
            parts += [", with ", *_join_list([phrase(others[i]) for i in order])]
        info = {
            "template": "relation",
            "relation": {
                "subject": a,
                "object": b,
                "words": _RELATIONS[r][2 if swapped else 1],
                "axis": _RELATIONS[r][0],
                "swapped": swapped,
            },
        }
        return [p for p in parts if p != ""], info

    order = [int(i) for i in rng.permutation(len(group_list))]
    if cfg.mention_all or rng.random() < 0.5:
        k = len(order)
    else:
        k = int(rng.integers(1, len(order) + 1))
    chosen = [phrase(group_list[i]) for i in order[:k]]
    prefix = _LIST_PREFIXES[int(rng.integers(len(_LIST_PREFIXES)))]
    parts = ([prefix] if prefix else []) + _join_list(list(chosen))
    return parts, {"template": "list", "relation": None}


def _negatives(
    parts: list[_Part],
    caption: str,
    objs: Sequence[SceneObject],
    rng: np.random.Generator,
    cfg: WorldConfig,
) -> list[tuple[Negative, dict[str, Any]]]:
    """Hard negatives of a caption, each with a JSON note of what was replaced."""
    present = {(o.colour, o.shape) for o in objs}
    scene_colours = {o.colour for o in objs}
    scene_shapes = {o.shape for o in objs}
    phrases = {i: p for i, p in enumerate(parts) if isinstance(p, _Phrase)}
    out: list[tuple[Negative, dict[str, Any]]] = []

    def make(kind: str, i: int, new: _Part) -> None:
        alt = list(parts)
        alt[i] = new
        text, _ = _render(alt)
        orig_span, span = _word_diff(caption, text)
        note = {"replaced": [caption[slice(*orig_span)], text[slice(*span)]]}
        out.append((Negative(text, kind, span, orig_span), note))

    def pick(options: Sequence[Any]) -> Any:
        return options[int(rng.integers(len(options)))]

    for kind in cfg.negative_kinds:
        if kind == "colour":  # a colour that no object of that shape has
            opts = [
                (i, c)
                for i, p in phrases.items()
                for c in cfg.colours
                if c != p.colour and (c, p.shape) not in present
            ]
            if opts:
                i, c = pick(opts)
                make(kind, i, dataclasses.replace(phrases[i], colour=c))
        elif kind == "shape":  # a shape that no object of that colour has
            opts = [
                (i, sh)
                for i, p in phrases.items()
                for sh in cfg.shapes
                if sh != p.shape and (p.colour, sh) not in present
            ]
            if opts:
                i, sh = pick(opts)
                make(kind, i, dataclasses.replace(phrases[i], shape=sh))
        elif kind == "relation":
            for i, p in enumerate(parts):
                if isinstance(p, _Rel):
                    make(kind, i, _Rel(p.which, not p.swapped))
        elif kind == "absent":  # a colour and a shape that appear nowhere in the scene
            colours = [c for c in cfg.colours if c not in scene_colours]
            shapes = [sh for sh in cfg.shapes if sh not in scene_shapes]
            if colours and shapes and phrases:
                i = pick(list(phrases))
                new = dataclasses.replace(phrases[i], colour=pick(colours), shape=pick(shapes))
                make(kind, i, new)
    return out


def samples_for_scene(
    scene: Scene, *, domain: str = "plain", config: WorldConfig | None = None
) -> list[Sample]:
    """Caption a rendered scene: ``config.captions_per_image`` samples sharing its image.

    Args:
        scene: A scene from :func:`make_scene`.
        domain: The domain argument the scene was made with (it names the image id).
        config: World options (defaults: :class:`WorldConfig`).

    Returns:
        Samples (they share one ``PIL.Image`` object; copy it before drawing on it) with
        mentions (tight boxes of the referred objects), hard negatives, and
        ``meta`` holding ``domain``, ``seed``, ``index``, ``image_size``, ``objects``,
        ``mentions`` (span + object indices), ``template``, ``relation``, ``background`` and
        ``negatives`` (what each negative replaced).
    """
    cfg = config or WorldConfig()
    size = scene.image.width
    image_id = f"synth-{domain}-{scene.seed}-{scene.index:06d}"
    ref = ImageRef.synthetic(
        scene.seed, scene.index, scene.domain, size, _config_options(cfg), image=scene.image
    )
    objects_json = [o.to_json() for o in scene.objects]
    out = []
    for j in range(cfg.captions_per_image):
        rng = _rng(scene.seed, scene.index, 2 + 100 * (j + 1))
        if scene.objects:
            parts, info = _describe(scene, rng, cfg, size)
        else:  # nothing could be placed (only with extreme sizes): degenerate but valid
            parts, info = ["an empty picture"], {"template": "empty", "relation": None}
        caption, spans = _render(parts)
        phrases = [p for p in parts if isinstance(p, _Phrase)]
        mentions = [
            Mention(span=sp, boxes=tuple(scene.objects[k].box for k in ph.objects), label=ph.shape)
            for ph, sp in zip(phrases, spans, strict=True)
        ]
        negs = _negatives(parts, caption, scene.objects, rng, cfg)
        meta = {
            "domain": scene.domain,
            "seed": scene.seed,
            "index": scene.index,
            "image_size": size,
            "objects": objects_json,
            "mentions": [
                {
                    "span": list(sp),
                    "objects": list(ph.objects),
                    "colour": ph.colour,
                    "shape": ph.shape,
                    "size": ph.size,
                    "count": len(ph.objects),
                }
                for ph, sp in zip(phrases, spans, strict=True)
            ],
            "template": info["template"],
            "relation": info["relation"],
            "complete": bool(cfg.mention_all),
            "background": scene.background,
            "negatives": [note for _, note in negs],
        }
        out.append(
            Sample(
                image=ref,
                caption=caption,
                mentions=mentions,
                negatives=[n for n, _ in negs],
                image_id=image_id,
                caption_id=f"{image_id}-c{j}",
                meta=meta,
            )
        )
    return out


def _config_options(cfg: WorldConfig) -> dict[str, Any]:
    """The fields of ``cfg`` that differ from the defaults, JSON-serialisable."""
    default = dataclasses.asdict(WorldConfig())
    return json.loads(
        json.dumps({k: v for k, v in dataclasses.asdict(cfg).items() if v != default[k]})
    )


def render_reference(recipe: dict[str, Any]) -> Image.Image:
    """Render the image of a synthetic :class:`~dualex.data.types.ImageRef` recipe again.

    Args:
        recipe: ``seed``, ``index``, ``domain``, ``image_size`` and ``options`` (fields of
            :class:`WorldConfig` that differ from the defaults).

    Returns:
        The scene's RGB image, identical to the one rendered while generating the samples.
    """
    options = dict(recipe.get("options") or {})
    if "sizes" in options:
        options["sizes"] = {k: tuple(v) for k, v in options["sizes"].items()}
    cfg = _make_config(None, options)
    return make_scene(
        int(recipe["seed"]),
        int(recipe["index"]),
        domain=str(recipe["domain"]),
        image_size=int(recipe["image_size"]),
        config=cfg,
    ).image


def _make_config(config: WorldConfig | None, options: dict[str, Any]) -> WorldConfig:
    cfg = config or WorldConfig()
    if options:
        known = {f.name for f in dataclasses.fields(WorldConfig)}
        bad = sorted(set(options) - known)
        if bad:
            raise TypeError(f"unknown synthetic-world options {bad}; valid: {sorted(known)}")
        for key in ("shapes", "colours", "negative_kinds", "clutter"):
            if key in options:
                options[key] = tuple(options[key])
        cfg = dataclasses.replace(cfg, **options)
    return cfg


def iter_samples(
    n: int,
    seed: int = 0,
    domain: str = "plain",
    image_size: int = 64,
    *,
    start: int = 0,
    config: WorldConfig | None = None,
    **options: Any,
) -> Iterator[Sample]:
    """Lazily yield the samples of images ``start .. start + n - 1`` of a seed.

    Args:
        n: Number of images (each gives ``captions_per_image`` samples).
        seed: Seed of the world.
        domain: ``"plain"``, ``"textured"``, ``"cluttered"`` or ``"mixed"`` (per image).
        image_size: Side of the square images in pixels.
        start: Index of the first image (for sharding / resuming).
        config: World options; ``options`` override single fields of it (e.g.
            ``max_objects=1``, ``antialias=False``).
        **options: Fields of :class:`WorldConfig`.

    Yields:
        :class:`~dualex.data.types.Sample` objects, deterministic in ``(seed, index, options)``.
    """
    if n < 0 or start < 0:
        raise ValueError(f"n and start must be >= 0, got n={n}, start={start}")
    cfg = _make_config(config, dict(options))
    _pick_domain(domain, seed, 0)  # validate early
    for index in range(start, start + n):
        scene = make_scene(seed, index, domain=domain, image_size=image_size, config=cfg)
        yield from samples_for_scene(scene, domain=domain, config=cfg)


def generate(
    n: int,
    seed: int = 0,
    domain: str = "plain",
    image_size: int = 64,
    *,
    start: int = 0,
    config: WorldConfig | None = None,
    **options: Any,
) -> list[Sample]:
    """Generate ``n`` images of the synthetic world with captions, mentions and negatives.

    Same arguments as :func:`iter_samples`; returns the list.

    Returns:
        ``n * captions_per_image`` samples.
    """
    return list(iter_samples(n, seed, domain, image_size, start=start, config=config, **options))


# --------------------------------------------------------------------------------------------
# exporters


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, ensure_ascii=False).encode("utf-8"))


def _write_images(samples: Iterable[Sample], image_dir: Path) -> dict[str, str]:
    """Write each distinct image once as PNG; returns image_id -> file name."""
    names: dict[str, str] = {}
    for s in samples:
        if s.image_id in names:
            continue
        name = f"{s.image_id}.png"
        buf = io.BytesIO()
        s.image.convert("RGB").save(buf, format="PNG")
        atomic_write(image_dir / name, buf.getvalue())
        names[s.image_id] = name
    return names


def _objects_of(sample: Sample) -> list[dict[str, Any]]:
    """Objects of a sample: ``meta["objects"]`` or, for other sources, its mentions' boxes."""
    if "objects" in sample.meta:
        return list(sample.meta["objects"])
    seen: dict[tuple[float, ...], dict[str, Any]] = {}
    for m in sample.mentions:
        for b in m.boxes:
            seen.setdefault(tuple(b), {"shape": m.label, "box": list(b)})
    return list(seen.values())


def export_coco(samples: Sequence[Sample], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write samples as a COCO-format dataset.

    Layout: ``images/<image_id>.png``, ``annotations/captions_synthetic.json`` (images +
    captions, each caption with ``id``, ``image_id``, ``caption`` and the extra keys
    ``caption_id`` and ``mentions``) and ``annotations/instances_synthetic.json`` (images,
    categories = shape classes, annotations with ``bbox`` ``[x, y, w, h]``, ``area``,
    ``iscrowd`` 0 and the extra keys ``colour`` and ``size``). COCO image ids are 1-based in order
    of first appearance; each image keeps its dataset id as ``synthetic_id``. Every file is
    written atomically.

    Args:
        samples: Samples (several may share an image).
        out_dir: Output directory (created if needed).

    Returns:
        ``{"images": dir, "captions": path, "instances": path}``.
    """
    out = Path(out_dir)
    names = _write_images(samples, out / "images")
    shape_names = list(SHAPES)
    for s in samples:
        for o in _objects_of(s):
            if o["shape"] not in shape_names:
                shape_names.append(o["shape"])
    cat_id = {name: i + 1 for i, name in enumerate(shape_names)}
    categories = [{"id": cat_id[n], "name": n, "supercategory": "shape"} for n in shape_names]

    images: list[dict[str, Any]] = []
    coco_id: dict[str, int] = {}
    annotations: list[dict[str, Any]] = []
    captions: list[dict[str, Any]] = []
    for s in samples:
        if s.image_id not in coco_id:
            coco_id[s.image_id] = len(coco_id) + 1
            images.append(
                {
                    "id": coco_id[s.image_id],
                    "file_name": names[s.image_id],
                    "width": s.image.width,
                    "height": s.image.height,
                    "synthetic_id": s.image_id,
                }
            )
            for o in _objects_of(s):
                x0, y0, x1, y1 = (float(v) for v in o["box"])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": coco_id[s.image_id],
                        "category_id": cat_id[o["shape"]],
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": float(o.get("area", (x1 - x0) * (y1 - y0))),
                        "iscrowd": 0,
                        "colour": o.get("colour"),
                        "size": o.get("size"),
                    }
                )
        captions.append(
            {
                "id": len(captions) + 1,
                "image_id": coco_id[s.image_id],
                "caption": s.caption,
                "caption_id": s.caption_id,
                "mentions": [
                    {"span": list(m.span), "boxes": [list(b) for b in m.boxes], "label": m.label}
                    for m in s.mentions
                ],
            }
        )
    info = {"description": "dualex synthetic shapes world", "version": "1.0"}
    ann_dir = out / "annotations"
    cap_path = ann_dir / "captions_synthetic.json"
    inst_path = ann_dir / "instances_synthetic.json"
    _write_json(cap_path, {"info": info, "images": images, "annotations": captions})
    _write_json(
        inst_path,
        {"info": info, "images": images, "annotations": annotations, "categories": categories},
    )
    return {"images": out / "images", "captions": cap_path, "instances": inst_path}


def export_hnc(samples: Sequence[Sample], out_dir: str | os.PathLike[str]) -> Path:
    """Write samples in an HNC-like (Hard Negative Captions) JSON layout.

    ``hnc_synthetic.json`` maps each image id to ``{"file_name": "<image_id>.png",
    "captions": {cpt_id: entry}}`` where an entry is::

        {"caption": str, "label": 1 (positive) | 0 (negative),
         "type": "positive" | "colour" | "shape" | "relation" | "absent",
         "textual_label": "yes" | "no",
         "bboxes": {obj_id: {"bbox": {"x", "y", "w", "h"}, "name": shape}},
         "replaced": [original words, new words]   ([] for positives),
         "cpt_p_id": cpt_id of the positive caption (None for positives)}

    ``bboxes`` lists the objects the positive caption mentions (``obj_id`` = index into
    ``meta["objects"]``). Positive ids are the samples' ``caption_id``; a negative's id is
    ``"<caption_id>-n<k>"``. Images go to ``images/``. Files are written atomically.

    Args:
        samples: Samples (several may share an image).
        out_dir: Output directory (created if needed).

    Returns:
        Path of the JSON file.
    """
    out = Path(out_dir)
    names = _write_images(samples, out / "images")
    data: dict[str, Any] = {}
    for s in samples:
        entry = data.setdefault(s.image_id, {"file_name": names[s.image_id], "captions": {}})
        objs = _objects_of(s)
        referred: dict[str, Any] = {}
        if "mentions" in s.meta:
            pairs = [(k, objs[k]) for m in s.meta["mentions"] for k in m["objects"]]
        else:
            pairs = list(enumerate(objs))
        for k, o in pairs:
            x0, y0, x1, y1 = (float(v) for v in o["box"])
            referred[str(k)] = {
                "bbox": {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0},
                "name": o["shape"],
            }
        entry["captions"][s.caption_id] = {
            "caption": s.caption,
            "label": 1,
            "type": "positive",
            "textual_label": "yes",
            "bboxes": referred,
            "replaced": [],
            "cpt_p_id": None,
        }
        notes = s.meta.get("negatives", [])
        for k, neg in enumerate(s.negatives):
            if k < len(notes):
                replaced = list(notes[k]["replaced"])
            else:
                replaced = [
                    s.caption[slice(*neg.original_span)] if neg.original_span else "",
                    neg.caption[slice(*neg.span)],
                ]
            entry["captions"][f"{s.caption_id}-n{k}"] = {
                "caption": neg.caption,
                "label": 0,
                "type": neg.kind,
                "textual_label": "no",
                "bboxes": referred,
                "replaced": replaced,
                "cpt_p_id": s.caption_id,
            }
    path = out / "hnc_synthetic.json"
    _write_json(path, data)
    return path
