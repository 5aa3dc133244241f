"""Per-node execution plans: what each pipeline stage moves, computes and counts. Pure, no SimPy.

A node runs as one or more *stages* (a GEMM: one; a vector op: one per pass over its tensors).
A stage is a pipeline of steps through three engines: DMA in (DRAM -> SRAM), compute (MAC array or
vector unit, reading and writing SRAM), DMA out (SRAM -> DRAM). Its totals come from closed forms
(tiling.py) and the placement; the simulator splits each total over the steps exactly (integer
shares that sum to the total), so counts never depend on the step granularity.

Steps are tiles, or groups of identical tiles: a stage of T tiles runs as min(T, MAX_STEPS) steps,
the first and last a single tile (so the pipeline's fill and drain are those of one tile) and the
middle ones equal groups whose DMA and compute overlap as whole groups. A stage of fewer than
MIN_STEPS tiles is still streamed in MIN_STEPS pieces, as a DMA streams a large tile row by row
while the array starts on the first rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nitisim.contract.errors import UserInputError
from nitisim.contract.graph import Graph, Node
from nitisim.contract.ops import report_phase

from . import host as host_model
from .lowering import GemmWork, VectorWork, Work, lower_node
from .placement import NodePlacement, Placement
from .spec import AcceleratorSpec
from .tiling import GemmShape, InfeasibleTiling, Tiling, choose_tiling

MAX_STEPS = 64  # simulated steps per stage: bounds events per node (speed), not accuracy of totals
MIN_STEPS = 8  # DMA granularity floor: even one tile streams in pieces that overlap compute
COMPAT_MODES = ("scalesim",)


@dataclass(frozen=True)
class Stage:
    name: str  # "gemm", or the vector pass ("range", "shift", ...)
    unit: str  # array | vector
    iterations: int  # tiles (GEMM) or buffer-sized chunks (vector) streamed
    bounds: tuple[int, ...]  # step j covers shares bounds[j]..bounds[j+1] of bounds[-1]
    dram_read_bytes: int
    dram_write_bytes: int
    fill_bytes: tuple[int, int, int]  # SRAM bytes the DMA writes into ifmap, filter, ofmap
    drain_bytes: int  # ofmap bytes the DMA reads out to DRAM
    compute_cycles: int  # unit busy cycles for the work (closed form / ops over lanes)
    port_cycles: int  # cycles the SRAM ports need for the same work (the busy time is the larger)
    sram_read_bytes: tuple[int, int, int]  # by the compute unit, per buffer
    sram_write_bytes: tuple[int, int, int]
    macs: int
    ops: tuple[tuple[str, int], ...]  # vector-unit (energy action, element ops) while computing
    drain_vector_cycles: int  # vector-unit cycles spent on the output stream (col2im adds)
    drain_ops: tuple[tuple[str, int], ...]
    footprint_bytes: tuple[int, int, int]  # one tile (or chunk) in ifmap, filter, ofmap
    slots_in: int  # tiles in flight between DMA in and compute (double buffering: 2)
    slots_out: int  # output tiles in flight between compute and DMA out
    cycle_adjust: int = 0  # SCALE-Sim compatibility: -1 on the last step

    @property
    def steps(self) -> int:
        return len(self.bounds) - 1

    def share(self, total: int, j: int) -> int:
        """Step j's exact integer share of a stage total."""
        w = self.bounds[-1]
        return total * self.bounds[j + 1] // w - total * self.bounds[j] // w


@dataclass(frozen=True)
class NodePlan:
    node: Node
    phase: str  # report phase: forward | input_grad | weight_grad | update | vector
    work: Work
    stages: tuple[Stage, ...]
    gemm: GemmShape | None = None
    tiling: Tiling | None = None
    keep_bytes: int = 0  # left in the ofmap buffer for the next node
    release_bytes: int = 0  # handed-over inputs freed when this node ends
    spill_bytes: int = 0  # DRAM traffic only because something did not fit (handoffs, partial sums)

    @property
    def macs(self) -> int:
        return sum(s.macs for s in self.stages)


