/* cpu_ops.c: the elementwise and small ops: range, shifts and requantization, ReLU, max pooling,
 * dropout, the loss gradient and the weight updates. Each mirrors the numpy function of the same
 * name in nitisim/contract/numerics.py through the per-element arithmetic of niti_arith.h. Loops run on
 * OpenMP threads above NITI_PARALLEL_MIN_ELEMS; stochastic draws use the flat element index, so the
 * result does not depend on how the loop is split. */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
static inline int omp_threads_in_team(void) { return omp_get_num_threads(); }
static inline int omp_thread_in_team(void) { return omp_get_thread_num(); }
#else
static inline int omp_threads_in_team(void) { return 1; }
static inline int omp_thread_in_team(void) { return 0; }
#endif

#define REQUIRE(cond, ...) \
    do {                   \
        if (!(cond)) return niti_fail(NITI_E_ARG, __VA_ARGS__); \
    } while (0)

#define PRAGMA(text) _Pragma(#text)
/* a parallel loop when the work (n elements) is large enough to pay for waking threads */
#define PARALLEL_FOR(n) PRAGMA(omp parallel for if ((n) > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads()))
/* Loops that only move bytes (ReLU, pooling, dropout) run at memory speed, a few hundred
 * microseconds for millions of elements: below this size a parallel region, which on a busy machine
 * can wait a whole time slice for its second thread, costs more than it saves. At 2**22 the
 * LeNet step (batch 256, 3 M-element conv1 maps) ran them on one core: 2**20 measured 10.0 -> 7.9 ms
 * per step on 2 cores (vgg-small-7 batch 64: 122.5 -> 120.4 ms), alternated in one process. */
#define NITI_LIGHT_PARALLEL_MIN_ELEMS (1 << 20)
/* Calibration reads one threshold for both kinds of loop: the exported NITI_PARALLEL_MIN_ELEMS. */
_Static_assert(NITI_LIGHT_PARALLEL_MIN_ELEMS == NITI_PARALLEL_MIN_ELEMS, "one parallel threshold (niti_api.h)");
#define LIGHT_PARALLEL_FOR(n) PRAGMA(omp parallel for if ((n) > NITI_LIGHT_PARALLEL_MIN_ELEMS) num_threads(niti_threads()))

static int check_n(const char *fn, int64_t n, int arrays_ok) {
    REQUIRE(n >= 0, "%s: size must be >= 0, got %lld", fn, (long long)n);
    REQUIRE(n == 0 || arrays_ok, "%s: NULL array", fn);
    return NITI_OK;
}

static int check_mode(const char *fn, int mode) {
    REQUIRE(mode >= NITI_ROUND_NEAREST && mode <= NITI_ROUND_STOCHASTIC,
            "%s: unknown rounding mode %d (0 nearest, 1 pseudo_stochastic, 2 stochastic)", fn, mode);
    return NITI_OK;
}

/* ---- range --------------------------------------------------------------------------------------- */
/* max |x| as max(max x, -min x): two plain reductions, which vectorise. */
static uint64_t peak_s32(int64_t n, const int32_t *x) {
    int32_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        hi = x[i] > hi ? x[i] : hi;
        lo = x[i] < lo ? x[i] : lo;
    }
    uint64_t a = niti_magnitude(hi), b = niti_magnitude(lo);
    return a > b ? a : b;
}

static uint64_t peak_s64(int64_t n, const int64_t *x) {
    int64_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        hi = x[i] > hi ? x[i] : hi;
        lo = x[i] < lo ? x[i] : lo;
    }
    uint64_t a = niti_magnitude(hi), b = niti_magnitude(lo);
    return a > b ? a : b;
}

int niti_range_bits_s32(int64_t n, const int32_t *x, int *bits_out) {
    int st = check_n(__func__, n, x != NULL);
    if (st) return st;
    REQUIRE(bits_out, "%s: NULL output", __func__);
    *bits_out = niti_range_bits_of_peak(peak_s32(n, x));
    return NITI_OK;
}

int niti_range_bits_s64(int64_t n, const int64_t *x, int *bits_out) {
    int st = check_n(__func__, n, x != NULL);
    if (st) return st;
    REQUIRE(bits_out, "%s: NULL output", __func__);
    *bits_out = niti_range_bits_of_peak(peak_s64(n, x));
    return NITI_OK;
}

/* ---- shifts and requantization ------------------------------------------------------------------- */
int niti_round_shift_s64(int64_t n, const int64_t *x, int shift_bits, int mode, uint32_t seed, uint32_t step,
                         uint32_t tensor_id, int64_t *out) {
    int st = check_n(__func__, n, x && out);
    if (st || (st = check_mode(__func__, mode))) return st;
    REQUIRE(shift_bits >= 0, "%s: shift must be >= 0, got %d", __func__, shift_bits);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) out[i] = niti_round_shift(x[i], shift_bits, (niti_round_mode)mode, key, (uint32_t)i);
    return NITI_OK;
}

