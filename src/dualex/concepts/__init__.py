"""Concepts behind an interaction: a concept dictionary shared by a dual encoder's two sides
(:class:`Concepts`), and every explanation split exactly into per-concept matrices
(:class:`ConceptSplit`, ``ex.concept_split(concepts)``).

The names are imported on first use, so the command line can register ``dualex concepts``
without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualex.lazy import exports

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


__getattr__, __dir__ = exports(
    __name__, {name: f"dualex.concepts.{home}" for name, home in _HOMES.items()}
)
