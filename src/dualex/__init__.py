"""dualex: what did a dual encoder match? Second-order token × patch interactions.

Implements Moeller et al., "Explaining Caption-Image Interactions in CLIP Models with
Second-Order Attributions" (TMLR 2025, https://arxiv.org/abs/2408.14153).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualex.errors import DualexError
from dualex.lazy import exports

__version__ = "0.1.0"

_EXPORTS = {
    "Completeness": "dualex.engine.interactions",
    "Concepts": "dualex.concepts.dictionary",
    "DualEncoder": "dualex.encoder",
    "Projection": "dualex.explainer",
    "Projections": "dualex.explainer",
    "explain": "dualex.explainer",
    "project": "dualex.explainer",
    "project_many": "dualex.explainer",
    "Explanation": "dualex.explanation",
    "Index": "dualex.search.index",
    "load": "dualex.model",
    "wrap": "dualex.model",
}

__all__ = [
    "Completeness",
    "Concepts",
    "DualEncoder",
    "DualexError",
    "Explanation",
    "Index",
    "Projection",
    "Projections",
    "explain",
    "load",
    "project",
    "project_many",
    "wrap",
]

if TYPE_CHECKING:  # pragma: no cover
    from dualex.encoder import DualEncoder
    from dualex.engine.interactions import Completeness
    from dualex.explainer import Projection, Projections, explain, project, project_many
    from dualex.explanation import Explanation
    from dualex.model import load, wrap
    # Index (dualex.search.index) and Concepts (dualex.concepts) are not imported here even
    # for type checkers: their packages use the top-level API (``import dualex``), and the
    # import-graph test (tests/test_layers.py) counts every import, so the root module must
    # not import them back; the lazy export below resolves them at first use.


# the public API is imported on first use, so ``import dualex`` (and the CLI) imports no torch
__getattr__, __dir__ = exports(__name__, _EXPORTS)
