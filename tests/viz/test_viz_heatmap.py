"""Heatmaps on the ORIGINAL image: geometry, bilinear upsampling, blending."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dualex.towers.positions import Geometry, ImagePositions
from dualex.viz.heatmap import OUTSIDE_DIM, blend, overlay, upsample


def positions(original=(96, 64), input_size=32, grid=4) -> ImagePositions:
    geo = Geometry.shortest_edge_center_crop(original, input_size, (input_size, input_size))
    return ImagePositions(grid=(grid, grid), prefix=1, geometry=geo)


def test_bilinear_upsampling_reproduces_a_linear_map_between_patch_centres():
    # original 64x48 -> resized to 42x32 (shortest edge 32) -> centre crop 32x32, 4x4 patches
    pos = positions((64, 48))
    geo = pos.geometry
    rows, cols = np.mgrid[0:4, 0:4]
    heat = 2.0 * cols - 3.0 * rows + 1.0  # linear in the patch coordinates
    up = upsample(heat, pos)
    assert up.shape == (48, 64), "[height, width] of the original image"
    x = (np.arange(64) + 0.5) * geo.scale[0] - geo.offset[0]  # model-input pixels
    y = (np.arange(48) + 0.5) * geo.scale[1] - geo.offset[1]
    fx, fy = x / 8 - 0.5, y / 8 - 0.5  # patch coordinates
    inner_x, inner_y = (fx >= 0) & (fx <= 3), (fy >= 0) & (fy <= 3)
    expect = 2.0 * fx[None, :] - 3.0 * fy[:, None] + 1.0
    np.testing.assert_allclose(
        up[np.ix_(inner_y, inner_x)],
        expect[np.ix_(inner_y, inner_x)],
        atol=1e-12,
        err_msg="bilinear interpolation between patch centres through the geometry",
    )
    assert inner_x.sum() > 30 and inner_y.sum() > 30


@pytest.mark.parametrize("original", [(96, 64), (64, 96), (50, 50), (120, 40)])
def test_planted_patch_lands_on_its_box_in_original_pixels(original):
    pos = positions(original)
    boxes = pos.patch_boxes()
    for k in (0, 5, 10, 15):
        heat = torch.zeros(4, 4, dtype=torch.float64)
        heat.view(-1)[k] = 1.0
        up = upsample(heat, pos)
        y, x = np.unravel_index(np.nanargmax(up), up.shape)
        x0, y0, x1, y1 = boxes[k]
        assert x0 <= x + 0.5 <= x1 and y0 <= y + 0.5 <= y1, (
            f"peak of patch {k} at pixel {(x, y)} is outside its box {boxes[k]} for {original}"
        )


def test_pixels_outside_the_crop_are_nan():
    pos = positions(
        (96, 64)
    )  # resized to 48x32, centre crop 32: 8 resized px = 16 px cut each side
    up = upsample(torch.ones(4, 4), pos)
    assert np.isnan(up[:, :16]).all() and np.isnan(up[:, 80:]).all(), "cropped-away columns"
    assert not np.isnan(up[:, 16:80]).any(), "every pixel the model saw has a value"


def test_upsample_to_a_smaller_raster_and_shape_check():
    pos = positions((96, 64))
    assert upsample(torch.ones(4, 4), pos, size=(48, 32)).shape == (32, 48)
    with pytest.raises(ValueError, match="does not match"):
        upsample(torch.ones(3, 3), pos)


def test_blend_colours_red_positive_blue_negative_and_dims_outside():
    base = Image.new("RGB", (4, 1), (128, 128, 128))
    values = np.array([[1.0, -1.0, 0.0, np.nan]])
    out = np.asarray(blend(base, values, vmax=1.0), dtype=int)
    assert out[0, 0, 0] > out[0, 0, 2] + 40, f"positive is red: {out[0, 0]}"
    assert out[0, 1, 2] > out[0, 1, 0] + 40, f"negative is blue: {out[0, 1]}"
    assert abs(out[0, 2] - 128).max() < 40, f"zero keeps the photo readable: {out[0, 2]}"
    assert (out[0, 3] == round(128 * OUTSIDE_DIM)).all(), "outside the crop: dimmed, no colour"
    pos_only = np.asarray(blend(base, values, vmax=1.0, positive_only=True), dtype=int)
    assert abs(pos_only[0, 1] - pos_only[0, 2]).max() <= 1, "positive-only: negatives look like 0"


def test_overlay_uses_the_original_image_and_its_own_or_a_shared_range(tiny_ex):
    im, vmax = overlay(tiny_ex, "red circle")
    assert im.size == tiny_ex.image.size, "the overlay is drawn on the ORIGINAL image"
    heat = tiny_ex.image_map("red circle")
    assert vmax == pytest.approx(float(heat.abs().max())), "default range: the map's max |v|"
    _, shared = overlay(tiny_ex, "red circle", vmax=3.0)
    assert shared == 3.0
    small, _ = overlay(tiny_ex, None, max_side=24)
    assert max(small.size) == 24
