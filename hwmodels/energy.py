"""Energy per action (defaults from the spec's table) and pricing of action counts.

The simulator only counts actions (MACs, vector element ops, SRAM and DRAM bytes). Energy is
computed afterwards, here, as count x energy per action, so a result can be re-priced with another
table without re-simulating and every number can be checked by hand:

    energy_pj[component] = sum over its counters of  count * (entry.pj * UNITS_PER_COUNT)

where UNITS_PER_COUNT converts the counter's unit into the table entry's unit (bytes -> 64-bit
accesses is 1/8, bytes -> bits is 8, MACs and ops are 1).

Every default except DRAM is a 45 nm figure; an accelerator at another `node_nm` gets them times
`scaling.energy_factor(45, node_nm)` (Stillmaker & Baas 2017). DRAM energy per bit is the memory
device's and interface's, not the accelerator's logic node, so it is never scaled. Entries a
config gives explicitly are taken as given.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Mapping

from . import scaling
from .spec import BUFFER_NAMES, EnergyEntry

HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"

# DRAM energy per bit by technology (the spec's table).
DRAM_PJ_PER_BIT: Mapping[str, float] = MappingProxyType(
    {"HBM2": 3.9, "HMC": 4.2, "LPDDR4": 8.0, "GDDR5": 14.0, "DDR3": 70.0})
DRAM_SOURCE = "Accelergy CACTI plug-in DRAM table"

# 64-bit SRAM read energy at three capacities (Horowitz 2014); other sizes interpolate log-log.
_SRAM_POINTS = ((8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))

# Energies that do not depend on the configuration.
FIXED_DEFAULTS: Mapping[str, EnergyEntry] = MappingProxyType({
    "mac_int8": EnergyEntry(0.3, "MAC", f"int8 multiply 0.2 pJ + int32 add 0.1 pJ ({HOROWITZ}); "
                                       "Accelergy's 45 nm intmac is 0.315 pJ"),
    "mac_fp32": EnergyEntry(4.6, "MAC", f"fp32 multiply 3.7 pJ + fp32 add 0.9 pJ ({HOROWITZ})"),
    "vector_int8_op": EnergyEntry(0.03, "op", f"int8 add ({HOROWITZ})"),
    "vector_int32_op": EnergyEntry(0.1, "op", f"int32 add ({HOROWITZ})"),
    "vector_fp32_op": EnergyEntry(0.9, "op", f"fp32 add ({HOROWITZ})"),
})

# counter -> (energy action, component, units of the action per counted unit)
COUNTERS: Mapping[str, tuple[str, str, float]] = MappingProxyType({
    "mac_int8": ("mac_int8", "mac_array", 1.0),
    "mac_fp32": ("mac_fp32", "mac_array", 1.0),
    "vector_int8_op": ("vector_int8_op", "vector", 1.0),
    "vector_int32_op": ("vector_int32_op", "vector", 1.0),
    "vector_fp32_op": ("vector_fp32_op", "vector", 1.0),
    **{f"{b}_{rw}_bytes": (f"{b}_{rw}", b, 1 / 8) for b in BUFFER_NAMES for rw in ("read", "write")},
    "dram_read_bytes": ("dram", "dram", 8.0),
    "dram_write_bytes": ("dram", "dram", 8.0),
})
COMPONENTS: tuple[str, ...] = ("mac_array", "vector", *BUFFER_NAMES, "dram")
ACTIONS: tuple[str, ...] = tuple(sorted({action for action, _, _ in COUNTERS.values()}))


def sram_read_pj(size_bytes: int) -> float:
    """64-bit read energy of an SRAM of size_bytes: log-log interpolation of Horowitz's three points,
    extrapolated with the nearest segment's slope outside 8 KB .. 1 MB."""
    pts = _SRAM_POINTS
    seg = 0 if size_bytes <= pts[1][0] else 1
    (s0, e0), (s1, e1) = pts[seg], pts[seg + 1]
    slope = math.log(e1 / e0) / math.log(s1 / s0)
    return e0 * (max(size_bytes, 1) / s0) ** slope


def sram_defaults(name: str, bank_bytes: int) -> dict[str, EnergyEntry]:
    """A buffer's access energies from the size of one bank: each bank is its own SRAM macro, and an
    access reads one bank."""
    pj = round(sram_read_pj(bank_bytes), 3)
    src = (f"{HOROWITZ}: 64-bit SRAM read 10/20/100 pJ at 8 KB/32 KB/1 MB, "
           f"log-log interpolated at {bank_bytes} bytes per bank")
    return {
        f"{name}_read": EnergyEntry(pj, "64-bit access", src),
        f"{name}_write": EnergyEntry(pj, "64-bit access", f"assumed equal to the read; {src}"),
    }


def at_node(table: Mapping[str, EnergyEntry], node_nm: float) -> dict[str, EnergyEntry]:
    """45 nm entries scaled to node_nm (unchanged, sources included, at 45 nm)."""
    if node_nm == scaling.SOURCE_NODE_NM:
        return dict(table)
    f = scaling.energy_factor(scaling.SOURCE_NODE_NM, node_nm)
    note = f"; x{f:.3g} from {scaling.SOURCE_NODE_NM:g} to {node_nm:g} nm ({scaling.SOURCE}, at {scaling.VDD_V:g} V)"
    return {k: EnergyEntry(e.pj * f, e.unit, e.source + note) for k, e in table.items()}


def default_table(bank_bytes: Mapping[str, int], dram_technology: str,
                  node_nm: float = scaling.SOURCE_NODE_NM) -> dict[str, EnergyEntry]:
    """The spec's defaults for one configuration (SRAM entries depend on each buffer's bank size),
    at node_nm (DRAM unscaled)."""
    table = dict(FIXED_DEFAULTS)
    for name, size in bank_bytes.items():
        table.update(sram_defaults(name, size))
    table = at_node(table, node_nm)
    table["dram"] = EnergyEntry(DRAM_PJ_PER_BIT[dram_technology], "bit", f"{DRAM_SOURCE}, {dram_technology}")
    return table


def price(counts: Mapping[str, int], table: Mapping[str, EnergyEntry]) -> dict[str, float]:
    """Energy in pJ per component: sum of count * (entry.pj * units) over the counters it owns,
    added in counter-name order (so a hand computation in that order matches to the last bit)."""
    out = {c: 0.0 for c in COMPONENTS}
    for counter in sorted(counts):
        count = counts[counter]
        if counter not in COUNTERS or not count:
            continue
        action, component, units = COUNTERS[counter]
        out[component] += count * (table[action].pj * units)
    return out
