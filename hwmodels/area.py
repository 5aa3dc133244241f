"""Silicon area: a per-instance table (defaults at 45 nm, scaled to the config's node) and pricing.

Area follows the pattern of energy (hwmodels/energy.py): the accelerator is counted in instances
(PEs, vector lanes, SRAM banks), each instance is priced from a table whose every entry names its
source, and the area of a component is

    area_um2[component] = sum over its instances of  count * entry.um2

so a spec can be re-priced with another table (`dataclasses.replace(arch, area=table)`) and every
number checked by hand. Area does not depend on the workload, so it is a property of the spec,
not of a simulation.

Defaults (45 nm, then x `scaling.area_factor(45, node_nm)`):

| instance | one of | area at 45 nm | source |
|---|---|---|---|
| mac_int8 | PE | int multiplier (operand bits) + int adder (accumulator bits): 282 + 137 = 419 um^2 for int8 x int8 + int32 | Horowitz, ISSCC 2014 |
| mac_fp32 | PE | fp32 multiplier + fp32 adder: 7,700 + 4,184 = 11,884 um^2 | Horowitz, ISSCC 2014 |
| vector_int_lane | lane | 32-bit adder 137 um^2 (the op the vector energy prices) | Horowitz, ISSCC 2014 |
| vector_fp32_lane | lane | fp32 adder 4,184 um^2 | Horowitz, ISSCC 2014 |
| ifmap_bank, filter_bank, ofmap_bank | bank | by bank capacity and word width | CACTI 7.0 at 45 nm (sram_area.py) |

Not counted (no source at hand, or out of the model): PE pipeline registers and local
scratchpads, the vector unit's shifters and comparators, the array's interconnect, control, clock
tree, DRAM interface and PHY, pads, and placement utilisation (cells never fill a core). Each of
these makes the estimate a lower bound on a real chip's area: docs/results.md compares it with
Eyeriss and the TPU v1.
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping

from nitisim.contract.values import finite_number, quote

from . import scaling, sram_area
from .energy import HOROWITZ
from .scaling import SOURCE_NODE_NM
from .spec import BUFFER_NAMES, AcceleratorSpec, AreaEntry

# Horowitz 2014, area of one operator at 45 nm in um^2.
INT_ADD_UM2: Mapping[int, float] = MappingProxyType({8: 36.0, 16: 67.0, 32: 137.0})
INT_MULT_UM2: Mapping[int, float] = MappingProxyType({8: 282.0, 32: 3495.0})
FP32_ADD_UM2 = 4184.0
FP32_MULT_UM2 = 7700.0

# instance -> (component, unit)
INSTANCES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "mac_int8": ("mac_array", "PE"),
    "mac_fp32": ("mac_array", "PE"),
    "vector_int_lane": ("vector", "lane"),
    "vector_fp32_lane": ("vector", "lane"),
    **{f"{b}_bank": (b, "bank") for b in BUFFER_NAMES},
})
COMPONENTS: tuple[str, ...] = ("mac_array", "vector", *BUFFER_NAMES)
NOT_MODELLED = ("PE registers and scratchpads, interconnect, control, clock tree, DRAM interface/PHY, pads, "
                "placement utilisation")


def _int_mult(bits: int) -> tuple[float, str]:
    if bits in INT_MULT_UM2:
        return INT_MULT_UM2[bits], f"{bits}-bit multiply {INT_MULT_UM2[bits]:g} um^2"
    # Horowitz gives 8 and 32 bits only; a 16-bit multiplier lies between them log-log.
    slope = math.log(INT_MULT_UM2[32] / INT_MULT_UM2[8]) / math.log(4)
    um2 = INT_MULT_UM2[8] * (bits / 8) ** slope
    return um2, f"{bits}-bit multiply {um2:.0f} um^2 (log-log between the 8- and 32-bit multipliers)"


def _int_add(bits: int) -> tuple[float, str]:
    if bits in INT_ADD_UM2:
        return INT_ADD_UM2[bits], f"{bits}-bit add {INT_ADD_UM2[bits]:g} um^2"
    # Assumption: adders grow about linearly with width (Horowitz's 8/16/32-bit adders: 36/67/137).
    um2 = INT_ADD_UM2[32] * bits / 32
    return um2, f"{bits}-bit add {um2:.0f} um^2 (assumed linear in width from the 32-bit adder)"


def _at_node(entries: dict[str, AreaEntry], node_nm: float) -> dict[str, AreaEntry]:
    if node_nm == SOURCE_NODE_NM:
        return entries
    f = scaling.area_factor(SOURCE_NODE_NM, node_nm)
    note = f"; x{f:.3g} from {SOURCE_NODE_NM:g} to {node_nm:g} nm ({scaling.SOURCE})"
    return {k: AreaEntry(e.um2 * f, e.unit, e.source + note) for k, e in entries.items()}


def default_table(operand_bits: int, accumulator_bits: int, banks: Mapping[str, tuple[int, int]],
                  node_nm: float = SOURCE_NODE_NM) -> dict[str, AreaEntry]:
    """Default area per instance at node_nm; `banks` maps buffer -> (bank bytes, word width bytes)."""
    mult, mult_src = _int_mult(operand_bits)
    add, add_src = _int_add(accumulator_bits)
    table = {
        "mac_int8": AreaEntry(mult + add, "PE", f"{mult_src} + {add_src} ({HOROWITZ})"),
        "mac_fp32": AreaEntry(FP32_MULT_UM2 + FP32_ADD_UM2, "PE",
                              f"fp32 multiply {FP32_MULT_UM2:g} um^2 + fp32 add {FP32_ADD_UM2:g} um^2 ({HOROWITZ})"),
        "vector_int_lane": AreaEntry(INT_ADD_UM2[32], "lane",
                                     f"32-bit add {INT_ADD_UM2[32]:g} um^2 ({HOROWITZ}); shifters and "
                                     "comparators not counted"),
        "vector_fp32_lane": AreaEntry(FP32_ADD_UM2, "lane", f"fp32 add {FP32_ADD_UM2:g} um^2 ({HOROWITZ})"),
    }
    for name, (bank_bytes, width_bytes) in banks.items():
        table[f"{name}_bank"] = AreaEntry(
            sram_area.bank_area_um2(bank_bytes, width_bytes), "bank",
            f"{sram_area.SOURCE}: {bank_bytes} bytes of {width_bytes}-byte words, log-log interpolated")
    return _at_node(table, node_nm)


def counts(arch: AcceleratorSpec) -> dict[str, int]:
    """Instances of each priced kind in this accelerator (its format picks int or float32 units)."""
    out = {arch.mac_action: arch.array.pes, arch.lane_action: arch.vector.lanes}
    out.update({f"{b.name}_bank": b.banks for b in arch.buffers})
    return out


def price(instance_counts: Mapping[str, int], table: Mapping[str, AreaEntry]) -> dict[str, float]:
    """Area in um^2 per component: sum of count * entry.um2 over the instances it owns."""
    out = {c: 0.0 for c in COMPONENTS}
    for instance in sorted(instance_counts):
        out[INSTANCES[instance][0]] += instance_counts[instance] * table[instance].um2
    return out


def area_um2(arch: AcceleratorSpec) -> dict[str, float]:
    """This accelerator's area by component (um^2), from its own table."""
    return price(counts(arch), arch.area)


