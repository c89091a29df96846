"""Heatmaps on the ORIGINAL image: the patch grid mapped back through the processor geometry.

A patch map ``[rows, cols]`` lives on the model's input (after resize and crop). Each original
pixel is mapped into model-input pixels with the explanation's :class:`Geometry`, and the map is
bilinearly interpolated between patch centres there. Pixels the model never saw (cut off by a
centre crop) get NaN: they are drawn dimmed, without colour.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from dualex.towers.positions import ImagePositions
from dualex.viz.colors import colorize, normalise, symmetric_range

OUTSIDE_DIM = 0.45
"""Brightness of pixels outside the model's crop."""


def upsample(
    heat: Any, positions: ImagePositions, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Bilinearly upsample a patch map to original-image pixels.

    Args:
        heat: ``[rows, cols]`` patch values (tensor or array).
        positions: The image side's positions (grid and geometry).
        size: ``(width, height)`` of the output raster; default the original image size. A
            smaller raster covers the same original image (for fast previews).

    Returns:
        ``[height, width]`` float64 values; NaN where the pixel lies outside the model's crop.
    """
    h = np.asarray(
        heat.detach().cpu().double().numpy() if hasattr(heat, "detach") else heat, dtype=np.float64
    )
    rows, cols = positions.grid
    if h.shape != (rows, cols):
        raise ValueError(f"heatmap shape {h.shape} does not match the patch grid {(rows, cols)}")
    geo = positions.geometry
    W, H = geo.original_size
    out_w, out_h = size or (W, H)
    in_w, in_h = geo.input_size
    sx, sy = geo.scale
    ox, oy = geo.offset
    # centres of output pixels in original pixels -> model-input pixels -> patch coordinates
    x = (np.arange(out_w) + 0.5) * (W / out_w)
    y = (np.arange(out_h) + 0.5) * (H / out_h)
    u = x * sx - ox
    v = y * sy - oy
    fu = u / (in_w / cols) - 0.5
    fv = v / (in_h / rows) - 0.5
    c0, wc = _bilinear_axis(fu, cols)
    r0, wr = _bilinear_axis(fv, rows)
    c1 = np.minimum(c0 + 1, cols - 1)
    r1 = np.minimum(r0 + 1, rows - 1)
    top = h[r0][:, c0] * (1 - wc) + h[r0][:, c1] * wc
    bottom = h[r1][:, c0] * (1 - wc) + h[r1][:, c1] * wc
    out = top * (1 - wr)[:, None] + bottom * wr[:, None]
    inside = ((u >= 0) & (u < in_w))[None, :] & ((v >= 0) & (v < in_h))[:, None]
    out[~inside] = np.nan
    return out


def _bilinear_axis(f: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower index and weight of the upper neighbour, clamped to the grid's edges."""
    f = np.clip(f, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(f).astype(int), max(n - 2, 0))
    return i0, f - i0


def blend(
    image: Image.Image | None,
    values: np.ndarray,
    vmax: float,
    *,
    positive_only: bool = False,
    alpha: float = 0.7,
) -> Image.Image:
    """Colour an upsampled map over an image.

    The colour's opacity grows with ``|value| / vmax`` (from ``0.25·alpha`` at 0 to ``alpha``
    at ``vmax``), so the photo stays readable where nothing interacts. NaN pixels (outside the
    model's crop) are dimmed and not coloured.

    Args:
        image: The original image, or ``None`` (a grey canvas is used).
        values: ``[H, W]`` map at the image's resolution (from :func:`upsample`).
        vmax: Colour range ``[-vmax, vmax]`` (``[0, vmax]`` when ``positive_only``).
        positive_only: Clip negative values to 0.
        alpha: Opacity of the strongest colour.

    Returns:
        An RGB image of ``values``' size.
    """
    H, W = values.shape
    base = (
        np.asarray(image.convert("RGB").resize((W, H), Image.BILINEAR), dtype=np.float64)
        if image is not None
        else np.full((H, W, 3), 128.0)
    )
    t = normalise(values, vmax, positive_only)
    rgb = colorize(t)
    a = alpha * (0.25 + 0.75 * np.abs(np.nan_to_num(t)))[..., None]
    out = base * (1 - a) + rgb * a
    outside = np.isnan(values)
    out[outside] = base[outside] * OUTSIDE_DIM
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def overlay(
    ex: Any,
    span: Any = None,
    *,
    vmax: float | None = None,
    positive_only: bool = False,
    alpha: float = 0.7,
    max_side: int | None = None,
) -> tuple[Image.Image, float]:
    """The heatmap of a caption span drawn over the explanation's original image.

    Args:
        ex: An :class:`~dualex.Explanation` with an image side.
        span: Caption span (see :meth:`Explanation.image_map`); ``None``: the whole caption.
        vmax: Colour range; ``None``: this map's own ``max |value|``. Pass a shared value to
            compare several panels.
        positive_only: Clip negative values to 0.
        alpha: Opacity of the strongest colour.
        max_side: Downscale the output so its longer side is at most this many pixels.

    Returns:
        ``(image, vmax)``: the overlay at the original image's aspect ratio and the range used.
    """
    heat = ex.image_map(span if span is not None else content_span(ex))
    pos = image_positions(ex)
    W, H = pos.geometry.original_size
    size = (W, H)
    if max_side and max(W, H) > max_side:
        k = max_side / max(W, H)
        size = (max(1, round(W * k)), max(1, round(H * k)))
    values = upsample(heat, pos, size)
    if vmax is None:
        vmax = symmetric_range(heat.clamp(min=0) if positive_only else heat)
    return blend(ex.image, values, vmax, positive_only=positive_only, alpha=alpha), vmax


def image_positions(ex: Any) -> ImagePositions:
    """The explanation's image-side positions."""
    for pos in (ex.b, ex.a):
        if isinstance(pos, ImagePositions):
            return pos
    from dualex.errors import InvalidInputError

    raise InvalidInputError(
        "this explanation has no image side; heatmaps need a caption–image pair"
    )


def content_span(ex: Any) -> list[int]:
    """Token indices of the caption without special tokens (all tokens if none remain)."""
    text = ex.text_positions
    idx = [i for i, s in enumerate(text.special) if not s]
    return idx or list(range(len(text)))


def crop_note(pos: Any) -> str:
    """What the dimmed bands of a heatmap are, when the processor crops the image (else ``""``)."""
    W, H = pos.geometry.original_size
    x0, y0, x1, y1 = pos.geometry.to_original((0, 0, *pos.geometry.input_size))
    if not (x0 > 0.5 or y0 > 0.5 or x1 < W - 0.5 or y1 < H - 0.5):
        return ""
    return (
        f"Dimmed bands: cut off by the processor's centre crop (the model sees x {max(x0, 0):.0f}–"
        f"{min(x1, W):.0f}, y {max(y0, 0):.0f}–{min(y1, H):.0f} of the {W}×{H} image, dashed on "
        "the image); they are not explained, so they have no colour."
    )
