"""Runs a training graph on any set of op kernels: the backend-independent step and prediction loop.

A backend supplies a kernel table `{op name: fn(node, ctx, *inputs) -> tuple of outputs}` whose
values are QTensor-like (an array and its exponent). `run_graph` walks the nodes in order, feeds
each kernel its input tensors, stores its outputs and frees every tensor after its last reader,
so peak memory follows the graph, not the whole step. The numpy table (nitisim/reference.py) is
the specification; gpu_backend supplies the C and CUDA tables.

Timing is a `NodeClock`: `start` before the first node, `lap` after each, `read` afterwards. The
host clock here suits backends whose kernels return when their work is done (numpy, the C
library); an asynchronous backend brings its own (gpu_backend.cuda.DeviceNodeClock records an
event on the stream per node), since a host clock around an asynchronous call times the launch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Protocol

import numpy as np

from .graph import Graph
from .numerics import QTensor


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
        outs = fn(node, ctx, *(env[name] for name in node.inputs))
        if clock:
            clock.lap()
        for name, value in zip(node.outputs, outs):
            env[name] = value
        for name in node.inputs:
            if last.get(name) == i and name not in retained and name not in node.outputs:
                env.pop(name, None)
    return env


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
