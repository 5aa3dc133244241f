"""int32 overflow at its exact boundary on every CPU engine: GEMM, linear and conv (forward, input
gradient, weight gradient; fused with requantize where that exists) raise IntegerOverflowError exactly
where the numpy reference does and otherwise return its exact integers.

The reference decides by value: the exact (int64) sum is narrowed by numerics.check_int32, which
raises when any output leaves [-2**31, 2**31 - 1]. So the cases are outputs of exactly 2**31 - 1 and
-2**31 (exact) and one past each (raise), all-127 reductions of 133144 (= INT32_MAX // 127**2,
exact) and 133145 products (raise), and -128 x -128 over 131071 products (the longest reduction the C
kernels accumulate in int32; exact) and 131072 (2**31: raise). The conv shapes send the reduction
through each C path: the direct AVX-512 kernels, the AMX grid conv (where the CPU has AMX), the
packed GEMM and the scatter input gradient. Inputs stay small: 1-pixel maps with ~133k channels.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.cpu_lib

if shutil.which(os.environ.get("CC") or "gcc") is None:  # pragma: no cover - machines without a compiler
    pytest.skip("no C compiler to build the CPU kernel library", allow_module_level=True)

from gpu_backend.lib import CPU_ENGINES, CLibError, cpu_library, engine_library  # noqa: E402
from nitisim.contract.errors import IntegerOverflowError  # noqa: E402
from nitisim.contract.executor import MAX_INT32_REDUCTION  # noqa: E402
from nitisim.contract.numerics import INT32_MAX, check_int32, requantize  # noqa: E402
from nitisim.contract.reference import exact_int_matmul  # noqa: E402

INT32_MIN = -INT32_MAX - 1
K = 133_146  # long enough to reach any sum within 127 * 127 * 133144 + 127 * 126 + 127 of zero


def dot_pair(target: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) int8 vectors of length k with a . b == target exactly: 127 * 127 products, then
    127 * q and r * 1 for the remainder (|target| <= 16129 * (k - 2) + 16128)."""
    n, rem = divmod(abs(target), 127 * 127)
    q, r = divmod(rem, 127)
    if n + 2 > k:
        raise ValueError(f"{target} needs more than {k} products")
    a, b = np.zeros(k, np.int8), np.zeros(k, np.int8)
    a[: n + 1], b[:n], b[n] = 127, 127, q
    a[n + 1], b[n + 1] = r, 1
    if target < 0:
        b = -b
    assert int(a.astype(np.int64) @ b.astype(np.int64)) == target
    return a, b


def value_cases(k: int = K) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b): sums at and one past each end of int32."""
    return [(f"sum {t}", *dot_pair(t, k)) for t in (INT32_MAX, INT32_MAX + 1, INT32_MIN, INT32_MIN - 1)]


def depth_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b): the reduction-depth boundaries, every product at its extreme."""
    def full(k, va, vb):
        return f"{k} x {va} x {vb}", np.full(k, va, np.int8), np.full(k, vb, np.int8)
    max_k_int32 = cpu_library().max_k_int32  # NITI_MAX_K_S32: the longest reduction summed in int32
    return [full(MAX_INT32_REDUCTION, 127, 127), full(MAX_INT32_REDUCTION + 1, 127, 127),
            full(MAX_INT32_REDUCTION + 1, 127, -127), full(max_k_int32, -128, -128), full(max_k_int32 + 1, -128, -128)]


def test_cases_sit_on_the_boundary():
    """The cases are what their names say: the reference accepts exactly the in-range ones."""
    assert MAX_INT32_REDUCTION == 133_144 and cpu_library().max_k_int32 == 131_071
    raising = []
    for name, a, b in value_cases() + depth_cases():
        total = int(a.astype(np.int64) @ b.astype(np.int64))
        raising.append(not INT32_MIN <= total <= INT32_MAX)
    assert raising == [False, True, False, True, False, True, True, False, True]


@pytest.fixture(scope="module", params=CPU_ENGINES)
def engine_lib(request):
    """The C library running one engine; an engine this machine lacks skips with the reason."""
    try:
        lib = engine_library(request.param)
    except CLibError as err:
        pytest.skip(f"engine {request.param} cannot run on this machine: {err}")
    assert lib.engine == request.param
    yield lib
    cpu_library().set_engine("auto")