/* niti_saturate_elem(niti_round_shift(x, s, mode, key, index)) for int32 x and 1 <= s <= 31, in
 * 32-bit lanes (16 per AVX-512 vector instead of 8 int64): |x| <= 2**31 fits uint32, q + up <=
 * 2**30 + 1, and the same remainder tests as niti_arith.h. tests/test_c_kernels.py checks it
 * against nitisim.numerics at every shift. */
/* |niti_round_shift(x, s, ...)| for int32 x and 1 <= s <= 31: at most 2**30 + 1 */
static inline uint32_t round_shift32_mag(int32_t x, int s, niti_round_mode mode, uint32_t key, uint32_t index) {
    uint32_t mag = x < 0 ? 0u - (uint32_t)x : (uint32_t)x;
    uint32_t q = mag >> s, r = mag & ((1u << s) - 1u);
    uint32_t up;
    if (mode == NITI_ROUND_NEAREST) {
        up = r >= (1u << (s - 1));
    } else if (mode == NITI_ROUND_PSEUDO_STOCHASTIC) {
        int k = s / 2;
        up = (r >> k) > ((r & ((1u << k) - 1u)) << (s & 1));
    } else {
        up = r > (niti_hash_bits(key, index) >> (32 - s));
    }
    return q + up;
}

static inline int8_t requant32(int32_t x, int s, niti_round_mode mode, uint32_t key, uint32_t index) {
    uint32_t m = round_shift32_mag(x, s, mode, key, index);
    int32_t v = (int32_t)(m > NITI_ELEM_SAT ? NITI_ELEM_SAT : m);
    return (int8_t)(x < 0 ? -v : v);
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>

/* lowbias32 (niti_mix32) on 16 lanes: the multiplies wrap mod 2**32 as the scalar ones do. */
static inline __m512i mix32_x16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x7FEB352Du));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846CA68Bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* round_shift32_mag on 16 lanes (elements i .. i+15), 1 <= s <= 31: the same magnitude, remainder
 * and round-up tests in unsigned 32-bit lanes (|INT32_MIN| = 2**31 is exact there). The compiler
 * does not vectorise the scalar loops that use it (per-mode branches, the int8 narrowing), which
 * left them at about 2 cycles an element, compute-bound. */
static inline __m512i round_shift32_mag_x16(__m512i x, int s, int mode, uint32_t key, uint32_t i) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i mag = _mm512_abs_epi32(x);
    __m512i q = _mm512_srl_epi32(mag, _mm_cvtsi32_si128(s));
    __m512i r = _mm512_and_si512(mag, _mm512_set1_epi32((int)((1u << s) - 1u)));
    __mmask16 up;
    if (mode == NITI_ROUND_NEAREST) {
        up = _mm512_cmpge_epu32_mask(r, _mm512_set1_epi32((int)(1u << (s - 1))));
    } else if (mode == NITI_ROUND_PSEUDO_STOCHASTIC) {
        int k = s / 2;
        __m512i hi = _mm512_srl_epi32(r, _mm_cvtsi32_si128(k));
        __m512i lo = _mm512_and_si512(r, _mm512_set1_epi32((int)((1u << k) - 1u)));
        lo = _mm512_sll_epi32(lo, _mm_cvtsi32_si128(s & 1));
        up = _mm512_cmpgt_epu32_mask(hi, lo);
    } else {
        __m512i index = _mm512_add_epi32(_mm512_set1_epi32((int)i), lanes);
        __m512i bits = mix32_x16(_mm512_xor_si512(_mm512_set1_epi32((int)key), index));
        up = _mm512_cmpgt_epu32_mask(r, _mm512_srl_epi32(bits, _mm_cvtsi32_si128(32 - s)));
    }
    return _mm512_mask_add_epi32(q, up, q, _mm512_set1_epi32(1));
}

/* magnitude m with the sign of x, lane by lane */
static inline __m512i with_sign_of_x16(__m512i m, __m512i x) {
    return _mm512_mask_sub_epi32(m, _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512()), _mm512_setzero_si512(), m);
}

static inline __m512i clamp_x16(__m512i v, int32_t bound) {
    return _mm512_max_epi32(_mm512_min_epi32(v, _mm512_set1_epi32(bound)), _mm512_set1_epi32(-bound));
}

/* requant32 on 16 lanes: the rounded magnitude saturated to 127, then the sign */
static inline __m128i requant32_x16(__m512i x, int s, int mode, uint32_t key, uint32_t i) {
    __m512i m = _mm512_min_epu32(round_shift32_mag_x16(x, s, mode, key, i), _mm512_set1_epi32(NITI_ELEM_SAT));
    return _mm512_cvtepi32_epi8(with_sign_of_x16(m, x));
}

/* update_step32 on 16 lanes */
static inline __m512i update_step_x16(__m512i g, int s, int32_t clamp) {
    if (s < 1) return clamp_x16(g, clamp);
    return with_sign_of_x16(round_shift32_mag_x16(g, s, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u), g);
}

