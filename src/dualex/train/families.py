"""What the fine-tuning loop needs from a model family, asked of the family itself.

A :class:`~dualex.towers.trainable.Trainable` holds the torch module being trained and its
tokenizer / image transform, and exposes the family's own batch inputs, forward, logit scale,
gradient checkpointing, saving a folder that the family's loader opens, and a
:class:`dualex.DualEncoder` view for explaining. Each family implements it in its own module
(``Family.trainable``); nothing here knows a family.
"""

from __future__ import annotations

import copy
from typing import Any

from dualex.errors import UnknownModelError
from dualex.towers.registry import families, family_of
from dualex.towers.trainable import Trainable

__all__ = ["Trainable", "trainable_from"]


def trainable_from(encoder: Any, name: str | None = None, *, copy_module: bool = True) -> Trainable:
    """The :class:`Trainable` of a :class:`dualex.DualEncoder`'s family over its module.

    Args:
        encoder: The dual encoder.
        name: Display name (default the encoder's).
        copy_module: Train a deep copy (the caller's model stays as it was). ``False`` only for
            a module nobody else holds (loaded from a spec for this run).

    Raises:
        UnknownModelError: if the encoder has no torch module, or its family cannot be
            fine-tuned (naming those that can).
    """
    module = getattr(encoder, "module", None)
    name = name or getattr(encoder, "name", "model")
    family = family_of(encoder)
    if module is None or family is None or family.trainable is None:
        what = "it has no torch module" if module is None else (
            f"the {family.name} family has no training adapter" if family is not None
            else f"dualex knows no family of a {type(module).__name__}"
        )  # fmt: skip
        able = ", ".join(f.name for f in families() if f.trainable is not None)
        raise UnknownModelError(
            f"cannot fine-tune {name!r}: {what}; dualex finetune supports the families {able}"
        )
    own = copy.deepcopy(module) if copy_module else module
    return family.trainable(encoder, own, name)
