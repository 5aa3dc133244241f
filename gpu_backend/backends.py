"""The compiled kernel tables: `cpu_kernel_table` (the C library) and `cuda_kernel_table` (CUDA).

Both are built from the op rows by `nitisim.contract.kernel_table.build_kernel_table`, like the
numpy reference (`nitisim.contract.reference.REFERENCE_KERNELS`), so `nitisim.contract.executor.
train_step` runs any of them unchanged and every output exponent follows its op row. `CpuOps`
holds the C table's op methods (host numpy arrays, so its tensors are plain QTensors), those of the
node-call ops (add) made by gpu_backend/node_call.py from the op rows; the CUDA
ones are `gpu_backend.cuda_kernels.CudaOps` (device-resident tensors). Loading a table compiles or
opens its library on first use; importing this module does neither. Choosing a table by name
(numpy, cpu, cuda, auto) is the application's job (nitisim/backends.py).
"""
from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np

from nitisim.contract.kernel_table import build_kernel_table, host_exponent
from nitisim.contract.numerics import QTensor

from .node_call import CPU_ABI, call_cpu, node_method
from .pending import PendingAccumulator


class CpuOps:
    """One method per op over the C library `lib` (gpu_backend.lib.CLib): output arrays, their
    exponents from the op rows. With `fuse_requantize` the convs (forward and input grad) return a
    PendingAccumulator and the requantize that reads it runs the fused C op (gpu_backend/pending.py);
    off, every int32 tensor is written out, as the other backends do."""

    with_exponent = staticmethod(host_exponent)

    def __init__(self, lib, fuse_requantize: bool = True):
        self.lib, self.fuse_requantize = lib, fuse_requantize

    def __getattr__(self, name: str):
        """An op whose row has a NodeCall (add): the generic caller over the library's niti_op_<name>."""
        if name.startswith("__") or "lib" not in self.__dict__:
            raise AttributeError(name)
        return node_method(self, name, self.lib.binding, CPU_ABI, self.lib, call_cpu)

    # ---- forward ----------------------------------------------------------------------------------
    def conv2d(self, node, ctx, x, w):
        lib, stride, padding = self.lib, node.attr("stride"), node.attr("padding")
        xm, wm = x.m, w.m
        if not self.fuse_requantize:
            return (lib.conv2d_forward(xm, wm, stride, padding),)
        return (PendingAccumulator(
            lib.conv2d_forward_shape(xm, wm, stride, padding),  # bad operands fail here, at the conv
            lambda: lib.conv2d_forward(xm, wm, stride, padding),
            lambda exp, mode, seed, step, tid: lib.conv2d_forward_requantize(
                xm, wm, stride, padding, exp, mode, seed=seed, step=step, tensor_id=tid)),)

    def linear(self, node, ctx, x, w):
        return (self.lib.linear_forward(x.m, w.m),)

    def requantize(self, node, ctx, acc):
        if isinstance(acc.m, PendingAccumulator):
            m, e = acc.m.requantize(acc.e, node.attr("mode"), ctx.seed, ctx.step, node.tensor_id)
        else:
            m, e = self.lib.requantize(acc.m, acc.e, node.attr("mode"), seed=ctx.seed, step=ctx.step,
                                       tensor_id=node.tensor_id)
        return (QTensor(m, e),)

    def relu(self, node, ctx, x):
        return (self.lib.relu_forward(x.m),)

    def maxpool(self, node, ctx, x):
        return (self.lib.maxpool_forward(x.m, node.attr("kernel"), node.attr("stride"), node.attr("padding", 0)),)

    def flatten(self, node, ctx, x):
        return (x.m.reshape(x.m.shape[0], -1),)

    def dropout(self, node, ctx, t):
        keep = self.lib.dropout_mask(t.m[0].size, node.attr("shift"), seed=ctx.seed, step=ctx.step,
                                     tensor_id=node.attr("mask_id", node.tensor_id))
        return (self.lib.dropout_apply(t.m, keep),)

    # ---- loss ---------------------------------------------------------------------------------------
    def loss_grad(self, node, ctx, logits, labels):
        return (self.lib.loss_grad(logits.m, logits.e, labels, variant=node.attr("variant"), seed=ctx.seed,
                                   step=ctx.step, tensor_id=node.tensor_id),)

    # ---- backward -----------------------------------------------------------------------------------
    def relu_grad(self, node, ctx, x, dy):
        return (self.lib.relu_backward(x.m, dy.m),)

    def maxpool_grad(self, node, ctx, x, dy):
        return (self.lib.maxpool_backward(x.m, dy.m, node.attr("kernel"), node.attr("stride"),
                                          node.attr("padding", 0)),)

    def flatten_grad(self, node, ctx, dy):
        return (dy.m.reshape(node.attr("input_shape")),)

    dropout_grad = dropout  # the same mask (same mask_id), applied to the error

    def conv2d_input_grad(self, node, ctx, dy, w):
        lib = self.lib
        in_hw, stride, padding = node.attr("input_shape")[1:3], node.attr("stride"), node.attr("padding")
        dym, wm = dy.m, w.m
        if not self.fuse_requantize:
            return (lib.conv2d_input_grad(dym, wm, in_hw, stride, padding),)
        return (PendingAccumulator(
            lib.conv2d_input_grad_shape(dym, wm, in_hw, stride, padding),
            lambda: lib.conv2d_input_grad(dym, wm, in_hw, stride, padding),
            lambda exp, mode, seed, step, tid: lib.conv2d_input_grad_requantize(
                dym, wm, in_hw, stride, padding, exp, mode, seed=seed, step=step, tensor_id=tid)),)

    def conv2d_weight_grad(self, node, ctx, x, dy):
        return (self.lib.conv2d_weight_grad(x.m, dy.m, node.attr("kernel"), node.attr("stride"), node.attr("padding"),
                                            out_dtype=np.dtype(node.attr("dtype"))),)

    def linear_input_grad(self, node, ctx, dy, w):
        return (self.lib.linear_input_grad(dy.m, w.m),)

    def linear_weight_grad(self, node, ctx, x, dy):
        return (self.lib.linear_weight_grad(x.m, dy.m, out_dtype=np.dtype(node.attr("dtype"))),)

    # ---- update -------------------------------------------------------------------------------------
    def update(self, node, ctx, w, g, state=None):
        rule = node.attr("rule")
        if rule == "plain":
            return (self.lib.update_plain(w.m, g.m, ctx.mu),)
        if rule == "momentum":
            return self.lib.update_momentum(w.m, g.m, state.m, ctx.mu)
        if rule == "shadow16":
            return self.lib.update_shadow16(state.m, g.m, ctx.mu)
        raise ValueError(f"unknown update rule {rule!r}")


