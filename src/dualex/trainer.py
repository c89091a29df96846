"""The trainer core every training loop in dualex shares.

``dualex finetune`` (:mod:`dualex.train.loop`) and the built-in models' recipe
(:mod:`dualex.models.train_builtin`) are two configurations of these pieces:

- :func:`warmup_cosine`: the learning-rate schedule (linear warm-up, then cosine decay to a floor);
- :func:`adamw`: AdamW with weight decay on matrices only;
- :func:`save_checkpoint` / :func:`latest_checkpoint` / :func:`load_checkpoint`: resumable
  checkpoints, one folder per step (``step-NNNNNN/{model,optim}.safetensors`` + ``state.json``)
  written as a temporary folder and renamed, older ones removed afterwards; tensors in
  safetensors, everything else in JSON (no pickle);
- :class:`TimeBudget`: a wall-clock budget after which a sitting saves and stops;
- :func:`save_tensors` / :func:`save_json`: atomic single-file writes.

This module sits below both packages (it imports only :mod:`dualex.io`), so ``models`` and
``train`` can both use it without importing each other.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dualex.io import atomic_folder, atomic_write

__all__ = [
    "TimeBudget",
    "adamw",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "save_json",
    "save_tensors",
    "warmup_cosine",
]


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict | None = None) -> None:
    """Write ``tensors`` (made contiguous) to a safetensors file atomically, with ``meta``."""
    from safetensors.torch import save_file

    contiguous = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=meta))


def save_json(obj: Any, path: Path) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write(path, json.dumps(obj, indent=1))


def warmup_cosine(
    step: int,
    steps: int,
    warmup: float,
    *,
    peak: float = 1.0,
    floor: float = 0.0,
    min_warmup: int = 0,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Args:
        step: The step about to be taken.
        steps: Steps of the whole run (the schedule depends on it alone, so a resumed run
            continues the same curve).
        warmup: Fraction of ``steps`` spent warming up linearly to ``peak``.
        peak: The rate at the end of warm-up (``1.0``: a factor for ``LambdaLR``).
        floor: Fraction of ``peak`` the cosine decays to at the last step.
        min_warmup: Fewest warm-up steps (``0`` lets a tiny run skip warm-up).

    Returns:
        The rate (or factor).
    """
    warm = max(min_warmup, int(warmup * steps))
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def adamw(
    named: Iterable[tuple[str, torch.nn.Parameter]],
    lr: float,
    weight_decay: float,
    *,
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.98) decaying matrices only (biases, norms and scales are not decayed).

    Args:
        named: ``(name, parameter)`` pairs to train, in a fixed order (checkpoints index them).
        lr: Learning rate (a schedule may override it each step).
        weight_decay: Decay of parameters with two or more dimensions.
        eps: Adam's epsilon.
    """
    params = list(named)
    return torch.optim.AdamW(
        [{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": weight_decay},
         {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=eps,
    )  # fmt: skip


@dataclass
class TimeBudget:
    """Wall-clock budget of one sitting of a resumable run.

    Attributes:
        minutes: The budget (``0``: none).
        start: When the sitting started (``time.time()``).
    """

    minutes: float = 0.0
    start: float = field(default_factory=time.time)

    def elapsed(self) -> float:
        """Seconds since the sitting started."""
        return time.time() - self.start

    def spent(self) -> bool:
        """True once a budget is set and used up: save a checkpoint and stop."""
        return bool(self.minutes) and self.elapsed() > 60 * self.minutes


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete ``root/step-NNNNNN`` folder, or None."""
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").is_file())
    return done[-1] if done else None


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    sched: Any = None,
    rng: bool = True,
) -> Path:
    """Write ``root/step-NNNNNN`` (model, optimizer, RNG, ``state``), then remove older steps.

    The folder is written under a temporary name and renamed, so an interrupted save leaves no
    half-written checkpoint and the previous one stays until the new one is complete.

    Args:
        root: Folder of the run's checkpoints.
        step: Optimizer steps taken.
        model: Its ``state_dict`` goes to ``model.safetensors``.
        opt: Its state (indexed like ``opt.state_dict()``) and the torch/CUDA RNG states go to
            ``optim.safetensors``; its ``param_groups`` to ``state.json``.
        state: JSON-able run state stored in ``state.json`` beside ``step``.
        sched: A ``torch.optim.lr_scheduler`` whose state is stored too (None: none).
        rng: Store the torch/CUDA RNG states (a loop whose randomness is its own, seeded per
            step, has none to store).

    Returns:
        The checkpoint folder.
    """
    final = root / f"step-{step:06d}"

    def fill(tmp: Path) -> None:  # an interrupted save leaves no half-written folder behind
        save_tensors({k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                     tmp / "model.safetensors")  # fmt: skip
        sd = opt.state_dict()
        tensors = {
            f"opt.{idx}.{key}": (val if torch.is_tensor(val) else torch.tensor(val)).detach().cpu()
            for idx, st in sd["state"].items()
            for key, val in st.items()
        }
        if rng:
            tensors["rng.torch"] = torch.get_rng_state()
            if torch.cuda.is_available():
                for i, r in enumerate(torch.cuda.get_rng_state_all()):
                    tensors[f"rng.cuda.{i}"] = r
        save_tensors(tensors, tmp / "optim.safetensors")
        head: dict[str, Any] = {"step": step, "param_groups": sd["param_groups"]}
        if sched is not None:
            head["scheduler"] = sched.state_dict()  # lr_lambdas: [None, ...] for plain functions
        save_json({**state, **head}, tmp / "state.json")  # the step saved, not one loaded earlier

    atomic_folder(final, fill)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer | None = None,
    sched: Any = None,
    rng: bool = True,
) -> dict[str, Any]:
    """Restore a :func:`save_checkpoint` folder into ``model`` (and ``opt``, ``sched``, RNG).

    Args:
        path: The ``step-NNNNNN`` folder.
        model: Receives the weights.
        opt: Receives the optimizer state and the RNG states (None: weights only).
        sched: Receives the scheduler state (None: not restored).
        rng: Restore the RNG states the checkpoint holds (``False`` leaves the process's global
            RNG alone: a library call resuming its own loop must not reseed the caller).

    Returns:
        The ``state.json`` contents (``step`` and the run state).
    """
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    if opt is None:
        return state
    tensors = load_file(str(path / "optim.safetensors"))
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    if sched is not None:
        sched.load_state_dict(state["scheduler"])
    if not rng or "rng.torch" not in tensors:
        return state
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())
                if f"rng.cuda.{i}" in tensors]  # fmt: skip
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return state
