"""The report's tables, as plain rows of formatted cells, shared by the Markdown and HTML writers.

`sections(comparison)` returns the report in reading order: each section has a title, the names
of its figures (drawn by figures.py) and its tables. Cells are strings already formatted with the
unit in the column header, so both writers show the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..contract.ops import REPORT_PHASES
from .join import Comparison, phase_matrix
from .top import largest, other_label


@dataclass(frozen=True)
class Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""
    full: Table | None = None  # every row, where `rows` keeps only the largest (top.py); written as CSV
    csv: str = ""  # the full table's file name under tables/, when `full` is set


def shortened(t: Table, keep: list[int] | None, rest: tuple[str, ...], what: str, tail: tuple[tuple[str, ...], ...] = ()) -> Table:
    """`t` itself when `keep` is None; else a table of t.rows[keep] (largest first), the `rest` row,
    then `tail` (a total), with the whole table kept in `full` for the CSV file."""
    if keep is None:
        return Table(t.title, t.columns, t.rows + tail, t.caption)
    full = Table(t.title, t.columns, t.rows + tail, t.caption)
    slug = "".join(ch if ch.isalnum() else "-" for ch in t.title.lower())
    slug = "-".join(part for part in slug.split("-") if part)
    caption = (f"the {len(keep)} largest of {len(t.rows)} {what}, largest first; the other {len(t.rows) - len(keep)} "
               f"summed in one row; all rows: tables/{slug}.csv" + (f". {t.caption}" if t.caption else ""))
    return Table(t.title, t.columns, tuple(t.rows[i] for i in keep) + (rest,) + tail, caption, full, f"{slug}.csv")


@dataclass(frozen=True)
class Section:
    title: str
    text: str
    figures: tuple[str, ...]  # names of figures.py's figures, in order
    tables: tuple[Table, ...]


def pct(fraction: float | None) -> str:
    """A 0..1 fraction as a percentage with two decimals ('-' when unknown)."""
    return "-" if fraction is None else f"{100 * fraction:.2f}"


def num(value: float | None, digits: int = 0) -> str:
    """Thousands-separated, `digits` decimals ('-' when unknown)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def sig(value: float | None, digits: int = 4) -> str:
    """`digits` significant digits ('-' when unknown or undefined)."""
    return "-" if value is None else f"{value:.{digits}g}"


def sections(c: Comparison) -> list[Section]:
    out = [_accuracy(c)]
    if c.measured:
        out.append(_measured(c))
    if c.sims:
        out.append(_simulated(c))
        out.append(_energy(c))
    if any(s.sim.area_mm2_by_component for s in c.sims):
        out.append(_area(c))
    if c.agreements:
        out.append(_agreement(c))
    if c.predictions:
        out.append(_predicted(c))
    if c.storage is not None:
        out.append(_storage(c))
    return out


def headline(c: Comparison) -> list[tuple[str, str]]:
    """(label, value) pairs for the top of the report and `nitisim run`'s summary lines."""
    rows = []
    for run in (c.run, c.twin):
        if run is None:
            continue
        if run.final_validation_accuracy is not None:
            rows.append((f"{run.arith} validation accuracy (final)", f"{pct(run.final_validation_accuracy)} %"))
        rows.append((f"{run.arith} test accuracy (final / best)",
                     f"{pct(run.final_test_accuracy)} % / {pct(run.best_test_accuracy)} %"))
    rows.append((f"measured training throughput ({c.run.backend})", f"{num(c.run.images_per_second, 1)} images/s"))
    for s in c.sims:
        clock = s.sim.clock_hz
        at_clock = f" ({sig(s.sim.total['cycles'] / clock * 1e3, 3)} ms at {num(clock / 1e6)} MHz)" if clock else ""
        area = f", {sig(s.sim.total['area_mm2'], 4)} mm^2" if "area_mm2" in s.sim.total else ""
        rows.append((f"simulated per step on {s.label}",
                     f"{num(s.sim.total['cycles'])} cycles{at_clock}, {num(s.sim.total['energy_pj'] / 1e6, 2)} uJ{area}"))
    for a in c.agreements:
        rows.append((f"measured vs simulated on {a.sim}",
                     f"R^2 {sig(a.fit.r2 if a.fit else None, 3)}, Spearman {sig(a.spearman_points, 3)} "
                     f"over {len(a.points)} (layer, phase) points"))
    for p in c.predictions:
        rows.append((f"measured vs predicted on the machine model {p.sim}",
                     f"R^2 {sig(p.r2, 3)} (no fit), Spearman {sig(p.spearman, 3)}, step "
                     f"{sig(p.measured_total_seconds * 1e3, 3)} ms measured / "
                     f"{sig(p.predicted_total_seconds * 1e3, 3)} ms predicted"))
    return rows


