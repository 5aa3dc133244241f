/* cpu_layers.c: the GEMM-shaped entry points (plain GEMM, linear and conv2d, forward and both
 * gradients), each a choice of operands for the engine in cpu_gemm.c.
 *
 *   op                   A (M x K)                         B (N x K)                    C
 *   linear forward       x (batch, in)                     w (out, in)                  (batch, out)
 *   linear input grad    dy (batch, out)                   w^T: k-major view of w       (batch, in)
 *   linear weight grad   dy^T: k-major view of dy          x^T: k-major view of x       (out, in)
 *   conv forward         patches of x                      w (O, kh*kw*I)               (N*E*F, O)
 *   conv input grad      patches of dy, upsampled by       w flipped: (I, kh*kw*O)      (N*H*W, I)
 *                        the stride (a transposed conv)
 *   conv weight grad     dy^T: k-major view of dy          patches of x, transposed     (O, kh*kw*I)
 *
 * On the AMX engine, stride-1 convs skip patches altogether (cpu_amx_conv.c): the forward and input
 * gradient read their tiles straight from a zero-gapped copy of the input, the weight gradient from
 * shifted views of it.
 *
 * The conv input gradient is the col2im scatter-add of dy * w written as a gather: each dx pixel
 * sums the dy pixels whose windows cover it. That needs no scatter buffer and no atomics; for
 * stride > 1 the upsampled map feeds zeros to some taps (exact, a little wasted work).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define REQUIRE(cond, ...) \
    do {                   \
        if (!(cond)) return niti_fail(NITI_E_ARG, __VA_ARGS__); \
    } while (0)

/* C (int32) = A * B^T. Up to NITI_MAX_K_S32 the sum provably fits int32 and is accumulated there.
 * A longer reduction (a weight gradient over more than 131071 pixels) is accumulated exactly in
 * int64 and narrowed with a check, as the numpy reference does (check_int32): a value outside int32
 * is an overflow error, never a wrap. */
static int gemm_s32(const char *fn, const niti_operand *A, const niti_operand *B, int64_t M, int64_t N, int64_t K,
                    int32_t *C) {
    if (niti_k_fits_s32(K) || M == 0 || N == 0) return niti_gemm_run(A, B, M, N, K, C, N, 0);
    int64_t *wide = malloc(sizeof(int64_t) * (size_t)(M * N));
    if (!wide) return niti_fail(NITI_E_NOMEM, "%s: out of memory for the int64 accumulator", fn);
    int st = niti_gemm_run(A, B, M, N, K, wide, N, 1);
    if (st == NITI_OK && (st = niti_narrow_s64_s32(M * N, wide, C)) == NITI_E_OVERFLOW) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s", niti_last_error());
        niti_fail(NITI_E_OVERFLOW, "%s: %s", fn, detail);
    }
    free(wide);
    return st;
}

/* ---- plain GEMM ------------------------------------------------------------------------------------ */
static int gemm_args(const char *fn, int64_t M, int64_t N, int64_t K, const void *A, const void *B, const void *C) {
    REQUIRE(M >= 0 && N >= 0 && K >= 0, "%s: sizes must be >= 0 (M=%lld N=%lld K=%lld)", fn, (long long)M,
            (long long)N, (long long)K);
    REQUIRE((A || M * K == 0) && (B || N * K == 0) && (C || M * N == 0), "%s: NULL array", fn);
    return NITI_OK;
}

int niti_gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int32_t *C) {
    int st = gemm_args(__func__, M, N, K, A, B, C);
    if (st) return st;
    niti_operand a = niti_dense(A, M, K, K, 0), b = niti_dense(B, N, K, K, 0);
    return gemm_s32(__func__, &a, &b, M, N, K, C);
}

int niti_gemm_s8s8s64(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int64_t *C) {
    int st = gemm_args(__func__, M, N, K, A, B, C);
    if (st) return st;
    niti_operand a = niti_dense(A, M, K, K, 0), b = niti_dense(B, N, K, K, 0);
    return niti_gemm_run(&a, &b, M, N, K, C, N, 1);
}

