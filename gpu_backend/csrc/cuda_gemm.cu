/* cuda_gemm.cu: the int8 GEMM engines and the six training GEMMs (linear and conv2d: forward, input
 * gradient, weight gradient) built on them.
 *
 * One engine computes C (M x N) = A (M x Kp) * B (N x Kp)^T with both operands K-contiguous, Kp a
 * multiple of 64 and every row 16-byte aligned, so the kernels have no K tail and no layout cases.
 * Each op first gathers its operands into that form on the device when they are not already in it
 * (a tiled gather kernel: conv patches, transposes, the flipped kernel of the input gradient, or
 * just zero padding of K), then runs the engine:
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
 * applies, the mma engine instead loads A straight from the NHWC map: a 16-byte cp.async chunk of k
 * is 16 consecutive channels of one kernel tap (a, b) of one output pixel, so it is 16 contiguous,
 * 16-byte aligned source bytes when the channel count is a multiple of 16 and the map is 16-byte
 * aligned; taps in the padding and the columns K..Kp are zero-filled by the cp.async itself
 * (src-size 0). Each loader thread owns the same 4 rows and the same chunk column of every tile, so
 * it decomposes its output pixels once per block and only steps its tap position per tile. The
 * products and sums are exactly those of the gathered GEMM (same tiles, same split-K, same bound),
 * so results are bit-identical either way. The choice is a dispatch by shape (a_operand_path):
 * conv forward (any stride) and the stride-1 input gradient (whose dy is not upsampled) with a
 * channel count % 16 == 0 and an aligned map, on the mma engine, in conv mode auto; everything else
 * (other channel counts, strided input gradients, the dp4a engine, the weight gradient, whose
 * patches are transposed, and conv mode gather: niti_cuda_set_conv_mode) gathers. B, the weights,
 * is always gathered: it is small. niti_cuda_conv_path reports the path a conv would take.
 *
 * Engines: tensor cores through inline PTX mma.sync.m16n8k32.s8 (sm_80 and later; 128x128x64 block
 * tiles, four warps of 64x64, a 4-stage cp.async pipeline), and a __dp4a engine (64x64 tiles) for
 * GPUs without int8 tensor cores, chosen at run time (niti_cuda_set_gemm_kernel). Both split K
 * across blocks when the output tiles alone would not fill the GPU, and always so that no block sums
 * more than 2047 * 64 = 131008 products in its int32 registers (|sum| <= 131008 * 128 * 128 < 2**31):
 * the split partial sums are added into the output with integer atomics (exact, order-free), into
 * int64 for the _s64 ops. So int64 weight gradients are int32 partial sums over K chunks added in
 * int64, and every result is bit-exact whatever the split.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <stdint.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"

namespace {

constexpr int KPAD = 64;              /* operands' K is padded with zeros to a multiple of this */
constexpr int64_t MAX_CHUNK_TILES = 2047; /* 64-deep K tiles one block may sum in int32 (131008 products) */

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
int64_t ceil_div(int64_t x, int64_t m) { return (x + m - 1) / m; }

/* ================================================================================ operand gather == */
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

Gather dense(const int8_t *src, int64_t sr, int64_t sk) {
    Gather d = {};
    d.src = src;
    d.kind = DENSE;
    d.sr = sr;
    d.sk = sk;
    d.r_fast = sk != 1;
    return d;
}

/* The operand in engine form: the source itself when it already is (dense, K-contiguous, K % 64 == 0,
 * 16-byte aligned), else a gathered copy. */
int make_operand(const char *fn, const Gather &d, int64_t rows, int64_t K, Operand *out) {
    const int64_t Kp = round_up(K, KPAD);
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
    const int64_t k_tiles = Kp / GT, tiles = ceil_div(rows, GT) * k_tiles;
    if (tiles > 0x7fffffffLL)
        return niti_cu_fail(NITI_E_ARG, "%s: operand of %lld x %lld is too large", fn, (long long)rows, (long long)K);
    NITI_LAUNCH(gather_kernel, (unsigned)tiles, GTHREADS, 0, niti_cu_stream())(d, rows, K, Kp, k_tiles, out->owned);
    return niti_cu_check_launch(fn);
}