/* out[i0:i1] = requantized acc with shift s >= 1, 16 elements a vector; returns where it stopped */
static int64_t requant_range_x16(const int32_t *acc, int8_t *out, int64_t i0, int64_t i1, int64_t index0, int s,
                                 int mode, uint32_t key) {
    int64_t i = i0;
    for (; i + 16 <= i1; i += 16)
        _mm_storeu_si128((__m128i *)(out + i),
                         requant32_x16(_mm512_loadu_si512(acc + i), s, mode, key, (uint32_t)(index0 + i)));
    return i;
}
#endif

/* out[i0:i1] = requantized acc with shift s (s <= 0: saturate only); element i draws its stochastic
 * rounding at hash index index0 + i, its place in the whole tensor */
static void requant_span(const int32_t *acc, int8_t *out, int64_t i0, int64_t i1, int64_t index0, int s, int mode,
                         uint32_t key) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if (s > 0) i0 = requant_range_x16(acc, out, i0, i1, index0, s, mode, key);
#endif
    /* one loop per mode, so the mode is a constant inside (the tail, and builds without AVX-512) */
    if (s <= 0) {
        for (int64_t i = i0; i < i1; i++) out[i] = niti_saturate_elem(acc[i]);
    } else if (mode == NITI_ROUND_NEAREST) {
        for (int64_t i = i0; i < i1; i++) out[i] = requant32(acc[i], s, NITI_ROUND_NEAREST, key, (uint32_t)(index0 + i));
    } else if (mode == NITI_ROUND_PSEUDO_STOCHASTIC) {
        for (int64_t i = i0; i < i1; i++)
            out[i] = requant32(acc[i], s, NITI_ROUND_PSEUDO_STOCHASTIC, key, (uint32_t)(index0 + i));
    } else {
        for (int64_t i = i0; i < i1; i++) out[i] = requant32(acc[i], s, NITI_ROUND_STOCHASTIC, key, (uint32_t)(index0 + i));
    }
}

static void requant_range(const int32_t *acc, int8_t *out, int64_t i0, int64_t i1, int s, int mode, uint32_t key) {
    requant_span(acc, out, i0, i1, 0, s, mode, key);
}

void niti_requant_block(const int32_t *acc, int8_t *out, int64_t n, int64_t index0, int s, int mode, uint32_t key) {
    requant_span(acc, out, 0, n, index0, s, mode, key);
}

int niti_check_round_mode(const char *fn, int mode) { return check_mode(fn, mode); }

static int requant_shift(int32_t hi, int32_t lo) {
    uint64_t a = niti_magnitude(hi), b = niti_magnitude(lo);
    int s = niti_range_bits_of_peak(a > b ? a : b) - 7; /* never a left shift; b <= 31 so s <= 24 */
    return s > 0 ? s : 0;
}

int niti_requant_shift(int32_t hi, int32_t lo) { return requant_shift(hi, lo); }

/* Accumulators larger than L2 are read once in the common case: block by block (L2-sized), the
 * block's range, then the block requantized with the shift of the range seen so far (by this
 * thread). The final shift is known only at the end; blocks done with a different (smaller)
 * shift are redone, usually the first few. The result is the two-pass result exactly. */
#define REQUANT_BLOCK 16384 /* elements: 64 KiB of int32 */

int niti_requantize_s32(int64_t n, const int32_t *acc, int mode, uint32_t seed, uint32_t step, uint32_t tensor_id,
                        int8_t *out, int *shift_out) {
    int st = check_n(__func__, n, acc && out);
    if (st || (st = check_mode(__func__, mode))) return st;
    REQUIRE(shift_out, "%s: NULL shift output", __func__);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    int64_t blocks = (n + REQUANT_BLOCK - 1) / REQUANT_BLOCK;
    int8_t *used = blocks > 16 ? malloc((size_t)blocks) : NULL; /* the shift each block was done with */
    int32_t hi = 0, lo = 0;
#pragma omp parallel if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    {
        if (used) {
            int32_t run_hi = 0, run_lo = 0; /* this thread's range so far (static schedule: in order) */
#pragma omp for schedule(static) reduction(max : hi) reduction(min : lo)
            for (int64_t blk = 0; blk < blocks; blk++) {
                int64_t i0 = blk * REQUANT_BLOCK, i1 = niti_min64(n, i0 + REQUANT_BLOCK);
                int32_t bh = 0, bl = 0;
                for (int64_t i = i0; i < i1; i++) {
                    bh = acc[i] > bh ? acc[i] : bh;
                    bl = acc[i] < bl ? acc[i] : bl;
                }
                run_hi = bh > run_hi ? bh : run_hi;
                run_lo = bl < run_lo ? bl : run_lo;
                hi = run_hi > hi ? run_hi : hi;
                lo = run_lo < lo ? run_lo : lo;
                used[blk] = (int8_t)requant_shift(run_hi, run_lo);
                requant_range(acc, out, i0, i1, used[blk], mode, key);
            }
            /* the loop's barrier: hi and lo are final */
            int s = requant_shift(hi, lo);
#pragma omp for schedule(dynamic, 4)
            for (int64_t blk = 0; blk < blocks; blk++)
                if (used[blk] != s)
                    requant_range(acc, out, blk * REQUANT_BLOCK, niti_min64(n, (blk + 1) * REQUANT_BLOCK), s, mode, key);
        } else { /* small (or no memory for the block table): the range, then the shift */
#pragma omp for reduction(max : hi) reduction(min : lo)
            for (int64_t i = 0; i < n; i++) {
                hi = acc[i] > hi ? acc[i] : hi;
                lo = acc[i] < lo ? acc[i] : lo;
            }
            int s = requant_shift(hi, lo);
            int64_t per = (n + omp_threads_in_team() - 1) / omp_threads_in_team(), me = omp_thread_in_team();
            requant_range(acc, out, niti_min64(n, me * per), niti_min64(n, (me + 1) * per), s, mode, key);
        }
    }
    free(used);
    *shift_out = requant_shift(hi, lo);
    return NITI_OK;
}

