"""Toy dual encoders with known answers, built from dualex FunctionTowers.

*Planted*: each tower's embedding is a sum over positions of a smooth per-position map,
``e = Σ_s g(h_s)``, so by the fundamental theorem of calculus the exact projection is
``P[:, s] = g(h_s) − g(r_s)`` and the exact interactions are
``M[s, t] = (g_a(x_s) − g_a(r_s)) · (g_b(y_t) − g_b(r_t))``: a bilinear form of known features.

*Mixing*: a small residual-MLP + attention-like mixing tower whose positions interact, for the
oracle and property tests. A recorder logs every hidden state a suffix is called with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from dualex.model import DualEncoder
from dualex.towers.base import FunctionTower
from dualex.towers.positions import TextPositions


def _positions(x: Tensor) -> TextPositions:
    n = x.shape[0]
    return TextPositions(
        text=" ".join(f"p{i}" for i in range(n)),
        tokens=[f"p{i}" for i in range(n)],
        offsets=[(3 * i, 3 * i + 2) for i in range(n)],
        special=[False] * n,
    )


@dataclass
class Recorder:
    """Logs the hidden-state batches every suffix call receives."""

    calls: list[Tensor] = field(default_factory=list)

    def points(self) -> list[Tensor]:
        """The recorded batches as plain tensors (functorch wrappers peeled off)."""
        from torch._C._functorch import get_unwrapped, is_functorch_wrapped_tensor

        out = []
        for t in self.calls:
            while is_functorch_wrapped_tensor(t):
                t = get_unwrapped(t)
            out.append(t)
        return out


def planted_tower(W: Tensor, name: str, recorder: Recorder | None = None) -> FunctionTower:
    """Tower with ``e = Σ_s tanh(W h_s)``; the input ``x`` [S, D] is the hidden state itself."""

    def prefix(x: Tensor, layer: int) -> Tensor:
        return x

    def suffix(x: Tensor, layer: int):
        def f(H: Tensor) -> Tensor:
            if recorder is not None:
                recorder.calls.append(H)
            return torch.tanh(H @ W.T).sum(dim=1)

        return f

    def reference(x: Tensor, spec) -> Tensor:
        return torch.zeros_like(x) if spec is None else spec

    return FunctionTower(prefix, suffix, _positions, reference, num_layers=0, name=name)


def mixing_tower(
    seed: int, D: int = 6, E: int = 5, blocks: int = 3, dtype=torch.float64
) -> FunctionTower:
    """A tower of ``blocks`` residual blocks ``h ← h + tanh(softmax(h hᵀ/√D) h A_i)``, then a
    mean-pool and a linear map to E. Layer L = input of block L; ``x`` is the layer-0 state."""
    g = torch.Generator().manual_seed(seed)
    As = [torch.randn(D, D, generator=g, dtype=dtype) * 0.5 for _ in range(blocks)]
    out = torch.randn(E, D, generator=g, dtype=dtype)

    def block(h: Tensor, A: Tensor) -> Tensor:
        att = torch.softmax(h @ h.transpose(-1, -2) / D**0.5, dim=-1)
        return h + torch.tanh(att @ h @ A)

    def run(h: Tensor, start: int) -> Tensor:
        for A in As[start:]:
            h = block(h, A)
        return h

    def prefix(x: Tensor, layer: int) -> Tensor:
        h = x.unsqueeze(0)
        for A in As[:layer]:
            h = block(h, A)
        return h[0]

    def suffix(x: Tensor, layer: int):
        return lambda H: torch.tanh(run(H, layer)).mean(dim=1) @ out.T

    def reference(x: Tensor, spec) -> Tensor:
        return torch.zeros_like(x) if spec is None else spec

    return FunctionTower(
        prefix, suffix, _positions, reference, num_layers=blocks, name=f"mix{seed}"
    )


def planted_model(Wa: Tensor, Wb: Tensor, recorder: Recorder | None = None) -> DualEncoder:
    return DualEncoder(
        planted_tower(Wa, "a", recorder),
        planted_tower(Wb, "b", recorder),
        similarity="dot",
        name="planted",
    )


def mixing_model(seed: int = 0, same: bool = False, **kw) -> DualEncoder:
    ta = mixing_tower(seed, **kw)
    tb = ta if same else mixing_tower(seed + 100, **kw)
    return DualEncoder(ta, tb, similarity="cosine", name="mixing")
