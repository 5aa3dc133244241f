"""What a simulation returns: per-node statistics, aggregation by layer and phase, totals, and
re-pricing with another energy table (no re-simulation: energy is counts x table)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

from nitisim.contract.ops import REPORT_PHASES

from . import host as host_model
from .energy import COMPONENTS, price
from .spec import BUFFER_NAMES, AcceleratorSpec, EnergyEntry
from .tiling import GemmShape, Tiling



def _sram_bytes(counts: Mapping[str, int], rw: str) -> int:
    return sum(counts.get(f"{b}_{rw}_bytes", 0) for b in BUFFER_NAMES)


@dataclass(frozen=True)
class NodeStats:
    name: str
    op: str
    kind: str  # gemm | vector | view
    layer: str
    graph_phase: str  # forward | loss | backward | update (the graph's)
    phase: str  # forward | input_grad | weight_grad | update | vector (the report's)
    start_cycle: int
    cycles: int  # elapsed while this node ran
    compute_cycles: int  # MAC-array (GEMM) or vector-unit (vector op) cycles doing the work
    stall_cycles: int  # cycles - compute_cycles: waiting for DRAM, SRAM ports, or the pipeline
    macs: int
    counts: Mapping[str, int]  # action counters (see energy.COUNTERS) and busy-cycle counters
    energy_pj: Mapping[str, float]  # by component (energy.COMPONENTS)
    buffer_peak_bytes: Mapping[str, int]  # peak occupancy of each SRAM while this node ran
    dram_spill_bytes: int  # DRAM traffic only because something did not fit on chip
    gemm: GemmShape | None = None
    tiling: Tiling | None = None

    @property
    def energy_total_pj(self) -> float:
        return sum(self.energy_pj.values())

    @property
    def sram_read_bytes(self) -> int:
        return _sram_bytes(self.counts, "read")

    @property
    def sram_write_bytes(self) -> int:
        return _sram_bytes(self.counts, "write")

    @property
    def dram_read_bytes(self) -> int:
        return self.counts.get("dram_read_bytes", 0)

    @property
    def dram_write_bytes(self) -> int:
        return self.counts.get("dram_write_bytes", 0)


@dataclass(frozen=True)
class LayerStats:
    """The sums of one (layer, report phase) pair over its nodes."""

    name: str
    phase: str
    nodes: tuple[str, ...]
    macs: int
    cycles: int
    compute_cycles: int
    stall_cycles: int
    utilization: float  # MACs / ((cycles + fused requantize cycles) x peak MACs per cycle): 0 for vector-only rows
    energy_pj: float
    energy_by_component_pj: Mapping[str, float]
    sram_read_bytes: int
    sram_write_bytes: int
    dram_read_bytes: int
    dram_write_bytes: int
    dram_spill_bytes: int
    buffer_peak_bytes: Mapping[str, int]

    def as_dict(self) -> dict:
        return {
            "name": self.name, "phase": self.phase, "macs": self.macs, "cycles": self.cycles,
            "compute_cycles": self.compute_cycles, "stall_cycles": self.stall_cycles,
            "utilization": self.utilization, "energy_pj": self.energy_pj,
            "energy_by_component_pj": dict(self.energy_by_component_pj),
            "sram_read_bytes": self.sram_read_bytes, "sram_write_bytes": self.sram_write_bytes,
            "dram_read_bytes": self.dram_read_bytes, "dram_write_bytes": self.dram_write_bytes,
            "dram_spill_bytes": self.dram_spill_bytes, "buffer_peak_bytes": dict(self.buffer_peak_bytes),
            "nodes": list(self.nodes),
        }


def aggregate(name: str, phase: str, nodes: list[NodeStats], peak_macs_per_cycle: float,
              fused: Mapping[str, int] = MappingProxyType({})) -> LayerStats:
    """Sums over `nodes`; utilisation is of `peak_macs_per_cycle`, over the nodes' cycles plus those of
    the requantize each fused GEMM's work is priced in (`fused`, hwmodels.host.fused_requantize_cycles)."""
    energy = {c: sum(n.energy_pj[c] for n in nodes) for c in COMPONENTS}
    macs, cycles = sum(n.macs for n in nodes), sum(n.cycles for n in nodes)
    # A fused GEMM's requantize usually sits in the same group (it counts with its GEMM,
    # nitisim.contract.ops.report_phase), its cycles already in `cycles`; add them only when it does not.
    requantized = {n.layer for n in nodes if n.op == "requantize"}
    busy = cycles + sum(fused.get(n.name, 0) for n in nodes if n.layer not in requantized)
    return LayerStats(
        name=name, phase=phase, nodes=tuple(n.name for n in nodes), macs=macs, cycles=cycles,
        compute_cycles=sum(n.compute_cycles for n in nodes), stall_cycles=sum(n.stall_cycles for n in nodes),
        utilization=macs / (busy * peak_macs_per_cycle) if busy and macs else 0.0,
        energy_pj=sum(energy.values()), energy_by_component_pj=energy,
        sram_read_bytes=sum(n.sram_read_bytes for n in nodes),
        sram_write_bytes=sum(n.sram_write_bytes for n in nodes),
        dram_read_bytes=sum(n.dram_read_bytes for n in nodes),
        dram_write_bytes=sum(n.dram_write_bytes for n in nodes),
        dram_spill_bytes=sum(n.dram_spill_bytes for n in nodes),
        buffer_peak_bytes={b: max((n.buffer_peak_bytes[b] for n in nodes), default=0) for b in BUFFER_NAMES},
    )


