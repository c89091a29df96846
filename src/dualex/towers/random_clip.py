"""The ``random-clip[:SEED]`` spec: small HF CLIP models built locally, with random weights.

A word-level tokenizer and random-init configs of real ``transformers`` architectures
(``CLIPModel``, ``PreTrainedTokenizerFast``), saved and loaded with ``save_pretrained`` /
``from_pretrained`` like any hub model: used by the demo before a trained model is available, by
tests, as the skeleton of the built-in model, and as the ``random-clip`` family (towers, attention
access and fine-tuning are the ``hf`` family's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dualex.errors import UnknownModelError
from dualex.towers.registry import Family

SPECIALS = ("[PAD]", "[UNK]", "<start>", "<end>")
"""Special tokens of the word-level tokenizer, ids 0..3 (EOS = 3: HF CLIP pools at its first
occurrence; id 2 would switch CLIP to its legacy argmax pooling)."""

DEMO_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "and",
    "with",
    "on",
    "in",
    "at",
    "to",
    "left",
    "right",
    "above",
    "below",
    "next",
    "near",
    "two",
    "three",
    "photo",
    "picture",
    "image",
    "small",
    "large",
    "big",
    "little",
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
    "pink",
    "brown",
    "grey",
    "gray",
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "diamond",
    "hexagon",
    "heart",
    "ring",
    "shape",
    "dog",
    "cat",
    "husky",
    "snow",
    "grass",
    "sky",
    "sea",
    "man",
    "woman",
    "person",
    "playing",
    "guitar",
]


def word_tokenizer(words: Iterable[str]) -> Any:
    """A lower-casing word-level fast tokenizer with ``<start> … <end>`` around each text.

    Args:
        words: The vocabulary (specials are added first; duplicates are dropped).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with character offsets.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for w in (*SPECIALS, *(w.lower() for w in words)):
        if w not in vocab:
            vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>",
        special_tokens=[("<start>", vocab["<start>"]), ("<end>", vocab["<end>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<start>",
        eos_token="<end>",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )


def tokenize_words(text: str) -> list[str]:
    """Split a text the way :func:`word_tokenizer` does (lower-cased words and punctuation)."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def clip_config(
    vocab_size: int,
    *,
    width: int = 64,
    layers: int = 4,
    heads: int = 4,
    image_size: int = 64,
    patch_size: int = 8,
    projection_dim: int = 64,
    max_text: int = 32,
) -> Any:
    """A small ``CLIPConfig`` (same width/depth for both towers, eager attention)."""
    from transformers import CLIPConfig

    common = dict(
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
    )
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size,
            max_position_embeddings=max_text,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
            **common,
        ),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **common),
        projection_dim=projection_dim,
    )
    cfg._attn_implementation = "eager"
    return cfg


def random_clip(seed: int = 0, **config: Any) -> tuple[Any, Any, Any]:
    """A randomly initialised small HF CLIP with a word-level tokenizer and image processor.

    Args:
        seed: Seed of the initialisation.
        **config: Passed to :func:`clip_config` (width, layers, image_size, patch_size, ...).

    Returns:
        ``(model, tokenizer, image_processor)``.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    tok = word_tokenizer(DEMO_WORDS)
    cfg = clip_config(len(tok), **config)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    size = cfg.vision_config.image_size
    proc = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return model, tok, proc


PREFIXES = ("random-clip", "random")
"""The spec names of this family (``random-clip``, ``random-clip:SEED``; ``random`` is an alias)."""

RANDOM_CONFIG: dict[str, int] = {"image_size": 64, "patch_size": 8}
"""Size of the ``random-clip`` model (:func:`clip_config` arguments)."""


def load_random(rest: str) -> Any:
    """``random-clip[:SEED]`` as a :class:`dualex.DualEncoder` (``weights="random"``).

    Args:
        rest: The seed (an integer), or the spec name itself for seed 0.

    Raises:
        UnknownModelError: if the seed is not an integer.
    """
    from dualex.towers.hf import wrap_hf

    text = rest.strip().lower()
    try:
        seed = 0 if text in PREFIXES else int(text)
    except ValueError as err:
        raise UnknownModelError(
            f"cannot read the seed in {rest!r}; use random-clip or random-clip:SEED (an integer)"
        ) from err
    model, tok, proc = random_clip(seed=seed, **RANDOM_CONFIG)
    encoder = wrap_hf(model, tok, proc, name=f"random-clip:{seed}", weights="random")
    encoder.family = FAMILY
    return encoder


def _trainable(encoder: Any, module: Any, name: str) -> Any:
    from dualex.towers.hf import trainable

    return trainable(encoder, module, name)


def _vision_access(model: Any) -> Any:
    from dualex.towers.hf import vision_access

    return vision_access(model)


FAMILY = Family(
    name="random-clip",
    summary="a randomly initialised small transformers CLIP (for trying things out)",
    prefixes=PREFIXES,
    spec_forms={"random-clip[:SEED]": "a randomly initialised small CLIP (for trying things out)"},
    load=lambda rest, **kw: load_random(rest),
    requires=("transformers",),
    weights_of=lambda rest: "random",
    vision_access=_vision_access,
    trainable=_trainable,
    vision_towers="the random-clip model",
)
