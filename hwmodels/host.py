"""The calibrated machine model: cycles of GEMM and vector work on a real host (or GPU) from rates
measured by probes (`nitisim calibrate`) or taken from public specifications.

A systolic array's cycles come from folds; a CPU's from how fast its GEMM engine and its vector
code run on shapes of the same kind. So a host model prices

    GEMM node    call_cycles["gemm"] + ceil(padded MACs / gemm_macs_per_cycle[gemm_class(op, phase, M, K, N)])
                 padded MACs = M, K and N each rounded up to the engine's tile (gemm_tile): the
                 work an AMX 32 x 32 tile pair or a 12 x 32 SIMD micro-kernel really does
    vector node  call_cycles["vector"] + sum over passes of ceil(ops of each width class /
                 (vector_ops_per_cycle[width] x cores if the pass is parallel else 1))

A calibrated host may also carry two measured tables, which take precedence over the formulas:

    kernels      cycles of one call of a kernel whose speed depends on more than its size (GEMMs:
                 layout, engine path, packing; pooling: channels per vector; every node-call op:
                 add, the global pools), keyed by kernel_key
                 (op, input shapes and dtypes, shape attributes): a probe of that kernel on random
                 operands of those shapes, through the same kernel table training calls
    curves       cycles of one call of an elementwise kernel (relu, relu_grad, requantize, update)
                 against its element count, on a fixed grid of sizes; a node's count is interpolated
                 on it (node_cycles), unless `kernels` has the node itself (a requantize probed
                 right after the GEMM that writes its input: nitisim/calibrate/kernels.py)

Those times include the kernel's own memory traffic, so for a host the simulator counts DRAM bytes
but adds no DRAM time (hwmodels/sim.py). Without them (the GPU model, a graph calibrated without
--model), the simulator adds what DRAM cannot hide, exactly as for an accelerator. Pure functions;
no SimPy, no measurement.

YAML (optional sections of an accelerator config, see hwmodels/config.py):

    host:
      engine: amx
      cores: 2
      gemm_tile: {m: 32, k: 64, n: 32}
      parallel_min_elements: 1048576
      gemm_macs_per_cycle: {narrow: 38.0, conv_forward: 107.2, conv_input_grad: 98.5, conv_weight_grad: 180.6,
                            linear_forward: 174.6, linear_input_grad: 154.0, linear_weight_grad: 103.4}
      vector_ops_per_cycle: {int8: 10.3, int32: 8.9}
      call_cycles: {gemm: 10400, vector: 5200}
      kernels: {"conv2d int8[256x28x28x1] int8[20x5x5x1] kernel=5,padding=0,stride=1": 1650000, ...}
      curves: {relu: [[4096, 9000], [16384, 12000], ...], requantize_pseudo_stochastic: [...], ...}
    calibration:                  # where the numbers come from (required with host)
      date: "2026-12-03T12:00:00+00:00"
      command: "nitisim calibrate --out ..."
      machine: "Intel(R) Xeon(R) Processor, 2 cores"
      probes: {gemm_forward: {value: 4.7e11, unit: MAC/s, what: "conv 3x3 ..."}, ...}
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Iterable, Sequence

from nitisim.contract.ops import OPS
from nitisim.contract.values import finite_number

from .spec import HostSpec

# Shape classes: any GEMM dimension below NARROW_DIM leaves most of a SIMD register (16 int32
# lanes, 4-deep int8 dot products) or tensor-core tile idle, whatever the layer; otherwise the
# engine path (a conv's implicit GEMM gathers im2col operands from NHWC maps, a linear layer's GEMM
# reads contiguous rows) and the phase (forward: x . W, input_grad: dY . W^T, plus col2im for a
# conv, weight_grad: a long reduction over the batch) decide the operand layout, which is what
# changes a CPU's packing and cache blocking.
NARROW_DIM = 32
GEMM_CLASSES: tuple[str, ...] = ("narrow", "conv_forward", "conv_input_grad", "conv_weight_grad",
                                 "linear_forward", "linear_input_grad", "linear_weight_grad")
GEMM_PHASES: tuple[str, ...] = ("forward", "input_grad", "weight_grad")
VECTOR_WIDTHS: tuple[str, ...] = ("int8", "int32")
CALL_KINDS: tuple[str, ...] = ("gemm", "vector")
# Kernels whose time depends on more than an element count: a GEMM's on its M, K, N, layout and the
# library's engine path (direct conv, scatter input gradient, packed GEMM), a pooling kernel's on its
# channels (one vector holds the channels of a window position), the loss's on its rows and classes.
# Probed at the graph's own shapes. So is every op on the node-call path (add, the global pools, and
# the next one): a new op is priced by the host model without a line here.
TABLE_OPS = frozenset({"conv2d", "conv2d_input_grad", "conv2d_weight_grad", "linear", "linear_input_grad",
                       "linear_weight_grad", "maxpool", "maxpool_grad", "loss_grad",
                       *(name for name, row in OPS.items() if row.node_call is not None)})
KEY_ATTRS = ("kernel", "stride", "padding", "dtype", "input_shape", "variant", "mode")  # attributes that change the work


def kernel_key(graph: Any, node: Any) -> str:
    """The table key of a node's kernel call: op, input dtypes and shapes, shape attributes.

    >>> from nitisim.contract.graph import build_graph; from nitisim.contract.models import builtin_models
    >>> g = build_graph(builtin_models()["lenet"], 8)
    >>> kernel_key(g, g.nodes[0])
    'conv2d int8[8x28x28x1] int8[20x5x5x1] kernel=5,padding=0,stride=1'
    """
    def text(v: Any) -> str:
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)

    shapes = " ".join(f"{t.dtype}[{text(t.shape)}]" for t in (graph.tensor(i) for i in node.inputs))
    attrs = ",".join(f"{k}={text(v)}" for k, v in sorted(node.attrs) if k in KEY_ATTRS)
    return f"{node.op} {shapes} {attrs}".strip()


def curve_key(graph: Any, node: Any) -> tuple[str, int] | None:
    """(curve name, element count) of an elementwise node, None for other ops. The name carries what
    changes the per-element work: the rounding mode, the update rule and its gradient's width."""
    op, ins = node.op, node.inputs
    if op == "relu":
        return "relu", graph.tensor(ins[0]).size
    if op == "relu_grad":
        return "relu_grad", graph.tensor(ins[1]).size
    if op == "requantize":
        return f"requantize_{node.attr('mode')}_{graph.tensor(ins[0]).dtype}", graph.tensor(ins[0]).size
    if op == "update":  # plain, momentum or shadow16: each its own per-element work
        return f"update_{node.attr('rule')}_{graph.tensor(ins[1]).dtype}", graph.tensor(ins[0]).size
    return None


