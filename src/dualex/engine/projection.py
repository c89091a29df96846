"""Integrated-Jacobian projections of a tower's suffix, for one input or a batch of inputs.

For a suffix ``f`` (hidden state at the split layer → embedding), a hidden state ``h`` and a
reference ``h_r`` (both ``[S, D]``), the projection is

    P[:, s] = Σ_q w_q · J_f(h_r + α_q Δ)[:, s, :] · Δ[s, :]        Δ = h − h_r,   P: [E, S]

i.e. the quadrature of the path-integrated Jacobian, contracted with Δ position by position.
``Σ_s P[:, s] ≈ f(h) − f(h_r)`` (exact as the quadrature converges).

Two ways to get P:

* forward mode: one Jacobian-vector product per position ``s`` (tangent = Δ on row ``s``),
  batched over positions with :func:`torch.func.vmap`; cost ∝ S.
* reverse mode: one vector-Jacobian product per embedding dimension (cotangent = unit vector),
  batched over dimensions; cost ∝ E.

Batches: ``B`` inputs of the same shape are projected together. A *batch suffix*
``g(H, items)`` receives ``H: [len(items)·m, S, D]`` whose rows are grouped item-major (``m``
consecutive rows per item, ``m`` the number of path points of this chunk) and ``items``, the
indices of those inputs in the batch; it returns ``[len(items)·m, E]``. A single-input suffix
``f(H)`` is the special case ``B = 1``.

:func:`integrated_projection` picks the cheaper mode and splits items × nodes × tangents into
chunks so that a memory budget holds; the per-chunk kernels do not know about chunking.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from dualex.errors import SettingError

SuffixFn = Callable[[Tensor], Tensor]
"""Maps hidden states ``[R, S, D]`` of one input to embeddings ``[R, E]``."""

BatchSuffixFn = Callable[[Tensor, Sequence[int]], Tensor]
"""Maps ``(H: [len(items)·m, S, D], items)`` to ``[len(items)·m, E]`` (rows item-major)."""

DEFAULT_MEMORY_BUDGET = 2 * 1024**3
"""Default working-memory budget of one chunk, in bytes (2 GiB)."""

MODES = ("auto", "forward", "reverse")

TRANSFORM_LOCK = threading.RLock()
"""Held around every torch.func transform: PyTorch's forward-AD levels are process-global, so
two threads running ``jvp`` at once corrupt each other's levels. Chunks of different threads
interleave; each thread's results equal a sequential run."""


def as_batch_suffix(suffix: SuffixFn | BatchSuffixFn, batched: bool) -> BatchSuffixFn:
    """A batch suffix from a single-input suffix (``batched=False``) or itself."""
    if batched:
        return suffix  # type: ignore[return-value]
    return lambda H, items: suffix(H)  # type: ignore[call-arg]


def path_points(h: Tensor, h_ref: Tensor, alphas: Tensor) -> Tensor:
    """Points ``h_r + α (h − h_r)`` on the straight path.

    Args:
        h: ``[S, D]`` or a batch ``[B, S, D]``.
        h_ref: Same shape as ``h``.
        alphas: ``[n]``.

    Returns:
        ``[n, S, D]`` for one input; ``[B·n, S, D]`` (item-major) for a batch.
    """
    alphas = alphas.to(dtype=h.dtype, device=h.device)
    if h.dim() == 2:
        return h_ref.unsqueeze(0) + alphas.view(-1, 1, 1) * (h - h_ref).unsqueeze(0)
    pts = h_ref.unsqueeze(1) + alphas.view(1, -1, 1, 1) * (h - h_ref).unsqueeze(1)
    return pts.reshape(-1, *h.shape[1:])


def _items(h: Tensor, items: Sequence[int] | None) -> list[int]:
    return list(range(h.shape[0])) if items is None else list(items)


def forward_chunk(
    suffix: BatchSuffixFn,
    H: Tensor,
    H_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    positions: Sequence[int],
    items: Sequence[int] | None = None,
) -> Tensor:
    """Projection columns for some positions of some inputs from some nodes, by forward mode.

    Args:
        suffix: Batch suffix (see the module docstring).
        H: Hidden states of the chunk's inputs, ``[b, S, D]``.
        H_ref: Their reference hidden states, ``[b, S, D]``.
        alphas: Nodes ``[n]``.
        weights: Weights ``[n]``.
        positions: The ``k`` positions to compute.
        items: Indices of the ``b`` inputs in the suffix's batch (default ``0..b-1``).

    Returns:
        ``[b, E, k]``: ``Σ_q w_q J(α_q)[:, s, :] Δ[s]`` for each input and requested position.
    """
    b, n = H.shape[0], len(alphas)
    items = _items(H, items)
    delta = H - H_ref  # [b, S, D]
    points = path_points(H, H_ref, alphas)  # [b·n, S, D]
    idx = torch.as_tensor(list(positions), device=H.device)
    k = len(idx)
    tangents = torch.zeros(k, b, *delta.shape[1:], dtype=delta.dtype, device=delta.device)
    tangents[torch.arange(k), :, idx] = delta[:, idx].transpose(0, 1)  # [k, b, S, D]
    tangents = tangents.unsqueeze(2).expand(k, b, n, *delta.shape[1:])
    tangents = tangents.reshape(k, b * n, *delta.shape[1:])

    def one(t: Tensor) -> Tensor:
        return torch.func.jvp(lambda p: suffix(p, items), (points,), (t,))[1]

    with TRANSFORM_LOCK:
        out = torch.func.vmap(one)(tangents)  # [k, b·n, E]
    out = out.reshape(k, b, n, -1)
    w = weights.to(dtype=out.dtype, device=out.device)
    return torch.einsum("kbne,n->bek", out, w)


