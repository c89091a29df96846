"""Run one shard: its samples → rows → a Parquet part committed atomically.

The same function runs a shard in the local runner and in a Ray actor, so both produce the same
bytes. An exception inside a shard does not stop the run: the shard's outcome carries the error
(and no part is written), and the other shards go on.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.scale.job import Job, part_name
from dualex.scale.tasks import Task, get_task

__all__ = ["error_message", "load_model", "run_shard"]


def load_model(spec: str) -> Any:
    """Build the model of a job from its spec, through the family registry (``dualex.load``)."""
    from dualex.model import load

    return load(spec)


def error_message(err: BaseException) -> str:
    """One line naming an exception (and, for an unexpected one, where it was raised)."""
    from dualex.errors import DualexError

    if isinstance(err, DualexError):
        return f"{type(err).__name__}: {err}"
    last = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
    where = f" (at {last[0].filename}:{last[0].lineno})" if last else ""
    return f"{type(err).__name__}: {err}{where}"


def run_shard(
    model: Any,
    job: Job,
    out: Path,
    shard: int,
    samples: list[tuple[int, Sample]],
    task: Task | None = None,
) -> dict[str, Any]:
    """Compute a shard's rows and commit its part (``parts/shard-NNNNNN.parquet``).

    Args:
        model: The job's model (a :class:`dualex.DualEncoder`).
        job: The job.
        out: The output folder.
        shard: Shard id.
        samples: The shard's ``(idx, sample)`` pairs.
        task: The job's task (default: the registered task called ``job.task``).

    Returns:
        ``{"shard", "rows", "samples", "error", "started", "finished"}``; ``error`` is ``""``
        when the part was committed; ``started`` / ``finished`` are the worker's wall-clock
        times (``time.time()``) around the shard.
    """
    from dualex.scale.store import write_table

    task = task if task is not None else get_task(job.task)
    out_ = {"shard": shard, "rows": 0, "samples": len(samples), "error": "", "started": time.time()}
    try:
        rows = task.rows(model, samples, job, out, shard)
        write_table(rows, out / part_name(shard))
        out_["rows"] = len(rows)
    except Exception as err:  # one failing shard must not stop the others
        out_["error"] = error_message(err)
    out_["finished"] = time.time()
    return out_
