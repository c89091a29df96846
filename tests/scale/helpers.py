"""Helpers of the scale tests: pinned torch threads, a driver in a subprocess, row comparison."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dualex

SRC = str(Path(dualex.__file__).resolve().parents[1])


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (Ray actors use 1), then restore the setting."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def start_driver(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python -m dualex.cli ARGS`` in a subprocess (stdout/stderr captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "dualex.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def kill_after_parts(proc: subprocess.Popen, parts: Path, k: int, timeout: float = 300) -> int:
    """SIGKILL ``proc`` as soon as ``parts`` holds ``k`` committed parts; returns how many
    parts were there when it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the driver ended before it was killed:\n{proc.stdout.read()}")
        if parts.is_dir() and len(committed(parts)) >= k:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        raise AssertionError("no parts appeared in time")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return len(committed(parts))


def committed(folder: Path, pattern: str = "*.parquet") -> list[str]:
    """Names of the committed files in ``folder``: visible ones, not the hidden temporary files an
    atomic write is in the middle of (those end in the same suffix)."""
    return sorted(p.name for p in folder.glob(pattern) if not p.name.startswith("."))


def partial(folder: Path) -> list[str]:
    """Names of the hidden temporary files in ``folder`` (left by a write in progress or killed)."""
    return sorted(p.name for p in folder.glob(".*.tmp*"))


def table_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()
