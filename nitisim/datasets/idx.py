"""IDX files (the MNIST / Fashion-MNIST format): a strict reader and a small writer for tests.

An IDX file is a 4-byte magic number `00 00 <type> <ndim>`, then `ndim` big-endian uint32
dimension sizes, then the row-major payload. This project only reads type 0x08 (unsigned byte):
magic 0x00000801 for a label vector (N,) and 0x00000803 for an image stack (N, H, W).

Files may be gzipped or raw; which one is decided by the gzip magic bytes (1f 8b), never by the
file name, because downloads are routinely unpacked without being renamed (and vice versa).
Every problem with a file raises `UserInputError(path, field, message)` with field one of
`file`, `gzip`, `magic`, `dims`, `size`, `labels`. Payloads are streamed, never decompressed past
their declared size, so a small gzip bomb cannot claim gigabytes.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..contract.errors import UserInputError
from ..contract.values import quote, shorten

GZIP_MAGIC = b"\x1f\x8b"
IDX_UBYTE = 0x08  # the only element type MNIST-family files use
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
NUM_CLASSES = 10


# The largest MNIST-family file (train images) holds 60000 x 28 x 28 = 47,040,000 payload bytes;
# a header declaring more than ~5x that is not one of these datasets, and reading it would let a
# few kilobytes of gzip claim gigabytes of memory.
MAX_PAYLOAD_BYTES = 2**28
_CHUNK = 1 << 20  # bytes per read while streaming the payload


def _open_stream(f: BinaryIO) -> tuple[BinaryIO, int | None]:
    """(stream, file size): a streaming gzip reader over `f` and None when the file starts with the
    gzip magic (its decompressed size is unknown until read), else `f` itself and its size."""
    magic = f.read(2)
    f.seek(0)
    if magic == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), None
    return f, os.fstat(f.fileno()).st_size


def _read_up_to(stream: BinaryIO, out: memoryview) -> int:
    """Fill `out` from `stream` until it is full or the stream ends; the bytes read."""
    got = 0
    while got < len(out):
        n = stream.readinto(out[got: got + _CHUNK])
        if not n:
            break
        got += n
    return got


def read_idx(path: str | Path, ndim: int | None = None, max_bytes: int = MAX_PAYLOAD_BYTES) -> np.ndarray:
    """Read an unsigned-byte IDX file into a read-only uint8 array of the declared shape.

    `ndim`, when given, is the dimension count the caller needs (1 labels, 3 images); a file with a
    different count is rejected. The payload must hold exactly prod(dims) bytes: a truncated file
    and one with trailing bytes are both errors (either means the file is not what it claims).
    The payload is streamed (decompressed as it is read) and never past its declared size plus
    one byte, and a declared size over `max_bytes` is refused before any of it is read, so a
    gzip bomb costs no more memory than an honest file.
    """
    path = Path(path)
    where = str(path)
    try:
        with open(path, "rb") as f:
            return _read_idx_stream(where, *_open_stream(f), ndim, max_bytes)
    except UserInputError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # truncated stream, bad CRC, not gzip after all
        raise UserInputError(where, "gzip", f"corrupt gzip data ({shorten(str(err), 120)})") from None
    except OSError as err:  # missing, a directory, unreadable: the user's file, so a one-line error
        raise UserInputError(where, "file", f"cannot read: {err.strerror or err}") from None


def _size_error(where: str, got: int | str, need: int, dims: tuple[int, ...], trailing: bool) -> UserInputError:
    kind = "trailing bytes" if trailing else "truncated"
    return UserInputError(where, "size", f"{kind}: payload is {got} bytes, dims {quote(dims)} need {quote(need)}")


def _read_idx_stream(where: str, stream: BinaryIO, file_bytes: int | None, ndim: int | None,
                     max_bytes: int) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise UserInputError(where, "magic", f"file is {len(head)} bytes, too short for an IDX header")
    magic = int.from_bytes(head, "big")
    if head[0] != 0 or head[1] != 0 or head[2] != IDX_UBYTE:
        raise UserInputError(
            where, "magic",
            f"0x{magic:08x} is not an unsigned-byte IDX magic "
            f"(expected 0x{LABELS_MAGIC:08x} labels or 0x{IMAGES_MAGIC:08x} images)",
        )
    file_ndim = head[3]
    if file_ndim == 0 or (ndim is not None and file_ndim != ndim):
        want = f"{ndim}" if ndim is not None else "at least 1"
        raise UserInputError(where, "dims", f"file declares {file_ndim} dimensions, expected {want}")
    header = 4 + 4 * file_ndim
    raw_dims = stream.read(4 * file_ndim)
    if len(raw_dims) < 4 * file_ndim:
        raise UserInputError(where, "size", f"file is {4 + len(raw_dims)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
    need = math.prod(dims)  # python ints: no overflow for absurd declared sizes
    if file_bytes is not None and file_bytes - header != need:  # a raw file's size is known up front
        raise _size_error(where, file_bytes - header, need, dims, trailing=file_bytes - header > need)
    if need > max_bytes:
        raise UserInputError(where, "size", f"dims {quote(dims)} declare {quote(need)} bytes, over the {max_bytes} an "
                             "MNIST-family file can hold")
    payload = np.empty(need + 1, dtype=np.uint8)  # one spare byte: filling it means trailing data
    got = _read_up_to(stream, memoryview(payload))
    if got != need:
        raise _size_error(where, got if got < need else f"more than {need}", need, dims, trailing=got > need)
    arr = payload[:need].reshape(dims)
    arr.flags.writeable = False
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
    """Raise UserInputError(where, 'labels', ...) naming the first label outside 0..num_classes-1.

    `labels` may be an object array of Python ints (a pickle's labels, which int64 could not hold):
    the bad one is then quoted, so even a label of thousands of digits stays one short line.
    """
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise UserInputError(
            where, "labels",
            f"label {quote(int(labels[i]))} at index {i} is outside 0..{num_classes - 1} ({bad.size} bad in all)",
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
