"""The `global_avgpool` and `global_avgpool_grad` ops (docs/numerics-avgpool.md) in every reader.

  - reference.global_avgpool / global_avgpool_grad (the numpy definitions) against a Python
    Fraction oracle of their definition (round half away from zero of the exact quotient): every
    window sum a window of K positions can have, for K in {1, 2, 3, 4, 5, 7, 9, 36, 49, 64}, every
    dy for the gradient, random maps (hypothesis), and the spec's test vectors (non-power-of-two
    windows, negative sums at exact halves, saturation);
  - the gradient is the mean's derivative: d * 2**(e + exp_shift) is within one output LSB of
    dy * 2**e / K, and exactly dy * 2**e / K for a power-of-two window;
  - the C kernels (through the generic node caller) equal numpy bit for bit in every build the
    machine runs, and the CPU kernel table under every $NITISIM_CPU_ENGINE value the machine allows;
  - the CUDA kernels on the host emulator (and on a GPU where present) equal numpy;
  - the lowering prices both as vector work (a sum pass; a broadcast write pass), and the simulator
    and the executors run a hand-built conv -> relu -> global_avgpool -> linear graph (the graph
    builder emits these nodes with issue 25).
"""
from __future__ import annotations

import dataclasses
import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cpu_builds
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import Node, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import Conv, Flatten, Linear, ModelSpec, ReLU
from nitisim.contract.numerics import QTensor
from nitisim.contract.ops import OPS, output_exponents, report_phase
from nitisim.contract.reference import REFERENCE_KERNELS, div_round_half_away, global_avgpool, global_avgpool_grad

CTX = StepContext(seed=21, step=7, mu=3)
RNG = np.random.default_rng(2525)
WINDOWS = (1, 2, 3, 4, 5, 7, 9, 36, 49, 64)  # K = H*W; 9, 36, 49 are the 3x3, 6x6, 7x7 maps of ResNets
HW = {1: (1, 1), 2: (1, 2), 3: (3, 1), 4: (2, 2), 5: (1, 5), 7: (7, 1), 9: (3, 3), 36: (6, 6), 49: (7, 7),
      64: (8, 8)}


# ---------------------------------------------------------------------------------- oracle
def round_half_away(q: Fraction) -> int:
    """The integer nearest q, ties away from zero, from the Fraction itself (not the C formula)."""
    mag = abs(q)
    low = mag.numerator // mag.denominator
    up = mag - low >= Fraction(1, 2)
    return (low + up) * (1 if q >= 0 else -1)


def clamp(v: int) -> int:
    return max(-127, min(127, v))


def oracle_avg(window) -> int:
    return clamp(round_half_away(Fraction(sum(int(v) for v in window), len(window))))


def oracle_grad(dy: int, k: int) -> tuple[int, int]:
    """(mantissa, exponent shift): p = floor(log2 k) by search, d = round(dy * 2**p / k)."""
    p = max(i for i in range(40) if 2**i <= k)
    return clamp(round_half_away(Fraction(int(dy) * 2**p, k))), -p


def gap_node(tensor_id=41) -> Node:
    return Node("gap.fwd", "global_avgpool", "forward", "gap", ("x",), ("y",), (), tensor_id)


def grad_node(input_shape, exp_shift=None, tensor_id=42) -> Node:
    k = input_shape[1] * input_shape[2]
    shift = -(k.bit_length() - 1) if exp_shift is None else exp_shift
    return Node("gap.bwd", "global_avgpool_grad", "backward", "gap", ("dy",), ("dx",),
                (("input_shape", tuple(input_shape)), ("exp_shift", shift)), tensor_id)


def map_with_sums(sums, h, w) -> np.ndarray:
    """(len(sums), h, w, 1) int8 maps whose windows sum to `sums` (each within [-128K, 127K])."""
    k = h * w
    out = np.empty((len(sums), k), np.int64)
    for row, s in enumerate(sums):
        base, extra = divmod(int(s), k)  # extra positions get base + 1
        out[row] = base
        out[row, :extra] += 1
    assert out.min() >= -128 and out.max() <= 127
    return out.reshape(len(sums), h, w, 1).astype(np.int8)


