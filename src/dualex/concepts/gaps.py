"""Knowledge gaps in concept terms: how often a concept's two sides fire together on matching
pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ConceptAgreement", "concept_agreement"]


@dataclass
class ConceptAgreement:
    """Per concept, how its text side and its image side fire on matching pairs.

    A concept *fires* on an input when it is among the top-k of the code of the input's
    ``(e − ē)/‖e‖`` with a positive activation.

    Attributes:
        names: The concepts' labels.
        fires_a: ``[K]`` share of pairs on which it fires on side a (the text, for CLIP).
        fires_b: ``[K]`` share of pairs on which it fires on side b (the image).
        both: ``[K]`` share of pairs on which it fires on both sides.
        pairs: Number of pairs.
    """

    names: list[str]
    fires_a: Tensor
    fires_b: Tensor
    both: Tensor
    pairs: int

    @property
    def agreement(self) -> Tensor:
        """``[K]`` cross-modal agreement: both sides / either side (NaN when it never fires)."""
        either = self.fires_a + self.fires_b - self.both
        return torch.where(either > 0, self.both / either.clamp_min(1e-12), torch.nan)

    @property
    def gap(self) -> Tensor:
        """``[K]`` the share of side-a firings without side b: a concept the caption carries and
        the image does not (NaN when it never fires on side a)."""
        return torch.where(
            self.fires_a > 0, 1 - self.both / self.fires_a.clamp_min(1e-12), torch.nan
        )

    def gaps(self, n: int = 10, min_rate: float = 0.02) -> list[tuple[int, str, float, float]]:
        """The ``n`` concepts with the largest gap among those firing on at least ``min_rate``
        of side a: ``(index, name, gap, side-a rate)``."""
        g = torch.where(self.fires_a >= min_rate, self.gap, torch.nan)
        order = [int(i) for i in torch.argsort(torch.nan_to_num(g, nan=-1.0), descending=True)]
        return [
            (i, self.names[i], float(g[i]), float(self.fires_a[i]))
            for i in order[:n]
            if not torch.isnan(g[i])
        ]


def concept_agreement(
    concepts: Any, model: Any, data: Any, *, pairs: int | None = None, batch_size: int = 64
) -> ConceptAgreement:
    """Measure each concept's cross-modal agreement on matching pairs of a dataset.

    Args:
        concepts: The :class:`dualex.Concepts` of the model.
        model: The dual encoder (checked against the dictionary).
        data: A ``--data`` spec, Samples, ``(a, b)`` pairs or sentences (as for training).
        pairs: Use at most this many pairs.
        batch_size: Inputs per pass.

    Returns:
        A :class:`ConceptAgreement`.

    Raises:
        ModelMismatchError: if the dictionary belongs to another model.
    """
    from dualex.concepts.dictionary import _pairs
    from dualex.explainer import project
    from dualex.model import load

    if isinstance(model, str):
        model = load(model)
    concepts.check(model)
    items, _ = _pairs(data, model, pairs)
    fa, fb = [], []
    for start in range(0, len(items), 256):
        chunk = items[start : start + 256]
        # one node: only the embeddings and the reference embeddings are used
        proj = project(
            model,
            a=[p.a for p in chunk],
            b=[p.b for p in chunk],
            steps=1,
            batch_size=batch_size,
            progress=False,
        )
        for side, out in ((proj.a, fa), (proj.b, fb)):
            T = torch.stack(
                [
                    (p.embedding.double() - p.reference_embedding.double())
                    / p.embedding.double().norm()
                    for p in side
                ]
            )
            out.append(concepts.encode(T) > 0)
    A, B = torch.cat(fa).double(), torch.cat(fb).double()
    return ConceptAgreement(
        names=concepts.names,
        fires_a=A.mean(0),
        fires_b=B.mean(0),
        both=(A * B).mean(0),
        pairs=len(items),
    )
