"""The timed calls of a calibration's kernel and curve probes, kept beside its YAML so that a later
calibration can pool them with its own (`nitisim calibrate --pool-with FILE`).

On a shared VM a kernel runs at half speed or worse in spells the guest cannot see (no steal time),
and a spell can cover a whole calibration of ten seconds (docs/hwmodel.md): every probe then reads
slow and no statistic of that window recovers the uncontended speed. Pooling the calls of two
windows some seconds apart, and keeping their lower quartile, needs only a quarter of all calls
from an uncontended spell.

    {"version": 1, "samples": {"<kernel_key or curve@elements>": [seconds of each timed call, ...]}}
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..contract.errors import UserInputError

VERSION = 1


def samples_path(yaml_path: Path) -> Path:
    """Where a calibration YAML's samples go: beside it, `<stem>.samples.json`."""
    return yaml_path.with_name(yaml_path.stem + ".samples.json")


def write_samples(path: Path, times: Iterable) -> None:
    """kernels.KernelTime records -> the samples file, atomically (temp file, then rename)."""
    doc = {"version": VERSION, "samples": {k.key: list(k.samples) for k in times}}
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError as err:
        raise UserInputError(str(path), None, f"cannot write: {err.strerror or err}") from None


def read_samples(path: Path) -> Mapping[str, tuple[float, ...]]:
    """The samples file of an earlier calibration; any problem is one UserInputError naming the field."""
    src = str(path)
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserInputError(src, None, "no such file (the .samples.json an earlier `nitisim calibrate` wrote)") from None
    except OSError as err:
        raise UserInputError(src, None, f"cannot read: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(src, None, f"not JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise UserInputError(src, "version", f"must be {VERSION}")
    samples = doc.get("samples")
    if not isinstance(samples, dict) or not samples:
        raise UserInputError(src, "samples", "must be a non-empty object {probe key: [seconds, ...]}")
    out = {}
    for key, calls in samples.items():
        if (not isinstance(calls, list) or not calls
                or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
                           for s in calls)):
            raise UserInputError(src, f"samples.{key}", "must be a non-empty list of positive seconds")
        out[key] = tuple(float(s) for s in calls)
    return out
