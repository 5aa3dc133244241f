"""Kernel probes for the host model's measured tables (hwmodels/host.py: kernels, curves).

Each probe calls one kernel of the C backend's kernel table (gpu_backend.backends.cpu_kernel_table,
the functions `nitisim train --backend cpu` calls, with its allocator settings and thread count) on
random operands, one warm-up call and then timed calls, of which the lower quartile is kept (the
statistic the measured run is compared by: nitisim.report.stats.lower_quartile). No probe reads
a training run or its timing:

- table probes: every GEMM and pooling node of a given graph, on random operands of that node's
  shapes. Their speed depends on the shape in ways the library decides at run time (a direct conv,
  a scatter input gradient or the packed GEMM; AMX tiles; channels per pooling vector), which a
  rate per shape class does not follow (docs/results.md, host-model: conv GEMMs off by 2x). Also
  every requantize node a GEMM feeds, each call on the fresh output of an untimed call of that
  GEMM, where a step finds it (a rewritten random input ran 20-30 % faster).
- curve probes: each elementwise kernel (relu, relu_grad, requantize per rounding mode, the plain
  update per gradient width) on a fixed grid of element counts, the same for every graph, plus one
  count just above the library's parallel threshold (an element count, the same for every width),
  where the kernel starts using every core.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..contract.errors import UserInputError
from ..report.stats import lower_quartile

GRID_ELEMENTS = tuple(1 << s for s in range(12, 25, 2))  # 4 Ki .. 16 Mi elements, x4 apart
MAX_CURVE_BYTES = 64 << 20  # largest input a curve probe allocates (an int32 16 Mi tensor)
PROBE_BUDGET_S = 0.05  # a probe repeats fewer times once its calls add up to this (big tensors)
# Elementwise nodes probed at their own shapes right after the GEMM that writes their input (the
# state a step leaves them), when the graph has that GEMM; curves price the others.
AFTER_PRODUCER_OPS = frozenset({"requantize"})
DEFAULT_CURVES = ("relu", "relu_grad", "requantize_pseudo_stochastic_int32", "update_plain_int32")
UPDATE_STATES = {"momentum": np.int32, "shadow16": np.int16}  # update rules with a state tensor: its dtype


@dataclass(frozen=True)
class KernelTime:
    key: str  # hwmodels.host.kernel_key, or "<curve>@<elements>"
    seconds: float  # lower quartile of the timed calls (nitisim.report.stats.lower_quartile)
    repeats: int  # timed calls
    samples: tuple[float, ...] = ()  # each timed call's seconds: passes are merged by pooling them


def kernel_time(key: str, samples: list[float]) -> KernelTime:
    """The probe's record: the lower quartile of its calls, the statistic the measured run's
    nodes are compared by (nitisim.report.join.measured_by_phase)."""
    return KernelTime(key, lower_quartile(samples), len(samples), tuple(samples))


def timed_calls(fn: Callable[[], object], n: int, before: Callable[[], object] | None = None) -> list[float]:
    """Seconds of each of n timed calls of fn, each after `before()` (untimed); no warm-up."""
    times = []
    for _ in range(n):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def timed_median(fn: Callable[[], object], n: int, before: Callable[[], object] | None = None) -> float:
    """Median seconds of n timed calls of fn, each after `before()` (untimed); no warm-up."""
    return statistics.median(timed_calls(fn, n, before))


def probe_call_times(fn: Callable[[], object], repeats: int,
                     before: Callable[[], object] | None = None) -> list[float]:
    """One warm-up call, then up to `repeats` timed calls, each after `before()` (untimed), fewer
    for slow calls so that a probe stays near PROBE_BUDGET_S (but at least three, or `repeats` if
    fewer). Back to back: timed round-robin over all probes instead, the probes' operands went
    colder than a training step leaves them (pooling predicted 1.5x slow)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    n = max(min(repeats, 3), min(repeats, int(PROBE_BUDGET_S / max(first, 1e-9))))
    times = timed_calls(fn, n, before)
    if not min(times) > 0:
        raise UserInputError("nitisim calibrate", "kernel probe", f"measured {min(times)!r} s; the timer cannot resolve it")
    return times


