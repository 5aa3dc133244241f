"""Model descriptions: frozen layer specs, the built-in networks, and the strict YAML model loader.

A model is an input shape (H, W, C) and a list of layers in execution order. Each layer reads the
layer before it, unless it names its inputs: the model is then a DAG (ResNets), whose wiring lives
in `ModelSpec.names` and `ModelSpec.inputs`. The training-graph builder (`nitisim.contract.graph`)
expands it; nothing here knows about integers or executors.

YAML form (configs/models/*.yaml):

    name: lenet
    input: [28, 28, 1]          # H, W, C
    classes: 10
    layers:
      - conv: {out: 20, kernel: 5, stride: 1, padding: 0}
      - relu
      - maxpool: {kernel: 2, stride: 2}      # padding: p pads with -inf (at most kernel // 2)
      - flatten
      - linear: {out: 500}
      - dropout: {rate: 0.5}

DAG form: any layer mapping may carry `name:` (else the automatic name: conv1, relu2, add1, ...
numbered per kind over all layers) and `inputs: [layer names]` (`input` is the model input);
`add` (two inputs of one shape) and `global_avgpool` ((N, H, W, C) -> (N, C)) are the two layer
kinds only DAGs need. A residual block is written compactly and expands into plain layers:

      - residual:
          branch: [conv: {out: 16, kernel: 3, padding: 1}, relu, conv: {out: 16, kernel: 3, padding: 1}]
          shortcut: identity                  # or {conv: {out: 32, kernel: 1, stride: 2}}
          then: relu                          # optional layer(s) after the add

expanding to: the branch (reading the block's input), the shortcut conv (reading the block's
input), `add: {inputs: [branch end, shortcut or block input]}`, then the `then` layers. The
branch's last conv starts at zero (`init: zero`, SkipInit-style), so each block starts as its
shortcut; see nitisim/contract/init.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields as dataclass_fields
from os import PathLike, fspath
from pathlib import Path
from typing import Any, Union

from .errors import UserInputError
from .config_reader import Fields, load_document, positive_int, read_yaml
from .values import path_exists, quote

MODEL_INPUT = "input"  # the name by which a layer's `inputs` refer to the model input
CONV_INITS = ("xavier", "zero")


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0  # zero padding on every side
    init: str = "xavier"  # xavier | zero (a residual branch's last conv: the block starts as its shortcut)


@dataclass(frozen=True)
class Linear:
    out_features: int


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class MaxPool:
    kernel: int = 2
    stride: int = 2
    padding: int = 0  # -inf padding on every side (ResNet stem: 3x3, stride 2, padding 1)


@dataclass(frozen=True)
class Flatten:
    pass  # NHWC order, so a conv feature map flattens channel-fastest


@dataclass(frozen=True)
class Dropout:
    rate: float = 0.5  # must be 1 - 2**-k: kept values are scaled by 2**k through the exponent


@dataclass(frozen=True)
class Add:
    pass  # two inputs of one shape, summed with aligned exponents (the shortcut sum)


@dataclass(frozen=True)
class GlobalAvgPool:
    pass  # (N, H, W, C) -> (N, C): the mean over each channel's map


Layer = Union[Conv, Linear, ReLU, MaxPool, Flatten, Dropout, Add, GlobalAvgPool]
WEIGHTED = (Conv, Linear)
# Automatic layer names: prefix + the ordinal among all layers with that prefix (conv1, relu2, ...).
NAME_PREFIX = {Conv: "conv", Linear: "fc", ReLU: "relu", MaxPool: "pool", Flatten: "flatten", Dropout: "dropout",
               Add: "add", GlobalAvgPool: "avgpool"}
# Fields added after models were first stored (summary.json echoes, step hashes): written only
# when they differ from their default, so a model that does not use them serializes as before.
_LATER_FIELDS = {Conv: {"init": "xavier"}, MaxPool: {"padding": 0}}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    layers: tuple[Layer, ...]
    classes: int = 10
    # Per-layer wiring, both empty for a chain: names[i] "" is the automatic name; inputs[i] () is
    # "the previous layer" (the model input for layer 0), else the names of the layers it reads.
    names: tuple[str, ...] = ()
    inputs: tuple[tuple[str, ...], ...] = ()


def auto_names(layers) -> list[str]:
    """conv1, relu1, conv2, ...: each layer's kind prefix and its ordinal among layers of that kind."""
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        p = NAME_PREFIX[type(layer)]
        counts[p] = counts.get(p, 0) + 1
        names.append(f"{p}{counts[p]}")
    return names