/* ===================================================================================== engines == */
enum OutMode { STORE32 = 0, ATOMIC32 = 1, STORE64 = 2, ATOMIC64 = 3 };

template <int OUT>
__device__ __forceinline__ void put(void *C, int64_t M, int64_t N, int64_t r, int64_t c, int v) {
    if (r >= M || c >= N) return;
    const int64_t at = r * N + c;
    if (OUT == STORE32) static_cast<int32_t *>(C)[at] = v;
    else if (OUT == ATOMIC32) atomicAdd(static_cast<int *>(C) + at, v);
    else if (OUT == STORE64) static_cast<int64_t *>(C)[at] = v;
    else atomicAdd(reinterpret_cast<unsigned long long *>(static_cast<int64_t *>(C) + at), (unsigned long long)(long long)v);
}

/* ---- tensor-core engine: mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 ------------------------ */
constexpr int BM = 128, BN = 128, BK = 64, STAGES = 4, MMA_THREADS = 128;
constexpr int SROW = BK + 16; /* bytes per shared row: 80 keeps the fragment loads free of bank conflicts */
constexpr int STAGE_BYTES = (BM + BN) * SROW;
constexpr int MMA_SMEM = STAGES * STAGE_BYTES; /* 81920: needs the raised dynamic shared-memory limit */

/* (NITI_CUDA_EMULATION: the host emulator's versions of the same instructions, for the tests.)
 * cp.async and mma.m16n8k32.s8 exist from sm_80 on; a build for an older GPU (where only the dp4a
 * engine runs, niti_cu_gemm_engine) still compiles, and the mma kernel traps there instead of
 * returning zeros. MMA_ARCH_OK: compiling device code for sm_80 or later (or the emulator). */
#if defined(NITI_CUDA_EMULATION) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800)
#define MMA_ARCH_OK 1
#else
#define MMA_ARCH_OK 0
#endif
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
#ifdef NITI_CUDA_EMULATION
    niti_emu::cp_async16(smem, gmem, valid);
#elif MMA_ARCH_OK
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0; /* src-size 0: the 16 bytes are zero-filled, nothing is read */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#ifdef NITI_CUDA_EMULATION
    niti_emu::cp_async_commit();
#elif MMA_ARCH_OK
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef NITI_CUDA_EMULATION
    niti_emu::cp_async_wait(N);
#elif MMA_ARCH_OK
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

/* Fragments (PTX ISA, m16n8k32 .s8; g = lane / 4, t = lane % 4), each register 4 consecutive k:
 *   A 16x32 row-major: a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..]
 *   B 32x8 col-major (our B rows are its columns): b0 = B[n=g][4t..], b1 = B[n=g][16+4t..]
 *   C 16x8: c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1] */