def _operand(rng, shape: tuple[int, ...], dtype: str, below: int | None = None):
    """Random values of a tensor: int8 in [-127, 127], labels in [0, below), wider ones as GEMMs give."""
    from nitisim.contract.numerics import QTensor

    if below is not None:  # the executor hands labels over as a plain array
        return rng.integers(0, below, shape, dtype=np.dtype(dtype))
    if dtype == "int8":
        m = rng.integers(-127, 128, shape, dtype=np.int8)
    else:  # accumulators and gradients: values a GEMM of int8 operands gives
        m = rng.integers(-(1 << 20), 1 << 20, shape, dtype=np.dtype(dtype))
    return QTensor(m, 0)


def _training_state(fresh: np.ndarray, before: Callable[[], object] | None,
                    rewrite: Callable[[np.ndarray], object] | None) -> Callable[[], None]:
    """What runs (untimed) before each timed call: `before()` (the caller's cache eviction), then the
    input the previous node has just produced written again, by `rewrite` (None: from this thread)."""
    def prepare() -> None:
        if before is not None:
            before()
        if rewrite is not None:
            rewrite(fresh)
        else:
            np.copyto(fresh, fresh)
    return prepare


def table_probes(kernels: Any, graph: Any, repeats: int, rng,
                 before: Callable[[], object] | None = None,
                 rewrite: Callable[[np.ndarray], object] | None = None) -> list[KernelTime]:
    """One probe per distinct kernel_key among the graph's TABLE_OPS nodes, each timed call after
    `before()` (the caller's L2 eviction: in a training step a GEMM's weights were last touched a
    step ago, by its update, and every other node's tensors went through the caches since) and then
    `rewrite` of the input the previous node has just produced (_fresh_input): the probes pass the C
    library's threaded rewrite, so no thread idles before the timed call (on this project's VM an
    idle core woken for a kernel cost up to half of a ReLU's time). Also one per AFTER_PRODUCER_OPS
    node that a GEMM feeds, each timed call after `before()` and that GEMM (_after_producer_times)."""
    from hwmodels.host import TABLE_OPS, kernel_key
    from nitisim.contract.executor import StepContext

    ctx, out, seen = StepContext(), [], set()
    for node in graph.nodes:
        producer = _gemm_producer(graph, node) if node.op in AFTER_PRODUCER_OPS else None
        key = kernel_key(graph, node) if node.op in TABLE_OPS or producer is not None else None
        if key is None or key in seen:
            continue
        seen.add(key)
        if producer is not None:
            out.append(kernel_time(key, _after_producer_times(kernels, graph, node, producer, repeats, rng, before)))
            continue
        fn = kernels[node.op]
        classes = graph.tensor(node.inputs[0]).shape[-1]
        ins = [_operand(rng, graph.tensor(t).shape, graph.tensor(t).dtype,
                        classes if graph.tensor(t).role == "label" else None) for t in node.inputs]
        warm = _training_state(ins[_fresh_input(graph, node)].m, before, rewrite)
        out.append(kernel_time(key, probe_call_times(lambda: fn(node, ctx, *ins), repeats, warm)))
    return out


def _gemm_producer(graph: Any, node: Any) -> Any | None:
    """The GEMM node whose output is `node`'s first input, or None."""
    from nitisim.contract.graph import node_macs

    return next((p for p in graph.nodes if node.inputs[0] in p.outputs and node_macs(graph, p) > 0), None)


def _after_producer_times(kernels: Any, graph: Any, node: Any, producer: Any, repeats: int, rng,
                          before: Callable[[], object] | None) -> list[float]:
    """Timed calls of `node`, each after `before()` and a call (untimed) of the GEMM that produces
    its input in the step, on random operands of the producer's shapes: the input is that call's
    fresh output, where and as the GEMM leaves it. Rewriting a random input in place instead timed
    LeNet's requantizes of conv1 and conv2 at 0.68 and 0.29 ms, against 0.82-0.85 and 0.38 ms after
    the conv that writes them (0.78 and 0.37-0.45 ms inside a training step)."""
    from nitisim.contract.executor import StepContext

    ctx = StepContext()
    pins = [_operand(rng, graph.tensor(t).shape, graph.tensor(t).dtype) for t in producer.inputs]
    which = producer.outputs.index(node.inputs[0])
    made: list = [kernels[producer.op](producer, ctx, *pins)[which]]

    def produce() -> None:
        if before is not None:
            before()
        made[0] = kernels[producer.op](producer, ctx, *pins)[which]

    return probe_call_times(lambda: kernels[node.op](node, ctx, made[0]), repeats, produce)


