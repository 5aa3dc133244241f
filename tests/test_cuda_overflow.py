"""int32 overflow at its exact boundary on the CUDA kernels: an int32 GEMM, linear or conv over more
than 131071 products is summed in int64 and narrowed by the device check, so it raises
IntegerOverflowError (at the next synchronising call) exactly where the numpy reference does and
otherwise equals it; it is never refused for its length alone, nor wrapped.

Runs on a GPU where there is one and on the host emulator (the same .cu sources, CUDA threads as
fibers). The emulated dp4a engine takes seconds per op at these depths (the emulated mma engine
far longer), so the emulator runs one exact and one overflowing case per op, the GPU every case.
"""
from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from cuda_libraries import library_for
from gpu_backend import cuda
from nitisim.contract.errors import IntegerOverflowError
from nitisim.contract.executor import StepContext
from nitisim.contract.graph import Node
from nitisim.contract.numerics import INT32_MAX, QTensor, check_int32
from nitisim.contract.reference import REFERENCE_KERNELS, exact_int_matmul

from test_overflow_kernels import INT32_MIN, dot_pair

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX") or "g++") is None and not cuda.cuda_status()[0],
                                reason="neither a GPU nor a C++ compiler for the emulator")

K = 133_146
CTX = StepContext(seed=1, step=2, mu=3)


@pytest.fixture(scope="module", params=[pytest.param("gpu", marks=pytest.mark.gpu),
                                        pytest.param("emulator", marks=pytest.mark.slow)])
def dev(request):
    lib = library_for(request.param)
    # the emulated mma engine is too slow for reductions this long
    engines = ("mma", "dp4a") if request.param == "gpu" else ("dp4a",)
    lib.conv_mode = "auto"
    yield SimpleNamespace(lib=lib, table=cuda.cuda_kernel_table(lib=lib), engines=engines,
                          gpu=request.param == "gpu")
    lib.gemm_engine = "auto"


