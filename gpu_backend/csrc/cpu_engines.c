/* cpu_engines.c: the GEMM engines of this build and the choice between them at run time.
 *
 * Best first: "amx" (AMX-INT8 tiles, where compiled in and the CPU and OS allow it), then the SIMD
 * micro-kernel this build was compiled for ("avx512vnni", "avx2" or "scalar"; another SIMD engine
 * is another build of the library: gpu_backend/lib.py picks it). The engine in use is process-wide,
 * like the thread count: chosen on first use, changed by niti_set_engine. Every engine computes
 * exact integer sums, so results are identical whichever runs.
 */
#include <stdatomic.h>
#include <string.h>

#include "cpu_internal.h"

/* ---- the SIMD engine: the VNNI-layout panels of cpu_pack.c and the micro-kernel of cpu_microkernel.c */
static void simd_pack_a(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst, int32_t *corr,
                        int8_t *scratch, void *work) {
    (void)work;
    op->pack(op, r0, nr, k0, nk, NITI_MR, 0x00, dst, corr, scratch);
}

/* B is made unsigned (+128) for vpdpbusd; pack_a's corr takes the bias back out (cpu_microkernel.c). */
static void simd_pack_b(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst,
                        int8_t *scratch) {
    op->pack(op, r0, nr, k0, nk, NITI_NR, 0x80, dst, NULL, scratch);
}

static void simd_kernel(int64_t kc, const void *a_panel, const void *b_panel, const int32_t *corr, void *c, int64_t ldc,
                        int c_mode) {
    niti_microkernel((kc + 3) / 4, a_panel, b_panel, corr, c, ldc, c_mode);
}

const niti_engine niti_simd_engine = {
    .name = NITI_ISA,
    .mr = NITI_MR,
    .nr = NITI_NR,
    .k_align = 4,
    .kc_max = NITI_KC_MAX,
    .mc = NITI_MC,
    .nc_long_k = NITI_NC_LONG_K,
    .a_work_bytes = 0,
    .pack_a = simd_pack_a,
    .pack_b = simd_pack_b,
    .kernel = simd_kernel,
    .enter = NULL,
    .leave = NULL,
};

/* ---- choice ---------------------------------------------------------------------------------------- */
/* The engine in use: NULL until the first GEMM or niti_set_engine decides. Concurrent first calls
 * may both resolve "auto"; they reach the same answer. */
static _Atomic(const niti_engine *) active = NULL;
/* Why "auto" did not take a better engine (the OS refused AMX, say); "" when nothing was passed over. */
static char auto_note[256];

static const niti_engine *best_engine(void) {
#if NITI_AMX
    if (niti_amx_request() == NITI_OK) return &niti_amx_engine;
    strncpy(auto_note, niti_last_error(), sizeof auto_note - 1);
#endif
    return &niti_simd_engine;
}

const niti_engine *niti_active_engine(void) {
    const niti_engine *e = atomic_load(&active);
    if (e) return e;
    e = best_engine();
    atomic_store(&active, e);
    return e;
}

int niti_set_engine(const char *name) {
    if (!name) return niti_fail(NITI_E_ARG, "niti_set_engine: NULL name");
    if (strcmp(name, "auto") == 0) {
        atomic_store(&active, best_engine());
        return NITI_OK;
    }
    if (strcmp(name, niti_simd_engine.name) == 0) {
        atomic_store(&active, &niti_simd_engine);
        return NITI_OK;
    }
#if NITI_AMX
    if (strcmp(name, niti_amx_engine.name) == 0) {
        int st = niti_amx_request();
        if (st != NITI_OK) return st; /* the reason is recorded */
        atomic_store(&active, &niti_amx_engine);
        return NITI_OK;
    }
    return niti_fail(NITI_E_ARG, "niti_set_engine: unknown engine '%s'; this build has 'amx' and '%s' (or 'auto')", name,
                     niti_simd_engine.name);
#else
    if (strcmp(name, "amx") == 0)
        return niti_fail(NITI_E_ARG, "niti_set_engine: 'amx' is not compiled into this build (the compiler did not "
                                     "target AMX-INT8: build with -march=native on a CPU that has it)");
    return niti_fail(NITI_E_ARG, "niti_set_engine: unknown engine '%s'; this build has '%s' (or 'auto')", name,
                     niti_simd_engine.name);
#endif
}

const char *niti_engine_name(void) { return niti_active_engine()->name; }

int niti_gemm_tile(int *m_out, int *k_out, int *n_out) {
    if (!m_out || !k_out || !n_out) return niti_fail(NITI_E_ARG, "niti_gemm_tile: NULL output");
    const niti_engine *e = niti_active_engine();
    *m_out = e->mr;
    *k_out = e->k_align;
    *n_out = e->nr;
    return NITI_OK;
}

const char *niti_engine_note(void) {
    niti_active_engine();
    return auto_note;
}
