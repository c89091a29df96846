"""The knowledge-gap report of a fine-tuning run, and the timeline plot.

``report.html`` ranks the classes by grounding (pointing game, text→image) at the first and the
last monitored step, with bootstrap intervals and the change, lists the global metrics and the
embedding diagnostics at both ends, and embeds ``timeline.png``. The example explanations of
the worst classes (start and end) are in ``examples.html``, the interactive viewer of
``dualex report``, linked from the page.
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from pathlib import Path
from typing import Any

from dualex.io import atomic_write

__all__ = ["change_class", "class_ranking", "timeline_figure", "write_report", "write_timeline_png"]

PANELS = (
    ("retrieval", ("r1_t2i", "r1_i2t", "r5_t2i", "r5_i2t")),
    ("loss", ("loss",)),
    ("grounding (all mentions)", ("pointing", "energy", "text_pointing", "text_energy")),
    ("modality gap", ("gap", "gap_logreg")),
    ("alignment / uniformity", ("alignment", "uniformity_image", "uniformity_text")),
    ("temperature", ("temperature",)),
)


def _series(timeline: list[dict[str, Any]], group: str, cls: str, metric: str
            ) -> tuple[list[int], list[float]]:  # fmt: skip
    pts = sorted((r["step"], r["value"]) for r in timeline
                 if r["group"] == group and r["cls"] == cls and r["metric"] == metric)  # fmt: skip
    return [p[0] for p in pts], [p[1] for p in pts]


MIN_SPAN = 0.05
"""The y axis of a timeline panel spans at least this share of its values' magnitude (and at
least ``MIN_SPAN`` in absolute terms), so a change in the 7th digit is drawn flat, not as a
cliff across the whole panel."""

STYLES = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")
"""Markers cycled per series; with the dashes and the dodge, series with equal values stay
visible side by side instead of hiding each other."""


def _limits(values: list[float]) -> tuple[float, float] | None:
    """Y limits spanning at least ``MIN_SPAN`` (relative to the magnitude, and absolute)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    need = MIN_SPAN * max(1.0, abs(lo), abs(hi))
    if hi - lo >= need:
        pad = 0.05 * (hi - lo)
        return lo - pad, hi + pad
    mid = (lo + hi) / 2
    return mid - need / 2, mid + need / 2


def _dodge(steps: list[int], k: int, n: int) -> float:
    """Horizontal offset of series ``k`` of ``n``: a share of the closest step spacing."""
    if n <= 1:
        return 0.0
    gaps = [b - a for a, b in itertools.pairwise(steps) if b > a]
    width = 0.3 * (min(gaps) if gaps else 1.0)
    return (k - (n - 1) / 2) * width / (n - 1)


