"""What the generic node call of the C and CUDA libraries needs from an op row (`NodeCall`).

An op whose row carries a `NodeCall` runs on the compiled libraries through one fixed ABI (the
`niti_node_call` / `niti_cuda_node_call` structs of gpu_backend/csrc/niti_api.h and
niti_cuda_api.h) and one entry point per op, `niti_op_<name>` / `niti_cuda_op_<name>`, so a new op
needs no typed wrapper, header line or per-op Python. The row says what the generic caller checks
and fills in, host-side:

  - `inputs`: each input's dtype (an int8 tensor with its exponent, say);
  - `same_shape`: every input has one shape (an elementwise op);
  - `attrs`: the node attributes passed to the kernel, in this order, as int64: a string attribute
    named in `ATTR_CODES` by its index in that vocabulary (mode -> ROUNDING_MODES), any other
    attribute as an int;
  - `outputs`: each output's dtype and shape (`Output`), from the input shapes.

Output exponents follow the row's `Exponent` rules as for every op: a rule-based one is applied by
the kernel-table builder (nitisim.contract.kernel_table); a data-derived one the kernel writes into
its output descriptor.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Sequence

from .numerics import LOSS_VARIANTS, ROUNDING_MODES

# The string attributes a kernel receives as an index into their vocabulary (defined once, here).
ATTR_CODES: MappingProxyType = MappingProxyType({"mode": ROUNDING_MODES, "variant": LOSS_VARIANTS})

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Output:
    """One output of a node call: its dtype, and its shape: input `like`'s, or `shape(node,
    input_shapes)` when given (a pooling op's smaller map, say).

    >>> Output("int8").shape_of(None, [(2, 3), (2, 3)])
    (2, 3)
    """

    dtype: str
    like: int = 0  # the input whose shape the output has
    shape: Callable[[Any, Sequence[Shape]], Shape] | None = None

    def shape_of(self, node: Any, input_shapes: Sequence[Shape]) -> Shape:
        if self.shape is not None:
            return tuple(int(d) for d in self.shape(node, input_shapes))
        return tuple(input_shapes[self.like])


@dataclass(frozen=True)
class NodeCall:
    """How the generic caller runs an op through `niti_op_<name>` (see the module docstring)."""

    inputs: tuple[str, ...]  # dtype of each input; every input carries an exponent
    outputs: tuple[Output, ...]
    attrs: tuple[str, ...] = ()  # node attributes, in the order the kernel reads call->attrs
    same_shape: bool = False  # every input has one shape

    def check_inputs(self, op: str, node: Any, shapes: Sequence[Shape], dtypes: Sequence[Any]) -> None:
        """Raise TypeError / ValueError, one line naming the node, the op and the input, unless the
        inputs are as the row says."""
        if len(shapes) != len(self.inputs):
            raise ValueError(f"{node.name}: {op} takes {len(self.inputs)} inputs, got {len(shapes)}")
        for i, (want, got) in enumerate(zip(self.inputs, dtypes)):
            if str(got) != want:
                raise TypeError(f"{node.name}: {op} input {i}: expected dtype {want}, got {got}")
        if self.same_shape and len(set(map(tuple, shapes))) > 1:
            raise ValueError(f"{node.name}: {op} input shapes differ: "
                             + " and ".join(str(tuple(s)) for s in shapes))

    def output_specs(self, node: Any, shapes: Sequence[Shape]) -> tuple[tuple[Shape, str], ...]:
        """(shape, dtype) of each output."""
        return tuple((out.shape_of(node, shapes), out.dtype) for out in self.outputs)

    def encode_attrs(self, op: str, node: Any) -> tuple[int, ...]:
        """The node's attributes as the kernel reads them (int64, in `attrs` order).

        >>> from nitisim.contract.graph import Node
        >>> NodeCall(("int8",), (Output("int8"),), ("mode", "shift")).encode_attrs(
        ...     "x", Node("n", "x", "forward", "l", (), (), (("mode", "stochastic"), ("shift", 3))))
        (2, 3)
        """
        codes = []
        for name in self.attrs:
            value = node.attr(name)
            if name in ATTR_CODES:
                if value not in ATTR_CODES[name]:
                    raise ValueError(f"{node.name}: {op} attribute {name} {value!r} is not one of "
                                     f"{', '.join(ATTR_CODES[name])}")
                codes.append(ATTR_CODES[name].index(value))
            elif isinstance(value, (bool, int)) or hasattr(value, "__index__"):
                codes.append(int(value))
            else:
                raise TypeError(f"{node.name}: {op} attribute {name} must be an int or one of the coded "
                                f"vocabularies ({', '.join(ATTR_CODES)}), got {value!r}")
        return tuple(codes)