def layer_names(model: ModelSpec) -> list[str]:
    """Every layer's name: the given one, else the automatic one."""
    given = model.names or ("",) * len(model.layers)
    return [g or a for g, a in zip(given, auto_names(model.layers))]


def layer_inputs(model: ModelSpec) -> list[tuple[int, ...]]:
    """For each layer, the indices of the layers it reads (-1: the model input), all earlier than it."""
    names = layer_names(model)
    index = {n: i for i, n in enumerate(names)}
    index[MODEL_INPUT] = -1
    wired = model.inputs or ((),) * len(model.layers)
    out = []
    for i, refs in enumerate(wired):
        if not refs:
            out.append((i - 1,))
            continue
        got = tuple(index.get(r, len(names)) for r in refs)
        bad = [r for r, j in zip(refs, got) if j >= i]
        if bad:
            raise UserInputError(model.name, f"layers[{i}]", f"reads {quote(bad[0])}, which is not an earlier layer")
        out.append(got)
    return out


def wired_model(name: str, input_shape, entries, classes: int = 10) -> ModelSpec:
    """A ModelSpec from (layer, name, inputs) entries, names and inputs stored only where they differ
    from the chain defaults (so a chain compares and serializes exactly as one written without them)."""
    layers = tuple(e[0] for e in entries)
    auto = auto_names(layers)
    names = tuple("" if n == a else n for (_, n, _), a in zip(entries, auto))
    final = [n or a for n, a in zip(names, auto)]
    inputs = tuple(
        () if tuple(refs) == ((final[i - 1],) if i else (MODEL_INPUT,)) else tuple(refs)
        for i, (_, _, refs) in enumerate(entries))
    return ModelSpec(name, tuple(input_shape), layers, classes,
                     names if any(names) else (), inputs if any(inputs) else ())


class _Wiring:
    """Appends layers with their final names, so a residual block can name its branch end for its add."""

    def __init__(self, src: str):
        self.src = src
        self.entries: list[tuple[Layer, str, tuple[str, ...]]] = []
        self.wheres: list[str] = []
        self.counts: dict[str, int] = {}
        self.taken: dict[str, str] = {MODEL_INPUT: "the model input"}

    @property
    def last(self) -> str:
        return self.entries[-1][1] if self.entries else MODEL_INPUT

    def append(self, layer: Layer, where: str, name: str | None = None, inputs: tuple[str, ...] | None = None) -> str:
        p = NAME_PREFIX[type(layer)]
        self.counts[p] = self.counts.get(p, 0) + 1
        name = name or f"{p}{self.counts[p]}"
        if name in self.taken:
            raise UserInputError(self.src, where, f"layer name {quote(name)} is already used by {self.taken[name]}")
        self.taken[name] = where
        self.entries.append((layer, name, tuple(inputs) if inputs is not None else (self.last,)))
        self.wheres.append(where)
        return name


def _vgg(name: str, widths: list, input_shape=(32, 32, 3), classifier=(), dropout=True) -> ModelSpec:
    """VGG-style stack: 3x3 same-padding convs (no batch norm) with ReLU, 'M' = 2x2 max pool."""
    layers: list[Layer] = []
    for w in widths:
        if w == "M":
            layers.append(MaxPool(2, 2))
        else:
            layers += [Conv(w, 3, 1, 1), ReLU()]
    layers.append(Flatten())
    for width in classifier:
        layers += [Linear(width), ReLU()]
        if dropout:
            layers.append(Dropout(0.5))
    if dropout and not classifier:
        layers.append(Dropout(0.5))
    layers.append(Linear(10))
    return ModelSpec(name, input_shape, tuple(layers))


