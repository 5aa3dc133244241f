/* cpu_gemm.c: the blocked, packed, multithreaded int8 GEMM engine: C = A * B^T.
 *
 * Structure (BLIS/GotoBLAS): for each NC-column block of B and KC-deep slice of K, B is packed into
 * NR-wide panels (stays in L2, each panel in L1 while it is used); for each MC-row block of A, A is
 * packed into MR-wide panels; the micro-kernel then sweeps MR x NR tiles. Packing turns any
 * operand (dense in either orientation, or gathered conv patches) into one panel layout, which is
 * how the conv and transposed GEMMs of training run without materialising im2col matrices.
 *
 * Threads: C is cut along its longer side into one contiguous slab per thread; each thread runs
 * the whole blocked loop on its slab with private buffers, so there are no barriers and results do
 * not depend on the thread count (integer sums are exact in any order).
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Below this many MACs a single thread is faster than waking the others. */
#define NITI_GEMM_PARALLEL_MIN_MACS (1 << 21)

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- packing --------------------------------------------------------------------------------------- */
/* Panels: W rows each; panel word (g, r) holds k = 4g..4g+3 of row r, each byte XOR `flip`
 * (0x80 turns int8 into int8 + 128 as uint8); rows past nr and k past nk are int8 zeros. For the
 * A side, corr[r] = 128 * sum_k row r (0 for padding rows). Panel p starts at dst + p * k_groups * W. */

/* Row-major view (element (r, k) at v[r * ld + k]): group by group, so the panel is written
 * sequentially while W row streams are read (each row's cache line serves 16 groups). W is a
 * multiple of 4 (all MR, NR are). */
