"""The Ray runner: Ray Data ``map_batches`` over shards, with a pool of model-holding actors.

Each actor builds its own model replica from the job's spec once, then runs shard after shard
with :func:`dualex.scale.worker.run_shard` (which commits the shard's part itself); the driver
records each outcome in the manifest as it streams back. An actor killed by the OS is restarted
by Ray and its shard retried (Ray Data's actor pools retry by default); the shard's part has a fixed
name, so a retry replaces it instead of adding rows.

Without an address the runner starts a local cluster limited to ``workers`` CPUs and shuts it down
afterwards. Its session files (sockets, logs) live in ``<out>/.ray`` when that path is short
enough for Unix sockets, else in a fresh ``dualex-ray-*`` folder of the temporary directory; either
is deleted at shutdown. A private authentication token is passed through the environment, so
nothing is written to ``~/.ray``. With an address (an existing cluster) the output folder must be
on storage that every node sees under the same path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dualex.errors import JobError, SettingError

__all__ = ["local_cluster", "run_ray"]

_SOCKET_DIR_MAX = 40
"""Longest temp-dir path that leaves room for Ray's socket paths (Unix limit: 107 bytes)."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise SettingError(
            "the Ray backend needs Ray Data; pip install 'dualex[ray]' (or use --backend local)"
        ) from err
    return ray


def _temp_dir(out: Path) -> tuple[Path, bool]:
    """A short folder for Ray's session files: ``(path, created_outside_out)``."""
    mine = (out / ".ray").resolve()
    if len(str(mine)) <= _SOCKET_DIR_MAX:
        mine.mkdir(parents=True, exist_ok=True)
        return mine, False
    for base in (tempfile.gettempdir(), "/tmp"):
        if len(str(base)) + 20 <= _SOCKET_DIR_MAX and os.access(base, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="dualex-ray-", dir=base)), True
    raise SettingError(
        f"no temporary folder short enough for Ray's sockets ({str(out)!r} and "
        f"{tempfile.gettempdir()!r} are too long); set TMPDIR to a short path such as /tmp"
    )


def _refresh_auth() -> None:
    """Make Ray's cached authentication settings follow the environment again."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def local_cluster(num_cpus: int, out: Path, num_gpus: int | None = None) -> Iterator[Any]:
    """Start a private local Ray cluster; shut it down and delete its files on exit.

    Args:
        num_cpus: CPUs the cluster may use (the number of workers).
        out: The run's output folder (its ``.ray`` subfolder holds the session, if short).
        num_gpus: GPUs to expose (``None``: Ray detects them).

    Yields:
        The ``ray`` module, initialised.
    """
    ray = _import_ray()
    temp, _ = _temp_dir(out)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    if not saved["RAY_AUTH_TOKEN"] and not saved["RAY_AUTH_MODE"]:
        # a token of this run only, instead of Ray writing one to ~/.ray/auth_token
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        os.environ["RAY_AUTH_MODE"] = "token"
        _refresh_auth()
    try:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            _temp_dir=str(temp),
            # torch in the workers creates its compile cache folder in $TMPDIR on import: keep
            # it in the session folder, which is deleted with the cluster
            runtime_env={"env_vars": {"TORCHINDUCTOR_CACHE_DIR": str(temp / "torchinductor")}},
        )
        try:
            yield ray
        finally:
            ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_auth()
        shutil.rmtree(temp, ignore_errors=True)


class _ShardActor:
    """A Ray Data callable class: one model replica, many shards."""

    def __init__(self, job: dict[str, Any], out: str, threads: int | None, task: Any) -> None:
        import torch

        from dualex.scale.job import Job
        from dualex.scale.worker import error_message, load_model

        if threads:
            torch.set_num_threads(threads)
        self.job = Job.from_json(job)
        self.task = task  # sent by the driver: a worker needs no registry of its own
        self.out = Path(out)
        self.model: Any = None
        self.error = ""
        try:
            self.model = load_model(self.job.model)
        except Exception as err:  # every shard then reports it (Ray would retry the actor)
            self.error = f"cannot build the model on a worker: {error_message(err)}"
        if self.model is not None and torch.cuda.is_available() and hasattr(self.model, "to"):
            self.model = self.model.to("cuda")

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        import json

        from dualex.scale.plan import samples_of
        from dualex.scale.worker import run_shard

        outs = []
        for shard, payload in zip(batch["shard"], batch["payload"], strict=True):
            samples = samples_of(json.loads(payload))
            if self.error:
                now = time.time()
                outs.append(
                    {
                        "shard": int(shard),
                        "rows": 0,
                        "samples": len(samples),
                        "error": self.error,
                        "started": now,
                        "finished": now,
                    }
                )
            else:
                outs.append(
                    run_shard(self.model, self.job, self.out, int(shard), samples, self.task)
                )
        return {k: [o[k] for o in outs] for k in outs[0]}


def run_ray(
    job: Any,
    out: Path,
    payloads: Sequence[tuple[int, str]],
    on_result: Callable[[dict[str, Any]], None],
    *,
    address: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    task: Any = None,
) -> None:
    """Run shards on Ray.

    Args:
        job: The :class:`~dualex.scale.job.Job`.
        out: Output folder (absolute; seen by every worker).
        payloads: ``(shard, records JSON)`` of the shards to run.
        on_result: Called in the driver with each shard's outcome, as shards finish.
        address: A cluster to connect to; ``None`` starts a local one with ``workers`` CPUs;
            an already initialised Ray (e.g. a test's cluster) is used as it is.
        workers: Actors (model replicas) in the pool.
        threads: torch threads per actor (default: 1, one per reserved CPU).
        task: The job's :class:`~dualex.scale.tasks.Task` (default: the registered one).
    """
    from dualex.scale.tasks import get_task

    ray = _import_ray()
    task = task if task is not None else get_task(job.task)
    if workers < 1:
        raise SettingError(f"--workers must be >= 1, got {workers}")
    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
                stack.callback(ray.shutdown)
            else:
                stack.enter_context(local_cluster(workers, out))
        if not payloads:
            return
        ctx = ray.data.DataContext.get_current()
        for name in ("enable_progress_bars", "print_on_execution_start"):
            if hasattr(ctx, name):
                setattr(ctx, name, False)  # the driver shows its own progress bar
        gpus = ray.cluster_resources().get("GPU", 0)
        items = [{"shard": s, "payload": p} for s, p in payloads]
        try:  # one block per shard, so idle actors pick up single shards
            ds = ray.data.from_items(items, override_num_blocks=len(items))
        except TypeError:  # Ray < 2.10
            ds = ray.data.from_items(items, parallelism=len(items))
        results = ds.map_batches(
            _ShardActor,
            fn_constructor_kwargs={
                "job": job.to_json(),
                "out": str(out),
                "threads": threads or 1,
                "task": task,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=1 if gpus else 0,
        )
        try:
            for row in results.iter_rows():
                on_result(dict(row))
        except Exception as err:  # Ray's own failures (a lost node, a broken cluster)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise JobError(
                f"the Ray run stopped ({type(err).__name__}: {first}); the finished shards are "
                "saved: re-run the same command to resume"
            ) from err
