"""The kernel-table builder (nitisim/contract/kernel_table.py): it refuses a backend missing an op, and
every table it builds (numpy, C, CUDA on the host emulator) gives each output the exponent its op
row says (nitisim.contract.ops)."""
import os
import shutil

import numpy as np
import pytest

from nitisim.contract.executor import StepContext, train_step
from nitisim.contract.graph import Node, NumericsOptions, build_graph
from nitisim.contract.init import init_params
from nitisim.contract.kernel_table import MissingKernelError, build_kernel_table
from nitisim.contract.models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU
from nitisim.contract.numerics import QTensor
from nitisim.contract.ops import OPS, output_exponents
from nitisim.contract.reference import REFERENCE_KERNELS, ReferenceOps

HAVE_CC = shutil.which(os.environ.get("CC") or "gcc") is not None
# every op of the vocabulary: two convs (the second has an input gradient), pool, dropout, linears
MODEL = ModelSpec("every-op", (8, 8, 2), (Conv(4, 3, padding=1), ReLU(), Conv(4, 3, padding=1), ReLU(),
                                          MaxPool(2, 2), Flatten(), Linear(8), ReLU(), Dropout(0.5), Linear(4)),
                  classes=4)
OPTIONS = [NumericsOptions(update_rule=rule) for rule in ("plain", "momentum", "shadow16")]


def test_builder_refuses_a_backend_missing_an_op():
    class NoMaxpoolGrad(ReferenceOps):
        maxpool_grad = None

    with pytest.raises(MissingKernelError, match="NoMaxpoolGrad has no method for op 'maxpool_grad'"):
        build_kernel_table(NoMaxpoolGrad())

    class NoArithmetic(ReferenceOps):
        with_exponent = None

    with pytest.raises(MissingKernelError, match="with_exponent"):
        build_kernel_table(NoArithmetic())


def test_builder_covers_exactly_the_vocabulary():
    assert tuple(REFERENCE_KERNELS) == tuple(OPS)


def test_an_op_returning_the_wrong_number_of_outputs_is_named():
    class TwoRelus(ReferenceOps):
        @staticmethod
        def relu(node, ctx, x):
            return np.maximum(x.m, 0), np.maximum(x.m, 0)

    graph = build_graph(MODEL, 2)
    relu = next(n for n in graph.nodes if n.op == "relu")
    x = QTensor(np.ones(graph.tensor(relu.inputs[0]).shape, np.int8), -3)
    with pytest.raises(ValueError, match=f"{relu.name}: the relu kernel returned 2 outputs, its row has 1"):
        build_kernel_table(TwoRelus())["relu"](relu, StepContext(), x)


def _exponent(t):
    return None if t is None or isinstance(t, np.ndarray) else int(t.e)


def _recording(table, seen: list):
    """The table with each kernel checked against its row: every rule-based output exponent must be
    what output_exponents says; all exponents are recorded (node, output index, exponent)."""
    def wrap(op, kernel):
        def run(node, ctx, *inputs):
            outputs = kernel(node, ctx, *inputs)
            want = output_exponents(node, [_exponent(t) for t in inputs])
            for i, (out, e) in enumerate(zip(outputs, want)):
                got = _exponent(out)
                assert e is None or got == e, (node.name, i, got, e)
                seen.append((node.name, op, i, got))
            return outputs
        return run
    return {op: wrap(op, kernel) for op, kernel in table.items()}


def _tables():
    tables = [("numpy", lambda: REFERENCE_KERNELS)]
    if HAVE_CC:
        from gpu_backend.backends import cpu_kernel_table

        tables += [("cpu", cpu_kernel_table), ("cpu-unfused", lambda: cpu_kernel_table(fuse_requantize=False))]
    from gpu_backend import cuda

    def emulator():
        try:
            return cuda.cuda_kernel_table(lib=cuda.emulated_library())
        except cuda.CudaUnavailable as err:
            pytest.skip(str(err))
    return tables + [("cuda-emulator", emulator)]


@pytest.mark.parametrize("name,load", _tables(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_table_gives_the_exponents_of_the_rows(name, load):
    table = load()
    ops_seen = set()
    for options in OPTIONS:
        graph = build_graph(MODEL, 3, options)
        params = init_params(graph, seed=1)
        rng = np.random.default_rng(2)
        x = QTensor(rng.integers(-127, 128, (3, 8, 8, 2)).astype(np.int8), -8)
        labels = rng.integers(0, 4, 3).astype(np.int32)
        ctx = StepContext(seed=5, step=1, mu=3)
        want: list = []
        got: list = []
        train_step(graph, _recording(REFERENCE_KERNELS, want), params, x, labels, ctx)
        train_step(graph, _recording(table, got), dict(params), x, labels, ctx)
        assert got == want, name  # data-derived exponents (requantize) agree with numpy's too
        ops_seen |= {op for _, op, _, _ in got}
    # The graph builder emits no add yet (residual graphs will): one hand-built add node, operands
    # three octaves apart, through the same recording.
    rng = np.random.default_rng(3)
    a, b = (QTensor(rng.integers(-128, 128, (3, 4, 4, 2)).astype(np.int8), e) for e in (-6, -9))
    node = Node("res.add", "add", "forward", "res", ("a", "b"), ("res.out",), (("mode", "stochastic"),), 7)
    ctx = StepContext(seed=5, step=1, mu=3)
    want, got = [], []
    (expected,) = _recording(REFERENCE_KERNELS, want)["add"](node, ctx, a, b)
    (out,) = _recording(table, got)["add"](node, ctx, a, b)
    assert got == want and np.array_equal(np.asarray(getattr(out, "m", out)), expected.m), name
    ops_seen |= {op for _, op, _, _ in got}
    # Nor a global average pool (ResNet heads will): a 3x3 window's pool and its gradient by hand.
    pool = Node("gap.fwd", "global_avgpool", "forward", "gap", ("a",), ("gap.out",), (), 8)
    pool_grad = Node("gap.bwd", "global_avgpool_grad", "backward", "gap", ("gap.out",), ("a.grad",),
                     (("input_shape", (3, 3, 3, 2)), ("exp_shift", -3)), 9)
    x = QTensor(rng.integers(-128, 128, (3, 3, 3, 2)).astype(np.int8), -6)
    for node, op in ((pool, "global_avgpool"), (pool_grad, "global_avgpool_grad")):
        want, got = [], []
        (expected,) = _recording(REFERENCE_KERNELS, want)[op](node, ctx, x)
        (out,) = _recording(table, got)[op](node, ctx, x)
        assert got == want and np.array_equal(np.asarray(getattr(out, "m", out)), expected.m), (name, op)
        ops_seen |= {op for _, op, _, _ in got}
        x = expected  # the pool's (3, 2) output is the gradient's dy
    assert ops_seen == set(OPS)
