"""Index a dataset (without decoding it) and cut it into shards by image.

Every sample becomes a JSON record: its stream index ``idx``, caption, mentions, negatives, ids,
meta and the path of its :class:`~dualex.data.types.ImageRef`. Records travel to workers as JSON
and become samples again there, so the worker decodes only its own images.

Shards are formed by image: all captions of an image land in one shard, in stream order, so the
image is decoded and projected once per shard. Consecutive images are packed into a shard until it
holds at least ``shard_size`` samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dualex.data.types import ImageRef, Mention, Negative, Sample, is_generated

__all__ = ["Plan", "from_record", "make_plan", "to_record"]


def to_record(idx: int, sample: Sample) -> dict[str, Any]:
    """A sample as a JSON-serialisable record (without decoding its image).

    ``image`` is the reference's path (absolute for a file), or ``None`` for a sample holding an
    in-memory image.
    """
    ref = sample.image_ref
    path = None
    if ref is not None:
        # file paths become absolute: workers (and a later report) may run in another folder
        path = ref.path if is_generated(ref.path) else os.path.abspath(ref.path)
    return {
        "idx": int(idx),
        "image": path,
        "caption": sample.caption,
        "mentions": [[list(m.span), [list(b) for b in m.boxes], m.label] for m in sample.mentions],
        "negatives": [
            [n.caption, n.kind, list(n.span), list(n.original_span) if n.original_span else None]
            for n in sample.negatives
        ],
        "image_id": sample.image_id,
        "caption_id": sample.caption_id,
        "meta": sample.meta,
    }


def from_record(rec: dict[str, Any], image: Any = None) -> tuple[int, Sample]:
    """Inverse of :func:`to_record`: ``(idx, sample)``.

    Args:
        rec: The record.
        image: The image to use when the record has no reference (an in-memory sample), or a
            shared :class:`ImageRef` (so captions of one image decode it once).
    """
    if image is None:
        image = ImageRef(rec["image"])
    sample = Sample(
        image=image,
        caption=rec["caption"],
        mentions=[
            Mention(span=(sp[0], sp[1]), boxes=tuple(tuple(b) for b in boxes), label=label)
            for sp, boxes, label in rec["mentions"]
        ],
        negatives=[
            Negative(
                caption=cap,
                kind=kind,
                span=(sp[0], sp[1]),
                original_span=(orig[0], orig[1]) if orig else None,
            )
            for cap, kind, sp, orig in rec["negatives"]
        ],
        image_id=rec["image_id"],
        caption_id=rec["caption_id"],
        meta=rec["meta"],
    )
    return int(rec["idx"]), sample


@dataclass
class Plan:
    """The shards of a job.

    Attributes:
        shards: Per shard, its records (JSON), grouped by image in stream order.
        digest: SHA-256 of every record (the samples, their order and their image paths).
        images: In-memory images of samples without a reference, by ``idx`` (local runner only).
    """

    shards: list[list[dict[str, Any]]]
    digest: str
    images: dict[int, Any] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Samples over all shards."""
        return sum(len(s) for s in self.shards)

    def payload(self, shard: int) -> str:
        """A shard's records as one JSON string (what a Ray worker receives)."""
        return json.dumps(self.shards[shard])

    def samples(self, shard: int) -> list[tuple[int, Sample]]:
        """A shard's ``(idx, sample)`` pairs, one :class:`ImageRef` per image."""
        return samples_of(self.shards[shard], self.images)


def samples_of(
    records: list[dict[str, Any]], images: dict[int, Any] | None = None
) -> list[tuple[int, Sample]]:
    """Samples of a shard's records; captions of one image share one reference."""
    refs: dict[str, ImageRef] = {}
    out = []
    for rec in records:
        if rec["image"] is None:
            image = (images or {})[int(rec["idx"])]
        else:
            image = refs.setdefault(rec["image"], ImageRef(rec["image"]))
        out.append(from_record(rec, image))
    return out


def make_plan(
    samples: Iterable[Sample],
    *,
    shard_size: int = 8,
    limit: int | None = None,
) -> Plan:
    """Index samples into shards.

    Args:
        samples: The samples (a loader's iterator; images are not decoded).
        shard_size: Fewest samples per shard (a shard ends at the first image boundary after it
            reaches this size; the last shard may be smaller).
        limit: Read at most this many samples of the stream.

    Returns:
        The plan.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    images: dict[int, Any] = {}
    h = hashlib.sha256()
    for idx, s in enumerate(samples):
        if limit is not None and idx >= limit:
            break
        rec = to_record(idx, s)
        if rec["image"] is None:
            images[idx] = s.image
            h.update(f"<in-memory {s.image.size}>".encode())
        h.update(json.dumps(rec, sort_keys=True, default=str).encode())
        groups.setdefault(s.image_id or f"#{idx}", []).append(rec)
    shards: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for recs in groups.values():
        current.extend(recs)
        if len(current) >= shard_size:
            shards.append(current)
            current = []
    if current:
        shards.append(current)
    return Plan(shards=shards, digest=h.hexdigest(), images=images)
