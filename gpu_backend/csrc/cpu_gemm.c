/* cpu_gemm.c: the blocked, packed, multithreaded int8 GEMM drivers: C = A * B^T.
 *
 * Structure (BLIS/GotoBLAS): K is cut into slices of at most the engine's kc_max (kc_rows_max where
 * A is read in place); B is packed into nr-wide panels (each panel stays in L1 while the mr-row
 * panels of an A block, packed into L2, sweep past it); the engine's kernel computes one mr x nr
 * tile per (A panel, B panel) pair. An AMX kernel reads a plain, aligned A where it lies instead
 * (load_a_block). The panel layouts, the kernel and the blocking come from the engine
 * (cpu_engines.c: AMX tiles or the build's SIMD micro-kernel), so the drivers are written once.
 * Operands pack themselves (cpu_operands.c), so the conv and transposed GEMMs of training never
 * materialise an im2col matrix. Integer sums are exact in any order, so results never depend on the
 * engine, the thread count or the blocking.
 */
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many MACs (~0.1 ms on one core) a single thread is faster than waking the others, and
 * cannot be stalled by a busy machine scheduling them late. */
#define NITI_GEMM_PARALLEL_MIN_MACS (1 << 24)

/* ---- drivers ------------------------------------------------------------------------------------ */
/* Three ways to share the work between threads (the third, a K split, is ksplit_driver below):
 *  - shared B (B packed whole fits NITI_SHARED_B_BYTES and M has enough row tiles): the threads
 *    pack all of B once, together, then take MC-row blocks of C from a dynamic queue, each block
 *    going through all its K slices while it is in cache. This is the forward and input-gradient
 *    case (B is a weight tensor); a thread slowed by another process just takes fewer blocks.
 *  - slabs (long K, the weight gradients with K = batch * pixels, a B too large to share, or too
 *    few rows): C is cut into one slab per thread (see slab_driver for which side), and each thread
 *    packs one K slice of B at a time into its own buffer.
 * A shared B is read by every row block from wherever it was packed, half of it in the other core's
 * cache; past half a core's L2 (2 MB on the machines measured), packing per thread measured faster:
 * vgg-small-7's conv5 and conv6 GEMMs (B 1.2 and 2.4 MB, M 512) 7-11 % on AMX, the VNNI engine and
 * LeNet's step unchanged. */
#ifndef NITI_SHARED_B_BYTES
#define NITI_SHARED_B_BYTES (1 << 20)
#endif
#ifndef NITI_A_IN_PLACE
#define NITI_A_IN_PLACE 1 /* 0: pack every A block (the comparison build of benchmarks/kernels.py and the tests) */
#endif
#define NITI_PACK_GROUP_PANELS 4 /* B panels per packing work item in the shared-B driver */
#ifndef NITI_IN_PLACE_SPLIT_M
#define NITI_IN_PLACE_SPLIT_M 4 /* see slab_driver; 1: cut the longer side, as for a packed A */
#endif

typedef struct {
    const niti_engine *e;
    int64_t M, N, K, kc_max, ldc;
    int out_wide;
    int a_in_place; /* A's whole mr-row panels are read where they lie (see load_a_block) */
    void *C;
} gemm_plan;

typedef struct {
    uint8_t *a_pack, *b_pack; /* b_pack: the slab and K-split drivers */
    int32_t *corr;
    int8_t *a_scratch, *b_scratch;
    void *a_work;
} gemm_buffers;

static void *alloc64(size_t bytes) {
    return bytes ? aligned_alloc(64, (size_t)niti_round_up((int64_t)bytes, 64)) : NULL;
}

static void free_buffers(gemm_buffers *bufs, int count) {
    for (int t = 0; t < count; t++) {
        free(bufs[t].a_pack);
        free(bufs[t].b_pack);
        free(bufs[t].corr);
        free(bufs[t].a_scratch);
        free(bufs[t].b_scratch);
        free(bufs[t].a_work);
    }
    free(bufs);
}

