"""The C kernel library (gpu_backend/csrc, CPU build) equals the numpy definitions exactly.

GEMM and conv kernels are checked against plain numpy written here (int64 matmul, an im2col /
col2im reference) on every micro-kernel variant this machine can build (AVX-512 VNNI, AVX2,
portable C); the elementwise kernels against nitisim.contract.numerics and nitisim.contract.reference. No timing here.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from nitisim.contract import numerics as nm
from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.reference import dropout_mask as ref_dropout_mask

pytestmark = pytest.mark.cpu_lib

if shutil.which(os.environ.get("CC") or "gcc") is None:  # pragma: no cover - machines without a compiler
    pytest.skip("no C compiler to build the CPU kernel library", allow_module_level=True)

from gpu_backend import build  # noqa: E402
from gpu_backend.lib import CLibError, cdef_text, cpu_library  # noqa: E402

X86 = platform.machine() in ("x86_64", "AMD64")
# Every GEMM engine, as (build march, build flags, engine): amx and avx512vnni are engines of the
# native build, switched at run time; avx2 and scalar (the C micro-kernel with SSE2 packing) are
# builds of their own; portable has no SIMD at all (what a non-x86 machine compiles).
ENGINES = {"amx": ("native", (), "amx"), "avx512vnni": ("native", (), "avx512vnni"),
           "avx2": ("haswell", (), "avx2"), "scalar": ("x86-64", (), "scalar"),
           "portable": ("x86-64", ("-U__SSE2__",), "scalar")} if X86 else {"native": ("native", (), "auto")}


@pytest.fixture(scope="module")
def lib():
    return cpu_library()


@pytest.fixture(scope="module", params=list(ENGINES))
def any_lib(request):
    """Each GEMM engine this machine runs (the others skip, saying why); GEMM-shaped kernels must
    agree across all of them."""
    march, flags, engine = ENGINES[request.param]
    built = cpu_library(march, flags)
    try:
        built.set_engine(engine)
    except CLibError as err:
        pytest.skip(f"engine {engine} cannot run on this machine: {err}")
    assert built.engine == engine or engine == "auto"
    yield built
    built.set_engine("auto")


def rand_i8(rng, shape, lo=-127, hi=127):
    return rng.integers(lo, hi + 1, size=shape, dtype=np.int8)


# ------------------------------------------------------------------------------------ references
def ref_gemm(a, b):
    return a.astype(np.int64) @ b.astype(np.int64).T


def ref_im2col(x, kh, kw, stride, padding):
    """(N, H, W, C) -> (N*E*F, kh*kw*C), columns in (kh, kw, c) order, zero padded."""
    (sh, sw), (ph, pw) = stride, padding
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    e, f = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    cols = np.empty((n, e, f, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i : i + sh * e : sh, j : j + sw * f : sw, :]
    return cols.reshape(n * e * f, kh * kw * c), (e, f)


def ref_conv_forward(x, w, stride, padding):
    o, kh, kw, _ = w.shape
    cols, (e, f) = ref_im2col(x, kh, kw, stride, padding)
    return (cols.astype(np.int64) @ w.reshape(o, -1).astype(np.int64).T).reshape(x.shape[0], e, f, o)


def ref_conv_input_grad(dy, w, in_hw, stride, padding):
    """col2im scatter-add of dy @ w, cropped to the input."""
    (sh, sw), (ph, pw) = stride, padding
    n, e, f, o = dy.shape
    _, kh, kw, c = w.shape
    h, wd = in_hw
    cols = (dy.reshape(-1, o).astype(np.int64) @ w.reshape(o, -1).astype(np.int64)).reshape(n, e, f, kh, kw, c)
    out = np.zeros((n, h + 2 * ph + sh, wd + 2 * pw + sw, c), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + sh * e : sh, j : j + sw * f : sw, :] += cols[:, :, :, i, j, :]
    return out[:, ph : ph + h, pw : pw + wd, :]


def ref_conv_weight_grad(x, dy, kh, kw, stride, padding):
    cols, _ = ref_im2col(x, kh, kw, stride, padding)
    o = dy.shape[3]
    return (dy.reshape(-1, o).astype(np.int64).T @ cols.astype(np.int64)).reshape(o, kh, kw, x.shape[3])


def ref_maxpool(x, kernel, stride):
    """(max, first-max routing dx) by explicit window loops."""
    n, h, w, c = x.shape
    e, f = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    y = np.empty((n, e, f, c), np.int8)
    arg = np.empty((n, e, f, c), np.int64)
    for i in range(e):
        for j in range(f):
            win = x[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel, :].reshape(n, -1, c)
            y[:, i, j] = win.max(axis=1)
            arg[:, i, j] = win.argmax(axis=1)  # first maximum in row-major window order
    return y, arg


def ref_maxpool_grad(x, dy, kernel, stride):
    _, arg = ref_maxpool(x, kernel, stride)
    n, e, f, c = dy.shape
    dx = np.zeros(x.shape, np.int64)
    for i in range(e):
        for j in range(f):
            ky, kx = np.divmod(arg[:, i, j], kernel)
            for b in range(n):
                for ch in range(c):
                    dx[b, i * stride + ky[b, ch], j * stride + kx[b, ch], ch] += dy[b, i, j, ch]
    return nm.clamp_int8(dx)


# ------------------------------------------------------------------------------------ library
def test_abi_version_and_isa(lib):
    assert lib.abi_version == lib.binding.constant("NITI_ABI_VERSION")  # the header's (tests/test_c_constants.py)
    assert lib.kernel_isa in ("avx512vnni", "avx2", "scalar")


def test_variants_compile_the_intended_kernel():
    if not X86:
        pytest.skip("ISA variants are x86 only")
    assert cpu_library("haswell").kernel_isa == "avx2"
    assert cpu_library("x86-64").kernel_isa == "scalar"
    assert cpu_library("x86-64", ("-U__SSE2__",)).kernel_isa == "scalar"


def test_header_is_plain_declarations():
    """What cffi reads: prototypes, enums and integer #defines (niti_constants.h inlined), no other
    preprocessor lines."""
    text = cdef_text()
    assert "extern" not in text and "#include" not in text and "#ifndef" not in text
    assert all(line.startswith("#define NITI_") for line in text.splitlines() if line.startswith("#"))
    assert "int niti_abi_version(void);" in text and "NITI_E_OVERFLOW = 2" in text


def test_build_is_cached_and_keyed_by_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("NITISIM_CACHE", str(tmp_path))
    first = build.build_cpu(march="x86-64")
    assert first.is_relative_to(tmp_path) and first.name == "libniti_cpu.so"
    mtime = first.stat().st_mtime_ns
    assert build.build_cpu(march="x86-64") == first and first.stat().st_mtime_ns == mtime
    assert build.build_cpu(march="x86-64", extra_flags=("-DNITI_UNUSED_FLAG",)) != first
    assert not list(first.parent.glob("*.tmp"))


def test_missing_compiler_says_what_was_tried(monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-niti")
    with pytest.raises(build.BuildError, match="no-such-compiler-niti.*gcc"):
        build.build_cpu()


def test_bad_argument_raises_with_the_c_message(lib):
    with pytest.raises(CLibError, match="sizes must be >= 0") as info:
        lib.check(lib.lib.niti_gemm_s8s8s32(-1, 2, 3, lib.ffi.NULL, lib.ffi.NULL, lib.ffi.NULL))
    assert info.value.status == 1
    with pytest.raises(CLibError, match="unknown rounding mode 7"):
        lib.check(lib.lib.niti_requantize_s32(0, lib.ffi.NULL, 7, 0, 0, 0, lib.ffi.NULL, lib.ffi.new("int *")))
    with pytest.raises(CLibError, match="label 10 of row 0"):
        lib.loss_grad(np.zeros((1, 10), np.int8), -4, np.array([10]))


def test_int32_outputs_of_long_reductions_are_checked(lib):
    """Past 131071 products an int32 result is accumulated in int64 and narrowed with a check."""
    k = 140_000
    a = np.full((2, k), 127, np.int8)
    b = np.full((3, k), 127, np.int8)
    b[0, ::2] = -127  # a . b[0] = 0
    b[1, 1000:] = 0  # a . b[1] = 127 * 127 * 1000; a . b[2] = 127 * 127 * k > int32
    fits = b[:2]
    assert np.array_equal(lib.gemm_s8s8s32(a, fits), ref_gemm(a, fits))
    with pytest.raises(IntegerOverflowError, match="niti_gemm_s8s8s32: int32 accumulator overflow"):
        lib.gemm_s8s8s32(a, b)


def test_wrappers_check_dtype_and_layout(lib):
    a = np.zeros((4, 8), np.int8)
    with pytest.raises(TypeError, match="int8"):
        lib.gemm_s8s8s32(a.astype(np.int16), a)
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.gemm_s8s8s32(np.zeros((8, 4), np.int8).T, a)


def test_thread_count_does_not_change_results(lib):
    rng = np.random.default_rng(5)
    a, b = rand_i8(rng, (301, 257)), rand_i8(rng, (203, 257))
    try:
        lib.set_num_threads(1)
        one = lib.gemm_s8s8s32(a, b)
        lib.set_num_threads(2)
        assert lib.num_threads() == 2
        two = lib.gemm_s8s8s32(a, b)
    finally:
        lib.set_num_threads(0)
    assert np.array_equal(one, two) and np.array_equal(one, ref_gemm(a, b))


def test_long_k_split_between_threads(lib):
    """Long K and a small C: with two threads the K slices are split between them (private Cs added
    at the end); one thread, two threads and numpy agree, int32 and int64, at the int32 extremes."""
    rng = np.random.default_rng(9)
    a, b = rand_i8(rng, (50, 16384)), rand_i8(rng, (37, 16384))
    a[0], b[0] = 127, 127  # one output at 127 * 127 * 16384 (near the top of int32)
    a[1], b[1] = -128, 127  # and one at -128 * 127 * 16384
    x2, dy2 = rand_i8(rng, (256, 12, 12, 20)), rand_i8(rng, (256, 8, 8, 50))  # LeNet's conv2 weight gradient
    out = []
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            out.append((lib.gemm_s8s8s32(a, b), lib.gemm_s8s8s64(a, b),
                        lib.conv2d_weight_grad(x2, dy2, 5, 1, 0, out_dtype=np.int32)))
    finally:
        lib.set_num_threads(0)
    ref = ref_gemm(a, b)
    assert ref[0, 0] == 127 * 127 * 16384 and ref[1, 1] == -128 * 127 * 16384
    g = ref_conv_weight_grad(x2, dy2, 5, 5, (1, 1), (0, 0))
    for c32, c64, wg in out:
        assert np.array_equal(c32, ref) and np.array_equal(c64, ref) and np.array_equal(wg, g)


# ------------------------------------------------------------------------------------ GEMM
GEMM_SHAPES = [(1, 1, 1), (1, 1, 5), (3, 5, 1), (12, 32, 4), (13, 33, 7), (25, 65, 129), (100, 70, 300),
               (385, 37, 1030), (7, 530, 2100), (64, 64, 0)]


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm_random_and_edge_shapes(any_lib, m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    a, b = rand_i8(rng, (m, k)), rand_i8(rng, (n, k))
    ref = ref_gemm(a, b)
    assert np.array_equal(any_lib.gemm_s8s8s32(a, b), ref)
    assert np.array_equal(any_lib.gemm_s8s8s64(a, b), ref)


# Depths that are whole 64-byte tile rows (no zero padding in any packed panel: every vgg conv but
# the first): ragged 32-row panels (M % 32 != 0), more than one K slice (K > 2048 packed, > 4608 with
# A in place), each thread driver (one thread below 2^24 MACs, then shared B, slabs for a B over
# 1 MB cut along N or M, in one or more B blocks, K split for long K and a small C), and int64
# outputs. A starts on a cache line (the AMX engine then reads its rows in place, A panel by A
# panel) or 16 bytes past one (numpy's own alignment: packed).
WHOLE_TILE_DEPTH_SHAPES = [(32, 32, 64), (33, 65, 128), (31, 40, 640), (5, 7, 4160), (1000, 96, 1152),
                           (256, 128, 2304), (40, 4000, 2112), (300, 260, 4160), (70, 50, 8256),
                           (400, 96, 11008)]


def at_offset(x: np.ndarray, offset: int) -> np.ndarray:
    """A copy of x whose data starts `offset` bytes past a 64-byte boundary."""
    from gpu_backend.aligned import empty_aligned

    out = empty_aligned(x.nbytes + offset, np.uint8)[offset:].view(x.dtype).reshape(x.shape)
    out[...] = x
    assert out.ctypes.data % 64 == offset
    return out


@pytest.mark.parametrize("offset", [0, 16])
@pytest.mark.parametrize("m,n,k", WHOLE_TILE_DEPTH_SHAPES)
def test_gemm_whole_tile_depths(any_lib, m, n, k, offset):
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a, b = at_offset(rand_i8(rng, (m, k)), offset), rand_i8(rng, (n, k))
    ref = ref_gemm(a, b)
    assert np.array_equal(any_lib.gemm_s8s8s32(a, b), ref)
    assert np.array_equal(any_lib.gemm_s8s8s64(a, b), ref)
    assert np.array_equal(any_lib.linear_forward(a, b), ref)  # the same product through the layer op


@pytest.mark.parametrize("shape,dtype", [((8, 8), np.int8), ((3, 5, 7), np.int32), ((0, 4), np.int64), ((), np.int32),
                                         (17, np.int16)])
def test_aligned_arrays_start_on_cache_lines(shape, dtype):
    from gpu_backend.aligned import aligned_copy, empty_aligned

    a = empty_aligned(shape, dtype)
    assert a.dtype == dtype and a.shape == np.empty(shape).shape and a.flags.c_contiguous
    x = np.arange(a.size, dtype=dtype).reshape(a.shape)
    y = aligned_copy(x)
    assert np.array_equal(x, y)
    if a.size:  # an empty array has no data to align (numpy leaves its pointer anywhere)
        assert a.ctypes.data % 64 == 0 and y.ctypes.data % 64 == 0


def test_outputs_start_on_cache_lines(lib):
    """Later ops read them: the AMX engine reads a GEMM's A rows in place only from aligned rows."""
    rng = np.random.default_rng(5)
    a, b = rand_i8(rng, (33, 128)), rand_i8(rng, (7, 128))
    for out in (lib.gemm_s8s8s32(a, b), lib.gemm_s8s8s64(a, b), lib.linear_forward(a, b)):
        assert out.ctypes.data % 64 == 0


