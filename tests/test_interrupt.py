"""Ctrl-C on a real ``dualex`` process: exit 130, one line, nothing half-written, resumable.

Each test starts ``python -m dualex.cli ...`` in its own process group, waits until the command
is working (a file it writes appears, or it has spent CPU time), sends SIGINT to the whole group
as a terminal's Ctrl-C does, and reads what the process left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from tests.scale.helpers import committed

SRC = Path(__file__).resolve().parents[1] / "src"
RESUME = "dualex: interrupted; re-run the same command to resume"


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("DUALEX_MAX_PIXELS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dualex.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interrupt_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> tuple[int, str, str]:
    """SIGINT the process group once ``ready()`` holds; returns (exit code, stdout, stderr)."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(
                f"finished before it could be interrupted: {proc.returncode}\n{err.decode()}"
            )
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("never became ready")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def last_line(err: str) -> str:
    """The last line of stderr (a progress bar on a pipe writes ``\\r``-separated updates)."""
    return err.replace("\r", "\n").strip().splitlines()[-1]


def assert_clean(err: str) -> None:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "Aborted" not in err


def assert_nothing_half_written(folder: Path) -> None:
    """No temporary file is left, and every file dualex wrote reads back whole."""
    for path in folder.rglob("*"):
        assert ".tmp" not in path.name and not path.name.startswith("."), path
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118
                    f.get_tensor(key)
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    from PIL import Image, ImageDraw

    path = tmp_path_factory.mktemp("img") / "photo.png"
    im = Image.new("RGB", (640, 480), (30, 120, 40))
    ImageDraw.Draw(im).ellipse((200, 140, 420, 360), fill=(220, 30, 30))
    im.save(path)
    return path


def test_interrupted_single_pair_exits_130_with_one_line(tmp_path, photo):
    out = tmp_path / "out"
    out.mkdir()
    # the most quadrature nodes at the first layer (the whole tower is integrated): about 130 CPU
    # seconds of work here, so the interrupt after 4 CPU seconds lands while it is working even on
    # a machine many times faster (the 1024-node default layer took under 4 s, and a fast CI
    # machine finished it before the interrupt)
    proc = start(
        ["explain", str(photo), "a red circle", "--steps", "1024", "--rule", "riemann",
         "--layers", "0", "--out", str(out / "report.html")],
        tmp_path,
    )  # fmt: skip
    code, stdout, err = interrupt_when(proc, lambda: cpu_seconds(proc.pid) > 4.0)
    assert code == 130, err
    assert err.strip() == "dualex: interrupted"  # one line: a single pair has nothing to resume
    assert stdout == ""
    assert list(out.iterdir()) == []  # the report was never started, so nothing is left


ENTRY = "import sys; sys.argv[0] = 'dualex'; from dualex.entry import main; main()"
# extension modules that Python's own start-up does not load and the command line's imports do:
# once one is mapped, the process is past start-up and inside dualex's own loading
LOADING_MARKS = ("/_json.", "/_datetime.", "/_heapq.", "/_lzma.", "/_bz2.", "/_uuid.")


def loading(pid: int) -> bool:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
    return any(mark in maps for mark in LOADING_MARKS)


@pytest.mark.parametrize("how", ["python -m dualex.cli", "the dualex script's entry"])
@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.4])
def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path, photo, how, delay):
    # a long explanation (as in the single-pair test), so the process is still working at every
    # moment the interrupt may come
    args = ["explain", str(photo), "a red circle", "--steps", "1024", "--rule", "riemann",
            "--layers", "0", "--out", str(tmp_path / "report.html")]  # fmt: skip
    if how == "python -m dualex.cli":
        proc = start(args, tmp_path)
    else:  # what the installed `dualex` script runs (pyproject: dualex.entry:main)
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", ENTRY, *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
    # Ctrl-C during Python's own start-up is Python's business; from the first import of the
    # command line on (then a moment later, and later still, into the command), it is dualex's
    # (a Python whose extension modules are built in maps none of them: after 1 s it is surely
    # past start-up)
    t0 = time.monotonic()
    _, _, err = interrupt_when(
        proc,
        lambda: (loading(proc.pid) or time.monotonic() - t0 > 1) and (time.sleep(delay) or True),
    )
    assert proc.returncode == 130, err
    assert err.strip() == "dualex: interrupted", err  # one line, never a traceback
    assert not (tmp_path / "report.html").exists()


def test_the_script_entry_point_is_the_guarded_one():
    import tomllib

    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["dualex"] == "dualex.entry:main"


def test_loading_the_command_line_does_not_import_torch():
    code = (
        "import sys, dualex.cli; print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
def test_interrupted_dataset_run_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["explain", "--data", "synthetic:seed=3,n=32", "--steps", "2", "--out", str(out)]
    proc = start(args, tmp_path)
    # a shard is written to a hidden temporary file that also ends in .parquet, then renamed:
    # only a committed (visible) shard means the first shard is done
    code, stdout, err = interrupt_when(proc, lambda: bool(committed(out / "parts")))
    assert code == 130, err
    assert last_line(err) == RESUME
    assert_clean(err)
    assert_nothing_half_written(out)
    done = committed(out / "parts")
    assert 1 <= len(done) < 4  # interrupted mid-run (4 shards of 8: room on a fast machine)
    mtimes = {p: (out / "parts" / p).stat().st_mtime_ns for p in done}

    again = start(args, tmp_path)
    stdout, err = (s.decode() for s in again.communicate(timeout=300))
    assert again.returncode == 0, err
    assert f"4 shards ({4 - len(done)} run now" in stdout  # finished shards kept, not re-run
    assert {p: (out / "parts" / p).stat().st_mtime_ns for p in done} == mtimes
    assert len(pq.read_table(out / "index.parquet")) == 32


@pytest.mark.slow
def test_interrupted_finetune_exits_130_with_one_line(tmp_path):
    out = tmp_path / "ft"
    proc = start(
        ["finetune", "--model", "builtin", "--train", "synthetic:seed=7,n=64",
         "--eval", "synthetic:seed=8,n=8", "--out", str(out), "--steps", "100000",
         "--batch", "8", "--monitor-mentions", "4", "--monitor-nodes", "2", "--ckpt-every", "2"],
        tmp_path,
    )  # fmt: skip
    # training has started once the first checkpoint is committed
    code, _, err = interrupt_when(
        proc, lambda: any((out / "checkpoints").glob("step-*")), timeout=300
    )
    assert code == 130, err
    assert last_line(err) == RESUME
    assert_clean(err)
    assert_nothing_half_written(out)


@pytest.mark.parametrize(
    ("argv", "resumes"),
    [
        (["explain", "img.png", "a dog"], False),
        (["explain", "--data", "synthetic:n=4", "--out", "d"], True),
        (["explain", "--data=synthetic:n=4", "--out", "d"], True),
        (["finetune", "--model", "builtin"], True),
        (["eval", "grounding", "--out", "d"], True),
        (["eval", "grid"], True),
        (["eval", "shapley"], False),
        (["eval", "compare", "a", "b"], False),
        (["report", "d"], False),
        (["--debug", "demo"], False),
    ],
)
def test_which_commands_say_they_resume(argv, resumes):
    from dualex.cli import resumes as says

    assert says(argv) is resumes
