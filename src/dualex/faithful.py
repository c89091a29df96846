r"""Faithful second-order explanations: cross-modal weighted Banzhaf interactions, per input.

The game of a (text, image) pair: the players are the text's tokens and the image's regions, the
value of a coalition the model's score with the absent players masked (:mod:`dualex.masking`).
With every player present independently with probability ``p`` and ``x_k = s_k − p``, the
weighted Banzhaf interaction of a token ``i`` and a region ``j`` is the coefficient of
``x_i x_j`` in the ``Bern(p)``-orthogonal expansion of the value
(:mod:`dualex.evaluate.methods.banzhaf` derives it).

**Per-input terms.** The value factorises, ``v(T, R) = ê_t(T) · ê_i(R)`` (the masked text's and
image's embeddings, unit length for a cosine model), and the two sides are independent. So each
input alone is fitted once, by its tower, as

    ê(S) ≈ c + Σ_k x_k B[k]          c: [E],  B: [n, E]

(``c = E[ê(S)]`` and ``B[k] = E[x_k ê(S)] / (p(1 − p))``: the order-0 and order-1 terms of the
embedding's own expansion), and any pair is a matrix product:

    I = B_t B_iᵀ,   b_text = B_t c_i,   b_image = B_i c_t,   e = c_t · c_i.

n texts × m images cost n + m fits, like :func:`dualex.project`'s projections.

**Fits.** A side whose ``2^n`` coalitions fit its share of the budget is enumerated, with
weights ``p^|S| (1 − p)^(n−|S|)``: ``c`` and ``B`` are then exact. Otherwise ``K`` coalitions
are drawn from ``Bern(p)^n`` and ``c, B`` are estimated by

* ``"regression"`` (default): least squares of the ``K`` embeddings on ``[1, x]`` (all ``E``
  dimensions at once), ridge-regularised with ``λ`` chosen by generalised cross-validation
  (:func:`fit_side`; it also works with fewer coalitions than players). Fitting all players
  jointly removes the other players' main effects from each coefficient's noise;
* ``"sign"``: the sign-weighted Monte-Carlo average ``B[k] = Σ_a (s_ak − s̄_k) ê_a /
  ((K − 1) p(1 − p))`` (FIxLIP-like sampling; unbiased, noisier).

**Sampling error.** Each sampled side is also fitted on the two halves of its coalitions; the
pair's two half-sample matrices ``I₁, I₂`` give the relative standard error of ``I`` as
``‖I₁ − I₂‖_F / (2 ‖I‖_F)`` (a half has twice the variance of the whole, so
``E‖I₁ − I₂‖² ≈ 4 Var(I)``); it is 0 when both sides are enumerated.

**Coalition prediction.** Truncating the expansion after the cross-modal pairs and multiplying
out ``x = s − p`` gives a sum over the players present (the terms an :class:`Explanation` of
method ``"banzhaf"`` keeps):

    v̂(S) = constant + Σ_{text i ∈ S} first_text(i) + Σ_{image j ∈ S} first_image(j)
           + Σ_{i, j ∈ S} I(i, j)
    constant = e − p Σ b + p² Σ I,   first_text(i) = b(i) − p Σ_j I(i, j)  (likewise images).

A region's terms are spread evenly over its patches' columns and a token group's over its rows,
so the explanation's matrix sums back to ``I`` and ``v̂`` is a sum over the present positions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dualex.errors import SettingError
from dualex.masking import (
    TEXT_ABSENT,
    ImageMasker,
    TextMasker,
    all_coalitions,
    model_device,
    require_text_image,
)

__all__ = [
    "DEFAULT_BUDGET",
    "ESTIMATORS",
    "MAX_BUDGET",
    "METHODS",
    "MIN_BUDGET",
    "BanzhafProjection",
    "BanzhafProjections",
    "Design",
    "SideFit",
    "check_budget",
    "check_settings",
    "design",
    "fit_side",
    "pair_explanation",
    "project_banzhaf",
]

METHODS = ("dualex", "banzhaf")
"""The explanation methods of :func:`dualex.explain` and :func:`dualex.project`."""

ESTIMATORS = ("regression", "sign")
"""Estimators of a sampled side (see the module docstring)."""

MIN_BUDGET = 16
"""Fewest model evaluations a pair may use (at least two coalitions per side)."""

MAX_BUDGET = 2**22
"""Most model evaluations per pair."""

DEFAULT_BUDGET = 2048
"""Default budget of the user-facing ``banzhaf`` method: tower passes per pair."""


@dataclass
class Design:
    """One side's coalitions and the weights that turn sums over them into expectations.

    Attributes:
        coalitions: ``[K, n]`` bool.
        weights: ``[K]`` summing to 1.
        centred: ``[K, n]`` float64 ``x̃`` (enumerated: ``s − p``; sampled: ``(s − s̄) K/(K−1)``).
        exact: Whether the coalitions are every coalition (exact expectations).
    """

    coalitions: np.ndarray
    weights: np.ndarray
    centred: np.ndarray
    exact: bool


def design(n: int, k: int, p: float, rng: np.random.Generator | None = None) -> Design:
    """``k`` coalitions of ``n`` players drawn from ``Bern(p)^n``, or all ``2^n`` when they fit.

    Args:
        n: Players.
        k: Coalitions wanted (``≥ 2`` when sampled).
        p: Probability of each player being present.
        rng: Random generator for sampling (``None``: seed 0).
    """
    if (1 << n) <= k:
        s = all_coalitions(n)
        size = s.sum(1)
        w = p**size * (1.0 - p) ** (n - size)
        return Design(s, w, s - p, exact=True)
    if k < 2:
        raise SettingError(f"need at least 2 sampled coalitions of {n} players, got {k}")
    rng = rng if rng is not None else np.random.default_rng(0)
    return sampled_design(rng.random((k, n)) < p)


def sampled_design(s: np.ndarray) -> Design:
    """The :class:`Design` of given i.i.d. coalitions ``s [K, n]`` (``K ≥ 2``)."""
    k = len(s)
    centred = (s - s.mean(0)) * (k / (k - 1))
    return Design(s, np.full(k, 1.0 / k), centred, exact=False)


@dataclass
class SideFit:
    """One side's order-0 and order-1 terms: ``ê(S) ≈ mean + Σ_k (s_k − p) slopes[k]``.

    Attributes:
        mean: ``[E]`` (``E[ê(S)]``).
        slopes: ``[n, E]``.
        ridge: The ridge ``λ`` used (0 for exact fits and the sign estimator).
    """

    mean: np.ndarray
    slopes: np.ndarray
    ridge: float = 0.0


RIDGE_GRID = np.concatenate([[0.0], np.logspace(-4, 2, 25)])
"""Ridge ``λ`` candidates, relative to ``K p (1 − p)`` (the diagonal of ``XᵀX``)."""


def fit_side(
    d: Design,
    values: np.ndarray,
    p: float,
    estimator: str = "regression",
    ridge: float | None = None,
) -> SideFit:
    """Fit one side's terms from its coalitions' values (see the module docstring).

    Enumerated designs are fitted exactly (both estimators). A sampled design with
    ``estimator="regression"`` is fitted by ridge least squares on the sample-centred presences;
    ``λ`` (relative to ``K p(1−p)``) minimises the generalised cross-validation score over
    :data:`RIDGE_GRID` (``λ = 0`` only when the design has full rank). On the built-in model's
    masking game GCV alone beat a floor of ``(n + 1)/K`` below ``2(n + 1)`` coalitions (R² on
    ``Bern(½)`` coalitions 0.64 vs 0.47 at 32 coalitions per input; docs/results.md).

    Args:
        d: The side's coalitions.
        values: ``[K, E]`` values (embeddings) of the coalitions, float64.
        p: Presence probability.
        estimator: ``"regression"`` or ``"sign"``.
        ridge: Use this ``λ`` (absolute) instead of choosing one (regression only).

    Returns:
        The :class:`SideFit`.
    """
    Y = np.asarray(values, dtype=np.float64)
    q = p * (1.0 - p)
    if d.exact or estimator == "sign":
        w = d.weights
        return SideFit(w @ Y, (d.centred * w[:, None]).T @ Y / q)
    if estimator != "regression":
        raise SettingError(f"estimator={estimator!r}; use one of {ESTIMATORS}")
    s = d.coalitions.astype(np.float64)
    K, n = s.shape
    s_bar, y_bar = s.mean(0), Y.mean(0)
    X, Yc = s - s_bar, Y - y_bar
    U, sv, Vt = np.linalg.svd(X, full_matrices=False)
    UtY = U.T @ Yc  # [r, E]
    proj = (UtY**2).sum(1)  # energy along each singular direction
    rest = float((Yc**2).sum() - proj.sum())
    scale = K * q
    best, best_lam = (0.0, float(ridge)) if ridge is not None else (math.inf, 0.0)
    for rel in RIDGE_GRID if ridge is None else ():
        lam = rel * scale
        if lam == 0.0 and (sv.min(initial=math.inf) < 1e-9 * math.sqrt(scale) or n + 1 >= K):
            continue  # singular without a ridge
        shrink = sv**2 / (sv**2 + lam)
        df = float(shrink.sum()) + 1.0
        if df >= K:
            continue
        rss = float(((1.0 - shrink) ** 2 * proj).sum()) + rest
        gcv = K * rss / (K - df) ** 2
        if gcv < best:
            best, best_lam = gcv, lam
    if not math.isfinite(best):
        best_lam = scale
    coef = sv / (sv**2 + best_lam)
    slopes = Vt.T @ (coef[:, None] * UtY)  # [n, E]
    mean = y_bar - (s_bar - p) @ slopes
    return SideFit(mean, slopes, float(best_lam))


def check_budget(budget: Any, p: Any = 0.5) -> None:
    """Refuse a coalition budget outside [:data:`MIN_BUDGET`, :data:`MAX_BUDGET`] or a presence
    probability outside (0, 1) (a :class:`SettingError`); every banzhaf entry point uses it."""
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise SettingError(f"budget={budget!r}; give an int in [{MIN_BUDGET}, {MAX_BUDGET}]")
    if not MIN_BUDGET <= budget <= MAX_BUDGET:
        raise SettingError(
            f"budget={budget} model evaluations is out of range; use {MIN_BUDGET} to "
            f"{MAX_BUDGET} (2^{int(math.log2(MAX_BUDGET))})"
        )
    if isinstance(p, bool) or not (isinstance(p, float | int) and 0.0 < float(p) < 1.0):
        raise SettingError(f"p={p!r}; the presence probability must lie strictly in (0, 1)")


def check_settings(
    method: Any, budget: Any, p: Any, masking: Any, estimator: Any, seed: Any
) -> None:
    """Refuse an unknown method or banzhaf settings out of range (a :class:`SettingError`)."""
    if method not in METHODS:
        raise SettingError(f"method={method!r}; use one of {', '.join(map(repr, METHODS))}")
    check_budget(budget, p)
    if masking not in TEXT_ABSENT:
        raise SettingError(f"masking={masking!r}; use one of {', '.join(map(repr, TEXT_ABSENT))}")
    if estimator not in ESTIMATORS:
        raise SettingError(
            f"estimator={estimator!r}; use one of {', '.join(map(repr, ESTIMATORS))}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SettingError(f"seed={seed!r}; give a non-negative int")


@dataclass
class BanzhafProjection:
    """One input's fitted terms through one tower; any pair is a matrix product.

    Attributes:
        fit: The terms over players (:class:`SideFit`).
        halves: The same fitted on each half of the coalitions (``None`` when enumerated).
        spread: ``[n, S]``: each player's share of each position (rows sum to 1).
        embedding: ``[E]`` the unmasked input's embedding (unit length for a cosine model).
        empty_embedding: ``[E]`` the embedding with every player absent.
        positions: Metadata of the S positions.
        coalitions: Coalitions fitted (tower passes, the two ends excluded).
        exact: Whether every coalition was enumerated.
        seconds: Time taken.
        raw: The original input, kept for display.
    """

    fit: SideFit
    halves: tuple[SideFit, SideFit] | None
    spread: Tensor
    embedding: Tensor
    empty_embedding: Tensor
    positions: Any
    coalitions: int
    exact: bool
    seconds: float
    raw: Any = None


def _side_budget(budget: int) -> int:
    return budget // 2


def _project_side(
    masker: TextMasker | ImageMasker,
    columns: list[list[int]],
    n_positions: int,
    budget: int,
    p: float,
    estimator: str,
    rng: np.random.Generator,
    raw: Any,
) -> BanzhafProjection:
    t0 = time.perf_counter()
    n = masker.n
    d = design(n, _side_budget(budget), p, rng)
    ends = np.array([[True] * n, [False] * n])
    emb = masker.embeddings(np.concatenate([ends, d.coalitions])).numpy()
    Y = emb[2:]
    fit = fit_side(d, Y, p, estimator)
    halves = None
    if not d.exact:
        h = len(Y) // 2
        halves = (
            fit_side(sampled_design(d.coalitions[:h]), Y[:h], p, estimator),
            fit_side(sampled_design(d.coalitions[h:]), Y[h:], p, estimator),
        )
    spread = torch.zeros(n, n_positions, dtype=torch.float64)
    for k, group in enumerate(columns):
        spread[k, group] = 1.0 / len(group)
    return BanzhafProjection(
        fit=fit,
        halves=halves,
        spread=spread,
        embedding=torch.from_numpy(emb[0]),
        empty_embedding=torch.from_numpy(emb[1]),
        positions=masker.positions,
        coalitions=len(d.weights),
        exact=d.exact,
        seconds=time.perf_counter() - t0,
        raw=raw,
    )


def _seed_rng(seed: int, side: int) -> np.random.Generator:
    """Each side's coalitions come from ``(seed, side)`` alone, so an input gets the same
    coalitions (and terms) whatever it is paired with."""
    return np.random.default_rng([int(seed), side])


def project_banzhaf(
    model: Any,
    texts: Sequence[Any],
    images: Sequence[Any],
    *,
    budget: int = DEFAULT_BUDGET,
    p: float = 0.5,
    masking: str = "reference",
    estimator: str = "regression",
    seed: int = 0,
    grid: tuple[int, int] | None = None,
    scale: bool = False,
    batch_size: int = 32,
    progress: Any = None,
) -> BanzhafProjections:
    """Fit the per-input Banzhaf terms of many texts and images (see the module docstring).

    Args:
        model: A wrapped image–text :class:`dualex.DualEncoder`.
        texts: Texts.
        images: Images.
        budget: Tower passes per pair: each input gets ``budget // 2`` coalitions (all ``2^n``
            when they fit), plus two passes for its full and empty versions.
        p: Probability of each player being present (``0.5``: Banzhaf interactions).
        masking: How an absent token is masked: ``"reference"``, ``"remove"`` or
            ``"attention"`` (:mod:`dualex.masking`).
        estimator: ``"regression"`` or ``"sign"``.
        seed: Sampling seed.
        grid: Regions of patches (``None``: patches up to 64, else at most 8 × 8 regions).
        scale: Multiply every term by the model's logit scale.
        batch_size: Masked inputs per forward pass.
        progress: A tqdm-like bar to ``update(1)`` per input, or ``None``.

    Returns:
        :class:`BanzhafProjections`.
    """
    check_settings("banzhaf", budget, p, masking, estimator, seed)
    require_text_image(model, "method='banzhaf'", "; use method='dualex'")
    ta, tb = model.tower_a, model.tower_b
    p = float(p)
    opts = dict(
        normalize=model.similarity == "cosine", batch_size=batch_size, device=model_device(model)
    )
    out_t, out_i = [], []
    with model.session():
        for x in texts:
            m = TextMasker(ta, x, absent=masking, **opts)
            out_t.append(
                _project_side(
                    m, m.groups, len(m.positions), budget, p, estimator, _seed_rng(seed, 0), x
                )
            )
            if progress is not None:
                progress.update(1)
        for x in images:
            im = ImageMasker(tb, x, grid=grid, **opts)
            pre = im.positions.prefix
            cols = [[pre + j for j in g] for g in im.groups]
            out_i.append(
                _project_side(
                    im, cols, len(im.positions), budget, p, estimator, _seed_rng(seed, 1), x
                )
            )
            if progress is not None:
                progress.update(1)
        logit_scale = model.current_logit_scale() if scale else None
    settings = {
        "budget": int(budget),
        "p": p,
        "masking": masking,
        "estimator": estimator,
        "seed": int(seed),
        "grid": None if grid is None else [int(grid[0]), int(grid[1])],
    }
    return BanzhafProjections(
        model=model,
        a=out_t,
        b=out_i,
        scale=scale,
        logit_scale=logit_scale,
        settings=settings,
    )


def _cross(ta: SideFit, ti: SideFit) -> np.ndarray:
    return ta.slopes @ ti.slopes.T


def pair_explanation(
    model: Any,
    a: BanzhafProjection,
    b: BanzhafProjection,
    p: float,
    settings: dict[str, Any],
    logit_scale: float | None = None,
) -> Any:
    """The :class:`dualex.Explanation` (method ``"banzhaf"``) of one text and one image."""
    from dualex.engine.interactions import Completeness
    from dualex.explanation import Explanation

    fa, fb = a.fit, b.fit
    inter = _cross(fa, fb)  # [n_a, n_b]
    b_a, b_b = fa.slopes @ fb.mean, fb.slopes @ fa.mean
    e = float(fa.mean @ fb.mean)
    constant = e - p * (b_a.sum() + b_b.sum()) + p * p * inter.sum()
    first_a = b_a - p * inter.sum(1)
    first_b = b_b - p * inter.sum(0)
    k = 1.0 if logit_scale is None else float(logit_scale)
    matrix = k * (a.spread.T @ torch.from_numpy(inter) @ b.spread)
    fo_a = k * (a.spread.T @ torch.from_numpy(first_a))
    fo_b = k * (b.spread.T @ torch.from_numpy(first_b))
    score = k * float(a.embedding @ b.embedding)
    empty = k * float(a.empty_embedding @ b.empty_embedding)
    predicted = k * float(constant + first_a.sum() + first_b.sum() + inter.sum())
    if a.halves is None and b.halves is None:
        sampling = 0.0
    else:
        ha = a.halves or (fa, fa)
        hb = b.halves or (fb, fb)
        diff = _cross(ha[0], hb[0]) - _cross(ha[1], hb[1])
        norm = float(np.linalg.norm(inter))
        sampling = float(np.linalg.norm(diff)) / (2.0 * norm) if norm > 0 else 0.0
    side_err = []
    for side in (a, b):
        if side.halves is None:
            side_err.append(0.0)
        else:
            d = side.halves[0].slopes - side.halves[1].slopes
            nrm = float(np.linalg.norm(side.fit.slopes))
            side_err.append(float(np.linalg.norm(d)) / (2.0 * nrm) if nrm > 0 else 0.0)
    gap = abs(score - predicted)
    comp = Completeness(
        score=score,
        reference_terms=(k * float(constant), float(fo_a.sum()), float(fo_b.sum())),
        attribution_sum=float(matrix.sum()),
        absolute_error=gap,
        relative_error=gap / abs(score) if score != 0 else gap,
        tower_errors=(side_err[0], side_err[1]),
        steps=(a.coalitions, b.coalitions),
        rule="banzhaf",
        scaled=logit_scale is not None,
        logit_scale=logit_scale,
    )
    info = dict(settings)
    info.update(
        sampling_error=sampling,
        empty_value=empty,
        predicted_value=predicted,
        coalitions=[a.coalitions, b.coalitions],
        exact=bool(a.exact and b.exact),
        ridge=[fa.ridge, fb.ridge],
        seconds=a.seconds + b.seconds,
    )
    return Explanation(
        matrix=matrix,
        a=a.positions,
        b=b.positions,
        completeness=comp,
        layers=(0, 0),
        model=model.name,
        raw_a=a.raw,
        raw_b=b.raw,
        weights=model.weights,
        method="banzhaf",
        settings=info,
        first_order_a=fo_a,
        first_order_b=fo_b,
    )


@dataclass
class BanzhafProjections:
    """Fitted per-input Banzhaf terms of many inputs; any pair is one matrix product.

    The counterpart of :class:`dualex.Projections` for ``method="banzhaf"``.

    Attributes:
        model: The dual encoder.
        a: Per-text terms.
        b: Per-image terms.
        scale: Whether scores include the logit scale.
        logit_scale: The model's logit scale when the terms were fitted (if ``scale``).
        settings: ``budget``, ``p``, ``masking``, ``estimator``, ``seed``, ``grid``.
    """

    model: Any
    a: list[BanzhafProjection]
    b: list[BanzhafProjection]
    scale: bool = False
    logit_scale: float | None = None
    settings: dict[str, Any] | None = None

    def explanation(self, i: int, j: int) -> Any:
        """The :class:`dualex.Explanation` of pair ``(a[i], b[j])``, equal to
        ``dualex.explain(..., method="banzhaf")``'s with the same settings."""
        st = dict(self.settings or {})
        return pair_explanation(
            self.model,
            self.a[i],
            self.b[j],
            float(st.get("p", 0.5)),
            st,
            self.logit_scale if self.scale else None,
        )

    def matrix(self, i: int, j: int) -> Tensor:
        """Interaction matrix ``[S_a, S_b]`` of pair ``(a[i], b[j])``."""
        return self.explanation(i, j).matrix

    def scores(self) -> Tensor:
        """Model scores of every pair, ``[len(a), len(b)]``."""
        ea = torch.stack([x.embedding for x in self.a])
        eb = torch.stack([x.embedding for x in self.b])
        s = ea @ eb.T
        if self.scale and self.logit_scale is not None:
            s = s * self.logit_scale
        return s
