"""The ``builtin`` and ``builtin-clip`` specs: dualex's own small CLIPs (HF ``CLIPModel`` folders
inside the package; see models/MODEL.md).

Their towers are the ``hf`` family's; this module only declares the specs.
"""

from __future__ import annotations

from typing import Any

from dualex.towers.registry import Family


def _load(rest: str, **kwargs: Any) -> Any:
    from dualex.models.builtin import load_builtin

    return load_builtin(rest or "builtin", **kwargs)


def _vision_access(model: Any) -> Any:
    """The built-in models are HF ``CLIPModel``s: the ``hf`` family's access."""
    from dualex.towers.hf import vision_access

    return vision_access(model)


FAMILY = Family(
    name="builtin",
    summary="the small CLIP-style models shipped inside dualex",
    prefixes=("builtin", "builtin-clip"),
    spec_forms={
        "builtin": "the small CLIP-style model shipped inside dualex (offline)",
        "builtin-clip": "a deeper small CLIP shipped inside dualex, trained as CLIP is: global "
        "contrastive loss only, objects at every scale, collages (offline)",
    },
    load=_load,
    vision_access=_vision_access,
)
