"""CIFAR-10 batches, python-pickle and binary versions: strict readers and writers for tests.

Python version (`cifar-10-batches-py/data_batch_1..5`, `test_batch`): each file is a pickled dict
with b'data' (N, 3072) uint8 (1024 red, then green, then blue, each a 32x32 row-major plane) and
b'labels' (N ints). A pickle can run arbitrary code on load, so it is read with an Unpickler that
resolves only the handful of globals such a file needs (numpy's array and dtype reconstruction,
and the latin-1 `_codecs.encode` that protocol-2 pickles use for bytes); anything else is refused
before it is called.

Binary version (`cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`): records of one
label byte then 3072 pixel bytes in the same plane order; the file size must be a multiple of 3073.

Both are converted to NHWC uint8 (N, 32, 32, 3). Any N per batch file is accepted (the real files
have 10000). Problems raise `UserInputError(path, field, message)`.
"""
from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..contract.errors import UserInputError
from ..contract.values import quote, shorten
from .discovery import CIFAR_BATCHES, cifar_format, is_file
from .idx import NUM_CLASSES, check_labels

HEIGHT = WIDTH = 32
CHANNELS = 3
PIXELS = CHANNELS * HEIGHT * WIDTH  # 3072 bytes per image
RECORD = 1 + PIXELS  # 3073 bytes per binary record: label, then pixels


def chw_to_nhwc(flat: np.ndarray) -> np.ndarray:
    """(N, 3072) planar rows (all red, all green, all blue) -> (N, 32, 32, 3), contiguous.

    >>> planes = np.arange(3072)[None] // 1024 * 100 + np.arange(3072)[None] % 1024  # channel*100 + pixel
    >>> chw_to_nhwc(planes)[0, 0, 5].tolist(), chw_to_nhwc(planes)[0, 1, 0].tolist()
    ([5, 105, 205], [32, 132, 232])
    """
    n = flat.shape[0]
    return np.ascontiguousarray(flat.reshape(n, CHANNELS, HEIGHT, WIDTH).transpose(0, 2, 3, 1))  # (N, H, W, C)


