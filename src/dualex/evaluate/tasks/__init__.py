"""Evaluation tasks, one file each: ``grounding``, ``mismatch``, ``grid``, ``faithfulness``.

A task turns the samples of one image into rows (``rows(model, group, settings, skip)``) keyed
by its ``KEY`` columns; it asks methods (:mod:`dualex.evaluate.methods`) for attributions
through one interface, so any method runs in any task that can use it. The dataset runner
(:mod:`dualex.scale`) runs every task the same way: sharded by image, resumable, locally or on
Ray.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from dualex.errors import SettingError
from dualex.evaluate.tasks.common import EvalSettings

__all__ = ["EVAL_TASKS", "EvalSettings", "EvalTask", "get"]


@dataclass(frozen=True)
class EvalTask:
    """An evaluation task, described as data.

    Attributes:
        name: The task's name (``dualex eval NAME``, ``Job.task``).
        module: Module of this package that defines ``KEY`` and the row function.
        rows: Name of the row function in ``module``.
        methods: Methods the task accepts (empty: every registered method).
    """

    name: str
    module: str
    rows: str
    methods: tuple[str, ...] = ()

    def load(self) -> tuple[tuple[str, ...], Any]:
        """``(key columns, row function)``."""
        mod = importlib.import_module(f"{__name__}.{self.module}")
        return tuple(mod.KEY), getattr(mod, self.rows)


EVAL_TASKS: dict[str, EvalTask] = {
    "grounding": EvalTask("grounding", "grounding", "grounding_rows"),
    "mismatch": EvalTask("mismatch", "mismatch", "mismatch_rows", ("dualex",)),
    "grid": EvalTask("grid", "grid", "grid_rows"),
    "faithfulness": EvalTask("faithfulness", "faithfulness", "faithfulness_rows"),
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
