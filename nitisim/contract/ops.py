"""The op vocabulary of the integer training graph: one row per op, everything a reader needs to know.

A row (`OpInfo`) holds the op's name, its hardware class, a one-line summary, the rule for each
output's exponent, the phase the cost reports count it under and, for an op the compiled libraries
run through the generic node call, what that call passes (`NodeCall`: input dtypes, attributes,
output shapes and dtypes). Every kernel table (numpy, C,
CUDA) is built from these rows by `nitisim.contract.kernel_table.build_kernel_table`, which applies
the exponent rules in one place; the accelerator model and the reports read the report phase here.

Adding an op means one row here (with a `NodeCall`), its numpy method in nitisim/contract/
reference.py, one C file gpu_backend/csrc/op_<name>.c defining `niti_op_<name>`, one CUDA file
gpu_backend/csrc/op_<name>.cu defining `niti_cuda_op_<name>`, one lowering rule
(hwmodels/lowering.py), and their tests: the C and CUDA tables call the entry points through the
generic caller (gpu_backend/node_call.py). `add` is built this way.

`kind` tells the accelerator model how an op maps onto hardware: `gemm` ops run on the MAC array
(their MACs are counted by `nitisim.contract.graph.node_macs`), `vector` ops on the vector unit, `view`
ops (reshapes) cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Sequence

from .node_call import NodeCall, Output
from .numerics import LOSS_ERROR_EXP, SHADOW_FRAC_BITS


@dataclass(frozen=True)
class Exponent:
    """How one output's exponent follows from its node: the sum of the exponents of the inputs at
    positions `inputs`, plus `const`, plus the value of node attribute `attr` when set. `data`:
    the exponent depends on the values (requantize's shift is the int32 range minus 7), so the
    kernel computes it and the rule fields are unused.

    >>> Exponent(inputs=(0, 1)), Exponent(data=True).data
    (Exponent(inputs=(0, 1), const=0, attr=None, data=False), True)
    """

    inputs: tuple[int, ...] = ()  # positions in the node's inputs
    const: int = 0
    attr: str | None = None  # a node attribute (int) added, e.g. dropout's keep shift
    data: bool = False


SUM = Exponent(inputs=(0, 1))  # a GEMM: the product of two mantissas scales by both exponents
FIRST = Exponent(inputs=(0,))  # the output keeps input 0's scale (relu, maxpool, flatten, weights)
SECOND = Exponent(inputs=(1,))  # the output keeps input 1's scale (relu_grad, maxpool_grad: dy)
# Dropout keeps 1 in 2**shift features and zeroes the rest; the kept ones are scaled by 2**shift
# (the exponent, not the mantissa) so the expected value is unchanged.
DROPOUT = Exponent(inputs=(0,), attr="shift")

# Report phase of an op that runs inside the GEMM whose int32 output it reads (requantize): the
# GEMM's phase, forward for a forward GEMM and input_grad for a backward one.
OF_ITS_GEMM = "of_its_gemm"
REPORT_PHASES: tuple[str, ...] = ("forward", "input_grad", "weight_grad", "update", "vector")
PHASES: tuple[str, ...] = ("forward", "loss", "backward", "update")


# A global average pool sums a whole H x W window in int32 lanes (hwmodels/lowering.py prices it
# so): |sum| <= 128 * K fits int32 for K <= 2**24 (-128 * 2**24 = -2**31 is int32's minimum).
GLOBAL_POOL_MAX_WINDOW = 1 << 24


def global_pool_window(node: Any, h: int, w: int) -> int:
    """K = h * w, the positions of a global pool's window; ValueError naming the node unless
    1 <= K <= GLOBAL_POOL_MAX_WINDOW (an empty window has no mean)."""
    k = int(h) * int(w)
    if not 1 <= k <= GLOBAL_POOL_MAX_WINDOW:
        raise ValueError(f"{node.name}: {node.op} window {h}x{w} has {k} positions; a global pool needs "
                         f"1 to {GLOBAL_POOL_MAX_WINDOW} (2**24, so the int32 window sum cannot overflow)")
    return k


def global_pool_shape(node: Any, shapes: Sequence[Sequence[int]]) -> tuple[int, int]:
    """Output shape of global_avgpool: x (N, H, W, C) -> (N, C)."""
    x = tuple(shapes[0])
    if len(x) != 4:
        raise ValueError(f"{node.name}: {node.op} input must be (N, H, W, C), got shape {x}")
    global_pool_window(node, x[1], x[2])
    return x[0], x[3]


def global_pool_grad_shape(node: Any, shapes: Sequence[Sequence[int]]) -> tuple[int, int, int, int]:
    """Output shape of global_avgpool_grad: the node's `input_shape` (N, H, W, C), whose N and C
    must be dy's (N, C). H and W reach the kernels as the output's extents, not as attributes; the
    node's `exp_shift` must be -floor(log2(H * W)) (its exponent rule and its mantissas agree)."""
    dy, shape = tuple(shapes[0]), node.attr("input_shape")
    if shape is None or len(shape) != 4:
        raise ValueError(f"{node.name}: {node.op} attribute input_shape must be (N, H, W, C), got {shape!r}")
    shape = tuple(int(d) for d in shape)
    if len(dy) != 2 or dy != (shape[0], shape[3]):
        raise ValueError(f"{node.name}: {node.op} dy of shape {dy} does not match input_shape {shape}: "
                         f"expected {(shape[0], shape[3])}")
    k = global_pool_window(node, shape[1], shape[2])
    if node.attr("exp_shift") != -(k.bit_length() - 1):
        raise ValueError(f"{node.name}: {node.op} attribute exp_shift is {node.attr('exp_shift')!r}; a window of "
                         f"{k} positions needs -floor(log2 {k}) = {-(k.bit_length() - 1)}")
    return shape


@dataclass(frozen=True)
class OpInfo:
    name: str
    kind: str  # gemm | vector | view
    summary: str
    report_phase: str  # a REPORT_PHASES entry, or OF_ITS_GEMM
    exponents: tuple[Exponent, ...] = ()  # one per output, when `chosen_by` is None
    chosen_by: str | None = None  # a node attribute whose value picks the outputs' rules in `by_attr`
    by_attr: tuple[tuple[str, tuple[Exponent, ...]], ...] = ()  # (attribute value, one rule per output)
    node_call: NodeCall | None = None  # set: C and CUDA run it through niti_op_<name> / niti_cuda_op_<name>

    def output_rules(self, node: Any) -> tuple[Exponent, ...]:
        """The exponent rule of each output of `node` (a graph Node of this op)."""
        if self.chosen_by is None:
            return self.exponents
        value = node.attr(self.chosen_by)
        for key, rules in self.by_attr:
            if key == value:
                return rules
        known = ", ".join(k for k, _ in self.by_attr)
        raise ValueError(f"{node.name}: unknown {self.name} {self.chosen_by} {value!r}; known: {known}")


_OPS = (
    # forward
    OpInfo("conv2d", "gemm", "(x int8 NHWC, w int8 OHWI) -> acc int32 NEFO; e = e_x + e_w", "forward", (SUM,)),
    OpInfo("linear", "gemm", "(x int8 (N, in), w int8 (out, in)) -> acc int32 (N, out); e = e_x + e_w", "forward",
           (SUM,)),
    OpInfo("requantize", "vector", "acc int32 -> int8: s = b(acc) - 7 > 0 shifts with attr mode; e += s",
           OF_ITS_GEMM, (Exponent(data=True),)),
    OpInfo("relu", "vector", "x -> max(x, 0)", "vector", (FIRST,)),
    OpInfo("maxpool", "vector", "x NHWC -> window max (attrs kernel, stride, padding: -infinity, default 0)",
           "vector", (FIRST,)),
    OpInfo("flatten", "view", "x NHWC -> (N, H*W*C), channel fastest", "vector", (FIRST,)),
    OpInfo("dropout", "vector", "x -> x * keep_mask per feature (shared across the batch); e += k", "vector",
           (DROPOUT,)),
    # add: the shortcut sum of a residual block, and the two errors summed where a tensor feeds two
    # nodes. Its exponent comes from the data, as requantize's: min(e_a, e_b) + max(b(acc) - 7, 0).
    OpInfo("add", "vector", "(a int8, b int8) -> int8: a*2**(e_a-e_lo) + b*2**(e_b-e_lo) exact, requantized "
                            "with attr mode; e = e_lo + shift, |e_a - e_b| <= 55",
           "vector", (Exponent(data=True),),
           node_call=NodeCall(inputs=("int8", "int8"), same_shape=True, attrs=("mode",),
                              outputs=(Output("int8", like=0),))),
    # global average pool (the head of a ResNet): an int32 sum over the H x W window, then one exact
    # division by K = H*W rounded half away from zero; the exponent is the input's.
    OpInfo("global_avgpool", "vector", "x int8 (N, H, W, C) -> (N, C) = round_half_away(window sum / (H*W)), "
                                       "clamped to +-127", "vector", (FIRST,),
           node_call=NodeCall(inputs=("int8",), outputs=(Output("int8", shape=global_pool_shape),))),
    # loss
    OpInfo("loss_grad", "vector", "(logits int8, labels) -> error int8 = round(2048 (softmax - onehot) / 16)",
           "vector", (Exponent(const=LOSS_ERROR_EXP),)),
    # backward
    OpInfo("relu_grad", "vector", "(x forward input, dy) -> dy where x > 0", "vector", (SECOND,)),
    OpInfo("maxpool_grad", "vector", "(x forward input, dy) -> dx routed to the first max of each window", "vector",
           (SECOND,)),
    # The mean's derivative dy / K as dy * 2**p / K (p = floor(log2 K), a factor in (1/2, 1]) rounded
    # half away from zero, times 2**-p in the exponent: exp_shift = -p keeps the mantissa's precision.
    OpInfo("global_avgpool_grad", "vector", "dy int8 (N, C) -> dx (N, H, W, C) = round_half_away(dy * 2**p / K) "
                                            "at every position, K = H*W, p = floor(log2 K); e += exp_shift = -p",
           "vector", (Exponent(inputs=(0,), attr="exp_shift"),),
           node_call=NodeCall(inputs=("int8",), attrs=("exp_shift",),
                              outputs=(Output("int8", shape=global_pool_grad_shape),))),
    OpInfo("flatten_grad", "view", "dy (N, F) -> dx NHWC", "vector", (FIRST,)),
    OpInfo("dropout_grad", "vector", "dy -> dy * keep_mask (the forward mask); e += k", "vector", (DROPOUT,)),
    OpInfo("conv2d_input_grad", "gemm", "(dy int8 NEFO, w OHWI) -> acc int32 NHWI (col2im scatter-add)",
           "input_grad", (SUM,)),
    OpInfo("conv2d_weight_grad", "gemm", "(x int8 NHWI, dy int8 NEFO) -> acc int32|int64 OHWI", "weight_grad",
           (SUM,)),
    OpInfo("linear_input_grad", "gemm", "(dy int8 (N, out), w (out, in)) -> acc int32 (N, in)", "input_grad",
           (SUM,)),
    OpInfo("linear_weight_grad", "gemm", "(x int8 (N, in), dy int8 (N, out)) -> acc int32|int64 (out, in)",
           "weight_grad", (SUM,)),
    # update: weight exponents are fixed at initialisation, so the new weight keeps w's; a momentum
    # velocity keeps its own; the int16 shadow holds SHADOW_FRAC_BITS bits below the weight's LSB.
    OpInfo("update", "vector", "(w, g_acc[, state]) -> (w[, state]): attr rule plain | momentum | shadow16",
           "update", chosen_by="rule", by_attr=(
               ("plain", (FIRST,)),
               ("momentum", (FIRST, Exponent(inputs=(2,)))),
               ("shadow16", (FIRST, Exponent(inputs=(0,), const=-SHADOW_FRAC_BITS))),
           )),
)

OPS: MappingProxyType = MappingProxyType({op.name: op for op in _OPS})


def output_exponents(node: Any, input_exps: Sequence[int | None]) -> tuple[int | None, ...]:
    """The exponent of each output of `node` from its inputs' exponents (host ints; None where an
    input has none, e.g. labels). A data-derived exponent (requantize) is None: only the kernel
    knows it.

    >>> from nitisim.contract.graph import Node
    >>> output_exponents(Node("c", "conv2d", "forward", "c", ("x", "w"), ("y",)), [-3, -7])
    (-10,)
    >>> output_exponents(Node("u", "update", "update", "c", ("w", "g", "s"), ("w2", "s2"),
    ...                       (("rule", "shadow16"),)), [-7, -20, -15])
    (-7, -15)
    """
    return tuple(None if rule.data else exponent_of(rule, node, input_exps)
                 for rule in OPS[node.op].output_rules(node))


def exponent_of(rule: Exponent, node: Any, input_exps: Sequence[int]) -> int:
    """One rule on host ints: sum of the named inputs' exponents + const + attr."""
    return sum(int(input_exps[i]) for i in rule.inputs) + rule_addend(rule, node)


def rule_addend(rule: Exponent, node: Any) -> int:
    """The part of a rule that does not come from the inputs: const plus the attribute's value."""
    return rule.const + (int(node.attr(rule.attr)) if rule.attr else 0)


def report_phase(op: str, graph_phase: str = "forward") -> str:
    """forward | input_grad | weight_grad | update | vector, as reports and the simulator group work.

    A requantize counts with its GEMM: every requantize of the graph reads the int32 output of a
    forward GEMM (graph phase forward) or an input-gradient GEMM (backward), and both the C backend
    (gpu_backend/pending.py) and an accelerator's output stage run it as part of that GEMM, so only
    the pair's time is measurable.

    >>> report_phase("conv2d"), report_phase("linear_weight_grad"), report_phase("relu")
    ('forward', 'weight_grad', 'vector')
    >>> report_phase("requantize", "forward"), report_phase("requantize", "backward")
    ('forward', 'input_grad')
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}")
    phase = OPS[op].report_phase
    if phase == OF_ITS_GEMM:
        return "forward" if graph_phase == "forward" else "input_grad"
    return phase
