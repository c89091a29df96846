"""``load`` and ``wrap``: a dual encoder by spec string or from a model object.

Both go through the family registry (:mod:`dualex.towers.registry`): each family module declares
its spec prefixes, which objects it wraps, and its towers.
"""

from __future__ import annotations

from typing import Any

from dualex.encoder import DualEncoder
from dualex.errors import UnknownModelError
from dualex.towers.registry import for_object, for_spec, spec_forms

__all__ = ["DualEncoder", "load", "spec_forms", "wrap"]


def wrap(
    model: Any,
    processor: Any = None,
    *,
    tokenizer: Any = None,
    image_processor: Any = None,
    preprocess: Any = None,
    name: str | None = None,
    **kwargs: Any,
) -> DualEncoder:
    """Wrap an already-built dual encoder, of any family dualex loads.

    The model is not changed: its mode, parameters and modules stay as they are (dualex switches
    to eval mode only while it explains, and restores the user's flags afterwards).

    Args:
        model: One of
            - a transformers ``CLIPModel``, ``SiglipModel``, ``Siglip2Model`` (with its
              processor) or ``AlignModel``;
            - an open_clip model (``processor`` or ``preprocess``: its image transform;
              ``tokenizer``: ``open_clip.get_tokenizer(arch)``);
            - a model of OpenAI's ``clip`` package (``preprocess`` optional);
            - a ``SentenceTransformer`` (text–text);
            - a :class:`DualEncoder` (returned unchanged), e.g. built from custom towers.
        processor: The model's processor (transformers), or its image transform (open_clip).
        tokenizer: The tokenizer, when not part of ``processor``.
        image_processor: The image processor, when not part of ``processor``.
        preprocess: The image transform (open_clip / OpenAI clip).
        name: Display name.
        **kwargs: Family options (e.g. ``text_reference=``, ``image_reference=``).

    Returns:
        A :class:`DualEncoder`.

    Raises:
        UnknownModelError: if no family wraps the object, or a needed piece is missing.
    """
    if isinstance(model, DualEncoder):
        return model
    return for_object(model).adopt(
        model,
        processor,
        tokenizer=tokenizer,
        image_processor=image_processor,
        preprocess=preprocess,
        name=name,
        **kwargs,
    )


def load(spec: str, **kwargs: Any) -> DualEncoder:
    """Load a dual encoder by spec string.

    Args:
        spec: ``"builtin"``, ``"hf:<id-or-path>"``, ``"openclip:<arch>[/<pretrained>]"``,
            ``"openai:<name>"`` or ``"st:<id-or-path>"`` (see :func:`spec_forms`).
        **kwargs: Passed to the family's loader.

    Raises:
        UnknownModelError: on an unknown spec, naming the forms that exist.
    """
    if not isinstance(spec, str) or not spec.strip():
        forms = "; ".join(f"{k} ({v})" for k, v in spec_forms().items())
        raise UnknownModelError(f"unknown model spec {spec!r}; use one of: {forms}")
    family, rest = for_spec(spec)
    return family.open(rest, **kwargs)