@pytest.mark.parametrize("fill_a,fill_b", [(127, 127), (-127, 127), (-127, -127), (-128, -128), (-128, 127)])
def test_gemm_extreme_values(any_lib, fill_a, fill_b):
    m, n, k = 14, 35, 4099
    a, b = np.full((m, k), fill_a, np.int8), np.full((n, k), fill_b, np.int8)
    assert np.array_equal(any_lib.gemm_s8s8s32(a, b), np.full((m, n), fill_a * fill_b * k))


def test_gemm_s64_exceeds_int32(any_lib):
    k = 140_000  # 127 * 127 * k > 2**31
    a = np.full((3, k), 127, np.int8)
    b = np.full((5, k), 127, np.int8)
    b[1] = -127
    out = any_lib.gemm_s8s8s64(a, b)
    assert out[0, 0] == 127 * 127 * k > nm.INT32_MAX
    assert np.array_equal(out, ref_gemm(a, b))


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 70), k=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_gemm_property(lib, m, n, k, seed):
    rng = np.random.default_rng(seed)
    a, b = rand_i8(rng, (m, k)), rand_i8(rng, (n, k))
    assert np.array_equal(lib.gemm_s8s8s32(a, b), ref_gemm(a, b))


# ------------------------------------------------------------------------------------ linear
@pytest.mark.parametrize("batch,in_f,out_f", [(1, 1, 1), (7, 33, 10), (64, 300, 45), (256, 800, 500), (64, 8192, 10),
                                             (0, 5, 3)])
