/* cpu_internal.h: what the CPU library's .c files share (not part of the public API).
 *
 * The GEMM engine computes C (M x N) = A (M x K) * B^T (N x K) on "operands": logical int8 matrices
 * that know how to pack any block of themselves into the micro-kernel's panels. A dense matrix
 * packs from memory in either orientation; an im2col operand gathers conv patches on the fly, a
 * panel or a 4-pixel group at a time, into a small L1-sized scratch. So all six training GEMMs
 * (forward, input grad, weight grad of linear and conv) run on one set of drivers without im2col
 * copies. The drivers take panel layouts and micro-kernel from a GEMM engine (AMX-INT8 tiles,
 * cpu_amx.c, or the build's SIMD micro-kernel), chosen at run time (cpu_engines.c).
 */
#ifndef NITI_CPU_INTERNAL_H
#define NITI_CPU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "niti_api.h"
#include "niti_arith.h"

/* AMX-INT8 is compiled in where the compiler targets it (-march=native on a Sapphire Rapids or
 * newer Xeon); whether the CPU and the OS allow it is decided at run time (niti_amx_request). */
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__x86_64__) && defined(__linux__) && !defined(NITI_NO_AMX)
#define NITI_AMX 1
#else
#define NITI_AMX 0
#endif

static inline int64_t niti_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline int64_t niti_min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t niti_max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* A position (image n, row y, column x) in a stack of h x w images, walked in row-major order:
 * located by division once (niti_nyx_at), then stepped (niti_nyx_next), since divisions per element
 * would cost more than the work they locate. Patch packing walks output pixels with it, the AMX
 * grid convs grid rows. */
typedef struct {
    int64_t n, y, x;
} niti_nyx;

static inline niti_nyx niti_nyx_at(int64_t index, int64_t h, int64_t w) {
    niti_nyx p = {index / (h * w), 0, 0};
    int64_t rem = index - p.n * h * w;
    p.y = rem / w;
    p.x = rem - p.y * w;
    return p;
}

static inline void niti_nyx_next(niti_nyx *p, int64_t h, int64_t w) {
    if (++p->x == w) {
        p->x = 0;
        if (++p->y == h) p->y = 0, p->n++;
    }
}

/* Record a message for niti_last_error() and return `status`. */
int niti_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Threads the OpenMP regions use (niti_set_num_threads or the OpenMP default). */
int niti_threads(void);

/* Requantization pieces (cpu_ops.c) for ops that requantize their own output block by block:
 * out[0:n] = acc[0:n] requantized with shift s (s <= 0: saturate only), element j drawing its
 * stochastic rounding at hash index index0 + j (its place in the whole tensor), so a tensor done in
 * blocks equals one done whole; the shift of a range [lo, hi] (b(max |.|) - 7, at least 0); and
 * the check that `mode` is a rounding mode. */
void niti_requant_block(const int32_t *acc, int8_t *out, int64_t n, int64_t index0, int s, int mode, uint32_t key);
int niti_requant_shift(int32_t hi, int32_t lo);
int niti_check_round_mode(const char *fn, int mode);

/* ---- node calls (cpu_node.c): what every niti_op_<name> (csrc/op_<name>.c) checks first --------- */
/* Status 1 naming `op` unless the call has n_in inputs, n_out outputs and n_attrs attrs, each
 * descriptor of the dtypes given (niti_dtype, one per input then one per output), a valid rank and
 * shape, and data wherever it has elements. */
int niti_node_check(const niti_node_call *call, const char *op, int n_in, int n_out, int n_attrs,
                    const int32_t *dtypes);
int64_t niti_tensor_elems(const niti_tensor *t); /* product of the shape */
int niti_same_shape(const niti_tensor *a, const niti_tensor *b);

/* ---- GEMM operands ------------------------------------------------------------------------------- */
/* Conv patch gather: row m = (n, y, x) of the output grid, column k = (kh, kw, c) in that order.
 * Element = src[n, sy / dil_h, sx / dil_w, c] with sy = y * stride_h - pad_h + kh (sx likewise),
 * or 0 when sy is outside [0, src_h * dil_h) or not a multiple of dil_h. dil > 1 expresses the
 * zero-upsampled error map of a strided conv's input gradient. */
