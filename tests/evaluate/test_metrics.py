"""Metric functions on hand-made maps with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dualex.data.types import Negative
from dualex.evaluate import metrics as mt
from dualex.towers.positions import Geometry, ImagePositions

# a 4x4 grid over a 40x40 image: patch (r, c) covers x in [10c, 10c+10), y in [10r, 10r+10)
POS = ImagePositions(grid=(4, 4), prefix=1, geometry=Geometry.resize((40, 40), (40, 40)))


def _map(peak=(0, 0), value=1.0):
    m = np.zeros((4, 4))
    m[peak] = value
    return m


def test_pointing_game_inside_and_outside():
    box = (20.0, 0.0, 40.0, 20.0)  # patches (0,2),(0,3),(1,2),(1,3)
    assert mt.pointing_game(_map((1, 3)), [box], POS) == 1.0
    assert mt.pointing_game(_map((2, 2)), [box], POS) == 0.0
    # centre rule: box covering x 0..14 holds centre 5 of column 0 but not centre 15 of column 1
    assert mt.pointing_game(_map((0, 1)), [(0.0, 0.0, 14.0, 10.0)], POS) == 0.0
    assert mt.pointing_game(_map((0, 0)), [(0.0, 0.0, 14.0, 10.0)], POS) == 1.0
    # several boxes: any of them counts
    assert mt.pointing_game(_map((3, 0)), [box, (0.0, 30.0, 10.0, 40.0)], POS) == 1.0


def test_tiny_box_uses_patch_of_its_centre():
    tiny = (21.0, 21.0, 23.0, 23.0)  # no patch centre inside; its centre is in patch (2, 2)
    assert mt.box_mask(POS, [tiny]).sum() == 1 and mt.box_mask(POS, [tiny])[2, 2]
    assert mt.pointing_game(_map((2, 2)), [tiny], POS) == 1.0


def test_energy_in_box_shares():
    m = np.full((4, 4), -1.0)
    m[0, 0], m[3, 3], m[0, 1] = 3.0, 1.0, 0.0  # negative mass is ignored
    assert mt.energy_in_box(m, [(0.0, 0.0, 10.0, 10.0)], POS) == pytest.approx(0.75)
    assert mt.energy_in_box(m, [(30.0, 30.0, 40.0, 40.0)], POS) == pytest.approx(0.25)
    assert math.isnan(mt.energy_in_box(-np.ones((4, 4)), [(0, 0, 10, 10)], POS))
    assert mt.energy_in_box(torch.ones(4, 4), [(0.0, 0.0, 20.0, 20.0)], POS) == pytest.approx(
        4 / 16
    )


def test_text_metrics():
    special = [True, False, False, False, True]
    scores = np.array([9.0, 0.5, 2.0, -1.0, 8.0])  # specials ignored even when largest
    assert mt.text_pointing(scores, [2], special) == 1.0
    assert mt.text_pointing(scores, [1, 3], special) == 0.0
    assert mt.text_energy(scores, [2], special) == pytest.approx(2.0 / 2.5)
    assert mt.text_energy(scores, [3], special) == 0.0


def test_shape_mismatch_raises():
    from dualex.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        mt.pointing_game(np.zeros((3, 3)), [(0, 0, 1, 1)], POS)


def test_mismatch_sums_and_indicators():
    m_neg = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, -0.1], [2.0, 0.0]])
    m_pos = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 1.0], [2.0, 0.0]])
    out = mt.mismatch(m_neg, [2], [[1], [3]], m_pos, [2])
    assert out["mismatch"] == pytest.approx(0.4)
    assert out["matched"] == pytest.approx(2.0)
    assert out["positive"] == pytest.approx(4.0)
    assert out["below_matched"] == 1.0 and out["below_positive"] == 1.0
    assert math.isnan(mt.mismatch(m_neg, [2], [], m_pos, [2])["below_matched"])


def test_shift_span():
    neg = Negative(
        caption="a blue big circle and a star", kind="colour", span=(2, 6), original_span=(2, 5)
    )  # "red" -> "blue"
    assert mt.shift_span((0, 1), neg, "a red big circle and a star") == (0, 1)
    assert mt.shift_span((6, 16), neg, "") == (7, 17)
    assert mt.shift_span((2, 16), neg, "") is None


def test_mass_and_sign_ratio_on_hand_made_maps():
    inside = np.zeros((4, 4), dtype=bool)
    inside[:2, :2] = True  # the top-left quadrant
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = 3.0, 1.0  # right: positive inside
    m[3, 3] = -2.0  # right: negative outside
    m[0, 3] = 2.0  # wrong: positive outside
    m[1, 0] = -2.0  # wrong: negative inside
    assert mt.mass_ratio(m, inside) == pytest.approx((3 + 1 + 2) / 10)
    assert mt.sign_ratio(m, inside) == pytest.approx(3 / 16)  # zeros count as wrong
    assert mt.mass_ratio(torch.from_numpy(m), inside) == pytest.approx(0.6)
    perfect = np.where(inside, 1.0, -1.0)
    assert mt.mass_ratio(perfect, inside) == 1.0 and mt.sign_ratio(perfect, inside) == 1.0
    assert mt.mass_ratio(-perfect, inside) == 0.0 and mt.sign_ratio(-perfect, inside) == 0.0
    assert math.isnan(mt.mass_ratio(np.zeros((4, 4)), inside))
    with pytest.raises(mt.InvalidInputError, match="do not match"):
        mt.mass_ratio(np.zeros(5), inside)
