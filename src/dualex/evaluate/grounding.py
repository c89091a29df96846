"""Dataset runs: grounding of every mention by every method, and hard-negative mismatch.

Both runs are dataset jobs (:mod:`dualex.scale`): rows keyed by ``(method, sample_id, mention)``
or ``(method, sample_id, negative)``, computed shard by shard (whole images, at least ``batch``
samples each), each shard committed as one Parquet part, so a kill loses at most the shards in
progress and a re-run resumes. They run in-process or on Ray (``backend="ray"``).

dualex explains each caption once (projections via :func:`dualex.project`, so the captions of one
image share its projection) and slices every mention from that explanation; a baseline runs once
per mention with the mention's phrase (``text="span"``) or the full caption (``text="caption"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dualex.data.types import Sample
from dualex.errors import DualexError, SettingError
from dualex.evaluate import metrics as mt

__all__ = [
    "GROUNDING_KEY",
    "METHODS",
    "MISMATCH_KEY",
    "EvalSettings",
    "grounding_rows",
    "mismatch_rows",
]

METHODS = ("dualex", "dualex-span", "ig", "gae", "maskclip", "gradeclip", "surgery", "random")
"""Method names of ``--methods`` (``dualex-span``: dualex with the mention's phrase as the whole
text, the baselines' setting; ``dualex`` explains the full caption and slices the mention)."""

GROUNDING_KEY = ("method", "sample_id", "mention")
MISMATCH_KEY = ("method", "sample_id", "negative")
NAN = float("nan")


@dataclass(frozen=True)
class EvalSettings:
    """Settings of a dataset run.

    Attributes:
        methods: Methods to run (names of :data:`METHODS`).
        text: ``"span"`` (baselines get the mention's phrase) or ``"caption"``.
        layers: dualex split layer(s) (``None``: the last block's input).
        steps: dualex quadrature nodes (``None``: adaptive).
        batch: Fewest samples per shard (one Parquet part each; whole images per shard).
        limit: Most samples to read from the source (``None``: all).
        shard: ``(i, n)``: this run takes shards ``i, i + n, ...`` of the plan.
    """

    methods: tuple[str, ...] = ("dualex", "random")
    text: str = "span"
    layers: int | tuple[int, int] | None = None
    steps: int | None = None
    batch: int = 8
    limit: int | None = None
    shard: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise SettingError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if self.text not in ("span", "caption"):
            raise SettingError(f"text must be 'span' or 'caption', got {self.text!r}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise SettingError(f"shard {i}/{n} is invalid; pass i/n with 0 <= i < n")
        if self.batch < 1:
            raise SettingError("batch must be >= 1")


def _base(sample: Sample, idx: int) -> dict[str, Any]:
    return {
        "idx": idx,
        "sample_id": sample.caption_id or f"{sample.image_id}#{idx}",
        "image_id": sample.image_id,
        "source": str(sample.meta.get("source", "synthetic")),
        "domain": str(sample.meta.get("domain", "")),
        "n_objects": _n_objects(sample),
    }


def _n_objects(sample: Sample) -> int:
    """Objects in the image: the synthetic world's count, else the distinct mentioned boxes."""
    if "objects" in sample.meta:
        return len(sample.meta["objects"])
    return len({tuple(b) for m in sample.mentions for b in m.boxes})


def _text_cols(pos: Any, mask: np.ndarray) -> list[int]:
    return [pos.prefix + int(i) for i in np.flatnonzero(mask.reshape(-1))]


def grounding_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
    skip: Callable[[str, str, int], bool] = lambda m, s, k: False,
) -> list[dict[str, Any]]:
    """Rows of every (method, mention) of samples that share one image.

    Args:
        model: A :class:`dualex.DualEncoder`.
        group: ``(stream index, sample)`` pairs; all share the first sample's image.
        settings: Run settings.
        skip: ``skip(method, sample_id, mention)`` → True for rows already written.

    Returns:
        One dict per (method, mention): ``method, idx, sample_id, image_id, mention, label,
        phrase, text_input, n_boxes, pointing, energy, text_pointing, text_energy, steps,
        completeness, score, source, domain, error``.
    """
    import dualex
    from dualex.evaluate.baselines import BASELINES
    from dualex.evaluate.baselines.first_order import IG_STEPS, random_scores

    rows: list[dict[str, Any]] = []
    todo = [
        (i, s)
        for i, s in group
        if any(
            not skip(m, _base(s, i)["sample_id"], k)
            for m in settings.methods
            for k in range(len(s.mentions))
        )
    ]
    if not todo:
        return rows
    image = todo[0][1].image
    proj = None
    if "dualex" in settings.methods:
        try:
            proj = dualex.project(
                model,
                texts=[s.caption for _, s in todo],
                images=[image],
                layers=settings.layers,
                steps=settings.steps,
            )
        except DualexError as err:
            proj = err
    span_proj: Any = None
    span_index: dict[tuple[int, int], int] = {}
    if "dualex-span" in settings.methods:
        phrases: list[str] = []
        for j, (_, s) in enumerate(todo):
            for k, mention in enumerate(s.mentions):
                span_index[(j, k)] = len(phrases)
                phrases.append(s.caption[slice(*mention.span)])
        try:
            span_proj = dualex.project(
                model, texts=phrases, images=[image], layers=settings.layers, steps=settings.steps
            )
        except DualexError as err:
            span_proj = err
    image_pos = model.tower_b.prepare(image).positions
    for j, (idx, s) in enumerate(todo):
        base = _base(s, idx)
        ex = proj.explanation(j, 0) if isinstance(proj, dualex.Projections) else None
        for k, mention in enumerate(s.mentions):
            phrase = s.caption[slice(*mention.span)]
            text_in = phrase if settings.text == "span" else s.caption
            boxes = mt.mention_targets(mention)
            mask = mt.box_mask(image_pos, boxes)
            for method in settings.methods:
                if skip(method, base["sample_id"], k):
                    continue
                row = dict(
                    base,
                    method=method,
                    mention=k,
                    label=mention.label,
                    phrase=phrase,
                    text_input=(
                        "caption"
                        if method == "dualex"
                        else "span"
                        if method in ("dualex-span", "random")
                        else settings.text
                    ),
                    n_boxes=len(boxes),
                    pointing=NAN,
                    energy=NAN,
                    text_pointing=NAN,
                    text_energy=NAN,
                    steps=-1,
                    completeness=NAN,
                    score=NAN,
                    error="",
                )
                try:
                    if not mask.any():
                        raise SettingError("no patch of the model's crop lies in the boxes")
                    scores = None
                    if method == "dualex":
                        if not isinstance(proj, dualex.Projections):
                            raise proj  # type: ignore[misc]
                        assert ex is not None
                        m, text, _ = ex.text_image()
                        rows_idx = text.span_indices(mention.span)
                        hm = m[rows_idx].sum(0)[image_pos.patch_slice].reshape(image_pos.grid)
                        scores = m[:, _text_cols(image_pos, mask)].sum(1)
                        special, span_idx = text.special, rows_idx
                        c = ex.completeness
                        row.update(steps=max(c.steps), completeness=c.relative_error, score=c.score)
                    elif method == "dualex-span":
                        if not isinstance(span_proj, dualex.Projections):
                            raise span_proj  # type: ignore[misc]
                        ex_span = span_proj.explanation(span_index[(j, k)], 0)
                        m, text, _ = ex_span.text_image()
                        content = [i for i, sp in enumerate(text.special) if not sp]
                        hm = m[content].sum(0)[image_pos.patch_slice].reshape(image_pos.grid)
                        c = ex_span.completeness
                        row.update(steps=max(c.steps), completeness=c.relative_error, score=c.score)
                    elif method == "random":
                        seed = f"{base['sample_id']}/{k}"
                        hm = BASELINES["random"](model, image, phrase, seed=seed)
                        text = model.tower_a.prepare(s.caption).positions
                        span_idx = text.span_indices(mention.span)
                        scores = torch.from_numpy(random_scores(len(text), seed))
                        special = text.special
                    else:
                        hm = BASELINES[method](model, image, text_in)
                        if method == "ig":
                            row["steps"] = IG_STEPS
                    row["pointing"] = mt.pointing_game(hm, boxes, image_pos)
                    row["energy"] = mt.energy_in_box(hm, boxes, image_pos)
                    if scores is not None:
                        row["text_pointing"] = mt.text_pointing(scores, span_idx, special)
                        row["text_energy"] = mt.text_energy(scores, span_idx, special)
                except DualexError as err:
                    row["error"] = str(err)
                rows.append(row)
    return rows


def mismatch_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
    skip: Callable[[str, str, int], bool] = lambda m, s, k: False,
) -> list[dict[str, Any]]:
    """Rows of every hard negative of samples that share one image (method ``dualex``).

    Each row: the mismatched span's summed interaction (``mismatch``), the mean over the
    negative's unchanged mentions (``matched``), the original span in the positive caption
    (``positive``), indicators ``below_matched`` / ``below_positive``, the two scores and
    ``prefers_positive`` (the model scores the positive caption higher).
    """
    import dualex

    rows: list[dict[str, Any]] = []
    for idx, s in group:
        base = _base(s, idx)
        todo = [k for k in range(len(s.negatives)) if not skip("dualex", base["sample_id"], k)]
        if not todo:
            continue
        try:
            proj = dualex.project(
                model,
                texts=[s.caption] + [s.negatives[k].caption for k in todo],
                images=[s.image],
                layers=settings.layers,
                steps=settings.steps,
            )
        except DualexError as err:
            proj = err
        for j, k in enumerate(todo):
            neg = s.negatives[k]
            row = dict(
                base,
                method="dualex",
                negative=k,
                kind=neg.kind,
                label=_label_at(s, neg),
                phrase=neg.caption[slice(*neg.span)],
                mismatch=NAN,
                matched=NAN,
                positive=NAN,
                below_matched=NAN,
                below_positive=NAN,
                score_positive=NAN,
                score_negative=NAN,
                prefers_positive=NAN,
                error="",
            )
            try:
                if not isinstance(proj, dualex.Projections):
                    raise proj
                ex_pos, ex_neg = proj.explanation(0, 0), proj.explanation(j + 1, 0)
                m_pos, t_pos, _ = ex_pos.text_image()
                m_neg, t_neg, _ = ex_neg.text_image()
                orig = neg.original_span or neg.span
                matched = []
                for mention in s.mentions:
                    shifted = mt.shift_span(mention.span, neg, s.caption)
                    if shifted is not None:
                        matched.append(t_neg.span_indices(shifted))
                row.update(
                    mt.mismatch(
                        m_neg,
                        t_neg.span_indices(neg.span),
                        matched,
                        m_pos,
                        t_pos.span_indices(orig),
                    )
                )
                sp, sn = ex_pos.score, ex_neg.score
                row.update(score_positive=sp, score_negative=sn, prefers_positive=float(sp > sn))
            except DualexError as err:
                row["error"] = str(err)
            rows.append(row)
    return rows


def _label_at(s: Sample, neg: Any) -> str:
    if neg.original_span is None:
        return ""
    a, b = neg.original_span
    for m in s.mentions:
        if m.span[0] < b and m.span[1] > a:
            return m.label
    return ""
