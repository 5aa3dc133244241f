"""Does a change keep training bit for bit? Trains the same seeded runs with two source trees and
compares their checkpoints.

A redesign that moves code (a new floor, one kernel-table builder, one config reader) must leave
every number where it was. This script checks that end to end: it checks out `--before` (a git
revision, default the parent of HEAD) into a temporary worktree, then runs the same trainings with
that tree and with this one (`--after`, default the working tree), each in its own output folder:

- the `mix` net (benchmarks/same_seed/mix-model.yaml: every op the graph builder emits) with each
  update rule (plain, momentum, shadow16) and loss variant (niti, fine) on the C backend, and
  shadow16/fine on the numpy reference too;
- LeNet with the shipped Fashion-MNIST numerics on both backends, and its float32 twin.

Integer runs are compared with benchmarks/same_run.py (every mantissa and exponent, per-epoch
accuracies); the float32 checkpoint tensor by tensor. Writes the `same-seed-revisions` section of
docs/results.md unless --no-write. Needs Fashion-MNIST (make deps installs it).

    python benchmarks/same_seed_revisions.py --before 9610631      # the commit before a redesign
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import write_section  # noqa: E402
from benchmarks.same_run import differences  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "same_seed"
RUNS = (  # (name, config, backend, arith, overrides)
    *((f"mix-{rule}-{loss}-cpu", "mix.yaml", "cpu", "int8", {"update_rule": rule, "loss_variant": loss})
      for rule in ("plain", "momentum", "shadow16") for loss in ("niti", "fine")),
    ("mix-shadow16-fine-numpy", "mix.yaml", "numpy", "int8", {"update_rule": "shadow16", "loss_variant": "fine"}),
    ("lenet-cpu", "lenet-small.yaml", "cpu", "int8", {}),
    ("lenet-numpy", "lenet-small.yaml", "numpy", "int8", {}),
    ("lenet-fp32", "lenet-small.yaml", "default", "fp32", {}),
)


def _config(work: Path, name: str, config: str, overrides: dict) -> Path:
    """The config with its overrides, written next to a copy of the model it names."""
    text = (CONFIGS / config).read_text()
    for key, value in overrides.items():
        text = "\n".join(f"{key}: {value}" if line.startswith(f"{key}:") else line for line in text.splitlines()) + "\n"
    (work / "mix-model.yaml").write_text((CONFIGS / "mix-model.yaml").read_text())
    path = work / f"{name}.yaml"
    path.write_text(text)
    return path


def train(tree: Path, work: Path, out: Path, run: tuple) -> None:
    name, config, backend, arith, overrides = run
    cfg = _config(work, name, config, overrides)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    # The float32 twin runs on its default device (torch on the CPU without a GPU): the flag that
    # picks it has changed name (--backend, then --device), and the default reads the same in both.
    device = ["--backend", backend] if arith == "int8" else []
    cmd = [sys.executable, "-m", "nitisim", "train", str(cfg), *device, "--arith", arith,
           "--out", str(out / name), "--overwrite"]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{tree}: {' '.join(cmd[2:])} failed:\n{done.stderr[-2000:]}")


def fp32_differences(a: Path, b: Path) -> list[str]:
    import torch

    def flat(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from flat(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from flat(v, f"{prefix}/{i}")
        else:
            yield prefix, obj

    fa, fb = (dict(flat(torch.load(p / "checkpoint.pt", weights_only=False))) for p in (a, b))
    if fa.keys() != fb.keys():
        return [f"checkpoint keys differ: {sorted(fa.keys() ^ fb.keys())}"]
    return [k for k in fa if not (torch.equal(fa[k], fb[k]) if torch.is_tensor(fa[k]) else fa[k] == fb[k])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="HEAD~1", help="git revision to compare against (default HEAD~1)")
    ap.add_argument("--after", type=Path, default=ROOT, help="source tree of the new code (default this one)")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave docs/results.md alone")
    args = ap.parse_args(argv)
    rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    after_rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=args.after, capture_output=True,
                               text=True).stdout.strip() or str(args.after)
    with tempfile.TemporaryDirectory(prefix="same-seed-") as tmp:
        tmp = Path(tmp)
        out = args.out or tmp / "runs"
        before_tree = tmp / "before"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before_tree), rev], cwd=ROOT, check=True)
        try:
            rows, different = [], 0
            start = time.monotonic()
            for i, run in enumerate(RUNS, 1):
                for side, tree in (("before", before_tree), ("after", args.after)):
                    work = tmp / side / "work" if side == "before" else tmp / "after-work"
                    work.mkdir(parents=True, exist_ok=True)
                    train(tree, work, out / side, run)
                a, b = out / "before" / run[0], out / "after" / run[0]
                found = fp32_differences(a, b) if run[3] == "fp32" else differences(a, b)
                different += bool(found)
                rows.append(f"| {run[0]} | {run[2]} | {run[3]} | {'identical' if not found else 'DIFFERENT: ' + '; '.join(found)[:200]} |")
                print(f"[{i}/{len(RUNS)}] {run[0]}: {'identical' if not found else 'DIFFERENT'} "
                      f"({time.monotonic() - start:.0f} s)", file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT)
    table = "| run | backend | arith | checkpoint and per-epoch accuracy |\n|---|---|---|---|\n" + "\n".join(rows)
    def subject(tree: Path, what: str) -> str:
        return subprocess.run(["git", "log", "-1", "--format=%s", what], cwd=tree, capture_output=True,
                              text=True).stdout.strip()[:160]

    summary = (f"{len(RUNS) - different} of {len(RUNS)} same-seed runs identical between {rev} (before) and "
               f"{after_rev} (after).\n\n- before: {rev} {subject(ROOT, rev)}\n- after: {after_rev} "
               f"{subject(args.after, 'HEAD')}\n\nInteger runs are compared by benchmarks/same_run.py (every "
               "mantissa, exponent and per-epoch accuracy; on two different runs it names each tensor and how many "
               "values differ), the float32 checkpoint tensor by tensor.")
    print(table + "\n\n" + summary)
    if not args.no_write:
        write_section("same-seed-revisions", "Same-seed training before and after a change", summary + "\n\n" + table)
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
