"""The `add` op (exponent-aligned sum of two int8 tensors) in every reader, end to end.

  - reference.aligned_add (the numpy definition) against a pure-Python big-int oracle of its
    definition (its own mix32, no numpy),
    on exhaustive small operands and random ones, every rounding mode, every exponent gap 0..55,
    and a check that the result is one rounding of the exact sum (not a double rounding);
  - the C kernel (niti_op_add, through the generic node caller) equals numpy bit for bit in every
    build the machine runs, and the CPU kernel table under every $NITISIM_CPU_ENGINE value the
    machine allows;
  - the CUDA kernels (niti_cuda_op_add) on the host emulator (and on a GPU where present) equal
    numpy, and a gap above 55 is a deferred overflow naming the op;
  - the lowering prices it as vector work, and the simulator and the executors run a hand-built
    graph containing an add node (the graph builder will produce it with issue 25).
"""
from __future__ import annotations

import dataclasses
import itertools
from fractions import Fraction
from types import MappingProxyType

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cpu_builds
from nitisim.contract import numerics as nm
from nitisim.contract.reference import aligned_add
from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import Node, TensorSpec, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.models import Conv, Flatten, Linear, ModelSpec, ReLU
from nitisim.contract.numerics import QTensor
from nitisim.contract.ops import OPS, report_phase
from nitisim.contract.reference import REFERENCE_KERNELS

MODES = nm.ROUNDING_MODES
CTX = StepContext(seed=21, step=7, mu=3)
RNG = np.random.default_rng(25)


# ---------------------------------------------------------------------------------- big-int oracle
def _mix32(x: int) -> int:
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def oracle_add(a, e_a, b, e_b, mode, seed=0, step=0, tensor_id=0):
    """The definition with Python integers: exact sum on min(e_a, e_b), s = b(acc) - 7, one rounding."""
    if abs(e_a - e_b) > 55:
        raise IntegerOverflowError("gap")
    e_lo = min(e_a, e_b)
    acc = [int(x) * 2 ** (e_a - e_lo) + int(y) * 2 ** (e_b - e_lo) for x, y in zip(a, b)]
    peak = max((abs(v) for v in acc), default=0)
    s = 0 if peak == 0 else (peak - 1).bit_length()
    s -= 7
    if s <= 0:
        return [max(-127, min(127, v)) for v in acc], e_lo
    key = _mix32(_mix32(_mix32(seed) ^ step) ^ tensor_id)
    out = []
    for i, v in enumerate(acc):
        mag = abs(v)
        q, r = mag >> s, mag & ((1 << s) - 1)
        if mode == "nearest":
            up = r >= 1 << (s - 1)
        elif mode == "pseudo_stochastic":
            k = s // 2
            up = (r >> k) > ((r & ((1 << k) - 1)) << (s & 1))
        else:
            width = min(s, 31)  # more than 31 remainder bits: the top 31 against 31 random bits
            up = (r >> (s - width)) > (_mix32(key ^ i) >> (32 - width))
        m = min(127, q + up)
        out.append(-m if v < 0 else m)
    return out, e_lo + s


def assert_one_rounding(a, e_a, b, e_b, m, e, mode):
    """Each output is the exact sum, scaled to 2**e, rounded once: toward zero or one step away
    (nearest: the closer one, ties away), unless it saturated at 127."""
    for x, y, got in zip(a, b, m):
        exact = Fraction(int(x)) * Fraction(2) ** (e_a - e) + Fraction(int(y)) * Fraction(2) ** (e_b - e)
        low = int(abs(exact))  # truncation toward zero
        mag = abs(int(got))
        if mag == 127 and abs(exact) > 127:
            continue
        assert mag in (low, low + 1), (x, y, exact, got)
        assert got == 0 or (got > 0) == (exact > 0)
        if mode == "nearest":
            assert mag == (low + 1 if abs(exact) - low >= Fraction(1, 2) else low), (exact, got)


def _i8(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int8)


EDGES = [-128, -127, -126, -64, -1, 0, 1, 63, 64, 126, 127]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("gap", range(56))
def test_numpy_equals_the_big_int_oracle_at_every_gap(mode, gap):
    pairs = list(itertools.product(EDGES, EDGES))  # every edge pair, both operand orders
    a, b = _i8([p[0] for p in pairs]), _i8([p[1] for p in pairs])
    for e_a, e_b in ((-9, -9 - gap), (-9 - gap, -9), (40, 40 + gap)):
        m, e = aligned_add(a, e_a, b, e_b, mode, seed=3, step=gap, tensor_id=5)
        want_m, want_e = oracle_add(a, e_a, b, e_b, mode, 3, gap, 5)
        assert m.dtype == np.int8 and m.tolist() == want_m and e == want_e, (e_a, e_b)
        assert_one_rounding(a, e_a, b, e_b, m, e, mode)


