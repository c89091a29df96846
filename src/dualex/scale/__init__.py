"""Sharded, resumable dataset runs: explain or evaluate a whole dataset, locally or on Ray.

A :class:`Job` (model spec, data spec, task, methods, settings) runs in an output folder whose
manifest (``job.json``) makes re-running resume it; :func:`run_job` runs it with the local runner
(default, in-process) or the Ray runner (``backend="ray"`` or ``"ray:ADDRESS"``). See
docs/scale.md.
"""

from dualex.scale.job import Job, Manifest
from dualex.scale.run import RunResult, parse_backend, raise_on_failures, run_job

__all__ = ["Job", "Manifest", "RunResult", "parse_backend", "raise_on_failures", "run_job"]
