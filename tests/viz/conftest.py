"""Fixtures of the viz tests: a tiny real explanation and synthetic ones with planted matrices."""

from __future__ import annotations

import os
import re
import shutil

import pytest
import torch
from PIL import Image, ImageDraw

from dualex.engine.interactions import Completeness
from dualex.explanation import Explanation
from dualex.towers.positions import Geometry, ImagePositions, TextPositions

CAPTION = "a red circle and a blue square"


def scene() -> Image.Image:
    """A 48x32 picture (non-square: the processor centre-crops 8 px on each side)."""
    im = Image.new("RGB", (48, 32), (235, 235, 230))
    d = ImageDraw.Draw(im)
    d.ellipse((9, 6, 23, 20), fill=(210, 30, 30))
    d.rectangle((26, 12, 38, 26), fill=(30, 60, 200))
    return im


@pytest.fixture(scope="session")
def tiny_ex() -> Explanation:
    """A real explanation from a tiny random-init CLIP (32 px input, 4x4 patches)."""
    import dualex
    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=0, image_size=32, patch_size=8, width=32, layers=2, heads=2)
    model = dualex.wrap(m, tokenizer=tok, image_processor=proc, name="tiny-random-clip")
    return dualex.explain(model, CAPTION, scene(), steps=4)


def text_positions(caption: str, specials: bool = True) -> TextPositions:
    """Word/punctuation tokens with character offsets, wrapped in <start> … <end>."""
    toks = [(m.group(), (m.start(), m.end())) for m in re.finditer(r"\w+|[^\w\s]", caption)]
    tokens = [t for t, _ in toks]
    offsets: list = [o for _, o in toks]
    special = [False] * len(toks)
    if specials:
        tokens = ["<start>", *tokens, "<end>"]
        offsets = [None, *offsets, None]
        special = [True, *special, True]
    return TextPositions(text=caption, tokens=tokens, offsets=offsets, special=special)


def make_explanation(
    caption: str = CAPTION,
    *,
    grid: int = 4,
    image_size: tuple[int, int] = (48, 32),
    input_size: int = 32,
    matrix: torch.Tensor | None = None,
    image: Image.Image | str | None = "scene",
    model: str = "synthetic",
    seed: int = 0,
) -> Explanation:
    """An Explanation built directly: CLIP-style geometry, CLS prefix, a given or random matrix."""
    text = text_positions(caption)
    geo = Geometry.shortest_edge_center_crop(image_size, input_size, (input_size, input_size))
    img = ImagePositions(grid=(grid, grid), prefix=1, geometry=geo)
    if matrix is None:
        g = torch.Generator().manual_seed(seed)
        matrix = torch.randn(len(text), len(img), generator=g, dtype=torch.float64)
    total = float(matrix.sum())
    comp = Completeness(
        score=total + 0.5,
        reference_terms=(0.25, 0.5, -0.25),
        attribution_sum=total,
        absolute_error=0.0,
        relative_error=0.0,
        tower_errors=(0.0, 0.0),
        steps=(4, 4),
        rule="gauss-legendre",
    )
    if isinstance(image, str):
        image = scene().resize(image_size)
    return Explanation(
        matrix=matrix,
        a=text,
        b=img,
        completeness=comp,
        layers=(1, 1),
        model=model,
        raw_a=caption,
        raw_b=image,
    )


@pytest.fixture(scope="session")
def make_ex():
    """The :func:`make_explanation` factory."""
    return make_explanation


@pytest.fixture(scope="session")
def text_pos():
    """The :func:`text_positions` factory."""
    return text_positions


# -- headless Chromium (Debian's, driven by Playwright; nothing downloaded) ----------------------

CHROMIUM = os.environ.get("DUALEX_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        pytest.skip(f"no chromium at {CHROMIUM} or on PATH; run `make browser-deps` (apt chromium)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True, args=FLAGS)
        yield b
        b.close()
