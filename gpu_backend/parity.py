"""Whole-step parity: run the same training steps on two kernel tables and list every difference.

Used by the parity tests and by `python -m gpu_backend`. Every tensor of the step (activations,
accumulators, errors, gradients, updated weights) is compared with exact equality, exponent and
dtype included; `to_host` brings a backend's tensors back as QTensors (identity for host backends).
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import Graph, NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import (Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU, builtin_models,
                                     parse_model)
from nitisim.contract.numerics import QTensor


def small_vgg() -> ModelSpec:
    """A VGG-shaped network small enough for a parity test: 3x3 same convs, pools, dropout, linear."""
    return ModelSpec("small-vgg", (16, 16, 3), (
        Conv(16, 3, 1, 1), ReLU(), Conv(16, 3, 1, 1), ReLU(), MaxPool(2, 2),
        Conv(32, 3, 1, 1), ReLU(), MaxPool(2, 2), Flatten(), Dropout(0.5), Linear(10),
    ))


def small_resnet() -> ModelSpec:
    """A ResNet small enough for a parity test: a stem with a padded max pool, a block with an identity
    shortcut and one with a strided 1x1 conv shortcut (so errors fan in at both block inputs), global average pool, linear.
    Each branch's last conv starts at zero, so the first step's branch outputs are zero and the
    second step's are not: compare at least two steps."""
    return parse_model({
        "name": "small-resnet", "input": [16, 16, 3], "classes": 10,
        "layers": [
            {"conv": {"out": 8, "kernel": 3, "padding": 1}}, "relu",
            {"maxpool": {"kernel": 3, "stride": 2, "padding": 1}},  # the ResNet-18/50 stem's pool
            {"residual": {"branch": [{"conv": {"out": 8, "kernel": 3, "padding": 1}}, "relu",
                                     {"conv": {"out": 8, "kernel": 3, "padding": 1}}],
                          "shortcut": "identity", "then": "relu"}},
            {"residual": {"branch": [{"conv": {"out": 16, "kernel": 3, "stride": 2, "padding": 1}}, "relu",
                                     {"conv": {"out": 16, "kernel": 3, "padding": 1}}],
                          "shortcut": {"conv": {"out": 16, "kernel": 1, "stride": 2}}, "then": "relu"}},
            "global_avgpool", {"linear": {"out": 10}},
        ]}, "gpu_backend.parity.small_resnet")


def parity_models() -> dict[str, ModelSpec]:
    return {"lenet": builtin_models()["lenet"], "small-vgg": small_vgg(), "small-resnet": small_resnet()}


def _host(t, to_host) -> tuple[np.ndarray, int | None]:
    t = to_host(t) if to_host else t
    if isinstance(t, QTensor):
        return np.asarray(t.m), int(t.e)
    return np.asarray(t), None


def compare_steps(
    graph: Graph,
    reference: Mapping[str, Callable],
    candidate: Mapping[str, Callable],
    *,
    steps: int = 2,
    seed: int = 0,
    mu: int = 3,
    to_device: Callable | None = None,
    to_host: Callable | None = None,
) -> list[str]:
    """Run `steps` training steps with both tables from the same start; return the mismatches."""
    rng = np.random.default_rng(seed)
    model = graph.model
    x = QTensor(rng.integers(-127, 128, (graph.batch, *model.input_shape), dtype=np.int8), -8)
    labels = rng.integers(0, model.classes, graph.batch).astype(np.int32)
    start = init_params(graph, seed)
    put = to_device or (lambda t: t)
    ref_params, cand_params = dict(start), {k: put(v) for k, v in start.items()}
    cand_x, cand_labels = put(x), labels
    problems: list[str] = []
    keep = list(graph.tensors)
    for step in range(steps):
        ctx = StepContext(seed=seed, step=step, mu=mu)
        ref = train_step(graph, reference, ref_params, x, labels, ctx, keep=keep)
        cand = train_step(graph, candidate, cand_params, cand_x, cand_labels, ctx, keep=keep)
        for name in keep:
            if name == graph.label_name:
                continue
            (a, ea), (b, eb) = _host(ref.tensors[name], None), _host(cand.tensors[name], to_host)
            if a.dtype != b.dtype or a.shape != b.shape:
                problems.append(f"step {step} {name}: {b.dtype}{b.shape} != reference {a.dtype}{a.shape}")
            elif ea != eb:
                problems.append(f"step {step} {name}: exponent {eb} != reference {ea}")
            elif not np.array_equal(a, b):
                bad = int((a != b).sum())
                problems.append(f"step {step} {name}: {bad} of {a.size} values differ")
        ref_params, cand_params = ref.params, cand.params
    return problems


def parity_report(candidate: Mapping[str, Callable], reference: Mapping[str, Callable], *, batch: int = 8,
                  to_device=None, to_host=None) -> dict[str, list[str]]:
    """Mismatches per (model, options) case: lenet and a small VGG, NITI defaults and the extensions."""
    cases = {
        "niti": NumericsOptions(),
        "stochastic+fine+momentum": NumericsOptions("stochastic", "nearest", "fine", "momentum"),
        "shadow16": NumericsOptions(update_rule="shadow16"),
    }
    report = {}
    for model_name, model in parity_models().items():
        for case, options in cases.items():
            graph = build_graph(model, batch, options)
            report[f"{model_name}/{case}"] = compare_steps(graph, reference, candidate,
                                                           to_device=to_device, to_host=to_host)
    return report
