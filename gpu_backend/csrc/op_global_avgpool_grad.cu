/* op_global_avgpool_grad.cu: niti_cuda_op_global_avgpool_grad, the error of a global average pool on
 * the device (as op_global_avgpool_grad.c; the numpy definition is nitisim/contract/reference.py's
 * global_avgpool_grad; docs/numerics-avgpool.md), on the node-call ABI.
 *
 * One thread per dx element (a broadcast write): d = clamp(round_half_away(dy * 2**p / K), +-127),
 * K = H*W read from dx's extents, p = floor(log2 K) = -exp_shift (checked on the host, where the
 * shapes are). Recomputing d per element costs a division per write but needs no second kernel or
 * scratch; the writes are coalesced, channel fastest. The output exponent is e_dy + exp_shift (the
 * op row's rule, applied by the caller). */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "cuda_elementwise.cuh"

#define GLOBAL_POOL_MAX_WINDOW ((int64_t)1 << 24) /* as nitisim/contract/ops.py's GLOBAL_POOL_MAX_WINDOW */

namespace {

__global__ void __launch_bounds__(THREADS) global_avgpool_grad_kernel(const int8_t *__restrict__ dy, int64_t total,
                                                                      int64_t hw, int64_t c, int p,
                                                                      int8_t *__restrict__ dx) {
    GRID_STRIDE(i, total) {
        const int64_t row = i / (hw * c), ch = i % c;
        dx[i] = niti_saturate_elem(niti_div_round_half_away((int64_t)dy[row * c + ch] * ((int64_t)1 << p), hw));
    }
}

} /* namespace */

extern "C" int niti_cuda_op_global_avgpool_grad(niti_cuda_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_cu_node_check(call, "global_avgpool_grad", 1, 1, 1, dtypes);
    if (st) return st;
    const niti_cuda_tensor *tdy = &call->inputs[0], *to = &call->outputs[0];
    REQUIRE(tdy->ndim == 2 && to->ndim == 4 && to->shape[0] == tdy->shape[0] && to->shape[3] == tdy->shape[1],
            "global_avgpool_grad: dy must be (N, C) and dx (N, H, W, C)");
    const int64_t n = to->shape[0], hw = to->shape[1] * to->shape[2], c = to->shape[3];
    REQUIRE(hw >= 1 && hw <= GLOBAL_POOL_MAX_WINDOW,
            "global_avgpool_grad: window of %lld positions; a global pool needs 1 to 2**24", (long long)hw);
    int p = 0;
    while (((int64_t)2 << p) <= hw) p++; /* floor(log2 K) */
    REQUIRE(call->attrs[0] == -p, "global_avgpool_grad: exp_shift is %lld; a window of %lld positions needs %d",
            (long long)call->attrs[0], (long long)hw, -p);
    NITI_CU_ENTER("niti_cuda_op_global_avgpool_grad");
    const int64_t total = n * hw * c;
    if (total == 0) return NITI_OK;
    NITI_LAUNCH(global_avgpool_grad_kernel, grid_for(total), THREADS, 0, niti_cu_stream())(
        (const int8_t *)tdy->data, total, hw, c, p, (int8_t *)to->data);
    return niti_cu_check_launch("niti_cuda_op_global_avgpool_grad");
}
