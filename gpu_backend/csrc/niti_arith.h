/* niti_arith.h: the integer arithmetic of NITI, shared by the CPU (C11) and CUDA builds.
 *
 * Mirrors nitisim/contract/numerics.py bit-exactly: the counter hash (lowbias32), sign-magnitude shifts with
 * the three rounding modes, int8 saturation, the integer range b(x), the integer loss-gradient row
 * and the update-rule steps. Every function is `static inline` and decorated with NITI_HD so the
 * same code compiles for host and device (CUTLASS style). Plain C99 arithmetic: no floats, no
 * libc calls, and no signed overflow (wrapping operations go through uint32_t/uint64_t, which is
 * also what numpy's int64 arithmetic does).
 */
#ifndef NITI_ARITH_H
#define NITI_ARITH_H

#include <stdint.h>

#include "niti_constants.h"

#ifdef __CUDACC__
#define NITI_HD __host__ __device__
#else
#define NITI_HD
#endif

/* ---- named types and saturation --------------------------------------------------------------- */
typedef int8_t niti_elem_t;    /* activation / weight / error mantissa, always in [-127, 127] */
typedef int32_t niti_acc_t;    /* GEMM accumulator of int8 x int8 products */
typedef int64_t niti_wide_t;   /* long reductions (weight gradients), loss intermediates */
typedef int16_t niti_shadow_t; /* 16-bit shadow weight: int8 weight << 8 plus 8 fraction bits */

#define NITI_ELEM_SAT 127 /* saturation bound of niti_elem_t: -128 is never produced */
#define NITI_SHADOW_FRAC_BITS 8
#define NITI_SHADOW_SAT (NITI_ELEM_SAT << NITI_SHADOW_FRAC_BITS) /* PSR(shadow, 8) stays in int8 */
#define NITI_MOMENTUM_SHIFT 3 /* beta = 1 - 2**-3 */

/* The one test of whether a reduction of K products may be accumulated in int32 (NITI_MAX_K_S32:
 * niti_constants.h). Every kernel that accumulates in int32 (GEMM engines, direct, AMX grid and
 * scatter convs, the CUDA engines) takes a reduction only when this holds; a longer one is accumulated exactly in int64 and narrowed with a
 * check of every value, so an output outside int32 is an overflow error exactly where the numpy
 * reference's check_int32 raises, and never a wrapped value. */
NITI_HD static inline int niti_k_fits_s32(int64_t K) { return K <= NITI_MAX_K_S32; }

/* Output extent of a convolution or pooling window over `size` inputs: (size + 2 pad - k) / s + 1
 * (pooling: pad 0). The one C copy of nitisim.contract.models.conv_out. C division truncates; it
 * equals Python's floor for k <= size + 2 pad, and the shape checks refuse a larger kernel. */
NITI_HD static inline int64_t niti_conv_out(int64_t size, int64_t kernel, int64_t stride, int64_t pad) {
    return (size + 2 * pad - kernel) / stride + 1;
}

/* Rounding modes, in the order of nitisim.numerics.ROUNDING_MODES. */
typedef enum {
    NITI_ROUND_NEAREST = 0,           /* half away from zero */
    NITI_ROUND_PSEUDO_STOCHASTIC = 1, /* NITI's PSR: top ceil(s/2) remainder bits vs the rest */
    NITI_ROUND_STOCHASTIC = 2         /* up = r > R, R uniform in [0, 2**s) from the counter hash */
} niti_round_mode;

/* Loss variants, in the order of nitisim.numerics.LOSS_VARIANTS. */
typedef enum { NITI_LOSS_NITI = 0, NITI_LOSS_FINE = 1 } niti_loss_variant;

