"""Measured versus predicted time on a machine model (nitisim/report/predict.py): residual order,
the prediction's own R^2 (which a scale error lowers, unlike a fitted line's), and the report section."""
import pytest

from nitisim.report.join import PhaseCost, PhaseTime
from nitisim.report.predict import predict, prediction_r2


def phases(seconds: dict) -> list[PhaseTime]:
    return [PhaseTime(layer, phase, s) for (layer, phase), s in seconds.items()]


def costs(cycles: dict) -> list[PhaseCost]:
    return [PhaseCost(layer, phase, 0, c, 0.0, 0.0, 0.0) for (layer, phase), c in cycles.items()]


MEASURED = {("a", "forward"): 1.0e-3, ("a", "vector"): 0.5e-3, ("b", "forward"): 2.0e-3, ("c", "update"): 0.1e-3}


def test_exact_prediction_has_r2_one_and_zero_residuals():
    p = predict("m", phases(MEASURED), costs({k: v * 2e9 for k, v in MEASURED.items()}), clock_hz=2e9)
    assert p.r2 == pytest.approx(1.0) and p.spearman == pytest.approx(1.0)
    assert all(r.residual_seconds == pytest.approx(0.0, abs=1e-15) for r in p.residuals)


def test_a_scale_error_lowers_the_prediction_r2_but_not_the_fitted_one():
    p = predict("m", phases(MEASURED), costs({k: v * 1e9 for k, v in MEASURED.items()}), clock_hz=2e9)  # half
    assert p.fit.r2 == pytest.approx(1.0) and p.fit.slope == pytest.approx(2.0)
    ys = list(MEASURED.values())
    mean = sum(ys) / len(ys)
    expected = 1 - sum((y / 2) ** 2 for y in ys) / sum((y - mean) ** 2 for y in ys)
    assert p.r2 == pytest.approx(expected) and p.r2 < 0.9


def test_residuals_largest_first_and_unmatched_points_left_out():
    predicted = {("a", "forward"): 1.0e-3, ("a", "vector"): 0.2e-3, ("b", "forward"): 2.5e-3,
                 ("c", "update"): 0.1e-3, ("z", "forward"): 9.0}
    p = predict("m", phases(MEASURED), costs(predicted), clock_hz=1.0)
    assert [(r.layer, r.phase) for r in p.residuals] == [("b", "forward"), ("a", "vector"), ("a", "forward"),
                                                         ("c", "update")]
    assert p.residuals[0].residual_seconds == pytest.approx(-0.5e-3)
    assert p.predicted_total_seconds == pytest.approx(3.8e-3)


def test_prediction_r2_undefined_cases():
    assert prediction_r2([1.0], [1.0]) is None
    assert prediction_r2([2.0, 2.0], [1.0, 3.0]) is None
