"""Kernel and training-step throughput of the CPU backend, per GEMM engine, side by side with torch.

Measures, in one process and interleaved (best of several repetitions, so that drift on a shared
machine hits every contender alike), on two GEMM engines: the default one (the best this
machine runs, or the one $NITISIM_CPU_ENGINE forces) and the next one below it (AMX-INT8 -> AVX-512
VNNI -> AVX2 -> scalar), each on the library build that holds it:
  1. int8 GEMM (int32 accumulate) against torch bfloat16 and float32 matmul at the GEMM shapes of
     vgg-small-7's convolutions (forward im2col view, batch --gemm-batch), operands cache-line
     aligned on both sides; on AMX also the same engine built to pack every A block;
  2. int8 conv2d forward against torch bfloat16 and float32 conv2d (channels_last) on those layers;
  3. whole training steps: vgg-small-7 at --vgg-batch and resnet-20 at --resnet-batch against torch
     bfloat16-autocast and float32 training of the same net (the float32 twin of nitisim/train/fp32.py,
     residual adds and global average pool included); LeNet and the MLP at --batch against the numpy reference executor
     and torch float32; and the default engine with each conv and its requantize run apart (the
     int32 tensor written out), the path the fused op replaced.
Writes the tables to docs/results.md (section `kernels`) and prints them.

    python benchmarks/kernels.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402
from timing import race  # noqa: E402

from nitisim.contract.executor import StepContext, train_step  # noqa: E402
from nitisim.contract.graph import build_graph  # noqa: E402
from nitisim.contract.init import init_params  # noqa: E402
from nitisim.contract.models import Conv, builtin_models  # noqa: E402
from nitisim.contract.numerics import QTensor  # noqa: E402
from nitisim.contract.reference import REFERENCE_KERNELS  # noqa: E402
from nitisim.contract.models import infer_shapes  # noqa: E402
from gpu_backend.aligned import aligned_copy  # noqa: E402

# the default engine built to pack every A block (NITI_A_IN_PLACE=0): the path that reading A's rows
# in place (with its deeper K slices) replaced, raced beside it
PACKED_A = "A packed"


def conv_layers(model, batch: int):
    """(name, input shape NHWC, Conv) of every conv layer of a model (or a built-in model's name)."""
    model = builtin_models()[model] if isinstance(model, str) else model
    shapes = infer_shapes(model, batch)
    out, idx = [], 0
    for layer, shape in zip(model.layers, shapes):
        if isinstance(layer, Conv):
            idx += 1
            out.append((f"conv{idx}", shape, layer))
    return out


def engine_mix() -> dict:
    """engine -> the library that runs it, default engine first: the engine $NITISIM_CPU_ENGINE forces
    (else the best this machine runs), then the next engine below it, what the default replaced.

    AMX and the native SIMD micro-kernel share the native build; an older ISA's engine (avx2 on an
    AVX-512 machine, scalar below avx2) is its own build (gpu_backend.lib.engine_library), so each
    engine is raced on its own library, never set on another build that lacks it.
    """
    from gpu_backend.lib import available_engines, engine_library

    default = engine_library().engine
    order = available_engines()
    below = order[order.index(default) + 1:] if default in order else []
    return {engine: engine_library(engine) for engine in [default, *below[:1]]}


def on_engine(clib, engine: str, fn):
    """fn run with `clib`'s GEMMs on `engine` (the engine is process-wide per library, and AMX and
    the native SIMD engine share one, so each contender sets its own before every call)."""
    def run():
        clib.set_engine(engine)
        return fn()
    return run


def gemm_and_conv_tables(libs: dict, torch, batch: int, repeats: int, packed_clib=None) -> tuple[str, str, dict]:
    """GEMM and conv tables of the engines in `libs` (engine -> library, default first); the summary
    holds each contender's total seconds over all layers. With `packed_clib` (the library built to
    pack every A block) the GEMM table has that contender too."""
    engines = list(libs)
    rng = np.random.default_rng(0)
    names = [*engines, "torch bf16", "torch fp32"]
    gemm_names = [*engines, *([PACKED_A] if packed_clib else []), "torch bf16", "torch fp32"]

    def head(columns):
        return " | ".join(f"{n} TOP/s" for n in columns)

    gemm_rows = [f"| layer | M | K | N | {head(gemm_names)} | {engines[0]} / bf16 |",
                 "|---|---|---|---|" + "---|" * (len(gemm_names) + 1)]
    conv_rows = [f"| layer | input (N,H,W,C) | {head(names)} | {engines[0]} / bf16 |", "|---|---|" + "---|" * (len(names) + 1)]
    totals = {"gemm": dict.fromkeys(gemm_names, 0.0), "conv": dict.fromkeys(names, 0.0), "ops": 0.0}

    def row(t, ops, bold=False):
        rates = " | ".join(f"{ops / t[n] / 1e12:.2f}" for n in t)
        ratio = f"{t['torch bf16'] / t[engines[0]]:.2f}x"
        return f"{rates} | {f'**{ratio}**' if bold else ratio} |"

    for name, (n, h, w, c), conv in conv_layers("vgg-small-7", batch):
        e = (h + 2 * conv.padding - conv.kernel) // conv.stride + 1
        m, k, nn_ = n * e * e, conv.kernel * conv.kernel * c, conv.out_channels
        ops = 2.0 * m * k * nn_
        # cache-line aligned, as torch's allocator aligns the tensors it times (numpy: 16 bytes)
        a = aligned_copy(rng.integers(-127, 128, (m, k), dtype=np.int8))
        b = aligned_copy(rng.integers(-127, 128, (nn_, k), dtype=np.int8))
        af, bf = torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32)).T.contiguous()
        ah, bh = af.to(torch.bfloat16), bf.to(torch.bfloat16)
        contenders = {eng: on_engine(lib, eng, lambda lib=lib: lib.gemm_s8s8s32(a, b)) for eng, lib in libs.items()}
        contenders |= {"torch bf16": lambda: torch.matmul(ah, bh), "torch fp32": lambda: torch.matmul(af, bf)}
        if packed_clib:
            contenders[PACKED_A] = on_engine(packed_clib, engines[0], lambda: packed_clib.gemm_s8s8s32(a, b))
        t = race(contenders, repeats)
        t = {n: t[n] for n in gemm_names}
        gemm_rows.append(f"| {name} | {m} | {k} | {nn_} | {row(t, ops)}")
        for n_ in gemm_names:
            totals["gemm"][n_] += t[n_]

        x = rng.integers(-127, 128, (n, h, w, c), dtype=np.int8)
        wt = rng.integers(-127, 128, (nn_, conv.kernel, conv.kernel, c), dtype=np.int8)
        xt = torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        wtt = torch.from_numpy(wt.astype(np.float32)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        xh, wth = xt.to(torch.bfloat16), wtt.to(torch.bfloat16)
        conv_fn = torch.nn.functional.conv2d
        contenders = {eng: on_engine(lib, eng, lambda lib=lib: lib.conv2d_forward(x, wt, conv.stride, conv.padding))
                      for eng, lib in libs.items()}
        contenders |= {"torch bf16": lambda: conv_fn(xh, wth, stride=conv.stride, padding=conv.padding),
                       "torch fp32": lambda: conv_fn(xt, wtt, stride=conv.stride, padding=conv.padding)}
        t = race(contenders, repeats)
        conv_rows.append(f"| {name} | {(n, h, w, c)} | {row(t, ops)}")
        for n_ in names:
            totals["conv"][n_] += t[n_]
        totals["ops"] += ops
    gemm_rows.append(f"| **all layers** | | | | {row(totals['gemm'], totals['ops'], bold=True)}")
    conv_rows.append(f"| **all layers** | | {row(totals['conv'], totals['ops'], bold=True)}")
    return "\n".join(gemm_rows), "\n".join(conv_rows), totals


def conv_paths_table(clib, repeats: int, vgg_batch: int, fmnist_batch: int) -> str:
    """The AMX engine's stride-1 conv paths (the zero-gapped grid, cpu_amx_conv.c) against its patch
    GEMM (the same library built with -DNITI_NO_AMX_GRID) on every stride-1 conv of vgg-small-7 and
    of the Fashion-MNIST VGG, for the three conv ops of a training step, interleaved."""
    from gpu_backend.lib import cpu_library
    from nitisim.contract.models import load_model
    from nitisim.contract.shipped import CONFIGS

    patch = cpu_library("native", ("-DNITI_NO_AMX_GRID",))
    patch.set_num_threads(clib.num_threads())
    fmnist = load_model(CONFIGS / "models" / "vgg-small-fmnist.yaml")
    layers = [("vgg-small-7", *layer) for layer in conv_layers("vgg-small-7", vgg_batch)]
    layers += [("vgg-small-fmnist", *layer) for layer in conv_layers(fmnist, fmnist_batch)]
    rng = np.random.default_rng(1)
    rows = ["| net | layer | input (N,H,W,C) | out | forward grid / patch ms | input grad grid / patch ms "
            "| weight grad grid / patch ms | step's three, patch / grid |", "|---|---|---|---|---|---|---|---|"]
    total = {"grid": 0.0, "patch": 0.0}
    for net, name, (n, h, w, c), conv in layers:
        if conv.stride != 1:
            continue
        x = rng.integers(-127, 128, (n, h, w, c), dtype=np.int8)
        wt = rng.integers(-127, 128, (conv.out_channels, conv.kernel, conv.kernel, c), dtype=np.int8)
        dy = rng.integers(-127, 128, (n, h, w, conv.out_channels), dtype=np.int8)
        ops = {"forward": lambda lib: lib.conv2d_forward(x, wt, 1, conv.padding),
               "input grad": lambda lib: lib.conv2d_input_grad(dy, wt, (h, w), 1, conv.padding),
               "weight grad": lambda lib: lib.conv2d_weight_grad(x, dy, conv.kernel, 1, conv.padding,
                                                                out_dtype=np.int32)}
        t = race({(op, path): on_engine(lib, "amx", lambda f=f, lib=lib: f(lib))
                  for op, f in ops.items() for path, lib in (("grid", clib), ("patch", patch))}, repeats)
        sums = {path: sum(t[op, path] for op in ops) for path in ("grid", "patch")}
        for path in total:
            total[path] += sums[path]
        cells = " | ".join(f"{1e3 * t[op, 'grid']:.2f} / {1e3 * t[op, 'patch']:.2f}" for op in ops)
        rows.append(f"| {net} | {name} | {(n, h, w, c)} | {conv.out_channels} | {cells} | "
                    f"{sums['patch'] / sums['grid']:.2f}x |")
    clib.set_engine("auto")
    rows.append(f"| **all** | | | | | | | **{total['patch'] / total['grid']:.2f}x** |")
    return "\n".join(rows)


def training_table(libs: dict, torch, model_name: str, batch: int, repeats: int, with_numpy: bool,
                   with_bf16: bool) -> tuple[str, dict[str, float]]:
    """Seconds per training step of `model_name` on each engine in `libs` (engine -> library, default
    first), numpy (optional) and torch."""
    from gpu_backend.backends import cpu_kernel_table
    from nitisim.train.fp32 import SpecNet

    engines = list(libs)
    model = builtin_models()[model_name]
    graph = build_graph(model, batch)
    rng = np.random.default_rng(0)
    x = QTensor(rng.integers(-127, 128, (batch, *model.input_shape), dtype=np.int8), -8)
    labels = rng.integers(0, model.classes, batch).astype(np.int32)
    unfused = f"{engines[0]} unfused"
    state = {name: init_params(graph, 0) for name in (*engines, unfused, "numpy")}
    state["step"] = 0

    def int_step(name, table, engine=None):
        def run():
            if engine:
                libs[engine].set_engine(engine)
            state["step"] += 1
            ctx = StepContext(seed=0, step=state["step"], mu=3)
            state[name] = train_step(graph, table, state[name], x, labels, ctx).params
        return run

    net = SpecNet(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xf = torch.from_numpy(x.dequantize().astype(np.float32))
    yt = torch.from_numpy(labels.astype(np.int64))

    def torch_step(autocast: bool):
        def run():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = torch.nn.functional.cross_entropy(net(xf), yt)
            loss.backward()
            opt.step()
        return run

    contenders = {eng: int_step(eng, cpu_kernel_table(lib.num_threads(), engine=eng), eng) for eng, lib in libs.items()}
    # the same engine with every conv's int32 output written and requantized after (gpu_backend/pending.py)
    contenders[unfused] = int_step(unfused, cpu_kernel_table(libs[engines[0]].num_threads(), engine=engines[0],
                                                             fuse_requantize=False), engines[0])
    if with_numpy:
        contenders["numpy"] = int_step("numpy", REFERENCE_KERNELS)
    if with_bf16:
        contenders["torch bf16"] = torch_step(True)
    contenders["torch fp32"] = torch_step(False)
    # four interleaved rounds: on this shared machine a slow spell of seconds can cover a whole round
    t = race(contenders, repeats, rounds=4)
    labels_of = {"numpy": "numpy reference (int8)", "torch bf16": "torch bfloat16 autocast", "torch fp32": "torch float32",
                 unfused: f"C backend int8, `{engines[0]}` engine, conv and requantize unfused"}
    rows = [f"| executor | seconds per step | images/s | {engines[0]} speed-up |", "|---|---|---|---|"]
    for name in contenders:
        label = labels_of.get(name, f"C backend int8, `{name}` engine")
        rows.append(f"| {label} | {t[name]:.4f} | {batch / t[name]:,.0f} | {t[name] / t[engines[0]]:.2f}x |")
    return "\n".join(rows), t


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gemm-batch", type=int, default=8, help="batch of the vgg-small-7 GEMM shapes (default 8)")
    parser.add_argument("--batch", type=int, default=256, help="LeNet and MLP training batch (default 256)")
    parser.add_argument("--vgg-batch", type=int, default=64, help="vgg-small-7 training batch (default 64)")
    parser.add_argument("--resnet-batch", type=int, default=64, help="resnet-20 training batch (default 64)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller shapes (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/results.md alone")
    args = parser.parse_args(argv)
    import torch

    from gpu_backend.lib import ENGINE_ENV, cpu_library

    threads = torch.get_num_threads()
    libs = engine_mix()
    for lib in libs.values():
        lib.set_num_threads(threads)
    engines = list(libs)
    default = engines[0]
    clib = libs[default]
    repeats = 1 if args.quick else 3
    gemm_batch = 1 if args.quick else args.gemm_batch
    packed_clib = None
    if default == "amx":
        packed_clib = cpu_library("native", ("-DNITI_A_IN_PLACE=0",))
        packed_clib.set_num_threads(threads)
    gemm, conv, totals = gemm_and_conv_tables(libs, torch, gemm_batch, repeats, packed_clib)
    paths = conv_paths_table(clib, repeats, vgg_batch=1 if args.quick else args.vgg_batch,
                             fmnist_batch=2 if args.quick else 128) if "amx" in engines else ""
    steps = []
    small_batch = 32 if args.quick else args.batch
    vgg_batch = 4 if args.quick else args.vgg_batch
    resnet_batch = 4 if args.quick else args.resnet_batch
    step_times = {}
    for model_name, batch, with_numpy, with_bf16 in (("vgg-small-7", vgg_batch, False, True),
                                                     ("resnet-20", resnet_batch, False, True),
                                                     ("lenet", small_batch, True, False), ("mlp", small_batch, True, False)):
        table, t = training_table(libs, torch, model_name, batch, repeats, with_numpy, with_bf16)
        step_times[model_name] = t
        steps.append(f"**{model_name}, batch {batch}**\n\n{table}")
    load = os.getloadavg()[0]
    gemm_t, ops = totals["gemm"], totals["ops"]
    headline = (
        f"int8 GEMM on `{default}`: {ops / gemm_t[default] / 1e12:.2f} T ops/s over the vgg-small-7 shapes, "
        f"{gemm_t['torch bf16'] / gemm_t[default]:.2f}x torch bf16 matmul and "
        + (f"{gemm_t[engines[-1]] / gemm_t[default]:.2f}x the `{engines[-1]}` engine" if len(engines) > 1
           else "no engine below it to race")
        + (f" and {gemm_t[PACKED_A] / gemm_t[default]:.2f}x the same engine with every A block packed" if packed_clib else "")
        + f"; vgg-small-7 training "
        f"{step_times['vgg-small-7']['torch bf16'] / step_times['vgg-small-7'][default]:.2f}x torch bf16-autocast "
        f"images/s; resnet-20 training "
        f"{step_times['resnet-20']['torch bf16'] / step_times['resnet-20'][default]:.2f}x torch bf16-autocast images/s"
        + (f"; LeNet step {step_times['lenet'][engines[-1]] / step_times['lenet'][default]:.2f}x the "
           f"`{engines[-1]}` engine's speed." if len(engines) > 1 else ".")
    )
    builds = ", ".join(f"`{e}`" + (" (its own build)" if libs[e] is not clib else "") for e in engines)
    body = (
        f"Load average {load:.1f} at the end on {os.cpu_count()} cores (a shared machine: threaded kernels wait for "
        "descheduled threads). "
        f"CPU backend: engines {builds} (default `{default}`"
        + (f" forced by ${ENGINE_ENV}" if os.environ.get(ENGINE_ENV) else "")
        + f"; its build's SIMD micro-kernel `{clib.kernel_isa}`), {threads} threads; torch {torch.__version__} with {threads} threads. "
        f"Best of {repeats} repetitions x interleaved rounds.\n\n{headline}\n\n"
        f"### int8 GEMM vs torch bfloat16 and float32 matmul, vgg-small-7 conv shapes (batch {gemm_batch})\n\n{gemm}\n\n"
        f"### int8 conv2d forward vs torch bfloat16 and float32 conv2d (channels_last)\n\n{conv}\n\n"
        + (f"### AMX stride-1 conv paths: zero-gapped grid vs patch GEMM (same engine)\n\n{paths}\n\n" if paths else "")
        + "### Whole training steps\n\n" + "\n\n".join(steps) + "\n"
    )
    print(body)
    if not args.no_write and not args.quick:
        # one section per default engine, so an AMX machine's record and a VNNI- or AVX2-only
        # machine's stand side by side instead of the last run replacing the other's
        name, where = ("kernels", "") if default == "amx" else (f"kernels-{default}", f", `{default}` machines")
        write_section(name, f"CPU kernels and training steps{where} (benchmarks/kernels.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
