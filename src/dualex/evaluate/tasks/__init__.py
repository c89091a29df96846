"""Evaluation tasks, one file each: ``grounding``, ``mismatch``, ``grid``, ``faithfulness``.

A task turns the samples of one image into rows (``rows(model, group, settings)``) keyed
by its ``KEY`` columns; it asks methods (:mod:`dualex.evaluate.methods`) for attributions
through one interface, so any method runs in any task that can use it. Importing this module
registers every task as a job kind of the dataset runner (:func:`dualex.scale.tasks.register`),
which runs them all the same way: sharded by image, resumable, locally or on Ray, with the
settings of the job read back as :class:`EvalSettings`.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.errors import SettingError
from dualex.evaluate.tasks.common import EvalSettings
from dualex.scale.settings import from_settings
from dualex.scale.tasks import Task, image_groups, register, release

__all__ = ["EVAL_TASKS", "EvalSettings", "EvalTask", "get"]


@dataclass(frozen=True)
class EvalTask:
    """An evaluation task, described as data.

    Attributes:
        name: The task's name (``dualex eval NAME``, ``Job.task``).
        module: Module of this package that defines ``KEY`` and the row function.
        rows: Name of the row function in ``module``.
        methods: Methods the task accepts (empty: every registered method).
        settings: :class:`EvalSettings` fields the task itself reads beyond the common ones
            (a job records them).
    """

    name: str
    module: str
    rows: str
    methods: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()

    def load(self) -> tuple[tuple[str, ...], Any]:
        """``(key columns, row function)``."""
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return tuple(mod.KEY), getattr(mod, self.rows)


EVAL_TASKS: dict[str, EvalTask] = {
    "grounding": EvalTask("grounding", "grounding", "grounding_rows"),
    "mismatch": EvalTask("mismatch", "mismatch", "mismatch_rows", ("dualex",)),
    "grid": EvalTask("grid", "grid", "grid_rows"),
    "faithfulness": EvalTask(
        "faithfulness", "faithfulness", "faithfulness_rows", settings=("coalitions", "seed")
    ),
}
"""Every evaluation task by name."""


def get(name: str) -> EvalTask:
    """The task called ``name``.

    Raises:
        SettingError: on an unknown name.
    """
    if name not in EVAL_TASKS:
        raise SettingError(f"unknown task {name!r}; choose from {', '.join(EVAL_TASKS)}")
    return EVAL_TASKS[name]


def job_rows(
    name: str, model: Any, samples: Any, job: Any, out: Path, shard: int
) -> list[dict[str, Any]]:
    """The rows of one shard of a job of task ``name`` (the runner's ``Task.rows``)."""
    _key, row_fn = get(name).load()
    settings = from_settings(EvalSettings, job.settings, methods=job.methods)
    found: list[dict[str, Any]] = []
    for group in image_groups(samples):
        found.extend(row_fn(model, group, settings))
        release(group)
    return found


def _register() -> None:
    from dualex.evaluate.methods import METHODS

    for name, task in EVAL_TASKS.items():
        key, _ = task.load()
        methods = task.methods or tuple(METHODS)
        register(Task(name, key, ("idx",), functools.partial(job_rows, name), methods))


_register()
