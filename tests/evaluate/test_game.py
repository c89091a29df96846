"""PairGame: the grand coalition is the pair's score, the empty one the references' score; tokens
are replaced or removed, regions take the reference pixels; the user's model is left as it was."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import dualex
from dualex.encoder import DualEncoder
from dualex.errors import InvalidInputError, SettingError
from dualex.evaluate.game import PairGame, all_coalitions, region_groups
from dualex.evaluate.methods.base import UnsupportedMethodError
from tests.conftest import tiny_clip

CAPTION = "red circle"


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(a @ b / a.norm() / b.norm())


@pytest.fixture(scope="module")
def openclip_vit():
    pytest.importorskip("open_clip")
    torch.manual_seed(0)
    text = dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2)
    vision = dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dualex.load("openclip:ViT-B-32", embed_dim=16, vision_cfg=vision, text_cfg=text)


def test_players_and_positions(clip64, image):
    g = PairGame(clip64, image, CAPTION)
    ex = dualex.explain(clip64, CAPTION, image, steps=2)
    _, text, pos = ex.text_image()
    assert g.text_positions.tokens == text.tokens and g.image_positions.grid == pos.grid
    assert g.text_players == [i for i, sp in enumerate(text.special) if not sp] == [1, 2]
    assert g.n_text == 2 and g.n_image == 16 and g.n_players == 18  # 4 x 4 patches, each a player
    assert g.image_players == [[k] for k in range(16)]
    g2 = PairGame(clip64, image, CAPTION, grid=(2, 2))
    assert g2.image_players == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_region_groups_default_grouping_of_large_grids():
    groups = region_groups((14, 14), (8, 8))
    assert len(groups) == 64 and sorted(k for g in groups for k in g) == list(range(196))
    assert {len(g) for g in groups} == {4, 2, 1}  # 14 = 2·6 + 1·2 per side → 2,2,2,2,2,2,1,1
    assert region_groups((3, 5), (8, 8)) == [[k] for k in range(15)]
    with pytest.raises(SettingError, match="at least one region"):
        region_groups((4, 4), (0, 2))


def test_grand_and_empty_coalitions_float64(clip64, image):
    g = PairGame(clip64, image, CAPTION, batch_size=3)
    ends = np.array([[True] * g.n_players, [False] * g.n_players])
    full, empty = g.value(ends)
    assert full == pytest.approx(dualex.explain(clip64, CAPTION, image).score, abs=1e-10)
    ta, tb = clip64.tower_a, clip64.tower_b
    ia, ib = ta.prepare(CAPTION), tb.prepare(image)
    ref = _cos(ta.embed(ta.reference_input(ia, "pad")), tb.embed(tb.reference_input(ib)))
    assert empty == pytest.approx(ref, abs=1e-10)
    assert g.evaluations == 4  # one text and one image pass per distinct half


def test_grand_coalition_on_the_builtin_model(image):
    model = dualex.load("builtin")
    g = PairGame(model, image, "a red circle left of a blue star")
    assert (g.n_text, g.n_image) == (8, 64)
    full = g.value(np.ones((1, g.n_players), bool))[0]
    score = dualex.explain(model, "a red circle left of a blue star", image).score
    assert full == pytest.approx(score, abs=1e-5)


def test_value_is_the_table_entry_and_shapiq_game(clip64, image):
    g = PairGame(clip64, image, CAPTION, grid=(2, 2))
    table = g.value_table(all_coalitions(2), all_coalitions(4))
    c = all_coalitions(6)
    t = (c[:, :2] * [1, 2]).sum(1)
    r = (c[:, 2:] * [1, 2, 4, 8]).sum(1)
    np.testing.assert_allclose(g.value(c), table[t, r], atol=1e-12)
    sg = g.to_shapiq()
    assert sg.n_players == 6
    np.testing.assert_allclose(sg(c), table[t, r], atol=1e-12)


def test_absent_region_takes_reference_pixels(clip64, image):
    g = PairGame(clip64, image, CAPTION, grid=(2, 2))
    present = torch.tensor([[True, False, True, True]])
    px = g._image_batch(present)["pixel_values"][0]
    orig = clip64.tower_b.prepare(image).data["pixel_values"][0]
    assert torch.equal(px[:, :16, 16:], torch.zeros_like(px[:, :16, 16:]))  # region 1: top right
    assert torch.equal(px[:, 16:], orig[:, 16:]) and torch.equal(px[:, :, :16], orig[:, :, :16])
    blur = PairGame(clip64, image, CAPTION, grid=(2, 2), image_reference="blur")
    ref = clip64.tower_b.reference_input(clip64.tower_b.prepare(image), "blur")
    px = blur._image_batch(present)["pixel_values"][0]
    assert torch.equal(px[:, :16, 16:], ref.data["pixel_values"][0, :, :16, 16:])


def test_removed_tokens_equal_the_shorter_text(clip64, openclip_vit, image):
    for model, dtol in ((clip64, 1e-10), (openclip_vit, 1e-5)):
        g = PairGame(model, image, "red circle left", text_absent="remove")
        e = g.text_embeddings(np.array([[False, True, False], [True, True, True]]))
        want = model.tower_a.embed(model.tower_a.prepare("circle"))
        full = model.tower_a.embed(model.tower_a.prepare("red circle left"))
        assert _cos(e[0], want) == pytest.approx(1.0, abs=dtol)
        assert _cos(e[1], full) == pytest.approx(1.0, abs=dtol)
        # replaced, not removed: the sequence keeps its length (a different embedding)
        r = PairGame(model, image, "red circle left").text_embeddings(
            np.array([[False, True, False]])
        )
        assert _cos(r[0], want) < 1.0 - 1e-6


def test_remove_refills_at_the_end(clip64, image):
    g = PairGame(clip64, image, "red circle left", text_absent="remove")
    ids = g._text_data["input_ids"][0]
    data = g._text_batch(torch.tensor([[False, True, False]]))
    assert data["input_ids"][0].tolist() == [ids[0], ids[2], ids[4], 0, 0]
    assert data["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_other_families_run(siglip64, openclip_vit, image):
    for model in (siglip64, openclip_vit):
        g = PairGame(model, image, CAPTION, grid=(2, 2))
        c = np.random.default_rng(0).random((5, g.n_players)) < 0.5
        v = g.value(c)
        assert v.shape == (5,) and np.isfinite(v).all()
        full = g.value(np.ones((1, g.n_players), bool))[0]
        assert full == pytest.approx(dualex.explain(model, CAPTION, image).score, abs=1e-5)


def _flags(m: torch.nn.Module) -> tuple:
    return (
        [x.training for x in m.modules()],
        [p.requires_grad for p in m.parameters()],
    )


def test_model_flags_survive_a_call_and_an_error(image):
    model = tiny_clip(seed=3)
    m = model.module
    for module in m.modules():  # dropout that only train mode would apply
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.3
    m.train()
    for p in list(m.parameters())[::2]:
        p.requires_grad_(False)
    before = _flags(m)
    g = PairGame(model, image, CAPTION, grid=(2, 2))
    v1, v2 = (g.value(np.ones((1, g.n_players), bool)) for _ in range(2))
    assert v1 == v2, "eval mode inside: no dropout noise"
    assert _flags(m) == before

    tower = model.tower_b
    original = tower.encode

    def broken(data):
        original(data)
        raise RuntimeError("boom")

    tower.encode = broken
    try:
        with pytest.raises(RuntimeError, match="boom"):
            g.value(np.ones((1, g.n_players), bool))
    finally:
        del tower.encode
    assert _flags(m) == before
    assert torch.is_grad_enabled()


def test_text_text_models_and_bad_input_raise(clip64, image):
    tt = DualEncoder(clip64.tower_a, clip64.tower_a, name="text-text")
    with pytest.raises(UnsupportedMethodError, match="text–text"):
        PairGame(tt, image, CAPTION)
    g = PairGame(clip64, image, CAPTION)
    with pytest.raises(InvalidInputError, match=r"\[K, 18\]"):
        g.value(np.ones((2, 3), bool))
    with pytest.raises(SettingError, match="text_absent"):
        PairGame(clip64, image, CAPTION, text_absent="drop")


def test_naflex_patch_rows_and_align_feature_map_cells():
    from tests.conftest import random_image
    from tests.towers.test_align import _processor, _tokenizer, tiny_align_model
    from tests.towers.test_registry import _tiny_siglip2

    m, tok, proc = _tiny_siglip2()
    naflex = dualex.wrap(m, tokenizer=tok, image_processor=proc)
    wide = random_image(w=100, h=30, seed=4)  # a 2 x 7 grid and 2 padding rows
    g = PairGame(naflex, wide, CAPTION)
    pos = g.image_positions
    assert pos.suffix_count > 0 and g.n_image == pos.grid[0] * pos.grid[1]
    px = g._image_batch(torch.tensor([[False] + [True] * (g.n_image - 1)]))["pixel_values"][0]
    orig = g._image_data["pixel_values"][0]
    assert torch.equal(px[0], torch.zeros_like(px[0])) and torch.equal(px[1:], orig[1:])
    px = g._image_batch(torch.zeros(1, g.n_image, dtype=torch.bool))["pixel_values"][0]
    assert torch.equal(px[-2:], orig[-2:]), "padding rows are left as they are"
    full = g.value(np.ones((1, g.n_players), bool))[0]
    assert full == pytest.approx(dualex.explain(naflex, CAPTION, wide).score, abs=1e-5)

    align = dualex.wrap(tiny_align_model(), tokenizer=_tokenizer(), image_processor=_processor())
    image = random_image()
    g = PairGame(align, image, CAPTION)
    assert g.image_positions.grid == align.tower_b.prepare(image).positions.grid
    assert bool(g._region_masks.sum(0).eq(1).all()), "the cells tile the input exactly once"
    full = g.value(np.ones((1, g.n_players), bool))[0]
    assert full == pytest.approx(dualex.explain(align, CAPTION, image).score, abs=1e-5)