static void pack_rowmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                          int32_t *corr) {
    int64_t kg = (nk + 3) / 4, full = nk / 4;
    uint32_t flip_word = 0x01010101u * flip;
    for (int64_t p = 0; p * W < nr; p++) {
        uint32_t *pd = dst + p * kg * W;
        int64_t rows = min64(W, nr - p * W);
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
        if (corr) {
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
static void interleave4(const int8_t *l0, const int8_t *l1, const int8_t *l2, const int8_t *l3, int64_t cols,
                        uint8_t flip, uint32_t *out) {
    int64_t c = 0;
#ifdef __SSE2__
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
static void pack_kmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                        int32_t *corr) {
    int64_t kg = (nk + 3) / 4;
    uint32_t flip_word = 0x01010101u * flip;
    static const int8_t zeros[NITI_PANEL_MAX] = {0};
    for (int64_t p = 0; p * W < nr; p++) {
        uint32_t *pd = dst + p * kg * W;
        int64_t rows = min64(W, nr - p * W);
        const int8_t *col0 = v + p * W;
        for (int64_t g = 0; g < kg; g++) {
            const int8_t *line[4];
            for (int t = 0; t < 4; t++) line[t] = 4 * g + t < nk ? col0 + (4 * g + t) * ld : zeros;
            interleave4(line[0], line[1], line[2], line[3], rows, flip, pd + g * W);
            for (int64_t r = rows; r < W; r++) pd[g * W + r] = flip_word;
        }
        if (corr) {
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


/* ---- drivers ------------------------------------------------------------------------------------ */
/* Two ways to share the work between threads:
 *  - shared B (B packed whole fits NITI_SHARED_B_BYTES and M has enough row tiles): the threads
 *    pack all of B once, together, then take MC-row blocks of C from a dynamic queue, each block
 *    going through all its K slices while it is in cache. This is the forward and input-gradient
 *    case (B is a weight tensor); a thread slowed by another process just takes fewer blocks.
 *  - slabs (long K, the weight gradients with K = batch * pixels, or too few rows): C is cut along
 *    its longer side into one slab per thread, and each thread packs one K slice of B at a time. */
#define NITI_SHARED_B_BYTES (8 << 20)
#define NITI_PACK_GROUP_PANELS 4 /* B panels per packing work item in the shared-B driver */

typedef struct {
    int64_t M, N, K, kc_max, ldc;
    int out_wide;
    void *C;
} gemm_plan;

typedef struct {
    uint32_t *a_pack, *b_pack; /* b_pack: slab driver only */
    int32_t *corr;
    int8_t *a_scratch, *b_scratch;
} gemm_buffers;

static void *alloc64(size_t bytes) {
    return bytes ? aligned_alloc(64, (size_t)round_up((int64_t)bytes, 64)) : NULL;
}

static void free_buffers(gemm_buffers *bufs, int count) {
    for (int t = 0; t < count; t++) {
        free(bufs[t].a_pack);
        free(bufs[t].b_pack);
        free(bufs[t].corr);
        free(bufs[t].a_scratch);
        free(bufs[t].b_scratch);
    }
    free(bufs);
}

/* Per-thread buffers, allocated before the parallel region so a failure is reported cleanly. */
static gemm_buffers *alloc_buffers(int count, const niti_operand *A, const niti_operand *B, int64_t kc_max,
                                   int64_t b_pack_bytes) {
    gemm_buffers *bufs = calloc((size_t)count, sizeof *bufs);
    if (!bufs) return NULL;
    for (int t = 0; t < count; t++) {
        gemm_buffers *b = &bufs[t];
        b->a_pack = alloc64((size_t)(NITI_MC * kc_max));
        b->b_pack = alloc64((size_t)b_pack_bytes);
        b->corr = alloc64(sizeof(int32_t) * NITI_MC);
        b->a_scratch = alloc64((size_t)A->scratch_bytes);
        b->b_scratch = alloc64((size_t)B->scratch_bytes);
        if (!b->a_pack || (b_pack_bytes && !b->b_pack) || !b->corr || (A->scratch_bytes && !b->a_scratch) ||
            (B->scratch_bytes && !b->b_scratch)) {
            free_buffers(bufs, count);
            return NULL;
        }
    }
    return bufs;
}

/* Add/store an MR x NR int32 tile into the valid mr x nr corner of C (edge tiles). */
static void merge_edge_tile(const int32_t *tile, int64_t mr, int64_t nr, void *c, int64_t ldc, int c_mode) {
    for (int64_t i = 0; i < mr; i++) {
        for (int64_t j = 0; j < nr; j++) {
            int32_t v = tile[i * NITI_NR + j];
            if (c_mode == NITI_C_STORE32) ((int32_t *)c)[i * ldc + j] = v;
            else if (c_mode == NITI_C_ADD32) ((int32_t *)c)[i * ldc + j] = (int32_t)((uint32_t)((int32_t *)c)[i * ldc + j] + (uint32_t)v);
            else if (c_mode == NITI_C_STORE64) ((int64_t *)c)[i * ldc + j] = v;
            else ((int64_t *)c)[i * ldc + j] += v;
        }
    }
}

/* All MR x NR tiles of the packed blocks (mc x nc) for the K slice starting at pc; the first slice
 * stores into C, later ones add. */
static void block_tiles(const gemm_plan *plan, const uint32_t *a_pack, const int32_t *corr, const uint32_t *b_pack,
                        int64_t ic, int64_t mc, int64_t jc, int64_t nc, int64_t pc, int64_t kc) {
    size_t elem = plan->out_wide ? sizeof(int64_t) : sizeof(int32_t);
    int c_mode = plan->out_wide ? (pc == 0 ? NITI_C_STORE64 : NITI_C_ADD64) : (pc == 0 ? NITI_C_STORE32 : NITI_C_ADD32);
    int64_t kg = (kc + 3) / 4;
    int32_t edge[NITI_MR * NITI_NR] __attribute__((aligned(64)));
    for (int64_t jr = 0; jr < nc; jr += NITI_NR) {
        const uint32_t *bp = b_pack + (jr / NITI_NR) * kg * NITI_NR;
        int64_t nr = min64(NITI_NR, nc - jr);
        for (int64_t ir = 0; ir < mc; ir += NITI_MR) {
            const uint32_t *ap = a_pack + (ir / NITI_MR) * kg * NITI_MR;
            int64_t mr = min64(NITI_MR, mc - ir);
            char *ctile = (char *)plan->C + ((ic + ir) * plan->ldc + jc + jr) * (int64_t)elem;
            if (mr == NITI_MR && nr == NITI_NR) {
                niti_microkernel(kg, ap, bp, corr + ir, ctile, plan->ldc, c_mode);
            } else {
                niti_microkernel(kg, ap, bp, corr + ir, edge, NITI_NR, NITI_C_STORE32);
                merge_edge_tile(edge, mr, nr, ctile, plan->ldc, c_mode);
            }
        }
    }
}

/* Block size for a range: as few blocks as `max_block` allows, all about equal, multiples of `unit`
 * (so a range just over max_block does not leave a sliver block with poor reuse). */
static int64_t balanced_block(int64_t len, int64_t max_block, int64_t unit) {
    int64_t blocks = (len + max_block - 1) / max_block;
    return round_up((len + blocks - 1) / blocks, unit);
}

static int shared_b_driver(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int threads) {
    int64_t M = plan->M, N = plan->N, K = plan->K, kc_max = plan->kc_max;
    int64_t slices = (K + kc_max - 1) / kc_max;
    int64_t slice_words = round_up(N, NITI_NR) * (kc_max / 4); /* one packed K slice of all of B */
    int64_t panels = (N + NITI_NR - 1) / NITI_NR;
    int64_t groups = (panels + NITI_PACK_GROUP_PANELS - 1) / NITI_PACK_GROUP_PANELS;
    /* row blocks: about 4 per thread for balance, at least 2 tiles, at most MC rows */
    int64_t rows = round_up((M + 4 * threads - 1) / (4 * threads), NITI_MR);
    rows = rows < 2 * NITI_MR ? 2 * NITI_MR : (rows > NITI_MC ? NITI_MC : rows);
    int64_t blocks = (M + rows - 1) / rows;

    uint32_t *b_shared = alloc64((size_t)(slices * slice_words) * sizeof(uint32_t));
    gemm_buffers *bufs = b_shared ? alloc_buffers(threads, A, B, kc_max, 0) : NULL;
    if (!bufs) {
        free(b_shared);
        return niti_fail(NITI_E_NOMEM, "gemm: out of memory for packing buffers");
    }
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        gemm_buffers *buf = &bufs[t];
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < slices * groups; item++) {
            int64_t s = item / groups, p0 = item % groups * NITI_PACK_GROUP_PANELS;
            int64_t pc = s * kc_max, kc = min64(kc_max, K - pc), kg = (kc + 3) / 4;
            int64_t r0 = p0 * NITI_NR, nr = min64(N, r0 + NITI_PACK_GROUP_PANELS * NITI_NR) - r0;
            B->pack(B, r0, nr, pc, kc, NITI_NR, 0x80, b_shared + s * slice_words + p0 * kg * NITI_NR, NULL,
                    buf->b_scratch);
        }
        /* the implicit barrier of the loop above: B is complete */
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t ic = blk * rows, mc = min64(rows, M - ic);
            for (int64_t s = 0; s < slices; s++) {
                int64_t pc = s * kc_max, kc = min64(kc_max, K - pc);
                A->pack(A, ic, mc, pc, kc, NITI_MR, 0x00, buf->a_pack, buf->corr, buf->a_scratch);
                block_tiles(plan, buf->a_pack, buf->corr, b_shared + s * slice_words, ic, mc, 0, N, pc, kc);
            }
        }
    }
    free_buffers(bufs, threads);
    free(b_shared);
    return NITI_OK;
}

/* C[m0:m1, n0:n1] on one thread, one K slice at a time. */
static void gemm_slab(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int64_t m0, int64_t m1,
                      int64_t n0, int64_t n1, gemm_buffers *buf) {
    int64_t K = plan->K, kc_max = plan->kc_max;
    int64_t mc_step = balanced_block(m1 - m0, NITI_MC, NITI_MR);
    int64_t nc_step = balanced_block(n1 - n0, NITI_NC_LONG_K, NITI_NR);
    for (int64_t jc = n0; jc < n1; jc += nc_step) {
        int64_t nc = min64(nc_step, n1 - jc);
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            int64_t kc = min64(kc_max, K - pc);
            B->pack(B, jc, nc, pc, kc, NITI_NR, 0x80, buf->b_pack, NULL, buf->b_scratch);
            for (int64_t ic = m0; ic < m1; ic += mc_step) {
                int64_t mc = min64(mc_step, m1 - ic);
                A->pack(A, ic, mc, pc, kc, NITI_MR, 0x00, buf->a_pack, buf->corr, buf->a_scratch);
                block_tiles(plan, buf->a_pack, buf->corr, buf->b_pack, ic, mc, jc, nc, pc, kc);
            }
        }
    }
}

static int slab_driver(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int threads) {
    int64_t M = plan->M, N = plan->N;
    /* split the longer side (in tiles) so each thread has whole MR/NR tiles */
    int64_t m_tiles = (M + NITI_MR - 1) / NITI_MR, n_tiles = (N + NITI_NR - 1) / NITI_NR;
    int split_m = m_tiles >= n_tiles;
    int64_t tiles = split_m ? m_tiles : n_tiles;
    if (threads > tiles) threads = (int)tiles;
    gemm_buffers *bufs = alloc_buffers(threads, A, B, plan->kc_max, NITI_NC_LONG_K * plan->kc_max);
    if (!bufs) return niti_fail(NITI_E_NOMEM, "gemm: out of memory for packing buffers");
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t per = (tiles + nt - 1) / nt;
        int64_t lo = t * per, hi = min64(tiles, lo + per);
        if (lo < hi) {
            if (split_m)
                gemm_slab(A, B, plan, lo * NITI_MR, min64(M, hi * NITI_MR), 0, N, &bufs[t]);
            else
                gemm_slab(A, B, plan, 0, M, lo * NITI_NR, min64(N, hi * NITI_NR), &bufs[t]);
        }
    }
    free_buffers(bufs, threads);
    return NITI_OK;
}

int niti_gemm_run(const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K, void *C,
                  int64_t ldc, int out_wide) {
    if (M == 0 || N == 0) return NITI_OK;
    if (K == 0) { /* empty sum */
        size_t elem = out_wide ? sizeof(int64_t) : sizeof(int32_t);
        for (int64_t i = 0; i < M; i++) memset((char *)C + i * ldc * (int64_t)elem, 0, (size_t)N * elem);
        return NITI_OK;
    }
    /* K slices of about equal size, each a multiple of 4 (whole packed groups) */
    gemm_plan plan = {M, N, K, balanced_block(K, NITI_KC_MAX, 4), ldc, out_wide, C};
    int threads = niti_threads();
    if ((double)M * (double)N * (double)K < NITI_GEMM_PARALLEL_MIN_MACS) threads = 1;
    int64_t shared_b_bytes = round_up(N, NITI_NR) * round_up(K, plan.kc_max);
    if (shared_b_bytes <= NITI_SHARED_B_BYTES && (M + NITI_MR - 1) / NITI_MR >= 4 * (int64_t)threads)
        return shared_b_driver(A, B, &plan, threads);
    return slab_driver(A, B, &plan, threads);
}

/* ---- operands ------------------------------------------------------------------------------------- */
static void dense_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W, uint8_t flip,
                       uint32_t *dst, int32_t *corr, int8_t *scratch) {
    (void)scratch;
    if (op->k_major) pack_kmajor(op->data + k0 * op->ld + r0, op->ld, nr, nk, W, flip, dst, corr);
    else pack_rowmajor(op->data + r0 * op->ld + k0, op->ld, nr, nk, W, flip, dst, corr);
}

