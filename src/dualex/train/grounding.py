"""The grounding monitor for any training loop: :class:`GroundingMonitor`.

Add it to your own loop in three lines; it measures the model you are training, as it is, every
``every`` steps on held-out data with grounded mentions, and leaves the model exactly as it was::

    monitor = GroundingMonitor("synthetic:seed=903,n=200", processor=proc,
                               out="runs/monitor", tensorboard="runs/tb")
    for step in range(steps):
        ...  # your forward, backward, optimizer step
        monitor.step(model, step + 1)
    monitor.close(model)

``dualex finetune`` uses this same object. Its rows are the timeline rows of
:mod:`dualex.train.monitor` (``step, group, cls, metric, value, lo, hi, n, seconds``); they go to
``out/timeline.parquet`` (and ``out/report.html`` on :meth:`GroundingMonitor.close`), to
TensorBoard (``tensorboard=LOGDIR``: a scalar per class and global metric, the per-class
ranking as a text table, the worst classes' heatmaps as images) and to any callables in
``sinks``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dualex.data.types import Sample
from dualex.errors import SettingError
from dualex.train.monitor import Monitor, kept, write_rows

__all__ = [
    "DEFAULT_TOL",
    "TARGET_SHARE",
    "GroundingMonitor",
    "MonitorPass",
    "TensorBoardSink",
    "choose_every",
    "expected_share",
    "global_values",
    "scalar_name",
    "unchanged",
]

DEFAULT_TOL = 1e-3
"""dualex's default completeness tolerance (relative error), which the examples meet."""

TARGET_SHARE = 0.10
"""With ``every=None`` the monitor picks ``every`` so that it takes at most this share of the
wall time (measured: its first pass against the time of the steps after it)."""

PROBE_STEPS = 5
"""Steps timed before ``every=None`` is resolved."""


@dataclass
class MonitorPass:
    """What one monitored step produced, as handed to each sink.

    Attributes:
        step: The training step.
        rows: Timeline rows (``step, group, cls, metric, value, lo, hi, n, seconds``).
        scalars: The same as flat ``name → value`` pairs (see :func:`scalar_name`), plus
            ``dualex/monitor_share`` (the monitor's share of wall time so far) and
            ``dualex/monitor_seconds`` (this pass).
        ranking: Per class, worst pointing first: ``cls, pointing, lo, hi, energy, n``.
        examples: ``(class, explanation, span)`` of the worst classes' held-out captions
            (distinct captions; filled only when a sink asks for them: ``wants_examples = True``).
    """

    step: int
    rows: list[dict[str, Any]]
    scalars: dict[str, float]
    ranking: list[dict[str, Any]]
    examples: list[tuple[str, Any, tuple[int, int]]] = field(default_factory=list)


def scalar_name(row: dict[str, Any]) -> str:
    """The flat name of a timeline row: ``dualex/<metric>`` for a global row,
    ``dualex/<metric>/<group>/<cls>`` otherwise (``dualex/pointing/class/star``)."""
    if row["group"] == "global":
        return f"dualex/{row['metric']}"
    return f"dualex/{row['metric']}/{row['group']}/{row['cls']}"


# ------------------------------------------------------------------------------------------
# leaving the model as it was


def _checkpoint_flags(model: torch.nn.Module) -> list[tuple[Any, str, bool, bool]]:
    """Every module's gradient-checkpointing switch: transformers' ``gradient_checkpointing``,
    open_clip's ``grad_checkpointing``: ``(module, attribute, value, own)`` where ``own`` says
    the module held it itself (not its class)."""
    out = []
    for m in model.modules():
        for attr in ("gradient_checkpointing", "grad_checkpointing"):
            value = getattr(m, attr, None)
            if isinstance(value, bool):
                out.append((m, attr, value, attr in m.__dict__))
    return out


