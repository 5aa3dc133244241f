"""`nitisim compare RUN_DIR [SIM_DIR ...] [--fp32 DIR] [--out DIR]`: one report joining a training run
(and its float32 twin) with simulations of the same model on any number of accelerator configs.

Writes report.html (self-contained), report.md, compare.json and plots/*.svg into --out
(default RUN_DIR/report) and prints the path of report.html. The work is `compare_runs`, which
`nitisim run` calls too.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..contract.errors import UserInputError
from .join import Comparison, compare
from .runs import find_twin, load_run
from .sims import load_sim
from .storage import storage_for_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_DIR", help="integer training run folder (nitisim train output)")
    parser.add_argument("sims", metavar="SIM_DIR", nargs="*", help="simulation folders (nitisim simulate output)")
    parser.add_argument("--fp32", metavar="DIR", help="the float32 twin run folder (default: summary.json's twin, "
                        "else <name>-fp32 beside a folder named <name>-int8)")
    parser.add_argument("--out", metavar="DIR", help="report folder (default RUN_DIR/report)")


def build(run_dir: str | Path, sim_dirs: list[str | Path], fp32_dir: str | Path | None = None) -> Comparison:
    """Load and join everything; raises UserInputError for any bad input folder or file."""
    run = load_run(run_dir)
    twin_dir = find_twin(run, fp32_dir)
    twin = load_run(twin_dir) if twin_dir is not None else None
    sims = [load_sim(d) for d in sim_dirs]
    try:
        storage, problem = storage_for_run(run.model, run.model_spec, run.batch, run.update_rule), None
    except (UserInputError, ValueError) as err:  # the model cannot be rebuilt here: report the rest
        storage, problem = None, f"storage table left out: the run's model cannot be rebuilt ({err})"
    comparison = compare(run, twin, sims, storage)
    return replace(comparison, notes=comparison.notes + (problem,)) if problem else comparison


def compare_runs(run_dir: str | Path, sim_dirs: list[str | Path], fp32_dir: str | Path | None,
                 out: Path) -> tuple[Comparison, dict[str, Path]]:
    """Join the run, its twin and the simulations (`build`) and write the report into `out`:
    (the comparison, the files written by kind)."""
    from .write import write_report  # the writers pull in matplotlib; load them only to write

    comparison = build(run_dir, sim_dirs, fp32_dir)
    return comparison, write_report(comparison, out)


def main(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.run) / "report"
    comparison, files = compare_runs(args.run, args.sims, args.fp32, out)
    for note in comparison.notes:
        print(f"note: {note}")
    print(files["html"])
    return 0
