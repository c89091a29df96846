"""``builtin-clip``: the preset that trains it, and the shipped weights (MODEL.md)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dualex.models import builtin
from dualex.models.train_builtin import PRESETS, TrainConfig, train

MODEL_MD = Path(builtin.__file__).parent / "MODEL.md"

RET_MIN = 0.8
"""Floor of the shipped weights' R@1 among 50 on the guard set: they reach 0.92 (image→text) and
0.96 (text→image); stage 2's weights reached 0.82 / 0.88, random weights of the same
architecture 0.04 / 0.00 (chance 0.02)."""
POINT_MIN = 0.5
"""Floor of the shipped weights' pointing hit rate on the guard set's 32 mentions: they reach
0.625 (stage 2's weights: 0.31; random patch: 0.14), so four flipped mentions still pass."""

shipped = pytest.mark.skipif(
    not builtin.available("builtin-clip"),
    reason=f"builtin-clip weights absent ({builtin.BUILTIN_CLIP_DIR} has no model.safetensors)",
)


def _tiny(**kw):
    return TrainConfig(**{**PRESETS["clip"], "batch": 8, "n_train": 24, "width": 32,
                          "layers": 1, "heads": 2, "ckpt_every": 1, **kw})  # fmt: skip


# ------------------------------------------------------------------------------------------
# the recipe (no weights needed)


def test_preset_sets_the_recipe_and_explicit_flags_win(monkeypatch):
    from dualex.models import train_builtin as tb

    seen = {}
    monkeypatch.setattr(tb, "train", lambda out, tc, resume, max_minutes: seen.update(tc=tc))
    tb.main(["--out", "x", "--preset", "clip", "--steps", "7"])
    tc = seen["tc"]
    assert tc.steps == 7 and tc.layers == 4 and tc.dense_weight == 0.0 and tc.world == "clip"
    assert tc.collage_share == PRESETS["clip"]["collage_share"] > 0
    tb.main(["--out", "x"])
    assert seen["tc"] == TrainConfig()  # without the preset: builtin's recipe, unchanged


# MODEL.md's later stages: stage 2 is the clip recipe from stage 1's weights (3 500 steps, lr
# 5e-4, no curriculum, 2 % warm-up); stage 3 is stage 2's from its weights with every hard
# negative and twice the images (2 000 steps, lr 3e-4, two threads). Neither changes the loss
# (no patch term), the world, the architecture or the collages.
LATER_STAGES = {
    "clip-stage2": {"steps": 3500, "lr": 5e-4, "curriculum": 0.0, "warmup": 0.02,
                    "negatives": 2, "n_train": 40000, "threads": 1},
    "clip-stage3": {"steps": 2000, "lr": 3e-4, "curriculum": 0.0, "warmup": 0.02,
                    "negatives": 4, "n_train": 80000, "threads": 2},
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(LATER_STAGES))
def test_later_stage_presets_are_the_shipped_recipe_and_need_init(preset, monkeypatch, capsys):
    from dualex.models import train_builtin as tb

    seen = {}
    monkeypatch.setattr(tb, "train", lambda out, tc, resume, max_minutes: seen.update(tc=tc))
    with pytest.raises(SystemExit) as err:
        tb.main(["--out", "x", "--preset", preset])
    assert err.value.code == 2 and "--init" in capsys.readouterr().err and not seen
    tb.main(["--out", "x", "--preset", preset, "--init", "previous"])
    tc = seen["tc"]
    assert tc.init == "previous"
    assert {k: getattr(tc, k) for k in LATER_STAGES[preset]} == LATER_STAGES[preset]
    kept = ("dense_weight", "world", "layers", "width", "heads", "collage_share", "max_text", "batch")
    stage1 = TrainConfig(**{**TrainConfig().__dict__, **PRESETS["clip"]})
    assert all(getattr(tc, k) == getattr(stage1, k) for k in kept)


def test_collage_captions_and_negatives_describe_what_is_tiled():
    from dualex.data.synthetic import NEGATIVE_KINDS
    from dualex.models.train_builtin import (
        _pairs_of,
        build,
        render_collages,
        world_config,
    )

    tc = _tiny()
    _, tok, _ = build(tc)
    data = render_collages(40, tok, tc, world_config(world="clip"))
    assert (data["labels"] == -1).all(), "no patch supervision"
    img = data["images"].float()
    grey = torch.tensor([124.0, 116.0, 104.0]).view(3, 1, 1)
    quads = [img[:, :, r:r + 32, c:c + 32] for r in (0, 32) for c in (0, 32)]  # fmt: skip
    empty = torch.stack([(q == grey).all(1).flatten(1).all(1) for q in quads], 1)
    assert ((4 - empty.sum(1)) >= 2).all(), "2-4 scenes per collage"
    assert empty.any(), "some collages leave a quadrant grey, like the grid game"

    def text(ids):
        return tok.decode([int(i) for i in ids if i > 3])

    for k in range(40):
        cap = text(data["ids"][k])
        n_tokens = int((data["ids"][k] != 0).sum())
        assert n_tokens < tc.max_text, "never truncated"
        for j in range(len(NEGATIVE_KINDS)):
            if data["neg_ok"][k, j]:
                neg = text(data["neg_ids"][k, j])
                assert neg != cap
                if _pairs_of(cap):  # full captions: the new colour-shape pair is not tiled
                    assert _pairs_of(neg) - _pairs_of(cap)
                else:  # terse (shape words): the new shape is nowhere in the collage
                    assert set(neg.split()) - set(cap.split())


def test_budget_stop_and_resume_equal_one_uninterrupted_run(tmp_path):
    from safetensors.torch import load_file

    assert train(tmp_path / "one", _tiny(steps=3))
    assert not train(tmp_path / "two", _tiny(steps=3), max_minutes=1e-9)  # stops after step 1
    state = json.loads(
        (tmp_path / "two" / "checkpoints" / "step-000001" / "state.json").read_text()
    )
    assert state["step"] == 1 and not (tmp_path / "two" / "model.safetensors").exists()
    assert train(tmp_path / "two", _tiny(steps=3), resume=True)
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_of_the_single_folder_format_resumes_exactly(tmp_path):
    """Runs before dualex.trainer kept one ``checkpoint/`` folder (``state.safetensors`` with
    ``model.*`` weights and ``opt.<parameter name>.<key>`` Adam state, ``state.json``); such a
    run resumes to the same weights as an uninterrupted one, and its model exports."""
    from safetensors.torch import load_file, save_file

    from dualex.models.train_builtin import build, export_checkpoint

    assert train(tmp_path / "one", _tiny(steps=3))
    assert not train(tmp_path / "two", _tiny(steps=3), max_minutes=1e-9)  # stops after step 1
    new = tmp_path / "two" / "checkpoints" / "step-000001"
    state = json.loads((new / "state.json").read_text())
    model = build(_tiny(steps=3))[0]
    names = [n for n, p in model.named_parameters() if p.ndim >= 2]
    names += [n for n, p in model.named_parameters() if p.ndim < 2]  # the optimizer's order
    tensors = {f"model.{k}": v for k, v in load_file(str(new / "model.safetensors")).items()}
    for k, v in load_file(str(new / "optim.safetensors")).items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            tensors[f"opt.{names[int(idx)]}.{key}"] = v
    legacy = tmp_path / "two" / "checkpoint"
    legacy.mkdir()
    save_file(tensors, str(legacy / "state.safetensors"))
    old = {"step": 1, "config": state["config"], "log": state["log"]}
    (legacy / "state.json").write_text(json.dumps(old))
    shutil.rmtree(tmp_path / "two" / "checkpoints")

    export_checkpoint(tmp_path / "two", tmp_path / "exported")
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert all(torch.equal(exported[k[6:]], v) for k, v in tensors.items() if k[:6] == "model.")
    assert train(tmp_path / "two", _tiny(steps=3), resume=True)
    assert not legacy.exists(), "the new checkpoint supersedes the old folder"
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_world_and_builtin_name_are_refused():
    from dualex.errors import SettingError, UnknownModelError
    from dualex.models.train_builtin import world_config

    with pytest.raises(SettingError, match=r"unknown world 'big'.*default, clip"):
        world_config(world="big")
    with pytest.raises(UnknownModelError, match="builtin, builtin-clip"):
        builtin.model_dir("builtin-big")


# ------------------------------------------------------------------------------------------
# the shipped weights


@pytest.fixture(scope="module")
def parts():
    from dualex.models.evaluate_builtin import load_parts

    return load_parts("builtin-clip")


@shipped
def test_loads_offline_through_the_hf_code_path(monkeypatch):
    import dualex

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = dualex.load("builtin-clip")
    assert model.name == "builtin-clip"
    assert (builtin.BUILTIN_CLIP_DIR / "model.safetensors").stat().st_size <= 20 * 2**20
    assert type(model.module).__name__ == "CLIPModel" and model.weights == "builtin"


@shipped
def test_config_is_what_model_md_says(parts):
    cfg = parts.model.config
    tc = TrainConfig(**{**TrainConfig().__dict__, **PRESETS["clip"]})
    for tower in (cfg.text_config, cfg.vision_config):
        assert tower.num_hidden_layers == tc.layers >= 4
        assert tower.hidden_size == tc.width and tower.num_attention_heads == tc.heads
    assert cfg.vision_config.image_size == tc.image_size == 64
    assert cfg.vision_config.patch_size == tc.patch_size == 8
    assert cfg.text_config.max_position_embeddings == tc.max_text
    md = MODEL_MD.read_text()
    section = md[md.index("# builtin-clip") :]
    row = (
        f"text and vision towers {tc.layers} blocks each, width {tc.width}, {tc.heads} heads, "
        f"MLP {4 * tc.width}, projection {tc.projection_dim}"
    )
    assert row in section
    assert (
        f"{tc.image_size}×{tc.image_size} px input, {tc.patch_size}×{tc.patch_size} px" in section
    )
    n = sum(p.numel() for p in parts.model.parameters())
    assert f"{n / 1e6:.2f} M parameters" in section


@shipped
def test_models_command_lists_it_with_size_and_data(monkeypatch, capsys):
    from dualex import cli

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["dualex", "models"])
    code = 0
    try:
        cli.main()
    except SystemExit as done:
        code = done.code
    out = capsys.readouterr().out
    assert code in (0, None)
    line = next(ln for ln in out.splitlines() if "builtin-clip " in ln)  # its first table row
    assert "installed: " in line, out
    info = builtin.summary("builtin-clip")
    n = sum(p.numel() for p in builtin.load_builtin("builtin-clip").module.parameters())
    assert info.startswith(f"{n / 1e6:.2f} M parameters, "), info
    assert "collages" in info and "global contrastive loss only" in info