# ---------------------------------------------------------------------------------- numpy definition
@pytest.mark.parametrize("k", WINDOWS)
def test_every_window_sum_against_the_oracle(k):
    h, w = HW[k]
    sums = np.arange(-128 * k, 127 * k + 1)
    x = map_with_sums(sums, h, w)
    assert x.astype(np.int64).sum(axis=(1, 2, 3)).tolist() == sums.tolist()
    got = global_avgpool(x, gap_node())
    assert got.dtype == np.int8 and got.shape == (len(sums), 1)
    want = [clamp(round_half_away(Fraction(int(s), k))) for s in sums]
    assert got[:, 0].tolist() == want


def test_exhaustive_small_windows():
    vals = list(range(-128, 128, 5)) + [127, -127, -1, 0, 1]
    for h, w in ((1, 1), (1, 2), (2, 1), (1, 3)):
        windows = list(itertools.product(vals, repeat=h * w))
        x = np.array(windows, np.int8).reshape(len(windows), h, w, 1)
        got = global_avgpool(x, gap_node())[:, 0].tolist()
        assert got == [oracle_avg(win) for win in windows], (h, w)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_random_maps_against_the_oracle(n, h, w, c, seed):
    x = np.random.default_rng(seed).integers(-128, 128, (n, h, w, c)).astype(np.int8)
    got = global_avgpool(x, gap_node())
    want = [[oracle_avg(x[i, :, :, ch].ravel()) for ch in range(c)] for i in range(n)]
    assert got.shape == (n, c) and got.tolist() == want


# (K, window sum, output): the docs/numerics-avgpool.md vectors; exact halves need an even K
VECTORS = [
    (4, 2, 1), (4, -2, -1), (4, 6, 2), (4, -6, -2), (4, 5, 1), (4, -5, -1),  # 0.5, 1.5 away from zero
    (36, 18, 1), (36, -18, -1), (36, 54, 2), (36, -54, -2), (36, -17, 0), (36, -19, -1),
    (9, 4, 0), (9, -4, 0), (9, 5, 1), (9, -5, -1), (9, 13, 1), (9, -14, -2), (9, 1143, 127),
    (49, 24, 0), (49, -24, 0), (49, 25, 1), (49, -25, -1), (49, 73, 1), (49, 74, 2), (49, -74, -2),
    (49, 6174, 126), (49, 6198, 126), (49, 6199, 127), (49, 6223, 127), (49, -6272, -127),
    (64, 32, 1), (64, -32, -1), (64, -31, 0), (64, -96, -2), (64, 8128, 127), (64, -8192, -127),
    (1, -128, -127), (1, 127, 127), (1, -7, -7),
]


@pytest.mark.parametrize("k,s,want", VECTORS)
def test_spec_vectors(k, s, want):
    h, w = HW[k]
    assert global_avgpool(map_with_sums([s], h, w), gap_node()).tolist() == [[want]]
    assert oracle_avg([s] + [0] * (k - 1)) == want  # the vector table itself agrees with the oracle
    assert div_round_half_away(np.array([s]), k).tolist() == [round_half_away(Fraction(s, k))]


# (K, d for dy = GRAD_DY): the docs/numerics-avgpool.md gradient vectors
GRAD_DY = (1, -1, 3, -3, 9, -100, 127, -128)
GRAD_VECTORS = [(6, (1, -1, 2, -2, 6, -67, 85, -85)), (9, (1, -1, 3, -3, 8, -89, 113, -114)),
                (36, (1, -1, 3, -3, 8, -89, 113, -114)), (49, (1, -1, 2, -2, 6, -65, 83, -84)),
                (64, (1, -1, 3, -3, 9, -100, 127, -127))]


@pytest.mark.parametrize("k,want", GRAD_VECTORS)
def test_grad_spec_vectors(k, want):
    dy = np.array([GRAD_DY], np.int8)
    dx = global_avgpool_grad(dy, grad_node((1, 1, k, len(GRAD_DY))))
    assert dx[0, 0, k - 1].tolist() == list(want)
    assert [oracle_grad(v, k)[0] for v in GRAD_DY] == list(want)


@pytest.mark.parametrize("k", WINDOWS + (6, 196))
def test_grad_every_dy_against_the_oracle(k):
    h, w = HW.get(k, (1, k))
    dy = np.arange(-128, 128, dtype=np.int64).astype(np.int8).reshape(2, 128)
    node = grad_node((2, h, w, 128))
    dx = global_avgpool_grad(dy, node)
    assert dx.dtype == np.int8 and dx.shape == (2, h, w, 128) and dx.flags.c_contiguous
    assert (dx == dx[:, :1, :1, :]).all()  # the same value at every window position
    want = [[oracle_grad(v, k)[0] for v in row] for row in dy.tolist()]
    assert dx[:, 0, 0, :].tolist() == want
    assert node.attr("exp_shift") == oracle_grad(1, k)[1]
    if k & (k - 1) == 0:  # a power of two: d is dy (clamped)
        assert dx[:, 0, 0, :].tolist() == np.clip(dy, -127, 127).tolist()


