"""Wall-clock helpers the benchmarks share: best of repeated calls, and interleaved races.

Best-of (not mean) because on a shared machine the slow outliers are other processes, not the code;
interleaving contenders round by round makes drift hit every contender alike.
"""
from __future__ import annotations

import time


def best_seconds(fn, repeats: int) -> float:
    """Minimum wall time of `repeats` calls after one warm-up call (library load, allocation, first-call set-up)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def race(contenders: dict, repeats: int, rounds: int = 3) -> dict[str, float]:
    """Best time of each contender over `rounds` interleaved rounds of `repeats` calls."""
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            best[name] = min(best[name], best_seconds(fn, repeats))
    return best
