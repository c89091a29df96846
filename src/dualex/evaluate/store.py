"""Atomic writes of dataset-run outputs: text files and Parquet tables; merging shard parts.

Resuming is the manifest's job (:mod:`dualex.scale.job`): each finished shard is one Parquet part
with a fixed name, so a re-run skips finished shards by looking at file names, never by loading
rows, and :func:`consolidate` merges the parts into one sorted table at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "consolidate", "write_table"]


def atomic_write_text(path: Path, text: str) -> Path:
    """Write a text file atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_table(rows: Any, path: Path) -> Path:
    """Write rows (a list of dicts, or a ``pyarrow.Table``) as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def consolidate(
    parts: Sequence[Path], path: Path, key: Sequence[str], order: Sequence[str] = ()
) -> Path:
    """Merge Parquet parts into ``path``, sorted by ``order`` then ``key`` (atomically).

    Empty parts (shards without rows) are skipped. A key that occurs in two parts is an error
    of the caller (parts of distinct shards never share keys), so rows are not de-duplicated.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [t for t in (pq.read_table(p) for p in parts) if t.num_columns and t.num_rows]
    if not tables:
        return write_table([], path)
    table = pa.concat_tables(tables, promote_options="default")
    cols = [c for c in (*order, *key) if c in table.column_names]
    if cols:
        table = table.sort_by([(c, "ascending") for c in dict.fromkeys(cols)])
    return write_table(table, path)
