"""Contrastive fine-tuning of a dual encoder, with the grounding monitor.

The loss is symmetric InfoNCE with the model's own learnt temperature, computed from the
family's own forward (``get_text_features`` / ``get_image_features`` or ``encode_text`` /
``encode_image``); with ``hard_negatives`` every caption's hard negatives are extra columns of
the image→text softmax. Optionally an L2 pull toward the starting weights (L2-SP). AdamW with
linear warm-up then cosine decay, gradient accumulation, bf16 autocast on GPU, gradient
checkpointing where the family has it. Batches are drawn from a generator seeded by
``(seed, step)`` and the RNG state is checkpointed, so a run is deterministic on CPU and a
resumed run continues exactly where the interrupted one stopped.

Output folder::

    run.json           what this run is (re-running with other settings is refused)
    timeline.parquet   one row per monitored step × group × class × metric
    train_log.parquet  one row per training step (loss, lr, seconds)
    checkpoints/       step-NNNNNN/{model,optim}.safetensors + state.json (no pickle)
    examples/          start-/end- explanations of the worst classes (safetensors)
    final/             the fine-tuned model, loadable by its family's loader
    report.html        the knowledge-gap report (examples.html: the interactive viewer)
    timeline.png       the monitored metrics over steps
    summary.json       written last: the run is finished
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dualex.errors import SettingError
from dualex.io import atomic_folder
from dualex.train.grounding import GroundingMonitor, global_values
from dualex.train.monitor import Monitor, contrastive_loss, kept, read_rows, write_rows
from dualex.trainer import (
    TimeBudget,
    adamw,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_json,
    save_tensors,
    warmup_cosine,
)

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "measure"]

FORMAT = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run (all but ``threads``/``progress`` define the run).

    Attributes:
        model: Model spec (``builtin``, ``hf:PATH``, ``openclip:ARCH/WEIGHTS``...) or display
            name of a passed model.
        train: Training data spec (``synthetic:seed=…,n=…,domain=…``, ``coco:…``, ...).
        eval: Held-out data spec of the monitor.
        steps: Optimizer steps (>= 1).
        batch: Pairs per micro-batch.
        accum: Micro-batches per optimizer step (gradient accumulation).
        lr: Peak learning rate.
        weight_decay: AdamW weight decay (matrices only).
        warmup: Fraction of the steps with a linear warm-up.
        eval_every: Monitor every K steps (``None``: chosen after the first steps so that
            monitoring takes at most about 10 % of the wall time; the log states the measured
            share).
        monitor_mentions: Mentions the grounding monitor explains each time.
        monitor_nodes: Quadrature nodes of the monitor's explanations (``0``: adaptive).
        hard_negatives: Add each caption's hard negatives to the image→text softmax.
        l2sp: Weight of the L2 pull toward the starting weights (0: off).
        grad_checkpointing: Recompute activations in the backward pass (less memory).
        ckpt_every: Checkpoint every N steps (and at the end).
        relabel: Label noise for experiments: ``"src=dst"`` rewrites the training captions.
        seed: Seed of the batches and the run.
        concepts: A concept dictionary folder of the starting model (``""``: none): the monitor
            also measures each concept's cross-modal agreement and the report gains a
            concept section (:class:`dualex.train.GroundingMonitor`'s ``concepts``).
        monitor_layers: Split layer(s) of the monitor's explanations: one int for both towers
            or ``[text, image]`` (``None``: the last block's input).
    """

    model: str
    train: str
    eval: str
    steps: int = 100
    batch: int = 32
    accum: int = 1
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: float = 0.1
    eval_every: int | None = None
    monitor_mentions: int = 100
    monitor_nodes: int = 4
    hard_negatives: bool = False
    l2sp: float = 0.0
    grad_checkpointing: bool = False
    ckpt_every: int = 50
    relabel: str = ""
    seed: int = 0
    concepts: str = ""
    monitor_layers: int | list[int] | None = None

    def __post_init__(self) -> None:
        layers = self.monitor_layers
        if isinstance(layers, tuple | list):
            layers = list(layers)  # as run.json holds it
        ok = (
            layers is None
            or _is_int(layers)
            or (isinstance(layers, list) and len(layers) == 2 and all(map(_is_int, layers)))
        )
        if not ok:
            raise SettingError(
                f"--monitor-layers: pass one layer or a text,image pair of layers, got {layers!r}"
            )
        object.__setattr__(self, "monitor_layers", layers)  # frozen: normalised once, here
        for name in ("steps", "batch", "accum", "ckpt_every"):
            if getattr(self, name) < 1:
                raise SettingError(f"--{name.replace('_', '-')} must be >= 1, got "
                                   f"{getattr(self, name)}")  # fmt: skip
        if self.eval_every is not None and self.eval_every < 1:
            raise SettingError(f"--eval-every must be >= 1, got {self.eval_every}")
        if self.monitor_mentions < 0 or self.monitor_nodes < 0:
            raise SettingError("--monitor-mentions and --monitor-nodes must be >= 0")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and self.l2sp >= 0):
            raise SettingError("need --lr > 0, 0 <= warmup < 1 and --l2sp >= 0")