def reverse_chunk(
    suffix: BatchSuffixFn,
    H: Tensor,
    H_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    dims: Sequence[int],
    items: Sequence[int] | None = None,
) -> Tensor:
    """Projection rows for some embedding dimensions of some inputs, by reverse mode.

    Args:
        suffix: Batch suffix (see the module docstring).
        H: Hidden states ``[b, S, D]``.
        H_ref: Reference hidden states ``[b, S, D]``.
        alphas: Nodes ``[n]``.
        weights: Weights ``[n]``.
        dims: The ``k`` embedding dimensions to compute.
        items: Indices of the ``b`` inputs in the suffix's batch (default ``0..b-1``).

    Returns:
        ``[b, k, S]``: ``Σ_q w_q Σ_d J(α_q)[e, s, d] Δ[s, d]`` for each requested dimension ``e``.
    """
    b, n = H.shape[0], len(alphas)
    items = _items(H, items)
    delta = H - H_ref
    points = path_points(H, H_ref, alphas)  # [b·n, S, D]
    with TRANSFORM_LOCK:
        out, vjp_fn = torch.func.vjp(lambda p: suffix(p, items), points)  # out: [b·n, E]
        w = weights.to(dtype=out.dtype, device=out.device).repeat(b)  # [b·n]
        idx = torch.as_tensor(list(dims), device=out.device)
        k = len(idx)
        cot = torch.zeros(k, *out.shape, dtype=out.dtype, device=out.device)
        cot[torch.arange(k), :, idx] = w.unsqueeze(0).expand(k, -1)  # [k, b·n, E]
        (grads,) = torch.func.vmap(vjp_fn)(cot)  # [k, b·n, S, D]
    grads = grads.reshape(k, b, n, *delta.shape[1:]).sum(2)  # [k, b, S, D]
    return torch.einsum("kbsd,bsd->bks", grads, delta)


def node_totals(
    suffix: SuffixFn | BatchSuffixFn,
    h: Tensor,
    h_ref: Tensor,
    alphas: Tensor,
    node_chunk: int,
    *,
    items: Sequence[int] | None = None,
) -> Tensor:
    """``J(α_q) Δ`` per node, with the whole Δ as tangent: the column sums of each node's P.

    Args:
        suffix: A single-input suffix when ``h`` is ``[S, D]``; a batch suffix when it is
            ``[B, S, D]``.
        h: Hidden state(s).
        h_ref: Reference(s), same shape.
        alphas: Nodes ``[n]``.
        node_chunk: Nodes per pass.
        items: Indices of the batch's inputs in the suffix's batch (default ``0..B-1``).

    Returns:
        ``[n, E]`` for one input, ``[B, n, E]`` for a batch.
    """
    single = h.dim() == 2
    g = as_batch_suffix(suffix, not single)
    H, H_ref = (h.unsqueeze(0), h_ref.unsqueeze(0)) if single else (h, h_ref)
    ids = _items(H, items)
    b = H.shape[0]
    parts = []
    for i in range(0, len(alphas), node_chunk):
        a = alphas[i : i + node_chunk]
        points = path_points(H, H_ref, a)  # [b·n, S, D]
        tangent = (H - H_ref).unsqueeze(1).expand(b, len(a), *H.shape[1:]).reshape(points.shape)
        with TRANSFORM_LOCK:
            out = torch.func.jvp(lambda p: g(p, ids), (points,), (tangent,))[1]
        parts.append(out.reshape(b, len(a), -1))
    out = torch.cat(parts, dim=1)
    return out[0] if single else out


def integrated_total(
    suffix: SuffixFn | BatchSuffixFn,
    h: Tensor,
    h_ref: Tensor,
    alphas: Tensor,
    weights: Tensor,
    node_chunk: int,
    *,
    items: Sequence[int] | None = None,
) -> Tensor:
    """``Σ_s P[:, s]`` without computing P: the weighted sum of :func:`node_totals`.

    Returns:
        ``[E]`` for one input, ``[B, E]`` for a batch.
    """
    per_node = node_totals(suffix, h, h_ref, alphas, node_chunk, items=items)
    w = weights.to(dtype=per_node.dtype, device=per_node.device)
    return torch.einsum("...ne,n->...e", per_node, w)


