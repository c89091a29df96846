"""Contrastive fine-tuning of dual encoders, and the per-class grounding monitor for any loop.

    from dualex.train import GroundingMonitor
    monitor = GroundingMonitor("synthetic:seed=903,n=200", processor=proc, out="runs/monitor",
                               tensorboard="runs/tb")
    ...  # in your loop, after each optimizer step:
    monitor.step(model, step)

:class:`GroundingMonitor` (:mod:`dualex.train.grounding`), :class:`GroundingCallback` for
``transformers.Trainer`` (:mod:`dualex.train.callback`); ``dualex finetune``:

    import dualex.train
    result = dualex.train.finetune("builtin", "synthetic:seed=7,n=2000,domain=cluttered",
                                   "synthetic:seed=903,n=200,domain=cluttered", "runs/ft",
                                   steps=300, lr=1e-4)

See :func:`dualex.train.loop.finetune` and docs/finetuning.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dualex.lazy import exports

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "GroundingCallback",
    "GroundingMonitor",
    "MonitorPass",
    "TensorBoardSink",
    "finetune",
    "measure",
]

_HOME = {
    "GroundingMonitor": "dualex.train.grounding",
    "MonitorPass": "dualex.train.grounding",
    "TensorBoardSink": "dualex.train.grounding",
    "GroundingCallback": "dualex.train.callback",
}

if TYPE_CHECKING:  # pragma: no cover
    from dualex.train.callback import GroundingCallback
    from dualex.train.grounding import GroundingMonitor, MonitorPass, TensorBoardSink
    from dualex.train.loop import FinetuneConfig, FinetuneResult, finetune, measure


# the loop (and torch) are imported on first use, so ``dualex --help`` stays light
__getattr__, __dir__ = exports(__name__, {n: _HOME.get(n, "dualex.train.loop") for n in __all__})
