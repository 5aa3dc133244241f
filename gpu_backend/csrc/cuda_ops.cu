/* cuda_ops.cu: the elementwise and small ops on the device: ranges and requantization, ReLU, max
 * pooling, dropout, the loss gradient and the weight updates.
 *
 * Per-element arithmetic is niti_arith.h's, called on the device (the same code the CPU build runs),
 * so these kernels only decide which element each thread handles. Ranges are a block max reduction
 * of |x| plus one atomicMax per block into a scratch word; the kernel that applies the shift reads
 * the word back on the device, so no value ever travels to the host. Stochastic draws use the flat
 * element index, like nitisim.numerics, so the result does not depend on the launch shape.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "cuda_elementwise.cuh"

namespace {

/* *peak = max(*peak, max |x|) (the caller zeroes *peak first). */
template <typename T>
__global__ void __launch_bounds__(THREADS) peak_kernel(const T *__restrict__ x, int64_t n, unsigned long long *peak) {
    unsigned long long m = 0;
    GRID_STRIDE(i, n) {
        unsigned long long v = niti_magnitude((int64_t)x[i]);
        m = v > m ? v : m;
    }
    block_max_to(m, peak);
}

/* Queue "scratch[0] = max |x|": the range of x stays on the device. */
template <typename T>
int queue_peak(const char *fn, const T *x, int64_t n) {
    unsigned long long *peak = niti_cu_scratch();
    cudaError_t err = cudaMemsetAsync(peak, 0, sizeof *peak, niti_cu_stream());
    if (err != cudaSuccess) return niti_cu_cuda(err, fn, "cudaMemsetAsync");
    NITI_LAUNCH(peak_kernel<T>, grid_for(n), THREADS, 0, niti_cu_stream())(x, n, peak);
    return niti_cu_check_launch(fn);
}

__global__ void range_bits_kernel(const unsigned long long *peak, int32_t *bits) {
    *bits = niti_range_bits_of_peak(*peak);
}

__global__ void __launch_bounds__(THREADS) requantize_kernel(const int32_t *__restrict__ acc, int64_t n,
                                                             const unsigned long long *peak, const int32_t *exp_in,
                                                             int mode, uint32_t key, int8_t *__restrict__ out,
                                                             int32_t *exp_out) {
    const int s = niti_range_bits_of_peak(*peak) - 7; /* never a left shift */
    if (blockIdx.x == 0 && threadIdx.x == 0 && exp_out) *exp_out = (exp_in ? *exp_in : 0) + (s > 0 ? s : 0);
    if (s > 0) {
        GRID_STRIDE(i, n) out[i] = niti_saturate_elem(niti_round_shift(acc[i], s, (niti_round_mode)mode, key, (uint32_t)i));
    } else {
        GRID_STRIDE(i, n) out[i] = niti_saturate_elem(acc[i]);
    }
}

__global__ void __launch_bounds__(THREADS) narrow_kernel(const int64_t *__restrict__ x, int64_t n,
                                                         int32_t *__restrict__ out, unsigned *flags) {
    bool bad = false;
    GRID_STRIDE(i, n) {
        int64_t v = x[i];
        bad |= v > INT32_MAX || v < INT32_MIN;
        out[i] = (int32_t)(uint32_t)(uint64_t)v; /* only meaningful when it fits */
    }
    if (bad) atomicOr(flags, (unsigned)NITI_FLAG_NARROW);
}

__global__ void __launch_bounds__(THREADS) relu_kernel(const int8_t *__restrict__ x, int64_t n, int8_t *__restrict__ y) {
    GRID_STRIDE(i, n) y[i] = x[i] > 0 ? x[i] : 0;
}

__global__ void __launch_bounds__(THREADS) relu_backward_kernel(const int8_t *__restrict__ x, const int8_t *__restrict__ dy,
                                                                int64_t n, int8_t *__restrict__ dx) {
    GRID_STRIDE(i, n) dx[i] = x[i] > 0 ? dy[i] : 0;
}

