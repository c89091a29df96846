"""Explain a search: index a gallery once, then every hit of every query is explained by one
matrix product (:class:`Index`), in Python, in the terminal (``dualex index`` / ``dualex
search``), in an HTML report and in a local web app (``dualex serve``)."""

from dualex.search.index import FusedExplanation, Hit, Index, model_fingerprint

__all__ = ["FusedExplanation", "Hit", "Index", "model_fingerprint"]
