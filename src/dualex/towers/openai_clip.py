"""Towers of OpenAI's ``clip`` package (PyPI ``clip-anytorch``): ViT and ModifiedResNet models.

``dualex.load("openai:<name>")`` builds the model from the package's own classes
(``clip.model.CLIP`` / ``build_model``), tokeniser (``clip.tokenize``) and transform, and splits
it with hooks. The package's transformer blocks are sequence-first (``[S, B, D]``, layout
``"sbd"``); its text tower pools at the EOT token (the largest id).

Layers: ViT layer ``L`` is the input of ``transformer.resblocks[L]`` (the paper's convention). For
a ResNet, layer ``L`` is the input of stage ``visual.layerL`` (``L = 1..4``), ``L = 5`` the input
of the attention pool and ``L = 0`` the normalised pixels; positions are the cells of that
feature map.

Weights: ``"openai:ViT-B/32"`` reads the checkpoint the package keeps in ``~/.cache/clip`` (or
``download_root``), ``"openai:/path/to/file.pt"`` a local checkpoint; ``pretrained=False`` builds
the architecture with random weights (a loud warning). Checkpoints are read with
``torch.load(weights_only=True)`` or, for TorchScript archives, ``torch.jit.load`` — never by
unpickling arbitrary objects.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dualex.errors import UnknownModelError
from dualex.towers.access import MHABlockAccess, VisionAccessError
from dualex.towers.base import DualEncoder, read_scale
from dualex.towers.clip_common import (
    BPETextCodec,
    ClipImageTower,
    ClipTextTower,
    ClipTrainable,
    cls_patch_tokens,
    mha_last_block,
    warn_random,
)
from dualex.towers.registry import Family, TowerDescription, type_is
from dualex.towers.session import unwrap

__all__ = ["OPENAI_ARCHITECTURES", "load_openai", "wrap_openai"]

OPENAI_ARCHITECTURES: dict[str, dict[str, Any]] = {
    # name: arguments of clip.model.CLIP (context_length 77 and vocab_size 49408 for all)
    "RN50": dict(
        embed_dim=1024,
        image_resolution=224,
        vision_layers=(3, 4, 6, 3),
        vision_width=64,
        vision_patch_size=None,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "RN101": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=(3, 4, 23, 3),
        vision_width=64,
        vision_patch_size=None,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "RN50x4": dict(
        embed_dim=640,
        image_resolution=288,
        vision_layers=(4, 6, 10, 6),
        vision_width=80,
        vision_patch_size=None,
        transformer_width=640,
        transformer_heads=10,
        transformer_layers=12,
    ),
    "RN50x16": dict(
        embed_dim=768,
        image_resolution=384,
        vision_layers=(6, 8, 18, 8),
        vision_width=96,
        vision_patch_size=None,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
    "RN50x64": dict(
        embed_dim=1024,
        image_resolution=448,
        vision_layers=(3, 15, 36, 10),
        vision_width=128,
        vision_patch_size=None,
        transformer_width=1024,
        transformer_heads=16,
        transformer_layers=12,
    ),
    "ViT-B/32": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=32,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-B/16": dict(
        embed_dim=512,
        image_resolution=224,
        vision_layers=12,
        vision_width=768,
        vision_patch_size=16,
        transformer_width=512,
        transformer_heads=8,
        transformer_layers=12,
    ),
    "ViT-L/14": dict(
        embed_dim=768,
        image_resolution=224,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
    "ViT-L/14@336px": dict(
        embed_dim=768,
        image_resolution=336,
        vision_layers=24,
        vision_width=1024,
        vision_patch_size=14,
        transformer_width=768,
        transformer_heads=12,
        transformer_layers=12,
    ),
}
"""Hyper-parameters of OpenAI's released CLIP models (for building them with random weights)."""


@contextlib.contextmanager
def _pkg_resources_shim() -> Iterator[None]:
    """Let ``import clip`` work where setuptools no longer ships ``pkg_resources``.

    The package only uses ``pkg_resources.packaging`` for a version check; a stand-in module that
    exposes ``packaging`` is present only during the import and removed afterwards.
    """
    try:
        importlib.import_module("pkg_resources")
        yield
        return
    except ImportError:
        pass
    import packaging.version

    shim = types.ModuleType("pkg_resources")
    shim.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is shim:
            del sys.modules["pkg_resources"]


