"""Area of one SRAM bank at 45 nm, from CACTI, by capacity and word width.

The table is CACTI 7.0 output (the version bundled with the Accelergy project's hwcomponents-cacti
1.0.40, built from its source; its default configuration: one read/write port, one bank, "ram"
cache type, ITRS low-standby-power cells and periphery, "fast" access mode) at 45 nm, for banks of
1 KiB to 16 MiB (x2 apart) with 8, 16, 32 and 64-byte words; each value is CACTI's "Area (mm2)"
in um^2. CACTI's own memory-cell share ("area efficiency") of these banks is 72-76 %; the rest is
decoders, sense amplifiers, drivers and wiring. CACTI could not organise a 1 KiB bank of 64-byte
words (16 rows), so that column starts at 2 KiB.

A bank between tabulated capacities interpolates log-log along capacity at the two nearest
tabulated widths, then log-log along width. Below or above the tabulated capacities it extrapolates
with the nearest segment's slope (area is close to proportional to capacity there); a width
outside 8-64 bytes uses the nearest tabulated width (an assumption: CACTI was not run there).
CACTI optimises each point separately, so area is not monotone in width at a few capacities
(at most about 20 %); it is monotone in capacity at every width.

Cross-check: the same runs give 64-bit read energies of 6.1, 17 and 94 pJ at 8 KB, 32 KB and
1 MB, against Horowitz's 10, 20 and 100 pJ that price SRAM energy (hwmodels/energy.py).
"""
from __future__ import annotations

import bisect
import math
from types import MappingProxyType
from typing import Mapping

SOURCE = ("CACTI 7.0 (hwcomponents-cacti 1.0.40 default config: 1 RW port, ITRS LSTP cells), 45 nm, "
          "one bank")

# word width in bytes -> ((bank capacity in bytes, area in um^2), ...), capacities increasing
AREA_UM2: Mapping[int, tuple[tuple[int, int], ...]] = MappingProxyType({
    8: (
        (1024, 3599), (2048, 7542), (4096, 13503), (8192, 26267), (16384, 50742), (32768, 94860),
        (65536, 209046), (131072, 429589), (262144, 872093), (524288, 1644630), (1048576, 3262830),
        (2097152, 6465960), (4194304, 11989000), (8388608, 23763000), (16777216, 47406900),
    ),
    16: (
        (1024, 5320), (2048, 8307), (4096, 14268), (8192, 27706), (16384, 50649), (32768, 97539),
        (65536, 187953), (131072, 413480), (262144, 887609), (524288, 1797570), (1048576, 3247350),
        (2097152, 6802150), (4194304, 12778800), (8388608, 25152300), (16777216, 49929800),
    ),
    32: (
        (1024, 10560), (2048, 13482), (4096, 19263), (8192, 30798), (16384, 53742), (32768, 103395),
        (65536, 198942), (131072, 473839), (262144, 859765), (524288, 1797700), (1048576, 3676350),
        (2097152, 6800540), (4194304, 13623000), (8388608, 25666600), (16777216, 51114600),
    ),
    64: (
        (2048, 32550), (4096, 38138), (8192, 49229), (16384, 71363), (32768, 115480), (65536, 221984),
        (131072, 391346), (262144, 1038660), (524288, 1828240), (1048576, 3953010), (2097152, 6978010),
        (4194304, 14259700), (8388608, 28124700), (16777216, 56052000),
    ),
})
WIDTHS: tuple[int, ...] = tuple(sorted(AREA_UM2))


def _loglog(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    if x in (x0, x1):  # a tabulated point is CACTI's number exactly
        return float(y0 if x == x0 else y1)
    return y0 * (x / x0) ** (math.log(y1 / y0) / math.log(x1 / x0))


def _along_capacity(points: tuple[tuple[int, int], ...], bank_bytes: float) -> float:
    sizes = [s for s, _ in points]
    i = min(max(bisect.bisect_left(sizes, bank_bytes), 1), len(points) - 1)
    (s0, a0), (s1, a1) = points[i - 1], points[i]
    return _loglog(bank_bytes, s0, a0, s1, a1)


def bank_area_um2(bank_bytes: int, width_bytes: int) -> float:
    """Area at 45 nm of one SRAM bank of bank_bytes holding width_bytes-byte words."""
    width = min(max(width_bytes, WIDTHS[0]), WIDTHS[-1])
    j = min(max(bisect.bisect_left(WIDTHS, width), 1), len(WIDTHS) - 1)
    w0, w1 = WIDTHS[j - 1], WIDTHS[j]
    a0, a1 = _along_capacity(AREA_UM2[w0], bank_bytes), _along_capacity(AREA_UM2[w1], bank_bytes)
    return _loglog(width, w0, a0, w1, a1)