def nhwc_to_chw(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> (N, 3072) planar rows, the on-disk order."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(images.shape[0], PIXELS)  # (N, 3072)


# ---------------------------------------------------------------------------------------------
# Restricted unpickling.
# ---------------------------------------------------------------------------------------------
def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol <= 2 pickles call to rebuild bytes objects.

    Only the latin-1 text -> bytes case those pickles use; any other codec or argument is refused.
    """
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as (str, 'latin1')")
    return text.encode("latin-1")


def _numpy_attr(module_suffix: str, name: str):
    """numpy.<module_suffix>.<name>, from `numpy._core` (numpy 2) or `numpy.core` (numpy 1)."""
    for base in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{base}.{module_suffix}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {module_suffix}.{name}")


def _allowed_global(module: str, name: str):
    """The object a CIFAR batch pickle may name, or None when it is not on the list.

    numpy 1 writes `numpy.core.*`, numpy 2 writes `numpy._core.*`; both mean the same function.
    `_frombuffer` is what numpy uses for pickle protocol 5; `bytes` rebuilds an empty bytes object
    in protocol <= 2. These functions only build arrays, dtypes and bytes from data.
    """
    if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray") and name == "ndarray":
        return np.ndarray
    if module == "numpy" and name == "dtype":
        return _numeric_dtype
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
        return _numpy_attr("multiarray", "_reconstruct")
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        return _numpy_attr("numeric", "_frombuffer")
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module in ("builtins", "__builtin__") and name == "bytes":
        return bytes
    return None


_NUMERIC_DTYPES = frozenset({"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"})
_BYTE_ORDERS = frozenset({"<", ">", "=", "|"})


def _numeric_dtype(name: Any, align: Any = False, copy: Any = True) -> np.dtype:
    """Stand-in for `numpy.dtype` when a pickle calls it: plain numeric dtypes only (no objects,
    records or subarrays, whose state numpy trusts)."""
    if not isinstance(name, str) or name not in _NUMERIC_DTYPES:
        raise pickle.UnpicklingError(f"dtype {quote(name)} is not a plain numeric dtype")
    return np.dtype(name, bool(align), bool(copy))


class _CifarUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python unpickler lets BUILD be checked
    """Resolves only `_allowed_global`; every other class or function is refused unresolved.

    The pure-Python unpickler, so that BUILD (which hands a pickled state to `__setstate__`) can
    be checked: numpy's dtype.__setstate__ believes the flags it is given, and a uint8 dtype
    flagged as holding object references makes numpy treat pixel bytes as pointers.
    """

    def find_class(self, module: str, name: str):
        obj = _allowed_global(module, name)
        if obj is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        return obj

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed")

    def load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.dtype):
            canonical = inst.__reduce__()[2]  # the state numpy itself writes for this dtype
            if not (isinstance(state, tuple) and len(state) == len(canonical) and state[0] == canonical[0]
                    and state[1] in _BYTE_ORDERS and state[2:] == canonical[2:]):
                raise pickle.UnpicklingError(f"dtype state {quote(state)} is not numpy's own for {inst}")
        elif not isinstance(inst, np.ndarray):  # ndarray.__setstate__ checks its data against shape and dtype
            raise pickle.UnpicklingError(f"BUILD of a {type(inst).__name__} is not allowed")
        pickle._Unpickler.load_build(self)  # noqa: SLF001

    # read-only: the opcode table is shared by every load
    dispatch = MappingProxyType({**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build})  # noqa: SLF001


def _field(batch: dict, key: str):
    """batch[b'key'] (python-2 pickles read with encoding='bytes'), or batch['key'] (python 3)."""
    if key.encode() in batch:
        return batch[key.encode()]
    return batch.get(key)


def read_cifar_pickle_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One python-version batch file -> (images (N, 32, 32, 3) uint8, labels (N,) int64)."""
    path = Path(path)
    where = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        file_bytes = len(raw)
        # from memory, not the file: a length field in a corrupt pickle then cannot make the
        # unpickler allocate more than the file holds before it notices the data is short
        batch = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except OSError as err:
        raise UserInputError(where, "file", f"cannot read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - any failure decoding an untrusted file is bad input
        why = f"{type(err).__name__}: {shorten(str(err), 120)}"  # one line, whatever the pickle held
        raise UserInputError(where, "pickle", f"not a CIFAR-10 python batch ({why})") from None
    if not isinstance(batch, dict):
        raise UserInputError(where, "pickle", f"not a CIFAR-10 python batch: holds a {type(batch).__name__}, not a dict")
    data = _field(batch, "data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        got = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserInputError(where, "data", f"b'data' must be a uint8 (N, {PIXELS}) array, got {got}")
    if data.nbytes > file_bytes:  # numpy's ndarray() can declare an array no byte of the file holds
        raise UserInputError(where, "data", f"b'data' claims {data.nbytes} bytes, more than the file's {file_bytes}")
    raw_labels = _field(batch, "labels")
    if not isinstance(raw_labels, (list, tuple, np.ndarray)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw_labels
    ):
        raise UserInputError(where, "labels", "b'labels' must be a list of integers")
    labels = np.array([int(v) for v in raw_labels], dtype=object)  # (N,) python ints: range-checked before int64
    check_labels(labels, NUM_CLASSES, where)
    return _checked(where, data, labels.astype(np.int64))


def read_cifar_bin_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One binary-version batch file -> (images (N, 32, 32, 3) uint8, labels (N,) int64)."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise UserInputError(where, "file", f"cannot read: {err.strerror or err}") from None
    if len(raw) == 0 or len(raw) % RECORD:
        raise UserInputError(where, "size", f"{len(raw)} bytes is not a positive multiple of the {RECORD}-byte record")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD)  # (N, 3073)
    return _checked(where, records[:, 1:], records[:, 0].astype(np.int64))


def _checked(where: str, data: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if data.shape[0] == 0:
        raise UserInputError(where, "size", "batch holds no images")
    if labels.shape[0] != data.shape[0]:
        raise UserInputError(where, "labels", f"{labels.shape[0]} labels for {data.shape[0]} images")
    check_labels(labels, NUM_CLASSES, where)
    return chw_to_nhwc(data), labels


def load_cifar_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, test_images, test_labels) from a folder of batch files.

    The format comes from the files present (see discovery.cifar_format); all six batches of that
    format must be there, and a missing one is reported by name (the field, e.g. `data_batch_3`).
    """
    folder = Path(folder)
    fmt = cifar_format(folder)
    if fmt is None:
        raise UserInputError(str(folder), "cifar10", "no CIFAR-10 batch files (data_batch_1..5, test_batch)")
    ext, reader = (".bin", read_cifar_bin_batch) if fmt == "bin" else ("", read_cifar_pickle_batch)
    parts = []
    for batch in CIFAR_BATCHES:
        path = folder / f"{batch}{ext}"
        if not is_file(path):
            raise UserInputError(str(folder), batch, f"missing file {path.name}")
        parts.append(reader(path))
    train_x = np.concatenate([x for x, _ in parts[:-1]])  # (N, 32, 32, 3)
    train_y = np.concatenate([y for _, y in parts[:-1]])  # (N,)
    test_x, test_y = parts[-1]
    return train_x, train_y, test_x, test_y


# ---------------------------------------------------------------------------------------------
# Writers, for tests and fixtures.
# ---------------------------------------------------------------------------------------------
def _planar(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (HEIGHT, WIDTH, CHANNELS):
        raise ValueError(f"CIFAR images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    labels = np.asarray(labels)
    if labels.shape != (images.shape[0],):
        raise ValueError(f"need one label per image, got {labels.shape} for {images.shape[0]}")
    return nhwc_to_chw(images), labels


def write_cifar_pickle_batch(path: str | Path, images: np.ndarray, labels: np.ndarray, protocol: int = 2) -> Path:
    """Pickle a batch the way the official files are laid out (bytes keys, labels a list of ints).

    Protocol 2 by default, like the python-2 originals; the reader also takes later protocols.
    """
    data, labels = _planar(images, labels)
    batch = {
        b"batch_label": b"written by nitisim tests",
        b"labels": [int(v) for v in labels],
        b"data": data,  # (N, 3072)
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    path = Path(path)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return path


def write_cifar_bin_batch(path: str | Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write a binary-version batch: per image one label byte then its 3072 planar pixel bytes."""
    data, labels = _planar(images, labels)
    records = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)  # (N, 3073)
    path = Path(path)
    path.write_bytes(records.tobytes())
    return path


def write_cifar_folder(
    folder: str | Path,
    train_images: np.ndarray,  # (N, 32, 32, 3) uint8, N >= 5
    train_labels: np.ndarray,  # (N,)
    test_images: np.ndarray,  # (M, 32, 32, 3) uint8
    test_labels: np.ndarray,  # (M,)
    fmt: str = "py",
) -> Path:
    """Write `folder`/cifar-10-batches-{py,bin}/ with the train set split over five batches.

    Returns the batches folder (the one load_cifar_folder reads).
    """
    if fmt not in ("py", "bin"):
        raise ValueError(f"fmt must be 'py' or 'bin', got {fmt!r}")
    out = Path(folder) / f"cifar-10-batches-{fmt}"
    out.mkdir(parents=True, exist_ok=True)
    write = write_cifar_bin_batch if fmt == "bin" else write_cifar_pickle_batch
    ext = ".bin" if fmt == "bin" else ""
    splits = np.array_split(np.arange(len(train_labels)), 5)
    for name, idx in zip(CIFAR_BATCHES[:-1], splits):
        write(out / f"{name}{ext}", np.asarray(train_images)[idx], np.asarray(train_labels)[idx])
    write(out / f"test_batch{ext}", test_images, test_labels)
    return out