/* ---- counter-based random source ----------------------------------------------------------------- */
/* lowbias32: a bijection on uint32; uint32_t multiplication wraps mod 2**32 like numpy's uint32. */
NITI_HD static inline uint32_t niti_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* Per-(seed, step, tensor) key: mix32(mix32(mix32(seed) ^ step) ^ tensor_id). */
NITI_HD static inline uint32_t niti_hash_key(uint32_t seed, uint32_t step, uint32_t tensor_id) {
    return niti_mix32(niti_mix32(niti_mix32(seed) ^ step) ^ tensor_id);
}

/* 32 random bits of element `index` (the flat row-major index, taken mod 2**32 as numpy's uint32). */
NITI_HD static inline uint32_t niti_hash_bits(uint32_t key, uint32_t index) {
    return niti_mix32(key ^ index);
}

/* R uniform in [0, 2**s): the top s bits of the element's hash, 1 <= s <= 31. */
NITI_HD static inline uint32_t niti_draw_below_pow2(uint32_t key, uint32_t index, int s) {
    return niti_hash_bits(key, index) >> (32 - s);
}

/* ---- integer range and saturation -------------------------------------------------------------- */
/* |x| as uint64: exact for every int64 including INT64_MIN. */
NITI_HD static inline uint64_t niti_magnitude(int64_t x) {
    return x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
}

/* b = 0 if peak == 0 else bit_length(peak - 1), i.e. ceil(log2(peak)); integer ops only. */
NITI_HD static inline int niti_range_bits_of_peak(uint64_t peak) {
    if (peak <= 1) return 0; /* bit_length(0) == 0 */
#ifdef __CUDA_ARCH__
    return 64 - __clzll((long long)(peak - 1));
#else
    return 64 - __builtin_clzll(peak - 1);
#endif
}

/* clamp to [-127, 127]: the int8 value -128 never appears. */
NITI_HD static inline niti_elem_t niti_saturate_elem(int64_t x) {
    return (niti_elem_t)(x > NITI_ELEM_SAT ? NITI_ELEM_SAT : (x < -NITI_ELEM_SAT ? -NITI_ELEM_SAT : x));
}

NITI_HD static inline niti_shadow_t niti_saturate_shadow(int64_t x) {
    return (niti_shadow_t)(x > NITI_SHADOW_SAT ? NITI_SHADOW_SAT : (x < -NITI_SHADOW_SAT ? -NITI_SHADOW_SAT : x));
}

/* Two's-complement wrapping add/sub of int64 (numpy int64 semantics, no C undefined behaviour). */
NITI_HD static inline int64_t niti_wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
NITI_HD static inline int64_t niti_wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }

/* ---- shifts ------------------------------------------------------------------------------------ */
/* x * 2**-s truncated toward zero (s > 0), or x * 2**-s exactly (s <= 0, wrapping like numpy). */
NITI_HD static inline int64_t niti_trunc_shift(int64_t x, int s) {
    if (s <= 0) return s <= -64 ? 0 : (int64_t)((uint64_t)x << -s);
    if (s >= 64) return 0;
    uint64_t q = niti_magnitude(x) >> s;
    return x < 0 ? -(int64_t)q : (int64_t)q;
}

/* sign(x) * ((|x| >> s) + up), s >= 0, |x| < 2**63. `key`/`index` feed the stochastic mode only:
 * the hash key of (seed, step, tensor id) and the element's flat index. */
NITI_HD static inline int64_t niti_round_shift(int64_t x, int s, niti_round_mode mode, uint32_t key, uint32_t index) {
    if (s <= 0) return x;
    if (s > 62) return 0;
    uint64_t mag = niti_magnitude(x);
    uint64_t q = mag >> s;
    uint64_t r = mag & (((uint64_t)1 << s) - 1);
    int up;
    if (mode == NITI_ROUND_NEAREST) {
        up = r >= ((uint64_t)1 << (s - 1));
    } else if (mode == NITI_ROUND_PSEUDO_STOCHASTIC) {
        int k = s / 2;
        uint64_t hi = r >> k;                       /* top ceil(s/2) bits */
        uint64_t lo = r & (((uint64_t)1 << k) - 1); /* bottom floor(s/2) bits */
        if (s & 1) lo <<= 1;                        /* align widths when s is odd */
        up = hi > lo;
    } else {
        int s_draw = s;
        if (s > 31) { /* keep the top 31 remainder bits; the probability changes by < 2**-31 */
            r >>= s - 31;
            s_draw = 31;
        }
        up = r > niti_draw_below_pow2(key, index, s_draw);
    }
    int64_t out = (int64_t)(q + (uint64_t)up);
    return x < 0 ? -out : out;
}

