"""Embedding diagnostics, the contrastive loss and recall against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from dualex.train import diagnostics as dg
from dualex.train.monitor import contrastive_loss, recall_at

E1, E2 = [1.0, 0.0], [0.0, 1.0]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gap_alignment_uniformity_by_hand():
    img = t([E1, E2])
    txt = t([E1, [-1.0, 0.0]])
    # means (0.5, 0.5) and (0, 0): distance sqrt(0.5)
    assert dg.modality_gap(img, txt) == pytest.approx(math.sqrt(0.5), abs=1e-12)
    # pair 0 coincides, pair 1 is (0,1) vs (-1,0): squared distance 2 -> mean 1
    assert dg.alignment(img, txt) == pytest.approx(1.0, abs=1e-12)
    # one pair at squared distance 2: log exp(-4) = -4; antipodal texts: -8
    assert dg.uniformity(img) == pytest.approx(-4.0, abs=1e-12)
    assert dg.uniformity(txt) == pytest.approx(-8.0, abs=1e-12)
    three = t([E1, E2, [-1.0, 0.0]])  # squared distances 2, 4, 2
    want = math.log((2 * math.exp(-4) + math.exp(-8)) / 3)
    assert dg.uniformity(three) == pytest.approx(want, abs=1e-12)
    assert math.isnan(dg.uniformity(t([E1])))


def test_separability_extremes():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(t([E1] * 20) + 0.05 * torch.randn(20, 2, generator=g,
                                        dtype=torch.float64), dim=1)  # fmt: skip
    txt = torch.nn.functional.normalize(t([E2] * 20) + 0.05 * torch.randn(20, 2, generator=g,
                                        dtype=torch.float64), dim=1)  # fmt: skip
    assert dg.gap_separability(img, txt) == 1.0
    # the same points in both modalities: every prediction is wrong for one of the two copies
    assert dg.gap_separability(img, img.clone()) == 0.5
    d = dg.diagnostics(img, txt)
    assert set(d) == {"gap", "gap_logreg", "alignment", "uniformity_image", "uniformity_text"}


def test_contrastive_loss_by_hand():
    img = t([E1, E2])
    txt = t([E1, E2])
    s = torch.tensor(2.0, dtype=torch.float64)
    # logits 2*I: each row's CE is log(1 + e^-2), the same in both directions
    assert float(contrastive_loss(img, txt, s)) == pytest.approx(math.log(1 + math.exp(-2)))
    # two captions of one image: the other caption is no negative, the loss is 0
    assert float(contrastive_loss(img, txt, s, groups=torch.tensor([0, 0]))) == pytest.approx(0)
    # a hard negative equal to E2: image 0 sees logits [2, 0, 0], image 1 [0, 2, 2]
    neg = t([E2])
    i2t = (math.log(1 + 2 * math.exp(-2)) + math.log(2 + math.exp(-2))) / 2
    t2i = math.log(1 + math.exp(-2))
    got = float(contrastive_loss(img, txt, s, negatives=neg))
    assert got == pytest.approx((i2t + t2i) / 2, abs=1e-12)


def test_recall_at_by_hand():
    sims = t([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    correct = torch.eye(3, dtype=torch.bool)
    # row 0: top1 is col 0 (hit); row 1: top1 col 2 (miss), top2 {2, 1} hit; row 2: miss, miss
    assert recall_at(sims, correct, 1) == pytest.approx(1 / 3)
    assert recall_at(sims, correct, 2) == pytest.approx(2 / 3)
    assert recall_at(sims, correct, 5) == 1.0