typedef struct {
    const int8_t *src; /* (batch, src_h, src_w, ch) */
    int64_t batch, src_h, src_w, ch;
    int64_t out_h, out_w; /* rows = batch * out_h * out_w */
    int64_t k_h, k_w;     /* columns = k_h * k_w * ch */
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
} niti_im2col;

typedef struct niti_operand niti_operand;

/* Packs rows [r0, r0+nr) x depth [k0, k0+nk) into W-row panels (layout below), each byte XOR
 * `flip`; for the A side also corr[r] = 128 * sum_k of row r. `scratch` has op->scratch_bytes. */
typedef void (*niti_pack_fn)(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int W,
                             uint8_t flip, uint32_t *dst, int32_t *corr, int8_t *scratch);

/* Copies rows [r0, r0+nr) x depth [k0, k0+nk) as plain rows, element (r, k) to dst[r * ld + k]: the
 * layout AMX's A tiles load. NULL where the operand has no cheap row-major form (transposed patches). */
typedef void (*niti_rows_fn)(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, int8_t *dst,
                             int64_t ld);

struct niti_operand {
    int64_t rows, depth;
    niti_pack_fn pack;
    niti_rows_fn pack_rows;
    int64_t scratch_bytes;      /* per packing thread */
    const int8_t *data;         /* dense: element (r, k) at data[r * ld + k], or data[k * ld + r] if k_major */
    int64_t ld;
    int k_major;
    const niti_im2col *patches; /* im2col operands */
};

niti_operand niti_dense(const int8_t *data, int64_t rows, int64_t depth, int64_t ld, int k_major);
/* rows = output pixels, depth = patch columns */
niti_operand niti_patches(const niti_im2col *g);
/* rows = patch columns, depth = output pixels */
niti_operand niti_patches_transposed(const niti_im2col *g);

/* ---- GEMM engines (cpu_engines.c) --------------------------------------------------------------- */
/* An engine is one way to multiply packed blocks: its packed layouts, its micro-kernel and its
 * blocking; the drivers of cpu_gemm.c are written once against it. A packed block is a row of
 * panels: panel p of an A block (mr rows) starts at byte p * mr * k_pad, of a B block (nr rows) at
 * p * nr * k_pad, where k_pad is the slice depth kc rounded up to k_align. K slices are multiples
 * of k_align except the last. */
typedef struct niti_engine niti_engine;
struct niti_engine {
    const char *name;
    int mr, nr;                /* C tile of one kernel call */
    int k_align;               /* bytes */
    int64_t kc_max;            /* deepest K slice (a multiple of k_align, <= NITI_MAX_K_S32) */
    int64_t kc_rows_max;       /* the same where kernel_rows reads A in place (only B is packed) */
    int64_t mc;                /* rows of a packed A block (a multiple of mr) */
    int64_t nc_long_k;         /* columns of a packed B block on the long-K drivers (a multiple of nr) */
    int64_t a_work_bytes;      /* per-thread scratch of pack_a, beyond the operand's own */
    void (*pack_a)(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst, int32_t *corr,
                   int8_t *scratch, void *work);
    void (*pack_b)(const niti_operand *op, int64_t r0, int64_t nr, int64_t k0, int64_t nk, void *dst,
                   int8_t *scratch);
    /* The mr x nr tile of C at c (row stride ldc elements) <-c_mode- A panel x B panel over a slice of
     * depth kc; corr is pack_a's per-row correction (engines with a biased operand). */
    void (*kernel)(int64_t kc, const void *a_panel, const void *b_panel, const int32_t *corr, void *c, int64_t ldc,
                   int c_mode);
    /* The same tile with A read in place: mr rows at stride lda, kc bytes each (kc a multiple of
     * k_align), or NULL where the kernel needs A packed (the SIMD engines' VNNI panels). */
    void (*kernel_rows)(int64_t kc, const int8_t *a, int64_t lda, const uint8_t *b_panel, void *c, int64_t ldc,
                        int c_mode);
    void (*enter)(void); /* on each thread before its first kernel call, or NULL (AMX: the tile configuration) */
    void (*leave)(void); /* after its last, or NULL */
};

static inline int64_t niti_k_pad(const niti_engine *e, int64_t kc) { return niti_round_up(kc, e->k_align); }

