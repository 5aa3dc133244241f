/* op_global_avgpool.c: niti_op_global_avgpool, the global average pool of an int8 NHWC map (the
 * numpy definition is nitisim/contract/reference.py's global_avgpool; docs/numerics-avgpool.md), on
 * the node-call ABI.
 *
 * input x: int8 (N, H, W, C); no attrs; output: int8 (N, C), exponent x's (the op row's rule, applied
 * by the caller). Each output is the exact window sum S over the K = H*W positions, divided by K
 * rounded half away from zero (niti_div_round_half_away: exact for every K), clamped to +-127. The
 * sums are int32: |S| <= 128 K fits for K <= 2**24, which the caller's row check and this file's
 * enforce. One pass over x, channel fastest, so the inner loop is a vectorisable add of int8 rows
 * into an int32 row. */
#include <stdlib.h>

#include "cpu_internal.h"

#define GLOBAL_POOL_MAX_WINDOW ((int64_t)1 << 24) /* as nitisim/contract/ops.py's GLOBAL_POOL_MAX_WINDOW */

int niti_op_global_avgpool(niti_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_node_check(call, "global_avgpool", 1, 1, 0, dtypes);
    if (st) return st;
    const niti_tensor *tx = &call->inputs[0];
    niti_tensor *to = &call->outputs[0];
    if (tx->ndim != 4 || to->ndim != 2 || to->shape[0] != tx->shape[0] || to->shape[1] != tx->shape[3])
        return niti_fail(NITI_E_ARG, "global_avgpool: input must be (N, H, W, C) and output (N, C)");
    const int64_t n = tx->shape[0], hw = tx->shape[1] * tx->shape[2], c = tx->shape[3];
    if (hw < 1 || hw > GLOBAL_POOL_MAX_WINDOW)
        return niti_fail(NITI_E_ARG, "global_avgpool: window of %lld positions; a global pool needs 1 to 2**24",
                         (long long)hw);
    if (n * c == 0) return NITI_OK;
    const int8_t *x = (const int8_t *)tx->data;
    int8_t *out = (int8_t *)to->data;
    int32_t *sums = (int32_t *)malloc((size_t)(n * c) * sizeof *sums); /* (N, C) window sums */
    if (!sums) return niti_fail(NITI_E_NOMEM, "global_avgpool: cannot allocate %lld window sums", (long long)(n * c));
#pragma omp parallel for if (n * hw * c > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        int32_t *row = sums + i * c;
        const int8_t *xi = x + i * hw * c;
        for (int64_t ch = 0; ch < c; ch++) row[ch] = 0;
        for (int64_t p = 0; p < hw; p++)
            for (int64_t ch = 0; ch < c; ch++) row[ch] += xi[p * c + ch];
        for (int64_t ch = 0; ch < c; ch++) out[i * c + ch] = niti_saturate_elem(niti_div_round_half_away(row[ch], hw));
    }
    free(sums);
    return NITI_OK;
}