def test_linear_three_gemms(any_lib, batch, in_f, out_f):
    rng = np.random.default_rng(batch + in_f + out_f)
    x, w, dy = rand_i8(rng, (batch, in_f)), rand_i8(rng, (out_f, in_f)), rand_i8(rng, (batch, out_f))
    assert np.array_equal(any_lib.linear_forward(x, w), x.astype(np.int64) @ w.astype(np.int64).T)
    assert np.array_equal(any_lib.linear_input_grad(dy, w), dy.astype(np.int64) @ w.astype(np.int64))
    g = dy.astype(np.int64).T @ x.astype(np.int64)
    assert np.array_equal(any_lib.linear_weight_grad(x, dy), g)
    out32 = any_lib.linear_weight_grad(x, dy, out_dtype=np.int32)
    assert out32.dtype == np.int32 and np.array_equal(out32, g)


def test_linear_weight_grad_long_batch(lib):
    batch = 140_000
    x = np.full((batch, 4), 127, np.int8)
    dy = np.full((batch, 3), 127, np.int8)
    dy[::2, 1] = -127
    g = lib.linear_weight_grad(x, dy)
    assert g[0, 0] == 127 * 127 * batch > nm.INT32_MAX
    assert np.array_equal(g, dy.astype(np.int64).T @ x.astype(np.int64))
    with pytest.raises(IntegerOverflowError, match="int32 accumulator overflow"):
        lib.linear_weight_grad(x, dy, out_dtype=np.int32)
    small = np.ascontiguousarray(dy[:, 1:2])  # +-127 alternating: sums stay tiny
    assert np.array_equal(lib.linear_weight_grad(x, small, out_dtype=np.int32),
                          small.astype(np.int64).T @ x.astype(np.int64))