def import_clip() -> Any:
    """Import OpenAI's ``clip`` package.

    Raises:
        UnknownModelError: if it is not installed.
    """
    try:
        with _pkg_resources_shim():
            import clip
            import clip.model
    except ImportError as err:
        raise UnknownModelError(
            "'openai:' models need OpenAI's clip package: pip install clip-anytorch "
            "(or pip install 'dualex[openai]')"
        ) from err
    return clip


def wrap_openai(
    model: nn.Module,
    *,
    name: str = "openai",
    text_reference: Any = "exclip",
    image_reference: Any = "zeros",
    preprocess: Any = None,
    weights: str = "unknown",
) -> DualEncoder:
    """Wrap a model of the ``clip`` package as a :class:`dualex.DualEncoder`.

    Args:
        model: A ``clip.model.CLIP`` (ViT or ResNet image tower).
        name: Display name.
        text_reference: Default text reference (``"exclip"``: ``[BOS, 0, EOS, 0, …]``).
        image_reference: Default image reference (``"zeros"``).
        preprocess: The image transform (default: the package's own for the model's resolution).
        weights: Where the weights come from (``"pretrained"``, ``"random"``, ``"unknown"``).

    Returns:
        A :class:`dualex.DualEncoder` (text tower a, image tower b, cosine similarity).
    """
    clip = import_clip()
    ctx = int(model.context_length)
    tok = clip.clip._tokenizer
    codec = BPETextCodec(tok, ctx, tokenize=lambda t: clip.tokenize(t, context_length=ctx))
    text_block = unwrap(model.transformer.resblocks[-1])

    def text_head(x: torch.Tensor) -> torch.Tensor:
        return model.ln_final(x) @ model.text_projection

    text = ClipTextTower(
        model.encode_text,
        model.transformer.resblocks,
        codec,
        layout="sbd",
        reference=text_reference,
        name="openai-text",
        root=model,
        trim=True,  # causal, pooled at EOT: positions after it cannot reach the embedding
        last_block=lambda: mha_last_block(text_block, text_head, causal=True),
        pooled_row=lambda ids: int(ids.argmax()),
    )
    visual = model.visual
    dtype = visual.conv1.weight.dtype
    if preprocess is None:
        preprocess = clip.clip._transform(int(visual.input_resolution))
    if isinstance(visual, clip.model.VisionTransformer):
        p = visual.conv1.kernel_size
        vit_block = unwrap(visual.transformer.resblocks[-1])

        def vit_head(x: torch.Tensor) -> torch.Tensor:
            return visual.ln_post(x) @ visual.proj

        image = ClipImageTower(
            model.encode_image,
            visual.transformer.resblocks,
            preprocess,
            kind="vit",
            layout="sbd",
            patch=(int(p[0]), int(p[1])),
            prefix=1,
            dtype=dtype,
            reference=image_reference,
            name="openai-vit",
            root=model,
            input_size=(int(visual.input_resolution), int(visual.input_resolution)),
            last_block=lambda: mha_last_block(vit_block, vit_head, causal=False),
        )
    else:
        stages = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
        image = ClipImageTower(
            model.encode_image,
            [visual.conv1, *stages, visual.attnpool],
            preprocess,
            kind="cnn",
            layout="bchw",
            dtype=dtype,
            reference=image_reference,
            name="openai-resnet",
            root=model,
        )
    return DualEncoder(
        tower_a=text,
        tower_b=image,
        similarity="cosine",
        logit_scale=read_scale(model),
        name=name,
        module=model,
        weights=weights,
        family=FAMILY,
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a CLIP checkpoint: a plain state dict or OpenAI's TorchScript archive.

    Raises:
        UnknownModelError: if the file holds neither.
    """
    path = str(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {k.removeprefix("module."): v for k, v in obj.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
            return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except Exception as err:
        raise UnknownModelError(
            f"{path!r} is neither a CLIP state dict (torch.save of tensors) nor OpenAI's "
            f"TorchScript checkpoint ({str(err).splitlines()[0][:200]}); pass one of those"
        ) from err


def load_openai(
    name: str,
    *,
    pretrained: bool = True,
    download_root: str | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    text_reference: Any = "exclip",
    image_reference: Any = "zeros",
    **arch: Any,
) -> Any:
    """Load a model of OpenAI's clip package by name or checkpoint path.

    Args:
        name: One of :data:`OPENAI_ARCHITECTURES` (``"ViT-B/32"``, ``"RN50"``, ...) or a path to a
            checkpoint file.
        pretrained: ``False``: build the named architecture with random weights (a loud warning).
        download_root: Folder of the package's checkpoints (default ``~/.cache/clip``).
        download: Download missing weights with the package's downloader (needs network).
        device: Device of the model.
        text_reference: Default text reference.
        image_reference: Default image reference.
        **arch: With ``pretrained=False``, overrides of the architecture's hyper-parameters
            (arguments of ``clip.model.CLIP``, e.g. ``transformer_layers=2`` for a small test).

    Returns:
        A :class:`dualex.DualEncoder`.

    Raises:
        UnknownModelError: on an unknown name (listing the available ones) or weights that are not
            available locally (saying where the package looks).
    """
    clip = import_clip()
    spec = f"openai:{name}"
    path = Path(name).expanduser()
    if name not in OPENAI_ARCHITECTURES and not path.is_file():
        raise UnknownModelError(
            f"OpenAI's clip package has no model {name!r} and no such checkpoint file exists; "
            f"available: {', '.join(OPENAI_ARCHITECTURES)} (or a path to a .pt checkpoint)"
        )
    if arch and pretrained:
        raise UnknownModelError(
            f"architecture overrides {sorted(arch)} only apply to pretrained=False (random "
            "weights); drop them to load the released checkpoint"
        )
    if not pretrained:
        if name not in OPENAI_ARCHITECTURES:
            raise UnknownModelError(
                f"pretrained=False needs an architecture name ({', '.join(OPENAI_ARCHITECTURES)})"
            )
        params = {**OPENAI_ARCHITECTURES[name], "context_length": 77, "vocab_size": 49408, **arch}
        bad = set(params) - set(OPENAI_ARCHITECTURES["RN50"]) - {"context_length", "vocab_size"}
        if bad:
            raise UnknownModelError(
                f"unknown architecture arguments {sorted(bad)}; use arguments of clip.model.CLIP: "
                f"{', '.join([*OPENAI_ARCHITECTURES['RN50'], 'context_length', 'vocab_size'])}"
            )
        warn_random(f"OpenAI CLIP {name}", f"Load the released weights with 'openai:{name}'.")
        model = clip.model.CLIP(**params).float()
    else:
        if path.is_file():
            file = str(path)
        else:
            root = download_root or os.path.expanduser("~/.cache/clip")
            url = clip.clip._MODELS[name]
            file = os.path.join(root, os.path.basename(url))
            if not os.path.isfile(file):
                if not download:
                    raise UnknownModelError(
                        f"the weights of OpenAI CLIP {name} are not available locally: the clip "
                        f"package keeps them at {file}. Download them once (clip.load({name!r}) "
                        "or dualex.load(..., download=True) with network access), set "
                        "download_root=<folder with the .pt file>, load a local checkpoint with "
                        "'openai:/path/to/model.pt', or use pretrained=False for random weights"
                    )
                file = clip.clip._download(url, root)
        state = read_state_dict(file)
        # build_model infers the architecture (and rounds to fp16); reload the exact tensors.
        model = clip.model.build_model(dict(state)).float()
        extra = ("input_resolution", "context_length", "vocab_size")
        model.load_state_dict({k: v for k, v in state.items() if k not in extra})
    return wrap_openai(
        model.to(device).eval(),
        name=spec,
        text_reference=text_reference,
        image_reference=image_reference,
        weights="pretrained" if pretrained else "random",
    )


TOWERS = {
    "text": TowerDescription(blocks="transformer.resblocks"),
    "image-vit": TowerDescription(blocks="visual.transformer.resblocks"),
    "image-resnet": TowerDescription(blocks="visual.conv1, visual.layer1..layer4, visual.attnpool"),
}
"""The towers of OpenAI clip models, as data."""


# ---------------------------------------------------------------------------------------------
# attention access (dualex.towers.access) for attention-based first-order methods; kept apart
# from the towers above.
# ---------------------------------------------------------------------------------------------


class OpenAIViTAccess(MHABlockAccess):
    """The clip package's ``VisionTransformer`` (sequence-first ``nn.MultiheadAttention`` blocks;
    q, k, v are computed here from ``in_proj_weight`` on batch-first states). The package's
    LayerNorm runs in float32 whatever the model's dtype, so the manual forward matches the
    model to float32 precision.

    Args:
        model: A :class:`dualex.DualEncoder` made by :func:`wrap_openai` with a ViT image tower.
    """

    def __init__(self, model: Any) -> None:
        v = model.module.visual
        self.visual = v
        p = v.conv1.kernel_size
        super().__init__(
            model,
            v.transformer.resblocks,
            kind="openai-vit",
            prefix=1,
            patch=(int(p[0]), int(p[1])),
            dtype=v.conv1.weight.dtype,
        )
        self.check_blocks()

    def stem(self, pixels: Tensor) -> Tensor:
        v = self.visual
        return v.ln_pre(cls_patch_tokens(v, pixels, self.dtype))

    def project(self, pooled: Tensor) -> Tensor:
        return self.visual.ln_post(pooled) @ self.visual.proj


def vision_access(model: Any) -> OpenAIViTAccess:
    """The :class:`~dualex.towers.access.VisionAccess` of an OpenAI clip ViT image tower.

    Raises:
        VisionAccessError: for a ModifiedResNet image tower (a CNN has no attention blocks).
    """
    visual = model.module.visual
    if not (hasattr(visual, "transformer") and hasattr(visual, "class_embedding")):
        raise VisionAccessError(
            f"{model.name!r}: its image tower ({type(visual).__name__}) is not a ViT; attention "
            "access needs the clip package's VisionTransformer"
        )
    return OpenAIViTAccess(model)


@dataclass
class _BatchTokenize:
    """A batch tokenizer over a codec that tokenises one text at a time (``[N, ctx]``)."""

    codec: Any

    def __call__(self, texts: list[str]) -> Tensor:
        return torch.cat([self.codec._tokenize(t) for t in texts])


class OpenAITrainable(ClipTrainable):
    """An OpenAI clip model being fine-tuned: open_clip's forward and file layout
    (:class:`~dualex.towers.clip_common.ClipTrainable`), its BPE tokenizer batched."""

    def rewrap(self) -> DualEncoder:
        return wrap_openai(self.model, name=self.name, preprocess=self.image_processor)


def trainable(encoder: DualEncoder, module: nn.Module, name: str) -> OpenAITrainable:
    """The :class:`OpenAITrainable` over ``module``.

    Raises:
        UnknownModelError: if the encoder's towers are not the clip package's.
    """
    a, b = encoder.tower_a, encoder.tower_b
    if not (hasattr(a, "codec") and hasattr(b, "preprocess")):
        raise UnknownModelError(f"cannot fine-tune {name!r}: its towers are not OpenAI clip's")
    tok = _BatchTokenize(a.codec)
    return OpenAITrainable(module, tok, b.preprocess, name, weights=str(encoder.weights))


VISION_TOWERS = "OpenAI clip ViTs"
"""The image towers :func:`vision_access` opens."""


FAMILY = Family(
    name="openai",
    summary="models of OpenAI's clip package (clip.model.CLIP, ViT or ResNet)",
    prefixes=("openai",),
    spec_forms={"openai:<name>": "a model of OpenAI's clip package"},
    can_wrap=lambda obj: type_is(obj, "clip.model", "CLIP"),
    wrap=lambda obj, parts, name=None, **kw: wrap_openai(
        obj, name=name or "openai", preprocess=parts.transform(), **kw
    ),
    load=lambda rest, **kw: load_openai(rest, **kw),
    towers=TOWERS,
    requires=("clip-anytorch",),
    install="pip install clip-anytorch",
    vision_access=vision_access,
    vision_towers=VISION_TOWERS,
    trainable=trainable,
)
