"""dualex: what did a dual encoder match? Second-order token × patch interactions.

Implements Moeller et al., "Explaining Caption-Image Interactions in CLIP Models with
Second-Order Attributions" (TMLR 2025, https://arxiv.org/abs/2408.14153).
"""

from dualex.encoder import DualEncoder
from dualex.engine.interactions import Completeness
from dualex.errors import DualexError
from dualex.explainer import Projection, Projections, explain, project, project_many
from dualex.explanation import Explanation
from dualex.model import load, wrap

__version__ = "0.1.0"

__all__ = [
    "Completeness",
    "DualEncoder",
    "DualexError",
    "Explanation",
    "Projection",
    "Projections",
    "explain",
    "load",
    "project",
    "project_many",
    "wrap",
]