def add_residual(wiring: _Wiring, branch, shortcut: Conv | None, then=(), where: str = "residual") -> None:
    """Append one residual block: `branch` layers as a chain from the block input, the optional
    shortcut conv (else identity) from the block input, their add, then the `then` layers.
    `branch` and `then` are (layer, where, name or None) triples."""
    block_in = wiring.last
    for layer, at, name in branch:
        wiring.append(layer, at, name)
    branch_end = wiring.last
    skip = block_in
    if shortcut is not None:
        skip = wiring.append(shortcut, f"{where}.shortcut", inputs=(block_in,))
    wiring.append(Add(), where, inputs=(branch_end, skip))
    for layer, at, name in then:
        wiring.append(layer, at, name)


def _resnet(name: str, input_shape, stem, stages, widths, bottleneck: bool, classes: int) -> ModelSpec:
    """ResNet without batch norm: `stem` layers, then per stage `stages[s]` blocks of width
    `widths[s]` (the first block of every stage after the first has stride 2), global average pool,
    one linear layer. A basic block's branch is 3x3, relu, 3x3; a bottleneck's 1x1 (w), relu, 3x3 (w,
    the stride), relu, 1x1 (4w). The shortcut is identity, or a strided 1x1 conv where the shape
    changes; a relu follows each add. Each branch's last conv starts at zero."""
    wiring = _Wiring(name)
    for layer in stem:
        wiring.append(layer, name)
    channels = next(layer.out_channels for layer in reversed(stem) if isinstance(layer, Conv))
    for s, (blocks, width) in enumerate(zip(stages, widths)):
        for k in range(blocks):
            stride = 2 if (s > 0 and k == 0) else 1
            out = width * 4 if bottleneck else width
            if bottleneck:
                convs = [Conv(width, 1), ReLU(), Conv(width, 3, stride, 1), ReLU(), Conv(out, 1, init="zero")]
            else:
                convs = [Conv(width, 3, stride, 1), ReLU(), Conv(width, 3, 1, 1, init="zero")]
            shortcut = Conv(out, 1, stride) if (stride != 1 or out != channels) else None
            add_residual(wiring, [(layer, name, None) for layer in convs], shortcut, [(ReLU(), name, None)], name)
            channels = out
    wiring.append(GlobalAvgPool(), name)
    wiring.append(Linear(classes), name)
    return wired_model(name, input_shape, wiring.entries, classes)


def resnet20(name: str = "resnet-20", input_shape=(32, 32, 3)) -> ModelSpec:
    """He et al.'s CIFAR ResNet-20: 3x3 conv 16, three stages of three basic blocks (16, 32, 64)."""
    return _resnet(name, input_shape, [Conv(16, 3, 1, 1), ReLU()], [3, 3, 3], [16, 32, 64], False, 10)


def builtin_models() -> dict[str, ModelSpec]:
    """The named networks: NITI's MNIST LeNet and CIFAR-10 VGG-small nets, an MLP, VGG11/13 and
    ResNets (CIFAR ResNet-20 and its 28x28x1 variant; ImageNet ResNet-18 and -50)."""
    lenet = ModelSpec(
        "lenet",
        (28, 28, 1),
        (
            Conv(20, 5), ReLU(), MaxPool(2, 2),
            Conv(50, 5), ReLU(), MaxPool(2, 2),
            Flatten(), Linear(500), ReLU(), Linear(10),
        ),
    )
    mlp = ModelSpec("mlp", (28, 28, 1), (Flatten(), Linear(256), ReLU(), Linear(128), ReLU(), Linear(10)))
    m = "M"
    imagenet_stem = [Conv(64, 7, 2, 3), ReLU(), MaxPool(3, 2, 1)]
    return {
        "mlp": mlp,
        "lenet": lenet,
        # NITI §7: 3x3 convs, widths below, then Flatten 8192 -> dropout -> Linear 10.
        "vgg-small-7": _vgg("vgg-small-7", [128, 128, m, 256, 256, m, 512, 512, m]),
        "vgg-small-8": _vgg("vgg-small-8", [128, 128, 128, m, 256, 256, m, 512, 512, m]),
        "vgg-small-9": _vgg("vgg-small-9", [128, 128, 128, m, 256, 256, 256, m, 512, 512, m]),
        "vgg11": _vgg("vgg11", [64, m, 128, m, 256, 256, m, 512, 512, m, 512, 512, m], classifier=(512, 512)),
        "vgg13": _vgg(
            "vgg13", [64, 64, m, 128, 128, m, 256, 256, m, 512, 512, m, 512, 512, m], classifier=(512, 512)
        ),
        "resnet-20": resnet20(),
        "resnet-20-28": resnet20("resnet-20-28", (28, 28, 1)),  # Fashion-MNIST: maps 28, 14, 7
        "resnet-18": _resnet("resnet-18", (224, 224, 3), imagenet_stem, [2, 2, 2, 2], [64, 128, 256, 512],
                             False, 1000),
        "resnet-50": _resnet("resnet-50", (224, 224, 3), imagenet_stem, [3, 4, 6, 3], [64, 128, 256, 512],
                             True, 1000),  # stride on the 3x3 (torchvision's "v1.5")
    }


