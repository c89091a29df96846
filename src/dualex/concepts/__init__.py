"""Concepts behind an interaction: a concept dictionary shared by a dual encoder's two sides
(:class:`Concepts`), and every explanation split exactly into per-concept matrices
(:class:`ConceptSplit`, ``ex.concept_split(concepts)``)."""

from dualex.concepts.dictionary import ConceptExamples, Concepts, weights_fingerprint
from dualex.concepts.gaps import ConceptAgreement, concept_agreement
from dualex.concepts.split import ConceptSplit

__all__ = [
    "ConceptAgreement",
    "ConceptExamples",
    "ConceptSplit",
    "Concepts",
    "concept_agreement",
    "weights_fingerprint",
]
