/* cuda_gemm_ops.cu: the six training GEMMs (linear and conv2d: forward, input gradient, weight
 * gradient) and the plain GEMM, with their C API: each maps its operands onto the one engine form and
 * runs an engine (cuda_gemm_engines.cu).
 *
 * An engine computes C (M x N) = A (M x Kp) * B (N x Kp)^T with both operands K-contiguous, Kp a
 * multiple of 64 and every row 16-byte aligned. Each op first gathers its operands into that form on
 * the device when they are not already in it (cuda_gemm_gather.cu: conv patches, transposes, the
 * flipped kernel of the input gradient, or just zero padding of K), then runs the engine:
 *
 *   op                   A (M x K)                           B (N x K)                    C
 *   linear forward       x (batch, in)                       w (out, in)                  (batch, out)
 *   linear input grad    dy (batch, out)                     w^T (in, out)                (batch, in)
 *   linear weight grad   dy^T (out, batch)                   x^T (in, batch)              (out, in)
 *   conv forward         patches of x (N*E*F, kh*kw*I)   *   w (O, kh*kw*I)               (N*E*F, O) = NEFO
 *   conv input grad      patches of dy upsampled by the  *   w flipped (I, kh*kw*O)       (N*H*W, I) = NHWI
 *                        stride, padded by k-1-pad
 *   conv weight grad     dy^T (O, N*E*F)                     patches of x, transposed     (O, kh*kw*I) = OHWI
 *
 * (*) Implicit conv operand. Gathering conv patches writes and rereads kh*kw copies of the activation
 * map (about 2 GB per VGG training step at batch 256) with integer index work per byte. Where it
 * applies, the mma engine instead loads A straight from the NHWC map (ConvA; how the loader does it
 * is in cuda_gemm_engines.cu), with exactly the products and sums of the gathered GEMM (same tiles,
 * same split-K, same bound), so results are bit-identical either way. The choice is a dispatch by
 * shape (a_operand_path): conv forward (any stride) and the stride-1 input gradient (whose dy is not
 * upsampled) with a channel count % 16 == 0 and an aligned map, on the mma engine, in conv mode
 * auto; everything else (other channel counts, strided input gradients, the dp4a engine, the weight
 * gradient, whose patches are transposed, and conv mode gather: niti_cuda_set_conv_mode) gathers.
 * B, the weights, is always gathered: it is small. niti_cuda_conv_path reports the path a conv
 * would take.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "cuda_gemm_internal.cuh"

namespace {

Gather dense(const int8_t *src, int64_t sr, int64_t sk) {
    Gather d = {};
    d.src = src;
    d.kind = DENSE;
    d.sr = sr;
    d.sk = sk;
    d.r_fast = sk != 1;
    return d;
}

/* How the A operand reaches the engine: NITI_CONV_PATH_IMPLICIT (the mma kernel reads the patches
 * from the activation map) exactly when
 *   - the conv mode is auto (niti_cuda_set_conv_mode 0) and the engine is mma (cp.async loader),
 *   - A is PATCHES without dilation (conv forward, any stride; conv input gradient, stride 1: a
 *     strided one's zero-upsampled map has no 16-byte runs),
 *   - the channel count is a multiple of 16 (a 16-byte chunk of k never straddles two kernel taps,
 *     and every chunk starts 16-byte aligned) and the map's base address is 16-byte aligned;
 * else NITI_CONV_PATH_GATHER (cuda_gemm_gather.cu materialises it first). B is always gathered / padded:
 * weights are small, and the weight gradient's patches are transposed (k runs over pixels). */
enum { NITI_CONV_PATH_GATHER = 0, NITI_CONV_PATH_IMPLICIT = 1 };

int a_operand_path(const Gather &a) {
    if (niti_cu_conv_mode() != 0 || niti_cu_gemm_engine() != 1) return NITI_CONV_PATH_GATHER;
    if (a.kind != PATCHES || a.dil_h != 1 || a.dil_w != 1 || a.ch % 16 != 0 || (reinterpret_cast<uintptr_t>(a.src) & 15))
        return NITI_CONV_PATH_GATHER;
    return NITI_CONV_PATH_IMPLICIT;
}

