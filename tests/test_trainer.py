"""The trainer core shared by ``dualex finetune`` and the built-in recipe (dualex.trainer)."""

from __future__ import annotations

import itertools
import math
import time

import pytest
import torch

from dualex import trainer
from dualex.trainer import (
    TimeBudget,
    adamw,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    warmup_cosine,
)


def test_schedule_warms_up_linearly_then_decays_to_its_floor():
    lrs = [warmup_cosine(s, 20, 0.2, peak=0.5, floor=0.1) for s in range(21)]
    assert lrs[:4] == pytest.approx([0.125, 0.25, 0.375, 0.5])  # 4 warm-up steps
    assert lrs[4] == pytest.approx(0.5)  # cosine starts at the peak
    assert lrs[12] == pytest.approx(0.5 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))
    assert lrs[20] == pytest.approx(0.05)  # t = 1: the floor, 10 % of the peak
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))


def test_min_warmup_keeps_one_warmup_step_that_a_tiny_run_would_round_away():
    # 0.05 * 10 steps rounds to no warm-up: the cosine then starts at step 0
    assert warmup_cosine(1, 10, 0.05) < 1.0
    assert warmup_cosine(1, 10, 0.05, min_warmup=1) == 1.0  # step 0 warmed up, 1 starts cosine


def test_adamw_decays_matrices_only():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = adamw(net.named_parameters(), 1e-3, 0.1, eps=1e-6)
    decay, rest = opt.param_groups
    assert [p.ndim for p in decay["params"]] == [2] and decay["weight_decay"] == 0.1
    assert all(p.ndim == 1 for p in rest["params"]) and rest["weight_decay"] == 0.0
    assert decay["eps"] == 1e-6 and decay["betas"] == (0.9, 0.98)


def test_time_budget():
    assert not TimeBudget(0.0, start=time.time() - 1e6).spent()  # no budget
    assert not TimeBudget(10.0).spent()
    assert TimeBudget(1e-6, start=time.time() - 1).spent()


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    opt.zero_grad()
    net(x).pow(2).sum().backward()
    opt.step()


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).double()


def test_checkpoint_resumes_to_the_uninterrupted_run_and_keeps_only_the_newest(tmp_path):
    one = _net()
    opt = adamw(one.named_parameters(), 0.1, 0.01)
    for s in range(3):
        _step(one, opt, s)

    two = _net()
    opt = adamw(two.named_parameters(), 0.1, 0.01)
    for s in range(2):
        _step(two, opt, s)
        save_checkpoint(tmp_path, s + 1, two, opt, {"note": s})
    assert [p.name for p in tmp_path.iterdir()] == ["step-000002"]
    ck = latest_checkpoint(tmp_path)
    assert ck == tmp_path / "step-000002" and not list(tmp_path.glob("**/*.pt"))

    three = _net()
    opt = adamw(three.named_parameters(), 0.1, 0.01)
    state = load_checkpoint(ck, three, opt)
    assert state["step"] == 2 and state["note"] == 1
    _step(three, opt, 2)
    for a, b in zip(one.parameters(), three.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_resumed_runs_next_checkpoint_records_its_own_step(tmp_path):
    # a resumed run carries the loaded state (with the step it resumed from) into later saves;
    # the checkpoint must say the step it holds, or a second resume replays steps on newer weights
    net = _net()
    opt = adamw(net.named_parameters(), 0.1, 0.01)
    save_checkpoint(tmp_path, 1, net, opt, {"note": 0})
    state = load_checkpoint(latest_checkpoint(tmp_path), net, opt)
    _step(net, opt, 1)
    save_checkpoint(tmp_path, 2, net, opt, state)
    assert load_checkpoint(latest_checkpoint(tmp_path), _net())["step"] == 2


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    net = _net()
    opt = adamw(net.named_parameters(), 0.1, 0.01)
    _step(net, opt, 0)
    save_checkpoint(tmp_path, 1, net, opt, {})

    def broken(obj, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_json", broken)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, net, opt, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000001"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    assert latest_checkpoint(tmp_path / "absent") is None
