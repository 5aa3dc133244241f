/* cpu_lib.c: library plumbing (ABI version, error messages, threads) and the counter-hash exports
 * used by the parity tests. */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* One message per calling thread: Python may call from several threads at once. */
static _Thread_local char last_error[512];
/* Written only by niti_set_num_threads; read at the start of parallel regions. */
static _Atomic int requested_threads = 0;

int niti_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

const char *niti_last_error(void) { return last_error; }

int niti_abi_version(void) { return NITI_ABI_VERSION; }

const char *niti_kernel_isa(void) { return NITI_ISA; }

int niti_threads(void) {
#ifdef _OPENMP
    /* inside a parallel region (an op that runs other ops per thread, e.g. the fused conv +
     * requantize), a nested region would only add threads the cores do not have */
    if (omp_in_parallel()) return 1;
    return requested_threads > 0 ? requested_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

int niti_set_num_threads(int num_threads) {
    if (num_threads < 0) return niti_fail(NITI_E_ARG, "niti_set_num_threads: need >= 0, got %d", num_threads);
    requested_threads = num_threads;
    return NITI_OK;
}

int niti_get_num_threads(int *num_threads_out) {
    if (!num_threads_out) return niti_fail(NITI_E_ARG, "niti_get_num_threads: NULL output");
    *num_threads_out = niti_threads();
    return NITI_OK;
}

/* ---- counter hash ----------------------------------------------------------------------------------- */
int niti_mix32_array(int64_t n, const uint32_t *x, uint32_t *out) {
    if (n < 0 || (n && (!x || !out))) return niti_fail(NITI_E_ARG, "niti_mix32_array: bad size %lld or NULL array", (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = niti_mix32(x[i]);
    return NITI_OK;
}

int niti_hash_key_of(uint32_t seed, uint32_t step, uint32_t tensor_id, uint32_t *key_out) {
    if (!key_out) return niti_fail(NITI_E_ARG, "niti_hash_key_of: NULL output");
    *key_out = niti_hash_key(seed, step, tensor_id);
    return NITI_OK;
}

int niti_uniform_below_pow2(int s_bits, uint32_t seed, uint32_t step, uint32_t tensor_id, int64_t n, uint32_t *out) {
    if (s_bits < 1 || s_bits > 31) return niti_fail(NITI_E_ARG, "niti_uniform_below_pow2: width must be 1..31 bits, got %d", s_bits);
    if (n < 0 || (n && !out)) return niti_fail(NITI_E_ARG, "niti_uniform_below_pow2: bad size %lld or NULL array", (long long)n);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    for (int64_t i = 0; i < n; i++) out[i] = niti_draw_below_pow2(key, (uint32_t)i, s_bits);
    return NITI_OK;
}

int niti_fine_exp2_table_q16(int32_t *out256) {
    if (!out256) return niti_fail(NITI_E_ARG, "niti_fine_exp2_table_q16: NULL output");
    for (int i = 0; i < 256; i++) out256[i] = (int32_t)niti_fine_exp2_q16(i);
    return NITI_OK;
}
