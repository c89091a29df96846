"""Summary and per-class tables with bootstrap confidence intervals ("knowledge gaps").

Rows are plain dicts (as read from the Parquet files); tables are lists of dicts, written as
Markdown and CSV.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from dualex.stats import bootstrap_ci

__all__ = [
    "GROUNDING_METRICS",
    "MISMATCH_METRICS",
    "bootstrap_ci",
    "compare_tables",
    "group_table",
    "to_csv",
    "to_markdown",
]

GROUNDING_METRICS = ("pointing", "energy", "text_pointing", "text_energy")
"""Per-mention metrics: text→image pointing game / energy in box, image→text top token / share."""

MISMATCH_METRICS = ("below_matched", "below_positive", "prefers_positive")
"""Per-negative indicators of the mismatch evaluation."""


def group_table(
    rows: Iterable[dict[str, Any]],
    by: Sequence[str],
    metrics: Sequence[str],
    sort_by: str | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per group with ``n`` and, per metric, ``<m>``, ``<m>_lo``, ``<m>_hi``.

    ``n`` is the number of the group's rows with a finite value of the *primary* metric (the
    first of ``metrics``): the sample behind that metric's mean and interval. Rows where it is
    missing or NaN (a negative without a matched mention, a method without a text-side score)
    are not counted. Each mean/interval is over its own metric's finite values, so another
    metric of the same group may rest on more or fewer rows than ``n``. A group whose rows have
    no finite primary value still appears, with ``n == 0``.

    Args:
        rows: Input rows.
        by: Grouping keys (e.g. ``("method",)`` or ``("method", "label")``).
        metrics: Metric columns; the first is the primary metric that ``n`` counts.
        sort_by: Metric to sort by, ascending (worst first); ``None``: by the keys.
        seed: Bootstrap seed.

    Returns:
        The table rows: the ``by`` keys, ``n``, then ``<m>``, ``<m>_lo``, ``<m>_hi`` per metric.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["n"] = 0
        for i, m in enumerate(metrics):
            mean, lo, hi, n = bootstrap_ci([r.get(m) for r in rs], seed=seed)
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = mean, lo, hi
            if i == 0:
                row["n"] = n  # finite values of the primary metric, not len(rs)
        out.append(row)
    if sort_by is None:
        out.sort(key=lambda r: tuple(str(r[k]) for k in by))
    else:
        out.sort(key=lambda r: (tuple(str(r[k]) for k in by[:-1]), _nan_last(r[sort_by])))
    return out


def _nan_last(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def compare_tables(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    by: Sequence[str],
    metrics: Sequence[str],
    names: tuple[str, str] = ("a", "b"),
) -> list[dict[str, Any]]:
    """Side-by-side groups of two tables with ``<m>_<b> − <m>_<a>`` as ``<m>_diff``.

    Sorted by the first metric's difference, ascending (largest drop first).
    """
    ia = {tuple(r[k] for k in by): r for r in a}
    ib = {tuple(r[k] for k in by): r for r in b}
    out = []
    for key in sorted(set(ia) | set(ib), key=lambda k: tuple(map(str, k))):
        ra, rb = ia.get(key, {}), ib.get(key, {})
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row[f"n_{names[0]}"], row[f"n_{names[1]}"] = ra.get("n", 0), rb.get("n", 0)
        for m in metrics:
            va, vb = ra.get(m, float("nan")), rb.get(m, float("nan"))
            row[f"{m}_{names[0]}"], row[f"{m}_{names[1]}"] = va, vb
            row[f"{m}_diff"] = vb - va
        out.append(row)
    out.sort(key=lambda r: _nan_last(r[f"{metrics[0]}_diff"]))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)


def to_markdown(table: list[dict[str, Any]], metrics: Sequence[str] = ()) -> str:
    """A Markdown table; metrics with ``_lo``/``_hi`` columns print as ``mean [lo, hi]``."""
    if not table:
        return "(no rows)\n"
    cols = [c for c in table[0] if not c.endswith(("_lo", "_hi")) or c[:-3] not in metrics]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in table:
        cells = []
        for c in cols:
            if c in metrics and f"{c}_lo" in r:
                cells.append(
                    f"{_fmt(r[c])} [{_fmt(r[c + '_lo'])}, {_fmt(r[c + '_hi'])}]"
                    if math.isfinite(r[c])
                    else "—"
                )
            else:
                cells.append(_fmt(r[c]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: list[dict[str, Any]]) -> str:
    """The table as CSV text."""
    if not table:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(table[0]))
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()