int niti_narrow_s64_s32(int64_t n, const int64_t *x, int32_t *out) {
    int st = check_n(__func__, n, x && out);
    if (st) return st;
    int64_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        hi = x[i] > hi ? x[i] : hi;
        lo = x[i] < lo ? x[i] : lo;
    }
    if (hi > INT32_MAX || lo < INT32_MIN)
        return niti_fail(NITI_E_OVERFLOW, "int32 accumulator overflow (range %lld..%lld)", (long long)lo, (long long)hi);
    PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) out[i] = (int32_t)x[i];
    return NITI_OK;
}

/* ---- probes: calibration's cache eviction (niti_api.h) ---------------------------------------- */
int niti_rewrite_parallel(int64_t n, int8_t *data) {
    int st = check_n(__func__, n, data != NULL);
    if (st) return st;
    /* x ^ zero with a zero the compiler cannot see: every line really loaded and stored */
    const uint8_t zero = (uint8_t)((uint64_t)n >> 63);
#pragma omp parallel for schedule(static) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) data[i] = (int8_t)((uint8_t)data[i] ^ zero);
    return NITI_OK;
}

/* ---- ReLU ------------------------------------------------------------------------------------------ */
int niti_relu_forward(int64_t n, const int8_t *x, int8_t *y) {
    int st = check_n(__func__, n, x && y);
    if (st) return st;
    LIGHT_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
    return NITI_OK;
}

int niti_relu_backward(int64_t n, const int8_t *x, const int8_t *dy, int8_t *dx) {
    int st = check_n(__func__, n, x && dy && dx);
    if (st) return st;
    LIGHT_PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : 0;
    return NITI_OK;
}

/* ---- max pooling ----------------------------------------------------------------------------------- */
static int pool_args(const char *fn, int64_t batch, int64_t in_h, int64_t in_w, int64_t ch, int64_t k_h, int64_t k_w,
                     int64_t s_h, int64_t s_w, int64_t p_h, int64_t p_w, int arrays_ok) {
    REQUIRE(batch >= 0 && in_h >= 1 && in_w >= 1 && ch >= 1, "%s: sizes must be positive (batch=%lld %lldx%lldx%lld)",
            fn, (long long)batch, (long long)in_h, (long long)in_w, (long long)ch);
    /* padding < kernel: every window then holds at least one real input, so its maximum is one */
    REQUIRE(p_h >= 0 && p_w >= 0 && p_h < k_h && p_w < k_w,
            "%s: need 0 <= padding < kernel (padding %lldx%lld kernel %lldx%lld)", fn, (long long)p_h, (long long)p_w,
            (long long)k_h, (long long)k_w);
    REQUIRE(k_h >= 1 && k_w >= 1 && s_h >= 1 && s_w >= 1 && k_h <= in_h + 2 * p_h && k_w <= in_w + 2 * p_w,
            "%s: need 1 <= kernel <= padded input and stride >= 1 (kernel %lldx%lld stride %lldx%lld input %lldx%lld "
            "padding %lldx%lld)", fn, (long long)k_h, (long long)k_w, (long long)s_h, (long long)s_w, (long long)in_h,
            (long long)in_w, (long long)p_h, (long long)p_w);
    REQUIRE(arrays_ok || batch == 0, "%s: NULL array", fn);
    return NITI_OK;
}

/* The real positions [*lo, *hi) of a window of k taps starting at `start` (negative in the padding)
 * on an axis of `size` inputs. The padding is -infinity and never a maximum, so a window is its real
 * part: the same maximum, and the same first maximum in row-major window order. */
static inline void pool_span(int64_t start, int64_t k, int64_t size, int64_t *lo, int64_t *hi) {
    *lo = start < 0 ? 0 : start;
    *hi = start + k > size ? size : start + k;
}

/* Channel vectors of one window: 64 channels per AVX-512 register (masked at the tail), else one
 * channel at a time. The windows' loops are written once, over these helpers. */
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#define POOL_VEC 64
static inline __mmask64 pool_mask(int64_t n) { return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1); }

/* y = max over the window's taps (ch channels from c0) */
static inline void pool_max_vec(const int8_t *x0, int64_t k_h, int64_t k_w, int64_t row, int64_t ch, int8_t *y) {
    for (int64_t c = 0; c < ch; c += POOL_VEC) {
        __mmask64 m = pool_mask(ch - c);
        __m512i best = _mm512_maskz_loadu_epi8(m, x0 + c);
        for (int64_t ky = 0; ky < k_h; ky++)
            for (int64_t kx = 0; kx < k_w; kx++)
                best = _mm512_max_epi8(best, _mm512_maskz_loadu_epi8(m, x0 + ky * row + kx * ch + c));
        _mm512_mask_storeu_epi8(y + c, m, best);
    }
}

