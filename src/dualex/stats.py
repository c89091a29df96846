"""Statistics shared by the evaluation and the built-in models' recipes (no dualex imports, so
any package may use it without an import cycle)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["BOOTSTRAP", "bootstrap_ci"]

BOOTSTRAP = 1000
"""Bootstrap resamples of a confidence interval."""


def bootstrap_ci(
    values: Sequence[float], level: float = 0.95, n_boot: int = BOOTSTRAP, seed: int = 0
) -> tuple[float, float, float, int]:
    """Mean and percentile-bootstrap interval of the finite values.

    Returns:
        ``(mean, low, high, n)``; NaNs when there is no finite value.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return (float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    a = (1 - level) / 2
    return (float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a)), len(v))
