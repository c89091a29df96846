"""The grounding monitor's share of training time at its default ``every``, on the built-in model.

    python -m benchmarks.monitor_share [--intervals 2] [--batch 32] [--tb runs/monitor-tb]
                                       [--plot docs/screens/monitor-tensorboard.png]

A user's plain PyTorch loop (transformers CLIP + processor: the built-in model's weights, batch
32, AdamW) fine-tunes on ``synthetic:seed=1001,n=2000,domain=cluttered`` with a
``GroundingMonitor`` at its defaults (100 mentions, 4 nodes, ``every`` chosen after the first
pass for at most 10 %) on ``synthetic:seed=903,n=200,domain=cluttered``, and runs until the
monitor has measured ``--intervals`` chosen intervals after step 0 (plus the last step). It
prints the timings the choice used, the chosen ``every``, and the measured share of the whole
run's wall time (step-0 and last-step passes included), and the monitor's measured completeness
error. With ``--tb`` the monitor writes TensorBoard events; with ``--plot`` the event data
(read back with tensorboard's EventAccumulator) are plotted to a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

TRAIN = "synthetic:seed=1001,n=2000,domain=cluttered"
EVAL = "synthetic:seed=903,n=200,domain=cluttered"


def run(intervals: int, batch: int, tb: str | None) -> dict:
    from transformers import CLIPModel, CLIPProcessor

    from dualex.models.builtin import BUILTIN_DIR
    from dualex.train import GroundingMonitor
    from dualex.train.data import load_samples

    model = CLIPModel.from_pretrained(str(BUILTIN_DIR), attn_implementation="eager")
    proc = CLIPProcessor.from_pretrained(str(BUILTIN_DIR))
    samples = load_samples(TRAIN)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    monitor = GroundingMonitor(EVAL, processor=proc, tensorboard=tb, log=print)
    start = time.perf_counter()
    monitor.step(model, 0)
    model.train()
    step = 0
    while monitor.every is None or step < intervals * monitor.every:
        g = torch.Generator().manual_seed(step)
        chosen = [samples[i] for i in torch.randperm(len(samples), generator=g)[:batch]]
        x = proc(text=[s.caption for s in chosen], images=[s.image for s in chosen],
                 padding=True, return_tensors="pt")  # fmt: skip
        img = F.normalize(model.get_image_features(pixel_values=x["pixel_values"]).pooler_output)
        txt = F.normalize(model.get_text_features(input_ids=x["input_ids"],
                                                  attention_mask=x["attention_mask"]).pooler_output)  # fmt: skip
        logits = model.logit_scale.exp() * img @ txt.T
        target = torch.arange(len(chosen))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        monitor.step(model, step, force=monitor.every is not None
                     and step == intervals * monitor.every)  # fmt: skip
    wall = time.perf_counter() - start
    monitor.close()
    passes = sorted({r["step"] for r in monitor.timeline})
    errors = [r["value"] for r in monitor.timeline if r["metric"] == "completeness_max"]
    return {
        "steps": step,
        "every": monitor.every,
        "passes": passes,
        "first_pass_seconds": monitor.first_pass_seconds,
        "pass_seconds": [r["seconds"] for r in monitor.timeline if r["metric"] == "loss"],
        "wall_seconds": wall,
        "monitor_seconds": monitor.seconds,
        "measured_share": monitor.seconds / wall,
        "completeness_max": max(errors) if errors else math.nan,
        "threads": torch.get_num_threads(),
    }


def plot(logdir: str, path: str) -> None:
    """Plot the per-class pointing and global scalars of the event files (TensorBoard's data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(logdir).Reload()
    tags = acc.Tags()["scalars"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (title, chosen) in zip(axes, (
        ("dualex/pointing/class/*", [t for t in tags if t.startswith("dualex/pointing/class/")]),
        ("dualex/r1_t2i, dualex/pointing", ["dualex/r1_t2i", "dualex/pointing"]),
        ("dualex/monitor_share", ["dualex/monitor_share"]),
    ), strict=True):  # fmt: skip
        for t in chosen:
            ev = acc.Scalars(t)
            ax.plot([e.step for e in ev], [e.value for e in ev], marker="o", ms=3,
                    label=t.rsplit("/", 1)[-1])  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("TensorBoard event data written by GroundingMonitor (built-in model, plain loop)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tb", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.intervals, args.batch, args.tb)
    print(json.dumps(result, indent=1))
    if args.plot and args.tb:
        plot(args.tb, args.plot)


if __name__ == "__main__":
    main()
