/* op_global_avgpool.cu: niti_cuda_op_global_avgpool, the global average pool of an int8 NHWC map on
 * the device (as op_global_avgpool.c; the numpy definition is nitisim/contract/reference.py's
 * global_avgpool; docs/numerics-avgpool.md), on the node-call ABI.
 *
 * One thread per output (n, c): it sums the K = H*W window values in int32 (|S| <= 128 K fits for
 * K <= 2**24), then divides by K rounded half away from zero (niti_div_round_half_away) and clamps.
 * Consecutive threads read consecutive channels, so every step of the window loop is one coalesced
 * row read. The output exponent is x's (the op row's rule, applied by the caller): no exponent is
 * read or written here. */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "cuda_elementwise.cuh"

#define GLOBAL_POOL_MAX_WINDOW ((int64_t)1 << 24) /* as nitisim/contract/ops.py's GLOBAL_POOL_MAX_WINDOW */

namespace {

__global__ void __launch_bounds__(THREADS) global_avgpool_kernel(const int8_t *__restrict__ x, int64_t n, int64_t hw,
                                                                 int64_t c, int8_t *__restrict__ out) {
    GRID_STRIDE(o, n * c) {
        const int64_t i = o / c, ch = o % c;
        const int8_t *xi = x + i * hw * c + ch;
        int32_t sum = 0;
        for (int64_t p = 0; p < hw; p++) sum += xi[p * c];
        out[o] = niti_saturate_elem(niti_div_round_half_away(sum, hw));
    }
}

} /* namespace */

extern "C" int niti_cuda_op_global_avgpool(niti_cuda_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_cu_node_check(call, "global_avgpool", 1, 1, 0, dtypes);
    if (st) return st;
    const niti_cuda_tensor *tx = &call->inputs[0], *to = &call->outputs[0];
    REQUIRE(tx->ndim == 4 && to->ndim == 2 && to->shape[0] == tx->shape[0] && to->shape[1] == tx->shape[3],
            "global_avgpool: input must be (N, H, W, C) and output (N, C)");
    const int64_t n = tx->shape[0], hw = tx->shape[1] * tx->shape[2], c = tx->shape[3];
    REQUIRE(hw >= 1 && hw <= GLOBAL_POOL_MAX_WINDOW,
            "global_avgpool: window of %lld positions; a global pool needs 1 to 2**24", (long long)hw);
    NITI_CU_ENTER("niti_cuda_op_global_avgpool");
    if (n * c == 0) return NITI_OK;
    NITI_LAUNCH(global_avgpool_kernel, grid_for(n * c), THREADS, 0, niti_cu_stream())(
        (const int8_t *)tx->data, n, hw, c, (int8_t *)to->data);
    return niti_cu_check_launch("niti_cuda_op_global_avgpool");
}
