"""The ``builtin`` spec: dualex's own small CLIP (an HF ``CLIPModel``; see models/MODEL.md).

Its towers are the ``hf`` family's; this module only declares the spec.
"""

from __future__ import annotations

from typing import Any

from dualex.towers.registry import Family


def _load(rest: str, **kwargs: Any) -> Any:
    from dualex.models.builtin import load_builtin

    return load_builtin(**kwargs)


def _vision_access(model: Any) -> Any:
    """The builtin model is an HF ``CLIPModel``: the ``hf`` family's access."""
    from dualex.towers.hf import vision_access

    return vision_access(model)


FAMILY = Family(
    name="builtin",
    summary="the small CLIP-style model shipped inside dualex",
    prefixes=("builtin",),
    spec_forms={"builtin": "the small CLIP-style model shipped inside dualex (offline)"},
    load=_load,
    vision_access=_vision_access,
)
