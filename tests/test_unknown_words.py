"""Words unknown to a model's vocabulary: recorded with the explanation (saved, reloaded, older
files read), never ranked, greyed in figures, and a caption of only unknown words refused."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import dualex
from dualex.errors import InvalidInputError
from dualex.explanation import Explanation
from tests.conftest import tiny_clip

CAPTION = "a red zyzzyva beside the blue quokka"


@pytest.fixture(scope="module")
def model():
    return tiny_clip()


@pytest.fixture(scope="module")
def picture():
    return Image.new("RGB", (40, 32), (200, 40, 40))


@pytest.fixture(scope="module")
def ex(model, picture):
    return dualex.explain(model, CAPTION, picture, steps=2)


def test_unknown_positions_are_the_tokenizers_unk_ids(model, ex):
    tok = model.tower_a.tokenizer
    ids = tok(CAPTION)["input_ids"]
    want = tuple(i for i, t in enumerate(ids) if t == tok.unk_token_id)
    assert want and ex.unknown_tokens == want == ex.text_positions.unknown
    assert ex.text_positions.unknown_words() == ["zyzzyva", "beside", "quokka"]
    # token ids in, the same positions out
    from_ids = dualex.explain(model, torch.tensor(ids), ex.image, steps=2)
    assert from_ids.unknown_tokens == want


def test_unknown_positions_are_saved_and_older_files_still_load(ex, tmp_path):
    back = Explanation.load(ex.save(tmp_path / "x.safetensors"))
    assert back.unknown_tokens == ex.unknown_tokens
    # a file written before unknown positions (and weights) were recorded
    with safe_open(str(tmp_path / "x.safetensors"), framework="pt") as f:
        meta = json.loads(f.metadata()["dualex"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    del meta["a"]["unknown"], meta["weights"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dualex": json.dumps(meta)})
    old = Explanation.load(tmp_path / "old.safetensors")
    assert old.unknown_tokens == () and old.weights == "unknown"
    assert torch.equal(old.matrix, ex.matrix)


def test_unknown_words_are_never_ranked(ex):
    from dualex.viz.figure import default_spans
    from dualex.viz.summary import strongest_interactions

    unknown_labels = set(ex.text_positions.unknown_words())
    assert not unknown_labels & {a for a, _, _ in ex.top_interactions(50)}
    assert not unknown_labels & {a for a, _, _ in strongest_interactions(ex, 50)}
    spans = default_spans(ex, k=10)
    assert not set(ex.unknown_tokens) & {i for s in spans[1:] for i in s}


def test_the_figure_greys_unknown_words_and_says_why(ex):
    from dualex.viz.figure import figure1
    from dualex.viz.tokens import UNKNOWN_BG

    fig = figure1(ex, spans=["red"], boxes=[(0, 0, 40, 32)])
    strip = next(ax for ax in fig.axes if any(t.get_text() == "zyzzyva" for t in ax.texts))
    colours = {t.get_text(): t.get_bbox_patch().get_facecolor() for t in strip.texts[1:]}
    grey = tuple(int(UNKNOWN_BG[i : i + 2], 16) / 255 for i in (1, 3, 5))
    for word in ("zyzzyva", "beside", "quokka"):
        assert colours[word][:3] == pytest.approx(grey)
    assert colours["red"][:3] != pytest.approx(grey)
    assert any(
        t.get_text().startswith(
            "3 words unknown to the model's vocabulary (zyzzyva, beside, quokka)"
        )
        for t in fig.texts
    )


def test_a_caption_of_only_unknown_words_is_refused_naming_them(model, picture, monkeypatch):
    import dualex.explainer

    def no_work(*args, **kwargs):
        raise AssertionError("the explanation was started")

    monkeypatch.setattr(dualex.explainer, "project_one", no_work)
    with pytest.raises(InvalidInputError, match=r"knows none of the words.*'zyzzyva', 'quokka'"):
        dualex.explain(model, "zyzzyva quokka", picture)


def test_the_text_pair_figure_greys_unknown_words(make_text_pair):
    from dualex.viz.figure import text_pair_figure
    from dualex.viz.tokens import UNKNOWN_FG

    ex = make_text_pair
    fig = text_pair_figure(ex)
    ax = fig.axes[0]
    labels = {t.get_text().replace("\u0336", ""): t for t in ax.get_yticklabels()}
    assert labels["plays"].get_color() == UNKNOWN_FG and "\u0336" in labels["plays"].get_text()
    assert labels["guitar"].get_color() != UNKNOWN_FG
    assert any(t.get_text().startswith("1 word unknown") for t in fig.texts)


@pytest.fixture
def make_text_pair():
    from dataclasses import replace

    from dualex.engine.interactions import Completeness
    from tests.viz.conftest import text_positions

    a = replace(text_positions("a man plays guitar"), unknown=(3,))
    b = text_positions("someone makes music")
    m = torch.randn(len(a), len(b), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    comp = Completeness(float(m.sum()), (0.0, 0.0, 0.0), float(m.sum()), 0.0, 0.0, (0.0, 0.0),
                        (4, 4), "gauss-legendre")  # fmt: skip
    return Explanation(matrix=m, a=a, b=b, completeness=comp, model="st:toy")
