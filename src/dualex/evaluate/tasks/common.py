"""What every evaluation task shares: its settings, the identity columns of a row, and the one
way a task asks a method for per-mention maps.

A task turns the samples of one image (a *group*: a shard holds whole images) into rows. It asks
:func:`mention_attributions` for every (method variant, mention): second-order methods explain
each caption once and the task slices the mention's rows; first-order methods explain the
caption or the mention's phrase, as the variant says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dualex.data.types import Sample
from dualex.errors import DualexError, SettingError
from dualex.evaluate.methods import METHODS, get
from dualex.evaluate.methods.base import Attribution
from dualex.scale.settings import job_field

__all__ = [
    "PROTOCOLS",
    "EvalSettings",
    "Variant",
    "base_row",
    "each_mention",
    "mention_attributions",
    "n_objects",
    "variants",
]

NAN = float("nan")

PROTOCOLS = ("dualex", "fixlip")
"""Evaluation protocols: dualex's own and FIxLIP's (``EvalSettings.protocol``)."""

TEXT_ABSENT = {"dualex": "reference", "fixlip": "attention"}
"""How each protocol masks an absent token (:mod:`dualex.masking`)."""


@dataclass(frozen=True)
class EvalSettings:
    """Settings of an evaluation run.

    Attributes:
        methods: Methods to run (names of :data:`dualex.evaluate.methods.METHODS`).
        text: What first-order methods explain: ``"span"`` (each mention's phrase alone),
            ``"caption"`` (the whole text, as FIxLIP's table), or ``"both"`` (two rows per
            method; the phrase variant is named ``<method>-span``).
        layers: dualex split layer(s) (``None``: the last block's input).
        steps: dualex quadrature nodes (``None``: adaptive).
        batch: Fewest samples per shard (one Parquet part each; whole images per shard).
        limit: Most samples to read from the source (``None``: all).
        shard: ``(i, n)``: this run takes shards ``i, i + n, ...`` of the plan.
        budget: Coalitions sampled per explanation by ``banzhaf``.
        coalitions: Coalitions sampled per sample and size law by the faithfulness task.
        seed: Seed of every sampled quantity (coalitions, random maps).
        protocol: ``"dualex"`` (dualex's own protocol) or ``"fixlip"`` (FIxLIP's: tokens
            masked by their attention-mask entries, grids scored per image over single-token
            class names, faithfulness on FIxLIP's coalition laws and counts in logit units
            minus ``v(∅)``; see docs/results.md).
    """

    methods: tuple[str, ...] = job_field(("dualex", "random"), job=False)  # in Job.methods
    text: str = "span"
    layers: int | tuple[int, int] | None = None
    steps: int | None = None
    batch: int = job_field(8, key="shard_size")
    limit: int | None = None
    shard: tuple[int, int] = job_field((0, 1), job=False)  # which shards this process runs
    budget: int = 1024
    coalitions: int = 128
    seed: int = 0
    protocol: str = "dualex"

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise SettingError(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if self.text not in ("span", "caption", "both"):
            raise SettingError(f"text must be 'span', 'caption' or 'both', got {self.text!r}")
        i, n = self.shard
        if not (n >= 1 and 0 <= i < n):
            raise SettingError(f"shard {i}/{n} is invalid; pass i/n with 0 <= i < n")
        if self.batch < 1:
            raise SettingError("batch must be >= 1")
        if self.protocol not in PROTOCOLS:
            raise SettingError(f"protocol={self.protocol!r}; choose from {', '.join(PROTOCOLS)}")
        if self.coalitions < 8:
            raise SettingError(f"coalitions must be >= 8, got {self.coalitions}")
        for name in self.methods:  # refused before a run writes
            check = get(name).check_settings
            if check is not None:
                check(self)

    @property
    def text_absent(self) -> str:
        """How the protocol masks an absent token (:data:`TEXT_ABSENT`)."""
        return TEXT_ABSENT[self.protocol]

    def unused(self, task_reads: Sequence[str] = ()) -> set[str]:
        """Fields a job of these settings does not record (:func:`dualex.scale.to_settings`):
        ``budget`` unless a method takes it, the task's own settings
        (``task_reads``, e.g. faithfulness's ``coalitions`` and ``seed``) unless it reads them,
        and the protocol when it is dualex's (so jobs keep the settings they always had)."""
        out = {"coalitions", "seed"} - set(task_reads)
        if not any("budget" in get(m).settings for m in self.methods):
            out.add("budget")
        if self.protocol == "dualex":
            out.add("protocol")
        return out

    def options(self, method: str) -> dict[str, Any]:
        """Keyword options of ``method`` taken from these settings (the ones it declares)."""
        return {name: getattr(self, name) for name in get(method).settings}


@dataclass(frozen=True)
class Variant:
    """One column of results: a method and what text it explains.

    Attributes:
        label: The ``method`` value of the rows (e.g. ``gae`` or ``gae-span``).
        method: The method's registry name.
        text_input: ``"caption"`` (tasks slice or reuse the caption's attribution) or ``"span"``
            (the mention's phrase is explained as the whole text).
    """

    label: str
    method: str
    text_input: str


def variants(settings: EvalSettings) -> list[Variant]:
    """The method variants a run computes, in order."""
    out: list[Variant] = []
    for name in settings.methods:
        m = get(name)
        if m.text_input in ("caption", "span"):
            out.append(Variant(name, name, m.text_input))
        elif settings.text == "both":
            out += [Variant(name, name, "caption"), Variant(f"{name}-span", name, "span")]
        else:
            out.append(Variant(name, name, settings.text))
    return out


def n_objects(sample: Sample) -> int:
    """Objects in the image: the synthetic world's count, else the distinct mentioned boxes."""
    if "objects" in sample.meta:
        return len(sample.meta["objects"])
    return len({tuple(b) for m in sample.mentions for b in m.boxes})


def base_row(sample: Sample, idx: int) -> dict[str, Any]:
    """The identity columns of a sample's rows."""
    return {
        "idx": idx,
        "sample_id": sample.caption_id or f"{sample.image_id}#{idx}",
        "image_id": sample.image_id,
        "source": str(sample.meta.get("source", "synthetic")),
        "domain": str(sample.meta.get("domain", "")),
        "n_objects": n_objects(sample),
    }


Found = tuple[Attribution | DualexError, Any]
"""An attribution (or the error that stopped it) and the span to read from it (``None``: all)."""


def mention_attributions(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    variant: Variant,
    settings: EvalSettings,
    image: Any = None,
) -> dict[tuple[int, int], Found]:
    """Attributions of every mention of samples that share one image.

    Args:
        model: A :class:`dualex.DualEncoder`.
        group: ``(stream index, sample)`` pairs sharing the first sample's image.
        variant: The method variant.
        settings: Run settings (method options).
        image: The group's image as the task prepared it (``model.tower_b.prepare``, so that
            no method prepares it again); ``None``: the first sample's image.

    Returns:
        ``{(j, k): (attribution or error, span)}``; read a map with
        ``attribution.map_for(span)``.
    """
    method = get(variant.method)
    if image is None:
        image = group[0][1].image
    keys = [(j, k) for j, (_, s) in enumerate(group) for k in range(len(s.mentions))]
    if not keys:
        return {}
    opts = settings.options(variant.method)
    out: dict[tuple[int, int], Found] = {}
    if variant.text_input == "caption":
        js = sorted({j for j, _ in keys})
        texts = [group[j][1].caption for j in js]
        if method.seeded:
            opts = dict(opts, seeds=[base_row(group[j][1], group[j][0])["sample_id"] for j in js])
        try:
            found: list[Any] = method(model, image, texts, **opts)
        except DualexError as err:
            found = [err] * len(js)
        by_j = dict(zip(js, found, strict=True))
        for j, k in keys:
            out[(j, k)] = (by_j[j], group[j][1].mentions[k].span)
        return out
    phrases = [group[j][1].caption[slice(*group[j][1].mentions[k].span)] for j, k in keys]
    if method.seeded:
        opts = dict(
            opts, seeds=[f"{base_row(group[j][1], group[j][0])['sample_id']}/{k}" for j, k in keys]
        )
    try:
        found = method(model, image, phrases, **opts)
    except DualexError as err:
        found = [err] * len(keys)
    for key, a in zip(keys, found, strict=True):
        out[key] = (a, None)
    return out


def each_mention(
    model: Any,
    group: Sequence[tuple[int, Sample]],
    settings: EvalSettings,
    image: Any = None,
) -> Iterator[tuple[Variant, int, Sample, int, Found]]:
    """Every (variant, mention) of a group, with its attribution (``image``: see
    :func:`mention_attributions`).

    Yields:
        ``(variant, stream index, sample, mention index, (attribution or error, span))`` in
        variant, then sample, then mention order.
    """
    for variant in variants(settings):
        found = mention_attributions(model, group, variant, settings, image)
        for (j, k), item in sorted(found.items(), key=lambda kv: kv[0]):
            yield variant, group[j][0], group[j][1], k, item
