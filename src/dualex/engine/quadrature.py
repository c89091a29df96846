"""Quadrature rules on [0, 1] for the path integral of the Jacobian.

Pure numerics, no model knowledge: each rule returns ``(alphas, weights)`` with
``sum_q weights[q] * f(alphas[q]) ≈ ∫_0^1 f(α) dα``.
"""

from __future__ import annotations

import numpy as np
import torch

from dualex.errors import SettingError

RULES = ("gauss-legendre", "riemann", "trapezoid")
"""Names accepted by :func:`nodes_and_weights`."""

_ALIASES = {
    "gauss-legendre": "gauss-legendre",
    "gauss_legendre": "gauss-legendre",
    "gl": "gauss-legendre",
    "riemann": "riemann",
    "riemann_right": "riemann",
    "trapezoid": "trapezoid",
    "trapezoidal": "trapezoid",
}


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
            N nodes) or ``"trapezoid"`` (N ≥ 2 equispaced nodes including both ends).
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
    if name == "gauss-legendre":
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
