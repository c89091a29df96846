"""The mismatch task: is a hard negative's changed span where dualex's interactions drop?

Rows keyed by ``(method, sample_id, negative)`` (method ``dualex``): the mismatched span's
summed interaction, the mean over the negative's unchanged mentions, the original span in the
positive caption, and whether the model prefers the positive caption.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dualex.data.types import Sample
from dualex.errors import DualexError
from dualex.evaluate import metrics as mt
from dualex.evaluate.tasks.common import NAN, EvalSettings, base_row

__all__ = ["KEY", "mismatch_rows"]

KEY = ("method", "sample_id", "negative")
"""Columns that identify a mismatch row."""


def mismatch_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
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
        base = base_row(s, idx)
        todo = list(range(len(s.negatives)))
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
