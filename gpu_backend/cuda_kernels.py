"""The CUDA kernel table: the ops of `nitisim.contract.reference.REFERENCE_KERNELS` run on device tensors.

`cuda_kernel_table()` is built from the op rows like every table (nitisim.contract.kernel_table):
`CudaOps` has one method per op (those of the node-call ops, add, made by gpu_backend/node_call.py
from the op rows), returning device tensors without an exponent slot where the row
gives the rule, and its `with_exponent` applies the rule on the device (niti_cuda_exp_add, or the
input's slot shared where the exponent is unchanged). Its kernels accept device tensors, and host
QTensors / label arrays, which they upload, so a whole training step runs on the GPU with no host
synchronisation: exponents are computed and consumed on the device, and memory is allocated and
freed in stream order. `to_device()` / `to_host()` move a tensor across.

Data-dependent checks (int32 overflow of a narrowed weight gradient or a momentum velocity, bad
labels) run on the device and surface at the next synchronising call (`to_host`, `.m`, `.e`,
`synchronize()`), not at the op that failed. The exception: a GEMM op whose int32 output sums more
than the library's max_k_int32 products (NITI_MAX_K_S32; summed in int64 and narrowed with the
overflow check) synchronises before it returns, so an overflow there is raised by the op itself and
the executor can name its node. Such layers are rare (a 1x1 conv over more channels than that);
every other op stays asynchronous.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from nitisim.contract.kernel_table import build_kernel_table
from nitisim.contract.models import conv_out
from nitisim.contract.numerics import LOSS_VARIANTS, ROUNDING_MODES, QTensor

from .cuda_device import CudaLib, DeviceTensor, _DeviceBuffer
from .cuda_loading import cuda_library
from .node_call import CUDA_ABI, call_cuda, node_method


def to_device(t: QTensor | np.ndarray, lib: CudaLib | None = None) -> DeviceTensor:
    """Upload a QTensor (or a bare integer array, e.g. labels) to the GPU."""
    return (lib or cuda_library()).to_device(t)


def to_host(t: DeviceTensor) -> QTensor:
    """The QTensor of a device tensor (waits for the queued work)."""
    return t.to_host()


def _u32(v: int) -> int:
    return int(v) & 0xFFFFFFFF  # hash coordinates are taken mod 2**32, as in numerics.hash_key


def _mu(mu: int) -> int:
    return max(-(1 << 20), min(1 << 20, int(mu)))  # the library treats |mu| > 64 like 64; keep it a C int


class CudaOps:
    """One method per op, each (node, ctx, *inputs) -> tuple of DeviceTensors, as in nitisim.contract.reference;
    an output whose exponent the op row rules has no slot until `with_exponent` gives it one."""

    def __init__(self, lib: CudaLib):
        self.lib = lib

    def __getattr__(self, name: str):
        """An op whose row has a NodeCall (add): the generic caller over niti_cuda_op_<name>."""
        if name.startswith("__") or "lib" not in self.__dict__:
            raise AttributeError(name)
        return node_method(self, name, self.lib.bind, CUDA_ABI, self.lib, call_cuda)

    def with_exponent(self, values: DeviceTensor, sources, addend: int) -> DeviceTensor:
        """`values` with exponent sum(sources' exponents) + addend, computed on the device."""
        slots, const = [], int(addend)
        for t in sources:
            if isinstance(t, DeviceTensor):
                if t.exp is None:
                    raise ValueError("an exponent rule reads a device tensor without an exponent")
                slots.append(t.exp)
            else:  # a host QTensor the op uploaded: its exponent is a host int
                const += int(t.e)
        if len(slots) == 1 and const == 0:
            slot = slots[0]  # the same exponent: share the slot, no launch
        elif len(slots) <= 2:
            slot = _DeviceBuffer(self.lib, 4)
            a, b = (*slots, None, None)[:2]
            self.lib.call("niti_cuda_exp_add", a.ptr if a else None, b.ptr if b else None, const, slot.ptr)
        else:
            raise ValueError(f"niti_cuda_exp_add sums two device exponents, the rule names {len(slots)}")
        return DeviceTensor(self.lib, values.buffer, values.shape, values.dtype, slot)

    def _in(self, t: Any, dtype, name: str, exp: bool = True) -> DeviceTensor:
        t = self.lib.to_device(t)
        if t.dtype != np.dtype(dtype):
            raise TypeError(f"{name}: expected {np.dtype(dtype)}, got {t.dtype}")
        if exp and t.exp is None:
            raise ValueError(f"{name}: the tensor has no exponent")
        return t

    def _new(self, shape, dtype, exp=True) -> DeviceTensor:
        return self.lib.empty(shape, dtype, exp)

    def _checked(self, out: DeviceTensor, reduction: int) -> tuple[DeviceTensor]:
        """(out,), after waiting for it when its int32 sums were narrowed from int64: an overflow is
        then raised here, at the op that made it."""
        if out.dtype == np.int32 and reduction > self.lib.max_k_int32:
            self.lib.synchronize()
        return (out,)

    # ---- forward ----------------------------------------------------------------------------------
    def conv2d(self, node, ctx, x, w):
        x, w = self._in(x, np.int8, "conv2d x"), self._in(w, np.int8, "conv2d w")
        (n, h, wd, c), (o, kh, kw, cw) = x.shape, w.shape
        if c != cw:
            raise ValueError(f"{node.name}: x {x.shape} (NHWC) and w {w.shape} (OHWI) differ in channels")
        s, p = node.attr("stride"), node.attr("padding")
        y = self._new((n, conv_out(h, kh, s, p), conv_out(wd, kw, s, p), o), np.int32, exp=None)
        self.lib.call("niti_cuda_conv2d_forward", n, h, wd, c, o, kh, kw, s, s, p, p, x.ptr, None, w.ptr, None, y.ptr,
                      None)
        return self._checked(y, kh * kw * c)

    def linear(self, node, ctx, x, w):
        x, w = self._in(x, np.int8, "linear x"), self._in(w, np.int8, "linear w")
        (batch, in_f), (out_f, in_w) = x.shape, w.shape
        if in_f != in_w:
            raise ValueError(f"{node.name}: x {x.shape} and w {w.shape} differ in features")
        y = self._new((batch, out_f), np.int32, exp=None)
        self.lib.call("niti_cuda_linear_forward", batch, in_f, out_f, x.ptr, None, w.ptr, None, y.ptr, None)
        return self._checked(y, in_f)

    def requantize(self, node, ctx, acc):
        acc = self._in(acc, np.int32, "requantize acc")
        out = self._new(acc.shape, np.int8)
        self.lib.call("niti_cuda_requantize_s32", acc.size, acc.ptr, acc.exp_ptr, ROUNDING_MODES.index(node.attr("mode")),
                      _u32(ctx.seed), _u32(ctx.step), _u32(node.tensor_id), out.ptr, out.exp_ptr)
        return (out,)

    def relu(self, node, ctx, x):
        x = self._in(x, np.int8, "relu x")
        y = self._new(x.shape, np.int8, exp=None)
        self.lib.call("niti_cuda_relu_forward", x.size, x.ptr, y.ptr)
        return (y,)

    def maxpool(self, node, ctx, x):
        x = self._in(x, np.int8, "maxpool x")
        k, s, p = node.attr("kernel"), node.attr("stride"), node.attr("padding", 0)
        n, h, w, c = x.shape
        y = self._new((n, conv_out(h, k, s, p), conv_out(w, k, s, p), c), np.int8, exp=None)
        self.lib.call("niti_cuda_maxpool_forward", n, h, w, c, k, k, s, s, p, p, x.ptr, y.ptr)
        return (y,)

    def flatten(self, node, ctx, x):
        x = self._in(x, np.int8, "flatten x")
        return (x.reshape((x.shape[0], -1)),)

    def _dropout(self, node, ctx, t, what):
        t = self._in(t, np.int8, what)
        rows = t.shape[0]
        features = t.size // rows if rows else math.prod(t.shape[1:])
        y = self._new(t.shape, np.int8, exp=None)
        self.lib.call("niti_cuda_dropout", rows, features, node.attr("shift"), _u32(ctx.seed), _u32(ctx.step),
                      _u32(node.attr("mask_id", node.tensor_id)), t.ptr, None, y.ptr, None)
        return (y,)

    def dropout(self, node, ctx, x):
        return self._dropout(node, ctx, x, "dropout x")

    # ---- loss ---------------------------------------------------------------------------------------
    def loss_grad(self, node, ctx, logits, labels):
        logits = self._in(logits, np.int8, "loss logits")
        if not isinstance(labels, DeviceTensor):
            labels = np.asarray(labels)
            if labels.dtype.kind not in "iu":
                raise TypeError(f"labels: expected an integer array, got {labels.dtype}")
            labels = self.lib.to_device(np.ascontiguousarray(labels, dtype=np.int32).reshape(-1))
        labels = self._in(labels, np.int32, "labels", exp=False)
        n, c = logits.shape
        if labels.size != n:
            raise ValueError(f"{node.name}: {labels.size} labels for {n} rows")
        err = self._new((n, c), np.int8, exp=None)
        self.lib.call("niti_cuda_loss_grad", n, c, logits.ptr, logits.exp_ptr, labels.ptr,
                      LOSS_VARIANTS.index(node.attr("variant")), _u32(ctx.seed), _u32(ctx.step), _u32(node.tensor_id),
                      err.ptr, None, None)
        return (err,)

    # ---- backward -----------------------------------------------------------------------------------
    def relu_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "relu_grad x", exp=False), self._in(dy, np.int8, "relu_grad dy")
        if x.shape != dy.shape:
            raise ValueError(f"{node.name}: x {x.shape} and dy {dy.shape} differ")
        dx = self._new(dy.shape, np.int8, exp=None)
        self.lib.call("niti_cuda_relu_backward", x.size, x.ptr, dy.ptr, dx.ptr)
        return (dx,)

    def maxpool_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "maxpool_grad x", exp=False), self._in(dy, np.int8, "maxpool_grad dy")
        k, s, p = node.attr("kernel"), node.attr("stride"), node.attr("padding", 0)
        n, h, w, c = x.shape
        if dy.shape != (n, conv_out(h, k, s, p), conv_out(w, k, s, p), c):
            raise ValueError(f"{node.name}: dy {dy.shape} does not match x {x.shape}")
        dx = self._new(x.shape, np.int8, exp=None)
        self.lib.call("niti_cuda_maxpool_backward", n, h, w, c, k, k, s, s, p, p, x.ptr, dy.ptr, dx.ptr)
        return (dx,)

    def flatten_grad(self, node, ctx, dy):
        return (self._in(dy, np.int8, "flatten_grad dy").reshape(node.attr("input_shape")),)

    def dropout_grad(self, node, ctx, dy):
        return self._dropout(node, ctx, dy, "dropout_grad dy")

    def conv2d_input_grad(self, node, ctx, dy, w):
        dy, w = self._in(dy, np.int8, "conv2d_input_grad dy"), self._in(w, np.int8, "conv2d_input_grad w")
        n, h, wd, c = node.attr("input_shape")
        o, kh, kw, _ = w.shape
        s, p = node.attr("stride"), node.attr("padding")
        dx = self._new((n, h, wd, c), np.int32, exp=None)
        self.lib.call("niti_cuda_conv2d_input_grad", n, h, wd, c, o, kh, kw, s, s, p, p, dy.ptr, None, w.ptr, None,
                      dx.ptr, None)
        return self._checked(dx, kh * kw * o)

    def _weight_grad(self, node, name: str, args: tuple, shape, reduction: int, x, dy):
        """int32 or int64 as the graph asks (the library sums an int32 gradient over more than max_k_int32
        products in int64 and narrows it with its overflow check)."""
        dtype = node.attr("dtype")
        if dtype not in ("int32", "int64"):
            raise ValueError(f"{node.name}: weight-gradient dtype must be int32 or int64, got {dtype!r}")
        g = self._new(shape, np.dtype(dtype), exp=None)
        self.lib.call(f"{name}_{'s32' if dtype == 'int32' else 's64'}", *args, x.ptr, None, dy.ptr, None, g.ptr, None)
        return self._checked(g, reduction)

    def conv2d_weight_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "conv2d_weight_grad x"), self._in(dy, np.int8, "conv2d_weight_grad dy")
        (n, h, wd, c), (_, e, f, o) = x.shape, dy.shape
        k, s, p = node.attr("kernel"), node.attr("stride"), node.attr("padding")
        return self._weight_grad(node, "niti_cuda_conv2d_weight_grad", (n, h, wd, c, o, k, k, s, s, p, p),
                                 (o, k, k, c), n * e * f, x, dy)

    def linear_input_grad(self, node, ctx, dy, w):
        dy, w = self._in(dy, np.int8, "linear_input_grad dy"), self._in(w, np.int8, "linear_input_grad w")
        (batch, out_f), (out_w, in_f) = dy.shape, w.shape
        if out_f != out_w:
            raise ValueError(f"{node.name}: dy {dy.shape} and w {w.shape} differ")
        dx = self._new((batch, in_f), np.int32, exp=None)
        self.lib.call("niti_cuda_linear_input_grad", batch, in_f, out_f, dy.ptr, None, w.ptr, None, dx.ptr, None)
        return self._checked(dx, out_f)

    def linear_weight_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "linear_weight_grad x"), self._in(dy, np.int8, "linear_weight_grad dy")
        (batch, in_f), (_, out_f) = x.shape, dy.shape
        return self._weight_grad(node, "niti_cuda_linear_weight_grad", (batch, in_f, out_f), (out_f, in_f), batch,
                                 x, dy)

    # ---- update -------------------------------------------------------------------------------------
    def update(self, node, ctx, w, g, state=None):
        rule = node.attr("rule")
        g = self.lib.to_device(g)
        if g.dtype not in (np.int32, np.int64):
            raise TypeError(f"{node.name}: gradient must be int32 or int64, got {g.dtype}")
        sfx = "_s64" if g.dtype == np.int64 else "_s32"
        mu = _mu(ctx.mu)
        w = self._in(w, np.int8, "update w")
        if g.shape != w.shape:
            raise ValueError(f"{node.name}: gradient {g.shape} and weight {w.shape} differ")
        w_out = self._new(w.shape, np.int8, exp=None)
        if rule == "plain":
            self.lib.call("niti_cuda_update_plain" + sfx, w.size, w.ptr, g.ptr, mu, w_out.ptr)
            return (w_out,)
        if rule == "momentum":
            v = self._in(state, np.int32, "velocity")
            v_out = self._new(v.shape, np.int32, exp=None)
            self.lib.call("niti_cuda_update_momentum" + sfx, w.size, w.ptr, g.ptr, v.ptr, mu, w_out.ptr, v_out.ptr)
            return w_out, v_out
        if rule == "shadow16":
            sh = self._in(state, np.int16, "shadow")
            sh_out = self._new(sh.shape, np.int16, exp=None)
            self.lib.call("niti_cuda_update_shadow16" + sfx, w.size, sh.ptr, g.ptr, mu, w_out.ptr, sh_out.ptr)
            return w_out, sh_out
        raise ValueError(f"unknown update rule {rule!r}")


def cuda_kernel_table(device: int = 0, lib: CudaLib | None = None) -> Mapping[str, Callable]:
    """{op: fn(node, ctx, *inputs) -> tuple of DeviceTensors}, the CUDA REFERENCE_KERNELS.

    Builds and loads the library on first use (CudaUnavailable if this machine cannot run it).
    """
    return build_kernel_table(CudaOps(lib or cuda_library(device)))
