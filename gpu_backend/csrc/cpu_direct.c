/* cpu_direct.c: conv kernels for the narrow shapes of small networks (LeNet's one-channel first
 * layer, 20-channel input gradients), where the packed GEMM of cpu_gemm.c spends more time
 * gathering and packing operands than multiplying:
 *
 *   - forward with few output channels (or a small weight table): each output pixel's int32
 *     vector over the output channels accumulates vpdpbusd of 4 consecutive bytes of a kernel row
 *     of the padded, +128-biased input (broadcast) against packed weight vectors; no im2col, no
 *     per-pixel packing.
 *   - weight gradient with a tiny O x T output and a long reduction: dy is transposed into one
 *     plane per output channel laid on the padded input grid, so every tap's patch column is an
 *     input plane read at a shift; the reduction runs along the pixels, 64 per vector, the images
 *     split between threads, each with int32 lane sums of bounded length flushed into int64.
 *   - input gradient whose gather form mostly multiplies a zero border (a "full" convolution) or
 *     wastes vector lanes on few input channels: the scatter form dx = col2im(dy * W), the GEMM
 *     micro-kernel producing an L1 tile of products per block of dy pixels, added into dx at once.
 *
 * All are exact integer sums, so the results equal the GEMM path's (and numpy's) bit for bit.
 * The first two need AVX-512 VNNI; other builds keep the GEMM path for those shapes.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* -DNITI_DIRECT_KERNELS=0 builds a library that sends every shape through the GEMM engine (for
 * A/B timing and cross-checks). */
#ifndef NITI_DIRECT_KERNELS
#define NITI_DIRECT_KERNELS 1
#endif

/* Below this many MACs one thread does a direct conv (as NITI_GEMM_PARALLEL_MIN_MACS). */
#define NITI_DIRECT_PARALLEL_MIN_MACS (1 << 24)

static void *alloc64(size_t bytes) { return aligned_alloc(64, (size_t)niti_round_up((int64_t)(bytes ? bytes : 1), 64)); }

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static int threads_for(double macs) { return macs < NITI_DIRECT_PARALLEL_MIN_MACS ? 1 : niti_threads(); }

/* ==== input gradient, scatter form (any ISA: it runs the GEMM micro-kernel) ========================= */
/* Gather form: every dx pixel reduces k_h k_w O values (zero where the window leaves dy) into in_c
 * outputs that fill NR-wide lanes; scatter form: every dy pixel multiplies O values into
 * k_h k_w in_c outputs, then adds those into dx. Costs in MAC lanes, plus the col2im adds. */
/* d[0:n] += s[0:n] */
static inline void add_s32(int32_t *d, const int32_t *s, int64_t n) {
    int64_t c = 0;
#if defined(__AVX512F__)
    for (; c + 16 <= n; c += 16)
        _mm512_storeu_si512(d + c, _mm512_add_epi32(_mm512_loadu_si512(d + c), _mm512_loadu_si512(s + c)));
    if (c < n) {
        __mmask16 m = (__mmask16)((1u << (n - c)) - 1);
        _mm512_mask_storeu_epi32(d + c, m, _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, d + c), _mm512_maskz_loadu_epi32(m, s + c)));
    }
#else
    for (; c < n; c++) d[c] += s[c];
#endif
}

/* Products of one block of dy pixels live in an L1-sized tile: the GEMM micro-kernel runs directly
 * over W packed once (B: N = k_h k_w in_c rows, K = O) and MR dy pixels packed per block (A), and
 * each tile row is added into dx before the next block, so the int32 products never travel
 * through L2 (for LeNet's conv2: 32 MB per call). */
#define SCATTER_BLOCK_PIXELS 256 /* dy pixels per work item (whole images): dx rows stay in L1/L2 */

int niti_scatter_input_grad_applies(const niti_conv_shape *s) {
    int64_t taps = s->k_h * s->k_w;
    if (!NITI_DIRECT_KERNELS || !niti_k_fits_s32(taps * s->out_c)) return 0; /* every partial sum must provably fit int32 */
    /* packed W and a tile row block stay cache-sized */
    if (niti_round_up(taps * s->in_c, NITI_NR) * niti_round_up(s->out_c, 4) > (2 << 20)) return 0;
    double gather = (double)(s->in_h * s->in_w) * (double)(taps * s->out_c) * (double)niti_round_up(s->in_c, NITI_NR);
    double scatter = (double)(s->out_h * s->out_w) *
                     ((double)s->out_c * (double)niti_round_up(taps * s->in_c, NITI_NR) + 8.0 * (double)(taps * s->in_c));
    return scatter < gather;
}

