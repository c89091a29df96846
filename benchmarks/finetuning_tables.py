"""Tables and plots of docs/finetuning.md from finished ``dualex finetune`` runs.

    python benchmarks/finetuning_tables.py RUN_DIR [RUN_DIR ...] [--docs docs/finetuning]
    python benchmarks/finetuning_tables.py --forgetting START_SPEC FINAL_SPEC DATA_SPEC

Prints Markdown: per run, the per-class and per-colour pointing/energy at the first and last
monitored step (bootstrap 95 % intervals), the global metrics and diagnostics at both ends, the
time per step and the monitoring share; copies each run's ``timeline.png`` into ``--docs``.
``--forgetting`` measures two models with the monitor on one dataset (no training).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import torch

from dualex.train.report import class_ranking

GLOBAL = ("loss", "r1_t2i", "r1_i2t", "r5_t2i", "r5_i2t", "pointing", "energy", "text_pointing",
          "below_matched", "prefers_positive", "gap", "gap_logreg", "alignment",
          "uniformity_image", "uniformity_text", "temperature")  # fmt: skip


def f(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3f}"


def ci(v: float, lo: float, hi: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def ranking_md(timeline: list[dict], group: str, metric: str) -> str:
    rank = class_ranking(timeline, group, metric)
    if not rank:
        return ""
    a, b = rank[0]["first_step"], rank[0]["last_step"]
    lines = [f"| {group} | n | {metric} step {a} | {metric} step {b} | change |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rank:
        lines.append(f"| {r['cls']} | {r['n']} | {ci(r['start'], r['start_lo'], r['start_hi'])} "
                     f"| {ci(r['end'], r['end_lo'], r['end_hi'])} | {r['change']:+.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def globals_md(columns: dict[str, dict[str, float]]) -> str:
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for m in GLOBAL:
        if any(m in c for c in columns.values()):
            lines.append(f"| {m} | " + " | ".join(f(columns[n].get(m, math.nan)) for n in names)
                         + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def at(timeline: list[dict], step: int) -> dict[str, float]:
    return {
        r["metric"]: r["value"] for r in timeline if r["step"] == step and r["group"] == "global"
    }


def run_md(run: Path, docs: Path | None) -> str:
    timeline = pq.read_table(run / "timeline.parquet").to_pylist()
    summary = json.loads((run / "summary.json").read_text())
    steps = sorted({r["step"] for r in timeline})
    out = [f"### `{run.name}`\n",
           f"{summary['steps']} steps, {summary['seconds_per_step']:.2f} s per step, monitoring "
           f"{summary['monitor_seconds']:.0f} s of {summary['monitor_seconds'] + summary['train_seconds']:.0f} s "
           f"({100 * summary['monitor_share']:.1f} %), monitored at steps {steps}.\n"]  # fmt: skip
    cols = {f"step {s}": at(timeline, s) for s in steps}
    out.append(globals_md(cols))
    for group in ("class", "word", "colour"):
        for metric in ("pointing", "energy"):
            out.append(ranking_md(timeline, group, metric))
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "timeline.png", docs / f"{run.name}-timeline.png")
    return "\n".join(x for x in out if x)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="*", type=Path)
    p.add_argument("--docs", type=Path, default=None)
    p.add_argument("--forgetting", nargs=3, metavar=("START", "FINAL", "DATA"))
    p.add_argument("--mentions", type=int, default=60)
    a = p.parse_args()
    torch.set_num_threads(1)
    for run in a.runs:
        print(run_md(run, a.docs))
    if a.forgetting:
        from dualex.train import measure

        start, final, data = a.forgetting
        rows = {name: measure(spec, data, mentions=a.mentions)
                for name, spec in (("before", start), ("after", final))}  # fmt: skip
        print(globals_md({k: at(v, 0) for k, v in rows.items()}))
        tl = [dict(r, step=0) for r in rows["before"]] + [dict(r, step=1) for r in rows["after"]]
        for group in ("class", "word", "colour"):
            for metric in ("pointing", "energy"):
                print(ranking_md(tl, group, metric))


if __name__ == "__main__":
    main()
