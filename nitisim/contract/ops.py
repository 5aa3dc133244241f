"""The op vocabulary of the integer training graph: one entry per op, what it computes, its class.

Adding an op means one entry here, one numpy function (nitisim/reference.py), one C/CUDA kernel
(gpu_backend), one lowering rule (hwmodels/lowering.py), and their tests.

`kind` tells the accelerator model how an op maps onto hardware: `gemm` ops run on the MAC array
(their MACs are counted by `nitisim.graph.node_macs`), `vector` ops on the vector unit, `view`
ops (reshapes) cost nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class OpInfo:
    name: str
    kind: str  # gemm | vector | view
    summary: str


_OPS = (
    # forward
    OpInfo("conv2d", "gemm", "(x int8 NHWC, w int8 OHWI) -> acc int32 NEFO; e = e_x + e_w"),
    OpInfo("linear", "gemm", "(x int8 (N, in), w int8 (out, in)) -> acc int32 (N, out); e = e_x + e_w"),
    OpInfo("requantize", "vector", "acc int32 -> int8: s = b(acc) - 7 > 0 shifts with attr mode; e += s"),
    OpInfo("relu", "vector", "x -> max(x, 0)"),
    OpInfo("maxpool", "vector", "x NHWC -> window max (attrs kernel, stride)"),
    OpInfo("flatten", "view", "x NHWC -> (N, H*W*C), channel fastest"),
    OpInfo("dropout", "vector", "x -> x * keep_mask per feature (shared across the batch); e += k"),
    # add: shortcut sums and the summed errors at a fork (issue 25). Output exponent data-derived, as
    # requantize's: min(e_a, e_b) + max(b(acc) - 7, 0) (numerics.add); report phase vector.
    OpInfo("add", "vector", "(a int8, b int8) -> int8: a*2**(e_a-e_lo) + b*2**(e_b-e_lo) exact, requantized "
                            "with attr mode; e = e_lo + shift, |e_a - e_b| <= 55"),
    # loss
    OpInfo("loss_grad", "vector", "(logits int8, labels) -> error int8 = round(2048 (softmax - onehot) / 16)"),
    # backward
    OpInfo("relu_grad", "vector", "(x forward input, dy) -> dy where x > 0"),
    OpInfo("maxpool_grad", "vector", "(x forward input, dy) -> dx routed to the first max of each window"),
    OpInfo("flatten_grad", "view", "dy (N, F) -> dx NHWC"),
    OpInfo("dropout_grad", "vector", "dy -> dy * keep_mask (the forward mask); e += k"),
    OpInfo("conv2d_input_grad", "gemm", "(dy int8 NEFO, w OHWI) -> acc int32 NHWI (col2im scatter-add)"),
    OpInfo("conv2d_weight_grad", "gemm", "(x int8 NHWI, dy int8 NEFO) -> acc int32|int64 OHWI"),
    OpInfo("linear_input_grad", "gemm", "(dy int8 (N, out), w (out, in)) -> acc int32 (N, in)"),
    OpInfo("linear_weight_grad", "gemm", "(x int8 (N, in), dy int8 (N, out)) -> acc int32|int64 (out, in)"),
    # update
    OpInfo("update", "vector", "(w, g_acc[, state]) -> (w[, state]): attr rule plain | momentum | shadow16"),
)

OPS: MappingProxyType = MappingProxyType({op.name: op for op in _OPS})
PHASES: tuple[str, ...] = ("forward", "loss", "backward", "update")

# The cost-report phase of each op: GEMM passes by their role, a requantize with the GEMM whose
# int32 output it reads, everything else is vector work.
REPORT_PHASES: tuple[str, ...] = ("forward", "input_grad", "weight_grad", "update", "vector")


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
    if op in ("conv2d", "linear"):
        return "forward"
    if op.endswith("_input_grad"):
        return "input_grad"
    if op.endswith("_weight_grad"):
        return "weight_grad"
    if op == "update":
        return "update"
    if op == "requantize":
        return "forward" if graph_phase == "forward" else "input_grad"
    return "vector"
