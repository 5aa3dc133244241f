"""AMX peak of this machine: tile-only loops and the AMX engine's kernel, on one core and on all.

The tile-only loops keep all eight tiles in registers and reload their operands from L1, so they
measure the tile unit alone: TDPBSSD (int8, the ceiling of any int8 GEMM here) and TDPBF16PS (bf16,
what torch's bf16 matmul runs on, where the CPU has it). The AMX engine's 32 x 32 kernel is then
run over one block again and again, small enough for L1 and at the GEMM driver's size (in L2), to
show what feeding the tiles from the caches costs. Each loop runs as one process, then as
`os.cpu_count()` processes at once: if the total does not grow, the cores share one AMX unit
(hyperthreads of one physical core), and the GEMM targets must be read against the shared peak.
Writes docs/results.md section `amx-peak`.

    python benchmarks/amx_peak.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import write_section  # noqa: E402

LOOP = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
typedef struct { uint8_t palette, start, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } __attribute__((packed)) cfg_t;
static double seconds(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec; }

/* Tile-only loops: all eight tiles in registers, operands reloaded from L1. int8: TDPBSSD does 16 x 16 x 64
 * multiply-adds; bf16: TDPBF16PS does 16 x 16 x 32. */
static double tile_loop(int bf16) {
    static int8_t a[2][1024] __attribute__((aligned(64))), b[2][1024] __attribute__((aligned(64)));
    for (int i = 0; i < 1024; i++) { a[0][i] = (int8_t)i; a[1][i] = (int8_t)(3 * i); b[0][i] = (int8_t)(5 * i); b[1][i] = (int8_t)(7 * i); }
    if (bf16) for (int i = 0; i < 1024; i += 2) { a[0][i + 1] = a[1][i + 1] = b[0][i + 1] = b[1][i + 1] = 0x3f; }
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    long n = 20000000;
    double t0 = seconds();
    if (bf16) {
        for (long i = 0; i < n; i++) {
            _tile_loadd(4, a[0], 64); _tile_loadd(5, a[1], 64); _tile_loadd(6, b[0], 64); _tile_loadd(7, b[1], 64);
            _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
        }
    } else {
        for (long i = 0; i < n; i++) {
            _tile_loadd(4, a[0], 64); _tile_loadd(5, a[1], 64); _tile_loadd(6, b[0], 64); _tile_loadd(7, b[1], 64);
            _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
        }
    }
    double s = seconds() - t0;
    int32_t c[256]; _tile_stored(0, c, 64);
    return (double)n * 4 * 16 * 16 * (bf16 ? 32 : 64) * 2 / s / 1e12 + 0 * c[0];
}

/* The AMX engine's 32 x 32 kernel (gpu_backend/csrc/cpu_amx.c, niti_amx_tile32, int32 store) over an
 * mc x n block of C at depth k, B panel outer and A panels inner as the GEMM driver runs them, the same
 * block again and again: its operands stay in L1 (small blocks) or L2 (the driver's block sizes). */
static void tile32(int64_t k, const int8_t *a, const uint8_t *b, int32_t *c, int64_t ldc) {
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    for (int64_t q = 0; q < k; q += 64) {
        _tile_loadd(4, a + q, k); _tile_loadd(6, b + q / 4 * 128, 128); _tile_dpbssd(0, 4, 6);
        _tile_loadd(7, b + q / 4 * 128 + 64, 128); _tile_dpbssd(1, 4, 7);
        _tile_loadd(5, a + 16 * k + q, k); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
    }
    _tile_stored(0, c, ldc * 4); _tile_stored(1, c + 16, ldc * 4);
    _tile_stored(2, c + 16 * ldc, ldc * 4); _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
}

static double kernel_block(int64_t mc, int64_t n, int64_t k) {
    int8_t *a = aligned_alloc(64, (size_t)(mc * k)); uint8_t *b = aligned_alloc(64, (size_t)(n * k));
    int32_t *c = aligned_alloc(64, (size_t)(mc * n * 4));
    for (int64_t i = 0; i < mc * k; i++) a[i] = (int8_t)(i * 7);
    for (int64_t i = 0; i < n * k; i++) b[i] = (uint8_t)(i * 13);
    long reps = (long)(4e9 / (double)(mc * n * k)) + 1; /* about a second */
    double best = 0;
    for (int trial = 0; trial < 3; trial++) {
        double t0 = seconds();
        for (long r = 0; r < reps; r++)
            for (int64_t j = 0; j < n; j += 32)
                for (int64_t i = 0; i < mc; i += 32) tile32(k, a + i * k, b + j * k, c + i * n + j, n);
        double rate = (double)reps * 2.0 * (double)(mc * n * k) / (seconds() - t0) / 1e12;
        if (rate > best) best = rate;
    }
    free(a); free(b); free(c);
    return best;
}

int main(int argc, char **argv) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { puts("refused"); return 2; }
    cfg_t cfg; memset(&cfg, 0, sizeof cfg); cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
    const char *what = argc > 1 ? argv[1] : "int8";
    double rate;
    if (!strcmp(what, "int8")) rate = tile_loop(0);
    else if (!strcmp(what, "bf16")) rate = tile_loop(1);
    else if (!strcmp(what, "kernel-l1")) rate = kernel_block(64, 64, 256);
    else rate = kernel_block(256, 128, 1152);
    _tile_release();
    printf("%.4f\n", rate);
    return 0;
}
"""

