"""Grounding metrics in both directions, and the mismatch (hard-negative) comparison.

Text → image (a caption span's map over the patch grid, ``[rows, cols]``):

* **pointing game** — 1 if the peak patch's *centre* lies inside a ground-truth box, else 0
  (the centre rule, not "the peak patch overlaps a box", which favours coarse grids);
* **energy in box** — the share of the map's *positive* mass on patches whose centres lie in a
  ground-truth box (NaN when the map has no positive mass).

Image → text (per-token scores for the ground-truth boxes, ``[S_text]``):

* **text pointing** — 1 if the top-scoring non-special token lies inside the mention's span;
* **text energy** — the span's share of the positive mass over non-special tokens.

A box smaller than a patch may contain no patch centre; it then counts the patch that contains
the box's centre (as :meth:`ImagePositions.box_patches` does), so every mention has a target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from dualex.data.types import Box, Mention, Negative
from dualex.errors import InvalidInputError
from dualex.pointing import box_mask, patch_centres, pointing_game
from dualex.towers.positions import ImagePositions

__all__ = [
    "box_mask",
    "energy_in_box",
    "mass_parts",
    "mass_ratio",
    "mismatch",
    "patch_centres",
    "pointing_game",
    "sign_parts",
    "sign_ratio",
    "text_energy",
    "text_pointing",
]


def _np(x: Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _flat_region(values: Tensor | np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A map and its target region, both flat; they must have as many entries."""
    v, q = _np(values).reshape(-1), np.asarray(inside, dtype=bool).reshape(-1)
    if v.shape != q.shape:
        raise InvalidInputError(f"map of {v.size} values and region of {q.size} do not match")
    return v, q


def mass_ratio(values: Tensor | np.ndarray, inside: np.ndarray) -> float:
    """FIxLIP's mass ratio: the share of the map's absolute mass that has the right sign.

    ``(Σ_{j∈Q} max(v_j, 0) + Σ_{j∉Q} max(−v_j, 0)) / Σ_j |v_j|``: positive values inside the
    target region ``Q`` and negative values outside it count as right.

    Args:
        values: ``[rows, cols]`` (or flat) map.
        inside: ``bool`` of the same shape: the target region.

    Returns:
        A value in ``[0, 1]``; NaN for an all-zero map.
    """
    right, total = mass_parts(values, inside)
    if not total > 0:
        return float("nan")
    return right / total


def mass_parts(values: Tensor | np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """The mass ratio's numerator and denominator ``(right mass, Σ |v|)`` (see
    :func:`mass_ratio`); FIxLIP's per-image ratio sums both over an image's phrases."""
    v, q = _flat_region(values, inside)
    right = np.clip(v[q], 0, None).sum() + np.clip(-v[~q], 0, None).sum()
    return float(right), float(np.abs(v).sum())


def sign_parts(values: Tensor | np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """The sign ratio's numerator and denominator ``(right entries, entries)`` (see
    :func:`sign_ratio`)."""
    v, q = _flat_region(values, inside)
    return float(((v > 0) & q).sum() + ((v < 0) & ~q).sum()), float(v.size)


def sign_ratio(values: Tensor | np.ndarray, inside: np.ndarray) -> float:
    """FIxLIP's sign ratio: the share of entries with the right sign (positive inside the target
    region, negative outside; zeros count as wrong).

    Args:
        values: ``[rows, cols]`` (or flat) map.
        inside: ``bool`` of the same shape: the target region.
    """
    right, count = sign_parts(values, inside)
    if count == 0:
        return float("nan")
    return right / count


def energy_in_box(heatmap: Tensor | np.ndarray, boxes: Sequence[Box], pos: ImagePositions) -> float:
    """Share of the map's positive mass on patches inside the boxes (NaN: no positive mass)."""
    m = np.clip(_np(heatmap), 0, None)
    if m.shape != tuple(pos.grid):
        raise InvalidInputError(f"map of shape {m.shape} does not match the grid {pos.grid}")
    total = m.sum()
    if total <= 0:
        return float("nan")
    return float(m[box_mask(pos, boxes)].sum() / total)


def _content(scores: Tensor | np.ndarray, special: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = _np(scores)
    keep = np.flatnonzero(~np.asarray(special, dtype=bool))
    if len(keep) == 0:
        raise InvalidInputError("the text has no non-special token")
    return s, keep


def text_pointing(
    scores: Tensor | np.ndarray, span: Sequence[int], special: Sequence[bool]
) -> float:
    """1.0 if the top non-special token lies in the span's token positions, else 0.0."""
    s, keep = _content(scores, special)
    top = int(keep[np.argmax(s[keep])])
    return float(top in set(span))


def text_energy(scores: Tensor | np.ndarray, span: Sequence[int], special: Sequence[bool]) -> float:
    """The span's share of the positive mass over non-special tokens (NaN: none)."""
    s, keep = _content(scores, special)
    pos = np.clip(s[keep], 0, None)
    total = pos.sum()
    if total <= 0:
        return float("nan")
    in_span = np.isin(keep, np.asarray(list(span), dtype=int))
    return float(pos[in_span].sum() / total)


def shift_span(
    span: tuple[int, int], negative: Negative, positive_caption: str
) -> tuple[int, int] | None:
    """Where a positive caption's span lies in the negative caption (None if it overlaps the edit)."""
    if negative.original_span is None:
        return None
    a0, a1 = negative.original_span
    if span[1] <= a0:
        return span
    if span[0] >= a1:
        delta = (negative.span[1] - negative.span[0]) - (a1 - a0)
        return (span[0] + delta, span[1] + delta)
    return None


def mismatch(
    m_neg: Tensor,
    neg_rows: Sequence[int],
    matched_rows: Sequence[Sequence[int]],
    m_pos: Tensor,
    pos_rows: Sequence[int],
) -> dict[str, float]:
    """Summed interactions of a hard negative's mismatched span vs. its matched spans.

    Args:
        m_neg: ``[S_text, S_image]`` interactions of the negative caption with the image.
        neg_rows: Token rows of the mismatched (replaced) span in the negative caption.
        matched_rows: Token rows of each unchanged mention of the negative caption.
        m_pos: ``[S_text, S_image]`` interactions of the positive caption with the image.
        pos_rows: Token rows of the original words in the positive caption.

    Returns:
        ``mismatch`` (the span's summed interaction), ``matched`` (mean over matched spans, NaN
        if none), ``positive`` (the original span in the positive caption), and the 0/1
        indicators ``below_matched`` and ``below_positive``.
    """
    mis = float(m_neg[list(neg_rows)].double().sum())
    pos = float(m_pos[list(pos_rows)].double().sum())
    matched = [float(m_neg[list(r)].double().sum()) for r in matched_rows if len(r)]
    mean_matched = float(np.mean(matched)) if matched else float("nan")
    return {
        "mismatch": mis,
        "matched": mean_matched,
        "positive": pos,
        "below_matched": float(mis < mean_matched) if matched else float("nan"),
        "below_positive": float(mis < pos),
    }


def mention_targets(mention: Mention) -> list[Box]:
    """The mention's boxes as a list (helper for uniform call sites)."""
    return [tuple(float(v) for v in b) for b in mention.boxes]  # type: ignore[misc]


def as_tensor(x: np.ndarray | Tensor) -> Tensor:
    """A float64 tensor view of a map."""
    return x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float64))
