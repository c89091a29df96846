"""Atomic writes of dataset-run tables (Parquet) and the merge of shard parts into one table.

Resuming is the manifest's job (:mod:`dualex.scale.job`): each finished shard is one Parquet part
with a fixed name, so a re-run skips finished shards by looking at file names, never by loading
rows, and :func:`consolidate` merges the parts into one sorted table at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dualex.io import atomic_write

__all__ = ["consolidate", "write_table"]


def write_table(rows: Any, path: Path) -> Path:
    """Write rows (a list of dicts, or a ``pyarrow.Table``) as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(list(rows))
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp))


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
