"""The CUDA kernel library (gpu_backend/csrc/*.cu, gpu_backend/cuda.py) equals the numpy reference exactly.

Three groups:
  - build and binding checks that need no GPU: the sources compile with nvcc wherever nvcc exists
    and export every entry point of niti_cuda_api.h, the header parses as cffi's cdef, the
    module loads nothing at import, and a missing GPU is reported with what was tried;
  - parity tests of every op, the GEMM engines and whole training steps against nitisim.contract.reference,
    bit for bit, each run twice: on the GPU (marker `gpu`; skipped, with the reason, where no CUDA
    device is usable) and on the host emulator (the same .cu sources compiled by g++ against
    csrc/cuda_emulation.cu: CUDA threads as fibers with real barriers, mma and cp.async per the PTX
    ISA), which runs anywhere and keeps its shapes small because it is slow;
  - deferred device checks (overflow, bad labels) and the Python device-tensor API.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nitisim.contract import numerics as nm
from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import Node, NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU, builtin_models
from nitisim.contract.numerics import QTensor
from nitisim.contract.reference import REFERENCE_KERNELS, exact_int_matmul

from cuda_libraries import emulated_library, library_for
from gpu_backend import build, cuda

REPO = Path(__file__).resolve().parents[1]
CTX = StepContext(seed=11, step=5, mu=3)


# ------------------------------------------------------------------------------------ no GPU needed
def test_header_binds_through_cffi():
    """Every entry point of the header is typed for cffi (the binding itself runs in the parity tests)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(cuda.cdef_text())
    declared = set(_header_names())
    assert len(declared) > 40
    constants = ffi.dlopen(None)  # the cdef's constants, without a CUDA library
    assert constants.NITI_CUDA_ABI_VERSION > 0 and constants.NITI_E_CUDA > constants.NITI_OK


def _header_names() -> list[str]:
    import re

    text = re.sub(r"/\*.*?\*/", " ", cuda.cdef_text(), flags=re.S)
    return re.findall(r"\b(niti_cuda_\w+)\s*\(", text)


