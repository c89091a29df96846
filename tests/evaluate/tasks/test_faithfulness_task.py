"""The faithfulness task: coalition sampling, R², curves, and dualex's coalition prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dualex
from dualex.data.synthetic import generate
from dualex.evaluate.game import PairGame
from dualex.evaluate.methods import get
from dualex.evaluate.tasks import EvalSettings
from dualex.evaluate.tasks.faithfulness import (
    curve_auc,
    faithfulness_rows,
    predict,
    r_squared,
    sample_coalitions,
    summary,
)


@pytest.fixture(scope="module")
def builtin():
    return dualex.load("builtin")


def test_sampling_laws_and_scores():
    rng = np.random.default_rng(0)
    b = sample_coalitions(20, 4000, rng, "banzhaf")
    s = sample_coalitions(20, 4000, rng, "sizes")
    assert abs(b.mean() - 0.5) < 0.01
    counts = np.bincount(s.sum(1), minlength=21) / 4000  # every size about equally often
    assert counts.min() > 0.03 and counts.max() < 0.07
    y = rng.normal(size=50)
    assert r_squared(y, y) == 1.0 and r_squared(y, 3 * y + 1, fit=True) == pytest.approx(1.0)
    assert r_squared(y, np.full(50, y.mean())) == pytest.approx(0.0)
    assert math.isnan(r_squared(np.ones(5), np.arange(5.0)))
    assert curve_auc(np.array([0.0, 1.0]), 0.0, 1.0) == pytest.approx(0.5)
    assert curve_auc(np.array([1.0, 1.0, 1.0]), 0.0, 1.0) == pytest.approx(1.0)
    assert math.isnan(curve_auc(np.array([1.0, 1.0]), 1.0, 1.0))


def test_dualex_predicts_the_full_and_text_only_coalitions(builtin):
    s = generate(1, seed=11)[0]
    game = PairGame(builtin, s.image, s.caption)
    (a,) = get("dualex")(builtin, s.image, [s.caption], steps=8)
    full = np.ones((1, game.n_players), dtype=bool)
    pred, direct = predict(a, game, full)
    err = a.explanation.completeness.absolute_error  # the quadrature's own error
    assert direct and pred[0] == pytest.approx(game.value(full)[0], abs=2 * err + 1e-6)
    assert pred[0] == pytest.approx(a.score, abs=2 * err + 1e-6)
    # a first-order map predicts from its image part only
    (r,) = get("random")(builtin, s.image, [s.caption])
    some = sample_coalitions(game.n_players, 5, np.random.default_rng(1), "banzhaf")
    p, direct = predict(r, game, some)
    assert not direct
    hm = r.image_map.numpy().reshape(-1)
    for row, c in zip(p, some, strict=True):
        present = [j for g, on in zip(game.image_players, c[game.n_text :], strict=True) if on
                   for j in g]  # fmt: skip
        assert row == pytest.approx(hm[present].sum())


def test_faithfulness_rows_and_summary(builtin):
    samples = generate(2, seed=12)
    settings = EvalSettings(methods=("dualex", "random"), steps=4, coalitions=16)
    rows = []
    for i, s in enumerate(samples):
        rows += faithfulness_rows(builtin, [(i, s)], settings)
    assert len(rows) == 4 and not any(r["error"] for r in rows)
    dx = [r for r in rows if r["method"] == "dualex"]
    rnd = [r for r in rows if r["method"] == "random"]
    assert all(math.isfinite(r["r2"]) and math.isfinite(r["insertion"]) for r in dx)
    assert all(math.isnan(r["r2"]) and math.isfinite(r["r2_fit"]) for r in rnd)
    assert all(-1 <= r["insertion"] <= 2 and -1 <= r["deletion"] <= 2 for r in rows)
    again = faithfulness_rows(builtin, [(0, samples[0])], settings)
    assert [r["r2"] for r in again] == [r["r2"] for r in rows[:2]]  # seeded
    table = summary(rows)
    assert [t["method"] for t in table] == ["dualex", "random"]
