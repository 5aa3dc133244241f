"""The float32 baseline: the same ModelSpec as a torch module, trained with SGD + momentum.

The network mirrors the integer graph layer for layer: Conv2d with the same kernel, stride and
padding, Linear, ReLU, MaxPool2d, Dropout, and no biases (the integer layers have none). Images
stay NHWC until the first conv (permuted to torch's NCHW there) and a Flatten permutes back to
NHWC first, so a flattened feature has the same index as in the integer graph.

Inputs are the integer path's values as floats (`m * 2**-8`), or the float-normalised pixels when
the config says `input_path: float`. Dropout draws from a torch seed set from (seed, step) before
every step, so a resumed run needs no saved random state. This is the only module that imports
torch; the integer path never loads it.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..datasets.transforms import float_normalized, to_int8
from ..errors import UserInputError
from ..graph import build_graph
from ..models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU
from ..numerics import hash_key
from ..shapes import infer_shapes
from .checkpoint import atomic_write
from .config import TrainConfig
from .data import eval_batches, float_stats

_DROPOUT_STREAM = 0xF32D  # tensor-id coordinate of the per-step torch seed


class NchwToNhwcFlatten(nn.Module):
    """Flatten in NHWC (channel-fastest) order, as the integer graph does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        return x.flatten(1)


class SpecNet(nn.Module):
    """A torch module of a ModelSpec, taking NHWC input like the integer graph."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        shapes = infer_shapes(spec, 1)  # shapes[i] is layer i's input: (1, H, W, C) or (1, F)
        layers: list[nn.Module] = []
        for layer, in_shape in zip(spec.layers, shapes):
            if isinstance(layer, Conv):
                layers.append(nn.Conv2d(in_shape[3], layer.out_channels, layer.kernel, layer.stride, layer.padding,
                                        bias=False))
            elif isinstance(layer, Linear):
                layers.append(nn.Linear(in_shape[1], layer.out_features, bias=False))
            elif isinstance(layer, ReLU):
                layers.append(nn.ReLU())
            elif isinstance(layer, MaxPool):
                layers.append(nn.MaxPool2d(layer.kernel, layer.stride))
            elif isinstance(layer, Flatten):
                layers.append(NchwToNhwcFlatten())
            elif isinstance(layer, Dropout):
                layers.append(nn.Dropout(layer.rate))
            else:  # pragma: no cover
                raise TypeError(layer)
        self.body = nn.Sequential(*layers)
        for m in self.modules():  # Xavier-uniform, as nitisim.init does before quantizing
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (N, H, W, C) float32
        return self.body(x.permute(0, 3, 1, 2))  # (N, classes)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of `epoch` under cfg.fp32.lr_schedule (cosine anneals to 0 over cfg.epochs)."""
    opts = cfg.fp32
    sched = opts.lr_schedule
    if sched.kind == "cosine":
        return opts.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if sched.kind == "step":
        return opts.lr * sched.gamma ** sum(1 for m in sched.milestones if epoch >= m)
    return opts.lr


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(backend: str) -> tuple[torch.device, str]:
    """--backend for fp32: auto/cpu -> torch on the CPU (auto takes a GPU when torch sees one), cuda -> GPU."""
    if backend == "numpy":
        raise UserInputError("--backend", "numpy", "--arith fp32 runs on torch; use --backend cpu, cuda or auto")
    if backend == "cuda" or (backend == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserInputError("--backend", "cuda", "backend unavailable: this torch build sees no CUDA device")
        return torch.device("cuda"), "torch-cuda"
    return torch.device("cpu"), "torch-cpu"


class Fp32Trainer:
    arith = "fp32"
    timer = None  # no graph nodes to time

    def __init__(self, cfg: TrainConfig, backend: str = "auto", threads: int | None = None):
        self.cfg = cfg
        self.device, self.backend = resolve_device(backend)
        torch.set_num_threads(threads or default_threads())
        torch.manual_seed(cfg.seed)
        self.model = SpecNet(cfg.model).to(self.device)
        opts = cfg.fp32
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=opts.lr, momentum=opts.momentum,
                                         weight_decay=opts.weight_decay)
        self._stats = float_stats(cfg.dataset, cfg.model.input_shape[2])
        self._macs = build_graph(cfg.model, cfg.batch, cfg.numerics, training=True)  # MAC counts only

    @property
    def macs_per_step(self) -> int:
        return self._macs.macs()

    def macs_by_phase(self) -> dict[str, int]:
        return {phase: self._macs.macs(phase) for phase in ("forward", "backward")}

    def epoch_info(self, epoch: int) -> dict[str, Any]:
        lr = lr_at(self.cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return {"mu": None, "lr": lr}

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        if self.cfg.input_path == "float":
            x = float_normalized(images, *self._stats)
        else:
            m, e = to_int8(images)
            x = np.ldexp(m.astype(np.float32), e)  # exactly the integer path's values
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def train_batch(self, images: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> int:
        torch.manual_seed(hash_key(self.cfg.seed, step, _DROPOUT_STREAM))
        self.model.train()
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(self.device)
        logits = self.model(self._inputs(images))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return int((logits.argmax(1) == y).sum())

    @torch.no_grad()
    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> int:
        self.model.eval()
        correct = 0
        for xb, yb in eval_batches(images, labels, self.cfg.eval_batch):
            pred = self.model(self._inputs(xb)).argmax(1).cpu().numpy()
            correct += int((pred == yb).sum())
        return correct

    def save(self, path: Path, meta: Mapping[str, Any]) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "meta": dict(meta)}
        atomic_write(path, lambda f: torch.save(state, f))

    def load(self, path: Path) -> dict[str, Any]:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            raise UserInputError(str(path), "checkpoint", f"cannot read ({err})") from None
        return dict(state["meta"])