/* disjoint window: dx at each tap = dy where the tap is the first maximum, else 0 (all taps written) */
static inline void pool_route_vec(const int8_t *x0, const int8_t *dyc, int64_t k_h, int64_t k_w, int64_t row,
                                  int64_t ch, int8_t *dx0) {
    for (int64_t c = 0; c < ch; c += POOL_VEC) {
        __mmask64 m = pool_mask(ch - c);
        __m512i best = _mm512_maskz_loadu_epi8(m, x0 + c);
        for (int64_t ky = 0; ky < k_h; ky++)
            for (int64_t kx = 0; kx < k_w; kx++)
                best = _mm512_max_epi8(best, _mm512_maskz_loadu_epi8(m, x0 + ky * row + kx * ch + c));
        __m512i d = _mm512_maskz_loadu_epi8(m, dyc + c);
        __mmask64 left = m; /* channels whose maximum is not yet routed */
        for (int64_t ky = 0; ky < k_h; ky++)
            for (int64_t kx = 0; kx < k_w; kx++) {
                int64_t at = ky * row + kx * ch + c;
                __mmask64 hit = _mm512_mask_cmpeq_epi8_mask(left, _mm512_maskz_loadu_epi8(m, x0 + at), best);
                _mm512_mask_storeu_epi8(dx0 + at, m, _mm512_maskz_mov_epi8(hit, d));
                left &= ~hit;
            }
    }
}
#else
static inline void pool_max_vec(const int8_t *x0, int64_t k_h, int64_t k_w, int64_t row, int64_t ch, int8_t *y) {
    memcpy(y, x0, (size_t)ch);
    for (int64_t ky = 0; ky < k_h; ky++)
        for (int64_t kx = 0; kx < k_w; kx++) {
            const int8_t *xp = x0 + ky * row + kx * ch;
            for (int64_t c = 0; c < ch; c++) y[c] = xp[c] > y[c] ? xp[c] : y[c];
        }
}

static inline void pool_route_vec(const int8_t *x0, const int8_t *dyc, int64_t k_h, int64_t k_w, int64_t row,
                                  int64_t ch, int8_t *dx0) {
    for (int64_t c = 0; c < ch; c++) {
        int64_t best_at = c;
        for (int64_t ky = 0; ky < k_h; ky++)
            for (int64_t kx = 0; kx < k_w; kx++) {
                int64_t at = ky * row + kx * ch + c;
                dx0[at] = 0;
                if (x0[at] > x0[best_at]) best_at = at;
            }
        dx0[best_at] = dyc[c];
    }
}
#endif

int niti_maxpool_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t ch, int64_t k_h, int64_t k_w,
                         int64_t s_h, int64_t s_w, int64_t p_h, int64_t p_w, const int8_t *x, int8_t *y) {
    int st = pool_args(__func__, batch, in_h, in_w, ch, k_h, k_w, s_h, s_w, p_h, p_w, x && y);
    if (st) return st;
    int64_t out_h = niti_conv_out(in_h, k_h, s_h, p_h), out_w = niti_conv_out(in_w, k_w, s_w, p_w);
    int64_t rows = batch * out_h, row = in_w * ch;
    LIGHT_PARALLEL_FOR(batch * in_h * row)
    for (int64_t r = 0; r < rows; r++) { /* one output row */
        int64_t n = r / out_h, oy = r % out_h, y0, y1;
        pool_span(oy * s_h - p_h, k_h, in_h, &y0, &y1);
        const int8_t *x0 = x + (n * in_h + y0) * row;
        for (int64_t ox = 0; ox < out_w; ox++) {
            int64_t x_lo, x_hi;
            pool_span(ox * s_w - p_w, k_w, in_w, &x_lo, &x_hi);
            pool_max_vec(x0 + x_lo * ch, y1 - y0, x_hi - x_lo, row, ch, y + (r * out_w + ox) * ch);
        }
    }
    return NITI_OK;
}

/* Index of the first maximum of a window in row-major window order (strict >), for channel c. */
static inline int64_t first_max_at(const int8_t *x, int64_t base, int64_t k_h, int64_t k_w, int64_t in_w, int64_t ch) {
    int64_t best_at = base;
    for (int64_t ky = 0; ky < k_h; ky++)
        for (int64_t kx = 0; kx < k_w; kx++) {
            int64_t at = base + (ky * in_w + kx) * ch;
            if (x[at] > x[best_at]) best_at = at;
        }
    return best_at;
}