@contextmanager
def unchanged(model: torch.nn.Module) -> Iterator[None]:
    """Measure ``model`` inside the block and leave it exactly as it was.

    Saved before and restored after, even if the block raises: every module's ``training``
    flag, every parameter's ``requires_grad`` and ``.grad`` (the very tensor object: inside the
    block ``.grad`` is ``None``, so nothing can accumulate into the user's gradients), the CPU
    and CUDA RNG states, the gradient-checkpointing switches (off inside the block: the
    engine's ``torch.func`` transforms cannot run through checkpointed blocks) and autocast
    (off inside the block; whatever the caller had is back after).
    """
    params = list(model.parameters())
    grads = [p.grad for p in params]
    flags = _checkpoint_flags(model)
    with ExitStack() as stack:
        stack.enter_context(kept(model))
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        try:
            for p in params:
                p.grad = None
            for m, attr, _, _ in flags:
                setattr(m, attr, False)
            yield
        finally:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            for m, attr, value, own in flags:
                if own:
                    setattr(m, attr, value)
                else:
                    m.__dict__.pop(attr, None)


# ------------------------------------------------------------------------------------------
# sinks


class TensorBoardSink:
    """Writes each pass to TensorBoard with ``torch.utils.tensorboard.SummaryWriter``.

    Scalars: every global and per-class metric (:func:`scalar_name`). Text: the per-class
    ranking by pointing (``dualex/ranking``, a Markdown table). Images: the heatmaps of the
    worst classes' held-out captions (``dualex/heatmap/<class>``, one slider per class).

    Args:
        logdir: The log folder (``tensorboard --logdir LOGDIR``).
        images: Write the worst classes' heatmaps (costs one explanation per class per pass).
    """

    def __init__(self, logdir: str | Path, images: bool = True) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # pragma: no cover - tensorboard is in the train extra
            raise SettingError(
                "tensorboard=LOGDIR needs the tensorboard package: pip install 'dualex[train]'"
            ) from err
        self.writer = SummaryWriter(str(logdir))
        self.wants_examples = images

    def __call__(self, p: MonitorPass) -> None:
        import numpy as np

        from dualex.viz.heatmap import overlay

        for name, value in p.scalars.items():
            self.writer.add_scalar(name, value, p.step)
        if p.ranking:
            lines = ["| class | pointing [95 % CI] | energy | n |", "|---|---|---|---|"]
            for r in p.ranking:
                lines.append(f"| {r['cls']} | {r['pointing']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] "
                             f"| {r['energy']:.3f} | {r['n']} |")  # fmt: skip
            self.writer.add_text("dualex/ranking", "\n".join(lines), p.step)
        for cls, ex, span in p.examples:
            img, _ = overlay(ex, span, max_side=256)
            self.writer.add_image(f"dualex/heatmap/{cls}", np.asarray(img), p.step,
                                  dataformats="HWC")  # fmt: skip
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


# ------------------------------------------------------------------------------------------
# the monitor