@pytest.mark.parametrize("mode", MODES)
def test_exhaustive_small_operands(mode):
    vals = list(range(-9, 10))
    pairs = list(itertools.product(vals, vals))
    a, b = _i8([p[0] for p in pairs]), _i8([p[1] for p in pairs])
    for gap in (0, 1, 2, 3, 5, 8):
        m, e = aligned_add(a, 0, b, gap, mode, seed=1, tensor_id=2)
        assert (m.tolist(), e) == oracle_add(a, 0, b, gap, mode, 1, 0, 2)
        assert_one_rounding(a, 0, b, gap, m, e, mode)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-128, 127), st.integers(-128, 127)), min_size=1, max_size=40),
       st.integers(-60, 60), st.integers(0, 55), st.booleans(), st.sampled_from(MODES), st.integers(0, 2**32 - 1))
def test_numpy_equals_the_oracle_on_random_operands(pairs, e_a, gap, swap, mode, seed):
    a, b = _i8([p[0] for p in pairs]), _i8([p[1] for p in pairs])
    e_b = e_a - gap if swap else e_a + gap
    m, e = aligned_add(a, e_a, b, e_b, mode, seed=seed, step=4, tensor_id=9)
    assert (m.tolist(), e) == oracle_add(a, e_a, b, e_b, mode, seed, 4, 9)
    assert_one_rounding(a, e_a, b, e_b, m, e, mode)


def test_zeros_small_sums_and_shapes():
    z = np.zeros((2, 3), np.int8)
    m, e = aligned_add(z, -4, z, -30, "stochastic")
    assert m.shape == (2, 3) and not m.any() and e == -30  # no shift: the exponent is e_lo
    m, e = aligned_add(_i8([3, -2]), -5, _i8([1, 1]), -6, "nearest")
    assert m.tolist() == [7, -3] and e == -6  # exact, no rounding
    m, e = aligned_add(_i8([127]), 0, _i8([127]), 0, "nearest")
    assert m.tolist() == [127] and e == 1  # 254 -> 127 * 2
    with pytest.raises(ValueError, match="shapes"):
        aligned_add(_i8([1, 2]), 0, _i8([1]), 0, "nearest")


def test_largest_gap_reaches_shift_56_and_gap_56_raises():
    m, e = aligned_add(_i8([-128, 127, 0]), 10, _i8([-128, 1, 5]), -45, "stochastic", seed=2)
    assert e == -45 + 56  # |acc| = 2**62 + 128: b = 63, s = 56
    assert (m.tolist(), e) == oracle_add(_i8([-128, 127, 0]), 10, _i8([-128, 1, 5]), -45, "stochastic", 2)
    for e_a, e_b in ((0, 56), (56, 0), (-100, -44)):
        with pytest.raises(IntegerOverflowError, match=rf"exponents {e_a} and {e_b} are 56 apart"):
            aligned_add(_i8([1]), e_a, _i8([1]), e_b, "nearest")


def test_op_row_and_reference_kernel():
    assert OPS["add"].kind == "vector" and report_phase("add") == "vector"
    n = _node("nearest")
    a, b = QTensor(_i8([100, -3]), -4), QTensor(_i8([50, 3]), -5)
    (out,) = REFERENCE_KERNELS["add"](n, CTX, a, b)
    assert (out.m.tolist(), out.e) == oracle_add(a.m, -4, b.m, -5, "nearest", CTX.seed, CTX.step, n.tensor_id)


def _node(mode, tensor_id=31) -> Node:
    return Node("res.add", "add", "forward", "res", (), (), (("mode", mode),), tensor_id)


def _operands(shape, gap):
    a = QTensor(RNG.integers(-128, 128, shape).astype(np.int8), -6)
    b = QTensor(RNG.integers(-128, 128, shape).astype(np.int8), -6 - gap)
    return a, b


# ---------------------------------------------------------------------------------- C
def c_add(lib, a, e_a, b, e_b, mode, seed=0, step=0, tensor_id=0):
    """The C library's add through the generic node caller (CpuOps' method): (mantissa, exponent)."""
    from gpu_backend.backends import CpuOps

    out, = CpuOps(lib).add(_node(mode, tensor_id), StepContext(seed=seed, step=step), QTensor(a, e_a), QTensor(b, e_b))
    return out.m, out.e


