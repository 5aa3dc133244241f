"""IDX files (the MNIST / Fashion-MNIST format): a strict reader and a small writer for tests.

An IDX file is a 4-byte magic number `00 00 <type> <ndim>`, then `ndim` big-endian uint32
dimension sizes, then the row-major payload. This project only reads type 0x08 (unsigned byte):
magic 0x00000801 for a label vector (N,) and 0x00000803 for an image stack (N, H, W).

Files may be gzipped or raw; which one is decided by the gzip magic bytes (1f 8b), never by the
file name, because downloads are routinely unpacked without being renamed (and vice versa).
Every problem with a file raises `UserInputError(path, field, message)` with field one of
`file`, `gzip`, `magic`, `dims`, `size`, `labels`.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserInputError

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08  # the only element type MNIST-family files use
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
NUM_CLASSES = 10


def read_bytes_maybe_gzip(path: str | Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic (not when named .gz)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:  # missing, a directory, unreadable: the user's file, so a one-line error
        raise UserInputError(str(path), "file", f"cannot read: {err.strerror or err}") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:  # truncated stream, bad CRC, trailing garbage
        raise UserInputError(str(path), "gzip", f"corrupt gzip data ({err})") from None


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file into a read-only uint8 array of the declared shape.

    `ndim`, when given, is the dimension count the caller needs (1 labels, 3 images); a file with a
    different count is rejected. The payload must hold exactly prod(dims) bytes: a truncated file
    and one with trailing bytes are both errors (either means the file is not what it claims).
    """
    data = read_bytes_maybe_gzip(path)
    where = str(path)
    if len(data) < 4:
        raise UserInputError(where, "magic", f"file is {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if data[0] != 0 or data[1] != 0 or data[2] != IDX_UBYTE:
        raise UserInputError(
            where, "magic",
            f"0x{magic:08x} is not an unsigned-byte IDX magic "
            f"(expected 0x{LABELS_MAGIC:08x} labels or 0x{IMAGES_MAGIC:08x} images)",
        )
    file_ndim = data[3]
    if file_ndim == 0 or (ndim is not None and file_ndim != ndim):
        want = f"{ndim}" if ndim is not None else "at least 1"
        raise UserInputError(where, "dims", f"file declares {file_ndim} dimensions, expected {want}")
    header = 4 + 4 * file_ndim
    if len(data) < header:
        raise UserInputError(where, "size", f"file is {len(data)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=file_ndim, offset=4))
    need = 1
    for d in dims:
        need *= d  # python ints: no overflow for absurd declared sizes
    got = len(data) - header
    if got != need:
        kind = "truncated" if got < need else "trailing bytes"
        raise UserInputError(where, "size", f"{kind}: payload is {got} bytes, dims {dims} need {need}")
    arr = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    arr.flags.writeable = False  # frombuffer over bytes is already read-only; say so explicitly
    return arr


def read_idx_labels(path: str | Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Labels (N,) uint8 from a 0x00000801 file, each checked to lie in 0..num_classes-1."""
    labels = read_idx(path, ndim=1)  # (N,)
    check_labels(labels, num_classes, str(path))
    return labels


def read_idx_images(path: str | Path) -> np.ndarray:
    """Images (N, H, W) uint8 from a 0x00000803 file."""
    return read_idx(path, ndim=3)  # (N, H, W)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise UserInputError(where, 'labels', ...) naming the first label outside 0..num_classes-1."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise UserInputError(
            where, "labels",
            f"label {int(labels[i])} at index {i} is outside 0..{num_classes - 1} ({bad.size} bad in all)",
        )


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write a uint8 array as an IDX file; gzipped when `compress` (default: when path ends in .gz).

    For tests and fixtures: the reader must accept what this writes, raw or gzipped.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 only, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    path = Path(path)
    header = bytes([0, 0, IDX_UBYTE, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        payload = gzip.compress(payload, compresslevel=1, mtime=0)  # mtime=0: byte-identical reruns
    path.write_bytes(payload)
    return path


def write_idx_folder(
    folder: str | Path,
    train_images: np.ndarray,  # (N, H, W) or (N, H, W, 1) uint8
    train_labels: np.ndarray,  # (N,)
    test_images: np.ndarray,  # (M, H, W) or (M, H, W, 1) uint8
    test_labels: np.ndarray,  # (M,)
    gz: bool = True,
    dotted: bool = False,
) -> Path:
    """Make an MNIST-style folder (train-/t10k- images and labels) for tests.

    `dotted` uses the `train-images.idx3-ubyte` spelling instead of `train-images-idx3-ubyte`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sep = "." if dotted else "-"
    ext = ".gz" if gz else ""
    for prefix, images, labels in (("train", train_images, train_labels), ("t10k", test_images, test_labels)):
        images = np.asarray(images)
        if images.ndim == 4:
            images = images[..., 0]  # IDX stores (N, H, W); the channel axis is added on load
        write_idx(folder / f"{prefix}-images{sep}idx3-ubyte{ext}", images)
        write_idx(folder / f"{prefix}-labels{sep}idx1-ubyte{ext}", np.asarray(labels).astype(np.uint8))
    return folder