def agree(got, want, what: str) -> None:
    """Run `got()` (the C op) and `want()` (the numpy reference): both raise IntegerOverflowError or
    both return equal arrays (and exponents)."""
    try:
        expected = want()
    except IntegerOverflowError:
        with pytest.raises(IntegerOverflowError, match="int32"):
            got()
        return
    result = got()
    if isinstance(expected, tuple):
        np.testing.assert_array_equal(result[0], expected[0], err_msg=what)
        assert result[1] == expected[1], what
        return
    assert result.dtype == expected.dtype, what
    np.testing.assert_array_equal(result, expected, err_msg=what)


def ref_int32(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (N, K)^T as the reference narrows it."""
    return check_int32(exact_int_matmul(a, b.T), "reference")


def with_rows(a: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """(rows, k): row 0 = a, the others small random values (their sums stay far from the limit, so
    only row 0 decides whether the op overflows)."""
    rng = np.random.default_rng(seed)
    m = rng.integers(-1, 2, size=(rows, a.size), dtype=np.int8)
    m[0] = a
    return m


# ---------------------------------------------------------------------------------------- GEMM, linear
@pytest.mark.parametrize("case", range(9))
def test_gemm_and_linear_at_the_int32_boundary(engine_lib, case):
    name, a, b = (value_cases() + depth_cases())[case]
    A = with_rows(a, 3, seed=1)  # (3, k)
    B = with_rows(b, 2, seed=2)  # (2, k)
    lib = engine_lib
    agree(lambda: lib.gemm_s8s8s32(A, B), lambda: ref_int32(A, B), f"gemm {name}")
    agree(lambda: lib.linear_forward(A, B), lambda: ref_int32(A, B), f"linear forward {name}")
    # input grad: dx (batch, in) = dy (batch, out) @ w (out, in), the reduction over out = k
    agree(lambda: lib.linear_input_grad(A, np.ascontiguousarray(B.T)), lambda: ref_int32(A, B),
          f"linear input grad {name}")
    # weight grad: dw (out, in) = dy^T (out, batch) @ x (batch, in), the reduction over the batch = k
    x, dy = np.ascontiguousarray(B.T), np.ascontiguousarray(A.T)  # (k, 2), (k, 3)
    agree(lambda: lib.linear_weight_grad(x, dy, out_dtype=np.int32), lambda: ref_int32(A, B),
          f"linear weight grad {name}")
    np.testing.assert_array_equal(lib.linear_weight_grad(x, dy), exact_int_matmul(A, B.T))  # int64: never raises
    np.testing.assert_array_equal(lib.gemm_s8s8s64(A, B), exact_int_matmul(A, B.T))


# ---------------------------------------------------------------------------------------- conv
# Forward kernels (O, kh, kw, C) whose one output pixel reduces over kh * kw * C: each sends the
# reduction through another path (on the AVX-512 VNNI build the direct kernel takes out_c <= 64 and
# the GEMM the rest; on AMX the grid conv takes stride-1 kernels with 16..64 outputs and short rows).
FORWARD_KERNELS = {"1x1, 4 outputs": (4, 1, 1), "1x1, 72 outputs": (72, 1, 1), "3x3, 3 outputs": (3, 3, 3),
                   "66x1 x 2048, 16 outputs (AMX grid)": (16, 66, 1)}


def forward_operands(o: int, kh: int, kw: int, a: np.ndarray, b: np.ndarray):
    """x (1, kh, kw, C), w (o, kh, kw, C) whose output channel 0 is a . b."""
    c = a.size // (kh * kw)
    assert c * kh * kw == a.size, (kh, kw, a.size)
    x = a.reshape(1, kh, kw, c)
    w = with_rows(b, o, seed=3).reshape(o, kh, kw, c)
    return x, w


def forward_conv_cases():
    cases = []
    for kname, (o, kh, kw) in FORWARD_KERNELS.items():
        k = {1: K, 9: 9 * 14_794, 66: 66 * 2048}[kh * kw]  # 133146, 133146, 135168
        for cname, a, b in value_cases(k) if kh * kw > 1 else value_cases(k) + depth_cases():
            cases.append((f"{kname}: {cname}", (o, kh, kw), a, b))
    return cases


FORWARD_CASES = forward_conv_cases()


def ref_conv_forward(x, w):
    o, kh, kw, c = w.shape
    cols = x.reshape(1, kh * kw * c)  # the one output pixel's patch
    return check_int32(exact_int_matmul(cols, w.reshape(o, -1).T), "reference").reshape(1, 1, 1, o)


@pytest.mark.parametrize("index", range(len(FORWARD_CASES)), ids=[c[0] for c in FORWARD_CASES])
def test_conv_forward_at_the_int32_boundary(engine_lib, index):
    name, (o, kh, kw), a, b = FORWARD_CASES[index]
    x, w = forward_operands(o, kh, kw, a, b)
    lib = engine_lib
    agree(lambda: lib.conv2d_forward(x, w, 1, 0), lambda: ref_conv_forward(x, w), name)
    for mode in ("nearest", "stochastic"):
        agree(lambda: lib.conv2d_forward_requantize(x, w, 1, 0, -14, mode, seed=3, step=5, tensor_id=7),
              lambda: requantize(ref_conv_forward(x, w), -14, mode, seed=3, step=5, tensor_id=7),
              f"{name}, fused {mode}")


# Input gradient dx (1, 1, 1, I) = sum over o of dy[o] * w[o, 0, 0, :] for a 1x1 kernel: the
# reduction runs over the output channels. Few input channels take the scatter kernel where its
# bound allows, more the gather GEMM.
INPUT_GRAD_CHANNELS = {"3 input channels": 3, "40 input channels": 40}
INPUT_GRAD_CASES = [(f"{iname}: {cname}", i, a, b) for iname, i in INPUT_GRAD_CHANNELS.items()
                    for cname, a, b in value_cases() + depth_cases()]


@pytest.mark.parametrize("index", range(len(INPUT_GRAD_CASES)), ids=[c[0] for c in INPUT_GRAD_CASES])
def test_conv_input_grad_at_the_int32_boundary(engine_lib, index):
    name, i, a, b = INPUT_GRAD_CASES[index]
    dy = a.reshape(1, 1, 1, -1)  # (1, 1, 1, O)
    w = np.ascontiguousarray(with_rows(b, i, seed=4).T).reshape(-1, 1, 1, i)  # (O, 1, 1, I)

    def ref():
        return check_int32(exact_int_matmul(dy.reshape(1, -1), w.reshape(-1, i)), "reference").reshape(1, 1, 1, i)

    lib = engine_lib
    agree(lambda: lib.conv2d_input_grad(dy, w, (1, 1), 1, 0), ref, name)
    agree(lambda: lib.conv2d_input_grad_requantize(dy, w, (1, 1), 1, 0, -14, "pseudo_stochastic", tensor_id=2),
          lambda: requantize(ref(), -14, "pseudo_stochastic", tensor_id=2), f"{name}, fused")


def test_conv_input_grad_3x3_padded_at_the_int32_boundary(engine_lib):
    """A 3x3 kernel, padding 2, on a 1x1 input: the 3x3 output's 9 taps all land on the one input
    pixel, so dx reduces over 9 * O products (O = 14794: K = 133146)."""
    lib = engine_lib
    for name, a, b in value_cases(9 * 14_794):
        # dx[0, 0, 0, i] = sum_{e, f, o} dy[e, f, o] * w[o, 2 - e, 2 - f, i]
        dy = a.reshape(1, 3, 3, 14_794)
        w = np.ascontiguousarray(b.reshape(3, 3, 14_794)[::-1, ::-1].transpose(2, 0, 1)).reshape(14_794, 3, 3, 1)

        def ref():
            return check_int32(np.array([int(a.astype(np.int64) @ b.astype(np.int64))]).reshape(1, 1, 1, 1),
                               "reference")

        agree(lambda: lib.conv2d_input_grad(dy, w, (1, 1), 1, 2), ref, f"3x3 pad 2: {name}")


def test_conv_input_grad_tall_kernel_at_the_int32_boundary(engine_lib):
    """A 66x1 kernel over 2048 output channels, padding 65 rows, on a 1x1 input with 16 channels:
    the 66-row output's taps all land on the one input pixel (K = 66 * 2048 = 135168). With AMX this
    is the stride-1 input gradient the grid conv would take, were the reduction short enough."""
    lib = engine_lib
    for name, a, b in value_cases(66 * 2048):
        dy = a.reshape(1, 66, 1, 2048)  # dy[0, e, 0, o]
        w = with_rows(np.zeros(66 * 2048, np.int8), 16, seed=7).T.reshape(2048, 66, 1, 16).copy()
        w[:, :, 0, 0] = b.reshape(66, 2048)[::-1].T  # w[o, 65 - e, 0, 0] = b[e * 2048 + o]

        def ref():  # dx[i] = sum over e, o of dy[e, o] * w[o, 65 - e, i]
            flipped = w[:, ::-1, 0, :].astype(np.int64)  # (O, E, I)
            dx = np.einsum("eo,oei->i", dy[0, :, 0, :].astype(np.int64), flipped)
            return check_int32(dx.reshape(1, 1, 1, 16), "reference")

        agree(lambda: lib.conv2d_input_grad(dy, w, (1, 1), 1, (65, 0)), ref, f"66x1: {name}")
        agree(lambda: lib.conv2d_input_grad_requantize(dy, w, (1, 1), 1, (65, 0), -9, "nearest"),
              lambda: requantize(ref(), -9, "nearest"), f"66x1 fused: {name}")


WEIGHT_GRAD_MAPS = {"one row of k pixels": lambda k: (1, 1, k), "k images of one pixel": lambda k: (k, 1, 1)}


@pytest.mark.parametrize("channels", [(2, 3), (32, 32)], ids=["2 in, 3 out", "32 in, 32 out (AMX grid)"])
@pytest.mark.parametrize("layout", list(WEIGHT_GRAD_MAPS))
def test_conv_weight_grad_at_the_int32_boundary(engine_lib, layout, channels):
    """dw (O, 1, 1, C) = sum over the batch's pixels of dy * x: the reduction runs over N * E * F."""
    lib = engine_lib
    c, o = channels
    for name, a, b in value_cases() + depth_cases():
        n, h, w_ = WEIGHT_GRAD_MAPS[layout](a.size)
        x = np.ascontiguousarray(with_rows(a, c, seed=5).T).reshape(n, h, w_, c)  # (N, H, W, C)
        dy = np.ascontiguousarray(with_rows(b, o, seed=6).T).reshape(n, h, w_, o)  # (N, E, F, O)
        wide = exact_int_matmul(dy.reshape(-1, o).T, x.reshape(-1, c)).reshape(o, 1, 1, c)
        agree(lambda: lib.conv2d_weight_grad(x, dy, 1, 1, 0, out_dtype=np.int32),
              lambda: check_int32(wide, "reference"), f"{layout}: {name}")
        np.testing.assert_array_equal(lib.conv2d_weight_grad(x, dy, 1, 1, 0), wide)


# ---------------------------------------------------------------------------------------- random sums
@settings(max_examples=12, deadline=None)
@given(total=st.integers(INT32_MAX - 40_000, INT32_MAX + 40_000), negate=st.booleans(),
       spare=st.integers(0, 200))
def test_sums_near_the_limit_agree_with_the_reference(engine_lib, total, negate, spare):
    """Random sums within 40000 of either end of int32, over 2 to 202 spare zero products: the
    GEMM, the 1x1 conv and its fused form raise exactly when the reference does."""
    target = -total - 1 if negate else total
    a, b = dot_pair(target, MAX_INT32_REDUCTION + 4 + spare)
    x, w = a.reshape(1, 1, 1, -1), with_rows(b, 3).reshape(3, 1, 1, -1)
    lib = engine_lib
    agree(lambda: lib.gemm_s8s8s32(a[None], b[None]), lambda: ref_int32(a[None], b[None]), "gemm")
    agree(lambda: lib.conv2d_forward(x, w), lambda: ref_conv_forward(x, w), "conv")
    agree(lambda: lib.conv2d_forward_requantize(x, w, 1, 0, 0, "nearest"),
          lambda: requantize(ref_conv_forward(x, w), 0, "nearest"), "fused conv")
