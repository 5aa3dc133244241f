"""Atomic checkpoint files: a crash while saving leaves the previous checkpoint whole.

Every write goes to a temporary file in the destination folder (same file system, so the rename
is atomic), is flushed and fsync'ed, then `os.replace`d over the old file; the folder is fsync'ed
so the rename itself survives a power cut. Readers therefore see either the old or the new file.

Integer checkpoints are `.npz` without pickles: each parameter (weights and optimiser states) as
`m/<name>` plus its exponent `e/<name>`, and a `meta` JSON string (epoch, step, config hash, ...).
The float32 trainer writes torch.save files through `atomic_write` as well.

A process killed between mkstemp and the rename (kill -9, power cut) leaves its temp file
`.<name>.<8 random chars>.tmp` behind; `stale_temp_files` finds exactly those, so the run that
holds the folder's lock can delete them. A checkpoint that cannot be read (truncated, random
bytes, a zip missing members, not a checkpoint at all) is one UserInputError naming the file.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..contract.errors import UserInputError
from ..contract.numerics import QTensor
from ..contract.values import shorten

FORMAT = "nitisim-int8-checkpoint-1"
_ZIP_MAGIC = b"PK\x03\x04"  # a local file header: how every zip numpy writes starts
_TEMP_SUFFIX = ".tmp"
# what tempfile.mkstemp puts between prefix and suffix: 8 characters of this alphabet
_TEMP_RANDOM = r"[a-z0-9_]{8}"
# errors a malformed .npz raises inside numpy/zipfile/json while loading (the file's fault, not ours)
_NPZ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, EOFError,
               zipfile.BadZipFile, zlib.error, UnicodeDecodeError)


def atomic_write(path: str | Path, write: Callable[[Any], None]) -> Path:
    """Call `write(binary file)` on a temp file beside `path`, fsync, and rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
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
        except OSError:
            pass  # gone already, or the file system refuses even that: the error to report is the first one
        raise
    _fsync_dir(path.parent)
    return path


def stale_temp_files(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Temp files `atomic_write` left in `folder` for destination file names `names` (a killed save)."""
    pattern = re.compile("|".join(rf"\.{re.escape(n)}\.{_TEMP_RANDOM}{re.escape(_TEMP_SUFFIX)}" for n in names))
    return sorted(p for p in Path(folder).iterdir() if pattern.fullmatch(p.name) and p.is_file())


def require_zip(path: Path) -> None:
    """ValueError unless `path` starts like a zip archive (.npz and torch.save files both are zips)."""
    with open(path, "rb") as f:
        magic = f.read(len(_ZIP_MAGIC))
    if magic != _ZIP_MAGIC:
        raise ValueError(f"not a zip archive: it starts with {magic!r}" if magic else "empty file")


def error_text(err: BaseException) -> str:
    """One short line for an exception a file caused: its type and the first line of its message."""
    lines = [s.strip() for s in str(err).strip().splitlines()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:  # torch's "Error(s) in loading state_dict for X:" + the first one
        text = f"{text} {lines[1]}"
    if len(text) > 120 and ". " in text:  # torch appends paragraphs of advice after the first sentence
        text = text[:text.index(". ") + 1]
    text = shorten(text, 200)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


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
        require_zip(path)  # np.load would try anything else as a pickle and say so, misleadingly
        z = np.load(path, allow_pickle=False)
        with z:
            meta = json.loads(str(z["meta"][()]))
            if not isinstance(meta, dict):
                raise ValueError(f"meta is a {type(meta).__name__}, not a mapping")
            names = [k[2:] for k in z.files if k.startswith("m/")]
            params = {n: QTensor(z[f"m/{n}"], int(z[f"e/{n}"])) for n in names}
    except _NPZ_ERRORS as err:
        raise UserInputError(str(path), "checkpoint", f"cannot read ({error_text(err)})") from None
    if meta.get("format") != FORMAT:
        raise UserInputError(str(path), "checkpoint", f"format {meta.get('format')!r}, expected {FORMAT}")
    return params, meta