/* ---- linear --------------------------------------------------------------------------------------- */
static int linear_args(const char *fn, int64_t batch, int64_t in_f, int64_t out_f, const void *p, const void *q,
                       const void *r) {
    REQUIRE(batch >= 0 && in_f >= 0 && out_f >= 0, "%s: sizes must be >= 0 (batch=%lld in=%lld out=%lld)", fn,
            (long long)batch, (long long)in_f, (long long)out_f);
    REQUIRE(p && q && r, "%s: NULL array", fn);
    return NITI_OK;
}

int niti_linear_forward(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int8_t *w, int32_t *y) {
    int st = linear_args(__func__, batch, in_f, out_f, x, w, y);
    if (st) return st;
    niti_operand a = niti_dense(x, batch, in_f, in_f, 0), b = niti_dense(w, out_f, in_f, in_f, 0);
    return gemm_s32(__func__, &a, &b, batch, out_f, in_f, y);
}

int niti_linear_input_grad(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *dy, const int8_t *w,
                           int32_t *dx) {
    int st = linear_args(__func__, batch, in_f, out_f, dy, w, dx);
    if (st) return st;
    niti_operand a = niti_dense(dy, batch, out_f, out_f, 0), b = niti_dense(w, in_f, out_f, in_f, 1);
    return gemm_s32(__func__, &a, &b, batch, in_f, out_f, dx);
}

static int linear_weight_grad(const char *fn, int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x,
                              const int8_t *dy, void *dw, int wide) {
    int st = linear_args(fn, batch, in_f, out_f, x, dy, dw);
    if (st) return st;
    niti_operand a = niti_dense(dy, out_f, batch, out_f, 1), b = niti_dense(x, in_f, batch, in_f, 1);
    return wide ? niti_gemm_run(&a, &b, out_f, in_f, batch, dw, in_f, 1) : gemm_s32(fn, &a, &b, out_f, in_f, batch, dw);
}

int niti_linear_weight_grad_s32(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int8_t *dy,
                                int32_t *dw) {
    return linear_weight_grad(__func__, batch, in_f, out_f, x, dy, dw, 0);
}

int niti_linear_weight_grad_s64(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *x, const int8_t *dy,
                                int64_t *dw) {
    return linear_weight_grad(__func__, batch, in_f, out_f, x, dy, dw, 1);
}

/* ---- conv2d --------------------------------------------------------------------------------------- */
typedef niti_conv_shape conv_shape;

static int conv_args(const char *fn, const conv_shape *s, const void *p, const void *q, const void *r) {
    REQUIRE(s->batch >= 0 && s->in_h >= 1 && s->in_w >= 1 && s->in_c >= 1 && s->out_c >= 1,
            "%s: sizes must be positive (batch=%lld in_h=%lld in_w=%lld in_c=%lld out_c=%lld)", fn,
            (long long)s->batch, (long long)s->in_h, (long long)s->in_w, (long long)s->in_c, (long long)s->out_c);
    REQUIRE(s->k_h >= 1 && s->k_w >= 1 && s->stride_h >= 1 && s->stride_w >= 1 && s->pad_h >= 0 && s->pad_w >= 0,
            "%s: need kernel >= 1, stride >= 1, padding >= 0 (kernel %lldx%lld stride %lldx%lld padding %lldx%lld)",
            fn, (long long)s->k_h, (long long)s->k_w, (long long)s->stride_h, (long long)s->stride_w,
            (long long)s->pad_h, (long long)s->pad_w);
    REQUIRE(s->in_h + 2 * s->pad_h >= s->k_h && s->in_w + 2 * s->pad_w >= s->k_w,
            "%s: kernel %lldx%lld larger than the padded input %lldx%lld", fn, (long long)s->k_h, (long long)s->k_w,
            (long long)(s->in_h + 2 * s->pad_h), (long long)(s->in_w + 2 * s->pad_w));
    REQUIRE(p && q && r, "%s: NULL array", fn);
    return NITI_OK;
}

