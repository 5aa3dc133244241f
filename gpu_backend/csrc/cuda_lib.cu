/* cuda_lib.cu: the CUDA library's plumbing: error messages, the one device and stream, the
 * stream-ordered allocator, copies, the deferred device checks, timers, per-node timing marks and
 * the exponent helper.
 *
 * State is process-wide (one device, one stream, a few words of device scratch) and every entry
 * point holds one recursive lock while it queues work, so calls from several host threads are
 * serialised and the scratch words are never shared by two ops in flight: all work runs on the
 * single stream in call order.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <vector>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "niti_arith.h"
#include "niti_cuda_api.h"

#include "cuda_internal.cuh"
#include "niti_node_check.h"

namespace {

struct LibState {
    int device = -1;
    cudaStream_t stream = nullptr;
    int sm_count = 0, cc_major = 0, cc_minor = 0;
    int pools = 0;          /* stream-ordered allocator available (cudaMallocAsync) */
    int engine_request = 0; /* niti_cuda_set_gemm_kernel */
    int conv_mode = 0;      /* niti_cuda_set_conv_mode */
    unsigned long long *scratch = nullptr;
    unsigned *flags = nullptr;
    cudaEvent_t timer_begin = nullptr, timer_end = nullptr;
    bool timer_running = false;
    std::vector<cudaEvent_t> marks; /* niti_cuda_marks_begin/mark: grows, never shrinks */
    int64_t marks_capacity = 0;     /* marks allowed after mark 0, as given to marks_begin */
    int64_t marks_recorded = 0;     /* marks recorded since marks_begin, mark 0 included */
};

/* A device check of a node-call op (niti_cu_check_flag): flag bit NITI_FLAG_FIXED_BITS + index. */
struct NodeCheck {
    const char *op, *message; /* string literals of the op file */
    int status;
};
constexpr int MAX_NODE_CHECKS = 32 - NITI_FLAG_FIXED_BITS;
NodeCheck g_checks[MAX_NODE_CHECKS];
int g_check_count = 0; /* guarded by niti_cu_lock */

LibState g;
thread_local char g_error[1024];

__global__ void probe_kernel(int *out) {
    if (out) *out = 1;
}

__global__ void exp_add_kernel(const int32_t *a, const int32_t *b, int32_t addend, int32_t *out) {
    int64_t v = (int64_t)(a ? *a : 0) + (int64_t)(b ? *b : 0) + addend;
    *out = (int32_t)v; /* exponents stay far inside int32 */
}

int init_device(int device) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_init", "cudaGetDeviceCount (is there an NVIDIA driver and GPU?)");
    if (device < 0 || device >= count)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_init: device %d does not exist (%d CUDA device(s))", device, count);
    if ((err = cudaSetDevice(device)) != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_init", "cudaSetDevice");
    cudaDeviceProp prop;
    if ((err = cudaGetDeviceProperties(&prop, device)) != cudaSuccess)
        return niti_cu_cuda(err, "niti_cuda_init", "cudaGetDeviceProperties");
    cudaFuncAttributes attr;
    err = cudaFuncGetAttributes(&attr, probe_kernel);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return niti_cu_fail(NITI_E_CUDA,
                            "niti_cuda_init: libniti_cuda.so has no machine code for %s (compute capability %d.%d; "
                            "it is built for sm_80 and sm_90): %s. Build it with a -gencode for this GPU "
                            "(gpu_backend.build.build_cuda(extra_flags=...))",
                            prop.name, prop.major, prop.minor, cudaGetErrorString(err));
    }
    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
    cudaStream_t stream;
    if ((err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess)
        return niti_cu_cuda(err, "niti_cuda_init", "cudaStreamCreate");
    if (pools) { /* keep freed blocks in the pool: a training step reallocates the same sizes */
        cudaMemPool_t pool;
        if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
            uint64_t keep = UINT64_MAX;
            cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
        }
    }
    unsigned long long *scratch = nullptr;
    unsigned *flags = nullptr;
    if ((err = cudaMalloc(&scratch, NITI_CU_SCRATCH_WORDS * sizeof(unsigned long long))) != cudaSuccess ||
        (err = cudaMalloc(&flags, sizeof(unsigned))) != cudaSuccess ||
        (err = cudaMemset(flags, 0, sizeof(unsigned))) != cudaSuccess ||
        (err = cudaMemset(scratch, 0, NITI_CU_SCRATCH_WORDS * sizeof(unsigned long long))) != cudaSuccess)
        return niti_cu_cuda(err, "niti_cuda_init", "allocating the scratch words");
    /* the memsets above ran on the legacy default stream, which our non-blocking stream does not
     * wait for: finish them before any kernel of ours can touch the words */
    if ((err = cudaDeviceSynchronize()) != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_init", "cudaDeviceSynchronize");
    cudaEvent_t e0, e1;
    if ((err = cudaEventCreate(&e0)) != cudaSuccess || (err = cudaEventCreate(&e1)) != cudaSuccess)
        return niti_cu_cuda(err, "niti_cuda_init", "cudaEventCreate");
    g.stream = stream;
    g.sm_count = prop.multiProcessorCount;
    g.cc_major = prop.major;
    g.cc_minor = prop.minor;
    g.pools = pools;
    g.scratch = scratch;
    g.flags = flags;
    g.timer_begin = e0;
    g.timer_end = e1;
    g.device = device; /* last: a failed initialisation leaves the library uninitialised */
    int st = niti_cu_gemm_setup();
    if (st) {
        g.device = -1;
        return st;
    }
    return NITI_OK;
}