int niti_scatter_input_grad(const niti_conv_shape *s, const int8_t *dy, const int8_t *w, int32_t *dx) {
    int64_t E = s->out_h, F = s->out_w, O = s->out_c, I = s->in_c, H = s->in_h, W = s->in_w;
    int64_t N = s->k_h * s->k_w * I; /* product row: (kh, kw, i) */
    int64_t pix = E * F, image = H * W * I, kg = (O + 3) / 4;
    int64_t panels = (N + NITI_NR - 1) / NITI_NR, ldt = panels * NITI_NR;
    if (s->batch == 0) return NITI_OK;
    int64_t imgs = niti_max64(1, niti_min64(s->batch, SCATTER_BLOCK_PIXELS / pix));
    int64_t blocks = (s->batch + imgs - 1) / imgs;
    int threads = threads_for((double)s->batch * (double)pix * (double)O * (double)N);
    if (threads > blocks) threads = (int)blocks;
    uint32_t *b_pack = alloc64(sizeof(uint32_t) * (size_t)(panels * kg * NITI_NR));
    uint32_t **a_pack = calloc((size_t)threads, sizeof *a_pack);
    int32_t **corr = calloc((size_t)threads, sizeof *corr), **tile = calloc((size_t)threads, sizeof *tile);
    int status = b_pack && a_pack && corr && tile ? NITI_OK : NITI_E_NOMEM;
    for (int t = 0; t < threads && status == NITI_OK; t++)
        if (!(a_pack[t] = alloc64(sizeof(uint32_t) * (size_t)(kg * NITI_MR))) ||
            !(corr[t] = alloc64(sizeof(int32_t) * NITI_MR)) ||
            !(tile[t] = alloc64(sizeof(int32_t) * (size_t)(NITI_MR * ldt))))
            status = NITI_E_NOMEM;
    if (status == NITI_OK) {
        /* B = W as (N x O): element (r, o) = w[o, r], a k-major view of w; +128-biased */
        niti_pack_kmajor(w, N, N, O, NITI_NR, 0x80, b_pack, NULL);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int t = thread_index();
            int64_t i0 = blk * imgs, rows = niti_min64(imgs, s->batch - i0) * pix;
            int32_t *dst0 = dx + i0 * image;
            memset(dst0, 0, sizeof(int32_t) * (size_t)(rows / pix * image));
            int64_t n = 0, e = 0, f = 0; /* the dy pixel of the next row, relative to image i0 */
            for (int64_t r0 = 0; r0 < rows; r0 += NITI_MR) {
                int64_t mr = niti_min64(NITI_MR, rows - r0);
                niti_pack_rowmajor(dy + (i0 * pix + r0) * O, O, mr, O, NITI_MR, 0x00, a_pack[t], corr[t]);
                for (int64_t p = 0; p < panels; p++)
                    niti_microkernel(kg, a_pack[t], b_pack + p * kg * NITI_NR, corr[t], tile[t] + p * NITI_NR, ldt,
                                     NITI_C_STORE32);
                for (int64_t r = 0; r < mr; r++) {
                    const int32_t *row = tile[t] + r * ldt;
                    int64_t x0 = f * s->stride_w - s->pad_w;
                    int64_t kw0 = niti_max64(0, -x0), kw1 = niti_min64(s->k_w, W - x0);
                    for (int64_t kh = 0; kh < s->k_h && kw0 < kw1; kh++) {
                        int64_t h = e * s->stride_h - s->pad_h + kh;
                        if (h < 0 || h >= H) continue;
                        /* partial sums of <= k_h k_w O <= NITI_MAX_K_S32 products: no overflow */
                        int32_t *d = dst0 + ((n * H + h) * W + x0) * I;
                        const int32_t *src = row + kh * s->k_w * I;
                        if (s->stride_w == 1) { /* the taps' dx pixels are adjacent: one run */
                            add_s32(d + kw0 * I, src + kw0 * I, (kw1 - kw0) * I);
                        } else {
                            for (int64_t kw = kw0; kw < kw1; kw++) add_s32(d + kw * I, src + kw * I, I);
                        }
                    }
                    if (++f == F) {
                        f = 0;
                        if (++e == E) e = 0, n++;
                    }
                }
            }
        }
    }
    free(b_pack);
    for (int t = 0; t < threads; t++) {
        if (a_pack) free(a_pack[t]);
        if (corr) free(corr[t]);
        if (tile) free(tile[t]);
    }
    free(a_pack), free(corr), free(tile);
    if (status != NITI_OK) return niti_fail(status, "niti_conv2d_input_grad: out of memory");
    return NITI_OK;
}

#if NITI_VNNI

/* the first n (<= 64) of 64 bytes */
static inline __mmask64 byte_mask(int64_t n) { return n >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1); }

