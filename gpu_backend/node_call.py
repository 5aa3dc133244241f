"""The generic caller of node-call ops: one Python path for every op whose row has a `NodeCall`.

Such an op is one C entry point `int niti_op_<name>(niti_node_call *)` (csrc/op_<name>.c) and one
CUDA entry point `int niti_cuda_op_<name>(niti_cuda_node_call *)` (csrc/op_<name>.cu), on the fixed
ABI of csrc/niti_api.h and csrc/niti_cuda_api.h. Here:

  - `CPU_ABI.cdef()` / `CUDA_ABI.cdef()` declare those entry points for cffi from the op rows, so
    a new op needs no header line (the bindings add them to their header's cdef);
  - `CPU_ABI.entry(binding, name)` is the loaded library's entry point, or None when it lacks one;
  - `call_cpu` / `call_cuda` check the inputs against the row (one line naming the node, the op and
    the input), allocate each output with the row's shape and dtype, fill the descriptors (attrs
    encoded as the row says), call, raise the library's error, and return the outputs: the whole
    tensor where the row says the exponent comes from the data (the kernel wrote it), the bare
    values where a rule gives it (nitisim.contract.kernel_table applies the rule);
  - `node_method` is what CpuOps / CudaOps answer for such an op: no per-op Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from nitisim.contract.numerics import QTensor
from nitisim.contract.ops import OPS

from .aligned import empty_aligned


def node_call_ops() -> tuple[str, ...]:
    """The ops whose rows ask for the node-call path, in row order."""
    return tuple(name for name, row in OPS.items() if row.node_call is not None)


@dataclass(frozen=True)
class Abi:
    """One library's node-call convention: entry point `<prefix>op_<name>(<struct> *call)`."""

    prefix: str  # niti_ | niti_cuda_
    struct: str  # niti_node_call | niti_cuda_node_call

    def symbol(self, name: str) -> str:
        return f"{self.prefix}op_{name}"

    def cdef(self) -> str:
        """cffi declarations of the entry points of every node-call op."""
        return "".join(f"int {self.symbol(name)}({self.struct} *call);\n" for name in node_call_ops())

    def entry(self, binding, name: str):
        """The library's entry point of op `name` (a cffi function), or None when the library does
        not define it (cffi raises AttributeError for a declared symbol it cannot find)."""
        try:
            return getattr(binding.lib, self.symbol(name))
        except AttributeError:
            return None


CPU_ABI = Abi("niti_", "niti_node_call")
CUDA_ABI = Abi("niti_cuda_", "niti_cuda_node_call")


def dtype_code(binding, dtype) -> int:
    """The niti_dtype code of a numpy dtype (NITI_DT_INT8 for int8), read from the header."""
    return binding.constant(f"NITI_DT_{np.dtype(dtype).name.upper()}")


def _u32(v: int) -> int:
    return int(v) & 0xFFFFFFFF  # hash coordinates are taken mod 2**32, as in numerics.hash_key


def fill_call(binding, abi: Abi, name: str, node, ctx, tensors: Sequence[tuple[int, Any, tuple, Any]],
              n_inputs: int):
    """A new call struct for op `name`: `tensors` are (data address, dtype, shape, exp) for the
    inputs then the outputs (exp: an int on the CPU, a device address or None on CUDA)."""
    ffi, spec = binding.ffi, OPS[name].node_call
    call = ffi.new(f"{abi.struct} *")
    attrs = spec.encode_attrs(name, node)
    limits = {what: binding.constant(f"NITI_NODE_MAX_{what}") for what in ("DIMS", "TENSORS", "ATTRS")}
    if max(n_inputs, len(tensors) - n_inputs) > limits["TENSORS"] or len(attrs) > limits["ATTRS"]:
        raise ValueError(f"{node.name}: {name} has more tensors or attributes than a node call holds "
                         f"({limits['TENSORS']} each way, {limits['ATTRS']} attributes)")
    call.n_inputs, call.n_outputs, call.n_attrs = n_inputs, len(tensors) - n_inputs, len(attrs)
    for i, (address, dtype, shape, exp) in enumerate(tensors):
        if len(shape) > limits["DIMS"]:
            raise ValueError(f"{node.name}: {name} tensor of shape {shape} has more than {limits['DIMS']} dimensions")
        desc = call.inputs[i] if i < n_inputs else call.outputs[i - n_inputs]
        desc.data = ffi.cast("void *", address)
        desc.dtype = dtype_code(binding, dtype)
        desc.ndim = len(shape)
        for d, extent in enumerate(shape):
            desc.shape[d] = int(extent)
        if abi is CUDA_ABI:
            desc.exp = ffi.cast("int32_t *", exp or 0)
        else:
            desc.exp = int(exp or 0)
    for k, value in enumerate(attrs):
        call.attrs[k] = value
    call.seed, call.step, call.tensor_id = _u32(ctx.seed), _u32(ctx.step), _u32(node.tensor_id)
    call.mu = int(ctx.mu)
    return call


