"""Second-order attributions of a dual encoder: :func:`explain` and :func:`project`.

The method of Moeller et al., "Explaining Caption-Image Interactions in CLIP Models with
Second-Order Attributions" (TMLR 2025, https://arxiv.org/abs/2408.14153): each tower is split at a
layer; the integrated Jacobian of its suffix along the straight path from a reference hidden state,
contracted with the hidden-state difference, gives a projection ``P: [E, S]`` per input; the
interactions of a pair are ``M = P_aᵀ P_b`` and, with three reference terms, add up to the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dualex.engine.interactions import interactions
from dualex.engine.projection import (
    DEFAULT_MEMORY_BUDGET,
    integrated_projection,
    integrated_total,
)
from dualex.engine.quadrature import canonical_rule, nodes_and_weights
from dualex.errors import InvalidInputError, SettingError
from dualex.explanation import Explanation
from dualex.model import DualEncoder
from dualex.towers.base import Tower, TowerInput
from dualex.towers.positions import Positions

DEFAULT_TOL = 1e-3
"""Per-tower relative quadrature error that adaptive steps aim for."""

DEFAULT_MAX_STEPS = 64
"""Most Gauss–Legendre nodes adaptive steps will use."""


@dataclass
class SideProjection:
    """The projection of one input through one tower; reusable for any pair.

    Attributes:
        P: ``[E, S]`` projection.
        embedding: ``e``, ``[E]``: the embedding of the input.
        reference_embedding: ``ē``, ``[E]``: the suffix at the reference hidden state.
        positions: Metadata of the S positions.
        layer: Split layer.
        steps: Quadrature nodes used.
        rule: Quadrature rule.
        error: ``‖Σ_s P[:, s] − (e − ē)‖ / ‖e − ē‖``.
    """

    P: Tensor
    embedding: Tensor
    reference_embedding: Tensor
    positions: Positions
    layer: int
    steps: int
    rule: str
    error: float
    raw: Any = None


def project_one(
    tower: Tower,
    x: Any,
    *,
    layer: int | None = None,
    steps: int | None = None,
    rule: str | None = None,
    reference: Any = None,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> SideProjection:
    """Project one input through one tower (see :func:`explain` for the arguments).

    Returns:
        The input's :class:`SideProjection`.
    """
    rule = canonical_rule(rule)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise SettingError(f"steps must be a positive integer or None (adaptive), got {steps!r}")
    if not tol > 0:
        raise SettingError(f"tol must be positive, got {tol}")
    layer = tower.check_layer(layer)
    inp: TowerInput = tower.prepare(x)
    with torch.no_grad():  # torch.func transforms still differentiate inside
        return _project_prepared(
            tower, inp, layer, steps, rule, reference, mode, tol, max_steps, memory_budget
        )


def _project_prepared(
    tower: Tower,
    inp: TowerInput,
    layer: int,
    steps: int | None,
    rule: str,
    reference: Any,
    mode: str,
    tol: float,
    max_steps: int,
    memory_budget: int,
) -> SideProjection:
    h = tower.hidden(inp, layer)
    h_ref = tower.reference_hidden(inp, layer, reference)
    suffix = tower.suffix(inp, layer)
    e = suffix(h.unsqueeze(0))[0].detach()
    e_ref = suffix(h_ref.unsqueeze(0))[0].detach()
    diff_norm = float((e - e_ref).double().norm())

    def error_at(n: int) -> float:
        a, w = nodes_and_weights(rule, n)
        total = integrated_total(suffix, h, h_ref, a, w, node_chunk=max(1, min(n, 16)))
        err = float((total.double() - (e - e_ref).double()).norm())
        return err / diff_norm if diff_norm > 0 else err

    if steps is None:
        n = 1 if rule != "trapezoid" else 2
        while True:
            if error_at(n) <= tol or n >= max_steps:
                break
            n = min(n * 2, max_steps)
        steps = n
    alphas, weights = nodes_and_weights(rule, steps)
    P = integrated_projection(
        suffix,
        h,
        h_ref,
        alphas,
        weights,
        mode=mode,
        embed_dim=e.shape[0],
        memory_budget=memory_budget,
    ).detach()
    diff = (e - e_ref).double()
    err = float((P.double().sum(1) - diff).norm()) / (float(diff.norm()) or 1.0)
    return SideProjection(
        P=P,
        embedding=e,
        reference_embedding=e_ref,
        positions=tower.positions_at(inp, layer),
        layer=layer,
        steps=steps,
        rule=rule,
        error=err,
        raw=inp.raw,
    )


def _pair(value: Any, name: str) -> tuple[Any, Any]:
    if isinstance(value, list | tuple) and len(value) == 2 and name != "reference":
        return value[0], value[1]
    if name == "reference" and isinstance(value, tuple) and len(value) == 2:
        return value
    return value, value


def _combine(model: DualEncoder, a: SideProjection, b: SideProjection, scale: bool) -> Explanation:
    M, comp = interactions(
        a.P,
        b.P,
        a.embedding,
        a.reference_embedding,
        b.embedding,
        b.reference_embedding,
        similarity=model.similarity,
        logit_scale=model.logit_scale if scale else None,
        steps=(a.steps, b.steps),
        rule=a.rule,
    )
    return Explanation(
        matrix=M,
        a=a.positions,
        b=b.positions,
        completeness=comp,
        layers=(a.layer, b.layer),
        model=model.name,
        raw_a=a.raw,
        raw_b=b.raw,
    )


def _check_order(model: DualEncoder, a: Any, b: Any) -> None:
    from PIL import Image

    def looks_image(x: Any) -> bool:
        return isinstance(x, Image.Image) or (
            isinstance(x, str) and x.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp"))
        )

    text_image = model.tower_a.modality == "text" and model.tower_b.modality == "image"
    if text_image and isinstance(b, str) and not looks_image(b) and looks_image(a):
        raise InvalidInputError(
            "the arguments look swapped: this model takes (text, image); call "
            "explain(model, caption, image)"
        )


def explain(
    model: DualEncoder | Any,
    a: Any,
    b: Any,
    layers: int | Sequence[int] | None = None,
    steps: int | Sequence[int] | None = None,
    rule: str | None = None,
    reference: Any = None,
    *,
    scale: bool = False,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Explanation:
    """Explain the similarity of one pair by token × patch (or token × token) interactions.

    Implements the second-order attributions of Moeller et al., TMLR 2025
    (https://arxiv.org/abs/2408.14153).

    Args:
        model: A :class:`DualEncoder` (from :func:`dualex.load` / :func:`dualex.wrap`).
        a: Input of the first tower (a caption for CLIP-like models).
        b: Input of the second tower (an image path / PIL image, or a second text).
        layers: Split layer, one int for both towers or ``(layer_a, layer_b)``; ``None``: the
            input of each tower's last block. Negative values count from the end.
        steps: Quadrature nodes (int or per-tower pair); ``None``: adaptive — Gauss–Legendre
            nodes are doubled until each tower's relative error ≤ ``tol`` or ``max_steps``.
        rule: ``"gauss-legendre"`` (default), ``"riemann"`` (the paper's code) or ``"trapezoid"``.
        reference: Reference spec for both towers or ``(ref_a, ref_b)``; ``None``: each tower's
            default (exCLIP-compatible for CLIP: ``[BOS, 0, EOS, 0…]`` text, all-zero image).
        scale: Multiply the score by the model's logit scale.
        mode: ``"auto"``, ``"forward"`` or ``"reverse"`` mode AD.
        tol: Target per-tower relative error of adaptive steps.
        max_steps: Cap of adaptive steps.
        memory_budget: Bytes one chunk of work may use (approximately).

    Returns:
        An :class:`Explanation` whose ``matrix`` is ``[S_a, S_b]`` over every position.
    """
    from dualex.model import wrap

    model = wrap(model)
    _check_order(model, a, b)
    la, lb = _pair(layers, "layers")
    sa, sb = _pair(steps, "steps")
    ra, rb = _pair(reference, "reference")
    opts = dict(rule=rule, mode=mode, tol=tol, max_steps=max_steps, memory_budget=memory_budget)
    pa = project_one(model.tower_a, a, layer=la, steps=sa, reference=ra, **opts)
    pb = project_one(model.tower_b, b, layer=lb, steps=sb, reference=rb, **opts)
    return _combine(model, pa, pb, scale)


@dataclass
class Projections:
    """Cached per-item projections of many inputs; any pair is one matrix product.

    Attributes:
        model: The dual encoder.
        a: Projections of the first tower's inputs.
        b: Projections of the second tower's inputs.
        scale: Whether scores include the logit scale.
    """

    model: DualEncoder
    a: list[SideProjection]
    b: list[SideProjection]
    scale: bool = False

    def explanation(self, i: int, j: int) -> Explanation:
        """The :class:`Explanation` of pair ``(a[i], b[j])``, equal to :func:`explain`'s."""
        return _combine(self.model, self.a[i], self.b[j], self.scale)

    def matrix(self, i: int, j: int) -> Tensor:
        """Interaction matrix ``[S_a, S_b]`` of pair ``(a[i], b[j])``."""
        return self.explanation(i, j).matrix

    def scores(self) -> Tensor:
        """Model scores of every pair, ``[len(a), len(b)]``."""
        ea = torch.stack([p.embedding.double() for p in self.a])
        eb = torch.stack([p.embedding.double() for p in self.b])
        s = ea @ eb.T
        if self.model.similarity == "cosine":
            s = s / ea.norm(dim=1, keepdim=True) / eb.norm(dim=1).unsqueeze(0)
        if self.scale and self.model.logit_scale is not None:
            s = s * self.model.logit_scale
        return s


def project(
    model: DualEncoder | Any,
    texts: Sequence[Any] | None = None,
    images: Sequence[Any] | None = None,
    *,
    a: Sequence[Any] | None = None,
    b: Sequence[Any] | None = None,
    layers: int | Sequence[int] | None = None,
    steps: int | Sequence[int] | None = None,
    rule: str | None = None,
    reference: Any = None,
    scale: bool = False,
    mode: str = "auto",
    tol: float = DEFAULT_TOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    progress: bool = False,
) -> Projections:
    """Project many inputs once each, so n × m pairs cost n + m projections.

    Args:
        model: A :class:`DualEncoder`.
        texts: Inputs of the text tower (CLIP-like models), or
        images: inputs of the image tower; for two-text models pass ``a=`` and ``b=``.
        progress: Show a progress bar.
        Other arguments: as in :func:`explain`.

    Returns:
        :class:`Projections`; ``.explanation(i, j)`` equals ``explain(model, a[i], b[j], ...)``.
    """
    from dualex.model import wrap

    model = wrap(model)
    items_a = list(a if a is not None else (texts or []))
    items_b = list(b if b is not None else (images or []))
    if not items_a or not items_b:
        raise InvalidInputError(
            "project() needs at least one input on each side (texts= and images=, or a= and b=)"
        )
    la, lb = _pair(layers, "layers")
    sa, sb = _pair(steps, "steps")
    ra, rb = _pair(reference, "reference")
    opts = dict(rule=rule, mode=mode, tol=tol, max_steps=max_steps, memory_budget=memory_budget)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items_a) + len(items_b), disable=not progress, desc="projecting")
    out_a, out_b = [], []
    for x in items_a:
        out_a.append(project_one(model.tower_a, x, layer=la, steps=sa, reference=ra, **opts))
        bar.update()
    for x in items_b:
        out_b.append(project_one(model.tower_b, x, layer=lb, steps=sb, reference=rb, **opts))
        bar.update()
    bar.close()
    return Projections(model=model, a=out_a, b=out_b, scale=scale)