static inline uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Rows [0, Hp) x columns [0, Wp) of the zero-padded image n, channel-interleaved (ch_stride = C) or
 * one channel c (planar: pass c and write with step 1), each byte XOR 0x80 (int8 -> int8 + 128):
 * dst[(py * Wp + px) * out_c + ...]. Padding becomes 0x80, the biased zero. */
static void padded_rows(const niti_conv_shape *s, const int8_t *img, int64_t Hp, int64_t Wp, int64_t c0, int64_t nc,
                        uint8_t *dst) {
    int64_t C = s->in_c, left = niti_min64(s->pad_w, Wp), right = niti_min64(Wp, s->pad_w + s->in_w);
    int64_t rb = Wp * nc;
    for (int64_t py = 0; py < Hp; py++) {
        uint8_t *row = dst + py * rb;
        int64_t iy = py - s->pad_h;
        if (iy < 0 || iy >= s->in_h || right <= left) {
            memset(row, 0x80, (size_t)rb);
            continue;
        }
        const int8_t *src = img + (iy * s->in_w + (left - s->pad_w)) * C + c0;
        memset(row, 0x80, (size_t)(left * nc));
        uint8_t *mid = row + left * nc;
        int64_t len = (right - left) * nc;
        if (nc == C) { /* every channel: one contiguous run */
            int64_t k = 0;
            for (; k + 64 <= len; k += 64)
                _mm512_storeu_si512(mid + k, _mm512_xor_si512(_mm512_loadu_si512(src + k), _mm512_set1_epi8((char)0x80)));
            if (k < len) {
                __mmask64 m = byte_mask(len - k);
                _mm512_mask_storeu_epi8(mid + k, m, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + k), _mm512_set1_epi8((char)0x80)));
            }
        } else { /* one channel plane (nc == 1) */
            for (int64_t k = 0; k < len; k++) mid[k] = (uint8_t)src[k * C] ^ 0x80;
        }
        memset(row + right * nc, 0x80, (size_t)((Wp - right) * nc));
    }
}

/* ==== forward ============================================================================================ */
/* Every kernel row of a window is one contiguous run of k_w * in_c bytes of the padded image, read
 * as G = ceil(k_w in_c / 4) words against weight words zero past the run; no per-pixel packing.
 * The GEMM engine keeps the shapes whose weight table outgrows L1/L2 (wide and deep layers), where
 * its cache blocking wins. */
#define FWD_TABLE_BYTES (64 << 10)

static int64_t fwd_words(const niti_conv_shape *s) { return s->k_h * ((s->k_w * s->in_c + 3) / 4); }

int niti_direct_forward_applies(const niti_conv_shape *s) {
    /* int32 lane sums: a longer reduction goes to the GEMM path's int64 accumulation and its check */
    return NITI_DIRECT_KERNELS && niti_k_fits_s32(s->k_h * s->k_w * s->in_c) &&
           (s->out_c <= 64 || fwd_words(s) * 4 * niti_round_up(s->out_c, 32) <= FWD_TABLE_BYTES);
}

#define FWD_PX 8 /* output pixels per register block: 8 x 2 accumulators, 2 weight vectors */

#define PX8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define FWD_DECL(p) __m512i acc##p##_lo = neg_lo, acc##p##_hi = neg_hi;
#define FWD_STEP(p)                                                        \
    {                                                                      \
        __m512i u = _mm512_set1_epi32((int32_t)load_u32(at + (p) * step)); \
        acc##p##_lo = niti_dpbusd(acc##p##_lo, u, w_lo);                   \
        acc##p##_hi = niti_dpbusd(acc##p##_hi, u, w_hi);                   \
    }
#define FWD_STORE(p)                                                              \
    if (p < np) {                                                                 \
        _mm512_mask_storeu_epi32(out + (p) * O, m_lo, acc##p##_lo);                \
        if (m_hi) _mm512_mask_storeu_epi32(out + (p) * O + 16, m_hi, acc##p##_hi); \
    }

static __mmask16 lane_mask(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (n <= 0 ? 0 : (__mmask16)((1u << n) - 1)); }

/* Output rows [y0, y1) of one image from its padded copy P (rb bytes per row). wk: [kwords][lanes]
 * weight words; koff[k]: byte offset of word k from the window's corner; corr[o] = 128 * sum of w[o]. */
static void fwd_rows(const niti_conv_shape *s, const uint8_t *P, int64_t rb, const uint32_t *wk, const int64_t *koff,
                     int64_t kwords, const int32_t *corr, int64_t lanes, int64_t y0, int64_t y1, int32_t *y) {
    int64_t O = s->out_c, F = s->out_w, step = s->stride_w * s->in_c;
    for (int64_t lb = 0; lb < lanes; lb += 32) {
        __mmask16 m_lo = lane_mask(O - lb), m_hi = lane_mask(O - lb - 16);
        __m512i neg_lo = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_load_si512(corr + lb));
        __m512i neg_hi = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_load_si512(corr + lb + 16));
        for (int64_t oy = y0; oy < y1; oy++) {
            for (int64_t ox = 0; ox < F; ox += FWD_PX) {
                /* pixels ox .. ox+7 read base + p * step; past the row's end (a last, partial
                 * block) they read the padded row's later bytes or the slack, and are not stored */
                int64_t np = niti_min64(FWD_PX, F - ox);
                const uint8_t *base = P + oy * s->stride_h * rb + ox * step;
                PX8(FWD_DECL)
                const uint32_t *wp = wk + lb;
                for (int64_t k = 0; k < kwords; k++, wp += lanes) {
                    const uint8_t *at = base + koff[k];
                    __m512i w_lo = _mm512_load_si512(wp), w_hi = _mm512_load_si512(wp + 16);
                    PX8(FWD_STEP)
                }
                int32_t *out = y + (oy * F + ox) * O + lb;
                PX8(FWD_STORE)
            }
        }
    }
}

