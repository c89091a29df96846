"""The job kinds of the runner: a registry that packages fill, plus ``explain`` and ``index``.

A task turns a shard's samples (grouped by image) into rows. The runner knows tasks only through
this registry: :func:`register` adds one (the evaluation tasks of :mod:`dualex.evaluate.tasks`
register themselves when that module is imported) and :func:`get_task` finds it. This module
defines two: ``explain`` explains every
caption with its image and writes the explanations of the shard to one safetensors file
(``explanations/shard-NNNNNN.safetensors``, keyed by pair id) with
:meth:`dualex.Explanation.save_many`, so a pair read back carries every field a single
explanation does, next to its rows. ``index`` projects each image (and, if asked,
each caption) once and writes the shard's projections to
``projections/shard-NNNNNN.safetensors`` (:mod:`dualex.projection_store`), one row per item, for
:class:`dualex.search.Index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.data.types import Sample
from dualex.errors import DualexError, SettingError
from dualex.scale.settings import from_settings

__all__ = [
    "EXPLAIN_KEY",
    "TASKS",
    "ExplainSettings",
    "IndexSettings",
    "Task",
    "explanation_file",
    "get_task",
    "image_groups",
    "projection_file",
    "register",
    "release",
]

EXPLAIN_KEY = ("pair_id",)
EXPLANATIONS = "explanations"


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


@dataclass(frozen=True)
class ExplainSettings:
    """Settings of an ``explain`` job (``Job.settings`` through :func:`to_settings`).

    Attributes:
        layers: Split layer(s) (``None``: the last block's input).
        steps: Quadrature nodes (``None``: adaptive).
        shard_size: Fewest samples per shard.
        limit: Most samples to read.
        budget: ``banzhaf``: tower passes per pair (``None``: its default).
        seed: ``banzhaf``: sampling seed (``None``: its default).
    """

    layers: int | tuple[int, int] | None = None
    steps: int | None = None
    shard_size: int = 8
    limit: int | None = None
    budget: int | None = None
    seed: int | None = None

    @staticmethod
    def unused(method: str) -> set[str]:
        """Fields a job of ``method`` does not record: a dualex run's settings (and so its job)
        are as they always were."""
        return {"budget", "seed"} if method == "dualex" else set()


@dataclass(frozen=True)
class IndexSettings:
    """Settings of an ``index`` job (built by :meth:`dualex.search.Index.build`).

    Attributes:
        layers: ``(text tower layer, image tower layer)``.
        steps: Quadrature nodes (``None``: adaptive).
        rule: Quadrature rule (``None``: the default).
        dtype: Stored precision, ``float32`` or ``float16``.
        images: Project the images.
        texts: Project the captions.
        text_tower: The tower that projects texts: ``"a"``, or ``"b"`` for text–text models.
        shard_size: Fewest samples per shard.
        limit: Most samples to read.
        fingerprint: The model's fingerprint (part of the job: another model is another job).
    """

    layers: tuple[int | None, int | None] = (None, None)
    steps: int | None = None
    rule: str | None = None
    dtype: str = "float32"
    images: bool = True
    texts: bool = False
    text_tower: str = "a"
    shard_size: int = 8
    limit: int | None = None
    fingerprint: str = ""


def release(group: Sequence[tuple[int, Sample]]) -> None:
    """Drop the decoded image of a finished group (a worker holds one image at a time)."""
    ref = group[0][1].image_ref
    if ref is not None:
        ref.release()


def _explain(model: Any, samples: Any, job: Any, out: Path, shard: int) -> list[dict[str, Any]]:
    """Explain every caption of the shard with its image; the explanations go to one file
    written by :meth:`dualex.Explanation.save_many` (the format of a single explanation)."""
    import dualex
    from dualex.model import model_weights

    st = from_settings(ExplainSettings, job.settings)
    rel = explanation_file(shard)
    weights = model_weights(model, job.model)
    explained: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    method = job.methods[0] if job.methods else "dualex"
    chosen = {} if method == "dualex" else {"method": method}
    chosen.update({k: getattr(st, k) for k in ("budget", "seed") if getattr(st, k) is not None})
    for group in image_groups(samples):
        try:
            proj: Any = dualex.project(
                model,
                texts=[s.caption for _, s in group],
                images=[group[0][1].image],
                layers=st.layers,
                steps=st.steps,
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
                ex.weights = weights
                c = ex.completeness
                explained[pair] = ex
                if method != "dualex":
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
        release(group)
    if explained:
        dualex.Explanation.save_many(explained, out / rel)
    return rows


PROJECTIONS = "projections"


def projection_file(shard: int) -> str:
    """Relative path of a shard's projections, e.g. ``projections/shard-000003.safetensors``."""
    return f"{PROJECTIONS}/shard-{shard:06d}.safetensors"


def _gallery_image(s: Sample) -> Any:
    """The image of an index sample: a path given by the user is read as ``explain`` reads it
    (EXIF orientation applied); dataset images as their loader stores them."""
    from dualex.towers.inputs import load_image

    ref = s.image_ref
    if ref is not None and s.meta.get("exif"):
        return load_image(ref.path)
    return s.image


def _index(model: Any, samples: Any, job: Any, out: Path, shard: int) -> list[dict[str, Any]]:
    """Project the shard's images (once per image) and, if asked, its captions; the projections
    go to one safetensors file (:mod:`dualex.projection_store`), one row per item."""
    from dualex.explainer import project_many
    from dualex.projection_store import half_error, write

    st = from_settings(IndexSettings, job.settings)
    la, lb = st.layers
    opts = {"steps": st.steps, "rule": st.rule}
    dtype = st.dtype
    rel = projection_file(shard)
    rows: list[dict[str, Any]] = []
    todo: dict[str, list[tuple[str, Any, dict[str, Any]]]] = {"image": [], "text": []}
    for group in image_groups(samples):
        idx0, s0 = group[0]
        if st.images and s0.meta.get("item", "both") != "text":
            row = {"kind": "image", "idx": idx0, "id": s0.image_id or str(idx0)}
            row.update(path=_abs(s0.image_path), caption="", key=f"i{idx0}")
            try:
                todo["image"].append((row["key"], _gallery_image(s0), row))
            except DualexError as err:
                row["error"] = str(err)
            rows.append(row)
        if st.texts:
            for idx, s in group:
                item = s.meta.get("item", "both")
                if item == "image":
                    continue
                row = {"kind": "text", "idx": idx, "id": s.caption_id or str(idx)}
                path = "" if item == "text" else _abs(s.image_path)
                row.update(path=path, caption=s.caption, key=f"t{idx}")
                todo["text"].append((row["key"], s.caption, row))
                rows.append(row)
        release(group)
    done = {}
    with model.session():
        for kind, tower, layer in (
            ("image", model.tower_b, lb),
            (
                "text",
                *((model.tower_b, lb) if st.text_tower == "b" else (model.tower_a, la)),
            ),
        ):
            items = todo[kind]
            if not items:
                continue
            projs = project_many(tower, [x for _, x, _ in items], layer=layer, **opts)
            for (key, _, row), p in zip(items, projs, strict=True):
                done[key] = p
                row["p_error"] = half_error(p.P) if dtype == "float16" else 0.0
    for row in rows:
        ok = row["key"] in done
        row.update(
            file=rel if ok else "",
            error=row.get("error", "") if not ok else "",
            p_error=row.get("p_error", math.nan),
        )
    if done:
        write(out / rel, done, dtype)
    return rows


def _abs(path: str) -> str:
    from dualex.data.types import is_generated

    if not path or is_generated(path):
        return path
    return str(Path(path).absolute())


TASKS: dict[str, Task] = {}
"""Every registered task by name."""


def register(task: Task) -> Task:
    """Add (or replace) a job kind; returns it.

    Its ``rows`` function should be importable by name (a module-level function, or a
    :func:`functools.partial` of one): the Ray runner sends the task to its workers.
    """
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        SettingError: on an unknown task.
    """
    if name not in TASKS:
        raise SettingError(
            f"unknown task {name!r}; choose from {', '.join(sorted(TASKS))} (a package's tasks "
            "are registered when it is imported)"
        )
    return TASKS[name]


register(
    Task("explain", EXPLAIN_KEY, ("idx",), _explain, ("dualex", "banzhaf"), table="index.parquet")
)
register(Task("index", ("key",), ("idx",), _index, ("dualex",), table="items.parquet"))
