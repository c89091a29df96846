"""--protocol fixlip: FIxLIP's grids (all quadrants filled, the first i named), per-image
aggregation on planted maps, its coalition laws, and attention-mask text masking against the
shortened sequence on a tiny HF CLIP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dualex.data.grid import GRID_SCHEME, iter_synthetic_grids
from dualex.errors import SettingError
from dualex.evaluate import metrics as mt
from dualex.evaluate.game import PairGame
from dualex.evaluate.tasks import EvalSettings
from dualex.evaluate.tasks.faithfulness import metrics, sample_coalitions
from dualex.evaluate.tasks.grid import per_image, summary
from tests.conftest import tiny_clip


def test_fixlip_grids_fill_every_quadrant_and_name_the_first():
    for s in iter_synthetic_grids(8, seed=5, fill="all"):
        recipe = json.loads(s.image_ref.path[len(GRID_SCHEME) :])
        tiles = recipe["tiles"]
        assert [q for q, _ in tiles] == [0, 1, 2, 3]  # all four quadrants filled
        shapes = [src["shape"] for _, src in tiles]
        assert len(set(shapes)) == 4  # distinct objects
        k = len(s.mentions)
        assert s.meta["quadrants"] == list(range(k))  # the first k in quadrant order are named
        assert [m.label for m in s.mentions] == shapes[:k]
        assert s.caption == " ".join(shapes[:k])
        assert s.meta["fill"] == "all"
    named = list(iter_synthetic_grids(8, seed=5))
    assert all(len(json.loads(s.image_ref.path[len(GRID_SCHEME) :])["tiles"]) == len(s.mentions)
               for s in named)  # fmt: skip
    with pytest.raises(SettingError, match="fill="):
        next(iter_synthetic_grids(1, fill="some"))


def _row(method, image, hm, inside, k):
    m_r, m_t = mt.mass_parts(hm, inside)
    s_r, s_t = mt.sign_parts(hm, inside)
    return dict(
        method=method,
        image_id=image,
        sample_id=image,
        objects=2,
        mention=k,
        protocol="fixlip",
        mass_right=m_r,
        mass_total=m_t,
        sign_right=s_r,
        sign_total=s_t,
        mass_ratio=mt.mass_ratio(hm, inside),
        sign_ratio=mt.sign_ratio(hm, inside),
        pointing=1.0,
        seconds=0.5,
    )


def test_per_image_aggregation_on_planted_maps():
    q0 = np.array([[True, False], [False, False]])
    q1 = np.array([[False, True], [False, False]])
    # phrase 0: right = 3 (inside, positive) + 1 + 2 (outside, negative) = 6 of |.| = 8
    a = np.array([[3.0, -1.0], [2.0, -2.0]])
    # phrase 1: right = 0 (inside) + 0.5 (outside, negative) of 1 (small mass: it weighs less
    # per image than per mention)
    b = np.array([[0.5, 0.0], [0.0, -0.5]])
    rows = [_row("m", "img", a, q0, 0), _row("m", "img", b, q1, 1)]
    assert rows[0]["mass_ratio"] == pytest.approx(6 / 8)
    assert rows[1]["mass_ratio"] == pytest.approx(0.5 / 1.0)
    # signs: a right at (0,0)+, (0,1)-, (1,1)- = 3 of 4; b at (1,1)- = 1 of 4 (zeros are wrong)
    assert rows[0]["sign_ratio"] == 0.75 and rows[1]["sign_ratio"] == 0.25
    [img] = per_image(rows)
    assert img["mass_ratio"] == pytest.approx((6 + 0.5) / (8 + 1))  # FIxLIP: sum, then ratio
    assert img["sign_ratio"] == pytest.approx((3 + 1) / 8)
    # a second image: c scores 1 of 4 (only its inside entry), -c 3 of 4 (its outside ones)
    c = np.array([[1.0, 1.0], [1.0, 1.0]])
    rows += [_row("m", "img2", c, q0, 0), _row("m", "img2", -c, q1, 1)]
    (table,) = summary(rows)
    want = np.mean([(6 + 0.5) / 9, (1 + 3) / 8])  # the mean is over images, not mentions
    assert table["mass_ratio"] == pytest.approx(want)
    per_mention = np.mean([r["mass_ratio"] for r in rows])
    assert abs(per_mention - want) > 0.01  # the aggregation changes the figure


def test_fixlip_coalition_laws():
    rng = np.random.default_rng(0)
    for p in (0.3, 0.7):
        c = sample_coalitions(30, 2000, rng, f"bern:{p}")
        assert abs(c.mean() - p) < 0.01
    n = 12
    k = sample_coalitions(n, 6000, rng, "kernel")
    assert not k[0].any() and k[1].all()  # the empty and the full coalition are always in
    sizes = k[2:].sum(1)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    s = np.arange(1, n)
    w = (n - 1) / (s * (n - s))
    freq = np.bincount(sizes, minlength=n)[1:] / len(sizes)
    np.testing.assert_allclose(freq, w / w.sum(), atol=0.02)  # KernelSHAP's size weights
    assert metrics("fixlip")[:4] == ("r2_p30", "r2_p50", "r2_p70", "r2_shap")
    assert EvalSettings(protocol="fixlip").options("banzhaf")["text_absent"] == "attention"
    with pytest.raises(SettingError, match="protocol="):
        EvalSettings(protocol="other")


def _cos(a, b):
    return float(a @ b / a.norm() / b.norm())


def test_attention_masking_equals_the_shorter_text_without_position_embeddings(image):
    caption = "red circle left"
    model = tiny_clip(seed=1)
    short = model.tower_a.embed(model.tower_a.prepare("red left"))
    # CLIP's text tower is causal and pools at its end token: with attention to a token cut,
    # the only other thing the token changes is where the later tokens sit
    g = PairGame(model, image, caption, text_absent="attention")
    e = g.text_embeddings(np.array([[True, False, True]]))[0]
    assert _cos(e, short.double()) < 1 - 1e-6  # positions shift in the shorter text
    emb = model.module.text_model.embeddings.position_embedding
    with torch.no_grad():
        emb.weight.zero_()  # no position information: masking = removing
    g = PairGame(model, image, caption, text_absent="attention")
    e = g.text_embeddings(np.array([[True, False, True], [True, True, True]]))
    short = model.tower_a.embed(model.tower_a.prepare("red left")).double()
    full = model.tower_a.embed(model.tower_a.prepare(caption)).double()
    assert _cos(e[0], short) == pytest.approx(1.0, abs=1e-10)
    assert _cos(e[1], full) == pytest.approx(1.0, abs=1e-10)
    # the filler-token masking of dualex's protocol is another game
    r = PairGame(model, image, caption).text_embeddings(np.array([[True, False, True]]))[0]
    assert _cos(r, short) < 1 - 1e-6


def test_cli_eval_grid_with_the_fixlip_protocol(tmp_path, monkeypatch, capsys):
    import pyarrow.parquet as pq

    from tests.test_cli import run

    out = tmp_path / "grid"
    args = ["eval", "grid", "--model", "builtin", "--data", "synthetic-grid:seed=1,n=4"]
    args += ["--methods", "dualex,random", "--steps", "2", "--protocol", "fixlip"]
    code, _, err = run(monkeypatch, capsys, *args, "--out", str(out))
    assert code == 0, err
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    assert {r["protocol"] for r in rows} == {"fixlip"}
    assert all(r["mass_total"] > 0 for r in rows)
    assert json.loads((out / "grid.json").read_text())["data"].endswith(",fill=all")
    code, _, err = run(monkeypatch, capsys, "eval", "grid", "--protocol", "theirs", "--out",
                       str(tmp_path / "bad"))  # fmt: skip
    assert code == 2 and "protocol=" in err and not (tmp_path / "bad").exists()