def step_bounds(iterations: int, steps: int) -> tuple[int, ...]:
    """Cumulative shares: equal pieces when steps >= iterations, else single first and last tiles
    around equal groups (weights in tiles)."""
    if iterations <= steps or steps < 3:
        return tuple(range(steps + 1))
    mid = [1 + round(j * (iterations - 2) / (steps - 2)) for j in range(steps - 1)]
    return (0, *mid, iterations)


def _steps(iterations: int, streams: bool, work_cycles: int) -> int:
    if not streams:
        return 1
    return max(1, min(MAX_STEPS, max(iterations, MIN_STEPS), max(work_cycles, 1)))


def _port_cycles(arch: AcceleratorSpec, reads: tuple, writes: tuple) -> int:
    return max(math.ceil((r + w) / b.port_bytes_per_cycle) for r, w, b in zip(reads, writes, arch.buffers))


def gemm_shape(graph: Graph, work: GemmWork, arch: AcceleratorSpec, placement: Placement) -> GemmShape:
    def elem(t):
        return arch.element_bytes(graph.tensor(t).dtype)

    a, b, c = work.a.tensor, work.b.tensor, work.out.tensor
    return GemmShape(
        m=work.m, k=work.k, n=work.n, a_elem_bytes=elem(a), b_elem_bytes=elem(b), c_elem_bytes=elem(c),
        a_dram_bytes=placement.tensor_bytes[placement.root(a)],
        b_dram_bytes=placement.tensor_bytes[placement.root(b)],
        c_dram_bytes=placement.tensor_bytes[placement.root(c)],
    )


def plan_gemm(graph: Graph, node: Node, work: GemmWork, place: NodePlacement, placement: Placement,
              arch: AcceleratorSpec, compat: str | None) -> NodePlan:
    g = gemm_shape(graph, work, arch, placement)
    try:
        t = choose_tiling(g, arch)
    except InfeasibleTiling as err:
        raise UserInputError(arch.source, f"buffers.{err.buffer}", f"too small for {node.name}: {err}") from None
    out = placement.root(work.out.tensor)
    final_write = g.c_dram_bytes if out in place.to_dram else 0
    psum = t.psum_spill_bytes
    dram_read = g.a_dram_bytes * t.a_refetch + g.b_dram_bytes * t.b_refetch + psum
    dram_write = psum + final_write
    col2im_cycles = math.ceil(work.col2im_adds / arch.vector.lanes)
    measured = host_model.node_cycles(arch.host, graph, node) if arch.host is not None else None
    if arch.host is not None:
        # A measured machine: its kernel table (or its input_grad rate, probed on a conv kernel)
        # includes col2im.
        compute = measured if measured is not None else host_model.gemm_cycles(
            arch.host, node.op, work.phase, work.m, work.k, work.n)
        adjust, col2im_cycles = 0, 0
    elif compat == "scalesim":
        compute, adjust = t.folds * t.cycles_per_fold, -1  # SCALE-Sim's count: streamed dim whole
    else:
        compute, adjust = t.compute_cycles, 0
    s = t.sram_bytes
    col2im_read = work.col2im_adds * g.c_elem_bytes  # read-modify-write of the x-shaped accumulator
    reads = (s["ifmap_read"], s["filter_read"], s["ofmap_read"] + col2im_read)
    writes = (0, 0, s["ofmap_write"])
    col2im_action = arch.vector_action("int32")
    stage = Stage(
        name="gemm", unit="array", iterations=t.tiles,
        bounds=step_bounds(t.tiles, _steps(t.tiles, True, compute)),
        dram_read_bytes=dram_read, dram_write_bytes=dram_write,
        fill_bytes=(work.a.dense_elements * g.a_elem_bytes * t.a_refetch,
                    work.b.dense_elements * g.b_elem_bytes * t.b_refetch, psum),
        # a measured kernel time already includes its cache traffic: the ports add nothing
        drain_bytes=dram_write, compute_cycles=compute,
        port_cycles=0 if measured is not None else _port_cycles(arch, reads, writes),
        sram_read_bytes=reads, sram_write_bytes=writes, macs=work.macs, ops=(),
        drain_vector_cycles=col2im_cycles,
        drain_ops=((col2im_action, work.col2im_adds),) if work.col2im_adds else (),
        footprint_bytes=t.footprint_bytes, slots_in=min(arch.ifmap.slots, arch.filter.slots),
        slots_out=arch.ofmap.slots, cycle_adjust=adjust,
    )
    keep = g.c_dram_bytes if out in place.keep_onchip else 0
    return NodePlan(node, report_phase(node.op, node.phase), work, (stage,), g, t, keep_bytes=keep,
                    spill_bytes=place.spill_write_bytes + 2 * psum)