struct PoolShape {
    int64_t batch, in_h, in_w, ch, k_h, k_w, s_h, s_w, p_h, p_w, out_h, out_w;
};

/* The real positions [*lo, *hi) of a window of k taps starting at `start` (negative in the padding)
 * on an axis of `size` inputs. The padding is -infinity and never a maximum, so a window is its real
 * part: the same maximum, and the same first maximum in row-major window order. */
__device__ __forceinline__ void pool_span(int64_t start, int64_t k, int64_t size, int64_t *lo, int64_t *hi) {
    *lo = start < 0 ? 0 : start;
    *hi = start + k > size ? size : start + k;
}

/* One thread per output element (n, oy, ox, c): the window max. */
__global__ void __launch_bounds__(THREADS) maxpool_kernel(PoolShape p, const int8_t *__restrict__ x, int8_t *__restrict__ y) {
    const int64_t total = p.batch * p.out_h * p.out_w * p.ch;
    GRID_STRIDE(i, total) {
        int64_t c = i % p.ch, cell = i / p.ch;
        int64_t ox = cell % p.out_w, oy = cell / p.out_w % p.out_h, n = cell / (p.out_w * p.out_h);
        int64_t y0, y1, x0, x1;
        pool_span(oy * p.s_h - p.p_h, p.k_h, p.in_h, &y0, &y1);
        pool_span(ox * p.s_w - p.p_w, p.k_w, p.in_w, &x0, &x1);
        const int8_t *base = x + ((n * p.in_h + y0) * p.in_w + x0) * p.ch + c;
        int8_t best = base[0];
        for (int64_t ky = 0; ky < y1 - y0; ky++)
            for (int64_t kx = 0; kx < x1 - x0; kx++) {
                int8_t v = base[(ky * p.in_w + kx) * p.ch];
                best = v > best ? v : best;
            }
        y[i] = best;
    }
}

/* One thread per input element (n, h, w, c): the sum of the errors of every window whose first
 * maximum (row-major window order, strict >) is this element, saturated. A gather, so no atomics;
 * with stride >= kernel at most one window covers an element and the sum is that error. */
__global__ void __launch_bounds__(THREADS) maxpool_backward_kernel(PoolShape p, const int8_t *__restrict__ x,
                                                                   const int8_t *__restrict__ dy, int8_t *__restrict__ dx) {
    const int64_t total = p.batch * p.in_h * p.in_w * p.ch;
    GRID_STRIDE(i, total) {
        int64_t c = i % p.ch, pix = i / p.ch;
        int64_t w = pix % p.in_w, h = pix / p.in_w % p.in_h, n = pix / (p.in_w * p.in_h);
        /* windows oy with oy * s_h <= h + p_h < oy * s_h + k_h (padded coordinates), inside [0, out_h) */
        int64_t hp = h + p.p_h, wp = w + p.p_w;
        int64_t lo_h = hp - p.k_h + 1, lo_w = wp - p.k_w + 1;
        int64_t oy0 = lo_h <= 0 ? 0 : (lo_h + p.s_h - 1) / p.s_h, oy1 = hp / p.s_h;
        int64_t ox0 = lo_w <= 0 ? 0 : (lo_w + p.s_w - 1) / p.s_w, ox1 = wp / p.s_w;
        if (oy1 > p.out_h - 1) oy1 = p.out_h - 1;
        if (ox1 > p.out_w - 1) ox1 = p.out_w - 1;
        int64_t sum = 0;
        for (int64_t oy = oy0; oy <= oy1; oy++)
            for (int64_t ox = ox0; ox <= ox1; ox++) {
                int64_t y0, y1, x0, x1; /* the window's real part: the padding never wins */
                pool_span(oy * p.s_h - p.p_h, p.k_h, p.in_h, &y0, &y1);
                pool_span(ox * p.s_w - p.p_w, p.k_w, p.in_w, &x0, &x1);
                const int8_t *base = x + ((n * p.in_h + y0) * p.in_w + x0) * p.ch + c;
                int64_t best_y = 0, best_x = 0;
                int8_t best = base[0];
                for (int64_t ky = 0; ky < y1 - y0; ky++)
                    for (int64_t kx = 0; kx < x1 - x0; kx++) {
                        int8_t v = base[(ky * p.in_w + kx) * p.ch];
                        if (v > best) {
                            best = v;
                            best_y = ky;
                            best_x = kx;
                        }
                    }
                if (y0 + best_y == h && x0 + best_x == w)
                    sum += dy[((n * p.out_h + oy) * p.out_w + ox) * p.ch + c];
            }
        dx[i] = niti_saturate_elem(sum);
    }
}

