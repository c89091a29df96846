"""GroundingMonitor in the user's own loop: plain PyTorch (rows equal dualex finetune's), the
model left exactly as it was, TensorBoard and callable sinks, open_clip."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

import dualex
from dualex.data.synthetic import generate
from dualex.train import GroundingMonitor, finetune
from dualex.train.grounding import choose_every, expected_share, scalar_name
from tests.conftest import tiny_clip

TRAIN = "synthetic:seed=11,n=12"
EVAL = "synthetic:seed=12,n=6"
STEPS, BATCH, LR = 3, 4, 1e-3
QUIET = dict(progress=False, log=lambda s: None)


def _plain_loop(out):
    """A user's 20-line loop: transformers CLIP + its processor, the built-in model's weights."""
    from transformers import CLIPModel, CLIPProcessor

    from dualex.models.builtin import BUILTIN_DIR
    from dualex.train.data import load_samples

    model = CLIPModel.from_pretrained(str(BUILTIN_DIR), attn_implementation="eager")
    proc = CLIPProcessor.from_pretrained(str(BUILTIN_DIR))
    samples = load_samples(TRAIN)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.98), eps=1e-6,
                            weight_decay=0.0)  # fmt: skip
    cosine = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / STEPS)))
    )
    monitor = GroundingMonitor(EVAL, every=2, mentions=2, nodes=2, processor=proc, out=out)
    monitor.step(model, 0)
    model.train()
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step * 101)  # the batches dualex finetune draws, seed 0
        batch = [samples[i] for i in torch.randperm(len(samples), generator=g)[:BATCH]]
        x = proc(text=[s.caption for s in batch], images=[s.image for s in batch],
                 padding=True, return_tensors="pt")  # fmt: skip
        img = F.normalize(model.get_image_features(pixel_values=x["pixel_values"]).pooler_output)
        txt = F.normalize(model.get_text_features(input_ids=x["input_ids"],
                                                  attention_mask=x["attention_mask"]).pooler_output)  # fmt: skip
        logits = model.logit_scale.exp() * img @ txt.T
        target = torch.arange(len(batch))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        cosine.step()
        monitor.step(model, step + 1, force=step + 1 == STEPS)
    monitor.close(model)
    return model


def _rows(path):
    rows = pq.read_table(path).to_pylist()
    return sorted((r["step"], r["group"], r["cls"], r["metric"], repr(r["value"]), repr(r["lo"]),
                   repr(r["hi"]), r["n"]) for r in rows)  # fmt: skip


@pytest.mark.slow
def test_plain_loop_rows_equal_dualex_finetune(tmp_path):
    model = _plain_loop(tmp_path / "plain")
    finetune("builtin", TRAIN, EVAL, tmp_path / "ft", steps=STEPS, batch=BATCH, lr=LR,
             warmup=0.0, weight_decay=0.0, eval_every=2, monitor_mentions=2, monitor_nodes=2,
             seed=0, **QUIET)  # fmt: skip
    plain, ft = (
        _rows(tmp_path / "plain" / "timeline.parquet"),
        _rows(tmp_path / "ft" / "timeline.parquet"),
    )
    assert {r[0] for r in plain} == {0, 2, 3}
    assert any(r[1] == "class" and r[3] == "pointing" for r in plain)
    assert plain == ft
    # the same training too: the loop's weights are dualex finetune's final weights
    final = dualex.load(f"hf:{tmp_path / 'ft' / 'final'}").module.state_dict()
    mine = model.state_dict()
    assert all(torch.equal(mine[k], final[k]) for k in mine)
    # and the same report: the ranked classes, the examples labelled with the monitored model
    html = (tmp_path / "plain" / "report.html").read_text()
    assert "ranked by pointing" in html and "completeness error" in html
    ex = dualex.Explanation.load(next((tmp_path / "plain" / "examples").glob("end-*")))
    assert ex.model.endswith("@step-3") and ex.weights == "finetuned"


def _state(model):
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        "ckpt": [getattr(m, "gradient_checkpointing", None) for m in model.modules()],
        "rng": torch.get_rng_state(),
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
    }


def _same(a, b):
    assert a["modes"] == b["modes"] and a["flags"] == b["flags"] and a["ckpt"] == b["ckpt"]
    assert torch.equal(a["rng"], b["rng"])
    for (g1, v1), (g2, v2) in zip(a["grads"], b["grads"], strict=True):
        assert g1 is g2 and (v1 is None or torch.equal(v1, v2))
    assert all(torch.equal(v, b["weights"][k]) for k, v in a["weights"].items())


def test_step_leaves_the_model_exactly_as_it_was():
    """Mixed modes, frozen parameters, accumulated gradients, checkpointing on, inside the
    user's autocast: all as before after a pass, and the rows are those measured outside
    autocast (the monitor measures in full precision)."""
    enc = tiny_clip(dtype=torch.float32)
    m = enc.module
    m.train()
    m.vision_model.encoder.layers[0].eval()
    m.text_model.embeddings.token_embedding.weight.requires_grad_(False)
    m.activation_checkpointing_enable({"use_reentrant": False})
    x = torch.randn(2, 3, 32, 32)
    m.get_image_features(pixel_values=x).pooler_output.sum().backward()  # grads to keep
    torch.manual_seed(5)
    samples = generate(3, seed=4)
    before = _state(m)
    monitor = GroundingMonitor(samples, every=1, mentions=3, nodes=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = monitor.step(enc, 0)
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    _same(before, _state(m))
    assert any(r["group"] == "class" for r in rows)
    plain = GroundingMonitor(samples, every=1, mentions=3, nodes=2).step(enc, 0)
    assert [(r["metric"], r["cls"], repr(r["value"])) for r in rows] == [
        (r["metric"], r["cls"], repr(r["value"])) for r in plain
    ]

    class Boom(Exception):
        pass

    def fail(tr, step):  # a pass that changes everything, then raises
        tr.model.eval()
        for p in tr.model.parameters():
            p.requires_grad_(True)
        torch.rand(3)
        raise Boom

    broken = GroundingMonitor(samples, every=1, mentions=3, nodes=2)
    broken.monitor.run = fail
    with pytest.raises(Boom):
        broken.step(enc, 1)
    _same(before, _state(m))


def test_tensorboard_and_callable_sinks(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    got = []
    enc = tiny_clip(dtype=torch.float32)
    monitor = GroundingMonitor(generate(4, seed=4), every=2, mentions=4, nodes=2, worst=2,
                               tensorboard=tmp_path / "tb", sinks=[got.append])  # fmt: skip
    for step in range(4):
        monitor.step(enc, step)
    monitor.close()
    assert [p.step for p in got] == [0, 2]
    pointing = {scalar_name(r): r["value"] for r in got[-1].rows
                if r["group"] == "class" and r["metric"] == "pointing"}  # fmt: skip
    assert pointing and all(k.startswith("dualex/pointing/class/") for k in pointing)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    tags = acc.Tags()
    for name, value in pointing.items():
        events = acc.Scalars(name)
        assert [e.step for e in events] == [0, 2]
        assert events[-1].value == pytest.approx(value, abs=1e-6)
    assert "dualex/monitor_share" in tags["scalars"] and "dualex/r1_t2i" in tags["scalars"]
    assert "dualex/ranking/text_summary" in tags["tensors"]
    worst = [c for c, _, _ in got[-1].examples]
    assert len(worst) == 2 and worst[0] == got[-1].ranking[0]["cls"]
    assert {f"dualex/heatmap/{c}" for c in worst} <= set(tags["images"])
    assert len({ex.raw_a for _, ex, _ in got[-1].examples}) == 2  # distinct captions


def test_default_every_keeps_the_share_at_ten_percent():
    for pass_s, step_s in ((12.0, 0.05), (3.0, 0.4), (0.5, 2.0)):
        k = choose_every(pass_s, step_s)
        assert expected_share(pass_s, step_s, k) <= 0.10
        assert k == 1 or expected_share(pass_s, step_s, k - 1) > 0.10


def test_bad_data_is_a_setting_error():
    from dualex.errors import SettingError

    with pytest.raises(SettingError, match="no samples"):
        GroundingMonitor([])
    with pytest.raises(SettingError, match="every must be >= 1"):
        GroundingMonitor(EVAL, every=0)


def test_openclip_plain_loop_changed_nothing():
    """An open_clip model trained in a plain loop: with the monitor, the same losses and the
    same weights as without it."""
    open_clip = pytest.importorskip("open_clip")

    def run(with_monitor):
        torch.manual_seed(0)
        model, _, preprocess = open_clip.create_model_and_transforms(
            "ViT-B-32", embed_dim=16,
            vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
            text_cfg=dict(context_length=12, vocab_size=49408, width=32, heads=2, layers=2),
        )  # fmt: skip
        tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=12)
        monitor = GroundingMonitor(generate(3, seed=4), every=1, mentions=3, nodes=2,
                                   processor=preprocess, tokenizer=tokenizer)  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        samples = generate(4, seed=1)
        model.train()
        losses = []
        for step in range(2):
            img = model.encode_image(torch.stack([preprocess(s.image) for s in samples]),
                                     normalize=True)  # fmt: skip
            txt = model.encode_text(tokenizer([s.caption for s in samples]), normalize=True)
            logits = model.logit_scale.exp() * img @ txt.T
            target = torch.arange(len(samples))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
            if with_monitor:
                assert monitor.step(model, step + 1)  # measured every step
                assert model.training
        return losses, {k: v.clone() for k, v in model.state_dict().items()}

    losses, weights = run(False)
    losses_m, weights_m = run(True)
    assert losses == losses_m
    assert weights.keys() == weights_m.keys()
    assert all(torch.equal(weights[k], weights_m[k]) for k in weights)


def test_an_example_caption_the_model_cannot_read_is_skipped_not_fatal(tmp_path):
    # dualex.explain refuses a caption of words the model does not know; the monitor's worst-class
    # examples skip such a caption (and say so) instead of ending the user's training run
    import dataclasses

    samples = generate(3, seed=4)
    m = samples[0].mentions[0]
    unreadable = "zorblat fnord"
    samples[0] = dataclasses.replace(
        samples[0],
        caption=unreadable,
        mentions=(dataclasses.replace(m, span=(0, len(unreadable))),),
        negatives=(),
    )
    logged, got = [], []
    monitor = GroundingMonitor(samples, every=1, mentions=8, nodes=2, worst=8,
                               tensorboard=tmp_path / "tb", sinks=[got.append],
                               log=logged.append)  # fmt: skip
    monitor.step(dualex.load("builtin"), 0)
    monitor.close()
    captions = {ex.raw_a for _, ex, _ in got[-1].examples}
    assert captions and unreadable not in captions
    assert any(unreadable in line and "not explained" in line for line in logged)