/* Wait for the stream, then report and clear the sticky device flags. */
int sync_and_check(const char *fn) {
    cudaError_t err = cudaStreamSynchronize(g.stream);
    if (err != cudaSuccess) return niti_cu_cuda(err, fn, "a queued kernel failed");
    /* on our stream, not the legacy default stream, which it does not wait for (it is non-blocking) */
    unsigned flags = 0;
    if ((err = cudaMemcpyAsync(&flags, g.flags, sizeof flags, cudaMemcpyDeviceToHost, g.stream)) != cudaSuccess ||
        (err = cudaStreamSynchronize(g.stream)) != cudaSuccess)
        return niti_cu_cuda(err, fn, "reading the device flags");
    if (!flags) return NITI_OK;
    if ((err = cudaMemsetAsync(g.flags, 0, sizeof(unsigned), g.stream)) != cudaSuccess ||
        (err = cudaStreamSynchronize(g.stream)) != cudaSuccess)
        return niti_cu_cuda(err, fn, "clearing the device flags");
    char what[512] = "";
    if (flags & NITI_FLAG_NARROW) strcat(what, " an int64 accumulator did not fit int32 (int32 accumulator overflow);");
    if (flags & NITI_FLAG_VELOCITY)
        strcat(what, " a momentum velocity left int32 (int32 accumulator overflow; nothing was written);");
    if (flags & NITI_FLAG_LABEL) strcat(what, " a label was outside [0, classes);");
    if (flags & NITI_FLAG_LOSS_EXP)
        snprintf(what + strlen(what), sizeof what - strlen(what),
                 " a logit exponent was above %d (the softmax's int64 intermediates would overflow);",
                 NITI_LOSS_MAX_EXP);
    int status = (flags & (NITI_FLAG_NARROW | NITI_FLAG_VELOCITY | NITI_FLAG_LOSS_EXP)) ? NITI_E_OVERFLOW : NITI_E_ARG;
    for (int i = 0; i < g_check_count; i++) {
        if (!(flags & (1u << (NITI_FLAG_FIXED_BITS + i)))) continue;
        snprintf(what + strlen(what), sizeof what - strlen(what), " %s: %s;", g_checks[i].op, g_checks[i].message);
        if (g_checks[i].status == NITI_E_OVERFLOW) status = NITI_E_OVERFLOW;
    }
    return niti_cu_fail(status, "%s: a device check failed in an earlier call:%s", fn, what);
}

bool bad_size(int64_t bytes) { return bytes < 0; }

} /* namespace */

/* ---- internal interface ---------------------------------------------------------------------------- */
std::recursive_mutex &niti_cu_lock() {
    static std::recursive_mutex lock;
    return lock;
}

int niti_cu_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_error, sizeof g_error, fmt, ap);
    va_end(ap);
    return status;
}

int niti_cu_cuda(cudaError_t err, const char *fn, const char *what) {
    return niti_cu_fail(NITI_E_CUDA, "%s: %s: %s (%s)", fn, what, cudaGetErrorString(err), cudaGetErrorName(err));
}

int niti_cu_enter(const char *fn) {
    (void)fn;
    if (g.device < 0) {
        int st = init_device(0);
        if (st) return st;
    }
    cudaError_t err = cudaSetDevice(g.device); /* the current device is per host thread */
    return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, fn, "cudaSetDevice");
}

