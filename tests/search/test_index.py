"""dualex.Index: every hit explained exactly as dualex.explain, in the model's score order; float16
storage within its measured error; fused queries complete; resume after a kill; refusals."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import dualex
from dualex.data.sources import parse_data_spec
from dualex.engine.interactions import interactions
from dualex.errors import FileFormatError, InvalidInputError, JobError, SettingError
from dualex.search import FusedExplanation, Index
from tests.scale.helpers import SRC, committed, kill_after_parts, partial

QUERY = "a red circle"
DATA = "synthetic:seed=5,n=8"
STEPS = 4  # fixed quadrature nodes keep the tests fast; exactness does not depend on them


@pytest.fixture(scope="module")
def model():
    """The built-in model in float64 (its own copy: other tests keep theirs)."""
    m = dualex.load("builtin")
    m.module.double()
    return m


@pytest.fixture(scope="module")
def gallery():
    samples = list(parse_data_spec(DATA).samples())
    return [s.image for s in samples], [s.caption for s in samples]


@pytest.fixture(scope="module")
def index(model, gallery, tmp_path_factory):
    images, captions = gallery
    out = tmp_path_factory.mktemp("idx") / "gallery.idx"
    return Index.build(model, out, images=images, texts=captions, shard_size=3, steps=STEPS)


def test_every_hit_equals_explain_in_the_models_score_order(model, gallery, index):
    images, _ = gallery
    hits = index.search(QUERY, k=5)
    assert len(hits) == 5 and [h.rank for h in hits] == [1, 2, 3, 4, 5]
    every = dualex.project(model, texts=[QUERY], images=images, steps=STEPS).scores()[0]
    order = sorted(range(len(images)), key=lambda i: -float(every[i]))
    assert [h.id for h in hits] == order[:5]
    for h in hits:
        want = dualex.explain(model, QUERY, images[h.id], steps=STEPS)
        got = h.explanation
        assert got.matrix.dtype == torch.float64
        assert (got.matrix - want.matrix).abs().max().item() <= 1e-10
        assert abs(h.score - want.score) <= 1e-10
        assert got.tokens == want.tokens and got.grid == want.grid
        pairs = zip(
            got.completeness.reference_terms, want.completeness.reference_terms, strict=True
        )
        assert all(abs(x - y) <= 1e-10 for x, y in pairs)
        assert got.image.tobytes() == images[h.id].convert("RGB").tobytes()
    assert hits[0].words()[0]["word"] in QUERY.split()


def test_image_query_finds_captions_explained_as_explain(model, gallery, index):
    images, captions = gallery
    hits = index.search(image=images[2], k=3)
    assert all(h.kind == "text" for h in hits)
    scores = dualex.project(model, texts=captions, images=[images[2]], steps=STEPS).scores()[:, 0]
    assert [h.id for h in hits] == sorted(range(len(captions)), key=lambda i: -float(scores[i]))[:3]
    for h in hits:
        want = dualex.explain(model, captions[h.id], images[2], steps=STEPS)
        assert h.caption == captions[h.id]
        assert (h.explanation.matrix - want.matrix).abs().max().item() <= 1e-10


def test_fused_query_is_complete_and_its_parts_are_their_own_explanations(model, gallery, index):
    images, _ = gallery
    w = (0.7, 0.3)
    hits = index.search(QUERY, k=3, image=images[4], weights=w)
    proj = dualex.project(model, texts=[QUERY], images=images, steps=STEPS)
    q_img = dualex.project(model, texts=[QUERY], images=[images[4]], steps=STEPS).b[0]

    def cos(a, b):
        return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))

    fused = [
        w[0] * cos(proj.a[0].embedding, p.embedding) + w[1] * cos(q_img.embedding, p.embedding)
        for p in proj.b
    ]
    assert [h.id for h in hits] == sorted(range(len(images)), key=lambda i: -fused[i])[:3]
    for h in hits:
        ex = h.explanation
        assert isinstance(ex, FusedExplanation)
        text_part, image_part = ex.parts
        want_text = dualex.explain(model, QUERY, images[h.id], steps=STEPS)
        assert (text_part.matrix - want_text.matrix).abs().max().item() <= 1e-10
        g = proj.b[h.id]
        M, comp = interactions(
            q_img.P,
            g.P,
            q_img.embedding,
            q_img.reference_embedding,
            g.embedding,
            g.reference_embedding,
            similarity=model.similarity,
        )
        assert (image_part.matrix - M).abs().max().item() <= 1e-10
        # the stacked matrix: the text part's rows, then the query image's, each weighted
        n_text = len(want_text.tokens)
        assert ex.matrix.shape == (n_text + M.shape[0], M.shape[1])
        assert abs(float(ex.matrix[:n_text].sum()) - w[0] * float(want_text.matrix.sum())) <= 1e-10
        assert abs(float(ex.matrix[n_text:].sum()) - w[1] * float(M.sum())) <= 1e-10
        # completeness: the fused score is the weighted parts' score, and the matrix plus the
        # weighted reference terms add up to it up to the parts' own quadrature residuals
        c = ex.completeness
        assert abs(c.score - fused[h.id]) <= 1e-10 and abs(h.score - fused[h.id]) <= 1e-10
        residual = w[0] * want_text.completeness.absolute_error + w[1] * comp.absolute_error
        assert c.absolute_error <= residual + 1e-12
        assert abs(c.attribution_sum + sum(c.reference_terms) - c.score) <= residual + 1e-12


def test_float16_storage_within_its_measured_error(model, gallery, index, tmp_path):
    images, _ = gallery
    half = Index.build(model, tmp_path / "half", images=images, dtype="float16", steps=STEPS)
    err = half.meta["float16_error"]
    assert 0 < err < 1e-3
    exact = {h.id: h for h in index.search(QUERY, k=8)}
    got = half.search(QUERY, k=8)
    assert [h.id for h in got] == list(exact), "scores come from full-precision embeddings"
    q = dualex.project(model, texts=[QUERY], images=[images[0]], steps=STEPS).a[0]
    stored = json.loads((tmp_path / "half" / "index.json").read_text())
    assert stored["dtype"] == "float16" and stored["float16_error"] == err
    for h in got:
        want = exact[h.id].explanation
        g = index.projection("image", h.id)
        scale = 1 / float(q.embedding.norm() * g.embedding.norm())
        # |P_qᵀ (P16 − P)| ≤ ‖P_q‖ ‖P16 − P‖ ≤ ‖P_q‖ · err · ‖P‖
        bound = float(q.P.norm()) * err * float(g.P.norm()) * scale
        diff = float((h.explanation.matrix - want.matrix).norm())
        assert 0 < diff <= bound
        assert abs(h.score - exact[h.id].score) <= 1e-12


def test_refusals(model, gallery, index, tmp_path):
    with pytest.raises(InvalidInputError, match="empty"):
        index.search("   ")
    with pytest.raises(SettingError, match="k must"):
        index.search(QUERY, k=0)
    with pytest.raises(SettingError, match="weights"):
        index.search(QUERY, image=gallery[0][0], weights=(1.0,))
    other = dualex.load("builtin")  # float32 weights round to the same values: same model
    Index.check_model(index.meta, other)
    other.module.double()
    with torch.no_grad():
        next(other.module.parameters()).add_(1e-3)
    with pytest.raises(SettingError, match="built with model"):
        Index.load(index.root, model=other)
    with pytest.raises(FileFormatError, match="not a dualex index"):
        Index.load(tmp_path)
    with pytest.raises(JobError, match="different job"):  # another model at the same folder
        Index.build(
            other, index.root, images=gallery[0], texts=gallery[1], shard_size=3, steps=STEPS
        )


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``dualex ARGS`` in-process: (exit code, stdout, stderr)."""
    from dualex import cli

    monkeypatch.setattr(sys, "argv", ["dualex", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_index_search_json_and_another_models_query(tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.idx"
    data = "synthetic:seed=2,n=4"
    code, stdout, err = _cli(
        monkeypatch, capsys, "index", "--data", data, "--steps", "2", "--out", str(out)
    )
    assert code == 0, err
    assert "indexed 4 images" in stdout
    hits_json = tmp_path / "h.json"
    code, stdout, err = _cli(
        monkeypatch, capsys, "search", str(out), QUERY, "--k", "2", "--json", str(hits_json)
    )
    assert code == 0, err
    hits = json.loads(hits_json.read_text())
    assert [h["rank"] for h in hits] == [1, 2] and hits[0]["score"] >= hits[1]["score"]
    assert f"score {hits[0]['score']:+.4f}" in stdout
    assert hits[0]["words"][0]["word"] in stdout
    code, stdout, err = _cli(
        monkeypatch, capsys, "search", str(out), QUERY, "--model", "random-clip:1"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dualex: error: the index was built with"), err


def test_a_killed_build_resumes_and_keeps_its_finished_shards(model, tmp_path):
    out = tmp_path / "resumed"
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from dualex.search import Index\n"
        f"Index.build('builtin', {str(out)!r}, data='synthetic:seed=7,n=6', shard_size=1, steps=2)\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    parts = out / "parts"
    kill_after_parts(proc, parts, 2)
    before = {n: (parts / n).stat().st_mtime_ns for n in committed(parts)}
    assert 2 <= len(before) < 6, "killed mid-run"
    assert not (out / "index.json").exists()
    # what a kill in the middle of a write leaves: a temporary file of an unfinished shard
    folders = [parts, out / "projections"]
    for folder in folders:
        (folder / ".shard-000005.parquet.x1y2z3.tmp.parquet").write_bytes(b"half")
    with pytest.raises(FileFormatError, match="resume"):
        Index.load(out)
    idx = Index.build("builtin", out, data="synthetic:seed=7,n=6", shard_size=1, steps=2)
    after = {n: (parts / n).stat().st_mtime_ns for n in committed(parts)}
    assert len(after) == 6 and all(after[n] == t for n, t in before.items()), "shards re-ran"
    assert all(partial(f) == [] for f in folders), "a killed write's temporary file was left"
    assert len(idx) == 6
    samples = list(parse_data_spec("synthetic:seed=7,n=6").samples())
    m32 = dualex.load("builtin")
    for h in idx.search(QUERY, k=6):
        want = dualex.explain(m32, QUERY, samples[int(h.id.rsplit("-", 1)[1])].image, steps=2)
        assert math.isclose(h.score, want.score, abs_tol=1e-6)
