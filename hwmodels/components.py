"""The physical units as SimPy components: DRAM channel, DMA engine, SRAM buffers, MAC array,
vector unit. One class per unit; each owns its resources, counts its actions and, when asked,
records its busy intervals for the trace. Time is in integer cycles. Nothing prints.

Events are per pipeline step (a tile or a group of tiles, see plan.py), never per cycle.
"""
from __future__ import annotations

import simpy

from .plan import Stage
from .spec import ArraySpec, BufferSpec, DramSpec, VectorSpec


class Tracer:
    """Collects (track, name, start, duration) busy intervals for a Chrome/Perfetto trace."""

    def __init__(self):
        self.spans: list[tuple[str, str, int, int]] = []

    def span(self, track: str, name: str, start: int, duration: int) -> None:
        if duration > 0:
            self.spans.append((track, name, start, duration))


class DramChannel:
    """One DRAM channel: a single bus moving bytes at the configured bandwidth, after a first-byte
    latency per request. Reads and writes share the bus, so write-back competes with prefetch."""

    def __init__(self, env: simpy.Environment, spec: DramSpec, tracer: Tracer | None, timed: bool = True):
        # timed=False: bytes are counted (energy, traffic) but take no time, for a machine model whose
        # measured kernel times already include their memory traffic.
        self.env, self.spec, self.tracer, self.timed = env, spec, tracer, timed
        self.bus = simpy.Resource(env, capacity=1)
        self.read_bytes = 0
        self.write_bytes = 0
        self.busy_cycles = 0

    def transfer(self, nbytes: int, write: bool, label: str):
        if nbytes <= 0:
            return
        if self.spec.latency_cycles and self.timed:
            yield self.env.timeout(self.spec.latency_cycles)  # request in flight; the bus is free
        cycles = self.spec.transfer_cycles(nbytes) if self.timed else 0
        if cycles:
            with self.bus.request() as req:
                yield req
                start = self.env.now
                yield self.env.timeout(cycles)
            self.busy_cycles += cycles
            if self.tracer:
                self.tracer.span("DRAM", f"{'write' if write else 'read'} {label}", start, cycles)
        if write:
            self.write_bytes += nbytes
        else:
            self.read_bytes += nbytes


class SramBuffer:
    """An on-chip SRAM: counts bytes read and written and tracks occupancy (level, peaks).

    Its port bandwidth (width x banks per cycle) is enforced on the compute side by the plan's
    port_cycles; its capacity by the tiling, so occupancy here never exceeds the size."""

    def __init__(self, spec: BufferSpec):
        self.spec = spec
        self.read_bytes = 0
        self.write_bytes = 0
        self.level_bytes = 0
        self.peak_bytes = 0
        self.node_peak_bytes = 0  # reset at each node start by the accelerator

    def read(self, nbytes: int) -> None:
        self.read_bytes += nbytes

    def write(self, nbytes: int) -> None:
        self.write_bytes += nbytes

    def occupy(self, nbytes: int) -> None:
        self.level_bytes += nbytes
        if self.level_bytes > self.node_peak_bytes:
            self.node_peak_bytes = self.level_bytes
            self.peak_bytes = max(self.peak_bytes, self.level_bytes)

    def release(self, nbytes: int) -> None:
        self.level_bytes -= nbytes


def _step_cycles(stage: Stage, j: int) -> tuple[int, int]:
    """(compute, busy) cycles of step j: the closed-form share, stretched to the SRAM-port floor."""
    compute = stage.share(stage.compute_cycles, j)
    if j == stage.steps - 1:
        compute = max(0, compute + stage.cycle_adjust)
    return compute, max(compute, stage.share(stage.port_cycles, j))


def _count_sram(buffers, stage: Stage, j: int) -> None:
    for buf, r, w in zip(buffers, stage.sram_read_bytes, stage.sram_write_bytes):
        if r:
            buf.read(stage.share(r, j))
        if w:
            buf.write(stage.share(w, j))


