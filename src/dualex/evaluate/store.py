"""Resumable Parquet row store: parts written atomically, finished keys skipped on re-runs.

A run writes ``<dir>/parts/part-<tag>-<seq>.parquet`` files, one per flushed batch, each with an
atomic rename, so a kill loses at most the batch in progress; :meth:`RowStore.done` lists the keys
already written and :meth:`RowStore.consolidate` merges every part into one sorted file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.io import atomic_write

__all__ = ["RowStore"]


def _write_table(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(pa.Table.from_pylist(rows), tmp))


class RowStore:
    """Rows of one evaluation in ``out_dir``, keyed by a tuple of columns.

    Args:
        out_dir: Output folder.
        key: Columns that identify a row (e.g. ``("method", "sample_id", "mention")``).
        tag: Name of this writer's parts (e.g. the shard), so shards never collide.
    """

    def __init__(self, out_dir: str | os.PathLike[str], key: Sequence[str], tag: str = "0") -> None:
        self.dir = Path(out_dir)
        self.parts = self.dir / "parts"
        self.key = tuple(key)
        self.tag = tag
        self._buffer: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every row of every part (unsorted)."""
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        for p in sorted(self.parts.glob("part-*.parquet")):
            rows.extend(pq.read_table(p).to_pylist())
        return rows

    def done(self) -> set[tuple[Any, ...]]:
        """Keys of the rows already written."""
        return {tuple(r[k] for k in self.key) for r in self.read()}

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows (written at the next :meth:`flush`)."""
        self._buffer.extend(rows)

    def flush(self) -> Path | None:
        """Write the buffered rows as a new part (atomically); returns its path."""
        if not self._buffer:
            return None
        self.parts.mkdir(parents=True, exist_ok=True)
        seq = len(list(self.parts.glob(f"part-{self.tag}-*.parquet")))
        # the process id keeps two writers of the same shard from replacing each other's parts
        path = self.parts / f"part-{self.tag}-{seq:06d}-{os.getpid()}.parquet"
        while path.exists():
            seq += 1
            path = self.parts / f"part-{self.tag}-{seq:06d}-{os.getpid()}.parquet"
        _write_table(self._buffer, path)
        self._buffer = []
        return path

    def consolidate(self, name: str = "rows.parquet", order: Sequence[str] = ()) -> Path:
        """Merge every part into ``<dir>/<name>``, sorted by ``order`` then the key columns."""
        rows, seen = [], set()
        for r in self.read():  # a row written twice (concurrent writers) is kept once
            k = tuple(r[c] for c in self.key)
            if k not in seen:
                seen.add(k)
                rows.append(r)
        cols = tuple(order) + self.key
        rows.sort(key=lambda r: tuple(r[c] for c in cols))
        path = self.dir / name
        _write_table(rows, path)
        return path