# ------------------------------------------------------------------------------------ conv
CONV_CASES = [
    # batch, h, w, in_c, out_c, kernel (kh, kw), stride, padding
    (2, 8, 8, 3, 5, (3, 3), (1, 1), (1, 1)),
    (2, 9, 7, 4, 6, (3, 3), (2, 2), (1, 1)),
    (1, 7, 10, 5, 3, (5, 5), (1, 1), (2, 2)),
    (3, 6, 6, 16, 8, (1, 1), (1, 1), (0, 0)),
    (1, 5, 5, 2, 4, (1, 1), (2, 2), (2, 2)),
    (2, 10, 9, 3, 7, (5, 3), (2, 1), (2, 0)),
    (1, 11, 11, 8, 4, (5, 5), (2, 2), (0, 0)),
    (2, 12, 12, 36, 40, (3, 3), (1, 1), (1, 1)),
    (1, 4, 4, 130, 33, (3, 3), (1, 1), (0, 0)),
    (4, 16, 16, 64, 64, (3, 3), (1, 1), (1, 1)),
    # wide enough for the GEMM path on every engine (no direct kernel), ragged against AMX's 32 x 32
    # C tiles and 64-deep K steps
    (2, 6, 7, 70, 97, (3, 3), (1, 1), (1, 1)),
    (3, 9, 9, 33, 130, (3, 3), (2, 2), (1, 1)),
    (1, 8, 8, 128, 256, (3, 3), (1, 1), (1, 1)),
    # a kernel large enough (O x taps x I > 2**20) for the threaded flip-transpose of the input grad
    (1, 4, 4, 257, 520, (3, 3), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("n,h,w,c,o,kernel,stride,padding", CONV_CASES)
def test_conv2d_three_gemms(any_lib, n, h, w, c, o, kernel, stride, padding):
    rng = np.random.default_rng(n * h * w + c * o)
    kh, kw = kernel
    x, wt = rand_i8(rng, (n, h, w, c)), rand_i8(rng, (o, kh, kw, c))
    y = any_lib.conv2d_forward(x, wt, stride, padding)
    assert y.dtype == np.int32 and np.array_equal(y, ref_conv_forward(x, wt, stride, padding))
    dy = rand_i8(rng, y.shape)
    dx = any_lib.conv2d_input_grad(dy, wt, (h, w), stride, padding)
    assert dx.dtype == np.int32 and np.array_equal(dx, ref_conv_input_grad(dy, wt, (h, w), stride, padding))
    g = ref_conv_weight_grad(x, dy, kh, kw, stride, padding)
    assert np.array_equal(any_lib.conv2d_weight_grad(x, dy, kernel, stride, padding), g)
    assert np.array_equal(any_lib.conv2d_weight_grad(x, dy, kernel, stride, padding, out_dtype=np.int32), g)


def test_empty_batch(lib):
    x, w = np.zeros((0, 5, 5, 3), np.int8), np.zeros((4, 3, 3, 3), np.int8)
    assert lib.conv2d_forward(x, w, 1, 1).shape == (0, 5, 5, 4)
    g = lib.conv2d_weight_grad(x, np.zeros((0, 5, 5, 4), np.int8), 3, 1, 1)
    assert g.shape == (4, 3, 3, 3) and not g.any()
    assert lib.requantize(np.zeros(0, np.int32), 3, "stochastic")[1] == 3


def test_conv2d_matches_the_reference_executor(lib):
    from nitisim.contract import reference

    rng = np.random.default_rng(11)
    x, w = rand_i8(rng, (2, 6, 6, 3)), rand_i8(rng, (4, 3, 3, 3))
    cols = reference.im2col(x, 3, 1, 1)
    ref = cols.reshape(-1, 27).astype(np.int64) @ w.reshape(4, -1).astype(np.int64).T
    assert np.array_equal(lib.conv2d_forward(x, w, 1, 1).reshape(-1, 4), ref)
    dy = rand_i8(rng, (2, 6, 6, 4))
    dcols = (dy.reshape(-1, 4).astype(np.int64) @ w.reshape(4, -1).astype(np.int64)).reshape(2, 6, 6, 3, 3, 3)
    assert np.array_equal(lib.conv2d_input_grad(dy, w, (6, 6), 1, 1), reference.col2im(dcols, x.shape, 1, 1))


def test_conv2d_weight_grad_exceeds_int32(lib):
    x = np.full((2, 260, 260, 1), 127, np.int8)  # 135200 output pixels: longer than the int32 bound
    dy = np.full((2, 260, 260, 2), 127, np.int8)
    dy[..., 1] = -127
    g = lib.conv2d_weight_grad(x, dy, 1, 1, 0)
    assert g[0, 0, 0, 0] == 127 * 127 * 135200 > nm.INT32_MAX
    assert np.array_equal(g, ref_conv_weight_grad(x, dy, 1, 1, (1, 1), (0, 0)))
    with pytest.raises(IntegerOverflowError, match="niti_conv2d_weight_grad_s32: int32 accumulator overflow"):
        lib.conv2d_weight_grad(x, dy, 1, 1, 0, out_dtype=np.int32)


def test_conv2d_weight_grad_int32_at_the_graph_bound(lib):
    """batch 128 at 32 x 32 reduces over 131072 pixels: the graph's int32 bound (127 * 127 * K <=
    2**31 - 1) holds, so the int32 form must return the exact values."""
    rng = np.random.default_rng(3)
    x, dy = rand_i8(rng, (128, 32, 32, 2)), rand_i8(rng, (128, 32, 32, 3))
    g = lib.conv2d_weight_grad(x, dy, 3, 1, 1, out_dtype=np.int32)
    assert g.dtype == np.int32 and np.array_equal(g, ref_conv_weight_grad(x, dy, 3, 3, (1, 1), (1, 1)))


# Narrow conv shapes take direct kernels (gpu_backend/csrc/cpu_direct.c) instead of the packed GEMM:
#   forward: out_c <= 64, or the packed weight table k_h * ceil(k_w in_c / 4) * 4 * round_up(out_c, 32)
#     bytes <= 64 KiB (AVX-512 VNNI builds);
#   weight grad: k_h k_w in_c * round_up(out_c, 4) <= 2048, out_c <= 64 and the dy pixels cover at
#     least a quarter of the padded grid (AVX-512 VNNI builds);
#   input grad: the scatter form (col2im of dy @ w) when its MAC count is below the gather form's
#     (every build), e.g. a 5x5 "full" convolution onto few input channels.
# Each case below says which paths it takes; all must equal the numpy references exactly.
NARROW_CONV_CASES = [
    # batch, h, w, in_c, out_c, kernel, stride, padding    paths: forward / weight grad / input grad
    (3, 28, 28, 1, 20, (5, 5), (1, 1), (0, 0)),  # LeNet conv1: direct / direct / scatter
    (2, 12, 12, 20, 50, (5, 5), (1, 1), (0, 0)),  # LeNet conv2: direct / GEMM / scatter
    (2, 11, 13, 1, 1, (5, 5), (1, 1), (2, 2)),  # one output channel, padding: direct / direct / scatter
    (2, 9, 9, 3, 16, (3, 3), (1, 1), (1, 1)),  # exactly one 16-lane block: direct / direct / scatter
    (2, 9, 9, 3, 17, (3, 3), (2, 1), (1, 1)),  # 16 + 1 lanes, stride (2, 1): direct / direct / scatter
    (2, 9, 9, 3, 17, (3, 3), (2, 2), (1, 1)),  # stride 2: grid under a quarter covered: direct / GEMM / scatter
    (1, 10, 9, 2, 33, (3, 5), (1, 2), (2, 1)),  # two lane pairs, stride_w 2: direct / direct / scatter
    (2, 8, 8, 4, 64, (3, 3), (1, 1), (0, 0)),  # 64 output channels: direct / GEMM / scatter
    (2, 10, 10, 4, 7, (5, 4), (1, 1), (1, 3)),  # unequal paddings: direct / direct / scatter
    (2, 10, 10, 5, 7, (5, 4), (1, 1), (1, 3)),  # a 20-byte kernel row: direct / direct / scatter
    (1, 6, 6, 1, 65, (1, 1), (1, 1), (0, 0)),  # out_c > 64, tiny weight table: direct / GEMM / gather
    (1, 6, 6, 128, 96, (3, 3), (1, 1), (1, 1)),  # 110 KiB weight table: GEMM / GEMM / gather
    (2, 7, 7, 1, 5, (7, 7), (1, 1), (0, 0)),  # a 1x1 output map: direct / GEMM / scatter
    (2, 9, 9, 2, 3, (3, 3), (3, 3), (0, 0)),  # stride 3: direct / GEMM / scatter
    (2, 8, 8, 6, 3, (2, 2), (2, 2), (0, 0)),  # stride = kernel: direct / direct / scatter
    (2, 9, 11, 2, 32, (3, 3), (1, 1), (1, 1)),  # 32 dy channels: the widest one-permute plane build
    (3, 9, 10, 1, 40, (3, 3), (1, 1), (0, 2)),  # 40 dy channels: planes through interleave4
    (2, 13, 9, 2, 5, (3, 2), (2, 1), (0, 0)),  # stride_h 2: dy rows on every other grid row
]


# AVX-512 VNNI without VBMI (Cascade Lake) builds the weight-gradient planes without vpermt2b.
NARROW_VARIANTS = {"native": ("native", ()), "cascadelake": ("cascadelake", ())} if X86 else {"native": ("native", ())}


@pytest.fixture(scope="module", params=list(NARROW_VARIANTS))
def narrow_lib(request):
    march, flags = NARROW_VARIANTS[request.param]
    built = cpu_library(march, flags)
    if request.param != "native" and cpu_library().kernel_isa != "avx512vnni":
        pytest.skip("this CPU cannot run the AVX-512 VNNI build")
    return built


@pytest.mark.parametrize("n,h,w,c,o,kernel,stride,padding", NARROW_CONV_CASES)
@pytest.mark.parametrize("fill", ["random", "max", "min", "mixed"])
def test_conv2d_narrow_shapes(narrow_lib, n, h, w, c, o, kernel, stride, padding, fill):
    lib = narrow_lib
    rng = np.random.default_rng(n * h * w + c * o + sum(kernel))
    kh, kw = kernel
    x, wt = rand_i8(rng, (n, h, w, c)), rand_i8(rng, (o, kh, kw, c))
    if fill == "max":  # every product +127 * 127
        x[:], wt[:] = 127, 127
    elif fill == "min":  # -128 too: the +128 bias of the direct kernels must stay exact
        x[:], wt[:] = -128, -128
    elif fill == "mixed":
        x, wt = np.where(x > 0, 127, -128).astype(np.int8), np.where(wt > 0, -127, 127).astype(np.int8)
    y = lib.conv2d_forward(x, wt, stride, padding)
    assert np.array_equal(y, ref_conv_forward(x, wt, stride, padding))
    dy = rand_i8(rng, y.shape) if fill == "random" else np.full(y.shape, {"max": 127, "min": -128}.get(fill, -127), np.int8)
    dx = lib.conv2d_input_grad(dy, wt, (h, w), stride, padding)
    assert np.array_equal(dx, ref_conv_input_grad(dy, wt, (h, w), stride, padding))
    g = ref_conv_weight_grad(x, dy, kh, kw, stride, padding)
    assert np.array_equal(lib.conv2d_weight_grad(x, dy, kernel, stride, padding), g)
    assert np.array_equal(lib.conv2d_weight_grad(x, dy, kernel, stride, padding, out_dtype=np.int32), g)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv2d_direct_weight_grad_long_reduction(lib, threads):
    """A direct weight gradient over 2,359,296 pixels: its int32 lane sums are flushed into int64
    several times (more often on one thread), and the total leaves int32."""
    x = np.full((144, 128, 128, 1), 127, np.int8)
    dy = np.full((144, 128, 128, 2), -128, np.int8)
    dy[..., 1] = 127
    dy[:, ::3, :, 1] = -127
    try:
        lib.set_num_threads(threads)
        g = lib.conv2d_weight_grad(x, dy, 1, 1, 0)
        with pytest.raises(IntegerOverflowError, match="niti_conv2d_weight_grad_s32: int32 accumulator overflow"):
            lib.conv2d_weight_grad(x, dy, 1, 1, 0, out_dtype=np.int32)
    finally:
        lib.set_num_threads(0)
    assert g[0, 0, 0, 0] == -128 * 127 * 144 * 128 * 128 < -(2**31)
    assert np.array_equal(g, ref_conv_weight_grad(x, dy, 1, 1, (1, 1), (0, 0)))


def test_conv2d_narrow_shapes_thread_count_does_not_change_results(lib):
    rng = np.random.default_rng(8)
    x, wt = rand_i8(rng, (64, 28, 28, 1)), rand_i8(rng, (20, 5, 5, 1))
    dy2, w2 = rand_i8(rng, (64, 8, 8, 50)), rand_i8(rng, (50, 5, 5, 20))
    results = []
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            y = lib.conv2d_forward(x, wt, 1, 0)
            results.append((y, lib.conv2d_weight_grad(x, rand_i8(np.random.default_rng(1), y.shape), 5, 1, 0),
                            lib.conv2d_input_grad(dy2, w2, (12, 12), 1, 0)))
    finally:
        lib.set_num_threads(0)
    for a, b in zip(*results):
        assert np.array_equal(a, b)
    assert np.array_equal(results[0][0], ref_conv_forward(x, wt, (1, 1), (0, 0)))
    assert np.array_equal(results[0][2], ref_conv_input_grad(dy2, w2, (12, 12), (1, 1), (0, 0)))


# ------------------------------------------------------------------------------------ hash
def test_mix32_hash_key_and_draws(lib):
    x = np.array([0, 1, 2, 0xFFFFFFFF, 0x12345678, 0x80000000], dtype=np.uint32)
    x = np.concatenate([x, np.random.default_rng(0).integers(0, 2**32, 1000, dtype=np.uint32)])
    assert np.array_equal(lib.mix32(x), nm.mix32(x))
    for seed, step, tid in [(0, 0, 0), (1, 2, 3), (2**32 - 1, 7, 99), (-1, 2**33 + 5, 12)]:
        assert lib.hash_key(seed, step, tid) == nm.hash_key(seed, step, tid)
        for s in (1, 4, 17, 31):
            assert np.array_equal(lib.uniform_below_pow2(s, seed, step, tid, 500),
                                  nm.uniform_below_pow2(s, seed, step, tid, 500))


def test_fine_table_equals_python(lib):
    assert lib.fine_exp2_table_q16() == nm.FINE_EXP2_TABLE_Q16


# ------------------------------------------------------------------------------------ shifts
SPEC_VECTORS = [  # (input, s, PSR, nearest) after the int8 clamp, spec section 2
    (1000, 5, 32, 31), (-1000, 5, -32, -31), (7, 1, 4, 4), (7, 2, 1, 2), (6, 2, 2, 2), (37, 3, 4, 5),
                (-37, 3, -4, -5), (4095, 5, 127, 127), (100000, 12, 24, 24)]


@pytest.mark.parametrize("x,s,psr,nearest", SPEC_VECTORS)
def test_spec_round_vectors(lib, x, s, psr, nearest):
    v = np.array([x], np.int64)
    assert nm.clamp_int8(lib.round_shift(v, s, "pseudo_stochastic")).tolist() == [psr]
    assert nm.clamp_int8(lib.round_shift(v, s, "nearest")).tolist() == [nearest]


@pytest.mark.parametrize("s,pattern", [(2, "0010"), (3, "00101011"), (4, "0000100011001110")])
def test_spec_psr_up_patterns(lib, s, pattern):
    r = np.arange(2**s, dtype=np.int64) + (5 << s)  # q = 5: up adds one
    up = lib.round_shift(r, s, "pseudo_stochastic") - 5
    assert "".join(map(str, up.tolist())) == pattern


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=50), s=st.integers(0, 70),
       mode=st.sampled_from(nm.ROUNDING_MODES), seed=st.integers(0, 2**32 - 1), step=st.integers(0, 1000))