niti_operand niti_dense(const int8_t *data, int64_t rows, int64_t depth, int64_t ld, int k_major) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = rows;
    op.depth = depth;
    op.pack = dense_pack;
    op.data = data;
    op.ld = ld;
    op.k_major = k_major;
    return op;
}

/* Gather patch columns [k0, k0 + nk) of output pixel `row` into dst. Within one kernel row the
 * k_w taps read adjacent source pixels, so (without column upsampling) a kernel row is at most
 * three runs: zeros left of the image, one contiguous copy, zeros right of it. */
static void gather_patch_row(const niti_im2col *g, int64_t row, int64_t k0, int64_t nk, int8_t *dst) {
    int64_t pixels = g->out_h * g->out_w;
    int64_t n = row / pixels, yx = row % pixels;
    int64_t y = yx / g->out_w, x = yx % g->out_w;
    int64_t ch = g->ch, k = k0, end = k0 + nk;
    while (k < end) {
        int64_t tap = k / ch, c = k % ch;
        int64_t kh = tap / g->k_w, kw = tap % g->k_w;
        int64_t len = min64((g->k_w - kw) * ch - c, end - k); /* up to the end of this kernel row */
        int64_t sy = y * g->stride_h - g->pad_h + kh, sx = x * g->stride_w - g->pad_w + kw;
        const int8_t *src = NULL;
        if (sy >= 0 && sy % g->dil_h == 0 && sy / g->dil_h < g->src_h) {
            int64_t iy = sy / g->dil_h;
            if (g->dil_w == 1) {
                if (sx < 0) len = min64(len, -sx * ch - c);
                else if (sx < g->src_w) {
                    len = min64(len, (g->src_w - sx) * ch - c);
                    src = g->src + ((n * g->src_h + iy) * g->src_w + sx) * ch + c;
                }
            } else { /* upsampled columns: one tap at a time */
                len = min64(len, ch - c);
                if (sx >= 0 && sx % g->dil_w == 0 && sx / g->dil_w < g->src_w)
                    src = g->src + ((n * g->src_h + iy) * g->src_w + sx / g->dil_w) * ch + c;
            }
        }
        if (src) memcpy(dst, src, (size_t)len);
        else memset(dst, 0, (size_t)len);
        dst += len;
        k += len;
    }
}

