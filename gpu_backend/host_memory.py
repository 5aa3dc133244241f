"""Keeping freed tensor buffers for reuse: glibc's malloc thresholds set for training's pattern.

A training step allocates the same large arrays (int32 accumulators, int8 activations, gradients)
step after step. glibc serves blocks above its mmap threshold (adaptive, at most 32 MiB) with fresh
mappings, so every step pays a page fault and a page clear for each page of every large output:
about a tenth of a vgg-small-7 step at batch 64 on two cores (docs/results.md, section kernels).
Raising the mmap and trim thresholds keeps freed blocks in the heap, where the next step's arrays of
the same sizes reuse them. Process-wide, like the kernel library's thread count; set once, by the
C backend's kernel table.
"""
from __future__ import annotations

import ctypes
import functools
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
MMAP_THRESHOLD_BYTES = 256 << 20  # larger than any accumulator of the shipped configs at batch 256
TRIM_THRESHOLD_BYTES = 512 << 20  # free heap kept at the top before it is returned to the OS


@functools.lru_cache(maxsize=None)
def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; False (nothing changed) where the C
    library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
