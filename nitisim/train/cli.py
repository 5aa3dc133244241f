"""`nitisim train CONFIG.yaml`: train a model in integers (NITI) or, with --arith fp32, in float32.

Writes metrics.jsonl, summary.json, timing.json (integer runs) and a checkpoint every epoch into
the run folder (default runs/<config stem>-<arith>); --resume continues from that checkpoint.
The run holds the folder's lock while it runs (see loop.run_training): one writer per folder.
--backend picks the integer run's kernel table, --device the float32 run's torch device; each
flag belongs to one arithmetic, so the other's is refused rather than read as something else.
The work is stage.train_int8 / stage.train_fp32, which `nitisim run` calls too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..contract.errors import UserInputError
from ..backends import BACKENDS
from .config import load_config
from .stage import DEVICES, train_fp32, train_int8, with_overrides


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config YAML (see configs/train/)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="integer kernels: numpy (reference), cpu, cuda (gpu_backend), auto = first usable "
                             "of cuda, cpu, numpy (default auto)")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="--arith fp32 only: torch on cpu or cuda, auto = cuda when torch sees one (default auto)")
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the config's")
    parser.add_argument("--seed", type=int, help="use this seed instead of the config's (initial weights, shuffle, "
                        "augmentation, dropout and rounding draws): one config, several seeds")
    parser.add_argument("--data", help="dataset folder (or a folder holding it); default: discovery")
    parser.add_argument("--out", help="run folder (default runs/<config stem>-<arith>)")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh in a run folder that holds a trained run, deleting it (without it such a "
                             "folder is refused)")
    parser.add_argument("--arith", choices=("int8", "fp32"), default="int8",
                        help="int8: integer-only NITI training (default); fp32: the float32 torch baseline")


def check_engine_flags(arith: str, backend: str | None, device: str | None) -> None:
    """--backend is the integer run's, --device the float32 run's: the other one is an error."""
    if arith == "fp32" and backend is not None:
        raise UserInputError("--backend", None, f"picks integer kernels; --arith fp32 runs on torch: pass --device "
                             f"{backend if backend in DEVICES else 'cpu, cuda or auto'} instead")
    if arith == "int8" and device is not None:
        raise UserInputError("--device", None, "places the float32 run (--arith fp32); an integer run picks its "
                             "kernels with --backend")


def main(args: argparse.Namespace) -> int:
    # the flags before the config, the data and torch or the C library are loaded
    check_engine_flags(args.arith, args.backend, args.device)
    if args.resume and args.overwrite:
        raise UserInputError("--overwrite", None, "deletes the run that --resume would continue; pass one of them")
    cfg = with_overrides(load_config(args.config), epochs=args.epochs, seed=args.seed)
    out = Path(args.out or Path("runs") / f"{cfg.stem}-{args.arith}")
    if args.arith == "int8":
        train_int8(cfg, out, args.backend or "auto", data=args.data, resume=args.resume, overwrite=args.overwrite)
    else:
        train_fp32(cfg, out, args.device or "auto", data=args.data, resume=args.resume, overwrite=args.overwrite)
    return 0
