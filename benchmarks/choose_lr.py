"""Choose the float32 twin's learning rate on the validation split, never on the test set.

Trains the fp32 twin of a training config once per learning rate (and per seed with --seeds), each
with the config's validation split (or --validation V), and picks the rate whose final-epoch
validation accuracy, averaged over the seeds, is highest; a tie goes to the rate listed first.
Only validation accuracies reach the choice (`choose`); the test accuracy is read afterwards, for
the chosen rate alone, and reported at the final epoch. Each run prints its epoch lines on stderr;
each rate's result and the choice go to stdout. With --write the table becomes the section
`choose-lr-<config stem>` of docs/results.md.

    python benchmarks/choose_lr.py configs/train/fashion-resnet.yaml [--lrs 0.2 0.1 0.05 0.02 0.01]
        [--seeds 0] [--epochs N] [--validation 5000] [--device auto] [--data DIR] [--out DIR] [--write]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from nitisim.contract.errors import UserInputError  # noqa: E402
from nitisim.train.config import TrainConfig, load_config  # noqa: E402
from nitisim.train.stage import train_fp32, with_overrides  # noqa: E402
from results_md import write_section  # noqa: E402

DEFAULT_LRS = (0.2, 0.1, 0.05, 0.02, 0.01)
MIN_LRS = 4  # issue 25: the twin's rate is chosen from at least four values
DEFAULT_VALIDATION = 5000  # of Fashion-MNIST's 60,000 training images, when the config holds none out

Trainer = Callable[[TrainConfig, Path], Mapping[str, Any]]  # (config, run folder) -> the run's summary


def choose(validation: Mapping[float, float]) -> float:
    """The rate with the highest validation accuracy; on a tie the first in the mapping's order."""
    best = max(validation.values())
    return next(lr for lr, acc in validation.items() if acc == best)


def with_lr(cfg: TrainConfig, lr: float) -> TrainConfig:
    return dataclasses.replace(cfg, fp32=dataclasses.replace(cfg.fp32, lr=lr))


def sweep(cfg: TrainConfig, lrs: Sequence[float], seeds: Sequence[int], out: Path, train: Trainer,
          report: Callable[[str], None] = print) -> tuple[float, dict[float, float], dict[tuple[float, int], Any]]:
    """Train every (rate, seed); returns (chosen rate, mean final validation accuracy per rate, summaries).

    The summaries are handed back for reporting, but only their final_validation_accuracy is read
    before the choice is made.
    """
    validation: dict[float, float] = {}
    summaries: dict[tuple[float, int], Any] = {}
    for lr in lrs:
        accs = []
        for seed in seeds:
            run_cfg = dataclasses.replace(with_lr(cfg, lr), seed=seed)
            s = summaries[lr, seed] = train(run_cfg, out / f"lr-{lr:g}-seed-{seed}")
            accs.append(s["final_validation_accuracy"])
        validation[lr] = statistics.mean(accs)
        report(f"lr {lr:g}: final validation accuracy {100 * validation[lr]:.2f} % "
               f"({', '.join(f'{100 * a:.2f}' for a in accs)} over seeds {', '.join(map(str, seeds))})")
    return choose(validation), validation, summaries


def table(cfg: TrainConfig, seeds: Sequence[int], validation: Mapping[float, float], chosen: float,
          chosen_test: Sequence[float]) -> str:
    rows = [f"| {lr:g} | {100 * acc:.2f} |{' chosen' if lr == chosen else ''}" for lr, acc in validation.items()]
    return "\n".join([
        f"The float32 twin of `{cfg.source}` ({cfg.model.name}, {cfg.epochs} epochs, "
        f"{cfg.fp32.lr_schedule.kind} schedule), seeds {', '.join(map(str, seeds))}, trained once per learning "
        f"rate on the training images less the last {cfg.validation} (the validation split). The rate is chosen "
        "by the final-epoch validation accuracy (mean over the seeds); the test set is read only for the chosen "
        "rate, at the final epoch.",
        "",
        "| learning rate | final validation accuracy (%) |",
        "|---|---|",
        *rows,
        "",
        f"Chosen: lr {chosen:g}. Its final-epoch test accuracy: "
        + ", ".join(f"{100 * t:.2f}" for t in chosen_test) + " %"
        + (f" (mean {100 * statistics.mean(chosen_test):.2f} %)" if len(chosen_test) > 1 else "") + ".",
    ])


def main(argv: Sequence[str] | None = None, train: Trainer | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="training config YAML whose fp32 twin is tuned")
    ap.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS), help="learning rates to try")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds per rate (default: the config's seed)")
    ap.add_argument("--epochs", type=int, help="instead of the config's epochs")
    ap.add_argument("--validation", type=int, help="training images held out (default: the config's, else "
                    f"{DEFAULT_VALIDATION})")
    ap.add_argument("--device", default="auto", help="torch device: cpu, cuda or auto")
    ap.add_argument("--data", help="dataset folder (default: discovery)")
    ap.add_argument("--out", help="folder of the run folders (default runs/choose-lr-<config stem>)")
    ap.add_argument("--write", action="store_true", help="write the table into docs/results.md")
    args = ap.parse_args(argv)
    try:
        if len(set(args.lrs)) < MIN_LRS:
            raise UserInputError("--lrs", None, f"give at least {MIN_LRS} different learning rates, got {args.lrs}")
        if any(lr <= 0 for lr in args.lrs):
            raise UserInputError("--lrs", None, f"learning rates must be positive, got {args.lrs}")
        cfg = with_overrides(load_config(args.config), epochs=args.epochs)
        validation = args.validation if args.validation is not None else (cfg.validation or DEFAULT_VALIDATION)
        if validation < 1:
            raise UserInputError("--validation", None, "the rate is chosen on a validation split: give at least 1")
        cfg = dataclasses.replace(cfg, validation=validation)
        seeds = args.seeds or [cfg.seed]
        out = Path(args.out or ROOT / "runs" / f"choose-lr-{cfg.stem}")
        train = train or (lambda c, folder: train_fp32(c, folder, args.device, data=args.data, overwrite=True))
        chosen, by_lr, summaries = sweep(cfg, list(dict.fromkeys(args.lrs)), seeds, out, train)
    except UserInputError as err:
        print(f"choose_lr: error: {err}", file=sys.stderr)
        return 2
    chosen_test = [summaries[chosen, seed]["final_test_accuracy"] for seed in seeds]  # after the choice only
    print(f"chosen learning rate: {chosen:g} (final validation accuracy {100 * by_lr[chosen]:.2f} %); its final-epoch "
          f"test accuracy {', '.join(f'{100 * t:.2f}' for t in chosen_test)} %", flush=True)
    if args.write:
        write_section(f"choose-lr-{cfg.stem}", f"Float32 twin learning rate for {cfg.stem}, chosen on validation",
                      table(cfg, seeds, by_lr, chosen, chosen_test))
    return 0


if __name__ == "__main__":
    sys.exit(main())
