/* cpu_amx_conv.c: stride-1 conv weight gradients on AMX tiles, without a patch matrix.
 *
 * dw[o, kh, kw, c] = sum over output pixels of dy[pixel, o] * x[pixel's window tap (kh, kw), c]. The
 * patch GEMM packs every window: k_h * k_w times x's bytes per step, the largest packing cost of a
 * VGG step. Here x is laid out once on a grid (xg, pixel-major like NHWC): each image row followed
 * by pad_w zero pixels, each image by pad_h zero rows, so the grid is Wp = W + pad_w wide. For a
 * stride-1 conv every tap is then one constant shift of the flattened grid index: the output pixel
 * at grid position q reads x at q + off(tap), off = kh * Wp + kw, and a window's taps outside the
 * image land on zero gap pixels (left of a row is the previous row's gap). dy goes on the same
 * grid, transposed to one row of bytes per output channel (dyg, zeros off the output pixels):
 *
 *     dw[o, tap, c] = sum_q dyg[o][q - off(tap)] * xg[q][c]
 *
 * A K slice of xg is packed into AMX B panels once and serves all taps; each tap's A tiles load
 * straight from dyg at a shifted address (tile rows need not be packed, only readable). The cost
 * is the gaps: K grows by (H + pad_h)(W + pad_w) / HW, 6 % at 32 x 32 with pad 1, 27 % at 8 x 8.
 * Sums are exact, so the result is bit-identical to the patch GEMM's.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#if NITI_AMX

#include <immintrin.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TILE 32             /* the AMX engine's C tile: 32 output channels x 32 input channels */
#define A_SLACK 64          /* bytes past the last grid position: a slice's last A tile row reads to k_pad */
#ifndef KQ
#define KQ 512              /* bytes of K per chunk: a 32-row A chunk and a 32-column B chunk, 16 KB each, fit L1 */
#endif
#define MIN_CHANNELS 32     /* narrower layers leave most of a 32-wide tile empty: the patch GEMM packs tighter */

typedef struct {
    const niti_conv_shape *s;
    int64_t Wp, Hp, lead;    /* grid width and rows per image (pixels); grid position of x[n=0, -pad_h, -pad_w] */
    int64_t Q;               /* grid positions: the GEMM's K */
    int64_t front, ld;       /* dyg row: front zero bytes (>= the largest tap offset), then Q, then A_SLACK */
    int64_t taps;
} grid_plan;

int niti_amx_weight_grad_applies(const niti_conv_shape *s) {
#ifdef NITI_NO_AMX_GRID /* test and benchmark builds: the AMX engine's patch GEMM instead */
    (void)s;
    return 0;
#endif
    return niti_active_engine() == &niti_amx_engine && s->stride_h == 1 && s->stride_w == 1 && s->k_h > s->pad_h &&
           s->k_w > s->pad_w && s->in_c >= MIN_CHANNELS && s->out_c >= MIN_CHANNELS;
}

static grid_plan make_plan(const niti_conv_shape *s) {
    grid_plan g;
    g.s = s;
    g.Wp = s->in_w + s->pad_w;
    g.Hp = s->in_h + s->pad_h;
    g.lead = s->pad_h * g.Wp + s->pad_w;
    g.Q = g.lead + s->batch * g.Hp * g.Wp;
    g.taps = s->k_h * s->k_w;
    g.front = niti_round_up((s->k_h - 1) * g.Wp + (s->k_w - 1), 64);
    g.ld = niti_round_up(g.front + g.Q + A_SLACK, 64);
    return g;
}

/* x (N, H, W, C) -> xg (Q, C): image n's row r at grid position lead + (n * Hp + r) * Wp, zeros between. */
static void build_xg(const grid_plan *g, const int8_t *x, int8_t *xg, int64_t n) {
    const niti_conv_shape *s = g->s;
    int64_t C = s->in_c, row_bytes = s->in_w * C, gap_bytes = s->pad_w * C;
    int64_t base = g->lead + n * g->Hp * g->Wp;
    if (n == 0) memset(xg, 0, (size_t)(g->lead * C));
    for (int64_t r = 0; r < s->in_h; r++) {
        int8_t *dst = xg + (base + r * g->Wp) * C;
        memcpy(dst, x + (n * s->in_h + r) * row_bytes, (size_t)row_bytes);
        memset(dst + row_bytes, 0, (size_t)gap_bytes);
    }
    memset(xg + (base + s->in_h * g->Wp) * C, 0, (size_t)(s->pad_h * g->Wp * C));
}