def cases(dev, exact: int, overflow: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, a, b) with a . b = the target: on the emulator one exact and one overflowing target,
    on a GPU both ends of int32 and one past each, and the -128 x -128 switch at 131071/131072."""
    targets = (INT32_MAX, INT32_MAX + 1, INT32_MIN, INT32_MIN - 1) if dev.gpu else (exact, overflow)
    out = [(f"sum {t}", *dot_pair(t, K)) for t in targets]
    if dev.gpu:
        out += [(f"{k} x -128 x -128", np.full(k, -128, np.int8), np.full(k, -128, np.int8))
                for k in (131_071, 131_072)]
    return out


def node(op, **attrs) -> Node:
    return Node(f"test.{op}", op, "forward", "test", (), (), tuple(sorted(attrs.items())), 5)


def agree_on_device(dev, n: Node, *inputs, what: str) -> None:
    """The kernel-table op raises IntegerOverflowError exactly when the reference raises, and
    otherwise equals it (values and exponent). Over a reduction this long the op waits for its
    result, so the overflow is raised by the op call itself (where the executor names the node)."""
    try:
        want = REFERENCE_KERNELS[n.op](n, CTX, *inputs)[0]
    except IntegerOverflowError:
        with pytest.raises(IntegerOverflowError, match="int32 accumulator overflow"):
            dev.table[n.op](n, CTX, *inputs)
        return
    got = cuda.to_host(dev.table[n.op](n, CTX, *inputs)[0])
    assert got.m.dtype == want.m.dtype and got.e == want.e, what
    np.testing.assert_array_equal(got.m, want.m, err_msg=what)


def test_gemm_s32_boundary(dev):
    for engine in dev.engines:
        dev.lib.gemm_engine = engine
        for name, a, b in cases(dev, INT32_MIN, INT32_MAX + 1):
            da, db = dev.lib.to_device(a[None]), dev.lib.to_device(b[None])
            want = exact_int_matmul(a[None], b[None].T)
            if INT32_MIN <= int(want[0, 0]) <= INT32_MAX:
                np.testing.assert_array_equal(dev.lib.gemm(da, db).m, want.astype(np.int32), f"{engine} {name}")
            else:
                with pytest.raises(IntegerOverflowError, match="int32 accumulator overflow"):
                    dev.lib.gemm(da, db).m
            if dev.gpu:  # the int64 form (the emulator checks it in test_cuda.py)
                np.testing.assert_array_equal(dev.lib.gemm(da, db, wide=True).m, want, f"{engine} {name} s64")


def test_conv_forward_boundary(dev):
    for engine in dev.engines:
        dev.lib.gemm_engine = engine
        for name, a, b in cases(dev, INT32_MAX, INT32_MIN - 1):
            x, w = QTensor(a.reshape(1, 1, 1, -1), -7), QTensor(b.reshape(1, 1, 1, -1), -6)
            agree_on_device(dev, node("conv2d", stride=1, padding=0), x, w, what=f"{engine} {name}")


def test_conv_input_grad_boundary(dev):
    for engine in dev.engines:
        dev.lib.gemm_engine = engine
        for name, a, b in cases(dev, INT32_MIN, INT32_MAX + 1):
            dy, w = QTensor(a.reshape(1, 1, 1, -1), -7), QTensor(b.reshape(-1, 1, 1, 1), -6)  # dx sums over O
            agree_on_device(dev, node("conv2d_input_grad", stride=1, padding=0, input_shape=(1, 1, 1, 1)), dy, w,
                            what=f"{engine} {name}")


def test_weight_grad_int32_boundary(dev):
    """conv and linear weight gradients narrowed to int32 over k pixels / a batch of k."""
    for engine in dev.engines:
        dev.lib.gemm_engine = engine
        for name, a, b in cases(dev, INT32_MAX, INT32_MIN - 1):
            x, dy = QTensor(a.reshape(1, 1, -1, 1), -7), QTensor(b.reshape(1, 1, -1, 1), -6)
            agree_on_device(dev, node("conv2d_weight_grad", stride=1, padding=0, kernel=1, dtype="int32"), x, dy,
                            what=f"{engine} conv {name}")
            if dev.gpu:
                agree_on_device(dev, node("linear_weight_grad", dtype="int32"), QTensor(a.reshape(-1, 1), -7),
                                QTensor(b.reshape(-1, 1), -6), what=f"{engine} linear {name}")


def test_linear_boundary(dev):
    for engine in dev.engines:
        dev.lib.gemm_engine = engine
        for name, a, b in cases(dev, INT32_MAX, INT32_MAX + 1)[1 if not dev.gpu else 0:]:  # emulator: overflow only
            x, w = QTensor(a.reshape(1, -1), -7), QTensor(b.reshape(1, -1), -6)
            agree_on_device(dev, node("linear"), x, w, what=f"{engine} forward {name}")
            agree_on_device(dev, node("linear_input_grad"), x, QTensor(b.reshape(-1, 1), -6),
                            what=f"{engine} input grad {name}")


def test_reference_cases_are_what_they_say():
    """The emulator's two cases per op are one exact and one overflowing sum (the reference decides)."""
    for t, raises in ((INT32_MAX, False), (INT32_MIN, False), (INT32_MAX + 1, True), (INT32_MIN - 1, True)):
        a, b = dot_pair(t, K)
        acc = exact_int_matmul(a[None], b[None].T)
        if raises:
            with pytest.raises(IntegerOverflowError):
                check_int32(acc, "reference")
        else:
            assert int(check_int32(acc, "reference")[0, 0]) == t


def test_train_step_names_the_overflowing_conv(dev):
    """A whole train_step on the CUDA table: the conv over 140000 channels of 127 x 127 raises at its
    own node, which the executor names with the layer and the reduction hint (as numpy and the CPU do,
    tests/test_overflow_reporting.py)."""
    from nitisim.contract.executor import NodeOverflowError, train_step
    from nitisim.contract.graph import NumericsOptions, build_graph
    from nitisim.contract.init import init_params

    from test_overflow_reporting import conv_model

    graph = build_graph(conv_model(140_000), 1, NumericsOptions(), training=True)
    params = {k: QTensor(np.full_like(v.m, 127), v.e) if k in graph.weights else v
              for k, v in init_params(graph, 0).items()}
    x = QTensor(np.full((1, 1, 1, 140_000), 127, np.int8), -8)
    dev.lib.gemm_engine = dev.engines[-1]
    with pytest.raises(NodeOverflowError) as info:
        train_step(graph, dev.table, params, x, np.array([3], np.int32), StepContext(mu=2))
    assert (info.value.node, info.value.layer) == ("conv1.fwd", "conv1")
    text = str(info.value)
    assert text.startswith("graph node conv1.fwd (conv2d, layer conv1): ") and "int32 accumulator overflow" in text
    assert text.endswith("(kernel height x width x input channels at most 133144)"), text
    dev.lib.synchronize()  # the flag was reported once and cleared
