"""Building a kernel table from the op rows: the one place output exponents are applied.

A backend is an object with one method per op of `nitisim.contract.ops.OPS`,
`op(node, ctx, *inputs) -> tuple`, one entry per output: the output's values without an
exponent (a host array, a device tensor without an exponent slot, ...) where the op row gives a
rule, or the whole tensor where the row says the exponent comes from the data (requantize).
Its `with_exponent(values, sources, addend)` gives values an exponent: the sum of the exponents of
the `sources` tensors plus the int `addend` (host ints for numpy and C; on the device for CUDA).

`build_kernel_table(backend)` walks OPS and returns `{op: fn(node, ctx, *inputs) -> tuple of
tensors}` for `nitisim.contract.executor.run_graph`, with every rule-based exponent computed here
from the row (`Exponent`): a new op's exponent rule is written once, in ops.py, for every backend.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Callable, Mapping, Protocol, Sequence

from .numerics import QTensor
from .ops import OPS, rule_addend


class OpBackend(Protocol):
    """One method per op of OPS (looked up by name), plus the exponent arithmetic."""

    def with_exponent(self, values: Any, sources: Sequence[Any], addend: int) -> Any: ...


class MissingKernelError(TypeError):
    """A backend lacks a method for an op of the vocabulary."""


def host_exponent(values: Any, sources: Sequence[Any], addend: int) -> QTensor:
    """Exponent arithmetic on the host: QTensor(values, sum of the sources' exponents + addend)."""
    return QTensor(values, sum(int(s.e) for s in sources) + addend)


def build_kernel_table(backend: Any) -> Mapping[str, Callable]:
    """{op: kernel} over every op of OPS; raises MissingKernelError naming the first op `backend`
    has no method for."""
    for name in ("with_exponent", *OPS):
        try:
            method, why = getattr(backend, name), ""
        except AttributeError as err:  # the reason, e.g. a library without the op's entry point
            method, why = None, f": {err}"
        if not callable(method):
            raise MissingKernelError(f"{type(backend).__name__} has no method for op {name!r}{why}"
                                     if name != "with_exponent" else
                                     f"{type(backend).__name__} has no with_exponent (its exponent arithmetic)")
    return MappingProxyType({name: _kernel(name, getattr(backend, name), backend.with_exponent) for name in OPS})


def _kernel(name: str, compute: Callable, with_exponent: Callable) -> Callable:
    row = OPS[name]

    def kernel(node, ctx, *inputs):
        outputs = compute(node, ctx, *inputs)
        rules = row.output_rules(node)
        if len(outputs) != len(rules):
            raise ValueError(f"{node.name}: the {name} kernel returned {len(outputs)} outputs, its row has {len(rules)}")
        return tuple(out if rule.data else with_exponent(out, [inputs[i] for i in rule.inputs], rule_addend(rule, node))
                     for out, rule in zip(outputs, rules))

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = compute.__doc__
    return kernel
