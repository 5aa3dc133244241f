"""cffi (ABI mode) bindings of the kernel libraries, with thin numpy wrappers.

Each built library (`cpu_library()` for libniti_cpu.so; one per `march` variant, each cached by
`functools.lru_cache`, so nothing is compiled or loaded at import time) is bound by
c_binding.Binding with `csrc/niti_api.h` as the cdef, as the CUDA library is with its own header:
the ABI version is checked on load, constants (status codes, NITI_MAX_K_S32, the parallel
threshold) are read through the library, and `CLib.check` turns a nonzero status into an exception
carrying the library's own message (`IntegerOverflowError` for overflow, `MemoryError`, `CLibError`
otherwise).

Wrappers take numpy arrays of the exact dtype, C-contiguous (no silent copies or casts), allocate
their outputs and return them, e.g. `cpu_library().conv2d_forward(x, w, stride=1, padding=1)`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nitisim.contract.models import conv_out
from nitisim.contract.numerics import LOSS_VARIANTS, ROUNDING_MODES

from . import build, c_binding
from .aligned import empty_aligned
from .c_binding import CLibError

API_HEADER = build.CSRC / "niti_api.h"


def cdef_text(header: Path = API_HEADER) -> str:
    """The header as cffi's cdef reads it (c_binding.cdef_text, defaulting to the CPU API header)."""
    return c_binding.cdef_text(header)


def api_ffi():
    """The FFI of the CPU API header (c_binding.header_ffi)."""
    return c_binding.header_ffi(API_HEADER)


@functools.lru_cache(maxsize=None)
def cpu_library(march: str = "native", extra_flags: tuple[str, ...] = ()) -> "CLib":
    """The CPU kernel library, compiled on first use (see build.build_cpu) and loaded once per
    (march, flags) variant."""
    return CLib(build.build_cpu(march=march, extra_flags=tuple(extra_flags)))


# GEMM engines, best first. AMX is an engine inside the native build, chosen at run time; each SIMD
# engine is the micro-kernel of one build (-march): the native build's, or an older ISA's build.
CPU_ENGINES = ("amx", "avx512vnni", "avx2", "scalar")
ENGINE_ENV = "NITISIM_CPU_ENGINE"  # forces an engine: one machine can run every engine it supports
_SIMD_MARCH = {"avx2": "haswell", "scalar": "x86-64"}  # builds of the SIMD engines below the native one


def engine_library(engine: str | None = None) -> "CLib":
    """The CPU library set to run `engine`: 'auto' (the best this CPU and OS allow) or one of
    CPU_ENGINES; None reads $NITISIM_CPU_ENGINE (unset: auto). Raises CLibError with the reason when
    this machine cannot run the engine; never substitutes another one."""
    name = engine if engine is not None else (os.environ.get(ENGINE_ENV) or "auto")
    if name not in ("auto", *CPU_ENGINES):
        source = "engine" if engine is not None else f"${ENGINE_ENV}"
        raise ValueError(f"{source}: unknown CPU engine {name!r}; expected auto or one of {', '.join(CPU_ENGINES)}")
    native = cpu_library()
    if name in ("auto", "amx", native.kernel_isa):
        native.set_engine(name)
        return native
    if not cpu_runs(name):
        raise CLibError(native.status_codes["NITI_E_ARG"], f"CPU engine {name!r}: this CPU lacks its instructions "
                        f"(its best SIMD engine is {native.kernel_isa!r})")
    return cpu_library(_SIMD_MARCH[name])


def cpu_runs(engine: str) -> bool:
    """Whether this CPU has the instructions of a SIMD engine (AMX also needs the OS: see set_engine)."""
    order = CPU_ENGINES[1:]
    native = cpu_library().kernel_isa
    return engine in order and order.index(engine) >= order.index(native)


