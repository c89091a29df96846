"""Limits on a run's size: quadrature steps and the memory they need, checked before allocating.

``steps`` (quadrature nodes) has a hard upper bound, :data:`MAX_STEPS`: Gauss–Legendre with 4
nodes already leaves about 0.04 % completeness error on a ViT-B/32, and computing the nodes of an
``n``-point rule takes memory that grows as ``n²``. :func:`check_steps` also estimates the memory
of the whole run and refuses one that would not fit in the memory available, giving the estimate
and the budget, so a typo (``--steps 1000000000``) ends in one line instead of the OS killing
the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dualex.errors import SettingError

__all__ = ["MAX_STEPS", "MemoryEstimate", "available_memory", "check_steps", "estimate_memory"]

MAX_STEPS = 1024
"""Most quadrature nodes per tower (``steps`` and ``max_steps``)."""

_GL_WORK = 4
"""Gauss–Legendre nodes come from an eigenproblem: about this many ``n × n`` float64 arrays."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run is expected to need, by part.

    Attributes:
        nodes: Computing the quadrature nodes and weights.
        work: The largest working chunk of the projection (bounded by the memory budget).
        result: The projection ``P`` and the integrated Jacobian totals.
    """

    nodes: int
    work: int
    result: int

    @property
    def total(self) -> int:
        return self.nodes + self.work + self.result


def _gib(n: float) -> str:
    return f"{n / 1024**3:.3g} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.3g} MiB"


def available_memory() -> int | None:
    """Bytes of memory the process can still use (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_memory(
    steps: int,
    *,
    rule: str = "gauss-legendre",
    positions: int = 0,
    hidden: int = 0,
    embed: int = 0,
    itemsize: int = 4,
    memory_budget: int | None = None,
) -> MemoryEstimate:
    """Memory one tower's projection with ``steps`` nodes needs (a rough upper estimate).

    Args:
        steps: Quadrature nodes (for adaptive steps: ``max_steps``).
        rule: Quadrature rule (Gauss–Legendre's nodes cost ``O(steps²)`` memory).
        positions: ``S``, positions of the input (0: unknown, the work term is then left out).
        hidden: ``D``, width of the hidden state.
        embed: ``E``, embedding size.
        itemsize: Bytes per element of the model's dtype.
        memory_budget: The projection's chunk budget (default: the engine's).

    Returns:
        A :class:`MemoryEstimate`.
    """
    from dualex.engine.projection import DEFAULT_MEMORY_BUDGET, estimate_item_bytes

    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    nodes = 8 * steps * (_GL_WORK * steps if rule in (None, "gauss-legendre") else 4)
    if positions and hidden:
        items = min(positions, embed) if embed else positions
        work = min(
            budget, estimate_item_bytes(positions, hidden, itemsize, "forward") * steps * items
        )
    else:  # sizes unknown: the chunks adapt to the budget, count only what is known
        work = 0
    result = 2 * embed * max(positions, 1) * 8
    return MemoryEstimate(nodes=int(nodes), work=int(work), result=int(result))


def _check_count(value: object, name: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingError(f"{name} must be a positive integer, got {value!r}; {hint}")
    if value > MAX_STEPS:
        raise SettingError(
            f"{name}={value:,} is more quadrature nodes than dualex allows ({MAX_STEPS}); {hint}"
        )
    return int(value)


def check_steps(
    steps: int | None,
    max_steps: int,
    *,
    rule: str | None = None,
    positions: int = 0,
    hidden: int = 0,
    embed: int = 0,
    itemsize: int = 4,
    memory_budget: int | None = None,
    available: int | None = None,
    names: tuple[str, str] = ("steps", "max_steps"),
) -> MemoryEstimate:
    """Validate ``steps`` / ``max_steps`` and refuse a run whose memory would not fit.

    Call it before preparing anything; the sizes (``positions``, ``hidden``, ``embed``) sharpen
    the estimate when known, and may be left at 0.

    Args:
        steps: Quadrature nodes, or ``None`` for adaptive steps (up to ``max_steps``).
        max_steps: Cap of adaptive steps.
        rule: Quadrature rule name (canonical, or ``None`` for Gauss–Legendre).
        positions: ``S`` of the larger input, if known.
        hidden: ``D`` of the hidden state, if known.
        embed: ``E``, if known.
        itemsize: Bytes per element of the model's dtype.
        memory_budget: The projection's chunk budget.
        available: Bytes of memory available (default: :func:`available_memory`).
        names: How the messages name the two settings (the CLI: ``("--steps", "--max-steps")``).

    Returns:
        The :class:`MemoryEstimate` of the run (for the largest node count it may use).

    Raises:
        SettingError: if ``steps`` or ``max_steps`` is not an integer in ``1..MAX_STEPS``, or the
            estimate exceeds the memory available (the message gives both).
    """
    hint = "leave steps unset for adaptive steps (Gauss–Legendre with 4–16 nodes is usually exact)"
    _check_count(max_steps, names[1], f"pass 1..{MAX_STEPS}; the default is adaptive up to 64")
    if steps is not None:
        _check_count(steps, names[0], f"pass 1..{MAX_STEPS}, or {hint}")
    n = steps if steps is not None else max_steps
    est = estimate_memory(
        n,
        rule=rule or "gauss-legendre",
        positions=positions,
        hidden=hidden,
        embed=embed,
        itemsize=itemsize,
        memory_budget=memory_budget,
    )
    budget = available_memory() if available is None else available
    if budget is not None and est.total > budget:
        what = f"{names[0]}={steps}" if steps is not None else f"{names[1]}={max_steps}"
        raise SettingError(
            f"{what} would need about {_gib(est.total)} of memory (nodes {_gib(est.nodes)}, "
            f"working chunks {_gib(est.work)}, results {_gib(est.result)}) but "
            f"{_gib(budget)} is available; use fewer steps, a smaller memory_budget, or {hint}"
        )
    return est
