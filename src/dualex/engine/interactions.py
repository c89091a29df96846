"""Interactions between two towers' projections, completeness, and the feature-pair oracle.

With projections ``P_a: [E, S_a]`` and ``P_b: [E, S_b]``, the interaction matrix is
``M = P_aᵀ P_b: [S_a, S_b]``. Because ``Σ_s P_a[:, s] = e_a − ē_a`` (and likewise for b),

    e_a·e_b = Σ M + e_a·ē_b + ē_a·e_b − ē_a·ē_b,

and for the cosine every term is divided by ``‖e_a‖‖e_b‖`` (optionally times a logit scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from dualex.engine.projection import path_points
from dualex.errors import SettingError

SIMILARITIES = ("cosine", "dot")


@dataclass(frozen=True)
class Completeness:
    """How exactly the interactions account for the model's score.

    ``score == attribution_sum + sum(reference_terms)`` up to ``absolute_error``.

    Attributes:
        score: The model's similarity of the pair (cosine or dot, times the scale if any).
        reference_terms: ``(e_a·ē_b, ē_a·e_b, −ē_a·ē_b)``, scaled like the score.
        attribution_sum: ``Σ M``.
        absolute_error: ``|score − attribution_sum − Σ reference_terms|``.
        relative_error: ``absolute_error / (scale · ‖e_a − ē_a‖ ‖e_b − ē_b‖)``: the error relative
            to the largest interaction sum the two differences allow (Cauchy–Schwarz).
        tower_errors: Per tower ``‖Σ_s P[:, s] − (e − ē)‖ / ‖e − ē‖`` (quadrature error alone).
        steps: Quadrature nodes used per tower.
        rule: Quadrature rule.
        scaled: Whether the score (and every term) includes the model's logit scale.
        logit_scale: The logit scale applied, if any.
    """

    score: float
    reference_terms: tuple[float, float, float]
    attribution_sum: float
    absolute_error: float
    relative_error: float
    tower_errors: tuple[float, float]
    steps: tuple[int, int]
    rule: str
    scaled: bool = False
    logit_scale: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["reference_terms"] = list(self.reference_terms)
        d["tower_errors"] = list(self.tower_errors)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Completeness:
        return cls(
            score=float(d["score"]),
            reference_terms=tuple(float(v) for v in d["reference_terms"]),
            attribution_sum=float(d["attribution_sum"]),
            absolute_error=float(d["absolute_error"]),
            relative_error=float(d["relative_error"]),
            tower_errors=tuple(float(v) for v in d["tower_errors"]),
            steps=tuple(int(v) for v in d["steps"]),
            rule=str(d["rule"]),
            scaled=bool(d.get("scaled", False)),
            logit_scale=None if d.get("logit_scale") is None else float(d["logit_scale"]),
        )


def tower_error(P: Tensor, e: Tensor, e_ref: Tensor) -> float:
    """``‖Σ_s P[:, s] − (e − ē)‖ / ‖e − ē‖`` for ``P: [E, S]``, ``e, ē: [E]``."""
    diff = (e - e_ref).double()
    denom = diff.norm().item()
    err = (P.double().sum(dim=1) - diff).norm().item()
    return err / denom if denom > 0 else err


def pair_scale(e_a: Tensor, e_b: Tensor, similarity: str, logit_scale: float | None) -> float:
    """Factor that turns a dot product of raw embeddings into the model's score."""
    if similarity not in SIMILARITIES:
        raise SettingError(f"unknown similarity {similarity!r}; use one of {SIMILARITIES}")
    scale = 1.0
    if similarity == "cosine":
        scale = 1.0 / (e_a.double().norm().item() * e_b.double().norm().item())
    if logit_scale is not None:
        scale *= float(logit_scale)
    return scale