int niti_cu_check_launch(const char *fn) {
    cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, fn, "kernel launch");
}

unsigned niti_cu_check_flag(const char *op, int status, const char *message) {
    std::lock_guard<std::recursive_mutex> guard(niti_cu_lock());
    for (int i = 0; i < g_check_count; i++)
        if (!strcmp(g_checks[i].op, op) && !strcmp(g_checks[i].message, message))
            return 1u << (NITI_FLAG_FIXED_BITS + i);
    if (g_check_count == MAX_NODE_CHECKS) {
        niti_cu_fail(NITI_E_ARG, "%s: no device flag left for its check (%d node-call checks registered)", op,
                     MAX_NODE_CHECKS);
        return 0;
    }
    g_checks[g_check_count] = NodeCheck{op, message, status};
    return 1u << (NITI_FLAG_FIXED_BITS + g_check_count++);
}

/* the node-call checks (descriptor counts, dtypes, shapes), shared with the CPU library */
NITI_DEFINE_NODE_CHECKS(niti_cu_, niti_cuda_tensor, niti_cuda_node_call, niti_cu_fail)

cudaStream_t niti_cu_stream() { return g.stream; }
int niti_cu_sm_count() { return g.sm_count; }
unsigned long long *niti_cu_scratch() { return g.scratch; }
unsigned *niti_cu_flags() { return g.flags; }

int niti_cu_gemm_engine() {
    if (g.engine_request == 1 || g.engine_request == 2) return g.engine_request;
    return g.cc_major >= 8 ? 1 : 2; /* int8 mma.m16n8k32 needs sm_80 */
}

int niti_cu_conv_mode() { return g.conv_mode; }

int niti_cu_tmp_alloc(const char *fn, size_t bytes, void **ptr) {
    *ptr = nullptr;
    if (bytes == 0) return NITI_OK;
    cudaError_t err = g.pools ? cudaMallocAsync(ptr, bytes, g.stream) : cudaMalloc(ptr, bytes);
    if (err != cudaSuccess) {
        cudaGetLastError();
        *ptr = nullptr;
        return niti_cu_fail(NITI_E_NOMEM, "%s: cannot allocate %zu bytes of device memory: %s", fn, bytes,
                            cudaGetErrorString(err));
    }
    return NITI_OK;
}

void niti_cu_tmp_free(void *ptr) {
    if (!ptr) return;
    if (g.pools) {
        cudaFreeAsync(ptr, g.stream);
    } else {
        cudaStreamSynchronize(g.stream);
        cudaFree(ptr);
    }
}

/* ---- public entry points --------------------------------------------------------------------------- */
extern "C" {

int niti_cuda_abi_version(void) { return NITI_CUDA_ABI_VERSION; }

const char *niti_cuda_last_error(void) { return g_error; }

int niti_cuda_device_count(int *count_out) {
    if (!count_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_device_count: NULL output");
    *count_out = 0;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return niti_cu_cuda(err, "niti_cuda_device_count", "cudaGetDeviceCount");
    }
    *count_out = count;
    return NITI_OK;
}

int niti_cuda_device_name(int device, char *name_out, int64_t capacity) {
    if (!name_out || capacity < 1) return niti_cu_fail(NITI_E_ARG, "niti_cuda_device_name: NULL or empty output");
    name_out[0] = 0;
    cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return niti_cu_cuda(err, "niti_cuda_device_name", "cudaGetDeviceProperties");
    }
    snprintf(name_out, (size_t)capacity, "%s", prop.name);
    return NITI_OK;
}

int niti_cuda_device_capability(int device, int *major_out, int *minor_out) {
    if (!major_out || !minor_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_device_capability: NULL output");
    int major = 0, minor = 0;
    cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return niti_cu_cuda(err, "niti_cuda_device_capability", "cudaDeviceGetAttribute");
    }
    *major_out = major;
    *minor_out = minor;
    return NITI_OK;
}

int niti_cuda_init(int device) {
    std::lock_guard<std::recursive_mutex> guard(niti_cu_lock());
    if (g.device >= 0) {
        if (device != g.device)
            return niti_cu_fail(NITI_E_ARG, "niti_cuda_init: the library already runs on device %d (one device per process)",
                                g.device);
        return NITI_OK;
    }
    return init_device(device);
}