class MacArray:
    """The R x C systolic array: one fold pipeline at a time. Counts MACs, compute cycles (the closed
    form) and busy cycles (compute stretched when the SRAM ports cannot feed it)."""

    def __init__(self, env: simpy.Environment, spec: ArraySpec, mac_action: str, tracer: Tracer | None):
        self.env, self.spec, self.mac_action, self.tracer = env, spec, mac_action, tracer
        self.pes = simpy.Resource(env, capacity=1)
        self.macs = 0
        self.compute_cycles = 0
        self.busy_cycles = 0

    def start(self, stage: Stage, buffers: tuple, ready: simpy.Store, window_in: simpy.Container,
              window_out: simpy.Container, done: simpy.Store, label: str) -> simpy.Process:
        return self.env.process(self._compute(stage, buffers, ready, window_in, window_out, done, label))

    def _compute(self, stage, buffers, ready, window_in, window_out, done, label):
        ifmap, filt, ofmap = buffers
        fa, fb, fc = stage.footprint_bytes
        for j in range(stage.steps):
            yield ready.get()  # this tile's operands are in SRAM
            compute, busy = _step_cycles(stage, j)
            yield window_out.get(1)  # somewhere to put this tile's partial sums
            yield from self.run(compute, busy, stage.share(stage.macs, j), label)
            ifmap.release(fa)
            filt.release(fb)
            ofmap.occupy(fc)
            yield window_in.put(1)  # the operand slot can be refilled
            _count_sram(buffers, stage, j)
            yield done.put(j)

    def run(self, compute: int, busy: int, macs: int, label: str):
        with self.pes.request() as req:
            yield req
            start = self.env.now
            if busy:
                yield self.env.timeout(busy)
        self.macs += macs
        self.compute_cycles += compute
        self.busy_cycles += busy
        if self.tracer:
            self.tracer.span("MAC array", label, start, busy)


class VectorUnit:
    """`lanes` element operations per cycle for everything that is not a GEMM (requantize, relu,
    pooling, loss, update, col2im). Counts operations per energy action."""

    def __init__(self, env: simpy.Environment, spec: VectorSpec, tracer: Tracer | None):
        self.env, self.spec, self.tracer = env, spec, tracer
        self.lanes = simpy.Resource(env, capacity=1)
        self.ops: dict[str, int] = {}
        self.compute_cycles = 0
        self.busy_cycles = 0

    def start(self, stage: Stage, buffers: tuple, ready: simpy.Store, done: simpy.Store,
              label: str) -> simpy.Process:
        return self.env.process(self._compute(stage, buffers, ready, done, label))

    def _compute(self, stage, buffers, ready, done, label):
        for j in range(stage.steps):
            yield ready.get()  # this chunk is in the ofmap buffer (fetched, or handed over)
            compute, busy = _step_cycles(stage, j)
            ops = [(a, stage.share(c, j)) for a, c in stage.ops]
            yield from self.run(compute, busy, ops, f"{label} {stage.name}")
            _count_sram(buffers, stage, j)
            yield done.put(j)

    def run(self, cycles: int, busy: int, ops: list[tuple[str, int]], label: str, *, counted: bool = True):
        with self.lanes.request() as req:
            yield req
            start = self.env.now
            if busy:
                yield self.env.timeout(busy)
        for action, count in ops:
            self.ops[action] = self.ops.get(action, 0) + count
        if counted:
            self.compute_cycles += cycles
        self.busy_cycles += busy
        if self.tracer:
            self.tracer.span("vector unit", label, start, busy)


class Dma:
    """The DMA engine: streams a stage's tiles into SRAM ahead of compute (at most `slots_in` tiles
    in flight, so double buffering overlaps the next tile's load with the current tile's compute)
    and writes results back to DRAM behind it."""

    def __init__(self, env: simpy.Environment, dram: DramChannel, buffers: tuple[SramBuffer, ...]):
        self.env, self.dram, self.buffers = env, dram, buffers

    def start(self, stage: Stage, window_in: simpy.Container, ready: simpy.Store, drain_window: simpy.Container,
              done: simpy.Store, vector: "VectorUnit", label: str) -> list[simpy.Process]:
        return [self.env.process(self.fetch(stage, window_in, ready, label)),
                self.env.process(self.drain(stage, drain_window, done, vector, label))]

    def fetch(self, stage: Stage, window: simpy.Container, ready: simpy.Store, label: str):
        ifmap, filt, ofmap = self.buffers
        fa, fb, fc = stage.footprint_bytes
        for j in range(stage.steps):
            yield window.get(1)  # a free tile slot
            yield from self.dram.transfer(stage.share(stage.dram_read_bytes, j), False, label)
            for buf, total in zip(self.buffers, stage.fill_bytes):
                if total:
                    buf.write(stage.share(total, j))
            if stage.unit == "array":
                ifmap.occupy(fa)
                filt.occupy(fb)
            else:
                ofmap.occupy(fc)
            yield ready.put(j)

    def drain(self, stage: Stage, window: simpy.Container, done: simpy.Store, vector: VectorUnit,
              label: str):
        ofmap = self.buffers[2]
        for _ in range(stage.steps):
            j = yield done.get()
            if stage.drain_vector_cycles:  # col2im scatter-add as the columns leave the array
                cycles = stage.share(stage.drain_vector_cycles, j)
                ops = [(a, stage.share(c, j)) for a, c in stage.drain_ops]
                yield from vector.run(cycles, cycles, ops, f"{label} col2im", counted=False)
            nbytes = stage.share(stage.drain_bytes, j)
            ofmap.read(nbytes)
            yield from self.dram.transfer(nbytes, True, label)
            ofmap.release(stage.footprint_bytes[2])
            yield window.put(1)
