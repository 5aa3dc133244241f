/* cuda_gemm_engines.cu: the int8 GEMM engines: C (M x N) = A (M x Kp) * B (N x Kp)^T with both
 * operands in engine form (cuda_gemm_internal.cuh: K-contiguous, Kp a multiple of 64, every row
 * 16-byte aligned), so the kernels have no K tail and no layout cases; the choice of engine, the
 * split-K plan, the launches, and niti_cu_gemm_setup (the mma kernel's shared-memory attribute).
 *
 * Engines: tensor cores through inline PTX mma.sync.m16n8k32.s8 (sm_80 and later; 128x128x64 block
 * tiles, four warps of 64x64, a 4-stage cp.async pipeline), and a __dp4a engine (64x64 tiles) for
 * GPUs without int8 tensor cores, chosen at run time (niti_cuda_set_gemm_kernel). Both split K
 * across blocks when the output tiles alone would not fill the GPU, and always so that no block sums
 * more than 2047 * 64 = 131008 products in its int32 registers (|sum| <= 131008 * 128 * 128 < 2**31):
 * the split partial sums are added into the output with integer atomics (exact, order-free), into
 * int64 for the _s64 ops. So int64 weight gradients are int32 partial sums over K chunks added in
 * int64, and every result is bit-exact whatever the split.
 *
 * Implicit conv operand (ConvA; when the ops take it: a_operand_path in cuda_gemm_ops.cu). The mma
 * kernel can load A straight from an NHWC activation map instead of a gathered patch matrix: a
 * 16-byte cp.async chunk of k is 16 consecutive channels of one kernel tap (a, b) of one output
 * pixel, so it is 16 contiguous, 16-byte aligned source bytes when the channel count is a multiple
 * of 16 and the map is 16-byte aligned; taps in the padding and the columns K..Kp are zero-filled by
 * the cp.async itself (src-size 0). Each loader thread owns the same 4 rows and the same chunk column
 * of every tile, so it decomposes its output pixels once per block and only steps its tap position
 * per tile. The products and sums are exactly those of the gathered GEMM (same tiles, same split-K,
 * same bound), so results are bit-identical either way.
 */
#include <cuda_runtime.h>

#include <stdint.h>

#include "cuda_internal.cuh"
#include "cuda_gemm_internal.cuh"

namespace {

constexpr int64_t MAX_CHUNK_TILES = 2047; /* 64-deep K tiles one block may sum in int32 (131008 products) */

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
static_assert(BK == KPAD, "the engines' K tile is the operands' K padding: no K tail");

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

} /* namespace */

/* C (M x N, int32 or int64 when wide) = A (M x Kp) * B (N x Kp)^T, A read from the patches cv
 * describes instead when cv is set (mma engine only). Split K so that the grid fills the GPU and no
 * block sums more than MAX_CHUNK_TILES tiles; split results are added atomically into a zeroed C. */
int niti_cu_run_gemm(const char *fn, const int8_t *A, const ConvA *cv, const int8_t *B, int64_t M, int64_t N, int64_t Kp,
                     void *C, bool wide) {
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
    const int64_t tiles_m = niti_cu_ceil_div(M, tile), tiles_n = niti_cu_ceil_div(N, tile), k_tiles = Kp / BK;
    REQUIRE(tiles_m <= 0x7fffffffLL && tiles_n <= 65535, "%s: a %lld x %lld output is too large", fn, (long long)M,
            (long long)N);
    int64_t splits = niti_cu_ceil_div(k_tiles, MAX_CHUNK_TILES); /* the int32 bound of one block's sum */
    const int64_t target = 2LL * niti_cu_sm_count();    /* two resident blocks per multiprocessor */
    const int64_t tiles = tiles_m * tiles_n;
    if (tiles < target) {
        int64_t want = niti_cu_ceil_div(target, tiles);
        int64_t most = k_tiles / 4; /* keep at least 4 K tiles (256 products) per block */
        if (want > most) want = most;
        if (want > splits) splits = want;
    }
    if (splits < 1) splits = 1;
    const int64_t chunk = niti_cu_ceil_div(k_tiles, splits);
    splits = niti_cu_ceil_div(k_tiles, chunk);
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
