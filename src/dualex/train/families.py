"""What the fine-tuning loop needs from a model family, through the family's own forward.

A :class:`Trainable` holds the torch module being trained and its tokenizer / image transform,
and exposes: batch tokenisation and pixel preparation, the family's own ``get_text_features`` /
``get_image_features`` (transformers CLIP, SigLIP and the built-in model) or ``encode_text`` /
``encode_image`` (open_clip), the learnt logit scale, gradient checkpointing, saving a folder
that the family's loader opens, and a :class:`dualex.DualEncoder` view for explaining.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import UnknownModelError

__all__ = ["Trainable", "trainable_from"]


@dataclass
class Trainable:
    """A model being fine-tuned.

    Attributes:
        family: ``"hf"`` (transformers CLIP / SigLIP, the built-in model), ``"openclip"`` or
            ``"openai"`` (OpenAI's ``clip`` package: forward and inputs as open_clip).
        model: The torch module (a private copy: the caller's model is never changed).
        tokenizer: The family's tokenizer.
        image_processor: The family's image processor (HF) or inference transform (open_clip).
        name: The spec or display name of the starting model.
        arch: open_clip architecture name (``""`` for HF).
        weights: Where the starting weights come from (the encoder's ``weights``).
        encoder: The :class:`dualex.DualEncoder` over this same module, when the module was
            not copied (then :meth:`wrap` returns it).
    """

    family: str
    model: nn.Module
    tokenizer: Any
    image_processor: Any
    name: str
    arch: str = ""
    checkpointing: bool = False
    weights: str = "unknown"
    encoder: Any = None

    # -- inputs -----------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, each ``[N, T]`` (padded to the longest, or the
        context length where the family needs it)."""
        if self.family in ("openclip", "openai"):
            ids = self.tokenizer(texts)
            return ids.long(), (ids != 0).long()
        cfg = self.model.config.text_config
        max_len = int(cfg.max_position_embeddings)
        siglip = "siglip" in type(self.model).__name__.lower()
        enc = self.tokenizer(
            texts,
            padding="max_length" if siglip else True,
            max_length=max_len,
            truncation=True,
            return_tensors="pt",
        )
        ids = enc["input_ids"].long()
        mask = enc.get("attention_mask", torch.ones_like(ids)).long()
        return ids, mask

    def pixels(self, images: list[Any]) -> Tensor:
        """Pixel tensor ``[N, 3, H, W]`` of PIL images, through the family's preprocessing."""
        if self.family in ("openclip", "openai"):
            return torch.stack([self.image_processor(im.convert("RGB")) for im in images])
        out = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return out["pixel_values"]

    # -- forward ----------------------------------------------------------------------------

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised text embeddings ``[N, E]`` via the family's own forward."""
        if self.family in ("openclip", "openai"):
            return self.model.encode_text(ids)
        if "siglip" in type(self.model).__name__.lower():
            out = self.model.get_text_features(input_ids=ids)
        else:
            n = int(mask.sum(1).max())  # padding at the end: trim to the longest row
            out = self.model.get_text_features(input_ids=ids[:, :n], attention_mask=mask[:, :n])
        return out if torch.is_tensor(out) else out.pooler_output

    def encode_image(self, pixels: Tensor) -> Tensor:
        """Unnormalised image embeddings ``[N, E]`` via the family's own forward."""
        if self.family in ("openclip", "openai"):
            return self.model.encode_image(pixels)
        out = self.model.get_image_features(pixel_values=pixels)
        return out if torch.is_tensor(out) else out.pooler_output

    def logit_scale(self) -> Tensor:
        """The model's own scale of the cosine similarity, ``exp(logit_scale)`` (a scalar)."""
        scale = getattr(self.model, "logit_scale", None)
        if scale is None:
            return torch.tensor(1.0)
        return scale.exp().reshape(-1)[0]

    # -- features ---------------------------------------------------------------------------

    def enable_gradient_checkpointing(self) -> bool:
        """Turn on gradient checkpointing where the family supports it; returns whether it did."""
        self.checkpointing = self._set_checkpointing(True)
        return self.checkpointing

    def _set_checkpointing(self, on: bool) -> bool:
        m = self.model
        if self.family in ("openclip", "openai"):
            if not hasattr(m, "set_grad_checkpointing"):
                return False
            m.set_grad_checkpointing(on)
            return True
        if not getattr(m, "supports_gradient_checkpointing", False):
            return False
        if on:  # transformers 5 renamed it activation checkpointing
            fn = (
                getattr(m, "activation_checkpointing_enable", None)
                or m.gradient_checkpointing_enable
            )
            fn({"use_reentrant": False})
        else:
            fn = getattr(m, "activation_checkpointing_disable", None)
            (fn or m.gradient_checkpointing_disable)()
            if hasattr(m, "disable_input_require_grads"):  # enabling hooked the embeddings
                m.disable_input_require_grads()
        return True

    @contextmanager
    def checkpointing_paused(self) -> Iterator[None]:
        """Gradient checkpointing off inside the block (the explanation engine's ``torch.func``
        transforms cannot run through checkpointed blocks), back on after."""
        if not self.checkpointing:
            yield
            return
        self._set_checkpointing(False)
        try:
            yield
        finally:
            self._set_checkpointing(True)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write a folder the family's loader opens.

        HF: ``save_pretrained`` of model, tokenizer and image processor
        (``dualex.load("hf:FOLDER")``). open_clip: ``open_clip_model.safetensors`` and
        ``dualex_openclip.json`` (``dualex.load("openclip:ARCH/FOLDER/open_clip_model.safetensors")``).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.family in ("openclip", "openai"):
            from safetensors.torch import save_file

            state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(folder / "open_clip_model.safetensors"))
            spec = f"openclip:{self.arch}/{folder / 'open_clip_model.safetensors'}"
            (folder / "dualex_openclip.json").write_text(
                json.dumps({"arch": self.arch, "spec": spec}, indent=1)
            )
            return folder
        cfg = self.model.config
        if getattr(cfg, "_attn_implementation", None) not in (None, "eager", "sdpa"):
            cfg._attn_implementation = "eager"
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        return folder

    def wrap(self) -> Any:
        """A :class:`dualex.DualEncoder` over the *same* module (for explaining while training).

        ``dualex.wrap`` may switch the module to eval mode; callers that need the mode kept
        save and restore ``model.training`` around it (see :func:`dualex.train.monitor.kept`).
        """
        if self.encoder is not None:
            return self.encoder
        if self.family == "openai":
            from dualex.towers.openai_clip import wrap_openai

            return wrap_openai(self.model, name=self.name, preprocess=self.image_processor)
        if self.family == "openclip":
            from dualex.towers.openclip import wrap_openclip

            return wrap_openclip(self.model, self.image_processor, self.tokenizer, name=self.name)
        import dualex

        return dualex.wrap(
            self.model, tokenizer=self.tokenizer, image_processor=self.image_processor,
            name=self.name,
        )  # fmt: skip


def trainable_from(encoder: Any, name: str | None = None, *, copy_module: bool = True) -> Trainable:
    """A :class:`Trainable` over a :class:`dualex.DualEncoder`'s module.

    Args:
        encoder: The dual encoder.
        name: Display name (default the encoder's).
        copy_module: Train a deep copy (the caller's model stays as it was). ``False`` only for
            a module nobody else holds (loaded from a spec for this run).

    Raises:
        UnknownModelError: if the encoder is not a transformers CLIP / SigLIP (incl. the
            built-in model) or an open_clip model.
    """
    module = getattr(encoder, "module", None)
    name = name or getattr(encoder, "name", "model")
    if module is None:
        raise UnknownModelError(
            f"cannot fine-tune {name!r}: it has no torch module; fine-tune a transformers CLIP / "
            "SigLIP model, the built-in model or an open_clip model"
        )
    cls = type(module).__name__
    a, b = encoder.tower_a, encoder.tower_b
    own = copy.deepcopy if copy_module else (lambda m: m)
    weights = str(getattr(encoder, "weights", "unknown"))
    if hasattr(module, "get_text_features") and hasattr(a, "tokenizer") and hasattr(b, "processor"):
        return Trainable("hf", own(module), a.tokenizer, b.processor, name, weights=weights)
    if hasattr(module, "encode_text") and hasattr(a, "codec") and hasattr(b, "preprocess"):
        codec = a.codec
        if not callable(codec.tokenizer):  # OpenAI clip: its BPE tokenizer, tokenised one by one
            return Trainable("openai", own(module), _BatchTokenize(codec), b.preprocess, name,
                             weights=weights)  # fmt: skip
        arch = _openclip_arch(name)
        return Trainable("openclip", own(module), codec.tokenizer, b.preprocess, name, arch,
                         weights=weights)  # fmt: skip
    raise UnknownModelError(
        f"cannot fine-tune a {cls}: dualex finetune supports transformers CLIP / SigLIP models, "
        "the built-in model and open_clip models"
    )


@dataclass
class _BatchTokenize:
    """A batch tokenizer over a codec that tokenises one text at a time (``[N, ctx]``)."""

    codec: Any

    def __call__(self, texts: list[str]) -> Tensor:
        return torch.cat([self.codec._tokenize(t) for t in texts])


def _openclip_arch(name: str) -> str:
    spec = name.partition(":")[2] if name.lower().startswith("openclip:") else name
    try:
        import open_clip

        from dualex.towers.openclip import _split_spec

        return _split_spec(spec, set(open_clip.list_models()))[0]
    except ImportError:  # pragma: no cover
        return spec.split("/")[0]
