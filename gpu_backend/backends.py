"""The backend registry: a plain dict from backend name to a function returning its kernel table.

A kernel table maps every op of `nitisim.contract.ops.OPS` to `fn(node, ctx, *inputs) -> tuple of outputs`,
exactly like `nitisim.contract.reference.REFERENCE_KERNELS`, so `nitisim.contract.executor.train_step` runs any of
them unchanged. The `cpu` table wraps the C library (host numpy arrays, so its tensors are plain
QTensors); the `cuda` table lives in `gpu_backend.cuda_kernels`, re-exported by `gpu_backend.cuda`
(device-resident tensors). Loading a table compiles or opens its library on first use; importing
this module does neither.
"""
from __future__ import annotations

import warnings
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from nitisim.contract.numerics import LOSS_ERROR_EXP, SHADOW_FRAC_BITS, QTensor


def cpu_kernel_table(num_threads: int = 0, engine: str | None = None, fuse_requantize: bool = True
                     ) -> Mapping[str, Callable]:
    """Kernel table over the C library (built with gcc on first use, cached by source hash), its
    GEMMs on `engine` (None: $NITISIM_CPU_ENGINE, else the best this machine allows; see
    gpu_backend.lib.engine_library). When the automatic choice had to pass over AMX (the OS refused
    the tile state), says why on stderr once. Keeps freed output buffers for reuse (host_memory).
    With `fuse_requantize` the convs (forward and input grad) return a PendingAccumulator and the
    requantize that reads it runs the fused C op (gpu_backend/pending.py); off, every int32 tensor
    is written out, as the other backends do (the A/B of benchmarks/kernels.py, and tests)."""
    from .host_memory import keep_freed_buffers
    from .lib import engine_library
    from .pending import PendingAccumulator

    lib = engine_library(engine)
    keep_freed_buffers()
    if lib.engine_note:
        warnings.warn(lib.engine_note, RuntimeWarning, stacklevel=2)
    lib.set_num_threads(num_threads)

    def conv2d(node, ctx, x, w):
        stride, padding = node.attr("stride"), node.attr("padding")
        xm, wm = x.m, w.m
        if not fuse_requantize:
            return (QTensor(lib.conv2d_forward(xm, wm, stride, padding), x.e + w.e),)
        pending = PendingAccumulator(
            lib.conv2d_forward_shape(xm, wm, stride, padding),  # bad operands fail here, at the conv
            lambda: lib.conv2d_forward(xm, wm, stride, padding),
            lambda exp, mode, seed, step, tid: lib.conv2d_forward_requantize(
                xm, wm, stride, padding, exp, mode, seed=seed, step=step, tensor_id=tid))
        return (QTensor(pending, x.e + w.e),)

    def linear(node, ctx, x, w):
        return (QTensor(lib.linear_forward(x.m, w.m), x.e + w.e),)

    def requantize(node, ctx, acc):
        if isinstance(acc.m, PendingAccumulator):
            m, e = acc.m.requantize(acc.e, node.attr("mode"), ctx.seed, ctx.step, node.tensor_id)
        else:
            m, e = lib.requantize(acc.m, acc.e, node.attr("mode"), seed=ctx.seed, step=ctx.step,
                                  tensor_id=node.tensor_id)
        return (QTensor(m, e),)

    def add(node, ctx, a, b):
        m, e = lib.add(a.m, a.e, b.m, b.e, node.attr("mode"), seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id)
        return (QTensor(m, e),)

    def relu(node, ctx, x):
        return (QTensor(lib.relu_forward(x.m), x.e),)

    def maxpool(node, ctx, x):
        return (QTensor(lib.maxpool_forward(x.m, node.attr("kernel"), node.attr("stride")), x.e),)

    def flatten(node, ctx, x):
        return (QTensor(x.m.reshape(x.m.shape[0], -1), x.e),)

    def _dropout(node, ctx, t):
        shift = node.attr("shift")
        keep = lib.dropout_mask(t.m[0].size, shift, seed=ctx.seed, step=ctx.step,
                                tensor_id=node.attr("mask_id", node.tensor_id))
        return (QTensor(lib.dropout_apply(t.m, keep), t.e + shift),)

    def loss_grad(node, ctx, logits, labels):
        err = lib.loss_grad(logits.m, logits.e, labels, variant=node.attr("variant"), seed=ctx.seed,
                            step=ctx.step, tensor_id=node.tensor_id)
        return (QTensor(err, LOSS_ERROR_EXP),)

    def relu_grad(node, ctx, x, dy):
        return (QTensor(lib.relu_backward(x.m, dy.m), dy.e),)

    def maxpool_grad(node, ctx, x, dy):
        return (QTensor(lib.maxpool_backward(x.m, dy.m, node.attr("kernel"), node.attr("stride")), dy.e),)

    def flatten_grad(node, ctx, dy):
        return (QTensor(dy.m.reshape(node.attr("input_shape")), dy.e),)

    def conv2d_input_grad(node, ctx, dy, w):
        in_hw, stride, padding = node.attr("input_shape")[1:3], node.attr("stride"), node.attr("padding")
        dym, wm = dy.m, w.m
        if not fuse_requantize:
            return (QTensor(lib.conv2d_input_grad(dym, wm, in_hw, stride, padding), dy.e + w.e),)
        pending = PendingAccumulator(
            lib.conv2d_input_grad_shape(dym, wm, in_hw, stride, padding),
            lambda: lib.conv2d_input_grad(dym, wm, in_hw, stride, padding),
            lambda exp, mode, seed, step, tid: lib.conv2d_input_grad_requantize(
                dym, wm, in_hw, stride, padding, exp, mode, seed=seed, step=step, tensor_id=tid))
        return (QTensor(pending, dy.e + w.e),)

    def conv2d_weight_grad(node, ctx, x, dy):
        g = lib.conv2d_weight_grad(x.m, dy.m, node.attr("kernel"), node.attr("stride"), node.attr("padding"),
                                   out_dtype=np.dtype(node.attr("dtype")))
        return (QTensor(g, x.e + dy.e),)

    def linear_input_grad(node, ctx, dy, w):
        return (QTensor(lib.linear_input_grad(dy.m, w.m), dy.e + w.e),)

    def linear_weight_grad(node, ctx, x, dy):
        return (QTensor(lib.linear_weight_grad(x.m, dy.m, out_dtype=np.dtype(node.attr("dtype"))), x.e + dy.e),)

    def update(node, ctx, w, g, state=None):
        rule = node.attr("rule")
        if rule == "plain":
            return (QTensor(lib.update_plain(w.m, g.m, ctx.mu), w.e),)
        if rule == "momentum":
            new_w, v = lib.update_momentum(w.m, g.m, state.m, ctx.mu)
            return QTensor(new_w, w.e), QTensor(v, state.e)
        new_w, shadow = lib.update_shadow16(state.m, g.m, ctx.mu)
        return QTensor(new_w, w.e), QTensor(shadow, w.e - SHADOW_FRAC_BITS)

    return MappingProxyType({
        "conv2d": conv2d, "linear": linear, "requantize": requantize, "relu": relu, "maxpool": maxpool,
        "flatten": flatten, "dropout": _dropout, "add": add, "loss_grad": loss_grad, "relu_grad": relu_grad,
        "maxpool_grad": maxpool_grad, "flatten_grad": flatten_grad, "dropout_grad": _dropout,
        "conv2d_input_grad": conv2d_input_grad, "conv2d_weight_grad": conv2d_weight_grad,
        "linear_input_grad": linear_input_grad, "linear_weight_grad": linear_weight_grad, "update": update,
    })


def cuda_kernel_table() -> Mapping[str, Callable]:
    """Kernel table over the CUDA library; raises with the reason when no usable GPU is present."""
    from .cuda import cuda_kernel_table as table

    return table()


def numpy_kernel_table() -> Mapping[str, Callable]:
    from nitisim.contract.reference import REFERENCE_KERNELS

    return REFERENCE_KERNELS


BACKENDS: Mapping[str, Callable[[], Mapping[str, Callable]]] = MappingProxyType({
    "numpy": numpy_kernel_table,
    "cpu": cpu_kernel_table,
    "cuda": cuda_kernel_table,
})


def kernel_table(name: str) -> Mapping[str, Callable]:
    """The kernel table of backend `name` (numpy, cpu, cuda); raises if it cannot be loaded."""
    if name not in BACKENDS:
        raise KeyError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]()
