"""Per-element cost of the C library's node-call vector ops against requantize, side by side.

One thread, 1 Mi elements, best of --repeat calls each: `add` (operands two octaves apart, so the
int32 path), `add` with a 30-octave gap (the int64 path), `global_avgpool` over 64 x 16 x 16 x 64
and `requantize` of an int32 tensor of the same size as the add, per rounding mode. Prints the
times and each op's ratio to requantize; writes section `elementwise-ops` of docs/results.md
unless --no-write.

    python benchmarks/elementwise_ops.py [--repeat 9] [--no-write]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import write_section  # noqa: E402
from gpu_backend.backends import CpuOps  # noqa: E402
from gpu_backend.lib import cpu_library  # noqa: E402
from nitisim.contract.executor import StepContext  # noqa: E402
from nitisim.contract.graph import Node  # noqa: E402
from nitisim.contract.numerics import QTensor  # noqa: E402

N = 1 << 20


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    lib = cpu_library()
    lib.set_num_threads(1)
    ops = CpuOps(lib, True)
    rng = np.random.default_rng(0)
    a = QTensor(rng.integers(-127, 128, N).astype(np.int8), -6)
    b = QTensor(rng.integers(-127, 128, N).astype(np.int8), -8)
    far = QTensor(b.m, -36)
    acc = rng.integers(-2**20, 2**20, N).astype(np.int32)
    maps = QTensor(rng.integers(-127, 128, (64, 16, 16, 64)).astype(np.int8), -5)
    pool = Node("p", "global_avgpool", "forward", "p", ("x",), ("y",), (), 2)
    pool_s = best(lambda: ops.global_avgpool(pool, StepContext(), maps), args.repeat)
    rows = ["| rounding | requantize (ms) | add, gap 2 (ms) | ratio | add, gap 30 (ms) | ratio |",
            "|---|---:|---:|---:|---:|---:|"]
    for mode in ("nearest", "pseudo_stochastic", "stochastic"):
        node = Node("r", "add", "forward", "r", ("a", "b"), ("y",), (("mode", mode),), 3)
        req = best(lambda: lib.requantize(acc, -10, mode), args.repeat)
        near = best(lambda: ops.add(node, StepContext(), a, b), args.repeat)
        wide = best(lambda: ops.add(node, StepContext(), a, far), args.repeat)
        rows.append(f"| {mode} | {req * 1e3:.3f} | {near * 1e3:.3f} | {near / req:.1f}x | {wide * 1e3:.3f} | "
                    f"{wide / req:.1f}x |")
    body = "\n".join([
        f"One thread, {N:,} elements, engine {lib.engine}, best of {args.repeat}. `global_avgpool` over "
        f"64x16x16x64 int8 ({maps.m.size:,} elements): {pool_s * 1e3:.3f} ms.", "", *rows])
    print(body)
    if not args.no_write:
        write_section("elementwise-ops", "Node-call vector ops against requantize", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
