"""The numpy reference executor: one numpy method per op, the living definition of each op.

`ReferenceOps` has one method per op of nitisim.contract.ops.OPS, (node, ctx, *inputs) with QTensor
inputs, returning the output arrays (integer arrays only); `REFERENCE_KERNELS` is the table built
from it by nitisim.contract.kernel_table, which gives each output the exponent its op row says
(requantize's comes from the data, so its method returns the whole QTensor). An op whose arithmetic
nitisim.contract.numerics does not hold is defined here in full (`aligned_add`, the exponent-aligned
add; `global_avgpool` and its gradient), so a new op needs no edit of numerics.py. The int8 x int8 products go through a floating-point
BLAS only where the result is provably exact (see `exact_int_matmul`), because that yields the
identical integers much faster than numpy's integer matmul; everything else is integer arithmetic.
"""
from __future__ import annotations

import numpy as np

from .executor import StepContext
from .graph import Node
from .kernel_table import build_kernel_table, host_exponent
from .errors import IntegerOverflowError
from .models import conv_out
from .ops import global_pool_grad_shape, global_pool_shape
from .numerics import (
    QTensor,
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


# Exponents further apart than this cannot be aligned exactly in int64: |acc| <= 128 * 2**d + 128
# (128 counts the int8 value -128, which an int8 array can hold though no op produces it) is below
# 2**63 for d <= 55 and not for d = 56. It also keeps the requantize shift s <= 56, inside the
# exact range of round_shift (s <= 62, |x| < 2**63).
ADD_MAX_EXP_GAP = 55


def aligned_add(a: np.ndarray, e_a: int, b: np.ndarray, e_b: int, mode: str, *, seed: int = 0, step: int = 0,
                tensor_id: int = 0) -> tuple[np.ndarray, int]:
    """Elementwise sum of two int8 tensors with exponents: one rounding of the exact sum to int8.

    d = |e_a - e_b| must be <= ADD_MAX_EXP_GAP (55), else IntegerOverflowError naming both
    exponents. The operand with the larger exponent is shifted left onto the smaller one,
    e_lo = min(e_a, e_b): acc = a * 2**(e_a - e_lo) + b * 2**(e_b - e_lo), exact in int64. Then
    `requantize(acc, e_lo, mode, ...)`: s = b(acc) - 7; if s > 0 the sum is rounded once with
    `mode` (stochastic draws over the flat element index, more than 31 remainder bits handled as in
    round_shift) and clamped, e_out = e_lo + s; else e_out = e_lo. The output exponent is
    data-derived, like requantize's.

    >>> m, e = aligned_add(np.array([100, -3, 127], np.int8), -4, np.array([50, 3, 127], np.int8), -5, "nearest")
    >>> m.tolist(), e
    ([63, -1, 95], -3)
    >>> aligned_add(np.array([1], np.int8), 0, np.array([1], np.int8), 0, "nearest")[0].tolist()
    [2]
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"add: operand shapes {a.shape} and {b.shape} differ")
    e_a, e_b = int(e_a), int(e_b)
    gap = abs(e_a - e_b)
    if gap > ADD_MAX_EXP_GAP:
        raise IntegerOverflowError(f"add: operand exponents {e_a} and {e_b} are {gap} apart, more than "
                                   f"{ADD_MAX_EXP_GAP}: the aligned sum would not fit int64")
    e_lo = min(e_a, e_b)
    acc = (a.astype(np.int64) << (e_a - e_lo)) + (b.astype(np.int64) << (e_b - e_lo))
    return requantize(acc, e_lo, mode, seed=seed, step=step, tensor_id=tensor_id)


def div_round_half_away(num: np.ndarray, k: int) -> np.ndarray:
    """num / k rounded half away from zero, exactly, for every k >= 1 (not only powers of two):
    sign(num) * ((2 |num| + k) // (2 k)), int64; |num| must stay below 2**61.

    >>> div_round_half_away(np.array([4, -4, 5, -5, 13, -13, 0]), 9).tolist()  # 4/9, 5/9, 13/9
    [0, 0, 1, -1, 1, -1, 0]
    >>> div_round_half_away(np.array([98, -98, 99, -99]), 196).tolist()  # exact halves round away
    [1, -1, 1, -1]
    """
    num = np.asarray(num).astype(np.int64, copy=False)
    q = (2 * np.abs(num) + k) // (2 * k)
    return np.where(num < 0, -q, q)


def global_avgpool(x: np.ndarray, node: Node) -> np.ndarray:
    """x int8 (N, H, W, C) -> (N, C) int8: each channel's window mean, K = H*W.

    S = the exact sum of the window's K values (|S| <= 128 K fits int32, K <= 2**24), then
    y = clamp(sign(S) * ((2|S| + K) // (2K)), -127, 127): S / K rounded half away from zero (one
    rounding, exact for every K), saturated as every int8 output (only all -128 reaches -128).
    The exponent is x's. docs/numerics-avgpool.md.

    >>> from .graph import Node
    >>> n = Node("gap", "global_avgpool", "forward", "gap", ("x",), ("y",))
    >>> global_avgpool(np.array([[[[7], [2]], [[-1], [0]]]], np.int8), n).tolist()  # 8 / 4
    [[2]]
    """
    n, c = global_pool_shape(node, [x.shape])
    k = x.shape[1] * x.shape[2]
    window_sum = x.astype(np.int64).sum(axis=(1, 2))  # (N, C)
    return clamp_int8(div_round_half_away(window_sum, k)).reshape(n, c)


def global_avgpool_grad(dy: np.ndarray, node: Node) -> np.ndarray:
    """dy int8 (N, C) -> dx int8 `input_shape` (N, H, W, C), every window position the same value.

    With K = H*W and p = floor(log2 K) (the node's exp_shift is -p, so the output exponent is
    e_dy - p): d = clamp(round_half_away(dy * 2**p / K), -127, 127), exact integer arithmetic.
    2**p / K is in (1/2, 1], so |d| <= |dy| (<= 128, saturated as every int8 output), d = dy when K is
    a power of two, and d * 2**(e_dy - p) is dy * 2**e_dy / K within half a unit of the output's
    last place. docs/numerics-avgpool.md.

    >>> from .graph import Node
    >>> n = Node("gap.bwd", "global_avgpool_grad", "backward", "gap", ("dy",), ("dx",),
    ...          (("input_shape", (1, 3, 3, 2)), ("exp_shift", -3)))
    >>> dx = global_avgpool_grad(np.array([[9, -100]], np.int8), n)  # 9 * 8 / 9, -100 * 8 / 9
    >>> dx.shape, dx[0, 2, 1].tolist()
    ((1, 3, 3, 2), [8, -89])
    """
    shape = global_pool_grad_shape(node, [dy.shape])
    k = shape[1] * shape[2]
    d = clamp_int8(div_round_half_away(dy.astype(np.int64) << (k.bit_length() - 1), k))  # (N, C)
    return np.ascontiguousarray(np.broadcast_to(d[:, None, None, :], shape))


def _narrow(acc: np.ndarray, dtype: str, what: str) -> np.ndarray:
    return check_int32(acc, what) if dtype == "int32" else acc.astype(np.int64)


# --------------------------------------------------------------------------------- conv helpers
def im2col(x: np.ndarray, kernel: int, stride: int, padding: int) -> np.ndarray:
    """x (N, H, W, C) -> patches (N, E, F, kh, kw, C), zero padded; a copy, in x's dtype."""
    n, h, w, c = x.shape
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    e, f = conv_out(h, kernel, stride, padding), conv_out(w, kernel, stride, padding)
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


POOL_PAD = np.int16(-(1 << 15))  # stands for -infinity: below every int8, so a padded position never wins


def _pool_windows(x: np.ndarray, kernel: int, stride: int, padding: int = 0) -> np.ndarray:
    """x (N, H, W, C) -> (kernel*kernel, N, E, F, C): window elements in row-major window order, over
    x padded with POOL_PAD (int16 then; int8 without padding). padding < kernel (models.infer_shapes),
    so every window holds a real value and its maximum is one."""
    n, h, w, c = x.shape
    e, f = conv_out(h, kernel, stride, padding), conv_out(w, kernel, stride, padding)
    if padding:
        x = np.pad(x.astype(np.int16), ((0, 0), (padding, padding), (padding, padding), (0, 0)),
                   constant_values=POOL_PAD)
    return np.stack(
        [x[:, i : i + stride * e : stride, j : j + stride * f : stride, :] for i in range(kernel) for j in range(kernel)]
    )


def dropout_mask(ctx: StepContext, mask_id: int, features: int, shift: int) -> np.ndarray:
    """Keep-mask per feature, shared across the batch: keep when the top `shift` hash bits are 0."""
    return (hash_bits(ctx.seed, ctx.step, mask_id, features) >> np.uint32(32 - shift)) == 0


def _apply_dropout(node: Node, ctx: StepContext, t: QTensor) -> np.ndarray:
    features = int(np.prod(t.m.shape[1:]))
    keep = dropout_mask(ctx, node.attr("mask_id", node.tensor_id), features, node.attr("shift"))
    return np.where(keep.reshape(t.m.shape[1:]), t.m, 0).astype(np.int8)


class ReferenceOps:
    """The numpy op methods: output arrays; their exponents come from the op rows (kernel_table)."""

    with_exponent = staticmethod(host_exponent)

    # ----------------------------------------------------------------------------- forward ops
    @staticmethod
    def conv2d(node: Node, ctx: StepContext, x: QTensor, w: QTensor):
        o, k, _, i = w.m.shape
        cols = im2col(x.m, k, node.attr("stride"), node.attr("padding"))  # (N, E, F, k, k, I)
        n, e, f = cols.shape[:3]
        acc = exact_int_matmul(cols.reshape(n * e * f, k * k * i), w.m.reshape(o, k * k * i).T)
        return (check_int32(acc, node.name).reshape(n, e, f, o),)

    @staticmethod
    def linear(node: Node, ctx: StepContext, x: QTensor, w: QTensor):
        return (check_int32(exact_int_matmul(x.m, w.m.T), node.name),)  # (N, out)

    @staticmethod
    def requantize(node: Node, ctx: StepContext, acc: QTensor):
        m, e = requantize(acc.m, acc.e, node.attr("mode"), seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id)
        return (QTensor(m, e),)

    @staticmethod
    def add(node: Node, ctx: StepContext, a: QTensor, b: QTensor):
        m, e = aligned_add(a.m, a.e, b.m, b.e, node.attr("mode"), seed=ctx.seed, step=ctx.step,
                           tensor_id=node.tensor_id)
        return (QTensor(m, e),)

    @staticmethod
    def global_avgpool(node: Node, ctx: StepContext, x: QTensor):
        return (global_avgpool(x.m, node),)

    @staticmethod
    def relu(node: Node, ctx: StepContext, x: QTensor):
        return (np.maximum(x.m, 0).astype(np.int8),)

    @staticmethod
    def maxpool(node: Node, ctx: StepContext, x: QTensor):
        windows = _pool_windows(x.m, node.attr("kernel"), node.attr("stride"), node.attr("padding", 0))
        return (windows.max(axis=0).astype(np.int8, copy=False),)

    @staticmethod
    def flatten(node: Node, ctx: StepContext, x: QTensor):
        return (x.m.reshape(x.m.shape[0], -1),)

    @staticmethod
    def dropout(node: Node, ctx: StepContext, x: QTensor):
        return (_apply_dropout(node, ctx, x),)

    # ----------------------------------------------------------------------------- loss
    @staticmethod
    def loss_grad(node: Node, ctx: StepContext, logits: QTensor, labels: np.ndarray):
        return (loss_grad(logits.m, logits.e, labels, variant=node.attr("variant"),
                          seed=ctx.seed, step=ctx.step, tensor_id=node.tensor_id),)

    # ----------------------------------------------------------------------------- backward ops
    @staticmethod
    def relu_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
        return (np.where(x.m > 0, dy.m, 0).astype(np.int8),)

    @staticmethod
    def maxpool_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
        k, s, p = node.attr("kernel"), node.attr("stride"), node.attr("padding", 0)
        first_max = _pool_windows(x.m, k, s, p).argmax(axis=0)  # argmax returns the first maximum
        n, e, f, c = dy.m.shape
        _, h, w, _ = x.m.shape
        dx = np.zeros((n, h + 2 * p, w + 2 * p, c), dtype=np.int32)  # the padded input: never a maximum
        for t in range(k * k):
            i, j = divmod(t, k)
            dx[:, i : i + s * e : s, j : j + s * f : s, :] += np.where(first_max == t, dy.m, 0)
        # Overlapping windows (stride < kernel) can route several errors to one input: saturate.
        return (clamp_int8(dx[:, p : p + h, p : p + w, :]),)

    @staticmethod
    def global_avgpool_grad(node: Node, ctx: StepContext, dy: QTensor):
        return (global_avgpool_grad(dy.m, node),)

    @staticmethod
    def flatten_grad(node: Node, ctx: StepContext, dy: QTensor):
        return (dy.m.reshape(node.attr("input_shape")),)

    @staticmethod
    def dropout_grad(node: Node, ctx: StepContext, dy: QTensor):
        return (_apply_dropout(node, ctx, dy),)

    @staticmethod
    def conv2d_input_grad(node: Node, ctx: StepContext, dy: QTensor, w: QTensor):
        o, k, _, i = w.m.shape
        n, e, f, _ = dy.m.shape
        cols = exact_int_matmul(dy.m.reshape(n * e * f, o), w.m.reshape(o, k * k * i))  # (NEF, k*k*I)
        in_shape = node.attr("input_shape")
        dx = col2im(cols.reshape(n, e, f, k, k, i), in_shape, node.attr("stride"), node.attr("padding"))
        return (check_int32(dx, node.name),)

    @staticmethod
    def conv2d_weight_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
        n, e, f, o = dy.m.shape
        k = node.attr("kernel")
        cols = im2col(x.m, k, node.attr("stride"), node.attr("padding"))
        g = exact_int_matmul(dy.m.reshape(n * e * f, o).T, cols.reshape(n * e * f, -1))  # (O, k*k*I)
        return (_narrow(g.reshape(o, k, k, x.m.shape[3]), node.attr("dtype"), node.name),)

    @staticmethod
    def linear_input_grad(node: Node, ctx: StepContext, dy: QTensor, w: QTensor):
        return (check_int32(exact_int_matmul(dy.m, w.m), node.name),)  # (N, in)

    @staticmethod
    def linear_weight_grad(node: Node, ctx: StepContext, x: QTensor, dy: QTensor):
        g = exact_int_matmul(dy.m.T, x.m)  # (out, in)
        return (_narrow(g, node.attr("dtype"), node.name),)

    # ----------------------------------------------------------------------------- update
    @staticmethod
    def update(node: Node, ctx: StepContext, w: QTensor, g: QTensor, state: QTensor | None = None):
        rule = node.attr("rule")
        if rule == "plain":
            return (update_plain(w.m, g.m, ctx.mu),)
        if rule == "momentum":
            return update_momentum(w.m, g.m, state.m, ctx.mu)
        if rule == "shadow16":
            return update_shadow16(state.m, g.m, ctx.mu)
        raise ValueError(f"unknown update rule {rule!r}")


REFERENCE_KERNELS = build_kernel_table(ReferenceOps())
