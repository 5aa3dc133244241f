"""From probe results to an accelerator YAML that models this host (pure; no measurement).

The mapping, unit by unit (hwmodels/host.py says how the simulator uses each):

    host.gemm_tile                    the engine's (m, k, n) block (the C library's gemm_tile)
    host.gemm_macs_per_cycle[class]   measured padded MAC/s of that shape class / clock
    host.vector_ops_per_cycle[width]  measured element ops/s on one core / clock
    host.call_cycles[gemm|vector]     measured seconds of a near-empty call x clock
    host.cores, parallel_min_elements the library's threads and parallel threshold (elements)
    array                             4 x (16 x cores), os: one 4-deep int8 dot product on 16 int32
                                      lanes per core (AVX-512 VNNI); only the tile search and the
                                      float32 twin read it, the host rates price the int8 GEMMs
    buffers                           ifmap and ofmap: the L2 cache, filter: the L1 data cache; ports
                                      one cache line per cycle per core, so they never bind
    dram                              measured streaming bandwidth beyond L2 (a tensor that does not
                                      stay in cache costs a pass over memory at this rate)
    host.kernels[key]                 measured seconds of one call of that GEMM / pooling kernel x clock
    host.curves[name]                 [elements, measured seconds of one call x clock] per grid point
    calibration                       date, command, machine and every probe's value and unit (the
                                      kernel and curve probes as kernel:<key> and curve:<name>@<n>)
"""
from __future__ import annotations

import datetime as _dt
from typing import Any

import yaml

from hwmodels.host import GEMM_CLASSES

from .probes import HostFacts

LINE_BYTES = 64  # one cache line per cycle per port


def _sig(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


def _buffer(size_bytes: int, cores: int) -> dict[str, Any]:
    banks = max(1, cores)
    size = max(LINE_BYTES * banks, size_bytes // (LINE_BYTES * banks) * (LINE_BYTES * banks))
    return {"bytes": size, "width_bytes": LINE_BYTES, "banks": banks, "double_buffered": True}


def _timed(k, what: str) -> dict[str, Any]:
    return {"value": _sig(k.seconds), "unit": "s", "what": what, "seconds": _sig(k.seconds), "repeats": k.repeats}


def host_document(facts: HostFacts, *, name: str, command: str, date: str | None = None) -> dict[str, Any]:
    """The accelerator YAML mapping of a calibrated host (hwmodels.config reads it strictly)."""
    hz = facts.clock_mhz * 1e6
    v = facts.value
    date = date or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    int8_rate, int32_rate = v("vector_int8") / hz, v("vector_int32") / hz
    return {
        "version": 1,
        "name": name,
        "array": {"rows": 4, "cols": 16 * max(1, facts.cores), "dataflow": "os"},
        "clock_mhz": _sig(facts.clock_mhz),
        "buffers": {
            "ifmap": _buffer(facts.l2_bytes, facts.cores),
            "filter": _buffer(facts.l1d_bytes, facts.cores),
            "ofmap": _buffer(facts.l2_bytes, facts.cores),
        },
        # energy is not calibrated: DDR3 is the energy table's off-package DIMM technology
        "dram": {"bandwidth_gb_s": _sig(v("memory_bandwidth") / 1e9), "latency_cycles": 0, "technology": "DDR3"},
        "vector": {"lanes": max(1, round(max(int8_rate, int32_rate)))},
        "host": {
            "engine": facts.engine,
            "cores": facts.cores,
            "parallel_min_elements": facts.parallel_min_elements,
            "gemm_tile": dict(zip("mkn", facts.gemm_tile)),
            "gemm_macs_per_cycle": {cls: _sig(v(f"gemm_{cls}") / hz) for cls in GEMM_CLASSES},
            "vector_ops_per_cycle": {"int8": _sig(int8_rate), "int32": _sig(int32_rate)},
            "call_cycles": {"gemm": round(v("call_gemm") * hz), "vector": round(v("call_vector") * hz)},
            **({"kernels": {k.key: max(1, round(k.seconds * hz)) for k in facts.kernels}} if facts.kernels else {}),
            **({"curves": {name: [[int(k.key.rsplit("@", 1)[1]), _sig(k.seconds * hz)] for k in points]
                           for name, points in facts.curves.items()}} if facts.curves else {}),
        },
        "calibration": {
            "date": date,
            "command": command,
            "machine": facts.machine,
            "probes": {p.name: {"value": _sig(p.value), "unit": p.unit, "what": p.what,
                                **({"seconds": _sig(p.seconds), "repeats": p.repeats} if p.seconds else {})}
                       for p in facts.probes}
            | {f"kernel:{k.key}": _timed(k, "one call of the kernel table on random operands of these shapes")
               for k in facts.kernels}
            | {f"curve:{k.key}": _timed(k, "one call of the kernel table on random operands of this many elements")
               for points in facts.curves.values() for k in points},
        },
    }


def render(doc: dict[str, Any]) -> str:
    """The YAML text, with a header saying what wrote it and how to read it."""
    header = ("# A calibrated model of the host that measured, written by `nitisim calibrate` on "
              f"{doc['calibration']['date']}.\n"
              "# Rates come from short probes of the C library on fixed synthetic shapes (calibration.probes),\n"
              "# never from a training run's timing. See hwmodels/host.py and docs/hwmodel.md.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=110)
