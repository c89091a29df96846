"""open_clip: load by ``"openclip:<arch>[/<pretrained>]"`` or wrap an open_clip model object.

``dualex.load("openclip:<arch>[/<pretrained>]")`` builds the model with open_clip's own
``create_model_and_transforms`` and ``get_tokenizer``; ``dualex.wrap(model, preprocess,
tokenizer=tokenizer)`` takes one already built. The towers are the shared CLIP-family ones
(:mod:`dualex.towers.clip_common`):

* text: the causal CLIP text transformer (pooled at the EOT token, the largest id) or a
  ``TextTransformer`` of a ``CustomTextCLIP`` (SigLIP: pooled at the last position);
* image: open_clip's ``VisionTransformer`` (any size and patch), a timm ViT trunk (SigLIP's
  attention-pool head), or a ``ModifiedResNet`` (RN50, ...: layer ``L`` is the input of stage
  ``layerL``, ``L = 5`` the input of the attention pool, ``L = 0`` the normalised pixels; the
  positions are the cells of that feature map).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from dualex.engine.lastblock import LastBlock
from dualex.errors import UnknownModelError
from dualex.hub import hf_host, reachable
from dualex.towers.access import (
    Attention,
    MHABlockAccess,
    VisionAccess,
    VisionAccessError,
    merge_heads,
    softmax_probs,
)
from dualex.towers.base import DualEncoder, read_scale
from dualex.towers.clip_common import (
    BPETextCodec,
    ClipImageTower,
    ClipTextTower,
    ClipTrainable,
    FeatureMapMixin,
    RandomWeightsWarning,
    align_pieces,
    cls_patch_tokens,
    image_reference_pixels,
    mha_last_block,
    project_rows,
    transform_geometry,
    warn_random,
)
from dualex.towers.registry import Family, TowerDescription, resolve, type_is
from dualex.towers.session import unwrap

__all__ = [
    "FAMILY",
    "BPETextCodec",
    "ClipImageTower",
    "ClipTextTower",
    "FeatureMapMixin",
    "RandomWeightsWarning",
    "align_pieces",
    "image_reference_pixels",
    "load_openclip",
    "transform_geometry",
    "wrap_openclip",
]

TOWERS = {
    "text": TowerDescription(blocks="transformer.resblocks"),
    "text-custom": TowerDescription(blocks="text.transformer.resblocks"),
    "image-vit": TowerDescription(blocks="visual.transformer.resblocks"),
    "image-timm": TowerDescription(blocks="visual.trunk.blocks"),
    "image-resnet": TowerDescription(blocks="visual.conv1, visual.layer1..layer4, visual.attnpool"),
}
"""The towers of open_clip models, as data."""


# ---------------------------------------------------------------------------------------------
# open_clip: building towers from a model, loading by spec
# ---------------------------------------------------------------------------------------------


def _pair(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _layout_of(transformer: nn.Module) -> str:
    return "bsd" if getattr(transformer, "batch_first", True) else "sbd"


def _openclip_text_tower(model: nn.Module, tokenizer: Any, reference: Any) -> ClipTextTower:
    text = getattr(model, "text", None)
    if text is None:  # CLIP: the text tower's parts live on the model
        transformer = resolve(model, TOWERS["text"].blocks.rsplit(".", 1)[0])
        ctx, pool = model.context_length, model.text_pool_type
        encode = model.encode_text
    else:
        if not hasattr(text, "transformer") or not hasattr(text.transformer, "resblocks"):
            raise UnknownModelError(
                f"dualex supports open_clip's own text transformers, not a {type(text).__name__} "
                "text tower; use an open_clip architecture with a CLIP/SigLIP text tower"
            )
        if getattr(text, "cls_emb", None) is not None:
            raise UnknownModelError(
                "CoCa-style text towers (an appended CLS token) are not supported; use a "
                "contrastive CLIP or SigLIP architecture"
            )
        transformer, ctx, pool = text.transformer, text.context_length, text.pool_type
        encode = model.encode_text
    codec = BPETextCodec(tokenizer, ctx)
    if reference is None:
        reference = "exclip" if (codec.bpe and pool == "argmax") else "pad"
    causal = getattr(text if text is not None else model, "attn_mask", None) is not None
    last_block = pooled_row = None
    if text is None and causal and pool in ("argmax", "eos"):  # CLIP: pooled at the end token
        block = unwrap(transformer.resblocks[-1])
        eos = getattr(model, "text_eos_id", None)

        def last_block() -> LastBlock | None:
            def head(x: Tensor) -> Tensor:
                return project_rows(model.ln_final(x), model.text_projection)

            return mha_last_block(block, head, causal=True)

        def pooled_row(ids: Tensor) -> int:
            if pool == "eos" and eos is not None:
                return int((ids == eos).int().argmax())
            return int(ids.argmax())

    return ClipTextTower(
        encode,
        transformer.resblocks,
        codec,
        layout=_layout_of(transformer),
        reference=reference,
        name="openclip-text",
        root=model,
        trim=causal and pool in ("argmax", "eos"),
        last_block=last_block,
        pooled_row=pooled_row,
    )


def _vit_last_block(visual: nn.Module) -> Any:
    """The fast-path declaration of a VisionTransformer read at its CLS token, or None."""
    if (
        getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "pool_type", "tok") != "tok"
    ):
        return None
    block = unwrap(visual.transformer.resblocks[-1])

    def last_block() -> LastBlock | None:
        def head(x: Tensor) -> Tensor:
            return project_rows(visual.ln_post(x), visual.proj)

        return mha_last_block(block, head, causal=False)

    return last_block


def _openclip_image_tower(model: nn.Module, preprocess: Any, reference: Any) -> ClipImageTower:
    visual = model.visual
    dtype = next(model.parameters()).dtype
    kind = type(visual).__name__
    ref = reference if reference is not None else "zeros"
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):  # open_clip VisionTransformer
        p = visual.conv1.kernel_size
        return ClipImageTower(
            model.encode_image,
            visual.transformer.resblocks,
            preprocess,
            kind="vit",
            layout=_layout_of(visual.transformer),
            patch=(int(p[0]), int(p[1])),
            prefix=1,
            dtype=dtype,
            reference=ref,
            name="openclip-vit",
            root=model,
            last_block=_vit_last_block(visual),
            input_size=_pair(getattr(visual, "image_size", None)),
        )
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)) and hasattr(visual, "attnpool"):
        blocks = [visual.conv1, visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        return ClipImageTower(
            model.encode_image,
            [*blocks, visual.attnpool],
            preprocess,
            kind="cnn",
            layout="bchw",
            dtype=dtype,
            reference=ref,
            name="openclip-resnet",
            root=model,
        )
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):
        p = trunk.patch_embed.patch_size
        p = (p, p) if isinstance(p, int) else tuple(p)
        return ClipImageTower(
            model.encode_image,
            trunk.blocks,
            preprocess,
            kind="vit",
            layout="bsd",
            patch=(int(p[0]), int(p[1])),
            prefix=int(getattr(trunk, "num_prefix_tokens", 1)),
            dtype=dtype,
            reference=ref,
            name="openclip-timm-vit",
            root=model,
            input_size=_pair(getattr(trunk.patch_embed, "img_size", None)),
        )
    inner = type(trunk).__name__ if trunk is not None else kind
    raise UnknownModelError(
        f"dualex supports open_clip image towers that are a VisionTransformer, a ModifiedResNet "
        f"or a timm ViT trunk, not {inner}; pick one of those architectures"
    )


def wrap_openclip(
    model: nn.Module,
    preprocess: Any,
    tokenizer: Any,
    *,
    name: str = "openclip",
    text_reference: Any = None,
    image_reference: Any = None,
    weights: str = "unknown",
) -> DualEncoder:
    """Wrap an already-built open_clip model as a :class:`dualex.DualEncoder`.

    Args:
        model: An open_clip ``CLIP`` or ``CustomTextCLIP`` (from ``create_model_and_transforms``).
        preprocess: Its inference image transform.
        tokenizer: Its tokenizer (``open_clip.get_tokenizer(arch)``).
        name: Display name.
        text_reference: Default text reference (``None``: ``"exclip"`` for CLIP's BPE with EOT
            pooling, ``"pad"`` otherwise).
        image_reference: Default image reference (``None``: ``"zeros"``).
        weights: Where the weights come from (``"pretrained"``, ``"random"``, ``"unknown"``).

    Returns:
        A :class:`dualex.DualEncoder` (text tower a, image tower b, cosine similarity).

    Raises:
        UnknownModelError: if the transform or the tokenizer is missing.
    """
    if tokenizer is None or preprocess is None:
        raise UnknownModelError(
            "wrapping an open_clip model needs its image transform and tokenizer: "
            "dualex.wrap(model, preprocess, tokenizer=open_clip.get_tokenizer(arch))"
        )
    return DualEncoder(
        tower_a=_openclip_text_tower(model, tokenizer, text_reference),
        tower_b=_openclip_image_tower(model, preprocess, image_reference),
        similarity="cosine",
        logit_scale=read_scale(model),
        name=name,
        module=model,
        weights=weights,
        family=FAMILY,
    )


def _split_spec(spec: str, known: set[str]) -> tuple[str, str | None]:
    """``"<arch>[/<tag>]"`` → ``(arch, tag)``; the arch may itself contain ``/`` (``ViT-B/32``)."""
    spec = spec.strip()
    if spec.startswith(("hf-hub:", "local-dir:")):
        return spec, None
    parts = spec.split("/")
    for k in range(len(parts), 0, -1):
        arch = "-".join(parts[:k])
        if arch in known:
            tag = "/".join(parts[k:]) or None
            return arch, tag
    return parts[0], ("/".join(parts[1:]) or None)


def _unknown_arch(arch: str, known: list[str]) -> str:
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return (
        f"open_clip has no architecture {arch!r}.{hint} Available: {', '.join(sorted(known))}. "
        "Spec form: 'openclip:<arch>[/<pretrained-tag or weights file>]'"
    )


def _hf_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _local_weights(cfg: dict[str, Any], cache_dir: str | None) -> tuple[str | None, list[str]]:
    """A locally cached weights file of a pretrained tag (no network), and where was looked."""
    looked: list[str] = []
    if cfg.get("file"):
        looked.append(str(cfg["file"]))
        return (str(cfg["file"]) if os.path.isfile(cfg["file"]) else None), looked
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = (
            [filename]
            if filename
            else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        )
        if filename.endswith(".bin"):
            names.insert(0, filename[: -len(".bin")] + ".safetensors")
        try:
            from huggingface_hub import try_to_load_from_cache

            for n in names:
                got = try_to_load_from_cache(repo, n, cache_dir=cache_dir)
                if isinstance(got, str) and os.path.isfile(got):
                    return got, looked
        except ImportError:  # pragma: no cover
            pass
        looked.append(
            f"the Hugging Face cache {_hf_cache_dir(cache_dir)} (repo {repo}, file "
            f"{' or '.join(names)})"
        )
    url = cfg.get("url", "")
    if url:
        root = cache_dir or os.path.expanduser("~/.cache/clip")
        path = os.path.join(root, os.path.basename(url))
        if os.path.isfile(path):
            return path, looked
        looked.append(path)
    return None, looked


def load_openclip(
    spec: str,
    *,
    pretrained: str | None = None,
    tokenizer: Any = None,
    cache_dir: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    text_reference: Any = None,
    image_reference: Any = None,
    **model_kwargs: Any,
) -> Any:
    """Load an open_clip model by ``"<arch>[/<pretrained>]"`` (the part after ``"openclip:"``).

    Args:
        spec: An open_clip architecture (``ViT-B-32``; ``ViT-B/32`` also works) optionally
            followed by ``/`` and a pretrained tag or a local weights file; or ``hf-hub:<repo>`` /
            ``local-dir:<folder>``. Without a tag the model has random weights (a loud warning).
        pretrained: A pretrained tag or weights file (instead of the tag in the spec).
        tokenizer: A tokenizer to use instead of ``open_clip.get_tokenizer(arch)`` (needed
            offline for architectures whose tokenizer comes from the Hugging Face hub, e.g. SigLIP).
        cache_dir: Where open_clip caches downloads.
        device: Device of the model.
        precision: open_clip precision (``"fp32"``...).
        text_reference: Default text reference of the text tower.
        image_reference: Default image reference of the image tower.
        **model_kwargs: Passed to ``create_model_and_transforms`` (e.g. ``vision_cfg=``,
            ``text_cfg=``, ``embed_dim=`` to override the architecture's config).

    Returns:
        A :class:`dualex.DualEncoder`.

    Raises:
        UnknownModelError: on an unknown architecture or tag, or weights that are not available
            locally (offline), with the choices and where open_clip looks.
    """
    try:
        import open_clip
        from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise UnknownModelError(
            "'openclip:' models need open_clip: pip install 'dualex[openclip]'"
        ) from err

    known = list(open_clip.list_models())
    arch, tag = _split_spec(spec, set(known))
    if pretrained is not None:
        if tag is not None:
            raise UnknownModelError(
                f"both a pretrained tag in the spec ({tag!r}) and pretrained={pretrained!r}; "
                "give one of them"
            )
        tag = pretrained
    schema = arch.startswith(("hf-hub:", "local-dir:"))
    if not schema and arch not in known:
        raise UnknownModelError(_unknown_arch(arch, known))
    if tokenizer is None:  # before the model: some tokenizers need the hub, fail fast
        ctx = model_kwargs.get("force_context_length") or (model_kwargs.get("text_cfg") or {}).get(
            "context_length"
        )
        try:
            tokenizer = open_clip.get_tokenizer(arch, context_length=ctx)
        except Exception as err:  # the HF tokenizers of some archs need the hub
            raise UnknownModelError(
                f"cannot build the tokenizer of {arch} ({str(err).splitlines()[0][:200]}); "
                "pass tokenizer=... (e.g. an open_clip HFTokenizer of a local folder)"
            ) from err
    kwargs: dict[str, Any] = dict(device=device, precision=precision, cache_dir=cache_dir)
    weights: str | None = None
    if tag and not schema:
        tags = list_pretrained_tags_by_model(arch)
        cfg = get_pretrained_cfg(arch, tag) or None
        if cfg is None and not Path(tag).expanduser().is_file():
            raise UnknownModelError(
                f"open_clip has no pretrained tag {tag!r} for {arch} and no file {tag!r} exists. "
                f"Tags for {arch}: {', '.join(tags) or '(none)'}; or pass a local weights file: "
                f"'openclip:{arch}/<path>' or pretrained='<path>'"
            )
        if cfg is None:
            weights = str(Path(tag).expanduser())
        else:
            weights, looked = _local_weights(cfg, cache_dir)
            for key, arg in (
                ("mean", "image_mean"),
                ("std", "image_std"),
                ("interpolation", "image_interpolation"),
                ("resize_mode", "image_resize_mode"),
            ):
                if key in cfg:
                    kwargs[arg] = cfg[key]
            if cfg.get("quick_gelu") and "force_quick_gelu" not in model_kwargs:
                kwargs["force_quick_gelu"] = True
            if weights is None:
                host = _download_host(cfg)
                if os.environ.get("HF_HUB_OFFLINE") == "1" or not reachable(host):
                    # fail now, not after the hub client's minute of retries
                    raise UnknownModelError(
                        _missing_weights(arch, tag, looked)
                        + ("" if host is None else f" ({host} cannot be reached from here)")
                    )
                weights = tag  # let open_clip download it
    elif not schema:
        warn_random(
            f"open_clip {arch}",
            f"Load pretrained weights with 'openclip:{arch}/<tag>' "
            f"(tags: {', '.join(list_pretrained_tags_by_model(arch)) or 'none'}).",
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=weights, **kwargs, **model_kwargs
        )
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if weights is not None and weights == tag:
            raise UnknownModelError(
                _missing_weights(
                    arch, tag, _local_weights(get_pretrained_cfg(arch, tag), cache_dir)[1]
                )
                + f" (open_clip said: {str(err).splitlines()[0][:200]})"
            ) from err
        raise UnknownModelError(f"open_clip could not build {spec!r}: {err}") from err
    name = f"openclip:{arch}" + (f"/{tag}" if tag else "")
    return wrap_openclip(
        model,
        preprocess,
        tokenizer,
        name=name,
        text_reference=text_reference,
        image_reference=image_reference,
        weights="pretrained" if tag else "random",
    )


def _download_host(cfg: dict[str, Any]) -> str | None:
    """Host open_clip would download a pretrained config's weights from."""
    if cfg.get("hf_hub"):
        return hf_host()
    url = cfg.get("url") or ""
    return urlparse(url).hostname if url else None


def _missing_weights(arch: str, tag: str, looked: list[str]) -> str:
    where = "; ".join(looked) or "(no download location known)"
    return (
        f"the weights of open_clip {arch}/{tag} are not available locally. open_clip looks in: "
        f"{where}. Download them once with network access (open_clip.create_model("
        f"{arch!r}, pretrained={tag!r})), set cache_dir=... to where they are, or point at a local "
        f"file: dualex.load('openclip:{arch}', pretrained='/path/to/open_clip_model.safetensors')"
    )


def _can_wrap(obj: Any) -> bool:
    return type_is(obj, "open_clip", "CLIP", "CustomTextCLIP")


# ---------------------------------------------------------------------------------------------
# attention access (dualex.towers.access) for attention-based first-order methods; kept apart
# from the towers above.
# ---------------------------------------------------------------------------------------------


class OpenClipViTAccess(MHABlockAccess):
    """open_clip's ``VisionTransformer`` read at its CLS token (``pool_type="tok"``, no
    attentional pooler).

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_openclip`.

    Raises:
        VisionAccessError: for an attentional pooler (CoCa) or average pooling, or blocks that are
            not CLIP residual attention blocks.
    """

    def __init__(self, model: Any) -> None:
        v = model.module.visual
        self.visual = v
        if getattr(v, "attn_pool", None) is not None or getattr(v, "pool_type", "tok") != "tok":
            raise VisionAccessError(
                "openclip-vit: attention access supports ViTs read at the CLS token "
                f"(pool_type 'tok', no attentional pooler), not pool_type "
                f"{getattr(v, 'pool_type', '?')!r}"
            )
        p = v.conv1.kernel_size
        super().__init__(
            model,
            v.transformer.resblocks,
            kind="openclip-vit",
            prefix=1,
            patch=(int(p[0]), int(p[1])),
            dtype=v.conv1.weight.dtype,
        )
        self.check_blocks()

    def stem(self, pixels: Tensor) -> Tensor:
        v = self.visual
        return v.ln_pre(v.patch_dropout(cls_patch_tokens(v, pixels, self.dtype)))

    def project(self, pooled: Tensor) -> Tensor:
        return project_rows(self.visual.ln_post(pooled), self.visual.proj)


class TimmViTAccess(VisionAccess):
    """A timm ``VisionTransformer`` trunk inside open_clip's ``TimmModel`` (SigLIP in open_clip:
    ``global_pool="map"``, an ``AttentionPoolLatent`` head; or a CLS-token trunk).

    The trunk's final norm is applied inside :meth:`pool_attention` / :meth:`pool_values` (the
    attention pool) or :meth:`project` (CLS); :meth:`project` then runs the trunk's ``fc_norm``
    and head and open_clip's own head (projection).

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_openclip`.

    Raises:
        VisionAccessError: for blocks other than timm's pre-norm ``Block`` with a fused-qkv
            ``Attention`` (no gate, no RoPE), a pool with position embeddings, or a pooling other
            than the attention pool or the CLS token.
    """

    def __init__(self, model: Any) -> None:
        visual = model.module.visual
        trunk = visual.trunk
        self.visual, self.trunk = visual, trunk
        p = trunk.patch_embed.patch_size
        p = (p, p) if isinstance(p, int) else tuple(p)
        super().__init__(
            model,
            trunk.blocks,
            kind="openclip-timm",
            prefix=int(getattr(trunk, "num_prefix_tokens", 0)),
            patch=(int(p[0]), int(p[1])),
            dtype=next(trunk.parameters()).dtype,
        )
        for i, b in enumerate(self.blocks):
            a = getattr(b, "attn", None)
            ok = all(hasattr(b, n) for n in ("norm1", "norm2", "mlp")) and hasattr(a, "qkv")
            if not ok or getattr(a, "gate", None) is not None or hasattr(b, "rope"):
                raise VisionAccessError(
                    f"openclip-timm: block {i} ({type(b).__name__}) is not a pre-norm timm Block "
                    "with a fused-qkv Attention"
                )
        self.ap = getattr(trunk, "attn_pool", None)
        if self.ap is not None:
            if getattr(self.ap, "pos_embed", None) is not None or self.ap.pool not in (
                "token",
                "avg",
            ):
                raise VisionAccessError(
                    "openclip-timm: attention pools with position embeddings or without a "
                    "token/avg readout are not supported"
                )
            self.pooling = "attention-pool"
            self.pool_prefix = bool(getattr(trunk, "pool_include_prefix", False))
        elif getattr(trunk, "global_pool", "") == "token" and self.prefix >= 1:
            self.pooling = "cls"
        else:
            raise VisionAccessError(
                "openclip-timm: attention access supports an attention-pool ('map') or CLS "
                f"('token') readout, not global_pool {getattr(trunk, 'global_pool', '?')!r}"
            )

    def stem(self, pixels: Tensor) -> Tensor:
        t = self.trunk
        x = t._pos_embed(t.patch_embed(pixels.to(self.dtype)))
        return t.norm_pre(t.patch_drop(x))

    def norm1(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.norm1(x)

    def attention(self, block: nn.Module, y: Tensor) -> Attention:
        a = block.attn
        B, N, _ = y.shape
        h = int(a.num_heads)
        qkv = a.qkv(y).reshape(B, N, 3, h, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = a.q_norm(q), a.k_norm(k)
        return Attention(q=q, k=k, v=v, probs=softmax_probs(q, k, float(a.scale)))

    def merge(self, block: nn.Module, o: Tensor) -> Tensor:
        a = block.attn
        x = merge_heads(o)
        norm = getattr(a, "norm", None)
        x = a.proj(norm(x) if norm is not None else x)
        return block.ls1(x)

    def mlp(self, block: nn.Module, x: Tensor) -> Tensor:
        return block.ls2(block.mlp(block.norm2(x)))

    def project(self, pooled: Tensor) -> Tensor:
        t = self.trunk
        if self.pooling == "cls":
            pooled = t.norm(pooled)
        return self.visual.head(t.head(t.head_drop(t.fc_norm(pooled))))

    def _kv(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        ap = self.ap
        B, N, _ = tokens.shape
        kv = ap.kv(tokens).reshape(B, N, 2, ap.num_heads, ap.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        return ap.k_norm(k), v

    def pool_attention(self, x: Tensor) -> Attention:
        if self.pooling != "attention-pool":
            return super().pool_attention(x)
        ap = self.ap
        first = 0 if self.pool_prefix else self.prefix
        tokens = self.trunk.norm(x)[:, first:]
        B = tokens.shape[0]
        latent = ap.latent.expand(B, -1, -1).to(tokens.dtype)
        q = ap.q(latent).reshape(B, ap.latent_len, ap.num_heads, ap.head_dim).transpose(1, 2)
        q = ap.q_norm(q)
        k, v = self._kv(tokens)
        return Attention(q=q, k=k, v=v, probs=softmax_probs(q, k, float(ap.scale)), first_key=first)

    def pool_values(self, tokens: Tensor) -> Tensor:
        if self.pooling != "attention-pool":
            return super().pool_values(tokens)
        v = self._kv(self.trunk.norm(tokens).unsqueeze(1))[1]  # [N, heads, 1, hd]
        return v.expand(-1, -1, self.ap.latent_len, -1)

    def pool_finish(self, o: Tensor) -> Tensor:
        if self.pooling != "attention-pool":
            return super().pool_finish(o)
        ap = self.ap
        z = ap.proj_drop(ap.proj(merge_heads(o)))
        if ap.mlp is not None:
            z = z + ap.mlp(ap.norm(z))
        return z[:, 0] if ap.pool == "token" else z.mean(1)


def vision_access(model: Any) -> VisionAccess:
    """The :class:`~dualex.towers.access.VisionAccess` of an open_clip image tower.

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_openclip`.

    Raises:
        VisionAccessError: for a ModifiedResNet (a CNN has no attention blocks to open) or an
            unsupported ViT variant.
    """
    visual = model.module.visual
    if hasattr(visual, "transformer") and hasattr(visual, "conv1"):
        return OpenClipViTAccess(model)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks") and hasattr(trunk, "patch_embed"):
        return TimmViTAccess(model)
    raise VisionAccessError(
        f"{model.name!r}: its image tower ({type(visual).__name__}) is not a ViT; attention "
        "access needs open_clip's VisionTransformer or a timm ViT trunk"
    )


class OpenCLIPTrainable(ClipTrainable):
    """An open_clip model being fine-tuned (:class:`~dualex.towers.clip_common.ClipTrainable`)."""

    def rewrap(self) -> DualEncoder:
        return wrap_openclip(self.model, self.image_processor, self.tokenizer, name=self.name)


def trainable(encoder: DualEncoder, module: nn.Module, name: str) -> OpenCLIPTrainable:
    """The :class:`OpenCLIPTrainable` over ``module``; its architecture read from ``name``
    (``"openclip:<arch>[/<pretrained>]"``), which a saved copy records.

    Raises:
        UnknownModelError: if the encoder's towers are not open_clip's.
    """
    a, b = encoder.tower_a, encoder.tower_b
    if not (hasattr(a, "codec") and hasattr(b, "preprocess")):
        raise UnknownModelError(f"cannot fine-tune {name!r}: its towers are not open_clip's")
    spec = name.partition(":")[2] if name.lower().startswith("openclip:") else name
    try:
        import open_clip

        arch = _split_spec(spec, set(open_clip.list_models()))[0]
    except ImportError:  # pragma: no cover
        arch = spec.split("/")[0]
    return OpenCLIPTrainable(
        module, a.codec.tokenizer, b.preprocess, name, weights=str(encoder.weights), arch=arch
    )


VISION_TOWERS = "open_clip ViTs incl. timm ViTs such as SigLIP"
"""The image towers :func:`vision_access` opens."""


FAMILY = Family(
    name="openclip",
    summary="open_clip models (CLIP, CustomTextCLIP: ViT, timm ViT, ModifiedResNet towers) with "
    "their preprocess and tokenizer",
    prefixes=("openclip",),
    spec_forms={
        "openclip:<arch>[/<pretrained>]": "an open_clip model via create_model_and_transforms"
    },
    can_wrap=_can_wrap,
    wrap=lambda obj, parts, name=None, **kw: wrap_openclip(
        obj, parts.transform(), parts.tokenizer, name=name or "openclip", **kw
    ),
    load=lambda rest, **kw: load_openclip(rest, **kw),
    towers=TOWERS,
    requires=("open_clip_torch",),
    install="pip install 'dualex[openclip]'",
    weights_of=lambda rest: "pretrained" if "/" in rest else "random",  # no tag: random init
    vision_access=vision_access,
    vision_towers=VISION_TOWERS,
    trainable=trainable,
)
