"""`nitisim sweep GRID.yaml`: a design-space sweep over accelerator parameters for one model.

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

Points run in local worker processes (ProcessPoolExecutor, --workers N, default one per core; 1 runs
in this process), or on a Dask distributed cluster with --scheduler ADDRESS (the workers must be able
to import nitisim and hwmodels). Writes sweep.csv, sweep.json and pareto.png / pareto.svg (energy
against latency per step, area as colour, the Pareto front marked) into --out.
"""
from __future__ import annotations

import argparse
import copy
import csv
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

from nitisim.errors import UserInputError
from nitisim.models import ModelSpec, builtin_models, load_yaml, resolve_model
from nitisim.values import finite_number, path_exists, quote

from .area import has_area, node_problem, total_mm2
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
    from nitisim.graph import build_graph

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
def run_local(tasks: list[PointTask], workers: int, progress: Callable[[int, int], None]) -> list[dict]:
    """Worker processes (spawned, so no state is inherited from the caller); workers=1 runs inline."""
    if workers == 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(run_point(task))
            progress(len(results), len(tasks))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    results = []
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in as_completed([pool.submit(run_point, t) for t in tasks]):
            results.append(future.result())
            progress(len(results), len(tasks))
    return sorted(results, key=lambda r: r["index"])


SCHEDULER_TIMEOUT_S = 10.0  # connect + handshake; a live scheduler on a LAN answers in milliseconds
_EXPECTED = "expected a Dask scheduler's comm port (tcp://HOST:8786 by default, not the 8787 dashboard)"


def _refuse(address: str, problem: str) -> UserInputError:
    return UserInputError("--scheduler", address, f"{problem}; {_EXPECTED}")


