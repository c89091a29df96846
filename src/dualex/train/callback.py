"""The grounding monitor inside ``transformers.Trainer``: :class:`GroundingCallback`.

::

    monitor = GroundingMonitor("synthetic:seed=903,n=200", processor=proc, every=50)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collate)
    trainer.add_callback(GroundingCallback(monitor, trainer))
    trainer.train()
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from dualex.train.grounding import GroundingMonitor, MonitorPass

__all__ = ["GroundingCallback"]


class GroundingCallback(TrainerCallback):
    """Runs a :class:`GroundingMonitor` in ``transformers.Trainer``.

    The monitor measures the Trainer's model before the first step (``on_train_begin``), after
    every step it is due (``on_step_end``: every ``monitor.every`` steps, or the automatic
    choice), after an evaluation (``on_evaluate``) and at the last step (``on_train_end``).
    With ``trainer`` given, each pass's scalars (:func:`dualex.train.grounding.scalar_name`:
    ``dualex/pointing/class/star``...) are logged through ``trainer.log``, i.e. by the
    Trainer's own loggers (``report_to``: TensorBoard, Weights & Biases, MLflow...); the
    monitor's own sinks (``tensorboard=``, ``sinks=``) get them too.

    Args:
        monitor: The monitor (held-out data, ``every``, processor, ``out``, sinks).
        trainer: The ``transformers.Trainer`` whose loggers get the scalars (``None``: only
            the monitor's sinks).
    """

    def __init__(self, monitor: GroundingMonitor, trainer: Any = None) -> None:
        self.monitor = monitor
        self.trainer = trainer
        self._model: Any = None
        monitor.sinks.append(self._report)

    def _report(self, p: MonitorPass) -> None:
        if self.trainer is not None:
            self.trainer.log(dict(p.scalars))

    def _measure(self, model: Any, step: int, force: bool = False) -> None:
        model = getattr(model, "module", model) if _is_ddp(model) else model
        self._model = model
        self.monitor.step(model, step, force=force)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:  # fmt: skip
        """Measure the starting model (step ``state.global_step``, 0 for a fresh run)."""
        if model is not None:
            self._measure(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        """Measure when due."""
        if model is not None:
            self._measure(model, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None,
                    **kwargs: Any) -> None:  # fmt: skip
        """Measure at an evaluation (once per step)."""
        if model is not None:
            self._measure(model, state.global_step, force=True)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                     **kwargs: Any) -> None:  # fmt: skip
        """Measure the last step, then write the monitor's report and close its sinks."""
        if model is not None:
            self._measure(model, state.global_step, force=True)
        self.monitor.close(self._model)


def _is_ddp(model: Any) -> bool:
    import torch

    return isinstance(model, torch.nn.parallel.DistributedDataParallel)
