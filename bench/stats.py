"""Small statistics helpers (no numpy)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def tenths(starts: Sequence[float], ends: Sequence[float]) -> list[float]:
    """Throughput (jobs/s) of each tenth of the jobs, in completion order."""
    if len(ends) < 10:
        return []
    order = sorted(ends)
    size = len(order) / 10
    rates = []
    prev = min(starts)
    for i in range(1, 11):
        end = order[round(i * size) - 1]
        span = end - prev
        rates.append(round(size / span, 1) if span > 0 else math.inf)
        prev = end
    return rates
