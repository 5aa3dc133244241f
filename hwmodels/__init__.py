"""hwmodels: a cycle-approximate discrete-event (SimPy) model of an int8 MAC-array accelerator
running nitisim's integer training graph; reports cycles, energy, storage and silicon area. See
docs/hwmodel.md.

Public API (stable names):

    load_accelerator(path) / resolve_accelerator(name_or_path) -> AcceleratorSpec
    simulate(arch, graph, *, compat=None, phases=None, trace=False) -> SimResult
    simulate_with_fp32(arch, graph, **kw) -> (SimResult, SimResult)
    float32_variant(arch), unbounded_dram(arch), with_buffer_sizes(arch, **bytes) -> AcceleratorSpec
    report.summary(result, fp32=None) -> dict (summary.json), report.write_outputs(dir, result, fp32)
    area.area_um2(arch) -> {component: um^2}, area.total_mm2(arch)   (the spec's area; no simulation)
"""
from .config import load_accelerator, parse_accelerator, resolve_accelerator
from .result import LayerStats, NodeStats, SimResult
from .sim import simulate, simulate_with_fp32
from .spec import AcceleratorSpec, float32_variant, unbounded_dram, with_buffer_sizes

__all__ = [
    "AcceleratorSpec", "LayerStats", "NodeStats", "SimResult", "float32_variant", "load_accelerator",
    "parse_accelerator", "resolve_accelerator", "simulate", "simulate_with_fp32", "unbounded_dram",
    "with_buffer_sizes",
]
