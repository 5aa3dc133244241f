/* cpu_pack.c: packing operand blocks into the micro-kernel's panels (see cpu_internal.h).
 *
 * Panels are W rows wide; panel word (g, r) holds k = 4g..4g+3 of row r, so one 32-bit broadcast
 * (A side) or one vector load of W words (B side) feeds a 4-deep dot product. Packing is a 4-byte
 * (row-major sources) or 1-byte (k-major sources) transpose, done with SSE2 where available.
 */
#include <string.h>

#include "cpu_internal.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
#include <immintrin.h>
#endif

/* dst[c * ld_dst + r] = src[r * ld_src + c] for a 16 x 16 block of bytes: four rounds of unpacks
 * (bytes, then 2-, 4- and 8-byte runs), each doubling the run of one source column in a register. */
static void transpose16x16_bytes(const int8_t *src, int64_t ld_src, int8_t *dst, int64_t ld_dst) {
#if defined(__SSE2__)
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)(src + i * ld_src));
    for (int i = 0; i < 8; i++) { /* b[i]: rows 2i, 2i+1, cols 0-7; b[8+i]: cols 8-15 */
        b[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[8 + i] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) /* a[4g + i]: rows 4i..4i+3, cols 4g..4g+3 */
        for (int i = 0; i < 4; i++) {
            a[8 * h + i] = _mm_unpacklo_epi16(b[8 * h + 2 * i], b[8 * h + 2 * i + 1]);
            a[8 * h + 4 + i] = _mm_unpackhi_epi16(b[8 * h + 2 * i], b[8 * h + 2 * i + 1]);
        }
    for (int g = 0; g < 4; g++) /* b[2 cp + p]: rows 8p..8p+7, cols 2cp, 2cp+1 */
        for (int p = 0; p < 2; p++) {
            b[4 * g + p] = _mm_unpacklo_epi32(a[4 * g + 2 * p], a[4 * g + 2 * p + 1]);
            b[4 * g + 2 + p] = _mm_unpackhi_epi32(a[4 * g + 2 * p], a[4 * g + 2 * p + 1]);
        }
    for (int cp = 0; cp < 8; cp++) {
        _mm_storeu_si128((__m128i *)(dst + 2 * cp * ld_dst), _mm_unpacklo_epi64(b[2 * cp], b[2 * cp + 1]));
        _mm_storeu_si128((__m128i *)(dst + (2 * cp + 1) * ld_dst), _mm_unpackhi_epi64(b[2 * cp], b[2 * cp + 1]));
    }
#else
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++) dst[c * ld_dst + r] = src[r * ld_src + c];
#endif
}

/* dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols: 16 x 16 blocks, the ragged
 * edges element by element. */
void niti_transpose_bytes(const int8_t *src, int64_t ld_src, int64_t rows, int64_t cols, int8_t *dst,
                          int64_t ld_dst) {
    int64_t r_full = rows / 16 * 16, c_full = cols / 16 * 16;
    for (int64_t r = 0; r < r_full; r += 16)
        for (int64_t c = 0; c < c_full; c += 16)
            transpose16x16_bytes(src + r * ld_src + c, ld_src, dst + c * ld_dst + r, ld_dst);
    for (int64_t c = 0; c < cols; c++)
        for (int64_t r = c < c_full ? r_full : 0; r < rows; r++) dst[c * ld_dst + r] = src[r * ld_src + c];
}

/* corr[r] = 128 * (sum of the bytes of panel row r), from the packed panel itself (flip 0, W <= 16):
 * one vpdpbusd with a ones vector per group. Returns 0 where unavailable (the caller sums instead). */
static int panel_corr(const uint32_t *panel, int64_t kg, int W, uint8_t flip, int32_t *corr) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
    if (flip == 0 && W <= 16) {
        __m512i acc = _mm512_setzero_si512(), ones = _mm512_set1_epi8(1);
        __mmask16 m = (__mmask16)((1u << W) - 1);
        for (int64_t g = 0; g < kg; g++) {
            __m512i w = _mm512_maskz_loadu_epi32(m, panel + g * W);
            __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(ones), "v"(w));
        }
        _mm512_mask_storeu_epi32(corr, m, _mm512_slli_epi32(acc, 7)); /* 128 * sum */
        return 1;
    }
#endif
    (void)panel, (void)kg, (void)W, (void)flip, (void)corr;
    return 0;
}

/* Panels: W rows each; panel word (g, r) holds k = 4g..4g+3 of row r, each byte XOR `flip`
 * (0x80 turns int8 into int8 + 128 as uint8); rows past nr and k past nk are int8 zeros. For the
 * A side, corr[r] = 128 * sum_k row r (0 for padding rows). Panel p starts at dst + p * k_groups * W. */

/* Row-major view (element (r, k) at v[r * ld + k]): group by group, so the panel is written
 * sequentially while W row streams are read (each row's cache line serves 16 groups). W is a
 * multiple of 4 (all MR, NR are). */
