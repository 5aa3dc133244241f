"""cffi (ABI mode) binding of a kernel library from its API header: the CPU and CUDA libraries alike.

`Binding(path, header, prefix, error)` loads one built library with `header` as the cdef: its
prototypes (typed calls), its enums and its `#define NAME <integer>` constants, the headers it
includes with quotes (niti_constants.h) followed. So every number Python shares with the C side
(ABI version, status codes, limits) is read through the loaded library and none is copied here.

On load the library's own `<prefix>abi_version()` is compared with the `<PREFIX>ABI_VERSION` the
header declares; a library built from another version of the header (a stale .so) is refused with
one line. `check(status)` turns a nonzero status into the exception its name in `niti_status`
stands for: IntegerOverflowError (NITI_E_OVERFLOW), MemoryError (NITI_E_NOMEM), `error` otherwise,
carrying the library's own message. cffi is imported only when a header is bound, never at import time.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from nitisim.contract.errors import IntegerOverflowError

# `#define NAME 123` (decimal, hex or octal, optionally commented): what cffi's cdef accepts as a constant.
_INT_DEFINE = re.compile(r"#\s*define\s+\w+\s+(0[xX][0-9a-fA-F]+|\d+)[uUlL]*\s*(/\*.*\*/)?\s*$")
_LOCAL_INCLUDE = re.compile(r'#\s*include\s+"([^"]+)"')
STATUS_TYPE = "niti_status"  # the enum of niti_constants.h every entry point's status belongs to


class CLibError(RuntimeError):
    """A kernel-library call failed; `status` is the C status code, the message is the C message."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def cdef_text(header: Path) -> str:
    """The header as cffi's cdef reads it: quoted includes inlined (once each), integer `#define`s
    kept, every other preprocessor line and the __cplusplus block dropped."""
    return "\n".join(_cdef_lines(Path(header), set()))


def _cdef_lines(header: Path, seen: set[Path]) -> list[str]:
    if header.resolve() in seen:
        return []
    seen.add(header.resolve())
    kept, skipping = [], False
    for line in header.read_text().splitlines():
        stripped = line.strip()
        include = _LOCAL_INCLUDE.match(stripped)
        if stripped.startswith("#ifdef __cplusplus"):
            skipping = True
        elif skipping and stripped.startswith("#endif"):
            skipping = False
        elif skipping:
            continue
        elif include:
            kept += _cdef_lines(header.parent / include.group(1), seen)
        elif not stripped.startswith("#") or _INT_DEFINE.match(stripped):
            kept.append(line)
    return kept


@functools.lru_cache(maxsize=None)
def header_ffi(header: Path, extra_cdef: str = ""):
    """One FFI per API header, with the header declared (cdef_text), then `extra_cdef` (the node-call
    entry points gpu_backend/node_call.py declares from the op rows)."""
    import cffi

    ffi = cffi.FFI()
    ffi.cdef(cdef_text(header) + "\n" + extra_cdef)
    return ffi


class Binding:
    """One loaded library: `lib` (cffi, typed by the header), its constants, status checks, and calls
    by name with Python ints for pointers (addresses, None for NULL)."""

    def __init__(self, path: Path, header: Path, prefix: str, error: type[CLibError] = CLibError,
                 extra_cdef: str = ""):
        self.path, self.header, self.prefix, self.error = Path(path), Path(header), prefix, error
        self.ffi = header_ffi(self.header, extra_cdef)
        self.lib = self.ffi.dlopen(str(self.path))
        self._fns: dict = {}
        found = self(f"{prefix}abi_version")
        declared = self.constant(f"{prefix.upper()}ABI_VERSION")
        if found != declared:
            raise error(self.status_code("NITI_E_ARG"), f"{self.path}: ABI version {found}, but {self.header.name} "
                        f"(the header Python binds it with) declares {declared}; rebuild the library")

    # ---- constants --------------------------------------------------------------------------------
    def constant(self, name: str) -> int:
        """An enum value or integer #define of the header (AttributeError if it declares none)."""
        value = getattr(self.lib, name)
        if not isinstance(value, int):
            raise AttributeError(f"{name} is not an integer constant of {self.header.name}")
        return value

    @functools.cached_property
    def status_codes(self) -> Mapping[str, int]:
        """name -> value of every status (the niti_status enum), e.g. {'NITI_OK': 0, 'NITI_E_ARG': 1, ...}."""
        return MappingProxyType(dict(self.ffi.typeof(STATUS_TYPE).relements))

    def status_code(self, name: str) -> int:
        return self.status_codes[name]

    # ---- calls ----------------------------------------------------------------------------------------
    def last_error(self) -> str:
        return self.ffi.string(getattr(self.lib, f"{self.prefix}last_error")()).decode(errors="replace")

    def check(self, status: int) -> None:
        """Raise the library's error for a nonzero status (its message from `<prefix>last_error`)."""
        if status == self.status_codes["NITI_OK"]:
            return
        message = self.last_error()
        if status == self.status_codes["NITI_E_OVERFLOW"]:
            raise IntegerOverflowError(message)
        if status == self.status_codes["NITI_E_NOMEM"]:
            raise MemoryError(message)
        raise self.error(status, message)

    def __call__(self, name: str, *args):
        """Call entry point `name` with ints (pointer arguments as addresses, None for NULL): its C
        return value, a `const char *` one as a str."""
        fn = self._fns.get(name)
        if fn is None:
            fn = self._fns[name] = self._typed(name)
        return fn(*args)

    def _typed(self, name: str):
        ffi = self.ffi
        try:
            fn = getattr(self.lib, name)
        except AttributeError:
            raise AttributeError(f"{name} is not declared in {self.header.name}") from None
        kind = ffi.typeof(fn)
        params = kind.args
        pointer = [t.kind == "pointer" for t in params]
        returns_string = kind.result.kind == "pointer" and kind.result.item.cname == "char"

        def call(*args):
            if len(args) != len(params):
                raise TypeError(f"{name} takes {len(params)} arguments, got {len(args)}")
            conv = [(ffi.NULL if a is None else ffi.cast(t, a)) if p else a for a, t, p in zip(args, params, pointer)]
            result = fn(*conv)
            return ffi.string(result).decode(errors="replace") if returns_string else result
        return call