int niti_maxpool_backward(int64_t batch, int64_t in_h, int64_t in_w, int64_t ch, int64_t k_h, int64_t k_w,
                          int64_t s_h, int64_t s_w, int64_t p_h, int64_t p_w, const int8_t *x, const int8_t *dy,
                          int8_t *dx) {
    int st = pool_args(__func__, batch, in_h, in_w, ch, k_h, k_w, s_h, s_w, p_h, p_w, x && dy && dx);
    if (st) return st;
    int64_t out_h = niti_conv_out(in_h, k_h, s_h, p_h), out_w = niti_conv_out(in_w, k_w, s_w, p_w);
    int64_t image = in_h * in_w * ch, row = in_w * ch;
    if (s_h >= k_h && s_w >= k_w && p_h == 0 && p_w == 0) { /* disjoint whole windows: at most one error each */
        /* Output row r's windows write every tap; what no window covers (the gaps of stride >
         * kernel, the rows and columns past the last window) is zeroed with it. */
        int64_t rows = batch * out_h;
        LIGHT_PARALLEL_FOR(batch * image)
        for (int64_t r = 0; r < rows; r++) {
            int64_t n = r / out_h, oy = r % out_h;
            int64_t y_end = oy + 1 < out_h ? (oy + 1) * s_h : in_h; /* input rows owned by this output row */
            int8_t *band = dx + (n * in_h + oy * s_h) * row;
            const int8_t *x0 = x + (n * in_h + oy * s_h) * row;
            if (s_h > k_h || s_w > k_w || out_w * s_w < in_w || y_end > oy * s_h + k_h)
                memset(band, 0, (size_t)((y_end - oy * s_h) * row));
            for (int64_t ox = 0; ox < out_w; ox++)
                pool_route_vec(x0 + ox * s_w * ch, dy + (r * out_w + ox) * ch, k_h, k_w, row, ch, band + ox * s_w * ch);
        }
        return NITI_OK;
    }
    memset(dx, 0, (size_t)(batch * image));
    /* Overlapping (or padded) windows can route several errors to one input: sum in int32, then saturate to
     * int8 (as the numpy reference). One image per iteration, so threads never share an input. */
    int status = NITI_OK;
    PARALLEL_FOR(batch * image)
    for (int64_t n = 0; n < batch; n++) {
        int32_t *sum = calloc((size_t)image, sizeof(int32_t));
        if (!sum) {
#pragma omp atomic write
            status = NITI_E_NOMEM;
            continue;
        }
        for (int64_t oy = 0; oy < out_h; oy++)
            for (int64_t ox = 0; ox < out_w; ox++) {
                int64_t y0, y1, x0, x1;
                pool_span(oy * s_h - p_h, k_h, in_h, &y0, &y1);
                pool_span(ox * s_w - p_w, k_w, in_w, &x0, &x1);
                int64_t base = (y0 * in_w + x0) * ch;
                const int8_t *dyc = dy + ((n * out_h + oy) * out_w + ox) * ch;
                for (int64_t c = 0; c < ch; c++)
                    sum[first_max_at(x + n * image, base + c, y1 - y0, x1 - x0, in_w, ch)] += dyc[c];
            }
        for (int64_t i = 0; i < image; i++) dx[n * image + i] = niti_saturate_elem(sum[i]);
        free(sum);
    }
    if (status != NITI_OK) return niti_fail(status, "%s: out of memory", __func__);
    return NITI_OK;
}

/* ---- dropout ---------------------------------------------------------------------------------------- */
int niti_dropout_mask(int64_t features, int keep_shift, uint32_t seed, uint32_t step, uint32_t tensor_id,
                      uint8_t *keep) {
    int st = check_n(__func__, features, keep != NULL);
    if (st) return st;
    REQUIRE(keep_shift >= 1 && keep_shift <= 31, "%s: keep_shift must be 1..31, got %d", __func__, keep_shift);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    for (int64_t f = 0; f < features; f++) keep[f] = niti_draw_below_pow2(key, (uint32_t)f, keep_shift) == 0;
    return NITI_OK;
}

int niti_dropout_apply(int64_t rows, int64_t features, const int8_t *x, const uint8_t *keep, int8_t *y) {
    REQUIRE(rows >= 0 && features >= 0, "%s: sizes must be >= 0 (rows=%lld features=%lld)", __func__,
            (long long)rows, (long long)features);
    REQUIRE(rows * features == 0 || (x && keep && y), "%s: NULL array", __func__);
    LIGHT_PARALLEL_FOR(rows * features)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < features; f++) y[r * features + f] = keep[f] ? x[r * features + f] : 0;
    return NITI_OK;
}

