"""Steps and memory limits: refused before anything is allocated, with the estimate and budget."""

from __future__ import annotations

import pytest

from dualex.errors import SettingError
from dualex.limits import MAX_STEPS, check_steps, estimate_memory


@pytest.mark.parametrize(
    ("steps", "max_steps", "needle"),
    [
        (0, 64, "steps must be a positive integer, got 0"),
        (-3, 64, "got -3"),
        (True, 64, "got True"),
        (2.5, 64, "got 2.5"),
        (10**9, 64, "1,000,000,000 is more quadrature nodes than dualex allows (1024)"),
        (None, 0, "max_steps must be a positive integer, got 0"),
        (None, MAX_STEPS + 1, "max_steps=1,025"),
        (4, "8", "max_steps must be a positive integer, got '8'"),
    ],
)
def test_bad_steps_are_setting_errors(steps, max_steps, needle):
    with pytest.raises(SettingError) as info:
        check_steps(steps, max_steps, available=10**15)
    assert needle in str(info.value)


def test_limits_accept_the_bounds():
    assert check_steps(1, 1, available=10**15).total > 0
    assert check_steps(MAX_STEPS, MAX_STEPS, available=10**15).nodes == 8 * 4 * MAX_STEPS**2
    assert check_steps(None, 64, rule="riemann", available=10**15).nodes == 8 * 64 * 4


def test_a_run_that_does_not_fit_gives_estimate_and_budget():
    est = estimate_memory(512, positions=197, hidden=768, embed=512, itemsize=4)
    assert est.work > 0 and est.total == est.nodes + est.work + est.result
    with pytest.raises(SettingError) as info:
        check_steps(
            512,
            64,
            positions=197,
            hidden=768,
            embed=512,
            available=est.total - 1,
            names=("--steps", "--max-steps"),
        )
    msg = str(info.value)
    assert msg.startswith("--steps=512 would need about")
    assert "is available" in msg and ("MiB" in msg or "GiB" in msg)
    # the same run fits when the budget covers the estimate
    assert check_steps(512, 64, positions=197, hidden=768, embed=512, available=est.total) == est


def test_nodes_memory_grows_quadratically_for_gauss_legendre_only():
    gl = [estimate_memory(n).nodes for n in (100, 200)]
    rm = [estimate_memory(n, rule="riemann").nodes for n in (100, 200)]
    assert gl[1] == 4 * gl[0]
    assert rm[1] == 2 * rm[0]
