"""Contrastive fine-tuning of dual encoders with a per-class grounding monitor.

    import dualex.train
    result = dualex.train.finetune("builtin", "synthetic:seed=7,n=2000,domain=cluttered",
                                   "synthetic:seed=903,n=200,domain=cluttered", "runs/ft",
                                   steps=300, lr=1e-4)

See :func:`dualex.train.loop.finetune` and docs/finetuning.md.
"""

from dualex.train.loop import FinetuneConfig, FinetuneResult, finetune, measure

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune", "measure"]