/* Per-thread buffers, allocated before the parallel region so a failure is reported cleanly. */
static gemm_buffers *alloc_buffers(int count, const gemm_plan *plan, const niti_operand *A, const niti_operand *B,
                                   int64_t b_pack_bytes) {
    const niti_engine *e = plan->e;
    gemm_buffers *bufs = calloc((size_t)count, sizeof *bufs);
    if (!bufs) return NULL;
    for (int t = 0; t < count; t++) {
        gemm_buffers *b = &bufs[t];
        /* read in place, only a ragged last panel of an A block is packed (load_a_block) */
        int64_t a_pack_rows = plan->a_in_place ? e->mr : e->mc;
        b->a_pack = alloc64((size_t)(a_pack_rows * niti_k_pad(e, plan->kc_max)));
        b->b_pack = alloc64((size_t)b_pack_bytes);
        b->corr = alloc64(sizeof(int32_t) * (size_t)e->mc);
        b->a_scratch = alloc64((size_t)A->scratch_bytes);
        b->b_scratch = alloc64((size_t)B->scratch_bytes);
        b->a_work = alloc64((size_t)e->a_work_bytes);
        if (!b->a_pack || (b_pack_bytes && !b->b_pack) || !b->corr || (A->scratch_bytes && !b->a_scratch) ||
            (B->scratch_bytes && !b->b_scratch) || (e->a_work_bytes && !b->a_work)) {
            free_buffers(bufs, count);
            return NULL;
        }
    }
    return bufs;
}

/* Add/store the valid mr x nr corner of an int32 tile (row stride ld) into C (edge tiles). */
void niti_merge_edge_tile(const int32_t *tile, int64_t ld, int64_t mr, int64_t nr, void *c, int64_t ldc, int c_mode) {
    for (int64_t i = 0; i < mr; i++) {
        for (int64_t j = 0; j < nr; j++) {
            int32_t v = tile[i * ld + j];
            if (c_mode == NITI_C_STORE32) ((int32_t *)c)[i * ldc + j] = v;
            else if (c_mode == NITI_C_ADD32) ((int32_t *)c)[i * ldc + j] = (int32_t)((uint32_t)((int32_t *)c)[i * ldc + j] + (uint32_t)v);
            else if (c_mode == NITI_C_STORE64) ((int64_t *)c)[i * ldc + j] = v;
            else ((int64_t *)c)[i * ldc + j] += v;
        }
    }
}

#define EDGE_TILE_MAX (NITI_MAX2(NITI_MR, NITI_AMX_MR) * NITI_MAX2(NITI_NR, NITI_AMX_NR))

/* An A block as the kernels read it: the first `in_place` rows straight from the operand (stride
 * lda), the rest packed (panel p of them at packed + p * mr * k_pad, corrections from corr). */
typedef struct {
    const int8_t *rows;
    int64_t lda, in_place;
    const uint8_t *packed;
    const int32_t *corr;
} a_block;

/* Whether A's rows can feed the engine's kernel where they lie: a dense row-major A, an engine whose
 * kernel reads A at any row stride (AMX tile loads), depths of whole tile rows (no K padding to
 * supply), and rows that start on cache lines: a tile row of 64 bytes that straddles two lines made
 * the GEMM slower than copying it (numpy aligns arrays to 16 bytes only). */
static int a_rows_in_place(const niti_engine *e, const niti_operand *A, int64_t K) {
    return NITI_A_IN_PLACE && e->kernel_rows && A->data && !A->k_major && K % e->k_align == 0 &&
           (uintptr_t)A->data % 64 == 0 && A->ld % 64 == 0;
}

/* Rows [ic, ic+mc) x depth [pc, pc+kc) of A. Where A can be read in place it is not copied: packing
 * only copied it, through the core that then waits for the tiles (vgg-small-7's GEMMs ran 1.15-1.21x
 * faster in place, docs/results.md, kernels). Only a ragged last panel is packed, since the kernel
 * reads all mr rows of a panel. */