# ------------------------------------------------------------------------------------------------
# YAML loading: strict, every error names the file and the key path.
# ------------------------------------------------------------------------------------------------
_LAYER_FIELDS: dict[str, tuple[type, dict[str, str], tuple[str, ...]]] = {
    # yaml key: (class, {yaml field: dataclass field}, required yaml fields)
    "conv": (Conv, {"out": "out_channels", "kernel": "kernel", "stride": "stride", "padding": "padding",
                    "init": "init"}, ("out", "kernel")),
    "linear": (Linear, {"out": "out_features"}, ("out",)),
    "relu": (ReLU, {}, ()),
    "maxpool": (MaxPool, {"kernel": "kernel", "stride": "stride", "padding": "padding"}, ()),
    "flatten": (Flatten, {}, ()),
    "dropout": (Dropout, {"rate": "rate"}, ()),
    "add": (Add, {}, ()),
    "global_avgpool": (GlobalAvgPool, {}, ()),
}
_WIRING_KEYS = ("name", "inputs")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")  # no dots: tensor names are `layer.out`, `layer.w.grad`
DROPOUT_RATES = (0.5, 0.75, 0.875)  # 1 - 2**-k: kept values are scaled by 2**k through the exponent


def _layer_item(item: Any, src: str, where: str, kinds) -> tuple[str, dict]:
    if isinstance(item, str):
        kind, fields = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, fields = next(iter(item.items()))
        fields = {} if fields is None else fields
    else:
        raise UserInputError(src, where, "must be a layer name or a one-key mapping like {conv: {...}}")
    if kind not in kinds:
        raise UserInputError(src, where, f"unknown layer {quote(kind)}; expected one of {', '.join(kinds)}")
    return kind, fields


def _parse_layer(item: Any, src: str, where: str, *, wiring: bool = True, known=()):
    """(layer, name or None, inputs or None) of one YAML layer item; `inputs` (names among `known`,
    the earlier layers) only where wiring is allowed."""
    kind, fields = _layer_item(item, src, where, _LAYER_FIELDS)
    cls, names, required = _LAYER_FIELDS[kind]
    f = Fields(src, fields, f"{where}.{kind}", what="must be a mapping of layer fields")
    f.keys(required, (*names, *(_WIRING_KEYS if wiring else ("name",))))
    kwargs = {}
    for key in fields:
        if key in _WIRING_KEYS:
            continue
        if kind == "dropout":
            value = fields[key]
            if not (isinstance(value, float) and value in DROPOUT_RATES):
                raise f.error(key, f"must be 0.5, 0.75 or 0.875 (1 - 2**-k), got {quote(value)}")
            kwargs[names[key]] = value
        elif key == "init":
            kwargs["init"] = f.choice(key, CONV_INITS)
        else:
            kwargs[names[key]] = f.positive_int(key, allow_zero=(key == "padding"))
    name = None
    if f.has("name"):
        name = f.str("name")
        if not _NAME.fullmatch(name) or name == MODEL_INPUT:
            raise f.error("name", f"must be letters, digits, _ or - (not starting with a digit, not "
                                  f"{quote(MODEL_INPUT)}), got {quote(name)}")
    inputs = None
    if f.has("inputs"):
        want = 2 if cls is Add else 1
        refs = f.get("inputs")
        if not (isinstance(refs, list) and len(refs) == want):
            raise f.error("inputs", f"must be a list of {want} layer name{'s' if want > 1 else ''}, got {quote(refs)}")
        inputs = tuple(_ref(v, src, w, known) for w, v in f.items("inputs"))
    elif cls is Add:
        raise f.error("inputs", "missing required key (an add reads two layers: inputs: [a, b])")
    return cls(**kwargs), name, inputs


