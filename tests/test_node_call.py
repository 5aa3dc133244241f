"""The generic node call (gpu_backend/node_call.py, nitisim/contract/node_call.py) on its own:

  - inputs of the wrong dtype, shape or count are refused with one line naming the node and the op,
    before the library is called, on the C library and on the CUDA emulator;
  - attrs reach the call struct as the row says (strings as their vocabulary index, in row order),
    with the counter-hash coordinates, and an unknown value is refused naming the attribute;
  - a library without an op's entry point is refused by the kernel-table builder as missing that op;
  - the C entry point refuses a call that does not match its op (counts, dtypes, shapes) by itself;
  - the entry points are declared for cffi from the op rows, and the builds pick up every op file.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from nitisim.contract.executor import StepContext
from nitisim.contract.graph import Node
from nitisim.contract.kernel_table import MissingKernelError, build_kernel_table
from nitisim.contract.node_call import ATTR_CODES, NodeCall, Output
from nitisim.contract.numerics import ROUNDING_MODES, QTensor
from nitisim.contract.ops import OPS

CTX = StepContext(seed=11, step=3, mu=4)


def _node(mode="stochastic", tensor_id=9) -> Node:
    return Node("blk.add", "add", "forward", "blk", ("a", "b"), ("y",), (("mode", mode),), tensor_id)


def _q(values, e=0, dtype=np.int8) -> QTensor:
    return QTensor(np.asarray(values, dtype=dtype), e)


@pytest.fixture(scope="module")
def clib():
    if shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the CPU kernel library")
    from gpu_backend.lib import cpu_library

    return cpu_library()


# ------------------------------------------------------------------------------------------ contract
def test_row_spec_checks_and_encodes():
    spec = OPS["add"].node_call
    assert spec.attrs == ("mode",) and spec.inputs == ("int8", "int8")
    assert spec.encode_attrs("add", _node("pseudo_stochastic")) == (ROUNDING_MODES.index("pseudo_stochastic"),)
    assert spec.output_specs(_node(), [(2, 3), (2, 3)]) == (((2, 3), "int8"),)
    with pytest.raises(ValueError, match=r"^blk\.add: add attribute mode 'round' is not one of nearest, "):
        spec.encode_attrs("add", _node("round"))
    wide = NodeCall(("int8",), (Output("int32", shape=lambda node, shapes: (shapes[0][0], 4)),),
                    attrs=("variant", "shift"))
    node = Node("n", "x", "forward", "l", (), (), (("variant", "fine"), ("shift", 3)))
    assert wide.encode_attrs("x", node) == (ATTR_CODES["variant"].index("fine"), 3)
    assert wide.output_specs(node, [(5, 2)]) == (((5, 4), "int32"),)
    with pytest.raises(TypeError, match="attribute shift must be an int"):
        wide.encode_attrs("x", Node("n", "x", "forward", "l", (), (), (("variant", "fine"), ("shift", "3"))))


# ------------------------------------------------------------------------------------------ C
def test_wrong_inputs_are_refused_with_one_line(clib):
    from gpu_backend.backends import CpuOps

    add = CpuOps(clib).add
    cases = [
        ((_q([1, 2]), _q([1, 2], dtype=np.int16)), TypeError, "blk.add: add input 1: expected dtype int8, got int16"),
        ((_q([1, 2]), _q([1])), ValueError, "blk.add: add input shapes differ: (2,) and (1,)"),
        ((_q([1, 2]),), ValueError, "blk.add: add takes 2 inputs, got 1"),
        ((_q([1, 2]), np.array([1, 2], np.int8)), TypeError, "blk.add: add input 1: expected a QTensor"),
        ((_q([1, 2]), QTensor(np.arange(4, dtype=np.int8)[::2], 0)), ValueError, "add input 1: the array must be C-c"),
    ]
    for inputs, error, line in cases:
        with pytest.raises(error) as info:
            add(_node(), CTX, *inputs)
        assert line in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_the_call_struct_holds_what_the_row_says(clib):
    from gpu_backend.node_call import CPU_ABI, call_cpu, dtype_code

    seen = {}

    def spy(call):  # stands in for niti_op_add: records the struct, then lets the real one run
        seen.update(n=(call.n_inputs, call.n_outputs, call.n_attrs), attrs=call.attrs[0],
                    hash=(call.seed, call.step, call.tensor_id), mu=call.mu,
                    inputs=[(call.inputs[i].dtype, call.inputs[i].ndim, list(call.inputs[i].shape)[:2],
                             call.inputs[i].exp) for i in range(2)])
        return CPU_ABI.entry(clib.binding, "add")(call)

    a, b = _q([[1, 2, 3], [4, 5, 6]], -3), _q([[6, 5, 4], [3, 2, 1]], -5)
    (out,) = call_cpu(clib, spy, "add", _node("stochastic", tensor_id=2**32 + 5), StepContext(seed=-1, step=7, mu=6),
                      (a, b))
    int8 = dtype_code(clib.binding, "int8")
    assert seen == {"n": (2, 1, 1), "attrs": ROUNDING_MODES.index("stochastic"), "hash": (2**32 - 1, 7, 5), "mu": 6,
                    "inputs": [(int8, 2, [2, 3], -3), (int8, 2, [2, 3], -5)]}
    assert isinstance(out, QTensor) and out.m.shape == (2, 3) and out.e == -5  # the kernel wrote the exponent


def test_the_c_entry_point_checks_its_call(clib):
    from gpu_backend.lib import CLibError
    from gpu_backend.node_call import CPU_ABI, fill_call

    entry = CPU_ABI.entry(clib.binding, "add")
    a = np.ones(3, np.int8)
    good = [(a.ctypes.data, a.dtype, a.shape, 0)] * 3
    call = fill_call(clib.binding, CPU_ABI, "add", _node(), CTX, good, 2)
    call.inputs[1].dtype = dtype = call.inputs[1].dtype + 1
    with pytest.raises(CLibError, match=f"add: input 1 has dtype code {dtype}"):
        clib.check(entry(call))
    call = fill_call(clib.binding, CPU_ABI, "add", _node(), CTX, good, 2)
    call.outputs[0].shape[0] = 2
    with pytest.raises(CLibError, match="one shape"):
        clib.check(entry(call))
    call = fill_call(clib.binding, CPU_ABI, "add", _node(), CTX, good[:2], 1)
    with pytest.raises(CLibError, match="add: takes 2 inputs, 1 outputs and 1 attrs, got 1, 1 and 1"):
        clib.check(entry(call))
    call = fill_call(clib.binding, CPU_ABI, "add", _node(), CTX, good, 2)
    call.attrs[0] = 7
    with pytest.raises(CLibError, match="unknown rounding mode 7"):
        clib.check(entry(call))


def test_a_library_without_the_entry_point_is_refused_as_missing_the_op(clib, tmp_path):
    """A real library that defines the ABI but no niti_op_add: the table builder names add."""
    from gpu_backend import build
    from gpu_backend.backends import CpuOps
    from gpu_backend.lib import CLib

    src = tmp_path / "no_ops.c"
    src.write_text('#include "niti_api.h"\nint niti_abi_version(void) { return NITI_ABI_VERSION; }\n'
                   'const char *niti_last_error(void) { return ""; }\n')
    so = tmp_path / "libno_ops.so"
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{build.CSRC}", str(src), "-o", str(so)], check=True)
    with pytest.raises(MissingKernelError, match=r"no method for op 'add': .*libno_ops\.so defines no niti_op_add"):
        build_kernel_table(CpuOps(CLib(so)))
    assert callable(CpuOps(clib).add)  # the real library has it


def test_entry_points_are_declared_from_the_rows_and_built_from_the_op_files():
    from gpu_backend import build
    from gpu_backend.node_call import CPU_ABI, CUDA_ABI, node_call_ops

    assert "add" in node_call_ops()
    assert "int niti_op_add(niti_node_call *call);" in CPU_ABI.cdef()
    assert "int niti_cuda_op_add(niti_cuda_node_call *call);" in CUDA_ABI.cdef()
    sources, _ = build.cpu_sources()
    for name in node_call_ops():
        assert build.CSRC / f"op_{name}.c" in sources
        assert (build.CSRC / f"op_{name}.cu").exists()  # build_cuda and the emulator take every *.cu


# ------------------------------------------------------------------------------------------ CUDA emulator
def test_cuda_caller_refuses_wrong_inputs_and_matches_numpy():
    from gpu_backend import cuda
    from gpu_backend.cuda_kernels import CudaOps
    from nitisim.contract.reference import REFERENCE_KERNELS

    try:
        lib = cuda.emulated_library()
    except cuda.CudaUnavailable as err:
        pytest.skip(str(err))
    ops = CudaOps(lib)
    with pytest.raises(TypeError, match=r"^blk\.add: add input 0: expected dtype int8, got int32$"):
        ops.add(_node(), CTX, _q([1], dtype=np.int32), _q([1]))
    with pytest.raises(ValueError, match=r"^blk\.add: add input 1 has no exponent$"):
        ops.add(_node(), CTX, _q([1]), lib.to_device(np.array([1], np.int8)))
    a, b = _q([100, -3, 127, 5], -4), _q([50, 3, 127, -9], -5)
    (got,) = build_kernel_table(ops)["add"](_node(), CTX, a, b)
    (want,) = REFERENCE_KERNELS["add"](_node(), CTX, a, b)
    assert got.e == want.e and got.m.tolist() == want.m.tolist()
