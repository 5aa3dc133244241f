/* op_add.cu: niti_cuda_op_add, the exponent-aligned sum of two int8 tensors on the device (as
 * op_add.c; the numpy definition is nitisim/contract/reference.py's aligned_add), on the node-call
 * ABI. Both input exponents are read on the device and the output exponent is written there, so
 * the op needs no host synchronisation: a first kernel finds max |acc| of the exact int64 sums
 * (block max + atomicMax into a scratch word), a second recomputes each sum and rounds it once.
 * Exponents more than ADD_MAX_EXP_GAP apart raise the op's device flag (a deferred status 2). */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "cuda_elementwise.cuh"

/* Largest |e_a - e_b| an add aligns exactly: |a * 2**d + b| <= 128 * 2**55 + 128 < 2**63 (int8 -128
 * included), and the requantize shift stays <= 56, inside niti_round_shift's exact range. */
#define ADD_MAX_EXP_GAP 55
#define ADD_GAP_MESSAGE "the operand exponents were more than 55 apart (the aligned sum would not fit int64)"

namespace {

/* The alignment of an add: shifts of a and b onto e_lo = min(e_a, e_b), or ok = false when the
 * exponents are more than ADD_MAX_EXP_GAP apart. */
struct AddAlign {
    int shift_a, shift_b;
    int64_t e_lo;
    bool ok;
};

__device__ AddAlign add_align(const int32_t *exp_a, const int32_t *exp_b) {
    const int64_t ea = *exp_a, eb = *exp_b;
    AddAlign r;
    r.e_lo = ea < eb ? ea : eb;
    r.ok = ea - eb <= ADD_MAX_EXP_GAP && eb - ea <= ADD_MAX_EXP_GAP;
    r.shift_a = r.ok ? (int)(ea - r.e_lo) : 0;
    r.shift_b = r.ok ? (int)(eb - r.e_lo) : 0;
    return r;
}

/* The exact sum of one element pair on the common exponent: a multiply, not a left shift of a
 * negative value; it fits int64 by the gap bound. */
__device__ int64_t aligned_sum(int8_t a, int8_t b, int shift_a, int shift_b) {
    return (int64_t)a * ((int64_t)1 << shift_a) + (int64_t)b * ((int64_t)1 << shift_b);
}

/* *peak = max |a * 2**shift_a + b * 2**shift_b| (the caller zeroes it); a gap beyond the bound
 * raises the op's flag instead (every block sees the same exponents, so all of it returns). */
__global__ void __launch_bounds__(THREADS) add_peak_kernel(const int8_t *__restrict__ a, const int8_t *__restrict__ b,
                                                           int64_t n, const int32_t *exp_a, const int32_t *exp_b,
                                                           unsigned long long *peak, unsigned *flags, unsigned gap_flag) {
    const AddAlign al = add_align(exp_a, exp_b);
    if (!al.ok) {
        if (blockIdx.x == 0 && threadIdx.x == 0) atomicOr(flags, gap_flag);
        return;
    }
    unsigned long long m = 0;
    GRID_STRIDE(i, n) {
        unsigned long long v = niti_magnitude(aligned_sum(a[i], b[i], al.shift_a, al.shift_b));
        m = v > m ? v : m;
    }
    block_max_to(m, peak);
}

/* out = clamp(ROUND(sum, s)), s = b(sums) - 7 from *peak (no shift when s <= 0), the sums
 * recomputed rather than stored; *exp_out = e_lo + max(s, 0). */
__global__ void __launch_bounds__(THREADS) add_round_kernel(const int8_t *__restrict__ a, const int8_t *__restrict__ b,
                                                            int64_t n, const int32_t *exp_a, const int32_t *exp_b,
                                                            const unsigned long long *peak, int mode, uint32_t key,
                                                            int8_t *__restrict__ out, int32_t *exp_out) {
    const AddAlign al = add_align(exp_a, exp_b);
    if (!al.ok) return; /* flagged by add_peak_kernel: the outputs are undefined */
    int s = niti_range_bits_of_peak(*peak) - 7; /* never a left shift; <= 56 by the gap bound */
    if (s < 0) s = 0;
    if (blockIdx.x == 0 && threadIdx.x == 0) *exp_out = (int32_t)(al.e_lo + s);
    GRID_STRIDE(i, n) {
        out[i] = niti_saturate_elem(niti_round_shift(aligned_sum(a[i], b[i], al.shift_a, al.shift_b), s,
                                                     (niti_round_mode)mode, key, (uint32_t)i));
    }
}

} /* namespace */

extern "C" int niti_cuda_op_add(niti_cuda_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_cu_node_check(call, "add", 2, 1, 1, dtypes);
    if (st) return st;
    const niti_cuda_tensor *ta = &call->inputs[0], *tb = &call->inputs[1], *to = &call->outputs[0];
    if (!niti_cu_same_shape(ta, tb) || !niti_cu_same_shape(ta, to))
        return niti_cu_fail(NITI_E_ARG, "add: the inputs and the output must have one shape");
    if (!ta->exp || !tb->exp || !to->exp)
        return niti_cu_fail(NITI_E_ARG, "add: both inputs need an exponent and the output an exponent slot");
    const int64_t mode = call->attrs[0];
    if (mode < NITI_ROUND_NEAREST || mode > NITI_ROUND_STOCHASTIC)
        return niti_cu_fail(NITI_E_ARG, "add: unknown rounding mode %lld (0 nearest, 1 pseudo_stochastic, 2 stochastic)",
                            (long long)mode);
    NITI_CU_ENTER("niti_cuda_op_add");
    const unsigned gap_flag = niti_cu_check_flag("add", NITI_E_OVERFLOW, ADD_GAP_MESSAGE);
    if (!gap_flag) return NITI_E_ARG;
    const int8_t *a = (const int8_t *)ta->data, *b = (const int8_t *)tb->data;
    const int64_t n = niti_cu_tensor_elems(ta);
    unsigned long long *peak = niti_cu_scratch();
    cudaError_t err = cudaMemsetAsync(peak, 0, sizeof *peak, niti_cu_stream());
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_op_add", "cudaMemsetAsync");
    NITI_LAUNCH(add_peak_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(a, b, n, ta->exp, tb->exp, peak,
                                                                             niti_cu_flags(), gap_flag);
    const uint32_t key = niti_hash_key(call->seed, call->step, call->tensor_id);
    NITI_LAUNCH(add_round_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(a, b, n, ta->exp, tb->exp, peak, (int)mode,
                                                                              key, (int8_t *)to->data, to->exp);
    return niti_cu_check_launch("niti_cuda_op_add");
}