void niti_pack_rowmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                          int32_t *corr) {
    int64_t kg = (nk + 3) / 4, full = nk / 4;
    uint32_t flip_word = 0x01010101u * flip;
    for (int64_t p = 0; p * W < nr; p++) {
        uint32_t *pd = dst + p * kg * W;
        int64_t rows = niti_min64(W, nr - p * W);
        const int8_t *rows0 = v + p * W * ld;
        int64_t g = 0;
#ifdef __SSE2__
        if (rows == W) { /* 4 rows x 4 groups at a time: a 4 x 4 transpose of 32-bit words */
            __m128i f = _mm_set1_epi32((int32_t)flip_word);
            for (; g + 4 <= full; g += 4) {
                for (int r = 0; r < W; r += 4) {
                    const int8_t *src = rows0 + r * ld + 4 * g;
                    __m128i x0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)src), f);
                    __m128i x1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + ld)), f);
                    __m128i x2 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 2 * ld)), f);
                    __m128i x3 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 3 * ld)), f);
                    __m128i t0 = _mm_unpacklo_epi32(x0, x1), t1 = _mm_unpacklo_epi32(x2, x3); /* groups g, g+1 */
                    __m128i t2 = _mm_unpackhi_epi32(x0, x1), t3 = _mm_unpackhi_epi32(x2, x3); /* groups g+2, g+3 */
                    _mm_storeu_si128((__m128i *)(pd + g * W + r), _mm_unpacklo_epi64(t0, t1));
                    _mm_storeu_si128((__m128i *)(pd + (g + 1) * W + r), _mm_unpackhi_epi64(t0, t1));
                    _mm_storeu_si128((__m128i *)(pd + (g + 2) * W + r), _mm_unpacklo_epi64(t2, t3));
                    _mm_storeu_si128((__m128i *)(pd + (g + 3) * W + r), _mm_unpackhi_epi64(t2, t3));
                }
            }
        }
#endif
        for (; g < full; g++) {
            uint32_t *out = pd + g * W;
            for (int64_t r = 0; r < rows; r++) {
                uint32_t w;
                memcpy(&w, rows0 + r * ld + 4 * g, 4);
                out[r] = w ^ flip_word;
            }
            for (int64_t r = rows; r < W; r++) out[r] = flip_word;
        }
        if (full < kg) { /* partial last group: zero-fill the missing k */
            uint32_t *out = pd + full * W;
            for (int64_t r = 0; r < W; r++) {
                uint8_t tail[4] = {0, 0, 0, 0};
                if (r < rows) memcpy(tail, rows0 + r * ld + 4 * full, (size_t)(nk - 4 * full));
                uint32_t w;
                memcpy(&w, tail, 4);
                out[r] = w ^ flip_word;
            }
        }
        if (corr && !panel_corr(pd, kg, W, flip, corr + p * W)) {
            for (int64_t r = 0; r < W; r++) {
                int32_t sum = 0;
                if (r < rows)
                    for (int64_t k = 0; k < nk; k++) sum += rows0[r * ld + k];
                corr[p * W + r] = 128 * sum;
            }
        }
    }
}

/* Four view lines (k .. k+3, `cols` bytes each) -> `cols` words of the panel: a 4 x cols byte
 * transpose. With SSE2: two rounds of unpack (bytes, then 16-bit pairs), 16, 8 or 4 columns at a
 * time, never reading past `cols`. */
void niti_interleave4(const int8_t *l0, const int8_t *l1, const int8_t *l2, const int8_t *l3, int64_t cols,
                        uint8_t flip, uint32_t *out) {
    int64_t c = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    /* 64 columns per step: the byte and 16-bit unpacks work within 128-bit lanes, so a 4 x 4
     * transpose of lanes puts the words in column order; the tail is the same with masks. */
    __m512i f = _mm512_set1_epi8((char)flip);
    for (; c < cols; c += 64) {
        int64_t n = cols - c;
        __mmask64 m = n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
        __m512i a = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, l0 + c), f);
        __m512i b = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, l1 + c), f);
        __m512i d = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, l2 + c), f);
        __m512i e = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, l3 + c), f);
        __m512i ab_lo = _mm512_unpacklo_epi8(a, b), ab_hi = _mm512_unpackhi_epi8(a, b);
        __m512i de_lo = _mm512_unpacklo_epi8(d, e), de_hi = _mm512_unpackhi_epi8(d, e);
        __m512i w0 = _mm512_unpacklo_epi16(ab_lo, de_lo), w1 = _mm512_unpackhi_epi16(ab_lo, de_lo); /* lane L: */
        __m512i w2 = _mm512_unpacklo_epi16(ab_hi, de_hi), w3 = _mm512_unpackhi_epi16(ab_hi, de_hi); /* 16L + 4i.. */
        __m512i t0 = _mm512_shuffle_i32x4(w0, w1, 0x44), t1 = _mm512_shuffle_i32x4(w2, w3, 0x44);
        __m512i t2 = _mm512_shuffle_i32x4(w0, w1, 0xEE), t3 = _mm512_shuffle_i32x4(w2, w3, 0xEE);
        __m512i o[4] = {_mm512_shuffle_i32x4(t0, t1, 0x88), _mm512_shuffle_i32x4(t0, t1, 0xDD),
                        _mm512_shuffle_i32x4(t2, t3, 0x88), _mm512_shuffle_i32x4(t2, t3, 0xDD)};
        for (int q = 0; q < 4 && 16 * q < n; q++) {
            int64_t words = n - 16 * q;
            _mm512_mask_storeu_epi32(out + c + 16 * q, words >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << words) - 1), o[q]);
        }
    }
    return;
