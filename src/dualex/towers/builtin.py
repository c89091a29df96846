"""The ``builtin`` and ``builtin-clip`` specs: dualex's own small CLIPs trained on its synthetic
world (see models/MODEL.md).

* ``builtin``: 2 + 2 blocks, trained with an auxiliary patch-phrase loss (the demo's and the fast
  tests' model);
* ``builtin-clip``: 4 + 4 blocks, trained as CLIP is -- the global contrastive loss only -- on
  objects at every scale, occlusion and collages (``train_builtin --preset clip``, then the
  ``clip-stage2`` and ``clip-stage3`` continuations).

Both are stock Hugging Face ``CLIPModel`` folders inside the package (``dualex/models/``, beside
their training recipe), loaded offline through the same code path as any hub CLIP folder: their
towers, attention access and fine-tuning are the ``hf`` family's; this module declares the specs,
where the weights are, and what is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualex.errors import UnknownModelError
from dualex.towers.registry import Family, deferred
from dualex.towers.session import quiet_hf_bars

__all__ = [
    "BUILTIN_CLIP_DIR",
    "BUILTIN_DIR",
    "BUILTIN_MODELS",
    "FAMILY",
    "BuiltinModel",
    "available",
    "load_builtin",
    "model_dir",
    "summary",
]

WEIGHTS = Path(__file__).resolve().parents[1] / "models"
"""Where the built-in models' folders are: ``dualex/models/`` (beside their training recipe)."""

BUILTIN_DIR = WEIGHTS / "builtin"
"""Folder with the built-in model's config, weights (safetensors) and tokenizer."""

BUILTIN_CLIP_DIR = WEIGHTS / "builtin_clip"
"""Folder of ``builtin-clip`` (same layout as :data:`BUILTIN_DIR`)."""


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside the package.

    Attributes:
        folder: Its Hugging Face folder.
        recipe: The command that trains it (``--out`` omitted).
        trained_on: One line on its training data.
    """

    folder: Path
    recipe: str
    trained_on: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "builtin": BuiltinModel(
        BUILTIN_DIR,
        "python -m dualex.models.train_builtin (+ a relation stage, MODEL.md)",
        "50 000 synthetic scenes (plain + textured), 1-4 shapes; global + patch-phrase loss",
    ),
    "builtin-clip": BuiltinModel(
        BUILTIN_CLIP_DIR,
        "python -m dualex.models.train_builtin --preset clip (+ clip-stage2, clip-stage3)",
        "80 000 synthetic images (plain + textured, a quarter 2x2 collages), 1-6 shapes "
        "1/8-1/2 of the side, occlusion; global contrastive loss only",
    ),
}
"""Every built-in model by spec."""


def model_dir(name: str = "builtin") -> Path:
    """The folder of a built-in model.

    Raises:
        UnknownModelError: if ``name`` is not a built-in model.
    """
    if name not in BUILTIN_MODELS:
        raise UnknownModelError(
            f"{name!r} is not a built-in model; choose from {', '.join(BUILTIN_MODELS)}"
        )
    return BUILTIN_MODELS[name].folder


def available(name: str = "builtin") -> bool:
    """Whether a built-in model's files are present in the installed package."""
    d = model_dir(name)
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def summary(name: str = "builtin") -> str:
    """One line on an installed built-in model: parameters, file size and training data."""
    from safetensors import safe_open

    d = model_dir(name)
    files = sorted(d.glob("*.safetensors"))
    n = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                size = 1
                for dim in st.get_slice(key).get_shape():
                    size *= dim
                n += size
    mb = sum(f.stat().st_size for f in files) / 2**20
    return f"{n / 1e6:.2f} M parameters, {mb:.1f} MB; {BUILTIN_MODELS[name].trained_on}"


def load_builtin(name: str = "builtin", **kwargs: Any):
    """Load a built-in model as a :class:`dualex.DualEncoder`.

    Args:
        name: ``"builtin"`` or ``"builtin-clip"`` (:data:`BUILTIN_MODELS`).
        **kwargs: Passed to ``CLIPModel.from_pretrained``.

    Raises:
        UnknownModelError: if ``name`` is unknown or this installation has no files for it.
    """
    d = model_dir(name)
    if not available(name):
        raise UnknownModelError(
            f"the built-in model {name!r} is not in this installation ({d} has no weights); "
            f"train it with `{BUILTIN_MODELS[name].recipe.split(' (')[0]} --out {d}` or load "
            "another model"
        )
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from dualex.towers.hf import wrap_hf

    with quiet_hf_bars():  # a bar for a few-MB file is noise; the user's setting is kept
        model = CLIPModel.from_pretrained(str(d), attn_implementation="eager", **kwargs)
    tok = AutoTokenizer.from_pretrained(str(d))
    proc = CLIPImageProcessor.from_pretrained(str(d))
    encoder = wrap_hf(model, tok, proc, name=name, weights="builtin")
    encoder.family = FAMILY
    return encoder


def _load(rest: str, **kwargs: Any) -> Any:
    return load_builtin(rest or "builtin", **kwargs)


def _status(form: str) -> str:
    if available(form):
        return "installed: " + summary(form)
    if form == "builtin":
        return "not installed: --model builtin falls back to random-clip (with a warning)"
    return f"not installed (train it: {BUILTIN_MODELS[form].recipe.split(' (')[0]})"


FAMILY = Family(
    name="builtin",
    summary="the small CLIP-style models shipped inside dualex",
    prefixes=("builtin", "builtin-clip"),
    spec_forms={
        "builtin": "the small CLIP-style model shipped inside dualex (offline)",
        "builtin-clip": "a deeper small CLIP shipped inside dualex, trained as CLIP is: global "
        "contrastive loss only, objects at every scale, collages (offline)",
    },
    load=_load,
    requires=("transformers",),
    weights_of=lambda rest: "builtin",
    status=_status,
    vision_access=deferred("dualex.towers.hf", "vision_access"),  # HF CLIPModels
    trainable=deferred("dualex.towers.hf", "trainable"),
    vision_towers="the builtin models",
)
