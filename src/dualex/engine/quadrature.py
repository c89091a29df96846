"""Quadrature rules on [0, 1] for the path integral of the Jacobian.

Pure numerics, no model knowledge: each rule returns ``(alphas, weights)`` with
``sum_q weights[q] * f(alphas[q]) ≈ ∫_0^1 f(α) dα``.

Adaptive steps raise the node count through :func:`nested_levels`, a sequence of rules in which
every level contains all nodes of the one before (as the same floats), so a caller that keeps the
integrand's values per node evaluates each node once. For Gauss–Legendre the sequence starts at
the 4-node Gauss rule and continues with its Kronrod–Patterson extensions (4 → 9 → 19 → 39 → 79
nodes, exact for polynomials of degree 7, 13, 29, 59, 121): each extension adds the ``m + 1``
zeros of the polynomial orthogonal to every lower degree with respect to the previous level's
node polynomial, which keeps the old nodes and (for Legendre, from 4 nodes on, checked by the
tests) has real nodes inside the interval and positive weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from dualex.errors import SettingError

RULES = ("gauss-legendre", "riemann", "trapezoid", "kronrod-patterson")
"""Names accepted by :func:`nodes_and_weights`."""

_ALIASES = {
    "gauss-legendre": "gauss-legendre",
    "gauss_legendre": "gauss-legendre",
    "gl": "gauss-legendre",
    "riemann": "riemann",
    "riemann_right": "riemann",
    "trapezoid": "trapezoid",
    "trapezoidal": "trapezoid",
    "kronrod-patterson": "kronrod-patterson",
    "patterson": "kronrod-patterson",
    "gauss-kronrod": "kronrod-patterson",
}

KRONROD_START = 4
"""Nodes of the Gauss–Legendre rule the Kronrod–Patterson sequence extends."""


def canonical_rule(rule: str | None) -> str:
    """Return the canonical name of a quadrature rule (``None`` → ``"gauss-legendre"``).

    Raises:
        SettingError: if the rule is unknown.
    """
    if rule is None:
        return "gauss-legendre"
    key = str(rule).strip().lower()
    if key not in _ALIASES:
        raise SettingError(f"unknown quadrature rule {rule!r}; use one of {', '.join(RULES)}")
    return _ALIASES[key]


def nodes_and_weights(
    rule: str | None, n: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of an ``n``-point rule on [0, 1].

    Args:
        rule: ``"gauss-legendre"`` (default), ``"riemann"`` (right endpoints
            α = 1, 1−1/N, …, 1/N, weight 1/N: the convention of the paper's code, with exactly
            N nodes), ``"trapezoid"`` (N ≥ 2 equispaced nodes including both ends) or
            ``"kronrod-patterson"`` (N one of 4, 9, 19, 39, 79, …: the nested extensions of the
            4-node Gauss rule, see the module docstring).
        n: Number of nodes.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(alphas, weights)``, both of shape ``[n]``.

    Raises:
        SettingError: on an unknown rule or a node count the rule cannot use.
    """
    name = canonical_rule(rule)
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise SettingError(f"steps must be a positive integer, got {n!r}")
    n = int(n)
    if name == "kronrod-patterson":
        sizes = _patterson_sizes(MAX_PATTERSON_LEVEL)
        if n not in sizes:
            raise SettingError(
                f"the Kronrod–Patterson rule has {', '.join(map(str, sizes))} nodes, not {n}; "
                "pass one of those as steps"
            )
        x, w = _patterson(sizes.index(n))
        alphas, weights = (x + 1.0) / 2.0, w / 2.0
    elif name == "gauss-legendre":
        x, w = np.polynomial.legendre.leggauss(n)
        alphas = (x + 1.0) / 2.0
        weights = w / 2.0
    elif name == "riemann":
        # k / n for k = n, n-1, ..., 1: integer arithmetic, so exactly n nodes for every n.
        alphas = np.arange(n, 0, -1, dtype=np.float64) / n
        weights = np.full(n, 1.0 / n)
    else:
        if n < 2:
            raise SettingError("the trapezoid rule needs at least 2 steps; pass steps >= 2")
        alphas = np.linspace(0.0, 1.0, n)
        weights = np.full(n, 1.0 / (n - 1))
        weights[0] = weights[-1] = 0.5 / (n - 1)
    return torch.as_tensor(alphas, dtype=dtype), torch.as_tensor(weights, dtype=dtype)


MAX_PATTERSON_LEVEL = 4
"""Extensions of the Kronrod–Patterson sequence dualex computes (4 … 79 nodes; the next one
is beyond float64 root finding of its polynomial)."""


def _patterson_sizes(levels: int) -> list[int]:
    sizes = [KRONROD_START]
    for _ in range(levels):
        sizes.append(2 * sizes[-1] + 1)
    return sizes