def _run_row(run, validation: bool) -> tuple[str, ...]:
    last = run.epochs[-1] if run.epochs else None
    return (run.arith, run.backend, str(len(run.epochs)),
            *((pct(run.final_validation_accuracy),) if validation else ()),
            pct(run.final_test_accuracy), pct(run.best_test_accuracy),
            pct(last.train_accuracy if last else None), num(run.images_per_second, 1), num(run.total_seconds, 1),
            num(run.macs_per_step))


def _accuracy(c: Comparison) -> Section:
    runs = [c.run] + ([c.twin] if c.twin is not None else [])
    validation = any(r.final_validation_accuracy is not None for r in runs)  # the column only where a run has one
    summary = Table(
        "Runs",
        ("arith", "backend", "epochs", *(("final validation acc (%)",) if validation else ()), "final test acc (%)",
         "best test acc (%)", "final train acc (%)", "images/s", "total seconds", "MACs per step"),
        tuple(_run_row(r, validation) for r in runs),
        f"model {c.run.model}, batch {c.run.batch}, dataset {c.run.dataset or '-'}; run folders: "
        + ", ".join(str(r.path) for r in runs),
    )
    by_epoch: dict[int, dict[str, object]] = {}
    for r in runs:
        for e in r.epochs:
            by_epoch.setdefault(e.epoch, {})[r.arith] = e
    columns = ["epoch"]
    for r in runs:
        columns += [f"{r.arith} train acc (%)", f"{r.arith} test acc (%)", f"{r.arith} images/s"]
    rows = []
    for epoch in sorted(by_epoch):
        row = [str(epoch + 1)]
        for r in runs:
            e = by_epoch[epoch].get(r.arith)
            row += [pct(e.train_accuracy), pct(e.test_accuracy), num(e.images_per_second, 1)] if e else ["-"] * 3
        rows.append(tuple(row))
    curves = Table("Accuracy per epoch", tuple(columns), tuple(rows))
    return Section("Accuracy", "Integer (NITI) training against its float32 twin: same model, data and schedule.",
                   ("training_curves",), (summary, curves))


def _phase_table(title: str, items, unit_scale: float, unit: str, digits: int, caption: str = "") -> Table:
    layers, by_phase = phase_matrix(items)
    phases = [p for p in REPORT_PHASES if any(by_phase[p])]
    totals = [sum(by_phase[p][i] for p in phases) for i in range(len(layers))]
    grand = sum(totals)
    def row(label: str, values: dict[str, float], total: float) -> tuple[str, ...]:
        return tuple([label] + [num(values[p] * unit_scale, digits) for p in phases]
                     + [num(total * unit_scale, digits), pct(total / grand if grand else None)])

    rows = tuple(row(layer, {p: by_phase[p][i] for p in phases}, totals[i]) for i, layer in enumerate(layers))
    total = row("total", {p: sum(by_phase[p]) for p in phases}, grand)
    keep = largest(totals)
    rest = set(range(len(layers))) - set(keep or ())
    other = row(other_label(len(rest)), {p: sum(by_phase[p][i] for i in rest) for p in phases},
                sum(totals[i] for i in rest))
    table = Table(title, tuple(["layer"] + [f"{p} ({unit})" for p in phases] + [f"total ({unit})", "share (%)"]),
                  rows, caption)
    return shortened(table, keep, other, "layers", (total,))