def _ref(value: Any, src: str, where: str, known) -> str:
    if not isinstance(value, str) or value not in known:
        raise UserInputError(src, where, f"must name an earlier layer or {quote(MODEL_INPUT)}, got {quote(value)}")
    return value


def _parse_residual(fields: Any, src: str, where: str, wiring: _Wiring) -> None:
    f = Fields(src, fields, where, what="must be a mapping with branch and optional shortcut, then")
    f.keys(("branch",), ("shortcut", "then"))
    branch = [_parse_layer(item, src, at, wiring=False)[:2] + (at,) for at, item in f.items("branch")]
    # The branch's last conv starts at zero unless it says otherwise, so the block starts as its shortcut.
    last_conv = max((i for i, (layer, _, _) in enumerate(branch) if isinstance(layer, Conv)), default=None)
    if last_conv is None:
        raise f.error("branch", "needs a conv (a residual branch without weights adds its input to itself)")
    raw = f.get("branch")[last_conv]
    layer, lname, at = branch[last_conv]
    if not (isinstance(raw, dict) and isinstance(raw.get("conv"), dict) and "init" in raw["conv"]):
        branch[last_conv] = (Conv(layer.out_channels, layer.kernel, layer.stride, layer.padding, "zero"), lname, at)
    shortcut = None
    sc = f.get("shortcut", "identity")
    if sc != "identity":
        if not (isinstance(sc, dict) and set(sc) == {"conv"}):
            raise f.error("shortcut", f"must be identity or {{conv: {{...}}}}, got {quote(sc)}")
        shortcut, sname, _ = _parse_layer(sc, src, f.path("shortcut"), wiring=False)
        if sname:
            raise f.error("shortcut", "a shortcut conv takes its name from the block; remove name")
    then = []
    if f.has("then"):
        items = f.get("then")
        pairs = f.items("then") if isinstance(items, list) else [(f.path("then"), items)]
        then = [_parse_layer(item, src, at, wiring=False)[:2] + (at,) for at, item in pairs]
    add_residual(wiring, [(l, at, n) for l, n, at in branch], shortcut, [(l, at, n) for l, n, at in then], where)