static conv_shape make_shape(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c, int64_t k_h,
                             int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w) {
    conv_shape s = {batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w, 0, 0};
    if (stride_h > 0 && stride_w > 0) {
        s.out_h = niti_conv_out(in_h, k_h, stride_h, pad_h);
        s.out_w = niti_conv_out(in_w, k_w, stride_w, pad_w);
    }
    return s;
}

/* Patches of x for the forward conv and the weight gradient. */
static niti_im2col forward_patches(const conv_shape *s, const int8_t *x) {
    niti_im2col g = {x, s->batch, s->in_h, s->in_w, s->in_c, s->out_h, s->out_w, s->k_h, s->k_w,
                     s->stride_h, s->stride_w, s->pad_h, s->pad_w, 1, 1};
    return g;
}

#define CONV_PARAMS                                                                                              \
    int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c, int64_t k_h, int64_t k_w,            \
        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w
#define CONV_SHAPE make_shape(batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, pad_h, pad_w)

int niti_conv2d_forward(CONV_PARAMS, const int8_t *x, const int8_t *w, int32_t *y) {
    conv_shape s = CONV_SHAPE;
    int st = conv_args(__func__, &s, x, w, y);
    if (st) return st;
    int64_t K = k_h * k_w * in_c;
    if (niti_amx_forward_applies(&s)) return niti_amx_forward(&s, x, w, y);
    if (niti_direct_forward_applies(&s)) return niti_direct_forward(&s, x, w, y);
    niti_im2col g = forward_patches(&s, x);
    niti_operand a = niti_patches(&g), b = niti_dense(w, out_c, K, K, 0);
    return gemm_s32(__func__, &a, &b, a.rows, out_c, K, y);
}

/* ---- conv2d forward / input grad + requantize ---------------------------------------------------
 * The conv's int32 output never reaches memory: each thread makes it a slice of images at a time in
 * a scratch that stays in its core's L2 and requantizes it from there, with the shift of the range
 * that thread has seen so far. Once every slice is done the final shift is known, and the slices
 * done with another shift are computed again (usually a thread's first one or two). Element i draws
 * its rounding at index i of the whole tensor, so the result is bit for bit the conv followed by
 * niti_requantize_s32.
 *
 * Each slice is a conv call of its own, which packs (or flips) the weights again. That pays while
 * the weights are small next to the int32 bytes a slice keeps out of memory: measured on
 * vgg-small-7 at batch 64 (conv + requantize, ms, unfused -> fused): conv1 4.6 -> 1.8, conv3
 * 3.6 -> 2.8, conv2's input grad 8.5 -> 5.8 (weights of 3.5 to 295 KB); but conv6's input grad
 * 5.7 -> 7.5 (2.4 MB of weights). Above FUSED_MAX_WEIGHT_BYTES the conv runs whole, on all
 * threads, and is requantized after. */
#ifndef FUSED_SLICE_BYTES
#define FUSED_SLICE_BYTES (1024 * 1024) /* int32 scratch per thread: half a core's 2 MiB L2 */
#endif
#define FUSED_MAX_WEIGHT_BYTES (FUSED_SLICE_BYTES / 2)

/* the int32 output of images [n0, n0 + nb) into acc */
typedef int (*conv_slice_fn)(const conv_shape *s, const int8_t *src, const int8_t *w, int64_t n0, int64_t nb,
                             int32_t *acc);

static int forward_slice(const conv_shape *s, const int8_t *x, const int8_t *w, int64_t n0, int64_t nb, int32_t *acc) {
    return niti_conv2d_forward(nb, s->in_h, s->in_w, s->in_c, s->out_c, s->k_h, s->k_w, s->stride_h, s->stride_w,
                               s->pad_h, s->pad_w, x + n0 * s->in_h * s->in_w * s->in_c, w, acc);
}

