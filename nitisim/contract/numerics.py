"""NITI integer arithmetic: the living definition every executor mirrors bit-exactly.

Holds the int8 tensor with one power-of-two exponent, the integer range `range_bits`, the
counter-hash random source, `round_shift` with its three rounding modes, `requantize` (the shift
back to int8 after an int32 accumulation), the integer softmax-cross-entropy gradient `loss_grad`
and the integer weight update rules.
../shared/spec/niti-numerics.md is the prose specification; this file is its executable form. The
C/CUDA header `gpu_backend/csrc/niti_arith.h` mirrors it.

Everything here is integer arithmetic on numpy integer arrays; no float ever touches a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import IntegerOverflowError

RoundingMode = Literal["nearest", "pseudo_stochastic", "stochastic"]
ROUNDING_MODES: tuple[str, ...] = ("nearest", "pseudo_stochastic", "stochastic")
LOSS_VARIANTS: tuple[str, ...] = ("niti", "fine")

INT8_MAX = 127  # -128 is never used, so negation and sign-magnitude shifts stay symmetric
INT32_MAX = 2**31 - 1
LOSS_ERROR_EXP = -7  # loss_grad output: p / 16 where p = 2048 * (softmax - onehot), so 2**(4 - 11)


@dataclass(frozen=True, eq=False)
class QTensor:
    """An int8 (or wider integer) array `m` with one exponent `e`: the real value is m * 2**e.

    >>> t = QTensor(np.array([3, -5], dtype=np.int8), -2)
    >>> t.dequantize().tolist()
    [0.75, -1.25]
    """

    m: np.ndarray
    e: int

    def dequantize(self) -> np.ndarray:
        """float64 view of the value, for tests and reports only (never on the training path)."""
        return np.ldexp(self.m.astype(np.float64), self.e)


def range_bits(x: np.ndarray) -> int:
    """b(x) = 0 if max|x| == 0 else bit_length(max|x| - 1), i.e. ceil(log2(max|x|)), integers only.

    >>> range_bits(np.array([0, 0])), range_bits(np.array([1])), range_bits(np.array([-128, 5]))
    (0, 0, 7)
    >>> range_bits(np.array([129], dtype=np.int32))
    8
    """
    if x.size == 0:
        return 0
    peak = max(int(x.max()), -int(x.min()))  # python ints: no overflow on abs(int32 min)
    return 0 if peak == 0 else (peak - 1).bit_length()


# ---------------------------------------------------------------------------------------------
# Counter-based random source. One function of (seed, step, tensor id, element index), no state,
# so every executor (numpy, C, CUDA, any thread order) draws the same bits for the same element.
# The mixer is the 32-bit "lowbias32" finaliser (a bijection on uint32): multiply by odd
# constants and xor-shift, all mod 2**32, which C's uint32_t arithmetic reproduces exactly.
# ---------------------------------------------------------------------------------------------
_MIX_M1 = np.uint32(0x7FEB352D)
_MIX_M2 = np.uint32(0x846CA68B)


def mix32(x: np.ndarray | int) -> np.ndarray:
    """lowbias32: x ^= x>>16; x *= 0x7feb352d; x ^= x>>15; x *= 0x846ca68b; x ^= x>>16 (mod 2**32).

    >>> int(mix32(0)), int(mix32(1))
    (0, 1753845952)
    """
    x = np.asarray(x, dtype=np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(16))
        x = x * _MIX_M1
        x = x ^ (x >> np.uint32(15))
        x = x * _MIX_M2
        x = x ^ (x >> np.uint32(16))
    return x


def hash_key(seed: int, step: int, tensor_id: int) -> int:
    """The per-(seed, step, tensor) key: mix32(mix32(mix32(seed) ^ step) ^ tensor_id).

    >>> hash_key(0, 0, 0)
    0
    >>> hash_key(1, 2, 3) != hash_key(1, 2, 4)
    True
    """
    k = mix32(np.uint32(seed & 0xFFFFFFFF))
    k = mix32(k ^ np.uint32(step & 0xFFFFFFFF))
    k = mix32(k ^ np.uint32(tensor_id & 0xFFFFFFFF))
    return int(k)


def hash_bits(seed: int, step: int, tensor_id: int, count: int) -> np.ndarray:
    """32 random bits for element indices 0..count-1: mix32(key ^ index) as uint32.

    >>> hash_bits(1, 2, 3, 4).dtype, len(set(hash_bits(1, 2, 3, 1000).tolist()))
    (dtype('uint32'), 1000)
    """
    key = np.uint32(hash_key(seed, step, tensor_id))
    return mix32(np.arange(count, dtype=np.uint32) ^ key)


def uniform_below_pow2(s: int, seed: int, step: int, tensor_id: int, count: int) -> np.ndarray:
    """R uniform in [0, 2**s) per element: the top s bits of hash_bits (1 <= s <= 31), as int64.

    >>> int(uniform_below_pow2(4, 0, 0, 0, 10).max()) < 16
    True
    """
    if not 1 <= s <= 31:
        raise ValueError(f"random draw width must be in 1..31 bits, got {s}")
    return (hash_bits(seed, step, tensor_id, count) >> np.uint32(32 - s)).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Shifts. Sign-magnitude everywhere: T(x, s) = sign(x) * (|x| >> s), then a rounding increment
# decided from the remainder bits r = |x| & (2**s - 1). Never floor division on negatives.
# ---------------------------------------------------------------------------------------------
def round_shift(x: np.ndarray, s: int, mode: RoundingMode, *, seed: int = 0, step: int = 0,
                tensor_id: int = 0) -> np.ndarray:
    """sign(x) * ((|x| >> s) + up) with `up` decided by `mode`; returns int64 (s >= 0).

    nearest: up = r >= 2**(s-1) (half away from zero).
    pseudo_stochastic (NITI's PSR): k = s // 2, hi = r >> k, lo = r & (2**k - 1) doubled when s is
    odd, up = hi > lo. stochastic: up = r > R, R = uniform_below_pow2(s, seed, step, tensor_id, ...)
    over the flat (row-major) element index, so E[result] = x / 2**s exactly.

    >>> v = np.array([1000, -1000, 7, 37, -37, 4095])
    >>> round_shift(v, 5, "pseudo_stochastic").tolist()[:2], round_shift(v, 5, "nearest").tolist()[:2]
    ([32, -32], [31, -31])
    >>> round_shift(np.array([7, 6]), 2, "pseudo_stochastic").tolist()
    [1, 2]
    >>> round_shift(np.array([37, -37]), 3, "pseudo_stochastic").tolist()
    [4, -4]
    """
    x = np.asarray(x).astype(np.int64, copy=False)
    if s < 0:
        raise ValueError(f"round_shift needs s >= 0, got {s}")
    if s == 0:
        return x.copy()
    if s > 62:
        return np.zeros_like(x)
    mag = np.abs(x)
    q = mag >> s
    r = mag & ((1 << s) - 1)
    if mode == "nearest":
        up = r >= (1 << (s - 1))
    elif mode == "pseudo_stochastic":
        k = s // 2
        hi = r >> k
        lo = r & ((1 << k) - 1)
        if s % 2:
            lo = lo << 1
        up = hi > lo
    elif mode == "stochastic":
        if s > 31:
            # |x| < 2**63 and r < 2**s: draw the top 31 remainder bits; the dropped bits change the
            # rounding probability by less than 2**-31.
            r = r >> (s - 31)
            s_draw = 31
        else:
            s_draw = s
        draw = uniform_below_pow2(s_draw, seed, step, tensor_id, x.size).reshape(x.shape)
        up = r > draw
    else:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    out = q + up.astype(np.int64)
    return np.where(x < 0, -out, out)


def clamp_int8(x: np.ndarray) -> np.ndarray:
    """Saturate to [-127, 127] and narrow to int8.

    >>> clamp_int8(np.array([200, -200, 5])).tolist()
    [127, -127, 5]
    """
    return np.clip(x, -INT8_MAX, INT8_MAX).astype(np.int8)


def requantize(acc: np.ndarray, exp: int, mode: RoundingMode, *, seed: int = 0, step: int = 0,
               tensor_id: int = 0) -> tuple[np.ndarray, int]:
    """Shift an integer accumulator back to int8: s = b(acc) - 7, never a left shift (spec §2).

    >>> m, e = requantize(np.array([1000, -300, 4], dtype=np.int32), -10, "nearest")
    >>> m.tolist(), e
    ([125, -38, 1], -7)
    """
    s = range_bits(acc) - 7
    if s > 0:
        m = round_shift(acc, s, mode, seed=seed, step=step, tensor_id=tensor_id)
        return clamp_int8(m), exp + s
    return clamp_int8(acc), exp


def check_int32(acc: np.ndarray, what: str) -> np.ndarray:
    """Narrow an int64 accumulator to int32, raising IntegerOverflowError instead of wrapping."""
    if acc.size and (int(acc.max()) > INT32_MAX or int(acc.min()) < -INT32_MAX - 1):
        raise IntegerOverflowError(f"{what}: int32 accumulator overflow (range {acc.min()}..{acc.max()})")
    return acc.astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Loss: the integer gradient of softmax cross-entropy (spec §4). Only the gradient is needed.
# ---------------------------------------------------------------------------------------------
_LOG2E_Q15 = 47274  # round(log2(e) * 2**15)
_SOFTMAX_WINDOW = 10  # octaves kept below the row max in the base-2 softmax
_TAYLOR_MIN_EXP = -24  # below this, logits are < 2**-17 in magnitude and the softmax is uniform to p's LSB
# Logit exponents above this overflow the int64 intermediates (z << e) of the base-2 softmax: an
# overflow error in every reader. Below LOSS_MIN_EXP nothing changes (every logit already shifts to
# 0 below _TAYLOR_MIN_EXP - 8: the uniform softmax), so readers with int-sized shift counts clamp there.
LOSS_MAX_EXP = 40
LOSS_MIN_EXP = -1024
FINE_FRAC_BITS = 8  # fixed-point fraction bits of the base-2 exponent in the "fine" variant
FINE_WINDOW = 16  # octaves kept below the row max in the "fine" variant
# 2**(i / 256) in Q16 for i in 0..255; integer constants (generated once, mirrored in C).
FINE_EXP2_TABLE_Q16: tuple[int, ...] = tuple(
    int(round(2.0 ** (i / 2**FINE_FRAC_BITS) * 2**16)) for i in range(2**FINE_FRAC_BITS)
)


def _trunc_shift(x: np.ndarray, s: int) -> np.ndarray:
    """x * 2**-s truncated toward zero (s > 0), or x * 2**-s exactly (s <= 0)."""
    if s <= 0:
        return x << (-s)
    return np.where(x < 0, -((-x) >> s), x >> s)


def _niti_softmax_weights(a: np.ndarray, e: int) -> np.ndarray:
    """Unnormalised integer softmax weights u (N, C) of NITI's base-2 / Taylor scheme (int64)."""
    if e > -7:
        z = _trunc_shift(a * _LOG2E_Q15, 15)
        z = _trunc_shift(z, -e)
        z = np.maximum(z - (z.max(axis=1, keepdims=True) - _SOFTMAX_WINDOW), 0)
        return (np.int64(1) << z) - 1
    if e < _TAYLOR_MIN_EXP:
        a = _trunc_shift(a, _TAYLOR_MIN_EXP - e)
        e = _TAYLOR_MIN_EXP
    # 2**(1-2e) * (1 + x + x**2 / 2) with x = a * 2**e: the 2nd-order Taylor series of exp(x).
    return (np.int64(1) << (1 - 2 * e)) + (a << (1 - e)) + a * a


def _fine_softmax_weights(a: np.ndarray, e: int) -> np.ndarray:
    """Unnormalised weights with fractional base-2 exponents: Q8 exponent, 256-entry Q16 table."""
    z = _trunc_shift(a * _LOG2E_Q15, 15 - FINE_FRAC_BITS - e)  # log2(e) * a * 2**e in Q8
    z = z - z.max(axis=1, keepdims=True)  # <= 0
    z = np.maximum(z, -(FINE_WINDOW << FINE_FRAC_BITS))
    whole = (-z) >> FINE_FRAC_BITS  # octaves below the max, 0..FINE_WINDOW
    frac = (-z) & ((1 << FINE_FRAC_BITS) - 1)
    # 2**(-whole - frac/256) = 2**((256 - frac)/256) / 2 / 2**whole, in Q(16 + FINE_WINDOW).
    table = np.asarray(FINE_EXP2_TABLE_Q16 + (1 << 17,), dtype=np.int64)
    mant = table[(1 << FINE_FRAC_BITS) - frac]  # 2**((256 - frac)/256) in Q16, in [2**16, 2**17]
    return (mant << (FINE_WINDOW - 1)) >> whole


def loss_grad(
    logits: np.ndarray,
    exp: int,
    labels: np.ndarray,
    *,
    variant: str = "niti",
    seed: int = 0,
    step: int = 0,
    tensor_id: int = 0,
    return_p: bool = False,
) -> np.ndarray:
    """Integer softmax-cross-entropy gradient of int8 logits (N, C) with exponent `exp` (spec §4).

    p = floor(u * 2**11 / sum(u)), p[label] -= sum(p) so each row sums to 0 (2048 * (softmax -
    onehot)); the error is clamp(stochastic_round(p, 4), -127, 127) with exponent LOSS_ERROR_EXP.
    `variant="niti"` is the published base-2 / Taylor scheme; `variant="fine"` uses fractional
    base-2 exponents (Q8 with a 256-entry table) for a closer softmax, still integer-only.

    >>> a = np.array([[100, -20, 30, 127, -127, 0, 5, 60, 90, -50]], dtype=np.int8)
    >>> loss_grad(a, -4, np.array([3]), return_p=True)[0].tolist()
    [367, 0, 1, -572, 0, 0, 0, 21, 183, 0]
    """
    a = np.asarray(logits).astype(np.int64)
    if a.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {a.shape}")
    if exp > LOSS_MAX_EXP:
        raise IntegerOverflowError(f"logit exponent {exp} above {LOSS_MAX_EXP}: the softmax's int64 intermediates "
                                   "would overflow")
    labels = np.asarray(labels).astype(np.int64)
    if variant == "niti":
        u = _niti_softmax_weights(a, exp)
    elif variant == "fine":
        u = _fine_softmax_weights(a, exp)
    else:
        raise ValueError(f"unknown loss variant {variant!r}; expected one of {LOSS_VARIANTS}")
    total = u.sum(axis=1, keepdims=True)
    p = (u << 11) // total  # u >= 0 and total > 0 (the row max contributes): floor is exact here
    rows = np.arange(a.shape[0])
    p[rows, labels] -= p.sum(axis=1)
    if return_p:
        return p
    err = round_shift(p, 4, "stochastic", seed=seed, step=step, tensor_id=tensor_id)
    return clamp_int8(err)


# ---------------------------------------------------------------------------------------------
# Weight update (spec §5). Weight exponents are fixed at initialisation; mu plays the learning rate.
# ---------------------------------------------------------------------------------------------
MOMENTUM_SHIFT = 3  # beta = 1 - 2**-3 = 0.875 for integer momentum
SHADOW_FRAC_BITS = 8  # int16 shadow weights hold 8 fraction bits below the int8 LSB
SHADOW_MAX = INT8_MAX << SHADOW_FRAC_BITS  # keeps PSR(shadow, 8) inside [-127, 127]
UPDATE_RULES: tuple[str, ...] = ("plain", "momentum", "shadow16")


def mu_step(g_acc: np.ndarray, mu: int) -> np.ndarray:
    """The gradient step of NITI's rule: |step| <= 2**mu, PSR-shifted from the accumulator (int64).

    b = b(g); zero if b == 0; s = b - mu; s < 1 keeps g as is, else g = PSR(g, s).

    >>> mu_step(np.array([1000, -3, 0]), 2).tolist()
    [4, 0, 0]
    >>> mu_step(np.array([3, -2]), 2).tolist()
    [3, -2]
    """
    g = np.asarray(g_acc).astype(np.int64)
    b = range_bits(g)
    if b == 0:
        return np.zeros_like(g)
    s = b - mu
    if s < 1:
        return g
    return round_shift(g, s, "pseudo_stochastic")


def update_plain(w: np.ndarray, g_acc: np.ndarray, mu: int) -> np.ndarray:
    """w <- clamp(w - mu_step(g, mu), -127, 127): NITI's published rule.

    >>> update_plain(np.array([10, -127], dtype=np.int8), np.array([1000, 1000]), 2).tolist()
    [6, -127]
    """
    return clamp_int8(w.astype(np.int64) - mu_step(g_acc, mu))


def update_momentum(
    w: np.ndarray, g_acc: np.ndarray, velocity: np.ndarray, mu: int
) -> tuple[np.ndarray, np.ndarray]:
    """Integer heavy-ball momentum with beta = 1 - 2**-3: v <- v - sign(v) * ceil(|v| / 8) + g;
    w <- w - PSR(v, 3).

    v is an int32 state; at steady state v = 8 g, so the step keeps the plain rule's size. The decay
    rounds up so that a velocity below 8 still decays to zero once the gradient is gone (truncating
    it would leave |v| < 8 forever, and PSR(v, 3) would keep stepping the weight).

    >>> w, v = update_momentum(np.array([10], np.int8), np.array([1000]), np.array([0], np.int32), 2)
    >>> w.tolist(), v.tolist()
    ([9], [4])
    """
    g = mu_step(g_acc, mu)
    v = velocity.astype(np.int64)
    decay = (np.abs(v) + ((1 << MOMENTUM_SHIFT) - 1)) >> MOMENTUM_SHIFT
    v = v - np.where(v < 0, -decay, decay) + g
    step = round_shift(v, MOMENTUM_SHIFT, "pseudo_stochastic")
    return clamp_int8(w.astype(np.int64) - step), check_int32(v, "momentum velocity")


def update_shadow16(w_shadow: np.ndarray, g_acc: np.ndarray, mu: int) -> tuple[np.ndarray, np.ndarray]:
    """16-bit weight accumulation: an int16 shadow with 8 fraction bits takes steps of up to
    2**(mu + 8) shadow LSBs (the plain rule's size, but sub-LSB steps are kept); the int8 weight is
    PSR(shadow, 8). Returns (int8 weight, int16 shadow).

    >>> w, sh = update_shadow16(np.array([10 << 8], np.int16), np.array([3]), 0)
    >>> w.tolist(), sh.tolist()
    ([10], [2557])
    """
    g = mu_step(g_acc, mu + SHADOW_FRAC_BITS)
    shadow = np.clip(w_shadow.astype(np.int64) - g, -SHADOW_MAX, SHADOW_MAX)
    w = clamp_int8(round_shift(shadow, SHADOW_FRAC_BITS, "pseudo_stochastic"))
    return w, shadow.astype(np.int16)
