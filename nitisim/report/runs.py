"""Reading a training run folder (`nitisim train` output) into frozen records, strictly.

A run folder holds metrics.jsonl (one JSON object per epoch), summary.json and, for integer runs,
timing.json (`{"nodes": {node name: {op, layer, phase, seconds, calls, median_seconds,
quartile_seconds}}, "steps": ...}`, seconds summed over the run, median_seconds and
quartile_seconds the median and lower quartile of the calls, absent in older runs). Every
problem -- a missing folder or file, malformed JSON, a missing or
mistyped field -- is a `UserInputError(path, field, problem)`, so `nitisim compare` prints one
line and exits 2 instead of a traceback.

The float32 twin of an integer run is found, in order: `--fp32 DIR`; summary.json's `twin` field
(relative to the run folder); the sibling `<name>-fp32` of a folder named `<name>-int8`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..contract.errors import UserInputError
from ..contract.ops import OPS
from ..contract.values import quote
from ..train.runfiles import RunFolder


@dataclass(frozen=True)
class Epoch:
    epoch: int
    train_accuracy: float  # fraction 0..1
    test_accuracy: float
    seconds: float  # training wall time of the epoch (evaluation excluded)
    images_per_second: float


@dataclass(frozen=True)
class NodeTime:
    node: str
    op: str
    layer: str
    phase: str  # the graph phase (forward | loss | backward | update), not the report phase
    seconds: float  # summed over all calls
    calls: int
    median_seconds: float | None = None  # the median call (absent in timing.json of older versions)
    quartile_seconds: float | None = None  # the lower quartile of the calls (likewise)


@dataclass(frozen=True)
class Run:
    path: Path
    arith: str  # int8 | fp32
    backend: str
    model: str  # `model:` as the config wrote it
    model_spec: Mapping[str, Any] | None  # the config echo's expanded model, when present
    batch: int
    dataset: str
    update_rule: str
    final_test_accuracy: float | None
    best_test_accuracy: float | None
    total_seconds: float
    images_per_second: float | None
    macs_per_step: int | None
    epochs: tuple[Epoch, ...]
    timing: tuple[NodeTime, ...]  # empty when the run has no timing.json (float32 runs)
    timing_steps: int | None  # training steps the timing covers
    twin: str | None  # summary.json's `twin`, when present
    final_validation_accuracy: float | None = None  # runs with a validation split (config `validation`)

    @property
    def model_name(self) -> str:
        """The model's own name (the echo's, else the built-in name or YAML stem the config gave)."""
        if self.model_spec and isinstance(self.model_spec.get("name"), str):
            return self.model_spec["name"]
        return Path(self.model).stem


def load_run(path: str | Path) -> Run:
    """Read and check one run folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserInputError(str(folder), None, "not a run folder (no such directory)")
    summary = _read_json(folder / "summary.json", required=True)
    src = str(folder / "summary.json")
    if not isinstance(summary, dict):
        raise UserInputError(src, None, "must be a JSON object")
    config = _field(summary, "config", dict, src)
    epochs = _read_metrics(folder / "metrics.jsonl")
    timing_doc = _read_json(folder / "timing.json", required=False)
    timing, steps = _parse_timing(timing_doc, str(folder / "timing.json")) if timing_doc is not None else ((), None)
    spec = config.get("model_spec")
    return Run(
        path=folder,
        arith=_field(summary, "arith", str, src),
        backend=_field(summary, "backend", str, src),
        model=_field(config, "model", str, src, "config.model"),
        model_spec=spec if isinstance(spec, dict) else None,
        batch=_positive_int(config, "batch", src, "config.batch"),
        dataset=str(config.get("dataset", "")),
        update_rule=str(config.get("update_rule", "plain")),
        final_test_accuracy=_optional_number(summary, "final_test_accuracy", src),
        best_test_accuracy=_optional_number(summary, "best_test_accuracy", src),
        total_seconds=_number(summary, "total_seconds", src),
        images_per_second=_optional_number(summary, "images_per_second", src),
        macs_per_step=_optional_int(summary, "macs_per_step", src),
        epochs=epochs,
        timing=timing,
        timing_steps=steps,
        twin=summary.get("twin") if isinstance(summary.get("twin"), str) else None,
        final_validation_accuracy=_optional_number(summary, "final_validation_accuracy", src),
    )


def find_twin(run: Run, explicit: str | Path | None) -> Path | None:
    """The float32 twin's folder: explicit, else summary `twin`, else `<name>-fp32` beside `<name>-int8`.

    An explicit folder must exist (the caller loads it and reports what is wrong); the
    conventional ones are only used when they exist, since a run need not have a twin.
    """
    if explicit is not None:
        return Path(explicit)
    if run.twin:
        candidate = run.path / run.twin
        if not candidate.is_dir():
            raise UserInputError(str(run.path / "summary.json"), "twin", f"{candidate} is not a directory")
        return candidate
    name = run.path.resolve().name
    if name.endswith("-int8"):
        candidate = run.path.resolve().parent / (name[: -len("-int8")] + "-fp32")
        if candidate.is_dir():
            return candidate
    return None


