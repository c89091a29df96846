"""A family is one file: the planted family (tests/towers/planted_family.py), registered through
``dualex.towers.register_family`` and touching no other module, is explained, projected, listed,
evaluated and fine-tuned like dualex's own, and its fine-tuned copy reloads."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import dualex
from tests.conftest import random_image
from tests.test_cli import run
from tests.towers import planted_family

CAPTION = "a red circle left of a blue star"


@pytest.fixture(scope="module")
def planted() -> dualex.DualEncoder:
    return dualex.load("planted")


def test_load_and_wrap_carry_the_planted_family(planted):
    assert planted.family is planted_family.FAMILY and planted.weights == "random"
    wrapped = dualex.wrap(planted_family.PlantedDual())
    assert wrapped.family is planted_family.FAMILY and wrapped.tower_b.name == "planted-image"


def test_explain_and_project_agree(planted):
    image = random_image(seed=2)
    ex = dualex.explain(planted, CAPTION, image, layers=1, steps=8)
    assert ex.matrix.shape == (len(CAPTION.split()) + 1, 16 + 1), "CLS + words × CLS + patches"
    assert ex.completeness.relative_error <= 1e-2, ex.completeness
    pairs = dualex.project(planted, texts=[CAPTION, "a green square"], images=[image], layers=1,
                           steps=8)  # fmt: skip
    torch.testing.assert_close(pairs.explanation(0, 0).matrix, ex.matrix, rtol=1e-5, atol=1e-6)


def test_dualex_models_lists_it(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    code, out, _ = run(monkeypatch, capsys, "models")
    assert code == 0
    row = next(line for line in out.splitlines() if "planted[:FOLDER]" in line)
    assert "tests' planted dual encoder" in row and "available" in row


def test_eval_grounding_runs_dualex_and_ig(monkeypatch, capsys, tmp_path):
    out = tmp_path / "ev"
    code, stdout, err = run(monkeypatch, capsys, "eval", "grounding", "--model", "planted",
                            "--data", "synthetic:seed=901,n=2", "--methods", "dualex,ig",
                            "--steps", "4", "--out", str(out))  # fmt: skip
    assert code == 0, err
    methods = pq.read_table(out / "rows.parquet").column("method").to_pylist()
    assert set(methods) == {"dualex", "ig"} and len(methods) >= 2
    assert "| dualex |" in stdout and "| ig |" in stdout


def test_finetune_a_few_steps_and_reload(monkeypatch, capsys, tmp_path):
    out = tmp_path / "ft"
    code, _, err = run(monkeypatch, capsys, "finetune", "--model", "planted",
                       "--train", "synthetic:seed=1,n=4", "--eval", "synthetic:seed=2,n=2",
                       "--steps", "2", "--batch", "4", "--lr", "1e-2", "--monitor-mentions", "2",
                       "--monitor-nodes", "2", "--out", str(out))  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    saved = load_file(str(out / "final" / "model.safetensors"))
    start = planted_family.PlantedDual().state_dict()
    assert any(not torch.equal(start[k], saved[k]) for k in start), "training moved the weights"
    again = dualex.load(f"planted:{out / 'final'}")
    assert again.family is planted_family.FAMILY and again.weights == "pretrained"
    assert all(torch.equal(saved[k], v) for k, v in again.module.state_dict().items())
    ex = dualex.explain(again, CAPTION, random_image(seed=3), layers=1, steps=8)
    assert ex.completeness.relative_error <= 1e-2, ex.completeness
