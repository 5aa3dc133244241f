"""Atomic checkpoint files: a crash while saving leaves the previous checkpoint whole.

Every write goes to a temporary file in the destination folder (same file system, so the rename
is atomic), is flushed and fsync'ed, then `os.replace`d over the old file; the folder is fsync'ed
so the rename itself survives a power cut. Readers therefore see either the old or the new file.

Integer checkpoints are `.npz` without pickles: each parameter (weights and optimiser states) as
`m/<name>` plus its exponent `e/<name>`, and a `meta` JSON string (epoch, step, config hash, ...).
The float32 trainer writes torch.save files through `atomic_write` as well.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import UserInputError
from ..numerics import QTensor

FORMAT = "nitisim-int8-checkpoint-1"


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call `write(binary file)` on a temp file beside `path`, fsync, and rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())  # mkstemp makes 0600; give a normal file's mode
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # the old file is untouched; do not leave the partial one behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _file_mode() -> int:
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_int8(path: str | Path, params: Mapping[str, QTensor], meta: Mapping[str, Any]) -> Path:
    """Write weights, optimiser states and `meta` (epoch, step, config hash, ...) atomically."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({"format": FORMAT, **meta}, sort_keys=True))}
    for name, t in params.items():
        arrays[f"m/{name}"] = np.asarray(t.m)
        arrays[f"e/{name}"] = np.array(int(t.e), dtype=np.int64)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_int8(path: str | Path) -> tuple[dict[str, QTensor], dict[str, Any]]:
    """(params, meta) from a file written by save_int8; a broken file is a UserInputError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            names = [k[2:] for k in z.files if k.startswith("m/")]
            params = {n: QTensor(z[f"m/{n}"], int(z[f"e/{n}"])) for n in names}
    except (OSError, ValueError, KeyError) as err:
        raise UserInputError(str(path), "checkpoint", f"cannot read ({err})") from None
    if meta.get("format") != FORMAT:
        raise UserInputError(str(path), "checkpoint", f"format {meta.get('format')!r}, expected {FORMAT}")
    return params, meta
