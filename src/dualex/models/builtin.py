"""The built-in model: a small CLIP trained by dualex on its synthetic world (see MODEL.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dualex.errors import UnknownModelError

BUILTIN_DIR = Path(__file__).parent / "builtin"
"""Folder with the built-in model's config, weights (safetensors) and tokenizer."""


def available() -> bool:
    """Whether the built-in model's files are present in the installed package."""
    return (BUILTIN_DIR / "config.json").is_file() and any(BUILTIN_DIR.glob("*.safetensors"))


def load_builtin(**kwargs: Any):
    """Load the built-in model as a :class:`dualex.DualEncoder`.

    Raises:
        UnknownModelError: if this installation has no built-in model files.
    """
    if not available():
        raise UnknownModelError(
            f"the built-in model is not in this installation ({BUILTIN_DIR} has no weights); "
            "train it with `python -m dualex.models.train_builtin --out "
            f"{BUILTIN_DIR}` or load another model"
        )
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    from dualex.towers.hf import wrap_hf
    from dualex.towers.session import quiet_hf_bars

    with quiet_hf_bars():  # a bar for a 2 MB file is noise; the user's setting is kept
        model = CLIPModel.from_pretrained(str(BUILTIN_DIR), attn_implementation="eager", **kwargs)
    tok = AutoTokenizer.from_pretrained(str(BUILTIN_DIR))
    proc = CLIPImageProcessor.from_pretrained(str(BUILTIN_DIR))
    return wrap_hf(model, tok, proc, name="builtin", weights="builtin")
