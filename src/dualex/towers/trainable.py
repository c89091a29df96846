"""What fine-tuning needs from a model family: the family's own training forward.

A family that can be fine-tuned declares ``Family.trainable``: a function giving a
:class:`Trainable` over a torch module (the encoder's own, or a private copy of it). The
subclass, in the family's module, implements batch tokenisation and pixel preparation, the
family's own text and image forward (``get_text_features`` / ``encode_text``...), gradient
checkpointing, saving a folder that the family's loader opens, and a
:class:`~dualex.towers.base.DualEncoder` over the same module. The training loop
(:mod:`dualex.train`) uses only this interface.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Trainable"]


@dataclass
class Trainable(ABC):
    """A model being fine-tuned, through its family's own forward.

    Attributes:
        model: The torch module being trained.
        tokenizer: The family's tokenizer.
        image_processor: The family's image processor or inference transform.
        name: The spec or display name of the starting model.
        weights: Where the starting weights come from (the encoder's ``weights``).
        encoder: The :class:`~dualex.towers.base.DualEncoder` over this same module, when the
            module was not copied (then :meth:`wrap` returns it).
        checkpointing: Whether gradient checkpointing is on.
    """

    model: nn.Module
    tokenizer: Any
    image_processor: Any
    name: str
    weights: str = "unknown"
    encoder: Any = None
    checkpointing: bool = False

    # -- inputs and forward (the family's own) ----------------------------------------------

    @abstractmethod
    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, each ``[N, T]``."""

    @abstractmethod
    def pixels(self, images: list[Any]) -> Tensor:
        """Pixel tensor ``[N, 3, H, W]`` of PIL images, through the family's preprocessing."""

    @abstractmethod
    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised text embeddings ``[N, E]``."""

    @abstractmethod
    def encode_image(self, pixels: Tensor) -> Tensor:
        """Unnormalised image embeddings ``[N, E]``."""

    def logit_scale(self) -> Tensor:
        """The model's own scale of the cosine similarity, ``exp(logit_scale)`` (a scalar; 1
        for a model without one)."""
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return torch.tensor(1.0)
        return scale.exp().reshape(-1)[0]

    # -- gradient checkpointing -------------------------------------------------------------

    def set_checkpointing(self, on: bool) -> bool:
        """Turn the family's gradient checkpointing on or off; whether it could (default: the
        family has none)."""
        return False

    def enable_gradient_checkpointing(self) -> bool:
        """Turn on gradient checkpointing where the family supports it; returns whether it did."""
        self.checkpointing = self.set_checkpointing(True)
        return self.checkpointing

    @contextmanager
    def checkpointing_paused(self) -> Iterator[None]:
        """Gradient checkpointing off inside the block (the explanation engine's ``torch.func``
        transforms cannot run through checkpointed blocks), back on after."""
        if not self.checkpointing:
            yield
            return
        self.set_checkpointing(False)
        try:
            yield
        finally:
            self.set_checkpointing(True)

    # -- the fine-tuned model ---------------------------------------------------------------

    @abstractmethod
    def save(self, folder: str | os.PathLike) -> Path:
        """Write a folder the family's loader opens; returns it."""

    @abstractmethod
    def rewrap(self) -> Any:
        """A new :class:`~dualex.towers.base.DualEncoder` over :attr:`model`."""

    def wrap(self) -> Any:
        """A :class:`~dualex.towers.base.DualEncoder` over the *same* module (for explaining
        while training): :attr:`encoder` when known, else :meth:`rewrap`.

        Wrapping may switch the module to eval mode; callers that need the mode kept save and
        restore ``model.training`` around it (see :func:`dualex.train.monitor.kept`).
        """
        return self.encoder if self.encoder is not None else self.rewrap()