#elif defined(__SSE2__)
    __m128i f = _mm_set1_epi8((char)flip);
    for (; c + 16 <= cols; c += 16) {
        __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(l0 + c)), f);
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(l1 + c)), f);
        __m128i d = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(l2 + c)), f);
        __m128i e = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(l3 + c)), f);
        __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b); /* a0 b0 a1 b1 ... */
        __m128i de_lo = _mm_unpacklo_epi8(d, e), de_hi = _mm_unpackhi_epi8(d, e);
        _mm_storeu_si128((__m128i *)(out + c), _mm_unpacklo_epi16(ab_lo, de_lo)); /* a0 b0 d0 e0 a1 ... */
        _mm_storeu_si128((__m128i *)(out + c + 4), _mm_unpackhi_epi16(ab_lo, de_lo));
        _mm_storeu_si128((__m128i *)(out + c + 8), _mm_unpacklo_epi16(ab_hi, de_hi));
        _mm_storeu_si128((__m128i *)(out + c + 12), _mm_unpackhi_epi16(ab_hi, de_hi));
    }
    if (c + 8 <= cols) {
        __m128i a = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(l0 + c)), f);
        __m128i b = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(l1 + c)), f);
        __m128i d = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(l2 + c)), f);
        __m128i e = _mm_xor_si128(_mm_loadl_epi64((const __m128i *)(l3 + c)), f);
        __m128i ab = _mm_unpacklo_epi8(a, b), de = _mm_unpacklo_epi8(d, e);
        _mm_storeu_si128((__m128i *)(out + c), _mm_unpacklo_epi16(ab, de));
        _mm_storeu_si128((__m128i *)(out + c + 4), _mm_unpackhi_epi16(ab, de));
        c += 8;
    }
    if (c + 4 <= cols) {
        int32_t w[4];
        memcpy(&w[0], l0 + c, 4), memcpy(&w[1], l1 + c, 4), memcpy(&w[2], l2 + c, 4), memcpy(&w[3], l3 + c, 4);
        __m128i ab = _mm_unpacklo_epi8(_mm_xor_si128(_mm_cvtsi32_si128(w[0]), f), _mm_xor_si128(_mm_cvtsi32_si128(w[1]), f));
        __m128i de = _mm_unpacklo_epi8(_mm_xor_si128(_mm_cvtsi32_si128(w[2]), f), _mm_xor_si128(_mm_cvtsi32_si128(w[3]), f));
        _mm_storeu_si128((__m128i *)(out + c), _mm_unpacklo_epi16(ab, de));
        c += 4;
    }
#endif
    for (; c < cols; c++)
        out[c] = ((uint32_t)(uint8_t)(l0[c] ^ flip)) | ((uint32_t)(uint8_t)(l1[c] ^ flip) << 8) |
                 ((uint32_t)(uint8_t)(l2[c] ^ flip) << 16) | ((uint32_t)(uint8_t)(l3[c] ^ flip) << 24);
}

/* k-major view (element (r, k) at v[k * ld + r]): each group interleaves four view lines. */
void niti_pack_kmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                        int32_t *corr) {
    int64_t kg = (nk + 3) / 4;
    uint32_t flip_word = 0x01010101u * flip;
    static const int8_t zeros[NITI_PANEL_MAX] = {0};
    for (int64_t p = 0; p * W < nr; p++) {
        uint32_t *pd = dst + p * kg * W;
        int64_t rows = niti_min64(W, nr - p * W);
        const int8_t *col0 = v + p * W;
        for (int64_t g = 0; g < kg; g++) {
            const int8_t *line[4];
            for (int t = 0; t < 4; t++) line[t] = 4 * g + t < nk ? col0 + (4 * g + t) * ld : zeros;
            niti_interleave4(line[0], line[1], line[2], line[3], rows, flip, pd + g * W);
            for (int64_t r = rows; r < W; r++) pd[g * W + r] = flip_word;
        }
        if (corr && !panel_corr(pd, kg, W, flip, corr + p * W)) {
            int32_t sum[NITI_PANEL_MAX] = {0};
            if (rows == NITI_MR) { /* the A side's full panels: a fixed-width loop, which vectorises */
                for (int64_t k = 0; k < nk; k++)
                    for (int r = 0; r < NITI_MR; r++) sum[r] += col0[k * ld + r];
            } else {
                for (int64_t k = 0; k < nk; k++)
                    for (int64_t r = 0; r < rows; r++) sum[r] += col0[k * ld + r];
            }
            for (int r = 0; r < W; r++) corr[p * W + r] = 128 * sum[r];
        }
    }
}
