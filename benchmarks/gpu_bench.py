"""GPU benchmarks of the CUDA backend: int8 GEMM throughput and VGG-small training speed, against torch.

    python3 benchmarks/gpu_bench.py [--out results-gpu.md] [--steps 10] [--batch 256]

Sections, each on its own (a failure prints its traceback and the run goes on):
  1. the machine: GPU, driver-side names, torch, the GEMM engine chosen;
  2. int8 GEMM TOP/s of the library's engines (tensor-core mma, and dp4a on one shape) against
     torch._int_mm (cuBLASLt int8) and bf16 torch.matmul, on large squares and on the conv-lowered
     GEMMs of vgg-small-7 at batch 256 (forward, input gradient and weight gradient of some layers);
  3. conv ops (forward, input gradient) of VGG layer shapes at batch 256 in TOP/s, in each conv mode:
     auto (the mma kernel reads the patches straight from the NHWC map where that applies) and
     gather (patches materialised by a gather kernel first), the difference the implicit path makes;
  4. training images/s of vgg-small-9 at batch 256: the integer graph on the CUDA kernel table
     (nitisim.contract.executor.train_step, no host synchronisation inside a step), once per conv mode (auto:
     the mma kernel reads conv A operands straight from the activation map where that applies;
     gather: every conv operand materialised first), against the same network in torch
     (Conv2d/ReLU/MaxPool2d/Flatten/Dropout/Linear, no bias, SGD) under bf16 autocast, channels-last,
     cuDNN autotuned;
  5. device time per op kind over one synchronised step of the integer graph (where the time goes),
     in each conv mode.

Timing: CUDA events on the stream that ran the work (the library's own for its kernels, torch's for
torch), after warm-up; GEMM rates count 2*M*N*K operations. Ends with one markdown table, printed
and written to --out (default $OUT/results-gpu.md when $OUT is set, else docs/results-gpu.md).
Sized to finish in well under a minute on an H200.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ROWS: list[tuple[str, ...]] = []  # (section, what, niti, niti-dp4a, torch int8, torch bf16) as text
NOTES: list[str] = []


def section(title):
    """Run the decorated function now, printing and recording a failure instead of raising."""
    def run(fn):
        print(f"\n== {title}", flush=True)
        t0 = time.perf_counter()
        try:
            fn()
        except Exception:  # noqa: BLE001 - a benchmark section must not stop the others
            traceback.print_exc()
            NOTES.append(f"{title}: FAILED ({traceback.format_exc(limit=1).strip().splitlines()[-1]})")
        print(f"   ({time.perf_counter() - t0:.1f} s)", flush=True)
        return fn
    return run


def fmt(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def torch_or_none():
    try:
        import torch

        return torch if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001
        return None


def library_ms(lib, fn, iters, warmup=2) -> tuple[float, float]:
    """(device ms, wall ms) per call of `fn`, which queues work on the library's stream: `warmup`
    untimed calls, then `iters` calls between the library's CUDA events."""
    for _ in range(warmup):
        fn()
    lib.synchronize()
    wall = time.perf_counter()
    lib.timer_start()
    for _ in range(iters):
        fn()
    ms = lib.timer_stop()
    return ms / iters, 1e3 * (time.perf_counter() - wall) / iters


