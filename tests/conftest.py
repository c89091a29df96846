"""Shared fixtures: tiny float64 models with visible seeds, a planted-interaction toy."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def tiny_clip(seed: int = 0, dtype: torch.dtype = torch.float64, **cfg):
    """A random-init HF CLIPModel (2+2 blocks, width 32, 32 px, patch 8) wrapped by dualex."""
    import dualex
    from dualex.models.factory import random_clip

    params = dict(width=32, layers=2, heads=2, image_size=32, patch_size=8, projection_dim=16)
    params.update(cfg)
    m, tok, proc = random_clip(seed=seed, **params)
    m = m.to(dtype)
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name="tiny-clip")


def tiny_siglip(seed: int = 0, dtype: torch.dtype = torch.float64):
    """A random-init HF SiglipModel (2+2 blocks, width 32, attention-pool head) wrapped by dualex."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    import dualex
    from dualex.models.factory import DEMO_WORDS, word_tokenizer

    tok = word_tokenizer(DEMO_WORDS)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = SiglipConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=16,
            pad_token_id=0,
            eos_token_id=3,
            bos_token_id=2,
            **common,
        ),
        vision_config=dict(image_size=32, patch_size=8, **common),
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    m = SiglipModel(cfg).eval().to(dtype)
    proc = SiglipImageProcessor(size={"height": 32, "width": 32})
    return dualex.wrap(m, tokenizer=tok, image_processor=proc, name="tiny-siglip")


def random_image(w: int = 48, h: int = 40, seed: int = 0) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8"))


@pytest.fixture(scope="session")
def clip64():
    return tiny_clip(seed=0)


@pytest.fixture(scope="session")
def siglip64():
    return tiny_siglip(seed=0)


@pytest.fixture(scope="session")
def image():
    return random_image()
