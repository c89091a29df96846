"""sentence-transformers towers: token × token explanations of text–text similarity.

``dualex.load("st:<id-or-path>")`` loads a ``SentenceTransformer`` whose first module is a Hugging
Face transformer; its own forward (transformer, pooling — mean, CLS, max… — dense and normalise
modules) is the tower's encode, split with a hook at the input of one transformer layer. Both
sides of the :class:`dualex.DualEncoder` are the same tower, so the explanation of ``(a, b)`` is
the transpose of that of ``(b, a)``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import UnknownModelError
from dualex.towers.base import DualEncoder, HookTower, TowerInput
from dualex.towers.inputs import (
    hf_id_positions,
    id_tensor,
    text_reference_ids,
    tokenize_with_offsets,
)
from dualex.towers.registry import Family, TowerDescription, type_is

__all__ = ["SentenceTransformerTower", "load_st", "wrap_st"]

_LAYER_PATHS = (
    "encoder.layer",  # BERT, RoBERTa, MPNet, XLM-R, ELECTRA
    "transformer.layer",  # DistilBERT
    "encoder.layers",
    "layers",  # ModernBERT, decoder-style encoders
    "encoder.block",  # T5 encoder
    "h",  # GPT-2 style
)


def find_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer layers of a Hugging Face model, in order.

    Raises:
        UnknownModelError: if no layer list is found.
    """
    for path in _LAYER_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return list(obj)
    raise UnknownModelError(
        f"cannot find the transformer layers of a {type(model).__name__} (looked for "
        f"{', '.join(_LAYER_PATHS)}); dualex supports BERT-like encoders"
    )


class SentenceTransformerTower(HookTower):
    """The text tower of a ``SentenceTransformer``, split at the input of a transformer layer.

    Args:
        model: A ``SentenceTransformer`` whose first module holds a Hugging Face ``auto_model``.
        reference: Default text reference: ``"pad"`` (every non-special token replaced by the
            pad token, the default), ``"empty"``, ``"exclip"`` (``[CLS, PAD, SEP, PAD…]``) or ids.
    """

    modality = "text"
    tensor_inputs = True

    def __init__(self, model: nn.Module, reference: Any = "pad") -> None:
        first = model[0]
        auto = getattr(first, "auto_model", None)
        if auto is None:
            raise UnknownModelError(
                f"the first module of this SentenceTransformer is a {type(first).__name__}, not a "
                "Hugging Face transformer; dualex explains models whose first module is one"
            )
        tok = getattr(model, "tokenizer", None) or getattr(first, "tokenizer", None)
        if tok is None or not getattr(tok, "is_fast", True):
            raise UnknownModelError(
                "this SentenceTransformer has no fast tokenizer; dualex needs character offsets"
            )
        self.model, self.auto_model, self.tokenizer = model, auto, tok
        self._layers = find_layers(auto)
        self.max_length = int(getattr(model, "max_seq_length", None) or tok.model_max_length)
        self.lower = bool(getattr(first, "do_lower_case", False))
        self.token_types = "token_type_ids" in getattr(tok, "model_input_names", [])
        self.default_reference = reference
        self.name = f"st-{type(auto).__name__.lower()}"

    def blocks(self) -> list[nn.Module]:
        return self._layers

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        out = self.model(dict(data))
        return out["sentence_embedding"]

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            ids = id_tensor(x, self.max_length)
            data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if self.token_types:
                data["token_type_ids"] = torch.zeros_like(ids)
            return TowerInput(data=data, positions=hf_id_positions(self.tokenizer, ids), raw=x)
        text = x
        shown = text.lower() if self.lower and isinstance(text, str) else text
        ids, mask, pos = tokenize_with_offsets(self.tokenizer, shown, self.max_length)
        if shown is not text:  # show the original casing, offsets are the same
            tokens = [
                text[o[0] : o[1]] if o else t for o, t in zip(pos.offsets, pos.tokens, strict=True)
            ]
            pos = replace(pos, text=text, tokens=tokens)
        data = {"input_ids": ids, "attention_mask": mask}
        if self.token_types:
            data["token_type_ids"] = torch.zeros_like(ids)
        return TowerInput(data=data, positions=pos, raw=x)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        bos = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        eos = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        empty = tok("")["input_ids"] if spec == "empty" else None
        ids = text_reference_ids(
            inp.data["input_ids"],
            inp.positions.special,
            spec,
            fill_id=int(pad),
            bos_id=bos,
            eos_id=eos,
            empty_ids=empty,
        )
        return TowerInput(data=dict(inp.data, input_ids=ids), positions=inp.positions, raw=None)