/* Gather both operands (as needed; A not at all on the implicit path), run the engine, free the
 * temporaries (stream-ordered). An int32 C over a reduction longer than niti_k_fits_s32 allows is
 * summed exactly in int64 and narrowed by the device check (niti_cuda_narrow_s64_s32), which raises
 * the overflow flag exactly where the numpy reference's check_int32 raises, never wrapping. */
int gemm_op(const char *fn, const Gather &a, const Gather &b, int64_t M, int64_t N, int64_t K, void *C, bool wide) {
    if (!wide && !niti_k_fits_s32(K) && M > 0 && N > 0) {
        void *sums = nullptr; /* (M, N) int64 */
        int st = niti_cu_tmp_alloc(fn, sizeof(int64_t) * (size_t)(M * N), &sums);
        if (!st) st = gemm_op(fn, a, b, M, N, K, sums, true);
        if (!st) st = niti_cuda_narrow_s64_s32(M * N, static_cast<const int64_t *>(sums), static_cast<int32_t *>(C));
        niti_cu_tmp_free(sums);
        return st;
    }
    Operand oa, ob;
    ConvA cv = {};
    const bool implicit = a_operand_path(a) == NITI_CONV_PATH_IMPLICIT;
    if (implicit) {
        cv = ConvA{a.src, a.src_h, a.src_w, a.ch, a.out_h, a.out_w, a.k_h, a.k_w, a.stride_h, a.stride_w, a.pad_h, a.pad_w};
    }
    int st = implicit ? NITI_OK : niti_cu_make_operand(fn, a, M, K, &oa);
    if (!st) st = niti_cu_make_operand(fn, b, N, K, &ob);
    if (!st) st = niti_cu_run_gemm(fn, oa.ptr, implicit ? &cv : nullptr, ob.ptr, M, N, niti_cu_round_up(K, KPAD), C, wide);
    niti_cu_tmp_free(oa.owned);
    niti_cu_tmp_free(ob.owned);
    return st;
}

__global__ void exp_sum_kernel(const int32_t *a, const int32_t *b, int32_t *out) {
    *out = (a ? *a : 0) + (b ? *b : 0);
}

/* The output exponent of a GEMM op: the sum of its operands' (on the device). */
int queue_exp_sum(const char *fn, const int32_t *a, const int32_t *b, int32_t *out) {
    if (!out) return NITI_OK;
    NITI_LAUNCH(exp_sum_kernel, 1, 1, 0, niti_cu_stream())(a, b, out);
    return niti_cu_check_launch(fn);
}

/* ====================================================================================== linear == */
int linear_args(const char *fn, int64_t batch, int64_t in_f, int64_t out_f, const void *p, const void *q, const void *r) {
    REQUIRE(batch >= 0 && in_f >= 0 && out_f >= 0, "%s: sizes must be >= 0 (batch=%lld in=%lld out=%lld)", fn,
            (long long)batch, (long long)in_f, (long long)out_f);
    REQUIRE(p && q && r, "%s: NULL array", fn);
    return NITI_OK;
}

int linear_weight_grad(const char *fn, int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int32_t *exp_x,
                       const int8_t *dy, const int32_t *exp_dy, void *dw, int32_t *exp_dw, bool wide) {
    int st = linear_args(fn, batch, in_f, out_f, x, dy, dw);
    if (st) return st;
    NITI_CU_ENTER(fn);
    /* dw (out, in) = dy^T (out x batch) * (x^T (in x batch))^T */
    if ((st = gemm_op(fn, dense(dy, 1, out_f), dense(x, 1, in_f), out_f, in_f, batch, dw, wide))) return st;
    return queue_exp_sum(fn, exp_x, exp_dy, exp_dw);
}

/* ====================================================================================== conv2d == */
struct ConvShape {
    int64_t batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w, out_h, out_w;
};

ConvShape conv_shape(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c, int64_t k_h, int64_t k_w,
                     int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    ConvShape s = {batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w, 0, 0};
    if (stride_h > 0 && stride_w > 0) {
        s.out_h = niti_conv_out(in_h, k_h, stride_h, pad_h);
        s.out_w = niti_conv_out(in_w, k_w, stride_w, pad_w);
    }
    return s;
}

