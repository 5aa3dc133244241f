"""Kernel and training-step throughput of the CPU backend, side by side with torch and numpy.

Measures, in one process and interleaved (best of several repetitions, so that drift on a shared
machine hits every contender alike):
  1. int8 GEMM (C backend, int32 accumulate) against torch float32 matmul at the GEMM shapes of
     vgg-small-7's convolutions (forward im2col view, batch --gemm-batch);
  2. int8 conv2d forward (C backend) against torch float32 conv2d (channels_last) on those layers;
  3. whole training steps at batch --batch: the C backend against the numpy reference executor
     and against torch float32 training of the same model (SGD, momentum).
Writes the tables to docs/results.md (section `kernels`) and prints them.

    python benchmarks/kernels.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

from nitisim.executor import StepContext, train_step  # noqa: E402
from nitisim.graph import build_graph  # noqa: E402
from nitisim.init import init_params  # noqa: E402
from nitisim.models import Conv, builtin_models  # noqa: E402
from nitisim.numerics import QTensor  # noqa: E402
from nitisim.reference import REFERENCE_KERNELS  # noqa: E402
from nitisim.shapes import infer_shapes  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    """Minimum wall time of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def race(contenders: dict, repeats: int, rounds: int = 3) -> dict[str, float]:
    """Best time of each contender over `rounds` interleaved rounds of `repeats` calls."""
    best = {name: float("inf") for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            best[name] = min(best[name], best_seconds(fn, repeats))
    return best


def conv_layers(model_name: str, batch: int):
    """(name, input shape NHWC, Conv) of every conv layer of a built-in model."""
    model = builtin_models()[model_name]
    shapes = infer_shapes(model, batch)
    out, idx = [], 0
    for layer, shape in zip(model.layers, shapes):
        if isinstance(layer, Conv):
            idx += 1
            out.append((f"conv{idx}", shape, layer))
    return out


def gemm_and_conv_tables(clib, torch, batch: int, repeats: int) -> tuple[str, str, float, float]:
    rng = np.random.default_rng(0)
    gemm_rows = ["| layer | M | K | N | int8 C GOP/s | torch fp32 GOP/s | ratio |", "|---|---|---|---|---|---|---|"]
    conv_rows = ["| layer | input (N,H,W,C) | int8 C GOP/s | torch fp32 GOP/s | ratio |", "|---|---|---|---|---|"]
    totals = {"gemm_c": 0.0, "gemm_t": 0.0, "conv_c": 0.0, "conv_t": 0.0, "ops": 0.0}
    for name, (n, h, w, c), conv in conv_layers("vgg-small-7", batch):
        e = (h + 2 * conv.padding - conv.kernel) // conv.stride + 1
        m, k, nn_ = n * e * e, conv.kernel * conv.kernel * c, conv.out_channels
        ops = 2.0 * m * k * nn_
        a = rng.integers(-127, 128, (m, k), dtype=np.int8)
        b = rng.integers(-127, 128, (nn_, k), dtype=np.int8)
        af, bf = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32)).T.contiguous()
        t = race({"c": lambda: clib.gemm_s8s8s32(a, b), "torch": lambda: torch.matmul(af, bf)}, repeats)
        gemm_rows.append(f"| {name} | {m} | {k} | {nn_} | {ops / t['c'] / 1e9:.1f} | {ops / t['torch'] / 1e9:.1f} "
                         f"| {t['torch'] / t['c']:.2f}x |")
        totals["gemm_c"] += t["c"]
        totals["gemm_t"] += t["torch"]

        x = rng.integers(-127, 128, (n, h, w, c), dtype=np.int8)
        wt = rng.integers(-127, 128, (nn_, conv.kernel, conv.kernel, c), dtype=np.int8)
        xt = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        wtt = torch.from_numpy(wt.astype(np.float32)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        conv_fn = torch.nn.functional.conv2d
        t = race({
            "c": lambda: clib.conv2d_forward(x, wt, conv.stride, conv.padding),
            "torch": lambda: conv_fn(xt, wtt, stride=conv.stride, padding=conv.padding),
        }, repeats)
        conv_rows.append(f"| {name} | {(n, h, w, c)} | {ops / t['c'] / 1e9:.1f} | {ops / t['torch'] / 1e9:.1f} "
                         f"| {t['torch'] / t['c']:.2f}x |")
        totals["conv_c"] += t["c"]
        totals["conv_t"] += t["torch"]
        totals["ops"] += ops
    gemm_ratio = totals["gemm_t"] / totals["gemm_c"]
    conv_ratio = totals["conv_t"] / totals["conv_c"]
    gemm_rows.append(f"| **all layers** | | | | {totals['ops'] / totals['gemm_c'] / 1e9:.1f} "
                     f"| {totals['ops'] / totals['gemm_t'] / 1e9:.1f} | **{gemm_ratio:.2f}x** |")
    conv_rows.append(f"| **all layers** | | {totals['ops'] / totals['conv_c'] / 1e9:.1f} "
                     f"| {totals['ops'] / totals['conv_t'] / 1e9:.1f} | **{conv_ratio:.2f}x** |")
    return "\n".join(gemm_rows), "\n".join(conv_rows), gemm_ratio, conv_ratio


def training_table(cpu_table, torch, model_name: str, batch: int, repeats: int) -> tuple[str, dict[str, float]]:
    from nitisim.train.fp32 import SpecNet

    model = builtin_models()[model_name]
    graph = build_graph(model, batch)
    rng = np.random.default_rng(0)
    x = QTensor(rng.integers(-127, 128, (batch, *model.input_shape), dtype=np.int8), -8)
    labels = rng.integers(0, model.classes, batch).astype(np.int32)
    state = {"numpy": init_params(graph, 0), "cpu": init_params(graph, 0), "step": 0}

    def int_step(name, table):
        def run():
            state["step"] += 1
            ctx = StepContext(seed=0, step=state["step"], mu=3)
            state[name] = train_step(graph, table, state[name], x, labels, ctx).params
        return run

    net = SpecNet(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xf = torch.from_numpy(x.dequantize().astype(np.float32))
    yt = torch.from_numpy(labels.astype(np.int64))

    def torch_step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(net(xf), yt)
        loss.backward()
        opt.step()

    t = race({"cpu": int_step("cpu", cpu_table), "numpy": int_step("numpy", REFERENCE_KERNELS),
              "torch": torch_step}, repeats, rounds=2)
    rows = ["| executor | seconds per step | images/s | C backend speed-up |", "|---|---|---|---|"]
    for name, label in (("cpu", "C backend (int8)"), ("numpy", "numpy reference (int8)"), ("torch", "torch float32")):
        rows.append(f"| {label} | {t[name]:.4f} | {batch / t[name]:,.0f} | {t[name] / t['cpu']:.2f}x |")
    return "\n".join(rows), t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemm-batch", type=int, default=8, help="batch of the vgg-small-7 GEMM shapes (default 8)")
    parser.add_argument("--batch", type=int, default=256, help="training batch (default 256)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller shapes (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/results.md alone")
    args = parser.parse_args(argv)
    import torch

    from gpu_backend.backends import kernel_table
    from gpu_backend.lib import cpu_library

    threads = torch.get_num_threads()
    clib = cpu_library()
    clib.set_num_threads(threads)
    cpu_table = kernel_table("cpu")
    repeats = 1 if args.quick else 3
    gemm_batch = 1 if args.quick else args.gemm_batch
    gemm, conv, gemm_ratio, conv_ratio = gemm_and_conv_tables(clib, torch, gemm_batch, repeats)
    steps = []
    lenet_batch = 32 if args.quick else args.batch
    for model_name, batch in (("lenet", lenet_batch), ("mlp", lenet_batch)):
        table, t = training_table(cpu_table, torch, model_name, batch, repeats)
        steps.append(f"**{model_name}, batch {batch}**\n\n{table}")
    load = os.getloadavg()[0]
    body = (
        f"Load average {load:.1f} at the start on {os.cpu_count()} cores (a shared machine: threaded kernels wait for "
        "descheduled threads, so ratios here are conservative for the C backend). "
        f"CPU backend: `{clib.kernel_isa}` GEMM micro-kernel, {threads} threads; torch {torch.__version__} with "
        f"{threads} threads. Best of {repeats} repetitions x interleaved rounds.\n\n"
        f"### int8 GEMM vs torch float32 matmul, vgg-small-7 conv shapes (batch {gemm_batch})\n\n{gemm}\n\n"
        f"### int8 conv2d forward vs torch float32 conv2d (channels_last)\n\n{conv}\n\n"
        f"### Whole training steps\n\n" + "\n\n".join(steps) + "\n"
    )
    print(body)
    print(f"GEMM ratio {gemm_ratio:.2f}x, conv ratio {conv_ratio:.2f}x")
    if not args.no_write and not args.quick:
        write_section("kernels", "CPU kernels and training steps (benchmarks/kernels.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