@shipped
def test_held_out_retrieval_and_pointing_guard_the_weights(parts):
    """A seeded held-out check (seed 907, never used in training or MODEL.md's evaluation)."""
    import dualex
    from dualex.data.synthetic import generate
    from dualex.models.evaluate_builtin import retrieval
    from dualex.models.train_builtin import world_config
    from dualex.pointing import box_mask, pointing_game

    data = generate(50, seed=907, domain="textured", config=world_config(world="clip"))
    r = retrieval(parts, data, group=50)
    assert r["i2t_r1"] >= RET_MIN and r["t2i_r1"] >= RET_MIN, r
    hits, rand = [], []
    for s in data[:12]:
        ex = dualex.explain(parts.dual, s.caption, s.image)
        for m in s.mentions:
            hits.append(bool(pointing_game(ex.image_map(tuple(m.span)), m.boxes, ex.b)))
            rand.append(box_mask(ex.b, m.boxes).mean())
    assert len(hits) == 32
    assert np.mean(hits) >= POINT_MIN and np.mean(hits) > 1.5 * np.mean(rand), (hits, rand)


@shipped
def test_evaluation_with_no_mentions_measures_retrieval_only(parts):
    """``--mentions 0 --mentions-ood 0`` (retrieval on another world) skips the pointing game
    instead of failing on an empty set."""
    from dualex.models.evaluate_builtin import evaluate, format_markdown

    res = evaluate(parts, 100, 0, 0, progress=False)
    assert res["pointing"] == {}
    assert set(res["retrieval"]) >= {"in-domain", "plain", "textured", "cluttered"}
    assert 0.0 <= res["retrieval"]["plain"]["i2t_r1"] <= 1.0
    assert "image→text R@1" in format_markdown(res)


@pytest.mark.parametrize("name", ["builtin", "builtin-clip"])
def test_model_md_tables_are_the_shipped_metrics(name):
    """MODEL.md's metrics tables are rendered from the ``metrics.json`` shipped beside the weights
    (each model's own section), so new weights cannot ship beside the old figures."""
    from dualex.models.evaluate_builtin import format_markdown

    folder = builtin.model_dir(name)
    if not (folder / "metrics.json").is_file():
        pytest.skip(f"{name} ships no metrics.json")
    md = MODEL_MD.read_text()
    cut = md.index("# builtin-clip (")
    section = md[cut:] if name == "builtin-clip" else md[:cut]
    rows = [r for r in format_markdown(json.loads((folder / "metrics.json").read_text()))
            .splitlines() if r.startswith("| ")]  # fmt: skip
    assert len(rows) >= 10
    missing = [r for r in rows if r not in section]
    assert not missing, f"MODEL.md's {name} section lacks rows of its metrics.json: {missing[:3]}"