__device__ __forceinline__ void mma_s8(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
#ifdef NITI_CUDA_EMULATION
    niti_emu::mma_s8(c, a, b0, b1);
#elif MMA_ARCH_OK
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* Block (blockIdx.x, blockIdx.y) owns C rows [128 bx, +128) x cols [128 by, +128) and sums K tiles
 * [bz * chunk, min(+chunk, k_tiles)); warp w computes rows 64 (w / 2) .. and cols 64 (w % 2) ...
 * IMPLICIT: A is not a matrix in memory but the patches of the NHWC map cv.src (ConvA), loaded
 * straight from it (A itself is unused). */
template <int OUT, bool IMPLICIT>
__global__ void __launch_bounds__(MMA_THREADS) gemm_mma_kernel(const int8_t *__restrict__ A, ConvA cv,
                                                               const int8_t *__restrict__ B, int64_t M, int64_t N,
                                                               int64_t Kp, int64_t chunk_tiles, void *C) {
#if !MMA_ARCH_OK && defined(__CUDA_ARCH__)
    __trap(); /* no int8 mma or cp.async below sm_80: never launched there, never a silent wrong result */
#endif
    NITI_DYNAMIC_SMEM(smem);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1, g = lane >> 2, t = lane & 3;
    const int64_t m0 = (int64_t)blockIdx.x * BM, n0 = (int64_t)blockIdx.y * BN;
    const int64_t kt_begin = (int64_t)blockIdx.z * chunk_tiles;
    const int64_t kt_all = Kp / BK;
    const int ktiles = (int)((kt_begin + chunk_tiles < kt_all ? chunk_tiles : kt_all - kt_begin));

    /* Implicit A. A thread always loads the same 4 rows (tid / 4 + 32 i) and the same 16-byte column
     * ((tid % 4) * 16) of every A tile, so its output pixels are decomposed here, once, and each tile
     * only advances the thread's patch position (tap_a, tap_b, tap_c): a chunk of 16 channels of one
     * kernel tap, contiguous in the source because ch % 16 == 0. Per row: the pixel's top-left source
     * position (row_y, row_x; y * stride - pad) and its linear source pixel index row_pix (mod 2**32:
     * only a valid chunk's index, < batch * src_h * src_w < 2**31, is ever used). Rows >= M get a
     * row_y that fails every bounds check. */
    int row_y[4], row_x[4];
    uint32_t row_pix[4];
    int tap_a = 0, tap_b = 0, tap_c = 0;
    if (IMPLICIT) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int64_t p = m0 + (tid >> 2) + 32 * i;
            row_y[i] = INT32_MIN / 2;
            row_x[i] = 0;
            row_pix[i] = 0;
            if (p < M) {
                const uint32_t pix = (uint32_t)p, x = pix % (uint32_t)cv.out_w, rest = pix / (uint32_t)cv.out_w;
                const uint32_t y = rest % (uint32_t)cv.out_h, n = rest / (uint32_t)cv.out_h;
                row_y[i] = (int)y * cv.stride_h - cv.pad_h;
                row_x[i] = (int)x * cv.stride_w - cv.pad_w;
                row_pix[i] = (n * (uint32_t)cv.src_h + (uint32_t)row_y[i]) * (uint32_t)cv.src_w + (uint32_t)row_x[i];
            }
        }
        const uint32_t k = (uint32_t)(kt_begin * BK) + (uint32_t)((tid & 3) * 16), tap = k / (uint32_t)cv.ch;
        tap_c = (int)(k % (uint32_t)cv.ch);
        tap_b = (int)(tap % (uint32_t)cv.k_w);
        tap_a = (int)(tap / (uint32_t)cv.k_w);
    }

    /* Stages are loaded in tile order (0, 1, 2, ...), each once, which the implicit loader's
     * incremental patch position relies on. */
    auto load_stage = [&](int stage, int kt) {
        uint8_t *as = smem + stage * STAGE_BYTES;
        uint8_t *bs = as + BM * SROW;
        const int64_t k = (kt_begin + kt) * BK;
        if (IMPLICIT) {
            /* tap_a >= k_h: k >= K, the columns up to Kp (B is zero there, so this only saves the
             * reads); taps in the padding: zero (src-size 0) */
            const bool k_ok = tap_a < cv.k_h;
            const uint32_t tap_pix = (uint32_t)tap_a * (uint32_t)cv.src_w + (uint32_t)tap_b;
            const int col = (tid & 3) * 16;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int row = (tid >> 2) + 32 * i, sy = row_y[i] + tap_a, sx = row_x[i] + tap_b;
                const bool ok = k_ok && (unsigned)sy < (unsigned)cv.src_h && (unsigned)sx < (unsigned)cv.src_w;
                const int8_t *src = cv.src + (uint64_t)(row_pix[i] + tap_pix) * (uint64_t)cv.ch + tap_c;
                cp_async16(as + row * SROW + col, ok ? src : cv.src, ok);
            }
            tap_c += BK; /* the next tile: 64 k further, at most 4 taps on (ch >= 16) */
            while (tap_c >= cv.ch) {
                tap_c -= cv.ch;
                if (++tap_b == cv.k_w) {
                    tap_b = 0;
                    tap_a++;
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < (BM * BK / 16) / MMA_THREADS; i++) { /* 4 chunks of 16 bytes each */
                const int c = tid + i * MMA_THREADS, row = c >> 2, col = (c & 3) * 16;
                const bool ok = m0 + row < M;
                cp_async16(as + row * SROW + col, ok ? A + (m0 + row) * Kp + k + col : A, ok);
            }
        }
#pragma unroll
        for (int i = 0; i < (BN * BK / 16) / MMA_THREADS; i++) {
            const int c = tid + i * MMA_THREADS, row = c >> 2, col = (c & 3) * 16;
            const bool ok = n0 + row < N;
            cp_async16(bs + row * SROW + col, ok ? B + (n0 + row) * Kp + k + col : B, ok);
        }
    };

    int acc[4][8][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ktiles) load_stage(s, s);
        cp_async_commit(); /* one group per stage, empty or not, so the wait counts stay uniform */
    }
    for (int kt = 0; kt < ktiles; kt++) {
        cp_async_wait<STAGES - 2>(); /* tile kt has landed (for this thread) */
        __syncthreads();             /* ... for every thread, and every warp is done with tile kt - 1 */
        const int pf = kt + STAGES - 1;
        if (pf < ktiles) load_stage(pf % STAGES, pf); /* refills the stage tile kt - 1 used */
        cp_async_commit();
        const uint8_t *as = smem + (kt % STAGES) * STAGE_BYTES;
        const uint8_t *bs = as + BM * SROW;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 32) {
            unsigned af[4][4], bf[8][2];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint8_t *p = as + (wm * 64 + i * 16 + g) * SROW + kk + t * 4;
                af[i][0] = *reinterpret_cast<const unsigned *>(p);
                af[i][1] = *reinterpret_cast<const unsigned *>(p + 8 * SROW);
                af[i][2] = *reinterpret_cast<const unsigned *>(p + 16);
                af[i][3] = *reinterpret_cast<const unsigned *>(p + 8 * SROW + 16);
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint8_t *p = bs + (wn * 64 + j * 8 + g) * SROW + kk + t * 4;
                bf[j][0] = *reinterpret_cast<const unsigned *>(p);
                bf[j][1] = *reinterpret_cast<const unsigned *>(p + 16);
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 8; j++) mma_s8(acc[i][j], af[i], bf[j][0], bf[j][1]);
        }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int64_t r = m0 + wm * 64 + i * 16 + g, c = n0 + wn * 64 + j * 8 + t * 2;
            put<OUT>(C, M, N, r, c, acc[i][j][0]);
            put<OUT>(C, M, N, r, c + 1, acc[i][j][1]);
            put<OUT>(C, M, N, r + 8, c, acc[i][j][2]);
            put<OUT>(C, M, N, r + 8, c + 1, acc[i][j][3]);
        }
}

