"""Hugging Face CLIP and SigLIP towers: every layer, completeness, geometry, spans, hooks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

import dualex
from dualex.errors import BoxError, InputWarning, InvalidInputError, InvalidLayerError, SpanError
from tests.conftest import random_image, tiny_clip


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_clip_explains_every_layer_with_small_completeness_error(clip64, image, layer):
    ex = dualex.explain(clip64, "a red circle left of a blue star", image, layers=layer)
    n_tokens = len(ex.tokens)
    assert n_tokens == 10  # <start> + 8 words + <end>
    assert ex.matrix.shape == (n_tokens, 1 + 16), "rows = all tokens, columns = CLS + 4x4 patches"
    c = ex.completeness
    assert c.relative_error <= 1e-3, c
    assert max(c.tower_errors) <= 1e-3, c
    total = c.attribution_sum + sum(c.reference_terms)
    assert abs(total - c.score) == pytest.approx(c.absolute_error, abs=1e-15)
    # the model's own similarity
    m = clip64.module
    inp_t = clip64.tower_a.prepare("a red circle left of a blue star")
    inp_i = clip64.tower_b.prepare(image)
    with torch.no_grad():
        et = clip64.tower_a.encode(inp_t.data)[0]
        ei = clip64.tower_b.encode(inp_i.data)[0]
    assert c.score == pytest.approx(float(torch.cosine_similarity(et, ei, dim=0)), abs=1e-12)
    assert m is not None


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_siglip_explains_every_layer(siglip64, image, layer):
    ex = dualex.explain(siglip64, "two green triangles", image, layers=layer)
    assert ex.matrix.shape == (16, 16), "SigLIP: text padded to 16 positions, 4x4 patches, no CLS"
    assert ex.b.prefix == 0
    assert ex.completeness.relative_error <= 1e-3, ex.completeness


def test_forward_and_reverse_agree_on_clip(clip64, image):
    kw = dict(layers=1, steps=4)
    f = dualex.explain(clip64, "a small red circle", image, mode="forward", **kw)
    r = dualex.explain(clip64, "a small red circle", image, mode="reverse", **kw)
    # HF's eager attention takes its softmax in float32 even in a float64 model, so the two
    # modes' different operation orders agree to float32 round-off of the softmax, not 1e-15.
    assert torch.allclose(f.matrix, r.matrix, atol=1e-8, rtol=0), (f.matrix - r.matrix).abs().max()


def test_adaptive_steps_reach_tolerance_and_report_steps(clip64, image):
    ex = dualex.explain(clip64, "a red circle", image, layers=0, tol=1e-6, max_steps=64)
    assert all(n > 1 for n in ex.completeness.steps)
    assert max(ex.completeness.tower_errors) <= 1e-6
    fixed = dualex.explain(clip64, "a red circle", image, layers=0, steps=1)
    assert max(fixed.completeness.tower_errors) > max(ex.completeness.tower_errors)


def test_project_equals_explain(clip64):
    texts = ["a red circle", "two blue stars above a square"]
    images = [random_image(seed=1), random_image(w=30, h=50, seed=2)]
    proj = dualex.project(clip64, texts=texts, images=images, layers=1)
    for i, t in enumerate(texts):
        for j, im in enumerate(images):
            steps, rule = (proj.a[i].steps, proj.b[j].steps), proj.a[i].rule
            assert proj.b[j].rule == rule == "kronrod-patterson", "adaptive: the nested rules"
            ex = dualex.explain(clip64, t, im, layers=1, steps=steps, rule=rule)
            # images of one size share a batched pass: equal to float64 round-off
            torch.testing.assert_close(proj.matrix(i, j), ex.matrix, rtol=0, atol=1e-12)
    scores = proj.scores()
    assert scores.shape == (2, 2)
    assert scores[1, 0].item() == pytest.approx(proj.explanation(1, 0).score, abs=1e-12)


def test_exclip_text_reference_layout(clip64):
    tower = clip64.tower_a
    inp = tower.prepare("a red circle and a star")
    ref = tower.reference_input(inp)
    ids = ref.data["input_ids"][0].tolist()
    tok = tower.tokenizer
    assert ids[:3] == [tok.bos_token_id, 0, tok.eos_token_id]
    assert ids[3:] == [0] * (len(ids) - 3)
    pad = tower.reference_input(inp, "pad").data["input_ids"][0].tolist()
    assert pad[0] == tok.bos_token_id and pad[-1] == tok.eos_token_id and set(pad[1:-1]) == {0}


def test_image_reference_options_change_the_result(clip64, image):
    zeros = dualex.explain(clip64, "a red circle", image, layers=1, steps=4)
    blur = dualex.explain(
        clip64, "a red circle", image, layers=1, steps=4, reference=(None, "blur")
    )
    assert not torch.allclose(zeros.matrix, blur.matrix)
    assert blur.completeness.relative_error < 1e-3
    # A hidden-state reference equal to the blurred image's hidden state gives the same result.
    tower = clip64.tower_b
    inp = tower.prepare(image)
    h_blur = tower.hidden(tower.reference_input(inp, "blur"), 1)
    custom = dualex.explain(
        clip64, "a red circle", image, layers=1, steps=4, reference=(None, h_blur)
    )
    assert torch.equal(custom.matrix, blur.matrix)


def test_spans_repeated_and_multi_token_words():
    from pathlib import Path

    from transformers import CLIPTokenizerFast

    from dualex.towers.inputs import tokenize_with_offsets

    path = Path(__file__).resolve().parents[3] / "shared" / "data" / "clip-tokenizer"
    if not path.is_dir():
        pytest.skip(f"CLIP BPE tokenizer folder not found at {path}")
    tok = CLIPTokenizerFast.from_pretrained(str(path))
    text = "a dog chases a dog near the huskyish snowplough"
    _, _, pos = tokenize_with_offsets(tok, text, 77)
    first, second = pos.span_indices("dog"), pos.span_indices(("dog", 1))
    assert [pos.tokens[i] for i in first] == ["dog"] and [pos.tokens[i] for i in second] == ["dog"]
    assert first[0] < second[0]
    multi = pos.span_indices("snowplough")
    assert len(multi) >= 2, "snowplough is several BPE pieces"
    assert "".join(pos.tokens[i] for i in multi) == "snowplough"
    assert pos.span_indices((2, 5)) == first, "character range of the first 'dog'"
    assert pos.span_indices((2, 6)) == first, "a range ending in a space adds no token"
    with pytest.raises(SpanError):
        pos.span_indices(("dog", 2))
    with pytest.raises(SpanError):
        pos.span_indices("cat")


def test_boxes_on_non_square_images_land_on_the_right_patches():
    """A red square drawn on a wide image, after shortest-edge resize + centre crop."""
    model = tiny_clip(seed=0, image_size=32, patch_size=8)
    W, H = 96, 48  # shorter side 48 -> 32: resized 64x32, centre crop x in [16, 48) resized px
    im = Image.new("RGB", (W, H), "white")
    # resized scale = 32/48; crop offset 16 resized px = 24 original px. Patch (r, c) covers
    # original x in [24 + 12c, 24 + 12(c+1)), y in [12r, 12(r+1)).
    ImageDraw.Draw(im).rectangle((48, 12, 59, 23), fill="red")  # exactly patch (1, 2)
    inp = model.tower_b.prepare(im)
    pos = inp.positions
    assert pos.grid == (4, 4)
    assert pos.geometry.scale == pytest.approx((32 / 48, 32 / 48))
    boxes = pos.patch_boxes()
    assert boxes[1 * 4 + 2] == pytest.approx((48.0, 12.0, 60.0, 24.0))
    assert pos.box_patches((48, 12, 60, 24)) == [1 + 1 * 4 + 2]
    # The processed pixels of that patch are red, all others white (checks the real processor).
    px = inp.data["pixel_values"][0]
    red_channel = px[0] - px[1]
    cells = red_channel.reshape(4, 8, 4, 8).mean(dim=(1, 3))
    assert int(cells.flatten().argmax()) == 1 * 4 + 2
    with pytest.raises(BoxError):
        pos.box_patches((0, 0, 10, 40))  # inside the image but cropped away
    with pytest.raises(BoxError):
        pos.box_patches((100, 0, 120, 10))


def test_text_scores_and_image_map_slice_the_matrix(clip64, image):
    ex = dualex.explain(clip64, "a red circle and a red star", image, layers=1, steps=2)
    rows = ex.a.span_indices(("red", 1))
    m = ex.matrix
    assert torch.allclose(ex.image_map(("red", 1)).flatten(), m[rows].sum(0)[1:])
    assert ex.image_map().shape == (4, 4)
    box = ex.b.patch_boxes()[5]
    assert torch.allclose(ex.text_scores(box), m[:, 6])
    assert torch.allclose(ex.text_scores(), m[:, 1:].sum(1))


def test_bad_inputs_raise_dualex_errors(clip64, image, tmp_path):
    with pytest.raises(InvalidLayerError, match=r"0\.\.2"):
        dualex.explain(clip64, "a red circle", image, layers=3)
    with pytest.raises(InvalidInputError, match="empty"):
        dualex.explain(clip64, "   ", image)
    with pytest.warns(
        InputWarning, match=r"needs 42 tokens .* the last 10 token\(s\) were dropped"
    ):
        long = dualex.explain(clip64, " ".join(["red"] * 40), image, layers=2, steps=2)
    assert long.matrix.shape[0] == 32  # truncated to the context, as the model sees it
    assert long.text_positions.dropped == 10  # recorded, and kept through save / load
    assert dualex.Explanation.load(long.save(tmp_path / "long.dualex")).text_positions.dropped == 10
    assert dualex.explain(clip64, "red", image, layers=2, steps=2).text_positions.dropped == 0
    from dualex.viz.report import pair_data

    assert pair_data(long, None, 64)["dropped"] == [10, 0]  # the report's summary table shows it
    bad = tmp_path / "not-an-image.png"
    bad.write_text("hello")
    with pytest.raises(InvalidInputError, match="cannot read"):
        dualex.explain(clip64, "a red circle", bad)
    with pytest.raises(InvalidInputError, match="does not exist"):
        dualex.explain(clip64, "a red circle", tmp_path / "missing.png")
    with pytest.raises(dualex.DualexError, match="unknown model spec"):
        dualex.load("nope:thing")
    with pytest.raises(dualex.DualexError, match="quadrature rule"):
        dualex.explain(clip64, "a red circle", image, rule="simpson")


def _hook_count(module: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


def test_no_hook_survives_explain_even_one_that_raised(clip64, image):
    m = clip64.module
    before = _hook_count(m)
    dualex.explain(clip64, "a red circle", image, layers=1, steps=2)
    assert _hook_count(m) == before
    with pytest.raises(InvalidInputError):
        dualex.explain(
            clip64, "a red circle", image, layers=1, steps=2, reference=(None, torch.zeros(3, 3, 3))
        )
    assert _hook_count(m) == before

    def boom(*_):
        raise RuntimeError("boom")

    tower = clip64.tower_b
    inp = tower.prepare(image)
    from dualex.towers.session import Action

    with pytest.raises(RuntimeError, match="boom"), tower._acting(Action(1, boom)):
        tower.encode(inp.data)
    assert _hook_count(m) == before
    assert torch.backends.mha.get_fastpath_enabled(), "the MHA fast path setting must be restored"


def test_explanation_save_load_roundtrip(clip64, image, tmp_path):
    ex = dualex.explain(clip64, "a red circle", image, layers=1, steps=2)
    path = ex.save(tmp_path / "sub" / "ex.safetensors")
    back = dualex.Explanation.load(path)
    assert torch.equal(back.matrix, ex.matrix)
    assert back.tokens == ex.tokens and back.grid == ex.grid
    assert back.completeness == ex.completeness
    assert back.layers == ex.layers and back.model == ex.model
    assert back.image.size == image.size
    assert torch.allclose(back.image_map("red"), ex.image_map("red"))
    assert not list((tmp_path / "sub").glob("*.tmp")), "no temp file left behind"
    with pytest.raises(dualex.DualexError):
        dualex.Explanation.load(tmp_path / "nothing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(dualex.DualexError):
        dualex.Explanation.load(junk)


def test_public_api_is_complete():
    for name in (
        "load",
        "wrap",
        "explain",
        "project",
        "Explanation",
        "DualEncoder",
        "Projections",
        "Completeness",
        "DualexError",
    ):
        assert name in dualex.__all__, name
        assert hasattr(dualex, name), name
    for name in dualex.__all__:
        assert getattr(dualex, name).__doc__, f"{name} has no docstring"


@pytest.mark.parametrize("side", ["text", "image"])
def test_pooled_last_block_shortcut_equals_the_full_model(clip64, image, side):
    tower = clip64.tower_a if side == "text" else clip64.tower_b
    inp = tower.prepare("a red circle left of a star" if side == "text" else image)
    last = tower.num_layers - 1
    h = tower.hidden(inp, last)
    H = torch.stack([h, 0.5 * h, h.flip(0)])  # arbitrary states, not only the input's own
    fast = tower.suffix(inp, last)(H)
    tower.fast_last_block = False
    try:
        slow = tower.suffix(inp, last)(H)
    finally:
        tower.fast_last_block = True
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0), (fast - slow).abs().max()
    with torch.no_grad():
        assert torch.allclose(
            tower.suffix(inp, last)(h.unsqueeze(0))[0], tower.encode(inp.data)[0], atol=1e-12
        )


def test_load_hf_spec_from_a_saved_folder(tmp_path, image):
    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=3, width=32, layers=2, heads=2, image_size=32, patch_size=8)
    tok.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    m.save_pretrained(tmp_path)
    model = dualex.load(f"hf:{tmp_path}")
    assert model.name == f"hf:{tmp_path}"
    ex = dualex.explain(model, "a red circle", image)
    direct = dualex.explain(
        dualex.wrap(m, tokenizer=tok, image_processor=proc), "a red circle", image
    )
    assert torch.allclose(ex.matrix, direct.matrix, atol=1e-6)
    with pytest.raises(dualex.DualexError, match="cannot load"):
        dualex.load(f"hf:{tmp_path / 'missing'}")


def test_a_towers_default_layer_can_be_set_and_restored(clip64, image):
    text, img = clip64.tower_a, clip64.tower_b
    assert (text.default_layer, img.default_layer) == (1, 1), "2 blocks: input of the last"
    try:
        text.default_layer, img.default_layer = 0, -1  # -1 counts from the end: the output
        assert (text.default_layer, img.default_layer) == (0, 2)
        ex = dualex.explain(clip64, "a red circle", image, steps=2)
        assert ex.layers == (0, 2)
        fixed = dualex.explain(clip64, "a red circle", image, steps=2, layers=(0, 2))
        assert torch.equal(ex.matrix, fixed.matrix)
        with pytest.raises(InvalidLayerError):
            text.default_layer = 3
        assert text.default_layer == 0, "a refused value leaves the old one"
    finally:
        text.default_layer = img.default_layer = None
    assert (text.default_layer, img.default_layer) == (1, 1)


def test_load_hf_folder_shows_no_weights_bar_and_keeps_the_users_setting(tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    from dualex.models.factory import random_clip

    m, tok, proc = random_clip(seed=3, width=32, layers=2, heads=2, image_size=32, patch_size=8)
    for part in (tok, proc, m):
        part.save_pretrained(tmp_path)
    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # a user who wants transformers' bars elsewhere
    try:
        capfd.readouterr()
        dualex.load(f"hf:{tmp_path}")
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()  # the user's setting, back
    finally:
        if not before:
            hf_logging.disable_progress_bar()