def test_round_shift_property(lib, values, s, mode, seed, step):
    x = np.array(values, dtype=np.int64)
    got = lib.round_shift(x, s, mode, seed=seed, step=step, tensor_id=3)
    assert np.array_equal(got, nm.round_shift(x, s, mode, seed=seed, step=step, tensor_id=3))


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(0, 31), n=st.integers(0, 200), mode=st.sampled_from(nm.ROUNDING_MODES),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_requantize_property(lib, bits, n, mode, seed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    hi = 2**bits - 1
    acc = rng.integers(-hi, hi + 1, size=n, dtype=np.int64).astype(np.int32)
    if n and data.draw(st.booleans()):
        acc[0] = data.draw(st.sampled_from([nm.INT32_MAX, -nm.INT32_MAX - 1, 128, -128, 129]))
    m, e = lib.requantize(acc, -9, mode, seed=seed, step=4, tensor_id=2)
    m_ref, e_ref = nm.requantize(acc, -9, mode, seed=seed, step=4, tensor_id=2)
    assert e == e_ref and m.dtype == np.int8 and np.array_equal(m, m_ref)


@pytest.mark.parametrize("mode", nm.ROUNDING_MODES)
def test_requantize_every_shift(lib, mode):
    """The int32 requantization loop at every shift an int32 range can give (1..24), on values
    spread over the range (remainders at, below and above the rounding thresholds) and its ends."""
    seed = 77
    rng = np.random.default_rng(seed)
    for bits in range(8, 32):
        hi = 2**bits - 1
        acc = np.concatenate([
            rng.integers(-hi, hi + 1, size=3000, dtype=np.int64),
            [hi, -hi, 2 ** (bits - 1) + 1, -(2 ** (bits - 1)) - 1, 0, 1, -1, 127, -127, 128, -128],
            np.arange(-300, 300) * 2 ** max(bits - 9, 0),  # many multiples: ties of nearest and PSR
        ]).astype(np.int32)
        if bits == 31:
            acc = np.concatenate([acc, [nm.INT32_MAX, -nm.INT32_MAX - 1]]).astype(np.int32)
        m, e = lib.requantize(acc, 3, mode, seed=seed, step=bits, tensor_id=5)
        m_ref, e_ref = nm.requantize(acc, 3, mode, seed=seed, step=bits, tensor_id=5)
        assert e == e_ref and np.array_equal(m, m_ref), (bits, mode)


@pytest.mark.parametrize("pattern", ["random", "rising", "last_peak", "small", "first_peak"])
def test_requantize_blocked_large(lib, pattern):
    """Above 16 blocks of 16384 the accumulator is requantized block by block with the running
    range's shift, and blocks done with a shift other than the final one are redone: the result
    must be the two-pass result whatever the order of the magnitudes, on 1 and 2 threads."""
    rng = np.random.default_rng(21)
    n = 40 * 16384 + 123
    if pattern == "random":
        acc = rng.integers(-(2**20), 2**20, size=n, dtype=np.int64)
    elif pattern == "rising":  # the range doubles again and again: most blocks are redone
        acc = (np.arange(n, dtype=np.int64) * 53) * np.where(rng.random(n) < 0.5, -1, 1)
    elif pattern == "last_peak":  # everything small but one value in the last block
        acc = rng.integers(-300, 300, size=n, dtype=np.int64)
        acc[-5] = -(2**31)
    elif pattern == "small":  # no shift at all: saturation only
        acc = rng.integers(-127, 128, size=n, dtype=np.int64)
    else:
        acc = rng.integers(-(2**12), 2**12, size=n, dtype=np.int64)
        acc[3] = 2**31 - 1
    acc = acc.astype(np.int32)
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            for mode in nm.ROUNDING_MODES:
                m, e = lib.requantize(acc, -4, mode, seed=5, step=threads, tensor_id=9)
                m_ref, e_ref = nm.requantize(acc, -4, mode, seed=5, step=threads, tensor_id=9)
                assert e == e_ref and np.array_equal(m, m_ref), (pattern, threads, mode)
    finally:
        lib.set_num_threads(0)


def test_range_bits_and_narrow(lib):
    for x in ([0], [1], [-1], [2], [128], [-128], [129], [nm.INT32_MAX], [-nm.INT32_MAX - 1], []):
        a = np.array(x, np.int32)
        assert lib.range_bits(a) == nm.range_bits(a)
        assert lib.range_bits(a.astype(np.int64)) == nm.range_bits(a)
    big = np.array([2**62, -(2**63)], np.int64)
    assert lib.range_bits(big) == nm.range_bits(big) == 63
    ok = np.array([nm.INT32_MAX, -nm.INT32_MAX - 1, 5], np.int64)
    assert np.array_equal(lib.narrow_int32(ok), ok)
    with pytest.raises(IntegerOverflowError, match="overflow"):
        lib.narrow_int32(np.array([nm.INT32_MAX + 1], np.int64))


# ------------------------------------------------------------------------------------ layers
def test_relu_forward_backward(lib):
    rng = np.random.default_rng(1)
    x, dy = rand_i8(rng, (3, 5, 7, 9)), rand_i8(rng, (3, 5, 7, 9))
    assert np.array_equal(lib.relu_forward(x), np.maximum(x, 0))
    assert np.array_equal(lib.relu_backward(x, dy), np.where(x > 0, dy, 0))
    big = rand_i8(rng, (5_000_000,))  # above NITI_LIGHT_PARALLEL_MIN_ELEMS: the threaded path
    assert np.array_equal(lib.relu_forward(big), np.maximum(big, 0))
    assert np.array_equal(lib.relu_backward(big, big[::-1].copy()), np.where(big > 0, big[::-1], 0))


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 8, 8, 3), 2, 2), ((1, 9, 7, 5), 2, 2), ((2, 7, 7, 4), 3, 2), ((1, 6, 6, 2), 3, 3), ((2, 5, 6, 3), 2, 1),
    ((2, 24, 24, 20), 2, 2),  # LeNet's pool1 (20 channels: one masked vector)
    ((1, 8, 8, 64), 2, 2), ((1, 6, 6, 70), 2, 2), ((1, 5, 5, 130), 2, 2),  # one vector, one plus a tail, two plus
    ((2, 9, 11, 3), 2, 3),  # stride > kernel: gaps between windows stay zero
    ((1, 10, 10, 5), 3, 3),  # a row and a column past the last window
])
def test_maxpool(any_lib, shape, kernel, stride):
    rng = np.random.default_rng(sum(shape))
    x = rand_i8(rng, shape, -3, 3)  # small range: many ties, so "first maximum" matters
    y, _ = ref_maxpool(x, kernel, stride)
    assert np.array_equal(any_lib.maxpool_forward(x, kernel, stride), y)
    dy = rand_i8(rng, y.shape)
    assert np.array_equal(any_lib.maxpool_backward(x, dy, kernel, stride), ref_maxpool_grad(x, dy, kernel, stride))
    x = np.where(x > 0, 127, -127).astype(np.int8)  # the extremes, tied across most windows
    y, _ = ref_maxpool(x, kernel, stride)
    assert np.array_equal(any_lib.maxpool_forward(x, kernel, stride), y)
    assert np.array_equal(any_lib.maxpool_backward(x, dy, kernel, stride), ref_maxpool_grad(x, dy, kernel, stride))


