"""Reading a simulation folder (`nitisim simulate` output) into frozen records, strictly.

summary.json (schema nitisim.simulate/1, written by hwmodels/report.py) holds `layers`: a list of
{name, phase, macs, cycles, compute_cycles, stall_cycles, energy_pj, sram_read_bytes,
sram_write_bytes, dram_read_bytes, dram_write_bytes, ...} with phase one of forward | input_grad |
weight_grad | update | vector; `total`: the same sums plus peak_storage_bytes and
energy_by_component_pj; `arch`: the accelerator as simulated (name, clock_mhz, ...); and `fp32`: the
same step on the accelerator's float32 twin (its `total` and ratios). Missing or mistyped required
fields are `UserInputError(path, field, problem)`; optional extras are read when present, and
checked: `total.area_by_component_mm2` (silicon area by component, with area_mm2, images/s per
mm^2, energy per image, EDP and EDAP among `total`'s numbers) and `area.node_nm`.

`nodes` (optional: one row per graph node, with op, layer and graph_phase) is read into
`Sim.nodes` grouped as the measured side groups a run's nodes (nitisim.contract.ops.report_phase):
a requantize with the GEMM it follows, since a backend that fuses a conv with its requantize (the
C backend) can only time the pair. The phase is taken from (op, graph_phase), not the row's own
`phase`, so summaries written before the simulator grouped requantize that way (it counted it as
vector work) are read the same.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..contract.errors import UserInputError
from ..contract.ops import OPS, REPORT_PHASES, report_phase
from ..contract.values import quote

COST_FIELDS: tuple[str, ...] = (
    "macs", "cycles", "compute_cycles", "stall_cycles", "energy_pj",
    "sram_read_bytes", "sram_write_bytes", "dram_read_bytes", "dram_write_bytes",
)


@dataclass(frozen=True)
class LayerCost:
    layer: str
    phase: str  # a REPORT_PHASES entry
    macs: int
    cycles: float
    compute_cycles: float
    stall_cycles: float
    energy_pj: float
    sram_read_bytes: float
    sram_write_bytes: float
    dram_read_bytes: float
    dram_write_bytes: float


@dataclass(frozen=True)
class Sim:
    path: Path
    name: str  # the accelerator config's name
    clock_hz: float | None
    model: str | None
    batch: int | None
    layers: tuple[LayerCost, ...]
    total: Mapping[str, float]  # every numeric field of `total` (cycles and energy_pj always present)
    energy_pj_by_component: Mapping[str, float]  # empty when the simulator gives no breakdown
    fp32_total: Mapping[str, float]  # numeric fields of the float32 twin's total; empty when absent
    fp32_name: str | None  # the float32 twin accelerator's name
    machine_model: bool = False  # a calibrated model of a real machine (arch.host): cycles predict seconds
    nodes: tuple[LayerCost, ...] = ()  # per graph node (views left out), phase as the join groups it; () if absent
    area_mm2_by_component: Mapping[str, float] = field(default_factory=dict)  # empty when no area is reported
    fp32_area_mm2_by_component: Mapping[str, float] = field(default_factory=dict)  # the float32 twin's
    node_nm: float | None = None  # technology node the energies and areas are priced at


def load_sim(path: str | Path) -> Sim:
    folder = Path(path)
    if not folder.is_dir():
        raise UserInputError(str(folder), None, "not a simulation folder (no such directory)")
    file = folder / "summary.json"
    src = str(file)
    if not file.exists():
        raise UserInputError(src, None, "missing (is this the output folder of `nitisim simulate`?)")
    try:
        doc = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(src, None, f"cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise UserInputError(src, f"line {err.lineno}", f"malformed JSON: {err.msg}") from None
    if not isinstance(doc, dict):
        raise UserInputError(src, None, "must be a JSON object")
    rows = doc.get("layers")
    if not isinstance(rows, list) or not rows:
        raise UserInputError(src, "layers", "must be a non-empty list of per-layer costs")
    layers = tuple(_layer(row, src, f"layers[{i}]") for i, row in enumerate(rows))
    total = doc.get("total")
    if not isinstance(total, dict):
        raise UserInputError(src, "total", "must be an object of summed costs")
    totals = _numeric_fields(total, src, "total")
    fp32 = doc.get("fp32")
    fp32_total = {}
    if fp32 is not None:
        if not isinstance(fp32, dict) or not isinstance(fp32.get("total"), dict):
            raise UserInputError(src, "fp32.total", "must be an object of summed costs")
        fp32_total = _numeric_fields(fp32["total"], src, "fp32.total")
    arch = _arch(doc)
    area = doc.get("area")
    if area is not None and not isinstance(area, dict):
        raise UserInputError(src, "area", "must be an object (or null)")
    return Sim(
        path=folder,
        name=str(arch.get("name") or doc.get("arch_name") or folder.name),
        clock_hz=_clock_hz(arch, doc),
        model=_model_name(doc),
        batch=doc.get("batch") if isinstance(doc.get("batch"), int) else None,
        layers=layers,
        total=totals,
        energy_pj_by_component=_components(doc, total),
        fp32_total=fp32_total,
        fp32_name=_fp32_name(fp32),
        machine_model=isinstance(arch.get("host"), dict),
        nodes=_nodes(doc.get("nodes"), src),
        area_mm2_by_component=_areas(total, src, "total"),
        fp32_area_mm2_by_component=_areas(fp32["total"], src, "fp32.total") if fp32 is not None else {},
        node_nm=_number(area, "node_nm", src, "area.node_nm") if area and "node_nm" in area else None,
    )


def _areas(total: Mapping, src: str, where: str) -> dict[str, float]:
    """`area_by_component_mm2`, each a non-negative finite number; {} when the simulation has none."""
    value = total.get("area_by_component_mm2")
    if value is None:
        return {}
    where = f"{where}.area_by_component_mm2"
    if not isinstance(value, dict):
        raise UserInputError(src, where, "must be an object of component -> mm^2")
    return {str(k): _number(value, k, src, f"{where}.{k}") for k in value}


def _nodes(rows: Any, src: str) -> tuple[LayerCost, ...]:
    """The per-node rows, each under (layer, report_phase(op, graph_phase)); views (free) left out."""
    if rows is None:
        return ()
    if not isinstance(rows, list):
        raise UserInputError(src, "nodes", "must be a list of per-node costs")
    out = []
    for i, row in enumerate(rows):
        where = f"nodes[{i}]"
        if not isinstance(row, dict):
            raise UserInputError(src, where, "must be an object")
        for key in ("op", "layer", "graph_phase"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise UserInputError(src, f"{where}.{key}", "missing or not a string")
        if row["op"] not in OPS:
            raise UserInputError(src, f"{where}.op", f"unknown op {quote(row['op'])}; known: {', '.join(OPS)}")
        if row.get("kind") == "view":
            continue
        out.append(LayerCost(layer=row["layer"], phase=report_phase(row["op"], row["graph_phase"]),
                             **_costs(row, src, where)))
    return tuple(out)


def _fp32_name(fp32: Any) -> str | None:
    """The float32 twin's accelerator name: `fp32.arch` is its config echo (or, older, the bare name)."""
    arch = fp32.get("arch") if isinstance(fp32, dict) else None
    if isinstance(arch, dict):
        arch = arch.get("name")
    return arch if isinstance(arch, str) else None


