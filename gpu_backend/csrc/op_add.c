/* op_add.c: niti_op_add, the exponent-aligned sum of two int8 tensors (the numpy definition is
 * nitisim/contract/reference.py's aligned_add; docs/numerics-add.md), on the node-call ABI.
 *
 * inputs a, b: int8 of one shape with exponents e_a, e_b; attrs: mode (ROUNDING_MODES index);
 * output: int8 of that shape, its exponent from the data: e_lo + max(s, 0), e_lo = min(e_a, e_b),
 * s = b(acc) - 7 of the exact sums acc = a * 2**(e_a - e_lo) + b * 2**(e_b - e_lo). Status 2 when
 * |e_a - e_b| > ADD_MAX_EXP_GAP. Two passes over the inputs, the sums recomputed in each instead of
 * stored (scratch of 4 or 8 bytes an element would cost more traffic than a second read of two int8
 * inputs): the range, then the rounding. Element i draws its stochastic rounding at hash index i, so
 * the result does not depend on how the OpenMP loops split the work. */
#include "cpu_internal.h"

/* Largest |e_a - e_b| an add aligns exactly: |a * 2**d + b| <= 128 * 2**55 + 128 < 2**63 (int8 -128
 * included), and the requantize shift stays <= 56, inside niti_round_shift's exact range. */
#define ADD_MAX_EXP_GAP 55

/* The exact sum of one element pair on the common exponent: a multiply, not a left shift of a
 * negative value (undefined in C); it fits int64 by the bound above. */
static inline int64_t aligned_sum(int8_t a, int8_t b, int shift_a, int shift_b) {
    return (int64_t)a * ((int64_t)1 << shift_a) + (int64_t)b * ((int64_t)1 << shift_b);
}

/* Gaps up to 23 keep every aligned sum inside int32 (|sum| <= 128 * 2**23 + 128 < 2**31), and then
 * the sums are requantized by the library's int32 requantize (niti_requant_block: SIMD, the same
 * rounding bit for bit, element i drawing at hash index i), a chunk of sums at a time from a buffer
 * on the stack. Wider gaps (rare: a near-silent branch) take the int64 path. */
#define ADD_INT32_MAX_GAP 23
#define ADD_CHUNK 4096 /* elements: 16 KiB of int32 sums, in L1 */

static inline int32_t aligned_sum32(int8_t a, int8_t b, int shift_a, int shift_b) {
    return (int32_t)a * ((int32_t)1 << shift_a) + (int32_t)b * ((int32_t)1 << shift_b);
}

static int add_narrow(const int8_t *a, const int8_t *b, int64_t n, int sa, int sb, int mode,
                      const niti_node_call *call, int8_t *out) {
    int32_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        int32_t v = aligned_sum32(a[i], b[i], sa, sb);
        hi = v > hi ? v : hi;
        lo = v < lo ? v : lo;
    }
    const int s = niti_requant_shift(hi, lo);
    const uint32_t key = niti_hash_key(call->seed, call->step, call->tensor_id);
    const int64_t chunks = (n + ADD_CHUNK - 1) / ADD_CHUNK;
#pragma omp parallel for schedule(static) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t c = 0; c < chunks; c++) {
        int32_t sums[ADD_CHUNK];
        const int64_t i0 = c * ADD_CHUNK, len = niti_min64(n - i0, ADD_CHUNK);
        for (int64_t i = 0; i < len; i++) sums[i] = aligned_sum32(a[i0 + i], b[i0 + i], sa, sb);
        niti_requant_block(sums, out + i0, len, i0, s, mode, key);
    }
    return s;
}

static int add_wide(const int8_t *a, const int8_t *b, int64_t n, int sa, int sb, int mode, const niti_node_call *call,
                    int8_t *out) {
    int64_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        int64_t v = aligned_sum(a[i], b[i], sa, sb);
        hi = v > hi ? v : hi;
        lo = v < lo ? v : lo;
    }
    uint64_t mh = niti_magnitude(hi), ml = niti_magnitude(lo);
    int s = niti_range_bits_of_peak(mh > ml ? mh : ml) - 7; /* never a left shift; <= 56 by the gap bound */
    if (s < 0) s = 0;
    const uint32_t key = niti_hash_key(call->seed, call->step, call->tensor_id);
#pragma omp parallel for if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++)
        out[i] = niti_saturate_elem(niti_round_shift(aligned_sum(a[i], b[i], sa, sb), s, (niti_round_mode)mode, key,
                                                     (uint32_t)i));
    return s;
}

int niti_op_add(niti_node_call *call) {
    static const int32_t dtypes[] = {NITI_DT_INT8, NITI_DT_INT8, NITI_DT_INT8};
    int st = niti_node_check(call, "add", 2, 1, 1, dtypes);
    if (st) return st;
    const niti_tensor *ta = &call->inputs[0], *tb = &call->inputs[1];
    niti_tensor *to = &call->outputs[0];
    if (!niti_same_shape(ta, tb) || !niti_same_shape(ta, to))
        return niti_fail(NITI_E_ARG, "add: the inputs and the output must have one shape");
    const int64_t mode = call->attrs[0];
    if (mode < NITI_ROUND_NEAREST || mode > NITI_ROUND_STOCHASTIC)
        return niti_fail(NITI_E_ARG, "add: unknown rounding mode %lld (0 nearest, 1 pseudo_stochastic, 2 stochastic)",
                         (long long)mode);
    const int exp_a = ta->exp, exp_b = tb->exp;
    const int64_t gap = (int64_t)exp_a - exp_b;
    if (gap > ADD_MAX_EXP_GAP || gap < -ADD_MAX_EXP_GAP)
        return niti_fail(NITI_E_OVERFLOW, "add: operand exponents %d and %d are %lld apart, more than %d: the aligned "
                         "sum would not fit int64", exp_a, exp_b, (long long)(gap < 0 ? -gap : gap), ADD_MAX_EXP_GAP);
    const int8_t *a = (const int8_t *)ta->data, *b = (const int8_t *)tb->data;
    int8_t *out = (int8_t *)to->data;
    const int64_t n = niti_tensor_elems(ta);
    const int e_lo = exp_a < exp_b ? exp_a : exp_b;
    const int sa = exp_a - e_lo, sb = exp_b - e_lo;
    int s = sa > ADD_INT32_MAX_GAP || sb > ADD_INT32_MAX_GAP ? add_wide(a, b, n, sa, sb, (int)mode, call, out)
                                                             : add_narrow(a, b, n, sa, sb, (int)mode, call, out);
    if ((int64_t)e_lo + s > INT32_MAX)
        return niti_fail(NITI_E_OVERFLOW, "add: output exponent %lld does not fit an int", (long long)e_lo + s);
    to->exp = e_lo + s;
    return NITI_OK;
}
