"""Throughput of dataset runs: the local runner vs the Ray runner with 1 and 2 workers.

Explains every pair of a synthetic dataset with the built-in model (``dualex explain --data``'s
job) three times in fresh output folders, and prints samples/s two ways:

- end to end: from the call to the consolidated index (Ray: cluster start and model loading in
  each actor included);
- steady state: all samples over the time from the first shard's start to the last shard's end,
  as the workers clock them (cluster start and model loading excluded; Ray's scheduling between
  shards included): what a long run converges to.

Run it niced, one torch thread per worker (the local runner gets one thread too):

    nice -n 10 python benchmarks/scale_throughput.py --n 24 --steps 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dualex.scale import Job, run_job


def measure(job: Job, backend: str, workers: int, root: Path) -> dict:
    out = root / f"{backend}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    stamps: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    result = run_job(
        job,
        out,
        backend=backend,
        workers=workers,
        threads=1,
        progress=False,
        on_shard=lambda o: stamps.append((float(o["started"]), float(o["finished"]))),
    )
    wall = time.perf_counter() - t0
    assert not result.failed, result.failed
    window = max(b for _, b in stamps) - min(a for a, _ in stamps)
    steady = result.n_samples / window
    return {
        "runner": "local" if backend == "local" else f"ray, {workers} worker{'s' * (workers > 1)}",
        "samples": result.n_samples,
        "shards": result.n_shards,
        "wall_s": wall,
        "end_to_end": result.n_samples / wall,
        "steady": steady,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--n", type=int, default=24, help="images (one caption each)")
    ap.add_argument("--steps", type=int, default=4, help="quadrature nodes (fixed work/sample)")
    ap.add_argument("--shard-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="rounds (runners alternate)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    torch.set_num_threads(1)
    job = Job(
        args.model,
        f"synthetic:seed=901,n={args.n}",
        "explain",
        ("dualex",),
        {"layers": None, "steps": args.steps, "shard_size": args.shard_size, "limit": None},
    )
    root = Path(tempfile.mkdtemp(prefix="dxb-", dir="/tmp"))
    runners = (("local", 1), ("ray", 1), ("ray", 2))
    rounds: list[list[dict]] = []
    try:
        for _ in range(args.repeats):  # alternate the runners: the machine's load drifts
            rounds.append([measure(job, b, w, root) for b, w in runners])
        same = len({(root / f"{b}-{w}" / "index.parquet").read_bytes() for b, w in runners})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for k in range(len(runners)):
        runs = [r[k] for r in rounds]
        rows.append(
            {
                **runs[0],
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "end_to_end": statistics.median(r["end_to_end"] for r in runs),
                "steady": statistics.median(r["steady"] for r in runs),
                "rounds": runs,
            }
        )
    print(
        f"{job.model}, {rows[0]['samples']} samples in {rows[0]['shards']} shards, "
        f"steps={args.steps}, median of {args.repeats} round(s)"
    )
    print("| runner | wall (s) | end to end (samples/s) | steady state (samples/s) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['runner']} | {r['wall_s']:.1f} | {r['end_to_end']:.2f} | {r['steady']:.2f} |")
    loc = rows[0]
    for r in rows[1:]:
        print(
            f"{r['runner']} / local: end to end {r['end_to_end'] / loc['end_to_end']:.2f}×, "
            f"steady state {r['steady'] / loc['steady']:.2f}×"
        )
    print(f"identical index files across the runners: {same == 1}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
