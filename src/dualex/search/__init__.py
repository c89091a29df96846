"""Explain a search: index a gallery once, then every hit of every query is explained by one
matrix product (:class:`Index`), in Python, in the terminal (``dualex index`` / ``dualex
search``), in an HTML report and in a local web app (``dualex serve``).

The names are imported on first use, so the command line can register ``dualex index`` /
``search`` / ``serve`` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualex.lazy import exports

__all__ = ["FusedExplanation", "Hit", "Index", "model_fingerprint"]

if TYPE_CHECKING:  # pragma: no cover
    from dualex.search.index import FusedExplanation, Hit, Index, model_fingerprint


__getattr__, __dir__ = exports(__name__, dict.fromkeys(__all__, "dualex.search.index"))
