"""GroundingCallback in transformers.Trainer: per-class pointing in the Trainer's own TensorBoard
event files, and the trained weights equal those of the same run without the callback."""

from __future__ import annotations

import pytest
import torch

from dualex.data.synthetic import generate
from dualex.train import GroundingCallback, GroundingMonitor
from tests.conftest import tiny_clip

pytest.importorskip("accelerate")  # transformers.Trainer needs it
pytest.importorskip("tensorboard")


def _train(out, with_callback):
    from transformers import Trainer, TrainingArguments

    enc = tiny_clip(dtype=torch.float32)  # the same random weights each time (seed 0)
    model, tok, proc = enc.module, enc.tower_a.tokenizer, enc.tower_b.processor
    n = model.config.text_config.max_position_embeddings
    data = []
    for s in generate(8, seed=1):
        t = tok(s.caption, padding="max_length", max_length=n, truncation=True,
                return_tensors="pt")  # fmt: skip
        px = proc(images=[s.image], return_tensors="pt")["pixel_values"][0]
        data.append({"input_ids": t["input_ids"][0], "attention_mask": t["attention_mask"][0],
                     "pixel_values": px})  # fmt: skip

    def collate(items):
        return {**{k: torch.stack([i[k] for i in items]) for k in items[0]}, "return_loss": True}

    args = TrainingArguments(
        output_dir=str(out), max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, report_to=["tensorboard"], save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
    monitor = None
    if with_callback:
        monitor = GroundingMonitor(generate(3, seed=4), every=2, mentions=3, nodes=2,
                                   tokenizer=tok, image_processor=proc)  # fmt: skip
        trainer.add_callback(GroundingCallback(monitor, trainer))
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, monitor


@pytest.mark.slow
def test_trainer_callback_logs_per_class_pointing_and_changes_nothing(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain, _ = _train(tmp_path / "plain", False)
    watched, monitor = _train(tmp_path / "watched", True)
    assert plain.keys() == watched.keys()
    assert all(torch.equal(plain[k], watched[k]) for k in plain)

    assert sorted({r["step"] for r in monitor.timeline}) == [0, 2, 4]
    classes = {r["cls"]: r["value"] for r in monitor.timeline
               if r["step"] == 4 and r["group"] == "class" and r["metric"] == "pointing"}  # fmt: skip
    assert classes
    events = list((tmp_path / "watched").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0].parent)).Reload()
    scalars = set(acc.Tags()["scalars"])
    assert any(t.startswith("train/loss") or t == "train/loss" for t in scalars)  # the Trainer's
    for cls, value in classes.items():
        tag = next(t for t in scalars if t.endswith(f"dualex/pointing/class/{cls}"))
        got = acc.Scalars(tag)
        assert [e.step for e in got] == [0, 2, 4]
        assert got[-1].value == pytest.approx(value, abs=1e-6)
