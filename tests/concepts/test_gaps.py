"""Knowledge gaps per concept: how often its two sides fire together on matching pairs."""

from __future__ import annotations

import torch

from dualex import Concepts
from dualex.concepts import concept_agreement
from tests.concepts.test_split import K, _directions, planted


def test_agreement_and_gaps_on_a_planted_model():
    V = _directions()
    model = planted(V)
    concepts = Concepts.from_directions(model, V.T, V, topk=2)
    pairs = []
    for n in range(8):
        x = torch.zeros(3, K, dtype=torch.float64)
        y = torch.zeros(2, K, dtype=torch.float64)
        x[0, 0], y[0, 0] = 1.0 + n, 2.0  # concept 0: on both sides of every pair
        x[1, 1] = 0.5  # concept 1: in every caption, never in the image
        if n % 2:
            y[1, 2] = 1.0  # concept 2: in half of the images only
        pairs.append((x, y))
    agr = concept_agreement(concepts, model, pairs)
    assert agr.pairs == 8
    assert agr.fires_a.tolist()[:3] == [1.0, 1.0, 0.0]
    assert agr.fires_b.tolist()[:3] == [1.0, 0.0, 0.5]
    assert float(agr.agreement[0]) == 1.0 and float(agr.agreement[1]) == 0.0
    assert float(agr.gap[1]) == 1.0 and float(agr.gap[0]) == 0.0
    assert torch.isnan(agr.gap[2])  # never on side a
    assert [g[0] for g in agr.gaps(2)] == [1, 0]
