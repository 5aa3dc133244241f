"""`python -m gpu_backend`: try every backend, run a small whole-step parity check, print PASS or FAIL.

The cpu backend is checked once per GEMM engine this machine runs (amx, avx512vnni, avx2, scalar),
each line naming its engine; the first cpu line is the engine `--backend cpu` uses here. Exit
status 0 when every backend that could be loaded matches the numpy reference bit for bit; a backend
that cannot be loaded (no compiler, no GPU) prints FAIL with the reason but only a mismatch makes
the exit status 1.
"""
from __future__ import annotations

import sys

from nitisim.contract.reference import REFERENCE_KERNELS

from .backends import cpu_kernel_table, cuda_kernel_table
from .lib import available_engines, engine_library
from .parity import parity_report

COMPILED = ("cpu", "cuda")  # the tables this package builds; numpy (the contract's) is the reference


def _device_hooks(name: str):
    if name != "cuda":
        return None, None
    from . import cuda

    return cuda.to_device, cuda.to_host


def _candidates(name: str):
    """(label, loader) for each table to check under backend `name`: one per CPU engine for cpu."""
    if name != "cpu":
        return [(name, cuda_kernel_table)]
    try:
        default = engine_library().engine
        engines = [default] + [e for e in available_engines() if e != default]
    except Exception:  # noqa: BLE001 - no compiler or library: loading the table reports why
        return [("cpu", cpu_kernel_table)]
    return [(f"cpu[{engine}]", lambda engine=engine: cpu_kernel_table(engine=engine)) for engine in engines]


def main() -> int:
    reference = REFERENCE_KERNELS
    mismatch = False
    print("numpy  PASS (the reference)")
    for name in COMPILED:
        for label, load in _candidates(name):
            try:
                table = load()
                to_device, to_host = _device_hooks(name)
            except Exception as err:  # noqa: BLE001 - report why a backend is unusable, then go on
                print(f"{label:<6} FAIL unavailable: {type(err).__name__}: {err}")
                continue
            report = parity_report(table, reference, to_device=to_device, to_host=to_host)
            bad = {case: problems for case, problems in report.items() if problems}
            if bad:
                mismatch = True
                first_case, problems = next(iter(bad.items()))
                print(f"{label:<6} FAIL {len(bad)} of {len(report)} cases differ; {first_case}: {problems[0]}")
            else:
                print(f"{label:<6} PASS bit-exact on {len(report)} cases ({', '.join(report)})")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