@dataclass
class FinetuneResult:
    """What a run produced.

    Attributes:
        out: The output folder.
        final: The fine-tuned model's folder.
        summary: The run's summary (figures of the first and last monitored step, timing).
        resumed_from: The step the run resumed from (0: a fresh start).
        already_finished: The folder held this finished run; nothing was done.
        losses: The training loss of every step so far.
        stopped_at: When the sitting's time budget (``max_minutes``) ended it: the step of the
            checkpoint it saved (re-running resumes there; ``final`` is not written yet and
            ``summary`` holds only ``step`` and ``steps``). ``None``: the run finished.
    """

    out: Path
    final: Path
    summary: dict[str, Any]
    resumed_from: int = 0
    already_finished: bool = False
    losses: list[float] = field(default_factory=list)
    stopped_at: int | None = None


def _lr_factor(step: int, cfg: FinetuneConfig) -> float:
    """The learning-rate factor of a step: linear warm-up, then cosine decay to zero."""
    return warmup_cosine(step, cfg.steps, cfg.warmup)


def _batch_indices(step: int, micro: int, cfg: FinetuneConfig, n: int) -> torch.Tensor:
    """The examples of one micro-batch, fixed by ``(seed, step, micro)``."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + micro)
    if n >= cfg.batch:
        return torch.randperm(n, generator=g)[: cfg.batch]
    return torch.randint(n, (cfg.batch,), generator=g)


# ------------------------------------------------------------------------------------------
# run identity and checkpoints


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _identity(cfg: FinetuneConfig) -> dict[str, Any]:
    return {"format": FORMAT, "config": asdict(cfg)}


def _with_defaults(held: dict[str, Any]) -> dict[str, Any]:
    """A stored run's identity with the settings added since it was written at their defaults
    (so a run started by an older dualex still resumes)."""
    from dataclasses import MISSING, fields

    config = dict(held.get("config", {}))
    for f in fields(FinetuneConfig):
        if f.name not in config and f.default is not MISSING:
            config[f.name] = f.default
    return {**held, "config": config}


def _check_out(out: Path, ident: dict[str, Any]) -> bool:
    """True if ``out`` holds this run; False if it is new/empty. Raises on another run."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise SettingError(f"--out {str(out)!r} is a file; pass a folder")
    run = out / "run.json"
    if not run.is_file():
        if any(out.iterdir()):
            raise SettingError(
                f"--out {str(out)!r} is not empty and holds no fine-tuning run; pass a new or "
                "empty folder"
            )
        return False
    held = _with_defaults(json.loads(run.read_text()))
    if held != ident:
        a, b = held.get("config", {}), ident["config"]
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise SettingError(
            f"--out {str(out)!r} holds a different run (differs in {', '.join(diff) or 'format'}); "
            "pass a new folder or the same settings to resume"
        )
    return True


