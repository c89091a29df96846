"""Bootstrap intervals, grouped tables, comparisons."""

from __future__ import annotations

import math

from dualex.evaluate.analysis import bootstrap_ci, compare_tables, group_table, to_csv, to_markdown


def test_bootstrap_ci_contains_mean_and_ignores_nan():
    mean, lo, hi, n = bootstrap_ci([0, 1, 1, 0, 1, float("nan")] * 10)
    assert n == 50 and math.isclose(mean, 0.6)
    assert lo < mean < hi and lo > 0.4 and hi < 0.8
    assert bootstrap_ci([1.0, 1.0])[:3] == (1.0, 1.0, 1.0)
    assert math.isnan(bootstrap_ci([float("nan")])[0])


def test_group_table_sorted_worst_first_and_compare():
    rows = [
        {"method": "d", "label": lab, "pointing": v}
        for lab, v in [("a", 1.0), ("a", 1.0), ("b", 0.0), ("b", 1.0), ("c", 0.0)]
    ]
    t = group_table(rows, ("method", "label"), ("pointing",), sort_by="pointing")
    assert [r["label"] for r in t] == ["c", "b", "a"]
    assert [r["n"] for r in t] == [1, 2, 2]
    t2 = group_table([dict(r, pointing=1.0) for r in rows], ("method", "label"), ("pointing",))
    cmp = compare_tables(t, t2, ("method", "label"), ("pointing",), names=("old", "new"))
    assert [r["label"] for r in cmp] == ["a", "b", "c"]  # smallest improvement first
    assert cmp[-1]["pointing_diff"] == 1.0 and cmp[0]["pointing_old"] == 1.0
    md = to_markdown(t, ("pointing",))
    assert "| d | c | 1 | 0.000 [0.000, 0.000] |" in md
    assert to_csv(t).splitlines()[0].startswith("method,label,n,pointing")


def test_group_table_n_counts_finite_values_of_the_primary_metric():
    nan = float("nan")
    rows = [  # mismatch-style rows: below_matched is NaN when a negative has no matched mention
        {"method": "dualex", "kind": "attr", "below_matched": 1.0, "below_positive": 1.0},
        {"method": "dualex", "kind": "attr", "below_matched": nan, "below_positive": 0.0},
        {"method": "dualex", "kind": "attr", "below_matched": None, "below_positive": 1.0},
        {"method": "dualex", "kind": "attr", "below_matched": 0.0, "below_positive": 1.0},
        {"method": "dualex", "kind": "rel", "below_matched": nan, "below_positive": 1.0},
    ]
    metrics = ("below_matched", "below_positive")
    attr, rel = group_table(rows, ("method", "kind"), metrics)
    assert attr["n"] == 2, "rows without a finite primary value are not counted"
    assert attr["below_matched"] == 0.5 and attr["below_positive"] == 0.75
    assert rel["n"] == 0 and math.isnan(rel["below_matched"]) and rel["below_positive"] == 1.0
    assert "| dualex | rel | 0 | — |" in to_markdown([attr, rel], metrics)
    # the grounding tables keep their meaning: every non-error row has a pointing value
    g = [{"method": "m", "pointing": 1.0, "text_pointing": nan}] * 3
    assert group_table(g, ("method",), ("pointing", "text_pointing"))[0]["n"] == 3
