"""The Pareto front of a design sweep: the points no other point beats in every objective."""
from __future__ import annotations

from typing import Sequence


def pareto_front_nd(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point beats in every coordinate (minimising all), in
    lexicographic order of the points. Dominated: another point is <= in every coordinate and < in
    at least one; exact duplicates are all kept.

    A point can only be dominated by one that sorts before it, and anything a dominated point
    dominates the front dominates too, so each point is checked against the front so far.

    >>> pareto_front_nd([(1, 5, 1), (2, 2, 2), (2, 2, 1), (4, 1, 9), (2, 2, 1)])
    [0, 2, 4, 3]
    """
    order = sorted(range(len(points)), key=lambda i: tuple(points[i]))
    front: list[int] = []
    for i in order:
        p = tuple(float(v) for v in points[i])
        dominated = any(all(a <= b for a, b in zip(q, p)) and q != p
                        for q in (tuple(float(v) for v in points[j]) for j in front))
        if not dominated:
            front.append(i)
    return front
