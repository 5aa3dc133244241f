"""Training storage from the graph itself: bytes by tensor role, integer versus float32.

The integer column is each tensor's own dtype (int8 weights and activations, int32 accumulators,
int32/int64 weight gradients); the float32 column is the same tensors at 4 bytes per element, the
storage a float32 twin of the same graph needs. Categories:

  weights           role weight
  optimizer state   role state (momentum velocity, int16 shadow weights)
  activation stash  forward tensors (input, activations) that a backward node reads: kept from
                    the forward pass until the backward pass is done with them
  errors            role error (activation gradients)
  weight gradients  role gradient
  accumulators      role accumulator (GEMM int32 outputs before requantization; transient)

`peak live` walks the nodes in order: parameters, the input and labels live for the whole step,
every other tensor from the node writing it to the node reading it last (as the executor frees).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..contract.graph import Graph, NumericsOptions, build_graph
from ..contract.models import ModelSpec, model_from_dict, resolve_model

FP32_BYTES = 4
CATEGORIES: tuple[str, ...] = (
    "weights", "optimizer state", "activation stash", "errors", "weight gradients", "accumulators",
)


@dataclass(frozen=True)
class StorageRow:
    category: str
    tensors: int
    elements: int
    int8_bytes: int  # the integer graph's own dtypes (int8 / int16 / int32 / int64)
    fp32_bytes: int  # the same elements at 4 bytes


@dataclass(frozen=True)
class Storage:
    model: str
    batch: int
    rows: tuple[StorageRow, ...]  # one per CATEGORIES entry, then "peak live"

    def row(self, category: str) -> StorageRow:
        return next(r for r in self.rows if r.category == category)


def storage_of(graph: Graph) -> Storage:
    """Bytes per category (and the peak of live bytes over the step) for one training graph."""
    stash = _stashed(graph)
    members: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    role_category = {"weight": "weights", "state": "optimizer state", "error": "errors",
                     "gradient": "weight gradients", "accumulator": "accumulators"}
    for name, spec in graph.tensors.items():
        if name in stash:
            members["activation stash"].append(name)
        elif spec.role in role_category:
            members[role_category[spec.role]].append(name)
    rows = [_row(graph, c, members[c]) for c in CATEGORIES]
    rows.append(_peak_live(graph))
    return Storage(graph.model.name, graph.batch, tuple(rows))


def model_from_run(model_ref: str, model_spec: Mapping[str, Any] | None) -> ModelSpec:
    """The run's model: rebuilt from summary.json's expanded `model_spec` echo when present (exact even
    when the config named a YAML file by a relative path), else resolved by name."""
    if model_spec:
        try:
            return model_from_dict(model_spec)
        except (KeyError, TypeError, ValueError):
            pass  # an echo in another shape: fall back to the name
    return resolve_model(model_ref)


def storage_for_run(model_ref: str, model_spec: Mapping[str, Any] | None, batch: int,
                    update_rule: str = "plain") -> Storage:
    graph = build_graph(model_from_run(model_ref, model_spec), batch, NumericsOptions(update_rule=update_rule))
    return storage_of(graph)


def _stashed(graph: Graph) -> set[str]:
    """Forward-phase tensors (and the input) that some backward-phase node reads."""
    forward_made = {graph.input_name}
    for node in graph.nodes:
        if node.phase == "forward":
            forward_made.update(node.outputs)
    read_later = {name for node in graph.nodes if node.phase == "backward" for name in node.inputs}
    return {name for name in forward_made & read_later
            if graph.tensor(name).role in ("input", "activation")}


def _row(graph: Graph, category: str, names: list[str]) -> StorageRow:
    specs = [graph.tensor(n) for n in names]
    elements = sum(s.size for s in specs)
    return StorageRow(category, len(specs), elements, sum(s.nbytes for s in specs), elements * FP32_BYTES)


def _peak_live(graph: Graph) -> StorageRow:
    whole_step = set(graph.weights) | set(graph.states) | {graph.input_name, graph.label_name}
    last = graph.last_uses()
    born: dict[str, int] = {}
    for i, node in enumerate(graph.nodes):
        for name in node.outputs:
            born.setdefault(name, i)
    peak_int = peak_fp = peak_elements = 0
    for i in range(len(graph.nodes)):
        live = [graph.tensor(n) for n in graph.tensors
                if n in whole_step or (born.get(n, 0) <= i <= last.get(n, born.get(n, 0)))]
        int_bytes = sum(s.nbytes for s in live)
        if int_bytes > peak_int:
            peak_int, peak_elements = int_bytes, sum(s.size for s in live)
        peak_fp = max(peak_fp, sum(s.size for s in live) * FP32_BYTES)
    return StorageRow("peak live", 0, peak_elements, peak_int, peak_fp)