def torch_ms(torch, fn, iters, warmup=2) -> float:
    """Device ms per call of `fn`, which queues work on torch's current stream: `warmup` untimed
    calls, then `iters` calls between torch CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / iters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="markdown file for the results table")
    ap.add_argument("--steps", type=int, help="timed training steps per framework (default 10; 1 with --emulator)")
    ap.add_argument("--batch", type=int, help="training batch (default 256; 2 with --emulator)")
    ap.add_argument("--gemm-iters", type=int, help="timed repetitions per GEMM (default 10; 1 with --emulator)")
    ap.add_argument("--model", help="built-in model of the training section (default vgg-small-9; lenet with --emulator)")
    ap.add_argument("--emulator", action="store_true",
                    help="smoke-test this script without a GPU: the kernels on the host emulator, tiny shapes, "
                         "dp4a engine (the numbers mean nothing)")
    args = ap.parse_args()
    # the emulator runs CUDA threads as fibers on the CPU: a batch-256 VGG step would take hours there
    defaults = {"steps": 1, "batch": 2, "gemm_iters": 1, "model": "lenet"} if args.emulator else \
        {"steps": 10, "batch": 256, "gemm_iters": 10, "model": "vgg-small-9"}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    out = args.out or (Path(os.environ["OUT"]) / "results-gpu.md" if os.environ.get("OUT") else REPO / "docs" / "results-gpu.md")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    state: dict = {}

    @section("machine")
    def _machine():
        from gpu_backend import cuda

        torch = torch_or_none()
        if args.emulator:
            ok, why = True, "host emulator (not a GPU: smoke test, numbers meaningless)"
            state["lib"], state["engine"] = cuda.emulated_library(), "dp4a"
        else:
            ok, why = cuda.cuda_status()
            state["lib"], state["engine"] = (cuda.cuda_library() if ok else None), "auto"
        print(f"   niti CUDA library: {why}")
        state["gpu"] = why if ok else "(no usable GPU)"
        if torch is not None:
            print(f"   torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
        else:
            print("   torch with CUDA: not available (torch columns stay empty)")
        if not ok:
            raise RuntimeError(why)

    @section("int8 GEMM")
    def _gemm():
        lib, torch = state.get("lib"), torch_or_none()
        if lib is None:
            raise RuntimeError("no CUDA library")
        b = args.batch
        sq = 256 if args.emulator else 8192
        # (label, M, N, K): vgg-small-7 at batch b lowered to GEMMs (NHWC; K = kh*kw*I or the batch*pixels)
        shapes = [
            (f"square {sq}", sq, sq, sq),
            (f"square {sq // 2}", sq // 2, sq // 2, sq // 2),
            ("vgg7 conv2 fwd (32x32, 128->128)", b * 1024, 128, 1152),
            ("vgg7 conv2 input grad", b * 1024, 128, 1152),
            ("vgg7 conv2 weight grad", 128, 1152, b * 1024),
            ("vgg7 conv4 fwd (16x16, 256->256)", b * 256, 256, 2304),
            ("vgg7 conv6 fwd (8x8, 512->512)", b * 64, 512, 4608),
            ("vgg7 conv6 weight grad", 512, 4608, b * 64),
        ]
        for label, m, n, k in shapes:
            try:
                rates = gemm_rates(lib, torch, m, n, k, args.gemm_iters, state["engine"],
                                   dp4a=label == f"square {sq // 2}" and not args.emulator)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                NOTES.append(f"GEMM {label}: FAILED")
                continue
            print(f"   {label:36s} {m}x{n}x{k}: niti {fmt(rates[0])}  dp4a {fmt(rates[1])}  "
                  f"torch int8 {fmt(rates[2])}  torch bf16 {fmt(rates[3])}  (TOP/s)", flush=True)
            wide = ", int64 out" if k > lib.max_k_int32 else ""
            ROWS.append(("int8 GEMM, TOP/s", f"{label} ({m}x{n}x{k}{wide})", *map(fmt, rates)))

    @section("conv ops, conv mode auto (implicit A where it applies) vs gather")
    def _conv():
        from gpu_backend import cuda

        lib = state.get("lib")
        if lib is None:
            raise RuntimeError("no CUDA library")
        b = 2 if args.emulator else args.batch
        # (label, map size, in channels, out channels): 3x3 stride-1 pad-1 layers of vgg-small-9
        layers = [("8x8, 16->16", 8, 16, 16)] if args.emulator else [
            ("32x32, 128->128", 32, 128, 128), ("16x16, 256->256", 16, 256, 256), ("8x8, 512->512", 8, 512, 512)]
        lib.gemm_engine = "mma" if args.emulator else state["engine"]  # (tiny shape: the emulated mma is quick)
        try:
            for label, hw, c, o in layers:
                for op in ("forward", "input_grad"):
                    rates, paths = {}, {}
                    for mode in cuda.CONV_MODES:
                        lib.conv_mode = mode
                        paths[mode] = lib.conv_path(op, (b, hw, hw, c), o, 3, 1, 1)
                        rates[mode] = conv_rate(lib, op, b, hw, c, o, args.gemm_iters)
                    print(f"   conv {label} {op:10s} batch {b}: " +
                          "  ".join(f"{m} ({paths[m]}) {fmt(rates[m])}" for m in cuda.CONV_MODES) + "  (TOP/s)", flush=True)
                    for mode in cuda.CONV_MODES:
                        ROWS.append(("conv op, TOP/s", f"conv {label} {op}, batch {b}, conv mode {mode} ({paths[mode]} A)",
                                     fmt(rates[mode]), "-", "-", "-"))
        finally:
            lib.conv_mode = "auto"
            lib.gemm_engine = state["engine"]

    @section(f"training {args.model}, batch {args.batch}")
    def _train():
        from gpu_backend import cuda

        lib = state.get("lib")
        niti: dict[str, float] = {}
        torch_rate = None
        for mode in cuda.CONV_MODES:  # auto (implicit conv operands where they apply), then gather
            try:
                if lib is None:
                    raise RuntimeError("no CUDA library")
                lib.gemm_engine = state["engine"]
                lib.conv_mode = mode
                niti[mode] = niti_training_rate(lib, args.model, args.batch, args.steps, state)
                state.setdefault("conv_paths", {})[mode] = conv_paths(lib, state["graph"])
                print(f"   niti CUDA (int8 NITI graph), conv mode {mode:6s}: {niti[mode]:,.0f} images/s  "
                      f"({state['conv_paths'][mode]})", flush=True)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                NOTES.append(f"niti training, conv mode {mode}: FAILED")
            finally:
                if lib is not None:
                    lib.conv_mode = "auto"
        try:
            torch_rate = torch_training_rate(args.model, args.batch, args.steps)
            print(f"   torch bf16 autocast:         {torch_rate:,.0f} images/s", flush=True)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            NOTES.append("torch training: FAILED")
        for mode in cuda.CONV_MODES:
            paths = state.get("conv_paths", {}).get(mode, "?")
            ROWS.append(("training, images/s", f"{args.model}, batch {args.batch}, conv mode {mode} ({paths})",
                         fmt(niti.get(mode), 0), "-", "-", fmt(torch_rate, 0)))
        if niti.get("auto") and niti.get("gather"):
            NOTES.append(f"conv mode auto / gather, training images/s: {niti['auto'] / niti['gather']:.2f}x")
        if niti.get("auto") and torch_rate:
            NOTES.append(f"niti (conv mode auto) / torch bf16 autocast, training images/s: {niti['auto'] / torch_rate:.2f}x")

    @section(f"device time per op, one synchronised {args.model} step")
    def _profile():
        from gpu_backend import cuda

        lib = state.get("lib")
        if lib is None or "graph" not in state:
            raise RuntimeError("needs the training section's graph and parameters")
        per_mode = {}
        try:
            for mode in cuda.CONV_MODES:
                lib.conv_mode = mode
                per_op = per_mode[mode] = profile_step(lib, state)
                total = sum(per_op.values())
                print(f"   conv mode {mode}: {total:.2f} ms")
                for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1]):
                    print(f"   {op:22s} {ms:8.2f} ms  {100 * ms / total:5.1f} %")
                NOTES.append(f"one synchronised step, conv mode {mode}, device ms by op: " +
                             ", ".join(f"{op} {ms:.1f}" for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:8]))
        finally:
            lib.conv_mode = "auto"
        for op in ("conv2d", "conv2d_input_grad", "conv2d_weight_grad", "step total"):
            for mode, per_op in per_mode.items():
                ms = sum(per_op.values()) if op == "step total" else per_op.get(op)
                ROWS.append(("device ms, one synchronised step", f"{op}, conv mode {mode}", fmt(ms, 2), "-", "-", "-"))

    write_table(out, command, state.get("gpu", "?"))
    return 0


# ------------------------------------------------------------------------------------------- GEMM
def gemm_rates(lib, torch, m, n, k, iters, engine="auto", dp4a=False):
    """(niti mma, niti dp4a or None, torch._int_mm, torch bf16) in TOP/s for C = A (MxK) B^T (B is NxK)."""
    ops = 2.0 * m * n * k
    wide = k > lib.max_k_int32  # NITI_MAX_K_S32: longer int32 reductions are summed in int64
    if torch is not None:
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda")
        bt = torch.randint(-127, 128, (n, k), dtype=torch.int8, device="cuda")
        c = torch.empty((m, n), dtype=torch.int64 if wide else torch.int32, device="cuda")
        torch.cuda.synchronize()
        pa, pb, pc = a.data_ptr(), bt.data_ptr(), c.data_ptr()  # same primary context: valid for the library
    else:
        rng = np.random.default_rng(0)
        a = lib.to_device(rng.integers(-127, 128, (m, k), dtype=np.int8))
        bt = lib.to_device(rng.integers(-127, 128, (n, k), dtype=np.int8))
        c = lib.empty((m, n), np.int64 if wide else np.int32, exp=None)
        pa, pb, pc = a.ptr, bt.ptr, c.ptr
    name = "niti_cuda_gemm_s8s8s64" if wide else "niti_cuda_gemm_s8s8s32"

    def niti(engine):
        lib.gemm_engine = engine
        try:
            return ops / (library_ms(lib, lambda: lib.call(name, m, n, k, pa, pb, pc), iters)[0] * 1e-3) / 1e12
        finally:
            lib.gemm_engine = "auto"

    mma_rate = niti(engine)
    dp4a_rate = niti("dp4a") if dp4a else None
    int_mm = bf16 = None
    if torch is not None:
        def timed(fn):
            return ops / (torch_ms(torch, fn, iters) * 1e-3) / 1e12

        b = bt.t()  # K x N, column-major: the layout cuBLASLt wants for int8
        try:
            int_mm = timed(lambda a=a, b=b: torch._int_mm(a, b))
        except Exception as err:  # noqa: BLE001
            print(f"   torch._int_mm {m}x{n}x{k}: {err}")
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
        bf16 = timed(lambda a16=a16, b16=b16: torch.matmul(a16, b16))
        del a16, b16
    del a, bt, c
    if torch is not None:
        torch.cuda.empty_cache()
    return mma_rate, dp4a_rate, int_mm, bf16


def conv_rate(lib, op, batch, hw, c, o, iters) -> float:
    """TOP/s (2 * MACs / device time) of a 3x3 stride-1 pad-1 conv op ('forward' or 'input_grad') on an
    NHWC map (batch, hw, hw, c) with o output channels, in the library's current modes."""
    macs = batch * hw * hw * o * 9 * c
    w = lib.empty((o, 3, 3, c), np.int8, exp=None)
    if op == "forward":
        src, out = lib.empty((batch, hw, hw, c), np.int8, exp=None), lib.empty((batch, hw, hw, o), np.int32, exp=None)
        name = "niti_cuda_conv2d_forward"
    else:
        src, out = lib.empty((batch, hw, hw, o), np.int8, exp=None), lib.empty((batch, hw, hw, c), np.int32, exp=None)
        name = "niti_cuda_conv2d_input_grad"
    lib.call("niti_cuda_memset", src.ptr, 1, src.nbytes)  # values do not change the time; defined anyway
    lib.call("niti_cuda_memset", w.ptr, 1, w.nbytes)
    args = (batch, hw, hw, c, o, 3, 3, 1, 1, 1, 1, src.ptr, None, w.ptr, None, out.ptr, None)
    return 2.0 * macs / (library_ms(lib, lambda: lib.call(name, *args), iters)[0] * 1e-3) / 1e12


