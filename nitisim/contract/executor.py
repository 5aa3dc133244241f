"""Runs a training graph on any set of op kernels: the backend-independent step and prediction loop.

A backend supplies a kernel table `{op name: fn(node, ctx, *inputs) -> tuple of outputs}` whose
values are QTensor-like (an array and its exponent). `run_graph` walks the nodes in order, feeds
each kernel its input tensors, stores its outputs and frees every tensor after its last reader,
so peak memory follows the graph, not the whole step. The numpy table (nitisim/contract/reference.py) is
the specification; gpu_backend supplies the C and CUDA tables.

Timing is a `NodeClock`: `start` before the first node, `lap` after each, `read` afterwards. The
host clock here suits backends whose kernels return when their work is done (numpy, the C
library); an asynchronous backend brings its own (gpu_backend.cuda.DeviceNodeClock records an
event on the stream per node), since a host clock around an asynchronous call times the launch.

An IntegerOverflowError raised by a kernel leaves `run_graph` as a `NodeOverflowError`: one line
naming the graph node and layer whose int32 accumulator overflowed, its reduction depth and what to
change. A backend that fuses a GEMM with the requantize reading it (gpu_backend/pending.py)
computes the accumulator, and so raises, at the requantize node; the message names the GEMM node
that produced the accumulator either way, so every backend reports the same place.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Protocol

import numpy as np

from .errors import IntegerOverflowError
from .graph import MAX_INT32_REDUCTION, Graph, Node
from .numerics import QTensor
from .values import one_line


@dataclass(frozen=True)
class StepContext:
    """What a kernel needs beyond its inputs: the counter-hash coordinates and the update size."""

    seed: int = 0  # run seed for the counter hash (stochastic rounding, dropout masks)
    step: int = 0  # global training step, the hash's second coordinate
    mu: int = 5  # update bit budget: |weight step| <= 2**mu (NITI's learning rate)


OpKernel = Callable[..., tuple]


class NodeClock(Protocol):
    """Times the nodes of one run_graph call."""

    def start(self, nodes: int) -> None: ...  # before the first of `nodes` nodes
    def lap(self) -> None: ...  # after each node
    def read(self) -> list[float]: ...  # seconds of each lap, in node order (may wait for the device)


class HostNodeClock:
    """perf_counter laps: the node times of a backend whose kernel calls return when the work is done."""

    def __init__(self) -> None:
        self._marks: list[float] = []

    def start(self, nodes: int) -> None:
        self._marks = [time.perf_counter()]

    def lap(self) -> None:
        self._marks.append(time.perf_counter())

    def read(self) -> list[float]:
        marks, self._marks = self._marks, []
        return [b - a for a, b in zip(marks, marks[1:])]


@dataclass
class StepResult:
    params: dict[str, Any]  # weights and optimiser states after the update
    tensors: dict[str, Any] = field(default_factory=dict)  # kept intermediates, by name


def run_graph(
    graph: Graph,
    kernels: Mapping[str, OpKernel],
    env: dict[str, Any],
    ctx: StepContext,
    keep: Collection[str] = (),
    clock: NodeClock | None = None,
) -> dict[str, Any]:
    """Execute every node of `graph` in order on `env` (name -> tensor), in place; returns env.

    Tensors are dropped after their last reader unless they are parameters (weights, states),
    the logits, or named in `keep`. `clock`, when given, is started before the first node and
    lapped after each one; its `read()` then gives the seconds of every node in graph order.
    """
    retained = set(keep) | set(graph.weights) | set(graph.states) | {graph.logits_name}
    last = graph.last_uses()
    if clock:
        clock.start(len(graph.nodes))
    for i, node in enumerate(graph.nodes):
        fn = kernels.get(node.op)
        if fn is None:
            raise NotImplementedError(f"backend has no kernel for op {node.op!r}")
        try:
            outs = fn(node, ctx, *(env[name] for name in node.inputs))
        except NodeOverflowError:
            raise
        except IntegerOverflowError as err:
            raise NodeOverflowError.at(graph, node, err) from err
        if clock:
            clock.lap()
        for name, value in zip(node.outputs, outs):
            env[name] = value
        for name in node.inputs:
            if last.get(name) == i and name not in retained and name not in node.outputs:
                env.pop(name, None)
    return env


class NodeOverflowError(IntegerOverflowError):
    """An int32 accumulator overflow located in the graph: `node` and `layer` say where, the
    message (one line) what overflowed and what to change."""

    def __init__(self, message: str, node: str, layer: str):
        super().__init__(message)
        self.node, self.layer = node, layer

    @classmethod
    def at(cls, graph: Graph, node: Node, err: IntegerOverflowError) -> "NodeOverflowError":
        """The error of `node` failing with `err`; a requantize is charged to its accumulator's producer."""
        if node.op == "requantize":
            node = next((n for n in graph.nodes if node.inputs[0] in n.outputs), node)
        detail = one_line(str(err))  # whatever the kernel wrote
        if detail.startswith(f"{node.name}: "):  # the numpy reference names the node itself
            detail = detail[len(node.name) + 2:]
        hint = _overflow_hint(graph, node)
        message = f"graph node {node.name} ({node.op}, layer {node.layer}): {detail}" + (f"; {hint}" if hint else "")
        return cls(message, node.name, node.layer)


