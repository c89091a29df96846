"""Hugging Face transformers: CLIPModel, SiglipModel and Siglip2Model (text and vision).

Each tower runs the model's own ``get_text_features`` / ``get_image_features`` and splits it at
an encoder layer, so pooling and heads are exactly the model's: CLIP text pools at the input's
EOS, CLIP vision at CLS, SigLIP text at the last position, SigLIP vision by its attention pooling
head. SigLIP-2 (NaFlex) images are patch sequences with a per-image grid and padding.

This module also declares the ``hf:`` family (``dualex.load("hf:<id-or-path>")``; ALIGN models
load through it too) and the ``builtin`` spec.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.engine.lastblock import LastBlock, last_block_forward
from dualex.engine.projection import BatchSuffixFn
from dualex.errors import InvalidInputError, UnknownModelError
from dualex.towers.access import (
    Attention,
    VisionAccess,
    VisionAccessError,
    check_mha,
    merge_heads,
    mha_attention,
    mha_merge,
    softmax_probs,
    split_heads,
)
from dualex.towers.base import DualEncoder, FastPath, HookTower, TowerInput, read_scale
from dualex.towers.clip_common import image_reference_pixels, packed_attention
from dualex.towers.inputs import (
    PIXEL_SOURCE,
    hf_id_positions,
    id_tensor,
    load_image,
    pixel_tensor,
    processor_geometry,
    tensor_geometry,
    text_reference_ids,
    tokenize_with_offsets,
    warn_discarded,
)
from dualex.towers.positions import Geometry, ImagePositions
from dualex.towers.registry import Family, TowerDescription, for_object, resolve, type_is
from dualex.towers.trainable import Trainable


def _features(out: Any) -> Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output object (5)."""
    if isinstance(out, Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"cannot find the embedding in {type(out).__name__}")
    return pooled


def softmax_dtype(block: nn.Module, dtype: torch.dtype) -> torch.dtype:
    """The dtype a transformers CLIP layer's softmax runs in: float32 with eager attention (its
    code says so, even for float64 models), the model's dtype with SDPA."""
    impl = getattr(getattr(block.self_attn, "config", None), "_attn_implementation", "eager")
    return torch.float32 if impl in (None, "eager") else dtype


def hf_last_block(block: nn.Module, head: Callable[[Tensor], Tensor], causal: bool) -> LastBlock:
    """The pieces of a transformers CLIP encoder layer (separate q/k/v projections)."""
    attn = block.self_attn

    def wb(lin: nn.Module) -> tuple[Tensor, Tensor | None]:
        return lin.weight, lin.bias

    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = (
        wb(attn.q_proj),
        wb(attn.k_proj),
        wb(attn.v_proj),
        wb(attn.out_proj),
    )
    return LastBlock(
        ln1=block.layer_norm1,
        w_q=wq,
        b_q=bq,
        w_k=wk,
        b_k=bk,
        w_v=wv,
        b_v=bv,
        w_o=wo,
        b_o=bo,
        heads=int(attn.num_heads),
        scale=float(attn.scale),
        ln2=block.layer_norm2,
        mlp=block.mlp,
        head=head,
        causal=causal,
        softmax_dtype=softmax_dtype(block, attn.q_proj.weight.dtype),
    )


def pool_head_block(vm: nn.Module) -> LastBlock | None:
    """SigLIP's attention-pool head (``vm.head``) after the final LayerNorm, as a
    :class:`LastBlock` read by its learned probe; ``None`` if the head is not a packed
    ``nn.MultiheadAttention`` with a probe (the generic path then runs)."""
    head = getattr(vm, "head", None)
    mha = getattr(head, "attention", None)
    try:
        mha = check_mha(mha, "SigLIP pooling head")
    except VisionAccessError:
        return None
    if getattr(head, "probe", None) is None:
        return None
    return LastBlock(
        ln1=vm.post_layernorm,
        **packed_attention(mha),
        ln2=head.layernorm,
        mlp=head.mlp,
        head=lambda x: x,
        probe=head.probe.reshape(mha.embed_dim),
    )