__global__ void __launch_bounds__(THREADS) dropout_kernel(const int8_t *__restrict__ x, int64_t rows, int64_t features,
                                                          int keep_shift, uint32_t key, const int32_t *exp_x,
                                                          int8_t *__restrict__ y, int32_t *exp_y) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && exp_y) *exp_y = (exp_x ? *exp_x : 0) + keep_shift;
    const int64_t total = rows * features;
    GRID_STRIDE(i, total) {
        uint32_t f = (uint32_t)(i % features);
        y[i] = niti_draw_below_pow2(key, f, keep_shift) == 0 ? x[i] : 0;
    }
}

/* One thread per row: niti_loss_grad_row needs no scratch memory. */
__global__ void __launch_bounds__(THREADS) loss_grad_kernel(const int8_t *__restrict__ logits, int64_t batch,
                                                            int64_t classes, const int32_t *exp_logits,
                                                            const int32_t *__restrict__ labels, int variant,
                                                            uint32_t key, int8_t *__restrict__ err, int32_t *exp_err,
                                                            int64_t *p, unsigned *flags) {
    if (blockIdx.x == 0 && threadIdx.x == 0 && exp_err) *exp_err = NITI_LOSS_ERR_SHIFT - NITI_LOSS_P_BITS; /* -7 */
    const int e = exp_logits ? *exp_logits : 0;
    const bool e_ok = e <= NITI_LOSS_MAX_EXP; /* below NITI_LOSS_MIN_EXP the row function clamps, exactly */
    GRID_STRIDE(r, batch) {
        const int64_t label = labels[r];
        if (!e_ok || label < 0 || label >= classes) {
            atomicOr(flags, (unsigned)(e_ok ? NITI_FLAG_LABEL : NITI_FLAG_LOSS_EXP));
            for (int64_t c = 0; c < classes; c++) err[r * classes + c] = 0;
            continue;
        }
        niti_loss_grad_row(logits + r * classes, classes, e, label, (niti_loss_variant)variant, key,
                           (uint32_t)(r * classes), err + r * classes, p ? p + r * classes : nullptr);
    }
}

/* ---- weight updates: the gradient's range b comes from scratch[0] (queue_peak) ---------------------- */
/* b <= 64, so mu outside [-64, 64] acts like its end point (s >= 64 zeroes, s < 1 keeps g). */
int clamp_mu(int64_t mu) { return mu < -64 ? -64 : (mu > 64 ? 64 : (int)mu); }

template <typename G>
__global__ void __launch_bounds__(THREADS) update_plain_kernel(int64_t n, const int8_t *__restrict__ w,
                                                               const G *__restrict__ g, const unsigned long long *peak,
                                                               int mu, int8_t *__restrict__ w_out) {
    const int b = niti_range_bits_of_peak(*peak);
    GRID_STRIDE(i, n) w_out[i] = niti_saturate_elem(niti_wrap_sub(w[i], niti_mu_step(g[i], b, mu)));
}

