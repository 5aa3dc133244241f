"""Are two integer training runs the same run, bit for bit? Compares the final checkpoints (every
weight and optimiser-state mantissa and exponent) and the per-epoch accuracies of two run folders,
e.g. the same config trained on the CUDA and the C backend: integer training is deterministic
(the counter hash replaces random state), so any difference is a backend bug.

    python benchmarks/same_run.py RUN_A RUN_B      # exit 0: identical; 1: they differ (says where)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nitisim.train.checkpoint import load_int8  # noqa: E402


def differences(a: Path, b: Path) -> list[str]:
    """What differs between run folders a and b (empty: the same run)."""
    params_a, meta_a = load_int8(a / "checkpoint.npz")
    params_b, meta_b = load_int8(b / "checkpoint.npz")
    found = []
    if meta_a.get("step") != meta_b.get("step"):
        found.append(f"checkpoint step {meta_a.get('step')} vs {meta_b.get('step')}")
    for name in sorted(set(params_a) | set(params_b)):
        pa, pb = params_a.get(name), params_b.get(name)
        if pa is None or pb is None:
            found.append(f"{name}: only in {'the first' if pb is None else 'the second'} run")
        elif pa.e != pb.e or pa.m.dtype != pb.m.dtype or pa.m.shape != pb.m.shape:
            found.append(f"{name}: exponent/dtype/shape {pa.e}/{pa.m.dtype}/{pa.m.shape} vs {pb.e}/{pb.m.dtype}/{pb.m.shape}")
        elif not np.array_equal(pa.m, pb.m):
            found.append(f"{name}: {int((pa.m != pb.m).sum())} of {pa.m.size} values differ")
    acc = [[(m["epoch"], m["train_accuracy"], m["test_accuracy"])
            for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())] for run in (a, b)]
    if acc[0] != acc[1]:
        found.append(f"per-epoch (epoch, train, test) accuracies {acc[0]} vs {acc[1]}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args(argv)
    found = differences(args.run_a, args.run_b)
    if found:
        print(f"DIFFERENT: {args.run_a} vs {args.run_b}:\n  " + "\n  ".join(found))
        return 1
    params, meta = load_int8(args.run_a / "checkpoint.npz")
    print(f"IDENTICAL: {args.run_a} and {args.run_b}: {len(params)} tensors after step {meta.get('step')}, "
          "every per-epoch accuracy equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
