"""DualEncoder: two towers and how their embeddings are compared."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from dualex.towers.base import Tower

LogitScale = float | Callable[[], float] | None
"""A fixed scale, a function that reads it from the model when called, or none."""


@dataclass(repr=False)
class DualEncoder:
    """Two towers whose embeddings are compared by a dot product or a cosine.

    Attributes:
        tower_a: The first tower (text for CLIP-like models).
        tower_b: The second tower (image for CLIP-like models; the same text tower for sentence
            transformers).
        similarity: ``"cosine"`` or ``"dot"``.
        logit_scale: The model's learnt scale of the similarity (used when ``scale=True``): a
            number, or a function that reads it from the model when called, so a model in
            training is explained with its current scale (see :meth:`current_logit_scale`).
        name: A display name (the spec string when loaded by spec).
        module: The underlying torch module, if any.
        weights: Where the weights come from: ``"pretrained"``, ``"builtin"``, ``"random"`` or
            ``"unknown"``.
    """

    tower_a: Tower
    tower_b: Tower
    similarity: str = "cosine"
    logit_scale: LogitScale = None
    name: str = "model"
    module: nn.Module | None = None
    weights: str = "unknown"

    def current_logit_scale(self) -> float | None:
        """The similarity's scale now (read from the model at each call when it is learnt)."""
        value = self.logit_scale
        if callable(value):
            return float(value())
        return None if value is None else float(value)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Both towers' split sessions (see :meth:`dualex.towers.base.Tower.session`)."""
        with self.tower_a.session(), self.tower_b.session():
            yield

    def __repr__(self) -> str:
        return (
            f"DualEncoder(name={self.name!r}, a={self.tower_a.name}, b={self.tower_b.name}, "
            f"similarity={self.similarity!r})"
        )


def read_scale(module: nn.Module, attribute: str = "logit_scale", *, inverse: bool = False) -> Any:
    """A function reading ``exp(module.<attribute>)`` (or ``1 / module.<attribute>``) when called.

    Returns ``None`` when the module has no such attribute.
    """
    if getattr(module, attribute, None) is None:
        return None

    def read() -> float:
        p = getattr(module, attribute).detach().reshape(-1)[0]
        return float(1.0 / p) if inverse else float(p.exp())

    return read