int conv_shape_args(const char *fn, const ConvShape &s) {
    REQUIRE(s.batch >= 0 && s.in_h >= 1 && s.in_w >= 1 && s.in_c >= 1 && s.out_c >= 1,
            "%s: sizes must be positive (batch=%lld in_h=%lld in_w=%lld in_c=%lld out_c=%lld)", fn, (long long)s.batch,
            (long long)s.in_h, (long long)s.in_w, (long long)s.in_c, (long long)s.out_c);
    REQUIRE(s.k_h >= 1 && s.k_w >= 1 && s.stride_h >= 1 && s.stride_w >= 1 && s.pad_h >= 0 && s.pad_w >= 0,
            "%s: need kernel >= 1, stride >= 1, padding >= 0 (kernel %lldx%lld stride %lldx%lld padding %lldx%lld)", fn,
            (long long)s.k_h, (long long)s.k_w, (long long)s.stride_h, (long long)s.stride_w, (long long)s.pad_h,
            (long long)s.pad_w);
    REQUIRE(s.in_h + 2 * s.pad_h >= s.k_h && s.in_w + 2 * s.pad_w >= s.k_w,
            "%s: kernel %lldx%lld larger than the padded input %lldx%lld", fn, (long long)s.k_h, (long long)s.k_w,
            (long long)(s.in_h + 2 * s.pad_h), (long long)(s.in_w + 2 * s.pad_w));
    /* the gather indexes pixels and patch elements with 32-bit arithmetic */
    const int64_t big = 0x7fffffffLL;
    REQUIRE(s.batch * s.in_h * s.in_w <= big && s.batch * s.out_h * s.out_w <= big && s.k_h * s.k_w * s.in_c <= big &&
                s.k_h * s.k_w * s.out_c <= big && (s.in_h + s.k_h) * s.stride_h <= big && (s.in_w + s.k_w) * s.stride_w <= big &&
                s.pad_h + s.k_h <= big / 4 && s.pad_w + s.k_w <= big / 4,
            "%s: conv dimensions too large for the CUDA gather", fn);
    return NITI_OK;
}

int conv_args(const char *fn, const ConvShape &s, const void *p, const void *q, const void *r) {
    int st = conv_shape_args(fn, s);
    if (st) return st;
    REQUIRE(p && q && r, "%s: NULL array", fn);
    return NITI_OK;
}

/* Patches of x (batch, in_h, in_w, in_c) for the forward conv and the weight gradient. */
Gather forward_patches(const ConvShape &s, const int8_t *x, int kind) {
    Gather d = {};
    d.src = x;
    d.kind = kind;
    d.r_fast = kind == PATCHES_T; /* c, the contiguous axis, is part of the patch index */
    d.batch = (int)s.batch;
    d.src_h = (int)s.in_h;
    d.src_w = (int)s.in_w;
    d.ch = (int)s.in_c;
    d.out_h = (int)s.out_h;
    d.out_w = (int)s.out_w;
    d.k_h = (int)s.k_h;
    d.k_w = (int)s.k_w;
    d.stride_h = (int)s.stride_h;
    d.stride_w = (int)s.stride_w;
    d.pad_h = (int)s.pad_h;
    d.pad_w = (int)s.pad_w;
    d.dil_h = d.dil_w = 1;
    return d;
}

/* dx[h] gathers dy[e] with e * stride = h + pad - kh: the patches of dy upsampled by the stride
 * (dil) and padded by k-1-pad (negative when pad > k-1: an offset into dy), over the input grid. */
Gather input_grad_patches(const ConvShape &s, const int8_t *dy) {
    Gather a = {};
    a.src = dy;
    a.kind = PATCHES;
    a.r_fast = 0;
    a.batch = (int)s.batch;
    a.src_h = (int)s.out_h;
    a.src_w = (int)s.out_w;
    a.ch = (int)s.out_c;
    a.out_h = (int)s.in_h;
    a.out_w = (int)s.in_w;
    a.k_h = (int)s.k_h;
    a.k_w = (int)s.k_w;
    a.stride_h = a.stride_w = 1;
    a.pad_h = (int)(s.k_h - 1 - s.pad_h);
    a.pad_w = (int)(s.k_w - 1 - s.pad_w);
    a.dil_h = (int)s.stride_h;
    a.dil_w = (int)s.stride_w;
    return a;
}

