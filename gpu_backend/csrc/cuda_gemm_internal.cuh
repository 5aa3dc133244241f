/* cuda_gemm_internal.cuh: the interface between the CUDA library's GEMM files: the operand gather
 * (cuda_gemm_gather.cu), the engines (cuda_gemm_engines.cu) and the training GEMM ops built on them
 * (cuda_gemm_ops.cu). Structs, constants and declarations only: the library is compiled without
 * relocatable device code, so a kernel and its device helpers live in the file that launches it.
 * Not part of the public API (niti_cuda_api.h).
 *
 * The engine form of an operand: rows x Kp int8, K-contiguous, Kp a multiple of KPAD and every row
 * 16-byte aligned, so the engines have no K tail and no layout cases.
 */
#ifndef NITI_CUDA_GEMM_INTERNAL_CUH
#define NITI_CUDA_GEMM_INTERNAL_CUH

#include <stdint.h>

constexpr int KPAD = 64; /* operands' K is padded with zeros to a multiple of this (the engines' K tile) */

static inline int64_t niti_cu_round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline int64_t niti_cu_ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

/* Element (r, k) of a logical int8 matrix, by kind:
 *   DENSE:      src[r * sr + k * sk]
 *   PATCHES:    r = output pixel (n, y, x) of an out_h x out_w grid, k = patch index (a, b, c):
 *               src[n, sy / dil_h, sx / dil_w, c] with sy = y * stride_h - pad_h + a (sx likewise),
 *               0 where sy is outside [0, src_h * dil_h) or not a multiple of dil_h (dil > 1: the
 *               zero-upsampled error map of a strided conv's input gradient)
 *   PATCHES_T:  PATCHES with r and k swapped (rows = patch index, depth = output pixels)
 *   FLIPPED_W:  r = i, k = (a, b, o): w[o, k_h-1-a, k_w-1-b, i] for w (ch = O, k_h, k_w, batch = I) */
enum GatherKind { DENSE = 0, PATCHES = 1, PATCHES_T = 2, FLIPPED_W = 3 };

struct Gather {
    const int8_t *src;
    int kind;
    int r_fast; /* the source is contiguous along r (1) or along k (0): picks the coalesced read order */
    int64_t sr, sk;
    int batch, src_h, src_w, ch, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

/* An engine operand: rows x Kp int8, K-contiguous; `owned` is a temporary to free after the GEMM. */
struct Operand {
    const int8_t *ptr = nullptr;
    int8_t *owned = nullptr;
};

/* The A operand of the mma engine's implicit path: PATCHES (dil 1) of the NHWC map src (batch,
 * src_h, src_w, ch) over an out_h x out_w grid, read by the GEMM kernel itself (see gemm_mma_kernel). */
struct ConvA {
    const int8_t *src;
    int src_h, src_w, ch, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_h, pad_w;
};

/* cuda_gemm_gather.cu: the operand in engine form: the source itself when it already is (dense,
 * K-contiguous, K % KPAD == 0, 16-byte aligned), else a gathered copy (out->owned). */
int niti_cu_make_operand(const char *fn, const Gather &d, int64_t rows, int64_t K, Operand *out);

/* cuda_gemm_engines.cu: C (M x N, int32 or int64 when wide) = A (M x Kp) * B (N x Kp)^T, both in
 * engine form, A read from the patches cv describes instead when cv is set (mma engine only). */
int niti_cu_run_gemm(const char *fn, const int8_t *A, const ConvA *cv, const int8_t *B, int64_t M, int64_t N, int64_t Kp,
                     void *C, bool wide);

#endif /* NITI_CUDA_GEMM_INTERNAL_CUH */