int niti_direct_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y) {
    int64_t C = s->in_c, O = s->out_c, row = s->k_w * C, G = (row + 3) / 4, kwords = fwd_words(s);
    int64_t lanes = niti_round_up(O, 32), E = s->out_h, pix = E * s->out_w;
    int64_t Hp = (E - 1) * s->stride_h + s->k_h, Wp = (s->out_w - 1) * s->stride_w + s->k_w;
    int64_t rb = Wp * C, img_bytes = niti_round_up(Hp * rb, 64);
    if (s->batch == 0 || pix == 0) return NITI_OK;
    int threads = threads_for((double)s->batch * (double)pix * (double)O * (double)(s->k_h * row));
    /* work items: (image, block of output rows), at least 4 per thread when the batch is small */
    int64_t rows = E;
    if (s->batch < 4 * (int64_t)threads) rows = niti_max64(1, E * s->batch / (4 * (int64_t)threads));
    int64_t row_blocks = (E + rows - 1) / rows, items = s->batch * row_blocks;
    uint32_t *wk = alloc64(sizeof(uint32_t) * (size_t)(kwords * lanes));
    int32_t *corr = alloc64(sizeof(int32_t) * (size_t)lanes);
    int64_t *koff = malloc(sizeof(int64_t) * (size_t)kwords);
    /* slack past the last image: a row's last word runs up to 3 bytes over, and the unstored pixels
     * of a partial block up to (FWD_PX - 1) * stride_w * in_c further */
    int64_t slack = niti_round_up((FWD_PX - 1) * s->stride_w * C + 64, 64);
    uint8_t *pad = alloc64((size_t)(s->batch * img_bytes + slack));
    if (!wk || !corr || !koff || !pad) {
        free(wk), free(corr), free(koff), free(pad);
        return niti_fail(NITI_E_NOMEM, "niti_conv2d_forward: out of memory");
    }
    memset(pad + s->batch * img_bytes, 0x80, (size_t)slack);
    /* the signed weights, and corr = 128 * sum of each output channel's weights (the bias of x) */
    memset(wk, 0, sizeof(uint32_t) * (size_t)(kwords * lanes));
    memset(corr, 0, sizeof(int32_t) * (size_t)lanes);
    for (int64_t kh = 0; kh < s->k_h; kh++)
        for (int64_t g = 0; g < G; g++) koff[kh * G + g] = kh * rb + 4 * g;
    for (int64_t o = 0; o < O; o++) {
        int32_t sum = 0;
        for (int64_t kh = 0; kh < s->k_h; kh++) {
            const int8_t *wr = w + (o * s->k_h + kh) * row;
            for (int64_t b = 0; b < row; b++) {
                ((uint8_t *)(wk + (kh * G + b / 4) * lanes + o))[b % 4] = (uint8_t)wr[b];
                sum += wr[b];
            }
        }
        corr[o] = 128 * sum;
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
#pragma omp for schedule(dynamic, 4)
        for (int64_t n = 0; n < s->batch; n++) {
            uint8_t *P = pad + n * img_bytes;
            padded_rows(s, x + n * s->in_h * s->in_w * C, Hp, Wp, 0, C, P);
            memset(P + Hp * rb, 0x80, (size_t)(img_bytes - Hp * rb));
        }
        /* the loop's barrier: every padded image is complete */
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            int64_t n = it / row_blocks, y0 = it % row_blocks * rows;
            fwd_rows(s, pad + n * img_bytes, rb, wk, koff, kwords, corr, lanes, y0, niti_min64(E, y0 + rows),
                     y + n * pix * O);
        }
    }
    free(wk), free(corr), free(koff), free(pad);
    return NITI_OK;
}

