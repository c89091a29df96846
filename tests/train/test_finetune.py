"""dualex finetune end to end on a tiny random CLIP: outputs, resume, bad input, the monitor."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import dualex
from dualex.errors import InvalidLayerError, SettingError, UnknownModelError
from dualex.train import finetune, loop
from dualex.train.monitor import GLOBAL_METRICS
from tests.conftest import tiny_clip

TRAIN = "synthetic:seed=11,n=12"
EVAL = "synthetic:seed=12,n=6"
FAST = dict(batch=4, lr=1e-3, monitor_mentions=4, monitor_nodes=2, progress=False,
            log=lambda s: None)  # fmt: skip
TIMELINE_COLUMNS = {"step", "group", "cls", "metric", "value", "lo", "hi", "n", "seconds"}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_three_steps_write_every_output(tmp_path):
    enc = tiny_clip(dtype=torch.float32)
    before = _state(enc.module)
    enc.module.train()  # the caller's mode must survive too
    out = tmp_path / "run"
    res = finetune(enc, TRAIN, EVAL, out, steps=3, eval_every=1, hard_negatives=True,
                   ckpt_every=2, **FAST)  # fmt: skip
    # the caller's model is untouched (weights and mode)
    assert enc.module.training
    after = _state(enc.module)
    assert all(torch.equal(before[k], after[k]) for k in before)

    table = pq.read_table(out / "timeline.parquet")
    assert set(table.column_names) == TIMELINE_COLUMNS
    rows = table.to_pylist()
    assert sorted({r["step"] for r in rows}) == [0, 1, 2, 3]
    assert {r["group"] for r in rows} == {"global", "class", "word", "colour", "kind"}
    for step in range(4):
        got = {r["metric"] for r in rows if r["step"] == step and r["group"] == "global"}
        assert set(GLOBAL_METRICS) | {"pointing", "energy", "text_pointing", "text_energy",
                                      "below_matched", "prefers_positive"} <= got  # fmt: skip
    classes = {r["cls"] for r in rows if r["group"] == "class"}
    assert classes and classes <= set(dualex.data.synthetic.SHAPES)
    # each step's grounding and mismatch ran as dataset jobs on the runner, kept per step
    for step in range(4):
        for task in ("grounding", "mismatch"):
            job = json.loads((out / "monitor" / f"step-{step:06d}" / task / "job.json").read_text())
            assert job["job"]["task"] == task and len(job["shards"]) == job["n_shards"] > 0
    for r in rows:
        if r["group"] == "class":
            assert r["n"] >= 1 and (r["lo"] <= r["value"] <= r["hi"])
    # training changed the weights, and final/ is that model, loadable by the family's loader
    log = pq.read_table(out / "train_log.parquet").to_pylist()
    assert [r["step"] for r in log] == [1, 2, 3] and all(r["loss"] > 0 for r in log)
    final = dualex.load(f"hf:{out / 'final'}")
    trained = _state(final.module)
    assert any(not torch.equal(before[k], trained[k].to(before[k].dtype)) for k in before)
    ck = sorted((out / "checkpoints").glob("step-*"))
    assert [p.name for p in ck] == ["step-000003"]
    assert {p.name for p in ck[0].iterdir()} == {"model.safetensors", "optim.safetensors",
                                                  "state.json"}  # fmt: skip
    opt = load_file(str(ck[0] / "optim.safetensors"))
    assert "rng.torch" in opt and any(k.endswith(".exp_avg") for k in opt)
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pkl"))
    html = (out / "report.html").read_text()
    assert "Knowledge-gap report" in html and "ranked by pointing" in html
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "examples.html").is_file() and list((out / "examples").glob("end-*"))
    # the examples say which model they explain, meet dualex's default tolerance, and are
    # distinct captions; the report states the monitor's own measured completeness error
    for tag, step, weights in (("start", 0, "unknown"), ("end", 3, "finetuned")):
        exs = [dualex.Explanation.load(p) for p in sorted((out / "examples").glob(f"{tag}-*"))]
        assert exs
        assert {(e.model, e.weights) for e in exs} == {(f"finetuned:{out}@step-{step}", weights)}
        assert all(e.completeness.relative_error <= 1e-3 for e in exs)
        assert len({tuple(e.tokens) for e in exs}) == len(exs)
    worst = max(r["value"] for r in rows if r["metric"] == "completeness_max")
    assert worst > 0 and f"at most {worst:.2e}" in html
    summary = json.loads((out / "summary.json").read_text())
    assert 0 < summary["monitor_share"] < 1 and summary["seconds_per_step"] > 0
    assert res.summary["last"]["r1_t2i"] == summary["last"]["r1_t2i"]

    # the same command again: finished, nothing to do
    again = finetune(enc, TRAIN, EVAL, out, steps=3, eval_every=1, hard_negatives=True,
                     ckpt_every=2, **FAST)  # fmt: skip
    assert again.already_finished
    # another run in the same folder is refused, and nothing is changed
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(SettingError, match=r"different run.*steps"):
        finetune(enc, TRAIN, EVAL, out, steps=4, eval_every=1, hard_negatives=True,
                 ckpt_every=2, **FAST)  # fmt: skip
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp


class Killed(Exception):
    pass


@pytest.mark.slow
def test_kill_after_checkpoint_and_resume_equals_uninterrupted(tmp_path, monkeypatch):
    enc = tiny_clip(dtype=torch.float64)
    kw = dict(steps=4, eval_every=2, ckpt_every=2, l2sp=0.1, **FAST)
    whole = finetune(enc, TRAIN, EVAL, tmp_path / "whole", **kw)

    def kill(step):
        if step == 3:  # step 2 is checkpointed, step 3 is lost
            raise Killed

    monkeypatch.setattr(loop, "_after_step", kill)
    with pytest.raises(Killed):
        finetune(enc, TRAIN, EVAL, tmp_path / "cut", **kw)
    assert not (tmp_path / "cut" / "final").exists()
    monkeypatch.setattr(loop, "_after_step", lambda step: None)
    resumed = finetune(enc, TRAIN, EVAL, tmp_path / "cut", **kw)
    assert resumed.resumed_from == 2
    assert resumed.losses == whole.losses and len(whole.losses) == 4
    a = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def values(run):
        rows = pq.read_table(tmp_path / run / "timeline.parquet").to_pylist()
        return sorted((r["step"], r["group"], r["cls"], r["metric"], repr(r["value"]))
                      for r in rows)  # fmt: skip

    assert values("whole") == values("cut")


@pytest.mark.slow
def test_a_sittings_time_budget_stops_with_a_checkpoint_and_resuming_ends_identically(tmp_path):
    enc = tiny_clip(dtype=torch.float64)
    kw = dict(steps=4, eval_every=2, ckpt_every=3, l2sp=0.1, **FAST)
    whole = finetune(enc, TRAIN, EVAL, tmp_path / "whole", **kw)
    lines = []
    kw_log = {**kw, "log": lines.append}
    # a budget far below one step: each sitting does one step, saves it and stops
    first = finetune(enc, TRAIN, EVAL, tmp_path / "cut", max_minutes=1e-9, **kw_log)
    assert first.stopped_at == 1 and not (tmp_path / "cut" / "final").exists()
    assert lines[-1] == (
        "stopped at step 1 of 4: this sitting's 1e-09 minutes are spent; "
        "re-run the same command to resume"
    )
    assert (tmp_path / "cut" / "checkpoints" / "step-000001").is_dir()
    second = finetune(enc, TRAIN, EVAL, tmp_path / "cut", max_minutes=1e-9, **kw)
    assert (second.resumed_from, second.stopped_at) == (1, 2)
    last = finetune(enc, TRAIN, EVAL, tmp_path / "cut", **kw)  # no budget: runs to the end
    assert last.stopped_at is None and last.resumed_from == 2
    assert last.losses == whole.losses and len(whole.losses) == 4
    a = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for bad in (-1, "5", True, float("nan")):
        with pytest.raises(SettingError, match="--max-minutes must be"):
            finetune(enc, TRAIN, EVAL, tmp_path / "bad", max_minutes=bad, **kw)
    assert not (tmp_path / "bad").exists()


def test_automatic_eval_every_states_the_measured_share(tmp_path):
    """--eval-every chosen by the run: the line saying so gives the timings it used, the share
    they imply (at most 10 %) and the share measured so far; the last line the final share."""
    import re

    lines = []
    enc = tiny_clip(dtype=torch.float32)
    res = finetune(enc, TRAIN, EVAL, tmp_path / "run", steps=7, batch=4, lr=1e-3,
                   monitor_mentions=2, monitor_nodes=2, progress=False, log=lines.append)  # fmt: skip
    chosen = [line for line in lines if line.startswith("monitoring every")]
    assert len(chosen) == 1
    m = re.fullmatch(r"monitoring every (\d+) steps: a pass took ([\d.]+) s and a step ([\d.]+) "
                     r"s, so about ([\d.]+) % of the time \(measured so far: ([\d.]+) %\)",
                     chosen[0])  # fmt: skip
    assert m, chosen[0]
    k, a, b, p, so_far = int(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5])
    assert k == res.summary["eval_every"] and p <= 10.05 and 0 < so_far < 100
    # the stated share is the one of the stated timings (up to their printed digits)
    lo = 100 * max(a - 0.005, 0) / (a + 0.005 + k * (b + 0.0005))
    hi = 100 * (a + 0.005) / (max(a - 0.005, 0) + k * max(b - 0.0005, 0) + 1e-12)
    assert lo - 0.05 <= p <= hi + 0.05
    assert f"({100 * res.summary['monitor_share']:.1f} %, measured)" in lines[-1]


@pytest.mark.parametrize(
    ("args", "error", "needle"),
    [
        (dict(steps=0), SettingError, "--steps must be >= 1"),
        (dict(train="synthetic:seed=1,n=0"), SettingError, "n=0 .*positive number of images"),
        (dict(train="imagenet:/x"), SettingError, "cannot read --data"),
        (
            dict(train="synthetic:seed=1,n=4,colour=red"),
            SettingError,
            r"unknown option\(s\) colour",
        ),
        (dict(model="nope:x"), UnknownModelError, "unknown model spec"),
        (dict(relabel="star"), SettingError, "--relabel"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, args, error, needle):
    kw = dict(model="random-clip:0", train=TRAIN, eval=EVAL, steps=2, **FAST)
    kw.update(args)
    out = tmp_path / "run"
    with pytest.raises(error, match=needle):
        finetune(kw.pop("model"), kw.pop("train"), kw.pop("eval"), out, **kw)
    assert not out.exists()


def test_cli_bad_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from dualex import cli

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["dualex", "finetune", "--model", "random-clip:0",
                                      "--train", TRAIN, "--eval", EVAL, "--out", str(out),
                                      "--steps", "0"])  # fmt: skip
    with pytest.raises(SystemExit) as done:
        cli.main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "--steps must be >= 1" in err
    assert not out.exists()


def test_monitor_ranks_a_planted_gap_worst():
    """The built-in model grounds every shape; move the star mentions' boxes onto another
    object of the image, and the monitor must rank star worst (energy in box near 0)."""
    from dualex.data.synthetic import generate
    from dualex.train.families import trainable_from
    from dualex.train.monitor import Monitor

    samples = []
    for s in generate(40, seed=901, negative_kinds=()):
        stars = [m for m in s.mentions if m.label == "star"]
        others = [m for m in s.mentions if m.label != "star"]
        if stars and others:
            moved = [replace(m, boxes=others[0].boxes) if m.label == "star" else m
                     for m in s.mentions]  # fmt: skip
            samples.append(replace(s, mentions=moved))
    assert len(samples) >= 4
    tr = trainable_from(dualex.load("builtin"))
    rows = Monitor(samples, mentions=100, nodes=4).run(tr, 0)

    def per_class(metric):
        return {r["cls"]: r["value"] for r in rows
                if r["group"] == "class" and r["metric"] == metric}  # fmt: skip

    energy, point = per_class("energy"), per_class("pointing")
    assert min(energy, key=energy.get) == "star"
    assert energy["star"] < min(v for c, v in energy.items() if c != "star") - 0.2
    assert point["star"] == min(point.values()) == 0.0


def test_cli_help_lists_examples(monkeypatch, capsys):
    from dualex import cli

    monkeypatch.setattr(sys, "argv", ["dualex", "finetune", "--help"])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr().out
    assert code == 0 and "Examples" in out and "--hard-negatives" in out


@pytest.mark.slow
def test_the_monitor_explains_at_the_split_it_is_given(tmp_path):
    from dualex.explanation import Explanation

    enc = tiny_clip(dtype=torch.float32)
    kw = dict(steps=1, eval_every=1, **FAST)
    default = finetune(enc, TRAIN, EVAL, tmp_path / "default", **kw)
    early = finetune(enc, TRAIN, EVAL, tmp_path / "early", monitor_layers=(0, 1), **kw)
    run = json.loads((tmp_path / "early" / "run.json").read_text())
    assert run["config"]["monitor_layers"] == [0, 1]
    job = json.loads((tmp_path / "early" / "monitor" / "step-000000" / "grounding" / "job.json")
                     .read_text())  # fmt: skip
    assert job["job"]["settings"]["layers"] == [0, 1]
    # the grounding measured at layer 0/1 is not the default split's
    assert early.summary["first"]["pointing"] != default.summary["first"]["pointing"] or (
        early.summary["first"]["energy"] != default.summary["first"]["energy"]
    )
    for path in (tmp_path / "early" / "examples").glob("*.safetensors"):
        assert Explanation.load(path).layers == (0, 1)
    # the same settings resume (run.json holds a list, the call passed a tuple)
    again = finetune(enc, TRAIN, EVAL, tmp_path / "early", monitor_layers=(0, 1), **kw)
    assert again.already_finished
    for bad in ((0, 1, 2), "1", 1.5):
        with pytest.raises(SettingError, match="--monitor-layers"):
            finetune(enc, TRAIN, EVAL, tmp_path / "bad", monitor_layers=bad, **kw)
    with pytest.raises(InvalidLayerError, match="layer 99 is out of range"):  # not in the towers
        finetune(enc, TRAIN, EVAL, tmp_path / "bad", monitor_layers=99, **kw)
    assert not (tmp_path / "bad").exists()


def test_a_run_written_before_a_setting_existed_still_resumes(tmp_path):
    enc = tiny_clip(dtype=torch.float32)
    kw = dict(steps=1, eval_every=1, **FAST)
    finetune(enc, TRAIN, EVAL, tmp_path / "old", **kw)
    run = tmp_path / "old" / "run.json"
    held = json.loads(run.read_text())
    del held["config"]["monitor_layers"]  # as an older dualex wrote it
    run.write_text(json.dumps(held))
    assert finetune(enc, TRAIN, EVAL, tmp_path / "old", **kw).already_finished