def _measured(c: Comparison) -> Section:
    table = _phase_table(f"Measured time per layer and phase ({c.run.backend})",
                         [(m.layer, m.phase, m.seconds) for m in c.measured], 1e3, "ms per step", 3,
                         "timing.json lower-quartile call of each node (the median or seconds / calls in older runs), summed by (layer, report phase of the op)")
    return Section("Measured time", "Wall time of each graph node during training, per training step.",
                   ("measured_stacked",), (table,))


def _simulated(c: Comparison) -> Section:
    totals = []
    for s in c.sims:
        t, clock = s.sim.total, s.sim.clock_hz
        step_seconds = t["cycles"] / clock if clock else None
        totals.append((
            s.label, num(clock / 1e6) if clock else "-", num(t["cycles"]), num(t.get("stall_cycles")),
            sig(step_seconds * 1e3 if step_seconds else None), num(c.run.batch / step_seconds, 0) if step_seconds else "-",
            num(t["energy_pj"] / 1e6, 3), num(t.get("dram_read_bytes", 0) + t.get("dram_write_bytes", 0)),
            num(t.get("peak_storage_bytes")),
        ))
    summary = Table("Accelerators", ("accelerator", "clock (MHz)", "cycles per step", "stall cycles",
                                     "ms per step", "images/s", "energy per step (uJ)", "DRAM bytes",
                                     "peak storage bytes"), tuple(totals),
                    f"batch {c.run.batch}; images/s = batch / (cycles / clock)")
    tables = [summary]
    figures = []
    for i, s in enumerate(c.sims):
        tables.append(_phase_table(f"Simulated cycles per layer and phase: {s.label}",
                                   [(p.layer, p.phase, p.cycles) for p in s.phases], 1.0, "cycles", 0))
        figures.append(f"cycles_stacked_{i}")
    twins = _float32_twins(c)
    if twins is not None:
        tables.insert(1, twins)
    return Section("Simulated cost", "Cycles per training step on each accelerator config, by layer and phase.",
                   tuple(figures), tuple(tables))


def _energy(c: Comparison) -> Section:
    rows = []
    for s in c.sims:
        by_phase = {p: 0.0 for p in REPORT_PHASES}
        for p in s.phases:
            by_phase[p.phase] += p.energy_pj
        rows.append(tuple([s.label] + [num(by_phase[p] / 1e6, 3) for p in REPORT_PHASES]
                          + [num(s.sim.total["energy_pj"] / 1e6, 3)]))
    tables = [Table("Energy per step by phase", tuple(["accelerator"] + [f"{p} (uJ)" for p in REPORT_PHASES]
                                                     + ["total (uJ)"]), tuple(rows))]
    components = sorted({k for s in c.sims for k in s.sim.energy_pj_by_component})
    if components:
        tables.append(Table("Energy per step by component", tuple(["accelerator"] + [f"{k} (uJ)" for k in components]),
                            tuple(tuple([s.label] + [num(s.sim.energy_pj_by_component.get(k, 0.0) / 1e6, 3)
                                                     for k in components]) for s in c.sims)))
    return Section("Energy", "Simulated energy per training step (action counts x energy per action).",
                   ("energy",), tuple(tables))