/* ==== weight gradient, tiny O x T ===================================================================== */
/* dw[o, t] = sum over pixels p of dy[p, o] * patch[p, t]. Per block of images: D_o = dy's channel o
 * placed on the padded input grid (pixel (y, x) at y*stride_h*Wp + x*stride_w, zero elsewhere) and
 * X_c = input channel c padded, +128-biased. Tap t = (kh, kw, c) then pairs D_o[j] with
 * X_c[j + kh*Wp + kw] for every j: one long dot product of two contiguous byte streams, 64 per
 * vpdpbusd (X unsigned, D signed). sum (x + 128) d = sum x d + 128 sum d, so
 * dw[o, t] = that sum - 128 * (sum of dy[., o]), the same correction for every tap. */
#define WG_OB 4                   /* output channels per register block */
#define WG_TB 5                   /* taps per register block: 20 accumulators + 4 D + 5 X vectors */
#define WG_BLOCK_BYTES 8192       /* grid bytes per block of images (D and X planes stay in L1/L2) */
#define WG_LANE_PRODUCTS 65535    /* products per int32 lane between flushes: 65535 * 255 * 128 < 2**31 */

/* The padded grid: the rows and columns the windows read; rows are a whole number of 4-byte words
 * (the extra columns are padding), so every 4 grid pixels of a row are one aligned word of a plane. */
static void wg_grid(const niti_conv_shape *s, int64_t *Hp, int64_t *Wp) {
    *Hp = (s->out_h - 1) * s->stride_h + s->k_h;
    *Wp = niti_round_up((s->out_w - 1) * s->stride_w + s->k_w, 4);
}

int niti_direct_weight_grad_applies(const niti_conv_shape *s) {
    int64_t taps = s->k_h * s->k_w * s->in_c, Hp, Wp;
    wg_grid(s, &Hp, &Wp);
    /* a small output (the GEMM tiles waste most lanes and each pixel's patch gather dominates) and a
     * grid at least a quarter covered by dy pixels (strided convs leave holes) */
    return NITI_DIRECT_KERNELS && taps * niti_round_up(s->out_c, WG_OB) <= 2048 && s->out_c <= 64 && s->out_h * s->out_w * 4 >= Hp * Wp &&
           Hp * Wp <= (1 << 18);
}

#define WG_T(o, X) X(o, 0) X(o, 1) X(o, 2) X(o, 3) X(o, 4)
#define WG_ALL(X) WG_T(0, X) WG_T(1, X) WG_T(2, X) WG_T(3, X)
#define WG_LOAD(o, t) __m512i a##o##t = _mm512_load_si512(acc + ((o) * WG_TB + (t)) * 16);
#define WG_STEP(o, t) a##o##t = niti_dpbusd(a##o##t, u##t, d##o);
#define WG_SAVE(o, t) _mm512_store_si512(acc + ((o) * WG_TB + (t)) * 16, a##o##t);

/* acc (WG_OB x WG_TB vectors) += D planes d, d + ld, ... against the 5 shifted X streams, j < L. */
static void wg_block(const int8_t *d, int64_t ld, const uint8_t *const *xt, int64_t L, int32_t *acc) {
    WG_ALL(WG_LOAD)
    const uint8_t *x0 = xt[0], *x1 = xt[1], *x2 = xt[2], *x3 = xt[3], *x4 = xt[4];
    for (int64_t j = 0; j < L; j += 64) {
        __m512i d0 = _mm512_load_si512(d + j), d1 = _mm512_load_si512(d + ld + j);
        __m512i d2 = _mm512_load_si512(d + 2 * ld + j), d3 = _mm512_load_si512(d + 3 * ld + j);
        __m512i u0 = _mm512_loadu_si512(x0 + j), u1 = _mm512_loadu_si512(x1 + j), u2 = _mm512_loadu_si512(x2 + j);
        __m512i u3 = _mm512_loadu_si512(x3 + j), u4 = _mm512_loadu_si512(x4 + j);
        WG_ALL(WG_STEP)
    }
    WG_ALL(WG_SAVE)
}

/* sum of 16 int32 lanes, exactly, in int64 */
static inline int64_t hsum64(__m512i v) {
    __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    return _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi));
}

/* dy (n_img, E, F, O) -> O planes of ld bytes: pixel (i, y, x) at i*S + y*row_step + x*col_step.
 * Plain locals (int8 stores alias everything, so struct fields would be reloaded per byte); each
 * plane is written in order while its source bytes come from a few L1-resident dy rows. */
