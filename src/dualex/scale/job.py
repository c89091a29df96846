"""A dataset job and its manifest: what to run, and which shards of it are finished.

A :class:`Job` is (model spec, data spec, task, methods, settings). Its manifest,
``<out>/job.json``, holds the job, the digest of the indexed dataset, the number of shards, and one
entry per finished or failed shard. Each finished shard is a Parquet part,
``<out>/parts/shard-NNNNNN.parquet``, written atomically by whoever ran it, before the manifest
records it; a part file is therefore proof that its shard is done, and a re-run skips it even if
the driver was killed before the manifest said so. A shard's part has a fixed name, so a shard
that runs twice (a retried worker, a resumed run) replaces its own part and never adds rows.

Only the driver writes the manifest (atomically, temporary file + rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualex.errors import JobError
from dualex.io import remove_partial

__all__ = ["FORMAT", "MANIFEST", "Job", "Manifest", "clear_partial", "part_name"]

FORMAT = "dualex-job/1"
MANIFEST = "job.json"
PARTS = "parts"


def part_name(shard: int) -> str:
    """Relative path of a shard's Parquet part, e.g. ``parts/shard-000003.parquet``."""
    return f"{PARTS}/shard-{shard:06d}.parquet"


def clear_partial(out: Path, shards: Iterable[int]) -> int:
    """Remove what a killed run's writes of ``shards`` left (temporary files), before they re-run.

    Every file of a shard is called ``shard-NNNNNN.*`` in a sub-folder of ``out`` (``parts/``,
    ``explanations/``, ``projections/``). Returns how many files were removed.
    """
    folders = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    return sum(len(remove_partial(f, f"shard-{s:06d}.*")) for s in shards for f in folders)


@dataclass(frozen=True)
class Job:
    """What a dataset run computes; two runs with equal jobs produce equal rows.

    Attributes:
        model: Model spec (``builtin``, ``hf:PATH``, ``random-clip:SEED``, ...) or, for a model
            object passed in-process, its name.
        data: Data spec (``synthetic:seed=1,n=10``, ``coco:IMAGES,ANN_DIR``, ...) or a label of
            in-process samples.
        task: ``grounding``, ``mismatch`` or ``explain``.
        methods: Methods the task runs (``dualex``, baselines).
        settings: The task's other settings (JSON-serialisable: layers, steps, text input,
            limit, shard size, ...).
    """

    model: str
    data: str
    task: str
    methods: tuple[str, ...] = ("dualex",)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The job as plain JSON values (tuples become lists)."""
        return json.loads(
            json.dumps(
                {
                    "model": self.model,
                    "data": self.data,
                    "task": self.task,
                    "methods": list(self.methods),
                    "settings": self.settings,
                },
                sort_keys=True,
            )
        )

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Job:
        """Inverse of :meth:`to_json`."""
        return cls(
            model=str(obj["model"]),
            data=str(obj["data"]),
            task=str(obj["task"]),
            methods=tuple(obj.get("methods") or ()),
            settings=dict(obj.get("settings") or {}),
        )


def _diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


class Manifest:
    """The manifest of one output folder (``<out>/job.json``).

    Use :meth:`open` to create it for a new job or to resume an existing one.

    Attributes:
        out: The output folder.
        job: The job.
        digest: Digest of the indexed dataset (the samples, their order and their images).
        n_shards: Number of shards of the plan.
        n_samples: Number of samples of the plan.
        shards: Shard id -> ``{"rows": int, "part": str}`` when done, ``{"error": str}`` when
            it failed.
    """

    def __init__(
        self, out: Path, job: Job, digest: str, n_shards: int, n_samples: int, shards: dict
    ) -> None:
        self.out = out
        self.job = job
        self.digest = digest
        self.n_shards = n_shards
        self.n_samples = n_samples
        self.shards: dict[int, dict[str, Any]] = shards

    @property
    def path(self) -> Path:
        """``<out>/job.json``."""
        return self.out / MANIFEST

    @classmethod
    def open(
        cls, out: str | os.PathLike[str], job: Job, digest: str, n_shards: int, n_samples: int
    ) -> Manifest:
        """Create the manifest of a new job, or load the one of the same job to resume it.

        Parts already on disk count as finished shards (the driver may have been killed between
        a part's commit and the manifest's update).

        Raises:
            JobError: if the folder holds a different job, the same job over different data,
                or results of an older dualex without a manifest.
        """
        out = Path(out)
        path = out / MANIFEST
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                old_job = raw["job"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise JobError(
                    f"{str(path)!r} is not a dualex job manifest ({err}); pass an empty --out "
                    "folder"
                ) from err
            if old_job != job.to_json():
                changes = "; ".join(_diff(old_job, job.to_json()))
                raise JobError(
                    f"{str(out)!r} holds a different job ({changes}); pass a new --out folder, "
                    "or delete this one to start over"
                )
            if raw.get("digest") != digest or raw.get("n_shards") != n_shards:
                raise JobError(
                    f"{str(out)!r} holds this job over different data (the dataset's samples, "
                    "order or images changed since it started); pass a new --out folder"
                )
            shards = {int(k): v for k, v in (raw.get("shards") or {}).items()}
            manifest = cls(out, job, digest, n_shards, n_samples, shards)
        else:
            if (out / PARTS).is_dir() and any((out / PARTS).iterdir()):
                raise JobError(
                    f"{str(out)!r} holds parts without a {MANIFEST} (a run of an older dualex); "
                    "pass a new --out folder"
                )
            manifest = cls(out, job, digest, n_shards, n_samples, {})
        manifest._adopt_parts()
        manifest.save()
        return manifest

    def _adopt_parts(self) -> None:
        for shard in range(self.n_shards):
            entry = self.shards.get(shard)
            if (self.out / part_name(shard)).is_file():
                if entry is None or "part" not in entry:
                    self.shards[shard] = {"part": part_name(shard), "rows": -1}
            elif entry is not None and "part" in entry:
                del self.shards[shard]  # a part deleted by hand: run the shard again

    def done(self) -> set[int]:
        """Shards whose part is committed."""
        return {s for s, e in self.shards.items() if "part" in e}

    def failed(self) -> dict[int, str]:
        """Shards that failed in the latest run, with their error."""
        return {s: e["error"] for s, e in self.shards.items() if "error" in e}

    def record(self, shard: int, *, rows: int = 0, error: str = "") -> None:
        """Record a shard's outcome (its part must already be committed when it succeeded)."""
        if error:
            self.shards[shard] = {"error": error}
        else:
            self.shards[shard] = {"part": part_name(shard), "rows": int(rows)}
        self.save()

    def save(self) -> None:
        """Write ``job.json`` atomically."""
        from dualex.io import atomic_write

        obj = {
            "format": FORMAT,
            "job": self.job.to_json(),
            "digest": self.digest,
            "n_shards": self.n_shards,
            "n_samples": self.n_samples,
            "shards": {str(k): self.shards[k] for k in sorted(self.shards)},
        }
        atomic_write(self.path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
