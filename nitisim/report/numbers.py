"""compare.json: every number of the report, machine-readable (no formatting, SI units in the keys)."""
from __future__ import annotations

import dataclasses
from typing import Any

from .join import Comparison
from .runs import Run


def _run(r: Run) -> dict[str, Any]:
    return {
        "path": str(r.path), "arith": r.arith, "backend": r.backend, "model": r.model, "batch": r.batch,
        "dataset": r.dataset,
        **({"final_validation_accuracy": r.final_validation_accuracy}
           if r.final_validation_accuracy is not None else {}),
        "final_test_accuracy": r.final_test_accuracy,
        "best_test_accuracy": r.best_test_accuracy, "total_seconds": r.total_seconds,
        "images_per_second": r.images_per_second, "macs_per_step": r.macs_per_step,
        "epochs": [dataclasses.asdict(e) for e in r.epochs],
    }


def to_json(c: Comparison) -> dict[str, Any]:
    return {
        "run": _run(c.run),
        "fp32_twin": _run(c.twin) if c.twin is not None else None,
        "measured_seconds_per_step": [dataclasses.asdict(m) for m in c.measured],
        "accelerators": [
            {
                "label": s.label, "path": str(s.sim.path), "name": s.sim.name, "clock_hz": s.sim.clock_hz,
                "total": dict(s.sim.total), "energy_pj_by_component": dict(s.sim.energy_pj_by_component),
                "phases": [dataclasses.asdict(p) for p in s.phases],
                "fp32_name": s.sim.fp32_name, "fp32_total": dict(s.sim.fp32_total),
                "node_nm": s.sim.node_nm, "area_mm2_by_component": dict(s.sim.area_mm2_by_component),
                "fp32_area_mm2_by_component": dict(s.sim.fp32_area_mm2_by_component),
            }
            for s in c.sims
        ],
        "agreement": [
            {
                "accelerator": a.sim,
                "points": [dataclasses.asdict(p) for p in a.points],
                "layer_shares": [dataclasses.asdict(s) for s in a.layer_shares],
                "spearman_points": a.spearman_points,
                "spearman_layers": a.spearman_layers,
                "fit": dataclasses.asdict(a.fit) if a.fit else None,  # seconds = slope * cycles + intercept
                "only_measured": list(a.only_measured),
                "only_simulated": list(a.only_simulated),
            }
            for a in c.agreements
        ],
        "predictions": [
            {
                "machine_model": p.sim, "r2": p.r2, "spearman": p.spearman,
                "fit": dataclasses.asdict(p.fit) if p.fit else None,  # measured = slope * predicted + intercept
                "measured_total_seconds": p.measured_total_seconds,
                "predicted_total_seconds": p.predicted_total_seconds,
                "residuals": [dataclasses.asdict(r) | {"residual_seconds": r.residual_seconds} for r in p.residuals],
            }
            for p in c.predictions
        ],
        "storage": None if c.storage is None else {
            "model": c.storage.model, "batch": c.storage.batch,
            "rows": [dataclasses.asdict(r) for r in c.storage.rows],
        },
        "notes": list(c.notes),
    }
