"""The tasks a dataset job runs, one shard at a time: the evaluation tasks and ``explain``.

A task turns a shard's samples (grouped by image) into rows. The evaluation tasks
(``grounding``, ``mismatch``, ``grid``, ``faithfulness``) are the row functions of
:mod:`dualex.evaluate.tasks`; ``explain`` explains every
caption with its image and writes the explanations of the shard to one safetensors file
(``explanations/shard-NNNNNN.safetensors``: one ``[S_text, S_image]`` tensor per pair, keyed by
pair id, and one metadata entry ``dualex`` = JSON ``{"format", "pairs": {pair id: positions,
completeness, layers, model}}``) next to its rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.errors import DualexError, SettingError

__all__ = ["EXPLAIN_KEY", "TASKS", "Task", "explanation_file", "get_task", "image_groups"]

EXPLAIN_KEY = ("pair_id",)
EXPLANATIONS = "explanations"
EXPLANATIONS_FORMAT = "dualex.explanations/1"


def explanation_file(shard: int) -> str:
    """Relative path of a shard's explanations, e.g. ``explanations/shard-000003.safetensors``."""
    return f"{EXPLANATIONS}/shard-{shard:06d}.safetensors"


@dataclass(frozen=True)
class Task:
    """A task of dataset jobs.

    Attributes:
        name: The task's name (``Job.task``).
        key: Columns that identify a row.
        order: Columns the consolidated rows are sorted by first (then the key).
        rows: ``rows(model, samples, job, out, shard)`` → the shard's rows; it may write side
            files under ``out`` (atomically) before returning.
        methods: Methods the task accepts.
        table: File name of the consolidated rows in the output folder.
    """

    name: str
    key: tuple[str, ...]
    order: tuple[str, ...]
    rows: Callable[..., list[dict[str, Any]]]
    methods: tuple[str, ...]
    table: str = "rows.parquet"


def image_groups(samples: Sequence[tuple[int, Sample]]) -> list[list[tuple[int, Sample]]]:
    """Consecutive samples that share an image (a shard holds whole images)."""
    groups: list[list[tuple[int, Sample]]] = []
    for idx, s in samples:
        if groups and groups[-1][-1][1].image_id == s.image_id and s.image_id:
            groups[-1].append((idx, s))
        else:
            groups.append([(idx, s)])
    return groups


def _layers(value: Any) -> int | tuple[int, int] | None:
    if value is None or isinstance(value, int):
        return value
    return (int(value[0]), int(value[1]))


def eval_settings(job: Any) -> Any:
    """The :class:`~dualex.evaluate.tasks.EvalSettings` of an evaluation job."""
    from dualex.evaluate.tasks import EvalSettings

    st = job.settings
    return EvalSettings(
        methods=tuple(job.methods),
        text=str(st.get("text", "span")),
        layers=_layers(st.get("layers")),
        steps=st.get("steps"),
        batch=int(st.get("shard_size", 8)),
        limit=st.get("limit"),
        budget=int(st.get("budget", 1024)),
        coalitions=int(st.get("coalitions", 128)),
        seed=int(st.get("seed", 0)),
        protocol=str(st.get("protocol", "dualex")),
    )


def _evaluation(name: str) -> Callable[..., list[dict[str, Any]]]:
    """The shard function of evaluation task ``name`` (:mod:`dualex.evaluate.tasks`)."""

    def rows(model: Any, samples: Any, job: Any, out: Path, shard: int) -> list[dict[str, Any]]:
        from dualex.evaluate.tasks import get

        _key, row_fn = get(name).load()
        settings = eval_settings(job)
        found: list[dict[str, Any]] = []
        for group in image_groups(samples):
            found.extend(row_fn(model, group, settings))
            _release(group)
        return found

    return rows


def _release(group: Sequence[tuple[int, Sample]]) -> None:
    """Drop the decoded image of a finished group (a worker holds one image at a time)."""
    ref = group[0][1].image_ref
    if ref is not None:
        ref.release()


def _explain(model: Any, samples: Any, job: Any, out: Path, shard: int) -> list[dict[str, Any]]:
    """Explain every caption of the shard with its image; tensors go to one safetensors file."""
    import torch
    from safetensors.torch import save_file

    import dualex
    from dualex.io import atomic_write

    st = job.settings
    rel = explanation_file(shard)
    tensors: dict[str, torch.Tensor] = {}
    pairs: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    method = job.methods[0] if job.methods else "dualex"
    chosen = {} if method == "dualex" else {"method": method}
    chosen.update({k: st[k] for k in ("budget", "seed") if st.get(k) is not None})
    for group in image_groups(samples):
        try:
            proj: Any = dualex.project(
                model,
                texts=[s.caption for _, s in group],
                images=[group[0][1].image],
                layers=_layers(st.get("layers")),
                steps=st.get("steps"),
                **chosen,
            )
        except DualexError as err:
            proj = err
        for j, (idx, s) in enumerate(group):
            pair = s.caption_id or f"{s.image_id}#{idx}"
            row = {
                "idx": idx,
                "pair_id": pair,
                "image_id": s.image_id,
                "caption": s.caption,
                "image_path": _abs(s.image_path),
                "score": math.nan,
                "completeness": math.nan,
                "abs_error": math.nan,
                "file": "",
                "key": "",
                "error": "",
            }
            if method != "dualex":
                row["sampling_error"] = math.nan
            try:
                if isinstance(proj, DualexError):
                    raise proj
                ex = proj.explanation(j, 0)
                c = ex.completeness
                tensors[pair] = ex.matrix.detach().cpu().contiguous()
                pairs[pair] = {
                    "a": ex.a.to_json(),
                    "b": ex.b.to_json(),
                    "completeness": c.to_json(),
                    "layers": list(ex.layers),
                    "model": ex.model,
                }
                if method != "dualex":
                    pairs[pair].update(method=ex.method, settings=ex.settings)
                    row["sampling_error"] = float(ex.sampling_error or 0.0)
                row.update(
                    score=float(c.score),
                    completeness=float(c.relative_error),
                    abs_error=float(c.absolute_error),
                    file=rel,
                    key=pair,
                )
            except DualexError as err:
                row["error"] = str(err)
            rows.append(row)
        _release(group)
    if tensors:
        # one metadata entry: safetensors stores metadata in a hash map, whose order (and so the
        # file's bytes) would otherwise change from process to process
        meta = {"dualex": json.dumps({"format": EXPLANATIONS_FORMAT, "pairs": pairs})}
        atomic_write(out / rel, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return rows


def _abs(path: str) -> str:
    from dualex.data.types import is_generated

    if not path or is_generated(path):
        return path
    return str(Path(path).absolute())


TASKS: dict[str, Task] = {}


def _register() -> None:
    from dualex.evaluate.methods import METHODS
    from dualex.evaluate.tasks import EVAL_TASKS

    for name, task in EVAL_TASKS.items():
        key, _ = task.load()
        TASKS[name] = Task(name, key, ("idx",), _evaluation(name), task.methods or tuple(METHODS))
    TASKS["explain"] = Task(
        "explain", EXPLAIN_KEY, ("idx",), _explain, ("dualex", "banzhaf"), table="index.parquet"
    )


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        SettingError: on an unknown task.
    """
    if not TASKS:
        _register()
    if name not in TASKS:
        raise SettingError(f"unknown task {name!r}; choose from {', '.join(sorted(TASKS))}")
    return TASKS[name]