# ------------------------------------------------------------------------------------------- training
def niti_training_rate(lib, model_name, batch, steps, state) -> float:
    from gpu_backend import cuda
    from nitisim.contract.executor import StepContext, train_step
    from nitisim.contract.graph import build_graph
    from nitisim.contract.init import init_params
    from nitisim.contract.models import builtin_models
    from nitisim.contract.numerics import QTensor

    model = builtin_models()[model_name]
    graph = build_graph(model, batch)
    table = cuda.cuda_kernel_table(lib=lib)
    params = {k: lib.to_device(v) for k, v in init_params(graph, seed=0).items()}
    rng = np.random.default_rng(0)
    x = lib.to_device(QTensor(rng.integers(-127, 128, (batch, *model.input_shape)).astype(np.int8), -8))
    labels = lib.to_device(rng.integers(0, model.classes, batch).astype(np.int32))
    state.update(graph=graph, table=table, x=x, labels=labels)
    step = 0

    def one_step():
        nonlocal params, step
        params = train_step(graph, table, params, x, labels, StepContext(seed=1, step=step, mu=5)).params
        step += 1

    ms, wall_ms = library_ms(lib, one_step, steps)  # the 2 warm-up steps fill the allocator pool
    state["params"] = params
    NOTES.append(f"niti {model_name}, conv mode {lib.conv_mode}: {ms:.2f} ms/step of device time, {wall_ms:.2f} ms/step wall "
                 f"({graph.macs() * 2 / (ms * 1e-3) / 1e12:.0f} TOP/s of GEMM work over the step)")
    return batch / (ms * 1e-3)


