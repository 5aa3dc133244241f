"""Getting a CUDA library: built for the GPU (`cuda_library`) or for the host emulator (`emulated_library`).

Nothing is compiled or loaded at import time. `cuda_library()` builds the library on first use
(gpu_backend.build.build_cuda: nvcc, cached by source hash), loads it and initialises the device;
when any of that fails it raises `CudaUnavailable`, whose message says what was tried and how to
fix it. `cuda_status()` answers the same question without raising. Both loaders are lru_cached:
one library per device, one emulator per process.

`emulated_library()` is the same library, from the same .cu sources, compiled by g++ against the
host emulator in csrc/cuda_emulation.cu (CUDA threads as fibers with real barriers, mma and
cp.async as the PTX ISA defines them): slow, exact, and runnable anywhere, so tests/test_cuda.py
checks every kernel on machines without a GPU too. Pass it as `cuda_kernel_table(lib=...)`.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from nitisim.contract.errors import IntegerOverflowError

from . import build
from .cuda_device import CudaError, CudaLib


class CudaUnavailable(RuntimeError):
    """No usable CUDA backend here; the message says what was tried and how to fix it."""


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
