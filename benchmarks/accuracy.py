"""Integer (NITI) vs float32 accuracy of one model trained for the same epochs, as a markdown table.

    python benchmarks/accuracy.py configs/train/fashion-lenet.yaml --epochs 15 --backend numpy

Runs `nitisim train CONFIG --arith int8` and `--arith fp32` (each in its own process, so the
integer run never loads torch) into runs/accuracy/<stem>-{int8,fp32}, then writes one row per
(config, epochs, backend) into docs/results.md (section accuracy): model, dataset, epochs, final int8 and
fp32 test accuracy (best epoch in brackets), the gap, images/s of each, the numerics settings,
the command, the machine (lscpu model name and cores) and the date. Rows of other configs already
in the file are kept; a row with the same key is replaced. `--reuse` takes finished runs from
their folders instead of training again (e.g. after running the two trainings by hand).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_md import machine, write_section  # noqa: E402
TABLE_HEADER = (
    "| config | model | dataset | epochs | int8 test acc | fp32 test acc | gap (points) | int8 img/s | fp32 img/s "
    "| int8 settings | command | machine | date |"
)
TABLE_RULE = "|" + "---|" * (TABLE_HEADER.count("|") - 1)
INTRO = """Each row trains the same model on the same data for the same
epochs twice: in integers (`nitisim train --arith int8`) and in float32 with torch (`--arith fp32`,
same network without biases, same int8-valued inputs, SGD with momentum). Accuracies are the
final epoch's test accuracy, with the best epoch's in brackets; the gap is fp32 minus int8 (final).
Images/s are training images per second of training time (evaluation excluded).

"""


def train(config: Path, arith: str, epochs: int, backend: str, out: Path, data: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "nitisim", "train", str(config), "--arith", arith, "--epochs", str(epochs),
           "--backend", backend, "--out", str(out)]
    if data:
        cmd += ["--data", data]
    print("+", shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return cmd


def load_summary(folder: Path, epochs: int) -> dict:
    summary = json.loads((folder / "summary.json").read_text())
    if summary.get("epochs_done") != epochs:
        raise SystemExit(f"{folder}: holds {summary.get('epochs_done')} epochs, not {epochs}; run without --reuse")
    return summary


def settings(cfg: dict) -> str:
    mu = ", ".join(f"{p['mu']}@{p['from_epoch']}" for p in cfg["mu_schedule"])
    return (f"batch {cfg['batch']}, mu {mu}, act {cfg['activation_rounding']}, err {cfg['error_rounding']}, "
            f"loss {cfg['loss_variant']}, update {cfg['update_rule']}, "
            f"headroom {cfg.get('weight_headroom_bits', 0)} bits")


def pct(summary: dict) -> str:
    return f"{100 * summary['final_test_accuracy']:.2f} ({100 * summary['best_test_accuracy']:.2f})"


def row(config: Path, epochs: int, s_int: dict, s_fp: dict, command: str) -> str:
    cfg = s_int["config"]
    gap = 100 * (s_fp["final_test_accuracy"] - s_int["final_test_accuracy"])
    cells = [
        str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config), cfg["model"], cfg["dataset"],
        str(epochs), pct(s_int), pct(s_fp), f"{gap:+.2f}",
        f"{s_int['images_per_second']:,.0f} ({s_int['backend']})",
        f"{s_fp['images_per_second']:,.0f} ({s_fp['backend']})",
        settings(cfg), f"`{command}`", machine(), datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def write_table(path: Path, new_row: str, command: str) -> None:
    """Replace the row with the same config, epochs and int8 backend, or append; keep the others.
    The table is the `accuracy` section of docs/results.md (benchmarks/results_md.py)."""
    def key(line: str) -> tuple:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        return cells[0], cells[3], cells[7].rsplit("(", 1)[-1]

    rows = []
    if path.exists():
        text = path.read_text()
        section = re.search(r"<!-- BEGIN accuracy -->(.*?)<!-- END accuracy -->", text, re.S)
        lines = section.group(1).splitlines() if section else []
        rows = [ln for ln in lines if ln.startswith("| ") and ln != TABLE_HEADER and not ln.startswith("|---")]
    rows = [r for r in rows if key(r) != key(new_row)] + [new_row]
    body = INTRO + TABLE_HEADER + "\n" + TABLE_RULE + "\n" + "\n".join(rows) + "\n"
    write_section("accuracy", "Accuracy: integer-only (NITI) vs float32 (benchmarks/accuracy.py)", body, command, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--backend", default="auto", help="integer kernels: numpy | cpu | cuda | auto")
    parser.add_argument("--data", help="dataset folder (default: discovery)")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "accuracy", help="run folders go here")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--reuse", action="store_true", help="read finished runs instead of training")
    args = parser.parse_args(argv)
    config = args.config.resolve()
    stem = config.stem
    folders = {arith: args.runs / f"{stem}-{arith}" for arith in ("int8", "fp32")}
    fp32_backend = "cuda" if args.backend == "cuda" else "cpu"
    if not args.reuse:
        train(config, "int8", args.epochs, args.backend, folders["int8"], args.data)
        train(config, "fp32", args.epochs, fp32_backend, folders["fp32"], args.data)
    s_int, s_fp = load_summary(folders["int8"], args.epochs), load_summary(folders["fp32"], args.epochs)
    command = shlex.join(["python", "benchmarks/accuracy.py", str(args.config), "--epochs", str(args.epochs),
                          "--backend", args.backend])
    line = row(config, args.epochs, s_int, s_fp, command)
    write_table(args.md, line, command)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
