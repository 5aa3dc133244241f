"""A design-space sweep over accelerator parameters for one model: the grid, its points, their front.

GRID.yaml names a base accelerator config, a model and a batch, and lists values per parameter:

    name: lenet-edge                 # optional, defaults to the file stem
    base: edge-16x16                 # shipped accelerator name, or a YAML path relative to this file
    model: lenet                     # built-in model name, or a model YAML path relative to this file
    batch: 64
    max_area_mm2: 2.5                # optional: a point with more silicon area is infeasible
    parameters:                      # each a non-empty list; the sweep is their cartesian product
      array: [8x8, 16x16, [32, 16]]  # rows x cols ("RxC" or [R, C]); or rows: [...] and cols: [...]
      dataflow: [ws, os, is]
      sram_kib: [32, 128]            # all three buffers; or ifmap_kib / filter_kib / ofmap_kib
      dram_bandwidth_bytes_per_cycle: [8, 32]   # or dram_bandwidth_gb_s
      clock_mhz: [500]
      vector_lanes: [16, 64]
      node_nm: [45, 28]              # technology node (7-130 nm; hwmodels/scaling.py)

Each design point is the base YAML document with the swept keys replaced, read by the simulator's
own strict loader (hwmodels.config.parse_accelerator): every point is validated like a hand-written
config, and SRAM energies and areas follow the new sizes. A combination the loader or the tiler
rejects (an array too large for its buffers), or whose area exceeds max_area_mm2 (not simulated),
is a result marked infeasible with the reason, not a crash.

The Pareto front is over latency (seconds per step: clocks may differ), energy per step and silicon
area (`pareto`); `pareto_latency_energy` marks the front without area, as the sweep had before
area was modelled, so the two can be compared.

The command that runs the points (local processes or a Dask cluster) and writes sweep.csv,
sweep.json and the Pareto plot is nitisim/sweep_cli.py; this module is pure evaluation, so a
Dask worker needs only hwmodels and the contract floor of nitisim.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from nitisim.contract.config_reader import Fields, choice, load_document, positive_int, positive_number, read_yaml
from nitisim.contract.errors import UserInputError
from nitisim.contract.models import ModelSpec, model_reference, resolve_model
from nitisim.contract.shipped import find_shipped
from nitisim.contract.values import path_exists, quote

from .area import has_area, node_problem, total_mm2
from .pareto import pareto_front_nd
from .spec import DATAFLOWS

MAX_POINTS = 4096  # a typo like `sram_kib: [1..4096]` should not start a week of simulation
BUFFERS = ("ifmap", "filter", "ofmap")
PARAMETERS = (
    "array", "rows", "cols", "dataflow", "sram_kib", "ifmap_kib", "filter_kib", "ofmap_kib",
    "dram_bandwidth_bytes_per_cycle", "dram_bandwidth_gb_s", "clock_mhz", "vector_lanes", "node_nm",
)
# Keys that set the same thing and so cannot be swept together.
_EXCLUSIVE = (
    ("array", "rows"), ("array", "cols"), ("sram_kib", "ifmap_kib"), ("sram_kib", "filter_kib"),
    ("sram_kib", "ofmap_kib"), ("dram_bandwidth_bytes_per_cycle", "dram_bandwidth_gb_s"),
)
RESULT_FIELDS = (
    "cycles", "compute_cycles", "stall_cycles", "energy_pj", "dram_read_bytes", "dram_write_bytes",
    "peak_storage_bytes", "seconds_per_step", "energy_per_image_pj", "images_per_second_per_mm2", "edp_j_s",
    "edap_j_s_mm2",
)
# The objectives of the Pareto front, all minimised; area drops out for a machine-model base (no area).
OBJECTIVES = ("seconds_per_step", "energy_pj", "area_mm2")


@dataclass(frozen=True)
class Grid:
    source: str
    name: str
    base_path: str  # the base accelerator YAML
    base_doc_json: str  # its parsed document, as JSON (immutable; every point starts from a copy)
    model: ModelSpec
    model_ref: str
    batch: int
    parameters: tuple[tuple[str, tuple[Any, ...]], ...]  # in the grid file's order
    max_area_mm2: float | None = None  # points with more area are infeasible (not simulated)

    @property
    def size(self) -> int:
        return math.prod(len(values) for _, values in self.parameters)


@dataclass(frozen=True)
class PointTask:
    """One design point, everything a worker process needs (picklable, no open files)."""

    index: int
    label: str
    values: tuple[tuple[str, Any], ...]  # swept parameter -> value
    doc_json: str  # the accelerator YAML document of this point
    source: str  # for messages: "<grid file> point <index>"
    model: ModelSpec
    batch: int
    max_area_mm2: float | None = None


# ------------------------------------------------------------------------------------------------
# The grid file
# ------------------------------------------------------------------------------------------------
def _array_value(v: Any, src: str, where: str) -> tuple[int, int]:
    if isinstance(v, str):
        parts = v.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            v = [int(p) for p in parts]
    if not (isinstance(v, list) and len(v) == 2):
        raise UserInputError(src, where, f"must be \"ROWSxCOLS\" or [ROWS, COLS], got {quote(v)}")
    return (positive_int(v[0], src, where), positive_int(v[1], src, where))


def _node_value(v: Any, src: str, where: str) -> float:
    problem = node_problem(v)
    if problem:
        raise UserInputError(src, where, problem)
    return v


def _dataflow_value(v: Any, src: str, where: str) -> str:
    return choice(v, src, where, DATAFLOWS)


_CHECKS: Mapping[str, Callable[[Any, str, str], Any]] = MappingProxyType({
    "array": _array_value, "rows": positive_int, "cols": positive_int, "dataflow": _dataflow_value,
    "sram_kib": positive_int, "ifmap_kib": positive_int, "filter_kib": positive_int, "ofmap_kib": positive_int,
    "dram_bandwidth_bytes_per_cycle": positive_number, "dram_bandwidth_gb_s": positive_number,
    "clock_mhz": positive_number, "vector_lanes": positive_int, "node_nm": _node_value,
})


def parse_grid(doc: Any, src: str) -> Grid:
    """Check a parsed grid document strictly; every problem names the grid file and the key."""
    from .config import parse_accelerator, shipped_accelerators

    f = Fields(src, doc, what="a sweep grid must be a mapping with base, model, batch and parameters")
    f.keys(("base", "model", "batch", "parameters"), ("name", "max_area_mm2"))
    name = f.str("name", default=Path(src).stem)

    base = f.get("base")
    if not isinstance(base, str) or not base:
        raise f.error("base", f"must be a shipped accelerator name or a YAML path, got {quote(base)}")
    base_path = find_shipped("accelerators", base, src)
    if base_path is None or not path_exists(base_path):
        raise f.error("base", f"{quote(base)} is neither a YAML file nor a shipped accelerator "
                      f"({', '.join(shipped_accelerators())})")
    base_doc = load_document(base_path)
    parse_accelerator(base_doc, str(base_path))  # the base must be valid on its own

    model_ref = model_reference(f.get("model"), src)  # as a worker or sweep.json can read it from anywhere
    model = resolve_model(f.get("model"), src)
    batch = f.positive_int("batch")
    max_area = f.positive_number("max_area_mm2") if f.has("max_area_mm2") else None

    if not isinstance(f.get("parameters"), dict) or not f.get("parameters"):
        raise f.error("parameters", f"must be a non-empty mapping of parameter -> list of values; "
                      f"parameters: {', '.join(PARAMETERS)}")
    params = f.sub("parameters")
    swept = []
    for key in params.doc:
        where = params.path(key)
        if key not in _CHECKS:
            raise params.error(key, f"unknown parameter; expected one of {', '.join(PARAMETERS)}")
        values = params.items(key, what="must be a non-empty list of values")
        checked = tuple(_CHECKS[key](v, src, w) for w, v in values)
        if len(set(checked)) != len(checked):
            raise UserInputError(src, where, "lists a value twice")
        swept.append((key, checked))
    keys = {k for k, _ in swept}
    for a, b in _EXCLUSIVE:
        if a in keys and b in keys:
            raise params.error(b, f"cannot be swept together with {a} (both set the same thing)")
    grid = Grid(src, name, str(base_path), json.dumps(base_doc), model, model_ref, batch, tuple(swept), max_area)
    if grid.size > MAX_POINTS:
        raise f.error("parameters", f"{grid.size} design points; at most {MAX_POINTS} per sweep")
    return grid


def load_grid(path: str | Path) -> Grid:
    return read_yaml(path, parse_grid)


# ------------------------------------------------------------------------------------------------
# Expansion
# ------------------------------------------------------------------------------------------------
def _set_buffer_kib(doc: dict, name: str, kib: int) -> None:
    buf = doc["buffers"][name]
    buf.pop("bytes", None)
    buf["kib"] = kib


def apply(doc: dict, key: str, value: Any) -> None:
    """Set one swept parameter in an accelerator YAML document (in place, on a copy)."""
    if key == "array":
        doc["array"]["rows"], doc["array"]["cols"] = value
    elif key in ("rows", "cols", "dataflow"):
        doc["array"][key] = value
    elif key == "sram_kib":
        for name in BUFFERS:
            _set_buffer_kib(doc, name, value)
    elif key.endswith("_kib"):
        _set_buffer_kib(doc, key[: -len("_kib")], value)
    elif key.startswith("dram_bandwidth_"):
        doc["dram"].pop("bandwidth_bytes_per_cycle", None)
        doc["dram"].pop("bandwidth_gb_s", None)
        doc["dram"][key[len("dram_"):]] = value
    elif key == "clock_mhz":
        doc["clock_mhz"] = value
    elif key == "vector_lanes":
        doc["vector"]["lanes"] = value
    elif key == "node_nm":
        doc["node_nm"] = value
    else:  # pragma: no cover - parse_grid admits only the keys above
        raise KeyError(key)


def _short(key: str, value: Any) -> str:
    if key == "array":
        return f"{value[0]}x{value[1]}"
    names = {"rows": "r", "cols": "c", "sram_kib": "sram", "ifmap_kib": "if", "filter_kib": "fi",
             "ofmap_kib": "of", "dram_bandwidth_bytes_per_cycle": "bw", "dram_bandwidth_gb_s": "gbs",
             "clock_mhz": "mhz", "vector_lanes": "lanes", "node_nm": "nm"}
    return str(value) if key == "dataflow" else f"{names[key]}{value:g}" if isinstance(value, float) else f"{names[key]}{value}"


def expand(grid: Grid) -> list[PointTask]:
    """The cartesian product of the swept values, as one task per design point."""
    keys = [k for k, _ in grid.parameters]
    base = json.loads(grid.base_doc_json)
    tasks = []
    for index, combo in enumerate(itertools.product(*(values for _, values in grid.parameters))):
        doc = copy.deepcopy(base)
        for key, value in zip(keys, combo):
            apply(doc, key, value)
        label = " ".join(_short(k, v) for k, v in zip(keys, combo))
        doc["name"] = f"{base.get('name', Path(grid.base_path).stem)} {label}"
        tasks.append(PointTask(index, label, tuple(zip(keys, combo)), json.dumps(doc),
                               f"{grid.source} point {index} ({label})", grid.model, grid.batch, grid.max_area_mm2))
    return tasks


# ------------------------------------------------------------------------------------------------
# One point (runs in a worker process or on a Dask worker)
# ------------------------------------------------------------------------------------------------
def run_point(task: PointTask) -> dict[str, Any]:
    """Simulate one design point; an infeasible one comes back with status and reason, not raised."""
    from .config import parse_accelerator

    row: dict[str, Any] = {"index": task.index, "label": task.label, **_flat_values(task.values)}
    try:
        arch = parse_accelerator(json.loads(task.doc_json), task.source)
    except UserInputError as err:
        return {**_infeasible(row, _reason(err)), "area_mm2": None}
    row["area_mm2"] = total_mm2(arch) if has_area(arch) else None
    if task.max_area_mm2 is not None and row["area_mm2"] is not None and row["area_mm2"] > task.max_area_mm2:
        return _infeasible(row, f"max_area_mm2: area {row['area_mm2']:.4g} mm^2 exceeds the cap of "
                                f"{task.max_area_mm2:g} mm^2")
    try:
        totals = _simulate_totals(arch, task.model, task.batch)
    except UserInputError as err:
        return _infeasible(row, _reason(err))
    return {**row, "status": "ok", "reason": "", **totals}


def _reason(err: UserInputError) -> str:
    return err.message if err.field is None else f"{err.field}: {err.message}"


def _infeasible(row: dict[str, Any], reason: str) -> dict[str, Any]:
    """`row` marked infeasible: the reason, and every result field empty."""
    return {**row, "status": "infeasible", "reason": reason, **{k: None for k in RESULT_FIELDS}}


def _flat_values(values: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in values:
        if key == "array":
            out["rows"], out["cols"] = value
        else:
            out[key] = value
    return out


def _simulate_totals(arch, model: ModelSpec, batch: int) -> dict[str, Any]:
    """Per-step totals of one training step of `model` on `arch`, from the simulator's Python API."""
    from nitisim.contract.graph import build_graph

    from . import simulate  # the simulator's public API
    from .report import totals

    result = simulate(arch, build_graph(model, batch))
    total = totals(result)
    return {
        "cycles": result.cycles,
        "compute_cycles": total["compute_cycles"],
        "stall_cycles": total["stall_cycles"],
        "energy_pj": result.energy_pj,
        "dram_read_bytes": total["dram_read_bytes"],
        "dram_write_bytes": total["dram_write_bytes"],
        "peak_storage_bytes": result.peak_storage_bytes,
        "seconds_per_step": result.seconds,
        **{k: total.get(k) for k in ("energy_per_image_pj", "images_per_second_per_mm2", "edp_j_s", "edap_j_s_mm2")},
    }


# ------------------------------------------------------------------------------------------------
# Running all points
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------
def objectives(results: list[dict]) -> tuple[str, ...]:
    """OBJECTIVES, less area when a feasible point has none (a machine-model base)."""
    ok = [r for r in results if r["status"] == "ok"]
    return OBJECTIVES if all(r.get("area_mm2") is not None for r in ok) else OBJECTIVES[:2]


def mark_pareto(results: list[dict]) -> list[dict]:
    """Add `pareto` (bool): on the front of (latency, energy, area) among the feasible points; and
    `pareto_latency_energy`: on the front of latency and energy alone."""
    ok = [r for r in results if r["status"] == "ok"]
    keys = objectives(results)
    front = {ok[i]["index"] for i in pareto_front_nd([tuple(r[k] for k in keys) for r in ok])}
    front_2d = {ok[i]["index"] for i in pareto_front_nd([tuple(r[k] for k in OBJECTIVES[:2]) for r in ok])}
    return [{**r, "pareto": r["index"] in front, "pareto_latency_energy": r["index"] in front_2d} for r in results]