class GroundingMonitor:
    """Per-class grounding of the model you are training, measured every ``every`` steps.

    Args:
        data: Held-out data: a data spec (``"synthetic:seed=903,n=200"``, ``"coco:IMAGES,ANN"``,
            ``"flickr30k:ROOT"``, ``"hnc:JSON,IMAGES"``) or a list of
            :class:`dualex.data.types.Sample` whose mentions carry boxes.
        every: Measure every K steps. ``None`` (default): measured once at the first call,
            then, after a few more steps have been timed, every K steps with K chosen so that
            monitoring takes at most 10 % of the wall time (:data:`TARGET_SHARE`).
        mentions: Mentions explained per pass (the first held-out samples until this many).
        nodes: Gauss–Legendre nodes of the monitor's explanations (``None``: adaptive to
            dualex's default tolerance, slower). Each pass reports the measured relative
            completeness error of its explanations (global rows ``completeness_max`` and
            ``completeness_median``).
        layers: Split layer(s) of the monitor's explanations: one int for both towers or
            ``(text, image)`` (``None``: the last block's input, dualex's default). A model
            trained as CLIP is may ground best at an earlier layer (the built-in
            ``builtin-clip``: layer 1), at a higher cost per pass.
        out: A folder: ``timeline.parquet`` after each pass, ``report.html``,
            ``timeline.png`` and the worst classes' start/end explanations on :meth:`close`
            (the outputs of ``dualex finetune``).
        tensorboard: A TensorBoard log folder (:class:`TensorBoardSink`).
        sinks: Callables called with each :class:`MonitorPass` (feed any tracker:
            ``lambda p: wandb.log(p.scalars, step=p.step)``).
        processor: What wrapping the model needs besides it (given once): a transformers
            processor, or open_clip / OpenAI clip's image transform.
        tokenizer: The tokenizer, when not part of ``processor`` (open_clip:
            ``open_clip.get_tokenizer(arch)``).
        name: The model's display name (default: what :func:`dualex.wrap` names it); the
            examples are labelled ``<name>@step-N``.
        batch: Batch size of the embedding passes.
        seed: Seed of the bootstrap intervals.
        worst: How many worst classes get example explanations / heatmaps.
        log: Called with one line of text per pass (``None``: silent).
        concepts: A concept dictionary (:class:`dualex.Concepts` or its folder) of the model
            at the start of training: each pass also measures, per concept, how often it fires
            on the caption, on the image and on both of the held-out matching pairs (timeline
            rows of group ``"concept"``: ``fires_a``, ``fires_b``, ``agreement``, ``gap``), and
            the report gains a concept section (the knowledge gaps in concept terms). Only the
            embeddings' kinds are checked against the model; the dictionary keeps reading the
            model in the terms it learnt at the start.
        concept_pairs: Held-out pairs of the concept measurement (the first samples).
        **wrap_options: Further options of :func:`dualex.wrap` (``preprocess=``,
            ``image_processor=``, ``text_reference=``...).

    Raises:
        SettingError: on unreadable or empty data, or ``every < 1``.
    """

    def __init__(
        self,
        data: str | Iterable[Sample],
        *,
        every: int | None = None,
        mentions: int = 100,
        nodes: int | None = 4,
        layers: int | tuple[int, int] | None = None,
        out: str | Path | None = None,
        tensorboard: str | Path | None = None,
        sinks: Iterable[Callable[[MonitorPass], Any]] = (),
        processor: Any = None,
        tokenizer: Any = None,
        name: str | None = None,
        batch: int = 64,
        seed: int = 0,
        worst: int = 3,
        log: Callable[[str], Any] | None = None,
        concepts: Any = None,
        concept_pairs: int = 256,
        **wrap_options: Any,
    ) -> None:
        from dualex.train.data import load_samples

        if every is not None and every < 1:
            raise SettingError(f"every must be >= 1, got {every}")
        if mentions < 0:
            raise SettingError(f"mentions must be >= 0, got {mentions}")
        samples = load_samples(data, "data") if isinstance(data, str) else list(data)
        if not samples:
            raise SettingError("the monitor's held-out data holds no samples")
        self.every = every
        self.out = None if out is None else Path(out)
        self.name = name
        self.worst = worst
        self.log = log
        self.monitor = Monitor(samples, mentions, nodes, batch=batch, seed=seed,
                               folder=None if out is None else self.out / "monitor",
                               layers=layers)  # fmt: skip
        self.sinks: list[Callable[[MonitorPass], Any]] = list(sinks)
        if tensorboard is not None:
            self.sinks.append(TensorBoardSink(tensorboard))
        if isinstance(concepts, str | Path):
            from dualex.concepts import Concepts

            concepts = Concepts.load(concepts)
        self.concepts = concepts
        self.concept_pairs = concept_pairs
        self.seed = seed
        self._wrap = dict(wrap_options, processor=processor, tokenizer=tokenizer)
        self._trainables: dict[int, tuple[Any, Any]] = {}
        self.timeline: list[dict[str, Any]] = []
        self.picks: list[tuple[str, int]] = []
        self.seconds = 0.0  # spent measuring
        self._started: float | None = None  # wall clock of the first call
        self._last: tuple[int, float] | None = None  # (step, wall clock) after the last pass
        self._probe: list[float] = []  # seconds per step seen after the first pass
        self.first_pass_seconds: float | None = None

    # -- the model --------------------------------------------------------------------------

    def trainable(self, model: Any) -> Any:
        """The :class:`dualex.train.families.Trainable` over ``model``'s own module (no copy),
        wrapped once per model object."""
        from dualex.encoder import DualEncoder
        from dualex.train.families import Trainable, trainable_from

        if isinstance(model, Trainable):
            return model
        held = self._trainables.get(id(model))
        if held is not None and held[0] is model:
            return held[1]
        if isinstance(model, DualEncoder):
            enc = model
        else:
            import dualex

            module = model
            if isinstance(module, torch.nn.parallel.DistributedDataParallel):
                module = module.module
            opts = {k: v for k, v in self._wrap.items() if v is not None}
            if self.name is not None:
                opts["name"] = self.name
            enc = dualex.wrap(module, **opts)
        tr = trainable_from(enc, self.name or enc.name, copy_module=False)
        tr.encoder = enc
        self._trainables[id(model)] = (model, tr)
        return tr

    # -- one step ----------------------------------------------------------------------------

    def due(self, step: int) -> bool:
        """Whether :meth:`step` measures at ``step``: the first call always does, then every
        ``every`` steps."""
        return not self.timeline or (self.every is not None and step % self.every == 0)

    def step(self, model: Any, step: int, *, force: bool = False) -> list[dict[str, Any]]:
        """Measure ``model`` at training step ``step`` if it is due (or ``force``).

        Call it after each optimizer step (``step`` counting the steps done); it returns at
        once when the step is not due. The model is left exactly as it was
        (:func:`unchanged`): modes, ``requires_grad``, gradients, RNG, autocast and
        checkpointing.

        Args:
            model: The model being trained (transformers CLIP / SigLIP, open_clip, OpenAI
                clip, a :class:`dualex.DualEncoder`).
            step: Steps done so far.
            force: Measure even when not due (e.g. the last step).

        Returns:
            This pass's timeline rows (empty when not due).
        """
        now = time.perf_counter()
        if self._started is None:
            self._started = now
        self._choose_every(step, now)
        if self.timeline and self.timeline[-1]["step"] == step:
            return []  # measured already
        if not (force or self.due(step)):
            return []
        tr = self.trainable(model)
        t = time.perf_counter()
        with unchanged(tr.model):
            rows = self.monitor.run(tr, step)
        if self.concepts is not None:
            rows.extend(self._concept_rows(tr, step))
        p = self._pass(tr, step, rows)
        dt = time.perf_counter() - t
        if self.first_pass_seconds is None:
            self.first_pass_seconds = dt
        if not self.timeline and self.out is not None and self.monitor.chosen:
            self.picks = self.monitor.example_picks(rows, step, self.worst)
            self.explain_examples(tr, step, "start")
            dt = time.perf_counter() - t
        self.seconds += dt
        for r in rows:
            r["seconds"] = dt
        self.timeline.extend(rows)
        if self.out is not None:
            write_rows(self.timeline, self.out / "timeline.parquet")
        p.scalars["dualex/monitor_seconds"] = dt
        p.scalars["dualex/monitor_share"] = self.share()
        for sink in self.sinks:
            sink(p)
        if self.log is not None:
            g = {r["metric"]: r["value"] for r in rows if r["group"] == "global"}
            self.log(f"step {step}: loss {g.get('loss', math.nan):.3f}  R@1 t2i "
                     f"{g.get('r1_t2i', 0):.3f} i2t {g.get('r1_i2t', 0):.3f}  pointing "
                     f"{g.get('pointing', math.nan):.3f}  gap {g.get('gap', math.nan):.3f}  "
                     f"({dt:.1f} s; monitoring so far {100 * self.share():.1f} % of the "
                     "time)")  # fmt: skip
        self._last = (step, time.perf_counter())
        return rows

    def share(self) -> float:
        """The monitor's measured share of the wall time since the first call."""
        if self._started is None:
            return 0.0
        wall = time.perf_counter() - self._started
        return self.seconds / wall if wall > 0 else 0.0

    def _choose_every(self, step: int, now: float) -> None:
        """``every=None``: time the steps after the first pass, then pick K for ≤ 10 %."""
        if self.every is not None or self.first_pass_seconds is None:
            return
        if self._last is None:  # resumed: time from here
            self._last = (step, now)
            return
        last_step, last_t = self._last
        if step <= last_step:
            return
        self._probe.append((now - last_t) / (step - last_step))
        self._last = (step, now)
        if len(self._probe) < PROBE_STEPS:
            return
        per_step = sorted(self._probe)[len(self._probe) // 2]
        self.every = choose_every(self.first_pass_seconds, per_step)
        if self.log is not None:
            self.log(f"monitoring every {self.every} steps: a pass took "
                     f"{self.first_pass_seconds:.2f} s and a step {per_step:.3f} s, so about "
                     f"{100 * expected_share(self.first_pass_seconds, per_step, self.every):.1f} "
                     f"% of the time (measured so far: {100 * self.share():.1f} %)")  # fmt: skip

    def _pass(self, tr: Any, step: int, rows: list[dict[str, Any]]) -> MonitorPass:
        scalars = {scalar_name(r): r["value"] for r in rows if math.isfinite(r["value"])}
        table = {(r["cls"], r["metric"]): r for r in rows if r["group"] == "class"}
        ranking = []
        for (cls, metric), r in table.items():
            if metric != "pointing":
                continue
            energy = table.get((cls, "energy"), {"value": math.nan})["value"]
            ranking.append({"cls": cls, "pointing": r["value"], "lo": r["lo"], "hi": r["hi"],
                            "energy": energy, "n": r["n"]})  # fmt: skip
        ranking.sort(key=lambda r: (r["pointing"] if math.isfinite(r["pointing"]) else math.inf,
                                    r["cls"]))  # fmt: skip
        p = MonitorPass(step, rows, scalars, ranking)
        if any(getattr(s, "wants_examples", False) for s in self.sinks):
            picks = self.monitor.example_picks(rows, step, self.worst)
            for (cls, idx), ex in self._explain(tr, picks):
                span = next(m.span for m in self.monitor.samples[idx].mentions if m.label == cls)
                p.examples.append((cls, ex, span))
        return p

    def _concept_rows(self, tr: Any, step: int) -> list[dict[str, Any]]:
        """Per concept, its firing rates on the held-out matching pairs (see
        :func:`dualex.concepts.gaps.agreement_rows`)."""
        from dualex.concepts.gaps import agreement_rows, firing

        samples = self.monitor.samples[: self.concept_pairs]
        with unchanged(tr.model), tr.checkpointing_paused():
            enc = tr.wrap()
            self.concepts.check(enc, weights=False)
            text_first = enc.tower_a.modality == "text"
            pairs = [(s.caption, s.image) if text_first else (s.image, s.caption)
                     for s in samples]  # fmt: skip
            A, B = firing(self.concepts, enc, pairs, batch_size=self.monitor.batch)
        return [{"step": step, **r} for r in agreement_rows(self.concepts, A, B, seed=self.seed)]

    # -- example explanations ------------------------------------------------------------------

    def _explain(self, tr: Any, picks: list[tuple[str, int]], tol: float | None = None,
                 label: str | None = None) -> list[tuple[tuple[str, int], Any]]:  # fmt: skip
        """``(pick, explanation)`` for each pick whose caption the model can read (a caption of
        words the model does not know is refused by ``dualex.explain``; it is skipped and
        logged, and the run goes on)."""
        import dualex
        from dualex.errors import InvalidInputError

        exs = []
        with unchanged(tr.model), tr.checkpointing_paused():
            enc = tr.wrap()
            for pick in picks:
                s = self.monitor.samples[pick[1]]
                try:
                    layers = self.monitor.layers
                    if tol is None:
                        ex = dualex.explain(enc, s.caption, s.image, layers=layers,
                                            steps=self.monitor.nodes)  # fmt: skip
                    else:
                        ex = dualex.explain(enc, s.caption, s.image, layers=layers, tol=tol)
                except InvalidInputError as err:
                    if self.log is not None:
                        self.log(f"example {s.caption!r} not explained: {err}")
                    continue
                if label is not None:
                    ex.model = label
                exs.append((pick, ex))
        return exs

    def example_label(self, tr: Any, step: int) -> tuple[str, str]:
        """``(model label, weights kind)`` of explanations made at ``step``:
        ``<name>@step-N``; weights ``"random"`` stay random, others become ``"finetuned"``
        after step 0."""
        weights = getattr(tr, "weights", "unknown")
        if step > 0 and weights != "random":
            weights = "finetuned"
        return f"{self.name or tr.name}@step-{step}", weights

    def explain_examples(self, model: Any, step: int, tag: str) -> list[Path]:
        """Explain the worst classes' captions (distinct captions, to :data:`DEFAULT_TOL`) and
        save them as ``out/examples/<tag>-<k>.safetensors``, labelled ``<name>@step-N``."""
        if self.out is None or not self.picks:
            return []
        tr = self.trainable(model)
        label, weights = self.example_label(tr, step)
        paths = []
        for k, (_, ex) in enumerate(self._explain(tr, self.picks, DEFAULT_TOL, label)):
            ex.weights = weights
            paths.append(ex.save(self.out / "examples" / f"{tag}-{k}.safetensors"))
        return paths

    # -- the end -----------------------------------------------------------------------------

    def close(self, model: Any = None, step: int | None = None, **report: Any) -> Path | None:
        """Finish: explain the worst classes again (when ``model`` is given), write
        ``report.html`` and ``timeline.png`` (when ``out`` is set), close the sinks.

        Args:
            model: The trained model (for the worst classes' end explanations).
            step: Its step (default: the last monitored step).
            **report: Extra figures for the report (``title``, ``intro``, ``summary``).

        Returns:
            The report's path (``None`` without ``out``).
        """
        path = None
        if self.out is not None and self.timeline:
            if model is not None and self.picks:
                last = step if step is not None else max(r["step"] for r in self.timeline)
                t = time.perf_counter()
                self.explain_examples(model, last, "end")
                self.seconds += time.perf_counter() - t
            path = self.write_report(**report)
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        return path

    def write_report(self, title: str | None = None, intro: str | None = None,
                     summary: dict[str, Any] | None = None) -> Path:  # fmt: skip
        """``out/timeline.png`` and ``out/report.html`` (see :mod:`dualex.train.report`)."""
        from dualex.train.report import write_report, write_timeline_png

        assert self.out is not None
        self.out.mkdir(parents=True, exist_ok=True)
        write_timeline_png(self.timeline, self.out / "timeline.png")
        steps = sorted({r["step"] for r in self.timeline})
        summary = dict(summary or {})
        summary.setdefault("monitor_share", self.share())
        summary.setdefault("first", global_values(self.timeline, steps[0]))
        summary.setdefault("last", global_values(self.timeline, steps[-1]))
        name = self.name or next(iter(self._trainables.values()), (None, None))[1]
        name = name if isinstance(name, str) else getattr(name, "name", "model")
        return write_report(self.timeline, summary, self.out, self.picks,
                            title=title or name, intro=intro, nodes=self.monitor.nodes)  # fmt: skip


def choose_every(pass_seconds: float, step_seconds: float, share: float = TARGET_SHARE) -> int:
    """The smallest K for which one pass every K steps takes at most ``share`` of the time:
    ``pass / (pass + K · step) ≤ share``."""
    return max(1, math.ceil(pass_seconds * (1 - share) / (share * max(step_seconds, 1e-9))))


def expected_share(pass_seconds: float, step_seconds: float, every: int) -> float:
    """``pass / (pass + every · step)``: the share of one pass every ``every`` steps."""
    return pass_seconds / max(pass_seconds + every * step_seconds, 1e-12)


def global_values(timeline: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The global metrics at ``step``: ``{metric: value}``."""
    return {r["metric"]: r["value"] for r in timeline
            if r["step"] == step and r["group"] == "global"}  # fmt: skip