/* One panel at a time: gather its W patch rows (W x nk bytes, stays in L1), then pack them. */
static void patches_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W, uint8_t flip,
                         uint32_t *dst, int32_t *corr, int8_t *scratch) {
    int64_t kg = (nk + 3) / 4;
    for (int64_t p = 0; p * W < nr; p++) {
        int64_t rows = min64(W, nr - p * W);
        for (int64_t r = 0; r < rows; r++) gather_patch_row(op->patches, r0 + p * W + r, k0, nk, scratch + r * nk);
        pack_rowmajor(scratch, nk, rows, nk, W, flip, dst + p * kg * W, corr ? corr + p * W : NULL);
    }
}

/* rows = patch columns, depth = output pixels. One 4-pixel group at a time: gather the four pixels'
 * patch columns [r0, r0+nr) (4 lines of nr bytes), then interleave them into every panel. */
static void patches_transposed_pack(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W,
                                    uint8_t flip, uint32_t *dst, int32_t *corr, int8_t *scratch) {
    int64_t kg = (nk + 3) / 4;
    uint32_t flip_word = 0x01010101u * flip;
    int8_t *zero_line = scratch + 4 * NITI_BLOCK_MAX;
    memset(zero_line, 0, (size_t)nr);
    if (corr) memset(corr, 0, sizeof(int32_t) * (size_t)round_up(nr, W));
    for (int64_t g = 0; g < kg; g++) {
        const int8_t *line[4];
        for (int t = 0; t < 4; t++) {
            if (4 * g + t < nk) {
                gather_patch_row(op->patches, k0 + 4 * g + t, r0, nr, scratch + t * NITI_BLOCK_MAX);
                line[t] = scratch + t * NITI_BLOCK_MAX;
                if (corr)
                    for (int64_t r = 0; r < nr; r++) corr[r] += line[t][r];
            } else {
                line[t] = zero_line;
            }
        }
        for (int64_t p = 0; p * W < nr; p++) {
            int64_t rows = min64(W, nr - p * W);
            uint32_t *out = dst + p * kg * W + g * W;
            interleave4(line[0] + p * W, line[1] + p * W, line[2] + p * W, line[3] + p * W, rows, flip, out);
            for (int64_t r = rows; r < W; r++) out[r] = flip_word;
        }
    }
    if (corr)
        for (int64_t r = 0; r < nr; r++) corr[r] *= 128;
}

niti_operand niti_patches(const niti_im2col *g) {
    niti_operand op;
    memset(&op, 0, sizeof op);
    op.rows = g->batch * g->out_h * g->out_w;
    op.depth = g->k_h * g->k_w * g->ch;
    op.pack = patches_pack;
    op.scratch_bytes = NITI_PANEL_MAX * NITI_KC_MAX;
    op.patches = g;
    return op;
}

niti_operand niti_patches_transposed(const niti_im2col *g) {
    niti_operand op = niti_patches(g);
    int64_t rows = op.rows;
    op.rows = op.depth;
    op.depth = rows;
    op.pack = patches_transposed_pack;
    op.scratch_bytes = 5 * NITI_BLOCK_MAX; /* four pixel lines and a zero line */
    return op;
}
