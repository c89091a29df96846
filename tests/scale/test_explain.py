"""``dualex explain --data`` (sharded safetensors + index) and ``dualex report DIR``."""

from __future__ import annotations

import json
import math
import re

import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import dualex
from dualex.cli import app
from dualex.data.sources import parse_data_spec
from dualex.scale.explain import load_explanation, pair_name, pick, read_index
from dualex.scale.worker import load_model

DATA = "synthetic:seed=4,n=3,captions_per_image=2"


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    out = tmp_path_factory.mktemp("explained")
    args = ["explain", "--data", DATA, "--out", str(out), "--model", "random-clip", "--steps", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "explained 6 pairs in 1 shards" in res.output
    return out


def test_index_and_stored_explanations_match_a_direct_projection(explained):
    rows = read_index(explained)
    samples = list(parse_data_spec(DATA).samples())
    assert [r["pair_id"] for r in rows] == [s.caption_id for s in samples]
    assert set(pq.read_schema(explained / "index.parquet").names) >= {
        "pair_id",
        "caption",
        "image_path",
        "score",
        "completeness",
        "file",
        "key",
    }
    model = load_model("random-clip")
    for k in (0, 1):  # the captions of the first image, projected together as in the run
        proj = dualex.project(
            model, texts=[s.caption for s in samples[:2]], images=[samples[0].image], steps=2
        )
        want = proj.explanation(k, 0)
        got = load_explanation(explained, rows[k])
        assert torch.equal(got.matrix, want.matrix)
        assert got.tokens == want.tokens and got.grid == want.grid
        assert got.image.tobytes() == samples[0].image.tobytes()
        assert rows[k]["score"] == want.completeness.score
        assert rows[k]["completeness"] == want.completeness.relative_error
        assert math.isclose(
            float(got.matrix.double().sum()) + sum(want.completeness.reference_terms),
            want.completeness.score,
            abs_tol=2 * want.completeness.absolute_error + 1e-6,
        )


def test_a_dataset_pair_carries_every_field_of_a_single_explanation(explained, tmp_path):
    """One format: a shard is read by Explanation's own loader, so a pair of a dataset run has
    exactly what the same pair explained alone and saved has (weights, unknown tokens, ...)."""
    rows = read_index(explained)
    samples = list(parse_data_spec(DATA).samples())
    model = load_model("random-clip")
    proj = dualex.project(
        model, texts=[s.caption for s in samples[:2]], images=[samples[0].image], steps=2
    )
    alone = dualex.Explanation.load(proj.explanation(0, 0).save(tmp_path / "alone.safetensors"))
    stored = load_explanation(explained, rows[0])
    assert alone.weights == "random"  # what the random-weights banner reads
    assert stored._metadata() == alone._metadata()
    assert torch.equal(stored.matrix, alone.matrix)
    # the shard itself is an explanation file: read whole, or one pair by key
    shard = explained / rows[0]["file"]
    many = dualex.Explanation.load_many(shard)
    assert list(many) == [r["key"] for r in rows if r["file"] == rows[0]["file"]]
    assert many[rows[0]["key"]]._metadata() == alone._metadata()
    with pytest.raises(dualex.errors.FileFormatError, match="pass key="):
        dualex.Explanation.load(shard)


def test_report_picks_pairs_by_the_requested_order(explained):
    rows = read_index(explained)
    worst = pick(rows, 2, "worst-completeness")
    assert [r["completeness"] for r in worst] == sorted(
        (r["completeness"] for r in rows), reverse=True
    )[:2]
    lowest = pick(rows, 3, "lowest-score")
    assert [r["score"] for r in lowest] == sorted(r["score"] for r in rows)[:3]
    res = CliRunner().invoke(
        app, ["report", str(explained), "--limit", "2", "--sort", "lowest-score"]
    )
    assert res.exit_code == 0, res.output
    html = (explained / "report.html").read_text()
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [p["name"] for p in data["pairs"]] == [pair_name(r, "lowest-score") for r in lowest[:2]]
    assert [p["completeness"]["score"] for p in data["pairs"]] == [r["score"] for r in lowest[:2]]


def test_bad_forms_are_refused_with_one_line(explained, tmp_path, monkeypatch, capsys):
    from dualex.cli import main

    cases = [
        (["explain"], "Missing argument 'IMAGE'"),
        (["explain", "--data", DATA, "--out", str(tmp_path / "x.html")], "pass --out DIR"),
        (["report", str(explained), "--sort", "bogus"], "unknown --sort 'bogus'"),
        (["report", str(tmp_path)], "has no index.parquet"),
    ]
    for args, message in cases:
        monkeypatch.setattr("sys.argv", ["dualex", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)


def test_a_ray_run_with_fewer_shards_than_workers_says_so(monkeypatch, tmp_path):
    """Each Ray worker takes whole shards: with 2 shards, 8 workers would leave 6 idle. The run
    says so (and starts only the workers that have a shard)."""
    from dualex.errors import DualexWarning
    from dualex.scale import Job, ray_backend, run_job

    started = {}

    def fake_run_ray(job, out, payloads, record, *, address, workers, threads, task):
        started["workers"], started["shards"] = workers, [s for s, _ in payloads]
        started["task"] = task.name  # the driver sends its task: workers need no registry

    monkeypatch.setattr(ray_backend, "run_ray", fake_run_ray)
    job = Job("random-clip", "synthetic:seed=4,n=4", "explain", ("dualex",), {"shard_size": 2})
    with pytest.warns(DualexWarning, match=r"2 shards to run for 8 workers: only 2 workers start"):
        run_job(job, tmp_path / "run", backend="ray", workers=8, progress=False)
    assert started == {"workers": 2, "shards": [0, 1], "task": "explain"}
