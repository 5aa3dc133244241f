"""Integer (NITI) vs float32 accuracy of one model trained for the same epochs, as a markdown table.

    python benchmarks/accuracy.py configs/train/fashion-lenet.yaml --epochs 15 --backend numpy
    python benchmarks/accuracy.py configs/train/fashion-vgg-small.yaml --epochs 15 --backend cpu --seeds 3

Runs `nitisim train CONFIG --arith int8` and `--arith fp32` (each in its own process, so the
integer run never loads torch) for each seed, into runs/accuracy/<stem>-{int8,fp32} (one seed) or
runs/accuracy/<stem>-seed<S>-{int8,fp32} (--seeds N: the config's seed and the N - 1 after it,
passed as `nitisim train --seed S`), then writes one row per (config, epochs, seeds, backend) into
docs/results.md (section accuracy): model, dataset, epochs, seeds, int8 and fp32 test accuracy side
by side (one seed: final with the best epoch's in brackets; several: mean +- sample standard
deviation of the final accuracies, with their range), the gap of the means, images/s of each, the
numerics settings, the command, the machine (lscpu model name and cores) and the date. Rows of
other keys already in the file are kept; a row with the same key is replaced. `--reuse` takes
finished runs from their folders instead of training again (e.g. after running them by hand).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_md import machine, write_section  # noqa: E402
TABLE_HEADER = (
    "| config | model | dataset | epochs | seeds | int8 test acc | fp32 test acc | gap (points) | int8 img/s "
    "| fp32 img/s | int8 settings | command | machine | date |"
)
SEEDS_COLUMN = 4  # rows written before the seeds column existed were single-seed rows
TABLE_RULE = "|" + "---|" * (TABLE_HEADER.count("|") - 1)
INTRO = """Each row trains the same model on the same data for the same
epochs twice: in integers (`nitisim train --arith int8`) and in float32 with torch (`--arith fp32`,
same network without biases, same int8-valued inputs and augmentation, SGD with momentum). With one
seed, accuracies are the final epoch's test accuracy, with the best epoch's in brackets; with
several, the mean +- sample standard deviation of the final accuracies over the seeds, with their
range in brackets. The gap is fp32 minus int8 (final, means). Images/s are training images per
second of training time (evaluation excluded), the mean over seeds.

