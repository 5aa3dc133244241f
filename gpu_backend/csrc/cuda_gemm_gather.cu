/* cuda_gemm_gather.cu: the operand gather: a GEMM operand (a logical int8 matrix, Gather in
 * cuda_gemm_internal.cuh) put into the engines' form on the device: rows x Kp, K-contiguous, Kp a
 * multiple of KPAD and every row 16-byte aligned, zero in the columns K..Kp. One tiled kernel covers
 * every kind the ops need: conv patches (forward and the stride-upsampled input gradient), their
 * transpose (the weight gradient), the flipped kernel of the input gradient, strided / transposed
 * dense matrices, or just zero padding of K. An operand already in engine form is used as is.
 */
#include <cuda_runtime.h>

#include <stdint.h>

#include "cuda_internal.cuh"
#include "cuda_gemm_internal.cuh"

namespace {

__device__ __forceinline__ int8_t dense_or_flipped_elem(const Gather &d, int64_t r, int64_t k) {
    if (d.kind == FLIPPED_W) {
        const uint32_t kk = (uint32_t)k, o = kk % (uint32_t)d.ch, t = kk / (uint32_t)d.ch;
        const uint32_t b = t % (uint32_t)d.k_w, a = t / (uint32_t)d.k_w;
        return d.src[(((int64_t)o * d.k_h + (d.k_h - 1 - (int)a)) * d.k_w + (d.k_w - 1 - (int)b)) * d.batch + r];
    }
    return d.src[r * d.sr + k * d.sk];
}

constexpr int GT = 64;       /* gather tile: 64 rows x 64 k */
constexpr int GTHREADS = 256;
static_assert(KPAD % GT == 0, "a padded operand is whole gather tiles along k");

/* dst (rows x Kp) = the logical matrix (rows x K), zero in columns K..Kp-1. One 64x64 tile per block
 * (a flat grid: tile = row tile * k_tiles + k tile); the tile goes through shared memory so that the
 * reads run along the source's contiguous axis and the writes along dst rows, 4 bytes per thread.
 * For patches, the tile's 64 output pixels and 64 patch positions are decomposed once (n, y, x and
 * a, b, c) into shared memory, so an element costs a few adds instead of six integer divisions. */
__global__ void __launch_bounds__(GTHREADS) gather_kernel(Gather d, int64_t rows, int64_t K, int64_t Kp, int64_t k_tiles,
                                                          int8_t *__restrict__ dst) {
    __shared__ uint8_t tile[GT][GT + 4]; /* [k][r] */
    __shared__ int pix_n[GT], pix_y[GT], pix_x[GT]; /* output pixel: batch, y * stride - pad, x * stride - pad */
    __shared__ int pos_a[GT], pos_b[GT], pos_c[GT]; /* patch position: kernel row, kernel column, channel */
    const int64_t r0 = (int64_t)(blockIdx.x / k_tiles) * GT, k0 = (int64_t)(blockIdx.x % k_tiles) * GT;
    const bool patches = d.kind == PATCHES || d.kind == PATCHES_T; /* uniform over the block */
    if (patches) {
        const bool t = d.kind == PATCHES_T; /* pixels along k, positions along r */
        const int64_t p0 = t ? k0 : r0, p_end = t ? K : rows, q0 = t ? r0 : k0, q_end = t ? rows : K;
        for (int i = threadIdx.x; i < GT; i += GTHREADS) {
            const int64_t p = p0 + i, q = q0 + i;
            if (p < p_end) {
                const uint32_t pix = (uint32_t)p, x = pix % (uint32_t)d.out_w, rest = pix / (uint32_t)d.out_w;
                pix_x[i] = (int)x * d.stride_w - d.pad_w;
                pix_y[i] = (int)(rest % (uint32_t)d.out_h) * d.stride_h - d.pad_h;
                pix_n[i] = (int)(rest / (uint32_t)d.out_h);
            }
            if (q < q_end) {
                const uint32_t pos = (uint32_t)q, rest = pos / (uint32_t)d.ch;
                pos_c[i] = (int)(pos % (uint32_t)d.ch);
                pos_b[i] = (int)(rest % (uint32_t)d.k_w);
                pos_a[i] = (int)(rest / (uint32_t)d.k_w);
            }
        }
        __syncthreads();
    }
    const int lim_h = d.src_h * d.dil_h, lim_w = d.src_w * d.dil_w;
    for (int e = threadIdx.x; e < GT * GT; e += GTHREADS) {
        const int rl = d.r_fast ? e % GT : e / GT, kl = d.r_fast ? e / GT : e % GT;
        const int64_t r = r0 + rl, k = k0 + kl;
        int8_t v = 0;
        if (r < rows && k < K) {
            if (patches) {
                /* element src[n, sy / dil_h, sx / dil_w, c], sy = y * stride - pad + a: 0 outside the
                 * map or between the rows / columns of a zero-upsampled (dil > 1) map */
                const int i = d.kind == PATCHES ? rl : kl, j = d.kind == PATCHES ? kl : rl;
                const int sy = pix_y[i] + pos_a[j], sx = pix_x[i] + pos_b[j];
                if (sy >= 0 && sx >= 0 && sy < lim_h && sx < lim_w &&
                    (d.dil_h == 1 || sy % d.dil_h == 0) && (d.dil_w == 1 || sx % d.dil_w == 0)) {
                    const int iy = d.dil_h == 1 ? sy : sy / d.dil_h, ix = d.dil_w == 1 ? sx : sx / d.dil_w;
                    v = d.src[(((int64_t)pix_n[i] * d.src_h + iy) * d.src_w + ix) * d.ch + pos_c[j]];
                }
            } else {
                v = dense_or_flipped_elem(d, r, k);
            }
        }
        tile[kl][rl] = (uint8_t)v;
    }
    __syncthreads();
    for (int w = threadIdx.x; w < GT * (GT / 4); w += GTHREADS) {
        const int rl = w / (GT / 4), kq = (w % (GT / 4)) * 4;
        const int64_t r = r0 + rl, k = k0 + kq;
        if (r < rows && k < Kp) {
            uint32_t word = (uint32_t)tile[kq][rl] | (uint32_t)tile[kq + 1][rl] << 8 | (uint32_t)tile[kq + 2][rl] << 16 |
                            (uint32_t)tile[kq + 3][rl] << 24;
            *reinterpret_cast<uint32_t *>(dst + r * Kp + k) = word;
        }
    }
}

} /* namespace */

int niti_cu_make_operand(const char *fn, const Gather &d, int64_t rows, int64_t K, Operand *out) {
    const int64_t Kp = niti_cu_round_up(K, KPAD);
    if (d.kind == DENSE && d.sk == 1 && d.sr == K && K == Kp && (reinterpret_cast<uintptr_t>(d.src) & 15) == 0) {
        out->ptr = d.src;
        return NITI_OK;
    }
    if (rows == 0 || Kp == 0) return NITI_OK;
    void *buf = nullptr;
    int st = niti_cu_tmp_alloc(fn, (size_t)(rows * Kp), &buf);
    if (st) return st;
    out->owned = static_cast<int8_t *>(buf);
    out->ptr = out->owned;
    const int64_t k_tiles = Kp / GT, tiles = niti_cu_ceil_div(rows, GT) * k_tiles;
    if (tiles > 0x7fffffffLL)
        return niti_cu_fail(NITI_E_ARG, "%s: operand of %lld x %lld is too large", fn, (long long)rows, (long long)K);
    NITI_LAUNCH(gather_kernel, (unsigned)tiles, GTHREADS, 0, niti_cu_stream())(d, rows, K, Kp, k_tiles, out->owned);
    return niti_cu_check_launch(fn);
}
