"""`nitisim train CONFIG.yaml`: train a model in integers (NITI) or, with --arith fp32, in float32.

Writes metrics.jsonl, summary.json, timing.json (integer runs) and a checkpoint every epoch into
the run folder (default runs/<config stem>-<arith>); --resume continues from that checkpoint.
The run holds the folder's lock while it runs (see loop.run_training): one writer per folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..contract.errors import UserInputError
from ..backends import BACKENDS, resolve_backend
from .config import load_config
from .data import load_for_config, steps_per_epoch
from .loop import run_training
from .progress import Progress
from .runfiles import RunFolder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training config YAML (see configs/train/)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="integer kernels: numpy (reference), cpu, cuda (gpu_backend), auto = first usable "
                             "of cuda, cpu, numpy (default auto); with --arith fp32: torch on cpu or cuda")
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


def main(args: argparse.Namespace) -> int:
    if args.resume and args.overwrite:  # before the config, the data and torch or the C library are loaded
        raise UserInputError("--overwrite", None, "deletes the run that --resume would continue; pass one of them")
    cfg = load_config(args.config)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserInputError("--epochs", None, f"must be a positive integer, got {args.epochs}")
        cfg = cfg.with_epochs(args.epochs)
    if args.seed is not None:
        if not 0 <= args.seed <= 2**32 - 1:
            raise UserInputError("--seed", None, f"must be in 0..{2**32 - 1}, got {args.seed}")
        cfg = dataclasses.replace(cfg, seed=args.seed)
    if args.arith == "int8" and cfg.input_path == "float":
        raise UserInputError(cfg.source, "input_path", "float inputs are for --arith fp32 comparisons only; "
                             "integer training reads int8")
    # The trainer first: it refuses a model this machine cannot hold before the data set is read or
    # made. What `auto` chose is said after the data loaded, so a bad data set stays one error line.
    chosen: list[str] = []
    if args.arith == "int8":
        from .integer import IntegerTrainer

        kernels, backend = resolve_backend(args.backend, log=chosen.append)
        trainer = IntegerTrainer(cfg, kernels, backend)
    else:
        from .fp32 import Fp32Trainer  # torch is imported only here

        trainer = Fp32Trainer(cfg, args.backend)
    ds = load_for_config(cfg, args.data)
    for line in chosen:
        print(line, file=sys.stderr, flush=True)
    run = RunFolder(Path(args.out or Path("runs") / f"{cfg.stem}-{args.arith}"), args.arith)
    progress = Progress()
    steps = steps_per_epoch(ds, cfg.batch)
    header = (f"nitisim train: {cfg.model.name} on {cfg.dataset} ({ds.train_labels.shape[0]} train / "
                  f"{ds.test_labels.shape[0]} test), {args.arith}, backend {trainer.backend}, {cfg.epochs} epochs "
                  f"x {steps} steps of {cfg.batch} -> {run.path}")
    summary = run_training(cfg, trainer, ds, run, resume=args.resume, overwrite=args.overwrite, progress=progress,
                           header=header)
    if summary["final_test_accuracy"] is not None:
        progress.line(f"done: test accuracy final {summary['final_test_accuracy']:.4f} best "
                      f"{summary['best_test_accuracy']:.4f} (epoch {summary['best_epoch']}), "
                      f"{summary['images_per_second']:,.0f} img/s, {summary['total_seconds']:.0f} s")
    return 0
