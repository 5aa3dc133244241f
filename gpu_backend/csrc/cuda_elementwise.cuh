/* cuda_elementwise.cuh: launch helpers of the elementwise kernels (cuda_ops.cu and the node-call
 * ops, csrc/op_<name>.cu): the block size, a grid for a grid-stride loop, and a block max reduced
 * into one device word. In an anonymous namespace: each .cu file gets its own copy.
 */
#ifndef NITI_CUDA_ELEMENTWISE_CUH
#define NITI_CUDA_ELEMENTWISE_CUH

#include <cuda_runtime.h>

#include <stdint.h>

#include "cuda_internal.cuh"

namespace {

constexpr int THREADS = 256;

/* Grid for a grid-stride loop over n items: enough blocks to fill the GPU, at least one (so that
 * block 0 can write an output exponent even for empty tensors). */
unsigned grid_for(int64_t n) {
    int64_t blocks = (n + THREADS - 1) / THREADS;
    int64_t cap = (int64_t)niti_cu_sm_count() * 8;
    if (blocks > cap) blocks = cap;
    return (unsigned)(blocks < 1 ? 1 : blocks);
}

#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* The block's max of m, then one atomicMax into *out. blockDim.x must be THREADS. */
__device__ void block_max_to(unsigned long long m, unsigned long long *out) {
    __shared__ unsigned long long warp_max[THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        unsigned long long v = __shfl_xor_sync(0xffffffffu, m, o);
        m = v > m ? v : m;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_max[warp] = m;
    __syncthreads();
    if (warp == 0) {
        m = lane < THREADS / 32 ? warp_max[lane] : 0ull;
        for (int o = 16; o > 0; o >>= 1) {
            unsigned long long v = __shfl_xor_sync(0xffffffffu, m, o);
            m = v > m ? v : m;
        }
        if (lane == 0 && m) atomicMax(out, m);
    }
}

} /* namespace */

#endif /* NITI_CUDA_ELEMENTWISE_CUH */