def parse_model(doc: Any, src: str) -> ModelSpec:
    """Build a ModelSpec from a parsed YAML document; `src` names the file in error messages."""
    f = Fields(src, doc, what="a model file must be a mapping with input and layers")
    f.keys(("input", "layers"), ("name", "classes"))
    shape = f.get("input")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise f.error("input", f"must be [H, W, C], got {quote(shape)}")
    input_shape = tuple(positive_int(v, src, where) for where, v in f.items("input"))
    classes = f.positive_int("classes", default=10)
    wiring = _Wiring(src)
    for where, item in f.items("layers"):
        if isinstance(item, dict) and len(item) == 1 and "residual" in item:
            _parse_residual(item["residual"], src, f"{where}.residual", wiring)
        else:
            layer, name, inputs = _parse_layer(item, src, where, known=wiring.taken)
            wiring.append(layer, where, name, inputs)
    name = f.get("name", Path(src).stem)
    if not isinstance(name, str):
        raise f.error("name", f"must be a string, got {quote(name)}")
    model = wired_model(name, input_shape, wiring.entries, classes)
    infer_shapes(model, batch=1, src=src, wheres=wiring.wheres)  # impossible geometry is a user error here
    return model


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file strictly (nitisim.contract.strict_yaml): any problem becomes one UserInputError line."""
    return load_document(path)


def load_model(path: str | Path) -> ModelSpec:
    """Read a model YAML file through the config reader."""
    return read_yaml(path, parse_model)


# ------------------------------------------------------------------------------------------------
# The stored form (summary.json's model_spec echo, the training step hash): [kind, fields] pairs.
# ------------------------------------------------------------------------------------------------
_KINDS = {cls.__name__.lower(): cls for cls in NAME_PREFIX}


def model_as_dict(model: ModelSpec) -> dict[str, Any]:
    """Layers as [kind, fields] pairs (ReLU and Flatten both have no fields, so the kind is needed);
    fields added later and the wiring appear only when they differ from their defaults, so a model
    that does not use them stores, and hashes, exactly as before they existed."""
    layers = []
    for layer in model.layers:
        later = _LATER_FIELDS.get(type(layer), {})
        fields = {f.name: getattr(layer, f.name) for f in dataclass_fields(layer)
                  if f.name not in later or getattr(layer, f.name) != later[f.name]}
        layers.append([type(layer).__name__.lower(), fields])
    out: dict[str, Any] = {"name": model.name, "input": list(model.input_shape), "classes": model.classes,
                           "layers": layers}
    if model.names:
        out["names"] = list(model.names)
    if model.inputs:
        out["inputs"] = [list(refs) for refs in model.inputs]
    return out


def model_from_dict(d: Any) -> ModelSpec:
    """The inverse of model_as_dict; raises KeyError, TypeError or ValueError on another shape."""
    layers = tuple(_KINDS[kind](**fields) for kind, fields in d["layers"])
    return ModelSpec(str(d["name"]), tuple(d["input"]), layers, int(d.get("classes", 10)),
                     tuple(d.get("names", ())), tuple(tuple(r) for r in d.get("inputs", ())))


# ------------------------------------------------------------------------------------------------
# The one model-reference resolver: training configs, sweep grids, `nitisim run`, the simulate,
# calibrate and models commands and the report all name a model this way.
# ------------------------------------------------------------------------------------------------
def model_reference(ref: Any, relative_to: str | Path | None = None, *, field: str = "model",
                    absolute: bool = False) -> str:
    """`ref` as it can be read from anywhere: a built-in name as is, a path relative to the folder of
    the file `relative_to` that names it (absolute, resolved, with absolute=True). A `ref` that is
    not a non-empty string (or path) is `relative_to`'s `field` error."""
    if isinstance(ref, PathLike):
        ref = fspath(ref)
    if not isinstance(ref, str) or not ref:
        raise UserInputError(str(relative_to or ref), field,
                             f"must be a built-in model name or a model YAML path, got {quote(ref)}")
    if ref in builtin_models():
        return ref
    path = Path(ref)
    if relative_to is not None and not path.is_absolute():
        path = Path(relative_to).parent / path
    return str(path.resolve() if absolute else path)


def resolve_model(name_or_path: Any, relative_to: str | Path | None = None, *, field: str = "model") -> ModelSpec:
    """A built-in name (`lenet`, `vgg-small-7`, ...) or a path to a model YAML file, relative to the
    folder of the file `relative_to` when one names it (else to the working directory). Errors in the
    model file name that file; a name that is neither names `relative_to` (or the name itself)."""
    models = builtin_models()
    name = fspath(name_or_path) if isinstance(name_or_path, PathLike) else name_or_path
    ref = model_reference(name, relative_to, field=field)
    if ref in models:
        return models[ref]
    path = Path(ref)
    if path.suffix not in (".yaml", ".yml") and not path_exists(path):
        raise UserInputError(str(relative_to or name), field,
                             f"{quote(name)} is neither a built-in model ({', '.join(models)}) nor a model YAML file")
    return load_model(path)  # errors there name the model file