def _area(c: Comparison) -> Section:
    sims = [s for s in c.sims if s.sim.area_mm2_by_component]
    components = list(dict.fromkeys(k for s in sims for k in s.sim.area_mm2_by_component))
    rows = []
    for s in sims:
        a, f = s.sim.area_mm2_by_component, s.sim.fp32_area_mm2_by_component
        total, fp32_total = sum(a.values()), sum(f.values())
        rows.append(tuple([s.label, sig(s.sim.node_nm, 3)] + [sig(a.get(k, 0.0), 4) for k in components]
                          + [sig(total, 4), sig(fp32_total, 4) if f else "-",
                             sig(fp32_total / total, 3) if f and total else "-",
                             sig(f["mac_array"] / a["mac_array"], 4) if f.get("mac_array") and a.get("mac_array")
                             else "-"]))
    by_component = Table(
        "Silicon area by component",
        tuple(["accelerator", "node (nm)"] + [f"{k} (mm^2)" for k in components]
              + ["total (mm^2)", "float32 twin (mm^2)", "fp32 / int8", "MAC array fp32 / int8"]),
        tuple(rows),
        "instances x area per instance (arch.area in each summary.json, every entry with its source): Horowitz "
        "2014 arithmetic and CACTI SRAM banks at 45 nm, scaled to the node by Stillmaker & Baas 2017; PE "
        "registers and scratchpads, interconnect, control, DRAM PHY and pads are not counted")
    merit = Table(
        "Throughput and energy per unit of silicon",
        ("accelerator", "images/s", "images/s per mm^2", "energy per image (uJ)", "EDP (J s)", "EDAP (J s mm^2)",
         "float32 twin images/s per mm^2", "float32 twin EDAP (J s mm^2)"),
        tuple((s.label, num(s.sim.total.get("images_per_second"), 1),
               sig(s.sim.total.get("images_per_second_per_mm2"), 4),
               num(s.sim.total["energy_per_image_pj"] / 1e6 if "energy_per_image_pj" in s.sim.total else None, 3),
               sig(s.sim.total.get("edp_j_s"), 4), sig(s.sim.total.get("edap_j_s_mm2"), 4),
               sig(s.sim.fp32_total.get("images_per_second_per_mm2"), 4),
               sig(s.sim.fp32_total.get("edap_j_s_mm2"), 4)) for s in sims),
        "per training step of the run's batch: EDP = energy x time per step, EDAP = EDP x area")
    return Section("Area", "Silicon area of each accelerator model and of its float32 twin, and what the area "
                   "buys: throughput per mm^2, energy per image, EDP and EDAP.", ("area",), (by_component, merit))


def _agreement(c: Comparison) -> Section:
    summary = Table(
        "Agreement of measured time with simulated cycles",
        ("accelerator", "points", "Spearman (layer, phase)", "Spearman (layer)", "slope (ns per cycle)",
         "intercept (us)", "R^2"),
        tuple((a.sim, str(len(a.points)), sig(a.spearman_points, 3), sig(a.spearman_layers, 3),
               sig(a.fit.slope * 1e9 if a.fit else None), sig(a.fit.intercept * 1e6 if a.fit else None),
               sig(a.fit.r2 if a.fit else None, 4)) for a in c.agreements),
        "least-squares fit: measured seconds = slope x simulated cycles + intercept over the (layer, phase) points",
    )
    layers: list[str] = []
    for a in c.agreements:
        layers += [s.layer for s in a.layer_shares if s.layer not in layers]
    columns = ["layer", "measured share (%)"] + [f"{a.sim} share (%)" for a in c.agreements]
    values = []  # per layer: measured share, then each accelerator's share (None where a side lacks it)
    for layer in layers:
        measured = next((s.measured_share for a in c.agreements for s in a.layer_shares if s.layer == layer), None)
        values.append([measured] + [next((s.simulated_share for s in a.layer_shares if s.layer == layer), None)
                                    for a in c.agreements])
    rows = tuple(tuple([layer] + [pct(v) for v in vs]) for layer, vs in zip(layers, values))
    keep = largest([max(v or 0.0 for v in vs) for vs in values])
    rest = [vs for i, vs in enumerate(values) if i not in set(keep or ())]
    other = tuple([other_label(len(rest))] + [pct(sum(vs[j] or 0.0 for vs in rest)) for j in range(len(columns) - 1)])
    shares = shortened(Table("Per-layer time shares", tuple(columns), rows,
                             "each layer's fraction of the step, measured seconds and simulated cycles side by side"),
                       keep, other, "layers (by their largest share)")
    return Section("Measured versus simulated", "Does the accelerator model rank the work as the measured run does?",
                   ("agreement",), (summary, shares))


