"""Fine-tuning through each family's own forward: SigLIP (HF) and open_clip, with gradient
checkpointing; the monitor leaves the model's modes and flags as they were."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import dualex
from dualex.train import finetune
from dualex.train.families import trainable_from
from dualex.train.monitor import Monitor
from tests.conftest import tiny_clip, tiny_siglip

TRAIN = "synthetic:seed=11,n=8"
EVAL = "synthetic:seed=12,n=4"
FAST = dict(steps=1, batch=4, lr=1e-3, monitor_mentions=2, monitor_nodes=2, progress=False,
            log=lambda s: None, grad_checkpointing=True)  # fmt: skip


def _changed(before: dict, after: dict) -> bool:
    return any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)


def test_siglip_finetunes_and_reloads(tmp_path):
    enc = tiny_siglip(dtype=torch.float32)
    before = {k: v.clone() for k, v in enc.module.state_dict().items()}
    res = finetune(enc, TRAIN, EVAL, tmp_path / "run", **FAST)
    again = dualex.load(f"hf:{res.final}")
    assert type(again.module).__name__ == "SiglipModel"
    assert _changed(before, again.module.state_dict())
    assert all(torch.equal(before[k], v) for k, v in enc.module.state_dict().items())


def test_openclip_finetunes_and_reloads(tmp_path):
    pytest.importorskip("open_clip")
    from tests.towers.test_openclip import VIT, _load

    enc = _load("openclip:ViT-B-32", **VIT)
    before = {k: v.clone() for k, v in enc.module.state_dict().items()}
    res = finetune(enc, TRAIN, EVAL, tmp_path / "run", **FAST)
    weights = load_file(str(res.final / "open_clip_model.safetensors"))
    assert _changed(before, weights)
    again = dualex.load(f"openclip:ViT-B-32/{res.final / 'open_clip_model.safetensors'}", **VIT)
    assert all(torch.equal(weights[k], v) for k, v in again.module.state_dict().items())


def test_monitor_leaves_modes_flags_and_rng_as_they_were():
    from dualex.data.synthetic import generate

    tr = trainable_from(tiny_clip(dtype=torch.float32))
    m = tr.model
    m.train()
    m.vision_model.encoder.layers[0].eval()  # a mixed state must survive exactly
    m.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    modes = [x.training for x in m.modules()]
    flags = [p.requires_grad for p in m.parameters()]
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    rows = Monitor(generate(3, seed=4), mentions=3, nodes=2).run(tr, 0)
    assert any(r["group"] == "class" for r in rows)
    assert [x.training for x in m.modules()] == modes
    assert [p.requires_grad for p in m.parameters()] == flags
    assert torch.equal(torch.get_rng_state(), rng)