int niti_cuda_current_device(int *device_out) {
    if (!device_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_current_device: NULL output");
    *device_out = g.device;
    return NITI_OK;
}

int niti_cuda_alloc(int64_t bytes, void **ptr_out) {
    if (!ptr_out || bad_size(bytes))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_alloc: bad size %lld or NULL output", (long long)bytes);
    *ptr_out = nullptr;
    NITI_CU_ENTER("niti_cuda_alloc");
    return niti_cu_tmp_alloc("niti_cuda_alloc", (size_t)bytes, ptr_out);
}

int niti_cuda_free(void *ptr) {
    if (!ptr) return NITI_OK;
    NITI_CU_ENTER("niti_cuda_free");
    niti_cu_tmp_free(ptr);
    return niti_cu_check_launch("niti_cuda_free");
}

int niti_cuda_copy_in(void *dst, const void *src_host, int64_t bytes) {
    if (bad_size(bytes) || (bytes && (!dst || !src_host)))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_copy_in: bad size %lld or NULL pointer", (long long)bytes);
    if (!bytes) return NITI_OK;
    NITI_CU_ENTER("niti_cuda_copy_in");
    /* From pageable memory the call returns once the source is staged, so the caller may reuse it. */
    cudaError_t err = cudaMemcpyAsync(dst, src_host, (size_t)bytes, cudaMemcpyHostToDevice, g.stream);
    return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, "niti_cuda_copy_in", "cudaMemcpyAsync");
}

int niti_cuda_copy_out(void *dst_host, const void *src, int64_t bytes) {
    if (bad_size(bytes) || (bytes && (!dst_host || !src)))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_copy_out: bad size %lld or NULL pointer", (long long)bytes);
    NITI_CU_ENTER("niti_cuda_copy_out");
    if (bytes) {
        cudaError_t err = cudaMemcpyAsync(dst_host, src, (size_t)bytes, cudaMemcpyDeviceToHost, g.stream);
        if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_copy_out", "cudaMemcpyAsync");
    }
    return sync_and_check("niti_cuda_copy_out");
}

int niti_cuda_copy_device(void *dst, const void *src, int64_t bytes) {
    if (bad_size(bytes) || (bytes && (!dst || !src)))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_copy_device: bad size %lld or NULL pointer", (long long)bytes);
    if (!bytes) return NITI_OK;
    NITI_CU_ENTER("niti_cuda_copy_device");
    cudaError_t err = cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDeviceToDevice, g.stream);
    return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, "niti_cuda_copy_device", "cudaMemcpyAsync");
}

int niti_cuda_memset(void *dst, int byte_value, int64_t bytes) {
    if (bad_size(bytes) || (bytes && !dst))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_memset: bad size %lld or NULL pointer", (long long)bytes);
    if (!bytes) return NITI_OK;
    NITI_CU_ENTER("niti_cuda_memset");
    cudaError_t err = cudaMemsetAsync(dst, byte_value, (size_t)bytes, g.stream);
    return err == cudaSuccess ? NITI_OK : niti_cu_cuda(err, "niti_cuda_memset", "cudaMemsetAsync");
}

int niti_cuda_synchronize(void) {
    NITI_CU_ENTER("niti_cuda_synchronize");
    return sync_and_check("niti_cuda_synchronize");
}

int niti_cuda_exp_add(const int32_t *exp_a, const int32_t *exp_b, int32_t addend, int32_t *exp_out) {
    if (!exp_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_exp_add: NULL output");
    NITI_CU_ENTER("niti_cuda_exp_add");
    NITI_LAUNCH(exp_add_kernel, 1, 1, 0, g.stream)(exp_a, exp_b, addend, exp_out);
    return niti_cu_check_launch("niti_cuda_exp_add");
}

int niti_cuda_set_gemm_kernel(int kernel) {
    if (kernel < 0 || kernel > 2)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_set_gemm_kernel: %d is not 0 (auto), 1 (mma) or 2 (dp4a)", kernel);
    NITI_CU_ENTER("niti_cuda_set_gemm_kernel");
    if (kernel == 1 && g.cc_major < 8)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_set_gemm_kernel: the int8 mma engine needs compute capability 8.0, "
                            "this GPU has %d.%d", g.cc_major, g.cc_minor);
    g.engine_request = kernel;
    return NITI_OK;
}