def choose_mode(mode: str, num_positions: int, embed_dim: int) -> str:
    """Resolve ``"auto"`` to the mode with fewer products: forward if S ≤ E, else reverse."""
    if mode not in MODES:
        raise SettingError(f"unknown projection mode {mode!r}; use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "forward" if num_positions <= embed_dim else "reverse"


def estimate_item_bytes(num_positions: int, hidden_dim: int, itemsize: int, mode: str) -> int:
    """Rough working memory of one (input × node × tangent/cotangent) item of a chunk, in bytes.

    Forward mode keeps no graph, so the peak is a few layer-sized activations (MLP width 4·D,
    attention scores S²·heads with heads ≈ D/64). Reverse mode keeps the forward activations of
    the node and the per-cotangent gradient of the hidden state.
    """
    heads = max(hidden_dim // 64, 1)
    layer = num_positions * hidden_dim * 8 + heads * num_positions * num_positions * 3
    factor = 3 if mode == "forward" else 6
    return int(layer * itemsize * factor)


def integrated_projection(
    suffix: SuffixFn | BatchSuffixFn,
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
    batch_chunk: int | None = None,
    items: Sequence[int] | None = None,
) -> Tensor:
    """Projection ``P: [E, S]`` (or ``[B, E, S]`` for a batch), chunked to a memory budget.

    Args:
        suffix: A single-input suffix ``[R, S, D] -> [R, E]`` when ``h`` is ``[S, D]``; a batch
            suffix ``(H, items) -> [R, E]`` when ``h`` is ``[B, S, D]``.
        h: Hidden state ``[S, D]``, or a batch ``[B, S, D]``.
        h_ref: Reference hidden state(s), same shape as ``h``.
        alphas: Quadrature nodes ``[N]``.
        weights: Quadrature weights ``[N]``.
        mode: ``"auto"``, ``"forward"`` or ``"reverse"``.
        embed_dim: E, if known (else one forward pass finds it).
        memory_budget: Bytes one chunk may use (approximately).
        node_chunk: Nodes per chunk (default: from the budget).
        item_chunk: Positions (forward) or embedding dimensions (reverse) per chunk.
        batch_chunk: Inputs per chunk (default: from the budget).
        items: Indices of the rows of ``h`` in the batch suffix's batch (default ``0..B-1``).

    Returns:
        ``[E, S]`` (or ``[B, E, S]``) in the dtype of ``h``, accumulated in float64.
    """
    if h.shape != h_ref.shape or h.dim() not in (2, 3):
        raise SettingError(
            f"hidden state {tuple(h.shape)} and reference {tuple(h_ref.shape)} must both be "
            "[S, D] or [B, S, D]"
        )
    if memory_budget <= 0:
        raise SettingError(f"memory_budget must be positive bytes, got {memory_budget}")
    single = h.dim() == 2
    g = as_batch_suffix(suffix, not single)
    H, H_ref = (h.unsqueeze(0), h_ref.unsqueeze(0)) if single else (h, h_ref)
    B, S, D = H.shape
    ids = _items(H, items)
    if embed_dim is None:
        embed_dim = int(g(H[:1], ids[:1]).shape[-1])
    mode = choose_mode(mode, S, embed_dim)
    n_items = S if mode == "forward" else embed_dim
    per_item = max(estimate_item_bytes(S, D, H.element_size(), mode), 1)
    capacity = max(memory_budget // per_item, 1)  # input × node × item triples per chunk
    N = len(alphas)
    if node_chunk is None:
        node_chunk = min(N, max(1, int(math.sqrt(capacity))), capacity)
    if item_chunk is None:
        item_chunk = max(1, min(n_items, capacity // node_chunk))
    if batch_chunk is None:
        batch_chunk = max(1, min(B, capacity // (node_chunk * item_chunk)))
    if node_chunk < 1 or item_chunk < 1 or batch_chunk < 1:
        raise SettingError("node_chunk, item_chunk and batch_chunk must be >= 1")
    result = torch.zeros(B, embed_dim, S, dtype=torch.float64, device=H.device)
    for b0 in range(0, B, batch_chunk):
        b1 = min(b0 + batch_chunk, B)
        chunk = ids[b0:b1]
        Hb, Rb = H[b0:b1], H_ref[b0:b1]
        for a, w in _node_chunks(alphas, weights, node_chunk):
            for start in range(0, n_items, item_chunk):
                sel = range(start, min(start + item_chunk, n_items))
                if mode == "forward":
                    part = forward_chunk(g, Hb, Rb, a, w, sel, chunk)
                    result[b0:b1, :, sel.start : sel.stop] += part.double()
                else:
                    part = reverse_chunk(g, Hb, Rb, a, w, sel, chunk)
                    result[b0:b1, sel.start : sel.stop, :] += part.double()
    result = result.to(H.dtype)
    return result[0] if single else result


def _node_chunks(alphas: Tensor, weights: Tensor, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for i in range(0, len(alphas), size):
        yield alphas[i : i + size], weights[i : i + size]
