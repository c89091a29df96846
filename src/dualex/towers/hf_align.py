"""Hugging Face ALIGN towers (``AlignModel``: EfficientNet image tower, BERT text tower).

The text tower runs the model's own ``get_text_features`` (BERT, the ``[CLS]`` row projected)
split at the input of an encoder layer; the image tower runs ``get_image_features`` (EfficientNet
blocks, then average pooling) split at the input of an EfficientNet block, and its positions are
the spatial cells of that block's input feature map — the grid shrinks with every strided stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import UnknownModelError
from dualex.towers.base import DualEncoder, HookTower, TowerInput, read_scale
from dualex.towers.clip_common import FeatureMapMixin, image_reference_pixels
from dualex.towers.hf import _features, trainable
from dualex.towers.inputs import (
    PIXEL_SOURCE,
    hf_id_positions,
    id_tensor,
    load_image,
    pixel_tensor,
    tensor_geometry,
    text_reference_ids,
    tokenize_with_offsets,
    warn_discarded,
)
from dualex.towers.positions import Geometry, ImagePositions, Positions
from dualex.towers.registry import Family, TowerDescription, type_is

__all__ = ["FAMILY", "AlignImageTower", "AlignTextTower", "wrap_align"]


def _hw(d: Any) -> tuple[int, int] | None:
    if d is None:
        return None
    get = d.get if hasattr(d, "get") else (lambda k, default=None: getattr(d, k, default))
    h, w = get("height", None), get("width", None)
    return (int(h), int(w)) if h and w else None


def align_geometry(processor: Any, size: tuple[int, int], input_hw: tuple[int, int]) -> Geometry:
    """Geometry of an ``EfficientNetImageProcessor``: resize to a fixed size, optional centre crop.

    Args:
        processor: The image processor.
        size: ``(width, height)`` of the original image.
        input_hw: ``(height, width)`` of the processed input.
    """
    w, h = size
    h_in, w_in = input_hw
    resized = (
        _hw(getattr(processor, "size", None)) if getattr(processor, "do_resize", True) else None
    )
    rh, rw = resized or (h, w)
    if getattr(processor, "do_center_crop", False):
        ch, cw = _hw(getattr(processor, "crop_size", None)) or (h_in, w_in)
        off = (float(round((rw - cw) / 2.0)), float(round((rh - ch) / 2.0)))
    else:
        off = (0.0, 0.0)
    return Geometry(
        original_size=(w, h), input_size=(w_in, h_in), scale=(rw / w, rh / h), offset=off
    )


class AlignTextTower(HookTower):
    """BERT text tower of an ``AlignModel`` (embedding = projected ``[CLS]`` row).

    Args:
        model: The ``AlignModel``.
        tokenizer: Its fast (BERT) tokenizer.
        reference: Default text reference (``"pad"``: ``[CLS, PAD, …, SEP]``).
    """

    modality = "text"
    tensor_inputs = True
    name = "hf-align-text"

    def __init__(self, model: nn.Module, tokenizer: Any, reference: Any = "pad") -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.default_reference = reference

    def blocks(self) -> list[nn.Module]:
        return list(self.model.text_model.encoder.layer)

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return _features(self.model.get_text_features(**data))

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            ids = id_tensor(x, self.max_length)
            data = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "token_type_ids": torch.zeros_like(ids),
            }
            return TowerInput(data=data, positions=hf_id_positions(self.tokenizer, ids), raw=x)
        ids, mask, pos = tokenize_with_offsets(self.tokenizer, x, self.max_length)
        data = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        return TowerInput(data=data, positions=pos, raw=x)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        tok = self.tokenizer
        ids = text_reference_ids(
            inp.data["input_ids"],
            inp.positions.special,
            spec,
            fill_id=int(tok.pad_token_id or 0),
            bos_id=tok.cls_token_id,
            eos_id=tok.sep_token_id,
            empty_ids=tok("")["input_ids"] if spec == "empty" else None,
        )
        return TowerInput(data=dict(inp.data, input_ids=ids), positions=inp.positions, raw=None)


class AlignImageTower(FeatureMapMixin, HookTower):
    """EfficientNet image tower of an ``AlignModel``; positions are feature-map cells.

    Layer ``L`` is the input of EfficientNet block ``L`` (0 = the stem's output); layer
    ``num_layers`` the output of the last block, which the model average-pools.

    Args:
        model: The ``AlignModel``.
        image_processor: Its ``EfficientNetImageProcessor``.
        reference: Default image reference (``"zeros"``: all-zero input in normalised space).
    """

    modality = "image"
    tensor_inputs = True
    name = "hf-align-vision"
    layout = "bchw"

    def __init__(self, model: nn.Module, image_processor: Any, reference: Any = "zeros") -> None:
        self.model, self.processor = model, image_processor
        self.default_reference = reference

    def blocks(self) -> list[nn.Module]:
        return list(self.model.vision_model.encoder.blocks)

    skip_prefix = False
    """EfficientNet blocks change the map's shape, so the prefix always runs."""

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return _features(self.model.get_image_features(pixel_values=data["pixel_values"]))

    def pixel_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _pixels(self, image: Any) -> Tensor:
        out = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return out.to(dtype=self.pixel_dtype())

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            pixels = pixel_tensor(x, self.pixel_dtype())
            image, source = x, PIXEL_SOURCE
        else:
            image, source = load_image(x), "image"
            pixels = self._pixels(image)
        hw = (int(pixels.shape[-2]), int(pixels.shape[-1]))
        geo = (
            tensor_geometry(pixels)
            if source == PIXEL_SOURCE
            else align_geometry(self.processor, image.size, hw)
        )
        if source != PIXEL_SOURCE:
            warn_discarded(geo)
        grid = self.feature_grids(hw)[self.default_layer]
        pos = ImagePositions(grid=grid, prefix=0, geometry=geo, source=source)
        return TowerInput(data={"pixel_values": pixels}, positions=pos, raw=image)

    def positions_at(self, inp: TowerInput, layer: int) -> Positions:
        """Positions at ``layer``: the cells of the feature map entering that block."""
        from dataclasses import replace

        hw = (int(inp.data["pixel_values"].shape[-2]), int(inp.data["pixel_values"].shape[-1]))
        grid = self.feature_grids(hw)[self.check_layer(layer)]
        return replace(inp.positions, grid=grid, prefix=0)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        ref = image_reference_pixels(inp.data["pixel_values"], inp.raw, spec, self._pixels)
        return TowerInput(data={"pixel_values": ref}, positions=inp.positions, raw=None)


def wrap_align(
    model: nn.Module,
    tokenizer: Any = None,
    image_processor: Any = None,
    *,
    name: str | None = None,
    weights: str = "unknown",
) -> DualEncoder:
    """Wrap a transformers ``AlignModel`` as a :class:`dualex.DualEncoder`.

    Args:
        model: The ``AlignModel``.
        tokenizer: Its fast BERT tokenizer.
        image_processor: Its ``EfficientNetImageProcessor``.
        name: Display name.
        weights: Where the weights come from (``"pretrained"``, ``"random"``, ``"unknown"``).

    Raises:
        UnknownModelError: if the tokenizer or image processor is missing.
    """
    if tokenizer is None or image_processor is None:
        raise UnknownModelError(
            "wrapping an AlignModel needs its tokenizer and image processor; pass "
            "processor=AlignProcessor.from_pretrained(path) or tokenizer= and image_processor="
        )
    return DualEncoder(
        tower_a=AlignTextTower(model, tokenizer),
        tower_b=AlignImageTower(model, image_processor),
        similarity="cosine",
        logit_scale=read_scale(model, "temperature", inverse=True),
        name=name or f"hf:{getattr(model.config, '_name_or_path', '') or 'AlignModel'}",
        module=model,
        weights=weights,
        family=FAMILY,
    )


FAMILY = Family(
    name="hf-align",
    summary="transformers AlignModel (EfficientNet + BERT) with its processor",
    prefixes=(),  # loaded through "hf:" (AutoModel gives an AlignModel)
    can_wrap=lambda obj: type_is(obj, "transformers", "AlignModel"),
    wrap=lambda obj, parts, **kw: wrap_align(obj, parts.text(), parts.image(), **kw),
    towers={
        "text": TowerDescription(blocks="text_model.encoder.layer"),
        "image": TowerDescription(blocks="vision_model.encoder.blocks"),
    },
    requires=("transformers",),
    trainable=trainable,
)