@pytest.mark.skipif(build.find_nvcc() is None, reason="nvcc not found ($NVCC, PATH, $CUDA_HOME, /usr/local/cuda)")
def test_cuda_sources_compile_with_nvcc_and_export_the_api():
    lib = build.build_cuda()
    nm_tool = shutil.which("nm")
    if nm_tool is None:
        pytest.skip("nm (binutils) not found to list the library's symbols")
    defined = subprocess.run([nm_tool, "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    exported = {line.split()[-1] for line in defined.stdout.splitlines() if " T " in line}
    missing = set(_header_names()) - exported
    assert not missing, f"{lib} lacks {sorted(missing)}"
    undefined = subprocess.run([nm_tool, "-D", "--undefined-only", str(lib)], capture_output=True, text=True, check=True)
    assert "niti" not in undefined.stdout  # the .cu files' shared internal interface is complete
    # sm_90 PTX (stored as text in the fat binary), which the driver compiles for GPUs newer than sm_90
    assert b".target sm_90" in Path(lib).read_bytes()
    cuobjdump = Path(build.find_nvcc()).with_name("cuobjdump")
    if cuobjdump.exists():  # machine code for both targets, not only PTX
        elves = subprocess.run([str(cuobjdump), "--list-elf", str(lib)], capture_output=True, text=True).stdout
        assert "sm_80" in elves and "sm_90" in elves, elves


def test_import_loads_and_builds_nothing():
    code = ("import sys, gpu_backend.cuda as c; assert c.cuda_library.cache_info().currsize == 0; "
            "assert c.emulated_library.cache_info().currsize == 0; assert 'cffi' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_missing_gpu_is_reported_with_what_was_tried():
    ok, why = cuda.cuda_status()
    if ok:
        pytest.skip(f"a CUDA device is usable here: {why}")
    assert why and ("fix" in why or "nvcc" in why.lower() or "compiler" in why), why


# ------------------------------------------------------------------------------------ device fixture
@pytest.fixture(scope="module", params=[pytest.param("gpu", marks=pytest.mark.gpu), "emulator"])
def dev(request):
    lib = library_for(request.param)
    lib.gemm_engine = "auto"
    lib.conv_mode = "auto"
    return SimpleNamespace(kind=request.param, lib=lib, table=cuda.cuda_kernel_table(lib=lib),
                           gpu=request.param == "gpu")


RNG = np.random.default_rng(2024)


def rand_i8(shape, lo=-127, hi=127):
    return RNG.integers(lo, hi + 1, size=shape, dtype=np.int8)


def q(shape, e=-7, lo=-127, hi=127) -> QTensor:
    return QTensor(rand_i8(shape, lo, hi), e)


def node(op, tensor_id=9, **attrs) -> Node:
    return Node(f"test.{op}", op, "forward", "test", (), (), tuple(sorted(attrs.items())), tensor_id)


def assert_same(got, want, what=""):
    """A device tensor equals a reference QTensor (or array): dtype, shape, values and exponent."""
    if isinstance(want, QTensor):
        host = cuda.to_host(got)
        assert host.m.dtype == want.m.dtype, (what, host.m.dtype, want.m.dtype)
        assert host.m.shape == want.m.shape, (what, host.m.shape, want.m.shape)
        np.testing.assert_array_equal(host.m, want.m, err_msg=str(what))
        assert host.e == want.e, (what, host.e, want.e)
    else:
        m = got.m
        assert m.dtype == want.dtype and m.shape == want.shape, (what, m.dtype, m.shape)
        np.testing.assert_array_equal(m, want, err_msg=str(what))


def check_op(dev, n: Node, *inputs, ctx=CTX):
    """Run op `n` on the device (inputs uploaded) and on the numpy reference; all outputs equal."""
    want = REFERENCE_KERNELS[n.op](n, ctx, *inputs)
    got = dev.table[n.op](n, ctx, *(dev.lib.to_device(t) if isinstance(t, QTensor) else t for t in inputs))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, f"{n.op} output {i}")
    return got


# ------------------------------------------------------------------------------------ GEMM engines
@pytest.mark.parametrize("engine", ["mma", "dp4a"])
def test_gemm_engines_equal_int64_matmul(dev, engine):
    lib = dev.lib
    lib.gemm_engine = engine
    try:
        shapes = [(1, 1, 1), (17, 33, 65), (130, 129, 200), (3, 257, 64), (129, 5, 700)]
        if dev.gpu:
            shapes += [(1000, 515, 1029), (4096, 256, 4608), (7, 9, 131071)]
        for m, n, k in shapes:
            a, b = rand_i8((m, k)), rand_i8((n, k))
            want = exact_int_matmul(a, b.T)
            da, db = lib.to_device(a), lib.to_device(b)
            assert_same(lib.gemm(da, db), want.astype(np.int32), (engine, m, n, k))
            assert_same(lib.gemm(da, db, wide=True), want, (engine, m, n, k, "s64"))
        # edge values: every product +-127 * +-127, the int32 bound's worst case
        for sign in (1, -1):
            a = np.full((40, 1000), 127, np.int8)
            b = np.full((24, 1000), 127 * sign, np.int8)
            assert_same(lib.gemm(lib.to_device(a), lib.to_device(b)), np.full((40, 24), sign * 127 * 127 * 1000, np.int32))
    finally:
        lib.gemm_engine = "auto"


def test_gemm_int64_reduction_beyond_one_int32_chunk(dev):
    """K > 131008: int32 partial sums over K chunks, added in int64 (values near the int32 limit)."""
    lib = dev.lib
    if not dev.gpu:
        lib.gemm_engine = "dp4a"  # the emulated mma engine is too slow for K this long
    try:
        k = 140_000 if not dev.gpu else 300_000
        a = np.full((3, k), 127, np.int8)
        a[1] = -127
        a[2] = rand_i8((k,))
        b = np.full((2, k), 127, np.int8)
        b[1] = rand_i8((k,))
        want = exact_int_matmul(a, b.T)
        assert abs(int(want[0, 0])) > 2**31
        assert_same(lib.gemm(lib.to_device(a), lib.to_device(b), wide=True), want)
    finally:
        lib.gemm_engine = "auto"


def test_gemm_split_k_with_many_blocks(dev):
    """Split-K (atomic int32 and int64 adds): a GEMM with few output tiles and a long K."""
    if not dev.gpu:
        pytest.skip("the emulator's multiprocessor count is fixed when the library loads (NITI_EMU_SM_COUNT)")
    a, b = rand_i8((64, 65536)), rand_i8((96, 65536))
    want = exact_int_matmul(a, b.T)
    for engine in ("mma", "dp4a"):
        dev.lib.gemm_engine = engine
        assert_same(dev.lib.gemm(dev.lib.to_device(a), dev.lib.to_device(b)), want.astype(np.int32), engine)
        assert_same(dev.lib.gemm(dev.lib.to_device(a), dev.lib.to_device(b), wide=True), want, engine)
    dev.lib.gemm_engine = "auto"


def test_emulator_runs_the_mma_pipeline_with_both_cp_async_timings(monkeypatch):
    """cp.async copies landing at issue (catches a stage refilled while still read) and at the
    wait that retires them (catches a read before its wait): the mma GEMM is exact under both."""
    lib = emulated_library()
    lib.gemm_engine = "mma"
    lib.conv_mode = "auto"
    a, b = rand_i8((130, 450)), rand_i8((70, 450))
    want = (exact_int_matmul(a, b.T)).astype(np.int32)
    x, wt = q((2, 5, 7, 16), -8), q((32, 3, 3, 16), -9)  # a conv whose A the kernel reads in place
    assert lib.conv_path("forward", x.m.shape, 32, 3, 1, 1) == "implicit"
    table = cuda.cuda_kernel_table(lib=lib)
    conv = node("conv2d", stride=1, padding=1, kernel=3)
    (y_want,) = REFERENCE_KERNELS["conv2d"](conv, CTX, x, wt)
    try:
        for timing in ("eager", "deferred"):
            monkeypatch.setenv("NITI_EMU_CP_ASYNC", timing)
            assert_same(lib.gemm(lib.to_device(a), lib.to_device(b)), want, timing)
            assert_same(table["conv2d"](conv, CTX, x, wt)[0], y_want, (timing, "implicit conv"))
    finally:
        lib.gemm_engine = "auto"


# ------------------------------------------------------------------------------------ GEMM-shaped ops
CONV_CASES = [  # n, h, w, c, o, k, stride, padding
    (2, 7, 5, 3, 4, 3, 1, 1),
    (1, 9, 9, 5, 7, 3, 2, 1),
    (3, 6, 8, 2, 3, 1, 1, 0),
    (2, 8, 7, 4, 6, 5, 2, 2),
    (1, 7, 7, 3, 2, 2, 3, 0),   # stride > kernel: some inputs feed no output
    (2, 4, 5, 1, 1, 2, 1, 3),   # padding > kernel - 1
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_and_gradients(dev, case):
    n, h, w, c, o, k, s, p = case
    x, wt = q((n, h, w, c), -8), q((o, k, k, c), -9)
    (y,) = check_op(dev, node("conv2d", stride=s, padding=p, kernel=k), x, wt)
    e, f = y.shape[1:3]
    dy = q((n, e, f, o), -6)
    check_op(dev, node("conv2d_input_grad", stride=s, padding=p, input_shape=(n, h, w, c)), dy, wt)
    for dtype in ("int32", "int64"):
        check_op(dev, node("conv2d_weight_grad", stride=s, padding=p, kernel=k, dtype=dtype), x, dy)


def test_conv2d_larger_shapes(dev):
    """Several output tiles in every direction (and, on the GPU, VGG-sized channels in both conv modes)."""
    n, h, w, c, o = (2, 12, 11, 19, 140) if not dev.gpu else (8, 32, 32, 128, 256)
    x, wt = q((n, h, w, c), -8), q((o, 3, 3, c), -9)
    try:
        for mode in ("auto", "gather") if dev.gpu else ("auto",):
            dev.lib.conv_mode = mode
            (y,) = check_op(dev, node("conv2d", stride=1, padding=1, kernel=3), x, wt)
            dy = q(y.shape, -6)
            check_op(dev, node("conv2d_input_grad", stride=1, padding=1, input_shape=(n, h, w, c)), dy, wt)
        check_op(dev, node("conv2d_weight_grad", stride=1, padding=1, kernel=3, dtype="int64"), x, dy)
    finally:
        dev.lib.conv_mode = "auto"


# Conv shapes for the implicit A operand (the mma kernel reading patches straight from the NHWC map):
# (n, h, w, c, o, k, stride, padding) and the path forward / input gradient take in conv mode auto.
# Row counts (n * pixels) are not multiples of 128, K (k * k * channels) is not a multiple of 64.
IMPLICIT_CASES = [
    ((2, 5, 7, 16, 32, 3, 1, 1), "implicit", "implicit"),   # 3x3 pad 1; K 144 / 288
    ((3, 7, 6, 32, 16, 1, 1, 0), "implicit", "implicit"),   # 1x1 pad 0: K = channels
    ((2, 9, 10, 16, 32, 5, 1, 0), "implicit", "implicit"),  # 5x5 pad 0: input grad padded by 4, 2 row tiles
    ((1, 4, 5, 16, 16, 2, 1, 3), "implicit", "implicit"),   # pad > k-1: input grad padding negative (an offset)
    ((2, 6, 6, 48, 16, 3, 2, 0), "implicit", "gather"),     # stride 2: input grad's upsampled map gathers
    ((1, 9, 8, 16, 16, 5, 2, 2), "implicit", "gather"),
    ((1, 5, 5, 48, 48, 5, 1, 2), "implicit", "implicit"),   # K 1200, one output tile: split-K, chunks start mid-tap
    ((2, 5, 6, 24, 16, 3, 1, 1), "gather", "implicit"),     # 24 channels: a 16-byte chunk would straddle taps
    ((2, 5, 6, 16, 8, 3, 1, 1), "implicit", "gather"),      # dy with 8 channels
]


@pytest.mark.parametrize("case,fwd_path,grad_path", IMPLICIT_CASES, ids=[str(c[0]) for c in IMPLICIT_CASES])
def test_conv2d_implicit_and_gather_paths_equal_numpy(dev, case, fwd_path, grad_path):
    """Conv forward and input gradient in both conv modes equal the numpy reference bit for bit, and
    take the A-operand path the dispatch rule says (implicit only in mode auto, where it applies)."""
    n, h, w, c, o, k, s, p = case
    x, wt = q((n, h, w, c), -8), q((o, k, k, c), -9)
    e, f = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    dy = q((n, e, f, o), -6)
    lib = dev.lib
    try:
        for mode in ("auto", "gather"):
            lib.conv_mode = mode
            assert lib.conv_mode == mode
            want = (fwd_path, grad_path) if mode == "auto" else ("gather", "gather")
            assert (lib.conv_path("forward", x.m.shape, o, k, s, p), lib.conv_path("input_grad", x.m.shape, o, k, s, p)) == want
            check_op(dev, node("conv2d", stride=s, padding=p, kernel=k), x, wt)
            check_op(dev, node("conv2d_input_grad", stride=s, padding=p, input_shape=(n, h, w, c)), dy, wt)
    finally:
        lib.conv_mode = "auto"


def test_conv_mode_and_path_dispatch_rule(dev):
    """The dispatch by shape is explicit: conv_path answers it, and the mode setter refuses unknown modes."""
    lib = dev.lib
    shape = (2, 8, 8, 32)
    try:
        assert lib.conv_mode == "auto"
        assert lib.conv_path("forward", shape, 64, 3, 1, 1) == "implicit"
        assert lib.conv_path("forward", shape, 64, 3, 1, 1, src=16 * 1001) == "implicit"
        assert lib.conv_path("forward", shape, 64, 3, 1, 1, src=16 * 1001 + 8) == "gather"  # misaligned map
        assert lib.conv_path("forward", (2, 8, 8, 40), 64, 3, 1, 1) == "gather"  # 40 % 16 != 0
        assert lib.conv_path("input_grad", (2, 8, 8, 3), 64, 3, 1, 1) == "implicit"  # dy's 64 channels count
        assert lib.conv_path("input_grad", shape, 64, 3, 2, 1) == "gather"  # strided input gradient
        assert lib.conv_path("weight_grad", shape, 64, 3, 1, 1) == "gather"  # transposed patches
        lib.gemm_engine = "dp4a"
        assert lib.conv_path("forward", shape, 64, 3, 1, 1) == "gather"  # the loader is the mma kernel's
        lib.gemm_engine = "auto"
        lib.conv_mode = "gather"
        assert lib.conv_path("forward", shape, 64, 3, 1, 1) == "gather"
        with pytest.raises(ValueError):
            lib.conv_mode = "implicit"
        with pytest.raises(cuda.CudaError, match="set_conv_mode"):
            lib.call("niti_cuda_set_conv_mode", 2)
        assert lib.conv_mode == "gather"
        with pytest.raises(cuda.CudaError, match="kernel"):
            lib.conv_path("forward", (1, 2, 2, 16), 16, 5, 1, 0)  # kernel larger than the input
    finally:
        lib.gemm_engine = "auto"
        lib.conv_mode = "auto"


def test_conv2d_forward_from_a_misaligned_map_gathers_and_is_exact(dev):
    """A map not 16-byte aligned (a view into a buffer) takes the gather path, with the same result."""
    lib = dev.lib
    n, h, w, c, o = 1, 5, 4, 16, 16
    x, wt = q((n, h, w, c), -8), q((o, 3, 3, c), -9)
    want = REFERENCE_KERNELS["conv2d"](node("conv2d", stride=1, padding=1, kernel=3), CTX, x, wt)[0]
    buf = lib.to_device(np.zeros(x.m.size + 16, np.int8))
    lib.call("niti_cuda_copy_in", buf.ptr + 8, x.m.ctypes.data, x.m.size)
    assert lib.conv_path("forward", x.m.shape, o, 3, 1, 1, src=buf.ptr + 8) == "gather"
    assert lib.conv_path("forward", x.m.shape, o, 3, 1, 1, src=buf.ptr) == "implicit"
    dw = lib.to_device(wt)
    y = lib.empty((n, h, w, o), np.int32)
    lib.call("niti_cuda_conv2d_forward", n, h, w, c, o, 3, 3, 1, 1, 1, 1, buf.ptr + 8, None, dw.ptr, dw.exp_ptr,
             y.ptr, y.exp_ptr)
    assert_same(y, QTensor(want.m, wt.e))


def test_conv2d_weight_grad_int32_above_the_chunk_bound(dev):
    """dtype int32 with 131071 < reduction <= 133144 (the graph's 127*127 bound): int64 then narrowed."""
    if not dev.gpu:
        pytest.skip("needs a reduction of 131072+ products: too slow for the emulator")
    n = 230  # 230 * 24 * 24 = 132480
    x, dy = q((n, 28, 28, 1), -8), q((n, 24, 24, 3), -6)
    check_op(dev, node("conv2d_weight_grad", stride=1, padding=0, kernel=5, dtype="int32"), x, dy)


@pytest.mark.parametrize("batch,inp,out", [(1, 1, 1), (5, 37, 11), (33, 300, 129)])
def test_linear_forward_and_gradients(dev, batch, inp, out):
    x, wt, dy = q((batch, inp), -8), q((out, inp), -9), q((batch, out), -5)
    check_op(dev, node("linear"), x, wt)
    check_op(dev, node("linear_input_grad"), dy, wt)
    for dtype in ("int32", "int64"):
        check_op(dev, node("linear_weight_grad", dtype=dtype), x, dy)


# ------------------------------------------------------------------------------------ vector ops
def _acc_cases():
    big = np.array([2**31 - 1, -(2**31), 5, -1, 0, 2**20 + 3, -(2**20) - 3], np.int32)
    return [
        np.zeros((3, 4), np.int32),                                   # b = 0
        RNG.integers(-127, 128, (5, 7)).astype(np.int32),             # s <= 0: no shift
        RNG.integers(-(2**15), 2**15, (4, 9, 3)).astype(np.int32),    # s in 1..9
        RNG.integers(-(2**30), 2**30, (1000,)).astype(np.int32),      # large shifts, several blocks
        big,                                                          # int32 edge values
    ]


@pytest.mark.parametrize("mode", nm.ROUNDING_MODES)
def test_requantize(dev, mode):
    for i, acc in enumerate(_acc_cases()):
        check_op(dev, node("requantize", tensor_id=40 + i, mode=mode), QTensor(acc, -13 + i))
    if dev.gpu:
        check_op(dev, node("requantize", mode=mode), QTensor(RNG.integers(-(2**24), 2**24, (3, 1 << 20)).astype(np.int32), -20))


def test_range_bits_on_the_device(dev):
    for x in [np.zeros(5, np.int32), np.array([1], np.int32), np.array([-128, 5], np.int32),
              np.array([2**31 - 1, -(2**31)], np.int32), np.array([-(2**63), 3], np.int64),
              RNG.integers(-(2**40), 2**40, 3001)]:
        assert dev.lib.range_bits(dev.lib.to_device(x)) == nm.range_bits(x), x


def test_relu_and_flatten(dev):
    x = q((3, 5, 4, 7), -6)
    (y,) = check_op(dev, node("relu"), x)
    check_op(dev, node("relu_grad"), x, q(x.m.shape, -4))
    (f,) = check_op(dev, node("flatten"), x)
    assert f.shape == (3, 140)
    check_op(dev, node("flatten_grad", input_shape=(3, 5, 4, 7)), q((3, 140), -3))


@pytest.mark.parametrize("k,s,hw", [(2, 2, (8, 6)), (2, 2, (7, 9)), (3, 2, (9, 8)), (3, 1, (5, 6)), (2, 3, (8, 8))])
def test_maxpool_forward_and_backward_first_max(dev, k, s, hw):
    for lo, hi in ((-127, 127), (-1, 1), (5, 5)):  # narrow ranges: many ties, first maximum wins
        x = q((2, *hw, 5), -7, lo, hi)
        (y,) = check_op(dev, node("maxpool", kernel=k, stride=s), x)
        dy = q(y.shape, -5)
        check_op(dev, node("maxpool_grad", kernel=k, stride=s), x, dy)


@pytest.mark.parametrize("k,s,hw", [(3, 2, (7, 7)), (3, 2, (8, 6)), (3, 1, (5, 5)), (3, 1, (6, 7)), (2, 2, (5, 6)),
                                    (3, 3, (1, 2))])
def test_padded_maxpool_forward_and_backward(dev, k, s, hw):
    """Padding 1 (-infinity): all-negative inputs, where a padded 0 would win, and large errors that
    saturate where windows overlap."""
    for lo, hi in ((-127, 127), (-1, 1), (-127, -120)):
        x = q((2, *hw, 5), -7, lo, hi)
        (y,) = check_op(dev, node("maxpool", kernel=k, stride=s, padding=1), x)
        for dy in (q(y.shape, -5), q(y.shape, -5, 100, 127)):
            check_op(dev, node("maxpool_grad", kernel=k, stride=s, padding=1), x, dy)


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_dropout_masks_from_the_counter_hash(dev, shift):
    x = q((4, 3, 3, 6), -7)
    check_op(dev, node("dropout", tensor_id=21, shift=shift), x)
    check_op(dev, node("dropout_grad", tensor_id=30, shift=shift, mask_id=21), q((4, 54), -6))


@pytest.mark.parametrize("variant", nm.LOSS_VARIANTS)
@pytest.mark.parametrize("e", [-5000, -1025, -40, -24, -10, -7, -6, -4, 0, 3, 40])
def test_loss_grad(dev, variant, e):
    logits = q((9, 10), e)
    logits.m[0] = [100, -20, 30, 127, -127, 0, 5, 60, 90, -50]
    logits.m[1] = 127
    labels = RNG.integers(0, 10, 9).astype(np.int32)
    labels[0] = 3
    check_op(dev, node("loss_grad", tensor_id=77, variant=variant), logits, labels)
    # p (before the /16) through the raw entry point, against numerics.loss_grad(return_p=True)
    lib = dev.lib
    dl, dlab = lib.to_device(logits), lib.to_device(labels)
    err, p = lib.empty((9, 10), np.int8), lib.empty((9, 10), np.int64, exp=None)
    lib.call("niti_cuda_loss_grad", 9, 10, dl.ptr, dl.exp_ptr, dlab.ptr, nm.LOSS_VARIANTS.index(variant), 1, 2, 3,
             err.ptr, err.exp_ptr, p.ptr)
    assert_same(p, nm.loss_grad(logits.m, e, labels, variant=variant, return_p=True))


@pytest.mark.parametrize("rule", nm.UPDATE_RULES)
@pytest.mark.parametrize("gdtype", [np.int32, np.int64])
@pytest.mark.parametrize("mu", [-70, 0, 3, 5, 70])
def test_updates(dev, rule, gdtype, mu):
    shape = (6, 3, 3, 5)
    w = q(shape, -9)
    g = QTensor(RNG.integers(-(2**25), 2**25, shape).astype(gdtype), -20)
    if gdtype == np.int64 and rule != "momentum":  # (a momentum velocity must stay inside int32)
        g.m.flat[7] = -(2**40)
    ctx = StepContext(seed=1, step=2, mu=mu)
    n = node("update", rule=rule)
    if rule == "plain":
        check_op(dev, n, w, g, ctx=ctx)
    elif rule == "momentum":
        v = QTensor(RNG.integers(-(2**20), 2**20, shape).astype(np.int32), -9)
        check_op(dev, n, w, g, v, ctx=ctx)
    else:
        sh = QTensor((w.m.astype(np.int16) << 8) + RNG.integers(-128, 128, shape).astype(np.int16), -17)
        check_op(dev, n, w, g, sh, ctx=ctx)
    check_op(dev, n, w, QTensor(np.zeros(shape, gdtype), -20), *(() if rule == "plain" else (
        QTensor(np.zeros(shape, np.int32), -9) if rule == "momentum" else QTensor(w.m.astype(np.int16) << 8, -17),)),
        ctx=ctx)


# ------------------------------------------------------------------------------------ deferred checks
def test_narrowing_overflow_is_reported_at_the_next_sync(dev):
    lib = dev.lib
    x = lib.to_device(np.array([1, 2**31, 3], np.int64))
    out = lib.empty((3,), np.int32, exp=None)
    lib.call("niti_cuda_narrow_s64_s32", 3, x.ptr, out.ptr)  # queued: no error yet
    with pytest.raises(IntegerOverflowError, match="int32"):
        lib.synchronize()
    lib.synchronize()  # the flag was cleared


def test_momentum_velocity_overflow_raises(dev):
    w = QTensor(np.zeros(4, np.int8), -7)
    g = QTensor(np.array([2**30, 1, 1, 1], np.int32), -20)
    v = QTensor(np.array([2**31 - 1, 0, 0, 0], np.int32), -7)
    ctx = StepContext(mu=40)
    with pytest.raises(IntegerOverflowError):
        REFERENCE_KERNELS["update"](node("update", rule="momentum"), ctx, w, g, v)
    w_out, _ = dev.table["update"](node("update", rule="momentum"), ctx, w, g, v)
    with pytest.raises(IntegerOverflowError, match="velocity"):
        w_out.m


def test_logit_exponent_above_the_max_is_an_overflow(dev):
    (err,) = dev.table["loss_grad"](node("loss_grad", variant="niti"), CTX, q((3, 10), nm.LOSS_MAX_EXP + 1),
                                    np.array([1, 2, 3]))
    with pytest.raises(IntegerOverflowError, match="logit exponent was above 40"):
        err.m


def test_bad_label_and_bad_arguments(dev):
    (err,) = dev.table["loss_grad"](node("loss_grad", variant="niti"), CTX, q((3, 10), -5), np.array([1, 10, 2]))
    with pytest.raises(cuda.CudaError, match="label") as info:
        err.m
    assert info.value.status == dev.lib.status_codes["NITI_E_ARG"]


# ------------------------------------------------------------------------------------ Python API
def test_device_tensor_round_trip_and_views(dev):
    lib = dev.lib
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        t = QTensor(RNG.integers(-100, 100, (3, 4, 5)).astype(dtype), -11)
        d = cuda.to_device(t, lib)
        back = cuda.to_host(d)
        assert back.m.dtype == dtype and back.e == -11
        np.testing.assert_array_equal(back.m, t.m)
        v = d.reshape((3, -1))
        assert v.shape == (3, 20) and v.ptr == d.ptr and v.e == -11
    labels = lib.to_device(np.arange(5, dtype=np.int32))
    with pytest.raises(ValueError):
        labels.e
    assert lib.to_device(np.zeros((0, 3), np.int8)).m.shape == (0, 3)


def test_kernel_table_has_the_reference_ops(dev):
    assert set(dev.table) == set(REFERENCE_KERNELS)


def test_calls_by_name_are_typed_by_the_header(dev):
    """A call by name checks its arity against the header's prototype and reports a name the
    header lacks; a failed call raises the library's message."""
    with pytest.raises(TypeError, match="niti_cuda_alloc takes 2 arguments, got 1"):
        dev.lib.call("niti_cuda_alloc", 16)
    with pytest.raises(AttributeError, match="niti_cuda_no_such_entry"):
        dev.lib.call("niti_cuda_no_such_entry")
    with pytest.raises(cuda.CudaError, match="niti_cuda_alloc"):
        dev.lib.alloc(-1)


# ------------------------------------------------------------------------------------ training steps
SMALL_VGG = ModelSpec("vgg-16px", (16, 16, 3), (
    Conv(16, 3, 1, 1), ReLU(), Conv(16, 3, 1, 1), ReLU(), MaxPool(2, 2),
    Conv(32, 3, 1, 1), ReLU(), MaxPool(2, 2), Flatten(), Dropout(0.5), Linear(10)))
OPTIONS = [
    NumericsOptions(),
    NumericsOptions("stochastic", "nearest", "fine", "momentum"),
    NumericsOptions("nearest", "stochastic", "niti", "shadow16"),
]


def _steps_match(dev, model, batch, options, steps):
    """`steps` training steps on the device and on numpy: weights, states and logits bit-identical."""
    g = build_graph(model, batch, options)
    ref_params = init_params(g, seed=3)
    dev_params = dict(ref_params)  # host QTensors: the CUDA kernels upload them on first use
    rng = np.random.default_rng(batch)
    for step in range(steps):
        x = QTensor(rng.integers(-127, 128, (batch, *model.input_shape)).astype(np.int8), -8)
        labels = rng.integers(0, model.classes, batch).astype(np.int32)
        ctx = StepContext(seed=17, step=step, mu=4)
        ref = train_step(g, REFERENCE_KERNELS, ref_params, x, labels, ctx, keep=(g.logits_name,))
        got = train_step(g, dev.table, dev_params, x, labels, ctx, keep=(g.logits_name,))
        assert_same(got.tensors[g.logits_name], ref.tensors[g.logits_name], (model.name, step, "logits"))
        for name in ref.params:
            assert isinstance(got.params[name], cuda.DeviceTensor)
            assert_same(got.params[name], ref.params[name], (model.name, step, name))
        ref_params, dev_params = ref.params, got.params


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=["niti", "stochastic-momentum-fine", "shadow16"])
def test_lenet_training_steps_equal_numpy(dev, options):
    # batch 256 on the GPU: conv1's weight-gradient reduction (256*24*24) takes the int64 path
    _steps_match(dev, builtin_models()["lenet"], 256 if dev.gpu else 2, options, 3 if dev.gpu else 2)


@pytest.mark.slow
@pytest.mark.parametrize("options", OPTIONS, ids=["niti", "stochastic-momentum-fine", "shadow16"])
def test_small_vgg_training_steps_equal_numpy(dev, options):
    _steps_match(dev, SMALL_VGG, 64 if dev.gpu else 3, options, 4 if dev.gpu else 2)


STEM_POOL = ModelSpec("stem-pool", (9, 9, 3), (
    Conv(8, 3, 1, 1), ReLU(), MaxPool(3, 2, 1), Conv(8, 3, 1, 1), ReLU(), MaxPool(3, 1, 1), Flatten(), Linear(10)))


def test_padded_pool_training_steps_equal_numpy(dev):
    """The ResNet stem's pool (3x3, stride 2, padding 1) and an overlapping padded one in whole steps."""
    _steps_match(dev, STEM_POOL, 16 if dev.gpu else 2, NumericsOptions(), 2)


def _conv_paths(lib, graph) -> list[str]:
    """The A-operand path of every conv forward and input-gradient node of a graph, in node order."""
    paths = []
    for n in graph.nodes_of("conv2d", "conv2d_input_grad"):
        w = graph.tensor(n.attr("weight")).shape  # (O, k, k, I)
        x_shape = graph.tensor(n.inputs[0]).shape if n.op == "conv2d" else n.attr("input_shape")
        paths.append(lib.conv_path("forward" if n.op == "conv2d" else "input_grad", x_shape, w[0], w[1],
                                   n.attr("stride"), n.attr("padding")))
    return paths


@pytest.mark.slow
@pytest.mark.parametrize("mode", cuda.CONV_MODES)
def test_small_vgg_training_steps_equal_numpy_in_each_conv_mode(dev, mode):
    """Whole training steps with conv A operands read in place (auto: every conv but the 3-channel
    first layer's forward) and all gathered: both bit-identical to numpy."""
    g = build_graph(SMALL_VGG, 2, NumericsOptions())
    try:
        dev.lib.conv_mode = mode
        paths = _conv_paths(dev.lib, g)
        assert paths[0] == "gather" and set(paths[1:]) == ({"implicit"} if mode == "auto" else {"gather"}), paths
        _steps_match(dev, SMALL_VGG, 32 if dev.gpu else 2, NumericsOptions(), 2)
    finally:
        dev.lib.conv_mode = "auto"


# ------------------------------------------------------------------------------------ per-node timing
def test_timing_marks_measure_the_stream_and_refuse_misuse(dev):
    lib = dev.lib
    lib.marks_begin(3)
    a, b = lib.to_device(rand_i8((64, 64))), lib.to_device(rand_i8((64, 64)))
    for _ in range(3):
        lib.gemm(a, b)
        lib.mark()
    ms = lib.marks_read(3)
    assert ms.shape == (3,) and (ms >= 0).all()
    with pytest.raises(cuda.CudaError, match="marks_begin was not called"):
        lib.mark()  # a read ends the marks
    lib.marks_begin(1)
    lib.mark()
    with pytest.raises(cuda.CudaError, match="more marks than the capacity"):
        lib.mark()
    with pytest.raises(cuda.CudaError, match="asked for 2 intervals, 1 marks"):
        lib.marks_read(2)


def test_trainer_times_every_node_with_device_events(dev, tmp_path):
    """timing.json of a CUDA run holds stream time per node, read through the device node clock."""
    import json

    from nitisim.train.config import load_config
    from nitisim.train.data import load_for_config
    from nitisim.train.integer import IntegerTrainer
    from nitisim.train.loop import run_training
    from nitisim.train.progress import Progress
    from nitisim.train.runfiles import RunFolder

    cfg = load_config(REPO / "configs" / "train" / "synthetic-mlp.yaml").with_epochs(1)
    ds = load_for_config(cfg, None)
    clock = cuda.device_node_clock(lib=dev.lib)
    marks = []
    original_read = clock.read
    clock.read = lambda: marks.append(1) or original_read()
    trainer = IntegerTrainer(cfg, dev.table, "cuda", clock=clock)
    run = RunFolder(tmp_path / "run", "int8")
    run.create()
    run_training(cfg, trainer, ds, run, progress=Progress(enabled=False))
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    steps = timing["steps"]
    assert steps == len(marks) > 0  # one read of the stream marks per step
    assert set(timing["nodes"]) == {n.name for n in trainer.graph.nodes}
    assert all(n["calls"] == steps and n["seconds"] >= 0 for n in timing["nodes"].values())


# ------------------------------------------------------------------------------------ the CLI on CUDA
def test_cli_train_and_run_on_the_cuda_backend_match_numpy(tmp_path, monkeypatch):
    """`nitisim train --backend cuda` and `nitisim run --backend cuda` end to end, with the CUDA
    library loaded on the host emulator (swapped in by this test only): the integer run equals the
    numpy run bit for bit (benchmarks/same_run.py, the GPU check's verdict), timing.json comes from
    the device marks, and the main job writes its report."""
    import json

    from benchmark_scripts import load_benchmark
    from gpu_backend import cuda_kernels, cuda_node_clock
    from nitisim.cli import main

    lib = emulated_library()
    lib.gemm_engine, lib.conv_mode = "auto", "auto"
    for module in (cuda_kernels, cuda_node_clock):
        monkeypatch.setattr(module, "cuda_library", lambda device=0: lib)
    config = REPO / "configs" / "train" / "synthetic-mlp.yaml"
    runs = {backend: tmp_path / backend for backend in ("cuda", "numpy")}
    for backend, out in runs.items():
        assert main(["train", str(config), "--backend", backend, "--epochs", "1", "--out", str(out)]) == 0
    same_run = load_benchmark("same_run")
    assert same_run.differences(runs["cuda"], runs["numpy"]) == []
    summary = json.loads((runs["cuda"] / "summary.json").read_text())
    assert summary["backend"] == "cuda"
    timing = json.loads((runs["cuda"] / "timing.json").read_text())
    assert timing["backend"] == "cuda" and all(n["calls"] == timing["steps"] for n in timing["nodes"].values())

    # the main job trains the float32 twin on torch's GPU too; this torch sees none, so it runs on the CPU
    import torch

    from nitisim.train import fp32

    monkeypatch.setattr(fp32, "resolve_device", lambda backend: (torch.device("cpu"), "torch-cpu"))
    out = tmp_path / "main-job"
    assert main(["run", "--tiny", "--backend", "cuda", "--out", str(out), "--accelerators", "edge-16x16"]) == 0
    report = json.loads((out / "compare.json").read_text())
    assert (out / "report.html").stat().st_size > 0
    assert report["run"]["backend"] == "cuda"
    points = report["agreement"][0]["points"]  # the device-timed (layer, phase) seconds joined with cycles
    assert points and all(p["seconds"] > 0 and p["cycles"] > 0 for p in points)
