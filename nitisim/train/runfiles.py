"""The files of a run folder: metrics.jsonl (one line per epoch), summary.json, timing.json.

metrics.jsonl lines: epoch, train_accuracy, test_accuracy, seconds (training), eval_seconds,
images_per_second, mu, arith, backend (fp32 lines add lr). Accuracies are fractions in 0..1.
summary.json and timing.json are rewritten atomically after every epoch, so a run that dies
leaves files describing the epochs it finished.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text

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

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def start_fresh(self) -> None:
        """A new run in this folder: drop the previous run's per-epoch files."""
        self.create()
        for p in (self.metrics, self.summary, self.timing, self.checkpoint):
            if p.exists():
                p.unlink()

    def read_metrics(self, before_epoch: int | None = None) -> list[dict[str, Any]]:
        """Metric lines, optionally only those of epochs < before_epoch (a resume keeps those)."""
        if not self.metrics.exists():
            return []
        lines = [json.loads(s) for s in self.metrics.read_text().splitlines() if s.strip()]
        return [m for m in lines if before_epoch is None or m["epoch"] < before_epoch]

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
