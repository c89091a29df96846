"""Integrated-Jacobian projections of a tower's suffix.

For a suffix ``f: [B, S, D] -> [B, E]`` (hidden state at the split layer → embedding), a hidden
state ``h`` and a reference ``h_r`` (both ``[S, D]``), the projection is

    P[:, s] = Σ_q w_q · J_f(h_r + α_q Δ)[:, s, :] · Δ[s, :]        Δ = h − h_r,   P: [E, S]

i.e. the quadrature of the path-integrated Jacobian, contracted with Δ position by position.
``Σ_s P[:, s] ≈ f(h) − f(h_r)`` (exact as the quadrature converges).

Two ways to get P:

* forward mode: one Jacobian-vector product per position ``s`` (tangent = Δ on row ``s``),
  batched over positions with :func:`torch.func.vmap`; cost ∝ S.
* reverse mode: one vector-Jacobian product per embedding dimension (cotangent = unit vector),
  batched over dimensions; cost ∝ E.

:func:`integrated_projection` picks the cheaper one and splits nodes and positions/dimensions
into chunks so that a memory budget holds; the per-chunk kernels do not know about chunking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from dualex.errors import SettingError

SuffixFn = Callable[[Tensor], Tensor]
"""Maps hidden states ``[B, S, D]`` to embeddings ``[B, E]``."""

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Default working-memory budget of one chunk, in bytes (2 GiB)."""

MODES = ("auto", "forward", "reverse")


def path_points(h: Tensor, h_ref: Tensor, alphas: Tensor) -> Tensor:
    """Points ``h_r + α (h − h_r)`` on the straight path; ``[n, S, D]`` for ``n`` alphas."""
    alphas = alphas.to(dtype=h.dtype, device=h.device)
    return h_ref.unsqueeze(0) + alphas.view(-1, 1, 1) * (h - h_ref).unsqueeze(0)


def forward_chunk(
    suffix: SuffixFn,
    h: Tensor,
    h_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    positions: Sequence[int],
) -> Tensor:
    """Projection columns for some positions from some nodes, by forward mode.

    Args:
        suffix: Suffix function ``[B, S, D] -> [B, E]``.
        h: Hidden state ``[S, D]``.
        h_ref: Reference hidden state ``[S, D]``.
        alphas: Nodes ``[n]``.
        weights: Weights ``[n]``.
        positions: The ``k`` positions to compute.

    Returns:
        ``[E, k]``: ``Σ_q w_q J(α_q)[:, s, :] Δ[s]`` for each requested position ``s``.
    """
    delta = h - h_ref
    points = path_points(h, h_ref, alphas)  # [n, S, D]
    idx = torch.as_tensor(list(positions), device=h.device)
    tangents = torch.zeros(len(idx), *delta.shape, dtype=delta.dtype, device=delta.device)
    tangents[torch.arange(len(idx)), idx] = delta[idx]  # [k, S, D]

    def one(t: Tensor) -> Tensor:
        return torch.func.jvp(suffix, (points,), (t.unsqueeze(0).expand_as(points),))[1]

    out = torch.func.vmap(one)(tangents)  # [k, n, E]
    w = weights.to(dtype=out.dtype, device=out.device)
    return torch.einsum("kne,n->ek", out, w)


def reverse_chunk(
    suffix: SuffixFn,
    h: Tensor,
    h_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    dims: Sequence[int],
) -> Tensor:
    """Projection rows for some embedding dimensions from some nodes, by reverse mode.

    Args:
        suffix: Suffix function ``[B, S, D] -> [B, E]``.
        h: Hidden state ``[S, D]``.
        h_ref: Reference hidden state ``[S, D]``.
        alphas: Nodes ``[n]``.
        weights: Weights ``[n]``.
        dims: The ``k`` embedding dimensions to compute.

    Returns:
        ``[k, S]``: ``Σ_q w_q Σ_d J(α_q)[e, s, d] Δ[s, d]`` for each requested dimension ``e``.
    """
    delta = h - h_ref
    points = path_points(h, h_ref, alphas)  # [n, S, D]
    out, vjp_fn = torch.func.vjp(suffix, points)  # out: [n, E]
    w = weights.to(dtype=out.dtype, device=out.device)
    idx = torch.as_tensor(list(dims), device=out.device)
    cot = torch.zeros(len(idx), *out.shape, dtype=out.dtype, device=out.device)
    cot[torch.arange(len(idx)), :, idx] = w.unsqueeze(0).expand(len(idx), -1)  # [k, n, E]
    (grads,) = torch.func.vmap(vjp_fn)(cot)  # [k, n, S, D]
    return torch.einsum("knsd,sd->ks", grads, delta)