/* ---- loss gradient ------------------------------------------------------------------------------------ */
int niti_loss_grad(int64_t batch, int64_t classes, const int8_t *logits, int exp, const int32_t *labels, int variant,
                   uint32_t seed, uint32_t step, uint32_t tensor_id, int8_t *err, int64_t *p) {
    REQUIRE(batch >= 0 && classes >= 1, "%s: need batch >= 0 and classes >= 1 (batch=%lld classes=%lld)", __func__,
            (long long)batch, (long long)classes);
    REQUIRE(batch == 0 || (logits && labels && err), "%s: NULL array", __func__);
    REQUIRE(variant == NITI_LOSS_NITI || variant == NITI_LOSS_FINE, "%s: unknown variant %d (0 niti, 1 fine)",
            __func__, variant);
    if (exp > NITI_LOSS_MAX_EXP)
        return niti_fail(NITI_E_OVERFLOW, "%s: logit exponent %d above %d: the softmax's int64 intermediates would "
                         "overflow", __func__, exp, NITI_LOSS_MAX_EXP);
    for (int64_t r = 0; r < batch; r++)
        REQUIRE(labels[r] >= 0 && labels[r] < classes, "%s: label %d of row %lld outside [0, %lld)", __func__,
                (int)labels[r], (long long)r, (long long)classes);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    PARALLEL_FOR(batch * classes)
    for (int64_t r = 0; r < batch; r++)
        niti_loss_grad_row(logits + r * classes, classes, exp, labels[r], (niti_loss_variant)variant, key,
                           (uint32_t)(r * classes), err + r * classes, p ? p + r * classes : NULL);
    return NITI_OK;
}

/* ---- weight updates ----------------------------------------------------------------------------------- */
/* The gradient accumulator is int32 or int64 (`wide`); the per-element branch is loop-invariant. */
static inline int64_t load_g(const void *g, int wide, int64_t i) {
    return wide ? ((const int64_t *)g)[i] : ((const int32_t *)g)[i];
}

static int grad_range_bits(int64_t n, const void *g, int wide) {
    return niti_range_bits_of_peak(wide ? peak_s64(n, g) : peak_s32(n, g));
}

/* b <= 64, so mu outside [-64, 64] acts like its end point (s >= 64 zeroes, s < 1 keeps g). */
static int clamp_mu(int64_t mu) { return mu < -64 ? -64 : (mu > 64 ? 64 : (int)mu); }

/* The signed step of the int32 update paths: PSR(g, s) for 1 <= s <= 31 (|step| <= 2**30 + 1), else
 * (s < 1) g itself clamped to +-clamp, past which the result saturates the same. */
static inline int32_t update_step32(int32_t g, int s, int32_t clamp) {
    if (s < 1) return g > clamp ? clamp : (g < -clamp ? -clamp : g);
    int32_t v = (int32_t)round_shift32_mag(g, s, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u);
    return g < 0 ? -v : v;
}

static int update_plain(const char *fn, int64_t n, const int8_t *w, const void *g, int wide, int mu, int8_t *w_out) {
    int st = check_n(fn, n, w && g && w_out);
    if (st) return st;
    int b = grad_range_bits(n, g, wide), m = clamp_mu(mu), s = b - m;
    if (!wide && b > 0 && s <= 31) { /* int32 accumulator: the same step in 32-bit lanes */
        /* s < 1: step = g; |w| <= 128, so g beyond +-512 saturates exactly as g itself.
         * 1 <= s <= 31: step = PSR(g, s), |step| <= 2**30 + 1, so w - step stays inside int32. */
        const int32_t *g32 = g;
        int64_t vec_end = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        vec_end = n / 16 * 16;
        PARALLEL_FOR(n)
        for (int64_t i = 0; i < vec_end; i += 16) {
            __m512i step = update_step_x16(_mm512_loadu_si512(g32 + i), s, 512);
            __m512i v = _mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + i))), step);
            _mm_storeu_si128((__m128i *)(w_out + i), _mm512_cvtepi32_epi8(clamp_x16(v, NITI_ELEM_SAT)));
        }
#endif
        PARALLEL_FOR(n - vec_end)
        for (int64_t i = vec_end; i < n; i++) w_out[i] = niti_saturate_elem((int32_t)w[i] - update_step32(g32[i], s, 512));
        return NITI_OK;
    }
    PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) w_out[i] = niti_saturate_elem(niti_wrap_sub(w[i], niti_mu_step(load_g(g, wide, i), b, m)));
    return NITI_OK;
}

static int update_momentum(const char *fn, int64_t n, const int8_t *w, const void *g, int wide, const int32_t *v,
                           int mu, int8_t *w_out, int32_t *v_out) {
    int st = check_n(fn, n, w && g && v && w_out && v_out);
    if (st) return st;
    int b = grad_range_bits(n, g, wide), m = clamp_mu(mu);
    /* pass 1: the new velocity must fit int32; nothing is written if it does not */
    int64_t hi = 0, lo = 0;
#pragma omp parallel for reduction(max : hi) reduction(min : lo) if (n > NITI_PARALLEL_MIN_ELEMS) num_threads(niti_threads())
    for (int64_t i = 0; i < n; i++) {
        int64_t vn = niti_momentum_velocity(v[i], niti_mu_step(load_g(g, wide, i), b, m));
        hi = vn > hi ? vn : hi;
        lo = vn < lo ? vn : lo;
    }
    if (hi > INT32_MAX || lo < INT32_MIN)
        return niti_fail(NITI_E_OVERFLOW, "momentum velocity: int32 accumulator overflow (range %lld..%lld)",
                         (long long)lo, (long long)hi);
    PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) {
        int64_t vn = niti_momentum_velocity(v[i], niti_mu_step(load_g(g, wide, i), b, m));
        int64_t step = niti_round_shift(vn, NITI_MOMENTUM_SHIFT, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u);
        w_out[i] = niti_saturate_elem(niti_wrap_sub(w[i], step));
        v_out[i] = (int32_t)vn;
    }
    return NITI_OK;
}

