"""Evaluations as dataset jobs (:mod:`dualex.scale`).

:func:`run_task` hands a task of :mod:`dualex.evaluate.tasks` (grounding, mismatch, grid,
faithfulness) to a job: rows keyed by the task's key, one Parquet part per finished shard,
resumable, locally or on Ray. :func:`run_grounding` and :func:`run_mismatch` are the two
classic tasks under their own names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.errors import SettingError
from dualex.evaluate.tasks import EvalSettings, get

__all__ = ["run_grounding", "run_mismatch", "run_task"]


def _run(
    model: Any,
    samples: Iterable[Sample] | None,
    out_dir: str | os.PathLike[str],
    settings: EvalSettings,
    task: str,
    progress: bool,
    data: str | None,
    backend: str,
    workers: int,
    threads: int | None,
) -> Path:
    from dualex.scale import Job, raise_on_failures, run_job
    from dualex.scale.settings import to_settings

    if samples is None and data is None:
        raise SettingError("pass samples or a data spec (e.g. 'synthetic:seed=1,n=10')")
    spec = (
        model if isinstance(model, str) else str(getattr(model, "name", "") or type(model).__name__)
    )
    job = Job(
        model=spec,
        data=data if data is not None else "<in-process samples>",
        task=task,
        methods=settings.methods,
        settings=to_settings(settings, omit=settings.unused(get(task).settings)),
    )
    result = run_job(
        job,
        out_dir,
        samples=samples,
        model=None if isinstance(model, str) else model,
        backend=backend,
        workers=workers,
        threads=threads,
        part=settings.shard,
        progress=progress,
    )
    raise_on_failures(result)
    return result.rows


def run_task(
    task: str,
    model: Any,
    samples: Iterable[Sample] | None,
    out_dir: str | os.PathLike[str],
    settings: EvalSettings,
    *,
    progress: bool = True,
    data: str | None = None,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
) -> Path:
    """Run evaluation task ``task`` on every sample; resumable (see :func:`run_grounding`).

    Args:
        task: ``grounding``, ``mismatch``, ``grid`` or ``faithfulness``.

    Returns:
        Path of ``rows.parquet``.
    """
    get(task)
    return _run(model, samples, out_dir, settings, task, progress, data, backend, workers, threads)


def run_grounding(
    model: Any,
    samples: Iterable[Sample] | None,
    out_dir: str | os.PathLike[str],
    settings: EvalSettings,
    *,
    progress: bool = True,
    data: str | None = None,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
) -> Path:
    """Evaluate every mention of every sample with every method; resumable.

    The run is a :class:`dualex.scale.Job` in ``out_dir`` (manifest ``job.json``, one Parquet
    part per finished shard): re-running it skips finished shards, and a different job in the
    same folder is refused.

    Args:
        model: A :class:`dualex.DualEncoder`, or a model spec (needed by the Ray backend, whose
            workers build their own replica).
        samples: The samples (a re-run must see the same ones in the same order); ``None``:
            read ``data``.
        out_dir: Output folder (``job.json``, ``parts/`` and the merged ``rows.parquet``).
        settings: Methods, text input, limit, samples per shard (``batch``) and ``shard=(i, n)``
            (run shards ``i, i + n, ...`` of the plan; processes may share a folder this way).
        progress: Show a progress bar.
        data: The ``--data`` spec of the samples (required when ``samples`` is ``None``).
        backend: ``local`` (in-process), ``ray`` or ``ray:ADDRESS``.
        workers: Ray actors.
        threads: torch threads per Ray actor.

    Returns:
        Path of ``rows.parquet`` (all rows written so far, sorted by sample then key).

    Raises:
        JobError: if shards failed (the others are saved) or ``out_dir`` holds another job.
    """
    return _run(
        model, samples, out_dir, settings, "grounding", progress, data, backend, workers, threads
    )


def run_mismatch(
    model: Any,
    samples: Iterable[Sample] | None,
    out_dir: str | os.PathLike[str],
    settings: EvalSettings,
    *,
    progress: bool = True,
    data: str | None = None,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
) -> Path:
    """Evaluate every hard negative of every sample with dualex; resumable (see
    :func:`run_grounding`)."""
    return _run(
        model, samples, out_dir, settings, "mismatch", progress, data, backend, workers, threads
    )
