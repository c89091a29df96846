"""First-order baselines: one map per (model, image, text) on the tower's patch grid.

Every baseline is a function ``(model, image, text) -> Tensor [rows, cols]`` on the same grid as
``dualex.explain(...).image_map(...)`` (the image tower's :class:`ImagePositions`), so the metrics
treat every method alike. Re-implemented from the published descriptions (see
``shared/PAPER.md``); the text input is the mention's phrase (or the full caption).

=============  ===================================================  =====================
name           method                                               families
=============  ===================================================  =====================
``ig``         Integrated Gradients on pixels, target cosine        HF CLIPModel
``gae``        Chefer et al. 2021 generic attention explainability  HF CLIPModel
``maskclip``   MaskCLIP (value path in the last block)              HF CLIPModel
``gradeclip``  Grad-ECLIP (last block, CLS query)                   HF CLIPModel
``surgery``    CLIP Surgery (v–v attention in the last 6 blocks)    HF CLIPModel
``random``     uniform noise, the floor                             any image tower
=============  ===================================================  =====================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from dualex.evaluate.baselines.first_order import (
    clip_surgery,
    gae,
    grad_eclip,
    integrated_gradients,
    maskclip,
    random_map,
)

__all__ = [
    "BASELINES",
    "clip_surgery",
    "gae",
    "grad_eclip",
    "integrated_gradients",
    "maskclip",
    "random_map",
]

Baseline = Callable[..., Tensor]
"""``(model, image, text, **options) -> [rows, cols]``."""

BASELINES: dict[str, Baseline] = {
    "ig": integrated_gradients,
    "gae": gae,
    "maskclip": maskclip,
    "gradeclip": grad_eclip,
    "surgery": clip_surgery,
    "random": random_map,
}
"""Baselines by their ``--methods`` name."""


def run(name: str, model: Any, image: Any, text: str, **options: Any) -> Tensor:
    """Run baseline ``name`` (a key of :data:`BASELINES`)."""
    return BASELINES[name](model, image, text, **options)