static void wg_scatter_dy(const int8_t *restrict dy, int64_t n_img, int64_t E, int64_t F, int64_t O, int64_t row_step,
                          int64_t col_step, int64_t S, int64_t ld, int8_t *restrict d) {
    for (int64_t i = 0; i < n_img; i++)
        for (int64_t y = 0; y < E; y++) {
            const int8_t *src = dy + (i * E + y) * F * O;
            int8_t *dst = d + i * S + y * row_step;
            if (col_step == 1) {
                for (int64_t o = 0; o < O; o++)
                    for (int64_t x = 0; x < F; x++) dst[o * ld + x] = src[x * O + o];
            } else {
                for (int64_t o = 0; o < O; o++)
                    for (int64_t x = 0; x < F; x++) dst[o * ld + x * col_step] = src[x * O + o];
            }
        }
}

/* r[i] word j -> r[j] word i: 32-bit unpacks (pairs of rows), 64-bit unpacks (quads), then two
 * rounds of 128-bit lane shuffles across the quads. */
static inline void transpose16_epi32(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int q = 0; q < 16; q += 4) { /* u[q + c] lane L: column 4L + c of rows q..q+3 */
        u[q] = _mm512_unpacklo_epi64(t[q], t[q + 2]);
        u[q + 1] = _mm512_unpackhi_epi64(t[q], t[q + 2]);
        u[q + 2] = _mm512_unpacklo_epi64(t[q + 1], t[q + 3]);
        u[q + 3] = _mm512_unpackhi_epi64(t[q + 1], t[q + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i x_lo = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), x_hi = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
        __m512i y_lo = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44), y_hi = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_i32x4(x_lo, y_lo, 0x88);
        r[4 + c] = _mm512_shuffle_i32x4(x_lo, y_lo, 0xDD);
        r[8 + c] = _mm512_shuffle_i32x4(x_hi, y_hi, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(x_hi, y_hi, 0xDD);
    }
}

/* The same planes, 64 grid bytes at a time, for stride_w 1 (4 grid pixels of a row = 4 adjacent dy
 * pixels, O * 4 contiguous bytes): M[g][o] = the word of channel o over grid group g (one byte
 * permutation of the group's dy bytes; zero for padding), then plane o's 16 words of each 64 bytes
 * are a 16 x 16 word transpose of M's block. Covers the planes' whole first L bytes. */
static void wg_planes_by_words(const int8_t *dy, int64_t n_img, int64_t E, int64_t F, int64_t O, int64_t stride_h,
                               int64_t Hp, int64_t Wp, int64_t L, int64_t ld, uint32_t *M, int8_t *d) {
    static const int8_t zeros[64] = {0};
    int64_t per_row = Wp / 4, groups = L / 4, g = 0;
#if defined(__AVX512VBMI__)
    /* output byte 4o + k of the group's words = input byte k*O + o */
    __m512i perm_lo = _mm512_setzero_si512(), perm_hi = _mm512_setzero_si512();
    if (O <= 32) {
        int8_t lo[64], hi[64];
        for (int b = 0; b < 64; b++) {
            lo[b] = (int8_t)((b % 4) * O + b / 4);
            hi[b] = (int8_t)((b % 4) * O + 16 + b / 4);
        }
        perm_lo = _mm512_loadu_si512(lo);
        perm_hi = _mm512_loadu_si512(hi);
    }
#endif
    for (int64_t i = 0; i < n_img; i++)
        for (int64_t gy = 0; gy < Hp; gy++) {
            int64_t y = gy / stride_h;
            int dy_row = gy % stride_h == 0 && y < E;
            for (int64_t q = 0; q < per_row; q++, g++) {
                uint32_t *m = M + g * O;
                int64_t x0 = 4 * q, valid = dy_row ? niti_min64(4, F - x0) : 0;
                if (valid <= 0) { /* O <= 64 words: at most 4 vector stores */
                    for (int64_t o = 0; o < O; o += 16)
                        _mm512_mask_storeu_epi32(m + o, (__mmask16)(O - o >= 16 ? 0xFFFF : (1u << (O - o)) - 1),
                                                 _mm512_setzero_si512());
                    continue;
                }
                const int8_t *src = dy + ((i * E + y) * F + x0) * O;
#if defined(__AVX512VBMI__)
                if (O <= 32) { /* the valid pixels' bytes (missing ones read as zero), permuted */
                    int64_t bytes = valid * O, out = 4 * O; /* bytes read, bytes of words written */
                    __m512i a = _mm512_maskz_loadu_epi8(byte_mask(bytes), src);
                    __m512i b = bytes > 64 ? _mm512_maskz_loadu_epi8(byte_mask(bytes - 64), src + 64) : _mm512_setzero_si512();
                    _mm512_mask_storeu_epi8(m, byte_mask(out), _mm512_permutex2var_epi8(a, perm_lo, b));
                    if (out > 64) _mm512_mask_storeu_epi8(m + 16, byte_mask(out - 64), _mm512_permutex2var_epi8(a, perm_hi, b));
                    continue;
                }
#endif
                niti_interleave4(src, valid > 1 ? src + O : zeros, valid > 2 ? src + 2 * O : zeros,
                                 valid > 3 ? src + 3 * O : zeros, O, 0, m);
            }
        }
    memset(M + g * O, 0, sizeof(uint32_t) * (size_t)((groups - g) * O));
    /* M (groups x O words) -> planes (O x groups words), 16 x 16 words at a time in registers */
    for (int64_t b = 0; b < groups; b += 16)
        for (int64_t o0 = 0; o0 < O; o0 += 16) {
            __mmask16 cols = (__mmask16)(O - o0 >= 16 ? 0xFFFF : (1u << (O - o0)) - 1);
            __m512i r[16];
            for (int i = 0; i < 16; i++) r[i] = _mm512_maskz_loadu_epi32(cols, M + (b + i) * O + o0);
            transpose16_epi32(r);
            for (int j = 0; j < 16 && o0 + j < O; j++) _mm512_store_si512(d + (o0 + j) * ld + 4 * b, r[j]);
        }
}

