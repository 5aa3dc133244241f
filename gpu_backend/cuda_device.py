"""The loaded CUDA library on one device (`CudaLib`) and the tensors that live there (`DeviceTensor`).

`CudaLib` wraps a binding (cuda_binding.bind, the c_binding.Binding the CPU library uses too) of one
libniti_cuda.so: the binding checks the ABI version, CudaLib initialises the device, and a nonzero
status becomes an exception carrying the library's message: IntegerOverflowError (NITI_E_OVERFLOW),
MemoryError (NITI_E_NOMEM), CudaError otherwise. Its methods are the device
interface (tinygrad style): device queries, memory, copies, the GEMM engine and conv mode, timers
and stream marks, and raw `call`s of any entry point.

`DeviceTensor` is the device counterpart of `nitisim.contract.numerics.QTensor`: a device buffer, a shape,
an integer dtype and an exponent slot (an int32 in device memory, shared by tensors whose exponent
is the same, e.g. a ReLU's output and input). Its `m` and `e` properties copy to the host (and
wait), so code written for QTensor (predict, checkpoints) keeps working. Buffers are freed in
stream order when the last tensor using them goes.

Loading a library (building it, or its host emulator) is cuda_loading's job.
"""
from __future__ import annotations

import math
import weakref
from pathlib import Path

import numpy as np

from typing import Mapping

from nitisim.contract.numerics import QTensor

from .c_binding import CLibError
from .cuda_binding import API_HEADER, _addr, bind

GEMM_ENGINES = ("auto", "mma", "dp4a")  # niti_cuda_set_gemm_kernel codes 0, 1, 2
CONV_MODES = ("auto", "gather")  # niti_cuda_set_conv_mode codes 0, 1
CONV_PATHS = ("gather", "implicit")  # niti_cuda_conv_path results 0, 1
CONV_OPS = ("forward", "input_grad", "weight_grad")  # niti_cuda_conv_path op codes 0, 1, 2
_DTYPES = {np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64)}


class CudaError(CLibError):
    """A CUDA library call failed; `status` is the C status code, the message is the library's."""


class CudaLib:
    """The loaded library on one device: the device interface (tinygrad style) and raw calls."""

    def __init__(self, path: Path, device: int = 0, header: Path = API_HEADER):
        self.bind = bind(path, CudaError, header)  # refuses another ABI version
        self.path = self.bind.path
        self.check(self.bind("niti_cuda_init", int(device)))
        self.device = int(device)

    # ---- plumbing ---------------------------------------------------------------------------------
    def check(self, status: int) -> None:
        """Raise the library's error for a nonzero status."""
        self.bind.check(status)

    # ---- constants, read from the library's header (csrc/niti_constants.h, niti_cuda_api.h) -----------
    @property
    def abi_version(self) -> int:
        return self.bind("niti_cuda_abi_version")

    @property
    def status_codes(self) -> Mapping[str, int]:
        """name -> value of every status code, e.g. status_codes['NITI_E_CUDA']."""
        return self.bind.status_codes

    @property
    def max_k_int32(self) -> int:
        """NITI_MAX_K_S32: an op sums a longer reduction with an int32 output in int64, then narrows
        it with the (deferred) device check."""
        return self.bind.constant("NITI_MAX_K_S32")

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
        """a (M, K) @ b (N, K)^T of int8 device matrices, int32 (an overflow is reported at the next
        synchronising call) or int64 when wide."""
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
