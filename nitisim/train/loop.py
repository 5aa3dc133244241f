"""The epoch loop both trainers share: batches, progress, metrics, checkpoints, timing, summary.

A trainer (integer.IntegerTrainer, fp32.Fp32Trainer) supplies `train_batch`, `evaluate`,
`epoch_info`, `save`, `load` and its MAC count; this loop owns the run folder. Per epoch it appends
the metrics line first and then replaces the checkpoint, so after a crash between the two the
resume drops the metrics line of the epoch the checkpoint does not hold.

With `average_epochs` on, each epoch of the window (the last average_epochs) also adds the weights
to the trainer's weight average and evaluates that average (`averaged_test_accuracy`); the run's
final test accuracy is then the average's, the model it hands over.
"""
from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from ..datasets import Dataset
from ..errors import UserInputError
from .config import TrainConfig
from .data import epoch_batches, steps_per_epoch
from .progress import Progress
from .runfiles import RunFolder
from .timing import NodeTimer


class Trainer(Protocol):
    arith: str
    backend: str
    timer: NodeTimer | None
    average: Any  # the weight average (None when average_epochs is 0); has .count

    @property
    def macs_per_step(self) -> int: ...
    def macs_by_phase(self) -> dict[str, int]: ...
    def epoch_info(self, epoch: int) -> dict[str, Any]: ...
    def train_batch(self, images: np.ndarray, labels: np.ndarray, epoch: int, step: int) -> int: ...
    def add_to_average(self) -> None: ...
    def evaluate(self, images: np.ndarray, labels: np.ndarray, averaged: bool = False) -> int: ...
    def save(self, path, meta: dict[str, Any]) -> None: ...
    def load(self, path) -> dict[str, Any]: ...


def run_training(cfg: TrainConfig, trainer: Trainer, ds: Dataset, run: RunFolder, *, resume: bool = False,
                 progress: Progress | None = None, header: str | None = None) -> dict[str, Any]:
    """Train `trainer` for cfg.epochs epochs (continuing from the checkpoint when `resume`); returns the summary.

    `header` is printed once the run folder is ready (after a resume was checked), so a refused
    resume stays a single error line.
    """
    progress = progress or Progress()
    steps = steps_per_epoch(ds, cfg.batch)
    config_hash = cfg.step_hash(trainer.arith)
    start_epoch = 0
    if resume:
        start_epoch = _resume(cfg, trainer, run, config_hash)
        history = run.read_metrics(before_epoch=start_epoch)
        run.rewrite_metrics(history)
    else:
        run.start_fresh()
        history = []
    if header:
        progress.line(header + (f" (resuming at epoch {start_epoch + 1})" if resume else ""))
    if trainer.timer is None and trainer.arith == "int8":
        trainer.timer = NodeTimer(run.read_timing_nodes() if resume else None)
    if start_epoch >= cfg.epochs:
        progress.line(f"nitisim: checkpoint already holds epoch {start_epoch - 1}; nothing to train for "
                      f"--epochs {cfg.epochs}")
    n_test = ds.test_labels.shape[0]
    for epoch in range(start_epoch, cfg.epochs):
        info = trainer.epoch_info(epoch)
        label = f"epoch {epoch + 1}/{cfg.epochs}"
        correct = seen = 0
        t0 = time.perf_counter()
        for step, images, labels in epoch_batches(ds, cfg, epoch):
            correct += trainer.train_batch(images, labels, epoch, step)
            seen += labels.shape[0]
            elapsed = time.perf_counter() - t0
            progress.update(label, seen // cfg.batch, steps, seen / elapsed if elapsed > 0 else 0.0,
                            f"acc {correct / seen:.3f}")
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        test_correct = trainer.evaluate(ds.test_images, ds.test_labels)
        averaged = {}
        if trainer.average is not None and epoch >= cfg.average_from_epoch:
            trainer.add_to_average()
            averaged["averaged_test_accuracy"] = trainer.evaluate(ds.test_images, ds.test_labels, averaged=True) / n_test
        eval_s = time.perf_counter() - t1
        line = {
            "epoch": epoch,
            "train_accuracy": correct / seen,
            "test_accuracy": test_correct / n_test,
            **averaged,
            "seconds": round(train_s, 3),
            "eval_seconds": round(eval_s, 3),
            "images_per_second": round(seen / train_s, 1),
            **info,
            "arith": trainer.arith,
            "backend": trainer.backend,
        }
        history.append(line)
        run.append_metrics(line)
        trainer.save(run.checkpoint, {"epoch": epoch, "step": (epoch + 1) * steps, "config_hash": config_hash,
                                      "arith": trainer.arith, "backend": trainer.backend})
        if trainer.timer is not None:
            run.write_json(run.timing, _timing_doc(cfg, trainer, steps * (epoch + 1)))
        run.write_json(run.summary, _summary(cfg, trainer, ds, history, steps))
        extra = " ".join(f"{k} {v}" for k, v in info.items() if v is not None)
        if averaged:
            extra = f"averaged test {averaged['averaged_test_accuracy']:.4f} " + extra
        progress.line(f"{label}: train {line['train_accuracy']:.4f} test {line['test_accuracy']:.4f} "
                      f"{line['images_per_second']:,.0f} img/s {train_s:.0f}+{eval_s:.0f} s {extra}")
    summary = _summary(cfg, trainer, ds, history, steps)
    run.write_json(run.summary, summary)
    return summary