def test_largest_window_sums_fit_int32():
    """K = 2**24 (4096 x 4096): all -128 sums to -2**31, int32's minimum; one more position is refused."""
    x = np.full((1, 4096, 4096, 1), -128, np.int8)
    assert global_avgpool(x, gap_node()).tolist() == [[-127]]
    x[:] = 127
    assert global_avgpool(x, gap_node()).tolist() == [[127]]
    with pytest.raises(ValueError, match="4096x4097 has 16781312 positions"):
        global_avgpool(np.zeros((1, 4096, 4097, 1), np.int8), gap_node())


def test_grad_is_the_derivative_of_the_mean_within_one_lsb():
    """d * 2**(e + exp_shift) against dy * 2**e / K: within half an output LSB (one rounding), one LSB
    at the saturated dy = -128; exact when K is a power of two."""
    e = -9
    for k in (1, 2, 3, 5, 6, 7, 9, 12, 36, 49, 64, 100, 196, 255, 256, 257):
        node = grad_node((1, 1, k, 256))
        dy = np.arange(-128, 128).astype(np.int8).reshape(1, 256)
        (dx,) = REFERENCE_KERNELS["global_avgpool_grad"](node, CTX, QTensor(dy, e))
        assert dx.e == e + node.attr("exp_shift") and dx.m.shape == (1, 1, k, 256)
        lsb = Fraction(2) ** dx.e
        for d, g in zip(dx.m[0, 0, 0].tolist(), dy[0].tolist()):
            err = abs(d * lsb - Fraction(g, k) * Fraction(2) ** e)
            assert err <= (lsb if g == -128 else lsb / 2), (k, g, d)
            if k & (k - 1) == 0 and g != -128:
                assert err == 0
        # a finite difference of the real mean: raising one input by t raises the mean by t / K, so
        # the sum over the window of dx * t is dy * t (within K/2 output LSBs)
        total = dx.m[0, 0].astype(np.int64).sum(axis=0)  # (256,)
        for t, g in zip(total.tolist(), dy[0].tolist()):
            assert abs(t * lsb - g * Fraction(2) ** e) <= k * lsb, (k, g)


def test_op_rows_exponents_and_reference_kernels():
    assert OPS["global_avgpool"].kind == OPS["global_avgpool_grad"].kind == "vector"
    assert report_phase("global_avgpool") == report_phase("global_avgpool_grad") == "vector"
    assert output_exponents(gap_node(), [-6]) == (-6,)
    assert output_exponents(grad_node((2, 7, 7, 3)), [-6]) == (-6 - 5,)
    x = QTensor(RNG.integers(-128, 128, (2, 7, 7, 3)).astype(np.int8), -6)
    (y,) = REFERENCE_KERNELS["global_avgpool"](gap_node(), CTX, x)
    assert y.e == -6 and y.m.tolist() == [[oracle_avg(x.m[i, :, :, c].ravel()) for c in range(3)] for i in range(2)]
    (dx,) = REFERENCE_KERNELS["global_avgpool_grad"](grad_node((2, 7, 7, 3)), CTX, y)
    assert dx.e == -6 - 5 and dx.m.shape == (2, 7, 7, 3)
    assert dx.m[:, 3, 5, :].tolist() == [[oracle_grad(v, 49)[0] for v in row] for row in y.m.tolist()]


def test_errors_name_the_node_and_field():
    dy = np.zeros((2, 3), np.int8)
    with pytest.raises(ValueError, match=r"gap.bwd: global_avgpool_grad attribute exp_shift is -2; .* 49 .* -5"):
        global_avgpool_grad(dy, grad_node((2, 7, 7, 3), exp_shift=-2))
    with pytest.raises(ValueError, match=r"gap.bwd: .* dy of shape \(2, 3\) does not match input_shape"):
        global_avgpool_grad(dy, grad_node((2, 7, 7, 4)))
    with pytest.raises(ValueError, match="input_shape must be"):
        global_avgpool_grad(dy, Node("gap.bwd", "global_avgpool_grad", "backward", "gap", (), (), (("exp_shift", 0),)))
    with pytest.raises(ValueError, match=r"gap.fwd: global_avgpool window 0x3 has 0 positions"):
        global_avgpool(np.zeros((1, 0, 3, 2), np.int8), gap_node())
    with pytest.raises(ValueError, match=r"input must be \(N, H, W, C\)"):
        global_avgpool(np.zeros((2, 3), np.int8), gap_node())
    with pytest.raises(ValueError, match="2\\*\\*24"):
        global_avgpool_grad(dy, grad_node((2, 1 << 12, (1 << 12) + 1, 3), exp_shift=-24))


