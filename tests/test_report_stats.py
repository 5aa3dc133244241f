"""The report's statistics on inputs with known answers (no files, no plotting)."""
import math

import pytest

from nitisim.report.stats import linear_fit, pareto_front, pareto_front_nd, pearson, ranks, shares, spearman


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


def test_pareto_front_minimises_both():
    points = [(10, 5), (8, 9), (12, 4), (9, 6), (11, 7), (8, 9)]
    front = pareto_front(points)
    assert [points[i] for i in front] == [(8, 9), (8, 9), (9, 6), (10, 5), (12, 4)]
    assert 4 not in front  # (11, 7) is beaten by (10, 5) in both
    assert pareto_front([]) == []
    assert math.isclose(len(pareto_front([(1, 1)])), 1)


def _brute_front(points):
    """The definition, pair by pair: dominated when another point is <= everywhere and < somewhere."""
    return {i for i, p in enumerate(points)
            if not any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for q in points)}


def test_pareto_front_nd_is_the_definition_and_agrees_with_the_two_objective_front():
    import random

    rng = random.Random(7)
    for trial in range(200):
        n, dims = rng.randint(0, 30), rng.choice((2, 3, 4))
        # few distinct values, so ties and exact duplicates are common
        points = [tuple(rng.randint(0, 5) for _ in range(dims)) for _ in range(n)]
        front = pareto_front_nd(points)
        assert set(front) == _brute_front(points) and len(front) == len(set(front)), (trial, points)
        assert [points[i] for i in front] == sorted(points[i] for i in front)
        if dims == 2:
            assert set(front) == set(pareto_front(points))


def test_a_third_objective_can_only_add_front_points_except_ties():
    # (1, 1) and (1, 1) tie on two objectives; the area breaks the tie.
    points2 = [(1, 1), (1, 1), (2, 0.5), (3, 3)]
    area = [5.0, 1.0, 9.0, 0.1]
    assert set(pareto_front_nd(points2)) == {0, 1, 2}
    assert set(pareto_front_nd([p + (a,) for p, a in zip(points2, area)])) == {1, 2, 3}
