"""`nitisim simulate ARCH.yaml --model NAME|MODEL.yaml`: one training step on an accelerator.

Simulates the model's training graph on the accelerator and on its float32 twin and writes
summary.json and report.md (and trace.json with --trace) into --out. The work is `simulate`, on a
parsed accelerator and a built graph, which `nitisim run` calls too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hwmodels.area import has_area, total_mm2
from hwmodels.config import resolve_accelerator
from hwmodels.plan import COMPAT_MODES
from hwmodels.report import write_outputs
from hwmodels.sim import PHASES, simulate_with_fp32
from hwmodels.spec import AcceleratorSpec

from .contract.errors import UserInputError
from .contract.graph import Graph, build_graph
from .contract.models import resolve_model
from .train.config import numerics_of

DEFAULT_BATCH = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("arch", metavar="ARCH", help="accelerator YAML file, or a shipped config name (edge-16x16, ...)")
    parser.add_argument("--model", required=True, help="built-in model name or model YAML file")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"batch size (default {DEFAULT_BATCH})")
    parser.add_argument("--numerics-from", metavar="TRAIN_CONFIG", default=None,
                        help="build the graph with this training config's numerics (loss variant, update rule, "
                             "rounding): the graph a run of it trains; default: NITI's")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help="comma-separated subset of forward,backward,update (default: all)")
    parser.add_argument("--compat", choices=COMPAT_MODES, default=None,
                        help="report GEMM compute cycles exactly as SCALE-Sim v2 does")
    parser.add_argument("--out", default=None, help="output directory (default ./nitisim-out/sim-<arch>-<model>)")
    parser.add_argument("--trace", action="store_true", help="also write trace.json (Chrome/Perfetto trace)")


def peak_note(arch, total: dict) -> str:
    """' of the measured peak ...' when a calibrated host's utilisation is of a rate above its array's PEs."""
    peak, pes = total["peak_macs_per_cycle"], arch.array.pes
    return f" of the measured peak {peak:,.1f} MACs/cycle (nominal array: {pes} PEs)" if peak > pes else ""


def simulate(arch: AcceleratorSpec, graph: Graph, out: Path, *, compat: str | None = None,
             phases: str = ",".join(PHASES), trace: bool = False) -> list[Path]:
    """Simulate one training step of `graph` on `arch` and its float32 twin; write them into `out`
    (summary.json, report.md, trace.json with `trace`), print the one-line result, return the files."""
    result, fp32 = simulate_with_fp32(arch, graph, compat=compat, phases=phases, trace=trace)
    paths = write_outputs(out, result, fp32)
    t = result.total()
    area = (f", {total_mm2(arch):.3f} mm^2 at {arch.node_nm:g} nm (float32 twin {total_mm2(fp32.arch):.3f} mm^2)"
            if has_area(arch) else "")
    print(f"{graph.model.name} batch {graph.batch} on {arch.name}: {t['cycles']:,} cycles "
          f"({t['seconds'] * 1e3:.3f} ms), {t['energy_pj'] * 1e-6:.1f} uJ, utilisation {100 * t['utilization']:.1f} %"
          f"{peak_note(arch, t)}; float32/int8 energy {fp32.energy_pj / result.energy_pj:.2f}x{area}")
    for p in paths:
        print(f"wrote {p}")
    return paths


def main(args: argparse.Namespace) -> int:
    if args.batch < 1:
        raise UserInputError("--batch", None, f"must be a positive integer, got {args.batch}")
    arch = resolve_accelerator(args.arch)
    model = resolve_model(args.model)
    graph = build_graph(model, args.batch, numerics_of(args.numerics_from))
    out = Path(args.out) if args.out else Path("nitisim-out") / f"sim-{arch.name}-{model.name}"
    simulate(arch, graph, out, compat=args.compat, phases=args.phases, trace=args.trace)
    return 0
