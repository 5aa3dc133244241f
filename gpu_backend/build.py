"""Compile the kernel libraries on first use, into a cache keyed by their sources and flags.

`build_cpu()` compiles `csrc/cpu_*.c` and every op's `csrc/op_*.c` with gcc (`-O3 -march=native
-fopenmp`) into `<cache>/build/<hash>/libniti_cpu.so`; `build_cuda()` compiles `csrc/*.cu` (every
op's `op_*.cu` among them) with nvcc for sm_80 and sm_90 into `libniti_cuda.so`. The cache root is
`$NITISIM_CACHE`, else `~/.cache/nitisim`. The hash covers the library's sources and headers, the
compiler's identity and the flags, so an edit or a different machine (`-march=native`) gets a fresh
build, and a cached one is reused as is. A build writes to a temporary file and renames it into
place, so concurrent builders (pytest -n 2) never see half a library.
Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_LIBRARY = "libniti_cpu.so"
CUDA_LIBRARY = "libniti_cuda.so"

# -march selects the GEMM micro-kernel at compile time (AVX-512 VNNI, AVX2 or portable C; see
# csrc/cpu_internal.h); -fopenmp threads the GEMM and the elementwise loops.
CPU_FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-function")
# Machine code for Ampere (sm_80) and Hopper (sm_90), plus sm_90 PTX, which the driver compiles at
# load time for newer GPUs (Blackwell) that the machine code cannot run on.
CUDA_ARCHS = ("-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
              "-gencode", "arch=compute_90,code=compute_90")
CUDA_FLAGS = ("-O3", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", *CUDA_ARCHS)


class BuildError(RuntimeError):
    """A kernel library could not be compiled; the message says what was run and how to fix it."""


def cache_root() -> Path:
    return Path(os.environ.get("NITISIM_CACHE") or Path.home() / ".cache" / "nitisim")


def _compiler_identity(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BuildError(
            f"cannot run the C compiler {compiler!r} ({exc}); install gcc (e.g. `apt-get install gcc`) "
            "or point $CC at a C11 compiler with OpenMP"
        ) from exc
    return out.stdout.strip()


def _native_target(compiler: str) -> str:
    """What -march=native means on this machine (gcc's resolved target options), so a cache shared
    between machines never hands one CPU's build to another."""
    try:
        out = subprocess.run([compiler, "-march=native", "-Q", "--help=target"], capture_output=True, text=True,
                             timeout=60)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _digest(sources: list[Path], headers: list[Path], command_key: list[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(sources + headers):
        h.update(path.name.encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    h.update("\0".join(command_key).encode())
    return h.hexdigest()[:16]


def _compile(command: list[str], target: Path, what: str, fix: str) -> Path:
    """Run `command` (which writes the library to the placeholder '{out}') and move it to target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    argv = [tmp if a == "{out}" else a for a in command]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(
                f"building {what} failed (exit {proc.returncode}).\ncommand: {' '.join(argv)}\n"
                f"{(proc.stderr or proc.stdout)[-4000:]}\nfix: {fix}"
            )
        os.replace(tmp, target)  # atomic: readers see the old state or the whole library
    except OSError as exc:
        raise BuildError(f"building {what}: cannot run {argv[0]!r} ({exc}).\nfix: {fix}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def cpu_sources() -> tuple[list[Path], list[Path]]:
    """The CPU library's C files (its plumbing cpu_*.c and one op_<name>.c per node-call op) and the
    headers they include (the CUDA files are not hashed, so editing them does not rebuild the CPU
    library)."""
    sources = sorted([*CSRC.glob("cpu_*.c"), *CSRC.glob("op_*.c")])
    headers = sorted([*CSRC.glob("cpu_*.h"), CSRC / "niti_api.h", CSRC / "niti_arith.h", CSRC / "niti_constants.h",
                      CSRC / "niti_node_check.h"])
    return sources, [h for h in headers if h.exists()]


def build_cpu(march: str = "native", extra_flags: tuple[str, ...] = (), force: bool = False) -> Path:
    """Path of the compiled CPU library, compiling it first if this source/flag set is not cached.

    `march="native"` picks the best micro-kernel for this machine; tests also build `haswell`
    (AVX2) and `x86-64` (portable C) to check every variant against the same references.
    """
    compiler = os.environ.get("CC") or "gcc"
    if shutil.which(compiler) is None:
        raise BuildError(
            f"no C compiler: tried {compiler!r} (from $CC, default gcc) and found nothing on PATH. "
            "Install gcc (e.g. `apt-get install gcc`) or set $CC to a C11 compiler with OpenMP support."
        )
    sources, headers = cpu_sources()
    if not sources:
        raise BuildError(f"no C sources in {CSRC}")
    flags = [*CPU_FLAGS, f"-march={march}", *extra_flags]
    target_key = _native_target(compiler) if march == "native" else ""
    digest = _digest(sources, headers, [_compiler_identity(compiler), target_key, *flags])
    target = cache_root() / "build" / digest / CPU_LIBRARY
    if target.exists() and not force:
        return target
    command = [compiler, *flags, f"-I{CSRC}", *map(str, sources), "-o", "{out}"]
    fix = (
        "check the compiler output above; with a compiler lacking OpenMP or -march support set $CC to gcc "
        "(`apt-get install gcc`), or report the error if the sources fail to compile"
    )
    return _compile(command, target, "the CPU kernel library", fix)


def find_nvcc() -> str | None:
    """nvcc from $NVCC, PATH, $CUDA_HOME/bin or /usr/local/cuda/bin, or None."""
    candidates = [os.environ.get("NVCC"), shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            candidates.append(str(Path(root) / "bin" / "nvcc"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def build_cuda(extra_flags: tuple[str, ...] = (), force: bool = False) -> Path:
    """Path of the compiled CUDA library (csrc/*.cu for sm_80 and sm_90, plus sm_90 PTX), compiling it if needed."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError(
            "no CUDA compiler: tried $NVCC, nvcc on PATH, $CUDA_HOME/bin/nvcc and /usr/local/cuda/bin/nvcc. "
            "Install the CUDA toolkit or set $NVCC; the CPU library (build_cpu) needs no CUDA."
        )
    sources = sorted(CSRC.glob("*.cu"))
    headers = sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("*.cuh"))
    if not sources:
        raise BuildError(f"no CUDA sources (*.cu) in {CSRC}: the installed package is incomplete; reinstall nitisim")
    flags = [*CUDA_FLAGS, *extra_flags]
    identity = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip()
    digest = _digest(sources, headers, [identity, *flags])
    target = cache_root() / "build" / digest / CUDA_LIBRARY
    if target.exists() and not force:
        return target
    command = [nvcc, *flags, f"-I{CSRC}", *map(str, sources), "-o", "{out}"]
    fix = "check the nvcc output above (a CUDA toolkit with sm_80 and sm_90 support, 11.8 or newer, is needed)"
    return _compile(command, target, "the CUDA kernel library", fix)
