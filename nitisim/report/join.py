"""The join: measured seconds and simulated cycles per (layer, phase), storage, and their agreement.

Pure functions over the loaded records (runs.Run, sims.Sim); nothing here reads files or plots.

Measured time: timing.json's lower-quartile call of each graph node (one call per training step;
the median or the mean, seconds / calls, for runs written before quartiles or medians were kept),
summed by (layer, report_phase(op, graph phase)), so it is seconds per step and groups work
exactly as the simulator's report phases do (one answer, the op row's: a requantize counts with
the GEMM it follows; view ops, free on the accelerator, are left out). Simulated cost: the sim's per-node rows
summed by the same (layer, phase) (its per-layer rows for a sim without node rows). Agreement is
computed over the (layer, phase) points both sides have.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from ..contract.ops import OPS, REPORT_PHASES, report_phase
from .predict import Prediction, predict
from .runs import NodeTime, Run
from .sims import Sim
from .stats import LinearFit, linear_fit, shares, spearman
from .storage import Storage


@dataclass(frozen=True)
class PhaseTime:
    layer: str
    phase: str  # a REPORT_PHASES entry
    seconds: float  # per training step


@dataclass(frozen=True)
class PhaseCost:
    layer: str
    phase: str
    macs: int
    cycles: float  # per training step
    stall_cycles: float
    energy_pj: float
    dram_bytes: float  # read + write


@dataclass(frozen=True)
class Point:
    layer: str
    phase: str
    seconds: float  # measured, per step
    cycles: float  # simulated, per step


@dataclass(frozen=True)
class LayerShare:
    layer: str
    seconds: float
    cycles: float
    measured_share: float  # of the measured seconds over the layers both sides have
    simulated_share: float


@dataclass(frozen=True)
class Agreement:
    sim: str  # the accelerator label
    points: tuple[Point, ...]
    layer_shares: tuple[LayerShare, ...]
    spearman_points: float | None  # rank correlation over (layer, phase) points
    spearman_layers: float | None  # over layers (phases summed)
    fit: LinearFit | None  # measured seconds = slope * simulated cycles + intercept, over the points
    only_measured: tuple[str, ...]  # "layer/phase" keys the simulator does not report
    only_simulated: tuple[str, ...]


@dataclass(frozen=True)
class SimCosts:
    label: str  # unique among the report's accelerators
    sim: Sim
    phases: tuple[PhaseCost, ...]


@dataclass(frozen=True)
class Comparison:
    run: Run
    twin: Run | None
    measured: tuple[PhaseTime, ...]  # empty when the run has no timing.json
    sims: tuple[SimCosts, ...]
    agreements: tuple[Agreement, ...]  # one per sim, when measured time exists
    storage: Storage | None
    notes: tuple[str, ...]  # caveats the reader must see (mismatched batch, missing timing, ...)
    predictions: tuple[Prediction, ...] = ()  # measured vs predicted seconds on each machine model


def measured_by_phase(timing: Iterable[NodeTime], statistic: str = "quartile") -> tuple[PhaseTime, ...]:
    """Seconds per step summed by (layer, report phase), in first-seen (execution) order: each node's
    lower quartile call (`statistic="quartile"`: the uncontended time, nitisim.report.stats.
    lower_quartile; the host model's probes keep the same statistic), its median call
    (`"median"`), or its mean (`"mean"`). A run that did not record the statistic (timing.json
    of an older version) gives its median, else its mean."""
    if statistic not in ("quartile", "median", "mean"):
        raise ValueError(f"statistic must be 'quartile', 'median' or 'mean', got {statistic!r}")
    sums: dict[tuple[str, str], float] = {}
    for t in timing:
        # Views (flatten) are free reshapes on the accelerator, which reports no row for them; on
        # the host they take microseconds. Leaving them out keeps the two sides' points alike.
        if t.calls == 0 or (t.op in OPS and OPS[t.op].kind == "view"):
            continue
        key = (t.layer, report_phase(t.op, t.phase))
        recorded = {"quartile": (t.quartile_seconds, t.median_seconds), "median": (t.median_seconds,),
                    "mean": ()}[statistic]
        per_call = next((v for v in recorded if v is not None), t.seconds / t.calls)
        sums[key] = sums.get(key, 0.0) + per_call
    return tuple(PhaseTime(layer, phase, seconds) for (layer, phase), seconds in sums.items())


def simulated_by_phase(sim: Sim) -> tuple[PhaseCost, ...]:
    """The sim's node rows (else, for a sim without them, its layer rows) summed by (layer, phase),
    in first-seen order: grouped as measured_by_phase groups a run's nodes."""
    sums: dict[tuple[str, str], list[float]] = {}
    for row in sim.nodes or sim.layers:
        acc = sums.setdefault((row.layer, row.phase), [0, 0.0, 0.0, 0.0, 0.0])
        acc[0] += row.macs
        acc[1] += row.cycles
        acc[2] += row.stall_cycles
        acc[3] += row.energy_pj
        acc[4] += row.dram_read_bytes + row.dram_write_bytes
    return tuple(PhaseCost(layer, phase, int(v[0]), v[1], v[2], v[3], v[4]) for (layer, phase), v in sums.items())


def agreement(label: str, measured: Iterable[PhaseTime], simulated: Iterable[PhaseCost]) -> Agreement:
    """Time shares, rank correlations and the linear fit over the (layer, phase) points both sides have."""
    seconds = {(m.layer, m.phase): m.seconds for m in measured}
    cycles = {(s.layer, s.phase): s.cycles for s in simulated}
    keys = [k for k in seconds if k in cycles]
    points = tuple(Point(layer, phase, seconds[(layer, phase)], cycles[(layer, phase)]) for layer, phase in keys)
    xs = [p.cycles for p in points]
    ys = [p.seconds for p in points]

    layer_seconds: dict[str, float] = defaultdict(float)
    layer_cycles: dict[str, float] = defaultdict(float)
    for p in points:
        layer_seconds[p.layer] += p.seconds
        layer_cycles[p.layer] += p.cycles
    layers = list(layer_seconds)
    s_share = shares([layer_seconds[layer] for layer in layers])
    c_share = shares([layer_cycles[layer] for layer in layers])
    rows = tuple(LayerShare(layer, layer_seconds[layer], layer_cycles[layer], a, b)
                 for layer, a, b in zip(layers, s_share, c_share))
    return Agreement(
        sim=label,
        points=points,
        layer_shares=rows,
        spearman_points=spearman(xs, ys) if len(points) >= 2 else None,
        spearman_layers=spearman([layer_cycles[x] for x in layers], [layer_seconds[x] for x in layers])
        if len(layers) >= 2 else None,
        fit=linear_fit(xs, ys),
        only_measured=tuple(f"{layer}/{phase}" for layer, phase in seconds if (layer, phase) not in cycles),
        only_simulated=tuple(f"{layer}/{phase}" for layer, phase in cycles if (layer, phase) not in seconds),
    )


def unique_labels(sims: Iterable[Sim]) -> list[str]:
    """Accelerator names, with the folder name added where two sims share a name."""
    sims = list(sims)
    counts: dict[str, int] = defaultdict(int)
    for s in sims:
        counts[s.name] += 1
    return [s.name if counts[s.name] == 1 else f"{s.name} ({s.path.name})" for s in sims]


def compare(run: Run, twin: Run | None, sims: Iterable[Sim], storage: Storage | None) -> Comparison:
    """Join one integer run (and its float32 twin) with any number of simulations."""
    sims = list(sims)
    notes: list[str] = []
    measured = measured_by_phase(run.timing)
    if not run.timing:
        notes.append(f"{run.path}: no timing.json, so measured time per layer and the agreement with "
                     "simulated cycles are not shown")
    costs = tuple(SimCosts(label, sim, simulated_by_phase(sim)) for label, sim in zip(unique_labels(sims), sims))
    for c in costs:
        if c.sim.model is not None and c.sim.model != run.model_name:
            notes.append(f"{c.label}: simulated model {c.sim.model} is not the run's model {run.model_name}")
        if c.sim.batch is not None and c.sim.batch != run.batch:
            notes.append(f"{c.label}: simulated batch {c.sim.batch} differs from the run's batch {run.batch}; "
                         "cycles and seconds describe different steps")
    if twin is not None and twin.arith == run.arith:
        notes.append(f"{twin.path}: the twin is also {twin.arith}, not the other arithmetic")
    agreements = tuple(agreement(c.label, measured, c.phases) for c in costs) if measured else ()
    for a in agreements:
        if a.only_measured or a.only_simulated:
            notes.append(f"{a.sim}: unmatched (layer/phase) points left out of the agreement: "
                         f"measured only {', '.join(a.only_measured) or 'none'}; "
                         f"simulated only {', '.join(a.only_simulated) or 'none'}")
    predictions = tuple(predict(c.label, measured, c.phases, c.sim.clock_hz) for c in costs
                        if measured and c.sim.machine_model and c.sim.clock_hz)
    return Comparison(run, twin, measured, costs, agreements, storage, tuple(notes), predictions)


def phase_matrix(layers_phases: Iterable[tuple[str, str, float]]) -> tuple[list[str], dict[str, list[float]]]:
    """(layers in order, {phase: value per layer}) for stacked bars; phases in REPORT_PHASES order."""
    layers: list[str] = []
    values: dict[tuple[str, str], float] = defaultdict(float)
    for layer, phase, value in layers_phases:
        if layer not in layers:
            layers.append(layer)
        values[(layer, phase)] += value
    return layers, {phase: [values[(layer, phase)] for layer in layers] for phase in REPORT_PHASES}