/* ---- dp4a engine: 64x64 tiles, 256 threads of 4x4 outputs, K 64 bytes (16 words) per step ------- */
constexpr int DT = 64, DTHREADS = 256, DWORDS = BK / 4;

template <int OUT>
__global__ void __launch_bounds__(DTHREADS) gemm_dp4a_kernel(const int8_t *__restrict__ A, const int8_t *__restrict__ B,
                                                             int64_t M, int64_t N, int64_t Kp, int64_t chunk_tiles,
                                                             void *C) {
    __shared__ int As[DT][DWORDS + 1], Bs[DT][DWORDS + 1];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t m0 = (int64_t)blockIdx.x * DT, n0 = (int64_t)blockIdx.y * DT;
    const int64_t kt_begin = (int64_t)blockIdx.z * chunk_tiles, kt_all = Kp / BK;
    const int64_t kt_end = kt_begin + chunk_tiles < kt_all ? kt_begin + chunk_tiles : kt_all;
    int acc[4][4] = {};
    for (int64_t kt = kt_begin; kt < kt_end; kt++) {
        const int64_t k = kt * BK;
        for (int i = tid; i < DT * DWORDS; i += DTHREADS) {
            const int row = i / DWORDS, w = i % DWORDS;
            As[row][w] = m0 + row < M ? *reinterpret_cast<const int *>(A + (m0 + row) * Kp + k + 4 * w) : 0;
            Bs[row][w] = n0 + row < N ? *reinterpret_cast<const int *>(B + (n0 + row) * Kp + k + 4 * w) : 0;
        }
        __syncthreads();
#pragma unroll
        for (int w = 0; w < DWORDS; w++) {
            int a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; i++) a[i] = As[ty + 16 * i][w];
#pragma unroll
            for (int j = 0; j < 4; j++) b[j] = Bs[tx + 16 * j][w];
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) put<OUT>(C, M, N, m0 + ty + 16 * i, n0 + tx + 16 * j, acc[i][j]);
}