/* The input gradient's B: the flipped kernel (I, kh*kw*O). */
Gather flipped_weights(const ConvShape &s, const int8_t *w) {
    Gather b = {};
    b.src = w;
    b.kind = FLIPPED_W;
    b.r_fast = 1; /* i, the row index, is w's contiguous axis */
    b.ch = (int)s.out_c;
    b.batch = (int)s.in_c;
    b.k_h = (int)s.k_h;
    b.k_w = (int)s.k_w;
    return b;
}

int conv_weight_grad(const char *fn, const ConvShape &s, const int8_t *x, const int32_t *exp_x, const int8_t *dy,
                     const int32_t *exp_dy, void *dw, int32_t *exp_dw, bool wide) {
    int st = conv_args(fn, s, x, dy, dw);
    const int64_t K = s.batch * s.out_h * s.out_w; /* reduction length */
    if (st) return st;
    NITI_CU_ENTER(fn);
    /* dw (O, kh*kw*I) = dy^T (O x NEF) * (patches^T (kh*kw*I x NEF))^T */
    const int64_t N = s.k_h * s.k_w * s.in_c;
    if ((st = gemm_op(fn, dense(dy, 1, s.out_c), forward_patches(s, x, PATCHES_T), s.out_c, N, K, dw, wide))) return st;
    return queue_exp_sum(fn, exp_x, exp_dy, exp_dw);
}

#define CONV_PARAMS                                                                                              \
    int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c, int64_t k_h, int64_t k_w,            \
        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w
#define CONV_SHAPE conv_shape(batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w)

} /* namespace */

extern "C" {

/* ---- plain GEMM -------------------------------------------------------------------------------------- */
static int gemm_args(const char *fn, int64_t M, int64_t N, int64_t K, const void *A, const void *B, const void *C) {
    REQUIRE(M >= 0 && N >= 0 && K >= 0, "%s: sizes must be >= 0 (M=%lld N=%lld K=%lld)", fn, (long long)M, (long long)N,
            (long long)K);
    REQUIRE((A || M * K == 0) && (B || N * K == 0) && (C || M * N == 0), "%s: NULL array", fn);
    return NITI_OK;
}

int niti_cuda_gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int32_t *C) {
    int st = gemm_args(__func__, M, N, K, A, B, C);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    return gemm_op(__func__, dense(A, K, 1), dense(B, K, 1), M, N, K, C, false);
}

int niti_cuda_gemm_s8s8s64(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int64_t *C) {
    int st = gemm_args(__func__, M, N, K, A, B, C);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    return gemm_op(__func__, dense(A, K, 1), dense(B, K, 1), M, N, K, C, true);
}

/* ---- linear -------------------------------------------------------------------------------------------- */
int niti_cuda_linear_forward(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int32_t *exp_x,
                             const int8_t *w, const int32_t *exp_w, int32_t *y, int32_t *exp_y) {
    int st = linear_args(__func__, batch, in_f, out_f, x, w, y);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    if ((st = gemm_op(__func__, dense(x, in_f, 1), dense(w, in_f, 1), batch, out_f, in_f, y, false))) return st;
    return queue_exp_sum(__func__, exp_x, exp_w, exp_y);
}

int niti_cuda_linear_input_grad(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *dy, const int32_t *exp_dy,
                                const int8_t *w, const int32_t *exp_w, int32_t *dx, int32_t *exp_dx) {
    int st = linear_args(__func__, batch, in_f, out_f, dy, w, dx);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    /* dx (batch, in) = dy (batch x out) * (w^T (in x out))^T */
    if ((st = gemm_op(__func__, dense(dy, out_f, 1), dense(w, 1, in_f), batch, in_f, out_f, dx, false))) return st;
    return queue_exp_sum(__func__, exp_dy, exp_w, exp_dx);
}