def _overflow_hint(graph: Graph, node: Node) -> str:
    """What the user can change after `node` overflowed int32 (empty when the shapes do not explain it)."""
    layer, op = node.layer, node.op
    if op == "update":
        return (f"layer {layer}'s {node.attr('rule')} weight update left int32: use a smaller mu (the update "
                "bit budget) in the config's mu_schedule")
    if op not in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "linear", "linear_input_grad",
                  "linear_weight_grad") or node.attr("weight") not in graph.tensors:
        return ""  # (a hand-built node without the shapes: the kernel's own message stands alone)
    bound = MAX_INT32_REDUCTION
    w = graph.tensor(node.attr("weight")).shape  # conv (O, kh, kw, I), linear (out, in)
    conv = op.startswith("conv2d")
    if op.endswith("weight_grad"):
        if conv and node.attr("output_map") not in graph.tensors:
            return ""
        pixels = graph.tensor(node.attr("output_map")).shape[1:3] if conv else (1, 1)  # (E, F)
        depth = graph.batch * pixels[0] * pixels[1]
        what = f"weight-gradient reduction sums {depth} products (batch {graph.batch}" + (
            f" x {pixels[0]}x{pixels[1]} output pixels)" if conv else ")")
        change = f"use a smaller batch (batch x output pixels at most {bound})"
    elif conv:
        forward = op == "conv2d"
        channels, side = (w[3], "input") if forward else (w[0], "output")
        depth = w[1] * w[2] * channels
        what = (f"{'forward' if forward else 'input-gradient'} reduction sums {depth} products "
                f"(kernel {w[1]}x{w[2]} x {channels} {side} channels)")
        change = (f"give layer {layer} a smaller kernel or fewer {side} channels (kernel height x width x "
                  f"{side} channels at most {bound})")
    else:
        forward = op == "linear"
        depth, side = (w[1], "input") if forward else (w[0], "output")
        what = f"{'forward' if forward else 'input-gradient'} reduction sums {depth} products (its {side} features)"
        change = f"give layer {layer} at most {bound} {side} features"
    if depth <= bound:
        return ""
    return f"layer {layer}'s {what}, more than the {bound} products of 127 x 127 that always fit int32: {change}"


def train_step(
    graph: Graph,
    kernels: Mapping[str, OpKernel],
    params: Mapping[str, Any],
    x: Any,
    labels: Any,
    ctx: StepContext,
    keep: Collection[str] = (),
    clock: NodeClock | None = None,
) -> StepResult:
    """One training step (forward, loss gradient, backward, update) on a batch; `clock` as in run_graph."""
    if not graph.training:
        raise ValueError("train_step needs a training graph (build_graph(..., training=True))")
    env = dict(params)
    env[graph.input_name] = x
    env[graph.label_name] = labels
    env = run_graph(graph, kernels, env, ctx, keep, clock)
    new_params = {name: env[name] for name in (*graph.weights, *graph.states)}
    kept = {name: env[name] for name in keep if name in env}
    return StepResult(new_params, kept)


def forward_logits(graph: Graph, kernels: Mapping[str, OpKernel], params: Mapping[str, Any], x: Any,
                   ctx: StepContext | None = None) -> Any:
    """Logits of an inference graph (no dropout, no backward)."""
    env = {name: params[name] for name in graph.weights}
    env[graph.input_name] = x
    env = run_graph(graph, kernels, env, ctx or StepContext())
    return env[graph.logits_name]


def predict(logits: QTensor) -> np.ndarray:
    """Class of each row: the first maximum of the int8 logits (ties resolved to the lower class)."""
    return np.asarray(logits.m).argmax(axis=1)