/* num / k rounded half away from zero, exactly, for any k >= 1: sign(num) * ((2|num| + k) / (2k)).
 * |num| < 2**61 keeps 2|num| + k inside uint64 for every k the callers pass (k <= 2**24). The
 * numpy definition is nitisim/contract/reference.py's div_round_half_away. */
NITI_HD static inline int64_t niti_div_round_half_away(int64_t num, int64_t k) {
    uint64_t q = (2 * niti_magnitude(num) + (uint64_t)k) / (2 * (uint64_t)k);
    return num < 0 ? -(int64_t)q : (int64_t)q;
}

/* ---- weight update steps (spec section 5) -------------------------------------------------------- */
/* NITI's gradient step for one element, given b = range bits of the whole gradient tensor:
 * zero if b == 0; s = b - mu; g itself if s < 1; else PSR(g, s), so |step| <= 2**mu. */
NITI_HD static inline int64_t niti_mu_step(int64_t g, int range_bits, int mu) {
    if (range_bits == 0) return 0;
    int s = range_bits - mu;
    if (s < 1) return g;
    return niti_round_shift(g, s, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u);
}

/* Integer heavy-ball velocity: v - sign(v) * ceil(|v| / 8) + step (int64; the caller checks it fits
 * int32). Rounding the decay up matters: with T(v, 3) a velocity below 8 never decays, and PSR(v, 3)
 * of it keeps moving its weight by one LSB every step after the gradient has gone. */
NITI_HD static inline int64_t niti_momentum_velocity(int64_t v, int64_t step) {
    int64_t decay = (int64_t)((niti_magnitude(v) + ((1u << NITI_MOMENTUM_SHIFT) - 1)) >> NITI_MOMENTUM_SHIFT);
    return niti_wrap_add(niti_wrap_sub(v, v < 0 ? -decay : decay), step);
}

/* ---- integer softmax cross-entropy gradient (spec section 4) ------------------------------------ */
#define NITI_LOG2E_Q15 47274        /* round(log2(e) * 2**15) */
#define NITI_SOFTMAX_WINDOW 10      /* octaves kept below the row max (niti variant) */
#define NITI_TAYLOR_MIN_EXP (-24)   /* below it logits are clamped to the uniform softmax */
#define NITI_FINE_FRAC_BITS 8       /* Q8 base-2 exponent of the fine variant */
#define NITI_FINE_WINDOW 16         /* octaves kept below the row max (fine variant) */
#define NITI_LOSS_P_BITS 11         /* p = 2**11 * (softmax - onehot) */
#define NITI_LOSS_ERR_SHIFT 4       /* error = stochastic_round(p / 2**4) */
#define NITI_LOSS_MAX_EXP 40        /* larger logit exponents would overflow int64 intermediates */
#define NITI_LOSS_MIN_EXP (-1024)   /* exact clamp: below NITI_TAYLOR_MIN_EXP - 8 every logit shifts to 0 */

/* 2**(i / 256) in Q16 for i in 0..255 (nitisim.numerics.FINE_EXP2_TABLE_Q16), then 2**17 at 256.
 * Generated from the Python table; tests/test_c_kernels.py asserts equality. */