/* pass 1: raise *bad (a scratch word) if any new velocity leaves int32 */
template <typename G>
__global__ void __launch_bounds__(THREADS) momentum_check_kernel(int64_t n, const G *__restrict__ g,
                                                                 const int32_t *__restrict__ v,
                                                                 const unsigned long long *peak, int mu,
                                                                 unsigned long long *bad) {
    const int b = niti_range_bits_of_peak(*peak);
    bool out_of_range = false;
    GRID_STRIDE(i, n) {
        int64_t vn = niti_momentum_velocity(v[i], niti_mu_step(g[i], b, mu));
        out_of_range |= vn > INT32_MAX || vn < INT32_MIN;
    }
    if (out_of_range) atomicOr(bad, 1ull);
}

/* pass 2: nothing is written when pass 1 found an overflow (reported through the device flags) */
template <typename G>
__global__ void __launch_bounds__(THREADS) momentum_apply_kernel(int64_t n, const int8_t *__restrict__ w,
                                                                 const G *__restrict__ g, const int32_t *__restrict__ v,
                                                                 const unsigned long long *peak, int mu,
                                                                 const unsigned long long *bad, unsigned *flags,
                                                                 int8_t *__restrict__ w_out, int32_t *__restrict__ v_out) {
    if (*bad) {
        if (blockIdx.x == 0 && threadIdx.x == 0) atomicOr(flags, (unsigned)NITI_FLAG_VELOCITY);
        return;
    }
    const int b = niti_range_bits_of_peak(*peak);
    GRID_STRIDE(i, n) {
        int64_t vn = niti_momentum_velocity(v[i], niti_mu_step(g[i], b, mu));
        int64_t step = niti_round_shift(vn, NITI_MOMENTUM_SHIFT, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u);
        w_out[i] = niti_saturate_elem(niti_wrap_sub(w[i], step));
        v_out[i] = (int32_t)vn;
    }
}

template <typename G>
__global__ void __launch_bounds__(THREADS) shadow16_kernel(int64_t n, const int16_t *__restrict__ shadow,
                                                           const G *__restrict__ g, const unsigned long long *peak,
                                                           int mu_shadow, int8_t *__restrict__ w_out,
                                                           int16_t *__restrict__ shadow_out) {
    const int b = niti_range_bits_of_peak(*peak);
    GRID_STRIDE(i, n) {
        int64_t sh = niti_saturate_shadow(niti_wrap_sub(shadow[i], niti_mu_step(g[i], b, mu_shadow)));
        w_out[i] = niti_saturate_elem(niti_round_shift(sh, NITI_SHADOW_FRAC_BITS, NITI_ROUND_PSEUDO_STOCHASTIC, 0u, 0u));
        shadow_out[i] = (int16_t)sh;
    }
}

int check_n(const char *fn, int64_t n, bool arrays_ok) {
    REQUIRE(n >= 0, "%s: size must be >= 0, got %lld", fn, (long long)n);
    REQUIRE(n == 0 || arrays_ok, "%s: NULL array", fn);
    return NITI_OK;
}

int check_mode(const char *fn, int mode) {
    REQUIRE(mode >= NITI_ROUND_NEAREST && mode <= NITI_ROUND_STOCHASTIC,
            "%s: unknown rounding mode %d (0 nearest, 1 pseudo_stochastic, 2 stochastic)", fn, mode);
    return NITI_OK;
}

int pool_args(const char *fn, const PoolShape &p, bool arrays_ok) {
    REQUIRE(p.batch >= 0 && p.in_h >= 1 && p.in_w >= 1 && p.ch >= 1, "%s: sizes must be positive (batch=%lld %lldx%lldx%lld)",
            fn, (long long)p.batch, (long long)p.in_h, (long long)p.in_w, (long long)p.ch);
    /* padding < kernel: every window then holds at least one real input, so its maximum is one */
    REQUIRE(p.p_h >= 0 && p.p_w >= 0 && p.p_h < p.k_h && p.p_w < p.k_w,
            "%s: need 0 <= padding < kernel (padding %lldx%lld kernel %lldx%lld)", fn, (long long)p.p_h,
            (long long)p.p_w, (long long)p.k_h, (long long)p.k_w);
    REQUIRE(p.k_h >= 1 && p.k_w >= 1 && p.s_h >= 1 && p.s_w >= 1 && p.k_h <= p.in_h + 2 * p.p_h &&
                p.k_w <= p.in_w + 2 * p.p_w,
            "%s: need 1 <= kernel <= padded input and stride >= 1 (kernel %lldx%lld stride %lldx%lld input %lldx%lld "
            "padding %lldx%lld)", fn, (long long)p.k_h, (long long)p.k_w, (long long)p.s_h, (long long)p.s_w,
            (long long)p.in_h, (long long)p.in_w, (long long)p.p_h, (long long)p.p_w);
    REQUIRE(arrays_ok || p.batch == 0, "%s: NULL array", fn);
    return NITI_OK;
}