def _predicted(c: Comparison) -> Section:
    summary = Table(
        "Prediction of the measured time by a calibrated model of the machine that measured",
        ("machine model", "points", "R^2 (prediction, no fit)", "Spearman", "R^2 (fitted line)", "fitted slope",
         "measured step (ms)", "predicted step (ms)"),
        tuple((p.sim, str(len(p.residuals)), sig(p.r2, 4), sig(p.spearman, 3), sig(p.fit.r2 if p.fit else None, 4),
               sig(p.fit.slope if p.fit else None, 3), sig(p.measured_total_seconds * 1e3, 4),
               sig(p.predicted_total_seconds * 1e3, 4)) for p in c.predictions),
        "R^2 (prediction) = 1 - sum (measured - predicted)^2 / sum (measured - mean)^2 over the (layer, phase) "
        "points; a slope of 1 would mean the model's scale is right",
    )
    tables = [summary]
    for p in c.predictions:
        def row(layer: str, phase: str, measured: float, predicted: float) -> tuple[str, ...]:
            return (layer, phase, num(measured * 1e6, 1), num(predicted * 1e6, 1), num((measured - predicted) * 1e6, 1),
                    sig(predicted / measured, 3) if measured else "-")

        # p.residuals is largest |residual| first already, so the kept rows are its first ones.
        keep = largest([abs(r.residual_seconds) for r in p.residuals])
        rest = p.residuals[len(keep):] if keep is not None else ()
        tables.append(shortened(Table(
            f"Residuals on {p.sim}, largest first",
            ("layer", "phase", "measured (us)", "predicted (us)", "residual (us)", "predicted / measured"),
            tuple(row(r.layer, r.phase, r.measured_seconds, r.predicted_seconds) for r in p.residuals),
            "residual = measured - predicted seconds per training step; predicted = simulated cycles / clock",
        ), keep, row(other_label(len(rest), "points"), "-", sum(r.measured_seconds for r in rest),
                     sum(r.predicted_seconds for r in rest)), "(layer, phase) points"))
    return Section("Measured versus predicted", "A model of the host (or GPU) that trained, calibrated by "
                   "short probes independent of this run: where it is wrong, the simulator is wrong.", (), tuple(tables))


def _storage(c: Comparison) -> Section:
    s = c.storage
    rows = tuple((r.category, str(r.tensors) if r.category != "peak live" else "-", num(r.elements), num(r.int8_bytes),
                  num(r.fp32_bytes), sig(r.fp32_bytes / r.int8_bytes, 3) if r.int8_bytes else "-") for r in s.rows)
    table = Table(f"Storage per training step ({s.model}, batch {s.batch})",
                  ("category", "tensors", "elements", "integer bytes", "float32 bytes", "float32 / integer"), rows,
                  "from the training graph: integer = each tensor's dtype, float32 = 4 bytes per element")
    return Section("Storage", "Weights, the activation stash kept for the backward pass, and gradients.",
                   ("storage",), (table,))


def _float32_twins(c: Comparison) -> Table | None:
    """The simulator's integer step against the same step on the accelerator's float32 twin."""
    rows = []
    for s in c.sims:
        t, f = s.sim.total, s.sim.fp32_total
        if not f:
            continue

        def pair(key: str, scale: float = 1.0, digits: int = 0) -> list[str]:
            a, b = t.get(key), f.get(key)
            return [num(a * scale if a is not None else None, digits), num(b * scale if b is not None else None, digits),
                    sig(b / a, 3) if a and b is not None else "-"]

        rows.append(tuple([s.label] + pair("energy_pj", 1e-6, 3) + pair("cycles") + pair("peak_storage_bytes")
                          + pair("activation_stash_bytes")))
    if not rows:
        return None
    columns = ["accelerator"]
    for what in ("energy (uJ)", "cycles", "peak storage bytes", "activation stash bytes"):
        columns += [f"int8 {what}", f"fp32 {what}", "fp32 / int8"]
    return Table("Simulated integer versus float32 training step", tuple(columns), tuple(rows),
                 "the float32 twin is the same accelerator with 4-byte words and float32 MACs and vector ops")
