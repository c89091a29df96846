"""Cross-check of dualex's interactions with Shapley interactions computed by shapiq.

The game (a :class:`dualex.evaluate.game.PairGame`): players are the caption's words and a
``g × g`` grid of image regions (groups of patches); the value of a coalition is the model's
similarity when every word outside it is replaced by the text reference's filler token (CLIP: id
0, the exCLIP reference's filler) and every region outside it by the reference image (all zeros
in normalised pixel space, the dataset-mean colour). The
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
from torch import Tensor

from dualex.errors import InvalidInputError, SettingError
from dualex.evaluate.game import PairGame, all_coalitions
from dualex.evaluate.game import region_groups as game_regions

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
    """Patch positions (matrix columns) of a ``g × g`` partition of the grid, row-major (the
    regions of :func:`dualex.evaluate.game.region_groups`, shifted by the prefix)."""
    return [[prefix + k for k in group] for group in game_regions(tuple(grid), (g, g))]


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


FACTORISED_MAX = 2**22
"""Largest value table (text subsets × region subsets) solved by :func:`factorised_sii`."""


def factorised_sii(table: np.ndarray) -> np.ndarray:
    """Exact pairwise Shapley interactions (SII) of (text player, image player) pairs of a game
    whose value factorises over the two sides' coalitions.

    For a dual encoder the value of a coalition ``T ∪ R`` is ``f(T, R) = sim(e_text(T),
    e_image(R))``, so all ``2^(a+b)`` values come from ``2^a`` text and ``2^b`` image embeddings.
    ``SII_ij = Σ_{S ⊆ N∖{i,j}} (n−|S|−2)! |S|! / (n−1)! · Δ_ij(S)`` is then summed side by side
    (grouping text coalitions by size), without enumerating the ``2^(a+b)`` coalitions. Equal to
    shapiq's ``ExactComputer(...)("SII", order=2)`` on the same game (tested).

    Args:
        table: ``[2^a, 2^b]`` values; row = bitmask of the text players present (bit ``i`` =
            player ``i``), column = bitmask of the image players present.

    Returns:
        ``[a, b]`` interactions.
    """
    from math import factorial

    nt, ni = table.shape
    a, b = nt.bit_length() - 1, ni.bit_length() - 1
    if 1 << a != nt or 1 << b != ni or a < 1 or b < 1:
        raise InvalidInputError(f"table shape {table.shape} is not [2^a, 2^b] with a, b >= 1")
    n = a + b
    w = np.array([factorial(n - s - 2) * factorial(s) / factorial(n - 1) for s in range(n - 1)])
    pop_t = np.array([bin(t).count("1") for t in range(nt)])
    pop_r = np.array([bin(r).count("1") for r in range(ni)])
    out = np.zeros((a, b))
    for i in range(a):
        t0 = np.array([t for t in range(nt) if not t >> i & 1])
        d = table[t0 | (1 << i)] - table[t0]  # [2^(a-1), 2^b]
        onehot = np.zeros((a, len(t0)))
        onehot[pop_t[t0], np.arange(len(t0))] = 1.0
        acc = onehot @ d  # [a, 2^b]: summed over text coalitions of each size
        for j in range(b):
            r0 = np.array([r for r in range(ni) if not r >> j & 1])
            e = acc[:, r0 | (1 << j)] - acc[:, r0]  # [a, 2^(b-1)]
            weights = w[np.arange(a)[:, None] + pop_r[r0][None, :]]
            out[i, j] = float((e * weights).sum())
    return out


@dataclass
class CrossCheck:
    """Result of one Shapley cross-check.

    Attributes:
        words: The word players.
        shapley: ``[words, regions]`` Shapley interactions.
        dualex: Per dualex split layer (``"L0"``, ``"L1"``, ...), the ``[words, regions]``
            aggregated interactions.
        spearman: Per layer, the rank correlation of ``dualex[layer]`` with ``shapley``.
        exact: Whether the interactions were computed exactly.
        self_spearman: Rank correlation of two independent approximations (different seeds): the
            ceiling the approximation noise allows (``nan`` when exact or not asked for).
        grid: Regions per side.
    """

    words: list[str]
    shapley: np.ndarray
    dualex: dict[str, np.ndarray]
    spearman: dict[str, float]
    exact: bool
    self_spearman: float
    grid: int


def clip_crosscheck(
    model: Any,
    caption: str,
    image: Any,
    *,
    grid: int = 4,
    budget: int = 4096,
    steps: int | None = None,
    layers: Sequence[int | None] = (None,),
    reference: Any = ("pad", "zeros"),
    repeat: bool = False,
    method: str = "factorised",
    batch: int = 512,
    seed: int = 0,
) -> CrossCheck:
    """Shapley cross-check of one caption–image pair (see module docstring).

    dualex runs with the game's own references by default (``"pad"``: every word replaced by
    the filler token in place; ``"zeros"``: the mean image), so the empty coalition is exactly
    dualex's reference input and the grand coalition its input.

    Args:
        model: An image–text dual encoder (any model :func:`dualex.wrap` accepts).
        caption: The caption.
        image: The image.
        grid: Regions per side (``grid × grid`` image players).
        budget: Coalitions for the approximator (when not exact).
        steps: dualex quadrature nodes (``None``: adaptive).
        layers: dualex split layers to compare (``None``: the last block's input).
        reference: dualex reference (text, image).
        repeat: Approximate twice with different seeds and report their agreement.
        method: ``"factorised"``: exact SII from the side-wise value table when it has at most
            :data:`FACTORISED_MAX` entries (else shapiq); ``"shapiq"``: shapiq's ExactComputer
            up to :data:`EXACT_MAX` players, its KernelSHAPIQ approximator beyond.
        batch: Coalitions per forward pass.
        seed: Approximator seed.

    Returns:
        A :class:`CrossCheck`.
    """
    import dualex

    model = dualex.wrap(model)
    aggs: dict[str, np.ndarray] = {}
    words: list[str] = []
    regions: list[list[int]] = []
    for layer in layers:
        ex = dualex.explain(model, caption, image, layers=layer, steps=steps, reference=reference)
        m, text, pos = ex.text_image()
        words, w_rows = word_groups(text)
        regions = region_groups(pos.grid, grid, prefix=pos.prefix)
        aggs[f"L{ex.layers[1]}"] = aggregate(m, w_rows, regions)

    game = PairGame(
        model,
        image,
        caption,
        grid=(grid, grid),
        batch_size=batch,
        image_reference="zeros",
        text_groups=w_rows,
    )
    nw = game.n_text
    value = game.value
    nr = len(regions)
    if method == "factorised" and (1 << (nw + nr)) <= FACTORISED_MAX:
        shap, exact = (
            factorised_sii(game.value_table(all_coalitions(nw), all_coalitions(nr))),
            True,
        )
    elif method in ("factorised", "shapiq"):
        shap, exact = pairwise_interactions(value, nw, nr, budget=budget, seed=seed)
    else:
        raise SettingError(f"unknown method {method!r}; use 'factorised' or 'shapiq'")
    self_rho = float("nan")
    if repeat and not exact:
        again, _ = pairwise_interactions(value, nw, len(regions), budget=budget, seed=seed + 10_000)
        self_rho = rank_correlation(shap, again)
    return CrossCheck(
        words=words,
        shapley=shap,
        dualex=aggs,
        spearman={k: rank_correlation(shap, v) for k, v in aggs.items()},
        exact=exact,
        self_spearman=self_rho,
        grid=grid,
    )
