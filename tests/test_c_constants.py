"""The constants Python shares with the C and CUDA libraries come from the libraries, never from copies.

- every constant the Python side uses (ABI version, status codes, NITI_MAX_K_S32, the parallel
  threshold, the GEMM tile) equals what the C headers define, read independently (regex of the
  header, the C preprocessor);
- both libraries are bound the same way (c_binding.Binding) and report the same shared constants;
- a library whose ABI version is not the binding header's is refused with one line;
- no Python file of gpu_backend/, nitisim/ or benchmarks/ holds a hand copy of the ABI version, a
  status code, NITI_MAX_K_S32 or an engine's tile (a grep, itself checked on planted copies).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpu_backend import c_binding
from gpu_backend.build import CSRC

pytestmark = pytest.mark.cpu_lib

if shutil.which(os.environ.get("CC") or "gcc") is None:  # pragma: no cover - machines without a compiler
    pytest.skip("no C compiler to build the CPU kernel library", allow_module_level=True)

from gpu_backend.lib import CLib, CLibError, available_engines, cpu_library  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def header_defines(name: str) -> dict[str, int]:
    """`#define NAME <integer>` of one header, read as text (independent of cffi)."""
    return {k: int(v, 0) for k, v in re.findall(r"^#define (\w+) (0x[0-9a-fA-F]+|\d+)\b", (CSRC / name).read_text(), re.M)}


def header_statuses() -> dict[str, int]:
    """The niti_status enum of niti_constants.h, read as text."""
    (body,) = re.findall(r"typedef enum \{(.*?)\} niti_status;", (CSRC / "niti_constants.h").read_text(), re.S)
    return {k: int(v) for k, v in re.findall(r"(NITI_\w+) = (\d+)", body)}


@pytest.fixture(scope="module")
def lib():
    return cpu_library()


@pytest.fixture(scope="module")
def emulated():
    """The CUDA library on the host emulator (same headers and sources as the GPU build)."""
    from gpu_backend import cuda

    if shutil.which(os.environ.get("CXX") or "g++") is None:
        pytest.skip("no g++ for the CUDA emulator")
    return cuda.emulated_library()


# ------------------------------------------------------------------------------------ values
def test_cpu_constants_are_the_headers(lib):
    shared = header_defines("niti_constants.h")
    api = header_defines("niti_api.h")
    assert lib.abi_version == api["NITI_ABI_VERSION"]  # the library's own answer, not the header's
    assert lib.max_k_int32 == shared["NITI_MAX_K_S32"]
    assert lib.parallel_min_elements == api["NITI_PARALLEL_MIN_ELEMS"]
    assert dict(lib.status_codes) == header_statuses()
    assert set(lib.status_codes) == {"NITI_OK", "NITI_E_ARG", "NITI_E_OVERFLOW", "NITI_E_NOMEM", "NITI_E_CUDA"}


def test_status_codes_map_to_the_same_errors(lib):
    """The codes the library returns are the ones Python read, and map as before: argument ->
    CLibError with that status, overflow -> IntegerOverflowError."""
    import numpy as np

    from nitisim.contract.errors import IntegerOverflowError

    with pytest.raises(CLibError) as info:
        lib.set_num_threads(-1)
    assert info.value.status == lib.status_codes["NITI_E_ARG"] and "niti_set_num_threads" in str(info.value)
    with pytest.raises(IntegerOverflowError):
        lib.narrow_int32(np.array([2**31], np.int64))


def test_gemm_tile_is_the_compiled_micro_kernel(lib):
    """The tile calibration pads GEMMs to is the SIMD engine's NITI_MR x NITI_NR (K in 4-byte dot
    products) as the preprocessor sees cpu_internal.h for this build."""
    native = lib.kernel_isa
    current = lib.engine
    try:
        lib.set_engine(native)
        tile = lib.gemm_tile
    finally:
        lib.set_engine(current)
    cc = os.environ.get("CC") or "gcc"
    macros = subprocess.run([cc, "-march=native", "-fopenmp", "-dM", "-E", f"-I{CSRC}", "-x", "c",
                             str(CSRC / "cpu_internal.h")], capture_output=True, text=True, check=True).stdout
    defines = dict(re.findall(r"^#define (NITI_MR|NITI_NR) (\d+)$", macros, re.M))
    assert tile == (int(defines["NITI_MR"]), 4, int(defines["NITI_NR"]))
    if "amx" in available_engines():  # 32 x 32 C tiles, K in 64-byte tile rows
        internal = header_defines("cpu_internal.h")
        lib.set_engine("amx")
        try:
            assert lib.gemm_tile == (internal["NITI_AMX_MR"], 64, internal["NITI_AMX_NR"])
        finally:
            lib.set_engine(current)


def test_cuda_library_exports_the_same_shared_constants(lib, emulated):
    assert type(emulated.bind) is type(lib.binding) is c_binding.Binding  # bound the same way
    assert emulated.abi_version == header_defines("niti_cuda_api.h")["NITI_CUDA_ABI_VERSION"]
    assert emulated.max_k_int32 == lib.max_k_int32 == header_defines("niti_constants.h")["NITI_MAX_K_S32"]
    assert dict(emulated.status_codes) == dict(lib.status_codes)


# ------------------------------------------------------------------------------------ ABI check
def _stale_header(tmp_path: Path, name: str, define: str) -> Path:
    """A copy of API header `name` (with niti_constants.h beside it) declaring the next ABI version."""
    text = (CSRC / name).read_text()
    version = header_defines(name)[define]
    (tmp_path / name).write_text(text.replace(f"#define {define} {version}", f"#define {define} {version + 1}"))
    shutil.copy(CSRC / "niti_constants.h", tmp_path / "niti_constants.h")
    return tmp_path / name


def test_cpu_abi_mismatch_is_refused_in_one_line(lib, tmp_path):
    header = _stale_header(tmp_path, "niti_api.h", "NITI_ABI_VERSION")
    with pytest.raises(CLibError) as info:
        CLib(lib.path, header)
    message = str(info.value)
    assert "\n" not in message and str(lib.path) in message and "rebuild" in message
    assert f"ABI version {lib.abi_version}, but niti_api.h" in message and f"declares {lib.abi_version + 1}" in message


def test_cuda_abi_mismatch_is_refused_in_one_line(emulated, tmp_path):
    from gpu_backend import cuda

    header = _stale_header(tmp_path, "niti_cuda_api.h", "NITI_CUDA_ABI_VERSION")
    with pytest.raises(cuda.CudaError) as info:
        cuda.CudaLib(emulated.path, header=header)
    message = str(info.value)
    assert "\n" not in message and str(emulated.path) in message and "rebuild" in message
    assert f"declares {emulated.abi_version + 1}" in message


# ------------------------------------------------------------------------------------ no copies
# A hand copy: NITI_MAX_K_S32 (or one past it) as a number; or an upper-case name of an ABI version,
# status, reduction limit, tile or parallel threshold given a value with a digit in it.
COPY_PATTERNS = (
    re.compile(r"(?<![\w.])131_?07[12](?![\w.])"),
    re.compile(r"^\s*(?:\w+\s*,\s*)*[A-Z_0-9]*(?:ABI_VERSION|STATUS_|MAX_K|TILE|PARALLEL_MIN)[A-Z_0-9]*"
               r"\s*(?:,\s*\w+\s*)*(?::[^=\n]*)?=(?!=)[^#\n]*\d", re.M),
    re.compile(r"abi_version(?:\(\))?\s*[!=]=\s*\d"),
)
SCANNED = ("gpu_backend", "nitisim", "benchmarks")


def copies_in(text: str) -> list[str]:
    return [m.group(0).strip() for pattern in COPY_PATTERNS for m in pattern.finditer(text)]


def test_the_copy_scan_finds_planted_copies():
    """The scan below can fail: each form the copies had before they were removed is caught."""
    planted = [
        "ABI_VERSION = 2  # must equal NITI_ABI_VERSION",
        "STATUS_INVALID_ARGUMENT, STATUS_OVERFLOW, STATUS_OUT_OF_MEMORY = 1, 2, 3",
        "MAX_K_INT32 = 131071",
        "    wide = k > 131071",
        'ENGINE_TILES = MappingProxyType({"amx": (32, 64, 32), "avx2": (4, 4, 8)})',
        "DEFAULT_PARALLEL_MIN_ELEMENTS = 1 << 20",
        "    if lib.abi_version() != 3:",
    ]
    for line in planted:
        assert copies_in(line), line
    for line in ("tile = lib.gemm_tile", "if out.dtype == np.int32 and reduction > self.lib.max_k_int32:",
                 "MAX_INT32_REDUCTION = INT32_MAX // (INT8_MAX * INT8_MAX)", "x = 1310710"):
        assert not copies_in(line), line


def test_no_python_file_copies_a_c_constant():
    found = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            found += [f"{path.relative_to(REPO)}: {hit}" for hit in copies_in(path.read_text())]
    assert not found, "constants the C headers define, copied into Python (read them from the library):\n" + \
        "\n".join(found)
