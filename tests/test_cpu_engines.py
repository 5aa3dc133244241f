"""Choosing the C backend's GEMM engine: detection, the forcing variable, refusals, and whole steps.

The arithmetic of each engine is checked kernel by kernel in test_c_kernels.py (its `any_lib`
fixture runs every engine this machine supports); here: that the best engine is found where the
CPU has it, that $NITISIM_CPU_ENGINE forces any engine and rejects unknown ones in one line, that an
OS refusing AMX's tile state leaves a message and the next engine, and that whole training steps
on every engine equal the numpy reference bit for bit.
"""
from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.cpu_lib

if shutil.which(os.environ.get("CC") or "gcc") is None:  # pragma: no cover - machines without a compiler
    pytest.skip("no C compiler to build the CPU kernel library", allow_module_level=True)

from gpu_backend.backends import cpu_kernel_table  # noqa: E402
from gpu_backend.lib import (CPU_ENGINES, ENGINE_ENV, CLibError, available_engines, cpu_library,  # noqa: E402
                             engine_library)
from gpu_backend.parity import compare_steps, parity_models  # noqa: E402
from nitisim.contract.errors import UserInputError  # noqa: E402
from nitisim.contract.graph import NumericsOptions, build_graph  # noqa: E402
from nitisim.contract.reference import REFERENCE_KERNELS  # noqa: E402
from nitisim.backends import resolve_backend  # noqa: E402

X86 = platform.machine() in ("x86_64", "AMD64")


def cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.fixture(autouse=True)
def restore_engine():
    yield
    cpu_library().set_engine("auto")


def test_engines_found_where_the_cpu_has_them():
    engines = available_engines()
    native = cpu_library()
    assert engines[0] == native.engine  # auto takes the best
    assert native.kernel_isa in engines and set(engines) <= set(CPU_ENGINES)
    flags = cpu_flags()
    if X86 and {"amx_tile", "amx_int8"} <= flags and "avx512_vnni" in flags:
        # the CPU has AMX: only an OS refusal may keep it out, and then the note says so
        assert "amx" in engines or "refused" in native.engine_note, native.engine_note
    if X86 and "avx512_vnni" in flags and "avx512bw" in flags:
        assert native.kernel_isa == "avx512vnni"
    if X86:
        assert {"avx2", "scalar"} <= set(engines) if "avx2" in flags else "scalar" in engines


def test_every_engine_can_be_forced_by_the_environment(monkeypatch):
    for engine in available_engines():
        monkeypatch.setenv(ENGINE_ENV, engine)
        assert engine_library().engine == engine
        table = cpu_kernel_table()
        assert set(table) == set(REFERENCE_KERNELS)
    monkeypatch.setenv(ENGINE_ENV, "auto")
    assert engine_library().engine == available_engines()[0]


def test_unknown_or_unrunnable_engine_is_refused(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "avx1024")
    with pytest.raises(ValueError, match=r"\$NITISIM_CPU_ENGINE: unknown CPU engine 'avx1024'"):
        engine_library()
    with pytest.raises(UserInputError, match="avx1024") as err:
        resolve_backend("cpu")
    assert "\n" not in str(err.value) and str(err.value).startswith("--backend: cpu:")
    with pytest.raises(CLibError, match="unknown engine 'avx3'"):
        cpu_library().set_engine("avx3")
    missing = [e for e in CPU_ENGINES if e not in available_engines()]
    for engine in missing:  # an engine this machine cannot run is an error, never a substitute
        with pytest.raises(CLibError, match=engine):
            engine_library(engine)


def test_os_refusing_amx_leaves_a_message_and_the_next_engine():
    if "amx" not in available_engines():
        pytest.skip("this machine does not run AMX (the refusal path is the same code as the CPU check)")
    denied = cpu_library("native", ("-DNITI_DENY_AMX_PERMISSION",))
    try:
        denied.set_engine("auto")
        assert denied.engine == denied.kernel_isa == "avx512vnni"
        assert "OS refused the tile-data permission" in denied.engine_note
        with pytest.raises(CLibError, match="OS refused"):
            denied.set_engine("amx")
        assert denied.engine == "avx512vnni"
    finally:
        denied.set_engine("auto")


OPTIONS = {
    "niti": NumericsOptions(),
    "stochastic-fine-momentum": NumericsOptions("stochastic", "nearest", "fine", "momentum"),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("model_name", sorted(parity_models()))
@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_whole_steps_match_reference_on_every_engine(engine, model_name, options):
    if engine not in available_engines():
        pytest.skip(f"engine {engine} does not run on this machine")
    table = cpu_kernel_table(engine=engine)
    graph = build_graph(parity_models()[model_name], 6, options)
    assert compare_steps(graph, REFERENCE_KERNELS, table, steps=2) == []


def test_freed_buffers_are_kept_where_glibc_allows():
    from gpu_backend.host_memory import keep_freed_buffers

    kept = keep_freed_buffers()
    assert kept is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    assert keep_freed_buffers() is kept  # once per process


def test_build_without_amx_runs_its_simd_engine():
    """What a compiler or CPU without AMX-INT8 builds: no amx engine, auto takes the SIMD kernel."""
    plain = cpu_library("native", ("-DNITI_NO_AMX",))
    plain.set_engine("auto")
    assert plain.engine == plain.kernel_isa and plain.engine_note == ""
    with pytest.raises(CLibError, match="not compiled into this build"):
        plain.set_engine("amx")