def _resume(cfg: TrainConfig, trainer: Trainer, run: RunFolder, config_hash: str) -> int:
    if not run.checkpoint.exists():
        raise UserInputError(str(run.checkpoint), None, "no checkpoint to resume from (run without --resume first)")
    meta = trainer.load(run.checkpoint)
    if meta.get("config_hash") != config_hash or meta.get("arith") != trainer.arith:
        raise UserInputError(cfg.source, None, f"differs from the config of the checkpoint in {run.path} "
                             f"(hash {config_hash} vs {meta.get('config_hash')}); resume with the same config "
                             "or pass another --out")
    start_epoch = int(meta["epoch"]) + 1
    if trainer.average is not None:
        needed = max(0, start_epoch - cfg.average_from_epoch)
        if trainer.average.count != needed:
            raise UserInputError(cfg.source, "average_epochs",
                                 f"the checkpoint in {run.path} holds a weight average of {trainer.average.count} "
                                 f"epochs; resuming at epoch {start_epoch + 1} of {cfg.epochs} needs {needed}")
    return start_epoch


def _timing_doc(cfg: TrainConfig, trainer: Trainer, steps_done: int) -> dict[str, Any]:
    return {
        "arith": trainer.arith,
        "backend": trainer.backend,
        "batch": cfg.batch,
        "steps": steps_done,
        "note": "wall seconds of each graph node summed over all training steps of the run (eval excluded)",
        "nodes": trainer.timer.nodes(),
    }


def _summary(cfg: TrainConfig, trainer: Trainer, ds: Dataset, history: list[dict], steps: int) -> dict[str, Any]:
    train_s = sum(m["seconds"] for m in history)
    eval_s = sum(m.get("eval_seconds", 0.0) for m in history)
    images = len(history) * steps * cfg.batch
    best = max(history, key=lambda m: m["test_accuracy"]) if history else None
    return {
        "config_file": cfg.source,
        "config": cfg.to_dict(),
        "arith": trainer.arith,
        "backend": trainer.backend,
        "dataset_source": ds.source,
        "train_images": int(ds.train_labels.shape[0]),
        "test_images": int(ds.test_labels.shape[0]),
        "steps_per_epoch": steps,
        "epochs_done": len(history),
        # the averaged weights are the model the run hands over, when it averages
        "final_test_accuracy": (history[-1].get("averaged_test_accuracy", history[-1]["test_accuracy"])
                                if history else None),
        **({"final_unaveraged_test_accuracy": history[-1]["test_accuracy"]}
           if history and "averaged_test_accuracy" in history[-1] else {}),
        "best_test_accuracy": best["test_accuracy"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "final_train_accuracy": history[-1]["train_accuracy"] if history else None,
        "total_seconds": round(train_s + eval_s, 3),
        "train_seconds": round(train_s, 3),
        "images_per_second": round(images / train_s, 1) if train_s > 0 else None,
        "macs_per_step": trainer.macs_per_step,
        "macs_per_step_by_phase": trainer.macs_by_phase(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
