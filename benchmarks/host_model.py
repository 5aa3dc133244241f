"""The calibrated host model against the measured run: `nitisim run`, then its numbers into
docs/results.md (section host-model) with the machine's load average before and after, since
measured time on a shared 2-core machine depends on what else runs.

    python benchmarks/host_model.py               # runs `nitisim run` (as `make run`), then writes
    python benchmarks/host_model.py --from DIR    # only reads DIR/compare.json of an earlier run

With OMP_NUM_THREADS set (both the training and the probes then use that many threads), the
section is `host-model-<N>-threads`, so a run pinned to fewer threads never replaces the default's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def body(doc: dict, load_before: str, load_after: str, seconds: float | None) -> str:
    lines = [f"Load average (1 / 5 / 15 min) on the 2 cores: before {load_before}, after {load_after}"
             + (f"; `nitisim run` took {seconds:.0f} s." if seconds else "."), ""]
    lines += ["| model | points | R^2 (prediction, no fit) | R^2 (fitted line) | Spearman | measured step (ms) | "
              "predicted step (ms) |", "|---|---|---|---|---|---|---|"]
    for p in doc["predictions"]:
        lines.append(f"| {p['machine_model']} (calibrated host) | {len(p['residuals'])} | {p['r2']:.3f} | "
                     f"{p['fit']['r2']:.3f} | {p['spearman']:.3f} | {p['measured_total_seconds'] * 1e3:.2f} | "
                     f"{p['predicted_total_seconds'] * 1e3:.2f} |")
    hosts = {p["machine_model"] for p in doc["predictions"]}
    for a in doc["agreement"]:
        if a["accelerator"] not in hosts:
            lines.append(f"| {a['accelerator']} (accelerator) | {len(a['points'])} | - | {a['fit']['r2']:.3f} | "
                         f"{a['spearman_points']:.3f} | - | - |")
    for p in doc["predictions"]:
        lines += ["", f"Largest residuals on {p['machine_model']} (measured - predicted, per training step):", "",
                  "| layer | phase | measured (us) | predicted (us) | residual (us) |", "|---|---|---|---|---|"]
        for r in p["residuals"][:8]:
            lines.append(f"| {r['layer']} | {r['phase']} | {r['measured_seconds'] * 1e6:.1f} | "
                         f"{r['predicted_seconds'] * 1e6:.1f} | {r['residual_seconds'] * 1e6:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", help="an earlier `nitisim run` output folder (skip the run)")
    parser.add_argument("--out", default="nitisim-out", help="output folder of the run (default nitisim-out)")
    args = parser.parse_args()
    before = load()
    seconds = None
    threads = os.environ.get("OMP_NUM_THREADS")
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    section, title = "host-model", "The calibrated host model against the measured run (nitisim run)"
    if threads:
        section, title = f"host-model-{threads}-threads", f"{title}, {threads} thread(s)"
    if args.source:
        out = Path(args.source)
        command = f"{env}nitisim run --out {out}  (earlier run), then python benchmarks/host_model.py --from {out}"
    else:
        out = Path(args.out)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nitisim", "run", "--out", str(out)], check=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        command = f"{env}python benchmarks/host_model.py  (nitisim run, as make run)"
    doc = json.loads((out / "compare.json").read_text())
    if not doc.get("predictions"):
        print(f"{out}/compare.json has no machine-model prediction (was the run on the C backend?)", file=sys.stderr)
        return 2
    path = write_section(section, title, body(doc, before, load(), seconds), command)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
