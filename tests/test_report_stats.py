"""The report's statistics on inputs with known answers (no files, no plotting)."""

import pytest

from nitisim.report.stats import linear_fit, pearson, ranks, shares, spearman


def test_perfect_line_has_r2_one_and_recovers_slope_and_intercept():
    xs = [1.0, 2.0, 5.0, 9.0, 20.0]
    fit = linear_fit(xs, [3e-9 * x + 2e-6 for x in xs])
    assert fit.points == 5
    assert fit.slope == pytest.approx(3e-9)
    assert fit.intercept == pytest.approx(2e-6)
    assert fit.r2 == pytest.approx(1.0)


def test_r2_of_a_known_noisy_fit():
    # y = x plus residuals (+1, -1, -1, +1) around x = 1..4: least squares gives slope 1, intercept 0,
    # SS_res = 4, SS_tot of y = (2,1,2,5) -> mean 2.5, SS_tot = 0.25+2.25+0.25+6.25 = 9.
    fit = linear_fit([1, 2, 3, 4], [2, 1, 2, 5])
    assert fit.slope == pytest.approx(1.0)
    assert fit.intercept == pytest.approx(0.0)
    assert fit.r2 == pytest.approx(1 - 4 / 9)


def test_degenerate_fits_are_undefined_not_numbers():
    assert linear_fit([1], [2]) is None
    assert linear_fit([3, 3, 3], [1, 2, 3]) is None  # constant x: no slope
    assert linear_fit([1, 2, 3], [5, 5, 5]).r2 is None  # constant y: R^2 undefined
    assert spearman([1, 2, 3], [7, 7, 7]) is None
    assert pearson([], []) is None


def test_spearman_known_values():
    assert spearman([1, 2, 3, 4, 5], [2, 4, 8, 16, 32]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # Textbook example without ties: d = (0, 1, -1, 0, 0) -> rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    # With ties: scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]) = 0.9486832980505138
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9486832980505138)


def test_ranks_average_ties():
    assert ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert ranks([7, 7, 7]) == [2.0, 2.0, 2.0]


def test_shares_sum_to_one_and_handle_zero_total():
    assert sum(shares([3, 1, 6])) == pytest.approx(1.0)
    assert shares([0, 0]) == [0.0, 0.0]


def test_series_of_different_lengths_are_a_bug():
    with pytest.raises(ValueError):
        spearman([1, 2], [1])