int niti_cuda_linear_weight_grad_s32(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int32_t *exp_x,
                                     const int8_t *dy, const int32_t *exp_dy, int32_t *dw, int32_t *exp_dw) {
    return linear_weight_grad(__func__, batch, in_f, out_f, x, exp_x, dy, exp_dy, dw, exp_dw, false);
}

int niti_cuda_linear_weight_grad_s64(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int32_t *exp_x,
                                     const int8_t *dy, const int32_t *exp_dy, int64_t *dw, int32_t *exp_dw) {
    return linear_weight_grad(__func__, batch, in_f, out_f, x, exp_x, dy, exp_dy, dw, exp_dw, true);
}

/* ---- conv2d -------------------------------------------------------------------------------------------- */
int niti_cuda_conv2d_forward(CONV_PARAMS, const int8_t *x, const int32_t *exp_x, const int8_t *w, const int32_t *exp_w,
                             int32_t *y, int32_t *exp_y) {
    ConvShape s = CONV_SHAPE;
    int st = conv_args(__func__, s, x, w, y);
    const int64_t K = k_h * k_w * in_c;
    if (st) return st;
    NITI_CU_ENTER(__func__);
    /* y (N*E*F, O) = patches (N*E*F x K) * (w (O x K))^T */
    if ((st = gemm_op(__func__, forward_patches(s, x, PATCHES), dense(w, K, 1), batch * s.out_h * s.out_w, out_c, K, y, false)))
        return st;
    return queue_exp_sum(__func__, exp_x, exp_w, exp_y);
}

int niti_cuda_conv2d_input_grad(CONV_PARAMS, const int8_t *dy, const int32_t *exp_dy, const int8_t *w,
                                const int32_t *exp_w, int32_t *dx, int32_t *exp_dx) {
    ConvShape s = CONV_SHAPE;
    int st = conv_args(__func__, s, dy, w, dx);
    const int64_t K = k_h * k_w * out_c;
    if (st) return st;
    NITI_CU_ENTER(__func__);
    /* dx (N*H*W, I) = patches of dy (N*H*W x K) * (flipped w (I x K))^T */
    if ((st = gemm_op(__func__, input_grad_patches(s, dy), flipped_weights(s, w), batch * in_h * in_w, in_c, K, dx, false)))
        return st;
    return queue_exp_sum(__func__, exp_dy, exp_w, exp_dx);
}

int niti_cuda_conv2d_weight_grad_s32(CONV_PARAMS, const int8_t *x, const int32_t *exp_x, const int8_t *dy,
                                     const int32_t *exp_dy, int32_t *dw, int32_t *exp_dw) {
    return conv_weight_grad(__func__, CONV_SHAPE, x, exp_x, dy, exp_dy, dw, exp_dw, false);
}

int niti_cuda_conv2d_weight_grad_s64(CONV_PARAMS, const int8_t *x, const int32_t *exp_x, const int8_t *dy,
                                     const int32_t *exp_dy, int64_t *dw, int32_t *exp_dw) {
    return conv_weight_grad(__func__, CONV_SHAPE, x, exp_x, dy, exp_dy, dw, exp_dw, true);
}

int niti_cuda_conv_path(int op, CONV_PARAMS, const void *src, int *path_out) {
    if (!path_out) return niti_cu_fail(NITI_E_ARG, "%s: NULL output", __func__);
    REQUIRE(op >= 0 && op <= 2, "%s: op %d is not 0 (forward), 1 (input gradient) or 2 (weight gradient)", __func__, op);
    ConvShape s = CONV_SHAPE;
    int st = conv_shape_args(__func__, s);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    const int8_t *p = static_cast<const int8_t *>(src);
    /* the same decision the ops make (a_operand_path); the weight gradient's A is dy^T, dense */
    *path_out = op == 0 ? a_operand_path(forward_patches(s, p, PATCHES))
              : op == 1 ? a_operand_path(input_grad_patches(s, p))
                        : NITI_CONV_PATH_GATHER;
    return NITI_OK;
}

} /* extern "C" */
