"""Hugging Face transformers towers: CLIPModel and SiglipModel (text and vision).

Each tower runs the model's own ``get_text_features`` / ``get_image_features`` and splits it at
an encoder layer with a hook, so pooling and heads are exactly the model's: CLIP text pools at the
input's EOS, CLIP vision at CLS, SigLIP text at the last position, SigLIP vision by its attention
pooling head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import InvalidInputError
from dualex.towers.base import HookTower, TowerInput
from dualex.towers.inputs import (
    blurred,
    load_image,
    processor_geometry,
    text_reference_ids,
    tokenize_with_offsets,
)
from dualex.towers.positions import ImagePositions


def _features(out: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output object (5)."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find the embedding in {type(out).__name__}")
    return pooled


def pooled_last_block(block: nn.Module, H: Tensor, row: int, causal: bool) -> Tensor:
    """A CLIP encoder block evaluated for one output row only.

    After the last block CLIP keeps a single row (EOS for text, CLS for images), so only that
    row's query, and the keys/values it attends to, can reach the embedding. Same arithmetic as
    ``CLIPEncoderLayer`` (float32 softmax included) for that row; ``[B, S, D] -> [B, D]``.
    """
    attn = block.self_attn
    B, _, D = H.shape
    heads, hd = attn.num_heads, attn.head_dim
    y = block.layer_norm1(H)
    keys = y[:, : row + 1] if causal else y
    q = attn.q_proj(y[:, row : row + 1]).view(B, 1, heads, hd).transpose(1, 2)
    k = attn.k_proj(keys).view(B, -1, heads, hd).transpose(1, 2)
    v = attn.v_proj(keys).view(B, -1, heads, hd).transpose(1, 2)
    w = torch.softmax((q @ k.transpose(-1, -2)) * attn.scale, dim=-1, dtype=torch.float32)
    o = (w.to(q.dtype) @ v).transpose(1, 2).reshape(B, 1, D)
    x = H[:, row : row + 1] + attn.out_proj(o)
    x = x + block.mlp(block.layer_norm2(x))
    return x[:, 0]


def family(model: nn.Module) -> str:
    """``"clip"`` or ``"siglip"`` for a supported transformers dual encoder."""
    name = type(model).__name__.lower()
    if "siglip" in name:
        return "siglip"
    if "clip" in name:
        return "clip"
    raise InvalidInputError(
        f"dualex's Hugging Face towers support CLIPModel and SiglipModel, not {type(model).__name__}"
    )


class HFTextTower(HookTower):
    """Text tower of a transformers ``CLIPModel`` or ``SiglipModel``.

    Args:
        model: The dual-encoder model.
        tokenizer: Its (fast) tokenizer.
        reference: Default text reference (``"exclip"`` for CLIP, ``"pad"`` for SigLIP).
    """

    modality = "text"

    def __init__(self, model: nn.Module, tokenizer: Any, reference: str | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.family = family(model)
        self.name = f"hf-{self.family}-text"
        cfg = model.config.text_config
        self.max_length = int(cfg.max_position_embeddings)
        self.pad_to = self.max_length if self.family == "siglip" else None
        self.default_reference = reference or ("exclip" if self.family == "clip" else "pad")

    fast_last_block = True
    """Use :func:`pooled_last_block` when splitting at the last block's input (CLIP only)."""

    def blocks(self) -> list[nn.Module]:
        return list(self.model.text_model.encoder.layers)

    def pooled_row(self, inp: TowerInput) -> int:
        """Position CLIP pools at: the first EOS (``argmax`` of the ids for legacy configs)."""
        ids = inp.data["input_ids"][0]
        eos = self.model.config.text_config.eos_token_id
        if eos == 2:
            return int(ids.argmax())
        return int((ids == eos).int().argmax())

    def suffix(self, inp: TowerInput, layer: int):
        layer = self.check_layer(layer)
        if not (self.fast_last_block and self.family == "clip" and layer == self.num_layers - 1):
            return super().suffix(inp, layer)
        row, tm, block = self.pooled_row(inp), self.model.text_model, self.blocks()[-1]

        def run(H: Tensor) -> Tensor:
            x = pooled_last_block(block, H, row, causal=True)
            return self.model.text_projection(tm.final_layer_norm(x))

        return run

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        kwargs = {"input_ids": data["input_ids"]}
        if self.family == "clip" and "attention_mask" in data:
            kwargs["attention_mask"] = data["attention_mask"]
        return _features(self.model.get_text_features(**kwargs))

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        ids, mask, pos = tokenize_with_offsets(
            self.tokenizer, x, self.max_length, pad_to=self.pad_to
        )
        data = {"input_ids": ids}
        if self.family == "clip":
            data["attention_mask"] = mask
        return TowerInput(data=data, positions=pos, raw=x)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        tok = self.tokenizer
        fill = 0 if self.family == "clip" else int(tok.pad_token_id or 0)
        empty = tok("", return_tensors=None)["input_ids"] if spec == "empty" else None
        ids = text_reference_ids(
            inp.data["input_ids"],
            inp.positions.special,
            spec,
            fill_id=fill,
            bos_id=tok.bos_token_id,
            eos_id=tok.eos_token_id,
            empty_ids=empty,
        )
        data = dict(inp.data, input_ids=ids)
        return TowerInput(data=data, positions=inp.positions, raw=None)


