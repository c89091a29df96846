"""The pointing game, in one place: the evaluation tasks (:mod:`dualex.evaluate.metrics`) and
the built-in models' recipe (:mod:`dualex.models.evaluate_builtin`) both score with it.

A map *points* at a box when its peak patch's **centre** lies inside the box (the centre rule,
not "the peak patch overlaps a box", which favours coarse grids). A box smaller than a patch may
contain no patch centre; it then counts the patch that contains the box's centre (as
:meth:`dualex.towers.positions.ImagePositions.box_patches` does), so every box has a target.

No dualex package is imported here (positions are read through their methods), so any package
may use it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from dualex.errors import InvalidInputError

__all__ = ["box_mask", "patch_centres", "pointing_game"]


def _np(x: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def patch_centres(pos: Any) -> np.ndarray:
    """Centres of the patches in original pixels, ``[rows * cols, 2]`` (x, y), row-major."""
    b = np.asarray(pos.patch_boxes(), dtype=np.float64)
    return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], axis=1)


def box_mask(pos: Any, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """Patches whose centre lies in any box, ``bool [rows, cols]`` (``pos``: the
    :class:`~dualex.towers.positions.ImagePositions` of the map, ``boxes`` in original pixels).

    A box that holds no patch centre contributes the patch containing its own centre.

    Raises:
        InvalidInputError: if no box is given.
    """
    if not boxes:
        raise InvalidInputError("a mention needs at least one ground-truth box")
    c = patch_centres(pos)
    mask = np.zeros(len(c), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = (float(v) for v in box)
        inside = (c[:, 0] >= x0) & (c[:, 0] < x1) & (c[:, 1] >= y0) & (c[:, 1] < y1)
        if not inside.any():
            inside = np.zeros(len(c), dtype=bool)
            try:
                idx = pos.box_patches(box, min_overlap=1.1)  # only the centre fallback
            except Exception:  # a box fully outside the crop has no patch
                idx = []
            for i in idx:
                inside[i - pos.prefix] = True
        mask |= inside
    return mask.reshape(pos.grid)


def pointing_game(
    heatmap: Tensor | np.ndarray, boxes: Sequence[Sequence[float]], pos: Any
) -> float:
    """1.0 if the peak patch's centre lies in a ground-truth box, else 0.0.

    Args:
        heatmap: ``[rows, cols]`` map on the patch grid of ``pos``.
        boxes: Ground-truth boxes in original pixels.
        pos: Image positions (geometry) of the map, a
            :class:`~dualex.towers.positions.ImagePositions`.
    """
    m = _np(heatmap)
    if m.shape != tuple(pos.grid):
        raise InvalidInputError(f"map of shape {m.shape} does not match the grid {pos.grid}")
    peak = int(np.argmax(m.reshape(-1)))
    return float(box_mask(pos, boxes).reshape(-1)[peak])
