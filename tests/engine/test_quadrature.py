from __future__ import annotations

import math

import pytest
import torch

from dualex.engine.quadrature import nodes_and_weights
from dualex.errors import SettingError


@pytest.mark.parametrize("n", [1, 2, 7, 10, 49, 98, 103, 107])
def test_riemann_has_exactly_n_right_endpoints(n):
    a, w = nodes_and_weights("riemann", n)
    assert len(a) == n == len(w), f"riemann with N={n} gave {len(a)} nodes"
    expected = torch.tensor([k / n for k in range(n, 0, -1)], dtype=torch.float64)
    assert torch.allclose(a, expected, atol=0, rtol=1e-15), "nodes must be 1, 1-1/N, ..., 1/N"
    assert torch.allclose(w, torch.full((n,), 1 / n, dtype=torch.float64))
    assert 0.0 not in a.tolist(), "alpha = 0 is excluded by the right Riemann rule"


@pytest.mark.parametrize("rule", ["gauss-legendre", "riemann", "trapezoid"])
@pytest.mark.parametrize("n", [2, 5, 16])
def test_weights_sum_to_one_and_nodes_in_unit_interval(rule, n):
    a, w = nodes_and_weights(rule, n)
    assert abs(float(w.sum()) - 1.0) < 1e-13
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_gauss_legendre_is_exact_for_polynomials_of_degree_2n_minus_1():
    for n in (1, 3, 6):
        a, w = nodes_and_weights("gauss-legendre", n)
        for deg in range(2 * n):
            approx = float((w * a**deg).sum())
            assert math.isclose(approx, 1.0 / (deg + 1), rel_tol=1e-12), (n, deg, approx)
        over = float((w * a ** (2 * n)).sum())
        assert not math.isclose(over, 1.0 / (2 * n + 1), rel_tol=1e-12), (
            "degree 2n must not be exact"
        )


def test_trapezoid_includes_both_ends():
    a, w = nodes_and_weights("trapezoid", 5)
    assert a[0] == 0 and a[-1] == 1
    assert torch.allclose(w, torch.tensor([0.125, 0.25, 0.25, 0.25, 0.125], dtype=torch.float64))


@pytest.mark.parametrize(
    ("rule", "n"), [("simpson", 4), ("riemann", 0), ("riemann", -3), ("trapezoid", 1), ("gl", 2.5)]
)
def test_bad_rule_or_steps_raise_setting_error(rule, n):
    with pytest.raises(SettingError):
        nodes_and_weights(rule, n)
