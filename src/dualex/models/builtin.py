"""The built-in models' weights live in this package's ``builtin/`` and ``builtin_clip/`` folders
(trained by :mod:`dualex.models.train_builtin`; see MODEL.md); the family that loads them, and
the table of what is shipped, is :mod:`dualex.towers.builtin` (re-exported here)."""

from dualex.towers.builtin import (
    BUILTIN_CLIP_DIR,
    BUILTIN_DIR,
    BUILTIN_MODELS,
    BuiltinModel,
    available,
    load_builtin,
    model_dir,
    summary,
)

__all__ = [
    "BUILTIN_CLIP_DIR",
    "BUILTIN_DIR",
    "BUILTIN_MODELS",
    "BuiltinModel",
    "available",
    "load_builtin",
    "model_dir",
    "summary",
]