int niti_cuda_get_gemm_kernel(int *kernel_out) {
    if (!kernel_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_get_gemm_kernel: NULL output");
    NITI_CU_ENTER("niti_cuda_get_gemm_kernel");
    *kernel_out = niti_cu_gemm_engine();
    return NITI_OK;
}

int niti_cuda_set_conv_mode(int mode) {
    if (mode < 0 || mode > 1)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_set_conv_mode: %d is not 0 (auto) or 1 (gather)", mode);
    NITI_CU_ENTER("niti_cuda_set_conv_mode");
    g.conv_mode = mode;
    return NITI_OK;
}

int niti_cuda_get_conv_mode(int *mode_out) {
    if (!mode_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_get_conv_mode: NULL output");
    NITI_CU_ENTER("niti_cuda_get_conv_mode");
    *mode_out = g.conv_mode;
    return NITI_OK;
}

int niti_cuda_timer_start(void) {
    NITI_CU_ENTER("niti_cuda_timer_start");
    cudaError_t err = cudaEventRecord(g.timer_begin, g.stream);
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_timer_start", "cudaEventRecord");
    g.timer_running = true;
    return NITI_OK;
}

int niti_cuda_timer_stop(double *ms_out) {
    if (!ms_out) return niti_cu_fail(NITI_E_ARG, "niti_cuda_timer_stop: NULL output");
    NITI_CU_ENTER("niti_cuda_timer_stop");
    if (!g.timer_running) return niti_cu_fail(NITI_E_ARG, "niti_cuda_timer_stop: niti_cuda_timer_start was not called");
    g.timer_running = false;
    cudaError_t err = cudaEventRecord(g.timer_end, g.stream);
    if (err == cudaSuccess) err = cudaEventSynchronize(g.timer_end);
    float ms = 0.0f;
    if (err == cudaSuccess) err = cudaEventElapsedTime(&ms, g.timer_begin, g.timer_end);
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_timer_stop", "timing events");
    *ms_out = ms;
    return sync_and_check("niti_cuda_timer_stop");
}

/* Per-node timing marks. Kernels queue asynchronously, so a host clock around a call measures the
 * launch, not the work: an event recorded on the stream after each node measures the work, and the
 * difference of consecutive events is that node's stream time. Reading waits only for the last mark. */
int niti_cuda_marks_begin(int64_t capacity) {
    if (capacity < 0 || capacity > (1 << 20))
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_marks_begin: capacity %lld outside [0, 2^20]", (long long)capacity);
    NITI_CU_ENTER("niti_cuda_marks_begin");
    while ((int64_t)g.marks.size() < capacity + 1) {
        cudaEvent_t e;
        cudaError_t err = cudaEventCreate(&e);
        if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_marks_begin", "cudaEventCreate");
        g.marks.push_back(e);
    }
    g.marks_recorded = 0;
    g.marks_capacity = capacity;
    cudaError_t err = cudaEventRecord(g.marks[0], g.stream);
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_marks_begin", "cudaEventRecord");
    g.marks_recorded = 1;
    return NITI_OK;
}

int niti_cuda_mark(void) {
    NITI_CU_ENTER("niti_cuda_mark");
    if (g.marks_recorded == 0) return niti_cu_fail(NITI_E_ARG, "niti_cuda_mark: niti_cuda_marks_begin was not called");
    if (g.marks_recorded > g.marks_capacity)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_mark: more marks than the capacity %lld given to niti_cuda_marks_begin",
                            (long long)g.marks_capacity);
    cudaError_t err = cudaEventRecord(g.marks[g.marks_recorded], g.stream);
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_mark", "cudaEventRecord");
    g.marks_recorded++;
    return NITI_OK;
}

int niti_cuda_marks_read(int64_t n, double *ms_out) {
    if (n < 0 || (n > 0 && !ms_out)) return niti_cu_fail(NITI_E_ARG, "niti_cuda_marks_read: bad output");
    NITI_CU_ENTER("niti_cuda_marks_read");
    if (n != g.marks_recorded - 1)
        return niti_cu_fail(NITI_E_ARG, "niti_cuda_marks_read: asked for %lld intervals, %lld marks were recorded "
                            "after niti_cuda_marks_begin", (long long)n, (long long)(g.marks_recorded - 1));
    g.marks_recorded = 0; /* read once: a second read without a new marks_begin is an error */
    cudaError_t err = n > 0 ? cudaEventSynchronize(g.marks[n]) : cudaSuccess;
    for (int64_t i = 0; i < n && err == cudaSuccess; i++) {
        float ms = 0.0f;
        err = cudaEventElapsedTime(&ms, g.marks[i], g.marks[i + 1]);
        ms_out[i] = ms;
    }
    if (err != cudaSuccess) return niti_cu_cuda(err, "niti_cuda_marks_read", "timing events");
    return NITI_OK;
}

} /* extern "C" */