def _numeric_fields(total: Mapping, src: str, where: str) -> dict[str, float]:
    """The non-negative numbers of a totals object (nested breakdowns skipped); cycles and energy required."""
    for key in ("cycles", "energy_pj"):
        if key not in total:
            raise UserInputError(src, f"{where}.{key}", "missing required field")
    return {k: _number(total, k, src, f"{where}.{k}") for k, v in total.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) or k in COST_FIELDS}


def _layer(row: Any, src: str, where: str) -> LayerCost:
    if not isinstance(row, dict):
        raise UserInputError(src, where, "must be an object")
    name = row.get("name", row.get("layer"))
    if not isinstance(name, str) or not name:
        raise UserInputError(src, f"{where}.name", "missing or not a string")
    phase = row.get("phase")
    if phase not in REPORT_PHASES:
        raise UserInputError(src, f"{where}.phase", f"must be one of {', '.join(REPORT_PHASES)}, got {quote(phase)}")
    return LayerCost(layer=name, phase=phase, **_costs(row, src, where))


def _costs(row: Mapping, src: str, where: str) -> dict[str, float]:
    """The COST_FIELDS of a layer or node row, each checked (macs as an integer)."""
    values = {k: _number(row, k, src, f"{where}.{k}") for k in COST_FIELDS}
    values["macs"] = int(values["macs"])
    return values


def _number(doc: Mapping, key: str, src: str, where: str) -> float:
    if key not in doc:
        raise UserInputError(src, where, "missing required field")
    value = doc[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise UserInputError(src, where, f"must be a non-negative number, got {value!r:.60}")
    return value


def _arch(doc: Mapping) -> Mapping:
    for key in ("arch", "accelerator", "config"):
        if isinstance(doc.get(key), dict):
            return doc[key]
    return {}


def _clock_hz(arch: Mapping, doc: Mapping) -> float | None:
    for where in (arch, doc):
        if isinstance(where.get("clock_hz"), (int, float)):
            return float(where["clock_hz"])
        if isinstance(where.get("clock_mhz"), (int, float)):
            return float(where["clock_mhz"]) * 1e6
        if isinstance(where.get("clock_ghz"), (int, float)):
            return float(where["clock_ghz"]) * 1e9
    return None


def _model_name(doc: Mapping) -> str | None:
    model = doc.get("model")
    if isinstance(model, str):
        return model
    if isinstance(model, dict) and isinstance(model.get("name"), str):
        return model["name"]
    return None


def _components(doc: Mapping, total: Mapping) -> Mapping[str, float]:
    for where in (total, doc):
        for key in ("energy_pj_by_component", "energy_by_component_pj", "energy_breakdown_pj"):
            value = where.get(key)
            if isinstance(value, dict):
                return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
    return {}