def _after_step(step: int) -> None:
    """Called after each optimizer step (after its checkpoint); tests patch it to interrupt."""


# ------------------------------------------------------------------------------------------
# the run


def finetune(
    model: Any,
    train: str,
    eval: str,
    out: str | os.PathLike,
    *,
    progress: bool = True,
    log: Any = print,
    device: str | None = None,
    max_minutes: float = 0.0,
    **settings: Any,
) -> FinetuneResult:
    """Fine-tune a dual encoder contrastively and monitor its grounding on held-out data.

    Args:
        model: A model spec string (``"builtin"``, ``"hf:PATH"``, ``"openclip:ARCH/WEIGHTS"``)
            or a :class:`dualex.DualEncoder` (its module is copied; the caller's model is not
            changed).
        train: Training data spec (see :mod:`dualex.data.sources`).
        eval: Held-out data spec for the monitor.
        out: Output folder; re-running with the same settings resumes, and a finished run
            returns at once.
        progress: Show a progress bar.
        log: Called with one line of text per event (default ``print``).
        device: ``"cuda"``/``"cpu"`` (default: CUDA when available).
        max_minutes: Wall-clock budget of this sitting (``0``: none). Once it is spent, the
            run saves a checkpoint after the current step and returns (``stopped_at``);
            re-running with the same settings resumes there and ends as an uninterrupted
            run would. Not part of the run's settings.
        **settings: Fields of :class:`FinetuneConfig` (``steps``, ``batch``, ``lr``,
            ``eval_every``, ``hard_negatives``, ``l2sp``, ...).

    Returns:
        A :class:`FinetuneResult`.

    Raises:
        SettingError: on bad settings, unreadable or empty data, or an ``out`` holding a
            different run (nothing is written then).
        UnknownModelError: on an unknown model spec.
    """
    budget = TimeBudget(_minutes(max_minutes))
    spec = model if isinstance(model, str) else getattr(model, "name", "model")
    try:
        cfg = FinetuneConfig(model=spec, train=train, eval=eval, **settings)
    except TypeError as err:
        raise SettingError(f"unknown fine-tuning setting: {err}") from err
    out = Path(out)
    ident = _identity(cfg)
    exists = _check_out(out, ident)
    if exists and (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        log(f"{out} holds this run, finished at step {cfg.steps}; nothing to do")
        return FinetuneResult(out, out / "final", summary, cfg.steps, True)

    # everything that can fail on bad input happens before the first write
    from dualex.train.data import load_samples, parse_relabel, relabel, tensorise
    from dualex.train.families import trainable_from

    mapping = parse_relabel(cfg.relabel)
    if isinstance(model, str):
        from dualex.model import load

        tr = trainable_from(load(model), spec, copy_module=False)
    else:
        tr = trainable_from(model, spec)
    train_samples = relabel(load_samples(cfg.train, "--train"), mapping)
    eval_samples = load_samples(cfg.eval, "--eval")
    if cfg.monitor_layers is not None:  # a layer the towers do not have: refused before writing
        from dualex.explainer import check_layers

        check_layers(tr.wrap(), cfg.monitor_layers)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = tensorise(train_samples, tr)
    if cfg.hard_negatives and not data.has_negatives:
        log("note: --hard-negatives given but the training data has no hard negatives")

    out.mkdir(parents=True, exist_ok=True)
    if not exists:
        save_json(ident, out / "run.json")
    return _run(cfg, tr, data, eval_samples, out, dev, progress, log, budget)


def _layers(value: int | list[int] | None) -> int | tuple[int, int] | None:
    return (value[0], value[1]) if isinstance(value, list) else value


def _minutes(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise SettingError(
            f"--max-minutes must be a number of minutes >= 0 (0: no time limit), got {value!r}"
        )
    return float(value)


def _run(cfg: FinetuneConfig, tr: Any, data: Any, eval_samples: list, out: Path,
         dev: torch.device, progress: bool, log: Any, budget: TimeBudget) -> FinetuneResult:  # fmt: skip
    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    model = tr.model.to(dev)
    if cfg.grad_checkpointing and not tr.enable_gradient_checkpointing():
        log("note: this model family has no gradient checkpointing; training without it")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    opt = adamw(params, cfg.lr, cfg.weight_decay, eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    init = {n: p.detach().clone() for n, p in params} if cfg.l2sp > 0 else {}
    if init:
        init_path = out / "checkpoints" / "init.safetensors"
        if init_path.is_file():
            from safetensors.torch import load_file

            init = {k: v.to(dev) for k, v in load_file(str(init_path)).items()}
        else:
            save_tensors({k: v.cpu() for k, v in init.items()}, init_path)

    monitor = GroundingMonitor(eval_samples, every=cfg.eval_every,
                               mentions=cfg.monitor_mentions, nodes=cfg.monitor_nodes or None,
                               out=out, name=f"finetuned:{out}", batch=max(cfg.batch, 64),
                               seed=cfg.seed, log=log, concepts=cfg.concepts or None,
                               layers=_layers(cfg.monitor_layers))  # fmt: skip
    start, state = 0, {"eval_every": cfg.eval_every, "train_s": 0.0, "monitor_s": 0.0,
                       "picks": []}  # fmt: skip
    train_log: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    ck = latest_checkpoint(out / "checkpoints")
    if ck is not None:
        state = load_checkpoint(ck, model, opt, sched)
        start = int(state["step"])
        train_log = [r for r in read_rows(out / "train_log.parquet") if r["step"] <= start]
        timeline = [r for r in read_rows(out / "timeline.parquet") if r["step"] <= start]
        log(f"resuming {out} from step {start}")
        monitor.timeline = timeline
        monitor.picks = [(str(c), int(i)) for c, i in state["picks"]]
        monitor.every = state["eval_every"]
        first = [r["seconds"] for r in timeline if r["step"] == 0 and r["metric"] == "loss"]
        monitor.first_pass_seconds = first[0] if first else None

    def monitor_at(step: int, force: bool = False) -> None:
        before = monitor.seconds
        monitor.step(tr, step, force=force)
        state["monitor_s"] += monitor.seconds - before
        state["picks"] = [list(p) for p in monitor.picks]
        state["eval_every"] = monitor.every

    if start == 0 and not timeline:
        monitor_at(0)
    model.train()
    amp = dev.type == "cuda"
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="finetune",
               disable=not progress, mininterval=2)  # fmt: skip
    for step in bar:
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(cfg.accum):
            idx = _batch_indices(step, micro, cfg, len(data))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = _loss(tr, data, idx, cfg, dev)
                if init:
                    loss = loss + cfg.l2sp * sum(((p - init[n]) ** 2).sum() for n, p in params)
            (loss / cfg.accum).backward()
            total += float(loss.detach()) / cfg.accum
        torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        dt = time.perf_counter() - t
        state["train_s"] += dt
        train_log.append({"step": step + 1, "loss": total, "lr": lr, "seconds": dt})
        bar.set_postfix(loss=f"{total:.3f}", refresh=False)
        done = step + 1
        monitor_at(done, force=done == cfg.steps)
        stop = budget.spent() and done < cfg.steps
        if done == cfg.steps or done % cfg.ckpt_every == 0 or stop:
            write_rows(train_log, out / "train_log.parquet")
            save_checkpoint(out / "checkpoints", done, model, opt, state, sched)
        _after_step(done)
        if stop:
            bar.close()
            log(f"stopped at step {done} of {cfg.steps}: this sitting's {budget.minutes:g} "
                f"minutes are spent; re-run the same command to resume")  # fmt: skip
            return FinetuneResult(out, out / "final", {"step": done, "steps": cfg.steps}, start,
                                  False, [r["loss"] for r in train_log], stopped_at=done)  # fmt: skip
    bar.close()
    return _finish(cfg, tr, monitor, train_log, state, out, start, log)


def _loss(tr: Any, data: Any, idx: torch.Tensor, cfg: FinetuneConfig, dev: torch.device
          ) -> torch.Tensor:  # fmt: skip
    img_idx = data.image_of[idx]
    img = F.normalize(tr.encode_image(data.pixels[img_idx].to(dev)).float(), dim=-1)
    ids, mask = data.ids[idx], data.mask[idx]
    neg = None
    n = len(idx)
    if cfg.hard_negatives and data.has_negatives:
        ok = data.neg_ok[idx]
        ids = torch.cat([ids, data.neg_ids[idx][ok]])
        mask = torch.cat([mask, data.neg_mask[idx][ok]])
    txt = F.normalize(tr.encode_text(ids.to(dev), mask.to(dev)).float(), dim=-1)
    txt, neg = txt[:n], txt[n:]
    return contrastive_loss(img, txt, tr.logit_scale().float(), groups=img_idx.to(dev),
                            negatives=neg)  # fmt: skip


def _finish(cfg: FinetuneConfig, tr: Any, monitor: GroundingMonitor, train_log: list,
            state: dict, out: Path, start: int, log: Any) -> FinetuneResult:  # fmt: skip
    import html

    t = time.perf_counter()
    with kept(tr.model):
        monitor.explain_examples(tr, cfg.steps, "end")
    state["monitor_s"] += time.perf_counter() - t
    tr.model.eval()
    final = atomic_folder(out / "final", tr.save)
    share = state["monitor_s"] / max(state["monitor_s"] + state["train_s"], 1e-9)
    per_step = state["train_s"] / max(1, cfg.steps)
    timeline = monitor.timeline
    summary = {
        "steps": cfg.steps,
        "seconds_per_step": per_step,
        "train_seconds": state["train_s"],
        "monitor_seconds": state["monitor_s"],
        "monitor_share": share,
        "eval_every": state["eval_every"],
        "final": str(final),
        "first": global_values(timeline, 0),
        "last": global_values(timeline, cfg.steps),
    }
    intro = (f"Fine-tuned on <code>{html.escape(cfg.train)}</code> for {cfg.steps} steps "
             f"(batch {cfg.batch}×{cfg.accum}, lr {cfg.lr:g}); monitored on "
             f"<code>{html.escape(cfg.eval)}</code> every {state['eval_every']} steps. "
             f"{per_step:.3f} s per step; monitoring took {100 * share:.1f} % of the time "
             "(measured).")  # fmt: skip
    monitor.write_report(title=cfg.model, intro=intro, summary=summary)
    save_json(summary, out / "summary.json")
    log(f"done: {cfg.steps} steps, {per_step:.3f} s/step; monitoring took "
        f"{state['monitor_s']:.1f} s of {state['monitor_s'] + state['train_s']:.1f} s "
        f"({100 * share:.1f} %, measured); model in {final}")  # fmt: skip
    return FinetuneResult(out, final, summary, start, False, [r["loss"] for r in train_log])


def measure(model: Any, data: str, *, mentions: int = 100, nodes: int | None = 4, seed: int = 0,
            layers: int | tuple[int, int] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The monitor's rows for one model on one dataset (no training), step 0.

    Args:
        model: A model spec or a :class:`dualex.DualEncoder` (left unchanged).
        data: Data spec.
        mentions: Mentions explained for grounding.
        nodes: Quadrature nodes (``None``: adaptive).
        seed: Bootstrap seed.
        layers: Split layer(s) of the explanations (``None``: the last block's input).

    Returns:
        Timeline rows (``step, group, cls, metric, value, lo, hi, n``).
    """
    from dualex.train.data import load_samples
    from dualex.train.families import trainable_from

    if isinstance(model, str):
        from dualex.model import load

        tr = trainable_from(load(model), model, copy_module=False)
    else:
        tr = trainable_from(model)
    return Monitor(load_samples(data, "--eval"), mentions, nodes, seed=seed, layers=layers).run(
        tr, 0
    )
