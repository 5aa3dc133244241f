"""The numpy reference executor: one numpy function per op, the living definition of each op.

Every function takes (node, ctx, *inputs) with QTensor inputs and returns a tuple of QTensors, and
produces only integer arrays. The int8 x int8 products go through a floating-point BLAS only where
the result is provably exact (see `exact_int_matmul`), because that yields the identical integers
much faster than numpy's integer matmul; everything else is integer arithmetic.
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from .executor import StepContext
from .graph import Node
from .numerics import (
    QTensor,
    LOSS_ERROR_EXP,
    SHADOW_FRAC_BITS,
    add as aligned_add,
    check_int32,
    clamp_int8,
    hash_bits,
    loss_grad,
    requantize,
    update_momentum,
    update_plain,
    update_shadow16,
)

_F32_EXACT = 2**24  # every integer of magnitude <= 2**24 is a float32
_F64_EXACT = 2**53


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) of small integers, exactly, as int64.

    Each partial sum of the dot products is bounded by K * max|a| * max|b|. When that bound is at
    most 2**24 (float32) or 2**53 (float64), every partial sum is an exactly representable integer,
    so the BLAS result is exact whatever its summation order or FMA use. Beyond 2**53 it falls back
    to numpy's int64 matmul (exact, slow; never reached by int8 layers of realistic size).

    >>> exact_int_matmul(np.array([[127, -127]], np.int8), np.array([[127], [127]], np.int8)).tolist()
    [[0]]
    """
    k = a.shape[1]
    peak_a = max(int(a.max(initial=0)), -int(a.min(initial=0)))
    peak_b = max(int(b.max(initial=0)), -int(b.min(initial=0)))
    bound = k * peak_a * peak_b
    if bound <= _F32_EXACT:
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.int64)
    if bound <= _F64_EXACT:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a.astype(np.int64), b.astype(np.int64))


def _narrow(acc: np.ndarray, dtype: str, what: str) -> np.ndarray:
    return check_int32(acc, what) if dtype == "int32" else acc.astype(np.int64)


