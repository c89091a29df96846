"""The fine-tuning monitor: retrieval, per-class grounding, mismatch and embedding diagnostics.

The monitor explains the model *while it trains* and leaves it exactly as it was: every
module's ``training`` flag, every parameter's ``requires_grad`` and the global RNG state are
saved before and restored after (:func:`kept`), whatever ``dualex.wrap`` or the engine do.

Each call returns *timeline rows*: ``step, group, cls, metric, value, lo, hi, n`` where
``group`` is ``"global"`` (one value per metric), ``"class"`` (per mention label: the whole
mention phrase, e.g. "small red star"), ``"word"`` (per label: the class word alone, "star"),
``"colour"`` (synthetic world: the colour word alone, "red") or ``"kind"`` (per hard-negative
kind). A phrase can be grounded through its colour word alone, so a class the model never learnt
can still point well at the ``class`` level; the ``word`` rows isolate the class word.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import dualex.train.diagnostics as dg
from dualex.data.types import Sample
from dualex.evaluate.analysis import GROUNDING_METRICS, MISMATCH_METRICS, group_table

__all__ = [
    "GLOBAL_METRICS",
    "Monitor",
    "contrastive_loss",
    "kept",
    "read_rows",
    "recall_at",
    "write_rows",
]

GLOBAL_METRICS = (
    "loss", "r1_t2i", "r5_t2i", "r1_i2t", "r5_i2t", "gap", "gap_logreg", "alignment",
    "uniformity_image", "uniformity_text", "temperature", "logit_scale",
)  # fmt: skip
"""Metrics of the ``global`` rows (besides grounding and mismatch overall)."""

NAN = float("nan")


@contextmanager
def kept(model: torch.nn.Module) -> Iterator[None]:
    """Run a block and restore the model's modes, ``requires_grad`` flags and the RNG state."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    rng = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)
        torch.set_rng_state(rng)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def contrastive_loss(
    img: Tensor,
    txt: Tensor,
    scale: Tensor,
    groups: Tensor | None = None,
    negatives: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE of normalised pairs ``img[i] ↔ txt[i]`` (``[B, E]`` each).

    Args:
        img: Normalised image embeddings (row ``i`` is caption ``i``'s image).
        txt: Normalised caption embeddings.
        scale: The model's logit scale (``exp`` of its learnt log scale).
        groups: ``[B]`` image ids: other captions of the same image are not negatives.
        negatives: ``[M, E]`` normalised hard-negative captions, extra columns of the
            image→text softmax.

    Returns:
        ``(CE(image→text) + CE(text→image)) / 2``.
    """
    logits = scale * img @ txt.T
    if groups is not None:
        same = groups[:, None] == groups[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(img), device=img.device)
    i2t = (
        logits
        if negatives is None or not len(negatives)
        else torch.cat([logits, scale * img @ negatives.T], 1)
    )
    return (F.cross_entropy(i2t, target) + F.cross_entropy(logits.T, target)) / 2


def recall_at(sims: Tensor, correct: Tensor, k: int) -> float:
    """Share of rows of ``sims [Q, C]`` whose top-``k`` columns hold a ``correct [Q, C]`` one."""
    k = min(k, sims.shape[1])
    top = sims.topk(k, dim=1).indices
    return float(correct.gather(1, top).any(1).float().mean())


def _word_span(caption: str, span: tuple[int, int], words: list[str]) -> tuple[int, int] | None:
    import re

    a, b = span
    for w in words:
        m = re.search(rf"\b{re.escape(w)}\b", caption[a:b], re.I)
        if m:
            return a + m.start(), a + m.end()
    return None


def _with_words(sample: Sample) -> Sample:
    """The sample with extra *word* mentions: each mention's class word alone (label
    ``word:<label>``, when the phrase contains the label or its plural) and, in the synthetic
    world, its colour word alone (``colour:<colour>``), with the mention's boxes.

    A phrase such as "small red star" can be grounded by its colour alone; the word rows show
    whether the model grounds the class word itself.
    """
    from dataclasses import replace

    from dualex.data.synthetic import COLOURS, _plural
    from dualex.data.types import Mention

    extra = []
    for m in sample.mentions:
        span = _word_span(sample.caption, m.span, [_plural(m.label), m.label])
        if span is not None:
            extra.append(Mention(span, m.boxes, f"word:{m.label}"))
        if "objects" in sample.meta:
            phrase = sample.caption[slice(*m.span)].lower().split()
            found = [w for w in phrase if w in COLOURS]
            if len(found) == 1:
                span = _word_span(sample.caption, m.span, found)
                if span is not None:
                    extra.append(Mention(span, m.boxes, f"colour:{found[0]}"))
    return replace(sample, mentions=list(sample.mentions) + extra) if extra else sample


class Monitor:
    """Measures a model on held-out samples; one call per monitored step.

    Args:
        samples: Held-out samples (retrieval, loss and diagnostics use all of them).
        mentions: Grounding uses the first samples until this many mentions are covered;
            mismatch uses the same samples' hard negatives.
        nodes: Quadrature nodes of the explanations (``None``: dualex's adaptive default).
        batch: Batch size of the embedding passes.
        seed: Seed of the bootstrap intervals and the separability split.
        folder: Where each step's grounding and mismatch runs keep their rows
            (``step-NNNNNN/grounding``, ``.../mismatch``: dataset jobs of :mod:`dualex.scale`,
            so a resumed training reuses a finished step's rows); ``None``: a temporary folder.
        layers: Split layer(s) of the explanations: one int for both towers or
            ``(text, image)`` (``None``: the last block's input, dualex's default).
    """

    def __init__(
        self,
        samples: list[Sample],
        mentions: int = 100,
        nodes: int | None = 4,
        batch: int = 64,
        seed: int = 0,
        folder: str | Path | None = None,
        layers: int | tuple[int, int] | None = None,
    ) -> None:
        self.samples, self.nodes, self.batch, self.seed = samples, nodes, batch, seed
        self.layers = layers
        self.folder = None if folder is None else Path(folder)
        chosen: list[tuple[int, Sample]] = []
        count = 0
        for i, s in enumerate(samples):
            if count >= mentions:
                break
            if s.mentions:
                chosen.append((i, s))
                count += len(s.mentions)
        self.chosen = chosen
        self._data: Any = None

    # -- embeddings ---------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, trainable: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised caption ``[N, E]`` and image ``[I, E]`` embeddings, and ``image_of [N]``."""
        from dualex.train.data import tensorise

        if self._data is None:
            self._data = tensorise(self.samples, trainable)
        d = self._data
        dev = next(trainable.model.parameters()).device
        txt = torch.cat([
            trainable.encode_text(d.ids[i : i + self.batch].to(dev),
                                  d.mask[i : i + self.batch].to(dev)).float()
            for i in range(0, len(d.ids), self.batch)
        ])  # fmt: skip
        img = torch.cat([
            trainable.encode_image(d.pixels[i : i + self.batch].to(dev)).float()
            for i in range(0, len(d.pixels), self.batch)
        ])  # fmt: skip
        return F.normalize(txt, dim=-1).cpu(), F.normalize(img, dim=-1).cpu(), d.image_of

    # -- one monitored step -------------------------------------------------------------------

    def run(self, trainable: Any, step: int) -> list[dict[str, Any]]:
        """All timeline rows of one step; the model is left exactly as it was."""
        model = trainable.model
        with trainable.checkpointing_paused(), kept(model):
            model.eval()
            rows = self._global_rows(trainable, step)
            rows += self._grounding_rows(trainable, step)
        return rows

    def _global_rows(self, trainable: Any, step: int) -> list[dict[str, Any]]:
        txt, img, image_of = self.embed(trainable)
        with torch.no_grad():
            scale = trainable.logit_scale().detach().float().cpu()
        pair_img = img[image_of]
        loss = float(contrastive_loss(pair_img, txt, scale, groups=image_of))
        sims = txt @ img.T  # [N, I]
        correct = image_of[:, None] == torch.arange(len(img))[None, :]
        values = {
            "loss": loss,
            "r1_t2i": recall_at(sims, correct, 1),
            "r5_t2i": recall_at(sims, correct, 5),
            "r1_i2t": recall_at(sims.T, correct.T, 1),
            "r5_i2t": recall_at(sims.T, correct.T, 5),
            "gap": dg.modality_gap(pair_img, txt),
            "gap_logreg": dg.gap_separability(pair_img, txt, self.seed),
            "alignment": dg.alignment(pair_img, txt),
            "uniformity_image": dg.uniformity(img),
            "uniformity_text": dg.uniformity(txt),
            "temperature": 1.0 / float(scale),
            "logit_scale": float(scale),
        }
        n = len(txt)
        return [_row(step, "global", "", k, v, NAN, NAN, n) for k, v in values.items()]

    def _task_rows(
        self, enc: Any, task: str, samples: list[Sample], folder: Path
    ) -> list[dict[str, Any]]:
        """Rows of one evaluation task over ``samples``, run as a dataset job (local runner)."""
        import pyarrow.parquet as pq

        from dualex.evaluate.tasks import EvalSettings, get  # registers the evaluation tasks
        from dualex.scale import Job, run_job
        from dualex.scale.settings import to_settings

        st = EvalSettings(methods=("dualex",), steps=self.nodes, layers=self.layers)
        unused = st.unused(get(task).settings) | {"limit"}  # monitor jobs never recorded one
        job = Job(
            model=str(enc.name),
            data="<monitor samples>",
            task=task,
            methods=st.methods,
            settings=to_settings(st, omit=unused),
        )
        result = run_job(job, folder, samples=samples, model=enc, progress=False)
        if not result.rows.is_file():
            return []
        return [r for r in pq.read_table(result.rows).to_pylist() if not r["error"]]

    def _grounding_rows(self, trainable: Any, step: int) -> list[dict[str, Any]]:
        import tempfile

        if not self.chosen:
            return []
        enc = trainable.wrap()
        # the caption is explained once; word mentions are extra slices of it
        g_samples = [_with_words(s) for _, s in self.chosen]
        m_samples = [s for _, s in self.chosen if s.negatives]
        with tempfile.TemporaryDirectory(prefix="dualex-monitor-") as tmp:
            base = (self.folder if self.folder is not None else Path(tmp)) / f"step-{step:06d}"
            g_rows = self._task_rows(enc, "grounding", g_samples, base / "grounding")
            m_rows = (
                self._task_rows(enc, "mismatch", m_samples, base / "mismatch") if m_samples else []
            )
        phrases = [r for r in g_rows if ":" not in r["label"]]
        words = [dict(r, label=r["label"].partition(":")[2]) for r in g_rows
                 if r["label"].startswith("word:")]  # fmt: skip
        colours = [dict(r, label=r["label"].partition(":")[2]) for r in g_rows
                   if r["label"].startswith("colour:")]  # fmt: skip
        rows: list[dict[str, Any]] = []
        errors = sorted(float(r["completeness"]) for r in g_rows
                        if math.isfinite(float(r["completeness"])))  # fmt: skip
        if errors:  # the explanations' measured relative completeness error, per mention
            mid = errors[len(errors) // 2] if len(errors) % 2 else (
                errors[len(errors) // 2 - 1] + errors[len(errors) // 2]) / 2  # fmt: skip
            rows.append(_row(step, "global", "", "completeness_max", errors[-1], NAN, NAN,
                             len(errors)))  # fmt: skip
            rows.append(_row(step, "global", "", "completeness_median", mid, NAN, NAN,
                             len(errors)))  # fmt: skip
        rows += _table_rows(step, "global", phrases, ("method",), GROUNDING_METRICS, self.seed)
        for group, table in (("class", phrases), ("word", words), ("colour", colours)):
            rows += _table_rows(step, group, table, ("label",), GROUNDING_METRICS, self.seed)
        if m_rows:
            rows += _table_rows(step, "global", m_rows, ("method",), MISMATCH_METRICS, self.seed)
            rows += _table_rows(step, "kind", m_rows, ("kind",), MISMATCH_METRICS, self.seed)
        return rows

    # -- example picks ----------------------------------------------------------------------

    def example_picks(self, timeline: list[dict[str, Any]], step: int, worst: int = 3
                      ) -> list[tuple[str, int]]:  # fmt: skip
        """The ``worst`` classes by pointing at ``step``, each with its first held-out caption
        that mentions it and was not picked for a worse class (distinct captions: a class
        with no caption left is skipped)."""
        table = [r for r in timeline if r["step"] == step and r["group"] == "class"
                 and r["metric"] == "pointing" and math.isfinite(r["value"])]  # fmt: skip
        table.sort(key=lambda r: (r["value"], r["cls"]))
        order = [i for i, _ in self.chosen]
        first = set(order)
        order += [i for i in range(len(self.samples)) if i not in first]
        picks: list[tuple[str, int]] = []
        taken: set[str] = set()
        for r in table:
            if len(picks) == worst:
                break
            for i in order:
                s = self.samples[i]
                if s.caption not in taken and any(m.label == r["cls"] for m in s.mentions):
                    picks.append((r["cls"], i))
                    taken.add(s.caption)
                    break
        return picks


def _image_groups(chosen: list[tuple[int, Sample]]) -> Iterator[list[tuple[int, Sample]]]:
    group: list[tuple[int, Sample]] = []
    for i, s in chosen:
        if group and s.image_id != group[-1][1].image_id:
            yield group
            group = []
        group.append((i, s))
    if group:
        yield group


def _row(step: int, group: str, cls: str, metric: str, value: float, lo: float, hi: float,
         n: int) -> dict[str, Any]:  # fmt: skip
    return {"step": step, "group": group, "cls": cls, "metric": metric, "value": float(value),
            "lo": float(lo), "hi": float(hi), "n": int(n)}  # fmt: skip


def _table_rows(step: int, group: str, rows: list[dict[str, Any]], by: tuple[str, ...],
                metrics: tuple[str, ...], seed: int) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for t in group_table(rows, by, metrics, seed=seed):
        cls = "" if group == "global" else str(t[by[0]])
        for m in metrics:
            out.append(_row(step, group, cls, m, t[m], t[f"{m}_lo"], t[f"{m}_hi"], t["n"]))
    return out


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write timeline rows to a Parquet file (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dualex.io import atomic_write

    table = pa.Table.from_pylist(rows)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file ([] when there is none)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(path)).to_pylist() if path.is_file() else []


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t
