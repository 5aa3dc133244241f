/* cpu_amx_conv.c: stride-1 convs on AMX tiles over a zero-gapped grid, without patch matrices.
 *
 * The grid (xg, pixel-major like NHWC): each image row of x followed by pad_w zero pixels, each image
 * by pad_h zero rows, so the grid is Wp = W + pad_w wide. For a stride-1 conv every tap (kh, kw) is
 * then one constant shift of the flattened grid index: the output pixel at grid position q reads x
 * at q + off(tap), off = kh * Wp + kw, and a window's taps outside the image land on zero gap pixels
 * (left of a row is the previous row's gap). Sums are exact, so every result is bit-identical to
 * the patch GEMM's. The price is the gaps: (H + pad_h)(W + pad_w) / HW more rows or K, 6 % at
 * 32 x 32 with pad 1, 27 % at 8 x 8.
 *
 * Weight gradient. The patch GEMM packs every window, k_h * k_w times x's bytes per step, the
 * largest packing cost of a VGG step. Here dy goes on the same grid, transposed to one row of bytes
 * per output channel (dyg, zeros off the output pixels):
 *
 *     dw[o, tap, c] = sum_q dyg[o][q - off(tap)] * xg[q][c]
 *
 * A K slice of xg is packed into AMX B panels once and serves all taps; each tap's A tiles load
 * straight from dyg at a shifted address (tile rows need not be packed, only readable).
 *
 * Forward (and the input gradient, the forward conv of dy with the flipped kernel): an implicit
 * GEMM whose A tiles are read in place from xg (see the forward section below).
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
    /* the gaps add at most a fifth to K: on 8 x 8 maps (27 %) the patch GEMM measured as fast */
    int64_t grid = (s->in_h + s->pad_h) * (s->in_w + s->pad_w);
    return niti_active_engine() == &niti_amx_engine && s->batch > 0 && s->stride_h == 1 && s->stride_w == 1 &&
           s->k_h > s->pad_h && s->k_w > s->pad_w && s->in_c >= MIN_CHANNELS && s->out_c >= MIN_CHANNELS &&
           5 * grid <= 6 * s->in_h * s->in_w; /* (an empty batch: no grid, and dw is zeros) */
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
 * stores (unless `accumulate`: out already holds this thread's earlier slices), later ones add. */
typedef struct {
    int64_t o_lo, o_hi, c_lo, c_hi, s_lo, s_hi;
    void *out;
} share;

static void run_share(const grid_plan *g, const niti_operand *xop, const int8_t *dyg, int64_t kc_max, const share *w,
                      int out_wide, uint8_t *b_pack, int8_t *b_scratch, int accumulate) {
    const niti_conv_shape *s = g->s;
    int64_t C = s->in_c, ldc = g->taps * C;
    size_t elem = out_wide ? sizeof(int64_t) : sizeof(int32_t);
    int32_t edge[TILE * TILE] __attribute__((aligned(64)));
    for (int64_t sl = w->s_lo; sl < w->s_hi; sl++) {
        int64_t q0 = sl * kc_max, kc = niti_min64(kc_max, g->Q - q0), k_pad = niti_k_pad(&niti_amx_engine, kc);
        int first = sl == w->s_lo && !accumulate;
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
    /* Split by output channels, each thread packs all of B (xg) for its own tiles; with at most two
     * output tiles a thread, that duplicated packing cost more than K slices into private outputs
     * (64 x 32 x 32 x 128 -> 128: 7.5-8.1 -> 7.2-7.4 ms; 128 x 14 x 14 x 64 -> 64: 1.0 -> 0.9 ms). */
    int few_out_tiles = o_tiles <= 2 * threads && slices >= 2 * threads;
    if (few_out_tiles || (o_tiles < threads && c_tiles < threads)) {
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
    int used[64] = {0}; /* K split: whether thread t took a slice */
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
            if (k_split) {
                /* K slices from a queue into this thread's output (the first it takes stores, later
                 * ones add): a thread slowed by another process takes fewer, where a static split
                 * of the slices made the other wait at the end */
                share mine = shares[t];
                int taken = 0;
#pragma omp for schedule(dynamic, 1) nowait
                for (int64_t sl = 0; sl < slices; sl++) {
                    mine.s_lo = sl, mine.s_hi = sl + 1;
                    run_share(&g, &xop, dyg, kc_max, &mine, out_wide, b_pack[t], b_scratch[t], taken);
                    taken = 1;
                }
                used[t] = taken;
            } else {
                run_share(&g, &xop, dyg, kc_max, &shares[t], out_wide, b_pack[t], b_scratch[t], 0);
            }
            niti_amx_engine.leave();
        }
        if (k_split) { /* the private outputs of the threads that took slices, added into dw */
            int have = used[0]; /* thread 0's output is dw itself */
            for (int t = 1; t < threads; t++) {
                if (!used[t]) continue;
                if (!have) {
                    memcpy(dw, part[t], (size_t)out_elems * elem);
                    have = 1;
                    continue;
                }
                for (int64_t i = 0; i < out_elems; i++) {
                    if (out_wide) ((int64_t *)dw)[i] += ((const int64_t *)part[t])[i];
                    else ((int32_t *)dw)[i] += ((const int32_t *)part[t])[i];
                }
            }
        }
    }
    for (int t = 0; b_pack && t < threads; t++) free(b_pack[t]);
    for (int t = 0; b_scratch && t < threads; t++) free(b_scratch[t]);
    for (int t = 0; words && t < threads; t++) free(words[t]);
    for (int t = 0; part && t < threads; t++) free(part[t]);
    free(b_pack), free(b_scratch), free(words), free(part), free(zeros), free(xg), free(dyg);
    return ok ? NITI_OK : niti_fail(NITI_E_NOMEM, "conv2d weight grad: out of memory for the AMX grid buffers");
}

/* ==== forward (and the stride-1 input gradient, a forward conv of dy) ============================= */
/* y[q, o] = sum over kernel rows kh of  xg[q + kh * Wp .. + k_w pixels][all c] . w[o, kh, :, :]: the k_w
 * taps of a kernel row are k_w adjacent grid pixels, so a kernel row of a window is k_w * C contiguous
 * bytes of xg, and a tile of 16 windows is 16 such runs at a stride of C bytes (overlapping rows are
 * fine for tile loads). M runs over grid positions q = (n * Hp + y) * Wp + x; rows with y >= E or
 * x >= F fall on gaps and are computed but not stored. B holds each kernel row of w as 32-column
 * panels K_row_pad = round_up(k_w * C, 64) deep, so the 4 accumulator tiles sum all of K in
 * registers and C is stored once. */
#define FWD_MB 128 /* grid positions per work item: a B panel is reused by 4 tiles of 32 rows */

typedef struct {
    grid_plan g;
    int64_t k_row, k_row_pad; /* bytes of a kernel row of w (k_w * C) and of its packed panels */
    int64_t o_pad;            /* out_c rounded up to whole 32-column panels */
} fwd_plan;

int niti_amx_forward_applies(const niti_conv_shape *s) {
#ifdef NITI_NO_AMX_GRID
    (void)s;
    return 0;
#endif
    int64_t k_row = s->k_w * s->in_c, k_row_pad = niti_round_up(k_row, 64);
    /* At most a third of a kernel row's K padding (C >= 16 at 3x3), one packed slice deep, and at
     * most 64 output channels: narrow outputs, where the patch GEMM's A gather is spread over few
     * columns (and the direct kernels' vectors run part-empty). On wider outputs the packed GEMM
     * measured faster (docs/results.md, kernels: AMX stride-1 conv paths). */
    /* int32 tiles: a longer reduction goes to the GEMM path's int64 accumulation and its check */
    return niti_active_engine() == &niti_amx_engine && niti_k_fits_s32(s->k_h * k_row) && s->stride_h == 1 &&
           s->stride_w == 1 && s->k_h > s->pad_h && s->k_w > s->pad_w && 3 * k_row_pad <= 4 * k_row && k_row_pad <= NITI_AMX_KC_MAX && s->out_c >= 16 &&
           s->out_c <= 64;
}

/* A grid row's place (niti_nyx over the Hp x Wp grid images): image n, grid row y and column x, an
 * output pixel when y < E and x < F. Found by division once per tile, then stepped. */
typedef niti_nyx grid_pos;

static grid_pos grid_pos_at(const grid_plan *g, int64_t q) { return niti_nyx_at(q, g->Hp, g->Wp); }

static inline void grid_pos_next(const grid_plan *g, grid_pos *p) { niti_nyx_next(p, g->Hp, g->Wp); }

/* y's pixel index of an output position */
static inline int64_t grid_pixel(const niti_conv_shape *s, const grid_pos *p) {
    return (p->n * s->out_h + p->y) * s->out_w + p->x;
}

/* The 16 grid rows from p: all output pixels of one output row (then consecutive in y)? */
static inline int grid_run_direct(const niti_conv_shape *s, const grid_pos *p, int64_t rows) {
    return rows == 16 && p->y < s->out_h && p->x + 15 < s->out_w;
}

/* Grid rows q0.. (xq = xg + q0 * C, `rows` of them, <= 32) x one 32-column panel of every kernel row
 * (columns [o0, o0 + nr) of y). Each 16-row half that is 16 consecutive pixels of one output row is
 * stored from its tiles straight into y; the others go through t, row by row, skipping gap rows. */
static void fwd_tile(const fwd_plan *f, const int8_t *xq, const uint8_t *b, int64_t q0, int64_t rows, int64_t o0,
                     int64_t nr, int32_t *y, int32_t *t) {
    const niti_conv_shape *s = f->g.s;
    int64_t C = s->in_c, row_step = f->g.Wp * C, kh_stride = f->o_pad * f->k_row_pad, ldy = s->out_c * 4;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t kh = 0; kh < s->k_h; kh++) {
        const int8_t *a = xq + kh * row_step;
        const uint8_t *bk = b + kh * kh_stride;
        for (int64_t k = 0; k < f->k_row_pad; k += 64) {
            _tile_loadd(4, a + k, C);
            _tile_loadd(5, a + 16 * C + k, C);
            _tile_loadd(6, bk + k / 4 * (4 * TILE), 4 * TILE);
            _tile_loadd(7, bk + k / 4 * (4 * TILE) + 64, 4 * TILE);
            _tile_dpbssd(0, 4, 6);
            _tile_dpbssd(1, 4, 7);
            _tile_dpbssd(2, 5, 6);
            _tile_dpbssd(3, 5, 7);
        }
    }
    grid_pos p0 = grid_pos_at(&f->g, q0), p1 = p0;
    for (int r = 0; r < 16; r++) grid_pos_next(&f->g, &p1);
    int full = nr == TILE;
    int direct0 = full && grid_run_direct(s, &p0, niti_min64(16, rows));
    int direct1 = full && grid_run_direct(s, &p1, rows - 16);
    if (direct0) {
        int32_t *dst = y + grid_pixel(s, &p0) * s->out_c + o0;
        _tile_stored(0, dst, ldy);
        _tile_stored(1, dst + 16, ldy);
    } else {
        _tile_stored(0, t, 4 * TILE);
        _tile_stored(1, t + 16, 4 * TILE);
    }
    if (direct1) {
        int32_t *dst = y + grid_pixel(s, &p1) * s->out_c + o0;
        _tile_stored(2, dst, ldy);
        _tile_stored(3, dst + 16, ldy);
    } else {
        _tile_stored(2, t + 16 * TILE, 4 * TILE);
        _tile_stored(3, t + 16 * TILE + 16, 4 * TILE);
    }
    if (direct0 && direct1) return;
    __mmask16 lo = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1), hi = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    grid_pos p = p0;
    for (int64_t r = 0; r < rows; r++, grid_pos_next(&f->g, &p)) {
        if ((r < 16 ? direct0 : direct1) || p.y >= s->out_h || p.x >= s->out_w) continue;
        int32_t *dst = y + grid_pixel(s, &p) * s->out_c + o0;
        _mm512_mask_storeu_epi32(dst, lo, _mm512_load_si512(t + r * TILE));
        _mm512_mask_storeu_epi32(dst + 16, hi, _mm512_load_si512(t + r * TILE + 16));
    }
}

