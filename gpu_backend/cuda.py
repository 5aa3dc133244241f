"""The CUDA backend's Python side: libniti_cuda.so, device tensors, and the kernel table.

Nothing is compiled, loaded or touched on the GPU at import time. `cuda_library()` builds the
library on first use (gpu_backend.build.build_cuda: nvcc, cached by source hash), loads it and
initialises the device; when any of that fails it raises `CudaUnavailable`, whose message says
what was tried and how to fix it. `cuda_status()` answers the same question without raising.

Binding: cffi in ABI mode with `csrc/niti_cuda_api.h` as the cdef (declarations only), as the
project's C library does; where cffi is not installed (some GPU images lack it) the same header
is bound through ctypes instead, with argument types read from the prototypes.
Either way every call takes Python ints (pointers as addresses, None for NULL) and a nonzero status
becomes an exception carrying the library's message: IntegerOverflowError (2), MemoryError (3),
CudaError otherwise.

`DeviceTensor` is the device counterpart of `nitisim.numerics.QTensor`: a device buffer, a shape,
an integer dtype and an exponent slot (an int32 in device memory, shared by tensors whose exponent
is the same, e.g. a ReLU's output and input). Its `m` and `e` properties copy to the host (and
wait), so code written for QTensor (predict, checkpoints) keeps working. `cuda_kernel_table()` has
the op names and signature of `nitisim.reference.REFERENCE_KERNELS`; its kernels accept device
tensors, and host QTensors / label arrays, which they upload, so

    table = cuda_kernel_table()
    result = train_step(graph, table, params, x, labels, ctx)   # params: QTensor or DeviceTensor

runs a whole step on the GPU with no host synchronisation: exponents are computed and consumed on
the device, and memory is allocated and freed in stream order. result.params are DeviceTensors;
`to_host()` turns one back into a QTensor.

Data-dependent checks (int32 overflow of a narrowed weight gradient or a momentum velocity, bad
labels) run on the device and surface at the next synchronising call (`to_host`, `.m`, `.e`,
`synchronize()`), not at the op that failed.

`emulated_library()` is the same library, from the same .cu sources, compiled by g++ against the
host emulator in csrc/cuda_emulation.cu (CUDA threads as fibers with real barriers, mma and
cp.async as the PTX ISA defines them): slow, exact, and runnable anywhere, so tests/test_cuda.py
checks every kernel on machines without a GPU too. Pass it as `cuda_kernel_table(lib=...)`.
"""
from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import weakref
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping

import numpy as np

from nitisim.errors import IntegerOverflowError
from nitisim.numerics import LOSS_VARIANTS, ROUNDING_MODES, SHADOW_FRAC_BITS, QTensor

from . import build
from .lib import CLibError
from .lib import cdef_text as _cdef_text

ABI_VERSION = 3  # must equal NITI_CUDA_ABI_VERSION in csrc/cuda_lib.cu
API_HEADER = build.CSRC / "niti_cuda_api.h"
STATUS_INVALID_ARGUMENT, STATUS_OVERFLOW, STATUS_OUT_OF_MEMORY, STATUS_CUDA = 1, 2, 3, 4
MAX_K_INT32 = 131071  # NITI_MAX_K_S32: longest reduction an int32 accumulator provably holds
GEMM_ENGINES = ("auto", "mma", "dp4a")  # niti_cuda_set_gemm_kernel codes 0, 1, 2
CONV_MODES = ("auto", "gather")  # niti_cuda_set_conv_mode codes 0, 1
CONV_PATHS = ("gather", "implicit")  # niti_cuda_conv_path results 0, 1
CONV_OPS = ("forward", "input_grad", "weight_grad")  # niti_cuda_conv_path op codes 0, 1, 2
_DTYPES = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64)}


class CudaUnavailable(RuntimeError):
    """No usable CUDA backend here; the message says what was tried and how to fix it."""


class CudaError(CLibError):
    """A CUDA library call failed; `status` is the C status code, the message is the library's."""


# ------------------------------------------------------------------------------------------ binding
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
                import cffi  # noqa: F401
                self.kind = "cffi"
            except ImportError:
                pass
        self._fns: dict[str, Callable] = {}
        if self.kind == "cffi":
            import cffi

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


