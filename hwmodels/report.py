"""Reports of a simulation: summary.json (machine-readable), report.md (where cycles, energy and
silicon area go, int8 versus float32), and an optional Chrome/Perfetto trace (JSON trace event
format).

The summary.json schema is documented in docs/hwmodel.md; `SCHEMA` names its version.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import area
from .energy import COMPONENTS
from .result import NodeStats, SimResult
from .spec import AcceleratorSpec

SCHEMA = "nitisim.simulate/1"
LAYER_FIELDS = ("name", "phase", "macs", "cycles", "compute_cycles", "stall_cycles", "energy_pj",
                "sram_read_bytes", "sram_write_bytes", "dram_read_bytes", "dram_write_bytes")


_MAX_LAYER_ROWS = 60  # a (layer, phase) table up to this long is shown whole (LeNet 21 rows, VGG-small-7 38)
_SHOWN_LAYER_ROWS = 40  # rows kept from a longer one, plus one summed row

def arch_echo(arch: AcceleratorSpec) -> dict:
    """The configuration as simulated, energy table with sources included."""
    d = {
        "name": arch.name, "version": arch.version, "source": arch.source, "format": arch.format,
        "array": asdict(arch.array), "clock_mhz": arch.clock_mhz,
        "operand_bits": arch.operand_bits, "accumulator_bits": arch.accumulator_bits,
        "buffers": {b.name: {"bytes": b.size_bytes, "width_bytes": b.width_bytes, "banks": b.banks,
                             "double_buffered": b.double_buffered} for b in arch.buffers},
        "dram": {"bandwidth_bytes_per_cycle": None if arch.dram.unbounded else arch.dram.bandwidth_bytes_per_cycle,
                 "latency_cycles": arch.dram.latency_cycles, "technology": arch.dram.technology},
        "vector": {"lanes": arch.vector.lanes},
        "energy": {k: {"pj": e.pj, "unit": e.unit, "source": e.source} for k, e in arch.energy.items()},
        "node_nm": arch.node_nm,
        "area": {k: {"um2": e.um2, "unit": e.unit, "source": e.source} for k, e in arch.area.items()},
    }
    if arch.host is not None:  # a calibrated machine model: the report shows predicted seconds
        h = arch.host
        d["host"] = {"engine": h.engine, "cores": h.cores, "parallel_min_elements": h.parallel_min_elements,
                     "gemm_tile": dict(zip("mkn", h.gemm_tile)),
                     "gemm_macs_per_cycle": dict(h.gemm_macs_per_cycle),
                     "vector_ops_per_cycle": dict(h.vector_ops_per_cycle), "call_cycles": dict(h.call_cycles),
                     "kernels": dict(h.kernels), "curves": {k: [list(p) for p in v] for k, v in h.curves.items()},
                     "calibrated": h.calibrated}
    return d


def node_dict(n: NodeStats) -> dict:
    d = {
        "name": n.name, "op": n.op, "kind": n.kind, "layer": n.layer, "graph_phase": n.graph_phase,
        "phase": n.phase, "start_cycle": n.start_cycle, "cycles": n.cycles, "compute_cycles": n.compute_cycles,
        "stall_cycles": n.stall_cycles, "macs": n.macs, "energy_pj": n.energy_total_pj,
        "energy_by_component_pj": dict(n.energy_pj), "sram_read_bytes": n.sram_read_bytes,
        "sram_write_bytes": n.sram_write_bytes, "dram_read_bytes": n.dram_read_bytes,
        "dram_write_bytes": n.dram_write_bytes, "dram_spill_bytes": n.dram_spill_bytes,
        "buffer_peak_bytes": dict(n.buffer_peak_bytes), "counts": dict(n.counts),
    }
    if n.tiling is not None:
        t, g = n.tiling, n.gemm
        d["gemm"] = {"m": g.m, "k": g.k, "n": g.n, "tile": [t.tm, t.tk, t.tn], "order": t.order,
                     "trips": list(t.trips), "folds": t.folds, "cycles_per_fold": t.cycles_per_fold,
                     "stream_tiles": t.stream_tiles, "a_refetch": t.a_refetch, "b_refetch": t.b_refetch,
                     "psum_spill_bytes": t.psum_spill_bytes}
    return d


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def area_block(arch: AcceleratorSpec) -> dict:
    """summary.json `area`: instances, per-instance entries and the area by component."""
    counts = area.counts(arch)
    by_component = area.area_um2(arch)
    return {"node_nm": arch.node_nm, "total_mm2": sum(by_component.values()) * 1e-6,
            "by_component_mm2": {c: v * 1e-6 for c, v in by_component.items()},
            "instances": {k: {"count": n, "component": area.INSTANCES[k][0], "unit": arch.area[k].unit,
                              "um2_each": arch.area[k].um2, "source": arch.area[k].source}
                          for k, n in counts.items()},
            "not_modelled": area.NOT_MODELLED}


def totals(result: SimResult) -> dict:
    """SimResult.total() plus, where the arch has an area, the area-derived figures of merit:
    area_mm2 (and by component), images per second and per second per mm^2, energy per image,
    EDP = energy x time per step (J s) and EDAP = EDP x area (J s mm^2)."""
    t = result.total()
    if not area.has_area(result.arch):
        return t
    by_component = {c: v * 1e-6 for c, v in area.area_um2(result.arch).items()}
    mm2 = sum(by_component.values())
    ips = result.batch / t["seconds"] if t["seconds"] else 0.0
    edp = t["energy_pj"] * 1e-12 * t["seconds"]
    t.update(area_mm2=mm2, area_by_component_mm2=by_component, images_per_second=ips,
             images_per_second_per_mm2=ips / mm2 if mm2 else 0.0,
             energy_per_image_pj=t["energy_pj"] / result.batch if result.batch else 0.0,
             edp_j_s=edp, edap_j_s_mm2=edp * mm2)
    return t


_COMPARED = (("energy", "energy_pj"), ("cycles", "cycles"), ("peak_storage", "peak_storage_bytes"),
             ("activation_stash", "activation_stash_bytes"), ("weights_and_state", "weight_bytes"))


def int8_vs_fp32(result: SimResult, fp32: SimResult) -> dict:
    """The compact comparison (flat numbers): float32 / int8 ratios and the values they come from."""
    t, f = result.total(), fp32.total()
    dram_t = t["dram_read_bytes"] + t["dram_write_bytes"]
    dram_f = f["dram_read_bytes"] + f["dram_write_bytes"]
    out = {"fp32_arch": fp32.arch.name}
    for label, key in _COMPARED:
        out[f"{label}_ratio"] = _ratio(f[key], t[key])
    out["dram_bytes_ratio"] = _ratio(dram_f, dram_t)
    out["int8"] = {key: t[key] for _, key in _COMPARED} | {"dram_bytes": dram_t}
    out["fp32"] = {key: f[key] for _, key in _COMPARED} | {"dram_bytes": dram_f}
    if area.has_area(result.arch):
        a_t, a_f = area.area_um2(result.arch), area.area_um2(fp32.arch)
        out["area_ratio"] = _ratio(sum(a_f.values()), sum(a_t.values()))
        out["mac_array_area_ratio"] = _ratio(a_f["mac_array"], a_t["mac_array"])
        for side, a in (("int8", a_t), ("fp32", a_f)):
            out[side] |= {"area_mm2": sum(a.values()) * 1e-6, "mac_array_area_mm2": a["mac_array"] * 1e-6}
    return out


def summary(result: SimResult, fp32: SimResult | None = None) -> dict:
    """The summary.json document."""
    doc = {
        "schema": SCHEMA,
        "arch": arch_echo(result.arch),
        "model": result.model,
        "batch": result.batch,
        "phases": list(result.phases),
        "compat": result.compat,
        "layers": [layer.as_dict() for layer in result.layers()],
        "phase_totals": [p.as_dict() for p in result.phases_summary()],
        "total": totals(result),
        "area": area_block(result.arch) if area.has_area(result.arch) else None,
        "nodes": [node_dict(n) for n in result.nodes],
    }
    if fp32 is not None:
        doc["int8_vs_fp32"] = int8_vs_fp32(result, fp32)
        doc["fp32"] = {"arch": arch_echo(fp32.arch),
                       "total": totals(fp32) if area.has_area(result.arch) else fp32.total(),
                       "area": area_block(fp32.arch) if area.has_area(result.arch) else None,
                       "layers": [layer.as_dict() for layer in fp32.layers()]}
    return doc


def _si(x: float, unit: str) -> str:
    """1234567 -> '1.23 M<unit>'; below 1 (energies in joules) -> m, u, n, p prefixes."""
    if x == 0:
        return f"0 {unit}".strip()
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"),
                          (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {prefix}{unit}".strip() if scale != 1 or unit != "B" else f"{x:.0f} B"
    return f"{x:.2e} {unit}".strip()


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def peak_sentence(arch: dict, total: dict) -> str:
    """What a calibrated host's utilisation is of, when that is not its array's PEs, and which rows
    count a fused requantize's cycles ('' for neither)."""
    pes = arch["array"]["rows"] * arch["array"]["cols"]
    peak = total.get("peak_macs_per_cycle", pes)
    out = []
    if peak > pes:
        out.append(f"Utilisation is of {peak:,.1f} MACs per cycle, the fastest this calibrated host is measured at, "
                   f"not of its nominal {pes} PEs (one int8 dot product per lane per cycle at the clock /proc/cpuinfo "
                   "names): the cores run faster than that clock or issue more than one dot product a cycle.")
    if total.get("fused_gemms"):
        out.append(f"{total['fused_gemms']} conv GEMMs (forward and input gradient) run inside the requantize that "
                   "follows each (the C backend fuses them), so their rows' utilisation counts that requantize's "
                   "cycles, which the vector rows list.")
    return " ".join(out)


