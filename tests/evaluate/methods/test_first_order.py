"""First-order methods (ig, gae, maskclip, gradeclip, surgery, legrad) on every model family:
each either runs (a finite map on the tower's grid that depends on the text) or raises the
documented UnsupportedMethodError; IG completeness; the random floor is seeded."""

from __future__ import annotations

import pytest
import torch

from dualex.evaluate.methods import UnsupportedMethodError, get
from dualex.evaluate.methods.base import Attribution
from tests.towers.test_access import OTHER_FAMILIES, VIT_FAMILIES, test_image, tiny_model

METHODS = ("ig", "gae", "maskclip", "gradeclip", "surgery", "legrad")
CNN_FAMILIES = ("openclip-rn", "openai-rn", "align")


def _runs(method: str, family: str) -> bool:
    """The documented matrix: attention methods on ViTs; IG on every image tower; none on st."""
    if family == "st":
        return False
    return family in VIT_FAMILIES or method == "ig"


def _image(family: str):
    return "a second text" if family == "st" else test_image(family)


@pytest.mark.parametrize("family", VIT_FAMILIES + OTHER_FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_or_raises_the_documented_error(method, family):
    model = tiny_model(family)
    texts = ["red circle", "blue star"]
    m = get(method)
    assert m.order == 1 and m.families, method
    if not _runs(method, family):
        with pytest.raises(UnsupportedMethodError) as err:
            m(model, _image(family), texts)
        shown = str(err.value)
        assert all(f in shown for f in ("hf", "openclip", "openai")), shown
        return
    out = m(model, _image(family), texts, **({"steps": 4} if method == "ig" else {}))
    assert len(out) == 2 and all(isinstance(a, Attribution) for a in out)
    grid = model.tower_b.prepare(_image(family)).positions.grid
    for a in out:
        assert a.method == method and tuple(a.image_map.shape) == tuple(grid)
        assert a.image_map.dtype == torch.float64 and torch.isfinite(a.image_map).all()
        assert a.units == ("score" if method == "ig" else "relative")
        assert tuple(a.map_for().shape) == tuple(grid) and a.order == 1
    assert not torch.allclose(out[0].image_map, out[1].image_map), f"{method} ignores its text"


@pytest.mark.parametrize("family", ["hf-clip", "hf-siglip2", "openclip-timm", "openclip-rn"])
def test_ig_completeness(family):
    model = tiny_model(family)
    (a,) = get("ig")(model, _image(family), ["red circle"], steps=24)
    want = a.score - a.extra["baseline_score"]
    assert float(a.image_map.sum()) == pytest.approx(want, rel=2e-3, abs=1e-6)


def test_text_batches_equal_single_texts():
    model = tiny_model("openclip-vit")
    texts = ["red circle", "blue star", "a green square"]
    for method in METHODS:
        both = get(method)(model, test_image("openclip-vit"), texts)
        one = get(method)(model, test_image("openclip-vit"), texts[1:2])[0]
        torch.testing.assert_close(both[1].image_map, one.image_map, rtol=1e-8, atol=1e-10)


def test_gae_and_gradeclip_scores_are_the_models_cosine():
    model = tiny_model("hf-clip")
    image = test_image("hf-clip")
    (ig,) = get("ig")(model, image, ["red circle"], steps=2)
    for method in ("gae", "gradeclip", "legrad"):
        (a,) = get(method)(model, image, ["red circle"])
        assert a.score == pytest.approx(ig.score, abs=1e-6), method


def test_random_map_is_seeded():
    model, image = tiny_model("hf-clip"), test_image("hf-clip")
    rnd = get("random")
    (a,) = rnd(model, image, ["red"], seeds=["s/0"])
    assert torch.equal(a.image_map, rnd(model, image, ["red"], seeds=["s/0"])[0].image_map)
    assert not torch.equal(a.image_map, rnd(model, image, ["red"], seeds=["s/1"])[0].image_map)


def test_bad_settings_raise():
    from dualex.errors import SettingError

    model, image = tiny_model("hf-clip"), test_image("hf-clip")
    with pytest.raises(SettingError, match="start_layer"):
        get("gae")(model, image, ["x"], start_layer=5)
    with pytest.raises(SettingError, match="blocks"):
        get("surgery")(model, image, ["x"], blocks=0)
