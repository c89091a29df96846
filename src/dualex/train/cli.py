"""``dualex finetune``: contrastive fine-tuning with the grounding monitor.

Example:
    dualex finetune --model builtin --train synthetic:seed=7,n=2000,domain=cluttered \\
        --eval synthetic:seed=903,n=200,domain=cluttered --out runs/ft --steps 300 --lr 1e-4
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_DATA = (
    "coco:IMAGES,ANN_DIR | flickr30k:ROOT[,SPLIT] | hnc:JSON,IMAGES | synthetic:seed=S,n=N,domain=D"
)


EPILOG = (
    "Examples:\n\n"
    "  dualex finetune --model builtin --train synthetic:seed=1001,n=2000,domain=cluttered "
    "--eval synthetic:seed=903,n=200,domain=cluttered --out runs/ft --steps 300 --lr 1e-4 "
    "--hard-negatives\n\n"
    "  dualex finetune --model hf:./clip-vit-b32 --train coco:train2017,annotations "
    "--eval coco:val2017,annotations --out runs/coco --batch 64 --grad-checkpointing"
)
"""The examples shown under ``dualex finetune --help``."""


def finetune_command(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model spec (builtin, hf:PATH, openclip:ARCH/WEIGHTS, random-clip[:SEED]).",
        ),
    ],
    train: Annotated[str, typer.Option("--train", help=f"Training data: {_DATA}.")],
    eval: Annotated[str, typer.Option("--eval", help=f"Held-out data of the monitor: {_DATA}.")],
    out: Annotated[str, typer.Option("--out", help="Output folder (re-running it resumes).")],
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 100,
    batch: Annotated[int, typer.Option(help="Pairs per micro-batch.")] = 32,
    accum: Annotated[int, typer.Option(help="Micro-batches per step (grad accumulation).")] = 1,
    lr: Annotated[float, typer.Option(help="Peak learning rate (warm-up, then cosine).")] = 1e-5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.1,
    warmup: Annotated[float, typer.Option(help="Fraction of steps warming up.")] = 0.1,
    eval_every: Annotated[
        int | None,
        typer.Option(help="Monitor every K steps (default: chosen for at most 10 % of the time)."),
    ] = None,
    monitor_mentions: Annotated[
        int, typer.Option(help="Mentions the grounding monitor explains each time.")
    ] = 100,
    monitor_nodes: Annotated[
        int, typer.Option(help="Quadrature nodes of the monitor's explanations (0: adaptive).")
    ] = 4,
    monitor_layers: Annotated[
        str | None,
        typer.Option(
            help="Split layer(s) of the monitor's explanations: one for both towers or TEXT,IMAGE "
            "(default: the last block's input)."
        ),
    ] = None,
    hard_negatives: Annotated[
        bool, typer.Option("--hard-negatives", help="Hard negatives as extra image→text negatives.")
    ] = False,
    l2sp: Annotated[float, typer.Option(help="Weight of the L2 pull to the start weights.")] = 0.0,
    grad_checkpointing: Annotated[
        bool, typer.Option("--grad-checkpointing", help="Gradient checkpointing (less memory).")
    ] = False,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
    relabel: Annotated[
        str,
        typer.Option(
            help="Label noise for experiments: SRC=DST renames a class in the training captions."
        ),
    ] = "",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    concepts: Annotated[
        Path | None,
        typer.Option(
            help="Concept dictionary of the starting model (`dualex concepts train`): the "
            "report gains the concepts' knowledge gaps."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="cuda or cpu (default: cuda if any).")] = None,
    max_minutes: Annotated[
        float,
        typer.Option(
            help="Stop this sitting with a checkpoint after M minutes (0: no limit); "
            "re-running the same command resumes."
        ),
    ] = 0.0,
) -> None:
    """Fine-tune a dual encoder and watch its per-class grounding change (knowledge gaps)."""
    import torch

    from dualex.cli_args import parse_layers
    from dualex.train.loop import finetune

    if threads:
        torch.set_num_threads(threads)
    finetune(
        model, train, eval, out, device=device, max_minutes=max_minutes, steps=steps,
        batch=batch, accum=accum, lr=lr, weight_decay=weight_decay, warmup=warmup,
        eval_every=eval_every, monitor_mentions=monitor_mentions, monitor_nodes=monitor_nodes,
        monitor_layers=parse_layers(monitor_layers, "--monitor-layers"),
        hard_negatives=hard_negatives, l2sp=l2sp, grad_checkpointing=grad_checkpointing,
        ckpt_every=ckpt_every, relabel=relabel, seed=seed,
        concepts="" if concepts is None else str(concepts),
    )  # fmt: skip
