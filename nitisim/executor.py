"""Runs a training graph on any set of op kernels: the backend-independent step and prediction loop.

A backend supplies a kernel table `{op name: fn(node, ctx, *inputs) -> tuple of outputs}` whose
values are QTensor-like (an array and its exponent). `run_graph` walks the nodes in order, feeds
each kernel its input tensors, stores its outputs and frees every tensor after its last reader,
so peak memory follows the graph, not the whole step. The numpy table (nitisim/reference.py) is
the specification; gpu_backend supplies the C and CUDA tables.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping

import numpy as np

from .graph import Graph, Node
from .numerics import QTensor


@dataclass(frozen=True)
class StepContext:
    """What a kernel needs beyond its inputs: the counter-hash coordinates and the update size."""

    seed: int = 0  # run seed for the counter hash (stochastic rounding, dropout masks)
    step: int = 0  # global training step, the hash's second coordinate
    mu: int = 5  # update bit budget: |weight step| <= 2**mu (NITI's learning rate)


OpKernel = Callable[..., tuple]


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
    observer: Callable[[Node, float], None] | None = None,
) -> dict[str, Any]:
    """Execute every node of `graph` in order on `env` (name -> tensor), in place; returns env.

    Tensors are dropped after their last reader unless they are parameters (weights, states),
    the logits, or named in `keep`. `observer(node, seconds)`, when given, is called after each
    node with the wall time the kernel call took (backends that run asynchronously time themselves).
    """
    retained = set(keep) | set(graph.weights) | set(graph.states) | {graph.logits_name}
    last = graph.last_uses()
    clock = time.perf_counter if observer else None
    for i, node in enumerate(graph.nodes):
        fn = kernels.get(node.op)
        if fn is None:
            raise NotImplementedError(f"backend has no kernel for op {node.op!r}")
        t0 = clock() if clock else 0.0
        outs = fn(node, ctx, *(env[name] for name in node.inputs))
        if observer:
            observer(node, clock() - t0)
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
    observer: Callable[[Node, float], None] | None = None,
) -> StepResult:
    """One training step (forward, loss gradient, backward, update) on a batch."""
    if not graph.training:
        raise ValueError("train_step needs a training graph (build_graph(..., training=True))")
    env = dict(params)
    env[graph.input_name] = x
    env[graph.label_name] = labels
    env = run_graph(graph, kernels, env, ctx, keep, observer)
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