# --------------------------------------------------------------------------------- shapes
# Kept with the specs so the YAML loader can reject an impossible model (a kernel larger than its
# input, a linear layer on a feature map without a flatten, an add of two shapes) before any graph exists.
def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output extent of a convolution or pooling window: floor((size + 2p - k) / s) + 1.

    >>> conv_out(32, 3, 1, 1), conv_out(28, 5, 1, 0), conv_out(24, 2, 2, 0)
    (32, 24, 12)
    """
    return (size + 2 * padding - kernel) // stride + 1


def infer_shapes(model: ModelSpec, batch: int, src: str | None = None,
                 wheres: list[str] | None = None) -> list[tuple[int, ...]]:
    """Shapes of the input and then of each layer's output: (N, H, W, C) maps, (N, F) vectors.
    Layer i reads shapes[j + 1] for each j of layer_inputs(model)[i] (shapes[i] in a chain).
    `wheres` names each layer's field in error messages (default `layers[i]`)."""
    src = src or model.name
    wheres = wheres or [f"layers[{i}]" for i in range(len(model.layers))]
    names = layer_names(model)
    reads = layer_inputs(model)
    readers = [0] * len(model.layers)
    shapes: list[tuple[int, ...]] = [(batch, *model.input_shape)]
    for i, layer in enumerate(model.layers):
        where = wheres[i]
        ins = [shapes[j + 1] for j in reads[i]]
        for j in reads[i]:
            if j >= 0:
                readers[j] += 1
        want = 2 if isinstance(layer, Add) else 1
        if len(ins) != want:
            raise UserInputError(src, where, f"{type(layer).__name__.lower()} reads {want} input(s), got {len(ins)}")
        shape = ins[0]
        if isinstance(layer, (Conv, MaxPool)):
            if len(shape) != 4:
                raise UserInputError(src, where, f"{type(layer).__name__.lower()} needs an (N, H, W, C) input, got {shape}")
            pad = layer.padding
            if isinstance(layer, MaxPool) and 2 * pad > layer.kernel:
                raise UserInputError(src, where, f"maxpool padding {pad} is more than half its kernel {layer.kernel}: "
                                                 "a window could hold padding only")
            if isinstance(layer, Conv) and layer.init not in CONV_INITS:
                raise UserInputError(src, where, f"conv init must be one of {', '.join(CONV_INITS)}, got {quote(layer.init)}")
            n, h, w, c = shape
            e, f = conv_out(h, layer.kernel, layer.stride, pad), conv_out(w, layer.kernel, layer.stride, pad)
            if e < 1 or f < 1:
                raise UserInputError(src, where, f"kernel {layer.kernel} does not fit the {h}x{w} input")
            shape = (n, e, f, layer.out_channels if isinstance(layer, Conv) else c)
        elif isinstance(layer, Linear):
            if len(shape) != 2:
                raise UserInputError(src, where, f"linear needs an (N, F) input (add a flatten), got {shape}")
            shape = (shape[0], layer.out_features)
        elif isinstance(layer, Flatten):
            n, *rest = shape
            size = 1
            for d in rest:
                size *= d
            shape = (n, size)
        elif isinstance(layer, GlobalAvgPool):
            if len(shape) != 4:
                raise UserInputError(src, where, f"global_avgpool needs an (N, H, W, C) input, got {shape}")
            shape = (shape[0], shape[3])
        elif isinstance(layer, Add):
            if ins[0] != ins[1]:
                a, b = (names[j] if j >= 0 else MODEL_INPUT for j in reads[i])
                raise UserInputError(src, where, f"add operands differ in shape: {a} {ins[0][1:]}, {b} {ins[1][1:]}")
        elif isinstance(layer, (ReLU, Dropout)):
            pass
        else:  # pragma: no cover - the loader admits only the classes above
            raise TypeError(f"unknown layer {layer!r}")
        shapes.append(shape)
    unread = [i for i, r in enumerate(readers[:-1]) if r == 0]
    if unread:
        raise UserInputError(src, wheres[unread[0]], f"the output of layer {names[unread[0]]} is never read "
                                                     "(only the last layer's output may be left: the logits)")
    if len(shape) != 2:
        raise UserInputError(src, "layers", f"the last layer must produce (N, classes) logits, got {shape}")
    if shape[1] != model.classes:
        raise UserInputError(src, "layers", f"the last layer has {shape[1]} outputs but classes is {model.classes}")
    if not any(isinstance(layer, WEIGHTED) for layer in model.layers):
        raise UserInputError(src, "layers", "a model needs at least one conv or linear layer")
    return shapes