C_GAPS = (0, 1, 9, 24, 25, 31, 32, 40, 55)


@pytest.fixture(scope="module")
def c_builds():
    return cpu_builds.c_builds()


def test_c_equals_numpy_bit_for_bit_in_every_build(c_builds):
    for name, lib in c_builds.items():
        for mode, gap, shape in itertools.product(MODES, C_GAPS, [(0,), (7,), (3, 5, 11)]):
            a, b = _operands(shape, gap)
            for x, y in ((a, b), (b, a)):
                want = aligned_add(x.m, x.e, y.m, y.e, mode, seed=5, step=6, tensor_id=7)
                got = c_add(lib, x.m, x.e, y.m, y.e, mode, seed=5, step=6, tensor_id=7)
                assert got[1] == want[1] and got[0].dtype == np.int8, (name, mode, gap)
                np.testing.assert_array_equal(got[0], want[0], err_msg=f"{name} {mode} gap {gap}")


def test_c_large_tensor_takes_the_parallel_path(c_builds):
    lib = c_builds["native"]
    a, b = _operands((1 << 21) + 3, 13)  # above NITI_PARALLEL_MIN_ELEMS: the OpenMP loops
    for mode in MODES:
        want = aligned_add(a.m, a.e, b.m, b.e, mode, seed=8, tensor_id=1)
        got = c_add(lib, a.m, a.e, b.m, b.e, mode, seed=8, tensor_id=1)
        assert got[1] == want[1]
        np.testing.assert_array_equal(got[0], want[0])


def test_c_edges_and_errors(c_builds):
    lib = c_builds["native"]
    edge_a, edge_b = zip(*itertools.product(EDGES, EDGES))
    for mode, gap in itertools.product(MODES, range(56)):
        want = aligned_add(_i8(edge_a), 3, _i8(edge_b), 3 - gap, mode, seed=gap)
        got = c_add(lib, _i8(edge_a), 3, _i8(edge_b), 3 - gap, mode, seed=gap)
        assert got[1] == want[1] and got[0].tolist() == want[0].tolist(), (mode, gap)
    with pytest.raises(IntegerOverflowError, match="exponents -3 and 53 are 56 apart"):
        c_add(lib, _i8([1]), -3, _i8([1]), 53, "nearest")
    with pytest.raises(ValueError, match="shapes"):
        c_add(lib, _i8([1, 2]), 0, _i8([1]), 0, "nearest")
    with pytest.raises(TypeError, match="int8"):
        c_add(lib, np.array([1], np.int16), 0, _i8([1]), 0, "nearest")


@pytest.mark.parametrize("engine", cpu_builds.cpu_engines())
def test_cpu_table_equals_numpy_under_every_engine(engine, monkeypatch, c_builds):
    table = cpu_builds.table_under_engine(engine, monkeypatch)
    for mode, gap in itertools.product(MODES, (0, 4, 33)):
        a, b = _operands((2, 4, 4, 3), gap)
        cpu_builds.assert_matches_reference(table, "add", _node(mode), CTX, a, b)


# ---------------------------------------------------------------------------------- CUDA
@pytest.fixture(scope="module", params=[pytest.param("gpu", marks=pytest.mark.gpu), "emulator"])
def dev(request):
    from cuda_libraries import library_and_table

    return library_and_table(request.param)


@pytest.mark.parametrize("mode", MODES)
def test_cuda_equals_numpy(dev, mode):
    from gpu_backend import cuda

    lib, table = dev
    for gap, shape in ((0, (5,)), (3, (2, 3, 3, 7)), (24, (600,)), (31, (33,)), (32, (9,)), (55, (4, 5)), (7, (0,))):
        a, b = _operands(shape, gap)
        for x, y in ((a, b), (b, a)):
            (want,) = REFERENCE_KERNELS["add"](_node(mode), CTX, x, y)
            got = cuda.to_host(table["add"](_node(mode), CTX, lib.to_device(x), lib.to_device(y))[0])
            assert got.e == want.e and got.m.dtype == np.int8 and got.m.shape == want.m.shape, (mode, gap)
            np.testing.assert_array_equal(got.m, want.m, err_msg=f"{mode} gap {gap}")
    edge_a, edge_b = zip(*itertools.product(EDGES, EDGES))
    x, y = QTensor(_i8(edge_a), 12), QTensor(_i8(edge_b), 12 - 55)
    (want,) = REFERENCE_KERNELS["add"](_node(mode), CTX, x, y)
    got = cuda.to_host(table["add"](_node(mode), CTX, x, y)[0])
    assert got.e == want.e and got.m.tolist() == want.m.tolist()


