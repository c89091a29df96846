"""Shapley cross-check: on a planted bilinear toy the Shapley interactions equal dualex's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dualex
from dualex.evaluate.shapley import (
    aggregate,
    clip_crosscheck,
    factorised_sii,
    pairwise_interactions,
    rank_correlation,
    region_groups,
)
from tests.toys import planted_model


def test_planted_toy_shapley_equals_dualex():
    g = torch.Generator().manual_seed(0)
    D, E, Sa, Sb = 3, 4, 4, 5
    Wa, Wb = (
        torch.randn(E, D, generator=g, dtype=torch.float64),
        torch.randn(E, D, generator=g, dtype=torch.float64),
    )
    xa, xb = (
        torch.randn(Sa, D, generator=g, dtype=torch.float64),
        torch.randn(Sb, D, generator=g, dtype=torch.float64),
    )
    model = planted_model(Wa, Wb)
    ex = dualex.explain(model, xa, xb, steps=24)

    def value(coalitions: np.ndarray) -> np.ndarray:
        c = torch.from_numpy(coalitions).to(torch.float64)
        ea = c[:, :Sa] @ torch.tanh(xa @ Wa.T)  # unselected rows -> reference 0 -> tanh(0) = 0
        eb = c[:, Sa:] @ torch.tanh(xb @ Wb.T)
        return (ea * eb).sum(1).numpy()

    shap, exact = pairwise_interactions(value, Sa, Sb)
    assert exact, "9 players are solved exactly"
    dx = aggregate(ex.matrix, [[i] for i in range(Sa)], [[j] for j in range(Sb)])
    np.testing.assert_allclose(shap, dx, atol=1e-8, err_msg="planted products recovered")
    assert rank_correlation(shap, dx) == pytest.approx(1.0)


def test_approximator_on_a_bigger_planted_game():
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=(6, 3)), rng.normal(size=(10, 3))

    def value(c: np.ndarray) -> np.ndarray:
        return ((c[:, :6] @ u) * (c[:, 6:] @ v)).sum(1)

    shap, exact = pairwise_interactions(value, 6, 10, exact_max=10, budget=3000)
    assert not exact
    assert rank_correlation(shap, u @ v.T) > 0.95


def test_region_groups_partition():
    groups = region_groups((8, 8), 4, prefix=1)
    assert len(groups) == 16 and all(len(g) == 4 for g in groups)
    assert sorted(i for g in groups for i in g) == list(range(1, 65))
    assert groups[0] == [1, 2, 9, 10]


def test_factorised_sii_equals_shapiq_exact():
    import shapiq

    rng = np.random.default_rng(0)
    a, b = 3, 4
    table = rng.normal(size=(2**a, 2**b))

    def fn(c):
        c = np.asarray(c, dtype=bool)
        t = (c[:, :a] * (1 << np.arange(a))).sum(1)
        r = (c[:, a:] * (1 << np.arange(b))).sum(1)
        return table[t, r]

    iv = shapiq.ExactComputer(fn, n_players=a + b)("SII", order=2)
    want = np.array([[iv[(i, a + j)] for j in range(b)] for i in range(a)])
    np.testing.assert_allclose(factorised_sii(table), want, atol=1e-12)


def test_clip_crosscheck_runs_and_methods_agree(clip64, image):
    r = clip_crosscheck(clip64, "red circle", image, grid=2, steps=4, layers=(0, None))
    assert r.exact and r.shapley.shape == (2, 4)
    assert set(r.dualex) == {"L0", "L1"} and r.dualex["L0"].shape == (2, 4)
    assert all(-1.0 <= v <= 1.0 for v in r.spearman.values()) and r.words == ["red", "circle"]
    r2 = clip_crosscheck(clip64, "red circle", image, grid=2, steps=4, method="shapiq")
    np.testing.assert_allclose(r.shapley, r2.shapley, atol=1e-9)