def _plot_series(ax: Any, series: list[tuple[str, list[int], list[float]]]) -> list[float]:
    steps = sorted({x for _, xs, _ in series for x in xs})
    values: list[float] = []
    for k, (label, xs, ys) in enumerate(series):
        dx = _dodge(steps, k, len(series))
        ax.plot([x + dx for x in xs], ys, marker=STYLES[k % len(STYLES)], ms=4, lw=1.2,
                ls=("-", "--", ":", "-.")[(k // len(STYLES)) % 4], alpha=0.85, label=label,
                mfc="none" if k % 2 else None)  # fmt: skip
        values += ys
    return values


def timeline_figure(timeline: list[dict[str, Any]], metric: str = "pointing") -> Any:
    """The figure of :func:`write_timeline_png` (a matplotlib ``Figure``, 3 × 3 panels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    for ax, (title, metrics) in zip(axes.flat, PANELS, strict=False):
        series = [(m, *_series(timeline, "global", "", m)) for m in metrics]
        values = _plot_series(ax, [s for s in series if s[1]])
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.ticklabel_format(axis="y", useOffset=False)
        lim = _limits(values)
        if lim is not None:
            ax.set_ylim(*lim)
        if values:
            ax.legend(fontsize=7)
    for ax, group in zip(list(axes.flat)[len(PANELS) :], ("class", "word", "colour"), strict=False):
        classes = sorted({r["cls"] for r in timeline if r["group"] == group})
        _plot_series(ax, [(c, *_series(timeline, group, c, metric)) for c in classes])
        ax.set_title(f"{metric} per {group}")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        if classes:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def write_timeline_png(
    timeline: list[dict[str, Any]], path: Path, metric: str = "pointing"
) -> Path:
    """Plot the global metrics, the diagnostics and per-class ``metric`` over steps."""
    import matplotlib.pyplot as plt

    fig = timeline_figure(timeline, metric)
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)


def class_ranking(timeline: list[dict[str, Any]], group: str = "class", metric: str = "pointing"
                  ) -> list[dict[str, Any]]:  # fmt: skip
    """Per class: ``metric`` at the first and last monitored step with intervals and change,
    ranked by the first step's value (worst first)."""
    steps = sorted({r["step"] for r in timeline if r["group"] == group})
    if not steps:
        return []
    a, b = steps[0], steps[-1]
    at = {(r["step"], r["cls"]): r for r in timeline
          if r["group"] == group and r["metric"] == metric}  # fmt: skip
    out = []
    for c in sorted({k[1] for k in at}):
        ra, rb = at.get((a, c)), at.get((b, c))
        nan = {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
        ra, rb = ra or nan, rb or nan
        out.append({"cls": c, "n": rb["n"] or ra["n"], "start": ra["value"], "start_lo": ra["lo"],
                    "start_hi": ra["hi"], "end": rb["value"], "end_lo": rb["lo"],
                    "end_hi": rb["hi"], "change": rb["value"] - ra["value"],
                    "first_step": a, "last_step": b})  # fmt: skip
    out.sort(key=lambda r: (r["start"] if math.isfinite(r["start"]) else math.inf, r["cls"]))
    return out


def concept_gaps(timeline: list[dict[str, Any]], min_rate: float = 0.02
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Per concept (rows of group ``"concept"``), its rates at the last monitored step and its
    agreement at the first, ranked by the last step's gap (largest first); concepts firing on
    side a on fewer than ``min_rate`` of the pairs at both ends are left out."""
    steps = sorted({r["step"] for r in timeline if r["group"] == "concept"})
    if not steps:
        return []
    a, b = steps[0], steps[-1]
    at = {(r["step"], r["cls"], r["metric"]): r for r in timeline if r["group"] == "concept"}
    nan = {"value": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    out = []
    for c in sorted({k[1] for k in at}):

        def get(step: int, metric: str, c: str = c) -> dict[str, Any]:
            return at.get((step, c, metric), nan)

        rates = [get(s, "fires_a")["value"] for s in (a, b)]
        if not any(math.isfinite(r) and r >= min_rate for r in rates):
            continue
        out.append({"cls": c, "fires_a": get(b, "fires_a"), "fires_b": get(b, "fires_b"),
                    "gap": get(b, "gap"), "gap_start": get(a, "gap"),
                    "agreement_start": get(a, "agreement"), "agreement": get(b, "agreement"),
                    "first_step": a, "last_step": b})  # fmt: skip
    out.sort(key=lambda r: (-r["gap"]["value"] if math.isfinite(r["gap"]["value"]) else math.inf,
                            r["cls"]))  # fmt: skip
    return out


def _concept_section(timeline: list[dict[str, Any]], top: int = 25) -> list[str]:
    rank = concept_gaps(timeline)
    if not rank:
        return []
    a, b = rank[0]["first_step"], rank[0]["last_step"]
    parts = [f"<h2>Concepts: knowledge gaps in the dictionary's terms (step {b}, largest gap "
             "first)</h2><p>A concept <em>fires</em> on an input when it is in the top-k of the "
             "code of the input's total (e − ē)/‖e‖. On each held-out matching pair: how often "
             "it fires on the caption (side a), on the image (side b), and its agreement (both "
             "/ either). Its <em>gap</em> is the share of caption firings without the image: a "
             "concept the text carries and the image does not. 95 % bootstrap intervals over "
             "pairs.</p><table><tr><th>concept</th>"
             f"<th>fires on side a at step {b}</th><th>side b at step {b}</th><th>agreement at step {a}</th><th>agreement at step {b}</th><th>change</th>"
             f"<th>gap at step {a}</th><th>gap at step {b}</th></tr>"]  # fmt: skip
    for r in rank[:top]:
        change = r["agreement"]["value"] - r["agreement_start"]["value"]
        parts.append(f"<tr><td>{_f(r['cls'])}</td><td>{_f(r['fires_a']['value'])}</td>"
                     f"<td>{_f(r['fires_b']['value'])}</td>"
                     + "".join(f"<td>{_ci(x['value'], x['lo'], x['hi'])}</td>"
                               for x in (r["agreement_start"], r["agreement"]))
                     + f"<td class='{change_class(change)}'>{_f(change)}</td>"
                     + "".join(f"<td>{_ci(x['value'], x['lo'], x['hi'])}</td>"
                               for x in (r["gap_start"], r["gap"]))
                     + "</tr>")  # fmt: skip
    parts.append("</table>")
    if len(rank) > top:
        parts.append(f"<p>{len(rank) - top} more concepts in timeline.parquet "
                     "(rows of group 'concept').</p>")  # fmt: skip
    return parts


def _f(v: Any, d: int = 3) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.{d}f}"
    return html.escape(str(v))


def _ci(v: float, lo: float, hi: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.3f} <small>[{_f(lo)}, {_f(hi)}]</small>"


def change_class(change: float) -> str:
    """The CSS class of a change as printed (3 decimals): ``up``, ``down`` or ``same`` (a change
    that prints as 0.000, or none, is neither green nor red)."""
    if not math.isfinite(change) or round(change, 3) == 0:
        return "same"
    return "up" if change > 0 else "down"


def _completeness_note(timeline: list[dict[str, Any]], nodes: int | None) -> str:
    worst = [r["value"] for r in timeline
             if r["group"] == "global" and r["metric"] == "completeness_max"]  # fmt: skip
    mids = [r["value"] for r in timeline
            if r["group"] == "global" and r["metric"] == "completeness_median"]  # fmt: skip
    how = "adaptive steps" if nodes is None else f"{nodes} Gauss–Legendre nodes"
    if not worst:
        return f"<p>The monitor explains with {how}.</p>"
    top = max(worst)
    met = "within" if top <= 1e-3 else "above"
    return (f"<p>The monitor explains with {how}; the measured relative completeness error of "
            f"its explanations was at most {top:.2e} (median per step up to {max(mids):.2e}), "
            f"{met} dualex's default tolerance 1e-3. The example explanations below are "
            "explained to that tolerance.</p>")  # fmt: skip


def write_report(timeline: list[dict[str, Any]], summary: dict[str, Any], out: Path,
                 picks: list[tuple[str, int]], *, title: str, intro: str | None = None,
                 nodes: int | None = None) -> Path:  # fmt: skip
    """Write ``out/report.html`` (and ``out/examples.html`` when there are examples).

    Args:
        timeline: The monitor's rows.
        summary: ``monitor_share``, ``first`` and ``last`` (global metrics at both ends).
        out: The output folder.
        picks: ``(class, sample index)`` of the example explanations.
        title: The model's name.
        intro: An HTML paragraph on the run (default: the monitored steps and the share).
        nodes: The monitor's quadrature nodes (``None``: adaptive).
    """
    steps = sorted({r["step"] for r in timeline})
    if intro is None:
        intro = (f"Monitored at {len(steps)} steps ({steps[0]}–{steps[-1]}); monitoring took "
                 f"{100 * summary['monitor_share']:.1f} % of the wall time (measured).")  # fmt: skip
    parts = [f"<h1>Knowledge-gap report: {html.escape(str(title))}</h1>", f"<p>{intro}</p>",
             _completeness_note(timeline, nodes)]  # fmt: skip
    for group, title in (
        ("class", "Classes (mention phrases)"),
        ("word", "Class words alone"),
        ("colour", "Colour words alone"),
    ):
        for metric in ("pointing", "energy"):
            rank = class_ranking(timeline, group, metric)
            if not rank:
                continue
            parts.append(f"<h2>{title} ranked by {metric} at step {rank[0]['first_step']} "
                         f"(worst first)</h2><table><tr><th>{group}</th><th>n</th><th>start"
                         f"</th><th>end (step {rank[0]['last_step']})</th><th>change</th></tr>")  # fmt: skip
            for r in rank:
                cls = change_class(r["change"])
                parts.append(f"<tr><td>{_f(r['cls'])}</td><td>{r['n']}</td>"
                             f"<td>{_ci(r['start'], r['start_lo'], r['start_hi'])}</td>"
                             f"<td>{_ci(r['end'], r['end_lo'], r['end_hi'])}</td>"
                             f"<td class='{cls}'>{_f(r['change'])}</td></tr>")  # fmt: skip
            parts.append("</table>")
    parts.extend(_concept_section(timeline))
    first, last = summary.get("first", {}), summary.get("last", {})
    parts.append("<h2>Global metrics and diagnostics</h2><table><tr><th>metric</th>"
                 "<th>start</th><th>end</th></tr>")  # fmt: skip
    for m in sorted(set(first) | set(last)):
        parts.append(f"<tr><td>{_f(m)}</td><td>{_f(first.get(m, math.nan))}</td>"
                     f"<td>{_f(last.get(m, math.nan))}</td></tr>")  # fmt: skip
    parts.append("</table>")
    png = out / "timeline.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<h2>Over steps</h2><img alt='timeline' src='data:image/png;base64,{data}'>")
    starts = sorted((out / "examples").glob("start-*.safetensors"))
    if picks and starts:
        _write_examples(out, picks)
        parts.append("<h2>Worst classes: example explanations</h2><p>The "
                     "<a href='examples.html'>interactive viewer</a> shows, for each of the "
                     f"classes {', '.join(html.escape(c) for c, _ in picks)}, one held-out "
                     "caption explained at the start and at the end.</p>")  # fmt: skip
    page = _PAGE.replace("$body", "\n".join(parts)).replace("$title", html.escape(str(title)))
    return atomic_write(out / "report.html", lambda tmp: Path(tmp).write_text(page, "utf-8"))


def _write_examples(out: Path, picks: list[tuple[str, int]]) -> None:
    from dualex.explanation import Explanation
    from dualex.viz.report import write_report as viewer

    exs, names = [], []
    for k, (cls, _) in enumerate(picks):
        for tag in ("start", "end"):
            p = out / "examples" / f"{tag}-{k}.safetensors"
            if p.is_file():
                exs.append(Explanation.load(p))
                names.append(f"{cls} · {tag}")
    if exs:
        viewer(exs, out / "examples.html", names, title="fine-tuning: worst classes, start/end")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>dualex fine-tuning: $title</title>
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}td:first-child{text-align:left}.down{color:#b00}.up{color:#070}
.same{color:#666}
img{max-width:100%}</style></head><body>
$body
</body></html>
"""
