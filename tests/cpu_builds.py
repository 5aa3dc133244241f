"""The CPU libraries a node-call op's tests run on: every build this CPU executes, and the kernel
table under every GEMM engine setting (the ops themselves are engine-independent; this shows it)."""
import platform
import shutil

import pytest


def c_builds() -> dict:
    """{build: CLib}: the native build, and on x86 the AVX2, SSE2 and no-SIMD ones where they run."""
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler to build the CPU kernel library")
    from gpu_backend.lib import cpu_library, cpu_runs

    builds = {"native": ("native", ())}
    if platform.machine() in ("x86_64", "AMD64"):
        builds.update({"avx2": ("haswell", ()), "scalar": ("x86-64", ()), "portable": ("x86-64", ("-U__SSE2__",))})
    return {name: cpu_library(march, flags) for name, (march, flags) in builds.items()
            if name == "native" or cpu_runs("avx2" if name == "avx2" else "scalar")}


def cpu_engines() -> list[str]:
    from gpu_backend.lib import CPU_ENGINES

    return ["auto", *CPU_ENGINES]


def table_under_engine(engine: str, monkeypatch):
    """The C kernel table with $NITISIM_CPU_ENGINE = `engine` (skipped where the CPU lacks it)."""
    from gpu_backend.backends import cpu_kernel_table
    from gpu_backend.lib import ENGINE_ENV, CLibError, available_engines

    if engine != "auto" and engine not in available_engines():
        pytest.skip(f"engine {engine} cannot run on this machine")
    monkeypatch.setenv(ENGINE_ENV, engine)
    try:
        return cpu_kernel_table()
    except CLibError as err:  # pragma: no cover - available_engines said it runs
        pytest.fail(str(err))


def assert_matches_reference(table, op: str, node, ctx, *inputs):
    """Run `op` on `table` and on the numpy reference; the output (mantissas and exponent) must be
    the same. Returns the reference's output."""
    import numpy as np

    from nitisim.contract.reference import REFERENCE_KERNELS

    (got,) = table[op](node, ctx, *inputs)
    (want,) = REFERENCE_KERNELS[op](node, ctx, *inputs)
    assert got.e == want.e, (op, got.e, want.e)
    np.testing.assert_array_equal(got.m, want.m)
    return want
