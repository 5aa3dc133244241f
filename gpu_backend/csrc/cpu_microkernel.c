/* cpu_microkernel.c: the int8 GEMM inner kernel, one variant per instruction set.
 *
 * All variants read the same packed panels (see cpu_internal.h): A words are 4 signed int8 of
 * consecutive k, B words are 4 int8 + 128 (uint8). Why the +128 bias: AVX-512 VNNI's vpdpbusd
 * multiplies unsigned bytes by signed bytes and sums each group of 4 into an int32 lane, and only
 * its signed operand can be a broadcast from memory. So B (the vector side) is made unsigned:
 *     sum_k (b + 128) * a = sum_k a * b + 128 * sum_k a,
 * and the kernel subtracts corr = 128 * sum_k a per row. Any int8 value, -128 included, maps into
 * [0, 255], so the trick is exact for all inputs. Lane sums may pass 2**31 on the way (bias), but
 * vpdpbusd and vpaddd wrap mod 2**32 and the final corrected value is the exact sum of products,
 * which fits int32 for k_groups * 4 <= NITI_MAX_K_S32; the scalar variant wraps through uint32_t.
 */
#include <string.h>

#include "cpu_internal.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---- shared epilogue helpers --------------------------------------------------------------------- */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)

static inline void store_row16(__m512i v, void *c, int64_t offset, int c_mode) {
    if (c_mode == NITI_C_STORE32 || c_mode == NITI_C_ADD32) {
        int32_t *p = (int32_t *)c + offset;
        if (c_mode == NITI_C_ADD32) v = _mm512_add_epi32(v, _mm512_loadu_si512(p));
        _mm512_storeu_si512(p, v);
    } else {
        int64_t *p = (int64_t *)c + offset;
        __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
        __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
        if (c_mode == NITI_C_ADD64) {
            lo = _mm512_add_epi64(lo, _mm512_loadu_si512(p));
            hi = _mm512_add_epi64(hi, _mm512_loadu_si512(p + 8));
        }
        _mm512_storeu_si512(p, lo);
        _mm512_storeu_si512(p + 8, hi);
    }
}

/* MR = 12 rows x NR = 32 columns: 24 zmm accumulators + 2 B vectors of the 32 registers.
 * Per 4-k step: 2 B loads, 12 broadcast loads, 24 vpdpbusd (64 MACs each).
 * The accumulators are named variables, not an array: gcc keeps an array of vectors in memory. */
/* acc += dot4(b unsigned, a signed) per int32 lane. Inline asm because gcc 12's register allocator
 * copies and spills the accumulators of _mm512_dpbusd_epi32 every iteration. A's word is broadcast
 * once into a register and used by both dpbusd of its row: folding the broadcast into each dpbusd
 * ({1to16}) would issue 26 loads per 24 dpbusd, more than the 2 load ports serve at the 2 dpbusd
 * per cycle this core sustains. */
static inline __m512i dpbusd(__m512i acc, __m512i b, __m512i a) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(b), "v"(a));
    return acc;
}

#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define DECLARE(i) __m512i acc##i##_lo = _mm512_setzero_si512(), acc##i##_hi = _mm512_setzero_si512();
#define STEP(i)                                                     \
    {                                                               \
        __m512i ai = _mm512_set1_epi32((int32_t)a[i]);              \
        acc##i##_lo = dpbusd(acc##i##_lo, b_lo, ai);                \
        acc##i##_hi = dpbusd(acc##i##_hi, b_hi, ai);                \
    }
