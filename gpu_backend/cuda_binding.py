"""Binding of csrc/niti_cuda_api.h: the CUDA library bound as the CPU one is (c_binding.Binding).

cffi in ABI mode with the header as the cdef: typed entry points called by name with Python ints
(pointers as addresses, None for NULL), the ABI version checked on load, and the constants (status
codes, NITI_MAX_K_S32) read through the library. cffi is a dependency of the package (pyproject),
so there is no second binder. Turning a nonzero status into an exception is c_binding's
(cuda_device.CudaLib.check). cffi is imported only when a library is bound, never at import time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import build, c_binding

API_HEADER = build.CSRC / "niti_cuda_api.h"
PREFIX = "niti_cuda_"  # of every entry point: niti_cuda_abi_version, niti_cuda_last_error, ...


def cdef_text(header: Path = API_HEADER) -> str:
    """The header as cffi's cdef reads it (c_binding.cdef_text, defaulting to the CUDA API header)."""
    return c_binding.cdef_text(header)


def bind(path: Path, error: type[c_binding.CLibError], header: Path = API_HEADER) -> c_binding.Binding:
    """The CUDA library at `path` bound with `header` (refused when their ABI versions differ), its
    node-call entry points declared from the op rows (node_call.cdef)."""
    from .node_call import CUDA_ABI

    return c_binding.Binding(path, header, PREFIX, error, CUDA_ABI.cdef())


def _addr(a: np.ndarray) -> int:
    if not a.flags.c_contiguous:
        raise ValueError("host array must be C-contiguous (use np.ascontiguousarray)")
    return a.ctypes.data
