"""The faithfulness task: how well does an explanation predict the model on masked inputs?

The model's score of one caption and its image is a cooperative game (:class:`dualex.evaluate.
game.PairGame`): the players are the caption's tokens and the image's patches (or patch groups),
an absent token is replaced by the reference token and an absent patch by the reference image.

**R² on sampled coalitions** (FIxLIP's protocol). Coalitions are drawn two ways: each player
present with probability ½ (Banzhaf-weighted sizes: column ``r2``) and with a size drawn
uniformly from 0..n, then a uniform subset of that size (every size weighted alike, as Shapley
weights the sizes: column ``r2_sizes``). The game is evaluated on each, and each method predicts
the values:

- second-order methods in score units (``dualex``, ``banzhaf``) sum their terms whose players
  are all present: a constant, one first-order term per present token and per present patch,
  and one interaction per present (token, patch) pair. For dualex the terms are those of
  :mod:`dualex.evaluate.methods.dualex_method`: ``v̂(T, P) = c (ē_a + Σ_{i∈T} P_a[:, i]) ·
  (ē_b + Σ_{j∈P} P_b[:, j])``, which equals the model's score when every player is present;
  special tokens and CLS are not players and always present;
- first-order maps (relative units) predict by the sum of the map over the present patches;
  they have no text terms.

``r2`` / ``r2_sizes`` compare the prediction itself with the values (``1 − SS_res / SS_tot``;
only for methods in score units); ``r2_fit`` / ``r2_fit_sizes`` first fit the best affine map
of the prediction (the squared correlation), which every method can be given.

**Insertion / deletion** over the image players, text kept whole: players ranked by the
method's image map (summed per region), inserted into the reference image (or deleted from the
image) in up to 16 equal steps; the curve ``(v − v_none) / (v_all − v_none)`` is averaged over
the fractions ``0, 1/16, ..., 1`` (trapezoid). Higher insertion and lower deletion are better.

Rows keyed by ``(method, sample_id)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dualex.data.types import Sample
from dualex.errors import DualexError
from dualex.evaluate.methods import get
from dualex.evaluate.tasks.common import NAN, TEXT_ABSENT, EvalSettings, base_row

__all__ = [
    "CURVE_STEPS",
    "KEY",
    "LAWS",
    "METRICS",
    "curve_auc",
    "faithfulness_rows",
    "metrics",
    "predict",
    "r_squared",
    "sample_coalitions",
    "summary",
]

KEY = ("method", "sample_id")
"""Columns that identify a faithfulness row."""

METRICS = ("r2", "r2_sizes", "r2_fit", "r2_fit_sizes", "insertion", "deletion")
"""Per-sample metrics of the faithfulness task."""

CURVE_STEPS = 16
"""Most steps of the insertion and deletion curves."""


LAWS = {
    "dualex": (("r2", "banzhaf"), ("r2_sizes", "sizes")),
    "fixlip": (("r2_p30", "bern:0.3"), ("r2_p50", "bern:0.5"), ("r2_p70", "bern:0.7"),
               ("r2_shap", "kernel")),
}  # fmt: skip
"""Per protocol: the coalition laws, each with its R² column (``r2_fit…`` likewise)."""

FIXLIP_COALITIONS = 1000
"""Coalitions per law of the fixlip protocol (FIxLIP's count)."""


def metrics(protocol: str = "dualex") -> tuple[str, ...]:
    """The per-sample metric columns of a protocol's rows."""
    r2 = [name for name, _ in LAWS[protocol]]
    fit = [name.replace("r2", "r2_fit", 1) for name in r2]
    return (*r2, *fit, "insertion", "deletion")


def sample_coalitions(n: int, k: int, rng: np.random.Generator, law: str) -> np.ndarray:
    """``k`` coalitions of ``n`` players, ``bool [k, n]``.

    Args:
        law: ``"banzhaf"`` (each player present with probability ½), ``"bern:P"`` (with
            probability ``P``), ``"sizes"`` (a size uniform in ``0..n``, then a uniform subset
            of that size) or ``"kernel"`` (FIxLIP's KernelSHAP sizes: the empty and the full
            coalition first, then sizes ``s ∈ 1..n−1`` with weight ``∝ (n−1) / (s (n−s))`` and a
            uniform subset of each size).
    """
    if law == "banzhaf":
        return rng.random((k, n)) < 0.5
    if law.startswith("bern:"):
        return rng.random((k, n)) < float(law[5:])
    if law == "kernel":
        out = np.zeros((k, n), dtype=bool)  # row 0: the empty coalition
        if k > 1:
            out[1] = True  # row 1: the full coalition
        if n > 1 and k > 2:
            s = np.arange(1, n)
            w = (n - 1) / (s * (n - s))
            sizes = rng.choice(s, size=k - 2, p=w / w.sum())
            for r, size in enumerate(sizes, start=2):
                out[r, rng.permutation(n)[:size]] = True
        return out
    sizes = rng.integers(0, n + 1, size=k)
    out = np.zeros((k, n), dtype=bool)
    for r, s in enumerate(sizes):
        out[r, rng.permutation(n)[:s]] = True
    return out


def r_squared(y: np.ndarray, yhat: np.ndarray, fit: bool = False) -> float:
    """Coefficient of determination of ``yhat`` for ``y`` (``fit``: after the best affine map).

    Returns:
        ``1 − SS_res / SS_tot``; NaN when ``y`` is constant or a value is not finite.
    """
    y, yhat = np.asarray(y, np.float64), np.asarray(yhat, np.float64)
    if not (np.isfinite(y).all() and np.isfinite(yhat).all()):
        return NAN
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if not ss_tot > 0:
        return NAN
    if fit:
        if float(yhat.std()) == 0.0:
            return 0.0
        r = float(np.corrcoef(y, yhat)[0, 1])
        return r * r
    return 1.0 - float(((y - yhat) ** 2).sum()) / ss_tot


def _player_terms(attr: Any, game: Any) -> tuple[float, np.ndarray, np.ndarray, np.ndarray] | None:
    """Player-level ``(constant, text [n_t], image [n_i], pairs [n_t, n_i])`` of a second-order
    attribution with coalition terms, else ``None``.

    Positions that are not players (special tokens, CLS, padding) are always present: their
    terms, and their interactions with the players, fold into the constant and the players'
    first-order terms.
    """
    extra = attr.extra
    if attr.matrix is None or "constant" not in extra or attr.units != "score":
        return None
    prefix = attr.image.prefix
    m = attr.matrix.detach().double().cpu().numpy()
    ft = np.asarray(extra["first_order_text"], dtype=np.float64).reshape(-1)
    fi = np.asarray(extra["first_order_image"], dtype=np.float64).reshape(-1)
    tp = [int(i) for i in game.text_players]
    groups = [[prefix + int(j) for j in g] for g in game.image_players]
    fixed_t = sorted(set(range(m.shape[0])) - set(tp))
    fixed_i = sorted(set(range(m.shape[1])) - {j for g in groups for j in g})
    c = float(extra["constant"]) + ft[fixed_t].sum() + fi[fixed_i].sum()
    c += m[np.ix_(fixed_t, fixed_i)].sum()
    a = ft[tp] + m[np.ix_(tp, fixed_i)].sum(1)
    b = np.array([fi[g].sum() + m[np.ix_(fixed_t, g)].sum() for g in groups])
    pairs = np.stack([m[tp][:, g].sum(1) for g in groups], axis=1)
    return float(c), a, b, pairs


def _image_scores(attr: Any, game: Any) -> np.ndarray:
    """The method's image map summed per image player, ``[n_image]``."""
    hm = attr.map_for(None).detach().double().cpu().numpy().reshape(-1)
    return np.array([hm[[int(j) for j in g]].sum() for g in game.image_players])


def predict(attr: Any, game: Any, coalitions: np.ndarray) -> tuple[np.ndarray, bool]:
    """A method's prediction of the game's values on coalitions ``bool [K, n_players]``.

    Returns:
        ``(prediction [K], in_score_units)``: the sum of the terms whose players are present
        (second-order methods with coalition terms), else the image map summed over the present
        image players.
    """
    x = np.asarray(coalitions, dtype=np.float64)
    xt, xi = x[:, : game.n_text], x[:, game.n_text :]
    terms = _player_terms(attr, game)
    if terms is None:
        return xi @ _image_scores(attr, game), False
    c, a, b, pairs = terms
    return c + xt @ a + xi @ b + np.einsum("kt,ti,ki->k", xt, pairs, xi), True


def curve_auc(values: np.ndarray, v_none: float, v_all: float) -> float:
    """Mean of the normalised curve ``(v − v_none) / (v_all − v_none)`` (trapezoid over equal
    steps); NaN when ``v_all == v_none``."""
    span = v_all - v_none
    if not abs(span) > 0:
        return NAN
    y = (np.asarray(values, np.float64) - v_none) / span
    return float(((y[1:] + y[:-1]) / 2).mean())


def _curves(game: Any, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insertion and deletion coalitions of the image players in ``order`` (text present)."""
    n = game.n_image
    cuts = sorted({round(n * s / min(CURVE_STEPS, n)) for s in range(min(CURVE_STEPS, n) + 1)})
    ins = np.zeros((len(cuts), game.n_players), dtype=bool)
    dele = np.zeros_like(ins)
    ins[:, : game.n_text] = dele[:, : game.n_text] = True
    for r, c in enumerate(cuts):
        ins[r, game.n_text + order[:c]] = True
        dele[r, game.n_text + order[c:]] = True
    return ins, dele


def faithfulness_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
) -> list[dict[str, Any]]:
    """Rows of every (method, caption) of the samples of one image.

    Each caption's game is evaluated once on ``2 × settings.coalitions`` sampled coalitions and
    the curves' coalitions; every method is scored against those values. First-order methods
    explain the whole caption.

    Returns:
        One dict per (method, sample): ``method, idx, sample_id, image_id, n_text, n_image,
        r2, r2_sizes, r2_fit, r2_fit_sizes, insertion, deletion, seconds, error`` and the
        identity columns.
    """
    from dualex.evaluate.game import PairGame

    rows: list[dict[str, Any]] = []
    protocol = settings.protocol
    laws = LAWS[protocol]
    columns = metrics(protocol)
    # the group's samples share one image: prepared once, for the game and every method
    image = model.tower_b.prepare(group[0][1].image) if group else None
    for idx, s in group:
        base = base_row(s, idx)
        empty = dict(
            base,
            n_text=-1,
            n_image=-1,
            seconds=NAN,
            error="",
            protocol=protocol,
            **dict.fromkeys(columns, NAN),
        )
        try:
            game = PairGame(model, image, s.caption, text_absent=TEXT_ABSENT[protocol])
            rng = np.random.default_rng([settings.seed, zlib.crc32(base["sample_id"].encode())])
            k = settings.coalitions
            coalitions = [sample_coalitions(game.n_players, k, rng, law) for _, law in laws]
            ends = np.zeros((2, game.n_players), dtype=bool)
            ends[:, : game.n_text] = True
            ends[1, game.n_text :] = True
            v = game.value(np.concatenate([*coalitions, ends]))
            v_none, v_all = v[-2:]
            # fixlip: logits minus the empty coalition's value (R² is unchanged by this affine
            # map applied to values and predictions alike; kept so the numbers are FIxLIP's)
            shift, scale = 0.0, 1.0
            if protocol == "fixlip":
                shift = float(game.value(np.zeros((1, game.n_players), dtype=bool))[0])
                scale = float(model.current_logit_scale() or 1.0)
            values = [scale * (v[i * k : (i + 1) * k] - shift) for i in range(len(laws))]
        except DualexError as err:
            rows += [dict(empty, method=m, error=str(err)) for m in settings.methods]
            continue
        for m in settings.methods:
            row = dict(empty, method=m, n_text=game.n_text, n_image=game.n_image)
            try:
                (attr,) = get(m)(model, image, [s.caption], **settings.options(m))
                pred, direct = predict(attr, game, np.concatenate(coalitions))
                order = np.argsort(-_image_scores(attr, game), kind="stable")
                ins, dele = _curves(game, order)
                curve = game.value(np.concatenate([ins, dele]))
                for i, (name, _) in enumerate(laws):
                    y, yhat = values[i], scale * (pred[i * k : (i + 1) * k] - shift)
                    row[name] = r_squared(y, yhat) if direct else NAN
                    row[name.replace("r2", "r2_fit", 1)] = r_squared(y, yhat, fit=True)
                row.update(
                    insertion=curve_auc(curve[: len(ins)], v_none, v_all),
                    deletion=curve_auc(curve[len(ins) :], v_none, v_all),
                    seconds=attr.seconds,
                )
            except DualexError as err:
                row["error"] = str(err)
            rows.append(row)
    return rows


def summary(rows: Iterable[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per method: ``n`` and every metric's mean with a 95 % bootstrap interval, and
    the mean seconds per explanation."""
    from dualex.evaluate.analysis import group_table

    rows = list(rows)
    protocol = "fixlip" if any(r.get("protocol") == "fixlip" for r in rows) else "dualex"
    cols = metrics(protocol)
    # n counts the first fitted R²'s finite values, which every method has
    fit = next(c for c in cols if c.startswith("r2_fit"))
    first = (fit, *[m for m in cols if m != fit], "seconds")
    table = group_table(rows, by=("method",), metrics=first, seed=seed)
    return table
