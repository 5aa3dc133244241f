"""`python -m gpu_backend`: try every backend, run a small whole-step parity check, print PASS or FAIL.

Exit status 0 when every backend that could be loaded matches the numpy reference bit for bit;
a backend that cannot be loaded (no compiler, no GPU) prints FAIL with the reason but only a
mismatch makes the exit status 1.
"""
from __future__ import annotations

import sys

from .backends import BACKENDS, kernel_table
from .parity import parity_report


def _device_hooks(name: str):
    if name != "cuda":
        return None, None
    from . import cuda

    return cuda.to_device, cuda.to_host


def main() -> int:
    reference = kernel_table("numpy")
    mismatch = False
    for name in BACKENDS:
        if name == "numpy":
            print("numpy  PASS (the reference)")
            continue
        try:
            table = kernel_table(name)
            to_device, to_host = _device_hooks(name)
        except Exception as err:  # noqa: BLE001 - report why a backend is unusable, then go on
            print(f"{name:<6} FAIL unavailable: {type(err).__name__}: {err}")
            continue
        report = parity_report(table, reference, to_device=to_device, to_host=to_host)
        bad = {case: problems for case, problems in report.items() if problems}
        if bad:
            mismatch = True
            first_case, problems = next(iter(bad.items()))
            print(f"{name:<6} FAIL {len(bad)} of {len(report)} cases differ; {first_case}: {problems[0]}")
        else:
            print(f"{name:<6} PASS bit-exact on {len(report)} cases ({', '.join(report)})")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
