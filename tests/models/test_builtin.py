"""The shipped built-in model and its recipe."""

from __future__ import annotations

import json

import pytest
import torch

from dualex.data.synthetic import generate
from dualex.models import builtin
from dualex.models.factory import tokenize_words
from dualex.models.train_builtin import TrainConfig, builtin_vocabulary, train

pytestmark = pytest.mark.skipif(not builtin.available(), reason="built-in model files missing")


@pytest.fixture(scope="module")
def parts():
    from dualex.models.evaluate_builtin import load_parts

    return load_parts("builtin")


@pytest.fixture(scope="module")
def model():
    import dualex

    return dualex.load("builtin")


def _cosines(parts, image, captions):
    enc = parts.tokenizer(captions, padding=True, return_tensors="pt")
    px = parts.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        t = parts.model.get_text_features(**enc)
        i = parts.model.get_image_features(pixel_values=px)
    t = t if torch.is_tensor(t) else t.pooler_output
    i = i if torch.is_tensor(i) else i.pooler_output
    return torch.nn.functional.cosine_similarity(i, t).tolist()


def test_shipped_files_load_through_the_hf_code_path():
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    d = builtin.BUILTIN_DIR
    assert (d / "tokenizer.json").is_file()
    weights = d / "model.safetensors"
    assert weights.stat().st_size <= 20 * 2**20
    m = CLIPModel.from_pretrained(str(d))
    tok = AutoTokenizer.from_pretrained(str(d))
    proc = CLIPImageProcessor.from_pretrained(str(d))
    ids = tok("a small red circle left of two blue stars")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids  # <start> … <end>, no [UNK]
    assert m.config.vision_config.image_size == proc.crop_size["height"]


def test_vocabulary_covers_every_generated_word():
    vocab = set(builtin_vocabulary())
    for domain in ("plain", "cluttered"):
        for s in generate(150, seed=7, domain=domain):
            for text in [s.caption, *(n.caption for n in s.negatives)]:
                assert set(tokenize_words(text)) <= vocab, text


def test_true_caption_beats_colour_swap_on_a_fixed_scene(parts):
    s = generate(1, seed=901, domain="plain", start=3)[0]
    neg = next(n for n in s.negatives if n.kind == "colour")
    true, swapped = _cosines(parts, s.image, [s.caption, neg.caption])
    assert true > swapped, (s.caption, neg.caption, true, swapped)


def test_colour_and_absent_negatives_lose_on_held_out_scenes(parts):
    wins = {"colour": [], "absent": []}
    for s in generate(20, seed=905, domain="textured"):
        negs = [n for n in s.negatives if n.kind in wins]
        sims = _cosines(parts, s.image, [s.caption, *(n.caption for n in negs)])
        for n, v in zip(negs, sims[1:], strict=True):
            wins[n.kind].append(sims[0] > v)
    for kind, w in wins.items():
        assert sum(w) / len(w) >= 0.7, (kind, sum(w), len(w))


def test_builtin_explanation_is_exact_on_the_8x8_grid(model):
    import dualex

    s = generate(1, seed=901, domain="plain", start=0, max_objects=1)[0]
    ex = dualex.explain(model, s.caption, s.image)
    assert ex.completeness.relative_error < 1e-3
    assert ex.image_map(s.mentions[0].span).shape == (8, 8)


def test_recipe_trains_saves_and_resumes(tmp_path):
    from transformers import CLIPModel

    tc = TrainConfig(steps=2, batch=8, n_train=16, width=32, layers=1, heads=2, ckpt_every=1)
    train(tmp_path, tc)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2 and not list(tmp_path.glob("**/*.pt"))
    before = CLIPModel.from_pretrained(str(tmp_path)).logit_scale.item()
    tc.steps = 3
    train(tmp_path, tc, resume=True)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3 and len(state["log"]) == 0
    after = CLIPModel.from_pretrained(str(tmp_path)).logit_scale.item()
    assert after != before  # one more optimiser step happened on the resumed state
