"""The integer training graph: frozen tensor specs and nodes, and the builder that expands a model.

The graph is the contract between the three readers (numpy reference, C/CUDA backend, accelerator
model): every tensor's shape, dtype and role, every node's op, phase, layer, rounding mode and
counter-hash id are fixed here, and readers never change them. Runtime values that depend on the
data (exponents, which follow from ranges) or on the schedule (mu) are not in the graph.

Naming: layer `L` (conv1, fc2, relu3, ...) reads the previous layer's output and writes `L.out`;
weights are `L.w`; the error of tensor `T` is `T.grad`; accumulators end in `.acc`.

Node order is execution order. The backward pass walks layers from the top and, per layer, computes
the error for the layer below with the pre-update weights, then the weight gradient, then the update
(spec §3), so each gradient lives only until its update.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable

from .models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU
from .numerics import INT8_MAX, INT32_MAX, LOSS_VARIANTS, ROUNDING_MODES, UPDATE_RULES
from .ops import OPS
from .models import infer_shapes

# Longest reduction whose int32 sum provably holds whatever the int8 operands in [-127, 127]:
# 133144 * 127 * 127 = 2147479576 <= 2**31 - 1 < 133145 * 127 * 127.
MAX_INT32_REDUCTION = INT32_MAX // (INT8_MAX * INT8_MAX)


@dataclass(frozen=True)
class NumericsOptions:
    """How a network is trained in integers; one of these plus a model fixes the graph."""

    activation_rounding: str = "pseudo_stochastic"  # forward requantize mode (NITI: PSR)
    error_rounding: str = "pseudo_stochastic"  # backward requantize mode (NITI: PSR)
    loss_variant: str = "niti"  # niti (published base-2 / Taylor) | fine (fractional base-2 exponents)
    update_rule: str = "plain"  # plain (NITI mu rule) | momentum (integer, beta 7/8) | shadow16 (int16 shadow)

    def __post_init__(self):
        for name, allowed in (
            ("activation_rounding", ROUNDING_MODES),
            ("error_rounding", ROUNDING_MODES),
            ("loss_variant", LOSS_VARIANTS),
            ("update_rule", UPDATE_RULES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # int8 | int16 | int32 | int64
    role: str  # input | label | weight | state | accumulator | activation | error | gradient

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * {"int8": 1, "int16": 2, "int32": 4, "int64": 8}[self.dtype]


@dataclass(frozen=True)
class Node:
    name: str
    op: str  # a key of nitisim.contract.ops.OPS
    phase: str  # forward | loss | backward | update
    layer: str  # the model layer this node belongs to (loss: "loss")
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()  # hashable; read with attr()
    tensor_id: int = 0  # counter-hash stream id, unique per node

    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def kind(self) -> str:
        return OPS[self.op].kind


@dataclass(frozen=True)
class Graph:
    model: ModelSpec
    batch: int
    options: NumericsOptions
    training: bool
    nodes: tuple[Node, ...]
    tensors: MappingProxyType = field(repr=False)  # name -> TensorSpec
    input_name: str = "x"
    label_name: str = "labels"
    logits_name: str = ""
    weights: tuple[str, ...] = ()  # weight tensor names in layer order
    states: tuple[str, ...] = ()  # optimiser state tensors (momentum velocity, int16 shadow)

    def tensor(self, name: str) -> TensorSpec:
        return self.tensors[name]

    def macs(self, phase: str | None = None) -> int:
        """Multiply-accumulates of one step (or of one phase) over all GEMM nodes."""
        return sum(node_macs(self, n) for n in self.nodes if phase is None or n.phase == phase)

    def nodes_of(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes if n.op in ops]

    def last_uses(self) -> dict[str, int]:
        """For each tensor, the index of the last node that reads it (for freeing buffers early)."""
        last: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.inputs:
                last[name] = i
        return last


def node_macs(graph: Graph, node: Node) -> int:
    """MACs of a GEMM node (0 for vector and view ops): every GEMM phase of a layer has the same count."""
    if node.kind != "gemm":
        return 0
    if node.op.startswith("conv2d"):
        w = graph.tensor(node.attr("weight")).shape  # (O, kh, kw, I)
        out = graph.tensor(node.attr("output_map")).shape  # (N, E, F, O)
        return out[0] * out[1] * out[2] * w[0] * w[1] * w[2] * w[3]
    w = graph.tensor(node.attr("weight")).shape  # (out, in)
    return graph.batch * w[0] * w[1]


def weight_grad_dtype(reduction: int) -> str:
    """int32 when the weight-gradient sum is provably inside int32 (K <= MAX_INT32_REDUCTION),
    else int64: a long reduction (batch * output pixels) can exceed int32 and must never wrap."""
    return "int32" if reduction <= MAX_INT32_REDUCTION else "int64"


def dropout_shift(rate: float) -> int:
    """k with rate = 1 - 2**-k: kept values are scaled by 2**k through the exponent."""
    return {0.5: 1, 0.75: 2, 0.875: 3}[rate]


class _Builder:
    """Accumulates tensors and nodes; each layer kind has one forward and one backward rule."""

    def __init__(self, model: ModelSpec, batch: int, options: NumericsOptions):
        self.model, self.batch, self.options = model, batch, options
        self.tensors: dict[str, TensorSpec] = {}
        self.nodes: list[Node] = []
        self.weights: list[str] = []
        self.states: list[str] = []

    def tensor(self, name: str, shape: Iterable[int], dtype: str, role: str) -> str:
        self.tensors[name] = TensorSpec(name, tuple(shape), dtype, role)
        return name

    def node(self, name, op, phase, layer, inputs, outputs, **attrs) -> None:
        assert op in OPS, op
        self.nodes.append(
            Node(name, op, phase, layer, tuple(inputs), tuple(outputs), tuple(sorted(attrs.items())), len(self.nodes) + 1)
        )


def _layer_names(model: ModelSpec) -> list[str]:
    prefix = {Conv: "conv", Linear: "fc", ReLU: "relu", MaxPool: "pool", Flatten: "flatten", Dropout: "dropout"}
    counts: dict[str, int] = {}
    names = []
    for layer in model.layers:
        p = prefix[type(layer)]
        counts[p] = counts.get(p, 0) + 1
        names.append(f"{p}{counts[p]}")
    return names


def build_graph(model: ModelSpec, batch: int, options: NumericsOptions | None = None, *, training: bool = True) -> Graph:
    """Expand a model into forward (+ loss, backward and update when training) nodes.

    Inference graphs omit dropout (identity at test time) and everything after the logits.
    """
    options = options or NumericsOptions()
    shapes = infer_shapes(model, batch)
    names = _layer_names(model)
    b = _Builder(model, batch, options)
    b.tensor("x", shapes[0], "int8", "input")
    current = "x"
    inputs_of: list[str] = []  # the tensor each layer read in the forward pass
    outputs_of: list[str] = []
    for layer, name, shape in zip(model.layers, names, shapes[1:]):
        inputs_of.append(current)
        in_shape = b.tensors[current].shape
        if isinstance(layer, Conv):
            w = b.tensor(f"{name}.w", (layer.out_channels, layer.kernel, layer.kernel, in_shape[3]), "int8", "weight")
            acc = b.tensor(f"{name}.acc", shape, "int32", "accumulator")
            b.node(f"{name}.fwd", "conv2d", "forward", name, (current, w), (acc,),
                   stride=layer.stride, padding=layer.padding, kernel=layer.kernel, weight=w, output_map=acc)
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.requant", "requantize", "forward", name, (acc,), (out,), mode=options.activation_rounding)
            b.weights.append(w)
        elif isinstance(layer, Linear):
            w = b.tensor(f"{name}.w", (layer.out_features, in_shape[1]), "int8", "weight")
            acc = b.tensor(f"{name}.acc", shape, "int32", "accumulator")
            b.node(f"{name}.fwd", "linear", "forward", name, (current, w), (acc,), weight=w)
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.requant", "requantize", "forward", name, (acc,), (out,), mode=options.activation_rounding)
            b.weights.append(w)
        elif isinstance(layer, ReLU):
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.fwd", "relu", "forward", name, (current,), (out,))
        elif isinstance(layer, MaxPool):
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.fwd", "maxpool", "forward", name, (current,), (out,), kernel=layer.kernel, stride=layer.stride, **({"padding": layer.padding} if layer.padding else {}))
        elif isinstance(layer, Flatten):
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.fwd", "flatten", "forward", name, (current,), (out,))
        elif isinstance(layer, Dropout):
            if not training:
                outputs_of.append(current)
                continue
            out = b.tensor(f"{name}.out", shape, "int8", "activation")
            b.node(f"{name}.fwd", "dropout", "forward", name, (current,), (out,), shift=dropout_shift(layer.rate))
        else:  # pragma: no cover
            raise TypeError(layer)
        outputs_of.append(out)
        current = out
    logits = current
    if not training:
        return _finish(b, model, batch, options, training, logits)

    labels = b.tensor("labels", (batch,), "int32", "label")
    err = b.tensor(f"{logits}.grad", b.tensors[logits].shape, "int8", "error")
    b.node("loss.grad", "loss_grad", "loss", "loss", (logits, labels), (err,), variant=options.loss_variant)
    # Below the first weighted layer no error is needed: its input is data, not a parameter's output.
    first_weighted = next(i for i, layer in enumerate(model.layers) if isinstance(layer, (Conv, Linear)))
    for i in range(len(model.layers) - 1, first_weighted - 1, -1):
        _backward_layer(b, model.layers[i], names[i], inputs_of[i], outputs_of[i], first=(i == first_weighted))
    return _finish(b, model, batch, options, training, logits)


def _backward_layer(b: _Builder, layer, name: str, x: str, out: str, first: bool) -> None:
    """Backward (and update) nodes of one layer: x is its forward input, out its forward output."""
    dy = f"{out}.grad"
    dx = f"{x}.grad"
    x_shape = b.tensors[x].shape
    if isinstance(layer, (Conv, Linear)):
        conv = isinstance(layer, Conv)
        w = f"{name}.w"
        if not first:
            acc = b.tensor(f"{name}.in_grad.acc", x_shape, "int32", "accumulator")
            attrs = dict(stride=layer.stride, padding=layer.padding, output_map=f"{name}.acc",
                         input_shape=x_shape) if conv else {}
            b.node(f"{name}.in_grad", "conv2d_input_grad" if conv else "linear_input_grad", "backward", name,
                   (dy, w), (acc,), weight=w, **attrs)
            b.tensor(dx, x_shape, "int8", "error")
            b.node(f"{name}.in_grad.requant", "requantize", "backward", name, (acc,), (dx,), mode=b.options.error_rounding)
        w_shape = b.tensors[w].shape
        reduction = b.batch * (b.tensors[out].shape[1] * b.tensors[out].shape[2] if conv else 1)
        g = b.tensor(f"{w}.grad", w_shape, weight_grad_dtype(reduction), "gradient")
        attrs = dict(stride=layer.stride, padding=layer.padding, kernel=layer.kernel,
                     output_map=f"{name}.acc") if conv else {}
        b.node(f"{name}.w_grad", "conv2d_weight_grad" if conv else "linear_weight_grad", "backward", name,
               (x, dy), (g,), weight=w, dtype=b.tensors[g].dtype, **attrs)
        rule = b.options.update_rule
        if rule == "plain":
            b.node(f"{name}.update", "update", "update", name, (w, g), (w,), rule=rule)
        else:
            state = b.tensor(f"{w}.{'velocity' if rule == 'momentum' else 'shadow'}", w_shape,
                             "int32" if rule == "momentum" else "int16", "state")
            b.states.append(state)
            b.node(f"{name}.update", "update", "update", name, (w, g, state), (w, state), rule=rule)
        return
    if first:
        return  # nothing below needs an error
    b.tensor(dx, x_shape, "int8", "error")
    if isinstance(layer, ReLU):
        b.node(f"{name}.bwd", "relu_grad", "backward", name, (x, dy), (dx,))
    elif isinstance(layer, MaxPool):
        b.node(f"{name}.bwd", "maxpool_grad", "backward", name, (x, dy), (dx,), kernel=layer.kernel, stride=layer.stride, **({"padding": layer.padding} if layer.padding else {}))
    elif isinstance(layer, Flatten):
        b.node(f"{name}.bwd", "flatten_grad", "backward", name, (dy,), (dx,), input_shape=x_shape)
    elif isinstance(layer, Dropout):
        # Same mask as the forward node: the backward node carries the forward node's hash id.
        fwd = next(n for n in b.nodes if n.name == f"{name}.fwd")
        b.node(f"{name}.bwd", "dropout_grad", "backward", name, (dy,), (dx,), shift=fwd.attr("shift"),
               mask_id=fwd.tensor_id)
    else:  # pragma: no cover
        raise TypeError(layer)


def _finish(b: _Builder, model, batch, options, training, logits) -> Graph:
    return Graph(
        model=model, batch=batch, options=options, training=training, nodes=tuple(b.nodes),
        tensors=MappingProxyType(dict(b.tensors)), logits_name=logits,
        weights=tuple(b.weights), states=tuple(b.states),
    )
