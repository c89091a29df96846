"""DualEncoder: two towers and how their embeddings are compared; ``load`` and ``wrap``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from dualex.errors import UnknownModelError
from dualex.towers.base import Tower

SPEC_FORMS = {
    "builtin": "the small CLIP-style model shipped inside dualex (offline)",
    "hf:<id-or-path>": "a transformers CLIPModel / SiglipModel via from_pretrained",
    "openclip:<arch>[/<pretrained>]": "an open_clip model via create_model_and_transforms",
    "openai:<name>": "a model of OpenAI's clip package",
    "st:<id-or-path>": "a sentence-transformers model (text–text)",
}
"""The forms of a model spec accepted by :func:`load`."""


@dataclass
class DualEncoder:
    """Two towers whose embeddings are compared by a dot product or a cosine.

    Attributes:
        tower_a: The first tower (text for CLIP-like models).
        tower_b: The second tower (image for CLIP-like models; the same text tower for
            sentence transformers).
        similarity: ``"cosine"`` or ``"dot"``.
        logit_scale: The model's learnt scale of the similarity (used when ``scale=True``).
        name: A display name (the spec string when loaded by spec).
        module: The underlying torch module, if any.
    """

    tower_a: Tower
    tower_b: Tower
    similarity: str = "cosine"
    logit_scale: float | None = None
    name: str = "model"
    module: nn.Module | None = None


def wrap(
    model: Any,
    processor: Any = None,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    name: str | None = None,
) -> DualEncoder:
    """Wrap an already-built dual encoder.

    Args:
        model: A transformers ``CLIPModel`` / ``SiglipModel``, or a :class:`DualEncoder`
            (returned unchanged).
        processor: The model's processor (tokenizer + image processor), or
        tokenizer: its tokenizer and
        image_processor: its image processor, separately.
        name: Display name.

    Returns:
        A :class:`DualEncoder`.

    Raises:
        UnknownModelError: if the model type is not supported.
    """
    if isinstance(model, DualEncoder):
        return model
    if processor is not None:
        tokenizer = tokenizer or getattr(processor, "tokenizer", None)
        image_processor = image_processor or getattr(processor, "image_processor", None)
    cls = type(model).__name__
    if cls == "AlignModel":
        from dualex.towers.hf_align import wrap_align

        return wrap_align(model, tokenizer, image_processor, name=name)
    if cls in ("CLIPModel", "SiglipModel", "Siglip2Model") or (
        hasattr(model, "get_text_features") and hasattr(model, "text_model")
    ):
        from dualex.towers.hf import HFImageTower, HFTextTower

        if tokenizer is None or image_processor is None:
            raise UnknownModelError(
                f"wrapping a {cls} needs its tokenizer and image processor; pass processor=... "
                "(e.g. CLIPProcessor.from_pretrained(path)) or tokenizer= and image_processor="
            )
        model.eval()
        scale = getattr(model, "logit_scale", None)
        return DualEncoder(
            tower_a=HFTextTower(model, tokenizer),
            tower_b=HFImageTower(model, image_processor),
            similarity="cosine",
            logit_scale=float(scale.detach().exp()) if scale is not None else None,
            name=name or f"hf:{getattr(model.config, '_name_or_path', '') or cls}",
            module=model,
        )
    raise UnknownModelError(
        f"dualex cannot wrap a {cls}; supported: transformers CLIPModel and SiglipModel, or "
        "build a DualEncoder from two dualex towers (dualex.towers)"
    )


def load(spec: str, **kwargs: Any) -> DualEncoder:
    """Load a dual encoder by spec string.

    Args:
        spec: ``"builtin"``, ``"hf:<id-or-path>"``, ``"openclip:<arch>[/<pretrained>]"``,
            ``"openai:<name>"`` or ``"st:<id-or-path>"``.
        **kwargs: Passed to the family's loader.

    Raises:
        UnknownModelError: on an unknown spec, naming the forms that exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModelError(_unknown(spec))
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if spec.strip().lower() == "builtin":
        from dualex.models.builtin import load_builtin

        return load_builtin(**kwargs)
    if kind == "hf" and rest:
        return _load_hf(rest, spec, **kwargs)
    if kind == "openclip" and rest:
        try:
            from dualex.towers.openclip import load_openclip
        except ImportError as err:
            raise UnknownModelError(
                f"{spec!r} needs open_clip: pip install 'dualex[openclip]'"
            ) from err
        return load_openclip(rest, **kwargs)
    if kind == "openai" and rest:
        try:
            from dualex.towers.openai_clip import load_openai
        except ImportError as err:
            raise UnknownModelError(
                f"{spec!r} needs OpenAI's clip package: pip install clip-anytorch"
            ) from err
        return load_openai(rest, **kwargs)
    if kind == "st" and rest:
        try:
            from dualex.towers.sentence_transformers import load_st
        except ImportError as err:
            raise UnknownModelError(
                f"{spec!r} needs sentence-transformers: pip install 'dualex[st]'"
            ) from err
        return load_st(rest, **kwargs)
    raise UnknownModelError(_unknown(spec))


def _unknown(spec: Any) -> str:
    forms = "; ".join(f"{k} ({v})" for k, v in SPEC_FORMS.items())
    return f"unknown model spec {spec!r}; use one of: {forms}"


def _load_hf(path: str, spec: str, **kwargs: Any) -> DualEncoder:
    from transformers import AutoConfig, AutoModel, AutoProcessor

    local = Path(path).expanduser()
    source = str(local) if local.exists() else path
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=offline or local.exists())
        model = AutoModel.from_pretrained(
            source, config=config, local_files_only=offline or local.exists(), **kwargs
        )
        processor = AutoProcessor.from_pretrained(
            source, local_files_only=offline or local.exists()
        )
    except (OSError, ValueError) as err:
        raise UnknownModelError(
            f"cannot load {spec!r} with transformers ({str(err).splitlines()[0]}); pass a local "
            "folder saved with save_pretrained, or a hub id when online"
        ) from err
    return wrap(model, processor, name=spec)