class HFImageTower(HookTower):
    """Vision tower of a transformers ``CLIPModel`` or ``SiglipModel``.

    Args:
        model: The dual-encoder model.
        image_processor: Its image processor (resize/crop/normalise).
        reference: Default image reference (``"zeros"``: all-zero input in normalised space).
    """

    modality = "image"

    def __init__(
        self, model: nn.Module, image_processor: Any, reference: str | None = None
    ) -> None:
        self.model, self.processor = model, image_processor
        self.family = family(model)
        self.name = f"hf-{self.family}-vision"
        self.default_reference = reference or "zeros"
        cfg = model.config.vision_config
        self.patch = int(cfg.patch_size)

    fast_last_block = True
    """Use :func:`pooled_last_block` when splitting at the last block's input (CLIP only)."""

    def blocks(self) -> list[nn.Module]:
        return list(self.model.vision_model.encoder.layers)

    def suffix(self, inp: TowerInput, layer: int):
        layer = self.check_layer(layer)
        if not (self.fast_last_block and self.family == "clip" and layer == self.num_layers - 1):
            return super().suffix(inp, layer)
        vm, block = self.model.vision_model, self.blocks()[-1]

        def run(H: Tensor) -> Tensor:
            x = pooled_last_block(block, H, 0, causal=False)
            return self.model.visual_projection(vm.post_layernorm(x))

        return run

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return _features(self.model.get_image_features(pixel_values=data["pixel_values"]))

    def _pixels(self, image: Any) -> Tensor:
        out = self.processor(images=image, return_tensors="pt")["pixel_values"]
        dtype = next(self.model.parameters()).dtype
        return out.to(dtype=dtype)

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        image = load_image(x)
        pixels = self._pixels(image)
        h_in, w_in = pixels.shape[-2:]
        geo = processor_geometry(self.processor, image.size, (int(h_in), int(w_in)))
        grid = (int(h_in) // self.patch, int(w_in) // self.patch)
        prefix = 1 if self.family == "clip" else 0
        pos = ImagePositions(grid=grid, prefix=prefix, geometry=geo)
        return TowerInput(data={"pixel_values": pixels}, positions=pos, raw=image)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        px = inp.data["pixel_values"]
        if isinstance(spec, str) and spec in ("zeros", "mean"):
            ref = torch.zeros_like(px)
        elif spec == "blur":
            ref = self._pixels(blurred(inp.raw))
        elif isinstance(spec, Tensor) and spec.is_floating_point() and spec.dim() in (3, 4):
            ref = spec.reshape(px.shape).to(px) if spec.numel() == px.numel() else None
            if ref is None:
                raise InvalidInputError(
                    f"reference pixels have shape {tuple(spec.shape)}, the input is "
                    f"{tuple(px.shape)}; pass a tensor of the processed input's shape"
                )
        else:
            try:
                image = load_image(spec)
            except InvalidInputError as err:
                raise InvalidInputError(
                    f"unknown image reference {spec!r}; use 'zeros', 'blur', an image, processed "
                    "pixels, or a hidden-state tensor [S, D]"
                ) from err
            ref = self._pixels(image)
        return TowerInput(data={"pixel_values": ref}, positions=inp.positions, raw=None)
