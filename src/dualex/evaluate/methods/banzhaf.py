r"""``banzhaf``: sampled cross-modal weighted Banzhaf interactions (in the spirit of FIxLIP).

The game is :class:`dualex.evaluate.game.PairGame`: players are the text's tokens and the image's
regions, a coalition's value the model's score with the absent players masked.

**Index.** With every player present independently with probability ``p`` (``S ~ Bern(p)^n``),
the weighted Banzhaf interaction of a pair ``{i, j}`` and value of a player ``i`` are

    I(i, j) = E_S[ v(S ∪ ij) − v(S ∪ i) − v(S ∪ j) + v(S) ]      (S over the other players)
    b(i)    = E_S[ v(S ∪ i) − v(S) ],       e = E_S[ v(S) ]

(``p = 1/2``: the Banzhaf interaction index, shapiq's ``"BII"``.)

**Sign-weighting identity.** Write ``x_k = s_k − p`` for player ``k``'s presence ``s_k ∈ {0, 1}``
and ``q = p(1 − p)``. Conditioning on the other players and summing the four cases of
``(s_i, s_j)`` (probabilities ``p², p(1−p), (1−p)p, (1−p)²``; weights ``x_i x_j = (1−p)²,
−p(1−p), −p(1−p), p²``) gives ``E[x_i x_j v(S)] = q² E[Δ_ij]``, and likewise for one player, so

    I(i, j) = E[x_i x_j v(S)] / q²,     b(i) = E[x_i v(S)] / q,     e = E[v(S)].

Every sampled coalition thus informs every pair. These are the coefficients of ``v``'s expansion
in the ``p``-biased orthogonal basis ``Π_{k∈T} x_k``; adding a constant to ``v`` leaves the
order ≥ 1 terms unchanged (``E[x_k] = 0``).

**Cross-modal design.** The value factorises, ``v(T, R) = ê_t(T) · ê_i(R)`` (text and image
embeddings, unit length for a cosine model), and the two sides are independent under
``Bern(p)^n``. So the estimator samples ``K_t`` text coalitions and ``K_i`` image coalitions
(``K_t + K_i`` tower passes), and uses all ``K_t · K_i`` pairs of them:

    G_t = Σ_a w_a x̃_a ⊗ ê_t(a)   [n_t, E]     m_t = Σ_a w_a ê_t(a)   [E]
    G_i = Σ_b w_b x̃_b ⊗ ê_i(b)   [n_i, E]     m_i = Σ_b w_b ê_i(b)   [E]
    I = G_t G_iᵀ / q²,   b_text = G_t m_i / q,   b_image = G_i m_t / q,   e = m_t · m_i

A side with ``2^n ≤`` its share of the budget is enumerated: every coalition, weight
``w = p^|S| (1 − p)^(n−|S|)``, ``x̃ = s − p`` (exact expectations). Otherwise its coalitions are
sampled i.i.d., ``w = 1/K`` and ``x̃ = (s − s̄) · K/(K − 1)`` (centred by the sample mean): centring
removes each side's main effect from the other's noise, and the factor ``K/(K − 1)`` makes it
exactly unbiased: ``Σ_a (s_a − s̄) g_a / (K − 1) = Σ_a (g_a − ḡ_{−a}) x_a / K`` with ``ḡ_{−a}``
the mean of the other samples' values, which is independent of sample ``a``, and
``E[x_a] = 0``. Each factor is unbiased and the sides are independent, so ``I``,
``b_text``, ``b_image`` and ``e`` are unbiased; when both sides are enumerated they are exact.
That is the ``"sign"`` estimator. The default, ``"regression"``, fits each sampled side's
``m`` and ``G / q`` jointly by ridge least squares on the same coalitions
(:func:`dualex.faithful.fit_side`): each player's coefficient is then freed of the other
players' main effects, which the sign-weighted average leaves in as noise. It is biased by
``O(1/K)`` (far below its noise) and, on the built-in model, 2–4× less noisy at equal
coalitions (docs/results.md); enumerated sides are exact either way.

**Budget.** ``budget`` counts model evaluations for the sampled coalitions: tower forward passes,
``K_t + K_i``. A side is enumerated when ``2^n`` fits (the text first, when ``2^n_t ≤
budget / 2``); otherwise the budget is split with ``K_t / K_i = (n_t / n_i)^{1/3}`` (which
balances the two sides' sampling noise in an interaction estimate). The image coalitions are
sampled and encoded once for every text of a call. Two more passes per side give ``v(full)``
(the score) and ``v(∅)``.

**Coalition predictions.** Truncating the orthogonal expansion after the cross-modal pairs,
``v̂(S) = e + Σ_k b(k) x_k + Σ_{i text, j image} I(i, j) x_i x_j`` (the ``Bern(p)``-weighted
least-squares best fit by a constant, one term per player and one per cross-modal pair),
and multiplying out ``x = s − p``, gives a sum over the players present:

    v̂(S) = constant + Σ_{i∈S text} first_text(i) + Σ_{j∈S image} first_image(j)
           + Σ_{i∈S text, j∈S image} I(i, j),
    constant      = e − p Σ_k b(k) + p² Σ_ij I(i, j)
    first_text(i) = b(i) − p Σ_j I(i, j),     first_image(j) = b(j) − p Σ_i I(i, j).

For a game that is exactly of this form (e.g. a dot product of embeddings that are sums of
per-player parts) ``v̂ = v``, ``constant = v(∅)`` and the first-order terms are the Möbius terms.

**Matrix.** ``Attribution.matrix [S_text, S_image]`` has ``I`` at each token's row; a region's
interaction (and first-order term) is spread evenly over its patches' columns, so summing a
region's columns gives back ``I``. Special-token rows and CLS / prefix columns are zero. With
positions present (a region present when its patches are), the prediction is

    v̂ = extra["constant"] + Σ_{rows present} extra["first_order_text"]
        + Σ_{cols present} extra["first_order_image"] + Σ matrix[rows present][:, cols present].
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualex.errors import SettingError
from dualex.evaluate.game import PairGame, all_coalitions
from dualex.evaluate.methods.base import (
    Attribution,
    Method,
    UnsupportedMethodError,
    needs_image_tower,
)
from dualex.faithful import (
    ESTIMATORS,
    Design,
    SideFit,
    check_budget,
    design,
    fit_side,
    sampled_design,
)
from dualex.towers.registry import image_families_text

__all__ = [
    "MAX_BUDGET",
    "METHOD",
    "METHODS",
    "MIN_BUDGET",
    "BanzhafTerms",
    "Design",
    "banzhaf",
    "check_budget",
    "cross_banzhaf",
    "design",
    "estimate",
    "split_budget",
]

MIN_BUDGET = 16
"""Fewest model evaluations a call may use (at least two coalitions per side)."""

MAX_BUDGET = 2**22
"""Most model evaluations per text."""


def split_budget(budget: int, n_text: int, n_image: int) -> tuple[int, int]:
    """Text and image coalitions ``(K_t, K_i)`` for a budget of ``K_t + K_i`` evaluations.

    A side whose ``2^n`` coalitions fit is enumerated (the text when ``2^n_t ≤ budget / 2``);
    otherwise ``K_t / K_i = (n_t / n_i)^{1/3}``, each side at least 2.
    """
    if (1 << n_text) <= budget // 2:
        k_t = 1 << n_text
    else:
        r = (n_text / n_image) ** (1.0 / 3.0)
        k_t = min(max(2, round(budget * r / (1.0 + r))), budget - 2)
    k_i = budget - k_t
    if (1 << n_image) <= k_i:
        k_i = 1 << n_image
    return k_t, k_i


@dataclass
class BanzhafTerms:
    """Weighted Banzhaf terms of a game with text and image players (see the module docstring).

    Attributes:
        interactions: ``[n_t, n_i]`` ``I(i, j)``.
        banzhaf_text: ``[n_t]`` ``b(i)``.
        banzhaf_image: ``[n_i]`` ``b(j)``.
        expected: ``e = E[v(S)]``.
        constant: Order-0 term of the coalition prediction.
        first_text: ``[n_t]`` first-order prediction terms.
        first_image: ``[n_i]`` first-order prediction terms.
        p: Presence probability.
        text_coalitions: ``K_t``.
        image_coalitions: ``K_i``.
        exact: Whether both sides were enumerated (the terms are then exact).
    """

    interactions: np.ndarray
    banzhaf_text: np.ndarray
    banzhaf_image: np.ndarray
    expected: float
    constant: float
    first_text: np.ndarray
    first_image: np.ndarray
    p: float
    text_coalitions: int
    image_coalitions: int
    exact: bool

    def predict(self, coalitions: np.ndarray) -> np.ndarray:
        """Predicted values ``v̂`` of coalitions ``[K, n_t + n_i]`` (text first) → ``[K]``."""
        c = np.asarray(coalitions, dtype=np.float64)
        nt = len(self.first_text)
        t, i = c[:, :nt], c[:, nt:]
        return (
            self.constant
            + t @ self.first_text
            + i @ self.first_image
            + np.einsum("ki,ij,kj->k", t, self.interactions, i)
        )


def cross_banzhaf(
    text: Design,
    image: Design,
    left: torch.Tensor,
    right: torch.Tensor,
    p: float,
    estimator: str = "sign",
) -> BanzhafTerms:
    """Weighted Banzhaf terms from the values ``left @ right.T`` of every text × image coalition.

    Each side is fitted by :func:`dualex.faithful.fit_side` (exact when enumerated; sampled:
    the sign-weighted average or the ridge regression), and the terms are products of the two
    sides' fits (see the module docstring and :mod:`dualex.faithful`).

    Args:
        text: The text coalitions (``K_t``).
        image: The image coalitions (``K_i``).
        left: ``[K_t, E]`` (the text embeddings, or a value table ``[K_t, K_i]``).
        right: ``[K_i, E]`` (the image embeddings, or the identity).
        p: Presence probability.
        estimator: ``"sign"`` or ``"regression"``.
    """
    L, R = left.double().cpu().numpy(), right.double().cpu().numpy()
    return _terms(text, image, fit_side(text, L, p, estimator), fit_side(image, R, p, estimator), p)


def _terms(text: Design, image: Design, ft: SideFit, fi: SideFit, p: float) -> BanzhafTerms:
    """The pair's terms from the two sides' fits."""
    inter = ft.slopes @ fi.slopes.T
    b_t, b_i = ft.slopes @ fi.mean, fi.slopes @ ft.mean
    e = float(ft.mean @ fi.mean)
    return BanzhafTerms(
        interactions=inter,
        banzhaf_text=b_t,
        banzhaf_image=b_i,
        expected=e,
        constant=float(e - p * (b_t.sum() + b_i.sum()) + p * p * inter.sum()),
        first_text=b_t - p * inter.sum(1),
        first_image=b_i - p * inter.sum(0),
        p=p,
        text_coalitions=len(text.weights),
        image_coalitions=len(image.weights),
        exact=text.exact and image.exact,
    )


def estimate(
    value_table: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_text: int,
    n_image: int,
    *,
    budget: int = 2**12,
    p: float = 0.5,
    seed: int = 0,
    estimator: str = "regression",
) -> BanzhafTerms:
    """Weighted Banzhaf terms of any game with text and image players.

    Args:
        value_table: ``(text [K_t, n_text], image [K_i, n_image]) -> [K_t, K_i]`` values of
            every text coalition with every image coalition.
        n_text: Text players (first).
        n_image: Image players.
        budget: ``K_t + K_i`` (see :func:`split_budget`).
        p: Presence probability.
        seed: Sampling seed.
        estimator: ``"regression"`` or ``"sign"`` (:func:`dualex.faithful.fit_side`).
    """
    check_budget(budget, p)
    _check_estimator(estimator)
    rng = np.random.default_rng(seed)
    k_t, k_i = split_budget(budget, n_text, n_image)
    dt, di = design(n_text, k_t, p, rng), design(n_image, k_i, p, rng)
    table = torch.as_tensor(np.asarray(value_table(dt.coalitions, di.coalitions)))
    eye = np.eye(len(di.weights))
    # the image side's "embeddings" are the identity (its values are the table's columns): a
    # data-driven ridge is chosen on the table's columns, then applied to the identity
    ridge = fit_side(di, table.numpy().T, p, estimator).ridge
    ft = fit_side(dt, table.numpy(), p, estimator)
    return _terms(dt, di, ft, fit_side(di, eye, p, estimator, ridge=ridge), p)


def _check_estimator(estimator: Any) -> None:
    if estimator not in ESTIMATORS:
        raise SettingError(f"estimator={estimator!r}; use one of {ESTIMATORS}")


def banzhaf(
    model: Any,
    image: Any,
    texts: list[str],
    *,
    budget: int = 2**12,
    p: float = 0.5,
    grid: tuple[int, int] | None = None,
    text_absent: str = "reference",
    seed: int = 0,
    batch_size: int = 32,
    estimator: str = "regression",
) -> list[Attribution]:
    """Cross-modal weighted Banzhaf interactions of each text with the image.

    Args:
        model: An image–text :class:`dualex.DualEncoder` (or any model :func:`dualex.wrap`
            accepts).
        image: The image.
        texts: The texts.
        budget: Model evaluations (tower passes) for each text's sampled coalitions,
            ``K_t + K_i`` (see the module docstring); the image's coalitions are shared by
            every text.
        p: Probability of each player being present (``0.5``: Banzhaf interactions).
        grid: Regions of patches (see :class:`PairGame`; ``None``: patches up to 64, else
            at most 8 × 8 regions).
        text_absent: ``"reference"``, ``"remove"`` or ``"attention"`` (see :class:`PairGame`).
        seed: Sampling seed (each text's coalitions come from ``seed`` and the text's CRC-32,
            so a text gets the same estimate alone or among others).
        batch_size: Masked inputs per forward pass.
        estimator: ``"regression"`` (ridge least squares per side,
            :func:`dualex.faithful.fit_side`; 2–4× less noisy at equal coalitions) or ``"sign"``
            (the sign-weighted Monte-Carlo average).

    Returns:
        One :class:`Attribution` per text: ``matrix [S_text, S_image]`` (score units),
        ``score`` (the unmasked pair's value), ``steps`` (tower passes for this text, the
        shared image passes included), ``extra``: ``constant``, ``first_order_text
        [S_text]``, ``first_order_image [S_image]`` (the coalition prediction), ``terms``
        (:class:`BanzhafTerms` over players), ``game`` (the :class:`PairGame`),
        ``empty_value`` (``v(∅)``), ``coalitions`` (``K_t · K_i``).

    Raises:
        UnsupportedMethodError: for text–text models.
        SettingError: for a budget outside ``[MIN_BUDGET, MAX_BUDGET]`` or ``p ∉ (0, 1)``.
    """
    import dualex

    check_budget(budget, p)
    _check_estimator(estimator)
    t0 = time.perf_counter()
    model = dualex.wrap(model)
    if model.tower_b.modality != "image":
        raise UnsupportedMethodError(
            f"banzhaf masks image regions; {model.name!r} has no image tower (image–text "
            f"families: {image_families_text()})"
        )
    p = float(p)
    games = [
        PairGame(model, image, t, grid=grid, text_absent=text_absent, batch_size=batch_size)
        for t in texts
    ]
    g0 = games[0]
    n_i = g0.n_image
    splits = [split_budget(budget, g.n_text, n_i) for g in games]

    # image side: one enumeration and/or one i.i.d. sample, encoded once for every text
    enum = any((1 << n_i) <= k_i for _, k_i in splits)
    k_max = max((k_i for _, k_i in splits if (1 << n_i) > k_i), default=0)
    shared = design(n_i, k_max, p, np.random.default_rng([seed, 1 << 20])) if k_max else None
    full_empty = np.array([[True] * n_i, [False] * n_i])
    parts = [full_empty]
    if enum:
        parts.append(all_coalitions(n_i))
    if shared is not None:
        parts.append(shared.coalitions)
    e_img = g0.image_embeddings(np.concatenate(parts))
    image_passes = int(e_img.shape[0])
    e_enum = e_img[2 : 2 + (1 << n_i)] if enum else None
    e_shared = e_img[2 + (1 << n_i if enum else 0) :]
    t_shared = time.perf_counter() - t0

    out = []
    for game, (k_t, k_i) in zip(games, splits, strict=True):
        t1 = time.perf_counter()
        if (1 << n_i) <= k_i:
            di, ei = design(n_i, k_i, p), e_enum
        else:
            assert shared is not None
            c = shared.coalitions[:k_i]
            di = sampled_design(c)
            ei = e_shared[:k_i]
        key = zlib.crc32(game.text_positions.text.encode("utf-8"))
        dt = design(game.n_text, k_t, p, np.random.default_rng([seed, key]))
        ends = np.array([[True] * game.n_text, [False] * game.n_text])
        et = game.text_embeddings(np.concatenate([ends, dt.coalitions]))
        terms = cross_banzhaf(dt, di, et[2:], ei, p, estimator)
        score = float(et[0] @ e_img[0])
        empty = float(et[1] @ e_img[1])
        matrix, ft, fi = _spread(game, terms)
        steps = int(et.shape[0]) + 2 + len(di.weights)
        out.append(
            Attribution(
                method="banzhaf",
                image=game.image_positions,
                matrix=matrix,
                text=game.text_positions,
                units="score",
                score=score,
                steps=steps,
                seconds=time.perf_counter() - t1 + t_shared / len(games),
                extra={
                    "constant": terms.constant,
                    "first_order_text": ft,
                    "first_order_image": fi,
                    "terms": terms,
                    "game": game,
                    "empty_value": empty,
                    "coalitions": len(dt.weights) * len(di.weights),
                    "image_passes": image_passes,
                    "p": p,
                    "estimator": estimator,
                },
            )
        )
    return out


def _spread(game: PairGame, terms: BanzhafTerms) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Player terms over positions: ``matrix [S_text, S_image]``, ``[S_text]``, ``[S_image]``."""
    pos = game.image_positions
    S_t, S_i = len(game.text_positions), len(pos)
    rows = torch.zeros(game.n_text, S_t, dtype=torch.float64)  # player → token rows, evenly
    for k, group in enumerate(game.text_groups):
        rows[k, group] = 1.0 / len(group)
    cols = torch.zeros(game.n_image, S_i, dtype=torch.float64)  # region → patch columns, evenly
    for k, group in enumerate(game.image_players):
        cols[k, [pos.prefix + j for j in group]] = 1.0 / len(group)
    inter = torch.from_numpy(terms.interactions)
    matrix = rows.T @ inter @ cols
    ft = rows.T @ torch.from_numpy(terms.first_text)
    fi = cols.T @ torch.from_numpy(terms.first_image)
    return matrix, ft, fi


