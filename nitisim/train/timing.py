"""Per-node time of the training steps, summed over the run, for timing.json.

After each step the trainer reads its backend's node clock (nitisim.contract.executor.NodeClock: host
perf_counter laps for numpy and the C library, stream events for CUDA) and hands each node's
seconds to `NodeTimer.observe`. A later report joins these seconds with the accelerator model's
simulated time per (layer, phase, op).

Each node also keeps its calls' times, for their median and lower quartile: on a shared machine
some steps lose the core to another process, which lifts a node's mean above what its kernel takes
(measured on 2 shared cores: conv1's forward mean 1.19 ms against a median of 0.79 ms), and in
spells of contention the VM itself cannot see, a kernel runs at half speed (nitisim.report.stats.
lower_quartile); the lower quartile is the time a model of the kernel, which knows nothing of
other tenants, can predict. Both cover the calls of this process only (a resumed run's earlier
calls left only their sum).
"""
from __future__ import annotations

import statistics
from typing import Any, Mapping, Sequence

from ..contract.graph import Node
from ..report.stats import lower_quartile


class NodeTimer:
    """Seconds and calls per graph node name, with the node's op, layer and phase."""

    def __init__(self, previous: Mapping[str, Mapping[str, Any]] | None = None):
        # name -> [op, layer, phase, seconds, calls]; `previous` continues a resumed run's totals
        self._nodes: dict[str, list] = {
            name: [v["op"], v["layer"], v["phase"], float(v["seconds"]), int(v["calls"])]
            for name, v in (previous or {}).items()
        }
        self._samples: dict[str, list[float]] = {}  # name -> this process's seconds per call

    def observe_step(self, nodes: Sequence[Node], seconds: Sequence[float]) -> None:
        """One step's seconds per node, in the order the clock lapped them."""
        if len(nodes) != len(seconds):
            raise ValueError(f"node clock gave {len(seconds)} times for {len(nodes)} nodes")
        for node, sec in zip(nodes, seconds):
            self.observe(node, sec)

    def observe(self, node: Node, seconds: float) -> None:
        entry = self._nodes.get(node.name)
        if entry is None:
            entry = self._nodes[node.name] = [node.op, node.layer, node.phase, 0.0, 0]
        entry[3] += seconds
        entry[4] += 1
        self._samples.setdefault(node.name, []).append(seconds)

    def nodes(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, (op, layer, phase, sec, calls) in self._nodes.items():
            out[name] = {"op": op, "layer": layer, "phase": phase, "seconds": round(sec, 6), "calls": calls}
            if self._samples.get(name):
                out[name]["median_seconds"] = round(statistics.median(self._samples[name]), 9)
                out[name]["quartile_seconds"] = round(lower_quartile(self._samples[name]), 9)
        return out

    def total_seconds(self) -> float:
        return sum(entry[3] for entry in self._nodes.values())
