"""Model descriptions: frozen layer specs, the built-in networks, and the strict YAML model loader.

A model is an input shape (H, W, C) and a list of layers. The training-graph builder
(`nitisim.contract.graph`) expands it; nothing here knows about integers or executors.

YAML form (configs/models/*.yaml):

    name: lenet
    input: [28, 28, 1]          # H, W, C
    classes: 10
    layers:
      - conv: {out: 20, kernel: 5, stride: 1, padding: 0}
      - relu
      - maxpool: {kernel: 2, stride: 2}   # optional padding (< kernel), with -infinity
      - flatten
      - linear: {out: 500}
      - dropout: {rate: 0.5}
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike, fspath
from pathlib import Path
from typing import Any, Union

from .errors import UserInputError
from .config_reader import Fields, load_document, positive_int, read_yaml
from .values import path_exists, quote


@dataclass(frozen=True)
class Conv:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0  # zero padding on every side


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
    padding: int = 0  # -infinity on every side: never wins; < kernel leaves a real value in each window


@dataclass(frozen=True)
class Flatten:
    pass  # NHWC order, so a conv feature map flattens channel-fastest


@dataclass(frozen=True)
class Dropout:
    rate: float = 0.5  # must be 1 - 2**-k: kept values are scaled by 2**k through the exponent


Layer = Union[Conv, Linear, ReLU, MaxPool, Flatten, Dropout]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    layers: tuple[Layer, ...]
    classes: int = 10


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


def builtin_models() -> dict[str, ModelSpec]:
    """The named networks: NITI's MNIST LeNet and CIFAR-10 VGG-small nets, plus an MLP and VGG11/13."""
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
    }


# ------------------------------------------------------------------------------------------------
# YAML loading: strict, every error names the file and the key path.
# ------------------------------------------------------------------------------------------------
_LAYER_FIELDS: dict[str, tuple[type, dict[str, str], tuple[str, ...]]] = {
    # yaml key: (class, {yaml field: dataclass field}, required yaml fields)
    "conv": (Conv, {"out": "out_channels", "kernel": "kernel", "stride": "stride", "padding": "padding"},
             ("out", "kernel")),
    "linear": (Linear, {"out": "out_features"}, ("out",)),
    "relu": (ReLU, {}, ()),
    "maxpool": (MaxPool, {"kernel": "kernel", "stride": "stride", "padding": "padding"}, ()),
    "flatten": (Flatten, {}, ()),
    "dropout": (Dropout, {"rate": "rate"}, ()),
}
DROPOUT_RATES = (0.5, 0.75, 0.875)  # 1 - 2**-k: kept values are scaled by 2**k through the exponent


def _parse_layer(item: Any, src: str, where: str) -> Layer:
    if isinstance(item, str):
        kind, fields = item, {}
    elif isinstance(item, dict) and len(item) == 1:
        kind, fields = next(iter(item.items()))
        fields = {} if fields is None else fields
    else:
        raise UserInputError(src, where, "must be a layer name or a one-key mapping like {conv: {...}}")
    if kind not in _LAYER_FIELDS:
        raise UserInputError(src, where, f"unknown layer {quote(kind)}; expected one of {', '.join(_LAYER_FIELDS)}")
    cls, names, required = _LAYER_FIELDS[kind]
    f = Fields(src, fields, f"{where}.{kind}", what="must be a mapping of layer fields").keys(required, names)
    kwargs = {}
    for key in fields:
        if kind == "dropout":
            value = fields[key]
            if not (isinstance(value, float) and value in DROPOUT_RATES):
                raise f.error(key, f"must be 0.5, 0.75 or 0.875 (1 - 2**-k), got {quote(value)}")
            kwargs[names[key]] = value
        else:
            kwargs[names[key]] = f.positive_int(key, allow_zero=(key == "padding"))
    if kind == "maxpool" and kwargs.get("padding", 0) >= kwargs.get("kernel", MaxPool.kernel):
        raise f.error("padding", f"must be below the kernel ({kwargs.get('kernel', MaxPool.kernel)}): a window of "
                                 f"padding only would have no maximum, got {kwargs['padding']}")
    return cls(**kwargs)


def parse_model(doc: Any, src: str) -> ModelSpec:
    """Build a ModelSpec from a parsed YAML document; `src` names the file in error messages."""
    f = Fields(src, doc, what="a model file must be a mapping with input and layers")
    f.keys(("input", "layers"), ("name", "classes"))
    shape = f.get("input")
    if not (isinstance(shape, list) and len(shape) == 3):
        raise f.error("input", f"must be [H, W, C], got {quote(shape)}")
    input_shape = tuple(positive_int(v, src, where) for where, v in f.items("input"))
    classes = f.positive_int("classes", default=10)
    layers = tuple(_parse_layer(item, src, where) for where, item in f.items("layers"))
    name = f.get("name", Path(src).stem)
    if not isinstance(name, str):
        raise f.error("name", f"must be a string, got {quote(name)}")
    model = ModelSpec(name, input_shape, layers, classes)
    infer_shapes(model, batch=1, src=src)  # impossible geometry is a user error here, not later
    return model


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file strictly (nitisim.contract.strict_yaml): any problem becomes one UserInputError line."""
    return load_document(path)


def load_model(path: str | Path) -> ModelSpec:
    """Read a model YAML file through the config reader."""
    return read_yaml(path, parse_model)


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
# input, a linear layer on a feature map without a flatten) before any graph exists.
def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output extent of a convolution or pooling window: floor((size + 2p - k) / s) + 1.

    >>> conv_out(32, 3, 1, 1), conv_out(28, 5, 1, 0), conv_out(24, 2, 2, 0)
    (32, 24, 12)
    """
    return (size + 2 * padding - kernel) // stride + 1


def infer_shapes(model: ModelSpec, batch: int, src: str | None = None) -> list[tuple[int, ...]]:
    """Shapes after each layer, starting with the input: (N, H, W, C) maps, (N, F) vectors."""
    src = src or model.name
    shape: tuple[int, ...] = (batch, *model.input_shape)
    shapes = [shape]
    for i, layer in enumerate(model.layers):
        where = f"layers[{i}]"
        if isinstance(layer, (Conv, MaxPool)):
            if len(shape) != 4:
                raise UserInputError(src, where, f"{type(layer).__name__.lower()} needs an (N, H, W, C) input, got {shape}")
            if isinstance(layer, MaxPool) and layer.padding >= layer.kernel:
                raise UserInputError(src, where, f"maxpool padding {layer.padding} must be below its kernel "
                                                 f"{layer.kernel}: a window of padding only has no maximum")
            pad = layer.padding
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
        elif isinstance(layer, (ReLU, Dropout)):
            pass
        else:  # pragma: no cover - the loader admits only the classes above
            raise TypeError(f"unknown layer {layer!r}")
        shapes.append(shape)
    if len(shape) != 2:
        raise UserInputError(src, "layers", f"the last layer must produce (N, classes) logits, got {shape}")
    if shape[1] != model.classes:
        raise UserInputError(src, "layers", f"the last layer has {shape[1]} outputs but classes is {model.classes}")
    if not any(isinstance(layer, (Conv, Linear)) for layer in model.layers):
        raise UserInputError(src, "layers", "a model needs at least one conv or linear layer")
    return shapes
