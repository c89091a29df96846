"""The one diverging colormap every dualex view uses: blue negative, near-white 0, red positive.

Heatmaps, token highlights, the matplotlib figure and the HTML report all read the same stops,
so a colour means the same value everywhere. The stops are ColorBrewer's 11-class RdBu scheme,
ordered from the most negative (dark blue) to the most positive (dark red) value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STOPS: tuple[str, ...] = (
    "#053061",
    "#2166ac",
    "#4393c3",
    "#92c5de",
    "#d1e5f0",
    "#f7f7f7",
    "#fddbc7",
    "#f4a582",
    "#d6604d",
    "#b2182b",
    "#67001f",
)
"""Colour stops at evenly spaced values from ``-vmax`` (first) to ``+vmax`` (last)."""

_RGB = np.array([[int(s[i : i + 2], 16) for i in (1, 3, 5)] for s in STOPS], dtype=np.float64)


def stops_rgb() -> list[list[int]]:
    """The stops as ``[[r, g, b], ...]`` (0–255), for embedding in the HTML report."""
    return _RGB.astype(int).tolist()


def symmetric_range(*values: object, floor: float = 1e-12) -> float:
    """``vmax`` of a symmetric colour range ``[-vmax, vmax]`` covering every given array.

    Args:
        *values: Arrays / tensors / numbers; NaNs are ignored. Pass several for a range shared
            across panels.
        floor: Smallest range returned (an all-zero map still gets a valid range).

    Returns:
        ``max |v|`` over all values, at least ``floor``.
    """
    vmax = 0.0
    for v in values:
        a = np.abs(np.asarray(_to_numpy(v), dtype=np.float64))
        if a.size and np.isfinite(a).any():
            vmax = max(vmax, float(np.nanmax(a)))
    return max(vmax, floor)


def normalise(values: object, vmax: float, positive_only: bool = False) -> np.ndarray:
    """Map values to ``t`` in ``[-1, 1]`` (``[0, 1]`` when ``positive_only``); NaN stays NaN."""
    a = np.asarray(_to_numpy(values), dtype=np.float64) / max(float(vmax), 1e-300)
    lo = 0.0 if positive_only else -1.0
    return np.clip(a, lo, 1.0)


def colorize(t: np.ndarray) -> np.ndarray:
    """RGB colours of normalised values.

    Args:
        t: ``[...]`` values in ``[-1, 1]`` (NaN allowed; it maps to the centre colour).

    Returns:
        ``[..., 3]`` float RGB in ``[0, 255]``, linearly interpolated between the stops.
    """
    t = np.nan_to_num(np.asarray(t, dtype=np.float64), nan=0.0)
    x = (np.clip(t, -1.0, 1.0) + 1.0) / 2.0 * (len(STOPS) - 1)
    i0 = np.clip(np.floor(x).astype(int), 0, len(STOPS) - 2)
    f = (x - i0)[..., None]
    return _RGB[i0] * (1.0 - f) + _RGB[i0 + 1] * f


def hex_colors(
    values: Sequence[float] | np.ndarray, vmax: float, positive_only: bool = False
) -> list[str]:
    """``#rrggbb`` colour of each value under the symmetric range ``[-vmax, vmax]``."""
    rgb = np.rint(colorize(normalise(values, vmax, positive_only))).astype(int)
    return ["#{:02x}{:02x}{:02x}".format(*c) for c in rgb.reshape(-1, 3)]


def text_color(background: str) -> str:
    """Black or white, whichever reads better on a ``#rrggbb`` background."""
    r, g, b = (int(background[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def matplotlib_cmap(positive_only: bool = False):
    """The colormap as a matplotlib ``LinearSegmentedColormap`` (imports matplotlib)."""
    from matplotlib.colors import LinearSegmentedColormap

    stops = STOPS[len(STOPS) // 2 :] if positive_only else STOPS
    return LinearSegmentedColormap.from_list(
        "dualex_pos" if positive_only else "dualex", list(stops), N=256
    )


def _to_numpy(v: object) -> object:
    detach = getattr(v, "detach", None)
    if detach is not None:
        return detach().cpu().double().numpy()
    return v
