"""Frozen descriptions of an accelerator: MAC array, SRAM buffers, DRAM, vector unit, energy and area
tables.

These are what `hwmodels.config` builds from YAML and what every other module reads. They are
immutable: variants (the float32 twin, unbounded DRAM for validation) are new objects made with
`dataclasses.replace`, never edits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping, TypeVar

from .scaling import SOURCE_NODE_NM

DATAFLOWS: tuple[str, ...] = ("ws", "os", "is")  # weight, output, input stationary (SCALE-Sim names)
FORMATS: tuple[str, ...] = ("int", "fp32")  # integer NITI arithmetic, or the float32 baseline
BUFFER_NAMES: tuple[str, ...] = ("ifmap", "filter", "ofmap")  # GEMM operand A, operand B, output C

_INT_BYTES = MappingProxyType({"int8": 1, "int16": 2, "int32": 4, "int64": 8})


@dataclass(frozen=True)
class ArraySpec:
    rows: int  # R: PEs down a column
    cols: int  # C: PEs along a row
    dataflow: str  # ws | os | is

    @property
    def pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class BufferSpec:
    name: str  # ifmap | filter | ofmap
    size_bytes: int
    width_bytes: int  # bytes one bank delivers per cycle
    banks: int
    double_buffered: bool  # two tile slots: DMA fills one while the array works on the other

    @property
    def slots(self) -> int:
        return 2 if self.double_buffered else 1

    @property
    def tile_bytes(self) -> int:
        """Capacity of one tile slot (half the buffer when double buffered)."""
        return self.size_bytes // self.slots

    @property
    def port_bytes_per_cycle(self) -> int:
        return self.width_bytes * self.banks


@dataclass(frozen=True)
class DramSpec:
    bandwidth_bytes_per_cycle: float  # math.inf: unbounded (validation runs)
    latency_cycles: int  # first-byte latency of each DMA request
    technology: str  # HBM2 | HMC | LPDDR4 | GDDR5 | DDR3 (picks the default energy per bit)

    @property
    def unbounded(self) -> bool:
        return math.isinf(self.bandwidth_bytes_per_cycle)

    def transfer_cycles(self, nbytes: int) -> int:
        """Cycles the channel is busy moving nbytes (latency excluded)."""
        if nbytes <= 0 or self.unbounded:
            return 0
        return math.ceil(nbytes / self.bandwidth_bytes_per_cycle)


@dataclass(frozen=True)
class VectorSpec:
    lanes: int  # element operations per cycle for the non-GEMM work


@dataclass(frozen=True)
class HostSpec:
    """A calibrated model of a real machine (a CPU host or a GPU) in place of the systolic fold model.

    GEMM time is MACs, padded to the engine's tile, over the machine's measured rate for the GEMM's
    shape class and engine path
    (hwmodels.host.gemm_class); vector time is element operations over the measured rate of their
    width class, on every core when the pass's largest input has more than parallel_min_elements
    elements (whatever their width). Each node also pays the fixed cost of one kernel call. Rates
    are per cycle of the spec's clock_mhz.
    A calibrated host's measured kernel table and elementwise curves, when they have a node, replace
    those formulas (hwmodels.host.node_cycles).
    """
    engine: str  # the GEMM engine the rates were measured on (e.g. avx512vnni, mma.sync)
    cores: int  # parallel workers of the vector passes above parallel_min_elements
    parallel_min_elements: int  # a pass whose largest input has more elements (any width) runs on all cores
    gemm_tile: tuple[int, int, int]  # (m, k, n) block the engine computes in; a GEMM is padded to it
    gemm_macs_per_cycle: Mapping[str, float]  # shape class -> padded int8 MACs per cycle (all cores)
    vector_ops_per_cycle: Mapping[str, float]  # int8 | int32 -> element ops per cycle (one core)
    call_cycles: Mapping[str, int]  # gemm | vector -> fixed cycles of one kernel call
    calibrated: str  # when the rates were measured (ISO date), or the public spec they come from
    kernels: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))  # kernel_key -> cycles of one call
    curves: Mapping[str, tuple[tuple[int, float], ...]] = field(  # curve name -> (elements, cycles) points
        default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class EnergyEntry:
    pj: float  # picojoules per `unit`
    unit: str  # MAC | op | 64-bit access | bit
    source: str  # where the number comes from (paper, tool, or the YAML that overrode it)


@dataclass(frozen=True)
class AreaEntry:
    um2: float  # square micrometres per `unit`, at the accelerator's node_nm
    unit: str  # PE | lane | bank: one instance of the component
    source: str  # where the number comes from (paper, tool, scaling, or the YAML that overrode it)


@dataclass(frozen=True)
class AcceleratorSpec:
    name: str
    version: int  # config schema version
    source: str  # the YAML file it was read from (for error messages and the report)
    array: ArraySpec
    clock_mhz: float
    format: str  # int | fp32
    operand_bits: int  # storage width of int8 tensors (8, or 16 for a wider datapath)
    accumulator_bits: int  # storage width of int32 accumulators and gradients
    ifmap: BufferSpec
    filter: BufferSpec
    ofmap: BufferSpec
    dram: DramSpec
    vector: VectorSpec
    energy: Mapping[str, EnergyEntry]  # action -> energy per action (MappingProxyType)
    host: HostSpec | None = None  # a calibrated machine model: replaces the fold and lane cycle counts
    node_nm: float = SOURCE_NODE_NM  # technology node the energy and area tables are priced at
    area: Mapping[str, AreaEntry] = field(  # instance -> area per instance (hwmodels.area)
        default_factory=lambda: MappingProxyType({}))

    @property
    def buffers(self) -> tuple[BufferSpec, BufferSpec, BufferSpec]:
        return (self.ifmap, self.filter, self.ofmap)

    @property
    def mac_action(self) -> str:
        return "mac_fp32" if self.format == "fp32" else "mac_int8"

    @property
    def lane_action(self) -> str:
        """Area entry of one vector-unit lane: integer lanes, or float32 lanes on the twin."""
        return "vector_fp32_lane" if self.format == "fp32" else "vector_int_lane"

    def element_bytes(self, dtype: str) -> int:
        """Bytes one element of a graph dtype occupies on this accelerator.

        fp32: every tensor is a 4-byte float. int: int8 tensors use operand_bits, int32 tensors
        accumulator_bits; int16 and int64 keep their width (the graph proved int64 necessary).
        """
        if self.format == "fp32":
            return 4
        if dtype == "int8":
            return self.operand_bits // 8
        if dtype == "int32":
            return self.accumulator_bits // 8
        return _INT_BYTES[dtype]

    def vector_action(self, width: str) -> str:
        """Energy action of one vector-unit element operation of class `width` (int8 | int32)."""
        return "vector_fp32_op" if self.format == "fp32" else f"vector_{width}_op"

    def cycles_to_seconds(self, cycles: int) -> float:
        return cycles / (self.clock_mhz * 1e6)


Entry = TypeVar("Entry", EnergyEntry, AreaEntry)


def freeze_table(table: Mapping[str, Entry]) -> Mapping[str, Entry]:
    """A read-only copy of an energy or area table, its keys in sorted order."""
    return MappingProxyType(dict(sorted(table.items())))


def float32_variant(arch: AcceleratorSpec) -> AcceleratorSpec:
    """The same accelerator doing float32 training: 4-byte words everywhere, fp32 MACs and vector
    ops priced from the same energy table; buffer and DRAM sizes in bytes unchanged."""
    # A host model's rates were measured in int8; its float32 twin falls back to the array model.
    return replace(arch, name=f"{arch.name}-fp32", format="fp32", operand_bits=32, accumulator_bits=32,
                   host=None)


def unbounded_dram(arch: AcceleratorSpec) -> AcceleratorSpec:
    """Infinite bandwidth, zero latency: isolates compute for checks against closed forms."""
    return replace(arch, dram=replace(arch.dram, bandwidth_bytes_per_cycle=math.inf, latency_cycles=0))


def with_buffer_sizes(arch: AcceleratorSpec, **size_bytes: int) -> AcceleratorSpec:
    """A copy with some buffer capacities changed (monotonicity tests). The energy and area tables
    keep the entries priced at the old sizes: a config read through the loader reprices them."""
    changes = {name: replace(getattr(arch, name), size_bytes=size) for name, size in size_bytes.items()}
    return replace(arch, **changes)