# --------------------------------------------------------------------------------- conv helpers
def im2col(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """x (N, H, W, C) -> patches (N, E, F, kh, kw, C), zero padded; a copy, in x's dtype."""
    n, h, w, c = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    e = (h + 2 * padding - kernel) // stride + 1
    f = (w + 2 * padding - kernel) // stride + 1
    cols = np.empty((n, e, f, kernel, kernel, c), dtype=x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            cols[:, :, :, i, j, :] = x[:, i : i + stride * e : stride, j : j + stride * f : stride, :]
    return cols


def col2im(cols: np.ndarray, in_shape: tuple[int, ...], stride: int, padding: int) -> np.ndarray:
    """Scatter-add patches (N, E, F, kh, kw, C) back to (N, H, W, C), int64; the transpose of im2col."""
    n, e, f, kh, kw, c = cols.shape
    _, h, w, _ = in_shape
    out = np.zeros((n, h + 2 * padding, w + 2 * padding, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + stride * e : stride, j : j + stride * f : stride, :] += cols[:, :, :, i, j, :]
    return out[:, padding : padding + h, padding : padding + w, :]


# --------------------------------------------------------------------------------- forward ops
def conv2d(node: Node, ctx: StepContext, x: QTensor, w: QTensor):
    o, k, _, i = w.m.shape
    cols = im2col(x.m, k, node.attr("stride"), node.attr("padding"))  # (N, E, F, k, k, I)
    n, e, f = cols.shape[:3]
    acc = exact_int_matmul(cols.reshape(n * e * f, k * k * i), w.m.reshape(o, k * k * i).T)
    return (QTensor(check_int32(acc, node.name).reshape(n, e, f, o), x.e + w.e),)


def linear(node: Node, ctx: StepContext, x: QTensor, w: QTensor):
    acc = exact_int_matmul(x.m, w.m.T)  # (N, out)
    return (QTensor(check_int32(acc, node.name), x.e + w.e),)


def requantize_op(node: Node, ctx: StepContext, acc: QTensor):
    m, e = requantize(acc.m, acc.e, node.attr("mode"), seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id)
    return (QTensor(m, e),)


def add(node: Node, ctx: StepContext, a: QTensor, b: QTensor):
    m, e = aligned_add(a.m, a.e, b.m, b.e, node.attr("mode"), seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id)
    return (QTensor(m, e),)


def relu(node: Node, ctx: StepContext, x: QTensor):
    return (QTensor(np.maximum(x.m, 0).astype(np.int8), x.e),)


def _pool_windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """x (N, H, W, C) -> (kernel*kernel, N, E, F, C): window elements in row-major window order."""
    n, h, w, c = x.shape
    e, f = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    return np.stack(
        [x[:, i : i + stride * e : stride, j : j + stride * f : stride, :] for i in range(kernel) for j in range(kernel)]
    )


def maxpool(node: Node, ctx: StepContext, x: QTensor):
    return (QTensor(_pool_windows(x.m, node.attr("kernel"), node.attr("stride")).max(axis=0), x.e),)


def flatten(node: Node, ctx: StepContext, x: QTensor):
    return (QTensor(x.m.reshape(x.m.shape[0], -1), x.e),)


def dropout_mask(ctx: StepContext, mask_id: int, features: int, shift: int) -> np.ndarray:
    """Keep-mask per feature, shared across the batch: keep when the top `shift` hash bits are 0."""
    return (hash_bits(ctx.seed, ctx.step, mask_id, features) >> np.uint32(32 - shift)) == 0


def _apply_dropout(node: Node, ctx: StepContext, t: QTensor) -> QTensor:
    shift = node.attr("shift")
    features = int(np.prod(t.m.shape[1:]))
    keep = dropout_mask(ctx, node.attr("mask_id", node.tensor_id), features, shift).reshape(t.m.shape[1:])
    return QTensor(np.where(keep, t.m, 0).astype(np.int8), t.e + shift)


def dropout(node: Node, ctx: StepContext, x: QTensor):
    return (_apply_dropout(node, ctx, x),)


# --------------------------------------------------------------------------------- loss
def loss_grad_op(node: Node, ctx: StepContext, logits: QTensor, labels: np.ndarray):
    err = loss_grad(logits.m, logits.e, labels, variant=node.attr("variant"),
                    seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id)
    return (QTensor(err, LOSS_ERROR_EXP),)


# --------------------------------------------------------------------------------- backward ops
def relu_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
    return (QTensor(np.where(x.m > 0, dy.m, 0).astype(np.int8), dy.e),)


def maxpool_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
    k, s = node.attr("kernel"), node.attr("stride")
    first_max = _pool_windows(x.m, k, s).argmax(axis=0)  # argmax returns the first maximum
    n, e, f, c = dy.m.shape
    dx = np.zeros(x.m.shape, dtype=np.int32)
    for t in range(k * k):
        i, j = divmod(t, k)
        dx[:, i : i + s * e : s, j : j + s * f : s, :] += np.where(first_max == t, dy.m, 0)
    # Overlapping windows (stride < kernel) can route several errors to one input: saturate.
    return (QTensor(clamp_int8(dx), dy.e),)


def flatten_grad(node: Node, ctx: StepContext, dy: QTensor):
    return (QTensor(dy.m.reshape(node.attr("input_shape")), dy.e),)


def dropout_grad(node: Node, ctx: StepContext, dy: QTensor):
    return (_apply_dropout(node, ctx, dy),)


def conv2d_input_grad(node: Node, ctx: StepContext, dy: QTensor, w: QTensor):
    o, k, _, i = w.m.shape
    n, e, f, _ = dy.m.shape
    cols = exact_int_matmul(dy.m.reshape(n * e * f, o), w.m.reshape(o, k * k * i))  # (NEF, k*k*I)
    in_shape = node.attr("input_shape")
    dx = col2im(cols.reshape(n, e, f, k, k, i), in_shape, node.attr("stride"), node.attr("padding"))
    return (QTensor(check_int32(dx, node.name), dy.e + w.e),)


def conv2d_weight_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
    n, e, f, o = dy.m.shape
    k = node.attr("kernel")
    cols = im2col(x.m, k, node.attr("stride"), node.attr("padding"))
    g = exact_int_matmul(dy.m.reshape(n * e * f, o).T, cols.reshape(n * e * f, -1))  # (O, k*k*I)
    g = g.reshape(o, k, k, x.m.shape[3])
    return (QTensor(_narrow(g, node.attr("dtype"), node.name), x.e + dy.e),)


def linear_input_grad(node: Node, ctx: StepContext, dy: QTensor, w: QTensor):
    acc = exact_int_matmul(dy.m, w.m)  # (N, in)
    return (QTensor(check_int32(acc, node.name), dy.e + w.e),)


def linear_weight_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
    g = exact_int_matmul(dy.m.T, x.m)  # (out, in)
    return (QTensor(_narrow(g, node.attr("dtype"), node.name), x.e + dy.e),)


# --------------------------------------------------------------------------------- update
def update(node: Node, ctx: StepContext, w: QTensor, g: QTensor, state: QTensor | None = None):
    rule = node.attr("rule")
    if rule == "plain":
        return (QTensor(update_plain(w.m, g.m, ctx.mu), w.e),)
    if rule == "momentum":
        new_w, v = update_momentum(w.m, g.m, state.m, ctx.mu)
        return QTensor(new_w, w.e), QTensor(v, state.e)
    if rule == "shadow16":
        new_w, shadow = update_shadow16(state.m, g.m, ctx.mu)
        return QTensor(new_w, w.e), QTensor(shadow, w.e - SHADOW_FRAC_BITS)
    raise ValueError(f"unknown update rule {rule!r}")


REFERENCE_KERNELS = MappingProxyType({
    "conv2d": conv2d,
    "linear": linear,
    "requantize": requantize_op,
    "relu": relu,
    "maxpool": maxpool,
    "flatten": flatten,
    "dropout": dropout,
    "add": add,
    "loss_grad": loss_grad_op,
    "relu_grad": relu_grad,
    "maxpool_grad": maxpool_grad,
    "flatten_grad": flatten_grad,
    "dropout_grad": dropout_grad,
    "conv2d_input_grad": conv2d_input_grad,
    "conv2d_weight_grad": conv2d_weight_grad,
    "linear_input_grad": linear_input_grad,
    "linear_weight_grad": linear_weight_grad,
    "update": update,
})