def available_engines() -> list[str]:
    """The engines this machine runs, best first (AMX only where the CPU and OS allow it)."""
    native = cpu_library()
    current = native.engine
    try:
        native.set_engine("amx")
        found = ["amx"]
    except CLibError:
        found = []
    finally:
        native.set_engine(current)
    return found + [e for e in CPU_ENGINES[1:] if cpu_runs(e)]


def _pair(v: int | Sequence[int], what: str) -> tuple[int, int]:
    """(h, w) from an int or a pair: conv/pool parameters may differ per axis."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"{what}: expected an int or an (h, w) pair, got {v!r}")
    return int(v[0]), int(v[1])


def _mode_code(mode: str) -> int:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    return ROUNDING_MODES.index(mode)


_C_ARRAY_TYPES = {np.int8: "int8_t[]", np.uint8: "uint8_t[]", np.int16: "int16_t[]", np.int32: "int32_t[]",
                  np.int64: "int64_t[]", np.uint32: "uint32_t[]"}


def _u32(v: int) -> int:
    return int(v) & 0xFFFFFFFF  # hash coordinates are taken mod 2**32, as in numerics.hash_key


class CLib:
    """One loaded kernel library and its numpy-level API."""

    def __init__(self, path: Path, header: Path = API_HEADER):
        from .node_call import CPU_ABI

        # refuses another ABI version; declares the node-call entry points of the op rows
        self.binding = c_binding.Binding(path, header, "niti_", CLibError, CPU_ABI.cdef())
        self.ffi, self.lib, self.path = self.binding.ffi, self.binding.lib, self.binding.path

    # ---- plumbing -------------------------------------------------------------------------------
    def check(self, status: int) -> None:
        """Raise the library's error for a nonzero status."""
        self.binding.check(status)

    # ---- constants, read from the library's header (csrc/niti_constants.h, niti_api.h) -------------------
    @property
    def status_codes(self) -> Mapping[str, int]:
        """name -> value of every status code, e.g. status_codes['NITI_E_OVERFLOW']."""
        return self.binding.status_codes

    @property
    def max_k_int32(self) -> int:
        """NITI_MAX_K_S32: the longest reduction accumulated in int32 (a longer one: int64, then checked)."""
        return self.binding.constant("NITI_MAX_K_S32")

    @property
    def parallel_min_elements(self) -> int:
        """NITI_PARALLEL_MIN_ELEMS: elementwise kernels run on all threads above this many elements of
        their largest input."""
        return self.binding.constant("NITI_PARALLEL_MIN_ELEMS")

    @property
    def gemm_tile(self) -> tuple[int, int, int]:
        """The (m, k, n) block the engine in use computes in (niti_gemm_tile); a GEMM costs as if padded to it."""
        out = self.ffi.new("int[3]")
        self.check(self.lib.niti_gemm_tile(out, out + 1, out + 2))
        return int(out[0]), int(out[1]), int(out[2])

    def _in(self, a: np.ndarray, dtype, name: str, ndim: int | None = None):
        """Pointer to an input array after checking dtype, C-contiguity and rank."""
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
        if a.dtype != np.dtype(dtype):
            raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name}: array must be C-contiguous (use np.ascontiguousarray)")
        if ndim is not None and a.ndim != ndim:
            raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
        return self._ptr(a, dtype)

    def _ptr(self, a: np.ndarray, dtype):
        """A typed cdata over the array's memory (no copy; valid while `a` is alive)."""
        return self.ffi.from_buffer(_C_ARRAY_TYPES[np.dtype(dtype).type], a)

    def _out(self, shape, dtype):
        a = empty_aligned(shape, dtype)  # cache-line aligned, so the AMX engine reads it in place later
        return a, self._ptr(a, dtype)

    @property
    def abi_version(self) -> int:
        return self.lib.niti_abi_version()

    @property
    def kernel_isa(self) -> str:
        """The SIMD micro-kernel compiled in: 'avx512vnni', 'avx2' or 'scalar'."""
        return self.ffi.string(self.lib.niti_kernel_isa()).decode()

    @property
    def engine(self) -> str:
        """The GEMM engine in use: 'amx' or the SIMD micro-kernel (`kernel_isa`)."""
        return self.ffi.string(self.lib.niti_engine_name()).decode()

    @property
    def engine_note(self) -> str:
        """Why the automatic choice passed over a better engine (the OS refused AMX, say), or ''."""
        return self.ffi.string(self.lib.niti_engine_note()).decode()

    def set_engine(self, name: str) -> None:
        """Run GEMMs on engine `name` ('amx', this build's `kernel_isa`, or 'auto': the best this CPU
        and OS allow). Process-wide, like the thread count; raises CLibError with the reason when the
        engine is not compiled in or the CPU or OS refuses it."""
        self.check(self.lib.niti_set_engine(name.encode()))

    def set_num_threads(self, threads: int) -> None:
        """Threads for the parallel kernels; 0 restores the OpenMP default."""
        self.check(self.lib.niti_set_num_threads(threads))

    def num_threads(self) -> int:
        out = self.ffi.new("int *")
        self.check(self.lib.niti_get_num_threads(out))
        return out[0]

    # ---- counter hash -----------------------------------------------------------------------------
    def mix32(self, x: np.ndarray) -> np.ndarray:
        """lowbias32 of a uint32 array."""
        px = self._in(x, np.uint32, "x")
        out, po = self._out(x.shape, np.uint32)
        self.check(self.lib.niti_mix32_array(x.size, px, po))
        return out

    def hash_key(self, seed: int, step: int, tensor_id: int) -> int:
        out = self.ffi.new("uint32_t *")
        self.check(self.lib.niti_hash_key_of(_u32(seed), _u32(step), _u32(tensor_id), out))
        return int(out[0])

    def uniform_below_pow2(self, s: int, seed: int, step: int, tensor_id: int, count: int) -> np.ndarray:
        """R in [0, 2**s) for element indices 0..count-1, as int64 (like numerics.uniform_below_pow2)."""
        out, po = self._out((max(count, 0),), np.uint32)
        self.check(self.lib.niti_uniform_below_pow2(s, _u32(seed), _u32(step), _u32(tensor_id), count, po))
        return out.astype(np.int64)

    def fine_exp2_table_q16(self) -> tuple[int, ...]:
        out, po = self._out((256,), np.int32)
        self.check(self.lib.niti_fine_exp2_table_q16(po))
        return tuple(int(v) for v in out)

    # ---- ranges, shifts, requantization ----------------------------------------------------------------
    def range_bits(self, x: np.ndarray) -> int:
        """b(x) of an int32 or int64 array."""
        out = self.ffi.new("int *")
        if x.dtype == np.int64:
            self.check(self.lib.niti_range_bits_s64(x.size, self._in(x, np.int64, "x"), out))
        else:
            self.check(self.lib.niti_range_bits_s32(x.size, self._in(x, np.int32, "x"), out))
        return out[0]

    def round_shift(self, x: np.ndarray, s: int, mode: str, *, seed: int = 0, step: int = 0,
                    tensor_id: int = 0) -> np.ndarray:
        """sign(x) * ((|x| >> s) + up) of an int64 array (numerics.round_shift)."""
        px = self._in(x, np.int64, "x")
        out, po = self._out(x.shape, np.int64)
        self.check(self.lib.niti_round_shift_s64(x.size, px, s, _mode_code(mode), _u32(seed), _u32(step),
                                                 _u32(tensor_id), po))
        return out

    def requantize(self, acc: np.ndarray, exp: int, mode: str, *, seed: int = 0, step: int = 0,
                   tensor_id: int = 0) -> tuple[np.ndarray, int]:
        """int32 accumulator -> (int8 mantissa, exponent) as numerics.requantize."""
        pa = self._in(acc, np.int32, "acc")
        out, po = self._out(acc.shape, np.int8)
        shift = self.ffi.new("int *")
        self.check(self.lib.niti_requantize_s32(acc.size, pa, _mode_code(mode), _u32(seed), _u32(step),
                                                _u32(tensor_id), po, shift))
        return out, exp + shift[0]

    def narrow_int32(self, x: np.ndarray) -> np.ndarray:
        """int64 -> int32; IntegerOverflowError instead of wrapping (numerics.check_int32)."""
        px = self._in(x, np.int64, "x")
        out, po = self._out(x.shape, np.int32)
        self.check(self.lib.niti_narrow_s64_s32(x.size, px, po))
        return out

    # ---- GEMM ----------------------------------------------------------------------------------------
    def gemm_s8s8s32(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a (M, K) int8, b (N, K) int8 -> a @ b.T as int32 (IntegerOverflowError if a value leaves int32)."""
        return self._gemm(a, b, np.int32, self.lib.niti_gemm_s8s8s32)

    def gemm_s8s8s64(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """a (M, K) int8, b (N, K) int8 -> a @ b.T as int64 (any K)."""
        return self._gemm(a, b, np.int64, self.lib.niti_gemm_s8s8s64)

    def _gemm(self, a: np.ndarray, b: np.ndarray, out_dtype, fn) -> np.ndarray:
        pa, pb = self._in(a, np.int8, "a", 2), self._in(b, np.int8, "b", 2)
        (m, k), (n, kb) = a.shape, b.shape
        if k != kb:
            raise ValueError(f"gemm: a is {a.shape} and b is {b.shape}; their second dimensions must match")
        out, po = self._out((m, n), out_dtype)
        self.check(fn(m, n, k, pa, pb, po))
        return out

    # ---- linear --------------------------------------------------------------------------------------
    def linear_forward(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """x (batch, in) int8, w (out, in) int8 -> int32 (batch, out)."""
        px, pw = self._in(x, np.int8, "x", 2), self._in(w, np.int8, "w", 2)
        (batch, in_f), (out_f, in_w) = x.shape, w.shape
        if in_f != in_w:
            raise ValueError(f"linear: x is {x.shape}, w is {w.shape}")
        out, po = self._out((batch, out_f), np.int32)
        self.check(self.lib.niti_linear_forward(batch, in_f, out_f, px, pw, po))
        return out

    def linear_input_grad(self, dy: np.ndarray, w: np.ndarray) -> np.ndarray:
        """dy (batch, out) int8, w (out, in) int8 -> dx = dy @ w as int32 (batch, in)."""
        pd, pw = self._in(dy, np.int8, "dy", 2), self._in(w, np.int8, "w", 2)
        (batch, out_f), (out_w, in_f) = dy.shape, w.shape
        if out_f != out_w:
            raise ValueError(f"linear input grad: dy is {dy.shape}, w is {w.shape}")
        out, po = self._out((batch, in_f), np.int32)
        self.check(self.lib.niti_linear_input_grad(batch, in_f, out_f, pd, pw, po))
        return out

    def linear_weight_grad(self, x: np.ndarray, dy: np.ndarray, out_dtype=np.int64) -> np.ndarray:
        """x (batch, in), dy (batch, out) int8 -> dw = dy.T @ x (out, in) as int64 or int32
        (int32: IntegerOverflowError if a value leaves int32, as numerics.check_int32)."""
        px, pd = self._in(x, np.int8, "x", 2), self._in(dy, np.int8, "dy", 2)
        (batch, in_f), (batch_d, out_f) = x.shape, dy.shape
        if batch != batch_d:
            raise ValueError(f"linear weight grad: x is {x.shape}, dy is {dy.shape}")
        if np.dtype(out_dtype) not in (np.int32, np.int64):
            raise TypeError(f"linear weight grad: out_dtype must be int32 or int64, got {out_dtype}")
        out, po = self._out((out_f, in_f), out_dtype)
        fn = self.lib.niti_linear_weight_grad_s64 if out.dtype == np.int64 else self.lib.niti_linear_weight_grad_s32
        self.check(fn(batch, in_f, out_f, px, pd, po))
        return out

    # ---- conv2d --------------------------------------------------------------------------------------
    @staticmethod
    def conv_output_hw(in_hw: tuple[int, int], kernel: tuple[int, int], stride, padding) -> tuple[int, int]:
        (sh, sw), (ph, pw) = _pair(stride, "stride"), _pair(padding, "padding")
        return conv_out(in_hw[0], kernel[0], sh, ph), conv_out(in_hw[1], kernel[1], sw, pw)

    def _conv_forward_args(self, x: np.ndarray, w: np.ndarray, stride, padding):
        """(pointers, the 11 shape arguments of the C call, the output shape) of a conv forward."""
        px, pw = self._in(x, np.int8, "x", 4), self._in(w, np.int8, "w", 4)
        (n, h, wd, c), (o, kh, kw, cw) = x.shape, w.shape
        if c != cw:
            raise ValueError(f"conv2d: x is {x.shape} (NHWC), w is {w.shape} (OHWI); channels differ")
        (sh, sw), (ph, pwd) = _pair(stride, "stride"), _pair(padding, "padding")
        e, f = self.conv_output_hw((h, wd), (kh, kw), (sh, sw), (ph, pwd))
        return (px, pw), (n, h, wd, c, o, kh, kw, sh, sw, ph, pwd), (n, max(e, 0), max(f, 0), o)

    def _conv_input_grad_args(self, dy: np.ndarray, w: np.ndarray, in_hw: tuple[int, int], stride, padding):
        """(pointers, the 11 shape arguments of the C call, the output shape) of a conv input gradient."""
        pd, pw = self._in(dy, np.int8, "dy", 4), self._in(w, np.int8, "w", 4)
        (n, e, f, o), (ow, kh, kw, c) = dy.shape, w.shape
        (sh, sw), (ph, pwd) = _pair(stride, "stride"), _pair(padding, "padding")
        h, wd = int(in_hw[0]), int(in_hw[1])
        if o != ow or (e, f) != self.conv_output_hw((h, wd), (kh, kw), (sh, sw), (ph, pwd)):
            raise ValueError(f"conv2d input grad: dy {dy.shape} does not match w {w.shape} on a {h}x{wd} input")
        return (pd, pw), (n, h, wd, c, o, kh, kw, sh, sw, ph, pwd), (n, h, wd, c)

    def _requantized(self, fn, pointers, dims, out_shape, exp: int, mode: str, seed: int, step: int,
                     tensor_id: int) -> tuple[np.ndarray, int]:
        """Call a fused conv + requantize entry point: (int8 output, exponent)."""
        out, po = self._out(out_shape, np.int8)
        shift = self.ffi.new("int *")
        self.check(fn(*dims, *pointers, _mode_code(mode), _u32(seed), _u32(step), _u32(tensor_id), po, shift))
        return out, exp + shift[0]

    def conv2d_forward_shape(self, x: np.ndarray, w: np.ndarray, stride=1, padding=0) -> tuple[int, ...]:
        """The output shape of conv2d_forward(x, w, ...), after the checks it makes (nothing computed)."""
        return self._conv_forward_args(x, w, stride, padding)[2]

    def conv2d_input_grad_shape(self, dy: np.ndarray, w: np.ndarray, in_hw: tuple[int, int], stride=1,
                                padding=0) -> tuple[int, ...]:
        """The output shape of conv2d_input_grad(dy, w, in_hw, ...), after its checks (nothing computed)."""
        return self._conv_input_grad_args(dy, w, in_hw, stride, padding)[2]

    def conv2d_forward(self, x: np.ndarray, w: np.ndarray, stride=1, padding=0) -> np.ndarray:
        """x (N, H, W, I) int8, w (O, kh, kw, I) int8 -> int32 (N, E, F, O)."""
        pointers, dims, shape = self._conv_forward_args(x, w, stride, padding)
        out, po = self._out(shape, np.int32)
        self.check(self.lib.niti_conv2d_forward(*dims, *pointers, po))
        return out

    def conv2d_forward_requantize(self, x: np.ndarray, w: np.ndarray, stride, padding, exp: int, mode: str, *,
                                  seed: int = 0, step: int = 0, tensor_id: int = 0) -> tuple[np.ndarray, int]:
        """requantize(conv2d_forward(x, w), exp, mode, ...) bit for bit, without the int32 tensor:
        (int8 (N, E, F, O), exponent)."""
        pointers, dims, shape = self._conv_forward_args(x, w, stride, padding)
        return self._requantized(self.lib.niti_conv2d_forward_requantize, pointers, dims, shape, exp, mode, seed,
                                 step, tensor_id)

    def conv2d_input_grad(self, dy: np.ndarray, w: np.ndarray, in_hw: tuple[int, int], stride=1,
                          padding=0) -> np.ndarray:
        """dy (N, E, F, O) int8, w (O, kh, kw, I) int8 -> int32 (N, H, W, I), H x W = in_hw."""
        pointers, dims, shape = self._conv_input_grad_args(dy, w, in_hw, stride, padding)
        out, po = self._out(shape, np.int32)
        self.check(self.lib.niti_conv2d_input_grad(*dims, *pointers, po))
        return out

    def conv2d_input_grad_requantize(self, dy: np.ndarray, w: np.ndarray, in_hw: tuple[int, int], stride, padding,
                                     exp: int, mode: str, *, seed: int = 0, step: int = 0,
                                     tensor_id: int = 0) -> tuple[np.ndarray, int]:
        """requantize(conv2d_input_grad(dy, w, in_hw, ...), exp, mode, ...) bit for bit, without the
        int32 tensor: (int8 (N, H, W, I), exponent)."""
        pointers, dims, shape = self._conv_input_grad_args(dy, w, in_hw, stride, padding)
        return self._requantized(self.lib.niti_conv2d_input_grad_requantize, pointers, dims, shape, exp, mode, seed,
                                 step, tensor_id)

    def conv2d_weight_grad(self, x: np.ndarray, dy: np.ndarray, kernel, stride=1, padding=0,
                           out_dtype=np.int64) -> np.ndarray:
        """x (N, H, W, I), dy (N, E, F, O) int8 -> dw (O, kh, kw, I) int64 or int32 (int32:
        IntegerOverflowError if a value leaves int32, as numerics.check_int32)."""
        px, pd = self._in(x, np.int8, "x", 4), self._in(dy, np.int8, "dy", 4)
        (n, h, wd, c), (nd, e, f, o) = x.shape, dy.shape
        kh, kw = _pair(kernel, "kernel")
        (sh, sw), (ph, pwd) = _pair(stride, "stride"), _pair(padding, "padding")
        if n != nd or (e, f) != self.conv_output_hw((h, wd), (kh, kw), (sh, sw), (ph, pwd)):
            raise ValueError(f"conv2d weight grad: dy {dy.shape} does not match x {x.shape} and kernel {kh}x{kw}")
        if np.dtype(out_dtype) not in (np.int32, np.int64):
            raise TypeError(f"conv2d weight grad: out_dtype must be int32 or int64, got {out_dtype}")
        out, po = self._out((o, kh, kw, c), out_dtype)
        fn = self.lib.niti_conv2d_weight_grad_s64 if out.dtype == np.int64 else self.lib.niti_conv2d_weight_grad_s32
        self.check(fn(n, h, wd, c, o, kh, kw, sh, sw, ph, pwd, px, pd, po))
        return out

    # ---- activations, pooling, dropout -------------------------------------------------------------
    def rewrite_parallel(self, a: np.ndarray) -> None:
        """Rewrite a C-contiguous array in place (values unchanged) on the library's threads, each
        a contiguous chunk (calibration's cache eviction)."""
        if not a.flags.c_contiguous:
            raise ValueError("rewrite_parallel: the array must be C-contiguous")
        buf = self.ffi.from_buffer("int8_t[]", a.reshape(-1).view(np.int8), require_writable=True)
        self.check(self.lib.niti_rewrite_parallel(a.nbytes, buf))

    def relu_forward(self, x: np.ndarray) -> np.ndarray:
        px = self._in(x, np.int8, "x")
        out, po = self._out(x.shape, np.int8)
        self.check(self.lib.niti_relu_forward(x.size, px, po))
        return out

    def relu_backward(self, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """dy where the forward input x > 0, else 0."""
        px, pd = self._in(x, np.int8, "x"), self._in(dy, np.int8, "dy")
        if x.shape != dy.shape:
            raise ValueError(f"relu backward: x is {x.shape}, dy is {dy.shape}")
        out, po = self._out(x.shape, np.int8)
        self.check(self.lib.niti_relu_backward(x.size, px, pd, po))
        return out

    def maxpool_forward(self, x: np.ndarray, kernel=2, stride=None, padding=0) -> np.ndarray:
        """x (N, H, W, C) int8 -> window maxima (N, conv_out(H, kh, sh, ph), conv_out(W, ...), C) over x
        padded with -infinity (padding < kernel); stride defaults to kernel."""
        px = self._in(x, np.int8, "x", 4)
        kh, kw = _pair(kernel, "kernel")
        sh, sw = _pair(kernel if stride is None else stride, "stride")
        ph, pw = _pair(padding, "padding")
        n, h, w, c = x.shape
        out, po = self._out((n, max(conv_out(h, kh, sh, ph), 0), max(conv_out(w, kw, sw, pw), 0), c), np.int8)
        self.check(self.lib.niti_maxpool_forward(n, h, w, c, kh, kw, sh, sw, ph, pw, px, po))
        return out

    def maxpool_backward(self, x: np.ndarray, dy: np.ndarray, kernel=2, stride=None, padding=0) -> np.ndarray:
        """dx (N, H, W, C): each dy routed to the first maximum of its window (row-major order, real
        inputs only: the -infinity padding never wins)."""
        px, pd = self._in(x, np.int8, "x", 4), self._in(dy, np.int8, "dy", 4)
        kh, kw = _pair(kernel, "kernel")
        sh, sw = _pair(kernel if stride is None else stride, "stride")
        ph, pw = _pair(padding, "padding")
        n, h, w, c = x.shape
        expect = (n, conv_out(h, kh, sh, ph), conv_out(w, kw, sw, pw), c)
        if dy.shape != expect:
            raise ValueError(f"maxpool backward: dy is {dy.shape}, expected {expect}")
        out, po = self._out(x.shape, np.int8)
        self.check(self.lib.niti_maxpool_backward(n, h, w, c, kh, kw, sh, sw, ph, pw, px, pd, po))
        return out

    def dropout_mask(self, features: int, keep_shift: int, *, seed: int = 0, step: int = 0,
                     tensor_id: int = 0) -> np.ndarray:
        """bool keep mask (features,): keep with probability 2**-keep_shift, from the counter hash."""
        out, po = self._out((max(features, 0),), np.uint8)
        self.check(self.lib.niti_dropout_mask(features, keep_shift, _u32(seed), _u32(step), _u32(tensor_id), po))
        return out.astype(bool)

    def dropout_apply(self, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """x (rows, features...) int8 with features zeroed where keep is False (mask shared by rows)."""
        keep_u8 = np.ascontiguousarray(keep, dtype=np.uint8).reshape(-1)
        px = self._in(x, np.int8, "x")
        features = keep_u8.size
        if x.ndim < 1 or features == 0 or x.size % features or x[0].size != features:
            raise ValueError(f"dropout: x {x.shape} does not have {features} features per row")
        out, po = self._out(x.shape, np.int8)
        self.check(self.lib.niti_dropout_apply(x.shape[0], features, px, self._ptr(keep_u8, np.uint8), po))
        return out

    # ---- loss ------------------------------------------------------------------------------------------
    def loss_grad(self, logits: np.ndarray, exp: int, labels: np.ndarray, *, variant: str = "niti", seed: int = 0,
                  step: int = 0, tensor_id: int = 0, return_p: bool = False) -> np.ndarray:
        """Integer softmax cross-entropy gradient (numerics.loss_grad): int8 error (N, C), exponent
        numerics.LOSS_ERROR_EXP; with return_p, the int64 p = 2048 * (softmax - onehot) instead."""
        pl = self._in(logits, np.int8, "logits", 2)
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TypeError(f"labels: expected an integer array, got {labels.dtype}")
        labels32 = np.ascontiguousarray(labels, dtype=np.int32).reshape(-1)
        n, c = logits.shape
        if labels32.size != n:
            raise ValueError(f"loss_grad: {labels32.size} labels for {n} rows")
        if variant not in LOSS_VARIANTS:
            raise ValueError(f"unknown loss variant {variant!r}; expected one of {LOSS_VARIANTS}")
        err, pe = self._out((n, c), np.int8)
        p, pp = self._out((n, c), np.int64) if return_p else (None, self.ffi.NULL)
        self.check(self.lib.niti_loss_grad(n, c, pl, exp, self._ptr(labels32, np.int32), LOSS_VARIANTS.index(variant),
                                           _u32(seed), _u32(step), _u32(tensor_id), pe, pp))
        return p if return_p else err

    # ---- updates ---------------------------------------------------------------------------------------
    def _grad(self, g: np.ndarray, shape) -> tuple[object, bool]:
        if g.dtype not in (np.int32, np.int64):
            raise TypeError(f"g_acc: expected int32 or int64, got {g.dtype}")
        if g.shape != shape:
            raise ValueError(f"g_acc: shape {g.shape} differs from the weight's {shape}")
        return self._in(g, g.dtype, "g_acc"), g.dtype == np.int64

    def update_plain(self, w: np.ndarray, g_acc: np.ndarray, mu: int) -> np.ndarray:
        """w - mu_step(g_acc, mu), clamped (numerics.update_plain)."""
        pw = self._in(w, np.int8, "w")
        pg, wide = self._grad(g_acc, w.shape)
        out, po = self._out(w.shape, np.int8)
        fn = self.lib.niti_update_plain_s64 if wide else self.lib.niti_update_plain_s32
        self.check(fn(w.size, pw, pg, mu, po))
        return out

    def update_momentum(self, w: np.ndarray, g_acc: np.ndarray, velocity: np.ndarray,
                        mu: int) -> tuple[np.ndarray, np.ndarray]:
        """(int8 weight, int32 velocity) as numerics.update_momentum; IntegerOverflowError if v leaves int32."""
        pw, pv = self._in(w, np.int8, "w"), self._in(velocity, np.int32, "velocity")
        pg, wide = self._grad(g_acc, w.shape)
        if velocity.shape != w.shape:
            raise ValueError(f"velocity: shape {velocity.shape} differs from the weight's {w.shape}")
        w_out, pwo = self._out(w.shape, np.int8)
        v_out, pvo = self._out(w.shape, np.int32)
        fn = self.lib.niti_update_momentum_s64 if wide else self.lib.niti_update_momentum_s32
        self.check(fn(w.size, pw, pg, pv, mu, pwo, pvo))
        return w_out, v_out

    def update_shadow16(self, shadow: np.ndarray, g_acc: np.ndarray, mu: int) -> tuple[np.ndarray, np.ndarray]:
        """(int8 weight, int16 shadow) as numerics.update_shadow16."""
        ps = self._in(shadow, np.int16, "shadow")
        pg, wide = self._grad(g_acc, shadow.shape)
        w_out, pwo = self._out(shadow.shape, np.int8)
        s_out, pso = self._out(shadow.shape, np.int16)
        fn = self.lib.niti_update_shadow16_s64 if wide else self.lib.niti_update_shadow16_s32
        self.check(fn(shadow.size, ps, pg, mu, pwo, pso))
        return w_out, s_out
