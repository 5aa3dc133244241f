"""The float32 baseline: the same ModelSpec as a torch module, trained with SGD + momentum.

The network mirrors the integer graph layer for layer: Conv2d with the same kernel, stride and
padding, Linear, ReLU, MaxPool2d, Dropout, the shortcut add and the global average pool, wired as
the model's DAG, and no biases (the integer layers have none); `fp32: {batch_norm: true}` adds a
BatchNorm2d after every conv (the float ceiling, which the integer net has no counterpart for). Images
stay NHWC until the first conv (permuted to torch's NCHW there) and a Flatten permutes back to
NHWC first, so a flattened feature has the same index as in the integer graph.

Inputs are the integer path's values as floats (`m * 2**-8`), or the float-normalised pixels when
the config says `input_path: float`; both are computed with torch on the device from the uint8
batch, with the same values as datasets.transforms.to_int8 / float_normalized give. Dropout draws
from a torch seed set from (seed, step) before every step, so a resumed run needs no saved random
state. This is the only module that imports torch; the integer path never loads it.
With `average_epochs`, Fp32WeightAverage keeps the float64 sums of the weights at the ends of the
window's epochs, as the integer trainer does in integers, so the twin averages the same way.
"""
from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..datasets.transforms import INPUT_EXP
from ..contract.errors import UserInputError
from ..contract.graph import build_graph
from ..memory_estimate import check_training_fits
from ..contract.models import (Add, Conv, Dropout, Flatten, GlobalAvgPool, Linear, MaxPool, ModelSpec, ReLU,
                               layer_inputs)
from ..contract.numerics import hash_key
from ..contract.models import infer_shapes
from .checkpoint import atomic_write, error_text, require_zip
from .config import TrainConfig
from .data import eval_batches, float_stats

_DROPOUT_STREAM = 0xF32D  # tensor-id coordinate of the per-step torch seed
# what torch.load and load_state_dict raise on a file that is not this trainer's checkpoint
# (truncated zip, random bytes, a pickle the weights-only loader refuses, wrong tensors)
_LOAD_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError, EOFError,
                pickle.UnpicklingError)


def _max_pool(layer: MaxPool) -> nn.Module:
    """The integer pool's float twin: windows over -infinity padding. torch pads implicitly only up to
    half the kernel; a wider padding (still below the kernel) is an explicit -infinity border."""
    if 2 * layer.padding <= layer.kernel:
        return nn.MaxPool2d(layer.kernel, layer.stride, layer.padding)
    return nn.Sequential(nn.ConstantPad2d(layer.padding, float("-inf")), nn.MaxPool2d(layer.kernel, layer.stride))


