"""The benchmark harness (benchmarks/run.py) on tiny models, in one process in float32 on the
CPU, as ``--device cuda`` runs it: the row it measures, the cost bound, the table with the old
row beside the new."""

from __future__ import annotations

import pytest
from benchmarks import run as bench


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setenv("BENCH_TINY", "1")
    monkeypatch.setenv("BENCH_DATA_PAIRS", "3")
    monkeypatch.setenv("BENCH_REPEATS", "2")


def test_a_row_measured_in_process_has_its_ratio_bound_and_throughput(tiny):
    row = bench.worker({"family": "hf", "arch": "B/32", "workload": "data200"}, "cpu")
    assert row["ratio"] == pytest.approx(row["explain_s"] / row["forward_s"])
    assert row["forward_s"] == pytest.approx(sum(row["tower_forward_s"]))
    assert row["fast_path"] == [True, True] and row["layers_used"] == [1, 1]
    assert row["relative_error"] <= 1e-3
    assert row["pairs"] == 3 and row["pairs_per_s"] == pytest.approx(3 / row["workload_s"])
    # the fast-path bound: each tower's forward times 1 + nodes / blocks, over the pair's forward
    F, n = row["tower_forward_s"], row["steps"]
    assert row["bound"] == pytest.approx(
        sum(f * (1 + k / 2) for f, k in zip(F, n, strict=True)) / sum(F)
    )
    old = {**row, "ratio": 99.0, "pairs_per_s": 0.5}
    text = bench.table([row], None, {bench.row_key(row): old})
    pair_line = next(line for line in text.splitlines() if "| pair (of the data200 run) |" in line)
    assert "| 99.0× |" in pair_line and f"| {row['bound']:.1f}× |" in pair_line
    data_line = next(line for line in text.splitlines() if "| data200 |" in line)
    assert "| 0.5 |" in data_line and f"| {row['pairs_per_s']:.1f} |" in data_line


def test_the_generic_bound_counts_tangents_nodes_and_blocks_after_the_split():
    class Tower:
        num_layers = 12

    assert bench.bound(Tower(), False, 2.0, 8, 50, 6) == pytest.approx(2.0 * (1 + 8 * 50 * 6 / 12))
    assert bench.bound(Tower(), False, 2.0, 8, 50, 0) == pytest.approx(2.0 * (1 + 8 * 50))
    assert bench.bound(Tower(), True, 2.0, 4, 50, 11) == pytest.approx(2.0 * (1 + 4 / 12))


def test_grid_signs_splits_the_mass_ratio_into_its_four_parts():
    """benchmarks/grid_signs: the four shares sum to 1, and positive-inside plus negative-outside
    is FIxLIP's mass ratio (dualex.evaluate.metrics), for maps of either sign pattern."""
    import numpy as np
    from benchmarks.grid_signs import mass_by_sign

    from dualex.evaluate.metrics import mass_ratio

    rng = np.random.default_rng(0)
    inside = np.zeros((4, 4), dtype=bool)
    inside[:2, :2] = True
    for _ in range(20):
        hm = rng.normal(size=(4, 4))
        pi, ni, po, no = mass_by_sign(hm, inside)
        assert pi + ni + po + no == pytest.approx(1.0)
        assert pi + no == pytest.approx(mass_ratio(hm, inside))
        assert pi + ni == pytest.approx(np.abs(hm[inside]).sum() / np.abs(hm).sum())
    assert np.isnan(mass_by_sign(np.zeros((4, 4)), inside)).all()
