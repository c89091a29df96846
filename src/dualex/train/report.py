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
import math
from pathlib import Path
from typing import Any

from dualex.io import atomic_write

__all__ = ["class_ranking", "write_report", "write_timeline_png"]

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


def write_timeline_png(
    timeline: list[dict[str, Any]], path: Path, metric: str = "pointing"
) -> Path:
    """Plot the global metrics, the diagnostics and per-class ``metric`` over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(15, 11))
    for ax, (title, metrics) in zip(axes.flat, PANELS, strict=False):
        for m in metrics:
            x, y = _series(timeline, "global", "", m)
            if x:
                ax.plot(x, y, marker="o", ms=3, label=m)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.legend(fontsize=7)
    for ax, group in zip(list(axes.flat)[len(PANELS) :], ("class", "word", "colour"), strict=False):
        classes = sorted({r["cls"] for r in timeline if r["group"] == group})
        for c in classes:
            x, y = _series(timeline, group, c, metric)
            ax.plot(x, y, marker="o", ms=3, label=c)
        ax.set_title(f"{metric} per {group}")
        ax.set_xlabel("step")
        ax.set_ylim(-0.02, 1.02)
        if classes:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


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


def _f(v: Any, d: int = 3) -> str:
    if isinstance(v, float):
        return "—" if not math.isfinite(v) else f"{v:.{d}f}"
    return html.escape(str(v))


def _ci(v: float, lo: float, hi: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.3f} <small>[{_f(lo)}, {_f(hi)}]</small>"


def write_report(timeline: list[dict[str, Any]], summary: dict[str, Any], cfg: Any, out: Path,
                 picks: list[tuple[str, int]]) -> Path:  # fmt: skip
    """Write ``out/report.html`` (and ``out/examples.html`` when there are examples)."""
    parts = [f"<h1>Knowledge-gap report: {html.escape(str(cfg.model))}</h1>",
             f"<p>Fine-tuned on <code>{html.escape(cfg.train)}</code> for {cfg.steps} steps "
             f"(batch {cfg.batch}×{cfg.accum}, lr {cfg.lr:g}); monitored on "
             f"<code>{html.escape(cfg.eval)}</code>. {summary['seconds_per_step']:.3f} s per "
             f"step; monitoring took {100 * summary['monitor_share']:.1f} % of the time.</p>"]  # fmt: skip
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
                cls = "down" if r["change"] < 0 else "up"
                parts.append(f"<tr><td>{_f(r['cls'])}</td><td>{r['n']}</td>"
                             f"<td>{_ci(r['start'], r['start_lo'], r['start_hi'])}</td>"
                             f"<td>{_ci(r['end'], r['end_lo'], r['end_hi'])}</td>"
                             f"<td class='{cls}'>{_f(r['change'])}</td></tr>")  # fmt: skip
            parts.append("</table>")
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
    page = _PAGE.replace("$body", "\n".join(parts)).replace("$title", html.escape(str(cfg.model)))
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
img{max-width:100%}</style></head><body>
$body
</body></html>
"""
