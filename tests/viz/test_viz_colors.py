"""The shared diverging colormap: centred at 0, symmetric range, same stops everywhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dualex.viz.colors import (
    STOPS,
    colorize,
    hex_colors,
    normalise,
    stops_rgb,
    symmetric_range,
    text_color,
)


def test_symmetric_range_covers_every_panel_and_ignores_nan():
    a = np.array([[0.1, -0.7], [np.nan, 0.2]])
    b = torch.tensor([0.3, -0.2])
    assert symmetric_range(a) == pytest.approx(0.7), "max |value| of one map, NaN ignored"
    assert symmetric_range(b) == pytest.approx(0.3)
    assert symmetric_range(a, b) == pytest.approx(0.7), "a shared range is the max over panels"
    assert symmetric_range(np.zeros(3)) > 0, "an all-zero map still gets a valid range"


def test_colorize_endpoints_and_centre():
    rgb = colorize(np.array([-1.0, 0.0, 1.0]))
    expect = np.array(stops_rgb())[[0, len(STOPS) // 2, -1]]
    np.testing.assert_allclose(rgb, expect, err_msg="-1, 0, +1 map to first, middle, last stop")
    assert STOPS[0] == "#053061" and STOPS[-1] == "#67001f", "blue negative, red positive"


def test_positive_is_red_negative_is_blue_and_clipped():
    pos, neg = colorize(np.array([0.6])).ravel(), colorize(np.array([-0.6])).ravel()
    assert pos[0] > pos[2], f"positive values are red, got {pos}"
    assert neg[2] > neg[0], f"negative values are blue, got {neg}"
    t = normalise([5.0, -5.0, 1.0], vmax=2.0)
    np.testing.assert_allclose(t, [1.0, -1.0, 0.5], err_msg="values beyond vmax are clipped")
    t = normalise([-1.0, 1.0], vmax=1.0, positive_only=True)
    np.testing.assert_allclose(t, [0.0, 1.0], err_msg="positive-only clips negatives to 0")


def test_hex_colors_and_ink():
    cols = hex_colors([-2.0, 0.0, 2.0], vmax=2.0)
    assert cols == [STOPS[0], STOPS[len(STOPS) // 2], STOPS[-1]], cols
    assert hex_colors([-1.0], 1.0, positive_only=True) == [STOPS[len(STOPS) // 2]]
    assert text_color("#053061") == "#ffffff" and text_color("#f7f7f7") == "#000000"
