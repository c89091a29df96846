"""Shared plumbing of the attention-based first-order methods (gae, maskclip, gradeclip,
surgery, legrad): finding the image tower's attention access, and turning per-patch values into
:class:`~dualex.evaluate.methods.base.Attribution` maps."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from dualex.evaluate.methods.base import Attribution, UnsupportedMethodError
from dualex.towers.access import (
    VisionAccess,
    VisionAccessError,
    access_families,
    supported_towers,
    vision_access,
)
from dualex.towers.positions import ImagePositions

VIT_FAMILIES = tuple(access_families())
"""Registry families whose ViT image towers have attention access (as the families declare it,
when the methods are imported)."""


def access(model: Any, method: str) -> VisionAccess:
    """The model's :class:`VisionAccess`, or an :class:`UnsupportedMethodError` naming ``method``
    and the families it supports."""
    from dualex.model import wrap

    try:
        return vision_access(wrap(model))
    except VisionAccessError as err:
        raise UnsupportedMethodError(
            f"{method} needs a ViT image tower with attention access; it runs on "
            f"{supported_towers()}. Not on this model: {err}"
        ) from err


def access_check(method: str) -> Any:
    """A ``Method.check`` that asks the model for its attention access."""

    def check(model: Any) -> None:
        access(model, method)

    return check


def grid_map(values: Tensor, pos: ImagePositions) -> Tensor:
    """Per-patch values ``[rows · cols]`` → ``[rows, cols]`` (float64, detached, CPU)."""
    return values.detach().to("cpu").double().reshape(tuple(pos.grid))


def minmax(v: Tensor, dim: int = -1) -> Tensor:
    """Min-max normalised to ``[0, 1]`` along ``dim`` (a constant vector becomes zeros)."""
    lo, hi = v.amin(dim, keepdim=True), v.amax(dim, keepdim=True)
    return (v - lo) / (hi - lo).clamp_min(1e-12)


def attributions(
    name: str,
    pos: ImagePositions,
    maps: list[Tensor],
    *,
    scores: Tensor | None = None,
    units: str = "relative",
    steps: int = -1,
    extra: dict[str, Any] | None = None,
) -> list[Attribution]:
    """One :class:`Attribution` per map ``[rows · cols]`` (and score ``[T]``, if known)."""
    out = []
    for i, m in enumerate(maps):
        out.append(
            Attribution(
                method=name,
                image=pos,
                image_map=grid_map(m, pos),
                units=units,
                score=float(scores[i]) if scores is not None else float("nan"),
                steps=steps,
                extra=dict(extra or {}),
            )
        )
    return out