# ------------------------------------------------------------------------------------------------
# Strict readers
# ------------------------------------------------------------------------------------------------
def _read_json(path: Path, required: bool) -> Any:
    if not path.exists():
        if required:
            raise UserInputError(str(path), None, "missing (is this the output folder of `nitisim train`?)")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(str(path), None, f"cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise UserInputError(str(path), f"line {err.lineno}", f"malformed JSON: {err.msg}") from None


def _read_metrics(path: Path) -> tuple[Epoch, ...]:
    """The epochs of metrics.jsonl, read as `nitisim train --resume` reads them (a torn last line,
    left by a run killed mid-append, is dropped; any other bad line is one error line)."""
    if not path.exists():
        raise UserInputError(str(path), None, "missing (is this the output folder of `nitisim train`?)")
    try:
        lines = RunFolder(path.parent, "int8").numbered_metrics()  # the arith names only the checkpoint
    except OSError as err:
        raise UserInputError(str(path), None, f"cannot read: {err.strerror or err}") from None
    src = str(path)
    return tuple(Epoch(
        epoch=_int(doc, "epoch", src, f"line {i}.epoch", minimum=0),
        train_accuracy=_fraction(doc, "train_accuracy", src, f"line {i}.train_accuracy"),
        test_accuracy=_fraction(doc, "test_accuracy", src, f"line {i}.test_accuracy"),
        seconds=_number(doc, "seconds", src, f"line {i}.seconds"),
        images_per_second=_number(doc, "images_per_second", src, f"line {i}.images_per_second"),
    ) for i, doc in lines)


def _op(entry: dict, src: str, where: str) -> str:
    op = _field(entry, "op", str, src, where)
    if op not in OPS:
        raise UserInputError(src, where, f"unknown op {quote(op)}; known: {', '.join(OPS)}")
    return op


def _parse_timing(doc: Any, src: str) -> tuple[tuple[NodeTime, ...], int | None]:
    if not isinstance(doc, dict):
        raise UserInputError(src, None, "must be a JSON object")
    nodes = _field(doc, "nodes", dict, src)
    out = []
    for name, entry in nodes.items():
        where = f"nodes.{name}"
        if not isinstance(entry, dict):
            raise UserInputError(src, where, "must be an object {op, layer, phase, seconds, calls}")
        out.append(NodeTime(
            node=name,
            op=_op(entry, src, f"{where}.op"),
            layer=_field(entry, "layer", str, src, f"{where}.layer"),
            phase=_field(entry, "phase", str, src, f"{where}.phase"),
            seconds=_number(entry, "seconds", src, f"{where}.seconds"),
            calls=_int(entry, "calls", src, f"{where}.calls", minimum=0),
            median_seconds=(_number(entry, "median_seconds", src, f"{where}.median_seconds")
                            if "median_seconds" in entry else None),
            quartile_seconds=(_number(entry, "quartile_seconds", src, f"{where}.quartile_seconds")
                              if "quartile_seconds" in entry else None),
        ))
    steps = doc.get("steps")
    if steps is not None:
        steps = _int(doc, "steps", src, "steps", minimum=0)
    return tuple(out), steps


def _field(doc: Mapping, key: str, kind: type, src: str, where: str | None = None) -> Any:
    where = where or key
    if key not in doc:
        raise UserInputError(src, where, "missing required field")
    value = doc[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UserInputError(src, where, f"must be {'an object' if kind is dict else 'a ' + kind.__name__}, "
                             f"got {value!r:.60}")
    return value


def _number(doc: Mapping, key: str, src: str, where: str | None = None) -> float:
    where = where or key
    if key not in doc:
        raise UserInputError(src, where, "missing required field")
    value = doc[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise UserInputError(src, where, f"must be a non-negative number, got {value!r:.60}")
    return float(value)


def _optional_number(doc: Mapping, key: str, src: str) -> float | None:
    return None if doc.get(key) is None else _number(doc, key, src)


def _fraction(doc: Mapping, key: str, src: str, where: str) -> float:
    value = _number(doc, key, src, where)
    if value > 1:
        raise UserInputError(src, where, f"must be a fraction in 0..1, got {value}")
    return value


def _int(doc: Mapping, key: str, src: str, where: str, minimum: int = 0) -> int:
    if key not in doc:
        raise UserInputError(src, where, "missing required field")
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserInputError(src, where, f"must be an integer >= {minimum}, got {value!r:.60}")
    return value


def _positive_int(doc: Mapping, key: str, src: str, where: str) -> int:
    return _int(doc, key, src, where, minimum=1)


def _optional_int(doc: Mapping, key: str, src: str) -> int | None:
    return None if doc.get(key) is None else _int(doc, key, src, key)