def _tcp_reachable(address: str, timeout_s: float) -> None:
    """Fail at once on a refused or unresolvable TCP address (Dask itself retries those until its timeout)."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, loc = parse_address(address)
        if scheme not in ("tcp", "tls"):
            return  # inproc/ucx/ws: only Dask's own connect knows how to reach them
        host, port = parse_host_port(loc)
    except (ValueError, TypeError) as err:
        raise _refuse(address, f"not a scheduler address ({err})") from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except ConnectionRefusedError:
        raise _refuse(address, "connection refused (nothing listens there)") from None
    except socket.gaierror as err:
        raise _refuse(address, f"cannot resolve host {quote(host)} ({err.strerror})") from None
    except (OSError, TimeoutError) as err:
        raise _refuse(address, f"cannot connect within {timeout_s:g} s ({err})") from None


async def _identity(address: str, timeout_s: float) -> dict:
    """Dask's handshake plus the `identity` RPC; Dask's own connect waits on the handshake forever."""
    from distributed.comm import connect

    comm = await connect(address, timeout=timeout_s)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def check_scheduler(address: str, timeout_s: float = SCHEDULER_TIMEOUT_S) -> None:
    """Raise a one-line UserInputError unless a Dask scheduler answers at `address` within `timeout_s`.

    A service that is not a Dask scheduler (an HTTP server, the dashboard port, a listener that
    accepts and never speaks) would otherwise hang the sweep: distributed's `connect` bounds the TCP
    connect but not the handshake read that follows it.
    """
    import asyncio

    _tcp_reachable(address, timeout_s)
    try:
        reply = asyncio.run(asyncio.wait_for(_identity(address, timeout_s), timeout_s))
    except (asyncio.TimeoutError, TimeoutError):
        raise _refuse(address, f"no Dask handshake within {timeout_s:g} s") from None
    except ValueError as err:  # not an address Dask can parse
        raise _refuse(address, f"not a scheduler address ({err})") from None
    except Exception as err:  # noqa: BLE001 - whatever a foreign protocol makes Dask's decoder raise
        raise _refuse(address, f"the service there does not speak Dask's protocol "
                      f"({type(err).__name__}: {err})") from None
    kind = reply.get("type") if isinstance(reply, dict) else None
    if kind != "Scheduler":
        raise _refuse(address, f"a Dask {kind or 'peer'} answered, not a scheduler")


def run_dask(tasks: list[PointTask], address: str, progress: Callable[[int, int], None],
             timeout_s: float = SCHEDULER_TIMEOUT_S) -> list[dict]:
    """The points as Dask futures on the cluster whose scheduler is at `address`."""
    from dask.distributed import Client, as_completed

    check_scheduler(address, timeout_s)
    try:
        client = Client(address, timeout=timeout_s)
    except (OSError, TimeoutError, ValueError) as err:  # went away between the check and the connect
        raise _refuse(address, f"cannot connect to a Dask scheduler: {err}") from None
    with client:
        futures = client.map(run_point, tasks, pure=False)
        results = []
        for future in as_completed(futures):
            results.append(future.result())
            progress(len(results), len(tasks))
    return sorted(results, key=lambda r: r["index"])


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
    from nitisim.report.stats import pareto_front_nd

    ok = [r for r in results if r["status"] == "ok"]
    keys = objectives(results)
    front = {ok[i]["index"] for i in pareto_front_nd([tuple(r[k] for k in keys) for r in ok])}
    front_2d = {ok[i]["index"] for i in pareto_front_nd([tuple(r[k] for k in OBJECTIVES[:2]) for r in ok])}
    return [{**r, "pareto": r["index"] in front, "pareto_latency_energy": r["index"] in front_2d} for r in results]


def write_outputs(grid: Grid, results: list[dict], out: Path, backend: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    columns = ["index", "label"]
    for r in results:
        columns += [k for k in r if k not in columns]
    with open(out / "sweep.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(results)
    doc = {
        "grid": {"source": grid.source, "name": grid.name, "base": grid.base_path, "model": grid.model_ref,
                 "batch": grid.batch, "parameters": {k: list(v) for k, v in grid.parameters}},
        "executor": backend,
        "points": results,
    }
    (out / "sweep.json").write_text(json.dumps(doc, indent=2) + "\n")
    files = {"csv": out / "sweep.csv", "json": out / "sweep.json"}
    ok = [r for r in results if r["status"] == "ok"]
    if ok:
        from nitisim.report import plots

        front = sorted((i for i, r in enumerate(ok) if r["pareto"]),
                       key=lambda i: (ok[i]["seconds_per_step"], ok[i]["energy_pj"]))
        areas = [r["area_mm2"] for r in ok] if "area_mm2" in objectives(results) else None
        capped = sum(1 for r in results if r["reason"].startswith("max_area_mm2"))
        title = (f"{grid.name}: {grid.model.name}, batch {grid.batch}, {len(ok)} design points"
                 + (f" ({capped} over {grid.max_area_mm2:g} mm^2)" if capped else ""))
        fig = plots.pareto([r["seconds_per_step"] for r in ok], [r["energy_pj"] for r in ok], front,
                           [r["label"] for r in ok], title, area_mm2=areas)
        for suffix in ("png", "svg"):
            plots.save(fig, out / f"pareto.{suffix}", salt=f"pareto-{grid.name}")
            files[suffix] = out / f"pareto.{suffix}"
    return files


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("grid", metavar="GRID.yaml", help="sweep grid (see configs/sweeps/example.yaml)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on the Dask distributed cluster at ADDRESS (e.g. tcp://host:8786)")
    parser.add_argument("--scheduler-timeout", type=float, default=SCHEDULER_TIMEOUT_S, metavar="SECONDS",
                        help=f"give up if no Dask scheduler answers within SECONDS (default {SCHEDULER_TIMEOUT_S:g})")
    parser.add_argument("--workers", type=int, help="local worker processes (default: one per core; 1 = inline)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default nitisim-out/sweep-<grid name>)")


def main(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise UserInputError("--workers", None, f"must be a positive integer, got {args.workers}")
    if args.workers is not None and args.scheduler:
        raise UserInputError("--workers", None, "sets local processes; with --scheduler the cluster has its own")
    if not finite_number(args.scheduler_timeout) or not args.scheduler_timeout > 0:
        raise UserInputError("--scheduler-timeout", None, f"must be a positive number of seconds, got {args.scheduler_timeout}")
    grid = load_grid(args.grid)
    tasks = expand(grid)
    out = Path(args.out) if args.out else Path("nitisim-out") / f"sweep-{grid.name}"

    live = sys.stderr.isatty()  # a terminal gets one updating line; a log gets a line per tenth

    def progress(done: int, total: int) -> None:
        if live:
            print(f"\rnitisim sweep: {done}/{total} design points", end="" if done < total else "\n",
                  file=sys.stderr, flush=True)
        elif done == total or done % max(1, total // 10) == 0:
            print(f"nitisim sweep: {done}/{total} design points", file=sys.stderr, flush=True)

    if args.scheduler:
        executor = f"dask {args.scheduler}"
        results = run_dask(tasks, args.scheduler, progress, args.scheduler_timeout)
    else:
        workers = args.workers or os.cpu_count() or 1
        executor = f"local, {min(workers, len(tasks))} process(es)"
        results = run_local(tasks, workers, progress)
    results = mark_pareto(results)
    files = write_outputs(grid, results, out, executor)
    ok = [r for r in results if r["status"] == "ok"]
    keys = objectives(results)
    print(f"{len(ok)} of {len(results)} design points feasible; Pareto front over {', '.join(keys)} "
          f"({sum(r['pareto'] for r in ok)} points; {sum(r['pareto_latency_energy'] for r in ok)} without area):")
    for r in sorted((r for r in ok if r["pareto"]), key=lambda r: r["seconds_per_step"]):
        area = f" {r['area_mm2']:>9,.3f} mm^2" if r.get("area_mm2") is not None else ""
        print(f"  {r['label']:<32} {r['cycles']:>14,.0f} cycles {r['seconds_per_step'] * 1e3:>10,.3f} ms "
              f"{r['energy_pj'] / 1e6:>12,.2f} uJ{area}")
    print(files["csv"])
    return 0
