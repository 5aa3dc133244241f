"""The integer (NITI) trainer: the training graph run on a kernel table, int8 end to end.

Inputs go through the integer-only path (uint8 -> int8, exponent -8). Every step runs
`train_step` with `StepContext(seed, step, mu(epoch))`, so the counter hash, and with it every
stochastic rounding and dropout mask, is a function of (seed, step) alone: there is no random
state to checkpoint. With a timer, every step is timed per node by the backend's node clock
(`node_clock`: stream events on CUDA, host laps elsewhere). Evaluation runs inference graphs (no
dropout, no backward) of `eval_batch` rows, plus one graph for the remainder so every test image
counts exactly once. With `average_epochs` on, the weights at the end of each of the last epochs
are summed (averaging.IntegerWeightAverage) and `evaluate(..., averaged=True)` runs their rounded
mean; the sums travel in the checkpoint as `average/<weight>` entries.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..datasets.transforms import to_int8
from ..contract.errors import UserInputError
from ..contract.executor import NodeClock, StepContext, forward_logits, predict, train_step
from ..contract.graph import Graph, build_graph
from ..contract.init import init_params
from ..memory_estimate import check_training_fits
from ..contract.numerics import QTensor
from .averaging import IntegerWeightAverage
from .checkpoint import load_int8, save_int8
from ..backends import node_clock
from .config import TrainConfig
from .data import eval_batches
from .headroom import with_headroom
from .timing import NodeTimer

AVERAGE_PREFIX = "average/"  # checkpoint entries holding the weight-average sums


class IntegerTrainer:
    arith = "int8"

    def __init__(self, cfg: TrainConfig, kernels: Mapping, backend: str, timer: NodeTimer | None = None,
                 clock: NodeClock | None = None):
        self.cfg = cfg
        self.kernels = kernels
        self.backend = backend
        self.timer = timer
        self._clock = clock  # None: the backend's own, made when a timer first needs it
        check_training_fits(cfg.model, cfg.batch, "int8", cfg.source, update_rule=cfg.numerics.update_rule,
                            on_device=backend == "cuda")
        self.graph = build_graph(cfg.model, cfg.batch, cfg.numerics, training=True)
        self.params: dict[str, QTensor] = with_headroom(self.graph, init_params(self.graph, cfg.seed),
                                                        cfg.weight_headroom_bits)
        self._eval_graphs: dict[int, Graph] = {}  # rows -> inference graph, built on first use
        self.average = (IntegerWeightAverage(self.graph.weights, cfg.numerics.update_rule == "shadow16")
                        if cfg.average_epochs else None)

    @property
    def macs_per_step(self) -> int:
        return self.graph.macs()

    def macs_by_phase(self) -> dict[str, int]:
        return {phase: self.graph.macs(phase) for phase in ("forward", "backward")}

    def epoch_info(self, epoch: int) -> dict[str, Any]:
        return {"mu": self.cfg.mu_at(epoch)}

    def train_batch(self, images: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> int:
        """One step on uint8 images (B, H, W, C); returns how many the forward pass got right."""
        x = QTensor(*to_int8(images))
        ctx = StepContext(seed=self.cfg.seed, step=step, mu=self.cfg.mu_at(epoch))
        logits_name = self.graph.logits_name
        clock = None
        if self.timer is not None:
            clock = self._clock = self._clock or node_clock(self.backend)
        result = train_step(self.graph, self.kernels, self.params, x, labels.astype(np.int32), ctx,
                            keep=(logits_name,), clock=clock)
        self.params = result.params
        correct = int((predict(result.tensors[logits_name]) == labels).sum())
        if clock is not None:
            self.timer.observe_step(self.graph.nodes, clock.read())
        return correct

    def add_to_average(self) -> None:
        """Add the current weights to the run's weight average (end of an epoch in the window)."""
        self.average.add(self.params)

    def evaluate(self, images: np.ndarray, labels: np.ndarray, averaged: bool = False) -> int:
        """Correct predictions over all test images, in eval_batch slices plus the remainder; with
        `averaged`, of the weight average instead of the current weights."""
        params = self.average.averaged(self.params) if averaged else self.params
        correct = 0
        for i, (xb, yb) in enumerate(eval_batches(images, labels, self.cfg.eval_batch)):
            rows = yb.shape[0]
            graph = self._eval_graphs.get(rows)
            if graph is None:
                graph = self._eval_graphs[rows] = build_graph(self.cfg.model, rows, self.cfg.numerics, training=False)
            # a fixed hash coordinate per slice, so stochastic activation rounding evaluates reproducibly
            ctx = StepContext(seed=self.cfg.seed, step=i, mu=0)
            logits = forward_logits(graph, self.kernels, params, QTensor(*to_int8(xb)), ctx)
            correct += int((predict(logits) == yb).sum())
        return correct

    def save(self, path: Path, meta: Mapping[str, Any]) -> None:
        arrays = dict(self.params)
        if self.average is not None:
            meta = {**meta, "average_count": self.average.count}
            arrays.update({f"{AVERAGE_PREFIX}{w}": QTensor(s, 0) for w, s in self.average.state().items()})
        save_int8(path, arrays, meta)

    def load(self, path: Path) -> dict[str, Any]:
        arrays, meta = load_int8(path)
        params = {n: t for n, t in arrays.items() if not n.startswith(AVERAGE_PREFIX)}
        expected = set(self.graph.weights) | set(self.graph.states)
        if set(params) != expected:
            raise UserInputError(str(path), "checkpoint",
                                 f"holds {sorted(params)}, this config's graph needs {sorted(expected)}")
        for name, t in params.items():  # the initial parameters have the graph's shapes and dtypes
            want = self.params[name].m
            if t.m.shape != want.shape or t.m.dtype != want.dtype:
                raise UserInputError(str(path), f"checkpoint: {name}", f"is {t.m.dtype}{list(t.m.shape)}, this "
                                     f"config's graph needs {want.dtype}{list(want.shape)}")
        if self.average is not None:
            sums = {n[len(AVERAGE_PREFIX):]: t.m for n, t in arrays.items() if n.startswith(AVERAGE_PREFIX)}
            try:
                count = int(meta.get("average_count", 0))
                bad = [w for w in sums if w in params and sums[w].shape != params[w].m.shape]
                if count < 0 or bad:
                    raise ValueError(f"count {count}, sums of the wrong shape: {bad}")
                self.average.restore(sums, count)
            except (KeyError, ValueError, TypeError) as err:
                raise UserInputError(str(path), "checkpoint", f"weight average incomplete ({err})") from None
        self.params = params
        return meta