#define NITI_FINE_EXP2_Q16_VALUES \
    65536, 65714, 65892, 66071, 66250, 66429, 66609, 66790, \
    66971, 67153, 67335, 67517, 67700, 67884, 68068, 68252, \
    68438, 68623, 68809, 68996, 69183, 69370, 69558, 69747, \
    69936, 70126, 70316, 70507, 70698, 70889, 71082, 71274, \
    71468, 71661, 71856, 72050, 72246, 72442, 72638, 72835, \
    73032, 73230, 73429, 73628, 73828, 74028, 74229, 74430, \
    74632, 74834, 75037, 75240, 75444, 75649, 75854, 76060, \
    76266, 76473, 76680, 76888, 77096, 77305, 77515, 77725, \
    77936, 78147, 78359, 78572, 78785, 78998, 79212, 79427, \
    79642, 79858, 80075, 80292, 80510, 80728, 80947, 81166, \
    81386, 81607, 81828, 82050, 82273, 82496, 82719, 82944, \
    83169, 83394, 83620, 83847, 84074, 84302, 84531, 84760, \
    84990, 85220, 85451, 85683, 85915, 86148, 86382, 86616, \
    86851, 87086, 87322, 87559, 87796, 88034, 88273, 88513, \
    88752, 88993, 89234, 89476, 89719, 89962, 90206, 90451, \
    90696, 90942, 91188, 91436, 91684, 91932, 92181, 92431, \
    92682, 92933, 93185, 93438, 93691, 93945, 94200, 94455, \
    94711, 94968, 95226, 95484, 95743, 96002, 96263, 96524, \
    96785, 97048, 97311, 97575, 97839, 98104, 98370, 98637, \
    98905, 99173, 99442, 99711, 99982, 100253, 100524, 100797, \
    101070, 101344, 101619, 101895, 102171, 102448, 102726, 103004, \
    103283, 103564, 103844, 104126, 104408, 104691, 104975, 105260, \
    105545, 105831, 106118, 106406, 106694, 106984, 107274, 107565, \
    107856, 108149, 108442, 108736, 109031, 109326, 109623, 109920, \
    110218, 110517, 110816, 111117, 111418, 111720, 112023, 112327, \
    112631, 112937, 113243, 113550, 113858, 114167, 114476, 114787, \
    115098, 115410, 115723, 116036, 116351, 116667, 116983, 117300, \
    117618, 117937, 118257, 118577, 118899, 119221, 119544, 119869, \
    120194, 120519, 120846, 121174, 121502, 121832, 122162, 122493, \
    122825, 123158, 123492, 123827, 124163, 124500, 124837, 125176, \
    125515, 125855, 126197, 126539, 126882, 127226, 127571, 127917, \
    128263, 128611, 128960, 129310, 129660, 130012, 130364, 130718, \
    131072

static const int32_t niti_fine_exp2_q16_host[257] = {NITI_FINE_EXP2_Q16_VALUES};
#ifdef __CUDACC__
static __constant__ int32_t niti_fine_exp2_q16_dev[257] = {NITI_FINE_EXP2_Q16_VALUES};
#endif

NITI_HD static inline int64_t niti_fine_exp2_q16(int i) {
#ifdef __CUDA_ARCH__
    return niti_fine_exp2_q16_dev[i];
#else
    return niti_fine_exp2_q16_host[i];
#endif
}

/* The base-2 exponent whose row max windows the weights: Q0 (niti, e > -7) or Q8 (fine).
 * The niti Taylor branch (e <= -7) needs no max; it returns 0. */
NITI_HD static inline int64_t niti_loss_exponent(niti_loss_variant variant, int64_t a, int e) {
    if (variant == NITI_LOSS_FINE)
        return niti_trunc_shift(a * NITI_LOG2E_Q15, 15 - NITI_FINE_FRAC_BITS - e);
    if (e > -7) return niti_trunc_shift(niti_trunc_shift(a * NITI_LOG2E_Q15, 15), -e);
    return 0;
}