/* dy row (n, y): F pixels x O channels -> dyg[o][front + q + x], q the grid position of its pixel 0.
 * 16 pixels at a time: four 4-pixel interleaves give, per channel, four words of 4 pixels; a 4 x 4
 * word transpose per 4 channels gives each channel's 16 bytes, stored with a mask past the row end. */
static void scatter_dy_row(const grid_plan *g, const int8_t *src, int64_t q, int8_t *dyg, uint32_t *words,
                           const int8_t *zeros) {
    int64_t O = g->s->out_c, F = g->s->out_w;
    for (int64_t x0 = 0; x0 < F; x0 += 16) {
        int64_t valid = niti_min64(16, F - x0);
        for (int k = 0; k < 4; k++) {
            const int8_t *l[4];
            for (int t = 0; t < 4; t++) l[t] = 4 * k + t < valid ? src + (x0 + 4 * k + t) * O : zeros;
            niti_interleave4(l[0], l[1], l[2], l[3], O, 0, words + k * O);
        }
        __mmask16 mask = (__mmask16)((1u << valid) - 1);
        int8_t *dst = dyg + g->front + q + x0;
        int64_t o = 0;
        for (; o + 4 <= O; o += 4) {
            __m128i w0 = _mm_loadu_si128((const __m128i *)(words + o));
            __m128i w1 = _mm_loadu_si128((const __m128i *)(words + O + o));
            __m128i w2 = _mm_loadu_si128((const __m128i *)(words + 2 * O + o));
            __m128i w3 = _mm_loadu_si128((const __m128i *)(words + 3 * O + o));
            __m128i t0 = _mm_unpacklo_epi32(w0, w1), t1 = _mm_unpacklo_epi32(w2, w3);
            __m128i t2 = _mm_unpackhi_epi32(w0, w1), t3 = _mm_unpackhi_epi32(w2, w3);
            _mm_mask_storeu_epi8(dst + o * g->ld, mask, _mm_unpacklo_epi64(t0, t1));
            _mm_mask_storeu_epi8(dst + (o + 1) * g->ld, mask, _mm_unpackhi_epi64(t0, t1));
            _mm_mask_storeu_epi8(dst + (o + 2) * g->ld, mask, _mm_unpacklo_epi64(t2, t3));
            _mm_mask_storeu_epi8(dst + (o + 3) * g->ld, mask, _mm_unpackhi_epi64(t2, t3));
        }
        for (; o < O; o++)
            for (int64_t x = 0; x < valid; x++) dst[o * g->ld + x] = src[(x0 + x) * O + o];
    }
}

/* One thread's share: output channels [o_lo, o_hi) x input channels [c_lo, c_hi) over K slices
 * [s_lo, s_hi), into out (row o at out + o * ldc, tap t's columns at + t * C); the first slice
 * stores, later ones add. */
typedef struct {
    int64_t o_lo, o_hi, c_lo, c_hi, s_lo, s_hi;
    void *out;
} share;