static a_block load_a_block(const gemm_plan *plan, const niti_operand *A, gemm_buffers *buf, int64_t ic, int64_t mc,
                            int64_t pc, int64_t kc) {
    const niti_engine *e = plan->e;
    a_block blk = {NULL, 0, 0, buf->a_pack, buf->corr};
    if (plan->a_in_place) {
        blk.rows = A->data + ic * A->ld + pc;
        blk.lda = A->ld;
        blk.in_place = mc / e->mr * e->mr;
        if (blk.in_place == mc) return blk;
    }
    e->pack_a(A, ic + blk.in_place, mc - blk.in_place, pc, kc, buf->a_pack, buf->corr, buf->a_scratch, buf->a_work);
    return blk;
}

/* One mr x nr tile: A panel ir of the block (in place or packed) x B panel bp, into C at ctile; a
 * partial tile goes through `edge` (EDGE_TILE_MAX int32). */
static void one_tile(const gemm_plan *plan, const a_block *a, int64_t ir, const uint8_t *bp, int64_t mr, int64_t nr,
                     char *ctile, int c_mode, int64_t kc, int32_t *edge) {
    const niti_engine *e = plan->e;
    int whole = mr == e->mr && nr == e->nr;
    void *out = whole ? (void *)ctile : (void *)edge;
    int64_t ldo = whole ? plan->ldc : e->nr;
    int mode = whole ? c_mode : NITI_C_STORE32;
    if (ir < a->in_place) {
        e->kernel_rows(kc, a->rows + ir * a->lda, a->lda, bp, out, ldo, mode);
    } else {
        int64_t ip = ir - a->in_place;
        e->kernel(kc, a->packed + ip * niti_k_pad(e, kc), bp, a->corr + ip, out, ldo, mode);
    }
    if (!whole) niti_merge_edge_tile(edge, e->nr, mr, nr, ctile, plan->ldc, c_mode);
}

/* All mr x nr tiles of the blocks (mc x nc) for one K slice of kc; `store`: the first slice (of C's
 * block) stores into C, later ones add. Packed, each B panel meets every A panel of the block in
 * turn (the A block stays in L2); read in place, each A panel meets every B panel in turn, so the
 * panel comes from memory once and then from L1 (measured 3 % faster over vgg-small-7's GEMMs than
 * the packed order, for the same in-place reads). */
static void block_tiles(const gemm_plan *plan, const a_block *a, const uint8_t *b_pack, int64_t ic, int64_t mc,
                        int64_t jc, int64_t nc, int store, int64_t kc) {
    const niti_engine *e = plan->e;
    size_t elem = plan->out_wide ? sizeof(int64_t) : sizeof(int32_t);
    int c_mode = plan->out_wide ? (store ? NITI_C_STORE64 : NITI_C_ADD64) : (store ? NITI_C_STORE32 : NITI_C_ADD32);
    int64_t k_pad = niti_k_pad(e, kc);
    int32_t edge[EDGE_TILE_MAX] __attribute__((aligned(64)));
    int64_t m_tiles = (mc + e->mr - 1) / e->mr, n_tiles = (nc + e->nr - 1) / e->nr;
    int a_outer = a->in_place > 0;
    for (int64_t t = 0; t < m_tiles * n_tiles; t++) {
        int64_t ir = (a_outer ? t / n_tiles : t % m_tiles) * e->mr, jr = (a_outer ? t % n_tiles : t / m_tiles) * e->nr;
        char *ctile = (char *)plan->C + ((ic + ir) * plan->ldc + jc + jr) * (int64_t)elem;
        one_tile(plan, a, ir, b_pack + jr * k_pad, niti_min64(e->mr, mc - ir), niti_min64(e->nr, nc - jr), ctile,
                 c_mode, kc, edge);
    }
}

static void engine_enter(const niti_engine *e) {
    if (e->enter) e->enter();
}

static void engine_leave(const niti_engine *e) {
    if (e->leave) e->leave();
}

/* Block size for a range: as few blocks as `max_block` allows, all about equal, multiples of `unit`
 * (so a range just over max_block does not leave a sliver block with poor reuse). */
static int64_t balanced_block(int64_t len, int64_t max_block, int64_t unit) {
    int64_t blocks = (len + max_block - 1) / max_block;
    return niti_round_up((len + blocks - 1) / blocks, unit);
}