def integrated_total(
    suffix: SuffixFn, h: Tensor, h_ref: Tensor, alphas: Tensor, weights: Tensor, node_chunk: int
) -> Tensor:
    """``Σ_s P[:, s]`` without computing P: one JVP per node with the whole Δ as tangent.

    Returns:
        ``[E]``, equal to the column sum of the projection for the same nodes.
    """
    delta = h - h_ref
    total = None
    for a, w in _node_chunks(alphas, weights, node_chunk):
        points = path_points(h, h_ref, a)
        out = torch.func.jvp(suffix, (points,), (delta.unsqueeze(0).expand_as(points),))[1]
        part = torch.einsum("ne,n->e", out, w.to(dtype=out.dtype, device=out.device))
        total = part if total is None else total + part
    assert total is not None
    return total


def choose_mode(mode: str, num_positions: int, embed_dim: int) -> str:
    """Resolve ``"auto"`` to the mode with fewer products: forward if S ≤ E, else reverse."""
    if mode not in MODES:
        raise SettingError(f"unknown projection mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "forward" if num_positions <= embed_dim else "reverse"


def estimate_item_bytes(num_positions: int, hidden_dim: int, itemsize: int, mode: str) -> int:
    """Rough working memory of one (node × tangent/cotangent) item of a chunk, in bytes.

    Forward mode keeps no graph, so the peak is a few layer-sized activations (MLP width 4·D,
    attention scores S²·heads with heads ≈ D/64). Reverse mode keeps the forward activations of
    the node and the per-cotangent gradient of the hidden state.
    """
    heads = max(hidden_dim // 64, 1)
    layer = num_positions * hidden_dim * 8 + heads * num_positions * num_positions * 3
    factor = 3 if mode == "forward" else 6
    return int(layer * itemsize * factor)


def integrated_projection(
    suffix: SuffixFn,
    h: Tensor,
    h_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    *,
    mode: str = "auto",
    embed_dim: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    node_chunk: int | None = None,
    item_chunk: int | None = None,
) -> Tensor:
    """Projection ``P: [E, S]`` of a suffix between ``h_ref`` and ``h``, chunked to a budget.

    Args:
        suffix: Suffix function ``[B, S, D] -> [B, E]``.
        h: Hidden state ``[S, D]``.
        h_ref: Reference hidden state ``[S, D]``.
        alphas: Quadrature nodes ``[N]``.
        weights: Quadrature weights ``[N]``.
        mode: ``"auto"``, ``"forward"`` or ``"reverse"``.
        embed_dim: E, if known (else one forward pass finds it).
        memory_budget: Bytes one chunk may use (approximately).
        node_chunk: Nodes per chunk (default: from the budget).
        item_chunk: Positions (forward) or embedding dimensions (reverse) per chunk.

    Returns:
        ``[E, S]`` in the dtype of ``h``.
    """
    if h.shape != h_ref.shape or h.dim() != 2:
        raise SettingError(
            f"hidden state {tuple(h.shape)} and reference {tuple(h_ref.shape)} must both be [S, D]"
        )
    if memory_budget <= 0:
        raise SettingError(f"memory_budget must be positive bytes, got {memory_budget}")
    S, D = h.shape
    if embed_dim is None:
        embed_dim = int(suffix(h.unsqueeze(0)).shape[-1])
    mode = choose_mode(mode, S, embed_dim)
    n_items = S if mode == "forward" else embed_dim
    per_item = max(estimate_item_bytes(S, D, h.element_size(), mode), 1)
    capacity = max(memory_budget // per_item, 1)  # node × item pairs per chunk
    N = len(alphas)
    if node_chunk is None:
        node_chunk = min(N, max(1, int(math.sqrt(capacity))), capacity)
    if item_chunk is None:
        item_chunk = max(1, min(n_items, capacity // node_chunk))
    if node_chunk < 1 or item_chunk < 1:
        raise SettingError("node_chunk and item_chunk must be >= 1")
    result = torch.zeros(embed_dim, S, dtype=torch.float64, device=h.device)
    for a, w in _node_chunks(alphas, weights, node_chunk):
        for start in range(0, n_items, item_chunk):
            items = range(start, min(start + item_chunk, n_items))
            if mode == "forward":
                result[:, items.start : items.stop] += forward_chunk(
                    suffix, h, h_ref, a, w, items
                ).double()
            else:
                result[items.start : items.stop, :] += reverse_chunk(
                    suffix, h, h_ref, a, w, items
                ).double()
    return result.to(h.dtype)


def _node_chunks(alphas: Tensor, weights: Tensor, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, len(alphas), size):
        yield alphas[i : i + size], weights[i : i + size]