static void run_share(const grid_plan *g, const niti_operand *xop, const int8_t *dyg, int64_t kc_max, const share *w,
                      int out_wide, uint8_t *b_pack, int8_t *b_scratch) {
    const niti_conv_shape *s = g->s;
    int64_t C = s->in_c, ldc = g->taps * C;
    size_t elem = out_wide ? sizeof(int64_t) : sizeof(int32_t);
    int32_t edge[TILE * TILE] __attribute__((aligned(64)));
    for (int64_t sl = w->s_lo; sl < w->s_hi; sl++) {
        int64_t q0 = sl * kc_max, kc = niti_min64(kc_max, g->Q - q0), k_pad = niti_k_pad(&niti_amx_engine, kc);
        int first = sl == w->s_lo;
        int c_mode = out_wide ? (first ? NITI_C_STORE64 : NITI_C_ADD64) : (first ? NITI_C_STORE32 : NITI_C_ADD32);
        niti_amx_engine.pack_b(xop, w->c_lo, w->c_hi - w->c_lo, q0, kc, b_pack, b_scratch);
        for (int64_t o0 = w->o_lo; o0 < w->o_hi; o0 += TILE) {
            int64_t mr = niti_min64(TILE, w->o_hi - o0);
            for (int64_t c0 = w->c_lo; c0 < w->c_hi; c0 += TILE) {
                int64_t nr = niti_min64(TILE, w->c_hi - c0);
                const uint8_t *b = b_pack + (c0 - w->c_lo) * k_pad;
                /* KQ-deep chunks, every tap per chunk: the chunk's B panel and A rows (shifted by at
                 * most two grid rows between taps) stay in L1 for all k_h * k_w uses */
                for (int64_t k1 = 0; k1 < kc; k1 += KQ) {
                    int64_t kq = niti_min64(KQ, kc - k1);
                    int mode = k1 == 0 ? c_mode : out_wide ? NITI_C_ADD64 : NITI_C_ADD32;
                    for (int64_t kh = 0; kh < s->k_h; kh++) {
                        for (int64_t kw = 0; kw < s->k_w; kw++) {
                            int64_t tap = kh * s->k_w + kw;
                            const int8_t *a = dyg + o0 * g->ld + g->front + q0 + k1 - (kh * g->Wp + kw);
                            char *c = (char *)w->out + (o0 * ldc + tap * C + c0) * (int64_t)elem;
                            if (mr == TILE && nr == TILE) {
                                niti_amx_tile32(kq, a, g->ld, b + k1 / 4 * (4 * TILE), c, ldc, mode);
                            } else {
                                niti_amx_tile32(kq, a, g->ld, b + k1 / 4 * (4 * TILE), edge, TILE, NITI_C_STORE32);
                                niti_merge_edge_tile(edge, TILE, mr, nr, c, ldc, mode);
                            }
                        }
                    }
                }
            }
        }
    }
}

/* Shares: the output split along its output or input channels (whole tiles, each thread packing
 * only its columns' B), or, where neither has a tile per thread, K slices into private outputs. */
static int plan_shares(const grid_plan *g, int64_t slices, int threads, share *shares, int *k_split) {
    const niti_conv_shape *s = g->s;
    int64_t o_tiles = (s->out_c + TILE - 1) / TILE, c_tiles = (s->in_c + TILE - 1) / TILE;
    *k_split = 0;
    if (o_tiles < threads && c_tiles < threads) {
        *k_split = slices >= threads;
        if (!*k_split) threads = 1;
    }
    int split_o = o_tiles >= c_tiles;
    int64_t tiles = *k_split ? slices : split_o ? o_tiles : c_tiles;
    if (threads > tiles) threads = (int)tiles;
    for (int t = 0; t < threads; t++) {
        int64_t lo = tiles * t / threads, hi = tiles * (t + 1) / threads;
        share w = {0, s->out_c, 0, s->in_c, 0, slices, NULL};
        if (*k_split) {
            w.s_lo = lo, w.s_hi = hi;
        } else if (split_o) {
            w.o_lo = lo * TILE, w.o_hi = niti_min64(s->out_c, hi * TILE);
        } else {
            w.c_lo = lo * TILE, w.c_hi = niti_min64(s->in_c, hi * TILE);
        }
        shares[t] = w;
    }
    return threads;
}