int niti_amx_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y) {
    fwd_plan f;
    f.g = make_plan(s);
    f.k_row = s->k_w * s->in_c;
    f.k_row_pad = niti_round_up(f.k_row, 64);
    f.o_pad = niti_round_up(s->out_c, TILE);
    const grid_plan *g = &f.g;
    int64_t C = s->in_c, O = s->out_c, rows = s->batch * g->Hp * g->Wp;
    /* xg, then zeros for the reads past the last image: a block's last rows, its windows' reach, a chunk */
    int64_t tail = niti_round_up(FWD_MB, TILE) + s->k_h * g->Wp + s->k_w + 1;
    int64_t xg_bytes = niti_round_up((g->Q + tail) * C + 64, 64);
    int64_t blocks = (rows + FWD_MB - 1) / FWD_MB, panels = f.o_pad / TILE, items = blocks * panels;
    int threads = niti_threads();
    if ((double)rows * (double)O * (double)(s->k_h * f.k_row) < (double)(1 << 24)) threads = 1;
    if (threads > items) threads = (int)items;
    int8_t *xg = aligned_alloc(64, (size_t)xg_bytes);
    uint8_t *b = aligned_alloc(64, (size_t)(s->k_h * f.o_pad * f.k_row_pad));
    if (!xg || !b) {
        free(xg), free(b);
        return niti_fail(NITI_E_NOMEM, "conv2d: out of memory for the AMX grid buffers");
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int32_t t[TILE * TILE] __attribute__((aligned(64)));
#pragma omp for schedule(static) nowait
        for (int64_t n = 0; n < s->batch; n++) build_xg(g, x, xg, n);
#pragma omp for schedule(static)
        for (int64_t kh = 0; kh < s->k_h; kh++) { /* kernel row kh of w: O rows of k_row bytes, ld a whole kernel */
            niti_operand wk = niti_dense(w + kh * f.k_row, O, f.k_row, s->k_h * f.k_row, 0);
            niti_amx_engine.pack_b(&wk, 0, O, 0, f.k_row, b + kh * f.o_pad * f.k_row_pad, NULL);
        }
#pragma omp single
        memset(xg + g->Q * C, 0, (size_t)(xg_bytes - g->Q * C));
        /* the barriers above: xg and the panels are complete */
        niti_amx_engine.enter();
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            int64_t blk = it / panels, p = it % panels, o0 = p * TILE, nr = niti_min64(TILE, O - o0);
            const uint8_t *bp = b + p * TILE * f.k_row_pad;
            for (int64_t q0 = blk * FWD_MB; q0 < niti_min64(rows, (blk + 1) * FWD_MB); q0 += TILE) {
                fwd_tile(&f, xg + q0 * C, bp, q0, niti_min64(TILE, rows - q0), o0, nr, y, t);
            }
        }
        niti_amx_engine.leave();
    }
    free(xg), free(b);
    return NITI_OK;
}

#else /* no AMX in this build */

int niti_amx_weight_grad_applies(const niti_conv_shape *s) { (void)s; return 0; }
int niti_amx_forward_applies(const niti_conv_shape *s) { (void)s; return 0; }
int niti_amx_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y) {
    (void)s, (void)x, (void)w, (void)y;
    return niti_fail(NITI_E_ARG, "niti_amx_forward: not built (needs AMX-INT8)");
}
int niti_amx_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, void *dw, int out_wide) {
    (void)s, (void)x, (void)dy, (void)dw, (void)out_wide;
    return niti_fail(NITI_E_ARG, "niti_amx_weight_grad: not built (needs AMX-INT8)");
}

#endif
