"""The split session leaves the model exactly as it was: mode, requires_grad, modules, hooks and
global switches, also after an exception; two threads on one model give the sequential result;
the logit scale is read when explaining."""

from __future__ import annotations

import math
import threading

import pytest
import torch

import dualex
from tests.conftest import random_image, tiny_clip

CAPTIONS = ["a red circle", "two blue stars above a square", "a green square", "a red star"]


def _state(m: torch.nn.Module) -> dict:
    return {
        "modes": [(n, x.training) for n, x in m.named_modules()],
        "grads": [(n, p.requires_grad) for n, p in m.named_parameters()],
        "modules": [(n, id(x)) for n, x in m.named_modules()],
        "hooks": [
            (n, dict(x._forward_hooks), dict(x._forward_pre_hooks)) for n, x in m.named_modules()
        ],
        "params": {n: p.detach().clone() for n, p in m.named_parameters()},
    }


def _switches() -> tuple:
    b = torch.backends
    return (
        b.mha.get_fastpath_enabled(),
        b.cuda.flash_sdp_enabled(),
        b.cuda.mem_efficient_sdp_enabled(),
        b.cuda.math_sdp_enabled(),
    )


def _assert_unchanged(before: dict, after: dict) -> None:
    for key in ("modes", "grads", "modules", "hooks"):
        assert before[key] == after[key], f"{key} changed"
    for n, p in before["params"].items():
        assert torch.equal(p, after["params"][n]), f"parameter {n} changed"


@pytest.fixture
def model():
    """A tiny float64 CLIP whose attention has dropout 0.3 (active only in train mode)."""
    model = tiny_clip(seed=5)
    for module in model.module.modules():
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.3
    return model


def test_train_mode_and_requires_grad_survive_explain(model, image):
    m = model.module
    m.train()
    m.vision_model.encoder.layers[0].requires_grad_(False)  # a mixed, user-chosen pattern
    before, switches = _state(m), _switches()
    ex = dualex.explain(model, "a red circle", image, layers=1, steps=2)
    _assert_unchanged(before, _state(m))
    assert m.training and _switches() == switches
    m.eval()
    ex_eval = dualex.explain(model, "a red circle", image, layers=1, steps=2)
    assert not m.training, "eval stays eval"
    assert torch.equal(ex.matrix, ex_eval.matrix), "explained without dropout either way"
    m.train()
    with torch.no_grad():
        ids = model.tower_a.prepare("a red circle").data["input_ids"]
        noisy = [m.get_text_features(input_ids=ids) for _ in range(2)]
    noisy = [getattr(x, "pooler_output", x) for x in noisy]
    assert not torch.equal(*noisy), "the fixture's dropout is live in train mode"


def test_nothing_changes_when_explain_raises_midway(model, image):
    m = model.module
    m.train()
    before, switches = _state(m), _switches()
    with pytest.raises(dualex.DualexError, match="reference hidden state has shape"):
        # the text side has been projected, the image reference fails inside the session
        dualex.explain(
            model, "a red circle", image, layers=1, steps=2, reference=(None, torch.zeros(3, 3))
        )
    _assert_unchanged(before, _state(m))
    with pytest.raises(dualex.DualexError, match="projection mode"):
        dualex.explain(model, "a red circle", image, layers=1, steps=2, mode="sideways")
    _assert_unchanged(before, _state(m))
    assert m.training and _switches() == switches


def test_logit_scale_is_read_at_explain_time(model, image):
    m = model.module
    first = dualex.explain(model, "a red circle", image, layers=1, steps=2, scale=True)
    with torch.no_grad():
        m.logit_scale += 0.5
    second = dualex.explain(model, "a red circle", image, layers=1, steps=2, scale=True)
    assert second.score / first.score == pytest.approx(math.exp(0.5), rel=1e-12)
    assert second.completeness.scaled and second.completeness.logit_scale == pytest.approx(
        float(m.logit_scale.detach().exp())
    )
    assert not dualex.explain(model, "a red circle", image, layers=1, steps=2).completeness.scaled


def test_scaled_flag_survives_save_and_load(model, image, tmp_path):
    ex = dualex.explain(model, "a red circle", image, layers=1, steps=2, scale=True)
    back = dualex.Explanation.load(ex.save(tmp_path / "ex.safetensors"))
    assert back.completeness == ex.completeness and back.completeness.scaled


def test_two_threads_on_one_model_equal_the_sequential_result(model):
    images = [random_image(seed=s) for s in range(4)]
    work = list(zip(CAPTIONS, images, strict=True))
    sequential = [dualex.explain(model, t, im, layers=1, steps=3).matrix for t, im in work]
    results: dict[int, list] = {0: [], 1: []}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                for t, im in work[k::2]:
                    results[k].append(dualex.explain(model, t, im, layers=1, steps=3).matrix)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    before, switches = _state(model.module), _switches()
    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k in (0, 1):
        expected = sequential[k::2] * 2
        assert len(results[k]) == len(expected)
        for got, want in zip(results[k], expected, strict=True):
            assert torch.equal(got, want), "bitwise equal to the sequential run (float64)"
    _assert_unchanged(before, _state(model.module))
    assert _switches() == switches


def test_gates_are_only_in_place_during_a_session(model):
    m = model.module
    layers = m.vision_model.encoder.layers
    originals = list(layers)
    with model.session():
        assert all(type(b).__name__ == "Gate" for b in layers)
        assert not m.training
    assert list(layers) == originals and all(type(b).__name__ != "Gate" for b in layers)


def test_shared_switch_turns_on_once_and_restores_once_across_threads():
    from dualex.towers.session import SharedSwitch

    calls = []
    sw = SharedSwitch(lambda: calls.append("on") or "saved", lambda s: calls.append(("off", s)))
    inside, release = threading.Barrier(3), threading.Event()

    def worker():
        with sw():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert sw.active and calls == ["on"]
    release.set()
    for t in threads:
        t.join()
    assert not sw.active and calls == ["on", ("off", "saved")]
    with pytest.raises(RuntimeError), sw():
        raise RuntimeError("boom")
    assert not sw.active and calls[-1] == ("off", "saved")  # restored after a raise too


def test_builtin_loads_without_a_weights_bar_and_keeps_the_users_setting(capfd):
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # a user who wants transformers' bars
    try:
        dualex.load("builtin")
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled()  # the user's setting, back
    finally:
        if not before:
            hf_logging.disable_progress_bar()