int niti_amx_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, void *dw, int out_wide) {
    grid_plan g = make_plan(s);
    int64_t C = s->in_c, O = s->out_c, out_elems = O * g.taps * C;
    int64_t o_rows = niti_round_up(O, TILE); /* the last A tile's rows past O: readable zeros */
    int64_t kc_max = niti_amx_engine.kc_max, slices = (g.Q + kc_max - 1) / kc_max;
    size_t elem = out_wide ? sizeof(int64_t) : sizeof(int32_t);
    int threads = niti_threads();
    if ((double)O * (double)C * (double)g.taps * (double)g.Q < (double)(1 << 24)) threads = 1;
    share shares[64];
    int k_split;
    if (threads > 64) threads = 64;
    threads = plan_shares(&g, slices, threads, shares, &k_split);

    int ok = 1;
    int8_t *xg = aligned_alloc(64, (size_t)niti_round_up(g.Q * C, 64));
    int8_t *dyg = aligned_alloc(64, (size_t)(o_rows * g.ld));
    uint8_t **b_pack = calloc((size_t)threads, sizeof *b_pack);
    int8_t **b_scratch = calloc((size_t)threads, sizeof *b_scratch);
    uint32_t **words = calloc((size_t)threads, sizeof *words);
    void **part = calloc((size_t)threads, sizeof *part);
    int8_t *zeros = calloc((size_t)O, 1);
    niti_operand xop = niti_dense(xg, C, g.Q, C, 1); /* rows = input channels, depth = grid positions */
    ok = xg && dyg && b_pack && b_scratch && words && part && zeros;
    for (int t = 0; ok && t < threads; t++) {
        int64_t cols = niti_round_up(shares[t].c_hi - shares[t].c_lo, TILE);
        ok = (b_pack[t] = aligned_alloc(64, (size_t)(cols * niti_round_up(kc_max, 64)))) &&
             (b_scratch[t] = aligned_alloc(64, (size_t)niti_round_up(niti_max64(xop.scratch_bytes, 64), 64))) &&
             (words[t] = aligned_alloc(64, (size_t)niti_round_up(16 * O, 64)));
        shares[t].out = dw;
        if (ok && k_split && t > 0) ok = (shares[t].out = part[t] = aligned_alloc(64, (size_t)niti_round_up(out_elems * (int64_t)elem, 64))) != NULL;
    }
    if (ok) {
#pragma omp parallel num_threads(threads) if (threads > 1)
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
#pragma omp for schedule(static) nowait
            for (int64_t n = 0; n < s->batch; n++) build_xg(&g, x, xg, n);
#pragma omp for schedule(static)
            for (int64_t o = 0; o < o_rows; o++) memset(dyg + o * g.ld, 0, (size_t)g.ld);
#pragma omp for schedule(static)
            for (int64_t row = 0; row < s->batch * s->out_h; row++) {
                int64_t n = row / s->out_h, y = row % s->out_h;
                int64_t q = g.lead + (n * g.Hp + y - s->pad_h) * g.Wp - s->pad_w;
                scatter_dy_row(&g, dy + row * s->out_w * O, q, dyg, words[t], zeros);
            }
            /* the loop's barrier: xg and dyg are complete */
            niti_amx_engine.enter();
            run_share(&g, &xop, dyg, kc_max, &shares[t], out_wide, b_pack[t], b_scratch[t]);
            niti_amx_engine.leave();
        }
        if (k_split) /* the private outputs of K-split shares are added into dw */
            for (int t = 1; t < threads; t++)
                for (int64_t i = 0; i < out_elems; i++) {
                    if (out_wide) ((int64_t *)dw)[i] += ((const int64_t *)part[t])[i];
                    else ((int32_t *)dw)[i] += ((const int32_t *)part[t])[i];
                }
    }
    for (int t = 0; b_pack && t < threads; t++) free(b_pack[t]);
    for (int t = 0; b_scratch && t < threads; t++) free(b_scratch[t]);
    for (int t = 0; words && t < threads; t++) free(words[t]);
    for (int t = 0; part && t < threads; t++) free(part[t]);
    free(b_pack), free(b_scratch), free(words), free(part), free(zeros), free(xg), free(dyg);
    return ok ? NITI_OK : niti_fail(NITI_E_NOMEM, "conv2d weight grad: out of memory for the AMX grid buffers");
}

#else /* no AMX in this build */

int niti_amx_weight_grad_applies(const niti_conv_shape *s) { (void)s; return 0; }
int niti_amx_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, void *dw, int out_wide) {
    (void)s, (void)x, (void)dy, (void)dw, (void)out_wide;
    return niti_fail(NITI_E_ARG, "niti_amx_weight_grad: not built (needs AMX-INT8)");
}

#endif