def conv_paths(lib, graph) -> str:
    """How many conv forward / input-gradient nodes read their A operand in place, e.g.
    'implicit: forward 7/8, input grad 7/7' (the rest gather it: lib.conv_path, the library's rule)."""
    counts = {"conv2d": [0, 0], "conv2d_input_grad": [0, 0]}
    for n in graph.nodes_of("conv2d", "conv2d_input_grad"):
        w = graph.tensor(n.attr("weight")).shape  # (O, k, k, I)
        x_shape = graph.tensor(n.inputs[0]).shape if n.op == "conv2d" else n.attr("input_shape")
        path = lib.conv_path("forward" if n.op == "conv2d" else "input_grad", x_shape, w[0], w[1], n.attr("stride"),
                             n.attr("padding"))
        counts[n.op][0] += path == "implicit"
        counts[n.op][1] += 1
    (fi, ft), (gi, gt) = counts["conv2d"], counts["conv2d_input_grad"]
    return f"implicit: forward {fi}/{ft}, input grad {gi}/{gt}"


def torch_model(spec, torch):
    from nitisim.contract.models import Conv, Dropout, Flatten, Linear, MaxPool, ReLU

    nn = torch.nn
    layers, (h, w, c) = [], spec.input_shape
    features = None
    for layer in spec.layers:
        if isinstance(layer, Conv):
            layers.append(nn.Conv2d(c, layer.out_channels, layer.kernel, layer.stride, layer.padding, bias=False))
            c = layer.out_channels
            h = (h + 2 * layer.padding - layer.kernel) // layer.stride + 1
            w = (w + 2 * layer.padding - layer.kernel) // layer.stride + 1
        elif isinstance(layer, ReLU):
            layers.append(nn.ReLU(inplace=True))
        elif isinstance(layer, MaxPool):
            layers.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding))  # pads with -infinity
            h = (h + 2 * layer.padding - layer.kernel) // layer.stride + 1
            w = (w + 2 * layer.padding - layer.kernel) // layer.stride + 1
        elif isinstance(layer, Flatten):
            layers.append(nn.Flatten())
            features = h * w * c
        elif isinstance(layer, Dropout):
            layers.append(nn.Dropout(layer.rate))
        elif isinstance(layer, Linear):
            layers.append(nn.Linear(features, layer.out_features, bias=False))
            features = layer.out_features
    return nn.Sequential(*layers)


