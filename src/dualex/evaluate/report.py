"""Tables and plots of a finished (or partial) evaluation folder."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from dualex.evaluate.analysis import (
    GROUNDING_METRICS,
    MISMATCH_METRICS,
    compare_tables,
    group_table,
    to_csv,
    to_markdown,
)
from dualex.io import atomic_write

__all__ = [
    "compare_dirs",
    "read_rows",
    "write_faithfulness_tables",
    "write_grid_tables",
    "write_grounding_tables",
    "write_mismatch_tables",
]


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a ``rows.parquet`` file (or of the one inside a folder), without error rows."""
    import pyarrow.parquet as pq

    p = Path(path)
    if p.is_dir():
        p = p / "rows.parquet"
    return [r for r in pq.read_table(p).to_pylist() if not r.get("error")]


def _write(
    out: Path, stem: str, table: list[dict[str, Any]], metrics: tuple[str, ...], title: str
) -> None:
    atomic_write(out / f"{stem}.md", f"## {title}\n\n" + to_markdown(table, metrics))
    atomic_write(out / f"{stem}.csv", to_csv(table))


def bar_plot(table: list[dict[str, Any]], metrics: tuple[str, ...], path: Path, title: str) -> Path:
    """Grouped bars (one group per metric, one bar per method) with bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dualex.io import atomic_write

    methods = [r["method"] for r in table]
    fig, ax = plt.subplots(figsize=(1.6 + 1.7 * len(metrics), 3.4))
    width = 0.8 / max(len(methods), 1)
    for k, r in enumerate(table):
        xs = np.arange(len(metrics)) + k * width
        vals = [r[m] if math.isfinite(r[m]) else 0.0 for m in metrics]
        err = [
            [max(r[m] - r[f"{m}_lo"], 0) if math.isfinite(r[m]) else 0 for m in metrics],
            [max(r[f"{m}_hi"] - r[m], 0) if math.isfinite(r[m]) else 0 for m in metrics],
        ]
        ax.bar(xs, vals, width, yerr=err, label=r["method"], capsize=2)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(methods) - 1) / 2)
    ax.set_xticklabels(metrics)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def write_grounding_tables(out_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """``summary.{md,csv}``, ``per_class.{md,csv}`` and ``summary.png`` of a grounding run."""
    out = Path(out_dir)
    rows = read_rows(out)
    metrics = GROUNDING_METRICS
    summary = group_table(rows, ("method",), metrics)
    per_class = group_table(rows, ("method", "label"), metrics, sort_by="pointing")
    multi = group_table([r for r in rows if r.get("n_objects", 0) >= 2], ("method",), metrics)
    _write(out, "summary", summary, metrics, "Grounding by method (mean [95% bootstrap CI])")
    _write(
        out,
        "summary_multi",
        multi,
        metrics,
        "Grounding by method, images with two or more objects only",
    )
    _write(out, "per_class", per_class, metrics, "Grounding by method and class, worst first")
    if summary:
        bar_plot(summary, metrics, out / "summary.png", f"grounding, {len(rows)} rows")
    return {"summary": summary, "summary_multi": multi, "per_class": per_class}


def write_mismatch_tables(out_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """``mismatch.{md,csv}`` (by negative kind) and ``mismatch_values.{md,csv}`` (mean sums)."""
    out = Path(out_dir)
    rows = read_rows(out)
    for r in rows:
        r["all"] = "all"
    by_kind = group_table(rows, ("method", "kind"), MISMATCH_METRICS) + group_table(
        [dict(r, kind="all") for r in rows], ("method", "kind"), MISMATCH_METRICS
    )
    values = group_table(
        [dict(r, kind="all") for r in rows] + rows,
        ("method", "kind"),
        ("mismatch", "matched", "positive", "score_positive", "score_negative"),
    )
    _write(out, "mismatch", by_kind, MISMATCH_METRICS, "Mismatch indicators by negative kind")
    _write(
        out,
        "mismatch_values",
        values,
        ("mismatch", "matched", "positive", "score_positive", "score_negative"),
        "Mean summed interactions of the mismatched span, matched spans, positive span",
    )
    return {"mismatch": by_kind, "values": values}


def write_grid_tables(out_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """``summary.{md,csv}`` of a grid run: one row per method × number of objects with
    ``method, objects, n, mass_ratio, sign_ratio`` (and intervals, pointing, seconds)."""
    from dualex.evaluate.tasks.grid import summary as grid_summary

    out = Path(out_dir)
    table = grid_summary(read_rows(out))
    _write(
        out,
        "summary",
        table,
        ("mass_ratio", "sign_ratio", "pointing", "seconds"),
        "Pointing game on 2×2 grids by method and number of objects (mean [95% bootstrap CI])",
    )
    return {"summary": table}


def write_faithfulness_tables(out_dir: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """``summary.{md,csv}`` of a faithfulness run: one row per method."""
    from dualex.evaluate.tasks.faithfulness import metrics
    from dualex.evaluate.tasks.faithfulness import summary as faith_summary

    out = Path(out_dir)
    rows = read_rows(out)
    table = faith_summary(rows)
    fixlip = any(r.get("protocol") == "fixlip" for r in rows)
    _write(
        out,
        "summary",
        table,
        (*metrics("fixlip" if fixlip else "dualex"), "seconds"),
        "Faithfulness by method: R² on sampled coalitions, insertion / deletion (mean [95% CI])",
    )
    return {"summary": table}


def compare_dirs(
    dir_a: str | os.PathLike[str],
    dir_b: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    names: tuple[str, str] = ("a", "b"),
    method: str = "dualex",
) -> list[dict[str, Any]]:
    """Per-class table of two runs side by side (``b − a`` differences), one method.

    Writes ``compare_per_class.{md,csv}`` in ``out_dir``.
    """
    metrics = GROUNDING_METRICS
    ta = group_table([r for r in read_rows(dir_a) if r["method"] == method], ("label",), metrics)
    tb = group_table([r for r in read_rows(dir_b) if r["method"] == method], ("label",), metrics)
    table = compare_tables(ta, tb, ("label",), metrics, names=names)
    shown = [f"{m}_{n}" for m in metrics for n in (*names, "diff")]
    slim = [
        {k: v for k, v in r.items() if k == "label" or k.startswith("n_") or k in shown}
        for r in table
    ]
    _write(
        Path(out_dir),
        "compare_per_class",
        slim,
        (),
        f"{method}: {names[1]} vs {names[0]} by class (largest drop first)",
    )
    return table
