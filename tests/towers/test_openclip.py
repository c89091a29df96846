"""open_clip towers: ViT, timm ViT (SigLIP head) and ModifiedResNet; specs, weights, geometry."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import dualex
from dualex.errors import UnknownModelError
from dualex.towers.openclip import RandomWeightsWarning, align_pieces, transform_geometry
from tests.conftest import random_image

open_clip = pytest.importorskip("open_clip")

TEXT = dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2)
VIT = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=TEXT,
)
RESNET = dict(
    embed_dim=16, vision_cfg=dict(image_size=32, layers=[1, 1, 1, 1], width=8), text_cfg=TEXT
)
CAPTION = "a red circle left of a blue star"


def _load(spec: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        return dualex.load(spec, **kw)


@pytest.fixture(scope="module")
def vit():
    return _load("openclip:ViT-B-32", **VIT)


@pytest.fixture(scope="module")
def resnet():
    return _load("openclip:RN50", **RESNET)


def _hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_vit_explains_first_middle_last_layer(vit, layer):
    image = random_image()
    ex = dualex.explain(vit, CAPTION, image, layers=layer)
    assert len(ex.tokens) == 10, "<start>, 8 words, <end> (padding cannot reach the EOT row)"
    assert ex.tokens[:3] == ["<start_of_text>", "a", "red"] and ex.tokens[9] == "<end_of_text>"
    assert ex.a.special == [True] + [False] * 8 + [True]
    assert ex.matrix.shape == (10, 1 + 16), "rows = tokens incl. specials, cols = CLS + 4x4"
    c = ex.completeness
    assert c.relative_error <= 1e-3 and max(c.tower_errors) <= 1e-3, c
    with torch.no_grad():
        et = vit.module.encode_text(vit.tower_a.prepare(CAPTION).data["input_ids"])[0]
        ei = vit.module.encode_image(vit.tower_b.prepare(image).data["pixel_values"])[0]
    assert c.score == pytest.approx(float(torch.cosine_similarity(et, ei, dim=0)), abs=1e-6)


def test_trimmed_text_rows_equal_the_full_context_rows(vit):
    """Rows BOS..EOT are those of the untrimmed 12-position tower, whose pad rows are zero."""
    from dataclasses import replace

    from dualex.towers.openclip import ClipTextTower

    t = vit.tower_a
    full = ClipTextTower(
        vit.module.encode_text, t.blocks(), t.codec, layout=t.layout, root=t.root(), trim=False
    )
    untrimmed = replace(vit, tower_a=full)
    image = random_image(seed=5)
    a = dualex.explain(vit, CAPTION, image, layers=1, steps=4)
    b = dualex.explain(untrimmed, CAPTION, image, layers=1, steps=4)
    assert b.matrix.shape == (12, 17) and b.a.special[10:] == [True, True]
    assert torch.allclose(a.matrix, b.matrix[:10], atol=1e-7, rtol=1e-5)
    assert torch.all(b.matrix[10:] == 0), "causal text: pads after <end> never reach the EOT row"
    assert a.completeness.score == pytest.approx(b.completeness.score, abs=1e-7)


def test_vit_text_reference_is_exclip_and_modes_agree(vit):
    inp = vit.tower_a.prepare(CAPTION)
    ref = vit.tower_a.reference_input(inp).data["input_ids"][0].tolist()
    assert ref == [49406, 0, 49407] + [0] * 9
    image = random_image(seed=3)
    f = dualex.explain(vit, CAPTION, image, layers=1, steps=3, mode="forward")
    r = dualex.explain(vit, CAPTION, image, layers=1, steps=3, mode="reverse")
    assert torch.allclose(f.matrix, r.matrix, atol=1e-6, rtol=1e-4), (
        (f.matrix - r.matrix).abs().max()
    )


def test_spans_map_through_bpe_offsets(vit):
    ex = dualex.explain(vit, "A Red-circle, left!", random_image(), layers=1, steps=2)
    assert ex.a.offsets[1:8] == [(0, 1), (2, 5), (5, 6), (6, 12), (12, 13), (14, 18), (18, 19)]
    assert ex.tokens[2] == "Red", "display keeps the original casing"
    assert ex.a.span_indices("red-circle") == [2, 3, 4]
    assert ex.image_map("circle").shape == (4, 4)
    assert align_pieces("a dog", ["a", None, "cat", "dog"]) == [(0, 1), None, None, (2, 5)]


def test_resnet_positions_are_cells_of_the_chosen_stage(resnet):
    tower = resnet.tower_b
    assert tower.num_layers == 6 and tower.default_layer == 5, "stem, 4 stages, attention pool"
    image = random_image()
    inp = tower.prepare(image)
    grids = [tower.positions_at(inp, layer).grid for layer in range(7)]
    assert grids == [(32, 32), (8, 8), (8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    for layer in (1, 3, 5):
        ex = dualex.explain(resnet, CAPTION, image, layers=(1, layer))
        rows, cols = grids[layer]
        assert ex.b.grid == (rows, cols) and ex.b.prefix == 0
        assert ex.matrix.shape == (10, rows * cols)
        assert ex.completeness.relative_error <= 1e-3, ex.completeness
        assert ex.image_map("circle").shape == (rows, cols)
    h = tower.hidden(inp, 4)
    assert h.shape == (4, 8 * 4 * 4), "layer 4 = input of stage 4: 2x2 cells, 128 channels"
    assert tower.hidden(inp, 0).shape == (32 * 32, 3), "layer 0 = the normalised pixels"


def test_timm_vit_with_attention_pool_head():
    timm = pytest.importorskip("timm")
    from timm.models.vision_transformer import VisionTransformer

    name = "dualex_test_siglip_tiny"
    if name not in timm.list_models(name):

        @timm.models.register_model
        def dualex_test_siglip_tiny(pretrained=False, **kw):
            keep = {k: v for k, v in kw.items() if k in ("global_pool", "num_classes")}
            return VisionTransformer(
                img_size=32,
                patch_size=8,
                embed_dim=32,
                depth=2,
                num_heads=2,
                class_token=False,
                **{"global_pool": "map", "num_classes": 0, **keep},
            )

    text = dict(TEXT, no_causal_mask=True, proj_bias=True, pool_type="last")
    vision = dict(image_size=32, timm_model_name=name, timm_pool="map", timm_proj="none")
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=12)  # SigLIP's own needs the hub
    model = _load(
        "openclip:ViT-B-16-SigLIP", tokenizer=tok, embed_dim=32, vision_cfg=vision, text_cfg=text
    )
    assert type(model.module).__name__ == "CustomTextCLIP"
    assert model.tower_b.name == "openclip-timm-vit" and model.tower_a.default_reference == "pad"
    for layer in (0, 1, 2):
        ex = dualex.explain(model, "a red circle", random_image(), layers=layer)
        assert ex.matrix.shape == (12, 16), "no CLS: 4x4 patches only"
        assert ex.b.prefix == 0
        assert ex.completeness.relative_error <= 1e-3, ex.completeness


def test_specs_arch_with_slash_weights_file_and_errors(tmp_path, monkeypatch):
    model = _load("openclip:ViT-B/32", **VIT)  # "ViT-B/32" names the ViT-B-32 config
    assert model.name == "openclip:ViT-B-32"
    weights = tmp_path / "tiny.pt"
    torch.save(model.module.state_dict(), weights)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)
        again = dualex.load(f"openclip:ViT-B-32/{weights}", **VIT)
    ids = model.tower_a.prepare("a dog").data["input_ids"]
    assert torch.equal(again.module.encode_text(ids), model.module.encode_text(ids))

    with pytest.raises(UnknownModelError, match=r"no architecture 'ViT-B-33'.*ViT-B-32"):
        dualex.load("openclip:ViT-B-33")
    with pytest.raises(UnknownModelError, match=r"no pretrained tag 'nope'.*laion2b_s34b_b79k"):
        dualex.load("openclip:ViT-B-32/nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnknownModelError, match=r"not available locally.*open_clip looks in") as e:
        dualex.load("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=str(tmp_path))
    assert str(tmp_path) in str(e.value) and "pretrained=" in str(e.value)
    assert isinstance(e.value, dualex.DualexError)
    with pytest.raises(UnknownModelError, match=r"cannot build the tokenizer.*tokenizer=\.\.\."):
        dualex.load("openclip:ViT-B-16-SigLIP")  # its tokenizer lives on the hub: fails fast


def test_no_hook_survives_explain_even_one_that_raised(vit):
    before = _hook_count(vit.module)
    dualex.explain(vit, "a red circle", random_image(), layers=1, steps=2)
    assert _hook_count(vit.module) == before
    with pytest.raises(dualex.DualexError):
        dualex.explain(vit, "a red circle", random_image(), steps=2, reference=(None, "nope"))
    assert _hook_count(vit.module) == before


def test_transform_geometry_follows_resize_and_centre_crop(vit):
    preprocess = vit.tower_b.preprocess
    W, H = 96, 48  # shorter side 48 -> 32: 64x32, centre crop 32 -> x offset 16 resized px
    geo = transform_geometry(preprocess, (W, H))
    assert geo.scale == pytest.approx((32 / 48, 32 / 48)) and geo.offset == (16.0, 0.0)
    im = Image.new("RGB", (W, H), "white")
    ImageDraw.Draw(im).rectangle((48, 12, 59, 23), fill="red")  # exactly patch (1, 2)
    inp = vit.tower_b.prepare(im)
    assert inp.positions.box_patches((48, 12, 60, 24)) == [1 + 1 * 4 + 2]
    px = inp.data["pixel_values"][0]
    cells = (px[0] - px[1]).reshape(4, 8, 4, 8).mean(dim=(1, 3))
    assert int(cells.flatten().argmax()) == 1 * 4 + 2, "the red patch is where geometry says"
    pad = transform_geometry(open_clip.transform.CenterCropOrPad(40), (30, 50))
    assert pad.offset == (-5.0, 5.0) and pad.input_size == (40, 40)


EXCLIP = Path(__file__).resolve().parents[2] / ".venv" / "exclip" / "exclip" / "explanation.py"


@pytest.mark.slow
@pytest.mark.skipif(
    not EXCLIP.is_file(), reason="exclip not installed under .venv/exclip (see benchmarks/)"
)
def test_agrees_with_exclip_on_a_small_vit():
    """The paper's code on a 2-block open_clip ViT (exclip needs 224 px and 77 tokens)."""
    spec = importlib.util.spec_from_file_location("exclip_explanation", EXCLIP)
    exclip = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exclip)
    cfg = dict(
        embed_dim=32,
        vision_cfg=dict(image_size=224, layers=2, width=64, patch_size=32, head_width=32),
        text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )
    model = _load("openclip:ViT-B-32", **cfg)
    t, i = model.tower_a.prepare("a red dog"), model.tower_b.prepare(random_image(300, 200))
    ids, px = t.data["input_ids"], i.data["pixel_values"]
    explainer = exclip.OpenClipExplainer(model.module, device=torch.device("cpu"))
    A = explainer.explain(ids, px, text_layer=1, image_layer=1, N=10)
    explainer.reset_attribution()  # exclip leaves its hooks registered
    ex = dualex.explain(model, t, i, layers=1, steps=10, rule="riemann")
    eot = int(ids.argmax())
    ours = ex.matrix[: eot + 1, 1:].reshape(eot + 1, 7, 7)
    rel = float((ours - A).abs().max() / A.abs().max())
    assert rel <= 1e-5, rel
