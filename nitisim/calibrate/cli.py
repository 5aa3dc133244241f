"""`nitisim calibrate [--out FILE] [--name NAME] [--repeats N] [--passes N] [--threads N] [--model M --batch B]
[--pool-with SAMPLES]`.

Runs the probes (a second or two a pass, five passes by default), with --model and --batch also the
probes of that training graph's GEMM and pooling kernels at its shapes (nitisim/calibrate/kernels.py),
writes the host model's YAML and, beside it, the kernel and curve probes' timed calls
(<stem>.samples.json, nitisim/calibrate/samples.py), which --pool-with pools into a later
calibration. It checks the YAML by loading it with the simulator's strict loader, and prints one
line per class of rate: `calibrate_host`, which `nitisim run` calls too. Bad arguments and probes
that cannot run (no C library, a timer that cannot resolve a probe) are one line and exit status 2.
"""
from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..contract.errors import UserInputError

if TYPE_CHECKING:
    from ..contract.graph import Graph

DEFAULT_REPEATS = 9
MAX_REPEATS = 1000
MAX_PASSES = 50


def default_name() -> str:
    return "host-" + (re.sub(r"[^A-Za-z0-9-]+", "-", platform.node()).strip("-").lower() or "local")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="YAML file to write (default nitisim-out/host/<name>.yaml)")
    parser.add_argument("--name", help="the model's name (default host-<hostname>)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed calls per probe and pass (default {DEFAULT_REPEATS})")
    parser.add_argument("--passes", type=int, default=None,
                        help="passes of every timed probe: rate probes keep their median over the passes, "
                             "kernel and curve probes the lower quartile of all their calls (default 5)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of the C library (default 0: the OpenMP default, as training uses)")
    parser.add_argument("--model", help="also probe this model's GEMM and pooling kernels at its shapes "
                        "(built-in name or model YAML; needs --batch)")
    parser.add_argument("--batch", type=int, help="the training batch of --model")
    parser.add_argument("--pool-with", metavar="SAMPLES_JSON", default=None,
                        help="pool the kernel and curve probes' calls with those of an earlier calibration "
                             "(the .samples.json beside its YAML; same --model, --batch, --numerics-from)")
    parser.add_argument("--numerics-from", metavar="TRAIN_CONFIG", default=None,
                        help="with --model: build its graph with this training config's numerics (as "
                             "`nitisim simulate --numerics-from`), so its update rule and loss are probed")


def check_arguments(args: argparse.Namespace) -> tuple[Path, str]:
    if not 1 <= args.repeats <= MAX_REPEATS:
        raise UserInputError("--repeats", None, f"must be between 1 and {MAX_REPEATS}, got {args.repeats}")
    if args.passes is not None and not 1 <= args.passes <= MAX_PASSES:
        raise UserInputError("--passes", None, f"must be between 1 and {MAX_PASSES}, got {args.passes}")
    if args.threads < 0:
        raise UserInputError("--threads", None, f"must be 0 (default) or positive, got {args.threads}")
    name = args.name if args.name is not None else default_name()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserInputError("--name", None, f"letters, digits, '.', '_' and '-' only, got {name!r}")
    if (args.model is None) != (args.batch is None):
        raise UserInputError("--batch" if args.model else "--model", None, "--model and --batch go together")
    if args.numerics_from is not None and args.model is None:
        raise UserInputError("--numerics-from", None, "shapes the graph of --model: give --model and --batch too")
    if args.batch is not None and args.batch < 1:
        raise UserInputError("--batch", None, f"must be a positive integer, got {args.batch}")
    out = Path(args.out) if args.out else Path("nitisim-out") / "host" / f"{name}.yaml"
    if out.suffix not in (".yaml", ".yml"):
        raise UserInputError(str(out), None, "--out must name a .yaml file")
    if out.is_dir():
        raise UserInputError(str(out), None, "is a directory; --out names the YAML file to write")
    return out, name


def calibrate(out: Path, name: str, repeats: int, threads: int, command: str, graph, passes: int,
              pool_with: Path | None = None):
    """Probe (pooling with the calls in `pool_with`), write `out` and its samples beside it, and
    return it as the strict loader reads it (AcceleratorSpec)."""
    from hwmodels.config import load_accelerator

    from .document import host_document, render
    from .probes import probe_host
    from .samples import read_samples, samples_path, write_samples

    earlier = read_samples(pool_with) if pool_with is not None else None  # before probing: fail fast
    facts = probe_host(repeats=repeats, threads=threads, graph=graph, passes=passes, earlier=earlier)
    doc = host_document(facts, name=name, command=command)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(doc))
    except OSError as err:
        raise UserInputError(str(out), None, f"cannot write: {err.strerror or err}") from None
    write_samples(samples_path(out), [*facts.kernels, *(k for points in facts.curves.values() for k in points)])
    return load_accelerator(out)


def calibrate_host(out: Path, name: str, *, repeats: int = DEFAULT_REPEATS, threads: int = 0,
                   passes: int | None = None, graph: Graph | None = None, model_ref: str | None = None,
                   numerics_from: str | None = None, pool_with: Path | None = None):
    """Calibrate this host into `out` (see `calibrate`), with `graph`'s kernels probed when given,
    and print one line per class of rate; returns the model (AcceleratorSpec). `model_ref` and
    `numerics_from` name where `graph` came from, for the command the YAML records."""
    from .probes import DEFAULT_PASSES

    passes = passes or DEFAULT_PASSES
    command = (f"nitisim calibrate --out {out} --name {name} --repeats {repeats} --passes {passes} "
               f"--threads {threads}")
    if graph is not None:
        command += f" --model {model_ref} --batch {graph.batch}"
        if numerics_from is not None:
            command += f" --numerics-from {numerics_from}"
    if pool_with is not None:
        command += f" --pool-with {pool_with}"
    arch = calibrate(out, name, repeats, threads, command, graph, passes, pool_with)
    host, hz = arch.host, arch.clock_mhz * 1e6
    print(f"wrote {out}: {host.engine}, {host.cores} cores")
    print("  int8 GEMM (GMAC/s): " + ", ".join(f"{c} {r * hz / 1e9:.1f}" for c, r in host.gemm_macs_per_cycle.items()))
    print("  vector (Gop/s per core): " + ", ".join(f"{w} {r * hz / 1e9:.2f}" for w, r in host.vector_ops_per_cycle.items()))
    print("  call (us): " + ", ".join(f"{k} {c / hz * 1e6:.1f}" for k, c in host.call_cycles.items()))
    print(f"  measured kernels: {len(host.kernels)}, elementwise curves: {', '.join(host.curves) or 'none'}")
    return arch


def main(args: argparse.Namespace) -> int:
    out, name = check_arguments(args)
    graph = None
    if args.model is not None:
        from nitisim.contract.graph import build_graph
        from nitisim.contract.models import resolve_model

        from nitisim.train.config import numerics_of

        # as `nitisim simulate` builds it
        graph = build_graph(resolve_model(args.model), args.batch, numerics_of(args.numerics_from))
    calibrate_host(out, name, repeats=args.repeats, threads=args.threads, passes=args.passes, graph=graph,
                   model_ref=args.model, numerics_from=args.numerics_from,
                   pool_with=Path(args.pool_with) if args.pool_with is not None else None)
    return 0
