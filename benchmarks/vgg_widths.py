"""Training-step time of 28x28x1 VGG-small widths: the measurement behind vgg-small-fmnist's choice.

Times one training step (forward, backward, update) at batch --batch for each candidate width
list (VGG-small-7 layout: two 3x3 convs per stage, 3 pools, dropout, Linear 10), on the C backend
(integer) and on torch float32 (SGD with momentum, the fp32 twin's network), both with --threads
threads (1: what one training run may use on this shared machine). Best of --repeats steps after
one warm-up. Writes docs/results.md (section `vgg-widths`) and prints the table.

    python benchmarks/vgg_widths.py [--batch 128] [--threads 1] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from results_md import write_section  # noqa: E402
from timing import best_seconds  # noqa: E402

M = "M"
CANDIDATES: dict[str, list] = {  # name -> widths, "M" = 2x2 max pool
    "32/64/128 (vgg-small-fmnist)": [32, 32, M, 64, 64, M, 128, 128, M],
    "32/64/128, 3 convs last stage": [32, 32, M, 64, 64, M, 128, 128, 128, M],
    "64/128/256": [64, 64, M, 128, 128, M, 256, 256, M],
}
EPOCH_IMAGES = 60_000  # Fashion-MNIST's training set


def int8_step(widths: list, batch: int, threads: int):
    from gpu_backend.backends import cpu_kernel_table
    from nitisim.contract.executor import StepContext, train_step
    from nitisim.contract.graph import NumericsOptions, build_graph
    from nitisim.contract.init import init_params
    from nitisim.contract.models import _vgg
    from nitisim.contract.numerics import QTensor

    kernels = cpu_kernel_table(threads)
    graph = build_graph(_vgg("vgg", widths, input_shape=(28, 28, 1)), batch, NumericsOptions(loss_variant="fine"))
    state = {"params": init_params(graph, 0), "step": 0}
    rng = np.random.default_rng(0)
    x = QTensor(rng.integers(-127, 128, (batch, 28, 28, 1), dtype=np.int8), -8)
    labels = rng.integers(0, 10, batch).astype(np.int32)

    def step():
        ctx = StepContext(seed=0, step=state["step"], mu=2)
        state["params"] = train_step(graph, kernels, state["params"], x, labels, ctx).params
        state["step"] += 1

    return step, graph.macs()


def fp32_step(widths: list, batch: int, threads: int):
    import torch

    from nitisim.contract.models import _vgg
    from nitisim.train.fp32 import SpecNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = SpecNet(_vgg("vgg", widths, input_shape=(28, 28, 1)))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 28, 28, 1), torch.randint(0, 10, (batch,))

    def step():
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    for name, widths in CANDIDATES.items():
        step, macs = int8_step(widths, args.batch, args.threads)
        s_int = best_seconds(step, args.repeats)
        s_fp = best_seconds(fp32_step(widths, args.batch, args.threads), args.repeats)
        minutes = [EPOCH_IMAGES / args.batch * s / 60 for s in (s_int, s_fp)]
        row = (f"| {name} | {macs / 1e9:.2f} | {s_int:.3f} | {args.batch / s_int:,.0f} | {minutes[0]:.1f} | "
               f"{s_fp:.3f} | {args.batch / s_fp:,.0f} | {minutes[1]:.1f} |")
        print(row, flush=True)
        rows.append(row)
    load = os.getloadavg()[0]
    body = "\n".join([
        f"One training step at batch {args.batch}, {args.threads} thread(s) each, best of {args.repeats} after a "
        f"warm-up; load average {load:.1f} at the end (a shared 2-core machine). Integer: C backend "
        "(`cpu_kernel_table`), fine loss, plain update. Float32: torch SGD with momentum on the same network. "
        "Epoch minutes are training only (60,000 images), without evaluation.", "",
        "| widths | GMAC / step | int8 s / step | int8 img/s | int8 min / epoch | fp32 s / step | fp32 img/s "
        "| fp32 min / epoch |",
        "|---|---|---|---|---|---|---|---|", *rows])
    write_section("vgg-widths", "VGG-small widths for 28x28x1 (benchmarks/vgg_widths.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
