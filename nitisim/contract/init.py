"""Parameter initialisation: Xavier-uniform weights quantized to int8 with one exponent each.

Floats are used once here, before training (spec §6): m = round(w / max|w| * 127),
e = ceil(log2(max|w|)) - 7. Momentum velocities start at zero; int16 shadows start at w << 8.

A conv with `init: zero` (each residual branch's last conv) starts with m = 0 and the exponent its
Xavier draw would have had, as SkipInit does without a float scale: with no batch norm, a block
then starts as its shortcut, so depth does not grow the activations at initialisation, and the
weight's fixed exponent still gives its updates the step size of a normally initialised layer.
Its weight gradient is x * dy, nonzero from the first step since the error reaches it through the
add; only the error below it (dy * W) is zero until the first update. The draw is still made, so
every other layer's weights are those of the same seed without zero init.
"""
from __future__ import annotations

import math

import numpy as np

from .graph import Graph
from .models import Conv, layer_names
from .numerics import SHADOW_FRAC_BITS, QTensor


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 4:  # (O, kh, kw, I)
        o, kh, kw, i = shape
        return kh * kw * i, kh * kw * o
    out, inp = shape
    return inp, out


def quantize_float_weights(w: np.ndarray) -> QTensor:
    """Scale a float array to the full int8 range with a power-of-two exponent.

    >>> t = quantize_float_weights(np.array([0.5, -0.25]))
    >>> t.m.tolist(), t.e
    ([127, -64], -8)
    """
    peak = float(np.abs(w).max())
    if peak == 0.0:
        return QTensor(np.zeros(w.shape, np.int8), -7)
    m = np.round(w / peak * 127).astype(np.int8)
    return QTensor(m, math.ceil(math.log2(peak)) - 7)


def init_params(graph: Graph, seed: int = 0) -> dict[str, QTensor]:
    """Weights (Xavier-uniform, then int8) and optimiser states for `graph`, deterministic in seed."""
    rng = np.random.default_rng(seed)
    zero = {f"{name}.w" for name, layer in zip(layer_names(graph.model), graph.model.layers)
            if isinstance(layer, Conv) and layer.init == "zero"}
    params: dict[str, QTensor] = {}
    for name in graph.weights:
        shape = graph.tensor(name).shape
        fan_in, fan_out = _fans(shape)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        w = quantize_float_weights(rng.uniform(-bound, bound, size=shape))
        params[name] = QTensor(np.zeros_like(w.m), w.e) if name in zero else w
    init_states(graph, params)
    return params


def init_states(graph: Graph, params: dict[str, QTensor]) -> None:
    """Set `graph`'s optimiser states in `params` (in place) from the weights already there: momentum
    velocities zero (int32, the weight's exponent), int16 shadows w << 8."""
    for name in graph.states:
        w = params[name.rsplit(".", 1)[0]]
        if name.endswith(".velocity"):
            params[name] = QTensor(np.zeros(w.m.shape, np.int32), w.e)
        else:
            params[name] = QTensor(w.m.astype(np.int16) << SHADOW_FRAC_BITS, w.e - SHADOW_FRAC_BITS)
