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

from nitisim.contract.errors import UserInputError
from nitisim.contract.models import ModelSpec, builtin_models, load_yaml, resolve_model
from nitisim.contract.values import finite_number, path_exists, quote

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
def _fail(src: str, key: str | None, problem: str) -> UserInputError:
    return UserInputError(src, key, problem)


def _int_value(v: Any, src: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _fail(src, where, f"must be a positive integer, got {quote(v)}")
    return v


def _number_value(v: Any, src: str, where: str) -> float:
    if not finite_number(v) or not v > 0:
        raise _fail(src, where, f"must be a positive number, got {quote(v)}")
    return v


def _array_value(v: Any, src: str, where: str) -> tuple[int, int]:
    if isinstance(v, str):
        parts = v.lower().split("x")
        if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
            v = [int(p) for p in parts]
    if not (isinstance(v, list) and len(v) == 2):
        raise _fail(src, where, f"must be \"ROWSxCOLS\" or [ROWS, COLS], got {quote(v)}")
    return (_int_value(v[0], src, where), _int_value(v[1], src, where))


def _node_value(v: Any, src: str, where: str) -> float:
    problem = node_problem(v)
    if problem:
        raise _fail(src, where, problem)
    return v


def _dataflow_value(v: Any, src: str, where: str) -> str:
    if v not in DATAFLOWS:
        raise _fail(src, where, f"must be one of {list(DATAFLOWS)}, got {quote(v)}")
    return v


_CHECKS: Mapping[str, Callable[[Any, str, str], Any]] = MappingProxyType({
    "array": _array_value, "rows": _int_value, "cols": _int_value, "dataflow": _dataflow_value,
    "sram_kib": _int_value, "ifmap_kib": _int_value, "filter_kib": _int_value, "ofmap_kib": _int_value,
    "dram_bandwidth_bytes_per_cycle": _number_value, "dram_bandwidth_gb_s": _number_value,
    "clock_mhz": _number_value, "vector_lanes": _int_value, "node_nm": _node_value,
})


def _relative(ref: str, grid_path: Path) -> Path:
    path = Path(ref)
    return path if path.is_absolute() else grid_path.parent / path


def parse_grid(doc: Any, src: str) -> Grid:
    """Check a parsed grid document strictly; every problem names the grid file and the key."""
    from .config import CONFIG_DIR, parse_accelerator

    if not isinstance(doc, dict):
        raise _fail(src, None, "a sweep grid must be a mapping with base, model, batch and parameters")
    allowed = {"name", "base", "model", "batch", "parameters", "max_area_mm2"}
    for key in doc:
        if key not in allowed:
            raise _fail(src, str(key), f"unknown key; expected one of {sorted(allowed)}")
    for key in ("base", "model", "batch", "parameters"):
        if key not in doc:
            raise _fail(src, key, "missing required key")
    name = doc.get("name", Path(src).stem)
    if not isinstance(name, str) or not name:
        raise _fail(src, "name", f"must be a non-empty string, got {quote(name)}")
    grid_path = Path(src)

    base = doc["base"]
    if not isinstance(base, str) or not base:
        raise _fail(src, "base", f"must be a shipped accelerator name or a YAML path, got {quote(base)}")
    base_path = _relative(base, grid_path)
    if not (base_path.suffix in (".yaml", ".yml") or path_exists(base_path)):
        base_path = Path(CONFIG_DIR) / f"{base}.yaml"
    if not path_exists(base_path):
        raise _fail(src, "base", f"{quote(base)} is neither a YAML file nor a shipped accelerator in {CONFIG_DIR}")
    base_doc = load_yaml(base_path)
    parse_accelerator(base_doc, str(base_path))  # the base must be valid on its own

    model_ref = doc["model"]
    if not isinstance(model_ref, str) or not model_ref:
        raise _fail(src, "model", f"must be a built-in model name or a model YAML path, got {quote(model_ref)}")
    if model_ref not in builtin_models():
        model_ref = str(_relative(model_ref, grid_path))
    model = resolve_model(model_ref)
    batch = _int_value(doc["batch"], src, "batch")
    max_area = _number_value(doc["max_area_mm2"], src, "max_area_mm2") if "max_area_mm2" in doc else None

    params = doc["parameters"]
    if not isinstance(params, dict) or not params:
        raise _fail(src, "parameters", f"must be a non-empty mapping of parameter -> list of values; "
                    f"parameters: {', '.join(PARAMETERS)}")
    swept = []
    for key, values in params.items():
        where = f"parameters.{key}"
        if key not in _CHECKS:
            raise _fail(src, where, f"unknown parameter; expected one of {', '.join(PARAMETERS)}")
        if not isinstance(values, list) or not values:
            raise _fail(src, where, "must be a non-empty list of values")
        checked = tuple(_CHECKS[key](v, src, f"{where}[{i}]") for i, v in enumerate(values))
        if len(set(checked)) != len(checked):
            raise _fail(src, where, "lists a value twice")
        swept.append((key, checked))
    keys = {k for k, _ in swept}
    for a, b in _EXCLUSIVE:
        if a in keys and b in keys:
            raise _fail(src, f"parameters.{b}", f"cannot be swept together with {a} (both set the same thing)")
    grid = Grid(src, name, str(base_path), json.dumps(base_doc), model, model_ref, batch, tuple(swept), max_area)
    if grid.size > MAX_POINTS:
        raise _fail(src, "parameters", f"{grid.size} design points; at most {MAX_POINTS} per sweep")
    return grid


def load_grid(path: str | Path) -> Grid:
    return parse_grid(load_yaml(path), str(path))


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


