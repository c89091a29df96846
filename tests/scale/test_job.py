"""Dataset jobs on the local runner: manifest, shards by image, failures, kill and resume."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from dualex.data.coco import load_coco
from dualex.data.synthetic import export_coco, generate
from dualex.errors import InvalidInputError, JobError, SettingError
from dualex.scale import Job, raise_on_failures, run_job
from dualex.scale.plan import make_plan
from tests.scale.helpers import cli_env, kill_after_parts, start_driver, torch_threads

DATA = "synthetic:seed=901,n=4,captions_per_image=2"


def _job(**settings):
    base = {"steps": 2, "shard_size": 2}
    base.update(settings)
    return Job("random-clip", DATA, "grounding", ("random",), base)


def _rows(path):
    return pq.read_table(path).to_pylist()


def test_shards_hold_whole_images_and_project_each_image_once(clip64, monkeypatch, tmp_path):
    samples = generate(5, seed=3, captions_per_image=3)
    plan = make_plan(samples, shard_size=4)
    # 3 captions per image, at least 4 per shard: whole images, so 6, 6, 3
    assert [len(s) for s in plan.shards] == [6, 6, 3]
    for shard in plan.shards:
        ids = [r["image_id"] for r in shard]
        assert all(ids.count(i) == 3 for i in ids), "an image's captions were split"
    assert [r["idx"] for s in plan.shards for r in s] == list(range(15))

    import dualex
    from dualex.scale.tasks import get_task

    calls = []
    real = dualex.project

    def counting(model, texts=None, images=None, **kw):
        calls.append((len(texts), len(images)))
        return real(model, texts=texts, images=images, **kw)

    monkeypatch.setattr(dualex, "project", counting)
    job = Job("random-clip", "x", "explain", ("dualex",), {"steps": 2})
    rows = get_task("explain").rows(clip64, plan.samples(0), job, tmp_path, 0)
    assert calls == [(3, 1), (3, 1)], "one projection call per image, with all its captions"
    assert len(rows) == 6 and (tmp_path / "explanations" / "shard-000000.safetensors").is_file()


def test_loaders_index_without_decoding(tmp_path):
    samples = generate(3, seed=5, captions_per_image=2)
    paths = export_coco(samples, tmp_path)
    broken = sorted(paths["images"].iterdir())[1]
    broken.write_bytes(b"not an image")
    loaded = list(load_coco(paths["images"], paths["captions"], paths["instances"]))
    assert len(loaded) == 6, "indexing read every caption without decoding any image"
    assert not any(s.image_ref.loaded for s in loaded)
    assert loaded[0].image.tobytes() == samples[0].image.tobytes()
    assert loaded[0].image is loaded[1].image, "captions of one image share one decode"
    bad = [s for s in loaded if s.image_path == str(broken)]
    with pytest.raises(InvalidInputError, match="cannot read image"):
        bad[0].image  # noqa: B018


def test_a_different_job_at_an_existing_folder_is_refused(tmp_path):
    job = _job()
    run_job(job, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "job.json").read_text())
    with pytest.raises(JobError, match=r"holds a different job \(settings\.steps 2 -> 3\)"):
        run_job(_job(steps=3), tmp_path, progress=False)
    other = Job("random-clip:1", DATA, "grounding", ("random",), job.settings)
    with pytest.raises(JobError, match="model 'random-clip' -> 'random-clip:1'"):
        run_job(other, tmp_path, progress=False)
    assert json.loads((tmp_path / "job.json").read_text()) == manifest, "refusal wrote nothing"
    again = run_job(job, tmp_path, progress=False)
    assert again.ran == 0, "the same job resumes: nothing left to run"


def test_a_method_the_task_does_not_run_is_refused_before_anything_is_written(tmp_path):
    job = _job()
    for task, method in (("mismatch", "ig"), ("explain", "gae"), ("grounding", "nonsense")):
        bad = Job(job.model, DATA, task, (method,), job.settings)
        with pytest.raises(SettingError, match=rf"task '{task}' does not run method\(s\) {method}"):
            run_job(bad, tmp_path / task, progress=False)
        assert not (tmp_path / task).exists(), "a refused job writes nothing"


def test_a_committed_part_counts_even_if_the_manifest_missed_it(tmp_path):
    job = _job()
    first = run_job(job, tmp_path, progress=False)
    rows = _rows(first.rows)
    manifest = json.loads((tmp_path / "job.json").read_text())
    manifest["shards"] = {}  # killed after the parts were committed, before it was recorded
    (tmp_path / "job.json").write_text(json.dumps(manifest))
    seen = []
    again = run_job(job, tmp_path, progress=False, on_shard=seen.append)
    assert again.ran == 0 and seen == []
    assert _same(_rows(again.rows), rows)


def _same(a, b):
    def plain(rows):
        return [
            {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()}
            for r in rows
        ]

    return plain(a) == plain(b)


def test_a_failing_shard_is_recorded_and_the_others_finish(tmp_path):
    samples = generate(4, seed=7)
    paths = export_coco(samples, tmp_path / "coco")
    victim = sorted(paths["images"].iterdir())[2]
    good = victim.read_bytes()
    victim.write_bytes(b"broken")
    data = f"coco:{paths['images']},{paths['captions'].parent}"
    job = Job("random-clip", data, "grounding", ("random",), {"shard_size": 1})
    out = tmp_path / "run"
    result = run_job(job, out, progress=False)
    assert result.n_shards == 4 and list(result.failed) == [2]
    assert "cannot read image" in result.failed[2]
    assert sorted({r["idx"] for r in _rows(result.rows)}) == [0, 1, 3]
    manifest = json.loads((out / "job.json").read_text())
    assert "cannot read image" in manifest["shards"]["2"]["error"]
    with pytest.raises(JobError, match=r"^1 of 4 shards failed \(shard 2: InvalidInputError"):
        raise_on_failures(result)

    victim.write_bytes(good)  # fix the cause; the same command finishes the job
    again = run_job(job, out, progress=False)
    assert again.ran == 1 and not again.failed
    assert sorted({r["idx"] for r in _rows(again.rows)}) == [0, 1, 2, 3]


def test_the_cli_exits_non_zero_with_one_summary_line(tmp_path):
    import subprocess
    import sys

    samples = generate(2, seed=7)
    paths = export_coco(samples, tmp_path / "coco")
    sorted(paths["images"].iterdir())[0].write_bytes(b"broken")
    args = [
        "eval",
        "grounding",
        "--model",
        "random-clip",
        "--data",
        f"coco:{paths['images']},{paths['captions'].parent}",
        "--methods",
        "random",
        "--batch",
        "1",
        "--out",
        str(tmp_path / "run"),
    ]
    res = subprocess.run(
        [sys.executable, "-m", "dualex.cli", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("dualex: error:")]
    assert len(errors) == 1 and "1 of 2 shards failed" in errors[0], res.stderr


def test_sigkill_the_driver_then_rerun_gives_identical_rows(tmp_path):
    data = "synthetic:seed=11,n=8"
    args = [
        "eval",
        "grounding",
        "--model",
        "random-clip",
        "--data",
        data,
        "--methods",
        "dualex,random",
        "--steps",
        "2",
        "--batch",
        "1",
        "--threads",
        "1",
    ]
    sandbox = tmp_path / "sandbox"
    (sandbox / "home").mkdir(parents=True)
    (sandbox / "tmp").mkdir()
    # matplotlib (the summary plot) keeps its font cache in the user's config folder, which
    # exists on any machine that ran it once: give it one outside the sandbox
    env = cli_env(
        HOME=str(sandbox / "home"),
        TMPDIR=str(sandbox / "tmp"),
        MPLCONFIGDIR=str(tmp_path / "mplconfig"),
    )
    out = sandbox / "out"
    proc = start_driver([*args, "--out", str(out)], sandbox, env)
    at_kill = kill_after_parts(proc, out / "parts", 3)
    assert 3 <= at_kill < 8, "killed mid-run"
    assert not (out / "rows.parquet").exists()
    rerun = start_driver([*args, "--out", str(out)], sandbox, env)
    assert rerun.wait(timeout=600) == 0, rerun.stdout.read()

    job = Job("random-clip", data, "grounding", ("dualex", "random"))
    job = Job(
        job.model,
        job.data,
        job.task,
        job.methods,
        {"text": "span", "layers": None, "steps": 2, "shard_size": 1, "limit": None},
    )
    with torch_threads(1):
        ref = run_job(job, tmp_path / "reference", progress=False)
    assert (out / "rows.parquet").read_bytes() == ref.rows.read_bytes(), "rows differ"
    rows = _rows(out / "rows.parquet")
    keys = [(r["method"], r["sample_id"], r["mention"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicated rows"
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        f"shard-{i:06d}.parquet" for i in range(8)
    ]
    # nothing outside the output folder: the sandbox's HOME, TMPDIR and cwd stay empty
    assert sorted(p.name for p in sandbox.iterdir()) == ["home", "out", "tmp"]
    assert not any((sandbox / "home").iterdir()) and not any((sandbox / "tmp").iterdir())