def interpolate(curve: tuple[tuple[int, float], ...], elements: int) -> float:
    """Cycles at `elements` on a measured curve of (elements, cycles) points, sorted by elements:
    piecewise linear in log-log between points; below the first, the first (a call's fixed cost
    dominates); above the last, proportional to elements (a streaming kernel's time).

    >>> round(interpolate(((1000, 10.0), (4000, 40.0)), 2000), 9), interpolate(((1000, 10.0), (4000, 40.0)), 8000)
    (20.0, 80.0)
    """
    (n0, c0), (n1, c1) = curve[0], curve[-1]
    if elements <= n0:
        return c0
    if elements >= n1:
        return c1 * elements / n1
    for (na, ca), (nb, cb) in zip(curve, curve[1:]):
        if na <= elements <= nb:
            f = math.log(elements / na) / math.log(nb / na)
            return math.exp(math.log(ca) + f * math.log(cb / ca))
    raise AssertionError("unreachable: curve points are sorted")


def node_cycles(host: HostSpec, graph: Any, node: Any) -> int | None:
    """Measured cycles of one node from the host's kernel table or curves; None when neither has it
    (the caller then uses gemm_cycles / pass_cycles)."""
    cycles = host.kernels.get(kernel_key(graph, node))
    if cycles is not None:  # a table op, or an elementwise node probed after its producer
        return int(cycles)
    if node.op in TABLE_OPS:
        return None
    found = curve_key(graph, node)
    if found is None or found[0] not in host.curves:
        return None
    return math.ceil(interpolate(host.curves[found[0]], found[1]))


