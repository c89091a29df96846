"""Explain a search: index a gallery once, then every hit of every query is explained by one
matrix product (:class:`Index`), in Python, in the terminal (``dualex index`` / ``dualex
search``), in an HTML report and in a local web app (``dualex serve``).

The names are imported on first use, so the command line can register ``dualex index`` /
``search`` / ``serve`` without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["FusedExplanation", "Hit", "Index", "model_fingerprint"]

if TYPE_CHECKING:  # pragma: no cover
    from dualex.search.index import FusedExplanation, Hit, Index, model_fingerprint


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(import_module("dualex.search.index"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dualex.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
