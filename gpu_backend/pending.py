"""A GEMM's int32 output left uncomputed until its consumer says what it needs.

In the training graph every conv's int32 accumulator (forward and input gradient) is read by one
node only: the requantize right after it. Written to memory and read back, that tensor is 4 bytes
an element each way (34 MB for vgg-small-7's first conv at batch 64), more than the conv itself
costs at few taps. So the C kernel table's conv kernels return a PendingAccumulator, and its
requantize kernel asks the C library for the fused op (niti_conv2d_forward_requantize and
niti_conv2d_input_grad_requantize: the int32 made a slice of images at a time in L2 and requantized
from there), bit for bit the same int8 tensor and exponent. Any other reader (a test comparing the
accumulator, `keep=` in train_step) gets the int32 array through `np.asarray`, computed then.

The node clock therefore charges the conv's time to its requantize node; the host model's
calibration times the pair the same way (nitisim/calibrate/kernels.py: a requantize is probed
right after a call of its producer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

Materialize = Callable[[], np.ndarray]
# (accumulator exponent, rounding mode, seed, step, tensor id) -> (int8 mantissa, exponent)
FusedRequantize = Callable[[int, str, int, int, int], "tuple[np.ndarray, int]"]


@dataclass(frozen=True)
class PendingAccumulator:
    """An int32 tensor of `shape` not computed yet: `materialize()` computes it, `requantize(...)`
    computes its requantization without it."""

    shape: tuple[int, ...]
    materialize: Materialize
    requantize: FusedRequantize

    dtype = np.dtype(np.int32)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.materialize()
        return a if dtype is None else a.astype(dtype)