def gemm_class(op: str, phase: str, m: int, k: int, n: int) -> str:
    """The shape class of a GEMM (M x K) . (K x N) of graph op `op` and report phase `phase`.

    >>> gemm_class("conv2d", "forward", 147456, 25, 20), gemm_class("linear_weight_grad", "weight_grad", 800, 256, 500)
    ('narrow', 'linear_weight_grad')
    """
    if phase not in GEMM_PHASES:
        raise ValueError(f"not a GEMM phase: {phase!r}")
    if min(m, k, n) < NARROW_DIM:
        return "narrow"
    return f"{'conv' if op.startswith('conv2d') else 'linear'}_{phase}"


def padded_macs(tile: tuple[int, int, int], m: int, k: int, n: int) -> int:
    """MACs of the GEMM with M, K and N rounded up to the tile (m, k, n) the engine computes in.

    >>> padded_macs((32, 64, 32), 500, 16384, 50)  # 512 x 16384 x 64
    536870912
    """
    tm, tk, tn = tile
    return math.ceil(m / tm) * tm * math.ceil(k / tk) * tk * math.ceil(n / tn) * tn


def gemm_cycles(host: HostSpec, op: str, phase: str, m: int, k: int, n: int) -> int:
    """Cycles of one GEMM node: the call plus its padded MACs at the measured rate of its shape class."""
    rate = host.gemm_macs_per_cycle[gemm_class(op, phase, m, k, n)]
    return host.call_cycles["gemm"] + math.ceil(padded_macs(host.gemm_tile, m, k, n) / rate)


def pass_cycles(host: HostSpec, ops: Iterable[tuple[str, int]], largest_input_elements: int) -> int:
    """Cycles of one vector pass: element ops per width class at the measured per-core rate, on all
    cores when the pass's largest input has more than parallel_min_elements elements (the host
    library's threshold, the same element count for int8 and int32 kernels)."""
    workers = host.cores if largest_input_elements > host.parallel_min_elements else 1
    return sum(math.ceil(count / (host.vector_ops_per_cycle[width] * workers)) for width, count in ops)


# The C backend runs these GEMMs inside the requantize that reads their int32 output
# (gpu_backend/pending.py): a calibrated host's probe of the GEMM call times only its deferred set-up,
# and the GEMM's work is in the probe of that requantize.
FUSED_GEMM_OPS = frozenset({"conv2d", "conv2d_input_grad"})


def fused_requantize_cycles(host: HostSpec, nodes: Sequence[Any]) -> dict[str, int]:
    """GEMM node name -> cycles of the requantize its work is priced in, for a host measured with a
    kernel table (the probed library fuses them): a FUSED_GEMM_OPS node followed directly by a
    requantize of the same layer, as the graph builder places it. Empty for a formula-priced host."""
    if not host.kernels:
        return {}
    return {g.name: r.cycles for g, r in zip(nodes, nodes[1:])
            if g.op in FUSED_GEMM_OPS and r.op == "requantize" and r.layer == g.layer}


