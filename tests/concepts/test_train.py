"""Training a concept dictionary on the built-in model: seeded, resumable after a kill
(bit-identical), stored as safetensors + JSON, refuses another model, labels from caption words."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dualex
from dualex import Concepts
from dualex.data.synthetic import generate
from dualex.errors import FileFormatError, ModelMismatchError, SettingError
from dualex.trainer import latest_checkpoint

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:seed=3,n=12"
ARGS = ["--concepts", "8", "--topk", "2", "--checkpoint-every", "20"]


def _cli(out: Path, steps: int) -> list[str]:
    return [
        sys.executable, "-m", "dualex.cli", "concepts", "train", "--model", "builtin",
        "--data", DATA, "--out", str(out), "--steps", str(steps), *ARGS,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _ckpt_step(folder: Path) -> int:
    last = latest_checkpoint(folder / "checkpoints")
    try:
        return int(json.loads((last / "state.json").read_text())["step"]) if last else -1
    except (OSError, ValueError):  # renamed away by a newer checkpoint while being read
        return -1


def test_training_resumes_bit_identically_after_a_kill(tmp_path):
    steps = 1000  # a wide window (steps 40 to 1000, seconds) to kill it in, even on a fast machine
    whole = subprocess.run(_cli(tmp_path / "whole", steps), env=_env(), capture_output=True)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]

    proc = subprocess.Popen(_cli(tmp_path / "cut", steps), env=_env(), stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while _ckpt_step(tmp_path / "cut") < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _ckpt_step(tmp_path / "cut")
    assert 40 <= killed_at < steps
    assert not (tmp_path / "cut" / "concepts.json").exists()

    again = subprocess.run(_cli(tmp_path / "cut", steps), env=_env(), capture_output=True)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    a = load_file(str(tmp_path / "whole" / "concepts.safetensors"))
    b = load_file(str(tmp_path / "cut" / "concepts.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    meta_a = json.loads((tmp_path / "whole" / "concepts.json").read_text())
    meta_b = json.loads((tmp_path / "cut" / "concepts.json").read_text())
    assert meta_a == meta_b
    assert not (tmp_path / "cut" / "columns").exists(), "the projection cache is removed"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("concepts") / "d"
    model = dualex.load("builtin")
    c = Concepts.train(model, generate(24, seed=5), concepts=12, topk=3, steps=150, out=out)
    return model, c, out


def test_seeded_and_saved_as_safetensors_and_json(small, tmp_path):
    model, c, out = small
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints", "concepts.json", "concepts.safetensors", "run.json",
    ]  # fmt: skip
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-000150"]
    loaded = Concepts.load(out)
    assert torch.equal(loaded.encoder, c.encoder) and loaded.names == c.names
    rng = torch.get_rng_state()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    again = Concepts.train(model, generate(24, seed=5), concepts=12, topk=3, steps=150, out=out)
    assert torch.equal(torch.get_rng_state(), before), "resuming left the caller's RNG alone"
    torch.set_rng_state(rng)
    assert torch.equal(again.encoder, c.encoder) and not (out / "columns").exists()
    meta = json.loads((out / "concepts.json").read_text())
    assert meta["model"]["name"] == "builtin" and len(meta["model"]["fingerprint"]) == 16
    data = generate(6, seed=5)
    runs = [Concepts.train(model, data, concepts=6, topk=2, steps=20, seed=s) for s in (0, 0, 1)]
    assert torch.equal(runs[0].encoder, runs[1].encoder)
    assert torch.equal(runs[0].decoders["b"], runs[1].decoders["b"])
    assert not torch.equal(runs[0].encoder, runs[2].encoder)


def test_labels_and_examples_come_from_the_data(small):
    _model, c, _ = small
    vocab = {w.lower() for s in generate(24, seed=5) for w in s.caption.replace(",", " ").split()}
    used = [n for n in c.names if n != "(unused)"]
    assert used, "some concept has a label"
    for name in used:
        assert set(name.split(" / ")) <= vocab, name
    ex = c.examples(3)
    assert len(ex) == c.size
    captions = {s.caption for s in generate(24, seed=5)}
    for e in ex:
        assert all(t in captions for t, _ in e.texts)
        assert all(a > 0 for a in e.crop_activations)
        assert [im.size for im in e.crops] == [(32, 32)] * len(e.crop_activations)
    assert any(e.crops for e in ex)


def test_split_of_the_builtin_model_is_exact(small):
    model, c, _ = small
    s = generate(1, seed=901)[0]
    ex = dualex.explain(model, s.caption, s.image)
    split = ex.concept_split(c)
    total = split.matrices.sum(0) + split.residual
    assert (total - ex.matrix.double()).abs().max() <= 1e-10
    assert 0 <= split.residual_share < 1


def test_another_model_is_refused(small, tmp_path):
    from tests.conftest import random_image, tiny_clip

    _model, c, out = small
    other = tiny_clip(seed=1, dtype=torch.float32)
    with pytest.raises(ModelMismatchError, match="builtin"):
        c.check(other)
    ex = dualex.explain(other, "a red circle", random_image(32, 32), steps=2)
    with pytest.raises(ModelMismatchError):
        ex.concept_split(c)
    # the CLI refuses with one line and exit code 2
    r = subprocess.run(
        [sys.executable, "-m", "dualex.cli", "concepts", "train", "--model", "random-clip",
         "--data", DATA, "--out", str(out), "--steps", "5"],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("dualex: error:") and "other settings" in r.stderr


def test_bad_folders_and_settings(tmp_path):
    with pytest.raises(FileFormatError, match="concepts train"):
        Concepts.load(tmp_path)
    with pytest.raises(SettingError, match="topk"):
        Concepts.train("builtin", generate(2, seed=0), concepts=4, topk=5)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "other.txt").write_text("keep me")
    with pytest.raises(SettingError, match="not empty"):
        Concepts.train("builtin", generate(2, seed=0), concepts=4, topk=1, out=tmp_path / "x")
    assert (tmp_path / "x" / "other.txt").read_text() == "keep me"


def test_text_file_data_for_text_text_models(tmp_path):
    from types import SimpleNamespace

    from dualex.concepts.dictionary import _pairs

    model = SimpleNamespace(tower_a=SimpleNamespace(modality="text"))
    f = tmp_path / "s.txt"
    f.write_text("a man plays a guitar\tsomeone plays music\n\ntwo dogs run\n", encoding="utf-8")
    pairs, source = _pairs(f"text:{f}", model, None)
    assert [(p.a, p.b) for p in pairs] == [
        ("a man plays a guitar", "someone plays music"),
        ("two dogs run", "two dogs run"),
    ]
    assert source == f"text:{f}"
    with pytest.raises(FileFormatError, match="text:FILE"):
        _pairs(f"text:{tmp_path / 'missing.txt'}", model, None)


def test_explain_with_concepts_writes_the_panel(small, tmp_path, monkeypatch, capsys):
    from tests.test_cli import run

    _model, _c, out = small
    s = generate(1, seed=902)[0]
    s.image.save(tmp_path / "scene.png")
    report = tmp_path / "report.html"
    code, _, err = run(
        monkeypatch, capsys, "explain", str(tmp_path / "scene.png"), s.caption,
        "--concepts", str(out), "--out", str(report), "--steps", "4",
    )  # fmt: skip
    assert code == 0, err
    html = report.read_text()
    assert 'id="concept-panel"' in html and 'id="dualex-concepts"' in html
    code, _, err = run(
        monkeypatch, capsys, "explain", str(tmp_path / "scene.png"), s.caption,
        "--concepts", str(out), "--out", str(tmp_path / "fig.png"),
    )  # fmt: skip
    assert code == 2 and "--out report.html" in err and not (tmp_path / "fig.png").exists()
