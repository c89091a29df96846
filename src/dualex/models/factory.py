"""Small HF CLIP models built locally (re-exported from :mod:`dualex.towers.random_clip`, the
``random-clip`` family that builds them)."""

from dualex.towers.random_clip import (
    DEMO_WORDS,
    SPECIALS,
    clip_config,
    random_clip,
    tokenize_words,
    word_tokenizer,
)

__all__ = [
    "DEMO_WORDS",
    "SPECIALS",
    "clip_config",
    "random_clip",
    "tokenize_words",
    "word_tokenizer",
]
