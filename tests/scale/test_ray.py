"""The Ray runner on a local cluster (ray.init(num_cpus=2), one per module): equal to the local
runner bit for bit, failing shards, killed workers, and a killed driver."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dualex.data.synthetic import export_coco, generate
from dualex.errors import JobError
from dualex.scale import Job, raise_on_failures, run_job
from tests.scale.helpers import (
    cli_env,
    committed,
    kill_after_parts,
    start_driver,
    torch_threads,
)

DATA = "synthetic:seed=901,n=3,captions_per_image=2"


@pytest.fixture(scope="module")
def cluster(short_dir):
    from dualex.scale.ray_backend import local_cluster

    with local_cluster(2, short_dir / "cluster") as ray:
        yield ray


def _local(job, out):
    with torch_threads(1):  # Ray's actors run one torch thread each
        return run_job(job, out, progress=False)


def test_ray_rows_equal_local_rows_bit_for_bit(cluster, short_dir):
    settings = {"steps": 2, "shard_size": 2, "text": "span", "layers": None, "limit": None}
    for task, methods in (("grounding", ("dualex", "random")), ("explain", ("dualex",))):
        job = Job("random-clip", DATA, task, methods, settings)
        local = _local(job, short_dir / f"{task}-local")
        ray = run_job(job, short_dir / f"{task}-ray", backend="ray", workers=2, progress=False)
        assert not local.failed and not ray.failed
        assert ray.n_shards == local.n_shards == 3
        assert pq.read_table(ray.rows).num_rows > 0
        assert ray.rows.read_bytes() == local.rows.read_bytes(), f"{task}: rows differ"
        if task == "explain":
            files = sorted((short_dir / "explain-local" / "explanations").iterdir())
            assert len(files) == 3
            for f in files:
                other = short_dir / "explain-ray" / "explanations" / f.name
                assert other.read_bytes() == f.read_bytes(), f"{f.name} differs"


def test_grid_and_faithfulness_on_ray_equal_local(cluster, short_dir):
    """The new evaluation tasks on the same runner: every column equal to the local run's
    except ``seconds`` (wall time, the one column no two runs share)."""
    settings = {"steps": 2, "shard_size": 2, "text": "both", "layers": None, "limit": None}
    for task, data, extra in (
        ("grid", "synthetic-grid:seed=3,n=4", {}),
        ("faithfulness", "synthetic:seed=4,n=2", {"coalitions": 16, "seed": 0}),
    ):
        job = Job("random-clip", data, task, ("dualex", "random"), {**settings, **extra})
        local = _local(job, short_dir / f"{task}-local")
        ray = run_job(job, short_dir / f"{task}-ray", backend="ray", workers=2, progress=False)
        assert not local.failed and not ray.failed

        def plain(path):
            return pq.read_table(path).drop(["seconds"]).to_pylist()

        rows = plain(local.rows)
        assert rows and not any(r["error"] for r in rows)
        other = plain(ray.rows)
        diff = [
            (r["method"], r["idx"], k, r[k], o[k])
            for r, o in zip(rows, other, strict=True)
            for k in r
            if r[k] != o[k] and not (r[k] != r[k] and o[k] != o[k])  # NaN equals NaN here
        ]
        assert len(other) == len(rows) and not diff, f"{task}: rows differ: {diff[:3]}"


def test_a_failing_shard_on_ray(cluster, short_dir):
    samples = generate(3, seed=7)
    paths = export_coco(samples, short_dir / "coco")
    sorted(paths["images"].iterdir())[1].write_bytes(b"broken")
    data = f"coco:{paths['images']},{paths['captions'].parent}"
    job = Job("random-clip", data, "grounding", ("random",), {"shard_size": 1})
    result = run_job(job, short_dir / "failing", backend="ray", workers=2, progress=False)
    assert list(result.failed) == [1] and "cannot read image" in result.failed[1]
    assert sorted({r["idx"] for r in pq.read_table(result.rows).to_pylist()}) == [0, 2]
    with pytest.raises(JobError, match="1 of 3 shards failed"):
        raise_on_failures(result)


def _worker_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in cmd and b"_ShardActor" in cmd:
                pids.append(int(d.name))
    return pids


def test_a_worker_killed_by_the_os_is_retried_without_duplicates(cluster, short_dir):
    settings = {"steps": 2, "shard_size": 1}
    job = Job("random-clip", "synthetic:seed=5,n=6", "grounding", ("dualex",), settings)
    out = short_dir / "killed-worker"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            if committed(out / "parts"):
                pids = _worker_pids()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
            time.sleep(0.02)

    t = threading.Thread(target=killer)
    t.start()
    result = run_job(job, out, backend="ray", workers=2, progress=False)
    t.join()
    assert killed, "no worker was killed"
    assert not result.failed and result.n_shards == 6
    local = _local(job, short_dir / "killed-worker-local")
    assert result.rows.read_bytes() == local.rows.read_bytes()


@pytest.mark.slow
def test_sigkill_the_ray_driver_then_rerun(short_dir, tmp_path):
    """A driver that starts its own Ray cluster, SIGKILLed after 2 shards, then re-run."""
    args = [
        "eval",
        "grounding",
        "--model",
        "random-clip",
        "--data",
        "synthetic:seed=12,n=12",
        "--methods",
        "dualex,random",
        "--steps",
        "2",
        "--batch",
        "1",
        "--backend",
        "ray",
        "--workers",
        "1",
    ]
    sandbox = short_dir / "sandbox"
    for d in ("home", "tmp"):
        (sandbox / d).mkdir(parents=True)
    env = cli_env(
        HOME=str(sandbox / "home"),
        TMPDIR=str(sandbox / "tmp"),
        MPLCONFIGDIR=str(tmp_path / "mplconfig"),
    )
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE", "RAY_ADDRESS"):  # not the test's own cluster
        env.pop(k, None)
    out = sandbox / "out"
    try:
        proc = start_driver([*args, "--out", str(out)], sandbox, env)
        at_kill = kill_after_parts(proc, out / "parts", 2, timeout=400)
        assert 2 <= at_kill < 12  # 12 one-sample shards: room to be killed mid-run
        rerun = start_driver([*args, "--out", str(out)], sandbox, env)
        assert rerun.wait(timeout=600) == 0, rerun.stdout.read()
    finally:
        _kill_leftovers(str(out))
    job = Job(
        "random-clip",
        "synthetic:seed=12,n=12",
        "grounding",
        ("dualex", "random"),
        {"text": "span", "layers": None, "steps": 2, "shard_size": 1, "limit": None},
    )
    ref = _local(job, tmp_path / "reference")
    assert (out / "rows.parquet").read_bytes() == ref.rows.read_bytes()
    assert sorted(p.name for p in sandbox.iterdir()) == ["home", "out", "tmp"]
    assert not any((sandbox / "home").iterdir()) and not any((sandbox / "tmp").iterdir())
    assert not (out / ".ray").exists(), "the Ray session files were removed"


def _kill_leftovers(marker: str) -> None:
    """Ray agents of the killed driver's cluster outlive it for about a minute: end them."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker.encode() in (d / "cmdline").read_bytes():
                    os.kill(int(d.name), signal.SIGKILL)
            except OSError:
                continue


def test_a_search_index_built_on_ray_equals_the_local_one(cluster, short_dir):
    """``dualex index --backend ray``: the same projection files, byte for byte, as locally."""
    from dualex.search import Index

    opts = {"data": DATA, "captions": True, "steps": 2, "shard_size": 2}
    with torch_threads(1):
        local = Index.build("random-clip", short_dir / "idx-local", **opts)
    ray = Index.build("random-clip", short_dir / "idx-ray", backend="ray", workers=2, **opts)
    files = sorted((short_dir / "idx-local" / "projections").iterdir())
    assert len(files) == 3 and local.meta["counts"] == ray.meta["counts"] == {"image": 3, "text": 6}
    for f in files:
        assert (short_dir / "idx-ray" / "projections" / f.name).read_bytes() == f.read_bytes()
    want = [(h.id, h.score) for h in local.search("a red circle", k=3)]
    assert [(h.id, h.score) for h in ray.search("a red circle", k=3)] == want