def plan_vector(graph: Graph, node: Node, work: VectorWork, place: NodePlacement, placement: Placement,
                arch: AcceleratorSpec) -> NodePlan:
    # A host's measured time of the whole node (one kernel call), when it has one, goes to the
    # first pass; the later passes then cost nothing more.
    measured = host_model.node_cycles(arch.host, graph, node) if arch.host is not None else None
    chunk_cap = max(1, arch.ofmap.size_bytes // 2 // arch.ofmap.slots)
    stages = []
    spill = place.spill_write_bytes
    for p in work.passes:
        nbytes = {t: placement.tensor_bytes[placement.root(t)] for t in (*p.reads, *p.writes)}
        from_dram = sum(nbytes[t] for t in p.reads if placement.root(t) not in place.onchip_inputs)
        spill += sum(nbytes[t] for t in p.reads if placement.root(t) in place.spilled_inputs)
        to_dram = sum(nbytes[t] for t in p.writes if placement.root(t) in place.to_dram)
        read = sum(nbytes[t] for t in p.reads)
        written = sum(nbytes[t] for t in p.writes)
        ops = tuple((arch.vector_action(width), count) for width, count in p.ops)
        if measured is not None:
            compute = measured if not stages else 0
        elif arch.host is not None:
            # the library's parallel threshold counts elements of the largest input, not bytes
            largest = max((graph.tensor(t).size for t in p.reads), default=0)
            compute = host_model.pass_cycles(arch.host, p.ops, largest)
            compute += arch.host.call_cycles["vector"] if not stages else 0  # one call per node
        else:
            compute = math.ceil(sum(c for _, c in ops) / arch.vector.lanes)
        streamed = from_dram + to_dram
        iterations = max(1, math.ceil((read + written) / chunk_cap))
        reads = (0, 0, read)
        stages.append(Stage(
            name=p.name, unit="vector", iterations=iterations,
            bounds=step_bounds(iterations, _steps(iterations, streamed > 0, compute)),
            dram_read_bytes=from_dram, dram_write_bytes=to_dram, fill_bytes=(0, 0, from_dram),
            drain_bytes=to_dram, compute_cycles=compute,
            port_cycles=0 if measured is not None else _port_cycles(arch, reads, (0, 0, written)),
            sram_read_bytes=reads, sram_write_bytes=(0, 0, written), macs=0, ops=ops,
            drain_vector_cycles=0, drain_ops=(),
            footprint_bytes=(0, 0, min(chunk_cap, math.ceil((read + written) / iterations))),
            slots_in=arch.ofmap.slots, slots_out=arch.ofmap.slots,
        ))
    keep = sum(placement.tensor_bytes[t] for t in place.keep_onchip)
    release = sum(placement.tensor_bytes[t] for t in place.onchip_inputs)
    return NodePlan(node, report_phase(node.op, node.phase), work, tuple(stages), keep_bytes=keep, release_bytes=release,
                    spill_bytes=spill)


def plan_nodes(graph: Graph, nodes: list[Node], placement: Placement, arch: AcceleratorSpec,
               compat: str | None = None) -> list[NodePlan]:
    if compat is not None and compat not in COMPAT_MODES:
        raise UserInputError("--compat", None, f"must be one of {list(COMPAT_MODES)}, got {compat!r}")
    if compat is not None and arch.host is not None:
        raise UserInputError("--compat", None, f"{arch.name} is a calibrated machine model, not a systolic array")
    plans = []
    for node, place in zip(nodes, placement.nodes):
        work = lower_node(graph, node, float32=arch.format == "fp32")
        if isinstance(work, GemmWork):
            plans.append(plan_gemm(graph, node, work, place, placement, arch, compat))
        elif isinstance(work, VectorWork):
            plans.append(plan_vector(graph, node, work, place, placement, arch))
        else:
            plans.append(NodePlan(node, report_phase(node.op, node.phase), work, ()))
    return plans