def interactions(
    P_a: Tensor,
    P_b: Tensor,
    e_a: Tensor,
    e_a_ref: Tensor,
    e_b: Tensor,
    e_b_ref: Tensor,
    *,
    similarity: str = "cosine",
    logit_scale: float | None = None,
    steps: tuple[int, int] = (0, 0),
    rule: str = "",
) -> tuple[Tensor, Completeness]:
    """Interaction matrix and completeness of one pair.

    Args:
        P_a: Projection of side a, ``[E, S_a]``.
        P_b: Projection of side b, ``[E, S_b]``.
        e_a: Embedding of input a, ``[E]``; ``e_a_ref`` the lower end of its path, ``[E]``.
        e_b: Embedding of input b, ``[E]``; ``e_b_ref`` the lower end of its path, ``[E]``.
        similarity: ``"cosine"`` or ``"dot"``.
        logit_scale: Optional multiplier of the score (e.g. CLIP's ``exp(logit_scale)``).
        steps: Quadrature nodes per tower (reported only).
        rule: Quadrature rule (reported only).

    Returns:
        ``(M, completeness)`` with ``M: [S_a, S_b]`` in the dtype of ``P_a``.
    """
    if P_a.shape[0] != P_b.shape[0]:
        raise SettingError(
            f"embedding sizes differ: {P_a.shape[0]} vs {P_b.shape[0]}; both towers must map "
            "into the same space"
        )
    scale = pair_scale(e_a, e_b, similarity, logit_scale)
    M = (P_a.double().T @ P_b.double()) * scale
    ea, eb, ra, rb = (t.double() for t in (e_a, e_b, e_a_ref, e_b_ref))
    score = float(ea @ eb) * scale
    refs = (float(ea @ rb) * scale, float(ra @ eb) * scale, -float(ra @ rb) * scale)
    total = float(M.sum())
    abs_err = abs(score - total - sum(refs))
    bound = abs(scale) * float((ea - ra).norm() * (eb - rb).norm())
    comp = Completeness(
        score=score,
        reference_terms=refs,
        attribution_sum=total,
        absolute_error=abs_err,
        relative_error=abs_err / bound if bound > 0 else abs_err,
        tower_errors=(tower_error(P_a, e_a, e_a_ref), tower_error(P_b, e_b, e_b_ref)),
        steps=steps,
        rule=rule,
        scaled=logit_scale is not None,
        logit_scale=None if logit_scale is None else float(logit_scale),
    )
    return M.to(P_a.dtype), comp


def feature_pair_matrix(
    suffix_a: Callable[[Tensor], Tensor],
    h_a: Tensor,
    h_a_ref: Tensor,
    suffix_b: Callable[[Tensor], Tensor],
    h_b: Tensor,
    h_b_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    *,
    max_entries: int = 4_000_000,
) -> Tensor:
    """The full feature-pair matrix ``Δh_aᵀ J̄_aᵀ J̄_b Δh_b`` by plain autograd (an oracle).

    Every entry ``F[s, d, t, f] = Δa[s, d] · (J̄_a[:, s, d] · J̄_b[:, t, f]) · Δb[t, f]`` with
    ``J̄ = Σ_q w_q J(α_q)`` computed as full Jacobians. Summing over ``d`` and ``f`` gives the
    interaction matrix (without the cosine/scale factor). Only for small towers: tests use it.

    Returns:
        ``[S_a, D_a, S_b, D_b]``.

    Raises:
        SettingError: if the matrix would exceed ``max_entries`` entries.
    """
    n_entries = h_a.numel() * h_b.numel()
    if n_entries > max_entries:
        raise SettingError(
            f"the feature-pair matrix would have {n_entries} entries (> {max_entries}); "
            "it is only for small towers — use interactions() for real models"
        )

    def integrated_jacobian(suffix, h, h_ref):
        jac = None
        for a, w in zip(alphas, weights, strict=True):
            point = path_points(h, h_ref, a.view(1))  # [1, S, D]
            j = torch.autograd.functional.jacobian(lambda x: suffix(x)[0], point)[:, 0]
            jac = w.item() * j if jac is None else jac + w.item() * j
        return jac  # [E, S, D]

    Ja = integrated_jacobian(suffix_a, h_a, h_a_ref)
    Jb = integrated_jacobian(suffix_b, h_b, h_b_ref)
    da, db = h_a - h_a_ref, h_b - h_b_ref
    return torch.einsum("sd,esd,etf,tf->sdtf", da, Ja, Jb, db)