template <int OUT>
void launch_mma(dim3 grid, cudaStream_t stream, const int8_t *A, const ConvA *cv, const int8_t *B, int64_t M, int64_t N,
                int64_t Kp, int64_t chunk, void *C) {
    /* through a pointer: a template-id with two arguments cannot pass through the NITI_LAUNCH macro */
    void (*kernel)(const int8_t *, ConvA, const int8_t *, int64_t, int64_t, int64_t, int64_t, void *) =
            cv ? gemm_mma_kernel<OUT, true> : gemm_mma_kernel<OUT, false>;
    NITI_LAUNCH(kernel, grid, MMA_THREADS, MMA_SMEM, stream)(A, cv ? *cv : ConvA{}, B, M, N, Kp, chunk, C);
}

/* C (M x N, int32 or int64 when wide) = A (M x Kp) * B (N x Kp)^T, A read from the patches cv
 * describes instead when cv is set (mma engine only). Split K so that the grid fills the GPU and no
 * block sums more than MAX_CHUNK_TILES tiles; split results are added atomically into a zeroed C. */
int run_gemm(const char *fn, const int8_t *A, const ConvA *cv, const int8_t *B, int64_t M, int64_t N, int64_t Kp, void *C,
             bool wide) {
    const size_t elem = wide ? sizeof(int64_t) : sizeof(int32_t);
    if (M == 0 || N == 0) return NITI_OK;
    cudaStream_t stream = niti_cu_stream();
    if (Kp == 0) {
        cudaError_t err = cudaMemsetAsync(C, 0, (size_t)(M * N) * elem, stream);
        return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, fn, "cudaMemsetAsync");
    }
    const bool mma = niti_cu_gemm_engine() == 1;
    if (cv && !mma) return niti_cu_fail(NITI_E_ARG, "%s: implicit conv operand without the mma engine", fn);
    const int64_t tile = mma ? BM : DT;
    const int64_t tiles_m = ceil_div(M, tile), tiles_n = ceil_div(N, tile), k_tiles = Kp / BK;
    REQUIRE(tiles_m <= 0x7fffffffLL && tiles_n <= 65535, "%s: a %lld x %lld output is too large", fn, (long long)M,
            (long long)N);
    int64_t splits = ceil_div(k_tiles, MAX_CHUNK_TILES); /* the int32 bound of one block's sum */
    const int64_t target = 2LL * niti_cu_sm_count();    /* two resident blocks per multiprocessor */
    const int64_t tiles = tiles_m * tiles_n;
    if (tiles < target) {
        int64_t want = ceil_div(target, tiles);
        int64_t most = k_tiles / 4; /* keep at least 4 K tiles (256 products) per block */
        if (want > most) want = most;
        if (want > splits) splits = want;
    }
    if (splits < 1) splits = 1;
    const int64_t chunk = ceil_div(k_tiles, splits);
    splits = ceil_div(k_tiles, chunk);
    REQUIRE(splits <= 65535, "%s: reduction of %lld is too long", fn, (long long)Kp);
    const int mode = splits == 1 ? (wide ? STORE64 : STORE32) : (wide ? ATOMIC64 : ATOMIC32);
    if (splits > 1) {
        cudaError_t err = cudaMemsetAsync(C, 0, (size_t)(M * N) * elem, stream);
        if (err != cudaSuccess) return niti_cu_cuda(err, fn, "cudaMemsetAsync");
    }
    const dim3 grid((unsigned)tiles_m, (unsigned)tiles_n, (unsigned)splits);
    if (mma) {
        switch (mode) {
        case STORE32: launch_mma<STORE32>(grid, stream, A, cv, B, M, N, Kp, chunk, C); break;
        case ATOMIC32: launch_mma<ATOMIC32>(grid, stream, A, cv, B, M, N, Kp, chunk, C); break;
        case STORE64: launch_mma<STORE64>(grid, stream, A, cv, B, M, N, Kp, chunk, C); break;
        default: launch_mma<ATOMIC64>(grid, stream, A, cv, B, M, N, Kp, chunk, C); break;
        }
    } else {
        switch (mode) {
        case STORE32:
            NITI_LAUNCH(gemm_dp4a_kernel<STORE32>, grid, DTHREADS, 0, stream)(A, B, M, N, Kp, chunk, C); break;
        case ATOMIC32:
            NITI_LAUNCH(gemm_dp4a_kernel<ATOMIC32>, grid, DTHREADS, 0, stream)(A, B, M, N, Kp, chunk, C); break;
        case STORE64:
            NITI_LAUNCH(gemm_dp4a_kernel<STORE64>, grid, DTHREADS, 0, stream)(A, B, M, N, Kp, chunk, C); break;
        default: NITI_LAUNCH(gemm_dp4a_kernel<ATOMIC64>, grid, DTHREADS, 0, stream)(A, B, M, N, Kp, chunk, C); break;
        }
    }
    return niti_cu_check_launch(fn);
}

