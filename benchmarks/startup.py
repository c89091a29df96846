"""Start-up time: ``dualex --help``, ``import dualex`` and ``dualex.load("builtin")``.

Each measurement runs in a fresh interpreter (so nothing is cached in ``sys.modules``), ``--runs``
times; the median and the minimum wall time are printed, with the import-time breakdown of the
heaviest top-level packages (``python -X importtime``). The machine may be busy: compare runs made
back to back, not seconds across days.

    python benchmarks/startup.py [--runs 3] [--src PATH]

Targets (issue 15): ``dualex --help`` ≤ 1.5 s, ``import dualex; dualex.load("builtin")`` ≤ 2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "dualex --help": ["-m", "dualex.cli", "--help"],
    "import dualex": ["-c", "import dualex"],
    "import dualex.cli": ["-c", "import dualex.cli"],
    'dualex.load("builtin")': ["-c", "import dualex; dualex.load('builtin')"],
    "import torch": ["-c", "import torch"],
    "import transformers.CLIPModel": ["-c", "from transformers import CLIPModel"],
}


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return env


def time_case(args: list[str], runs: int, env: dict[str, str]) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t)
    return out


def heaviest_imports(args: list[str], env: dict[str, str], k: int = 6) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (seconds) in one run."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], env=env, capture_output=True, text=True
    )
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if m and not m.group(2):  # top level: no indentation
            name = m.group(3).split(".")[0]
            totals[name] = totals.get(name, 0.0) + int(m.group(1)) / 1e6
    return sorted(totals.items(), key=lambda kv: -kv[1])[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--src",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "src",
        help="the dualex source folder to measure (default: this checkout's src/)",
    )
    opts = parser.parse_args()
    env = _env(opts.src.resolve())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"{'case':34s} {'median':>8s} {'min':>8s}   heaviest imports (one run)")
    for name, args in CASES.items():
        times = time_case(args, opts.runs, env)
        heavy = ", ".join(f"{m} {s:.2f}" for m, s in heaviest_imports(args, env)[:4])
        print(f"{name:34s} {statistics.median(times):7.2f}s {min(times):7.2f}s   {heavy}")


if __name__ == "__main__":
    main()