def peak_macs_per_cycle(host: HostSpec, pes: int, gemm_rates: Iterable[float]) -> float:
    """The MAC rate a host model's utilisation is a fraction of: the fastest it prices any GEMM at.

    A host's cycles are measured seconds x the clock /proc/cpuinfo names, and its array (4 x 16 x
    cores: one 4-deep int8 dot product on 16 lanes per core per cycle) is nominal. A core that boosts
    above that clock, or issues two dot products a cycle, is measured above the array's PEs, so MACs
    / (cycles x PEs) can pass 100 %. The peak is therefore the largest of the array's PEs, the
    measured class rates, and each priced GEMM's MACs per cycle (`gemm_rates`, a fused GEMM's over
    its requantize's cycles too: a kernel-table probe can beat its class rate); no GEMM, and so no
    row or total, is then above 100 %.

    >>> from hwmodels.spec import HostSpec
    >>> h = HostSpec("avx512vnni", 2, 0, (12, 4, 32), {"narrow": 50.0, "conv_forward": 150.0}, {}, {}, "")
    >>> peak_macs_per_cycle(h, 128, [90.0, 170.5]), peak_macs_per_cycle(h, 256, [])
    (170.5, 256)
    """
    return max(pes, *host.gemm_macs_per_cycle.values(), *gemm_rates)


def parse_host(r: Any) -> HostSpec:
    """The `host:` section, read through the config reader's Fields `r` (errors name file and key)."""
    r.keys({"engine", "cores", "parallel_min_elements", "gemm_tile", "gemm_macs_per_cycle", "vector_ops_per_cycle",
            "call_cycles"}, {"kernels", "curves"})
    tile = r.sub("gemm_tile")
    tile.keys({"m", "k", "n"})
    return HostSpec(
        engine=r.str("engine"), cores=r.int("cores"), parallel_min_elements=r.int("parallel_min_elements", minimum=0),
        gemm_tile=(tile.int("m"), tile.int("k"), tile.int("n")),
        gemm_macs_per_cycle=_numbers(r.sub("gemm_macs_per_cycle"), GEMM_CLASSES),
        vector_ops_per_cycle=_numbers(r.sub("vector_ops_per_cycle"), VECTOR_WIDTHS),
        call_cycles=_numbers(r.sub("call_cycles"), CALL_KINDS, integer=True),
        calibrated="",
        kernels=_kernels(r.sub("kernels")) if r.has("kernels") else MappingProxyType({}),
        curves=_curves(r.sub("curves")) if r.has("curves") else MappingProxyType({}),
    )


def _kernels(r: Any):
    if not isinstance(r.doc, dict):
        raise r.error(None, "must map kernel keys to cycles")
    return MappingProxyType({str(k): r.int(k, minimum=1) for k in r.doc})


def _curves(r: Any):
    if not isinstance(r.doc, dict):
        raise r.error(None, "must map curve names to lists of [elements, cycles]")
    out = {}
    for name, points in r.doc.items():
        ok = isinstance(points, list) and len(points) >= 2 and all(
            isinstance(p, list) and len(p) == 2 and all(finite_number(v) and v > 0 for v in p) for p in points)
        if not ok:
            raise r.error(name, "must be a list of at least two [elements, cycles] pairs of finite positive numbers")
        if any(a[0] >= b[0] for a, b in zip(points, points[1:])):
            raise r.error(name, "elements must increase from point to point")
        out[str(name)] = tuple((int(n), float(c)) for n, c in points)
    return MappingProxyType(out)


def parse_calibration(r: Any) -> str:
    """The `calibration:` record: when, by what command, on what machine, and every probe's value.
    Returns the date; the probes are kept in the YAML for the reader and checked here."""
    r.keys({"date", "command", "machine", "probes"})
    date = r.str("date")
    r.str("command")
    r.str("machine")
    probes = r.sub("probes")
    if not probes.doc:
        raise probes.error(None, "must list at least one probe")
    for name in probes.doc:
        p = probes.sub(name)
        p.keys({"value", "unit", "what"}, {"seconds", "repeats"})
        p.number("value")
        p.str("unit")
        p.str("what")
        if p.has("seconds"):
            p.number("seconds")
        if p.has("repeats"):
            p.int("repeats")
    return date


def _numbers(r: Any, keys: tuple[str, ...], integer: bool = False):
    r.keys(set(keys))
    return MappingProxyType({k: (r.int(k, minimum=0) if integer else r.number(k)) for k in keys})