"""


def train(config: Path, arith: str, epochs: int, engine: str, out: Path, data: str | None,
          seed: int | None = None) -> list[str]:
    """engine: the integer run's kernel table (--backend), the float32 twin's torch device (--device)."""
    cmd = [sys.executable, "-m", "nitisim", "train", str(config), "--arith", arith, "--epochs", str(epochs),
           "--backend" if arith == "int8" else "--device", engine, "--out", str(out)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if data:
        cmd += ["--data", data]
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return cmd


def load_summary(folder: Path, epochs: int, seed: int | None = None) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("epochs_done") != epochs:
        raise SystemExit(f"{folder}: holds {summary.get('epochs_done')} epochs, not {epochs}; run without --reuse")
    if seed is not None and summary["config"]["seed"] != seed:
        raise SystemExit(f"{folder}: trained with seed {summary['config']['seed']}, not {seed}; run without --reuse")
    return summary


def settings(cfg: dict) -> str:
    mu = ", ".join(f"{p['mu']}@{p['from_epoch']}" for p in cfg["mu_schedule"])
    augment = (cfg.get("augment", "none") + (f" pad {cfg['crop_pad']}" if "crop_pad" in cfg else "")
               + (f", cutout {cfg['erase_size']} px" if cfg.get("erase_size") else ""))
    return (f"batch {cfg['batch']}, mu {mu}, act {cfg['activation_rounding']}, err {cfg['error_rounding']}, "
            f"loss {cfg['loss_variant']}, update {cfg['update_rule']}, "
            f"headroom {cfg.get('weight_headroom_bits', 0)} bits, augment {augment}"
            + (f", weights averaged over the last {cfg['average_epochs']} epochs" if cfg.get("average_epochs") else ""))


def accuracy_cell(summaries: list[dict]) -> str:
    """One seed: final (best); several: mean +- sample std (min-max) of the final accuracies, in %."""
    finals = [100 * s["final_test_accuracy"] for s in summaries]
    if len(finals) == 1:
        return f"{finals[0]:.2f} ({100 * summaries[0]['best_test_accuracy']:.2f})"
    return f"{statistics.mean(finals):.2f} ± {statistics.stdev(finals):.2f} ({min(finals):.2f}-{max(finals):.2f})"


def mean_final(summaries: list[dict]) -> float:
    return statistics.mean(100 * s["final_test_accuracy"] for s in summaries)


def images_cell(summaries: list[dict]) -> str:
    return f"{statistics.mean(s['images_per_second'] for s in summaries):,.0f} ({summaries[0]['backend']})"


def row(config: Path, epochs: int, s_int: list[dict], s_fp: list[dict], command: str) -> str:
    """The table row of one (config, epochs) over its seeds: s_int[i] and s_fp[i] are seed i's summaries."""
    if len(s_int) != len(s_fp) or not s_int:
        raise ValueError(f"need the same number of int8 and fp32 runs, got {len(s_int)} and {len(s_fp)}")
    cfg = s_int[0]["config"]
    gap = mean_final(s_fp) - mean_final(s_int)
    cells = [
        str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        cfg.get("model_spec", {}).get("name", cfg["model"]), cfg["dataset"],
        str(epochs), str(len(s_int)), accuracy_cell(s_int), accuracy_cell(s_fp), f"{gap:+.2f}",
        images_cell(s_int), images_cell(s_fp),
        settings(cfg), f"`{command}`", machine(), datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def _cells(line: str) -> list[str]:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == TABLE_HEADER.count("|") - 2:  # a row from before the seeds column: one seed
        cells.insert(SEEDS_COLUMN, "1")
    return cells


def write_table(path: Path, new_row: str, command: str) -> None:
    """Replace the row with the same config, epochs, seeds and int8 backend, or append; keep the others.
    The table is the `accuracy` section of docs/results.md (benchmarks/results_md.py)."""
    def key(cells: list[str]) -> tuple:
        return cells[0], cells[3], cells[SEEDS_COLUMN], cells[8].rsplit("(", 1)[-1]

    rows = []
    if path.exists():
        text = path.read_text()
        section = re.search(r"<!-- BEGIN accuracy -->(.*?)<!-- END accuracy -->", text, re.S)
        lines = section.group(1).splitlines() if section else []
        rows = [_cells(ln) for ln in lines if ln.startswith("| ") and not ln.startswith("|---")]
        rows = [r for r in rows if r[0] != "config"]  # the header, this one's or an older one's
    new = _cells(new_row)
    rows = [r for r in rows if key(r) != key(new)] + [new]
    table = "\n".join("| " + " | ".join(r) + " |" for r in rows)
    body = INTRO + TABLE_HEADER + "\n" + TABLE_RULE + "\n" + table + "\n"
    write_section("accuracy", "Accuracy: integer-only (NITI) vs float32 (benchmarks/accuracy.py)", body, command, path)


def config_seed(config: Path) -> int:
    sys.path.insert(0, str(ROOT))
    from nitisim.train.config import load_config  # the integer side only: no torch

    return load_config(config).seed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seeds", type=int, default=1,
                        help="train with the config's seed and the N - 1 seeds after it; report mean and spread")
    parser.add_argument("--backend", default="auto", help="integer kernels: numpy | cpu | cuda | auto")
    parser.add_argument("--data", help="dataset folder (default: discovery)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "accuracy", help="run folders go here")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    config = args.config.resolve()
    stem = config.stem
    fp32_device = "cuda" if args.backend == "cuda" else "cpu"
    first = config_seed(config)
    summaries: dict[str, list[dict]] = {"int8": [], "fp32": []}
    for seed in range(first, first + args.seeds):
        # one seed keeps the folder names of single-seed runs, so --reuse still finds them
        tag = "" if args.seeds == 1 else f"-seed{seed}"
        folders = {arith: args.runs / f"{stem}{tag}-{arith}" for arith in ("int8", "fp32")}
        if not args.reuse:
            train(config, "int8", args.epochs, args.backend, folders["int8"], args.data, seed)
            train(config, "fp32", args.epochs, fp32_device, folders["fp32"], args.data, seed)
        for arith, folder in folders.items():
            summaries[arith].append(load_summary(folder, args.epochs, seed))
            print(f"seed {seed} {arith}: final {100 * summaries[arith][-1]['final_test_accuracy']:.2f} %",
                  file=sys.stderr)
    words = ["python", "benchmarks/accuracy.py", str(args.config), "--epochs", str(args.epochs)]
    words += ["--seeds", str(args.seeds)] if args.seeds > 1 else []
    command = shlex.join(words + ["--backend", args.backend])
    line = row(config, args.epochs, summaries["int8"], summaries["fp32"], command)
    write_table(args.md, line, command)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
