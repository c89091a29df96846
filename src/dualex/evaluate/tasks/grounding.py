"""The grounding task: does each mention's map land on the mention's boxes?

Rows keyed by ``(method, sample_id, mention)``: the pointing game and energy in box of the
mention's image map, and, for methods that score text tokens (second order, or methods with
caption scores such as ``random``), the image→text pointing and energy of the mention's boxes
over the caption's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dualex.data.types import Sample
from dualex.errors import DualexError, SettingError
from dualex.evaluate import metrics as mt
from dualex.evaluate.methods import get
from dualex.evaluate.tasks.common import (
    NAN,
    EvalSettings,
    base_row,
    each_mention,
)

__all__ = ["KEY", "grounding_rows"]

KEY = ("method", "sample_id", "mention")
"""Columns that identify a grounding row."""


def _cols(pos: Any, mask: np.ndarray) -> list[int]:
    return [pos.prefix + int(i) for i in np.flatnonzero(mask.reshape(-1))]


def grounding_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
) -> list[dict[str, Any]]:
    """Rows of every (method, mention) of samples that share one image.

    Args:
        model: A :class:`dualex.DualEncoder`.
        group: ``(stream index, sample)`` pairs; all share the first sample's image.
        settings: Run settings.

    Returns:
        One dict per (method variant, mention): ``method, idx, sample_id, image_id, mention,
        label, phrase, text_input, n_boxes, pointing, energy, text_pointing, text_energy,
        steps, completeness, score, source, domain, n_objects, error`` (no timings, so
        that reruns and other backends give identical rows).
    """
    rows: list[dict[str, Any]] = []
    if not group:
        return rows
    image = model.tower_b.prepare(group[0][1].image)  # once: the methods take it prepared
    image_pos = image.positions
    for variant, idx, s, k, (attr, span) in each_mention(model, group, settings, image):
        base = base_row(s, idx)
        mention = s.mentions[k]
        boxes = mt.mention_targets(mention)
        mask = mt.box_mask(image_pos, boxes)
        row = dict(
            base,
            method=variant.label,
            mention=k,
            label=mention.label,
            phrase=s.caption[slice(*mention.span)],
            text_input=variant.text_input,
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
            if isinstance(attr, DualexError):
                raise attr
            if not mask.any():
                raise SettingError("no patch of the model's crop lies in the boxes")
            hm = attr.map_for(span)
            row["pointing"] = mt.pointing_game(hm, boxes, image_pos)
            row["energy"] = mt.energy_in_box(hm, boxes, image_pos)
            row.update(
                steps=attr.steps,
                completeness=attr.completeness,
                score=attr.score,
            )
            scores, span_idx, special = None, None, None
            if attr.matrix is not None and span is not None:
                scores = attr.scores_for(_cols(image_pos, mask))
                span_idx, special = attr.rows(span), attr.text.special
            elif (caption_scores := get(variant.method).caption_scores) is not None:
                text, scores = caption_scores(model, s.caption, f"{base['sample_id']}/{k}")
                span_idx, special = text.span_indices(mention.span), text.special
            if scores is not None:
                row["text_pointing"] = mt.text_pointing(scores, span_idx, special)
                row["text_energy"] = mt.text_energy(scores, span_idx, special)
        except DualexError as err:
            row["error"] = str(err)
        rows.append(row)
    return rows
