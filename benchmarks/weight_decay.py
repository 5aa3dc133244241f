"""Probe: does a decoupled integer weight decay help the integer LeNet? (Not clearly at one seed: not shipped.)

After each plain NITI update, w -= SR(w * 2**(mu - d)) with the counter-hash stochastic rounding
(numerics.round_shift 'stochastic'; a weight below 2**(d - mu) still decays, with probability
w * 2**(mu - d) per step), so the decay shrinks with the mu schedule as float SGD's lr * wd does.
It is applied by wrapping the C backend's `update` kernel; with d = off the run is the shipped
config exactly. Trains configs/train/fashion-lenet.yaml for its epochs (or --epochs) per setting
and writes docs/results.md (section `weight-decay`).

    python benchmarks/weight_decay.py [--shifts off 12 14 16] [--epochs 20]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nitisim.backends import kernel_table  # noqa: E402
from nitisim.contract.numerics import QTensor, clamp_int8, round_shift  # noqa: E402
from nitisim.contract.shipped import CONFIGS  # noqa: E402
from nitisim.train.config import load_config  # noqa: E402
from nitisim.train.data import load_for_config  # noqa: E402
from nitisim.train.integer import IntegerTrainer  # noqa: E402
from nitisim.train.loop import run_training  # noqa: E402
from nitisim.train.progress import Progress  # noqa: E402
from nitisim.train.runfiles import RunFolder  # noqa: E402
from results_md import write_section  # noqa: E402

DECAY_STREAM = 100003  # added to the update node's tensor id: a hash stream of its own


def decaying_table(shift: int | None):
    """The C kernel table with `update` followed by the decay (None: unchanged)."""
    base = kernel_table("cpu")
    if shift is None:
        return base

    def update(node, ctx, w, g, *state):
        outs = base["update"](node, ctx, w, g, *state)
        s = shift - ctx.mu
        if s < 1:
            raise ValueError(f"decay shift {shift} must exceed mu {ctx.mu}")
        new_w = outs[0]
        decay = round_shift(new_w.m, s, "stochastic", seed=ctx.seed, step=ctx.step,
                            tensor_id=node.tensor_id + DECAY_STREAM)
        return (QTensor(clamp_int8(new_w.m.astype(np.int64) - decay), new_w.e), *outs[1:])

    return {**base, "update": update}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shifts", nargs="+", default=["off", "12", "14", "16"], help="d values, or off")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--data", help="dataset folder (default: discovery)")
    args = ap.parse_args(argv)
    cfg = load_config(CONFIGS / "train" / "fashion-lenet.yaml").with_epochs(args.epochs)
    ds = load_for_config(cfg, args.data)
    rows = []
    for text in args.shifts:
        shift = None if text == "off" else int(text)
        trainer = IntegerTrainer(cfg, decaying_table(shift), "cpu")
        with tempfile.TemporaryDirectory() as tmp:
            run = RunFolder(Path(tmp) / "run", "int8")
            run.create()
            s = run_training(cfg, trainer, ds, run, progress=Progress(enabled=False))
            last = [100 * m["test_accuracy"] for m in run.read_metrics()[-5:]]
        row = (f"| {text} | {100 * s['final_test_accuracy']:.2f} | {min(last):.2f} - {max(last):.2f} | "
               f"{100 * s['best_test_accuracy']:.2f} (epoch {s['best_epoch'] + 1}) | "
               f"{100 * s['final_train_accuracy']:.2f} |")
        print(row, flush=True)
        rows.append(row)
    body = "\n".join([
        f"fashion-lenet.yaml (integer, C backend, seed {cfg.seed}), {args.epochs} epochs per setting, decay "
        "w -= SR(w * 2^(mu - d)) after each update (d = off: the shipped config).", "",
        "| d | final test % | test % over the last 5 epochs | best test % | final train % |",
        "|---|---|---|---|---|", *rows])
    write_section("weight-decay", "Integer weight decay probe (benchmarks/weight_decay.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
