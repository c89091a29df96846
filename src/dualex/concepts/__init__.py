"""Concepts behind an interaction: a concept dictionary shared by a dual encoder's two sides
(:class:`Concepts`), and every explanation split exactly into per-concept matrices
(:class:`ConceptSplit`, ``ex.concept_split(concepts)``).

The names are imported on first use, so the command line can register ``dualex concepts``
without importing torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "ConceptAgreement",
    "ConceptExamples",
    "ConceptSplit",
    "Concepts",
    "concept_agreement",
    "weights_fingerprint",
]

_HOMES = {
    "ConceptExamples": "dictionary",
    "Concepts": "dictionary",
    "weights_fingerprint": "dictionary",
    "ConceptAgreement": "gaps",
    "concept_agreement": "gaps",
    "ConceptSplit": "split",
}

if TYPE_CHECKING:  # pragma: no cover
    from dualex.concepts.dictionary import ConceptExamples, Concepts, weights_fingerprint
    from dualex.concepts.gaps import ConceptAgreement, concept_agreement
    from dualex.concepts.split import ConceptSplit


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        value = getattr(import_module(f"dualex.concepts.{_HOMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dualex.concepts' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
