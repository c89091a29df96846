"""Per-item projections on disk: one safetensors file holds many :class:`Projection` objects.

A file holds, per item key ``K``, the tensors ``K.P`` (``[E, S]``, float32/float64 or float16),
``K.e`` (the embedding, ``[E]``) and ``K.r`` (the reference embedding, ``[E]``), and one metadata
entry ``dualex`` = JSON ``{"format", "items": {K: {positions, layer, steps, rule, error}}}``. The
embeddings always keep the model's dtype, so scores computed from a stored item are the model's
own; only ``P`` may be stored in float16 (:func:`half_error` measures what that costs).

Search indexes (:mod:`dualex.search`) and the ``index`` task of dataset jobs
(:mod:`dualex.scale.tasks`) write and read projections only through this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dualex.errors import FileFormatError, SettingError
from dualex.explainer import Projection
from dualex.towers.positions import positions_from_json

__all__ = ["DTYPES", "FORMAT", "half_error", "read_embeddings", "read_projections", "write"]

FORMAT = "dualex.projections/1"
DTYPES = ("float32", "float16")
"""Storage dtypes of ``P``: ``float32`` keeps the model's own dtype; ``float16`` halves it."""


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`DTYPES`.

    Raises:
        SettingError: otherwise.
    """
    if dtype not in DTYPES:
        raise SettingError(f"unknown storage dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return dtype


def stored_P(P: Tensor, dtype: str) -> Tensor:
    """``P`` as it is stored: unchanged for ``float32`` storage, rounded to float16 otherwise."""
    return P.to(torch.float16) if check_dtype(dtype) == "float16" else P


def half_error(P: Tensor) -> float:
    """Relative Frobenius error of storing ``P`` in float16: ``‖fp16(P) − P‖ / ‖P‖``."""
    exact = P.double()
    norm = float(exact.norm())
    err = float((P.to(torch.float16).double() - exact).norm())
    return err / norm if norm > 0 else err


def write(path: str | os.PathLike[str], items: Mapping[str, Projection], dtype: str) -> Path:
    """Write projections to one safetensors file, atomically.

    Args:
        path: The file.
        items: Item key -> projection (keys must not contain ``.``).
        dtype: Storage dtype of ``P`` (:data:`DTYPES`).

    Returns:
        The path.
    """
    from safetensors.torch import save_file

    from dualex.io import atomic_write

    tensors: dict[str, Tensor] = {}
    meta: dict[str, Any] = {}
    for key, p in items.items():
        if "." in key:
            raise SettingError(f"projection key {key!r} must not contain '.'")
        tensors[f"{key}.P"] = stored_P(p.P.detach().cpu(), dtype).contiguous()
        tensors[f"{key}.e"] = p.embedding.detach().cpu().contiguous()
        tensors[f"{key}.r"] = p.reference_embedding.detach().cpu().contiguous()
        meta[key] = {
            "positions": p.positions.to_json(),
            "layer": p.layer,
            "steps": p.steps,
            "rule": p.rule,
            "error": p.error,
        }
    # one metadata entry, so the file's bytes do not depend on a hash map's order
    header = {"dualex": json.dumps({"format": FORMAT, "items": meta}, sort_keys=True)}
    return atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=header))


def _open(path: Path) -> Any:
    from safetensors import safe_open

    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own error types
        raise FileFormatError(
            f"cannot read projections {str(path)!r} ({err}); rebuild the index"
        ) from err


def _meta(f: Any, path: Path) -> dict[str, Any]:
    raw = (f.metadata() or {}).get("dualex")
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"{str(path)!r} is not a dualex projections file; rebuild the index")
    return meta["items"]


def read_embeddings(path: str | os.PathLike[str], keys: Iterable[str]) -> Tensor:
    """The embeddings of ``keys`` in one file, ``[len(keys), E]`` (without reading ``P``)."""
    path = Path(path)
    with _open(path) as f:
        return torch.stack([f.get_tensor(f"{k}.e") for k in keys])


def read_projections(
    path: str | os.PathLike[str],
    keys: Iterable[str],
    raw: Mapping[str, Any] | None = None,
    *,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, Projection], dict[str, Any]]:
    """The projections of ``keys`` in one file, with ``P`` in the embeddings' dtype.

    Args:
        path: The file.
        keys: Item keys to read.
        raw: Item key -> the original input to attach (``Projection.raw``), if known.
        meta: The file's parsed metadata from an earlier call (parsing it is skipped), or None.

    Returns:
        ``(key -> projection, the file's parsed metadata)``.

    Raises:
        FileFormatError: if the file is unreadable or lacks a key.
    """
    path = Path(path)
    out: dict[str, Projection] = {}
    with _open(path) as f:
        if meta is None:
            meta = _meta(f, path)
        for k in keys:
            if k not in meta:
                raise FileFormatError(f"{str(path)!r} has no item {k!r}; rebuild the index")
            m = meta[k]
            e = f.get_tensor(f"{k}.e")
            out[k] = Projection(
                P=f.get_tensor(f"{k}.P").to(e.dtype),
                embedding=e,
                reference_embedding=f.get_tensor(f"{k}.r"),
                positions=positions_from_json(m["positions"]),
                layer=int(m["layer"]),
                steps=int(m["steps"]),
                rule=str(m["rule"]),
                error=float(m["error"]),
                raw=None if raw is None else raw.get(k),
            )
    return out, meta