class NchwToNhwcFlatten(nn.Module):
    """Flatten in NHWC (channel-fastest) order, as the integer graph does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        return x.flatten(1)


class Sum(nn.Module):
    """The shortcut add: a plain float sum of its two inputs."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class GlobalMean(nn.Module):
    """Global average pool: (N, C, H, W) -> (N, C), the mean over each channel's map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SpecNet(nn.Module):
    """A torch module of a ModelSpec, taking NHWC input like the integer graph.

    `body[i]` is layer i, so a chain model's parameters and state_dict keys are those of the
    nn.Sequential it once was. The forward pass runs the layers in order, each reading the outputs
    its wiring names (contract.models.layer_inputs, as the graph builder does), so it is the same
    computation for a chain and follows the DAG for a ResNet.

    `batch_norm` (the float ceiling the integer net has no counterpart for) puts a BatchNorm2d after
    every conv, before whatever reads it (its relu, or the add), as standard ResNets do; they sit in
    `norms`, keyed by the conv's layer index, so `body` keeps its keys.

    A conv with `init: zero` starts at zero, as the integer init makes it (SkipInit: each residual
    block starts as its shortcut); its Xavier draw is still made, so the other layers' weights are
    those of the same seed without it. With batch norm the conv keeps its draw and its norm's scale
    starts at zero instead (torchvision's zero_init_residual): a batch norm of an all-zero map
    divides by sqrt(eps), which would give the zero conv a ~300x weight gradient at the first step.
    """

    def __init__(self, spec: ModelSpec, batch_norm: bool = False):
        super().__init__()
        shapes = infer_shapes(spec, 1)  # shapes[0]: the input; shapes[i + 1]: layer i's output
        self._reads = layer_inputs(spec)  # layer i reads the outputs of these layers (-1: the input)
        # after layer i, the outputs no later layer reads can be dropped (the last layer's: the logits)
        last_read: dict[int, int] = {}
        for i, reads in enumerate(self._reads):
            for j in reads:
                last_read[j] = i
        self._drop_after = [tuple(j for j, last in last_read.items() if last == i) for i in range(len(spec.layers))]
        layers: list[nn.Module] = []
        norms: dict[str, nn.BatchNorm2d] = {}
        zero: list[int] = []
        for i, layer in enumerate(spec.layers):
            in_shape = shapes[self._reads[i][0] + 1]  # (1, H, W, C) or (1, F)
            if isinstance(layer, Conv):
                layers.append(nn.Conv2d(in_shape[3], layer.out_channels, layer.kernel, layer.stride, layer.padding,
                                        bias=False))
                if batch_norm:
                    norms[str(i)] = nn.BatchNorm2d(layer.out_channels)
                if layer.init == "zero":
                    zero.append(i)
            elif isinstance(layer, Linear):
                layers.append(nn.Linear(in_shape[1], layer.out_features, bias=False))
            elif isinstance(layer, ReLU):
                layers.append(nn.ReLU())
            elif isinstance(layer, MaxPool):
                layers.append(_max_pool(layer))
            elif isinstance(layer, Flatten):
                layers.append(NchwToNhwcFlatten())
            elif isinstance(layer, Dropout):
                layers.append(nn.Dropout(layer.rate))
            elif isinstance(layer, Add):
                layers.append(Sum())
            elif isinstance(layer, GlobalAvgPool):
                layers.append(GlobalMean())
            else:  # pragma: no cover
                raise TypeError(layer)
        self.body = nn.Sequential(*layers)
        if norms:
            self.norms = nn.ModuleDict(norms)
        for m in self.body:  # Xavier-uniform, as nitisim.contract.init does before quantizing
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
        with torch.no_grad():
            for i in zero:
                if batch_norm:
                    nn.init.zeros_(self.norms[str(i)].weight)
                else:
                    nn.init.zeros_(self.body[i].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (N, H, W, C) float32
        outs: dict[int, torch.Tensor] = {-1: x.permute(0, 3, 1, 2)}  # NCHW from here to the first flatten
        norms = getattr(self, "norms", None)
        y = outs[-1]
        for i, module in enumerate(self.body):
            y = module(*(outs[j] for j in self._reads[i]))
            if norms is not None and str(i) in norms:
                y = norms[str(i)](y)
            outs[i] = y
            for j in self._drop_after[i]:
                del outs[j]
        return y  # (N, classes)


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


def dropout_generator(device: torch.device) -> torch.Generator:
    """The generator nn.Dropout draws from on `device`.

    Seeding it alone gives the masks torch.manual_seed would, without what manual_seed also does on
    every call: queue a seed, with a captured stack trace, for each accelerator backend (CUDA, XPU,
    ...) not initialised, about 0.15 ms a step on the CPU against 1 us for the generator itself.
    """
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def resolve_device(device: str) -> tuple[torch.device, str]:
    """--device: cpu -> torch on the CPU, cuda -> the GPU, auto -> the GPU when torch sees one, else the CPU."""
    if device not in ("cpu", "cuda", "auto"):
        raise UserInputError("--device", None, f"must be cpu, cuda or auto, got {device!r}")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserInputError("--device", "cuda", "unavailable: this torch build sees no CUDA device")
        return torch.device("cuda"), "torch-cuda"
    return torch.device("cpu"), "torch-cpu"


class Fp32WeightAverage:
    """float64 sums of the module's weights at `count` epoch ends; `model()` is a module holding their mean.

    Only parameters are averaged: buffers (batch norm's running statistics) are the current model's.
    """

    def __init__(self, model: nn.Module):
        self._model = model
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self) -> None:
        for name, p in self._model.named_parameters():
            w = p.detach().to(torch.float64)
            self.sums[name] = self.sums[name] + w if name in self.sums else w.clone()
        self.count += 1

    def model(self) -> nn.Module:
        if self.count == 0:
            raise ValueError("no snapshot to average")
        mean = copy.deepcopy(self._model)
        with torch.no_grad():
            for name, p in mean.named_parameters():
                p.copy_(self.sums[name] / self.count)
        return mean

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "sums": dict(self.sums)}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        state = state or {"count": 0, "sums": {}}
        names = {name for name, _ in self._model.named_parameters()}
        if state["count"] and set(state["sums"]) != names:
            raise KeyError(f"average sums {sorted(state['sums'])}, the model has {sorted(names)}")
        self.count, self.sums = int(state["count"]), dict(state["sums"])


class Fp32Trainer:
    arith = "fp32"
    timer = None  # no graph nodes to time

    def __init__(self, cfg: TrainConfig, device: str = "auto", threads: int | None = None):
        self.cfg = cfg
        self.device, self.backend = resolve_device(device)  # backend: the name runs record, torch-cpu | torch-cuda
        torch.set_num_threads(threads or default_threads())
        torch.manual_seed(cfg.seed)
        check_training_fits(cfg.model, cfg.batch, "fp32", cfg.source, momentum=cfg.fp32.momentum != 0,
                            on_device=self.device.type == "cuda")
        self.model = SpecNet(cfg.model, batch_norm=cfg.fp32.batch_norm).to(self.device)
        opts = cfg.fp32
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=opts.lr, momentum=opts.momentum,
                                         weight_decay=opts.weight_decay)
        self._generator = dropout_generator(self.device)
        self.average = Fp32WeightAverage(self.model) if cfg.average_epochs else None
        mean, std = float_stats(cfg.dataset, cfg.model.input_shape[2])
        # 0-dim and (C,) device tensors, not Python scalars: CUDA turns division by a host scalar
        # into multiplication by its reciprocal, which can differ from float_normalized in the last bit
        self._255 = torch.tensor(255.0, device=self.device)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device)
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
        """uint8 (B, H, W, C) pixels -> float32 inputs on the device, in one pass of torch ops there.

        uint8 crosses to the device (a quarter of float32's bytes). Every operation is exact or a
        single correctly rounded float32 operation in float_normalized's order, so the values are
        bit-identical to the numpy transforms (tests/test_fp32_trainer.py checks all 256 pixels).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"expected uint8 pixels, got {images.dtype}")
        if not images.flags.writeable:  # torch.from_numpy warns on read-only arrays (views of the dataset)
            images = images.copy()
        x = torch.from_numpy(images).to(self.device).to(torch.float32)
        if self.cfg.input_path == "float":
            return x.div_(self._255).sub_(self._mean).div_(self._std)
        return x.sub_(128).clamp_(-127, 127).mul_(2.0 ** INPUT_EXP)  # to_int8's m * 2**-8, exactly

    def _labels(self, labels: np.ndarray) -> torch.Tensor:
        # a copy: test labels are read-only arrays, which torch.from_numpy warns about
        return torch.from_numpy(np.array(labels, dtype=np.int64)).to(self.device)

    def train_batch(self, images: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> int:
        self._generator.manual_seed(hash_key(self.cfg.seed, step, _DROPOUT_STREAM))
        if not self.model.training:  # train() walks every module; only evaluate() switches it off
            self.model.train()
        y = self._labels(labels)
        logits = self.model(self._inputs(images))
        loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return int((logits.argmax(1) == y).sum())

    def add_to_average(self) -> None:
        self.average.add()

    @torch.inference_mode()
    def evaluate(self, images: np.ndarray, labels: np.ndarray, averaged: bool = False) -> int:
        model = self.average.model() if averaged else self.model
        model.eval()
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for xb, yb in eval_batches(images, labels, self.cfg.eval_batch):
            correct += (model(self._inputs(xb)).argmax(1) == self._labels(yb)).sum()
        return int(correct)  # one device sync for the whole test set

    def save(self, path: Path, meta: Mapping[str, Any]) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "meta": dict(meta)}
        if self.average is not None:
            state["average"] = self.average.state()
        atomic_write(path, lambda f: torch.save(state, f))

    def load(self, path: Path) -> dict[str, Any]:
        try:
            require_zip(path)  # what torch.save writes; torch.load would try anything else as a legacy pickle
            state = torch.load(path, map_location=self.device, weights_only=True)
            if not isinstance(state, dict) or not isinstance(state.get("meta"), dict):
                raise ValueError("not a checkpoint of this trainer (no meta mapping)")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.average is not None:
                self.average.restore(state.get("average"))
        except _LOAD_ERRORS as err:
            raise UserInputError(str(path), "checkpoint", f"cannot read ({error_text(err)})") from None
        return dict(state["meta"])