/* The engine GEMMs run on (niti_set_engine, else the best this CPU and OS allow). */
const niti_engine *niti_active_engine(void);
/* The SIMD engine of this build (NITI_ISA) and, where compiled in, the AMX engine. */
extern const niti_engine niti_simd_engine;
#if NITI_AMX
extern const niti_engine niti_amx_engine;
/* 0 when this thread may use AMX tiles; else a status with the reason recorded (CPU or OS refuses). */
int niti_amx_request(void);
/* 32 x 32 tile of C <-c_mode- A (32 rows at stride lda) x a packed B panel, over a K slice of kc. */
void niti_amx_tile32(int64_t kc, const int8_t *a, int64_t lda, const uint8_t *b, void *c, int64_t ldc, int c_mode);
#endif

/* Add or store (c_mode) the valid mr x nr corner of an int32 tile (row stride ld) into C: edge tiles. */
void niti_merge_edge_tile(const int32_t *tile, int64_t ld, int64_t mr, int64_t nr, void *c, int64_t ldc, int c_mode);

/* C = A * B^T. out_wide: C is int64 (each K block's exact int32 partial is added in int64), else
 * int32 (needs K <= NITI_MAX_K_S32: callers with longer K go through int64). ldc in elements. */
int niti_gemm_run(const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K,
                  void *C, int64_t ldc, int out_wide);

/* ---- packing (cpu_pack.c) --------------------------------------------------------------------------- */
/* Pack the nr x nk block of a view into W-row panels at dst (panel p at dst + p * ceil(nk/4) * W),
 * each byte XOR flip (0x80: int8 -> int8 + 128 as uint8), zero rows past nr and zero k past nk;
 * corr (A side, may be NULL) gets 128 * the sum of each row. Row-major view: element (r, k) at
 * v[r * ld + k]; k-major view: at v[k * ld + r]. */
void niti_pack_rowmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                        int32_t *corr);
void niti_pack_kmajor(const int8_t *v, int64_t ld, int64_t nr, int64_t nk, int W, uint8_t flip, uint32_t *dst,
                      int32_t *corr);
/* dst[c * ld_dst + r] = src[r * ld_src + c] for r < rows, c < cols (16 x 16 blocks, then the edges) */
void niti_transpose_bytes(const int8_t *src, int64_t ld_src, int64_t rows, int64_t cols, int8_t *dst,
                          int64_t ld_dst);
/* Four lines of `cols` bytes (k .. k+3) -> `cols` panel words. */
void niti_interleave4(const int8_t *l0, const int8_t *l1, const int8_t *l2, const int8_t *l3, int64_t cols,
                      uint8_t flip, uint32_t *out);

/* ---- micro-kernel (one per ISA, chosen at compile time) --------------------------------------- */
/* Packed panels hold 4 consecutive k per 32-bit word: panel word (g, r) = bytes k = 4g..4g+3 of
 * row r. A panels (MR rows) are signed int8; B panels (NR rows) are int8 + 128 as uint8 (the
 * unsigned operand of vpdpbusd), so the kernel subtracts corr[i] = 128 * sum_k A[i, k]. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define NITI_ISA "avx512vnni"
#define NITI_MR 12
#define NITI_NR 32
#elif defined(__AVX2__)
#define NITI_ISA "avx2"
#define NITI_MR 4
#define NITI_NR 8
#else
#define NITI_ISA "scalar"
#define NITI_MR 4
#define NITI_NR 4
#endif

/* Cache blocking (bytes of int8): the B micro-panel NR x KC (32 KiB at most) sits in L1 while the
 * A block MC x KC (at most 384 KiB) and the B block NC x KC stream from L2. The K slices are
 * balanced (about equal, at most NITI_KC_MAX, multiples of 4); MC is a multiple of MR, NC of NR. */
#define NITI_KC_MAX 1024
#define NITI_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define NITI_MC (NITI_MR * 32)
#define NITI_NC (NITI_NR * 16)
/* With long K (weight gradients) a B block is packed once per K slice and used by every A block; a
 * wider block means fewer repacks of A (dy^T). */
#ifndef NITI_NC_LONG_K
#define NITI_NC_LONG_K (NITI_NR * 48)
#endif
/* AMX tiles: 16 rows of 64 bytes; the AMX engine's C tile is 2 x 2 of them (32 x 32 int32). */
#define NITI_AMX_MR 32
#define NITI_AMX_NR 32
#ifndef NITI_AMX_KC_MAX
#define NITI_AMX_KC_MAX 2048 /* deeper K slices than the SIMD engine: C tiles are loaded and stored less often */
#endif
/* With A read in place only B is packed, so its K slices can be deeper (the slab driver narrows the
 * B block to keep its bytes): one slice for every vgg-small-7 GEMM, each C tile stored once. */
