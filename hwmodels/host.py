"""The calibrated machine model: cycles of GEMM and vector work on a real host (or GPU) from rates
measured by probes (`nitisim calibrate`) or taken from public specifications.

A systolic array's cycles come from folds; a CPU's from how fast its GEMM engine and its vector
code run on shapes of the same kind. So a host model prices

    GEMM node    call_cycles["gemm"] + ceil(padded MACs / gemm_macs_per_cycle[gemm_class(op, phase, M, K, N)])
                 padded MACs = M, K and N each rounded up to the engine's tile (gemm_tile): the
                 work an AMX 32 x 32 tile pair or a 12 x 32 SIMD micro-kernel really does
    vector node  call_cycles["vector"] + sum over passes of ceil(ops of each width class /
                 (vector_ops_per_cycle[width] x cores if the pass is parallel else 1))

and the simulator adds what DRAM (on a host: traffic beyond the on-chip caches) cannot hide,
exactly as for an accelerator. Pure functions; no SimPy, no measurement.

YAML (optional sections of an accelerator config, see hwmodels/config.py):

    host:
      engine: amx
      cores: 2
      gemm_tile: {m: 32, k: 64, n: 32}
      parallel_min_bytes: 4194304
      gemm_macs_per_cycle: {narrow: 38.0, conv_forward: 107.2, conv_input_grad: 98.5, conv_weight_grad: 180.6,
                            linear_forward: 174.6, linear_input_grad: 154.0, linear_weight_grad: 103.4}
      vector_ops_per_cycle: {int8: 10.3, int32: 8.9}
      call_cycles: {gemm: 10400, vector: 5200}
    calibration:                  # where the numbers come from (required with host)
      date: "2026-12-03T12:00:00+00:00"
      command: "nitisim calibrate --out ..."
      machine: "Intel(R) Xeon(R) Processor, 2 cores"
      probes: {gemm_forward: {value: 4.7e11, unit: MAC/s, what: "conv 3x3 ..."}, ...}
"""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Iterable

from .spec import HostSpec

# Shape classes: any GEMM dimension below NARROW_DIM leaves most of a SIMD register (16 int32
# lanes, 4-deep int8 dot products) or tensor-core tile idle, whatever the layer; otherwise the
# engine path (a conv's implicit GEMM gathers im2col operands from NHWC maps, a linear layer's GEMM
# reads contiguous rows) and the phase (forward: x . W, input_grad: dY . W^T, plus col2im for a
# conv, weight_grad: a long reduction over the batch) decide the operand layout, which is what
# changes a CPU's packing and cache blocking.
NARROW_DIM = 32
GEMM_CLASSES: tuple[str, ...] = ("narrow", "conv_forward", "conv_input_grad", "conv_weight_grad",
                                 "linear_forward", "linear_input_grad", "linear_weight_grad")
GEMM_PHASES: tuple[str, ...] = ("forward", "input_grad", "weight_grad")
VECTOR_WIDTHS: tuple[str, ...] = ("int8", "int32")
CALL_KINDS: tuple[str, ...] = ("gemm", "vector")


def gemm_class(op: str, phase: str, m: int, k: int, n: int) -> str:
    """The shape class of a GEMM (M x K) . (K x N) of graph op `op` and report phase `phase`.

    >>> gemm_class("conv2d", "forward", 147456, 25, 20), gemm_class("linear_weight_grad", "weight_grad", 800, 256, 500)
    ('narrow', 'linear_weight_grad')
    """
    if phase not in GEMM_PHASES:
        raise ValueError(f"not a GEMM phase: {phase!r}")
    if min(m, k, n) < NARROW_DIM:
        return "narrow"
    return f"{'conv' if op.startswith('conv2d') else 'linear'}_{phase}"


def padded_macs(tile: tuple[int, int, int], m: int, k: int, n: int) -> int:
    """MACs of the GEMM with M, K and N rounded up to the tile (m, k, n) the engine computes in.

    >>> padded_macs((32, 64, 32), 500, 16384, 50)  # 512 x 16384 x 64
    536870912
    """
    tm, tk, tn = tile
    return math.ceil(m / tm) * tm * math.ceil(k / tk) * tk * math.ceil(n / tn) * tn


def gemm_cycles(host: HostSpec, op: str, phase: str, m: int, k: int, n: int) -> int:
    """Cycles of one GEMM node: the call plus its padded MACs at the measured rate of its shape class."""
    rate = host.gemm_macs_per_cycle[gemm_class(op, phase, m, k, n)]
    return host.call_cycles["gemm"] + math.ceil(padded_macs(host.gemm_tile, m, k, n) / rate)


def pass_cycles(host: HostSpec, ops: Iterable[tuple[str, int]], largest_input_bytes: int) -> int:
    """Cycles of one vector pass: element ops per width class at the measured per-core rate, on all
    cores when the pass's largest input is above parallel_min_bytes (the host library's threshold)."""
    workers = host.cores if largest_input_bytes > host.parallel_min_bytes else 1
    return sum(math.ceil(count / (host.vector_ops_per_cycle[width] * workers)) for width, count in ops)


def parse_host(r: Any) -> HostSpec:
    """The `host:` section, read through config.py's strict reader `r` (errors name file and key)."""
    r.keys({"engine", "cores", "parallel_min_bytes", "gemm_tile", "gemm_macs_per_cycle", "vector_ops_per_cycle",
            "call_cycles"})
    tile = r.sub("gemm_tile")
    tile.keys({"m", "k", "n"})
    return HostSpec(
        engine=r.str("engine"), cores=r.int("cores"), parallel_min_bytes=r.int("parallel_min_bytes", minimum=0),
        gemm_tile=(tile.int("m"), tile.int("k"), tile.int("n")),
        gemm_macs_per_cycle=_numbers(r.sub("gemm_macs_per_cycle"), GEMM_CLASSES),
        vector_ops_per_cycle=_numbers(r.sub("vector_ops_per_cycle"), VECTOR_WIDTHS),
        call_cycles=_numbers(r.sub("call_cycles"), CALL_KINDS, integer=True),
        calibrated="",
    )


def parse_calibration(r: Any) -> str:
    """The `calibration:` record: when, by what command, on what machine, and every probe's value.
    Returns the date; the probes are kept in the YAML for the reader and checked here."""
    r.keys({"date", "command", "machine", "probes"})
    date = r.str("date")
    r.str("command")
    r.str("machine")
    probes = r.sub("probes")
    if not probes.doc:
        raise probes.error(None, "must list at least one probe")
    for name in probes.doc:
        p = probes.sub(name)
        p.keys({"value", "unit", "what"}, {"seconds", "repeats"})
        p.number("value")
        p.str("unit")
        p.str("what")
        if p.has("seconds"):
            p.number("seconds")
        if p.has("repeats"):
            p.int("repeats")
    return date


def _numbers(r: Any, keys: tuple[str, ...], integer: bool = False):
    r.keys(set(keys))
    return MappingProxyType({k: (r.int(k, minimum=0) if integer else r.number(k)) for k in keys})