PoolShape pool_shape(int64_t batch, int64_t in_h, int64_t in_w, int64_t ch, int64_t k_h, int64_t k_w, int64_t s_h,
                     int64_t s_w, int64_t p_h, int64_t p_w) {
    PoolShape p = {batch, in_h, in_w, ch, k_h, k_w, s_h, s_w, p_h, p_w, 0, 0};
    if (s_h > 0 && s_w > 0 && p_h >= 0 && p_w >= 0 && k_h <= in_h + 2 * p_h && k_w <= in_w + 2 * p_w) {
        p.out_h = niti_conv_out(in_h, k_h, s_h, p_h);
        p.out_w = niti_conv_out(in_w, k_w, s_w, p_w);
    }
    return p;
}

template <typename G>
int update_plain(const char *fn, int64_t n, const int8_t *w, const G *g, int mu, int8_t *w_out) {
    int st = check_n(fn, n, w && g && w_out);
    if (st) return st;
    NITI_CU_ENTER(fn);
    if (!n) return NITI_OK;
    if ((st = queue_peak(fn, g, n))) return st;
    NITI_LAUNCH(update_plain_kernel<G>, grid_for(n), THREADS, 0, niti_cu_stream())(
            n, w, g, niti_cu_scratch(), clamp_mu(mu), w_out);
    return niti_cu_check_launch(fn);
}

template <typename G>
int update_momentum(const char *fn, int64_t n, const int8_t *w, const G *g, const int32_t *v, int mu, int8_t *w_out,
                    int32_t *v_out) {
    int st = check_n(fn, n, w && g && v && w_out && v_out);
    if (st) return st;
    NITI_CU_ENTER(fn);
    if (!n) return NITI_OK;
    if ((st = queue_peak(fn, g, n))) return st;
    unsigned long long *bad = niti_cu_scratch() + 1;
    cudaError_t err = cudaMemsetAsync(bad, 0, sizeof *bad, niti_cu_stream());
    if (err != cudaSuccess) return niti_cu_cuda(err, fn, "cudaMemsetAsync");
    const int m = clamp_mu(mu);
    NITI_LAUNCH(momentum_check_kernel<G>, grid_for(n), THREADS, 0, niti_cu_stream())(
            n, g, v, niti_cu_scratch(), m, bad);
    NITI_LAUNCH(momentum_apply_kernel<G>, grid_for(n), THREADS, 0, niti_cu_stream())(
            n, w, g, v, niti_cu_scratch(), m, bad,
                                                                            niti_cu_flags(), w_out, v_out);
    return niti_cu_check_launch(fn);
}

template <typename G>
int update_shadow16(const char *fn, int64_t n, const int16_t *shadow, const G *g, int mu, int8_t *w_out,
                    int16_t *shadow_out) {
    int st = check_n(fn, n, shadow && g && w_out && shadow_out);
    if (st) return st;
    NITI_CU_ENTER(fn);
    if (!n) return NITI_OK;
    if ((st = queue_peak(fn, g, n))) return st;
    /* steps of up to 2**(mu + 8) shadow LSBs: the plain rule's size, keeping sub-LSB steps */
    const int m = clamp_mu((int64_t)mu + NITI_SHADOW_FRAC_BITS);
    NITI_LAUNCH(shadow16_kernel<G>, grid_for(n), THREADS, 0, niti_cu_stream())(
            n, shadow, g, niti_cu_scratch(), m, w_out, shadow_out);
    return niti_cu_check_launch(fn);
}