@functools.cache
def _patterson(level: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes on [-1, 1] (the previous level's first, as the same floats) and weights."""
    if level == 0:
        return np.polynomial.legendre.leggauss(KRONROD_START)
    from numpy.polynomial import legendre as leg

    old, _ = _patterson(level - 1)
    m = len(old)
    # ∫ p(x) ω(x) P_k(x) dx = 0 for k ≤ m, ω = Π (x − old nodes), p = P_{m+1} + Σ c_j P_j.
    x, w = leg.leggauss(4 * m + 8)  # exact for the degree-(3m + 1) integrands
    omega = np.prod(x[:, None] - old[None, :], axis=1)
    omega /= np.abs(omega).max()
    V = leg.legvander(x, m + 1)  # [points, m + 2]
    A = (V[:, : m + 1] * (w * omega)[:, None]).T @ V  # [m + 1, m + 2]
    c = np.linalg.solve(A[:, : m + 1], -A[:, m + 1])
    new = leg.legroots(np.append(c, 1.0))
    if np.iscomplexobj(new) or np.abs(new).max() >= 1.0:
        raise SettingError(f"the Kronrod–Patterson extension to {2 * m + 1} nodes does not exist")
    if len(new) % 2 == 1:  # symmetric: the middle root is 0, the 1-node Gauss rule's node
        new[np.argmin(np.abs(new))] = 0.0
    nodes = np.concatenate([old, np.sort(new.real)])
    # weights: exact for P_0 … P_{2m} (then, by the construction, up to degree 3m + 1)
    weights = np.linalg.solve(leg.legvander(nodes, 2 * m).T, np.eye(2 * m + 1)[0] * 2.0)
    return nodes, weights


@dataclass(frozen=True)
class Level:
    """One rule of an adaptive sequence.

    Attributes:
        alphas: Nodes ``[n]`` on [0, 1] (float64).
        weights: Weights ``[n]``.
        rule: Canonical name of this level's rule (reported with the result).
    """

    alphas: torch.Tensor
    weights: torch.Tensor
    rule: str

    @property
    def steps(self) -> int:
        return len(self.alphas)


def nested_levels(rule: str | None, max_steps: int, midpoint: bool = False) -> list[Level]:
    """The rules adaptive steps try in turn, up to ``max_steps`` nodes.

    Consecutive levels share nodes as the same floats (a caller keeps the values it has):

    * ``"gauss-legendre"``: the 4-node Gauss rule, then its Kronrod–Patterson extensions
      (9, 19, 39, … nodes), all nested, reported as ``"kronrod-patterson"`` (whose 4-node rule
      is the Gauss rule), so ``steps`` and ``rule`` of a result reproduce it;
    * ``"kronrod-patterson"``: the same sequence;
    * ``"riemann"``: 1, 2, 4, … nodes (right endpoints ``k/N``: every node is one of the next);
    * ``"trapezoid"``: 2, 3, 5, 9, … nodes (``k/(N−1)``: every node is one of the next).

    With ``midpoint``, the Gauss sequence starts with the 1-node rule (α = ½, a node of the
    9-node level): for a caller whose trial levels are cheap next to the final one.

    The last level is the rule with ``max_steps`` nodes itself when the sequence does not reach
    it exactly (Gauss–Legendre for the Gauss sequence), so adaptive steps can still end at the cap.

    Args:
        rule: Quadrature rule (``None``: Gauss–Legendre).
        max_steps: Most nodes of any level.

    Returns:
        The levels, fewest nodes first.
    """
    name = canonical_rule(rule)
    if name in ("gauss-legendre", "kronrod-patterson"):
        sizes = [n for n in _patterson_sizes(MAX_PATTERSON_LEVEL) if n <= max_steps]
        levels = []
        for i in range(len(sizes)):
            x, w = _patterson(i)
            a, wt = torch.as_tensor((x + 1.0) / 2.0), torch.as_tensor(w / 2.0)
            levels.append(Level(a, wt, "kronrod-patterson"))
        if midpoint and max_steps > 1:
            levels.insert(0, Level(*nodes_and_weights("gauss-legendre", 1), "gauss-legendre"))
        if not sizes or (name == "gauss-legendre" and sizes[-1] != max_steps):
            levels.append(Level(*nodes_and_weights("gauss-legendre", max_steps), "gauss-legendre"))
        return levels
    if name == "riemann":
        sizes = _doubling(1, max_steps, lambda n: 2 * n)
        return [Level(*nodes_and_weights("riemann", n), "riemann") for n in sizes]
    sizes = _doubling(2, max(max_steps, 2), lambda n: 2 * n - 1)
    out = []
    for n in sizes:
        a = torch.arange(n, dtype=torch.float64) / (n - 1)
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
        out.append(Level(a, w, "trapezoid"))
    return out


def _doubling(first: int, cap: int, step: object) -> list[int]:
    sizes = [min(first, cap)]
    while sizes[-1] < cap:
        sizes.append(min(step(sizes[-1]), cap))  # type: ignore[operator]
    return sizes
