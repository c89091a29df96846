"""method="banzhaf": per-input Banzhaf terms are exact when both sides are enumerated, right on
average when sampled, equal between explain and project, and saved with their settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dualex
from dualex.encoder import DualEncoder
from dualex.errors import SettingError, UnsupportedMethodError
from dualex.evaluate.game import PairGame, all_coalitions
from dualex.faithful import design, fit_side

CAPTION = "red circle"


def _weighted_banzhaf(value, n: int, p: float, i: int, j: int) -> float:
    """The definition: E over the other players (present w.p. p) of the discrete derivative."""
    others = [k for k in range(n) if k not in (i, j)]
    total = 0.0
    for bits in all_coalitions(len(others)):
        s = np.zeros(n, bool)
        s[others] = bits
        w = p ** bits.sum() * (1 - p) ** (len(others) - bits.sum())
        c = np.stack([s.copy() for _ in range(4)])
        c[0, [i, j]] = True
        c[1, i] = True
        c[2, j] = True
        v = value(c)
        total += w * (v[0] - v[1] - v[2] + v[3])
    return total


@pytest.mark.parametrize("estimator", ["regression", "sign"])
def test_exact_when_both_sides_are_enumerated(clip64, image, estimator):
    p = 0.4
    ex = dualex.explain(
        clip64, CAPTION, image, method="banzhaf", budget=64, p=p, grid=(2, 2), estimator=estimator
    )
    assert ex.method == "banzhaf" and ex.settings["exact"] and ex.sampling_error == 0.0
    game = PairGame(clip64, image, CAPTION, grid=(2, 2))
    n = game.n_players
    c = all_coalitions(n)
    v = game.value(c)  # row k: bit i of k = player i

    def value(x):
        return v[(x * (1 << np.arange(n))).sum(1)]

    _, text, pos = ex.text_image()
    for a, row in enumerate(game.text_players):
        for r, group in enumerate(game.image_players):
            got = float(ex.matrix[row, [pos.prefix + k for k in group]].sum())
            want = _weighted_banzhaf(value, n, p, a, game.n_text + r)
            assert got == pytest.approx(want, abs=1e-10)
    # the kept terms predict every coalition by a sum over the present positions
    rows = torch.zeros(len(c), len(text), dtype=torch.float64)
    cols = torch.zeros(len(c), len(pos), dtype=torch.float64)
    for k, row in enumerate(game.text_players):
        rows[:, row] = torch.from_numpy(c[:, k]).double()
    for r, group in enumerate(game.image_players):
        for j in group:
            cols[:, pos.prefix + j] = torch.from_numpy(c[:, game.n_text + r]).double()
    pred = (
        ex.completeness.reference_terms[0]
        + rows @ ex.first_order_a
        + cols @ ex.first_order_b
        + ((rows @ ex.matrix) * cols).sum(1)
    )
    # least squares: the residual is orthogonal to the constant under Bern(p) weights
    w = p ** c.sum(1) * (1 - p) ** (n - c.sum(1))
    assert float(w @ (v - pred.numpy())) == pytest.approx(0.0, abs=1e-10)
    assert pred[-1].item() == pytest.approx(ex.settings["predicted_value"], abs=1e-12)
    assert ex.score == pytest.approx(v[-1], abs=1e-10)
    assert ex.settings["empty_value"] == pytest.approx(v[0], abs=1e-10)


def test_regression_is_exact_on_a_linear_side_and_right_on_average():
    rng = np.random.default_rng(0)
    n, E, p = 10, 3, 0.5
    c, B = rng.normal(size=E), rng.normal(size=(n, E))

    def linear(s):
        return c + (s - p) @ B

    d = design(n, 40, p, np.random.default_rng(1))
    fit = fit_side(d, linear(d.coalitions), p, "regression")
    np.testing.assert_allclose(fit.slopes, B, atol=1e-8)  # GCV picks no ridge on exact data
    np.testing.assert_allclose(fit.mean, c, atol=1e-8)

    # a non-linear side: least squares on a random design is biased by O(1/K), far below its
    # noise, and it is less noisy than the sign-weighted average of the same coalitions
    A = rng.normal(size=(n, E))

    def curved(s):
        return np.tanh(s @ A - 1.0) + 0.3 * np.sin(s.sum(1))[:, None]

    full = design(n, 1 << n, p)
    exact = fit_side(full, curved(full.coalitions), p, "regression").slopes
    norm = np.linalg.norm(exact)
    bias, noise = {}, {}
    for est in ("regression", "sign"):
        for k in (256, 512):
            fits = np.array(
                [
                    fit_side(d, curved(d.coalitions), p, est).slopes
                    for d in (design(n, k, p, np.random.default_rng(s)) for s in range(200))
                ]
            )
            bias[est, k] = np.linalg.norm(fits.mean(0) - exact) / norm
            noise[est, k] = np.sqrt(((fits - exact) ** 2).sum((1, 2)).mean()) / norm
    for k in (256, 512):
        assert bias["regression", k] < 0.2 * noise["regression", k], (bias, noise)
        assert noise["regression", k] < 0.6 * noise["sign", k], noise
    assert noise["regression", 512] < 0.8 * noise["regression", 256], noise  # ~ 1/sqrt(K)


def test_project_equals_explain_for_every_pair(clip64, image):
    from tests.conftest import random_image

    texts = ["red circle left of a star", "a blue square"]
    images = [image, random_image(40, 48, seed=3)]
    opts = dict(method="banzhaf", budget=64, seed=3)
    proj = dualex.project(clip64, texts, images, **opts)
    for i, t in enumerate(texts):
        for j, im in enumerate(images):
            want = dualex.explain(clip64, t, im, **opts)
            got = proj.explanation(i, j)
            assert torch.equal(got.matrix, want.matrix)
            assert torch.equal(got.first_order_a, want.first_order_a)
            assert got.settings == {**want.settings, "seconds": got.settings["seconds"]}
    assert not proj.a[0].exact  # 6 tokens: sampled at budget 64, so the seed matters
    other = dualex.explain(clip64, texts[0], image, method="banzhaf", budget=64, seed=4)
    assert not torch.equal(other.matrix, proj.explanation(0, 0).matrix)
    np.testing.assert_allclose(
        proj.scores().numpy(),
        [[dualex.explain(clip64, t, im).score for im in images] for t in texts],
        atol=1e-10,
    )


def test_sampling_error_tracks_the_seed_to_seed_difference(clip64, image):
    caption = "red circle left of a blue star"
    exs = [
        dualex.explain(clip64, caption, image, method="banzhaf", budget=96, seed=s)
        for s in range(4)
    ]
    assert all(not e.settings["exact"] for e in exs)
    diffs = [
        float((exs[a].matrix - exs[b].matrix).norm() / exs[a].matrix.norm())
        for a in range(4)
        for b in range(a + 1, 4)
    ]
    predicted = np.sqrt(2) * np.mean([e.sampling_error for e in exs])  # two independent runs
    assert 0.5 < np.mean(diffs) / predicted < 2.0, (diffs, predicted)


def test_save_and_load_keep_the_method(clip64, image, tmp_path):
    ex = dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32, p=0.3, seed=2)
    back = dualex.Explanation.load(ex.save(tmp_path / "b.safetensors"))
    assert back.method == "banzhaf" and back.settings == ex.settings
    assert back.settings["budget"] == 32 and back.settings["p"] == 0.3
    assert torch.equal(back.first_order_a, ex.first_order_a)
    assert torch.equal(back.first_order_b, ex.first_order_b)
    assert back.completeness == ex.completeness
    assert "sampling_error" in repr(back) and "banzhaf" in repr(back)

    # a file written before explanations had a method loads as the paper's method
    from safetensors import safe_open
    from safetensors.torch import save_file

    new = dualex.explain(clip64, CAPTION, image).save(tmp_path / "d.safetensors")
    with safe_open(str(new), framework="pt") as f:
        meta = json.loads(f.metadata()["dualex"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    del meta["method"], meta["settings"]
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"dualex": json.dumps(meta)})
    old = dualex.Explanation.load(tmp_path / "old.safetensors")
    assert old.method == "dualex" and old.settings == {} and old.first_order_a is None
    assert old.sampling_error is None


def test_many_in_one_file_keep_method_settings_and_first_order(clip64, image, tmp_path):
    # a dataset shard holds many explanations: each keeps what a single file keeps
    exs = {
        "p0": dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32, seed=1),
        "p1": dualex.explain(clip64, CAPTION, image),
    }
    path = dualex.Explanation.save_many(exs, tmp_path / "shard.safetensors")
    every = dualex.Explanation.load_many(path)
    for key, ex in exs.items():
        for back in (dualex.Explanation.load(path, key=key), every[key]):
            assert back.method == ex.method and back.settings == ex.settings
            assert torch.equal(back.matrix, ex.matrix)
            for got, want in ((back.first_order_a, ex.first_order_a),
                              (back.first_order_b, ex.first_order_b)):  # fmt: skip
                assert (got is None) == (want is None)
                assert got is None or torch.equal(got, want)
    assert every["p0"].first_order_a is not None


def test_scale_and_masking_modes(clip64, image):
    plain = dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32)
    scaled = dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32, scale=True)
    k = clip64.current_logit_scale()
    torch.testing.assert_close(scaled.matrix, k * plain.matrix, rtol=1e-12, atol=0)
    assert scaled.score == pytest.approx(k * plain.score, rel=1e-12)
    removed = dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32, masking="remove")
    attn = dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=32, masking="attention")
    assert removed.settings["masking"] == "remove" and attn.settings["masking"] == "attention"
    assert not torch.allclose(removed.matrix, plain.matrix)


def test_bad_settings_raise(clip64, image):
    with pytest.raises(SettingError, match="method="):
        dualex.explain(clip64, CAPTION, image, method="shapley")
    with pytest.raises(SettingError, match="budget set"):
        dualex.explain(clip64, CAPTION, image, budget=64)
    with pytest.raises(SettingError, match="layers and steps"):
        dualex.explain(clip64, CAPTION, image, method="banzhaf", layers=1)
    with pytest.raises(SettingError, match="out of range"):
        dualex.explain(clip64, CAPTION, image, method="banzhaf", budget=8)
    with pytest.raises(SettingError, match="strictly in"):
        dualex.project(clip64, [CAPTION], [image], method="banzhaf", p=1.0)
    with pytest.raises(SettingError, match="masking="):
        dualex.explain(clip64, CAPTION, image, method="banzhaf", masking="drop")
    with pytest.raises(SettingError, match="estimator="):
        dualex.explain(clip64, CAPTION, image, method="banzhaf", estimator="ols")
    tt = DualEncoder(clip64.tower_a, clip64.tower_a, name="text-text")
    with pytest.raises(UnsupportedMethodError, match="text–text model"):
        dualex.explain(tt, "a red circle", "a blue star", method="banzhaf")


def test_figure_title_names_the_method_and_its_sampling_error(clip64, image):
    import matplotlib

    matplotlib.use("Agg")
    from dualex.viz.figure import figure1

    ex = dualex.explain(clip64, "red circle left of a star", image, method="banzhaf", budget=32)
    title = figure1(ex)._suptitle.get_text()
    assert "banzhaf, sampling error" in title and "rel. error" not in title
