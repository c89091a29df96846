"""``random``: uniform noise on the patch grid (and over the text tokens), the floor of every
metric. Runs on every family with an image tower.

The noise is seeded by the text (CRC-32, stable across runs and processes), or by ``seed``.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import torch

from dualex.evaluate.methods.base import (
    Attribution,
    Method,
    UnsupportedMethodError,
    needs_image_tower,
    timed,
)
from dualex.towers.registry import image_families_text

__all__ = ["METHOD", "caption_scores", "random_map", "random_scores"]


def _seed(key: int | str) -> int:
    return key if isinstance(key, int) else zlib.crc32(str(key).encode("utf-8"))


def random_scores(n: int, seed: int | str) -> np.ndarray:
    """Uniform per-token noise ``[n]`` (the image→text floor)."""
    return np.random.default_rng(_seed(seed) + 1).random(n)


def random_map(
    model: Any, image: Any, texts: list[str], *, seeds: list[int | str] | None = None
) -> list[Attribution]:
    """One uniform-noise map ``[rows, cols]`` per text.

    Args:
        model: A :class:`dualex.DualEncoder` with an image tower.
        image: The image.
        texts: The texts (each seeds its own map unless ``seeds`` is given).
        seeds: One seed per text (int, or a string hashed with CRC-32).

    Returns:
        Attributions with ``image_map`` and ``extra["text_scores"]`` ``[S_text]``.
    """
    import dualex

    model = dualex.wrap(model)
    if model.tower_b.modality != "image":
        raise UnsupportedMethodError(
            f"random draws image maps; {model.name!r} has no image tower (image–text families: "
            f"{image_families_text()})"
        )
    keys = list(seeds) if seeds is not None else list(texts)

    def go() -> list[Attribution]:
        pos = model.tower_b.prepare(image).positions
        out = []
        for text, key in zip(texts, keys, strict=True):
            grid = np.random.default_rng(_seed(key)).random(tuple(pos.grid))
            tpos = model.tower_a.prepare(text).positions
            out.append(
                Attribution(
                    method="random",
                    image=pos,
                    image_map=torch.from_numpy(grid),
                    text=None,
                    extra={
                        "text_positions": tpos,
                        "text_scores": torch.from_numpy(random_scores(len(tpos), key)),
                    },
                )
            )
        return out

    return timed(go)


def caption_scores(model: Any, caption: str, key: str) -> tuple[Any, torch.Tensor]:
    """Uniform noise over a caption's tokens, seeded by ``key``: ``(positions, [S_text])``."""
    text = model.tower_a.prepare(caption).positions
    return text, torch.from_numpy(random_scores(len(text), key))


METHOD = Method(
    name="random",
    order=1,
    summary="uniform noise on the patch grid: the floor every method must beat",
    run=random_map,
    check=needs_image_tower("random"),
    text_input="span",
    seeded=True,
    caption_scores=caption_scores,
)
"""The ``random`` method."""
