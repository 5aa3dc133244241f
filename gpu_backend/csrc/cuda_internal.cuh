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
#include "niti_cuda_api.h"  /* the node-call structs */

/* sticky device flags, raised by kernels with atomicOr and reported by the next synchronising call */
enum { NITI_FLAG_NARROW = 1u, NITI_FLAG_VELOCITY = 2u, NITI_FLAG_LABEL = 4u, NITI_FLAG_LOSS_EXP = 8u };
#define NITI_FLAG_FIXED_BITS 4 /* the flags above; the higher bits are handed out by niti_cu_check_flag */
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
/* Node-call ops (csrc/op_<name>.cu): the flag bit of one device check of op `op`, registered on first
 * use (the same op and message give the same bit): a kernel whose check fails does atomicOr(flags,
 * bit), and the next synchronising call returns `status` (NITI_E_OVERFLOW or NITI_E_ARG) with
 * "op: message". 0 when every bit is taken (the status is then set, with the reason). */
unsigned niti_cu_check_flag(const char *op, int status, const char *message);
/* Status 1 naming `op` unless the call has n_in inputs, n_out outputs and n_attrs attrs of the
 * dtypes given (inputs then outputs), valid ranks and shapes, and data wherever there are elements. */
int niti_cu_node_check(const niti_cuda_node_call *call, const char *op, int n_in, int n_out, int n_attrs,
                       const int32_t *dtypes);
int64_t niti_cu_tensor_elems(const niti_cuda_tensor *t);
int niti_cu_same_shape(const niti_cuda_tensor *a, const niti_cuda_tensor *b); /* 1: same rank and extents */
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
