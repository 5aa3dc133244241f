/* cuda_internal.cuh: the internal interface shared by the CUDA library's .cu files (cuda_lib.cu,
 * cuda_ops.cu, cuda_gemm_*.cu). The functions are defined in cuda_lib.cu, except niti_cu_gemm_setup
 * (cuda_gemm_engines.cu). The GEMM files' own interface is cuda_gemm_internal.cuh. Not part of the
 * public API (niti_cuda_api.h).
 */
#ifndef NITI_CUDA_INTERNAL_CUH
#define NITI_CUDA_INTERNAL_CUH

#include <cuda_runtime.h>

#include <mutex>
#include <stddef.h>
#include <stdint.h>

#include "niti_constants.h" /* the status codes */

/* sticky device flags, raised by kernels with atomicOr and reported by the next synchronising call */
enum { NITI_FLAG_NARROW = 1u, NITI_FLAG_VELOCITY = 2u, NITI_FLAG_LABEL = 4u, NITI_FLAG_LOSS_EXP = 8u,
       NITI_FLAG_ADD_EXP = 16u };
#define NITI_CU_SCRATCH_WORDS 8 /* uint64 device words an op may use while it runs (zeroed by the op) */
std::recursive_mutex &niti_cu_lock();
int niti_cu_fail(int status, const char *fmt, ...);
int niti_cu_enter(const char *fn);             /* initialise device 0 on first use, select the device */
int niti_cu_check_launch(const char *fn);      /* status 4 if a launch failed */
int niti_cu_cuda(cudaError_t err, const char *fn, const char *what); /* status 4 with the CUDA message */
cudaStream_t niti_cu_stream();
int niti_cu_sm_count();
int niti_cu_gemm_engine();                     /* 1 mma, 2 dp4a */
int niti_cu_conv_mode();                       /* 0 auto, 1 gather (niti_cuda_set_conv_mode) */
unsigned long long *niti_cu_scratch();
unsigned *niti_cu_flags();
int niti_cu_tmp_alloc(const char *fn, size_t bytes, void **ptr);
void niti_cu_tmp_free(void *ptr);
int niti_cu_gemm_setup();                      /* defined in cuda_gemm_engines.cu: kernel attributes */
#define NITI_CU_ENTER(fn)                                                          \
    std::lock_guard<std::recursive_mutex> niti_cu_guard_(niti_cu_lock());          \
    do {                                                                           \
        int niti_cu_st_ = niti_cu_enter(fn);                                       \
        if (niti_cu_st_) return niti_cu_st_;                                       \
    } while (0)
#ifndef NITI_LAUNCH /* the host emulator (cuda_emulation.cu) defines these for its g++ build */
#define NITI_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
#define NITI_DYNAMIC_SMEM(name) extern __shared__ __align__(16) uint8_t name[]
#endif

/* an entry point's argument check: status 1 (NITI_E_ARG) with a printf-style message */
#define REQUIRE(cond, ...)                                       \
    do {                                                         \
        if (!(cond)) return niti_cu_fail(NITI_E_ARG, __VA_ARGS__); \
    } while (0)

#endif /* NITI_CUDA_INTERNAL_CUH */