def torch_training_rate(model_name, batch, steps) -> float:
    torch = torch_or_none()
    if torch is None:
        raise RuntimeError("torch with CUDA is not available")
    from nitisim.contract.models import builtin_models

    spec = builtin_models()[model_name]
    torch.backends.cudnn.benchmark = True
    model = torch_model(spec, torch).cuda().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    h, w, c = spec.input_shape
    x = torch.randn(batch, c, h, w, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, spec.classes, (batch,), device="cuda")

    def step(model=model, opt=opt, x=x, y=y):  # bound now, so the del below can free them
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    ms = torch_ms(torch, step, steps, warmup=3)
    NOTES.append(f"torch bf16 {model_name}: {ms:.2f} ms/step")
    del step, model, opt, x, y
    torch.cuda.empty_cache()
    return batch / (ms * 1e-3)


def profile_step(lib, state) -> dict[str, float]:
    """Device ms per op over one step, each node timed alone (timer around every kernel call)."""
    from nitisim.contract.executor import StepContext, run_graph

    graph, table = state["graph"], state["table"]
    env = dict(state["params"])
    env[graph.input_name], env[graph.label_name] = state["x"], state["labels"]
    per_op: dict[str, float] = {}
    timed = {}
    for op, fn in table.items():
        def wrap(node, ctx, *inputs, _fn=fn, _op=op):
            lib.timer_start()
            outs = _fn(node, ctx, *inputs)
            per_op[_op] = per_op.get(_op, 0.0) + lib.timer_stop()
            return outs
        timed[op] = wrap
    run_graph(graph, timed, env, StepContext(seed=1, step=99, mu=5))
    return per_op


# ------------------------------------------------------------------------------------------- output
def write_table(out: Path, command: str, gpu: str) -> None:
    lines = [
        "# GPU results: NITI int8 CUDA backend vs torch",
        "",
        f"- command: `{command}` (from the repository root; `benchmarks/gpu_check.sh` runs it after the parity tests)",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}, host {platform.node()}",
        f"- GPU: {gpu}",
        "- GEMM: C = A (MxK) * B^T with B stored NxK, int8 operands, int32 output (int64 when K > NITI_MAX_K_S32); "
        "TOP/s = 2MNK / time; CUDA events after 2 warm-up runs; torch bf16 runs the same shapes in bf16",
        "",
        "| section | what | niti CUDA (mma) | niti CUDA (dp4a) | torch int8 (`_int_mm`) | torch bf16 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
        *(f"| {' | '.join(row)} |" for row in ROWS),
        "",
        *(f"- {note}" for note in NOTES),
        "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    except OSError as err:
        print(f"cannot write {out}: {err}")


if __name__ == "__main__":
    sys.exit(main())