/* How the A operand reaches the engine: NITI_CONV_PATH_IMPLICIT (the mma kernel reads the patches
 * from the activation map) exactly when
 *   - the conv mode is auto (niti_cuda_set_conv_mode 0) and the engine is mma (cp.async loader),
 *   - A is PATCHES without dilation (conv forward, any stride; conv input gradient, stride 1: a
 *     strided one's zero-upsampled map has no 16-byte runs),
 *   - the channel count is a multiple of 16 (a 16-byte chunk of k never straddles two kernel taps,
 *     and every chunk starts 16-byte aligned) and the map's base address is 16-byte aligned;
 * else NITI_CONV_PATH_GATHER (gather_kernel materialises it first). B is always gathered / padded:
 * weights are small, and the weight gradient's patches are transposed (k runs over pixels). */
enum { NITI_CONV_PATH_GATHER = 0, NITI_CONV_PATH_IMPLICIT = 1 };

int a_operand_path(const Gather &a) {
    if (niti_cu_conv_mode() != 0 || niti_cu_gemm_engine() != 1) return NITI_CONV_PATH_GATHER;
    if (a.kind != PATCHES || a.dil_h != 1 || a.dil_w != 1 || a.ch % 16 != 0 || (reinterpret_cast<uintptr_t>(a.src) & 15))
        return NITI_CONV_PATH_GATHER;
    return NITI_CONV_PATH_IMPLICIT;
}

