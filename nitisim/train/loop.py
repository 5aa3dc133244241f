"""The epoch loop both trainers share: batches, progress, metrics, checkpoints, timing, summary.

A trainer (integer.IntegerTrainer, fp32.Fp32Trainer) supplies `train_batch`, `evaluate`,
`epoch_info`, `save`, `load` and its MAC count; this loop owns the run folder. Per epoch it appends
the metrics line first and then replaces the checkpoint, so after a crash between the two the
resume drops the metrics line of the epoch the checkpoint does not hold.

With `average_epochs` on, each epoch of the window (the last average_epochs) also adds the weights
to the trainer's weight average and evaluates that average (`averaged_test_accuracy`); the run's
final test accuracy is then the average's, the model it hands over.

With a validation split (config `validation`), each epoch also evaluates the held-out training
images (`validation_accuracy`, and `averaged_validation_accuracy` in the averaging window) on the
same evaluation path as the test set; the summary's final_validation_accuracy is the number to
choose settings on.

The run holds the folder's lock (folder_lock.locked_folder) from before it touches anything until
the last write, so a second run into the same folder is refused instead of interleaving its
files; taking the lock is also the proof that the folder is writable, before any training. Under
the lock the run deletes the temp files a killed save left there. Any OSError while writing into
the folder (full disk, read-only mount, quota, file too large) ends the run with one line naming
the file and the checkpoint that is kept, which the atomic writes leave whole.

A resume also checks that the data is the data set the checkpoint was trained on (its
fingerprint), and that metrics.jsonl holds each epoch before the checkpoint once, in order. A
checkpoint written before fingerprints existed is resumed with a note; its next save records one.
When the checkpoint already holds the epochs asked for, the folder is left untouched.
"""
from __future__ import annotations

import platform
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from ..datasets import Dataset
from ..contract.errors import UserInputError
from .checkpoint import error_text
from .config import TrainConfig
from .data import epoch_batches, steps_per_epoch
from .folder_lock import describe_os_error, locked_folder
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
                 overwrite: bool = False, progress: Progress | None = None,
                 header: str | None = None) -> dict[str, Any]:
    """Train `trainer` for cfg.epochs epochs (continuing from the checkpoint when `resume`); returns the summary.

    A fresh run into a folder that holds a checkpoint is refused unless `overwrite`: the trained
    weights there are the user's. `header` is printed once the run folder is ready (after a resume
    was checked), so a refused run stays a single error line.
    """
    progress = progress or Progress()
    try:
        missing = resume and not run.checkpoint.exists()  # checked before the lock would create the folder
    except OSError:
        missing = False  # a path no file can have (name too long, ...): locked_folder says why in one line
    if missing:
        raise UserInputError(str(run.checkpoint), None, "no checkpoint to resume from (run without --resume first)")
    with locked_folder(run.path):
        if not resume and not overwrite and run.checkpoint.exists():
            raise UserInputError(str(run.path), None, f"holds a trained run ({_epochs_held(run)}); --resume continues "
                                 "it, --overwrite starts afresh and deletes it, or pass another --out")
        return _locked_run(cfg, trainer, ds, run, resume, progress, header)


def _epochs_held(run: RunFolder) -> str:
    try:
        n = len(run.read_metrics())
        return f"{n} epoch{'' if n == 1 else 's'} in {run.metrics.name}"
    except (UserInputError, OSError):
        return f"a {run.checkpoint.name}"


