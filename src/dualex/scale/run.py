"""Run a dataset job: index → shards → local or Ray runner → consolidated ``rows.parquet``.

Example:
    >>> from dualex.scale import Job, run_job
    >>> job = Job(model="builtin", data="synthetic:seed=901,n=40", task="explain",
    ...           settings={"steps": 4})
    >>> result = run_job(job, "runs/x", backend="ray", workers=2)  # doctest: +SKIP
    >>> result.rows  # doctest: +SKIP
    PosixPath('runs/x/index.parquet')
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.errors import DualexWarning, JobError, SettingError
from dualex.scale.job import Job, Manifest, clear_partial, part_name
from dualex.scale.plan import Plan, make_plan
from dualex.scale.tasks import Task, get_task

__all__ = ["RunResult", "parse_backend", "raise_on_failures", "run_job"]

BACKENDS = ("local", "ray")


@dataclass
class RunResult:
    """What a run did.

    Attributes:
        out: Output folder.
        rows: The consolidated rows (``rows.parquet``; ``index.parquet`` of ``explain``), every
            finished shard's.
        n_shards: Shards of the plan.
        n_samples: Samples of the plan.
        ran: Shards run by this call (the others were finished before).
        failed: Shard id -> error, for shards that failed in this call.
        seconds: Wall time of running the shards (not indexing or consolidating).
        samples_done: Samples of the shards run successfully by this call.
    """

    out: Path
    rows: Path
    n_shards: int
    n_samples: int
    ran: int
    failed: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    samples_done: int = 0


def parse_backend(text: str) -> tuple[str, str | None]:
    """``"local"`` → ``("local", None)``; ``"ray"`` / ``"ray:ADDRESS"`` → ``("ray", address)``.

    Raises:
        SettingError: on anything else.
    """
    kind, sep, address = text.strip().partition(":")
    kind = kind.lower()
    if kind not in BACKENDS or (kind == "local" and sep):
        raise SettingError(
            f"cannot read --backend {text!r}; use local, ray (a local Ray cluster) or "
            "ray:ADDRESS (e.g. ray:auto or ray:10.0.0.1:6379)"
        )
    return kind, (address or None)


def _samples(job: Job) -> Iterable[Sample]:
    from dualex.data.sources import parse_data_spec

    return parse_data_spec(job.data).samples()


def run_job(
    job: Job,
    out: str | os.PathLike[str],
    *,
    samples: Iterable[Sample] | None = None,
    model: Any = None,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
    part: tuple[int, int] = (0, 1),
    progress: bool = True,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Run (or resume) a job; returns what it did. Failed shards do not raise here (see
    :func:`raise_on_failures`).

    Args:
        job: The job. ``job.settings`` may hold ``shard_size`` (samples per shard, default 8) and
            ``limit`` (most samples read).
        out: Output folder: ``job.json`` (the manifest), ``parts/``, ``rows.parquet``.
        samples: The samples, in-process (default: read ``job.data`` as a ``--data`` spec).
        model: A model object for the local runner (default: built from ``job.model``).
        backend: ``local``, ``ray`` or ``ray:ADDRESS``.
        workers: Ray actors (model replicas); a local Ray cluster gets this many CPUs.
        threads: torch threads of each Ray actor (default 1); the local runner leaves torch's
            setting alone.
        part: ``(i, n)``: run only shards ``i, i + n, ...`` of the plan (several processes may
            share one output folder this way); the rows file holds every finished shard.
        progress: Show a progress bar (samples).
        on_shard: Called with each shard's outcome (``shard``, ``rows``, ``samples``, ``error``).

    Returns:
        The :class:`RunResult`.

    Raises:
        JobError: if ``out`` holds a different job.
        SettingError: on a bad backend, part or task, or a method the task does not run.
    """
    task = get_task(job.task)
    unknown = [m for m in job.methods if m not in task.methods]
    if unknown:
        raise SettingError(
            f"task {job.task!r} does not run method(s) {', '.join(unknown)}; choose from "
            f"{', '.join(task.methods)}"
        )
    kind, address = parse_backend(backend)
    i_part, n_part = part
    if not (n_part >= 1 and 0 <= i_part < n_part):
        raise SettingError(f"part {i_part}/{n_part} is invalid; pass i/n with 0 <= i < n")
    out = Path(out).absolute()
    st = job.settings
    shard_size = int(st.get("shard_size", 8))
    if shard_size < 1:
        raise SettingError(f"shard size must be >= 1, got {shard_size}")
    plan = make_plan(
        samples if samples is not None else _samples(job),
        shard_size=shard_size,
        limit=st.get("limit"),
    )
    manifest = Manifest.open(out, job, plan.digest, len(plan.shards), plan.n_samples)
    done = manifest.done()
    todo = [s for s in range(len(plan.shards)) if s % n_part == i_part and s not in done]
    clear_partial(out, todo)  # a killed run's temporary files of the shards about to run again
    result = RunResult(out, out / task.table, len(plan.shards), plan.n_samples, len(todo))

    from tqdm.auto import tqdm

    total = sum(len(plan.shards[s]) for s in todo)
    bar = tqdm(total=total, desc=job.task, unit="sample", disable=not progress)

    def record(outcome: dict[str, Any]) -> None:
        shard = int(outcome["shard"])
        manifest.record(shard, rows=int(outcome["rows"]), error=str(outcome["error"]))
        if outcome["error"]:
            result.failed[shard] = str(outcome["error"])
        else:
            result.samples_done += int(outcome["samples"])
        bar.update(int(outcome["samples"]))
        if on_shard is not None:
            on_shard(outcome)

    start = time.perf_counter()
    try:
        if kind == "local":
            _run_local(job, task, out, plan, todo, record, model)
        else:
            if plan.images:
                raise SettingError(
                    "the Ray backend needs samples whose images are references (ImageRef, as every "
                    "dataset loader yields), not in-memory images; use --backend local"
                )
            from dualex.scale.ray_backend import run_ray

            if 0 < len(todo) < workers:
                warnings.warn(
                    f"{len(todo)} shard{'s' if len(todo) > 1 else ''} to run for {workers} "
                    f"workers: only {len(todo)} worker{'s start' if len(todo) > 1 else ' starts'} (a "
                    f"shard is one worker's unit of work); for more parallel work cut the "
                    f"dataset into more shards with a smaller --batch (now {shard_size})",
                    DualexWarning,
                    stacklevel=2,
                )
            run_ray(
                job,
                out,
                [(s, plan.payload(s)) for s in todo],
                record,
                address=address,
                workers=min(workers, len(todo)) if todo else workers,  # no idle replicas
                threads=threads,
                task=task,
            )
    finally:
        result.seconds = time.perf_counter() - start
        bar.close()
    _consolidate(out, task, len(plan.shards))
    return result


def _run_local(
    job: Job,
    task: Task,
    out: Path,
    plan: Plan,
    todo: list[int],
    record: Callable[[dict[str, Any]], None],
    model: Any,
) -> None:
    from dualex.scale.worker import load_model, run_shard

    if not todo:
        return
    if model is None:
        model = load_model(job.model)
    for shard in todo:
        record(run_shard(model, job, out, shard, plan.samples(shard), task))


def _consolidate(out: Path, task: Any, n_shards: int) -> Path:
    from dualex.scale.store import consolidate

    parts = [out / part_name(s) for s in range(n_shards) if (out / part_name(s)).is_file()]
    return consolidate(parts, out / task.table, key=task.key, order=task.order)


def raise_on_failures(result: RunResult) -> None:
    """Raise one :class:`JobError` line summarising failed shards (if any).

    Raises:
        JobError: naming how many shards failed, the first error, and how to finish the run.
    """
    if not result.failed:
        return
    first = min(result.failed)
    raise JobError(
        f"{len(result.failed)} of {result.n_shards} shards failed (shard {first}: "
        f"{result.failed[first]}); every error is in {str(result.out / 'job.json')!r}; the other "
        "shards are saved: fix the cause and re-run the same command to finish"
    )