def markdown(doc: dict) -> str:
    """report.md from a summary document."""
    a, t = doc["arch"], doc["total"]
    utilisation_note = peak_sentence(a, t)
    lines = [
        f"# Simulation: {doc['model']} (batch {doc['batch']}) on {a['name']}",
        "",
        f"Array {a['array']['rows']}x{a['array']['cols']} {a['array']['dataflow']}, {a['clock_mhz']:g} MHz, "
        f"format {a['format']}; buffers " + ", ".join(f"{k} {v['bytes'] // 1024} KiB" for k, v in a["buffers"].items())
        + f"; DRAM {a['dram']['technology']} "
        + (f"{a['dram']['bandwidth_bytes_per_cycle']:.1f} B/cycle" if a["dram"]["bandwidth_bytes_per_cycle"]
           else "unbounded")
        + f"; phases {', '.join(doc['phases'])}" + (f"; compat {doc['compat']}" if doc["compat"] else "") + ".",
        "",
        "## Totals",
        "",
        "| cycles | time | MACs | utilisation | stall cycles | energy | DRAM read | DRAM write | DRAM spill "
        "| peak storage | activation stash |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {t['cycles']:,} | {t['seconds'] * 1e3:.3f} ms | {_si(t['macs'], '')} | {100 * t['utilization']:.1f} % "
        f"| {_pct(t['stall_cycles'], t['cycles'])} | {_si(t['energy_pj'] * 1e-12, 'J')} "
        f"| {_si(t['dram_read_bytes'], 'B')} | {_si(t['dram_write_bytes'], 'B')} | {_si(t['dram_spill_bytes'], 'B')} "
        f"| {_si(t['peak_storage_bytes'], 'B')} | {_si(t['activation_stash_bytes'], 'B')} |",
        "",
        *([utilisation_note, ""] if utilisation_note else []),
        "Energy by component: " + ", ".join(
            f"{c} {_pct(t['energy_by_component_pj'][c], t['energy_pj'])}" for c in COMPONENTS) + ".",
        "",
        *_area_lines(doc),
        "## By phase",
        "",
        "| phase | cycles | share of cycles | stall cycles | energy | share of energy | DRAM bytes |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in doc["phase_totals"]:
        lines.append(f"| {p['phase']} | {p['cycles']:,} | {_pct(p['cycles'], t['cycles'])} | {p['stall_cycles']:,} "
                     f"| {_si(p['energy_pj'] * 1e-12, 'J')} | {_pct(p['energy_pj'], t['energy_pj'])} "
                     f"| {_si(p['dram_read_bytes'] + p['dram_write_bytes'], 'B')} |")
    lines += ["", "## By layer and phase", "",
              "| layer | phase | MACs | cycles | stall | util | energy | DRAM read | DRAM write | spill |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = doc["layers"]
    if len(rows) > _MAX_LAYER_ROWS:
        # A deep graph (ResNet-50: about 300 rows) is read by its largest rows; summary.json has them all.
        kept = sorted(range(len(rows)), key=lambda i: (-rows[i]["cycles"], i))[:_SHOWN_LAYER_ROWS]
        lines[-2:-2] = [f"The {len(kept)} rows with the most cycles of {len(rows)}, largest first; the other "
                        f"{len(rows) - len(kept)} summed in the last row; every row: summary.json `layers`.", ""]
        rest = [r for i, r in enumerate(rows) if i not in set(kept)]
        rows = [rows[i] for i in kept]
    else:
        rest = []
    for r in rows:
        lines.append(f"| {r['name']} | {r['phase']} | {_si(r['macs'], '')} | {r['cycles']:,} | {r['stall_cycles']:,} "
                     f"| {100 * r['utilization']:.0f} % | {_si(r['energy_pj'] * 1e-12, 'J')} "
                     f"| {_si(r['dram_read_bytes'], 'B')} | {_si(r['dram_write_bytes'], 'B')} "
                     f"| {_si(r['dram_spill_bytes'], 'B')} |")
    if rest:
        total = {k: sum(r[k] for r in rest) for k in ("macs", "cycles", "stall_cycles", "energy_pj", "dram_read_bytes",
                                                      "dram_write_bytes", "dram_spill_bytes")}
        lines.append(f"| other {len(rest)} rows | - | {_si(total['macs'], '')} | {total['cycles']:,} "
                     f"| {total['stall_cycles']:,} | - | {_si(total['energy_pj'] * 1e-12, 'J')} "
                     f"| {_si(total['dram_read_bytes'], 'B')} | {_si(total['dram_write_bytes'], 'B')} "
                     f"| {_si(total['dram_spill_bytes'], 'B')} |")
    if "fp32" in doc:
        f = doc["fp32"]
        ft = f["total"]
        lines += ["", "## int8 (NITI) versus float32 on the same accelerator", "",
                  f"The float32 twin ({f['arch']['name']}) keeps every buffer and DRAM size in bytes, stores every "
                  "tensor as a 4-byte float, prices MACs as fp32 multiply + add and vector ops as fp32 adds, "
                  "and has no requantize (its GEMM outputs are the activations).", "",
                  "| | int8 | float32 | float32 / int8 |", "|---|---:|---:|---:|"]
        for label, key, unit in (("energy", "energy_pj", "J"), ("cycles", "cycles", ""),
                                 ("peak storage", "peak_storage_bytes", "B"),
                                 ("activation stash", "activation_stash_bytes", "B"),
                                 ("weights + state", "weight_bytes", "B")):
            scale = 1e-12 if key == "energy_pj" else 1
            ratio = ft[key] / t[key] if t[key] else float("nan")
            lines.append(f"| {label} | {_si(t[key] * scale, unit)} | {_si(ft[key] * scale, unit)} | {ratio:.2f} |")
        dram_i = t["dram_read_bytes"] + t["dram_write_bytes"]
        dram_f = ft["dram_read_bytes"] + ft["dram_write_bytes"]
        lines.append(f"| DRAM traffic | {_si(dram_i, 'B')} | {_si(dram_f, 'B')} | "
                     f"{dram_f / dram_i if dram_i else float('nan'):.2f} |")
        lines += _twin_area_lines(doc)
    lines += ["", "Energy is action counts x the energy table in summary.json (`arch.energy`, each entry with its "
              "source); area is instances x the area table (`arch.area`); see docs/hwmodel.md for what is and is "
              "not modelled.", ""]
    return "\n".join(lines)


def _mm2(x: float) -> str:
    return f"{x:.3f} mm^2" if x >= 0.1 else f"{x:.3g} mm^2"


def _area_lines(doc: dict) -> list[str]:
    """report.md's area section: instances x area per instance, by component, and figures of merit."""
    a, t = doc.get("area"), doc["total"]
    if not a:
        return []
    lines = [f"## Area ({a['node_nm']:g} nm)", "",
             "| component | instances | area each | area | share | source |", "|---|---:|---:|---:|---:|---|"]
    for name, i in a["instances"].items():
        mm2 = i["count"] * i["um2_each"] * 1e-6
        lines.append(f"| {i['component']} ({name}) | {i['count']:,} {i['unit']} | {i['um2_each']:,.0f} um^2 "
                     f"| {_mm2(mm2)} | {_pct(mm2, a['total_mm2'])} | {i['source']} |")
    lines += [f"| total | | | {_mm2(a['total_mm2'])} | 100 % | not counted: {a['not_modelled']} |", "",
              "| images/s | images/s per mm^2 | energy per image | EDP (energy x time per step) | EDAP (EDP x area) |",
              "|---:|---:|---:|---:|---:|",
              f"| {t['images_per_second']:,.1f} | {t['images_per_second_per_mm2']:,.2f} "
              f"| {_si(t['energy_per_image_pj'] * 1e-12, 'J')} | {t['edp_j_s']:.4g} J s "
              f"| {t['edap_j_s_mm2']:.4g} J s mm^2 |", ""]
    return lines


def _twin_area_lines(doc: dict) -> list[str]:
    """Area rows of the int8-versus-float32 table, and the MAC-array ratio with the table behind it."""
    c = doc.get("int8_vs_fp32", {})
    if "area_ratio" not in c:
        return []
    i8, f32 = c["int8"], c["fp32"]
    ia = doc["area"]["instances"]
    fa = doc["fp32"]["area"]["instances"]
    pe_i = next(v for v in ia.values() if v["component"] == "mac_array")
    pe_f = next(v for v in fa.values() if v["component"] == "mac_array")
    return [
        f"| area | {_mm2(i8['area_mm2'])} | {_mm2(f32['area_mm2'])} | {c['area_ratio']:.2f} |",
        f"| MAC array area | {_mm2(i8['mac_array_area_mm2'])} | {_mm2(f32['mac_array_area_mm2'])} "
        f"| {c['mac_array_area_ratio']:.2f} |",
        "",
        f"MAC array: one int8 PE is {pe_i['um2_each']:,.0f} um^2 ({pe_i['source']}); one float32 PE is "
        f"{pe_f['um2_each']:,.0f} um^2 ({pe_f['source']}): float32 / int8 = "
        f"{pe_f['um2_each'] / pe_i['um2_each']:.2f}.",
    ]


_TRACKS = ("nodes", "MAC array", "vector unit", "DRAM")


def chrome_trace(result: SimResult) -> dict:
    """Busy intervals as Chrome trace events ("X" complete events, timestamps in microseconds)."""
    if result.trace is None:
        raise ValueError("simulate(..., trace=True) keeps the intervals a trace needs")
    us_per_cycle = 1.0 / result.arch.clock_mhz
    events = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"{result.arch.name} / {result.model}"}}]
    events += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": track}}
               for i, track in enumerate(_TRACKS)]
    tid = {track: i for i, track in enumerate(_TRACKS)}
    for track, name, start, dur in result.trace:
        events.append({"name": name, "ph": "X", "pid": 1, "tid": tid[track], "ts": start * us_per_cycle,
                       "dur": dur * us_per_cycle, "args": {"start_cycle": start, "cycles": dur}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


def write_outputs(out_dir: str | Path, result: SimResult, fp32: SimResult | None = None) -> list[Path]:
    """Write summary.json, report.md and (when the result has a trace) trace.json into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = summary(result, fp32)
    paths = [out / "summary.json", out / "report.md"]
    paths[0].write_text(json.dumps(doc, indent=1) + "\n")
    paths[1].write_text(markdown(doc))
    if result.trace is not None:
        paths.append(out / "trace.json")
        paths[2].write_text(json.dumps(chrome_trace(result)))
    return paths

