"""CMOS technology scaling of area and energy between nodes (7 nm to 130 nm).

Source: A. Stillmaker and B. Baas, "Scaling equations for the accurate prediction of CMOS device
performance from 180 nm to 7 nm", Integration, the VLSI Journal 58 (2017) 74-81,
doi:10.1016/j.vlsi.2017.02.002. The numbers below are their area scaling factors and their
per-node energy fits (energy = a Vdd^2 + b Vdd + c), as tabulated by the Accelergy project's
hwcomponents package (hwcomponents/scaling/techscaling.py, MIT licence), which uses them the same
way: nodes between two tabulated ones interpolate linearly in the node index, and energy fits are
evaluated at one supply voltage for both nodes (0.8 V, hwcomponents' default; the accelerator
configs give no Vdd). Outside 7-130 nm nothing is extrapolated: the config loader refuses such a
node.

Every default table entry of this simulator is a 45 nm figure (Horowitz, ISSCC 2014; CACTI at
45 nm), so `area_factor(45, node)` and `energy_factor(45, node)` are what the loader applies.
"""
from __future__ import annotations

import math

SOURCE = "Stillmaker & Baas 2017 (Integration 58:74-81) scaling"
SOURCE_NODE_NM = 45.0  # the node of every default energy and area entry (Horowitz 2014; CACTI at 45 nm)
VDD_V = 0.8  # supply voltage at which both nodes' energy fits are evaluated (hwcomponents' default)

NODES_NM: tuple[float, ...] = (130, 90, 65, 45, 32, 20, 16, 14, 10, 7)
MIN_NODE_NM, MAX_NODE_NM = min(NODES_NM), max(NODES_NM)

# AREA[i][j]: multiply an area at NODES_NM[i] by this to get it at NODES_NM[j].
AREA: tuple[tuple[float, ...], ...] = (
    (1, 0.44, 0.23, 0.16, 0.072, 0.033, 0.03, 0.027, 0.016, 0.0092),
    (2.3, 1, 0.53, 0.35, 0.16, 0.075, 0.067, 0.061, 0.036, 0.021),
    (4.3, 1.9, 1, 0.66, 0.31, 0.14, 0.13, 0.12, 0.068, 0.039),
    (6.4, 2.8, 1.5, 1, 0.46, 0.21, 0.19, 0.17, 0.1, 0.059),
    (14, 6.1, 3.3, 2.2, 1, 0.46, 0.41, 0.38, 0.22, 0.13),
    (30, 13, 7.1, 4.7, 2.2, 1, 0.89, 0.82, 0.48, 0.28),
    (34, 15, 7.9, 5.3, 2.4, 1.1, 1, 0.91, 0.54, 0.31),
    (37, 16, 8.7, 5.8, 2.7, 1.2, 1.1, 1, 0.59, 0.34),
    (63, 28, 15, 9.8, 4.5, 2.1, 1.9, 1.7, 1, 0.58),
    (110, 48, 25, 17, 7.8, 3.6, 3.2, 2.9, 1.7, 1),
)

# ENERGY[i] = (a, b, c): relative switching energy at NODES_NM[i] is a Vdd^2 + b Vdd + c.
ENERGY: tuple[tuple[float, float, float], ...] = (
    (7.171, -6.709, 2.904),
    (4.762, -4.781, 2.092),
    (3.755, -4.398, 1.975),
    (1.103, -0.362, 0.2767),
    (0.9559, -0.7823, 0.471),
    (0.373, -0.1582, 0.04104),
    (0.2958, -0.1241, 0.03024),
    (0.2363, -0.09675, 0.02239),
    (0.2068, -0.09311, 0.02375),
    (0.1776, -0.09097, 0.02447),
)


def in_range(node_nm: float) -> bool:
    return MIN_NODE_NM <= node_nm <= MAX_NODE_NM


def _index(node_nm: float) -> float:
    """Fractional position of node_nm in NODES_NM (linear in nm between two tabulated nodes)."""
    if not in_range(node_nm):
        raise ValueError(f"node {node_nm} nm is outside {MIN_NODE_NM:g}-{MAX_NODE_NM:g} nm")
    for i in range(len(NODES_NM) - 1):
        big, small = NODES_NM[i], NODES_NM[i + 1]
        if small <= node_nm <= big:
            return i + (big - node_nm) / (big - small)
    raise AssertionError("unreachable: the range check covers every node")  # pragma: no cover


def _split(x: float) -> tuple[int, int, float]:
    lo = math.floor(x)
    return lo, min(lo + 1, len(NODES_NM) - 1), x - lo


def area_factor(from_nm: float, to_nm: float) -> float:
    """Multiply an area at from_nm by this to get the area at to_nm (bilinear in the node indices)."""
    (i0, i1, fi), (j0, j1, fj) = _split(_index(from_nm)), _split(_index(to_nm))
    return ((1 - fi) * ((1 - fj) * AREA[i0][j0] + fj * AREA[i0][j1])
            + fi * ((1 - fj) * AREA[i1][j0] + fj * AREA[i1][j1]))


def _energy_fit(node_nm: float, vdd_v: float) -> float:
    i0, i1, f = _split(_index(node_nm))
    fit = [sum(c * vdd_v ** (2 - k) for k, c in enumerate(ENERGY[i])) for i in (i0, i1)]
    return (1 - f) * fit[0] + f * fit[1]


def energy_factor(from_nm: float, to_nm: float, vdd_v: float = VDD_V) -> float:
    """Multiply an energy per action at from_nm by this to get it at to_nm (same supply voltage)."""
    return _energy_fit(to_nm, vdd_v) / _energy_fit(from_nm, vdd_v)