def _normalises(model: nn.Module) -> bool:
    return any(type(m).__name__ == "Normalize" for m in model)


def wrap_st(
    model: nn.Module, *, name: str | None = None, reference: Any = "pad", weights: str = "unknown"
) -> DualEncoder:
    """Wrap a ``SentenceTransformer`` as a text–text :class:`dualex.DualEncoder`.

    The similarity is ``"cosine"`` when the model normalises its embeddings or compares them by
    cosine, ``"dot"`` when its similarity function is the dot product.

    Args:
        model: The ``SentenceTransformer``.
        name: Display name.
        reference: Default text reference of the tower.

    Raises:
        UnknownModelError: for models whose similarity is not a dot product or cosine.
    """
    fn = str(getattr(model, "similarity_fn_name", None) or "cosine").lower()
    if fn not in ("cosine", "dot", "dot_product"):
        raise UnknownModelError(
            f"this model compares embeddings by {fn!r}; dualex explains dot-product and cosine "
            "similarities (set model.similarity_fn_name = 'cosine' to explain the cosine)"
        )
    similarity = "cosine" if (fn == "cosine" or _normalises(model)) else "dot"
    tower = SentenceTransformerTower(model, reference=reference)
    return DualEncoder(
        tower_a=tower,
        tower_b=tower,
        similarity=similarity,
        logit_scale=None,
        name=name or f"st:{type(tower.auto_model).__name__}",
        module=model,
        weights=weights,
        family=FAMILY,
    )


def load_st(spec: str, *, device: str = "cpu", reference: Any = "pad", **kwargs: Any) -> Any:
    """Load a sentence-transformers model by hub id or local folder (``"st:<id-or-path>"``).

    Args:
        spec: Hub id or a local folder saved with ``SentenceTransformer.save``.
        device: Device of the model.
        reference: Default text reference.
        **kwargs: Passed to ``SentenceTransformer``.

    Raises:
        UnknownModelError: if the model cannot be loaded (offline and not cached, not a
            sentence-transformers folder, ...) or is not supported.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnknownModelError(
            "'st:' models need sentence-transformers: pip install 'dualex[st]'"
        ) from err
    local = Path(spec).expanduser()
    source = str(local) if local.exists() else spec
    if (
        local.exists()
        and not (local / "modules.json").is_file()
        and not (local / "config.json").is_file()
    ):
        raise UnknownModelError(
            f"{str(local)!r} is not a sentence-transformers model folder (no modules.json or "
            "config.json); pass a folder saved with SentenceTransformer.save or a hub id"
        )
    from dualex.hub import local_only

    offline = local.exists() or local_only()
    from dualex.towers.session import quiet_hf_bars

    try:
        with quiet_hf_bars():  # no transformers weights bar, as for hf: and builtin
            model = SentenceTransformer(source, device=device, local_files_only=offline, **kwargs)
    except (OSError, ValueError, RuntimeError) as err:
        raise UnknownModelError(
            f"cannot load 'st:{spec}' with sentence-transformers ({str(err).splitlines()[0][:200]});"
            " pass a local model folder, or a hub id when online"
        ) from err
    return wrap_st(model, name=f"st:{spec}", reference=reference, weights="pretrained")


FAMILY = Family(
    name="st",
    summary="SentenceTransformer objects (text–text, one shared tower)",
    prefixes=("st",),
    spec_forms={"st:<id-or-path>": "a sentence-transformers model (text–text)"},
    can_wrap=lambda obj: type_is(obj, "sentence_transformers", "SentenceTransformer"),
    wrap=lambda obj, parts, **kw: wrap_st(obj, **kw),
    load=lambda rest, **kw: load_st(rest, **kw),
    towers={"text": TowerDescription(blocks="[0].auto_model.encoder.layer (found by find_layers)")},
    modalities=("text", "text"),
    requires=("sentence-transformers",),
    install="pip install 'dualex[st]'",
)
