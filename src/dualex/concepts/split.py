"""The result of splitting one explanation into concepts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConceptSplit"]


@dataclass
class ConceptSplit:
    """An interaction matrix split into per-concept matrices (see :mod:`dualex.engine.concepts`).

    ``matrices.sum(0) + residual`` equals the explanation's matrix (float64, up to round-off).

    Attributes:
        matrices: ``[K', S_a, S_b]`` float64, one matrix per concept active in this pair, ordered
            by ``|share|`` (largest first).
        concepts: ``[K']`` the concepts' indices in the dictionary.
        names: The concepts' labels.
        residual: ``[S_a, S_b]`` float64: what the dictionary does not reconstruct (half of each
            side's unreconstructed part read by the other side), plus the float rounding of the
            stored matrix.
    """

    matrices: Tensor
    concepts: Tensor
    names: list[str]
    residual: Tensor

    @property
    def shares(self) -> Tensor:
        """``[K']``: each concept's sum of interactions (its part of ``Σ M``, signed)."""
        return self.matrices.sum(dim=(1, 2))

    @property
    def residual_share(self) -> float:
        """``Σ|residual| / Σ|M|``: the residual's share of the matrix's absolute mass."""
        total = (self.matrices.sum(0) + self.residual).abs().sum()
        return float(self.residual.abs().sum() / total) if total > 0 else 0.0

    def rows(self, indices: list[int]) -> Tensor:
        """``[K']``: each concept's interactions summed over the given rows (side a positions)."""
        return self.matrices[:, indices].sum(dim=(1, 2))

    def columns(self, indices: list[int]) -> Tensor:
        """``[K']``: each concept's interactions summed over the given columns (side b)."""
        return self.matrices[:, :, indices].sum(dim=(1, 2))

    def top(self, n: int = 5) -> list[tuple[int, str, float]]:
        """The ``n`` concepts of largest ``|share|`` as ``(index, name, share)``."""
        s = self.shares
        order = torch.argsort(s.abs(), descending=True)[:n].tolist()
        return [(int(self.concepts[i]), self.names[i], float(s[i])) for i in order]

    def __repr__(self) -> str:
        top = ", ".join(f"{name}={share:+.3g}" for _, name, share in self.top(3))
        return (
            f"ConceptSplit({len(self.names)} concepts: {top}; "
            f"residual share {self.residual_share:.3f})"
        )
