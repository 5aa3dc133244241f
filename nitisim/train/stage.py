"""One training run as a function of parsed objects: what `nitisim train` and `nitisim run` both call.

`train_int8(cfg, out, backend)` trains in integers on a kernel table (numpy, cpu, cuda, auto: see
backends.py); `train_fp32(cfg, out, device)` trains the float32 torch twin on a torch device (cpu,
cuda, auto). Both write the run folder `out` (loop.run_training) and return its summary.
`with_overrides` applies the command lines' --epochs and --seed to a parsed config.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..contract.errors import UserInputError
from ..backends import resolve_backend
from .config import TrainConfig
from .data import load_for_config, steps_per_epoch
from .loop import Trainer, run_training
from .progress import Progress
from .runfiles import RunFolder

DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")  # torch devices of the float32 twin


def with_overrides(cfg: TrainConfig, *, epochs: int | None = None, seed: int | None = None) -> TrainConfig:
    """`cfg` with --epochs and --seed applied (None: the config's own)."""
    if epochs is not None:
        if epochs < 1:
            raise UserInputError("--epochs", None, f"must be a positive integer, got {epochs}")
        cfg = cfg.with_epochs(epochs)
    if seed is not None:
        if not 0 <= seed <= 2**32 - 1:
            raise UserInputError("--seed", None, f"must be in 0..{2**32 - 1}, got {seed}")
        cfg = dataclasses.replace(cfg, seed=seed)
    return cfg


def train_int8(cfg: TrainConfig, out: Path, backend: str = "auto", *, data: str | None = None,
               resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Integer (NITI) training of `cfg` on kernel table `backend` into run folder `out`; returns the summary."""
    if cfg.input_path == "float":
        raise UserInputError(cfg.source, "input_path", "float inputs are for --arith fp32 comparisons only; "
                             "integer training reads int8")
    from .integer import IntegerTrainer

    # The trainer first: it refuses a model this machine cannot hold before the data set is read or
    # made. What `auto` chose is said after the data loaded, so a bad data set stays one error line.
    chosen: list[str] = []
    kernels, resolved = resolve_backend(backend, log=chosen.append)
    return _train(cfg, IntegerTrainer(cfg, kernels, resolved), out, data, resume, overwrite, chosen)


def train_fp32(cfg: TrainConfig, out: Path, device: str = "auto", *, data: str | None = None,
               resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """The float32 twin of `cfg` on torch device `device` into run folder `out`; returns the summary."""
    from .fp32 import Fp32Trainer  # torch is imported only here

    return _train(cfg, Fp32Trainer(cfg, device), out, data, resume, overwrite, [])


def _train(cfg: TrainConfig, trainer: Trainer, out: Path, data: str | None, resume: bool, overwrite: bool,
           chosen: list[str]) -> dict[str, Any]:
    ds = load_for_config(cfg, data)
    for line in chosen:
        print(line, file=sys.stderr, flush=True)
    run = RunFolder(Path(out), trainer.arith)
    progress = Progress()
    steps = steps_per_epoch(ds, cfg.batch)
    held = f"{ds.validation_labels.shape[0]} validation / " if ds.validation_labels is not None else ""
    header = (f"nitisim train: {cfg.model.name} on {cfg.dataset} ({ds.train_labels.shape[0]} train / {held}"
              f"{ds.test_labels.shape[0]} test), {trainer.arith}, backend {trainer.backend}, {cfg.epochs} epochs "
              f"x {steps} steps of {cfg.batch} -> {run.path}")
    summary = run_training(cfg, trainer, ds, run, resume=resume, overwrite=overwrite, progress=progress,
                           header=header)
    if summary["final_test_accuracy"] is not None:
        val = summary.get("final_validation_accuracy")
        val_text = "" if val is None else f"validation accuracy final {val:.4f}, "
        progress.line(f"done: {val_text}test accuracy final {summary['final_test_accuracy']:.4f} best "
                      f"{summary['best_test_accuracy']:.4f} (epoch {summary['best_epoch']}), "
                      f"{summary['images_per_second']:,.0f} img/s, {summary['total_seconds']:.0f} s")
    return summary
