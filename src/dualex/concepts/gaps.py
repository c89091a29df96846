"""Knowledge gaps in concept terms: how often a concept's two sides fire together on matching
pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ConceptAgreement", "agreement_rows", "concept_agreement", "firing"]


@dataclass
class ConceptAgreement:
    """Per concept, how its text side and its image side fire on matching pairs.

    A concept *fires* on an input when it is among the top-k of the code of the input's
    ``(e − ē)/‖e‖`` with a positive activation.

    Attributes:
        names: The concepts' labels.
        fires_a: ``[K]`` share of pairs on which it fires on side a (the text, for CLIP).
        fires_b: ``[K]`` share of pairs on which it fires on side b (the image).
        both: ``[K]`` share of pairs on which it fires on both sides.
        pairs: Number of pairs.
    """

    names: list[str]
    fires_a: Tensor
    fires_b: Tensor
    both: Tensor
    pairs: int

    @classmethod
    def from_firing(cls, names: list[str], A: Tensor, B: Tensor) -> ConceptAgreement:
        """The rates of ``[N, K]`` firing matrices of side a and side b (see :func:`firing`)."""
        A, B = A.double(), B.double()
        return cls(
            names=list(names),
            fires_a=A.mean(0),
            fires_b=B.mean(0),
            both=(A * B).mean(0),
            pairs=A.shape[0],
        )

    @property
    def agreement(self) -> Tensor:
        """``[K]`` cross-modal agreement: both sides / either side (NaN when it never fires)."""
        either = self.fires_a + self.fires_b - self.both
        return torch.where(either > 0, self.both / either.clamp_min(1e-12), torch.nan)

    @property
    def gap(self) -> Tensor:
        """``[K]`` the share of side-a firings without side b: a concept the caption carries and
        the image does not (NaN when it never fires on side a)."""
        return torch.where(
            self.fires_a > 0, 1 - self.both / self.fires_a.clamp_min(1e-12), torch.nan
        )

    def gaps(self, n: int = 10, min_rate: float = 0.02) -> list[tuple[int, str, float, float]]:
        """The ``n`` concepts with the largest gap among those firing on at least ``min_rate``
        of side a: ``(index, name, gap, side-a rate)``."""
        g = torch.where(self.fires_a >= min_rate, self.gap, torch.nan)
        order = [int(i) for i in torch.argsort(torch.nan_to_num(g, nan=-1.0), descending=True)]
        return [
            (i, self.names[i], float(g[i]), float(self.fires_a[i]))
            for i in order[:n]
            if not torch.isnan(g[i])
        ]


def concept_agreement(
    concepts: Any,
    model: Any,
    data: Any,
    *,
    pairs: int | None = None,
    batch_size: int = 64,
    same_weights: bool = True,
) -> ConceptAgreement:
    """Measure each concept's cross-modal agreement on matching pairs of a dataset.

    Args:
        concepts: The :class:`dualex.Concepts` of the model.
        model: The dual encoder (checked against the dictionary).
        data: A ``--data`` spec, Samples, ``(a, b)`` pairs or sentences (as for training).
        pairs: Use at most this many pairs.
        batch_size: Inputs per pass.
        same_weights: Refuse a model whose weights differ from the dictionary's. ``False``
            checks only that the embeddings are of the same kinds and size: a model being
            fine-tuned from the dictionary's model is measured in the dictionary's terms.

    Returns:
        A :class:`ConceptAgreement`.

    Raises:
        ModelMismatchError: if the dictionary belongs to another model.
    """
    from dualex.concepts.dictionary import _pairs
    from dualex.model import load

    if isinstance(model, str):
        model = load(model)
    concepts.check(model, weights=same_weights)
    items, _ = _pairs(data, model, pairs)
    A, B = firing(concepts, model, [(p.a, p.b) for p in items], batch_size=batch_size)
    return ConceptAgreement.from_firing(concepts.names, A, B)


def firing(
    concepts: Any, model: Any, pairs: list[tuple[Any, Any]], *, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """Which concepts fire on each side of each pair.

    A concept fires on an input when it is among the top-k of the code of the input's total
    ``(e − ē)/‖e‖`` with a positive activation (the quantity whose split
    :meth:`dualex.Explanation.concept_split` makes).

    Args:
        concepts: The :class:`dualex.Concepts` (not checked against ``model`` here).
        model: The dual encoder.
        pairs: ``N`` matching ``(a, b)`` inputs (caption and image for CLIP).
        batch_size: Inputs per pass.

    Returns:
        ``(A, B)``: ``[N, K]`` booleans, side a and side b.
    """
    from dualex.explainer import project

    fa, fb = [], []
    for start in range(0, len(pairs), 256):
        chunk = pairs[start : start + 256]
        # one node: only the embeddings and the reference embeddings are used
        proj = project(
            model,
            a=[a for a, _ in chunk],
            b=[b for _, b in chunk],
            steps=1,
            batch_size=batch_size,
            progress=False,
        )
        for side, out in ((proj.a, fa), (proj.b, fb)):
            T = torch.stack(
                [
                    (p.embedding.double() - p.reference_embedding.double())
                    / p.embedding.double().norm()
                    for p in side
                ]
            )
            want = concepts.model["embed_dim"]
            if T.shape[1] != want:
                from dualex.errors import ModelMismatchError

                raise ModelMismatchError(
                    f"this concept dictionary is for embeddings of size {want}, the model's "
                    f"are of size {T.shape[1]}; use a dictionary trained on this model"
                )
            out.append(concepts.encode(T) > 0)
    return torch.cat(fa), torch.cat(fb)


def agreement_rows(
    concepts: Any, A: Tensor, B: Tensor, *, n_boot: int = 200, seed: int = 0
) -> list[dict[str, Any]]:
    """Per concept that fires at all, its rates with percentile-bootstrap 95 % intervals
    (pairs resampled): ``fires_a``, ``fires_b``, ``agreement`` and ``gap``.

    Args:
        concepts: The :class:`dualex.Concepts` (for the labels).
        A: ``[N, K]`` booleans: the concept fires on side a of pair n (:func:`firing`).
        B: ``[N, K]`` booleans, side b.
        n_boot: Bootstrap resamples.
        seed: Seed of the resampling.

    Returns:
        Rows ``group="concept", cls="#k label", metric, value, lo, hi, n`` (``n``: the pairs
        the rate is a share of).
    """
    A, B = A.double(), B.double()
    N = A.shape[0]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, N, (n_boot, N), generator=g)
    Ab, Bb = A[idx], B[idx]  # [n_boot, N, K]

    def stats(a: Tensor, b: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        both = (a * b).sum(-2)
        ca, cb = a.sum(-2), b.sum(-2)
        either = ca + cb - both
        nan = torch.full_like(both, math.nan)
        return {
            "fires_a": (ca / a.shape[-2], torch.full_like(ca, a.shape[-2])),
            "fires_b": (cb / a.shape[-2], torch.full_like(cb, a.shape[-2])),
            "agreement": (torch.where(either > 0, both / either.clamp_min(1), nan), either),
            "gap": (torch.where(ca > 0, 1 - both / ca.clamp_min(1), nan), ca),
        }

    point, boot = stats(A, B), stats(Ab, Bb)
    names = concepts.names
    fires = (A.sum(0) + B.sum(0)) > 0
    rows = []
    for k in torch.nonzero(fires).flatten().tolist():
        cls = f"#{k} " + names[k].replace("/", "·")
        for metric, (value, count) in point.items():
            v = float(value[k])
            samples = boot[metric][0][:, k]
            samples = samples[~torch.isnan(samples)]
            if math.isfinite(v) and len(samples):
                lo, hi = (float(q) for q in torch.quantile(samples, torch.tensor([0.025, 0.975],
                                                                                dtype=samples.dtype)))  # fmt: skip
            else:
                lo = hi = math.nan
            rows.append({"group": "concept", "cls": cls, "metric": metric, "value": v,
                         "lo": lo, "hi": hi, "n": int(count[k])})  # fmt: skip
    return rows
