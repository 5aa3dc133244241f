"""The report's figures by name, drawn from a Comparison (the names tables.Section refers to).

Returns SVG text per figure; matplotlib is loaded by plots.py only when this runs.
"""
from __future__ import annotations

from ..contract.ops import REPORT_PHASES
from . import plots
from .join import Comparison, phase_matrix
from .top import largest, other_label


def _largest_layers(layers: list[str], by_phase: dict[str, list[float]]) -> tuple[list[str], dict[str, list[float]], str]:
    """A deep graph's bars cut to its largest layers, kept in graph order, and one bar for the rest
    (top.py); a short graph's bars as they are. Returns (layers, by_phase, title suffix)."""
    totals = [sum(values[i] for values in by_phase.values()) for i in range(len(layers))]
    keep = largest(totals)
    if keep is None:
        return layers, by_phase, ""
    keep = sorted(keep)  # graph order: where in the network the cost sits
    rest = [i for i in range(len(layers)) if i not in set(keep)]
    return ([layers[i] for i in keep] + [other_label(len(rest))],
            {p: [values[i] for i in keep] + [sum(values[i] for i in rest)] for p, values in by_phase.items()},
            f" ({len(keep)} largest of {len(layers)} layers)")


def figures(c: Comparison) -> dict[str, str]:
    """name -> standalone SVG text, for every figure the comparison has data for."""
    return {name: plots.to_svg(fig, salt=name) for name, fig in figure_objects(c).items()}


def figure_objects(c: Comparison) -> dict[str, object]:
    """name -> matplotlib Figure, for every figure the comparison has data for."""
    out: dict[str, object] = {}
    runs = [c.run] + ([c.twin] if c.twin is not None else [])
    out["training_curves"] = plots.training_curves([
        (r.arith, [e.epoch for e in r.epochs], [e.train_accuracy for e in r.epochs], [e.test_accuracy for e in r.epochs])
        for r in runs])
    if c.measured:
        layers, by_phase, cut = _largest_layers(*phase_matrix((m.layer, m.phase, m.seconds * 1e3) for m in c.measured))
        out["measured_stacked"] = plots.stacked_by_phase(f"Measured time per step ({c.run.backend}){cut}", layers, by_phase,
                                                         "ms per step")
    for i, s in enumerate(c.sims):
        layers, by_phase, cut = _largest_layers(*phase_matrix((p.layer, p.phase, p.cycles) for p in s.phases))
        out[f"cycles_stacked_{i}"] = plots.stacked_by_phase(f"Simulated cycles per step: {s.label}{cut}", layers, by_phase,
                                                            "cycles per step")
    if c.sims:
        labels = [s.label for s in c.sims]
        by_phase = {p: [sum(x.energy_pj for x in s.phases if x.phase == p) for s in c.sims] for p in REPORT_PHASES}
        components = sorted({k for s in c.sims for k in s.sim.energy_pj_by_component})
        by_component = {k: [s.sim.energy_pj_by_component.get(k, 0.0) for s in c.sims] for k in components}
        out["energy"] = plots.energy_breakdown(labels, by_phase, by_component)
    with_area = [s for s in c.sims if s.sim.area_mm2_by_component]
    if with_area:
        components = list(dict.fromkeys(k for s in with_area for k in s.sim.area_mm2_by_component))
        out["area"] = plots.area_breakdown(
            [s.label for s in with_area],
            {k: [s.sim.area_mm2_by_component.get(k, 0.0) for s in with_area] for k in components},
            {k: [s.sim.fp32_area_mm2_by_component.get(k, 0.0) for s in with_area] for k in components})
    if c.agreements:
        out["agreement"] = plots.measured_vs_simulated([
            (a.sim, [p.cycles for p in a.points], [p.seconds for p in a.points],
             [f"{p.layer}/{p.phase}" for p in a.points],
             a.fit.slope if a.fit else None, a.fit.intercept if a.fit else None, a.fit.r2 if a.fit else None)
            for a in c.agreements])
    if c.storage is not None:
        rows = c.storage.rows
        out["storage"] = plots.storage_bars([r.category for r in rows], [r.int8_bytes for r in rows],
                                            [r.fp32_bytes for r in rows])
    return out
