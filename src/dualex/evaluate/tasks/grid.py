"""The grid task: FIxLIP's pointing game on 2×2 grids (Baniecki et al., 2025).

Each sample is a grid of 1–4 objects whose text names them, one phrase each
(:mod:`dualex.data.grid`). For every mention, a method's map over the image patches (CLS
excluded) is scored against the mention's quadrant by the mass ratio and the sign ratio
(:func:`dualex.evaluate.metrics.mass_ratio`, :func:`~dualex.evaluate.metrics.sign_ratio`).
Second-order methods explain the whole text once and give each phrase its own rows; first-order
methods get the whole text (FIxLIP's setting: the same map for every phrase) and, as
``<method>-span``, each phrase alone.

Rows keyed by ``(method, sample_id, mention)``; :func:`summary` makes one row per method ×
number of objects with bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from dualex.data.types import Sample
from dualex.errors import DualexError, InvalidInputError
from dualex.evaluate import metrics as mt
from dualex.evaluate.tasks.common import (
    NAN,
    EvalSettings,
    base_row,
    each_mention,
)

__all__ = ["KEY", "METRICS", "PARTS", "grid_rows", "per_image", "summary"]

KEY = ("method", "sample_id", "mention")
"""Columns that identify a grid row."""

METRICS = ("mass_ratio", "sign_ratio", "pointing")
"""Per-mention metrics of the grid task."""

PARTS = ("mass_right", "mass_total", "sign_right", "sign_total")
"""Numerators and denominators of the ratios, for FIxLIP's per-image aggregation."""


def grid_rows(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
) -> list[dict[str, Any]]:
    """Rows of every (method variant, mention) of the samples of one grid image.

    Args:
        model: A :class:`dualex.DualEncoder` with an image tower.
        group: ``(stream index, sample)`` pairs sharing one image.
        settings: Run settings (``text``: ``caption``, ``span`` or ``both`` for first-order
            methods).

    Returns:
        One dict per (method variant, mention): ``method, idx, sample_id, image_id, mention,
        label, phrase, text_input, objects, mass_ratio, sign_ratio, pointing, seconds, steps,
        score, completeness, source, domain, n_objects, error``.
    """
    rows: list[dict[str, Any]] = []
    if not group:
        return rows
    image = model.tower_b.prepare(group[0][1].image)  # once: the methods take it prepared
    image_pos = image.positions
    fixlip = settings.protocol == "fixlip"
    for variant, idx, s, k, (attr, span) in each_mention(model, group, settings, image):
        base = base_row(s, idx)
        mention = s.mentions[k]
        row = dict(
            base,
            method=variant.label,
            mention=k,
            label=mention.label,
            phrase=s.caption[slice(*mention.span)],
            text_input=variant.text_input,
            objects=base["n_objects"],
            mass_ratio=NAN,
            sign_ratio=NAN,
            pointing=NAN,
            seconds=NAN,
            steps=-1,
            score=NAN,
            completeness=NAN,
            error="",
            protocol=settings.protocol,
            **dict.fromkeys(PARTS, NAN),
        )
        try:
            if isinstance(attr, DualexError):
                raise attr
            if fixlip and _tokens(model, mention.label) != 1:
                raise InvalidInputError(
                    f"{mention.label!r} is not one token; the fixlip protocol drops such classes"
                )
            hm = attr.map_for(span)
            inside = mt.box_mask(image_pos, list(mention.boxes))
            m_right, m_total = mt.mass_parts(hm, inside)
            s_right, s_total = mt.sign_parts(hm, inside)
            row.update(
                mass_right=m_right,
                mass_total=m_total,
                sign_right=s_right,
                sign_total=s_total,
                mass_ratio=mt.mass_ratio(hm, inside),
                sign_ratio=mt.sign_ratio(hm, inside),
                pointing=mt.pointing_game(hm, list(mention.boxes), image_pos),
                seconds=attr.seconds,
                steps=attr.steps,
                score=attr.score,
                completeness=attr.completeness,
            )
        except DualexError as err:
            row["error"] = str(err)
        rows.append(row)
    return rows


def _tokens(model: Any, phrase: str) -> int:
    """Non-special tokens of a phrase alone."""
    return sum(not sp for sp in model.tower_a.prepare(phrase).positions.special)


def per_image(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """FIxLIP's aggregation: one row per (method, image) whose ratios are the sums of the
    numerators over the image's phrases divided by the sums of the denominators (a phrase's
    ``mass_right / mass_total``, ``sign_right / sign_total``); rows without parts are left out.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if all(isinstance(r.get(p), float | int) and r[p] == r[p] for p in PARTS):
            groups.setdefault((str(r["method"]), str(r["image_id"])), []).append(r)
    out = []
    for (method, image), rs in groups.items():
        sums = {p: float(sum(r[p] for r in rs)) for p in PARTS}
        out.append(
            dict(
                rs[0],
                method=method,
                image_id=image,
                mass_ratio=sums["mass_right"] / sums["mass_total"] if sums["mass_total"] else NAN,
                sign_ratio=sums["sign_right"] / sums["sign_total"] if sums["sign_total"] else NAN,
                seconds=float(np.nanmean([r.get("seconds", NAN) for r in rs])),
                pointing=float(np.nanmean([r.get("pointing", NAN) for r in rs])),
            )
        )
    return out


def summary(rows: Iterable[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One row per method × number of objects.

    Rows of the ``fixlip`` protocol are first aggregated per image (:func:`per_image`), so
    their means are over images; the others' are over mentions.

    Returns:
        Dicts with ``method, objects, n, mass_ratio, sign_ratio`` (means over mentions),
        ``mass_ratio_lo/hi``, ``sign_ratio_lo/hi`` (95 % bootstrap intervals), ``pointing``
        and ``seconds`` (mean time per explanation). ``n`` counts mentions with a value.
    """
    from dualex.evaluate.analysis import bootstrap_ci

    rows = list(rows)
    if any(r.get("protocol") == "fixlip" for r in rows):
        rows = per_image(rows)
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), int(r["objects"])), []).append(r)
    out = []
    for (method, objects), rs in sorted(groups.items()):
        row: dict[str, Any] = {"method": method, "objects": objects}
        mass = bootstrap_ci([r["mass_ratio"] for r in rs], seed=seed)
        sign = bootstrap_ci([r["sign_ratio"] for r in rs], seed=seed)
        point = bootstrap_ci([r["pointing"] for r in rs], seed=seed)
        secs = bootstrap_ci([r.get("seconds") for r in rs], seed=seed)
        row["n"] = mass[3]
        row["mass_ratio"], row["sign_ratio"] = mass[0], sign[0]
        row["mass_ratio_lo"], row["mass_ratio_hi"] = mass[1], mass[2]
        row["sign_ratio_lo"], row["sign_ratio_hi"] = sign[1], sign[2]
        row["pointing"], row["seconds"] = point[0], secs[0]
        out.append(row)
    return out