def cpu_kernel_table(num_threads: int = 0, engine: str | None = None, fuse_requantize: bool = True
                     ) -> Mapping[str, Callable]:
    """Kernel table over the C library (built with gcc on first use, cached by source hash), its
    GEMMs on `engine` (None: $NITISIM_CPU_ENGINE, else the best this machine allows; see
    gpu_backend.lib.engine_library). When the automatic choice had to pass over AMX (the OS refused
    the tile state), says why on stderr once. Keeps freed output buffers for reuse (host_memory).
    `fuse_requantize`: see CpuOps (off: the A/B of benchmarks/kernels.py, and tests)."""
    from .host_memory import keep_freed_buffers
    from .lib import engine_library

    lib = engine_library(engine)
    keep_freed_buffers()
    if lib.engine_note:
        warnings.warn(lib.engine_note, RuntimeWarning, stacklevel=2)
    lib.set_num_threads(num_threads)
    return build_kernel_table(CpuOps(lib, fuse_requantize))


def cuda_kernel_table(device: int = 0, lib=None) -> Mapping[str, Callable]:
    """Kernel table over the CUDA library (`lib`: a loaded CudaLib, e.g. the host emulator); raises
    with the reason when no usable GPU is present."""
    from .cuda_kernels import cuda_kernel_table as table

    return table(device, lib)
