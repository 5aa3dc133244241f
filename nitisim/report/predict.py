"""Measured versus predicted time on a calibrated machine model (hwmodels' `host:` configs).

A machine model prices the very machine that measured, so its cycles at its clock are a prediction
in seconds, and the check is direct: per (layer, phase), measured minus predicted seconds (the
residual), with no fitted slope. `r2` is the coefficient of determination of the prediction itself,
1 - sum (measured - predicted)^2 / sum (measured - mean)^2, which a scale error lowers (unlike the
fitted R^2 of the accelerators' agreement, which forgives any slope). Pure functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .stats import LinearFit, linear_fit, spearman


@dataclass(frozen=True)
class Residual:
    layer: str
    phase: str
    measured_seconds: float  # per training step
    predicted_seconds: float  # simulated cycles / clock

    @property
    def residual_seconds(self) -> float:
        return self.measured_seconds - self.predicted_seconds


@dataclass(frozen=True)
class Prediction:
    sim: str  # the machine model's label
    residuals: tuple[Residual, ...]  # largest |residual| first
    r2: float | None  # of the prediction itself (no fit); None for fewer than two points or constant time
    fit: LinearFit | None  # measured = slope * predicted + intercept, for comparison with the accelerators
    spearman: float | None
    measured_total_seconds: float
    predicted_total_seconds: float


def prediction_r2(measured: list[float], predicted: list[float]) -> float | None:
    """1 - SS_res / SS_tot of predicted against measured (may be negative: worse than the mean).

    >>> prediction_r2([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), prediction_r2([1.0, 3.0], [2.0, 2.0])
    (1.0, 0.0)
    """
    if len(measured) < 2:
        return None
    mean = sum(measured) / len(measured)
    ss_tot = sum((y - mean) ** 2 for y in measured)
    if ss_tot == 0:
        return None
    return 1.0 - sum((y - x) ** 2 for x, y in zip(predicted, measured)) / ss_tot


def predict(label: str, measured: Iterable, simulated: Iterable, clock_hz: float) -> Prediction:
    """Join measured seconds (join.PhaseTime) with a machine model's cycles (join.PhaseCost) at clock_hz."""
    seconds = {(m.layer, m.phase): m.seconds for m in measured}
    cycles = {(s.layer, s.phase): s.cycles for s in simulated}
    rows = [Residual(layer, phase, seconds[(layer, phase)], cycles[(layer, phase)] / clock_hz)
            for layer, phase in seconds if (layer, phase) in cycles]
    ys = [r.measured_seconds for r in rows]
    xs = [r.predicted_seconds for r in rows]
    return Prediction(
        sim=label,
        residuals=tuple(sorted(rows, key=lambda r: -abs(r.residual_seconds))),
        r2=prediction_r2(ys, xs),
        fit=linear_fit(xs, ys),
        spearman=spearman(xs, ys) if len(rows) >= 2 else None,
        measured_total_seconds=sum(ys),
        predicted_total_seconds=sum(xs),
    )