typedef struct {
    int8_t *d;      /* Opad planes of ld bytes */
    uint32_t *m;    /* ld / 4 groups x O words (wg_planes_by_words) */
    uint8_t *x;     /* C planes of lx bytes */
    int32_t *lanes; /* (Opad / WG_OB) x (Tpad / WG_TB) blocks of WG_OB x WG_TB vectors */
    int64_t *total; /* Opad x Tpad */
    int64_t *dsum;  /* Opad */
    int64_t lane_products;
} wg_thread;

static void wg_flush(wg_thread *th, int64_t Opad, int64_t Tpad) {
    int64_t tblocks = Tpad / WG_TB;
    for (int64_t o = 0; o < Opad; o++)
        for (int64_t t = 0; t < Tpad; t++) {
            int32_t *v = th->lanes + (((o / WG_OB) * tblocks + t / WG_TB) * WG_OB * WG_TB + (o % WG_OB) * WG_TB + t % WG_TB) * 16;
            th->total[o * Tpad + t] += hsum64(_mm512_load_si512(v));
            memset(v, 0, 64);
        }
    th->lane_products = 0;
}

int niti_direct_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, int64_t *dw) {
    int64_t C = s->in_c, O = s->out_c, E = s->out_h, F = s->out_w;
    int64_t T = s->k_h * s->k_w * C, Opad = niti_round_up(O, WG_OB), Tpad = niti_round_up(T, WG_TB);
    int64_t Hp, Wp;
    wg_grid(s, &Hp, &Wp);
    int64_t S = Hp * Wp, off_max = (s->k_h - 1) * Wp + s->k_w - 1;
    memset(dw, 0, sizeof(int64_t) * (size_t)(O * T));
    if (s->batch == 0 || E * F == 0) return NITI_OK;
    int64_t imgs = niti_min64(s->batch, WG_BLOCK_BYTES / S > 0 ? WG_BLOCK_BYTES / S : 1);
    int64_t ld = niti_round_up(imgs * S, 64), lx = ld + niti_round_up(off_max + 64, 64);
    int64_t blocks = (s->batch + imgs - 1) / imgs;
    int threads = threads_for((double)s->batch * (double)(E * F) * (double)(O * T));
    if (threads > blocks) threads = (int)blocks;
    int64_t *tap_off = malloc(sizeof(int64_t) * (size_t)Tpad);
    wg_thread *th = calloc((size_t)threads, sizeof *th);
    int status = tap_off && th ? NITI_OK : NITI_E_NOMEM;
    for (int t = 0; t < threads && status == NITI_OK; t++) {
        th[t].d = alloc64((size_t)(Opad * ld));
        th[t].m = alloc64((size_t)(O * ld));
        th[t].x = alloc64((size_t)(C * lx));
        th[t].lanes = alloc64(sizeof(int32_t) * 16 * (size_t)(Opad * Tpad));
        th[t].total = calloc((size_t)(Opad * Tpad), sizeof(int64_t));
        th[t].dsum = calloc((size_t)Opad, sizeof(int64_t));
        if (!th[t].d || !th[t].m || !th[t].x || !th[t].lanes || !th[t].total || !th[t].dsum) {
            status = NITI_E_NOMEM;
        } else {
            memset(th[t].lanes, 0, sizeof(int32_t) * 16 * (size_t)(Opad * Tpad));
            memset(th[t].d, 0, (size_t)(Opad * ld)); /* planes O..Opad stay zero */
        }
    }
    if (status == NITI_OK) {
        for (int64_t t = 0; t < Tpad; t++) { /* tap t = (kh, kw, c): plane c, shifted; padding taps read plane 0 */
            int64_t kh = t / (s->k_w * C), kw = t / C % s->k_w, c = t % C;
            tap_off[t] = t < T ? c * lx + kh * Wp + kw : 0;
        }
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
            wg_thread *me = &th[thread_index()];
#pragma omp for schedule(dynamic, 1)
            for (int64_t blk = 0; blk < blocks; blk++) {
                int64_t i0 = blk * imgs, n_img = niti_min64(imgs, s->batch - i0);
                int64_t L = niti_round_up(n_img * S, 64);
                if (me->lane_products + L / 16 > WG_LANE_PRODUCTS) wg_flush(me, Opad, Tpad);
                /* X planes: the images' channel c, padded and biased; past the images 0x80 */
                for (int64_t c = 0; c < C; c++) {
                    uint8_t *plane = me->x + c * lx;
                    for (int64_t i = 0; i < n_img; i++)
                        padded_rows(s, x + (i0 + i) * s->in_h * s->in_w * C, Hp, Wp, c, 1, plane + i * S);
                    memset(plane + n_img * S, 0x80, (size_t)(lx - n_img * S));
                }
                /* D planes: dy's channel o on the grid, zero elsewhere */
                if (s->stride_w == 1) {
                    wg_planes_by_words(dy + i0 * E * F * O, n_img, E, F, O, s->stride_h, Hp, Wp, L, ld, me->m, me->d);
                } else {
                    memset(me->d, 0, (size_t)(O * ld));
                    wg_scatter_dy(dy + i0 * E * F * O, n_img, E, F, O, s->stride_h * Wp, s->stride_w, S, ld, me->d);
                }
                /* sum of each D plane (the correction), with a vector of ones as the unsigned side;
                 * four independent chains (L is a multiple of 64 bytes, not of 256) */
                __m512i ones = _mm512_set1_epi8(1);
                for (int64_t o = 0; o < O; o++) {
                    const int8_t *plane = me->d + o * ld;
                    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
                    int64_t j = 0;
                    for (; j + 256 <= L; j += 256) {
                        a0 = niti_dpbusd(a0, ones, _mm512_load_si512(plane + j));
                        a1 = niti_dpbusd(a1, ones, _mm512_load_si512(plane + j + 64));
                        a2 = niti_dpbusd(a2, ones, _mm512_load_si512(plane + j + 128));
                        a3 = niti_dpbusd(a3, ones, _mm512_load_si512(plane + j + 192));
                    }
                    for (; j < L; j += 64) a0 = niti_dpbusd(a0, ones, _mm512_load_si512(plane + j));
                    me->dsum[o] += hsum64(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
                }
                for (int64_t ob = 0; ob < Opad / WG_OB; ob++)
                    for (int64_t tb = 0; tb < Tpad / WG_TB; tb++) {
                        const uint8_t *xt[WG_TB];
                        for (int k = 0; k < WG_TB; k++) xt[k] = me->x + tap_off[tb * WG_TB + k];
                        wg_block(me->d + ob * WG_OB * ld, ld, xt, L,
                                 me->lanes + (ob * (Tpad / WG_TB) + tb) * WG_OB * WG_TB * 16);
                    }
                me->lane_products += L / 16;
            }
            wg_flush(me, Opad, Tpad);
        }
        for (int t = 0; t < threads; t++)
            for (int64_t o = 0; o < O; o++)
                for (int64_t k = 0; k < T; k++) dw[o * T + k] += th[t].total[o * Tpad + k] - 128 * th[t].dsum[o];
    }
    if (th)
        for (int t = 0; t < threads; t++) {
            free(th[t].d);
            free(th[t].m);
            free(th[t].x);
            free(th[t].lanes);
            free(th[t].total);
            free(th[t].dsum);
        }
    free(th);
    free(tap_off);
    if (status != NITI_OK) return niti_fail(status, "niti_conv2d_weight_grad: out of memory");
    return NITI_OK;
}

#else /* no AVX-512 VNNI: the GEMM path serves every shape */

int niti_direct_forward_applies(const niti_conv_shape *s) { (void)s; return 0; }
int niti_direct_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y) {
    (void)s, (void)x, (void)w, (void)y;
    return niti_fail(NITI_E_ARG, "niti_direct_forward: not built (needs AVX-512 VNNI)");
}
int niti_direct_weight_grad_applies(const niti_conv_shape *s) { (void)s; return 0; }
int niti_direct_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, int64_t *dw) {
    (void)s, (void)x, (void)dy, (void)dw;
    return niti_fail(NITI_E_ARG, "niti_direct_weight_grad: not built (needs AVX-512 VNNI)");
}

#endif
