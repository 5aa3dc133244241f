"""The files of a run folder: metrics.jsonl (one line per epoch), summary.json, timing.json.

The folder also holds `.nitisim.lock`, the lock a run holds while it writes here (folder_lock).

metrics.jsonl lines: epoch, train_accuracy, test_accuracy, seconds (training), eval_seconds,
images_per_second, mu, arith, backend (fp32 lines add lr; runs with a validation split add
validation_accuracy). Accuracies are fractions in 0..1.
summary.json and timing.json are rewritten atomically after every epoch, so a run that dies
leaves files describing the epochs it finished. metrics.jsonl is appended to, so a run killed
mid-append leaves a torn last line (no newline, not JSON): reading drops exactly that line, and any
other line that is not a metric line is an error naming the file and line.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.errors import UserInputError
from .checkpoint import atomic_write_text, stale_temp_files

METRIC_FIELDS: tuple[str, ...] = (
    "epoch", "train_accuracy", "test_accuracy", "seconds", "eval_seconds", "images_per_second", "mu", "arith",
    "backend",
)


@dataclass(frozen=True)
class RunFolder:
    path: Path
    arith: str  # int8 | fp32

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def timing(self) -> Path:
        return self.path / "timing.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / ("checkpoint.npz" if self.arith == "int8" else "checkpoint.pt")

    @property
    def files(self) -> tuple[Path, ...]:
        """The files a run writes here (the lock file aside)."""
        return (self.metrics, self.summary, self.timing, self.checkpoint)

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def start_fresh(self) -> None:
        """A new run in this folder: drop the previous run's per-epoch files."""
        self.create()
        for p in self.files:
            if p.exists():
                p.unlink()

    def stale_temp_files(self) -> list[Path]:
        """Temp files of this folder's atomic writes left by a killed run (delete only under the lock)."""
        return stale_temp_files(self.path, tuple(p.name for p in self.files))

    def read_metrics(self, before_epoch: int | None = None) -> list[dict[str, Any]]:
        """Metric lines, optionally only those of epochs < before_epoch (a resume keeps those).

        A torn last line (the file does not end in a newline and its last line is no metric line)
        is dropped; a bad line anywhere else is a UserInputError.
        """
        return [m for _, m in self.numbered_metrics() if before_epoch is None or m["epoch"] < before_epoch]

    def numbered_metrics(self) -> list[tuple[int, dict[str, Any]]]:
        """(line number in the file, metric line) of every metric line, read as read_metrics reads them."""
        if not self.metrics.exists():
            return []
        chunks = self.metrics.read_bytes().split(b"\n")
        tail = chunks.pop()  # after the last newline: empty unless the last append was cut short
        lines = [(i, self._metric_line(raw, i)) for i, raw in enumerate(chunks, 1) if raw.strip()]
        if tail.strip():
            try:
                lines.append((len(chunks) + 1, self._metric_line(tail, len(chunks) + 1)))
            except UserInputError:
                pass  # the half-written line of a killed run; its epoch has no checkpoint either
        return lines

    def _metric_line(self, raw: bytes, number: int) -> dict[str, Any]:
        try:
            line = json.loads(raw.decode("utf-8"))
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError alike
            raise UserInputError(str(self.metrics), f"line {number}", f"is not JSON ({err})") from None
        epoch = line.get("epoch") if isinstance(line, dict) else None
        if type(epoch) is not int or epoch < 0:
            raise UserInputError(str(self.metrics), f"line {number}", "is not a metrics line (no epoch number)")
        for key in ("train_accuracy", "test_accuracy", "seconds"):
            if type(line.get(key)) not in (int, float):
                raise UserInputError(str(self.metrics), f"line {number}", f"is not a metrics line (no number {key})")
        return line

    def rewrite_metrics(self, lines: list[dict[str, Any]]) -> None:
        """Keep exactly `lines`: on resume, epochs logged after the checkpoint was written go away."""
        atomic_write_text(self.metrics, "".join(json.dumps(m) + "\n" for m in lines))

    def append_metrics(self, line: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, path: Path, doc: dict[str, Any]) -> None:
        atomic_write_text(path, json.dumps(doc, indent=2) + "\n")

    def read_timing_nodes(self) -> dict[str, Any]:
        if not self.timing.exists():
            return {}
        return json.loads(self.timing.read_text()).get("nodes", {})
