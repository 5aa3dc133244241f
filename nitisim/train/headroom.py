"""Weight headroom: start the int8 weights below full scale so they can grow during training.

NITI fixes each weight tensor's exponent at initialisation, with the initial maximum mapped to
127, so no weight can ever exceed its layer's initial maximum. Float training does not stay there:
measured on Fashion-MNIST LeNet in float32, the largest weights grow 4-7x and the distributions
grow heavy tails, which a capped int8 layer can only imitate by saturating at +-127.

`with_headroom(graph, params, bits)` shifts every initial weight right by `bits` (round half away
from zero) and raises its exponent by `bits`: the real values stay the same to within half the new
LSB, and each layer can grow 2**bits before it saturates. Integer-only; states are re-derived from
the shifted weights by nitisim.contract.init.init_states (zero velocity, shadow = w << 8).
"""
from __future__ import annotations

from ..contract.graph import Graph
from ..contract.init import init_states
from ..contract.numerics import QTensor, clamp_int8, round_shift

MAX_HEADROOM_BITS = 6  # keeps at least 1 bit of initial weight magnitude


def with_headroom(graph: Graph, params: dict[str, QTensor], bits: int) -> dict[str, QTensor]:
    if bits == 0:
        return params
    if not 0 < bits <= MAX_HEADROOM_BITS:
        raise ValueError(f"headroom must be 0..{MAX_HEADROOM_BITS} bits, got {bits}")
    out = dict(params)
    for name in graph.weights:
        w = params[name]
        out[name] = QTensor(clamp_int8(round_shift(w.m, bits, "nearest")), w.e + bits)
    init_states(graph, out)
    return out
