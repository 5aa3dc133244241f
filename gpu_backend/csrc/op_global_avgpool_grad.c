/* op_global_avgpool_grad.c: niti_op_global_avgpool_grad, the error of a global average pool (the
 * numpy definition is nitisim/contract/reference.py's global_avgpool_grad; docs/numerics-avgpool.md),
 * on the node-call ABI.
 *
 * input dy: int8 (N, C); attrs: exp_shift, which must be -p, p = floor(log2 K), K = H*W; output dx:
 * int8 (N, H, W, C), H and W read from its extents (the node's input_shape), exponent e_dy +
 * exp_shift (the op row's rule, applied by the caller). Every position of a window gets
 * d = clamp(round_half_away(dy * 2**p / K), +-127): 2**p / K is in (1/2, 1], so the mantissa keeps
 * dy's precision and 2**-p moves into the exponent. Each batch row's C values are computed once
 * into dx's first position, then copied to the other H*W - 1 (a broadcast write). */
#include <string.h>

#include "cpu_internal.h"

#define GLOBAL_POOL_MAX_WINDOW ((int64_t)1 << 24) /* as nitisim/contract/ops.py's GLOBAL_POOL_MAX_WINDOW */

int niti_op_global_avgpool_grad(niti_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_node_check(call, "global_avgpool_grad", 1, 1, 1, dtypes);
    if (st) return st;
    const niti_tensor *tdy = &call->inputs[0];
    niti_tensor *to = &call->outputs[0];
    if (tdy->ndim != 2 || to->ndim != 4 || to->shape[0] != tdy->shape[0] || to->shape[3] != tdy->shape[1])
        return niti_fail(NITI_E_ARG, "global_avgpool_grad: dy must be (N, C) and dx (N, H, W, C)");
    const int64_t n = to->shape[0], hw = to->shape[1] * to->shape[2], c = to->shape[3];
    if (hw < 1 || hw > GLOBAL_POOL_MAX_WINDOW)
        return niti_fail(NITI_E_ARG, "global_avgpool_grad: window of %lld positions; a global pool needs 1 to 2**24",
                         (long long)hw);
    int p = 0;
    while (((int64_t)2 << p) <= hw) p++; /* floor(log2 K) */
    if (call->attrs[0] != -p)
        return niti_fail(NITI_E_ARG, "global_avgpool_grad: exp_shift is %lld; a window of %lld positions needs %d",
                         (long long)call->attrs[0], (long long)hw, -p);
    const int8_t *dy = (const int8_t *)tdy->data;
    int8_t *dx = (int8_t *)to->data;
#pragma omp parallel for if (n * hw * c > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        int8_t *first = dx + i * hw * c;
        for (int64_t ch = 0; ch < c; ch++)
            first[ch] = niti_saturate_elem(niti_div_round_half_away((int64_t)dy[i * c + ch] * ((int64_t)1 << p), hw));
        for (int64_t q = 1; q < hw; q++) memcpy(first + q * c, first, (size_t)c);
    }
    return NITI_OK;
}