@pytest.mark.parametrize("shape,kernel,stride", [
    ((2, 7, 7, 5), 3, 2), ((2, 8, 8, 5), 3, 2), ((1, 9, 6, 3), 3, 2),  # the ResNet stem's pool, odd and even
    ((2, 5, 5, 4), 3, 1), ((1, 6, 7, 3), 3, 1),  # overlapping windows: routed errors sum and saturate
    ((1, 8, 8, 70), 3, 2), ((1, 6, 5, 130), 3, 2),  # one vector plus a tail, two plus (the AVX-512 build)
    ((2, 5, 6, 3), 2, 2), ((1, 1, 2, 3), 3, 3),  # disjoint padded windows; an input smaller than the kernel
])
def test_maxpool_padded_equals_numpy(any_lib, shape, kernel, stride):
    """Padding 1 (-infinity): forward and backward equal the numpy reference, on every engine build."""
    from nitisim.contract.executor import StepContext
    from nitisim.contract.graph import Node
    from nitisim.contract.reference import ReferenceOps

    def node(op):
        return Node("pool", op, "forward", "pool", (), (), (("kernel", kernel), ("padding", 1), ("stride", stride)), 1)

    rng = np.random.default_rng(sum(shape) + kernel)
    for lo, hi in ((-127, 127), (-2, 2), (-127, -120)):  # ties; all negative: a padded 0 would win
        x = rand_i8(rng, shape, lo, hi)
        (y,) = ReferenceOps.maxpool(node("maxpool"), StepContext(), nm.QTensor(x, 0))
        assert np.array_equal(any_lib.maxpool_forward(x, kernel, stride, 1), y)
        for dy in (rand_i8(rng, y.shape), rand_i8(rng, y.shape, 100, 127)):  # large errors saturate
            (dx,) = ReferenceOps.maxpool_grad(node("maxpool_grad"), StepContext(), nm.QTensor(x, 0), nm.QTensor(dy, 0))
            assert np.array_equal(any_lib.maxpool_backward(x, dy, kernel, stride, 1), dx)


def test_maxpool_padding_must_be_below_the_kernel(lib):
    x = np.zeros((1, 4, 4, 2), np.int8)
    with pytest.raises(CLibError, match="padding < kernel"):
        lib.maxpool_forward(x, 2, 2, 2)
    with pytest.raises(CLibError, match="padding < kernel"):
        lib.maxpool_backward(x, np.zeros((1, 4, 4, 2), np.int8), 2, 2, 2)