/* Unnormalised softmax weight u >= 0 of one logit, given the row max of niti_loss_exponent. */
NITI_HD static inline int64_t niti_loss_weight(niti_loss_variant variant, int64_t a, int e, int64_t row_max) {
    int64_t z = niti_loss_exponent(variant, a, e);
    if (variant == NITI_LOSS_FINE) {
        z -= row_max; /* <= 0 */
        if (z < -((int64_t)NITI_FINE_WINDOW << NITI_FINE_FRAC_BITS)) z = -((int64_t)NITI_FINE_WINDOW << NITI_FINE_FRAC_BITS);
        int whole = (int)((-z) >> NITI_FINE_FRAC_BITS);              /* octaves below the max */
        int frac = (int)((-z) & ((1 << NITI_FINE_FRAC_BITS) - 1));
        /* 2**((256 - frac)/256) in Q16, scaled into Q(16 + window) and divided by 2**(whole + 1) */
        return (niti_fine_exp2_q16((1 << NITI_FINE_FRAC_BITS) - frac) << (NITI_FINE_WINDOW - 1)) >> whole;
    }
    if (e > -7) {
        z -= row_max - NITI_SOFTMAX_WINDOW;
        if (z < 0) z = 0; /* z in 0..10 */
        return ((int64_t)1 << z) - 1;
    }
    if (e < NITI_TAYLOR_MIN_EXP) {
        a = niti_trunc_shift(a, NITI_TAYLOR_MIN_EXP - e);
        e = NITI_TAYLOR_MIN_EXP;
    }
    /* 2**(1-2e) * (1 + x + x**2/2), x = a * 2**e: second-order Taylor series of exp(x) */
    return ((int64_t)1 << (1 - 2 * e)) + a * ((int64_t)1 << (1 - e)) + a * a;
}

/* One row of the loss gradient: err[c] = clamp(stochastic_round(p[c], 4)) with
 * p = floor(u * 2**11 / sum(u)), p[label] -= sum(p). `index0` is the flat index of the row's first
 * element (row * classes) for the counter hash; `p` may be NULL. Weights are recomputed per pass
 * instead of stored, so a row needs no scratch memory (one GPU thread per row works the same). */
NITI_HD static inline void niti_loss_grad_row(const niti_elem_t *a, int64_t classes, int e, int64_t label,
                                              niti_loss_variant variant, uint32_t key, uint32_t index0,
                                              niti_elem_t *err, int64_t *p) {
    /* a deep net's logits may carry any exponent below: the softmax is uniform from -32 down, and the
     * clamp keeps 1 - 2e and 15 - NITI_FINE_FRAC_BITS - e far inside int (nitisim.numerics.LOSS_MIN_EXP) */
    if (e < NITI_LOSS_MIN_EXP) e = NITI_LOSS_MIN_EXP;
    int64_t row_max = niti_loss_exponent(variant, a[0], e);
    for (int64_t c = 1; c < classes; c++) {
        int64_t z = niti_loss_exponent(variant, a[c], e);
        if (z > row_max) row_max = z;
    }
    int64_t total = 0; /* > 0: the row max has weight >= 1 (niti) or >= 2**31 (fine) */
    for (int64_t c = 0; c < classes; c++) total += niti_loss_weight(variant, a[c], e, row_max);
    int64_t p_sum = 0;
    for (int64_t c = 0; c < classes; c++)
        p_sum += (niti_loss_weight(variant, a[c], e, row_max) << NITI_LOSS_P_BITS) / total; /* floor: both >= 0 */
    for (int64_t c = 0; c < classes; c++) {
        int64_t pc = (niti_loss_weight(variant, a[c], e, row_max) << NITI_LOSS_P_BITS) / total;
        if (c == label) pc -= p_sum;
        if (p) p[c] = pc;
        err[c] = niti_saturate_elem(
            niti_round_shift(pc, NITI_LOSS_ERR_SHIFT, NITI_ROUND_STOCHASTIC, key, index0 + (uint32_t)c));
    }
}

#endif /* NITI_ARITH_H */