def has_area(arch: AcceleratorSpec) -> bool:
    """A machine model (host:) is priced from a real machine's measured rates: the MAC-array area
    model does not describe its silicon, so it has no area."""
    return arch.host is None and bool(arch.area)


def total_mm2(arch: AcceleratorSpec) -> float:
    return sum(area_um2(arch).values()) * 1e-6


# ------------------------------------------------------------------------------------------------
# YAML: node_nm and area overrides, read through the config reader's Fields (nitisim/contract/config_reader.py)
# ------------------------------------------------------------------------------------------------
def node_problem(v: Any) -> str | None:
    """Why `v` is not a node_nm the scaling equations cover, or None: the one check of the config
    loader and the sweep grid. Values are compared as they are (never float()ed first, which
    overflows on a huge YAML integer): NaN is the one number unequal to itself."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        return f"must be a number of nanometres, got {quote(v)}"
    if not scaling.in_range(v):
        return (f"must be between {scaling.MIN_NODE_NM:g} and {scaling.MAX_NODE_NM:g} nm "
                f"(the range of {scaling.SOURCE}), got {quote(v)}")
    return None


def parse_node(r: Any) -> float:
    """`node_nm`: a number inside the scaling equations' range."""
    v = r.doc["node_nm"]
    problem = node_problem(v)
    if problem:
        raise r.error("node_nm", problem)
    return float(v)


def parse_overrides(r: Any, table: dict[str, AreaEntry]) -> dict[str, AreaEntry]:
    """`area:` entries {um2, source}, taken as given (already at the config's node)."""
    for instance in r.doc:
        if instance not in INSTANCES:
            raise r.error(str(instance), f"unknown area entry; expected one of {sorted(INSTANCES)}")
        e = r.sub(instance)
        e.keys({"um2", "source"})
        v = e.doc["um2"]
        if not finite_number(v) or v < 0:
            raise e.error("um2", f"must be a non-negative number of square micrometres, got {quote(v)}")
        table[instance] = AreaEntry(float(v), table[instance].unit, e.str("source"))
    return table