/* Gather both operands (as needed; A not at all on the implicit path), run the engine, free the
 * temporaries (stream-ordered). */
int gemm_op(const char *fn, const Gather &a, const Gather &b, int64_t M, int64_t N, int64_t K, void *C, bool wide) {
    Operand oa, ob;
    ConvA cv = {};
    const bool implicit = a_operand_path(a) == NITI_CONV_PATH_IMPLICIT;
    if (implicit) {
        cv = ConvA{a.src, a.src_h, a.src_w, a.ch, a.out_h, a.out_w, a.k_h, a.k_w, a.stride_h, a.stride_w, a.pad_h, a.pad_w};
    }
    int st = implicit ? NITI_OK : make_operand(fn, a, M, K, &oa);
    if (!st) st = make_operand(fn, b, N, K, &ob);
    if (!st) st = run_gemm(fn, oa.ptr, implicit ? &cv : nullptr, ob.ptr, M, N, round_up(K, KPAD), C, wide);
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

int check_k_s32(const char *fn, int64_t K) {
    REQUIRE(K <= NITI_MAX_K_S32, "%s: reduction length %lld > %d can overflow an int32 accumulator; use the int64 (_s64) form",
            fn, (long long)K, NITI_MAX_K_S32);
    return NITI_OK;
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
    if (st || (!wide && (st = check_k_s32(fn, batch)))) return st;
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
        s.out_h = (in_h + 2 * pad_h - k_h) / stride_h + 1;
        s.out_w = (in_w + 2 * pad_w - k_w) / stride_w + 1;
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
    if (st || (!wide && (st = check_k_s32(fn, K)))) return st;
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

int niti_cu_gemm_setup() {
    /* Called while the device initialises, before any niti_cuda_set_gemm_kernel, so the engine is the
     * automatic one: mma exactly on sm_80 and later. Older GPUs never run the mma kernel, and their
     * opt-in shared memory per block (64 KB on sm_75) is below MMA_SMEM, so the attribute would fail. */
    if (niti_cu_gemm_engine() != 1) return NITI_OK;
    const void *kernels[] = {(const void *)gemm_mma_kernel<STORE32, false>, (const void *)gemm_mma_kernel<ATOMIC32, false>,
                             (const void *)gemm_mma_kernel<STORE64, false>, (const void *)gemm_mma_kernel<ATOMIC64, false>,
                             (const void *)gemm_mma_kernel<STORE32, true>,  (const void *)gemm_mma_kernel<ATOMIC32, true>,
                             (const void *)gemm_mma_kernel<STORE64, true>,  (const void *)gemm_mma_kernel<ATOMIC64, true>};
    for (const void *k : kernels) {
        cudaError_t err = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, MMA_SMEM);
        if (err != cudaSuccess) {
            cudaGetLastError();
            return niti_cu_cuda(err, "niti_cuda_init", "raising the GEMM kernel's shared-memory limit");
        }
    }
    return NITI_OK;
}

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
    if (st || (st = check_k_s32(__func__, K))) return st;
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
    if (st || (st = check_k_s32(__func__, in_f))) return st;
    NITI_CU_ENTER(__func__);
    if ((st = gemm_op(__func__, dense(x, in_f, 1), dense(w, in_f, 1), batch, out_f, in_f, y, false))) return st;
    return queue_exp_sum(__func__, exp_x, exp_w, exp_y);
}

int niti_cuda_linear_input_grad(int64_t batch, int64_t in_f, int64_t out_f, const int8_t *dy, const int32_t *exp_dy,
                                const int8_t *w, const int32_t *exp_w, int32_t *dx, int32_t *exp_dx) {
    int st = linear_args(__func__, batch, in_f, out_f, dy, w, dx);
    if (st || (st = check_k_s32(__func__, out_f))) return st;
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
    if (st || (st = check_k_s32(__func__, K))) return st;
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
    if (st || (st = check_k_s32(__func__, K))) return st;
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