#define STORE(i)                                                                         \
    {                                                                                    \
        __m512i fix = _mm512_set1_epi32(corr[i]);                                        \
        store_row16(_mm512_sub_epi32(acc##i##_lo, fix), c, i * ldc, c_mode);             \
        store_row16(_mm512_sub_epi32(acc##i##_hi, fix), c, i * ldc + 16, c_mode);        \
    }

void niti_microkernel(int64_t k_groups, const uint32_t *a, const uint32_t *b, const int32_t *corr, void *c,
                      int64_t ldc, int c_mode) {
    ROWS12(DECLARE)
    for (int64_t g = 0; g < k_groups; g++) {
        __m512i b_lo = _mm512_load_si512((const void *)b);        /* columns 0..15, 4 k each */
        __m512i b_hi = _mm512_load_si512((const void *)(b + 16)); /* columns 16..31 */
        ROWS12(STEP)
        a += NITI_MR;
        b += NITI_NR;
    }
    ROWS12(STORE)
}

#elif defined(__AVX2__)

/* MR = 4 rows x NR = 8 columns. No int8 dot product in AVX2 (vpmaddubsw saturates int16: 2 * 255 *
 * 127 > 32767), so both operands are widened to int16 and vpmaddwd sums pairs into int32: products
 * are at most 255 * 128 = 32640 and a pair 65280, far inside int32. B's 4-k words widen to
 * [col c: k0 k1 k2 k3] int16, A's word is broadcast as [a0 a1 a2 a3] x 4; vpmaddwd then gives two
 * partial sums per column (k0+k1, k2+k3) that the epilogue adds with one hadd. 8 accumulators + 2 B + 2 temporaries fit the 16 ymm
 * registers (MR = 6 spills). */
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define DECLARE2(i) __m256i acc##i##_lo = _mm256_setzero_si256(), acc##i##_hi = _mm256_setzero_si256();
#define STEP2(i)                                                                  \
    {                                                                             \
        __m256i ai = _mm256_cvtepi8_epi16(_mm_set1_epi32((int32_t)a[i]));        \
        acc##i##_lo = _mm256_add_epi32(acc##i##_lo, _mm256_madd_epi16(b_lo, ai)); \
        acc##i##_hi = _mm256_add_epi32(acc##i##_hi, _mm256_madd_epi16(b_hi, ai)); \
    }
#define STORE2(i) store_row8(acc##i##_lo, acc##i##_hi, corr[i], (char *)c + i * ldc * elem, c_mode);

/* hadd gives [c0 c1 c4 c5 | c2 c3 c6 c7] of the pair sums; the 64-bit permute restores the order. */
static inline void store_row8(__m256i lo, __m256i hi, int32_t corr, void *c, int c_mode) {
    __m256i h = _mm256_hadd_epi32(lo, hi);
    __m256i v = _mm256_sub_epi32(_mm256_permute4x64_epi64(h, 0xD8), _mm256_set1_epi32(corr));
    if (c_mode == NITI_C_STORE32 || c_mode == NITI_C_ADD32) {
        int32_t *p = (int32_t *)c;
        if (c_mode == NITI_C_ADD32) v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)p));
        _mm256_storeu_si256((__m256i *)p, v);
    } else {
        int64_t *p = (int64_t *)c;
        __m256i v_lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
        __m256i v_hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
        if (c_mode == NITI_C_ADD64) {
            v_lo = _mm256_add_epi64(v_lo, _mm256_loadu_si256((const __m256i *)p));
            v_hi = _mm256_add_epi64(v_hi, _mm256_loadu_si256((const __m256i *)(p + 4)));
        }
        _mm256_storeu_si256((__m256i *)p, v_lo);
        _mm256_storeu_si256((__m256i *)(p + 4), v_hi);
    }
}

void niti_microkernel(int64_t k_groups, const uint32_t *a, const uint32_t *b, const int32_t *corr, void *c,
                      int64_t ldc, int c_mode) {
    int64_t elem = c_mode >= NITI_C_STORE64 ? 8 : 4;
    ROWS4(DECLARE2)
    for (int64_t g = 0; g < k_groups; g++) {
        __m256i b_lo = _mm256_cvtepu8_epi16(_mm_load_si128((const __m128i *)b));       /* cols 0..3 */
        __m256i b_hi = _mm256_cvtepu8_epi16(_mm_load_si128((const __m128i *)(b + 4))); /* cols 4..7 */
        ROWS4(STEP2)
        a += NITI_MR;
        b += NITI_NR;
    }
    ROWS4(STORE2)
}

#else

/* Portable reference variant: uint32_t lanes wrap mod 2**32 like the SIMD lanes (no signed
 * overflow), and the corrected sum is exact. */
void niti_microkernel(int64_t k_groups, const uint32_t *a, const uint32_t *b, const int32_t *corr, void *c,
                      int64_t ldc, int c_mode) {
    uint32_t acc[NITI_MR][NITI_NR];
    memset(acc, 0, sizeof acc);
    for (int64_t g = 0; g < k_groups; g++) {
        for (int i = 0; i < NITI_MR; i++) {
            uint32_t aw = a[i];
            for (int j = 0; j < NITI_NR; j++) {
                uint32_t bw = b[j];
                for (int t = 0; t < 4; t++) {
                    int32_t av = (int8_t)(uint8_t)(aw >> (8 * t));
                    int32_t bv = (uint8_t)(bw >> (8 * t));
                    acc[i][j] += (uint32_t)(av * bv);
                }
            }
        }
        a += NITI_MR;
        b += NITI_NR;
    }
    for (int i = 0; i < NITI_MR; i++) {
        for (int j = 0; j < NITI_NR; j++) {
            int32_t v = (int32_t)(acc[i][j] - (uint32_t)corr[i]);
            if (c_mode == NITI_C_STORE32) ((int32_t *)c)[i * ldc + j] = v;
            else if (c_mode == NITI_C_ADD32) ((int32_t *)c)[i * ldc + j] += v;
            else if (c_mode == NITI_C_STORE64) ((int64_t *)c)[i * ldc + j] = v;
            else ((int64_t *)c)[i * ldc + j] += v;
        }
    }
}

#endif
