"""The projection of a split at the last block's input, at about the cost of one block per node.

After the last block of a ViT (CLS) or a causal text tower (EOT) only one row — the *pooled*
row ``p`` — reaches the embedding. The tangent of position ``s`` is ``Δ_s`` on row ``s`` and zero
elsewhere, so for the pre-LayerNorm block

    y = LN1(x);  q = W_q y_p;  K = W_k y;  V = W_v y;  o = softmax(q·K/√d) V   (per head)
    r = x_p + ls1(W_o o);  out = r + ls2(MLP(LN2(r)));  e = head(out)

every tangent changes only row ``s`` of ``y``, ``K`` and ``V``, and the pooled row's attention
output by ``p_s (da_s (v_s − o) + dv_s)`` with ``da_s = q·dk_s/√d`` (tangent ``p`` also moves the
query). After that all tangents share one base point (the pooled row), so LN2, the MLP and the
head take their S tangents as one batch of rows. Per quadrature node this is about one block's
matrix work over S rows, instead of S passes through the block (a vmapped JVP).

The same holds for an *attention-pool head* (SigLIP's MAP head) split at its input: a learned
probe is the only query, so no tangent moves the query and the attention output is not added to
any row (``LastBlock.probe``); LN1 is then the final LayerNorm, W_q/W_k/W_v/W_o the pool's
attention, and LN2/MLP the pool's MLP. Keys may be masked per input (padded patches).

The row-wise pieces (LayerNorms, layer scales, MLP, head) are differentiated by
``torch.func.jvp`` on the modules a family declares (:class:`LastBlock`); only the attention's
derivative is written out. No model family is known here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from dualex.engine.projection import TRANSFORM_LOCK

RowFn = Callable[[Tensor], Tensor]
"""A row-wise map ``[..., D] -> [..., D']`` (a LayerNorm, an MLP, a layer scale, the head)."""


@dataclass(frozen=True)
class LastBlock:
    """The pieces of a pre-LayerNorm transformer block read at one pooled row, and the head.

    Attributes:
        ln1: The attention's input LayerNorm (row-wise).
        w_q: ``[D, D]`` query weight; ``b_q``: ``[D]`` or ``None``.
        w_k: ``[D, D]`` key weight; ``b_k``: ``[D]`` or ``None``.
        w_v: ``[D, D]`` value weight; ``b_v``: ``[D]`` or ``None``.
        w_o: ``[D, D]`` output projection weight; ``b_o``: ``[D]`` or ``None``.
        heads: Number of attention heads.
        scale: Factor of the attention scores (usually ``head_dim ** -0.5``).
        ln2: The MLP's input LayerNorm (row-wise).
        mlp: The MLP (row-wise).
        head: From the block's output at the pooled row to the embedding, ``[..., D] -> [..., E]``
            (e.g. the final LayerNorm and the projection).
        causal: Whether the pooled row attends only to rows at or before it.
        ls1: Layer scale after the attention (``None``: identity).
        ls2: Layer scale after the MLP (``None``: identity).
        softmax_dtype: The dtype the block's softmax runs in (``None``: the scores' dtype);
            HF CLIP's eager attention runs it in float32 whatever the model's dtype.
        probe: ``[D]``: a learned query (an attention-pool head): the query is ``W_q probe``
            for every input, no tangent moves it, and the block's output is
            ``r + ls2(MLP(LN2(r)))`` with ``r = ls1(W_o o)`` (no row is added to ``r``).
            ``None``: the query is the pooled row's, a pre-LayerNorm residual block.
    """

    ln1: RowFn
    w_q: Tensor
    b_q: Tensor | None
    w_k: Tensor
    b_k: Tensor | None
    w_v: Tensor
    b_v: Tensor | None
    w_o: Tensor
    b_o: Tensor | None
    heads: int
    scale: float
    ln2: RowFn
    mlp: RowFn
    head: RowFn
    causal: bool = False
    ls1: RowFn | None = None
    ls2: RowFn | None = None
    softmax_dtype: torch.dtype | None = None
    probe: Tensor | None = None


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    out = x @ w.T.to(x.dtype)
    return out if b is None else out + b.to(x.dtype)


def _jvp(fn: RowFn, base: Tensor, tangent: Tensor) -> tuple[Tensor, Tensor]:
    with TRANSFORM_LOCK:
        return torch.func.jvp(fn, (base,), (tangent,))


def _jvp_shared(fn: RowFn, base: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
    """``fn`` at one base row per input ``[B, D]`` and its derivative along ``[B, S, D]``
    tangents: the primal is computed once, not once per tangent."""
    with TRANSFORM_LOCK:
        return torch.func.vmap(
            lambda t: torch.func.jvp(fn, (base,), (t,)), in_dims=1, out_dims=(None, 1)
        )(tangents)


def _maybe(fn: RowFn | None) -> RowFn:
    return fn if fn is not None else (lambda t: t)


def _softmax(scores: Tensor, dtype: torch.dtype | None) -> Tensor:
    return torch.softmax(scores, dim=-1, dtype=dtype or scores.dtype).to(scores.dtype)


def _hidden_keys(blk: LastBlock, S: int, rows: Tensor, keys: Tensor | None) -> Tensor | None:
    """``[B, S]`` true where the pooled query may not attend (after it if causal, masked keys)."""
    hidden = None
    if blk.causal:
        hidden = torch.arange(S, device=rows.device).unsqueeze(0) > rows.unsqueeze(1)
    if keys is not None:
        off = ~keys.to(device=rows.device, dtype=torch.bool)
        hidden = off if hidden is None else hidden | off
    return hidden


def _attend(
    blk: LastBlock, y: Tensor, rows: Tensor, keys: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Attention of the pooled rows: ``(q, k, v, probs, o)`` for ``y = LN1(x): [B, S, D]``."""
    B, S, D = y.shape
    h, hd = blk.heads, D // blk.heads
    pick = torch.arange(B, device=y.device)
    if blk.probe is not None:
        q = _linear(blk.probe.to(y.dtype).reshape(1, D), blk.w_q, blk.b_q).expand(B, D)
        q = q.reshape(B, h, hd)
    else:
        q = _linear(y[pick, rows], blk.w_q, blk.b_q).view(B, h, hd)
    k = _linear(y, blk.w_k, blk.b_k).view(B, S, h, hd).transpose(1, 2)  # [B, h, S, hd]
    v = _linear(y, blk.w_v, blk.b_v).view(B, S, h, hd).transpose(1, 2)
    scores = torch.einsum("bhd,bhsd->bhs", q, k) * blk.scale
    hidden = _hidden_keys(blk, S, rows, keys)
    if hidden is not None:
        scores = scores.masked_fill(hidden[:, None, :], float("-inf"))
    probs = _softmax(scores, blk.softmax_dtype)  # [B, h, S]
    o = torch.einsum("bhs,bhsd->bhd", probs, v)
    return q, k, v, probs, o


def last_block_forward(
    blk: LastBlock, x: Tensor, rows: Tensor, keys: Tensor | None = None
) -> Tensor:
    """The embedding ``[B, E]`` of hidden states ``x: [B, S, D]`` entering the last block
    (``keys``: ``[B, S]``, false for keys no query may attend to; ``None``: all)."""
    B, _, D = x.shape
    pick = torch.arange(B, device=x.device)
    *_, o = _attend(blk, blk.ln1(x), rows, keys)
    r = _maybe(blk.ls1)(_linear(o.reshape(B, D), blk.w_o, blk.b_o))
    if blk.probe is None:
        r = x[pick, rows] + r
    out = r + _maybe(blk.ls2)(blk.mlp(blk.ln2(r)))
    return blk.head(out)


def last_block_node(
    blk: LastBlock, x: Tensor, delta: Tensor, rows: Tensor, keys: Tensor | None = None
) -> Tensor:
    """``J(x)[:, s, :] Δ[s]`` for every position ``s`` at one path point: ``[B, E, S]``.

    Args:
        blk: The block and head.
        x: Path point ``[B, S, D]``.
        delta: ``Δ = h − h_r``, ``[B, S, D]``.
        rows: Pooled row of each input, ``[B]`` (int).
        keys: ``[B, S]`` false for keys the query may not attend to (``None``: all).
    """
    B, S, D = x.shape
    h, hd = blk.heads, D // blk.heads
    pick = torch.arange(B, device=x.device)
    # LN1 is row-wise: tangent s changes row s only, all tangents in one call.
    y, dy = _jvp(blk.ln1, x, delta)  # [B, S, D]: row s of tangent s
    q, k, v, probs, o = _attend(blk, y, rows, keys)
    dk = (dy @ blk.w_k.T.to(dy.dtype)).view(B, S, h, hd).transpose(1, 2)  # [B, h, S, hd]
    dv = (dy @ blk.w_v.T.to(dy.dtype)).view(B, S, h, hd).transpose(1, 2)
    da = torch.einsum("bhd,bhsd->bhs", q, dk) * blk.scale  # score s moves for tangent s
    do = probs.unsqueeze(-1) * (da.unsqueeze(-1) * (v - o.unsqueeze(2)) + dv)  # [B, h, S, hd]
    if blk.probe is None:
        # The pooled row's own tangent also moves the query.
        dq = (dy[pick, rows] @ blk.w_q.T.to(dy.dtype)).view(B, h, hd)
        daq = torch.einsum("bhd,bhsd->bhs", dq, k) * blk.scale
        hidden = _hidden_keys(blk, S, rows, keys)
        if hidden is not None:
            daq = daq.masked_fill(hidden[:, None, :], 0.0)
        dpq = probs * (daq - (probs * daq).sum(-1, keepdim=True))
        doq = torch.einsum("bhs,bhsd->bhd", dpq, v)
        do = do.clone()
        do[pick, :, rows] += doq
    dattn = do.transpose(1, 2).reshape(B, S, D) @ blk.w_o.T.to(do.dtype)  # [B, S(tangent), D]
    attn = _linear(o.reshape(B, D), blk.w_o, blk.b_o)  # [B, D]
    # From here every tangent shares the pooled row's base point: the primal is one row per
    # input, the S tangents go through LN2/MLP/head as one batch of rows.
    r, dr = _jvp_shared(_maybe(blk.ls1), attn, dattn)
    if blk.probe is None:
        r = x[pick, rows] + r
        dr = dr.clone()
        dr[pick, rows] += delta[pick, rows]
    z, dz = _jvp_shared(blk.ln2, r, dr)
    m, dm = _jvp_shared(blk.mlp, z, dz)
    ls, dls = _jvp_shared(_maybe(blk.ls2), m, dm)
    _, de = _jvp_shared(blk.head, r + ls, dr + dls)  # [B, S, E]
    return de.transpose(1, 2)


def last_block_nodes(
    blk: LastBlock,
    H: Tensor,
    H_ref: Tensor,
    rows: Tensor,
    alphas: Tensor,
    columns: int | None = None,
    memory_budget: int = 2 * 1024**3,
    keys: Tensor | None = None,
) -> Tensor:
    """Each node's ``J(α_q)[:, s, :] Δ[s]`` for a split at the last block's input, nodes batched.

    Args:
        blk: The block and head.
        H: Hidden states ``[B, S, D]``; ``H_ref``: their references.
        rows: Pooled row of each input ``[B]``.
        alphas: Quadrature nodes ``[n]``.
        columns: Keep only the first ``columns`` positions (rows after them are held fixed, Δ = 0).
        memory_budget: Bytes one batch of (input, node) pairs may use (approximately).
        keys: ``[B, S]`` false for keys the query may not attend to (``None``: all).

    Returns:
        ``[B, n, E, S]`` (or ``[B, n, E, columns]``) in the dtype of ``H``.
    """
    B, n = H.shape[0], len(alphas)
    delta = H - H_ref
    a = alphas.to(dtype=H.dtype, device=H.device).view(1, n, 1, 1)
    points = (H_ref.unsqueeze(1) + a * delta.unsqueeze(1)).reshape(B * n, *H.shape[1:])
    deltas = delta.unsqueeze(1).expand(B, n, *H.shape[1:]).reshape(points.shape)
    node_rows = rows.to(H.device).repeat_interleave(n)
    node_keys = None if keys is None else keys.to(H.device).repeat_interleave(n, dim=0)
    S, D = H.shape[1:]
    per_row = S * D * 4 * H.element_size() * 12  # MLP width 4·D, a dozen live copies
    chunk = max(1, int(memory_budget // max(per_row * S, 1)))
    per_node = torch.cat(
        [
            last_block_node(
                blk,
                points[i : i + chunk],
                deltas[i : i + chunk],
                node_rows[i : i + chunk],
                None if node_keys is None else node_keys[i : i + chunk],
            )[..., :columns]
            for i in range(0, B * n, chunk)
        ]
    )
    return per_node.reshape(B, n, *per_node.shape[1:])


def last_block_projection(
    blk: LastBlock,
    H: Tensor,
    H_ref: Tensor,
    rows: Tensor,
    alphas: Tensor,
    weights: Tensor,
    columns: int | None = None,
    memory_budget: int = 2 * 1024**3,
    keys: Tensor | None = None,
) -> Tensor:
    """Projections ``[B, E, S]`` of a split at the last block's input: the weighted sum of
    :func:`last_block_nodes` (same arguments, plus the weights ``[n]``), accumulated in float64,
    in the dtype of ``H``."""
    per_node = last_block_nodes(blk, H, H_ref, rows, alphas, columns, memory_budget, keys)
    total = torch.einsum("bnes,n->bes", per_node.double(), weights.to(per_node.device).double())
    return total.to(H.dtype)