template <typename T>
int range_bits(const char *fn, int64_t n, const T *x, int32_t *bits_out) {
    int st = check_n(fn, n, x != nullptr);
    if (st) return st;
    REQUIRE(bits_out, "%s: NULL output", fn);
    NITI_CU_ENTER(fn);
    if ((st = queue_peak(fn, x, n))) return st;
    NITI_LAUNCH(range_bits_kernel, 1, 1, 0, niti_cu_stream())(niti_cu_scratch(), bits_out);
    return niti_cu_check_launch(fn);
}

} /* namespace */

extern "C" {

int niti_cuda_range_bits_s32(int64_t n, const int32_t *x, int32_t *bits_out) {
    return range_bits(__func__, n, x, bits_out);
}

int niti_cuda_range_bits_s64(int64_t n, const int64_t *x, int32_t *bits_out) {
    return range_bits(__func__, n, x, bits_out);
}

int niti_cuda_requantize_s32(int64_t n, const int32_t *acc, const int32_t *exp_in, int mode, uint32_t seed,
                             uint32_t step, uint32_t tensor_id, int8_t *out, int32_t *exp_out) {
    int st = check_n(__func__, n, acc && out);
    if (st || (st = check_mode(__func__, mode))) return st;
    NITI_CU_ENTER(__func__);
    if ((st = queue_peak(__func__, acc, n))) return st;
    const uint32_t key = niti_hash_key(seed, step, tensor_id);
    NITI_LAUNCH(requantize_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(
            acc, n, niti_cu_scratch(), exp_in, mode, key, out,
                                                                      exp_out);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_narrow_s64_s32(int64_t n, const int64_t *x, int32_t *out) {
    int st = check_n(__func__, n, x && out);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    if (!n) return NITI_OK;
    NITI_LAUNCH(narrow_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(x, n, out, niti_cu_flags());
    return niti_cu_check_launch(__func__);
}

int niti_cuda_relu_forward(int64_t n, const int8_t *x, int8_t *y) {
    int st = check_n(__func__, n, x && y);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    if (!n) return NITI_OK;
    NITI_LAUNCH(relu_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(x, n, y);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_relu_backward(int64_t n, const int8_t *x, const int8_t *dy, int8_t *dx) {
    int st = check_n(__func__, n, x && dy && dx);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    if (!n) return NITI_OK;
    NITI_LAUNCH(relu_backward_kernel, grid_for(n), THREADS, 0, niti_cu_stream())(x, dy, n, dx);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_maxpool_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x,
                              int8_t *y) {
    PoolShape p = pool_shape(batch, in_h, in_w, channels, k_h, k_w, stride_h, stride_w, pad_h, pad_w);
    int st = pool_args(__func__, p, x && y);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    const int64_t total = p.batch * p.out_h * p.out_w * p.ch;
    if (!total) return NITI_OK;
    NITI_LAUNCH(maxpool_kernel, grid_for(total), THREADS, 0, niti_cu_stream())(p, x, y);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_maxpool_backward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                               int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x,
                               const int8_t *dy, int8_t *dx) {
    PoolShape p = pool_shape(batch, in_h, in_w, channels, k_h, k_w, stride_h, stride_w, pad_h, pad_w);
    int st = pool_args(__func__, p, x && dy && dx);
    if (st) return st;
    NITI_CU_ENTER(__func__);
    const int64_t total = p.batch * p.in_h * p.in_w * p.ch;
    if (!total) return NITI_OK;
    NITI_LAUNCH(maxpool_backward_kernel, grid_for(total), THREADS, 0, niti_cu_stream())(p, x, dy, dx);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_dropout(int64_t rows, int64_t features, int keep_shift, uint32_t seed, uint32_t step, uint32_t tensor_id,
                      const int8_t *x, const int32_t *exp_x, int8_t *y, int32_t *exp_y) {
    REQUIRE(rows >= 0 && features >= 0, "%s: sizes must be >= 0 (rows=%lld features=%lld)", __func__, (long long)rows,
            (long long)features);
    REQUIRE(rows * features == 0 || (x && y), "%s: NULL array", __func__);
    REQUIRE(keep_shift >= 1 && keep_shift <= 31, "%s: keep_shift must be 1..31, got %d", __func__, keep_shift);
    NITI_CU_ENTER(__func__);
    const int64_t total = rows * features;
    const uint32_t key = niti_hash_key(seed, step, tensor_id);
    NITI_LAUNCH(dropout_kernel, grid_for(total), THREADS, 0, niti_cu_stream())(
            x, rows, features > 0 ? features : 1, keep_shift,
                                                                       key, exp_x, y, exp_y);
    return niti_cu_check_launch(__func__);
}

int niti_cuda_loss_grad(int64_t batch, int64_t classes, const int8_t *logits, const int32_t *exp_logits,
                        const int32_t *labels, int variant, uint32_t seed, uint32_t step, uint32_t tensor_id,
                        int8_t *err, int32_t *exp_err, int64_t *p) {
    REQUIRE(batch >= 0 && classes >= 1, "%s: need batch >= 0 and classes >= 1 (batch=%lld classes=%lld)", __func__,
            (long long)batch, (long long)classes);
    REQUIRE(batch == 0 || (logits && labels && err), "%s: NULL array", __func__);
    REQUIRE(variant == NITI_LOSS_NITI || variant == NITI_LOSS_FINE, "%s: unknown variant %d (0 niti, 1 fine)", __func__,
            variant);
    NITI_CU_ENTER(__func__);
    const uint32_t key = niti_hash_key(seed, step, tensor_id);
    NITI_LAUNCH(loss_grad_kernel, grid_for(batch), THREADS, 0, niti_cu_stream())(
            logits, batch, classes, exp_logits, labels,
                                                                         variant, key, err, exp_err, p, niti_cu_flags());
    return niti_cu_check_launch(__func__);
}

int niti_cuda_update_plain_s32(int64_t n, const int8_t *w, const int32_t *g_acc, int mu, int8_t *w_out) {
    return update_plain(__func__, n, w, g_acc, mu, w_out);
}
int niti_cuda_update_plain_s64(int64_t n, const int8_t *w, const int64_t *g_acc, int mu, int8_t *w_out) {
    return update_plain(__func__, n, w, g_acc, mu, w_out);
}
int niti_cuda_update_momentum_s32(int64_t n, const int8_t *w, const int32_t *g_acc, const int32_t *velocity, int mu,
                                  int8_t *w_out, int32_t *velocity_out) {
    return update_momentum(__func__, n, w, g_acc, velocity, mu, w_out, velocity_out);
}
int niti_cuda_update_momentum_s64(int64_t n, const int8_t *w, const int64_t *g_acc, const int32_t *velocity, int mu,
                                  int8_t *w_out, int32_t *velocity_out) {
    return update_momentum(__func__, n, w, g_acc, velocity, mu, w_out, velocity_out);
}
int niti_cuda_update_shadow16_s32(int64_t n, const int16_t *shadow, const int32_t *g_acc, int mu, int8_t *w_out,
                                  int16_t *shadow_out) {
    return update_shadow16(__func__, n, shadow, g_acc, mu, w_out, shadow_out);
}
int niti_cuda_update_shadow16_s64(int64_t n, const int16_t *shadow, const int64_t *g_acc, int mu, int8_t *w_out,
                                  int16_t *shadow_out) {
    return update_shadow16(__func__, n, shadow, g_acc, mu, w_out, shadow_out);
}

} /* extern "C" */
