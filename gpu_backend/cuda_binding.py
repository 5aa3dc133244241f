"""Binding of csrc/niti_cuda_api.h: call the CUDA library's entry points by name from Python.

cffi in ABI mode with the header as the cdef (declarations only), as the project's C library does;
where cffi is not installed (some GPU images lack it) the same header is bound through ctypes
instead, with argument types read from its prototypes. Either way every call takes Python ints
(pointers as addresses, None for NULL) and returns the C return value; turning a nonzero status
into an exception is the library wrapper's job (cuda_device.CudaLib.check). cffi is imported only
when a library is bound, never at import time.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from . import build
from .lib import cdef_text as _cdef_text

API_HEADER = build.CSRC / "niti_cuda_api.h"


def cdef_text(header: Path = API_HEADER) -> str:
    """The header as cffi's cdef reads it (gpu_backend.lib.cdef_text, defaulting to the CUDA API header)."""
    return _cdef_text(header)


_PROTOTYPE = re.compile(r"(int|double|const\s+char\s*\*)\s*(niti_cuda_\w+)\s*\(([^)]*)\)\s*;")
_SCALARS = {"int": "c_int", "int8_t": "c_int8", "int16_t": "c_int16", "int32_t": "c_int32", "int64_t": "c_int64",
            "uint32_t": "c_uint32", "double": "c_double", "char": "c_char"}


def prototypes(header: Path = API_HEADER) -> dict[str, tuple[str, list[str]]]:
    """name -> (return type, [parameter types]) of every entry point, e.g. ('int', ['int64_t', 'void *'])."""
    text = re.sub(r"/\*.*?\*/", " ", cdef_text(header), flags=re.S)
    out: dict[str, tuple[str, list[str]]] = {}
    for ret, name, params in _PROTOTYPE.findall(text):
        types = []
        for p in (q.strip() for q in params.split(",")):
            if not p or p == "void":
                continue
            pointer = "*" in p
            base = p.replace("*", " ").replace("const", " ").split()[0]
            if base not in _SCALARS and base != "void":
                raise ValueError(f"{header}: {name}: parameter type {p!r} is not one the binder knows")
            types.append(f"{base} *" if pointer else base)
        out[name] = (" ".join(ret.split()), types)
    return out


class Binding:
    """Calls the library's entry points by name with ints / None; `kind` is 'cffi' or 'ctypes'."""

    def __init__(self, path: Path, prefer: str = "cffi"):
        self.path = Path(path)
        self.protos = prototypes()
        self.kind = "ctypes"
        if prefer == "cffi":
            try:
                import cffi  # here, not at module level: importing the backend loads nothing
                self.kind = "cffi"
            except ImportError:
                pass
        self._fns: dict[str, Callable] = {}
        if self.kind == "cffi":
            self.ffi = cffi.FFI()
            self.ffi.cdef(cdef_text())
            self.lib = self.ffi.dlopen(str(self.path))
        else:
            import ctypes

            self.lib = ctypes.CDLL(str(self.path))

    def _bind(self, name: str) -> Callable:
        ret, params = self.protos[name]
        if self.kind == "cffi":
            ffi, fn = self.ffi, getattr(self.lib, name)
            ctypes_ = ffi.typeof(fn).args
            pointer = [t.kind == "pointer" for t in ctypes_]

            def call(*args):
                conv = [(ffi.NULL if a is None else ffi.cast(t, a)) if p else a
                        for a, t, p in zip(args, ctypes_, pointer)]
                result = fn(*conv)
                return ffi.string(result).decode(errors="replace") if ret == "const char *" else result
        else:
            import ctypes

            fn = getattr(self.lib, name)
            fn.argtypes = [ctypes.c_void_p if t.endswith("*") else getattr(ctypes, _SCALARS[t]) for t in params]
            fn.restype = {"int": ctypes.c_int, "double": ctypes.c_double, "const char *": ctypes.c_char_p}[ret]

            def call(*args):
                result = fn(*args)
                return result.decode(errors="replace") if ret == "const char *" else result
        return call

    def __call__(self, name: str, *args):
        fn = self._fns.get(name)
        if fn is None:
            if name not in self.protos:
                raise AttributeError(f"{name} is not declared in {API_HEADER.name}")
            fn = self._fns[name] = self._bind(name)
        if len(args) != len(self.protos[name][1]):
            raise TypeError(f"{name} takes {len(self.protos[name][1])} arguments, got {len(args)}")
        return fn(*args)


def _addr(a: np.ndarray) -> int:
    if not a.flags.c_contiguous:
        raise ValueError("host array must be C-contiguous (use np.ascontiguousarray)")
    return a.ctypes.data
