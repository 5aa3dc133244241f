"""The discrete-event model of the accelerator and the `simulate` entry point.

`Accelerator` wires the components (components.py) and runs the node plans (plan.py) one node at a
time, in graph order. Within a node, each stage is a three-process pipeline:

    DMA fetch --(ready tiles, at most slots_in in flight)--> compute --(results, slots_out)--> DMA drain

so the next tile's load overlaps the current tile's compute when the buffers are double buffered,
and compute stalls when DRAM cannot keep up. After the run, each node's statistics are the
differences of the components' counters across it, and energy is counts x the energy table.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Iterable

import simpy

from nitisim.contract.errors import UserInputError
from nitisim.contract.graph import Graph

from .components import DramChannel, Dma, MacArray, SramBuffer, Tracer, VectorUnit
from .energy import price
from .placement import place
from .plan import NodePlan, Stage, plan_nodes
from .result import NodeStats, SimResult
from .spec import BUFFER_NAMES, AcceleratorSpec, float32_variant

PHASES: tuple[str, ...] = ("forward", "backward", "update")
_GRAPH_PHASES = MappingProxyType({"forward": ("forward",), "backward": ("loss", "backward"), "update": ("update",)})


class Accelerator:
    """The whole chip: owns one of each unit and runs node plans on them."""

    def __init__(self, env: simpy.Environment, arch: AcceleratorSpec, tracer: Tracer | None = None):
        self.env, self.arch, self.tracer = env, arch, tracer
        self.buffers = tuple(SramBuffer(b) for b in arch.buffers)
        # A host model with measured kernel times (kernels, curves) has their memory traffic in them.
        self.dram = DramChannel(env, arch.dram, tracer,
                                timed=arch.host is None or not (arch.host.kernels or arch.host.curves))
        self.dma = Dma(env, self.dram, self.buffers)
        self.array = MacArray(env, arch.array, arch.mac_action, tracer)
        self.vector = VectorUnit(env, arch.vector, tracer)

    def counters(self) -> dict[str, int]:
        c = {self.array.mac_action: self.array.macs, **self.vector.ops,
             "dram_read_bytes": self.dram.read_bytes, "dram_write_bytes": self.dram.write_bytes,
             "dram_busy_cycles": self.dram.busy_cycles,
             "array_compute_cycles": self.array.compute_cycles, "array_busy_cycles": self.array.busy_cycles,
             "vector_compute_cycles": self.vector.compute_cycles, "vector_busy_cycles": self.vector.busy_cycles}
        for name, buf in zip(BUFFER_NAMES, self.buffers):
            c[f"{name}_read_bytes"] = buf.read_bytes
            c[f"{name}_write_bytes"] = buf.write_bytes
        return c

    def run(self, plans: list[NodePlan], records: list):
        ofmap = self.buffers[2]
        for plan in plans:
            before, start = self.counters(), self.env.now
            for buf in self.buffers:
                buf.node_peak_bytes = buf.level_bytes
            for stage in plan.stages:
                yield from self._stage(stage, plan.node.name)
            ofmap.occupy(plan.keep_bytes)  # the output handed to the next node stays on chip
            ofmap.release(plan.release_bytes)  # the input this node was handed is consumed
            after = self.counters()
            diff = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            peaks = {name: buf.node_peak_bytes for name, buf in zip(BUFFER_NAMES, self.buffers)}
            records.append((plan, start, self.env.now, diff, peaks))
            if self.tracer:
                self.tracer.span("nodes", plan.node.name, start, self.env.now - start)

    def _stage(self, stage: Stage, label: str):
        """Wire one stage's pipeline: tiles in flight (window_in), tiles handed to compute (ready),
        output slots (window_out), results handed to the drain (done); each unit starts its process."""
        env = self.env
        window_in = simpy.Container(env, capacity=stage.slots_in, init=stage.slots_in)
        window_out = simpy.Container(env, capacity=stage.slots_out, init=stage.slots_out)
        ready, done = simpy.Store(env), simpy.Store(env)
        if stage.unit == "array":
            compute = self.array.start(stage, self.buffers, ready, window_in, window_out, done, label)
            drain_window = window_out
        else:
            compute = self.vector.start(stage, self.buffers, ready, done, label)
            drain_window = window_in  # a vector chunk occupies its slot until it is drained
        yield env.all_of([compute, *self.dma.start(stage, window_in, ready, drain_window, done, self.vector, label)])


def graph_phases(phases: str | Iterable[str] | None) -> tuple[tuple[str, ...], set[str]]:
    """Normalise --phases ('forward,backward,update' or a list) to (requested, graph phases)."""
    if phases is None:
        requested = PHASES
    else:
        items = phases.split(",") if isinstance(phases, str) else list(phases)
        requested = tuple(p.strip() for p in items if p.strip())
        for p in requested:
            if p not in PHASES:
                raise UserInputError("--phases", None, f"unknown phase {p!r}; expected some of {list(PHASES)}")
        if not requested:
            raise UserInputError("--phases", None, f"name at least one of {list(PHASES)}")
    return requested, {g for p in requested for g in _GRAPH_PHASES[p]}


def _node_stats(arch: AcceleratorSpec, plan: NodePlan, start: int, end: int, counts: dict,
                peaks: dict) -> NodeStats:
    node = plan.node
    compute = counts.get("array_compute_cycles", 0) if node.kind == "gemm" else counts.get("vector_compute_cycles", 0)
    return NodeStats(
        name=node.name, op=node.op, kind=node.kind, layer=node.layer, graph_phase=node.phase, phase=plan.phase,
        start_cycle=start, cycles=end - start, compute_cycles=compute, stall_cycles=end - start - compute,
        macs=counts.get(arch.mac_action, 0), counts=counts, energy_pj=price(counts, arch.energy),
        buffer_peak_bytes=peaks, dram_spill_bytes=plan.spill_bytes, gemm=plan.gemm, tiling=plan.tiling,
    )


def simulate(arch: AcceleratorSpec, graph: Graph, *, compat: str | None = None,
             phases: str | Iterable[str] | None = None, trace: bool = False) -> SimResult:
    """Run the graph's nodes (of the requested phases) on arch; see docs/hwmodel.md.

    compat="scalesim" reports GEMM compute cycles exactly as SCALE-Sim v2 (folds x cycles per fold
    - 1, streamed dimension never split); the default counts truly. trace=True keeps the busy
    intervals of every unit for report.chrome_trace.
    """
    requested, wanted = graph_phases(phases)
    nodes = [n for n in graph.nodes if n.phase in wanted]
    placement = place(graph, nodes, arch)
    plans = plan_nodes(graph, nodes, placement, arch, compat)
    env = simpy.Environment()
    tracer = Tracer() if trace else None
    acc = Accelerator(env, arch, tracer)
    records: list = []
    env.process(acc.run(plans, records))
    env.run()
    return SimResult(
        arch=arch, model=graph.model.name, batch=graph.batch, compat=compat, phases=requested,
        nodes=tuple(_node_stats(arch, *r) for r in records), cycles=int(env.now),
        buffer_peak_bytes={name: buf.peak_bytes for name, buf in zip(BUFFER_NAMES, acc.buffers)},
        activation_stash_bytes=placement.activation_stash_bytes,
        peak_storage_bytes=placement.peak_storage_bytes, weight_bytes=placement.weight_bytes,
        trace=tuple(tracer.spans) if tracer else None,
    )


def simulate_with_fp32(arch: AcceleratorSpec, graph: Graph, **kwargs) -> tuple[SimResult, SimResult]:
    """The run on arch and on its float32 twin (float32_variant), for the energy and storage ratios."""
    return simulate(arch, graph, **kwargs), simulate(float32_variant(arch), graph, **kwargs)
