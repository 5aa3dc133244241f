"""The memory a training run needs at least, from the model's shapes at its batch, and the refusal of
a run that this machine cannot hold, before anything is allocated.

A model YAML can ask for a Linear of 1e8 outputs or a conv of 1e6 channels in one line; numpy or
torch would then fail deep inside initialisation with a MemoryError (or the kernel's OOM killer
would end the process). The estimate counts only what the run must hold at once, so it is a lower
bound, and a refusal is never a false alarm:

    weights and optimiser state   int8: 1 B per weight, + 4 B (momentum velocity) or 2 B (int16 shadow)
                                  fp32: 4 B weight + 4 B gradient (+ 4 B momentum buffer)
    activations kept for backward every layer's output at the run's batch (int8: 1 B, fp32: 4 B)
    largest accumulator           int8: one GEMM's widest result written whole: a weight gradient
                                  (int32 or int64, graph.weight_grad_dtype) or a linear layer's int32
                                  output or input error (a conv's int32 maps can be fused with their
                                  requantize, so they are not counted); fp32: the largest error map, 4 B
    initialisation                int8: the largest weight drawn as float64 before quantizing (8 B)
    fan-out error parts           a DAG (ResNet): a tensor read by k layers has k error parts (int8:
                                  1 B, fp32: 4 B each), summed only once the last has been computed,
                                  so k - 1 of them are held beside a chain's errors; the largest such
                                  set (an identity shortcut holds the add's error through its branch)

Each layer's weights and GEMM sizes are taken from the tensor it reads (contract.models.layer_inputs):
a shortcut conv reads the block input, not the layer before it. The total is weights and state plus
the larger of the initialisation draw (before any activation exists) and activations plus the
largest accumulator plus the fan-out error parts (during a step). Available memory is
/proc/meminfo's MemAvailable, or os.sysconf's available pages where there is no /proc.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from .contract.errors import UserInputError
from .contract.graph import weight_grad_dtype
from .contract.models import Conv, Linear, ModelSpec, infer_shapes, layer_inputs

_STATE_BYTES = MappingProxyType({"plain": 0, "momentum": 4, "shadow16": 2})  # int8 update rule -> state B per weight
_DTYPE_BYTES = MappingProxyType({"int32": 4, "int64": 8})
FLOAT64_BYTES = 8


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int  # weights and their optimiser state (fp32: and their gradients)
    activations_bytes: int  # layer outputs kept for the backward pass
    accumulator_bytes: int  # the largest single GEMM result (int32/int64 accumulator; fp32 tensor)
    init_bytes: int  # transient of initialisation (int8: the largest weight as float64)
    fanout_bytes: int = 0  # error parts of a fan-out tensor held until its last reader's part (DAGs only)

    @property
    def total_bytes(self) -> int:
        step = self.activations_bytes + self.accumulator_bytes + self.fanout_bytes
        return self.weights_bytes + max(self.init_bytes, step)


def training_estimate(model: ModelSpec, batch: int, arith: str, update_rule: str = "plain",
                      momentum: bool = True) -> MemoryEstimate:
    """What one training step of `model` at `batch` holds at least; arith 'int8' (with `update_rule`)
    or 'fp32' (torch SGD, with a momentum buffer when `momentum`)."""
    if arith not in ("int8", "fp32"):
        raise ValueError(f"arith must be int8 or fp32, got {arith!r}")
    shapes = infer_shapes(model, batch)  # shapes[0]: the input; shapes[i + 1]: layer i's output
    reads = layer_inputs(model)  # layer i reads shapes[j + 1] for j in reads[i]
    readers = [0] * len(model.layers)
    for js in reads:
        for j in js:
            if j >= 0:  # no error is computed for the model input
                readers[j] += 1
    element = 1 if arith == "int8" else 4  # bytes of one error element
    fanout = max((element * (k - 1) * math.prod(shapes[j + 1]) for j, k in enumerate(readers) if k > 1), default=0)
    weights = largest_weight = activations = accumulator = 0
    for i, layer in enumerate(model.layers):
        x, y = shapes[reads[i][0] + 1], shapes[i + 1]  # the (first) tensor it reads; its output
        activations += math.prod(y)
        if not isinstance(layer, (Conv, Linear)):
            continue
        if isinstance(layer, Conv):
            w = layer.out_channels * layer.kernel * layer.kernel * x[3]
            reduction = batch * y[1] * y[2]
        else:
            w = layer.out_features * x[1]
            reduction = batch
        weights += w
        largest_weight = max(largest_weight, w)
        if arith == "fp32":  # the weight gradient is counted with the weights; autograd's error maps here
            accumulator = max(accumulator, 4 * math.prod(y), 4 * math.prod(x))
            continue
        # the weight gradient is always written whole (the update reads it); a conv's int32 output
        # and input-error maps may not be (the C backend fuses them with their requantize)
        accumulator = max(accumulator, _DTYPE_BYTES[weight_grad_dtype(reduction)] * w)
        if isinstance(layer, Linear):
            accumulator = max(accumulator, 4 * math.prod(y), 4 * math.prod(x))
    if arith == "int8":
        return MemoryEstimate(weights_bytes=weights * (1 + _STATE_BYTES[update_rule]), activations_bytes=activations,
                              accumulator_bytes=accumulator, init_bytes=FLOAT64_BYTES * largest_weight,
                              fanout_bytes=fanout)
    return MemoryEstimate(weights_bytes=weights * (12 if momentum else 8), activations_bytes=4 * activations,
                          accumulator_bytes=accumulator, init_bytes=0, fanout_bytes=fanout)


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, str] | None:
    """(bytes this machine can still give a process, where the number comes from); None where neither
    /proc/meminfo nor os.sysconf says."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"  # the file's unit is kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "os.sysconf available pages"
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_training_fits(model: ModelSpec, batch: int, arith: str, source: str, *, update_rule: str = "plain",
                        momentum: bool = True, on_device: bool = False,
                        available: tuple[int, str] | None = None) -> MemoryEstimate:
    """Raise UserInputError (one line: bytes needed against bytes available) when this machine cannot
    hold a training run of `model` at `batch`; else return the estimate. With `on_device` (a GPU
    run) only the host's share is checked here: the parameters, which are made on the host first
    (the activations live on the device). `available` overrides the machine's number (tests)."""
    est = training_estimate(model, batch, arith, update_rule, momentum)
    need = est.weights_bytes + est.init_bytes if on_device else est.total_bytes
    have = available if available is not None else available_bytes()
    if have is None or need <= have[0]:
        return est
    parts = (f"weights and optimiser state {est.weights_bytes:,} B, "
             + (f"initialisation {est.init_bytes:,} B" if on_device else
                f"activations kept for backward {est.activations_bytes:,} B, largest accumulator "
                f"{est.accumulator_bytes:,} B, "
                + (f"fan-out error parts {est.fanout_bytes:,} B, " if est.fanout_bytes else "")
                + f"initialisation {est.init_bytes:,} B"))
    raise UserInputError(source, "model", f"{model.name} at batch {batch} needs at least {need:,} bytes "
                         f"({_gib(need)}) of host memory for {arith} training ({parts}); this machine has "
                         f"{have[0]:,} bytes ({_gib(have[0])}) available ({have[1]})")
