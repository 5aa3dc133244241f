"""AMX-INT8 peak of this machine: a tile-only TDPBSSD loop, on one core and on every core at once.

The loop keeps all eight tiles in registers and reloads its operands from L1, so it measures the
tile unit alone: the ceiling of any int8 GEMM here. Run on one process, then on `os.cpu_count()`
processes at once: if the total does not grow, the cores share one AMX unit (virtual CPUs that are
hyperthreads of one physical core), and the GEMM targets must be read against the shared peak.
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
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
typedef struct { uint8_t palette, start, reserved[14]; uint16_t colsb[16]; uint8_t rows[16]; } __attribute__((packed)) cfg_t;
int main(void) {
    if (syscall(SYS_arch_prctl, 0x1023, 18)) { puts("refused"); return 2; }
    cfg_t cfg; memset(&cfg, 0, sizeof cfg); cfg.palette = 1;
    for (int t = 0; t < 8; t++) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
    static int8_t a[2][1024] __attribute__((aligned(64))), b[2][1024] __attribute__((aligned(64)));
    for (int i = 0; i < 1024; i++) { a[0][i] = (int8_t)i; a[1][i] = (int8_t)(3 * i); b[0][i] = (int8_t)(5 * i); b[1][i] = (int8_t)(7 * i); }
    _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    long n = 20000000;
    for (long i = 0; i < n; i++) {
        _tile_loadd(4, a[0], 64); _tile_loadd(5, a[1], 64); _tile_loadd(6, b[0], 64); _tile_loadd(7, b[1], 64);
        _tile_dpbssd(0, 4, 6); _tile_dpbssd(1, 4, 7); _tile_dpbssd(2, 5, 6); _tile_dpbssd(3, 5, 7);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int32_t c[256]; _tile_stored(0, c, 64); _tile_release();
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("%.4f %d\n", (double)n * 4 * 16 * 16 * 64 * 2 / s / 1e12, c[0] & 1);
    return 0;
}
"""


def rates(binary: Path, processes: int) -> list[float]:
    """T int8 ops/s of each of `processes` copies of the loop run at once."""
    procs = [subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    out = [p.communicate()[0].split() for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"the AMX loop failed: {out}")
    return [float(o[0]) for o in out]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = Path(tmp) / "amx_loop.c", Path(tmp) / "amx_loop"
        source.write_text(LOOP)
        built = subprocess.run(["gcc", "-O2", "-march=native", "-mamx-tile", "-mamx-int8", str(source), "-o",
                                str(binary)], capture_output=True, text=True)
        if built.returncode:
            print(f"cannot build the AMX loop (no AMX-INT8 compiler support?):\n{built.stderr}", file=sys.stderr)
            return 2
        cores = os.cpu_count() or 1
        alone = max(rates(binary, 1) for _ in range(3))[0]
        together = max((rates(binary, cores) for _ in range(3)), key=sum)
    body = (
        f"Load average {os.getloadavg()[0]:.1f}. A tile-only TDPBSSD loop (2 x 2 accumulator tiles, operands "
        "reloaded from L1), best of 3.\n\n"
        "| processes at once | T int8 ops/s each | total |\n|---|---|---|\n"
        f"| 1 | {alone:.2f} | {alone:.2f} |\n"
        f"| {cores} | {', '.join(f'{r:.2f}' for r in together)} | {sum(together):.2f} |\n\n"
        f"{cores} processes at once reach {sum(together) / alone:.2f}x one process: "
        + ("consistent with cores that share one AMX unit (hyperthreads of one physical core), so the int8 "
           f"GEMM ceiling of this machine is about {max(alone, sum(together)):.1f} T ops/s in all; torch bf16 "
           "runs on the same unit (TDPBF16PS does half the multiply-adds of TDPBSSD per instruction)."
           if sum(together) < 1.5 * alone else "each core has its own AMX unit.") + "\n"
    )
    print(body)
    write_section("amx-peak", "AMX-INT8 peak of this machine (benchmarks/amx_peak.py)", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
