"""Dataset runs: rows for every method and mention, resume after an interruption, the CLI."""

from __future__ import annotations

import math

import pytest

from dualex.data.synthetic import generate
from dualex.evaluate.report import read_rows, write_grounding_tables, write_mismatch_tables
from dualex.evaluate.runs import run_grounding, run_mismatch
from dualex.evaluate.tasks import EvalSettings

METHODS = ("dualex", "dualex-span", "gae", "random")


@pytest.fixture(scope="module")
def samples():
    return generate(3, seed=901)


def _rows(path):
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_rows_per_method_and_mention(clip64, samples, tmp_path):
    s = EvalSettings(methods=METHODS, steps=2, batch=2)
    rows = _rows(run_grounding(clip64, samples, tmp_path, s, progress=False))
    n_mentions = sum(len(x.mentions) for x in samples)
    assert len(rows) == n_mentions * len(METHODS)
    assert not any(r["error"] for r in rows)
    dx = [r for r in rows if r["method"] == "dualex"]
    assert all(r["steps"] == 2 and math.isfinite(r["completeness"]) for r in dx)
    assert {r["text_input"] for r in dx} == {"caption"}
    spans = [r for r in rows if r["method"] == "dualex-span"]
    assert all(r["steps"] == 2 and math.isfinite(r["pointing"]) for r in spans)
    assert all(r["pointing"] in (0.0, 1.0) for r in rows)
    assert all(math.isnan(r["text_pointing"]) for r in rows if r["method"] == "gae")
    tables = write_grounding_tables(tmp_path)
    assert [r["method"] for r in tables["summary"]] == sorted(METHODS)
    assert (tmp_path / "summary.png").stat().st_size > 0
    assert (tmp_path / "per_class.md").read_text().startswith("## Grounding by method and class")


def test_resume_after_interruption_gives_the_same_rows(clip64, samples, tmp_path, monkeypatch):
    import dualex.scale.worker as worker

    s = EvalSettings(methods=("dualex", "random"), steps=2, batch=1)
    full = _rows(run_grounding(clip64, samples, tmp_path / "full", s, progress=False))

    calls = {"n": 0}
    real = worker.run_shard

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the shard in progress is lost
        return real(*args, **kwargs)

    monkeypatch.setattr(worker, "run_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_grounding(clip64, samples, tmp_path / "resumed", s, progress=False)
    monkeypatch.setattr(worker, "run_shard", real)
    parts = sorted(p.name for p in (tmp_path / "resumed" / "parts").glob("*.parquet"))
    assert parts == ["shard-000000.parquet"], "the interrupted run kept its finished shard"
    resumed = _rows(run_grounding(clip64, samples, tmp_path / "resumed", s, progress=False))
    assert _plain(resumed) == _plain(full)


def _plain(rows):
    """NaN != NaN: compare rows with NaNs replaced by a marker."""
    nan = "NaN"
    return [
        {k: nan if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
        for r in rows
    ]


def test_shards_cover_the_run(clip64, samples, tmp_path):
    for i in range(2):
        s = EvalSettings(methods=("random",), shard=(i, 2))
        path = run_grounding(clip64, samples, tmp_path, s, progress=False)
    assert sorted(r["idx"] for r in _rows(path)) == sorted(
        i for i, x in enumerate(samples) for _ in x.mentions
    )


def test_mismatch_rows(clip64, samples, tmp_path):
    s = EvalSettings(methods=("dualex",), steps=2)
    rows = _rows(run_mismatch(clip64, samples, tmp_path, s, progress=False))
    assert len(rows) == sum(len(x.negatives) for x in samples)
    assert all(math.isfinite(r["mismatch"]) and math.isfinite(r["positive"]) for r in rows)
    assert {r["kind"] for r in rows} <= {"colour", "shape", "relation", "absent"}
    t = write_mismatch_tables(tmp_path)
    assert t["mismatch"][-1]["kind"] == "all" and len(read_rows(tmp_path)) == len(rows)


def test_cli_grounding_and_errors(tmp_path):
    from typer.testing import CliRunner

    from dualex.cli import app

    runner = CliRunner()
    out = tmp_path / "ev"
    args = [
        "eval",
        "grounding",
        "--model",
        "random-clip",
        "--data",
        "synthetic:seed=901,n=2",
        "--methods",
        "dualex,random",
        "--out",
        str(out),
        "--steps",
        "2",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "rows.parquet").is_file() and (out / "summary.md").is_file()
    assert "| dualex |" in res.output
    res = runner.invoke(
        app,
        [
            "eval",
            "grounding",
            "--model",
            "random-clip",
            "--data",
            "synthetic:n=1",
            "--methods",
            "bogus",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code != 0
    res = runner.invoke(app, ["eval", "compare", str(out), str(out), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "compare_per_class.md").is_file()


def test_a_different_job_in_the_same_folder_is_refused(clip64, samples, tmp_path):
    from dualex.errors import JobError

    run_grounding(clip64, samples, tmp_path, EvalSettings(methods=("random",)), progress=False)
    with pytest.raises(JobError, match=r"different job \(methods \['random'\] -> \['gae'\]\)"):
        run_grounding(clip64, samples, tmp_path, EvalSettings(methods=("gae",)), progress=False)
    with pytest.raises(JobError, match="different data"):
        run_grounding(
            clip64, samples[:2], tmp_path, EvalSettings(methods=("random",)), progress=False
        )