def _locked_run(cfg: TrainConfig, trainer: Trainer, ds: Dataset, run: RunFolder, resume: bool, progress: Progress,
                header: str | None) -> dict[str, Any]:
    steps = steps_per_epoch(ds, cfg.batch)
    config_hash = cfg.step_hash(trainer.arith)
    start_epoch = 0
    if resume:
        start_epoch = _resume(cfg, trainer, ds, run, config_hash, progress)
        history = run.read_metrics(before_epoch=start_epoch)
        _check_history(run, history, start_epoch)
        kept = _kept(run, start_epoch - 1, cfg)
    else:
        kept = "no checkpoint was written yet"
        history = []
    if resume and start_epoch >= cfg.epochs:
        # rewriting the summary here would record --epochs below the epochs the folder holds
        progress.line(f"nitisim: the checkpoint in {run.path} already holds {start_epoch} epochs; nothing to "
                      f"train for --epochs {cfg.epochs}, the run folder is left as it is")
        return _summary(cfg.with_epochs(start_epoch), trainer, ds, history, steps)
    for tmp in run.stale_temp_files():  # a killed save's leftovers; nobody else writes here while we hold the lock
        with _writing(tmp, kept):
            tmp.unlink()
    if resume:
        with _writing(run.metrics, kept):
            run.rewrite_metrics(history)
    else:
        with _writing(run.path, kept):
            run.start_fresh()
    if header:
        progress.line(header + (f" (resuming at epoch {start_epoch + 1})" if resume else ""))
    if trainer.timer is None and trainer.arith == "int8":
        trainer.timer = _node_timer(run, resume)
    n_test = ds.test_labels.shape[0]
    has_validation = ds.validation_labels is not None
    n_val = ds.validation_labels.shape[0] if has_validation else 0
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
        validation = {}
        if has_validation:
            validation["validation_accuracy"] = trainer.evaluate(ds.validation_images, ds.validation_labels) / n_val
        test_correct = trainer.evaluate(ds.test_images, ds.test_labels)
        averaged = {}
        if trainer.average is not None and epoch >= cfg.average_from_epoch:
            trainer.add_to_average()
            if has_validation:
                averaged["averaged_validation_accuracy"] = trainer.evaluate(
                    ds.validation_images, ds.validation_labels, averaged=True) / n_val
            averaged["averaged_test_accuracy"] = trainer.evaluate(ds.test_images, ds.test_labels, averaged=True) / n_test
        eval_s = time.perf_counter() - t1
        line = {
            "epoch": epoch,
            "train_accuracy": correct / seen,
            **validation,
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
        with _writing(run.metrics, kept):
            run.append_metrics(line)
        with _writing(run.checkpoint, kept):
            trainer.save(run.checkpoint, {"epoch": epoch, "step": (epoch + 1) * steps, "config_hash": config_hash,
                                          "arith": trainer.arith, "backend": trainer.backend,
                                          "dataset_fingerprint": ds.fingerprint, "dataset_source": ds.source})
        kept = _kept(run, epoch, cfg)
        if trainer.timer is not None:
            with _writing(run.timing, kept):
                run.write_json(run.timing, _timing_doc(cfg, trainer, steps * (epoch + 1)))
        with _writing(run.summary, kept):
            run.write_json(run.summary, _summary(cfg, trainer, ds, history, steps))
        extra = " ".join(f"{k} {v}" for k, v in info.items() if v is not None)
        if averaged:
            extra = (f"averaged{_val_text(averaged.get('averaged_validation_accuracy'))} test "
                     f"{averaged['averaged_test_accuracy']:.4f} " + extra)
        progress.line(f"{label}: train {line['train_accuracy']:.4f}{_val_text(validation.get('validation_accuracy'))} "
                      f"test {line['test_accuracy']:.4f} "
                      f"{line['images_per_second']:,.0f} img/s {train_s:.0f}+{eval_s:.0f} s {extra}")
    summary = _summary(cfg, trainer, ds, history, steps)
    with _writing(run.summary, kept):
        run.write_json(run.summary, summary)
    return summary


def _val_text(accuracy: float | None) -> str:
    return "" if accuracy is None else f" val {accuracy:.4f}"


@contextmanager
def _writing(path: Path, kept: str) -> Iterator[None]:
    """Turn an OSError of a write into the run folder into one line: the file, the cause, what is kept."""
    try:
        yield
    except OSError as err:
        raise UserInputError(str(path), None, f"cannot write: {describe_os_error(err)}; {kept}") from None


def _kept(run: RunFolder, epoch: int, cfg: TrainConfig) -> str:
    return f"the last checkpoint ({run.checkpoint}, after epoch {epoch + 1}/{cfg.epochs}) is kept"


def _node_timer(run: RunFolder, resume: bool) -> NodeTimer:
    """The timer, continuing timing.json's totals on a resume."""
    if not resume:
        return NodeTimer()
    try:
        return NodeTimer(run.read_timing_nodes())
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserInputError(str(run.timing), "nodes", f"cannot read ({error_text(err)})") from None


def _resume(cfg: TrainConfig, trainer: Trainer, ds: Dataset, run: RunFolder, config_hash: str,
            progress: Progress) -> int:
    if not run.checkpoint.exists():
        raise UserInputError(str(run.checkpoint), None, "no checkpoint to resume from (run without --resume first)")
    meta = trainer.load(run.checkpoint)
    if meta.get("config_hash") != config_hash or meta.get("arith") != trainer.arith:
        raise UserInputError(cfg.source, None, f"differs from the config of the checkpoint in {run.path} "
                             f"(hash {config_hash} vs {meta.get('config_hash')}); resume with the same config "
                             "or pass another --out")
    epoch = meta.get("epoch")
    if type(epoch) is not int or epoch < 0:
        raise UserInputError(str(run.checkpoint), "checkpoint", f"meta epoch is {epoch!r}, not an epoch number")
    start_epoch = epoch + 1
    fingerprint = meta.get("dataset_fingerprint")
    if fingerprint is None:
        progress.line(f"nitisim: note: {run.checkpoint} records no data-set fingerprint (written by an older "
                      "nitisim), so the data cannot be checked against it; the next checkpoint records it")
    elif fingerprint != ds.fingerprint:
        raise UserInputError(ds.source, None, f"is not the data set the checkpoint in {run.path} was trained on "
                             f"(fingerprint {ds.fingerprint}, the checkpoint's {fingerprint} from "
                             f"{meta.get('dataset_source')}); resume with that data or pass another --out")
    if trainer.average is not None:
        needed = max(0, start_epoch - cfg.average_from_epoch)
        if trainer.average.count != needed:
            raise UserInputError(cfg.source, "average_epochs",
                                 f"the checkpoint in {run.path} holds a weight average of {trainer.average.count} "
                                 f"epochs; resuming at epoch {start_epoch + 1} of {cfg.epochs} needs {needed}")
    return start_epoch


def _check_history(run: RunFolder, history: list[dict[str, Any]], start_epoch: int) -> None:
    """The metric lines a resume keeps must be epochs 0..start_epoch-1, each once, in order."""
    epochs = [m["epoch"] for m in history]
    if epochs != list(range(start_epoch)):
        shown = epochs if len(epochs) <= 12 else [*epochs[:6], "...", *epochs[-5:]]
        raise UserInputError(str(run.metrics), "epoch", f"lines before the checkpoint are epochs {shown}, the "
                             f"checkpoint holds epochs 0..{start_epoch - 1} once each; the folder mixes runs or "
                             "lost lines, resume is refused (pass another --out to start over)")


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
        **({"validation_images": int(ds.validation_labels.shape[0])} if ds.validation_labels is not None else {}),
        "steps_per_epoch": steps,
        "epochs_done": len(history),
        # the averaged weights are the model the run hands over, when it averages
        "final_test_accuracy": (history[-1].get("averaged_test_accuracy", history[-1]["test_accuracy"])
                                if history else None),
        # chosen on like the test accuracy is reported: the handed-over model's, at the last epoch
        **({"final_validation_accuracy": history[-1].get("averaged_validation_accuracy",
                                                         history[-1]["validation_accuracy"])}
           if history and "validation_accuracy" in history[-1] else {}),
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
