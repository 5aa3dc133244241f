"""Arrays that start on a 64-byte cache line.

numpy aligns array data to 16 bytes only. The AMX engine reads a GEMM's A rows in place only where
they start on cache lines (a 64-byte tile row straddling two lines is slower than packing it), so the
C library's outputs, which later ops read, are allocated here; torch's allocator aligns its own
tensors the same way.
"""
from __future__ import annotations

import numpy as np

CACHE_LINE_BYTES = 64


def empty_aligned(shape, dtype, alignment: int = CACHE_LINE_BYTES) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an `alignment`-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = (-raw.ctypes.data) % alignment
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(a: np.ndarray, alignment: int = CACHE_LINE_BYTES) -> np.ndarray:
    """A C-contiguous copy of `a` that starts on an `alignment`-byte boundary."""
    out = empty_aligned(a.shape, a.dtype, alignment)
    out[...] = a
    return out
