"""Shape inference for a ModelSpec: the activation shape after every layer, checked for geometry.

Kept apart from the graph builder so the YAML loader can reject an impossible model (a kernel
larger than its input, a linear layer on a feature map without a flatten) before any graph exists.
"""
from __future__ import annotations

from .errors import UserInputError
from .models import Conv, Dropout, Flatten, Linear, MaxPool, ModelSpec, ReLU


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
            pad = layer.padding if isinstance(layer, Conv) else 0
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
