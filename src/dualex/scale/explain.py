"""Explain every pair of a dataset, read the stored explanations back, and report K of them.

``dualex explain --data SPEC --out DIR`` runs the ``explain`` task: DIR gets one safetensors file
per shard (``explanations/shard-NNNNNN.safetensors``, written by
:meth:`dualex.Explanation.save_many`: the pairs in the one explanation format, keyed by pair id)
and the index
``index.parquet``: ``pair_id, idx, image_id, caption, image_path, score, completeness`` (relative
error), ``abs_error, file, key, error``. ``dualex report DIR --limit K --sort ...`` picks K pairs
from the index and writes the interactive HTML report of them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from dualex.errors import FileFormatError, SettingError

__all__ = [
    "SORTS",
    "explain_dataset",
    "load_explanation",
    "pair_name",
    "read_index",
    "report_dataset",
]

SORTS = {
    "worst-completeness": ("completeness", True),
    "best-completeness": ("completeness", False),
    "lowest-score": ("score", False),
    "highest-score": ("score", True),
    "index": ("idx", False),
}
"""``--sort`` choices of ``dualex report DIR``: column and descending?"""

SORT_TITLES = {
    "worst-completeness": "largest completeness error first",
    "best-completeness": "smallest completeness error first",
    "lowest-score": "lowest score first",
    "highest-score": "highest score first",
    "index": "in dataset order",
}
"""How a report of an explain run says the order its pairs were picked in."""

COLUMN_LABELS = {
    "completeness": "relative completeness error",
    "score": "score",
    "idx": "sample",
}
"""What the sort column of the index is, in a pair's name."""


def pair_name(row: dict[str, Any], sort: str) -> str:
    """A pair's name in the report of an explain run: its caption, its image, and the value it
    was picked by, labelled (e.g. ``relative completeness error 3.1e-05``)."""
    col = SORTS[sort][0]
    from dualex.data.types import is_generated

    path = row.get("image_path") or ""
    image = Path(path).name if path and not is_generated(path) else str(row.get("image_id") or "")
    value = row[col]
    shown = (
        f"{value:.2e}" if col == "completeness" else (f"{value:.4g}" if col == "score" else value)
    )
    where = f"{image}, " if image else ""
    return f"“{row['caption']}” ({where}{COLUMN_LABELS[col]} {shown})"


def explain_dataset(
    model: str,
    data: str,
    out: str | os.PathLike[str],
    *,
    layers: Any = None,
    steps: int | None = None,
    shard_size: int = 8,
    limit: int | None = None,
    backend: str = "local",
    workers: int = 1,
    threads: int | None = None,
    progress: bool = True,
    method: str = "dualex",
    budget: int | None = None,
    seed: int | None = None,
) -> Any:
    """Explain every caption–image pair of a dataset (resumable, local or on Ray).

    Args:
        model: Model spec.
        data: ``--data`` spec.
        out: Output folder.
        layers: Split layer(s).
        steps: Quadrature nodes (``None``: adaptive).
        shard_size: Fewest samples per shard.
        limit: Most samples to read.
        backend: ``local``, ``ray`` or ``ray:ADDRESS``.
        workers: Ray actors.
        threads: torch threads per Ray actor.
        progress: Show a progress bar.
        method: ``"dualex"`` or ``"banzhaf"`` (see :func:`dualex.explain`).
        budget: ``"banzhaf"``: tower passes per pair.
        seed: ``"banzhaf"``: sampling seed.

    Returns:
        The :class:`~dualex.scale.run.RunResult` (``rows`` is ``index.parquet``; a
        ``"banzhaf"`` run's rows also carry ``sampling_error``).

    Raises:
        JobError: if shards failed (the others are saved) or ``out`` holds another job.
    """
    from dualex.scale.job import Job
    from dualex.scale.run import raise_on_failures, run_job
    from dualex.scale.settings import to_settings
    from dualex.scale.tasks import ExplainSettings

    st = ExplainSettings(layers, steps, shard_size, limit, budget, seed)
    settings = to_settings(st, omit=st.unused(method))
    job = Job(model=model, data=data, task="explain", methods=(method,), settings=settings)
    result = run_job(job, out, backend=backend, workers=workers, threads=threads, progress=progress)
    raise_on_failures(result)
    return result


def read_index(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``<out>/index.parquet``.

    Raises:
        FileFormatError: if the folder has no index.
    """
    import pyarrow.parquet as pq

    path = Path(out) / "index.parquet"
    if not path.is_file():
        raise FileFormatError(
            f"{str(out)!r} has no index.parquet; run `dualex explain --data SPEC --out DIR` first"
        )
    return pq.read_table(path).to_pylist()


def load_explanation(out: str | os.PathLike[str], row: dict[str, Any]) -> Any:
    """The :class:`dualex.Explanation` of one index row (its image is read from the row's path;
    without a readable image the explanation has none).

    Raises:
        FileFormatError: if the row has no stored explanation or its file is unreadable.
    """
    from dualex.data.types import ImageRef
    from dualex.errors import InvalidInputError
    from dualex.explanation import Explanation

    if not row.get("file"):
        raise FileFormatError(
            f"pair {row.get('pair_id')!r} has no explanation ({row.get('error')})"
        )
    path = Path(out) / row["file"]
    try:
        ex = Explanation.load(path, key=row["key"])
    except FileFormatError as err:
        raise FileFormatError(
            f"cannot read pair {row['key']!r} from {str(path)!r} ({err}); re-run the explain job"
        ) from err
    image = None
    if row.get("image_path"):
        try:
            image = ImageRef(row["image_path"]).open()
        except InvalidInputError:
            image = None
    ex.raw_a, ex.raw_b = row["caption"], image
    return ex


def pick(rows: list[dict[str, Any]], limit: int, sort: str) -> list[dict[str, Any]]:
    """The ``limit`` explained rows first in ``sort`` order (ties by index).

    Raises:
        SettingError: on an unknown sort or a limit < 1.
    """
    if sort not in SORTS:
        raise SettingError(f"unknown --sort {sort!r}; choose from {', '.join(SORTS)}")
    if limit < 1:
        raise SettingError(f"--limit must be >= 1, got {limit}")
    col, desc = SORTS[sort]
    ok = [r for r in rows if r.get("file") and not _nan(r.get(col))]
    ok.sort(key=lambda r: ((-r[col] if desc else r[col]), r["idx"]))
    return ok[:limit]


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def report_dataset(
    out: str | os.PathLike[str],
    html: str | os.PathLike[str],
    *,
    limit: int = 20,
    sort: str = "worst-completeness",
    title: str | None = None,
    progress: Any = None,
) -> tuple[Path, int]:
    """Write the HTML report of ``limit`` pairs of an explain run, chosen by ``sort``.

    Returns:
        ``(path of the report, number of pairs in it)``.

    Raises:
        FileFormatError: if the folder has no index or no explained pair.
    """
    from dualex.viz.report import write_report

    rows = read_index(out)
    chosen = pick(rows, limit, sort)
    if not chosen:
        raise FileFormatError(f"{str(out)!r} has no explained pair (every row has an error)")
    exs = [load_explanation(out, r) for r in chosen]
    names = [pair_name(r, sort) for r in chosen]
    explained = sum(1 for r in rows if r.get("file"))
    default = (
        f"dualex: {len(exs)} of the {explained} explained pairs of {Path(out).resolve().name}, "
        f"{SORT_TITLES[sort]}"
    )
    path = write_report(exs, html, names=names, title=title or default, progress=progress)
    return path, len(exs)