def _u32(v: int) -> int:
    return int(v) & 0xFFFFFFFF  # hash coordinates are taken mod 2**32, as in numerics.hash_key


# ------------------------------------------------------------------------------------------ library
class CudaLib:
    """The loaded library on one device: the device interface (tinygrad style) and raw calls."""

    def __init__(self, path: Path, device: int = 0, prefer: str = "cffi"):
        self.path = Path(path)
        self.bind = Binding(self.path, prefer)
        found = self.bind("niti_cuda_abi_version")
        if found != ABI_VERSION:
            raise CudaError(0, f"{self.path}: ABI version {found}, the Python side expects {ABI_VERSION}; rebuild it")
        self.check(self.bind("niti_cuda_init", int(device)))
        self.device = int(device)

    # ---- plumbing ---------------------------------------------------------------------------------
    def check(self, status: int) -> None:
        if status == 0:
            return
        message = self.bind("niti_cuda_last_error")
        if status == STATUS_OVERFLOW:
            raise IntegerOverflowError(message)
        if status == STATUS_OUT_OF_MEMORY:
            raise MemoryError(message)
        raise CudaError(status, message)

    def call(self, name: str, *args) -> None:
        """Call an entry point and raise its error for a nonzero status."""
        self.check(self.bind(name, *args))

    # ---- device interface ------------------------------------------------------------------------
    def device_count(self) -> int:
        out = np.zeros(1, np.int32)
        self.call("niti_cuda_device_count", _addr(out))
        return int(out[0])

    def device_name(self, device: int | None = None) -> str:
        buf = np.zeros(256, np.uint8)
        self.call("niti_cuda_device_name", self.device if device is None else int(device), _addr(buf), buf.size)
        return bytes(buf).split(b"\0", 1)[0].decode(errors="replace")

    def capability(self, device: int | None = None) -> tuple[int, int]:
        major, minor = np.zeros(1, np.int32), np.zeros(1, np.int32)
        self.call("niti_cuda_device_capability", self.device if device is None else int(device), _addr(major),
                  _addr(minor))
        return int(major[0]), int(minor[0])

    def alloc(self, nbytes: int) -> int:
        """Device address of nbytes of fresh memory (0 for 0 bytes); free it with free()."""
        out = np.zeros(1, np.uint64)
        self.call("niti_cuda_alloc", int(nbytes), _addr(out))
        return int(out[0])

    def free(self, ptr: int) -> None:
        self.call("niti_cuda_free", ptr or None)

    def _free_quiet(self, ptr: int) -> None:
        """Finalizer form of free(): never raises (it runs from the garbage collector)."""
        try:
            self.bind("niti_cuda_free", ptr)
        except Exception:  # noqa: BLE001 - nothing sensible to do about a failed free at collection time
            pass

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        self.call("niti_cuda_copy_in", ptr or None, _addr(host), host.nbytes)

    def copy_out(self, host: np.ndarray, ptr: int) -> np.ndarray:
        """Fill `host` from device memory; waits, and raises any deferred device-check failure."""
        self.call("niti_cuda_copy_out", _addr(host), ptr or None, host.nbytes)
        return host

    def synchronize(self) -> None:
        """Wait for the queued work; raises any deferred device-check failure."""
        self.call("niti_cuda_synchronize")

    @property
    def gemm_engine(self) -> str:
        out = np.zeros(1, np.int32)
        self.call("niti_cuda_get_gemm_kernel", _addr(out))
        return GEMM_ENGINES[int(out[0])]

    @gemm_engine.setter
    def gemm_engine(self, name: str) -> None:
        if name not in GEMM_ENGINES:
            raise ValueError(f"unknown GEMM engine {name!r}; expected one of {GEMM_ENGINES}")
        self.call("niti_cuda_set_gemm_kernel", GEMM_ENGINES.index(name))

    @property
    def conv_mode(self) -> str:
        """How conv ops get their A operand: 'auto' (implicit where conv_path says so) or 'gather'."""
        out = np.zeros(1, np.int32)
        self.call("niti_cuda_get_conv_mode", _addr(out))
        return CONV_MODES[int(out[0])]

    @conv_mode.setter
    def conv_mode(self, name: str) -> None:
        if name not in CONV_MODES:
            raise ValueError(f"unknown conv mode {name!r}; expected one of {CONV_MODES}")
        self.call("niti_cuda_set_conv_mode", CONV_MODES.index(name))

    def conv_path(self, op: str, x_shape, out_c: int, kernel: int, stride: int, padding: int, src: int = 0) -> str:
        """'implicit' or 'gather': the A-operand path conv `op` (CONV_OPS) of an NHWC input x_shape
        would take now (conv mode, GEMM engine, shape; src: the address of x for the forward, of dy
        for the input gradient, 0 standing for any 16-byte aligned tensor)."""
        if op not in CONV_OPS:
            raise ValueError(f"unknown conv op {op!r}; expected one of {CONV_OPS}")
        n, h, w, c = (int(d) for d in x_shape)
        k, s, p = int(kernel), int(stride), int(padding)
        out = np.zeros(1, np.int32)
        self.call("niti_cuda_conv_path", CONV_OPS.index(op), n, h, w, c, int(out_c), k, k, s, s, p, p, src or None,
                  _addr(out))
        return CONV_PATHS[int(out[0])]

    def timer_start(self) -> None:
        self.call("niti_cuda_timer_start")

    def timer_stop(self) -> float:
        """Milliseconds of stream time since timer_start (CUDA events; waits)."""
        out = np.zeros(1, np.float64)
        self.call("niti_cuda_timer_stop", _addr(out))
        return float(out[0])

    def marks_begin(self, capacity: int) -> None:
        """Record mark 0 on the stream, with room for `capacity` more marks."""
        self.call("niti_cuda_marks_begin", int(capacity))

    def mark(self) -> None:
        """Record the next mark on the stream (returns at once)."""
        self.call("niti_cuda_mark")

    def marks_read(self, n: int) -> np.ndarray:
        """Milliseconds between consecutive marks, (n,): waits for the last mark."""
        out = np.zeros(max(int(n), 1), np.float64)
        self.call("niti_cuda_marks_read", int(n), _addr(out))
        return out[: int(n)]

    # ---- tensors ------------------------------------------------------------------------------------
    def empty(self, shape, dtype, exp: "_DeviceBuffer | bool | None" = True) -> "DeviceTensor":
        """A new device tensor; exp=True gives it a fresh (unset) exponent slot, a slot shares one."""
        dtype = np.dtype(dtype)
        shape = tuple(int(d) for d in shape)
        size = math.prod(shape)
        slot = _DeviceBuffer(self, 4) if exp is True else (exp or None)
        return DeviceTensor(self, _DeviceBuffer(self, size * dtype.itemsize), shape, dtype, slot)

    def to_device(self, t: QTensor | np.ndarray) -> "DeviceTensor":
        """Upload a QTensor (mantissa and exponent) or a bare integer array (no exponent)."""
        if isinstance(t, DeviceTensor):
            return t
        if isinstance(t, QTensor):
            m, e = np.ascontiguousarray(t.m), t.e
        else:
            m, e = np.ascontiguousarray(t), None
        if m.dtype not in _DTYPES:
            raise TypeError(f"to_device: expected int8/16/32/64 values, got {m.dtype}")
        out = self.empty(m.shape, m.dtype, exp=e is not None)
        self.copy_in(out.ptr, m)
        if e is not None:
            self.copy_in(out.exp.ptr, np.array([int(e)], np.int32))
        return out

    def gemm(self, a: "DeviceTensor", b: "DeviceTensor", wide: bool = False) -> "DeviceTensor":
        """a (M, K) @ b (N, K)^T of int8 device matrices, int32 (K <= 131071) or int64 when wide."""
        (m, k), (n, kb) = a.shape, b.shape
        if a.dtype != np.int8 or b.dtype != np.int8 or k != kb:
            raise ValueError(f"gemm: need int8 (M, K) and (N, K), got {a.dtype}{a.shape} and {b.dtype}{b.shape}")
        c = self.empty((m, n), np.int64 if wide else np.int32, exp=None)
        self.call("niti_cuda_gemm_s8s8s64" if wide else "niti_cuda_gemm_s8s8s32", m, n, k, a.ptr, b.ptr, c.ptr)
        return c

    def range_bits(self, t: "DeviceTensor") -> int:
        """b(x) of an int32 or int64 device tensor (computed on the device; this call waits)."""
        out = self.empty((1,), np.int32, exp=None)
        name = "niti_cuda_range_bits_s64" if t.dtype == np.int64 else "niti_cuda_range_bits_s32"
        self.call(name, t.size, t.ptr, out.ptr)
        return int(out.m[0])