# ---------------------------------------------------------------------------------- C
def c_ops(lib):
    from gpu_backend.backends import CpuOps

    return CpuOps(lib)


@pytest.fixture(scope="module")
def c_builds():
    return cpu_builds.c_builds()


SHAPES = [(1, 1, 1, 1), (2, 2, 2, 3), (3, 3, 3, 17), (2, 6, 6, 33), (4, 7, 7, 64), (1, 8, 8, 5), (2, 1, 5, 2),
          (0, 7, 7, 3), (2, 7, 7, 0)]


def test_c_equals_numpy_bit_for_bit_in_every_build(c_builds):
    for name, lib in c_builds.items():
        ops = c_ops(lib)
        for shape in SHAPES:
            x = QTensor(RNG.integers(-128, 128, shape).astype(np.int8), -5)
            x.m.flat[: x.m.size // 3] = -128  # a saturating channel where the shape has room
            (got,) = ops.global_avgpool(gap_node(), CTX, x)
            np.testing.assert_array_equal(got, global_avgpool(x.m, gap_node()), err_msg=f"{name} {shape}")
            dy = RNG.integers(-128, 128, (shape[0], shape[3])).astype(np.int8)
            (dx,) = ops.global_avgpool_grad(grad_node(shape), CTX, QTensor(dy, -4))
            assert dx.dtype == np.int8 and dx.shape == shape
            np.testing.assert_array_equal(dx, global_avgpool_grad(dy, grad_node(shape)), err_msg=f"{name} {shape}")
        for k in WINDOWS:  # every window sum / every dy
            h, w = HW[k]
            x = map_with_sums(np.arange(-128 * k, 127 * k + 1), h, w)
            (got,) = ops.global_avgpool(gap_node(), CTX, QTensor(x, 0))
            np.testing.assert_array_equal(got, global_avgpool(x, gap_node()), err_msg=f"{name} K={k}")
            dy = np.arange(-128, 128).astype(np.int8).reshape(1, 256)
            (dx,) = ops.global_avgpool_grad(grad_node((1, h, w, 256)), CTX, QTensor(dy, 0))
            np.testing.assert_array_equal(dx, global_avgpool_grad(dy, grad_node((1, h, w, 256))))


def test_c_large_maps_take_the_parallel_path(c_builds):
    ops, shape = c_ops(c_builds["native"]), (48, 7, 7, 512)  # above NITI_PARALLEL_MIN_ELEMS
    x = RNG.integers(-128, 128, shape).astype(np.int8)
    (got,) = ops.global_avgpool(gap_node(), CTX, QTensor(x, 0))
    np.testing.assert_array_equal(got, global_avgpool(x, gap_node()))
    dy = RNG.integers(-128, 128, (48, 512)).astype(np.int8)
    (dx,) = ops.global_avgpool_grad(grad_node(shape), CTX, QTensor(dy, 0))
    np.testing.assert_array_equal(dx, global_avgpool_grad(dy, grad_node(shape)))


def test_c_errors(c_builds):
    ops = c_ops(c_builds["native"])
    with pytest.raises(ValueError, match="exp_shift"):
        ops.global_avgpool_grad(grad_node((2, 3, 3, 4), exp_shift=0), CTX, QTensor(np.zeros((2, 4), np.int8), 0))
    with pytest.raises(ValueError, match="does not match input_shape"):
        ops.global_avgpool_grad(grad_node((2, 3, 3, 5)), CTX, QTensor(np.zeros((2, 4), np.int8), 0))
    with pytest.raises(TypeError, match="int8"):
        ops.global_avgpool(gap_node(), CTX, QTensor(np.zeros((1, 2, 2, 1), np.int16), 0))
    with pytest.raises(ValueError, match="0 positions"):
        ops.global_avgpool(gap_node(), CTX, QTensor(np.zeros((1, 2, 0, 1), np.int8), 0))


def test_c_kernel_checks_a_caller_that_skipped_the_row(c_builds):
    """The C entry point's own exp_shift check (niti_op_global_avgpool_grad), reached with a node whose
    input_shape passes the row check but whose exp_shift the kernel sees directly."""
    from gpu_backend import node_call
    from gpu_backend.lib import CLibError

    lib = c_builds["native"]
    dy, dx = np.zeros((1, 2), np.int8), np.zeros((1, 3, 3, 2), np.int8)
    node = grad_node((1, 3, 3, 2), exp_shift=-2)
    entry = node_call.CPU_ABI.entry(lib.binding, "global_avgpool_grad")
    call = node_call.fill_call(lib.binding, node_call.CPU_ABI, "global_avgpool_grad", node, CTX,
                               [(dy.ctypes.data, dy.dtype, dy.shape, 0), (dx.ctypes.data, dx.dtype, dx.shape, 0)], 1)
    call.attrs[0] = -1
    with pytest.raises((CLibError, ValueError), match="exp_shift is -1; a window of 9 positions needs -3"):
        lib.check(entry(call))


@pytest.mark.parametrize("engine", cpu_builds.cpu_engines())
def test_cpu_table_equals_numpy_under_every_engine(engine, monkeypatch, c_builds):
    table = cpu_builds.table_under_engine(engine, monkeypatch)
    for shape in ((2, 7, 7, 5), (3, 6, 6, 4), (1, 3, 3, 9)):
        x = QTensor(RNG.integers(-128, 128, shape).astype(np.int8), -6)
        pooled = cpu_builds.assert_matches_reference(table, "global_avgpool", gap_node(), CTX, x)
        cpu_builds.assert_matches_reference(table, "global_avgpool_grad", grad_node(shape), CTX, pooled)


# ---------------------------------------------------------------------------------- CUDA
@pytest.fixture(scope="module", params=[pytest.param("gpu", marks=pytest.mark.gpu), "emulator"])
def dev(request):
    from cuda_libraries import library_and_table

    return library_and_table(request.param)


def test_cuda_equals_numpy(dev):
    from gpu_backend import cuda

    lib, table = dev
    for shape in SHAPES + [(3, 7, 7, 300)]:
        x = QTensor(RNG.integers(-128, 128, shape).astype(np.int8), -5)
        x.m.flat[: x.m.size // 3] = -128
        (want,) = REFERENCE_KERNELS["global_avgpool"](gap_node(), CTX, x)
        got = cuda.to_host(table["global_avgpool"](gap_node(), CTX, lib.to_device(x))[0])
        assert got.e == want.e and got.m.dtype == np.int8 and got.m.shape == want.m.shape, shape
        np.testing.assert_array_equal(got.m, want.m, err_msg=str(shape))
        (want_dx,) = REFERENCE_KERNELS["global_avgpool_grad"](grad_node(shape), CTX, want)
        got_dx = cuda.to_host(table["global_avgpool_grad"](grad_node(shape), CTX, lib.to_device(want))[0])
        assert got_dx.e == want_dx.e and got_dx.m.shape == shape, shape
        np.testing.assert_array_equal(got_dx.m, want_dx.m, err_msg=str(shape))
    for k in WINDOWS:
        h, w = HW[k]
        x = QTensor(map_with_sums(np.arange(-128 * k, 127 * k + 1), h, w), 3)
        got = cuda.to_host(table["global_avgpool"](gap_node(), CTX, x)[0])
        assert got.m.tolist() == global_avgpool(x.m, gap_node()).tolist(), k
        dy = QTensor(np.arange(-128, 128).astype(np.int8).reshape(1, 256), 3)
        got = cuda.to_host(table["global_avgpool_grad"](grad_node((1, h, w, 256)), CTX, dy)[0])
        assert got.m.tolist() == global_avgpool_grad(dy.m, grad_node((1, h, w, 256))).tolist(), k
    with pytest.raises(ValueError, match="exp_shift"):
        table["global_avgpool_grad"](grad_node((1, 3, 3, 2), exp_shift=-1), CTX, QTensor(np.zeros((1, 2), np.int8), 0))


# ---------------------------------------------------------------------------------- graph, lowering, simulator
# 6x6x3 -> conv 3x3 pad 1 -> relu -> (conv 6x6 -> relu -> flatten, replaced below) -> linear 4 -> 10
TOY = ModelSpec("gap-toy", (6, 6, 3), (Conv(4, 3, padding=1), ReLU(), Conv(4, 6), ReLU(), Flatten(), Linear(10)))
REPLACED = ("conv2.fwd", "conv2.requant", "relu2.fwd", "flatten1.bwd", "relu2.bwd", "conv2.in_grad",
            "conv2.in_grad.requant", "conv2.w_grad", "conv2.update")


def graph_with_gap(batch=2):
    """TOY's graph with its conv2 -> relu2 -> flatten replaced by a global average pool of relu1.out
    (N, 6, 6, 4) -> flatten1.out (N, 4), and its backward by global_avgpool_grad from the linear
    layer's error to relu1.out.grad: the head of a ResNet, built by hand (graph.build_graph emits it
    with issue 25)."""
    g = build_graph(TOY, batch)
    shape = g.tensor("relu1.out").shape
    nodes = []
    for n in g.nodes:
        if n.name == "flatten1.fwd":
            n = Node("gap.fwd", "global_avgpool", "forward", "gap", ("relu1.out",), ("flatten1.out",), (), n.tensor_id)
        elif n.name == "relu1.bwd":
            nodes.append(Node("gap.bwd", "global_avgpool_grad", "backward", "gap", ("flatten1.out.grad",),
                              ("relu1.out.grad",), (("input_shape", shape), ("exp_shift", -5)),
                              max(x.tensor_id for x in g.nodes) + 1))
        elif n.name in REPLACED:
            continue
        nodes.append(n)
    return dataclasses.replace(g, nodes=tuple(nodes), weights=tuple(w for w in g.weights if w != "conv2.w"))


def test_lowering_gives_a_sum_pass_and_a_broadcast_pass():
    from hwmodels.lowering import DIV_ROUND_OPS, POOL_SUM_OPS, VectorWork, lower_node

    g = graph_with_gap()
    fwd, bwd = (next(n for n in g.nodes if n.op == op) for op in ("global_avgpool", "global_avgpool_grad"))
    n_in, n_out = g.tensor("relu1.out").size, g.tensor("flatten1.out").size
    assert (n_in, n_out) == (2 * 36 * 4, 2 * 4)
    work = lower_node(g, fwd)
    assert isinstance(work, VectorWork) and work.phase == "vector"
    (p,) = work.passes
    assert (p.name, p.reads, p.writes) == ("sum", ("relu1.out",), ("flatten1.out",))
    assert p.ops == (("int32", POOL_SUM_OPS * n_in + DIV_ROUND_OPS * n_out),)
    work = lower_node(g, bwd)
    assert isinstance(work, VectorWork) and work.phase == "vector"
    (p,) = work.passes
    assert (p.name, p.reads, p.writes) == ("broadcast", ("flatten1.out.grad",), ("relu1.out.grad",))
    assert p.ops == (("int32", (1 + DIV_ROUND_OPS) * n_out), ("int8", n_in))
    assert lower_node(g, fwd, float32=True).passes[0].ops == (("int32", n_in + n_out),)
    assert lower_node(g, bwd, float32=True).passes[0].ops == (("int32", n_out + n_in),)


def test_simulator_prices_a_graph_with_both_ops():
    from hwmodels.config import CONFIG_DIR, load_accelerator
    from hwmodels.sim import simulate

    arch = load_accelerator(CONFIG_DIR / "edge-16x16.yaml")
    result = simulate(arch, graph_with_gap())
    for name in ("gap.fwd", "gap.bwd"):
        node = next(n for n in result.nodes if n.name == name)
        assert node.kind == "vector" and node.cycles > 0 and node.energy_total_pj > 0, name


def test_executors_run_the_graph_with_both_ops(c_builds):
    from gpu_backend.backends import cpu_kernel_table

    g = graph_with_gap()
    params = init_params(g, seed=4)
    x = QTensor(RNG.integers(-127, 128, (2, 6, 6, 3)).astype(np.int8), -8)
    labels = np.array([1, 7], np.int32)
    keep = ("flatten1.out", "relu1.out.grad")
    ref = train_step(g, REFERENCE_KERNELS, params, x, labels, CTX, keep=keep)
    got = train_step(g, cpu_kernel_table(), params, x, labels, CTX, keep=keep)
    assert ref.tensors["relu1.out.grad"].m.any()  # the error reached the conv through the pool
    for name in keep:
        assert ref.tensors[name].e == got.tensors[name].e, name
        np.testing.assert_array_equal(ref.tensors[name].m, got.tensors[name].m)
    for name in ref.params:
        np.testing.assert_array_equal(ref.params[name].m, got.params[name].m)
    assert not np.array_equal(ref.params["conv1.w"].m, params["conv1.w"].m)  # conv1 learned through it
