"""`nitisim sweep GRID.yaml`: run a design-space sweep (hwmodels/sweep.py) and write its results.

Points run in local worker processes (ProcessPoolExecutor, --workers N, default one per core; 1 runs
in this process), or on a Dask distributed cluster with --scheduler ADDRESS (the workers must be able
to import nitisim and hwmodels). Writes sweep.csv, sweep.json and pareto.png / pareto.svg (energy
against latency per step, area as colour, the Pareto front marked) into --out.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Callable

from hwmodels.sweep import Grid, PointTask, expand, load_grid, mark_pareto, objectives, run_point

from .contract.errors import UserInputError
from .contract.values import finite_number, quote


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
        from .report import plots

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
