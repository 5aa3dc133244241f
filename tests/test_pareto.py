"""The sweep's Pareto front (hwmodels/pareto.py) against its definition."""
from hwmodels.pareto import pareto_front_nd


def test_pareto_front_minimises_both():
    points = [(10, 5), (8, 9), (12, 4), (9, 6), (11, 7), (8, 9)]
    front = pareto_front_nd(points)
    assert [points[i] for i in front] == [(8, 9), (8, 9), (9, 6), (10, 5), (12, 4)]
    assert 4 not in front  # (11, 7) is beaten by (10, 5) in both
    assert pareto_front_nd([]) == []
    assert pareto_front_nd([(1, 1)]) == [0]


def _brute_front(points):
    """The definition, pair by pair: dominated when another point is <= everywhere and < somewhere."""
    return {i for i, p in enumerate(points)
            if not any(all(a <= b for a, b in zip(q, p)) and any(a < b for a, b in zip(q, p)) for q in points)}


def test_pareto_front_nd_is_the_definition():
    import random

    rng = random.Random(7)
    for trial in range(200):
        n, dims = rng.randint(0, 30), rng.choice((2, 3, 4))
        # few distinct values, so ties and exact duplicates are common
        points = [tuple(rng.randint(0, 5) for _ in range(dims)) for _ in range(n)]
        front = pareto_front_nd(points)
        assert set(front) == _brute_front(points) and len(front) == len(set(front)), (trial, points)
        assert [points[i] for i in front] == sorted(points[i] for i in front)


def test_a_third_objective_can_only_add_front_points_except_ties():
    # (1, 1) and (1, 1) tie on two objectives; the area breaks the tie.
    points2 = [(1, 1), (1, 1), (2, 0.5), (3, 3)]
    area = [5.0, 1.0, 9.0, 0.1]
    assert set(pareto_front_nd(points2)) == {0, 1, 2}
    assert set(pareto_front_nd([p + (a,) for p, a in zip(points2, area)])) == {1, 2, 3}