static int input_grad_slice(const conv_shape *s, const int8_t *dy, const int8_t *w, int64_t n0, int64_t nb,
                            int32_t *acc) {
    return niti_conv2d_input_grad(nb, s->in_h, s->in_w, s->in_c, s->out_c, s->k_h, s->k_w, s->stride_h, s->stride_w,
                                  s->pad_h, s->pad_w, dy + n0 * s->out_h * s->out_w * s->out_c, w, acc);
}

#define FAILURE_CHARS 256

/* Called by a worker whose slice failed: its status and message, kept for the calling thread to
 * report (niti_last_error is per thread, so the worker's own message would not reach the caller). */
static void note_failure(int status, const char *message, int *failed, char detail[FAILURE_CHARS]) {
#pragma omp critical(niti_fused_failure)
    {
        *failed = status;
        snprintf(detail, FAILURE_CHARS, "%s", message);
    }
}

static int requantize_by_slices(const char *fn, const conv_shape *s, conv_slice_fn slice, int64_t image_out,
                                const int8_t *src, const int8_t *w, int mode, uint32_t seed, uint32_t step,
                                uint32_t tensor_id, int8_t *out, int *shift_out) {
    int st = conv_args(fn, s, src, w, out);
    if (st || (st = niti_check_round_mode(fn, mode))) return st;
    REQUIRE(shift_out, "%s: NULL shift output", fn);
    *shift_out = 0;
    int64_t batch = s->batch;
    if (batch == 0 || image_out == 0) return NITI_OK;
    if (s->out_c * s->k_h * s->k_w * s->in_c > FUSED_MAX_WEIGHT_BYTES) {
        int32_t *whole = malloc(sizeof(int32_t) * (size_t)(batch * image_out));
        if (!whole) return niti_fail(NITI_E_NOMEM, "%s: out of memory for the int32 output", fn);
        if ((st = slice(s, src, w, 0, batch, whole)) == NITI_OK)
            st = niti_requantize_s32(batch * image_out, whole, mode, seed, step, tensor_id, out, shift_out);
        free(whole);
        return st;
    }
    int64_t per_slice = niti_max64(1, FUSED_SLICE_BYTES / (4 * image_out)), slices = (batch + per_slice - 1) / per_slice;
    int8_t *used = malloc((size_t)slices); /* the shift each slice was requantized with */
    if (!used) return niti_fail(NITI_E_NOMEM, "%s: out of memory", fn);
    uint32_t key = niti_hash_key(seed, step, tensor_id);
    int32_t hi = 0, lo = 0;
    int failed = NITI_OK, threads = (int)niti_min64(niti_threads(), slices); /* failed: a worker's status */
    char detail[FAILURE_CHARS] = ""; /* a failed worker's message: niti_last_error is per thread */
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int32_t *acc = aligned_alloc(64, (size_t)niti_round_up(4 * per_slice * image_out, 64));
        int32_t run_hi = 0, run_lo = 0; /* this thread's range so far (static schedule: its slices in order) */
#pragma omp for schedule(static) reduction(max : hi) reduction(min : lo)
        for (int64_t sl = 0; sl < slices; sl++) {
            int64_t n0 = sl * per_slice, nb = niti_min64(per_slice, batch - n0), count = nb * image_out;
            int status = acc ? slice(s, src, w, n0, nb, acc) : NITI_E_NOMEM;
            if (status != NITI_OK) {
                note_failure(status, acc ? niti_last_error() : "out of memory for the conv scratch", &failed, detail);
                continue;
            }
            for (int64_t i = 0; i < count; i++) {
                run_hi = acc[i] > run_hi ? acc[i] : run_hi;
                run_lo = acc[i] < run_lo ? acc[i] : run_lo;
            }
            hi = run_hi > hi ? run_hi : hi;
            lo = run_lo < lo ? run_lo : lo;
            used[sl] = (int8_t)niti_requant_shift(run_hi, run_lo);
            niti_requant_block(acc, out + n0 * image_out, count, n0 * image_out, used[sl], mode, key);
        }
        /* the loop's barrier: hi and lo are the whole tensor's */
        int final_shift = niti_requant_shift(hi, lo);
#pragma omp for schedule(dynamic, 1)
        for (int64_t sl = 0; sl < slices; sl++) {
            if (used[sl] == final_shift || !acc || failed) continue;
            int64_t n0 = sl * per_slice, nb = niti_min64(per_slice, batch - n0);
            int status = slice(s, src, w, n0, nb, acc);
            if (status != NITI_OK) {
                note_failure(status, niti_last_error(), &failed, detail);
                continue;
            }
            niti_requant_block(acc, out + n0 * image_out, nb * image_out, n0 * image_out, final_shift, mode, key);
        }
        free(acc);
    }
    free(used);
    /* a worker's own message stays in its thread (niti_last_error is per thread): say it again here */
    if (failed) return niti_fail(failed, "%s: %s", fn, detail);
    *shift_out = niti_requant_shift(hi, lo);
    return NITI_OK;
}