def test_cuda_gap_above_55_is_a_deferred_overflow(dev):
    lib, table = dev
    (out,) = table["add"](_node("nearest"), CTX, QTensor(_i8([1, 2]), 0), QTensor(_i8([3, 4]), -56))
    with pytest.raises(IntegerOverflowError, match="add: the operand exponents were more than 55 apart"):
        out.m
    lib.synchronize()  # the flag was cleared
    with pytest.raises(ValueError, match="shapes"):
        table["add"](_node("nearest"), CTX, QTensor(_i8([1, 2]), 0), QTensor(_i8([3]), 0))


# ---------------------------------------------------------------------------------- graph, lowering, simulator
# 6x6x3 -> conv 3x3 pad 1 -> 6x6x4 (twice), so relu1.out and relu2.out have one shape
RESIDUAL = ModelSpec("residual-toy", (6, 6, 3), (Conv(4, 3, padding=1), ReLU(), Conv(4, 3, padding=1), ReLU(),
                                                 Flatten(), Linear(10)))


def graph_with_add(batch=2, mode="pseudo_stochastic"):
    """RESIDUAL's graph with a shortcut sum res.out = relu1.out + relu2.out feeding the flatten: the
    forward of a residual block, built by hand (graph.build_graph has no add yet; issue 25)."""
    g = build_graph(RESIDUAL, batch)
    shape = g.tensor("relu2.out").shape
    tensors = dict(g.tensors)
    tensors["res.out"] = TensorSpec("res.out", shape, "int8", "activation")
    nodes = []
    for n in g.nodes:
        if n.name == "flatten1.fwd":
            n = dataclasses.replace(n, inputs=("res.out",))
        nodes.append(n)
        if n.name == "relu2.fwd":
            nodes.append(Node("res.add", "add", "forward", "res", ("relu1.out", "relu2.out"), ("res.out",),
                              (("mode", mode),), max(x.tensor_id for x in g.nodes) + 1))
    return dataclasses.replace(g, nodes=tuple(nodes), tensors=MappingProxyType(tensors))


def test_lowering_gives_two_vector_passes():
    from hwmodels.lowering import ADD_ALIGN_OPS, RANGE_OPS, ROUND_OPS, VectorWork, lower_node

    g = graph_with_add(mode="stochastic")
    node = next(n for n in g.nodes if n.op == "add")
    work = lower_node(g, node)
    n = g.tensor("res.out").size
    assert isinstance(work, VectorWork) and work.phase == "vector"
    assert [p.name for p in work.passes] == ["range", "round"]
    assert all(p.reads == ("relu1.out", "relu2.out") for p in work.passes)
    assert work.passes[0].writes == () and work.passes[1].writes == ("res.out",)
    assert work.passes[0].ops == (("int32", (ADD_ALIGN_OPS + RANGE_OPS) * n),)
    assert work.passes[1].ops == (("int32", (ADD_ALIGN_OPS + ROUND_OPS["stochastic"]) * n),)
    fp = lower_node(g, node, float32=True)
    assert isinstance(fp, VectorWork) and fp.passes[0].ops == (("int32", n),)


def test_simulator_prices_a_graph_with_an_add():
    from hwmodels.config import CONFIG_DIR, load_accelerator
    from hwmodels.sim import simulate

    arch = load_accelerator(CONFIG_DIR / "edge-16x16.yaml")
    with_add, without = simulate(arch, graph_with_add()), simulate(arch, build_graph(RESIDUAL, 2))
    add = next(n for n in with_add.nodes if n.name == "res.add")
    assert add.kind == "vector" and add.cycles > 0 and add.energy_total_pj > 0
    assert with_add.cycles > without.cycles


def test_executors_run_the_graph_with_an_add(c_builds):
    from gpu_backend.backends import cpu_kernel_table

    g = graph_with_add(mode="stochastic")
    params = init_params(g, seed=4)
    x = QTensor(RNG.integers(-127, 128, (2, 6, 6, 3)).astype(np.int8), -8)
    labels = np.array([1, 7], np.int32)
    ref = train_step(g, REFERENCE_KERNELS, params, x, labels, CTX, keep=("res.out",))
    got = train_step(g, cpu_kernel_table(), params, x, labels, CTX, keep=("res.out",))
    assert ref.tensors["res.out"].e == got.tensors["res.out"].e
    np.testing.assert_array_equal(ref.tensors["res.out"].m, got.tensors["res.out"].m)
    for name in ref.params:
        np.testing.assert_array_equal(ref.params[name].m, got.params[name].m)