static int shared_b_driver(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int threads) {
    const niti_engine *e = plan->e;
    int64_t M = plan->M, N = plan->N, K = plan->K, kc_max = plan->kc_max;
    int64_t slices = (K + kc_max - 1) / kc_max;
    int64_t slice_bytes = niti_round_up(N, e->nr) * niti_k_pad(e, kc_max); /* one packed K slice of all of B */
    int64_t panels = (N + e->nr - 1) / e->nr;
    int64_t groups = (panels + NITI_PACK_GROUP_PANELS - 1) / NITI_PACK_GROUP_PANELS;
    /* Row blocks: as large as MC allows (every block streams all of B, which may not fit L2), and a
     * multiple of the thread count, so an unloaded machine splits evenly while a thread slowed by
     * another process still hands its later blocks to the others. */
    int64_t per_thread = (M + (int64_t)threads * e->mc - 1) / ((int64_t)threads * e->mc);
    int64_t rows = balanced_block(M, (M + threads * per_thread - 1) / (threads * per_thread), e->mr);
    int64_t blocks = (M + rows - 1) / rows;

    uint8_t *b_shared = alloc64((size_t)(slices * slice_bytes));
    gemm_buffers *bufs = b_shared ? alloc_buffers(threads, plan, A, B, 0) : NULL;
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
        engine_enter(e);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < slices * groups; item++) {
            int64_t s = item / groups, p0 = item % groups * NITI_PACK_GROUP_PANELS;
            int64_t pc = s * kc_max, kc = niti_min64(kc_max, K - pc);
            int64_t r0 = p0 * e->nr, nr = niti_min64(N, r0 + NITI_PACK_GROUP_PANELS * e->nr) - r0;
            e->pack_b(B, r0, nr, pc, kc, b_shared + s * slice_bytes + r0 * niti_k_pad(e, kc), buf->b_scratch);
        }
        /* the implicit barrier of the loop above: B is complete */
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t ic = blk * rows, mc = niti_min64(rows, M - ic);
            for (int64_t s = 0; s < slices; s++) {
                int64_t pc = s * kc_max, kc = niti_min64(kc_max, K - pc);
                a_block a = load_a_block(plan, A, buf, ic, mc, pc, kc);
                block_tiles(plan, &a, b_shared + s * slice_bytes, ic, mc, 0, N, pc == 0, kc);
            }
        }
        engine_leave(e);
    }
    free_buffers(bufs, threads);
    free(b_shared);
    return NITI_OK;
}

/* Columns of a thread's packed B block: the engine's nc_long_k, narrowed at the deeper slices of an
 * A read in place to the bytes of nc_long_k x kc_max (so the block stays in L2). */
static int64_t slab_nc_max(const gemm_plan *plan) {
    const niti_engine *e = plan->e;
    if (plan->kc_max <= e->kc_max) return e->nc_long_k;
    int64_t bytes = e->nc_long_k * niti_k_pad(e, e->kc_max);
    return niti_max64(e->nr, bytes / niti_k_pad(e, plan->kc_max) / e->nr * e->nr);
}

/* C[m0:m1, n0:n1] on one thread, one K slice at a time. */
static void gemm_slab(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int64_t m0, int64_t m1,
                      int64_t n0, int64_t n1, gemm_buffers *buf) {
    const niti_engine *e = plan->e;
    int64_t K = plan->K, kc_max = plan->kc_max;
    int64_t mc_step = balanced_block(m1 - m0, e->mc, e->mr);
    int64_t nc_step = balanced_block(n1 - n0, slab_nc_max(plan), e->nr);
    for (int64_t jc = n0; jc < n1; jc += nc_step) {
        int64_t nc = niti_min64(nc_step, n1 - jc);
        for (int64_t pc = 0; pc < K; pc += kc_max) {
            int64_t kc = niti_min64(kc_max, K - pc);
            e->pack_b(B, jc, nc, pc, kc, buf->b_pack, buf->b_scratch);
            for (int64_t ic = m0; ic < m1; ic += mc_step) {
                int64_t mc = niti_min64(mc_step, m1 - ic);
                a_block a = load_a_block(plan, A, buf, ic, mc, pc, kc);
                block_tiles(plan, &a, buf->b_pack, ic, mc, jc, nc, pc == 0, kc);
            }
        }
    }
}