class _DeviceBuffer:
    """Owns one device allocation; freed (stream-ordered) when the last reference goes."""

    __slots__ = ("ptr", "nbytes", "_finalizer", "__weakref__")

    def __init__(self, lib: CudaLib, nbytes: int):
        self.nbytes = int(nbytes)
        self.ptr = lib.alloc(self.nbytes)
        self._finalizer = None
        if self.ptr:
            self._finalizer = weakref.finalize(self, lib._free_quiet, self.ptr)
            self._finalizer.atexit = False  # the CUDA runtime may be gone at interpreter exit


class DeviceTensor:
    """An integer array in device memory plus an optional device-resident int32 exponent.

    `m` / `e` copy to the host (waiting for the queued work), like QTensor's fields; `reshape`
    returns a view sharing the buffer and the exponent slot.
    """

    __slots__ = ("lib", "buffer", "shape", "dtype", "exp")

    def __init__(self, lib: CudaLib, buffer: _DeviceBuffer, shape: tuple[int, ...], dtype: np.dtype,
                 exp: _DeviceBuffer | None):
        self.lib, self.buffer, self.shape, self.dtype, self.exp = lib, buffer, tuple(shape), np.dtype(dtype), exp

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @property
    def exp_ptr(self) -> int | None:
        return self.exp.ptr if self.exp is not None else None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def m(self) -> np.ndarray:
        """A host copy of the values (waits for the queued work)."""
        return self.lib.copy_out(np.empty(self.shape, self.dtype), self.ptr)

    @property
    def e(self) -> int:
        """The exponent, read from the device (waits for the queued work)."""
        if self.exp is None:
            raise ValueError("this device tensor has no exponent (a label array?)")
        return int(self.lib.copy_out(np.zeros(1, np.int32), self.exp.ptr)[0])

    def reshape(self, shape) -> "DeviceTensor":
        shape = tuple(int(d) for d in shape)
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            shape = tuple(self.size // known if d == -1 else d for d in shape)
        if math.prod(shape) != self.size:
            raise ValueError(f"cannot reshape {self.shape} into {shape}")
        return DeviceTensor(self.lib, self.buffer, shape, self.dtype, self.exp)

    def to_host(self) -> QTensor:
        return QTensor(self.m, self.e)

    def __repr__(self) -> str:
        return f"DeviceTensor(shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"


# ------------------------------------------------------------------------------------------ loading
_FIX = ("fix: run on a machine with an NVIDIA GPU of compute capability 8.0 or newer and a driver at least as new as "
        "the CUDA toolkit that builds the library (`nvidia-smi` shows the driver's CUDA version, `nvcc --version` the "
        "toolkit's), or use the cpu / numpy backends")


@functools.lru_cache(maxsize=None)
def cuda_library(device: int = 0) -> CudaLib:
    """The CUDA library on `device`: built on first use (nvcc), loaded once, device initialised.

    Raises CudaUnavailable saying what was tried (build, load, device query) and how to fix it.
    """
    try:
        path = build.build_cuda()
    except build.BuildError as err:
        raise CudaUnavailable(f"cannot build libniti_cuda.so: {err}") from err
    try:
        return CudaLib(path, device)
    except OSError as err:
        raise CudaUnavailable(f"built {path} but cannot load it ({err}); {_FIX}") from err
    except (CudaError, IntegerOverflowError, MemoryError) as err:
        raise CudaUnavailable(f"built and loaded {path}, but no usable CUDA device {device}: {err}. {_FIX}") from err


EMULATOR_LIBRARY = "libniti_cuda_emu.so"
EMULATOR_FLAGS = ("-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra", "-Wno-unused-function",
                  "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-DNITI_CUDA_EMULATION")


def build_emulator(force: bool = False) -> Path:
    """libniti_cuda_emu.so: the CUDA library's own sources compiled by g++ against the host emulator
    in csrc/cuda_emulation.cu (CUDA threads as fibers, mma and cp.async emulated per the PTX ISA).

    For testing the kernels where there is no GPU: exact but slow (seconds for a small training
    step). Cached by the hash of every source, header, flag and the compiler's identity.
    """
    cxx = os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise CudaUnavailable(f"no C++ compiler for the CUDA emulator: tried {cxx!r} ($CXX, default g++); install g++")
    sources = sorted(p for p in build.CSRC.glob("*.cu") if p.name != "cuda_emulation.cu")
    headers = sorted(build.CSRC.glob("*.h")) + sorted(build.CSRC.glob("*.cuh")) + [build.CSRC / "cuda_emulation.cu"]
    identity = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256()
    for path in sources + headers:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update("\0".join([identity, *EMULATOR_FLAGS]).encode())
    target = build.cache_root() / "build" / digest.hexdigest()[:16] / EMULATOR_LIBRARY
    if target.exists() and not force:
        return target
    shim = target.parent / "emulator_include"
    shim.mkdir(parents=True, exist_ok=True)
    emulation = (build.CSRC / "cuda_emulation.cu").resolve()
    for name, text in (("cuda_runtime.h", f'#include "{emulation}"\n'),
                       ("emulator_impl.cpp", f'#define NITI_CUDA_EMULATION_IMPL\n#include "{emulation}"\n')):
        fd, tmp = tempfile.mkstemp(prefix=name + ".", dir=shim)  # atomic: parallel builders (pytest -n)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, shim / name)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    command = [cxx, *EMULATOR_FLAGS, f"-I{shim}", f"-I{build.CSRC}", "-x", "c++", *map(str, sources),
               str(shim / "emulator_impl.cpp"), "-o", tmp]
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CudaUnavailable(f"building the CUDA emulator failed (exit {proc.returncode}).\ncommand: "
                                  f"{' '.join(command)}\n{(proc.stderr or proc.stdout)[-4000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@functools.lru_cache(maxsize=None)
def emulated_library() -> CudaLib:
    """The CUDA library built for the host emulator (build_emulator), loaded once: the same C API
    and kernels, run on the CPU; for tests on machines without a GPU."""
    return CudaLib(build_emulator())


def cuda_status(device: int = 0) -> tuple[bool, str]:
    """(usable, one line): the device and GEMM engine, or why the CUDA backend cannot run here."""
    try:
        lib = cuda_library(device)
        major, minor = lib.capability()
        return True, f"{lib.device_name()} (compute capability {major}.{minor}, GEMM engine {lib.gemm_engine})"
    except CudaUnavailable as err:
        return False, str(err)


class DeviceNodeClock:
    """nitisim.executor.NodeClock on the stream: an event recorded after each node, so a node's time
    is the stream time between its mark and the previous one (its kernels, plus any wait for the host
    to queue them), not the microseconds its asynchronous launch took on the host."""

    def __init__(self, lib: CudaLib):
        self.lib = lib
        self._laps = 0

    def start(self, nodes: int) -> None:
        self.lib.marks_begin(nodes)
        self._laps = 0

    def lap(self) -> None:
        self.lib.mark()
        self._laps += 1

    def read(self) -> list[float]:
        laps, self._laps = self._laps, 0
        return [ms * 1e-3 for ms in self.lib.marks_read(laps).tolist()]


def device_node_clock(device: int = 0, lib: CudaLib | None = None) -> DeviceNodeClock:
    """The node clock of the CUDA backend (on the library its kernel table uses)."""
    return DeviceNodeClock(lib or cuda_library(device))


def to_device(t: QTensor | np.ndarray, lib: CudaLib | None = None) -> DeviceTensor:
    """Upload a QTensor (or a bare integer array, e.g. labels) to the GPU."""
    return (lib or cuda_library()).to_device(t)


def to_host(t: DeviceTensor) -> QTensor:
    """The QTensor of a device tensor (waits for the queued work)."""
    return t.to_host()


# ------------------------------------------------------------------------------------------ kernels
def _mu(mu: int) -> int:
    return max(-(1 << 20), min(1 << 20, int(mu)))  # the library treats |mu| > 64 like 64; keep it a C int


class _Kernels:
    """One method per op, each (node, ctx, *inputs) -> tuple of DeviceTensors, as in nitisim.reference."""

    def __init__(self, lib: CudaLib):
        self.lib = lib

    def _in(self, t: Any, dtype, name: str, exp: bool = True) -> DeviceTensor:
        t = self.lib.to_device(t)
        if t.dtype != np.dtype(dtype):
            raise TypeError(f"{name}: expected {np.dtype(dtype)}, got {t.dtype}")
        if exp and t.exp is None:
            raise ValueError(f"{name}: the tensor has no exponent")
        return t

    def _new(self, shape, dtype, exp=True) -> DeviceTensor:
        return self.lib.empty(shape, dtype, exp)

    # ---- forward ----------------------------------------------------------------------------------
    def conv2d(self, node, ctx, x, w):
        x, w = self._in(x, np.int8, "conv2d x"), self._in(w, np.int8, "conv2d w")
        (n, h, wd, c), (o, kh, kw, cw) = x.shape, w.shape
        if c != cw:
            raise ValueError(f"{node.name}: x {x.shape} (NHWC) and w {w.shape} (OHWI) differ in channels")
        s, p = node.attr("stride"), node.attr("padding")
        y = self._new((n, (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1, o), np.int32)
        self.lib.call("niti_cuda_conv2d_forward", n, h, wd, c, o, kh, kw, s, s, p, p,
                      x.ptr, x.exp_ptr, w.ptr, w.exp_ptr, y.ptr, y.exp_ptr)
        return (y,)

    def linear(self, node, ctx, x, w):
        x, w = self._in(x, np.int8, "linear x"), self._in(w, np.int8, "linear w")
        (batch, in_f), (out_f, in_w) = x.shape, w.shape
        if in_f != in_w:
            raise ValueError(f"{node.name}: x {x.shape} and w {w.shape} differ in features")
        y = self._new((batch, out_f), np.int32)
        self.lib.call("niti_cuda_linear_forward", batch, in_f, out_f, x.ptr, x.exp_ptr, w.ptr, w.exp_ptr, y.ptr, y.exp_ptr)
        return (y,)

    def requantize(self, node, ctx, acc):
        acc = self._in(acc, np.int32, "requantize acc")
        out = self._new(acc.shape, np.int8)
        self.lib.call("niti_cuda_requantize_s32", acc.size, acc.ptr, acc.exp_ptr, ROUNDING_MODES.index(node.attr("mode")),
                      _u32(ctx.seed), _u32(ctx.step), _u32(node.tensor_id), out.ptr, out.exp_ptr)
        return (out,)

    def relu(self, node, ctx, x):
        x = self._in(x, np.int8, "relu x")
        y = self._new(x.shape, np.int8, exp=x.exp)
        self.lib.call("niti_cuda_relu_forward", x.size, x.ptr, y.ptr)
        return (y,)

    def maxpool(self, node, ctx, x):
        x = self._in(x, np.int8, "maxpool x")
        k, s = node.attr("kernel"), node.attr("stride")
        n, h, w, c = x.shape
        y = self._new((n, (h - k) // s + 1, (w - k) // s + 1, c), np.int8, exp=x.exp)
        self.lib.call("niti_cuda_maxpool_forward", n, h, w, c, k, k, s, s, x.ptr, y.ptr)
        return (y,)

    def flatten(self, node, ctx, x):
        x = self._in(x, np.int8, "flatten x")
        return (x.reshape((x.shape[0], -1)),)

    def _dropout(self, node, ctx, t, what):
        t = self._in(t, np.int8, what)
        shift = node.attr("shift")
        rows = t.shape[0]
        features = t.size // rows if rows else math.prod(t.shape[1:])
        y = self._new(t.shape, np.int8)
        self.lib.call("niti_cuda_dropout", rows, features, shift, _u32(ctx.seed), _u32(ctx.step),
                      _u32(node.attr("mask_id", node.tensor_id)), t.ptr, t.exp_ptr, y.ptr, y.exp_ptr)
        return (y,)

    def dropout(self, node, ctx, x):
        return self._dropout(node, ctx, x, "dropout x")

    # ---- loss ---------------------------------------------------------------------------------------
    def loss_grad(self, node, ctx, logits, labels):
        logits = self._in(logits, np.int8, "loss logits")
        if not isinstance(labels, DeviceTensor):
            labels = np.asarray(labels)
            if labels.dtype.kind not in "iu":
                raise TypeError(f"labels: expected an integer array, got {labels.dtype}")
            labels = self.lib.to_device(np.ascontiguousarray(labels, dtype=np.int32).reshape(-1))
        labels = self._in(labels, np.int32, "labels", exp=False)
        n, c = logits.shape
        if labels.size != n:
            raise ValueError(f"{node.name}: {labels.size} labels for {n} rows")
        err = self._new((n, c), np.int8)
        self.lib.call("niti_cuda_loss_grad", n, c, logits.ptr, logits.exp_ptr, labels.ptr,
                      LOSS_VARIANTS.index(node.attr("variant")), _u32(ctx.seed), _u32(ctx.step), _u32(node.tensor_id),
                      err.ptr, err.exp_ptr, None)
        return (err,)

    # ---- backward -----------------------------------------------------------------------------------
    def relu_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "relu_grad x", exp=False), self._in(dy, np.int8, "relu_grad dy")
        if x.shape != dy.shape:
            raise ValueError(f"{node.name}: x {x.shape} and dy {dy.shape} differ")
        dx = self._new(dy.shape, np.int8, exp=dy.exp)
        self.lib.call("niti_cuda_relu_backward", x.size, x.ptr, dy.ptr, dx.ptr)
        return (dx,)

    def maxpool_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "maxpool_grad x", exp=False), self._in(dy, np.int8, "maxpool_grad dy")
        k, s = node.attr("kernel"), node.attr("stride")
        n, h, w, c = x.shape
        if dy.shape != (n, (h - k) // s + 1, (w - k) // s + 1, c):
            raise ValueError(f"{node.name}: dy {dy.shape} does not match x {x.shape}")
        dx = self._new(x.shape, np.int8, exp=dy.exp)
        self.lib.call("niti_cuda_maxpool_backward", n, h, w, c, k, k, s, s, x.ptr, dy.ptr, dx.ptr)
        return (dx,)

    def flatten_grad(self, node, ctx, dy):
        return (self._in(dy, np.int8, "flatten_grad dy").reshape(node.attr("input_shape")),)

    def dropout_grad(self, node, ctx, dy):
        return self._dropout(node, ctx, dy, "dropout_grad dy")

    def conv2d_input_grad(self, node, ctx, dy, w):
        dy, w = self._in(dy, np.int8, "conv2d_input_grad dy"), self._in(w, np.int8, "conv2d_input_grad w")
        n, h, wd, c = node.attr("input_shape")
        o, kh, kw, _ = w.shape
        s, p = node.attr("stride"), node.attr("padding")
        dx = self._new((n, h, wd, c), np.int32)
        self.lib.call("niti_cuda_conv2d_input_grad", n, h, wd, c, o, kh, kw, s, s, p, p,
                      dy.ptr, dy.exp_ptr, w.ptr, w.exp_ptr, dx.ptr, dx.exp_ptr)
        return (dx,)

    def _weight_grad(self, node, name: str, args: tuple, shape, reduction: int, x, dy):
        """int64 as the graph asks, else int32: directly when the reduction provably fits int32's
        analytic bound for -128 operands too (131071), else int64 then narrowed with an overflow check."""
        dtype = node.attr("dtype")
        if dtype not in ("int32", "int64"):
            raise ValueError(f"{node.name}: weight-gradient dtype must be int32 or int64, got {dtype!r}")
        if dtype == "int32" and reduction <= MAX_K_INT32:
            g = self._new(shape, np.int32)
            self.lib.call(f"{name}_s32", *args, x.ptr, x.exp_ptr, dy.ptr, dy.exp_ptr, g.ptr, g.exp_ptr)
            return (g,)
        wide = self._new(shape, np.int64)
        self.lib.call(f"{name}_s64", *args, x.ptr, x.exp_ptr, dy.ptr, dy.exp_ptr, wide.ptr, wide.exp_ptr)
        if dtype == "int64":
            return (wide,)
        g = self._new(shape, np.int32, exp=wide.exp)
        self.lib.call("niti_cuda_narrow_s64_s32", wide.size, wide.ptr, g.ptr)
        return (g,)

    def conv2d_weight_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "conv2d_weight_grad x"), self._in(dy, np.int8, "conv2d_weight_grad dy")
        (n, h, wd, c), (_, e, f, o) = x.shape, dy.shape
        k, s, p = node.attr("kernel"), node.attr("stride"), node.attr("padding")
        return self._weight_grad(node, "niti_cuda_conv2d_weight_grad", (n, h, wd, c, o, k, k, s, s, p, p),
                                 (o, k, k, c), n * e * f, x, dy)

    def linear_input_grad(self, node, ctx, dy, w):
        dy, w = self._in(dy, np.int8, "linear_input_grad dy"), self._in(w, np.int8, "linear_input_grad w")
        (batch, out_f), (out_w, in_f) = dy.shape, w.shape
        if out_f != out_w:
            raise ValueError(f"{node.name}: dy {dy.shape} and w {w.shape} differ")
        dx = self._new((batch, in_f), np.int32)
        self.lib.call("niti_cuda_linear_input_grad", batch, in_f, out_f, dy.ptr, dy.exp_ptr, w.ptr, w.exp_ptr,
                      dx.ptr, dx.exp_ptr)
        return (dx,)

    def linear_weight_grad(self, node, ctx, x, dy):
        x, dy = self._in(x, np.int8, "linear_weight_grad x"), self._in(dy, np.int8, "linear_weight_grad dy")
        (batch, in_f), (_, out_f) = x.shape, dy.shape
        return self._weight_grad(node, "niti_cuda_linear_weight_grad", (batch, in_f, out_f), (out_f, in_f), batch, x, dy)

    # ---- update -------------------------------------------------------------------------------------
    def update(self, node, ctx, w, g, state=None):
        rule = node.attr("rule")
        g = self.lib.to_device(g)
        if g.dtype not in (np.int32, np.int64):
            raise TypeError(f"{node.name}: gradient must be int32 or int64, got {g.dtype}")
        sfx = "_s64" if g.dtype == np.int64 else "_s32"
        mu = _mu(ctx.mu)
        w = self._in(w, np.int8, "update w")
        if g.shape != w.shape:
            raise ValueError(f"{node.name}: gradient {g.shape} and weight {w.shape} differ")
        w_out = self._new(w.shape, np.int8, exp=w.exp)  # weight exponents are fixed at initialisation
        if rule == "plain":
            self.lib.call("niti_cuda_update_plain" + sfx, w.size, w.ptr, g.ptr, mu, w_out.ptr)
            return (w_out,)
        if rule == "momentum":
            v = self._in(state, np.int32, "velocity")
            v_out = self._new(v.shape, np.int32, exp=v.exp)
            self.lib.call("niti_cuda_update_momentum" + sfx, w.size, w.ptr, g.ptr, v.ptr, mu, w_out.ptr, v_out.ptr)
            return w_out, v_out
        if rule == "shadow16":
            sh = self._in(state, np.int16, "shadow")
            sh_out = self._new(sh.shape, np.int16)
            self.lib.call("niti_cuda_exp_add", w.exp_ptr, None, -SHADOW_FRAC_BITS, sh_out.exp_ptr)
            self.lib.call("niti_cuda_update_shadow16" + sfx, w.size, sh.ptr, g.ptr, mu, w_out.ptr, sh_out.ptr)
            return w_out, sh_out
        raise ValueError(f"unknown update rule {rule!r}")


OPS = ("conv2d", "linear", "requantize", "relu", "maxpool", "flatten", "dropout", "loss_grad", "relu_grad",
       "maxpool_grad", "flatten_grad", "dropout_grad", "conv2d_input_grad", "conv2d_weight_grad", "linear_input_grad",
       "linear_weight_grad", "update")


def cuda_kernel_table(device: int = 0, lib: CudaLib | None = None) -> Mapping[str, Callable]:
    """{op: fn(node, ctx, *inputs) -> tuple of DeviceTensors}, the CUDA REFERENCE_KERNELS.

    Builds and loads the library on first use (CudaUnavailable if this machine cannot run it).
    """
    kernels = _Kernels(lib or cuda_library(device))
    return MappingProxyType({op: getattr(kernels, op) for op in OPS})
