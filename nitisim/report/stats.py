"""Agreement statistics between measured time and simulated cycles: pure functions, no numpy needed.

- `shares`: each point's fraction of the total, so seconds and cycles compare without units.
- `spearman`: rank correlation (average ranks for ties, then Pearson on the ranks), the same
  definition as scipy.stats.spearmanr, written out so reports need no scipy.
- `linear_fit`: least-squares y = slope * x + intercept with its coefficient of determination R^2,
  the check SCALE-Sim's authors ran between measured TPU v4 matmul time and simulated cycles.
- `lower_quartile`: the time a kernel takes when nothing else holds its core (measured node times
  and the host model's probes both use it).

Degenerate inputs (fewer than two points, a constant series) give `None` rather than a number:
a report must say "undefined" instead of printing a meaningless 0 or NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class LinearFit:
    slope: float  # y units per x unit (here: measured seconds per simulated cycle)
    intercept: float  # y at x = 0 (fixed per-node overhead the accelerator model does not have)
    r2: float | None  # 1 - SS_res / SS_tot; None when y is constant
    points: int


def shares(values: Sequence[float]) -> list[float]:
    """Each value divided by the sum (all zeros when the sum is zero).

    >>> shares([1, 3])
    [0.25, 0.75]
    """
    total = float(sum(values))
    return [float(v) / total if total else 0.0 for v in values]


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the average of the ranks they span.

    >>> ranks([10, 20, 20, 5])
    [2.0, 3.5, 3.5, 1.0]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        average = (i + j) / 2 + 1  # ranks i+1 .. j+1
        for k in range(i, j + 1):
            out[order[k]] = average
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None for fewer than two points or a constant series."""
    _check_pair(x, y)
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation: Pearson correlation of the (tie-averaged) ranks.

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    _check_pair(x, y)
    return pearson(ranks(x), ranks(y))


def linear_fit(x: Sequence[float], y: Sequence[float]) -> LinearFit | None:
    """Least-squares line y = slope * x + intercept and its R^2; None when x is constant or n < 2."""
    _check_pair(x, y)
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        return None
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((b - my) ** 2 for b in y)
    ss_res = sum((b - (slope * a + intercept)) ** 2 for a, b in zip(x, y))
    r2 = None if ss_tot == 0 else 1.0 - ss_res / ss_tot
    return LinearFit(slope, intercept, r2, n)


def lower_quartile(values: Sequence[float]) -> float:
    """The 25th percentile, linear between order statistics (numpy's default percentile).

    On the shared VMs this project runs on, a kernel's calls split into two speeds about 2x apart
    (spells of ~0.1 s where another tenant holds the core's other hardware thread or its AMX unit;
    invisible to the guest: no steal time). The median lands on either speed or between them,
    depending on the share of slow spells, and moved 2x between calibrations a minute apart;
    the lower quartile is the uncontended speed whenever at least a quarter of the calls had it.
    >>> lower_quartile([4.0, 1.0, 2.0, 3.0, 5.0])
    2.0
    """
    if not values:
        raise ValueError("lower_quartile of no values")
    xs = sorted(values)
    pos = 0.25 * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _check_pair(x: Sequence[float], y: Sequence[float]) -> None:
    if len(x) != len(y):
        raise ValueError(f"series differ in length: {len(x)} and {len(y)}")