def _fresh_input(graph: Any, node: Any) -> int:
    """Which input of a node the step has just written: the error on the backward pass, else the
    activation (or the network input): the one a training step finds in cache."""
    roles = [graph.tensor(t).role for t in node.inputs]
    for wanted in (("error",) if "error" in roles else ("activation", "input")):
        if wanted in roles:
            return roles.index(wanted)
    return 0


def needed_curves(graph: Any | None) -> tuple[str, ...]:
    """DEFAULT_CURVES and every curve the graph's elementwise nodes read."""
    from hwmodels.host import curve_key

    names = list(DEFAULT_CURVES)
    for node in graph.nodes if graph is not None else ():
        found = curve_key(graph, node)
        if found is not None and found[0] not in names:
            names.append(found[0])
    return tuple(names)


def _curve_call(kernels: Any, name: str, n: int, rng) -> tuple[Callable[[], object], np.ndarray]:
    """A call of the curve's kernel on n elements (a synthetic node carries the attributes), and its
    last input: in a training step the tensor the previous node has just written (the activation
    to requantize or rectify, the incoming gradient, the weight gradient to apply)."""
    from nitisim.contract.executor import StepContext
    from nitisim.contract.graph import Node
    from nitisim.contract.numerics import QTensor

    ctx = StepContext()
    if name == "relu":
        node, ins = Node("p", "relu", "forward", "p", ("x",), ("y",)), [_operand(rng, (n,), "int8")]
    elif name == "relu_grad":
        node = Node("p", "relu_grad", "backward", "p", ("x", "dy"), ("dx",))
        ins = [_operand(rng, (n,), "int8"), _operand(rng, (n,), "int8")]
    elif name.startswith("requantize_"):
        mode, dtype = name[len("requantize_"):].rsplit("_", 1)
        node = Node("p", "requantize", "forward", "p", ("acc",), ("y",), (("mode", mode),), tensor_id=1)
        ins = [_operand(rng, (n,), dtype)]
    elif name.startswith("update_"):
        rule, dtype = name[len("update_"):].rsplit("_", 1)
        ins = [_operand(rng, (n,), "int8"), _operand(rng, (n,), dtype)]
        if rule in UPDATE_STATES:  # the optimiser state: momentum's int32 velocity, shadow16's int16 shadow
            state = rng.integers(-(1 << 12), 1 << 12, n).astype(UPDATE_STATES[rule])
            ins.append(QTensor(state, -8 if rule == "shadow16" else 0))
        node = Node("p", "update", "update", "p", ("w", "g", "s")[:len(ins)], ("w2",), (("rule", rule),))
        fn = kernels[node.op]
        return lambda: fn(node, ctx, *ins), ins[1].m  # the gradient is what the step has just written
    else:  # pragma: no cover - hwmodels.host.curve_key names only the curves above
        raise ValueError(f"no probe for curve {name!r}")
    fn = kernels[node.op]
    return lambda: fn(node, ctx, *ins), ins[-1].m


def curve_probes(kernels: Any, names: tuple[str, ...], parallel_min_elements: int, repeats: int,
                 rng, before: Callable[[], object] | None = None,
                 rewrite: Callable[[np.ndarray], object] | None = None) -> dict[str, list[KernelTime]]:
    """Each curve's (elements, seconds) points: GRID_ELEMENTS below MAX_CURVE_BYTES of input, and
    1.25 x parallel_min_elements elements (the library's threshold counts elements of a kernel's
    largest input, whatever its width, so the point is the same for every curve). Before each timed
    call, `before()` (the caller's L2 eviction) and then `rewrite` of the kernel's last input, so the
    call finds that input where a training step leaves it (in cache as far as it fits) and the rest
    cold."""
    curves = {}
    for name in names:
        width = np.dtype(name.rsplit("_", 1)[1]).itemsize if name[-5:-2] == "int" else 1
        grid = sorted({*(n for n in GRID_ELEMENTS if n * width <= MAX_CURVE_BYTES),
                       parallel_min_elements * 5 // 4})
        points = []
        for n in grid:
            fn, fresh = _curve_call(kernels, name, n, rng)
            points.append(kernel_time(f"{name}@{n}", probe_call_times(fn, repeats, _training_state(fresh, before, rewrite))))
        curves[name] = points
    return curves
