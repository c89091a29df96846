"""Cross-check of dualex's interactions with Shapley interactions computed by shapiq.

The game: players are the caption's words and a ``g × g`` grid of image regions (groups of
patches); the value of a coalition is the model's similarity when every word outside it is
replaced by the reference token (id 0, the exCLIP reference's filler) and every region outside
it by the reference image (all zeros in normalised pixel space, the dataset-mean colour). The
pairwise (word, region) Shapley interactions (k-SII of order 2, whose pairs equal SII) are
computed exactly when the game is small (``n ≤ exact_max`` players) and by shapiq's
KernelSHAPIQ approximator otherwise. dualex's matrix is aggregated to the same words × regions
(rows of a word's tokens and columns of a region's patches summed) and the two are compared by
Spearman's rank correlation.

The second-order attributions and the Shapley interactions measure different things (a path
integral from one reference vs. an average over coalitions of masked inputs), so perfect
agreement is not expected on a real model; on a game that is exactly bilinear in the players
(a sum of per-word and per-region features, dot product) both equal the planted products.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import InvalidInputError

__all__ = [
    "CrossCheck",
    "aggregate",
    "clip_crosscheck",
    "pairwise_interactions",
    "rank_correlation",
    "region_groups",
    "word_groups",
]

EXACT_MAX = 14
"""Largest number of players solved exactly (2^14 coalitions)."""


def word_groups(text: Any) -> tuple[list[str], list[list[int]]]:
    """Words of a :class:`TextPositions` (whitespace-separated) and the token rows of each.

    Words that cover no token are dropped.
    """
    words, rows = [], []
    for m in re.finditer(r"\S+", text.text):
        idx = [
            i
            for i, off in enumerate(text.offsets)
            if off is not None and off[0] < m.end() and off[1] > m.start() and off[1] > off[0]
        ]
        if idx:
            words.append(m.group(0))
            rows.append(idx)
    return words, rows


def region_groups(grid: tuple[int, int], g: int = 4, prefix: int = 0) -> list[list[int]]:
    """Patch positions (matrix columns) of a ``g × g`` partition of the grid, row-major."""
    rows, cols = grid
    r_parts = np.array_split(np.arange(rows), min(g, rows))
    c_parts = np.array_split(np.arange(cols), min(g, cols))
    return [
        [prefix + int(r) * cols + int(c) for r in rp for c in cp]
        for rp in r_parts
        for cp in c_parts
    ]


def aggregate(
    m: Tensor, row_groups: Sequence[Sequence[int]], col_groups: Sequence[Sequence[int]]
) -> np.ndarray:
    """Sums of ``m`` over row groups × column groups → ``[len(row_groups), len(col_groups)]``."""
    m = m.detach().double()
    out = np.zeros((len(row_groups), len(col_groups)))
    for i, r in enumerate(row_groups):
        sub = m[list(r)]
        for j, c in enumerate(col_groups):
            out[i, j] = float(sub[:, list(c)].sum())
    return out


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two equally shaped arrays (flattened)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape or len(a) < 2:
        raise InvalidInputError(f"need two arrays of the same size >= 2, got {a.shape}, {b.shape}")
    return float(spearmanr(a, b).statistic)


def pairwise_interactions(
    value: Callable[[np.ndarray], np.ndarray],
    n_text: int,
    n_image: int,
    *,
    exact_max: int = EXACT_MAX,
    budget: int = 4096,
    seed: int = 0,
) -> tuple[np.ndarray, bool]:
    """Pairwise Shapley interactions of every (text player, image player).

    Args:
        value: ``value(coalitions)`` with ``coalitions: bool [B, n_text + n_image]`` → ``[B]``.
        n_text: Text players (first).
        n_image: Image players (after the text players).
        exact_max: Solve exactly up to this many players.
        budget: Coalitions the approximator may evaluate.
        seed: Seed of the approximator.

    Returns:
        ``([n_text, n_image] interactions, exact)``.
    """
    import shapiq

    n = n_text + n_image

    def fn(coalitions: np.ndarray) -> np.ndarray:
        return np.asarray(value(np.asarray(coalitions, dtype=bool)), dtype=np.float64)

    exact = n <= exact_max
    if exact:
        iv = shapiq.ExactComputer(fn, n_players=n)("k-SII", order=2)
    else:
        approx = shapiq.KernelSHAPIQ(n, max_order=2, index="k-SII", random_state=seed)
        iv = approx.approximate(min(budget, 2**n), fn)
    out = np.zeros((n_text, n_image))
    for i in range(n_text):
        for j in range(n_image):
            out[i, j] = float(iv[(i, n_text + j)])
    return out, exact


@dataclass
class CrossCheck:
    """Result of one Shapley cross-check.

    Attributes:
        words: The word players.
        shapley: ``[words, regions]`` Shapley interactions.
        dualex: ``[words, regions]`` aggregated dualex interactions.
        spearman: Rank correlation of the two.
        exact: Whether the interactions were computed exactly.
        grid: Regions per side.
    """

    words: list[str]
    shapley: np.ndarray
    dualex: np.ndarray
    spearman: float
    exact: bool
    grid: int


def clip_crosscheck(
    model: Any,
    caption: str,
    image: Any,
    *,
    grid: int = 4,
    budget: int = 4096,
    steps: int | None = None,
    layers: Any = None,
    batch: int = 512,
    seed: int = 0,
) -> CrossCheck:
    """Shapley cross-check of one caption–image pair of an HF CLIP model (see module docstring).

    Args:
        model: A dualex-wrapped HF CLIPModel.
        caption: The caption.
        image: The image.
        grid: Regions per side (``grid × grid`` image players).
        budget: Coalitions for the approximator (when not exact).
        steps: dualex quadrature nodes (``None``: adaptive).
        layers: dualex split layer(s).
        batch: Coalitions per forward pass.
        seed: Approximator seed.

    Returns:
        A :class:`CrossCheck`.
    """
    import dualex
    from dualex.evaluate.baselines._clip import ClipVision

    cv = ClipVision(model)
    ex = dualex.explain(cv.model, caption, image, layers=layers, steps=steps)
    m, text, pos = ex.text_image()
    words, w_rows = word_groups(text)
    regions = region_groups(pos.grid, grid, prefix=pos.prefix)
    agg = aggregate(m, w_rows, regions)

    t_inp = cv.text_tower.prepare(caption)
    ids = t_inp.data["input_ids"]
    mask = t_inp.data.get("attention_mask")
    pixels, _ = cv.prepare(image)
    patch = cv.image_tower.patch
    cols = pos.grid[1]
    pix_masks = torch.zeros(len(regions), *pixels.shape[-2:], dtype=torch.bool)
    for r, group in enumerate(regions):
        for p in group:
            i, j = divmod(p - pos.prefix, cols)
            pix_masks[r, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch] = True
    nw = len(words)

    def value(coalitions: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(coalitions), batch):
            c = torch.from_numpy(coalitions[start : start + batch])
            B = len(c)
            tid = ids.repeat(B, 1)
            for w, rows in enumerate(w_rows):
                off = ~c[:, w]
                for r in rows:
                    tid[off, r] = 0
            keep = (c[:, nw:].to(torch.float64) @ pix_masks.flatten(1).to(torch.float64)) > 0
            px = pixels.repeat(B, 1, 1, 1) * keep.view(B, 1, *pixels.shape[-2:]).to(pixels.dtype)
            with torch.no_grad():
                data = {"input_ids": tid}
                if mask is not None:
                    data["attention_mask"] = mask.repeat(B, 1)
                et = cv.text_tower.encode(data).double()
                ei = cv.image_tower.encode({"pixel_values": px}).double()
            out.append(((et * ei).sum(1) / et.norm(dim=1) / ei.norm(dim=1)).numpy())
        return np.concatenate(out)

    shap, exact = pairwise_interactions(value, nw, len(regions), budget=budget, seed=seed)
    return CrossCheck(
        words=words,
        shapley=shap,
        dualex=agg,
        spearman=rank_correlation(shap, agg),
        exact=exact,
        grid=grid,
    )
