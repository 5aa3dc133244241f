"""Short probes of this host: int8 GEMM rate per shape class, vector rate per width class, the fixed
cost of one kernel call, streaming memory bandwidth, cache sizes and clock.

The probes run the C library's own kernels (the ones `nitisim train --backend cpu` calls) on fixed,
synthetic shapes chosen here, never the shapes of the graph being predicted, and never read a
training run's timing: the host model they feed must predict a run, not replay it. Each probe is
one warm-up call and `repeats` timed calls, of which the median is kept, so one call that another
process stalled does not become the rate. The training run's time is a sum over thousands of calls
and does include such stalls: on a 2-core machine with another busy process, each 2-thread OpenMP
kernel waits a scheduler slice at its barrier, and no probe of the kernels predicts that. Calibrate
and train on an idle machine. All the probes together take about a second; with a graph, the kernel
probes of nitisim/calibrate/kernels.py (the host model's measured tables) add one or two more.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import numpy as np

from ..contract.errors import UserInputError
from .kernels import kernel_time, timed_median

ROUNDING_PROBED = "pseudo_stochastic"  # the rounding mode the requantize probe runs


@dataclass(frozen=True)
class Probe:
    name: str  # gemm_conv_forward, vector_int8, memory_bandwidth, ...
    value: float  # the measured rate or size, in `unit`
    unit: str  # MAC/s, op/s, s, B/s, bytes, elements, MHz
    what: str  # what ran: kernel and shape
    seconds: float | None = None  # median time of one call (None for facts read, not timed)
    repeats: int | None = None


@dataclass(frozen=True)
class HostFacts:
    """What the probes found; `nitisim.calibrate.document` turns it into an accelerator YAML."""
    machine: str  # CPU model name and core count
    engine: str  # the GEMM engine compiled in (or reported by the library)
    gemm_tile: tuple[int, int, int]  # the engine's (m, k, n) block; GEMM rates count padded MACs
    cores: int  # threads the library runs its parallel kernels on
    clock_mhz: float
    l1d_bytes: int
    l2_bytes: int
    l3_bytes: int
    parallel_min_elements: int  # the library's parallel threshold: elements of a kernel's largest input
    probes: tuple[Probe, ...]
    kernels: tuple = ()  # kernels.KernelTime per kernel_key of the graph's GEMM and pooling nodes
    curves: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # name -> KernelTimes

    def value(self, name: str) -> float:
        return next(p.value for p in self.probes if p.name == name)


def median_seconds(fn: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> float:
    """One warm-up call, then the median of `repeats` timed calls, each after `before()` (untimed)."""
    fn()
    return timed_median(fn, repeats, before)


def _positive(name: str, seconds: float) -> float:
    if not seconds > 0 or not np.isfinite(seconds):
        raise UserInputError("nitisim calibrate", name, f"measured {seconds!r} s; the timer cannot resolve this probe")
    return seconds


def _conv_operands(rng, batch: int, hw: int, c_in: int, c_out: int, kernel: int):
    x = rng.integers(-127, 128, (batch, hw, hw, c_in), dtype=np.int8)
    w = rng.integers(-127, 128, (c_out, kernel, kernel, c_in), dtype=np.int8)
    e = hw - kernel + 1
    dy = rng.integers(-127, 128, (batch, e, e, c_out), dtype=np.int8)
    return x, w, dy, batch * e * e, kernel * kernel * c_in, c_out  # ..., pixels, taps, filters


def l2_evictor(l2_bytes: int, lib=None) -> Callable[[], object]:
    """A call that reads 2 x L2 bytes, so that the next GEMM finds its operands beyond L2. With the
    C library, on each of its threads (lib.rewrite_parallel, 2 x L2 bytes each): every core's L2
    goes through the other tensors of a training step, and every core stays busy up to the timed
    call, as in a step; a core left idle between the timed calls of a probe started them slowly
    (LeNet's conv2 forward: 1.7 ms isolated, 0.9 ms after 3 s of back-to-back calls or in a step)."""
    if lib is None or not hasattr(lib, "rewrite_parallel"):
        buf = np.ones(2 * l2_bytes // 8, np.int64)
        return buf.sum
    per_thread = np.ones(2 * l2_bytes * max(1, lib.num_threads()), np.int8)
    return lambda: lib.rewrite_parallel(per_thread)


def gemm_probes(lib, repeats: int, call_s: float, rng, l2_bytes: int, tile: tuple[int, int, int]) -> list[Probe]:
    """int8 GEMM MACs per second per shape class (hwmodels.host.GEMM_CLASSES), call cost removed;
    MACs padded to the engine's tile (hwmodels.host.padded_macs), as the simulator counts them.

    Each timed call follows a read of 2 x L2 bytes: in a training step every GEMM's operands were
    written by earlier nodes and pushed out of L2 since, and a CPU GEMM packs them before it computes
    (the two do not overlap), so the rate includes fetching them from beyond L2. Vector probes stay
    in cache: the simulator streams their tensors from beyond L2 itself, overlapped with compute.

    conv classes: a 3x3 conv, 32 -> 64 channels, 16x16 output, batch 16 (GEMM 4096 x 288 x 64), a
    VGG-like layer; linear classes: a 1024 -> 256 layer at batch 512; narrow: a 5x5 conv from one
    channel to 16 (GEMM 36864 x 25 x 16), forward. None of them is a layer of the shipped models."""
    evict = l2_evictor(l2_bytes)
    from hwmodels.host import padded_macs

    x, w, dy, pixels, taps, filters = _conv_operands(rng, 16, 18, 32, 64, 3)
    batch, n_in, n_out = 512, 1024, 256
    lx = rng.integers(-127, 128, (batch, n_in), dtype=np.int8)
    lw = rng.integers(-127, 128, (n_out, n_in), dtype=np.int8)
    ldy = rng.integers(-127, 128, (batch, n_out), dtype=np.int8)
    nx, nw, _, npix, ntaps, nfil = _conv_operands(rng, 64, 28, 1, 16, 5)
    conv = "3x3 conv 32->64, 16x16 out, batch 16"
    linear = f"linear {n_in}->{n_out}, batch {batch}"
    runs = {  # class -> (call, (M, K, N), what ran)
        "conv_forward": (lambda: lib.conv2d_forward(x, w), (pixels, taps, filters),
                         f"conv2d_forward, {conv} (GEMM {pixels}x{taps}x{filters})"),
        "conv_input_grad": (lambda: lib.conv2d_input_grad(dy, w, (18, 18)), (pixels, filters, taps),
                            f"conv2d_input_grad, {conv} (GEMM {pixels}x{filters}x{taps}, col2im included)"),
        "conv_weight_grad": (lambda: lib.conv2d_weight_grad(x, dy, 3, out_dtype=np.int32), (taps, pixels, filters),
                             f"conv2d_weight_grad, {conv} (GEMM {taps}x{pixels}x{filters}, int32)"),
        "linear_forward": (lambda: lib.linear_forward(lx, lw), (batch, n_in, n_out),
                           f"linear_forward, {linear} (GEMM {batch}x{n_in}x{n_out})"),
        "linear_input_grad": (lambda: lib.linear_input_grad(ldy, lw), (batch, n_out, n_in),
                              f"linear_input_grad, {linear} (GEMM {batch}x{n_out}x{n_in})"),
        "linear_weight_grad": (lambda: lib.linear_weight_grad(lx, ldy, out_dtype=np.int32), (n_in, batch, n_out),
                               f"linear_weight_grad, {linear} (GEMM {n_in}x{batch}x{n_out}, int32)"),
        "narrow": (lambda: lib.conv2d_forward(nx, nw), (npix, ntaps, nfil),
                   f"conv2d_forward 5x5 1->16, 24x24 out, batch 64 (GEMM {npix}x{ntaps}x{nfil})"),
    }
    out = []
    for cls, (fn, mkn, what) in runs.items():
        s = _positive(f"gemm_{cls}", median_seconds(fn, repeats, evict))
        out.append(Probe(f"gemm_{cls}", padded_macs(tile, *mkn) / max(s - call_s, s / 2), "MAC/s",
                         f"{what}, MACs padded to {'x'.join(map(str, tile))}", s, repeats))
    return out


def vector_probes(lib, repeats: int, call_s: float, rng) -> list[Probe]:
    """Element operations per second on one core, per width class, on cache-resident tensors (the
    op counts per element are the lowering's, so the rate prices the same ops the simulator counts)."""
    from hwmodels.lowering import RANGE_OPS, ROUND_OPS

    n8 = 1 << 19  # 512 KiB in, 512 KiB out: in L2, below the parallel threshold
    x = rng.integers(-127, 128, n8, dtype=np.int8)
    s8 = _positive("vector_int8", median_seconds(lambda: lib.relu_forward(x), repeats))
    n32 = 1 << 18  # 1 MiB of int32 in
    acc = rng.integers(-(1 << 20), 1 << 20, n32, dtype=np.int32)
    s32 = _positive("vector_int32", median_seconds(lambda: lib.requantize(acc, 0, ROUNDING_PROBED), repeats))
    ops32 = (RANGE_OPS + ROUND_OPS[ROUNDING_PROBED]) * n32
    return [
        Probe("vector_int8", n8 / max(s8 - call_s, s8 / 2), "op/s", f"relu_forward of {n8} int8 (1 op each)", s8, repeats),
        Probe("vector_int32", ops32 / max(s32 - call_s, s32 / 2), "op/s",
              f"requantize ({ROUNDING_PROBED}) of {n32} int32 ({ops32 // n32} ops each)", s32, repeats),
    ]


def call_probes(lib, repeats: int, rng) -> tuple[Probe, Probe]:
    """The fixed cost of one kernel call: a GEMM and a vector kernel on a handful of elements."""
    a = rng.integers(-127, 128, (4, 16), dtype=np.int8)
    b = rng.integers(-127, 128, (16, 16), dtype=np.int8)
    v = rng.integers(-127, 128, 64, dtype=np.int8)
    g = _positive("call_gemm", median_seconds(lambda: lib.linear_forward(a, b), repeats))
    s = _positive("call_vector", median_seconds(lambda: lib.relu_forward(v), repeats))
    return (Probe("call_gemm", g, "s", "linear_forward 4x16 . 16x16", g, repeats),
            Probe("call_vector", s, "s", "relu_forward of 64 int8", s, repeats))


def bandwidth_probe(lib, repeats: int, l2_bytes: int, parallel_min_elements: int, rng) -> Probe:
    """One core's streaming bandwidth beyond its L2, as the library's kernels see it: bytes read and
    written per second by relu_forward (1 op per byte, so memory-bound) on one thread, since the
    passes that stream from beyond L2 run on one core up to the parallel threshold. The tensor is
    2 x L2 and at least 4 MiB: out of L2, and small enough that glibc recycles the output buffer from
    its heap as it does for training's tensors (above 32 MiB each call would fault in fresh pages)."""
    nbytes = max(2 * l2_bytes, 4 << 20)
    x = rng.integers(-127, 128, nbytes, dtype=np.int8)
    reps = max(3, repeats // 3)
    threads = lib.num_threads()
    lib.set_num_threads(1)
    try:
        s = _positive("memory_bandwidth", median_seconds(lambda: lib.relu_forward(x), reps))
    finally:
        lib.set_num_threads(threads)
    return Probe("memory_bandwidth", 2 * nbytes / s, "B/s",
                 f"relu_forward of {nbytes >> 20} MiB int8 on one thread (read + write)", s, reps)


def cache_bytes(level: int, kind: str, default: int) -> int:
    """Size of cpu0's cache of `level` and `kind` (Data | Unified) from sysfs, else `default`."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if int((index / "level").read_text()) == level and (index / "type").read_text().strip() in (kind, "Unified"):
                text = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
                return int(text.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
    return default


def cpu_model_and_mhz() -> tuple[str, float | None]:
    name, mhz = "unknown CPU", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "cpu MHz" and mhz is None:
                mhz = float(value)
    except (OSError, ValueError):
        pass
    return name, mhz


def gemm_engine(lib) -> str:
    """The GEMM engine the probes ran on: the library's `engine` (the one chosen at run time, e.g.
    'amx' or 'avx512vnni', process-wide, so the same as the training run's in `nitisim run`), else
    the micro-kernel compiled in (`kernel_isa`) for a library without engine choice."""
    engine = getattr(lib, "engine", None)
    return engine if isinstance(engine, str) and engine else lib.kernel_isa


# Passes of every timed probe: a rate probe keeps its median over the passes, a kernel or curve probe
# the lower quartile of all its calls (_pooled_times). On a shared machine the speed of the same
# kernel changes by up to 2x between spells: two back-to-back calibrations of LeNet's kernels on 2
# shared cores, with medians, differed by a median 1.43x (worst 3.33x) with one pass, 1.22x (worst
# 2.24x) with five (docs/hwmodel.md). A pass takes a second or two.
DEFAULT_PASSES = 5


def _median_probes(passes: list[list[Probe]]) -> list[Probe]:
    """Per probe (same order in every pass): the median value and median call time, the repeats summed."""
    out = []
    for same in zip(*passes):
        seconds = [p.seconds for p in same if p.seconds is not None]
        out.append(dataclasses.replace(
            same[0], value=statistics.median(p.value for p in same),
            seconds=statistics.median(seconds) if seconds else None,
            repeats=sum(p.repeats for p in same) if same[0].repeats is not None else None))
    return out


def _pooled_times(passes: list, earlier: Mapping[str, Sequence[float]] | None = None) -> tuple:
    """Per kernels.KernelTime key (same order in every pass): the calls of all passes, and of an
    earlier calibration's window (`earlier`, samples.read_samples), pooled, their lower quartile
    kept. A probe's calls span a few tens of ms, within one spell of a shared core's speed; pooled,
    a quarter of the calls at the uncontended speed suffice."""
    earlier = earlier or {}
    return tuple(kernel_time(same[0].key, [*earlier.get(same[0].key, ()), *(s for k in same for s in k.samples)])
                 for same in zip(*passes))


def _check_same_probes(earlier: Mapping[str, Sequence[float]], table, curves: Mapping) -> None:
    """UserInputError unless `earlier` (an earlier window's samples) has exactly this calibration's
    kernel and curve probes."""
    keys = {k.key for k in table} | {k.key for points in curves.values() for k in points}
    if set(earlier) != keys:
        odd = sorted(set(earlier) ^ keys)
        raise UserInputError("--pool-with", "samples", f"probes {odd[0]!r} (and {len(odd) - 1} more) differ from this "
                             "calibration's: pool only windows of the same --model, --batch and --numerics-from")


def probe_host(repeats: int = 9, threads: int = 0, seed: int = 0, graph=None,
               passes: int = DEFAULT_PASSES, earlier: Mapping[str, Sequence[float]] | None = None) -> HostFacts:
    """Run every probe on the C library with `threads` threads (0: the OpenMP default, as training);
    with a training graph, also its kernel table probes and the curves its elementwise nodes read.
    The timed probes run `passes` times over; each rate probe keeps its median over the passes,
    each kernel and curve probe the lower quartile of its calls of all passes and of `earlier`
    (an earlier window's calls of the same probes: samples.read_samples; UserInputError when its
    probes are not this calibration's)."""
    try:
        from gpu_backend import lib as clib

        # The library as training gets it: engine_library honours $NITISIM_CPU_ENGINE (a library
        # without engine choice has only cpu_library).
        lib = clib.engine_library() if hasattr(clib, "engine_library") else clib.cpu_library()
    except Exception as err:  # noqa: BLE001 - no compiler, no OpenMP, an engine this CPU lacks: impossible here
        raise UserInputError("nitisim calibrate", "C library", f"cannot build or load it: {err}".splitlines()[0]) from None
    lib.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    name, mhz = cpu_model_and_mhz()
    l1d, l2, l3 = cache_bytes(1, "Data", 32 << 10), cache_bytes(2, "Unified", 1 << 20), cache_bytes(3, "Unified", 8 << 20)
    # Both read from the library: its elementwise loops go parallel above NITI_PARALLEL_MIN_ELEMS
    # elements of a kernel's largest input, and the engine in use computes in (m, k, n) blocks.
    parallel = lib.parallel_min_elements
    engine = gemm_engine(lib)
    tile = lib.gemm_tile
    from gpu_backend.backends import cpu_kernel_table

    from .kernels import curve_probes, needed_curves, table_probes

    # The kernel table training calls (same library, engine, allocator settings and threads).
    kernels = cpu_kernel_table(threads)
    evict = l2_evictor(l2, lib)
    # the fresh input written on the library's threads too, so none idles before the timed call
    rewrite = getattr(lib, "rewrite_parallel", None)
    curve_names = needed_curves(graph)
    timed, tables, curve_passes = [], [], []
    for _ in range(passes):
        call_gemm, call_vector = call_probes(lib, repeats, rng)
        timed.append([call_gemm, call_vector, *gemm_probes(lib, repeats, call_gemm.value, rng, l2, tile),
                      *vector_probes(lib, repeats, call_vector.value, rng),
                      bandwidth_probe(lib, repeats, l2, parallel, rng)])
        if graph is not None:
            tables.append(table_probes(kernels, graph, repeats, rng, evict, rewrite))
        curve_passes.append(curve_probes(kernels, curve_names, parallel, repeats, rng, evict, rewrite))
        if earlier is not None and len(curve_passes) == 1:  # after the first pass, not the last
            _check_same_probes(earlier, tables[0] if tables else (), curve_passes[0])
    probes = _median_probes(timed)
    clock = mhz or 1000.0  # rates are converted per cycle of this clock; any clock gives the same seconds
    probes += [
        Probe("clock", clock, "MHz", "/proc/cpuinfo cpu MHz" if mhz else "not found: a nominal 1000 MHz"),
        Probe("l1d_cache", l1d, "bytes", "sysfs cpu0 cache, level 1 data"),
        Probe("l2_cache", l2, "bytes", "sysfs cpu0 cache, level 2"),
        Probe("l3_cache", l3, "bytes", "sysfs cpu0 cache, level 3"),
        Probe("parallel_min_elements", parallel, "elements",
              "the C library's parallel threshold, elements of a kernel's largest input (not measured)"),
    ]
    table = _pooled_times(tables, earlier) if tables else ()
    curves = {curve: _pooled_times([c[curve] for c in curve_passes], earlier) for curve in curve_passes[0]}
    cores = lib.num_threads()
    return HostFacts(f"{name}, {os.cpu_count()} logical CPUs", engine, tile, cores, clock, l1d, l2, l3,
                     parallel, tuple(probes), table, MappingProxyType(curves))