static int slab_driver(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int threads) {
    const niti_engine *e = plan->e;
    int64_t M = plan->M, N = plan->N;
    /* Split so each thread has whole mr/nr tiles. Cut along M, every thread packs all of B; along N,
     * every thread packs (or, in place, only reads) all of A. So the longer side is cut, except that
     * reading A in place costs a thread so much less than packing B that N is cut unless A has
     * NITI_IN_PLACE_SPLIT_M times B's tiles (M = N = 512 to 1024, K 1152 to 4608: up to 20 % faster
     * cut along N). */
    int64_t m_tiles = (M + e->mr - 1) / e->mr, n_tiles = (N + e->nr - 1) / e->nr;
    int split_m = m_tiles >= (plan->a_in_place ? NITI_IN_PLACE_SPLIT_M : 1) * n_tiles;
    int64_t tiles = split_m ? m_tiles : n_tiles;
    if (threads > tiles) threads = (int)tiles;
    gemm_buffers *bufs = alloc_buffers(threads, plan, A, B, slab_nc_max(plan) * niti_k_pad(e, plan->kc_max));
    if (!bufs) return niti_fail(NITI_E_NOMEM, "gemm: out of memory for packing buffers");
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t per = (tiles + nt - 1) / nt;
        int64_t lo = t * per, hi = niti_min64(tiles, lo + per);
        if (lo < hi) {
            engine_enter(e);
            if (split_m)
                gemm_slab(A, B, plan, lo * e->mr, niti_min64(M, hi * e->mr), 0, N, &bufs[t]);
            else
                gemm_slab(A, B, plan, 0, M, lo * e->nr, niti_min64(N, hi * e->nr), &bufs[t]);
            engine_leave(e);
        }
    }
    free_buffers(bufs, threads);
    return NITI_OK;
}

/* Long K and a small C (weight gradients of convs: C is out_c x k_h k_w in_c, K every pixel of the
 * batch): the threads take K slices from a dynamic queue, each slice packing its own A and B once
 * (no operand packed twice, as when C is cut into slabs) into a private C, and the private Cs are
 * added at the end. Each private C is an exact sum of a subset of the products, so the int32
 * partial sums fit wherever the total may (K <= NITI_MAX_K_S32), and int64 ones always. */
#ifndef NITI_KSPLIT_MAX_OUT
#define NITI_KSPLIT_MAX_OUT (1 << 18) /* elements of C; the serial final sum stays < ~0.1 ms */
#endif