def test_padded_pool_training_steps_equal_numpy(any_lib):
    """Whole steps of a net with the ResNet stem's pool (3x3, stride 2, padding 1) on the C kernels
    of every engine build: weights and logits bit-identical to numpy."""
    from gpu_backend.backends import CpuOps
    from nitisim.contract.executor import StepContext, train_step
    from nitisim.contract.graph import build_graph
    from nitisim.contract.init import init_params
    from nitisim.contract.kernel_table import build_kernel_table
    from nitisim.contract.models import Conv, Flatten, Linear, MaxPool, ModelSpec, ReLU
    from nitisim.contract.reference import REFERENCE_KERNELS

    model = ModelSpec("stem", (11, 11, 3), (Conv(8, 3, 1, 1), ReLU(), MaxPool(3, 2, 1), Conv(8, 3, 1, 1), ReLU(),
                                             MaxPool(3, 1, 1), Flatten(), Linear(10)))
    g = build_graph(model, 3)
    table = build_kernel_table(CpuOps(any_lib))
    rng = np.random.default_rng(5)
    ref_params = got_params = init_params(g, seed=2)
    for step in range(2):
        x = nm.QTensor(rand_i8(rng, (3, 11, 11, 3)), -7)
        labels = rng.integers(0, 10, 3).astype(np.int32)
        ctx = StepContext(seed=3, step=step, mu=4)
        want = train_step(g, REFERENCE_KERNELS, ref_params, x, labels, ctx, keep=(g.logits_name,))
        got = train_step(g, table, got_params, x, labels, ctx, keep=(g.logits_name,))
        assert np.array_equal(got.tensors[g.logits_name].m, want.tensors[g.logits_name].m)
        for name, t in want.params.items():
            assert np.array_equal(got.params[name].m, t.m) and got.params[name].e == t.e, (step, name)
        ref_params, got_params = want.params, got.params


def test_maxpool_large_threaded(lib):
    """Above NITI_LIGHT_PARALLEL_MIN_ELEMS the pooling loops run on threads: same result."""
    rng = np.random.default_rng(12)
    x = rand_i8(rng, (48, 64, 64, 24), -4, 4)
    n, h, w, c = x.shape
    win = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4).reshape(n, h // 2, w // 2, c, 4)
    y = lib.maxpool_forward(x, 2, 2)
    assert np.array_equal(y, win.max(axis=-1))
    dy = rand_i8(rng, y.shape)
    first = win.argmax(axis=-1)  # first maximum in row-major window order
    ref = np.zeros_like(win)
    np.put_along_axis(ref, first[..., None], dy[..., None], axis=-1)
    ref = ref.reshape(n, h // 2, w // 2, c, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(x.shape)
    assert np.array_equal(lib.maxpool_backward(x, dy, 2, 2), ref)


def test_dropout_matches_reference(lib):
    from nitisim.contract.executor import StepContext

    ctx = StepContext(seed=9, step=31)
    for shift in (1, 2, 3):
        keep = lib.dropout_mask(1000, shift, seed=9, step=31, tensor_id=17)
        assert np.array_equal(keep, ref_dropout_mask(ctx, 17, 1000, shift))
    x = rand_i8(np.random.default_rng(2), (4, 10, 100))
    keep = lib.dropout_mask(1000, 1, seed=1, step=2, tensor_id=3)
    assert np.array_equal(lib.dropout_apply(x, keep), np.where(keep.reshape(10, 100), x, 0))


# ------------------------------------------------------------------------------------ loss
SPEC_LOGITS = np.array([[100, -20, 30, 127, -127, 0, 5, 60, 90, -50]], dtype=np.int8)


@pytest.mark.parametrize("e,p", [(-4, [367, 0, 1, -572, 0, 0, 0, 21, 183, 0]),
                                 (-6, [437, 109, 109, -1608, 26, 109, 109, 218, 437, 54]),
                                 (-8, [266, 167, 204, -1750, 113, 181, 185, 229, 256, 149])])
def test_spec_loss_vectors(lib, e, p):
    assert lib.loss_grad(SPEC_LOGITS, e, np.array([3]), return_p=True)[0].tolist() == p


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 12), c=st.integers(1, 20), e=st.integers(-60, 40), variant=st.sampled_from(nm.LOSS_VARIANTS),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_loss_grad_property(lib, n, c, e, variant, seed, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    logits = rand_i8(rng, (n, c))
    labels = rng.integers(0, c, size=n)
    kw = dict(variant=variant, seed=seed, step=5, tensor_id=77)
    assert np.array_equal(lib.loss_grad(logits, e, labels, return_p=True, **kw),
                          nm.loss_grad(logits, e, labels, return_p=True, **kw))
    err = lib.loss_grad(logits, e, labels, **kw)
    assert err.dtype == np.int8 and np.array_equal(err, nm.loss_grad(logits, e, labels, **kw))


@pytest.mark.parametrize("variant", nm.LOSS_VARIANTS)
@pytest.mark.parametrize("e", [-(2**31), -70_000, -5000, -1025, nm.LOSS_MIN_EXP, -33])
def test_loss_grad_of_far_below_exponents_equals_the_reference(lib, variant, e):
    """A deep net's logits may carry any exponent below: the C kernel clamps it, exactly."""
    logits = np.concatenate([SPEC_LOGITS, np.full((1, 10), 127, np.int8), np.zeros((1, 10), np.int8)])
    labels = np.array([3, 0, 9])
    kw = dict(variant=variant, seed=4, step=5, tensor_id=77)
    want = nm.loss_grad(logits, e, labels, return_p=True, **kw)
    assert np.array_equal(lib.loss_grad(logits, e, labels, return_p=True, **kw), want)
    assert want[0].tolist() == [204, 204, 204, -1836, 204, 204, 204, 204, 204, 204]  # the uniform softmax


@pytest.mark.parametrize("e", [nm.LOSS_MAX_EXP + 1, 60, 2**31 - 1])
def test_loss_grad_above_the_max_exponent_is_an_overflow_in_both(lib, e):
    with pytest.raises(IntegerOverflowError, match=f"logit exponent {e} above {nm.LOSS_MAX_EXP}"):
        nm.loss_grad(SPEC_LOGITS, e, np.array([3]))
    with pytest.raises(IntegerOverflowError, match=f"logit exponent {e} above {nm.LOSS_MAX_EXP}"):
        lib.loss_grad(SPEC_LOGITS, e, np.array([3]))
    assert lib.loss_grad(SPEC_LOGITS, nm.LOSS_MAX_EXP, np.array([3]), return_p=True).tolist() == \
        nm.loss_grad(SPEC_LOGITS, nm.LOSS_MAX_EXP, np.array([3]), return_p=True).tolist()


# ------------------------------------------------------------------------------------ updates
def _grad_array(dtype):
    bound = 2**31 - 1 if dtype == np.int32 else 2**40
    return st.lists(st.integers(-bound, bound), min_size=1, max_size=40).map(lambda v: np.array(v, dtype=dtype))


grad_arrays = st.sampled_from([np.int32, np.int64]).flatmap(_grad_array)


@settings(max_examples=80, deadline=None)
@given(g=grad_arrays, mu=st.integers(-3, 12), data=st.data())
def test_update_rules_property(lib, g, mu, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rand_i8(rng, g.shape)
    assert np.array_equal(lib.update_plain(w, g, mu), nm.update_plain(w, g, mu))
    v = rng.integers(-(2**20), 2**20, size=g.shape).astype(np.int32)
    try:
        ref = nm.update_momentum(w, g, v, mu)
    except IntegerOverflowError:
        with pytest.raises(IntegerOverflowError, match="momentum velocity"):
            lib.update_momentum(w, g, v, mu)
    else:
        got = lib.update_momentum(w, g, v, mu)
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, ref))
    shadow = rng.integers(-nm.SHADOW_MAX, nm.SHADOW_MAX + 1, size=g.shape).astype(np.int16)
    got, ref = lib.update_shadow16(shadow, g, mu), nm.update_shadow16(shadow, g, mu)
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(got, ref))