@dataclass(frozen=True)
class SimResult:
    arch: AcceleratorSpec
    model: str
    batch: int
    compat: str | None
    phases: tuple[str, ...]  # the requested phases (forward, backward, update)
    nodes: tuple[NodeStats, ...]  # in execution order, views included (all zero)
    cycles: int  # the whole run: nodes execute one after another
    buffer_peak_bytes: Mapping[str, int]  # peak occupancy of each SRAM over the run
    activation_stash_bytes: int  # forward results kept for the backward pass (graph-wide)
    peak_storage_bytes: int  # most bytes of live tensors at once, weights and state included
    weight_bytes: int  # weights and optimiser state
    trace: tuple | None = None  # (track, name, start cycle, duration) busy intervals, if asked

    @property
    def seconds(self) -> float:
        return self.arch.cycles_to_seconds(self.cycles)

    @property
    def energy_pj(self) -> float:
        return sum(n.energy_total_pj for n in self.nodes)

    @property
    def fused_gemms(self) -> dict[str, int]:
        """GEMM node -> cycles of the requantize its work is priced in (a calibrated host's fused
        convs, hwmodels.host.fused_requantize_cycles); empty for an accelerator."""
        if self.arch.host is None:
            return {}
        return host_model.fused_requantize_cycles(self.arch.host, self.nodes)

    @property
    def peak_macs_per_cycle(self) -> float:
        """What utilisation is a fraction of: the array's PEs, or for a calibrated host the fastest
        rate the model prices a GEMM at, when that is above its nominal array (hwmodels.host)."""
        return self._peak(self.fused_gemms)

    def _peak(self, fused: Mapping[str, int]) -> float:
        """peak_macs_per_cycle, given fused_gemms (which the callers also need: computed once)."""
        pes = self.arch.array.pes
        if self.arch.host is None:
            return pes
        return host_model.peak_macs_per_cycle(self.arch.host, pes, (n.macs / (n.cycles + fused.get(n.name, 0))
                                                                    for n in self.nodes if n.macs and n.cycles))

    def layers(self) -> list[LayerStats]:
        """One row per (layer, report phase), in order of first execution; views omitted."""
        groups: dict[tuple[str, str], list[NodeStats]] = {}
        for n in self.nodes:
            if n.kind != "view":
                groups.setdefault((n.layer, n.phase), []).append(n)
        fused = self.fused_gemms
        peak = self._peak(fused)
        return [aggregate(layer, phase, nodes, peak, fused) for (layer, phase), nodes in groups.items()]

    def phases_summary(self) -> list[LayerStats]:
        """One row per report phase over all layers."""
        rows, fused = [], self.fused_gemms
        peak = self._peak(fused)
        for phase in REPORT_PHASES:
            nodes = [n for n in self.nodes if n.phase == phase and n.kind != "view"]
            if nodes:
                rows.append(aggregate("all", phase, nodes, peak, fused))
        return rows

    def total(self) -> dict:
        fused = self.fused_gemms
        peak = self._peak(fused)
        t = aggregate("total", "all", [n for n in self.nodes if n.kind != "view"], peak)
        d = t.as_dict()
        del d["nodes"], d["name"], d["phase"]
        d.update(cycles=self.cycles, stall_cycles=self.cycles - t.compute_cycles,
                 utilization=t.macs / (self.cycles * peak) if self.cycles else 0.0, peak_macs_per_cycle=peak,
                 fused_gemms=len(fused),
                 seconds=self.seconds, peak_storage_bytes=self.peak_storage_bytes,
                 activation_stash_bytes=self.activation_stash_bytes, weight_bytes=self.weight_bytes,
                 buffer_peak_bytes=dict(self.buffer_peak_bytes))
        return d

    def reprice(self, energy: Mapping[str, EnergyEntry]) -> "SimResult":
        """The same run priced with another energy table (counts are unchanged)."""
        arch = replace(self.arch, energy=energy)
        nodes = tuple(replace(n, energy_pj=price(n.counts, energy)) for n in self.nodes)
        return replace(self, arch=arch, nodes=nodes)