int niti_conv2d_forward_requantize(CONV_PARAMS, const int8_t *x, const int8_t *w, int mode, uint32_t seed,
                                   uint32_t step, uint32_t tensor_id, int8_t *out, int *shift_out) {
    conv_shape s = CONV_SHAPE;
    return requantize_by_slices(__func__, &s, forward_slice, s.out_h * s.out_w * out_c, x, w, mode, seed, step,
                                tensor_id, out, shift_out);
}

int niti_conv2d_input_grad_requantize(CONV_PARAMS, const int8_t *dy, const int8_t *w, int mode, uint32_t seed,
                                      uint32_t step, uint32_t tensor_id, int8_t *out, int *shift_out) {
    conv_shape s = CONV_SHAPE;
    return requantize_by_slices(__func__, &s, input_grad_slice, in_h * in_w * in_c, dy, w, mode, seed, step,
                                tensor_id, out, shift_out);
}

/* wt[i, t, o] = w[o, taps-1-t, i] for a kernel w (O, taps, I), taps = k_h * k_w in row-major order
 * (the last tap is the first one flipped in both axes): the transposed conv's kernel, a byte
 * transpose per tap and 16 input channels, on all threads. */
static void flip_transpose_kernel(const int8_t *w, int64_t O, int64_t taps, int64_t I, int8_t *wt) {
    int64_t i_blocks = (I + 15) / 16;
#pragma omp parallel for collapse(2) schedule(static) if (O * taps * I > (1 << 20)) num_threads(niti_threads())
    for (int64_t t = 0; t < taps; t++)
        for (int64_t ib = 0; ib < i_blocks; ib++) {
            int64_t i0 = 16 * ib;
            /* source row o at + o * taps * I, destination row i at + i * taps * O */
            niti_transpose_bytes(w + (taps - 1 - t) * I + i0, taps * I, O, niti_min64(16, I - i0),
                                 wt + (i0 * taps + t) * O, taps * O);
        }
}