@pytest.mark.parametrize("mu", [-64, -40, -20, -1, 0, 3, 8, 20, 31, 40])
def test_update_plain_int32_every_regime(lib, mu):
    """The int32 plain update: step = g (s < 1), PSR in 32-bit lanes (1 <= s <= 31) and the generic
    path (s > 31), with int8 and int32 extremes (w = -128 saturates to -127), vs numerics."""
    rng = np.random.default_rng(mu + 100)
    for bits in (1, 5, 12, 20, 31):
        g = rng.integers(-(2**bits) + 1, 2**bits, size=2003, dtype=np.int64)
        g[:6] = [2**bits - 1, -(2**bits) + 1, 0, 1, -1, 2 ** (bits - 1)]
        if bits == 31:
            g[6:8] = [nm.INT32_MAX, -nm.INT32_MAX - 1]
        g = g.astype(np.int32)
        w = rand_i8(rng, g.shape, -128, 127)
        w[:4] = [-128, 127, -127, 0]
        assert np.array_equal(lib.update_plain(w, g, mu), nm.update_plain(w, g, mu)), (bits, mu)
    big = rng.integers(-(2**24), 2**24, size=1_500_000, dtype=np.int64).astype(np.int32)  # the threaded loop
    wb = rand_i8(rng, big.shape, -128, 127)
    assert np.array_equal(lib.update_plain(wb, big, mu), nm.update_plain(wb, big, mu))


@pytest.mark.parametrize("mu", [-64, -40, -20, -9, -8, 0, 3, 12, 23, 40])
def test_update_shadow16_int32_every_regime(lib, mu):
    """The int32 shadow update in 32-bit lanes: step = g (s < 1, including |g| past the int16 range,
    which saturates), PSR (1 <= s <= 31) and the generic path (s > 31), with shadow extremes, vs numerics."""
    rng = np.random.default_rng(mu + 200)
    for bits in (1, 5, 12, 17, 20, 31):
        g = rng.integers(-(2**bits) + 1, 2**bits, size=2003, dtype=np.int64)
        g[:6] = [2**bits - 1, -(2**bits) + 1, 0, 1, -1, 2 ** (bits - 1)]
        if bits == 31:
            g[6:8] = [nm.INT32_MAX, -nm.INT32_MAX - 1]
        g = g.astype(np.int32)
        shadow = rng.integers(-nm.SHADOW_MAX, nm.SHADOW_MAX + 1, size=g.shape).astype(np.int16)
        shadow[:4] = [nm.SHADOW_MAX, -nm.SHADOW_MAX, 0, 127]
        got, ref = lib.update_shadow16(shadow, g, mu), nm.update_shadow16(shadow, g, mu)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref)), (bits, mu)
    big = rng.integers(-(2**24), 2**24, size=1_500_000, dtype=np.int64).astype(np.int32)  # the threaded loop
    sb = rng.integers(-nm.SHADOW_MAX, nm.SHADOW_MAX + 1, size=big.shape).astype(np.int16)
    assert all(np.array_equal(a, b) for a, b in zip(lib.update_shadow16(sb, big, mu), nm.update_shadow16(sb, big, mu)))


def test_update_spec_examples(lib):
    assert lib.update_plain(np.array([10, -127], np.int8), np.array([1000, 1000], np.int32), 2).tolist() == [6, -127]
    w, v = lib.update_momentum(np.array([10], np.int8), np.array([1000], np.int32), np.array([0], np.int32), 2)
    assert (w.tolist(), v.tolist()) == ([9], [4])
    w, sh = lib.update_shadow16(np.array([10 << 8], np.int16), np.array([3], np.int32), 0)
    assert (w.tolist(), sh.tolist()) == ([10], [2557])


def test_momentum_overflow_is_an_error(lib):
    w = np.zeros(2, np.int8)
    v = np.array([nm.INT32_MAX, 0], np.int32)
    g = np.array([2**30, 1], np.int64)  # mu = 40 keeps g as is; v - v/8 + g > int32
    with pytest.raises(IntegerOverflowError, match="momentum velocity"):
        lib.update_momentum(w, g, v, 40)


# ------------------------------------------------------------------------------------ CUDA side
def test_arith_header_compiles_for_the_gpu(tmp_path):
    """niti_arith.h (and niti_api.h) compile as host+device code: the CUDA build reuses them."""
    nvcc = build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    src = tmp_path / "arith_check.cu"
    src.write_text(
        '#include "niti_arith.h"\n#include "niti_api.h"\n'
        "__global__ void k(const int8_t *a, int8_t *err, int64_t *p, int64_t *out, const int64_t *x, int n) {\n"
        "  int i = blockIdx.x * blockDim.x + threadIdx.x;\n"
        "  if (i >= n) return;\n"
        "  out[i] = niti_round_shift(x[i], 5, NITI_ROUND_STOCHASTIC, niti_hash_key(1, 2, 3), (uint32_t)i)\n"
        "         + niti_range_bits_of_peak(niti_magnitude(x[i])) + niti_fine_exp2_q16(i & 255) + niti_mu_step(x[i], 9, 3);\n"
        "  niti_loss_grad_row(a + i * 10, 10, -4, 3, NITI_LOSS_FINE, 7u, (uint32_t)(i * 10), err + i * 10, p + i * 10);\n"
        "}\n"
    )
    proc = subprocess.run(
        [nvcc, "-std=c++17", *build.CUDA_ARCHS, f"-I{build.CSRC}", "-c", str(src), "-o", str(tmp_path / "a.o")],
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_build_cuda_without_nvcc_or_sources_says_which(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CSRC", tmp_path)  # a source folder with no .cu files
    expected = "no CUDA compiler" if build.find_nvcc() is None else "no CUDA sources"
    with pytest.raises(build.BuildError, match=expected):
        build.build_cuda()
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(build.BuildError, match="no CUDA compiler: tried"):
        build.build_cuda()


@pytest.mark.parametrize("n", [0, 1, 63, 3 * (1 << 20) + 5])
def test_rewrite_parallel_leaves_every_value(lib, n):
    """Calibration's eviction and fresh-input rewrite: values unchanged, any length, 1 and 2 threads."""
    a = rand_i8(np.random.default_rng(n), (n,), -128, 127)
    before = a.copy()
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            lib.rewrite_parallel(a)
            assert np.array_equal(a, before)
    finally:
        lib.set_num_threads(0)
    wide = np.arange(12, dtype=np.int32).reshape(3, 4)
    lib.rewrite_parallel(wide)  # any dtype: its bytes
    assert np.array_equal(wide, np.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match="C-contiguous"):
        lib.rewrite_parallel(wide[:, ::2])