def call_cpu(lib, entry, name: str, node, ctx, inputs: Sequence[Any]) -> tuple:
    """Run op `name` on the C library `lib` (gpu_backend.lib.CLib) through `entry`, with QTensor
    inputs of host numpy arrays."""
    spec, rules = OPS[name].node_call, OPS[name].output_rules(node)
    for i, t in enumerate(inputs):
        if not isinstance(t, QTensor) or not isinstance(t.m, np.ndarray):
            raise TypeError(f"{node.name}: {name} input {i}: expected a QTensor of a numpy array, "
                            f"got {type(t).__name__}")
        if not t.m.flags.c_contiguous:
            raise ValueError(f"{node.name}: {name} input {i}: the array must be C-contiguous")
    shapes = [t.m.shape for t in inputs]
    spec.check_inputs(name, node, shapes, [t.m.dtype for t in inputs])
    outs = [empty_aligned(shape, dtype) for shape, dtype in spec.output_specs(node, shapes)]
    tensors = [(a.ctypes.data, a.dtype, a.shape, e) for a, e in
               [(t.m, int(t.e)) for t in inputs] + [(o, 0) for o in outs]]
    call = fill_call(lib.binding, CPU_ABI, name, node, ctx, tensors, len(inputs))
    lib.check(entry(call))
    return tuple(QTensor(o, int(call.outputs[i].exp)) if rule.data else o
                 for i, (o, rule) in enumerate(zip(outs, rules)))


def call_cuda(lib, entry, name: str, node, ctx, inputs: Sequence[Any]) -> tuple:
    """Run op `name` on the CUDA library `lib` (cuda_device.CudaLib) through `entry`, with device
    tensors (host QTensors are uploaded) that carry an exponent."""
    spec, rules = OPS[name].node_call, OPS[name].output_rules(node)
    tensors_in = [lib.to_device(t) for t in inputs]
    shapes = [t.shape for t in tensors_in]
    spec.check_inputs(name, node, shapes, [t.dtype for t in tensors_in])
    for i, t in enumerate(tensors_in):
        if t.exp is None:
            raise ValueError(f"{node.name}: {name} input {i} has no exponent")
    outs = [lib.empty(shape, dtype, exp=True if rule.data else None)
            for (shape, dtype), rule in zip(spec.output_specs(node, shapes), rules)]
    tensors = [(t.ptr, t.dtype, t.shape, t.exp_ptr) for t in (*tensors_in, *outs)]
    call = fill_call(lib.bind, CUDA_ABI, name, node, ctx, tensors, len(inputs))
    lib.check(entry(call))
    return tuple(outs)


def node_method(owner: Any, name: str, binding, abi: Abi, lib, caller: Callable) -> Callable:
    """The op method `owner` (CpuOps, CudaOps) answers for node-call op `name`; AttributeError, with
    the reason, when `name` is no such op or the library lacks its entry point (the kernel-table
    builder then refuses the backend as missing the op)."""
    row = OPS.get(name)
    if row is None or row.node_call is None:
        raise AttributeError(f"{type(owner).__name__} has no attribute {name!r}")
    entry = abi.entry(binding, name)
    if entry is None:
        raise AttributeError(f"{binding.path} defines no {abi.symbol(name)} (the entry point of op {name!r})")

    def method(node, ctx, *inputs):
        return caller(lib, entry, name, node, ctx, inputs)

    method.__name__ = method.__qualname__ = name
    return method
