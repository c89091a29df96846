"""Concept codes of embedding-space vectors and the exact concept split of ``M = P_aᵀ P_b``.

A concept dictionary has one encoder shared by both modalities and one decoder per modality:

* encoder ``W: [K, E]`` with unit rows; the code of a vector ``x: [E]`` is
  ``c(x) = TopK_|·|(W x)``: the ``k`` pre-activations of largest magnitude kept with their sign,
  the others zero. For a unit ``x`` (and unit rows), ``W x = 1 − ½‖x − w_k‖²``, so ranking by
  ``W x`` is ranking by distance to the concept (VL-SAE's distance-based encoder); for any ``x``
  the code is homogeneous, ``c(λx) = λ c(x)`` for every real ``λ``, and piecewise linear.
* decoder ``D_m: [E, K]`` of modality ``m``: ``x ≈ D_m c(x)``.

The split (:func:`split_pair`) encodes every column of each projection on its own:
``C_a = c(P_a[:, s])`` for each position ``s``. Because ``c`` is homogeneous and piecewise linear,
``c(P[:, s])`` equals the local linear map of the encoder at ``P[:, s]`` (the rows of ``W`` that
win the top-k there) applied to ``P[:, s]`` — the linearisation is exact per position and needs
no expansion point; an affine shift of the inputs (a modality mean) cancels because every column
is a part of a difference ``e − ē``.

With ``Q_a = D_a C_a`` (the reconstructed columns) and ``R_a = P_a − Q_a`` (what the dictionary
misses), and the pair's factor ``f`` (``1/‖e_a‖‖e_b‖`` for the cosine, times a logit scale),

    M_k = ½ f ( C_a[k]ᵀ (d_{a,k}ᵀ P_b)  +  (P_aᵀ d_{b,k}) C_b[k] ),
    residual = ½ f ( R_aᵀ P_b + P_aᵀ R_b ),
    Σ_k M_k + residual = f P_aᵀ P_b = M.

``C_a[k, s]`` is how much token ``s`` writes onto concept ``k``; ``d_{a,k}ᵀ P_b[:, t]`` is how much
patch ``t`` reads from the concept's text direction (and symmetrically). Cross-concept terms
``C_a[k, s] (d_{a,k}·d_{b,l}) C_b[l, t]`` are split in half between concepts ``k`` and ``l``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["encode_topk", "split_pair"]


def encode_topk(X: Tensor, W: Tensor, k: int) -> Tensor:
    """Signed top-k codes of row vectors.

    Args:
        X: ``[N, E]`` vectors.
        W: ``[K, E]`` encoder directions (unit rows).
        k: Active concepts per vector (``1 ≤ k ≤ K``).

    Returns:
        ``[N, K]`` codes: ``X Wᵀ`` with all but the ``k`` entries of largest magnitude per row set
        to zero (ties broken by index, so the code is deterministic).
    """
    pre = X @ W.T
    idx = pre.abs().topk(k, dim=1).indices
    return torch.zeros_like(pre).scatter_(1, idx, pre.gather(1, idx))


def split_pair(
    P_a: Tensor,
    P_b: Tensor,
    factor: float,
    W: Tensor,
    D_a: Tensor,
    D_b: Tensor,
    k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-concept interaction matrices of one pair (float64).

    Args:
        P_a: ``[E, S_a]`` projection of side a.
        P_b: ``[E, S_b]`` projection of side b.
        factor: The pair's factor ``f`` with ``M = f P_aᵀ P_b``.
        W: ``[K, E]`` encoder (unit rows).
        D_a: ``[E, K]`` decoder of side a's modality.
        D_b: ``[E, K]`` decoder of side b's modality.
        k: Active concepts per position.

    Returns:
        ``(matrices, active, residual)``: ``matrices [K', S_a, S_b]`` for the ``K'`` concepts
        active at some position of either side, ``active [K']`` their indices (ascending), and
        ``residual [S_a, S_b]``; ``matrices.sum(0) + residual == f P_aᵀ P_b`` up to float64
        round-off.
    """
    Pa, Pb = P_a.double(), P_b.double()
    Wd, Da, Db = W.double(), D_a.double(), D_b.double()
    Ca = encode_topk(Pa.T, Wd, k).T  # [K, S_a]
    Cb = encode_topk(Pb.T, Wd, k).T  # [K, S_b]
    active = ((Ca != 0).any(1) | (Cb != 0).any(1)).nonzero().flatten()
    Ca, Cb = Ca[active], Cb[active]
    read_b = Da[:, active].T @ Pb  # [K', S_b]: how much each b position reads concept k (a side)
    read_a = Db[:, active].T @ Pa  # [K', S_a]
    half = 0.5 * float(factor)
    matrices = half * (Ca[:, :, None] * read_b[:, None, :] + read_a[:, :, None] * Cb[:, None, :])
    Ra = Pa - Da[:, active] @ Ca
    Rb = Pb - Db[:, active] @ Cb
    residual = half * (Ra.T @ Pb + Pa.T @ Rb)
    return matrices, active, residual