def _check_settings(settings: Any) -> None:
    check_budget(settings.budget)


_SETTINGS: dict[str, Any] = {
    "text_input": "caption",
    "settings": ("budget", "seed", "text_absent"),
    "check_settings": _check_settings,
}
"""What both estimators declare: whole captions; budget, seed and masking from the run."""

METHOD = Method(
    name="banzhaf",
    order=2,
    summary="sampled cross-modal weighted Banzhaf interactions of tokens and image regions "
    "(FIxLIP-like; Baniecki et al. 2025), per-tower ridge regression; image–text models",
    run=banzhaf,
    check=needs_image_tower("banzhaf"),
    **_SETTINGS,
)
"""The ``banzhaf`` method."""


def _banzhaf_sign(model: Any, image: Any, texts: list[str], **kw: Any) -> list[Attribution]:
    out = banzhaf(model, image, texts, estimator="sign", **kw)
    for a in out:
        a.method = "banzhaf-sign"
    return out


METHODS = {
    "banzhaf": METHOD,
    "banzhaf-sign": Method(
        name="banzhaf-sign",
        order=2,
        summary="banzhaf with the sign-weighted Monte-Carlo estimator (the earlier default)",
        run=_banzhaf_sign,
        check=needs_image_tower("banzhaf-sign"),
        **_SETTINGS,
    ),
}
"""``banzhaf`` and ``banzhaf-sign`` (the same coalitions, the sign-weighted estimator)."""
