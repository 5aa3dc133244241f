"""Integer weight averaging over the last epochs of a run (stochastic weight averaging, in integers).

With `average_epochs: K` the integer trainer adds its weights to an int64 sum at the end of each of
the last K epochs, and the run's final model is the rounded mean of those K snapshots. Late in a
NITI run mu is 0 and each weight still moves by a few LSBs per epoch around where it settles; the
mean sits nearer the centre of that wander than any one snapshot (Izmailov et al., "Averaging
Weights Leads to Wider Optima", 2018, do the same in float).

Everything is integer: weight exponents are fixed at initialisation, so the snapshots of a weight
share one exponent and their mantissas add exactly. Under `update_rule: shadow16` the int16 shadow
(8 fraction bits below the int8 LSB) is what gets summed, so sub-LSB positions count; the mean is
then one division by K * 2**8 rounded to nearest (half away from zero), clamped to the int8 range.
The division runs once per evaluation, not per step, and K need not be a power of two.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..contract.numerics import INT8_MAX, SHADOW_FRAC_BITS, QTensor


def round_div(total: np.ndarray, divisor: int) -> np.ndarray:
    """total / divisor rounded to nearest, halves away from zero, in integers (divisor > 0).

    >>> round_div(np.array([7, -7, 5, -5, 4]), 2).tolist()
    [4, -4, 3, -3, 2]
    """
    total = np.asarray(total, dtype=np.int64)
    q = (np.abs(total) * 2 + divisor) // (2 * divisor)
    return np.where(total < 0, -q, q)


class IntegerWeightAverage:
    """Running int64 sums of weight snapshots, keyed by weight name; `count` snapshots so far."""

    def __init__(self, weights: tuple[str, ...], shadowed: bool):
        self.weights = weights
        self.shadowed = shadowed  # sum the int16 shadows (8 fraction bits) instead of the int8 weights
        self.count = 0
        self.sums: dict[str, np.ndarray] = {}

    def source(self, weight: str) -> str:
        """The parameter whose mantissas are summed for `weight`."""
        return f"{weight}.shadow" if self.shadowed else weight

    def add(self, params: Mapping[str, QTensor]) -> None:
        for w in self.weights:
            m = np.asarray(params[self.source(w)].m).astype(np.int64)
            self.sums[w] = self.sums[w] + m if w in self.sums else m
        self.count += 1

    def averaged(self, params: Mapping[str, QTensor]) -> dict[str, QTensor]:
        """`params` with every weight replaced by the rounded mean of the snapshots (int8, same exponent)."""
        if self.count == 0:
            raise ValueError("no snapshot to average")
        divisor = self.count << (SHADOW_FRAC_BITS if self.shadowed else 0)
        out = dict(params)
        for w in self.weights:
            mean = np.clip(round_div(self.sums[w], divisor), -INT8_MAX, INT8_MAX)
            out[w] = QTensor(mean.astype(np.int8), params[w].e)
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The sums, for a checkpoint (the count goes into its meta)."""
        return dict(self.sums)

    def restore(self, sums: Mapping[str, np.ndarray], count: int) -> None:
        missing = set(self.weights) - set(sums) if count else set()
        if missing:
            raise KeyError(f"no average sum for {sorted(missing)}")
        self.sums = {w: np.asarray(sums[w], dtype=np.int64) for w in self.weights} if count else {}
        self.count = count