def _pooled_rows(rows: Tensor, items: Sequence[int], m: int) -> Tensor:
    """The kept row of each of ``len(items)·m`` batch rows (item-major)."""
    return rows[torch.as_tensor(list(items))].repeat_interleave(m)


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
    tensor_inputs = True

    def __init__(self, model: nn.Module, tokenizer: Any, reference: str | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.family = family(model)
        self.name = f"hf-{self.family}-text"
        cfg = model.config.text_config
        self.max_length = int(cfg.max_position_embeddings)
        self.pad_to = self.max_length if self.family == "siglip" else None
        self.default_reference = reference or ("exclip" if self.family == "clip" else "pad")

    fast_last_block = True
    """Run the suffix of a split at the last block's input (CLIP only) as the pooled row's
    block alone: the :meth:`fast_path` block through :func:`last_block_forward`."""

    def blocks(self) -> list[nn.Module]:
        return list(resolve(self.model, TOWERS["text"].blocks))

    def pooled_row(self, inp: TowerInput) -> int:
        """Position CLIP pools at: the first EOS (``argmax`` of the ids for legacy configs)."""
        ids = inp.data["input_ids"][0]
        eos = self.model.config.text_config.eos_token_id
        if eos == 2:
            return int(ids.argmax())
        return int((ids == eos).int().argmax())

    def fast_path(self, inps: Sequence[TowerInput], layer: int) -> FastPath | None:
        """CLIP pools at the end token (causal); SigLIP and SigLIP-2 at the last position
        (bidirectional, no mask): both have the pooled-row structure at the last block."""
        if self.check_layer(layer) != self.num_layers - 1:
            return None
        tm = self.model.text_model
        if self.family == "clip":

            def head(x: Tensor) -> Tensor:
                return self.model.text_projection(tm.final_layer_norm(x))

            block = hf_last_block(self.original_blocks()[-1], head, causal=True)
            return FastPath(block, torch.tensor([self.pooled_row(inp) for inp in inps]))
        if "attention_mask" in inps[0].data or getattr(tm, "head", None) is None:
            return None

        def siglip_head(x: Tensor) -> Tensor:
            return tm.head(tm.final_layer_norm(x))

        block = hf_last_block(self.original_blocks()[-1], siglip_head, causal=False)
        last = inps[0].data["input_ids"].shape[1] - 1
        return FastPath(block, torch.full((len(inps),), last, dtype=torch.long))

    def suffix_batch(self, inps: Sequence[TowerInput], layer: int) -> BatchSuffixFn:
        layer = self.check_layer(layer)
        if not (self.fast_last_block and self.family == "clip" and layer == self.num_layers - 1):
            return super().suffix_batch(inps, layer)
        fast = self.fast_path(inps, layer)
        assert fast is not None

        def run(H: Tensor, items: Sequence[int]) -> Tensor:
            kept = _pooled_rows(fast.rows, items, H.shape[0] // len(items))
            with self.session():
                return last_block_forward(fast.block, H, kept)

        return run

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        kwargs = {"input_ids": data["input_ids"]}
        if self.family == "clip" and "attention_mask" in data:
            kwargs["attention_mask"] = data["attention_mask"]
        return _features(self.model.get_text_features(**kwargs))

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        if isinstance(x, Tensor):
            ids = id_tensor(x, self.max_length, length=self.pad_to)
            data = {"input_ids": ids}
            if self.family == "clip":
                data["attention_mask"] = torch.ones_like(ids)
            return TowerInput(data=data, positions=hf_id_positions(self.tokenizer, ids), raw=x)
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
    tensor_inputs = True

    def __init__(
        self, model: nn.Module, image_processor: Any, reference: str | None = None
    ) -> None:
        self.model, self.processor = model, image_processor
        self.family = family(model)
        self.name = f"hf-{self.family}-vision"
        self.default_reference = reference or "zeros"
        cfg = model.config.vision_config
        self.patch = int(cfg.patch_size)
        self.naflex = "siglip2" in type(model).__name__.lower()

    fast_last_block = True
    """Run the suffix of a split at the last block's input (CLIP only) as the pooled row's
    block alone: the :meth:`fast_path` block through :func:`last_block_forward`."""

    def blocks(self) -> list[nn.Module]:
        return list(resolve(self.model, TOWERS["image"].blocks))

    def natural_layer(self) -> int:
        """CLIP: the input of the last block (CLS row). SigLIP and SigLIP-2: the input of the
        attention-pool head (the output of the last block, ``num_layers``). Every row of the last
        block feeds the head, so a split at that block's input costs S² rows of its MLP per node
        (the generic path); at the head's input the probe is the only query and the cost is about
        one block per node."""
        if self.family == "siglip" and getattr(self.model.vision_model, "head", None) is not None:
            return self.num_layers
        return super().natural_layer()

    def fast_path(self, inps: Sequence[TowerInput], layer: int) -> FastPath | None:
        layer = self.check_layer(layer)
        vm = self.model.vision_model
        if self.family == "siglip" and layer == self.num_layers:
            block = pool_head_block(vm)
            if block is None:
                return None
            keys = None
            if self.naflex:
                keys = torch.cat([inp.data["pixel_attention_mask"] for inp in inps]).bool()
            return FastPath(block, torch.zeros(len(inps), dtype=torch.long), keys=keys)
        if not (self.family == "clip" and layer == self.num_layers - 1):
            return None

        def head(x: Tensor) -> Tensor:
            return self.model.visual_projection(vm.post_layernorm(x))

        block = hf_last_block(self.original_blocks()[-1], head, causal=False)
        return FastPath(block, torch.zeros(len(inps), dtype=torch.long))

    def suffix_batch(self, inps: Sequence[TowerInput], layer: int) -> BatchSuffixFn:
        layer = self.check_layer(layer)
        if not (self.fast_last_block and self.family == "clip" and layer == self.num_layers - 1):
            return super().suffix_batch(inps, layer)
        fast = self.fast_path(inps, layer)
        assert fast is not None

        def run(H: Tensor, items: Sequence[int]) -> Tensor:
            kept = torch.zeros(H.shape[0], dtype=torch.long)
            with self.session():
                return last_block_forward(fast.block, H, kept)

        return run

    def suffix_key(self, inp: TowerInput, layer: int) -> tuple:
        """Fixed-size images: the suffix reads nothing but the hidden state (NaFlex: the mask)."""
        if self.naflex:
            return super().suffix_key(inp, layer)
        return ()

    def encode(self, data: dict[str, Tensor]) -> Tensor:
        return _features(self.model.get_image_features(**data))

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _process(self, image: Any) -> dict[str, Tensor]:
        out = self.processor(images=image, return_tensors="pt")
        keys = (
            ("pixel_values", "pixel_attention_mask", "spatial_shapes")
            if self.naflex
            else ("pixel_values",)
        )
        data = {k: out[k] for k in keys}
        data["pixel_values"] = data["pixel_values"].to(dtype=self._dtype())
        return data

    def _pixels(self, image: Any) -> Tensor:
        return self._process(image)["pixel_values"]

    def prepare(self, x: Any) -> TowerInput:
        if isinstance(x, TowerInput):
            return x
        prefix = 1 if self.family == "clip" else 0
        if isinstance(x, Tensor):
            if self.naflex:
                raise InvalidInputError(
                    "SigLIP-2 (NaFlex) pixel tensors need their patch mask and grid; pass the "
                    "image (path, PIL or array) instead"
                )
            size = int(self.model.config.vision_config.image_size)
            pixels = pixel_tensor(x, self._dtype(), (size, size))
            grid = (size // self.patch, size // self.patch)
            pos = ImagePositions(
                grid=grid, prefix=prefix, geometry=tensor_geometry(pixels), source=PIXEL_SOURCE
            )
            return TowerInput(data={"pixel_values": pixels}, positions=pos, raw=x)
        image = load_image(x)
        data = self._process(image)
        if self.naflex:
            gh, gw = (int(v) for v in data["spatial_shapes"][0])
            total = int(data["pixel_values"].shape[1])
            geo = Geometry.resize(image.size, (gw * self.patch, gh * self.patch))
            pos = ImagePositions(
                grid=(gh, gw), prefix=0, geometry=geo, suffix_count=total - gh * gw
            )
            return TowerInput(data=data, positions=pos, raw=image)
        pixels = data["pixel_values"]
        h_in, w_in = pixels.shape[-2:]
        geo = processor_geometry(self.processor, image.size, (int(h_in), int(w_in)))
        warn_discarded(geo)
        grid = (int(h_in) // self.patch, int(w_in) // self.patch)
        pos = ImagePositions(grid=grid, prefix=prefix, geometry=geo)
        return TowerInput(data=data, positions=pos, raw=image)

    def reference_input(self, inp: TowerInput, spec: Any = None) -> TowerInput:
        spec = self.default_reference if spec is None else spec
        ref = image_reference_pixels(inp.data["pixel_values"], inp.raw, spec, self._pixels)
        return TowerInput(data=dict(inp.data, pixel_values=ref), positions=inp.positions, raw=None)


TOWERS = {
    "text": TowerDescription(blocks="text_model.encoder.layers"),
    "image": TowerDescription(blocks="vision_model.encoder.layers"),
}
"""The towers of transformers CLIP / SigLIP / SigLIP-2 models, as data."""


def wrap_hf(
    model: nn.Module,
    tokenizer: Any,
    image_processor: Any,
    *,
    name: str | None = None,
    weights: str = "unknown",
    text_reference: Any = None,
    image_reference: Any = None,
) -> DualEncoder:
    """Wrap a transformers ``CLIPModel``, ``SiglipModel`` or ``Siglip2Model``.

    Args:
        model: The model (not changed: no mode switch, no copy).
        tokenizer: Its fast tokenizer.
        image_processor: Its image processor.
        name: Display name.
        weights: Where the weights come from (``"pretrained"``, ``"builtin"``, ``"random"``...).
        text_reference: Default text reference.
        image_reference: Default image reference.

    Raises:
        UnknownModelError: if the tokenizer or image processor is missing.
    """
    cls = type(model).__name__
    if tokenizer is None or image_processor is None:
        raise UnknownModelError(
            f"wrapping a {cls} needs its tokenizer and image processor; pass processor=... "
            "(e.g. AutoProcessor.from_pretrained(path)) or tokenizer= and image_processor="
        )
    return DualEncoder(
        tower_a=HFTextTower(model, tokenizer, text_reference),
        tower_b=HFImageTower(model, image_processor, image_reference),
        similarity="cosine",
        logit_scale=read_scale(model),
        name=name or f"hf:{getattr(model.config, '_name_or_path', '') or cls}",
        module=model,
        weights=weights,
        family=FAMILY,
    )


def load_hf(path: str, **kwargs: Any) -> DualEncoder:
    """Load ``"hf:<id-or-path>"`` with transformers' Auto classes (CLIP, SigLIP(-2), ALIGN).

    Raises:
        UnknownModelError: if transformers cannot load it (offline and not cached, ...).
    """
    from transformers import AutoConfig, AutoModel, AutoProcessor

    from dualex.hub import local_only

    spec = f"hf:{path}"
    local = Path(path).expanduser()
    source = str(local) if local.exists() else path
    only_local = local.exists() or local_only()
    from dualex.towers.session import quiet_hf_bars

    try:
        # no "Loading weights" bar (as for builtin); the user's own setting comes back after
        with quiet_hf_bars():
            config = AutoConfig.from_pretrained(source, local_files_only=only_local)
            model = AutoModel.from_pretrained(
                source, config=config, local_files_only=only_local, **kwargs
            )
            processor = AutoProcessor.from_pretrained(source, local_files_only=only_local)
    except (OSError, ValueError) as err:
        raise UnknownModelError(
            f"cannot load {spec!r} with transformers ({str(err).splitlines()[0]}); pass a local "
            "folder saved with save_pretrained, or a hub id when online"
        ) from err
    # AutoModel may give an AlignModel: the family that wraps it (hf or hf-align) does
    return for_object(model).adopt(model, processor, name=spec, weights="pretrained")


def _can_wrap(obj: Any) -> bool:
    return type_is(obj, "transformers", "CLIPModel", "SiglipModel", "Siglip2Model")


# ---------------------------------------------------------------------------------------------
# attention access (dualex.towers.access) for attention-based first-order methods; kept apart
# from the towers above.
# ---------------------------------------------------------------------------------------------


class HFVisionAccess(VisionAccess):
    """CLIP (CLS readout), SigLIP and SigLIP-2 (attention-pool readout) vision towers.

    SigLIP-2 (NaFlex) images are patch sequences with a per-image grid and padding. The padded
    patches are masked out of every attention (as keys) and of the pool, so they cannot change
    the real patches' states: :meth:`prepare` keeps the real patches only and returns them
    re-assembled as an ordinary image ``[1, 3, rows·p, cols·p]``, and :meth:`stem` cuts it back
    into the processor's patch order and resizes the position embeddings to that grid (no
    padding, no mask), so every method treats NaFlex pixels like any other ViT's.

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_hf` (or the builtin model).

    Raises:
        VisionAccessError: for a tower that is not a transformers vision tower, or a SigLIP
            vision model without its pooling head.
    """

    def __init__(self, model: Any) -> None:
        tb = model.tower_b
        if not isinstance(tb, HFImageTower):
            raise VisionAccessError(f"{model.name!r} has no transformers vision tower")
        m = tb.model
        self.hf, self.vm, self.naflex = m, m.vision_model, tb.naflex
        kind = "hf-siglip2" if tb.naflex else f"hf-{tb.family}"
        super().__init__(
            model,
            resolve(m, TOWERS["image"].blocks),
            kind=kind,
            prefix=1 if tb.family == "clip" else 0,
            patch=(tb.patch, tb.patch),
            dtype=next(m.parameters()).dtype,
        )
        if tb.family == "siglip":
            if getattr(self.vm, "head", None) is None:
                raise VisionAccessError(f"{kind}: this vision model has no pooling head")
            self.pooling = "attention-pool"
            self.mha = check_mha(self.vm.head.attention, f"{kind} pooling head")

    def prepare(self, image: Any) -> tuple[Tensor, ImagePositions]:
        if not self.naflex:
            return super().prepare(image)
        inp = self.model.tower_b.prepare(image)
        rows, cols = inp.positions.grid
        n, p = rows * cols, self.patch[0]
        mask = inp.data["pixel_attention_mask"][0]
        if not bool(mask[:n].all()) or bool(mask[n:].any()):
            raise VisionAccessError("SigLIP-2 input: its patch mask does not match its grid")
        patches = inp.data["pixel_values"][0, :n].to(self.dtype)  # [n, p·p·3], (pr, pc, c)
        img = patches.reshape(rows, cols, p, p, -1).permute(4, 0, 2, 1, 3)
        return img.reshape(1, -1, rows * p, cols * p), inp.positions

    def stem(self, pixels: Tensor) -> Tensor:
        emb = self.vm.embeddings
        if self.naflex:
            B, C, H, W = pixels.shape
            p = self.patch[0]
            rows, cols = H // p, W // p
            x = pixels.reshape(B, C, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1)
            shapes = torch.tensor([[rows, cols]] * B, device=pixels.device)
            return emb(x.reshape(B, rows * cols, p * p * C), shapes)
        x = emb(pixels)
        pre = getattr(self.vm, "pre_layrnorm", None)  # CLIP only
        return pre(x) if pre is not None else x

    def norm1(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.layer_norm1(x)

    def attention(self, block: nn.Module, y: Tensor) -> Attention:
        a = block.self_attn
        h = int(a.num_heads)
        q, k, v = (split_heads(f(y), h) for f in (a.q_proj, a.k_proj, a.v_proj))
        return Attention(q=q, k=k, v=v, probs=softmax_probs(q, k, float(a.scale)))

    def merge(self, block: nn.Module, o: Tensor) -> Tensor:
        return block.self_attn.out_proj(merge_heads(o))

    def mlp(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.mlp(block.layer_norm2(x))

    def project(self, pooled: Tensor) -> Tensor:
        if self.pooling == "attention-pool":
            return pooled  # SigLIP's embedding is the pool's output
        return self.hf.visual_projection(self.vm.post_layernorm(pooled))

    def pool_attention(self, x: Tensor) -> Attention:
        if self.pooling != "attention-pool":
            return super().pool_attention(x)
        y = self.vm.post_layernorm(x)
        probe = self.vm.head.probe.expand(y.shape[0], -1, -1).to(y.dtype)
        return mha_attention(self.mha, probe, y)

    def pool_values(self, tokens: Tensor) -> Tensor:
        if self.pooling != "attention-pool":
            return super().pool_values(tokens)
        y = self.vm.post_layernorm(tokens).unsqueeze(1)  # [N, 1, D]
        return mha_attention(self.mha, y, y).v  # [N, heads, 1, hd]

    def pool_finish(self, o: Tensor) -> Tensor:
        if self.pooling != "attention-pool":
            return super().pool_finish(o)
        head = self.vm.head
        z = mha_merge(self.mha, o)
        z = z + head.mlp(head.layernorm(z))
        return z[:, 0]


def vision_access(model: Any) -> HFVisionAccess:
    """The :class:`~dualex.towers.access.VisionAccess` of a transformers CLIP / SigLIP /
    SigLIP-2 vision tower (CLIP: CLS readout; SigLIP, SigLIP-2: attention pool).

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_hf` (or the builtin model).
    """
    return HFVisionAccess(model)


# ---------------------------------------------------------------------------------------------
# fine-tuning (dualex.train) through the model's own get_text_features / get_image_features
# ---------------------------------------------------------------------------------------------


class HFTrainable(Trainable):
    """A transformers CLIP / SigLIP (/ ALIGN) being fine-tuned; saved with ``save_pretrained``
    (``dualex.load("hf:FOLDER")`` opens it)."""

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Padded to the longest text (SigLIP: to the context, as it was trained)."""
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
        out = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        return out["pixel_values"]

    def encode_text(self, ids: Tensor, mask: Tensor) -> Tensor:
        if "siglip" in type(self.model).__name__.lower():
            out = self.model.get_text_features(input_ids=ids)
        else:
            n = int(mask.sum(1).max())  # padding at the end: trim to the longest row
            out = self.model.get_text_features(input_ids=ids[:, :n], attention_mask=mask[:, :n])
        return out if torch.is_tensor(out) else out.pooler_output

    def encode_image(self, pixels: Tensor) -> Tensor:
        out = self.model.get_image_features(pixel_values=pixels)
        return out if torch.is_tensor(out) else out.pooler_output

    def set_checkpointing(self, on: bool) -> bool:
        m = self.model
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

    def save(self, folder: str | os.PathLike) -> Path:
        """``save_pretrained`` of model, tokenizer and image processor
        (``dualex.load("hf:FOLDER")``)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = self.model.config
        if getattr(cfg, "_attn_implementation", None) not in (None, "eager", "sdpa"):
            cfg._attn_implementation = "eager"
        self.model.save_pretrained(str(folder), safe_serialization=True)
        self.tokenizer.save_pretrained(str(folder))
        self.image_processor.save_pretrained(str(folder))
        return folder

    def rewrap(self) -> DualEncoder:
        family = for_object(self.model)  # hf, or hf-align for an AlignModel
        return family.adopt(
            self.model,
            tokenizer=self.tokenizer,
            image_processor=self.image_processor,
            name=self.name,
        )


def trainable(encoder: DualEncoder, module: nn.Module, name: str) -> HFTrainable:
    """The :class:`HFTrainable` over ``module`` (``encoder``'s module or a copy of it).

    Raises:
        UnknownModelError: if the encoder's towers hold no transformers tokenizer and processor.
    """
    a, b = encoder.tower_a, encoder.tower_b
    if not (
        hasattr(module, "get_text_features") and hasattr(a, "tokenizer") and hasattr(b, "processor")
    ):
        raise UnknownModelError(
            f"cannot fine-tune {name!r}: its towers are not a transformers text tower and "
            "vision tower with their tokenizer and image processor"
        )
    return HFTrainable(module, a.tokenizer, b.processor, name, weights=str(encoder.weights))


VISION_TOWERS = "HF CLIP, SigLIP, SigLIP-2"
"""The image towers :func:`vision_access` opens."""


FAMILY = Family(
    name="hf",
    summary="transformers CLIPModel / SiglipModel / Siglip2Model with their processor",
    prefixes=("hf",),
    spec_forms={
        "hf:<id-or-path>": "a transformers CLIPModel / SiglipModel / Siglip2Model / AlignModel "
        "via from_pretrained"
    },
    can_wrap=_can_wrap,
    wrap=lambda obj, parts, **kw: wrap_hf(obj, parts.text(), parts.image(), **kw),
    load=lambda rest, **kw: load_hf(rest, **kw),
    towers=TOWERS,
    requires=("transformers",),
    vision_access=vision_access,
    vision_towers=VISION_TOWERS,
    trainable=trainable,
)
