"""Parameter initialisation: Xavier-uniform weights quantized to int8 with one exponent each.

Floats are used once here, before training (spec §6): m = round(w / max|w| * 127),
e = ceil(log2(max|w|)) - 7. Momentum velocities start at zero; int16 shadows start at w << 8.
"""
from __future__ import annotations

import math

import numpy as np

from .graph import Graph
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
    params: dict[str, QTensor] = {}
    for name in graph.weights:
        shape = graph.tensor(name).shape
        fan_in, fan_out = _fans(shape)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        params[name] = quantize_float_weights(rng.uniform(-bound, bound, size=shape))
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