int niti_conv2d_input_grad(CONV_PARAMS, const int8_t *dy, const int8_t *w, int32_t *dx) {
    conv_shape s = CONV_SHAPE;
    int st = conv_args(__func__, &s, dy, w, dx);
    if (st) return st;
    int64_t K = k_h * k_w * out_c;
    if (niti_scatter_input_grad_applies(&s)) return niti_scatter_input_grad(&s, dy, w, dx);
    /* wt[i, a, b, o] = w[o, k_h-1-a, k_w-1-b, i]: the transposed conv's kernel */
    int8_t *wt = malloc((size_t)(in_c * K)); /* in_c, K >= 1 (checked) */
    if (!wt) return niti_fail(NITI_E_NOMEM, "%s: out of memory", __func__);
    flip_transpose_kernel(w, out_c, k_h * k_w, in_c, wt);
    /* dx[h] gathers dy[e] with e * stride = h + pad - kh: dy upsampled by the stride, padded by k-1-pad */
    conv_shape t = make_shape(batch, s.out_h, s.out_w, out_c, in_c, k_h, k_w, 1, 1, k_h - 1 - pad_h, k_w - 1 - pad_w);
    if (stride_h == 1 && stride_w == 1 && niti_amx_forward_applies(&t)) { /* no upsampling: a forward conv of dy */
        st = niti_amx_forward(&t, dy, wt, dx);
    } else {
        niti_im2col g = {dy, batch, s.out_h, s.out_w, out_c, in_h, in_w, k_h, k_w,
                         1, 1, k_h - 1 - pad_h, k_w - 1 - pad_w, stride_h, stride_w};
        niti_operand a = niti_patches(&g), b = niti_dense(wt, in_c, K, K, 0);
        st = gemm_s32(__func__, &a, &b, a.rows, in_c, K, dx);
    }
    free(wt);
    return st;
}

/* dw via an int64 accumulator narrowed with a check (an int32 result whose sums may leave int32). */
static int weight_grad_via_s64(const char *fn, const conv_shape *s, const int8_t *x, const int8_t *dy, int32_t *dw,
                               int (*grad64)(const conv_shape *, const int8_t *, const int8_t *, int64_t *)) {
    int64_t size = s->out_c * s->k_h * s->k_w * s->in_c;
    int64_t *wide64 = malloc(sizeof(int64_t) * (size_t)size);
    if (!wide64) return niti_fail(NITI_E_NOMEM, "%s: out of memory for the int64 accumulator", fn);
    int st = grad64(s, x, dy, wide64);
    if (st == NITI_OK && (st = niti_narrow_s64_s32(size, wide64, dw)) == NITI_E_OVERFLOW) {
        char detail[256];
        snprintf(detail, sizeof detail, "%s", niti_last_error());
        niti_fail(NITI_E_OVERFLOW, "%s: %s", fn, detail);
    }
    free(wide64);
    return st;
}

static int amx_weight_grad64(const conv_shape *s, const int8_t *x, const int8_t *dy, int64_t *dw) {
    return niti_amx_weight_grad(s, x, dy, dw, 1);
}

static int conv_weight_grad(const char *fn, const conv_shape *s, const int8_t *x, const int8_t *dy, void *dw,
                            int wide) {
    int st = conv_args(fn, s, x, dy, dw);
    if (st) return st;
    int64_t M = s->batch * s->out_h * s->out_w; /* reduction length */
    if (niti_direct_weight_grad_applies(s))
        return wide ? niti_direct_weight_grad(s, x, dy, dw) : weight_grad_via_s64(fn, s, x, dy, dw, niti_direct_weight_grad);
    if (niti_amx_weight_grad_applies(s)) {
        if (wide || niti_k_fits_s32(M)) return niti_amx_weight_grad(s, x, dy, dw, wide);
        return weight_grad_via_s64(fn, s, x, dy, dw, amx_weight_grad64);
    }
    niti_im2col g = forward_patches(s, x);
    niti_operand a = niti_dense(dy, s->out_c, M, s->out_c, 1), b = niti_patches_transposed(&g);
    return wide ? niti_gemm_run(&a, &b, s->out_c, b.rows, M, dw, b.rows, 1)
                : gemm_s32(fn, &a, &b, s->out_c, b.rows, M, dw);
}

int niti_conv2d_weight_grad_s32(CONV_PARAMS, const int8_t *x, const int8_t *dy, int32_t *dw) {
    conv_shape s = CONV_SHAPE;
    return conv_weight_grad(__func__, &s, x, dy, dw, 0);
}

int niti_conv2d_weight_grad_s64(CONV_PARAMS, const int8_t *x, const int8_t *dy, int64_t *dw) {
    conv_shape s = CONV_SHAPE;
    return conv_weight_grad(__func__, &s, x, dy, dw, 1);
}