#ifndef NITI_AMX_KC_ROWS_MAX
#define NITI_AMX_KC_ROWS_MAX 4608
#endif
/* deepest slice any engine packs */
#define NITI_DEPTH_MAX NITI_MAX2(NITI_KC_MAX, NITI_MAX2(NITI_AMX_KC_MAX, NITI_AMX_KC_ROWS_MAX))
#define NITI_PANEL_MAX NITI_MAX2(NITI_MAX2(NITI_MR, NITI_NR), NITI_AMX_NR) /* widest panel any engine packs */
#define NITI_BLOCK_MAX NITI_MAX2(NITI_MC, NITI_MAX2(NITI_NC, NITI_NC_LONG_K)) /* widest packed block */

_Static_assert(NITI_MR % 4 == 0 && NITI_NR % 4 == 0, "panel packing moves 4 x 4 blocks of 32-bit words");
_Static_assert(NITI_KC_MAX % 4 == 0 && NITI_KC_MAX <= NITI_MAX_K_S32, "a K slice is whole groups and exact in int32");

enum { NITI_C_STORE32 = 0, NITI_C_ADD32 = 1, NITI_C_STORE64 = 2, NITI_C_ADD64 = 3 };

/* tile (MR x NR) of C at c (row stride ldc elements) <-op- A_panel * B_panel^T - corr. */
void niti_microkernel(int64_t k_groups, const uint32_t *a_panel, const uint32_t *b_panel, const int32_t *corr,
                      void *c, int64_t ldc, int c_mode);

/* ---- conv shapes and the direct kernels (cpu_direct.c) ------------------------------------------ */
typedef struct {
    int64_t batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w;
    int64_t out_h, out_w; /* E, F */
} niti_conv_shape;

/* The GEMM engine with an explicit thread count (niti_gemm_run uses niti_threads(); 1 runs without
 * a parallel region, for a caller already inside its own parallel loop). */
int niti_gemm_run_threads(const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K,
                          void *C, int64_t ldc, int out_wide, int threads);

/* Narrow conv shapes on which the packed GEMM spends more on moving operands than on arithmetic
 * get direct kernels. Each `*_applies` says whether its kernel takes the shape (never on builds
 * without AVX-512 VNNI: those keep the GEMM path); the kernels return a status. Results are
 * exact integer sums, identical to the GEMM path's. */
int niti_direct_forward_applies(const niti_conv_shape *s);
int niti_direct_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y);
int niti_direct_weight_grad_applies(const niti_conv_shape *s);
/* dw (out_c, k_h, k_w, in_c) exact in int64 */
int niti_direct_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, int64_t *dw);
/* Stride-1 conv weight gradients on AMX tiles from shifted views of one grid (cpu_amx_conv.c): applies
 * when the AMX engine is active and the shape suits it. dw (out_c, k_h, k_w, in_c) is int64 if
 * out_wide, else int32 (then batch * out_h * out_w <= NITI_MAX_K_S32: every partial sum is exact). */
int niti_amx_weight_grad_applies(const niti_conv_shape *s);
int niti_amx_weight_grad(const niti_conv_shape *s, const int8_t *x, const int8_t *dy, void *dw, int out_wide);
/* Stride-1 conv forward on AMX tiles straight from the grid (an implicit GEMM: no patch gather). */
int niti_amx_forward_applies(const niti_conv_shape *s);
int niti_amx_forward(const niti_conv_shape *s, const int8_t *x, const int8_t *w, int32_t *y);
int niti_scatter_input_grad_applies(const niti_conv_shape *s);
int niti_scatter_input_grad(const niti_conv_shape *s, const int8_t *dy, const int8_t *w, int32_t *dx);

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define NITI_VNNI 1
#include <immintrin.h>
/* acc += per int32 lane, the sum of 4 products u (unsigned bytes) x s (signed bytes). Inline asm:
 * gcc 12 copies and spills accumulators of _mm512_dpbusd_epi32 (see cpu_microkernel.c). */
static inline __m512i niti_dpbusd(__m512i acc, __m512i u, __m512i s) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "v"(s));
    return acc;
}
#else
#define NITI_VNNI 0
#endif

#endif /* NITI_CPU_INTERNAL_H */