/* The shadow value sh (int32) saturated to int16 range, and its int8 weight PSR(sh, 8), at i. */
static inline void shadow16_store(int64_t i, int32_t sh, int8_t *restrict w_out, int16_t *restrict shadow_out) {
    sh = sh > NITI_SHADOW_SAT ? NITI_SHADOW_SAT : (sh < -NITI_SHADOW_SAT ? -NITI_SHADOW_SAT : sh);
    int32_t wv = (int32_t)round_shift32_mag(sh, NITI_SHADOW_FRAC_BITS, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u);
    w_out[i] = niti_saturate_elem(sh < 0 ? -wv : wv);
    shadow_out[i] = (int16_t)sh;
}

static int update_shadow16(const char *fn, int64_t n, const int16_t *shadow, const void *g, int wide, int mu,
                           int8_t *w_out, int16_t *shadow_out) {
    int st = check_n(fn, n, shadow && g && w_out && shadow_out);
    if (st) return st;
    /* steps of up to 2**(mu + 8) shadow LSBs: the plain rule's size, keeping sub-LSB steps */
    int b = grad_range_bits(n, g, wide), m = clamp_mu((int64_t)mu + NITI_SHADOW_FRAC_BITS), s = b - m;
    if (!wide && b > 0 && s <= 31) { /* int32 accumulator: the same arithmetic in 32-bit lanes, which vectorise */
        const int32_t *restrict g32 = g;
        const int16_t *restrict sh_in = shadow;
        int8_t *restrict w8 = w_out;
        int16_t *restrict sh_out = shadow_out;
        /* s < 1: step = g; |shadow - g| beyond the int16 range saturates, so |g| past 2**16 is clamped first.
         * 1 <= s <= 31: step = PSR(g, s), |step| <= 2**30 + 1, so shadow - step stays inside int32. */
        int64_t vec_end = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
        vec_end = n / 16 * 16;
        PARALLEL_FOR(n)
        for (int64_t i = 0; i < vec_end; i += 16) {
            __m512i step = update_step_x16(_mm512_loadu_si512(g32 + i), s, 1 << 16);
            __m512i sh = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(sh_in + i)));
            sh = clamp_x16(_mm512_sub_epi32(sh, step), NITI_SHADOW_SAT);
            /* the weight: PSR(sh, 8) saturated to +-127, as requantize rounds */
            _mm_storeu_si128((__m128i *)(w8 + i), requant32_x16(sh, NITI_SHADOW_FRAC_BITS, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u));
            _mm256_storeu_si256((__m256i *)(sh_out + i), _mm512_cvtepi32_epi16(sh));
        }
#endif
        PARALLEL_FOR(n - vec_end)
        for (int64_t i = vec_end; i < n; i++)
            shadow16_store(i, (int32_t)sh_in[i] - update_step32(g32[i], s, 1 << 16), w8, sh_out);
        return NITI_OK;
    }
    PARALLEL_FOR(n)
    for (int64_t i = 0; i < n; i++) {
        int64_t sh = niti_saturate_shadow(niti_wrap_sub(shadow[i], niti_mu_step(load_g(g, wide, i), b, m)));
        w_out[i] = niti_saturate_elem(niti_round_shift(sh, NITI_SHADOW_FRAC_BITS, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u));
        shadow_out[i] = (int16_t)sh;
    }
    return NITI_OK;
}

int niti_update_plain_s32(int64_t n, const int8_t *w, const int32_t *g_acc, int mu, int8_t *w_out) {
    return update_plain(__func__, n, w, g_acc, 0, mu, w_out);
}
int niti_update_plain_s64(int64_t n, const int8_t *w, const int64_t *g_acc, int mu, int8_t *w_out) {
    return update_plain(__func__, n, w, g_acc, 1, mu, w_out);
}
int niti_update_momentum_s32(int64_t n, const int8_t *w, const int32_t *g_acc, const int32_t *velocity, int mu,
                             int8_t *w_out, int32_t *velocity_out) {
    return update_momentum(__func__, n, w, g_acc, 0, velocity, mu, w_out, velocity_out);
}
int niti_update_momentum_s64(int64_t n, const int8_t *w, const int64_t *g_acc, const int32_t *velocity, int mu,
                             int8_t *w_out, int32_t *velocity_out) {
    return update_momentum(__func__, n, w, g_acc, 1, velocity, mu, w_out, velocity_out);
}
int niti_update_shadow16_s32(int64_t n, const int16_t *shadow, const int32_t *g_acc, int mu, int8_t *w_out,
                             int16_t *shadow_out) {
    return update_shadow16(__func__, n, shadow, g_acc, 0, mu, w_out, shadow_out);
}
int niti_update_shadow16_s64(int64_t n, const int16_t *shadow, const int64_t *g_acc, int mu, int8_t *w_out,
                             int16_t *shadow_out) {
    return update_shadow16(__func__, n, shadow, g_acc, 1, mu, w_out, shadow_out);
}