static int ksplit_driver(const niti_operand *A, const niti_operand *B, const gemm_plan *plan, int threads) {
    const niti_engine *e = plan->e;
    int64_t M = plan->M, N = plan->N, K = plan->K, kc_max = plan->kc_max;
    int64_t slices = (K + kc_max - 1) / kc_max;
    int64_t mc_step = balanced_block(M, e->mc, e->mr), nc_step = balanced_block(N, e->nc_long_k, e->nr);
    size_t elem = plan->out_wide ? sizeof(int64_t) : sizeof(int32_t);
    gemm_buffers *bufs = alloc_buffers(threads, plan, A, B, nc_step * niti_k_pad(e, kc_max));
    void **part = calloc((size_t)threads, sizeof *part);
    int *used = calloc((size_t)threads, sizeof *used);
    int ok = bufs && part && used;
    for (int t = 0; ok && t < threads; t++) ok = (part[t] = alloc64((size_t)(M * N) * elem)) != NULL;
    if (ok) {
#pragma omp parallel num_threads(threads)
        {
            int t = 0;
#ifdef _OPENMP
            t = omp_get_thread_num();
#endif
            gemm_buffers *buf = &bufs[t];
            gemm_plan mine = *plan;
            mine.C = part[t];
            mine.ldc = N;
            int first = 1; /* this thread's first slice stores into its C, later ones add */
            engine_enter(e);
#pragma omp for schedule(dynamic, 1)
            for (int64_t sl = 0; sl < slices; sl++) {
                int64_t pc = sl * kc_max, kc = niti_min64(kc_max, K - pc);
                for (int64_t jc = 0; jc < N; jc += nc_step) {
                    int64_t nc = niti_min64(nc_step, N - jc);
                    e->pack_b(B, jc, nc, pc, kc, buf->b_pack, buf->b_scratch);
                    for (int64_t ic = 0; ic < M; ic += mc_step) {
                        int64_t mc = niti_min64(mc_step, M - ic);
                        a_block a = load_a_block(&mine, A, buf, ic, mc, pc, kc);
                        block_tiles(&mine, &a, buf->b_pack, ic, mc, jc, nc, first, kc);
                    }
                }
                first = 0;
            }
            engine_leave(e);
            used[t] = !first;
        }
        int started = 0;
        for (int t = 0; t < threads; t++) {
            if (!used[t]) continue;
            for (int64_t i = 0; i < M; i++) {
                char *dst = (char *)plan->C + i * plan->ldc * (int64_t)elem;
                const char *src = (const char *)part[t] + i * N * (int64_t)elem;
                if (!started) {
                    memcpy(dst, src, (size_t)N * elem);
                } else if (plan->out_wide) {
                    for (int64_t j = 0; j < N; j++) ((int64_t *)dst)[j] += ((const int64_t *)src)[j];
                } else {
                    for (int64_t j = 0; j < N; j++) ((int32_t *)dst)[j] += ((const int32_t *)src)[j];
                }
            }
            started = 1;
        }
    }
    if (part)
        for (int t = 0; t < threads; t++) free(part[t]);
    free(part);
    free(used);
    if (bufs) free_buffers(bufs, threads);
    if (!ok) return niti_fail(NITI_E_NOMEM, "gemm: out of memory for packing buffers");
    return NITI_OK;
}

int niti_gemm_run(const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K, void *C,
                  int64_t ldc, int out_wide) {
    return niti_gemm_run_threads(A, B, M, N, K, C, ldc, out_wide, niti_threads());
}

int niti_gemm_run_threads(const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K, void *C,
                          int64_t ldc, int out_wide, int threads) {
    if (M == 0 || N == 0) return NITI_OK;
    /* an int32 C over a longer K could wrap: callers take the int64 form and narrow it with a check */
    if (!out_wide && !niti_k_fits_s32(K))
        return niti_fail(NITI_E_ARG, "gemm: int32 output over K = %lld > %d products (use the int64 form)",
                         (long long)K, NITI_MAX_K_S32);
    if (K == 0) { /* empty sum */
        size_t elem = out_wide ? sizeof(int64_t) : sizeof(int32_t);
        for (int64_t i = 0; i < M; i++) memset((char *)C + i * ldc * (int64_t)elem, 0, (size_t)N * elem);
        return NITI_OK;
    }
    const niti_engine *e = niti_active_engine();
    /* K slices of about equal size, each a multiple of the engine's depth unit (whole packed groups) */
    int a_in_place = a_rows_in_place(e, A, K);
    int64_t kc_max = a_in_place ? e->kc_rows_max : e->kc_max;
    gemm_plan plan = {e, M, N, K, balanced_block(K, kc_max, e->k_align), ldc, out_wide, a_in_place, C};
    if (threads < 1) threads = 1;
    if ((double)M * (double)N * (double)K < NITI_GEMM_PARALLEL_MIN_MACS) threads = 1;
    if (threads > 1 && (K + plan.kc_max - 1) / plan.kc_max >= 2 * (int64_t)threads && M * N <= NITI_KSPLIT_MAX_OUT)
        return ksplit_driver(A, B, &plan, threads);
    int64_t shared_b_bytes = niti_round_up(N, e->nr) * niti_round_up(K, plan.kc_max);
    if (shared_b_bytes <= NITI_SHARED_B_BYTES && (M + e->mr - 1) / e->mr >= 2 * (int64_t)threads)
        return shared_b_driver(A, B, &plan, threads);
    return slab_driver(A, B, &plan, threads);
}