# (argument, what it runs, where its operands come from)
LOOPS = [("int8", "tile-only TDPBSSD loop (int8)", "L1, reloaded"),
         ("bf16", "tile-only TDPBF16PS loop (bf16, what torch's bf16 matmul runs on)", "L1, reloaded"),
         ("kernel-l1", "the engine's 32 x 32 kernel, a 64 x 64 x 256 block", "L1 (48 KB)"),
         ("kernel-l2", "the engine's 32 x 32 kernel, a 256 x 128 x 1152 block (the driver's)", "L2")]


def rates(binary: Path, what: str, processes: int) -> list[float]:
    """T ops/s of each of `processes` copies of loop `what` run at once."""
    procs = [subprocess.Popen([str(binary), what], stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    out = [p.communicate()[0].split() for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"the AMX loop failed: {out}")
    return [float(o[0]) for o in out]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def main() -> int:
    flags = cpu_flags()
    loops = [loop for loop in LOOPS if loop[0] != "bf16" or "amx_bf16" in flags]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "amx_loop.c", Path(tmp) / "amx_loop"
        source.write_text(LOOP)
        built = subprocess.run(["gcc", "-O2", "-march=native", "-mamx-tile", "-mamx-int8", "-mamx-bf16", str(source),
                                "-o", str(binary)], capture_output=True, text=True)
        if built.returncode:
            print(f"cannot build the AMX loop (no AMX-INT8 compiler support?):\n{built.stderr}", file=sys.stderr)
            return 2
        measured = {}
        for what, _, _ in loops:
            alone = max(rates(binary, what, 1)[0] for _ in range(3))
            together = max((rates(binary, what, cores) for _ in range(3)), key=sum)
            measured[what] = (alone, together)
            print(f"{what}: {alone:.2f} alone, {sum(together):.2f} on {cores} at once", flush=True)
    rows = "\n".join(f"| {label} | {where} | {measured[what][0]:.2f} | {', '.join(f'{r:.2f}' for r in measured[what][1])} "
                     f"| {sum(measured[what][1]):.2f} |" for what, label, where in loops)
    alone, together = measured["int8"]
    ratio = sum(together) / alone
    body = (
        f"Load average {os.getloadavg()[0]:.1f}. Best of 3 runs of each loop, alone and as {cores} processes at "
        "once (T ops/s: 2 per multiply-add).\n\n"
        f"| loop | operands from | 1 process | {cores} at once, each | {cores} at once, total |\n|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"The int8 tile loop on {cores} processes at once reaches {ratio:.2f}x one process: "
        + ("consistent with cores that share one AMX unit (hyperthreads of one physical core), so the int8 "
           f"GEMM ceiling of this machine is about {max(alone, sum(together)):.1f} T ops/s in all."
           if ratio < 1.5 else "each core has its own AMX unit.")
    )
    l2 = sum(measured["kernel-l2"][1])
    body += (f" The engine's own kernel fed from L2 reaches {l2:.2f} T ops/s on {cores} cores, "
             f"{l2 / sum(together):.0%} of the tile loop: the ceiling of any GEMM built from it here, before "
             "packing, reading A from memory and writing C.")
    if "bf16" in measured:
        body += (f" The bf16 tile loop runs at {sum(measured['bf16'][1]) / sum(together):.2f}x the int8 one in "
                 "multiply-adds, so torch's bf16 matmul at a fraction f of its peak is matched by the int8 GEMM "
                 "at f / 2 of this one.")
    body += "\n"
    print(body)
    write_section("amx-peak", "AMX peak of this machine: tile loops and the engine's kernel (benchmarks/amx_peak.py)",
                  body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
