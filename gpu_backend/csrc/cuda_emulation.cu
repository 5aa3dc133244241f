/* cuda_emulation.cu: a host emulator of the CUDA features the kernel library uses, so that the very
 * same kernel sources can be run and checked on a machine without a GPU.
 *
 * It is empty in the real (nvcc) build. gpu_backend.cuda.build_emulator() compiles the library
 * with g++ -DNITI_CUDA_EMULATION, with a cuda_runtime.h that includes this file, and once more with
 * NITI_CUDA_EMULATION_IMPL for the definitions. Every CUDA thread becomes a fiber (ucontext) of one
 * OS thread; a block's fibers run until each finishes or waits, and __syncthreads and warp
 * collectives (shuffles, mma) release only when every live thread of the block / warp has arrived,
 * so a missing or divergent barrier shows up as a deadlock report instead of passing by luck.
 * Emulated semantics, as the PTX ISA documents them:
 *   - mma.sync.m16n8k32.row.col.s32.s8.s8.s32: the warp's fragments are gathered by the layout in
 *     cuda_gemm_engines.cu's comment and multiplied exactly (wrapping int32 sums);
 *   - cp.async: copies land when the issuing thread's cp.async.wait_group retires their group, not
 *     earlier, so a read before the wait sees stale data ($NITI_EMU_CP_ASYNC=eager lands at issue);
 *   - device memory: every allocation ends at a PROT_NONE guard page (reads past the end fault),
 *     starts filled with 0xA5 (nothing is zeroed for free) and is unmapped when freed;
 *   - one stream: every launch and copy completes before the call returns.
 * $NITI_EMU_SM_COUNT (default 4) sets the multiprocessor count the kernels size their grids by.
 */
#if defined(NITI_CUDA_EMULATION) && !defined(NITI_CUDA_EMULATION_DECLS)
#define NITI_CUDA_EMULATION_DECLS

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

/* ---- keywords ------------------------------------------------------------------------------------ */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static /* one instance, shared by the fibers of the block that is running */

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

/* ---- runtime API subset ---------------------------------------------------------------------------- */
typedef int cudaError_t;
enum { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidDevice = 101 };
typedef struct niti_emu_stream *cudaStream_t;
typedef struct niti_emu_event *cudaEvent_t;
typedef struct niti_emu_pool *cudaMemPool_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
enum cudaDeviceAttr {
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMemoryPoolsSupported = 115
};
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01
struct cudaDeviceProp {
    char name[256];
    int major, minor, multiProcessorCount;
};
struct cudaFuncAttributes {
    int maxThreadsPerBlock;
};

cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *attr, F) {
    attr->maxThreadsPerBlock = 1024;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value);
cudaError_t cudaGetLastError();
const char *cudaGetErrorString(cudaError_t err);
const char *cudaGetErrorName(cudaError_t err);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int device);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr attr, void *value);
cudaError_t cudaMalloc(void *ptr, size_t bytes); /* void ** in CUDA; any T ** converts through void * here */
cudaError_t cudaMallocAsync(void *ptr, size_t bytes, cudaStream_t stream);
cudaError_t cudaFree(void *ptr);
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t stream);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaEventCreate(cudaEvent_t *event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t begin, cudaEvent_t end);

/* ---- threads, launches, collectives ----------------------------------------------------------------- */
namespace niti_emu {
extern dim3 block_idx, block_dim, grid_dim;
const dim3 &thread_idx();
unsigned lane();
void syncthreads();
uint64_t warp_exchange(uint64_t value, unsigned src_lane); /* shuffle: every live lane of the warp */
uint8_t *dynamic_smem();
void run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
void cp_async16(void *dst, const void *src, bool valid);
void cp_async_commit();
void cp_async_wait(int newest_pending_allowed);
void mma_s8(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);

template <typename K>
struct Launch {
    K kernel;
    dim3 grid, block;
    size_t smem;
    template <typename... A>
    void operator()(A... args) const {
        run(grid, block, smem, [&] { kernel(args...); });
    }
};
template <typename K>
Launch<K> launch(K kernel, dim3 grid, dim3 block, size_t smem) {
    return Launch<K>{kernel, grid, block, smem};
}
} /* namespace niti_emu */

#define threadIdx (niti_emu::thread_idx())
#define blockIdx (niti_emu::block_idx)
#define blockDim (niti_emu::block_dim)
#define gridDim (niti_emu::grid_dim)
#define NITI_LAUNCH(kernel, grid, block, smem, stream) niti_emu::launch(kernel, dim3(grid), dim3(block), (size_t)(smem))
#define NITI_DYNAMIC_SMEM(name) uint8_t *name = niti_emu::dynamic_smem()

inline void __syncthreads() { niti_emu::syncthreads(); }

template <typename T>
T __shfl_xor_sync(unsigned, T value, int lane_mask) {
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof value);
    bits = niti_emu::warp_exchange(bits, (niti_emu::lane() ^ (unsigned)lane_mask) & 31u);
    T out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicOr(unsigned *p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicOr(unsigned long long *p, unsigned long long v) {
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicMax(unsigned long long *p, unsigned long long v) {
    unsigned long long old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
inline int __dp4a(int a, int b, int c) {
    int sum = c;
    for (int i = 0; i < 4; i++) sum += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return sum;
}

#endif /* NITI_CUDA_EMULATION declarations */

/* ================================================================================ definitions == */
#if defined(NITI_CUDA_EMULATION) && defined(NITI_CUDA_EMULATION_IMPL)
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <map>
#include <vector>

namespace niti_emu {

dim3 block_idx, block_dim, grid_dim;

namespace {

struct Copy {
    void *dst;
    const void *src;
    bool valid;
};

enum Wait { RUNNABLE = 0, BLOCK_BARRIER = 1, WARP_BARRIER = 2 };

struct Fiber {
    ucontext_t context;
    dim3 tid;
    unsigned linear = 0;
    bool done = false;
    int wait = RUNNABLE;
    std::vector<Copy> open;                  /* cp.async copies not yet committed */
    std::deque<std::vector<Copy>> pending;   /* committed groups, oldest first */
    uint64_t slot = 0;                       /* shuffle value */
    unsigned mma_a[4] = {0, 0, 0, 0}, mma_b[2] = {0, 0};
};

constexpr size_t STACK_BYTES = 256 * 1024;
ucontext_t scheduler;
std::vector<Fiber> fibers;
std::vector<char *> stacks;
Fiber *current = nullptr;
unsigned active_threads = 0; /* threads of the block that is running */
const std::function<void()> *body = nullptr;
std::vector<uint8_t> smem_bytes;
bool eager_copies = false;

void land(const std::vector<Copy> &group) {
    for (const Copy &c : group) {
        if (c.valid) memcpy(c.dst, c.src, 16);
        else memset(c.dst, 0, 16);
    }
}

void fiber_main() {
    (*body)();
    Fiber *f = current;
    land(f->open);
    while (!f->pending.empty()) {
        land(f->pending.front());
        f->pending.pop_front();
    }
    f->done = true;
    swapcontext(&f->context, &scheduler); /* never resumed */
}

void yield(int wait) {
    Fiber *f = current;
    f->wait = wait;
    swapcontext(&f->context, &scheduler);
}

[[noreturn]] void deadlock(const char *why) {
    fprintf(stderr, "niti CUDA emulator: block (%u,%u,%u): %s\n", block_idx.x, block_idx.y, block_idx.z, why);
    abort();
}

void run_block(unsigned threads) {
    for (unsigned i = 0; i < threads; i++) {
        Fiber &f = fibers[i];
        f.done = false;
        f.wait = RUNNABLE;
        f.open.clear();
        f.pending.clear();
        f.linear = i;
        f.tid = dim3(i % block_dim.x, i / block_dim.x % block_dim.y, i / (block_dim.x * block_dim.y));
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = stacks[i];
        f.context.uc_stack.ss_size = STACK_BYTES;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    for (;;) {
        for (unsigned i = 0; i < threads; i++) {
            Fiber &f = fibers[i];
            if (f.done || f.wait != RUNNABLE) continue;
            current = &f;
            swapcontext(&scheduler, &f.context);
        }
        /* every fiber is finished or waiting: release what can be released */
        bool released = false, any_live = false, all_block = true;
        for (unsigned w = 0; w * 32 < threads; w++) {
            bool live = false, all_warp = true;
            for (unsigned i = w * 32; i < threads && i < w * 32 + 32; i++) {
                if (fibers[i].done) continue;
                live = true;
                all_warp &= fibers[i].wait == WARP_BARRIER;
            }
            if (live && all_warp) {
                for (unsigned i = w * 32; i < threads && i < w * 32 + 32; i++)
                    if (!fibers[i].done) fibers[i].wait = RUNNABLE;
                released = true;
            }
        }
        if (released) continue;
        for (unsigned i = 0; i < threads; i++) {
            if (fibers[i].done) continue;
            any_live = true;
            all_block &= fibers[i].wait == BLOCK_BARRIER;
        }
        if (!any_live) return;
        if (!all_block)
            deadlock("threads wait at different barriers (a warp collective or __syncthreads under divergent control flow)");
        for (unsigned i = 0; i < threads; i++)
            if (!fibers[i].done) fibers[i].wait = RUNNABLE;
    }
}

/* ---- device memory: guard page after every allocation ------------------------------------------- */
struct Mapping {
    void *base;
    size_t length;
};
std::map<uintptr_t, Mapping> allocations;

cudaError_t allocate(void **ptr, size_t bytes) {
    *ptr = nullptr;
    if (bytes == 0) return cudaSuccess;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t padded = (bytes + 15) / 16 * 16; /* 16-byte aligned start, at most 15 bytes unguarded */
    const size_t data_pages = (padded + page - 1) / page;
    const size_t length = (data_pages + 1) * page;
    void *base = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) return cudaErrorMemoryAllocation;
    uint8_t *guard = static_cast<uint8_t *>(base) + data_pages * page;
    mprotect(guard, page, PROT_NONE);
    uint8_t *p = guard - padded;
    memset(p, 0xA5, padded);
    allocations[(uintptr_t)p] = Mapping{base, length};
    *ptr = p;
    return cudaSuccess;
}

cudaError_t release(void *ptr) {
    if (!ptr) return cudaSuccess;
    auto it = allocations.find((uintptr_t)ptr);
    if (it == allocations.end()) return cudaErrorInvalidValue;
    munmap(it->second.base, it->second.length);
    allocations.erase(it);
    return cudaSuccess;
}

int sm_count() {
    const char *v = getenv("NITI_EMU_SM_COUNT");
    int n = v ? atoi(v) : 4;
    return n > 0 ? n : 4;
}

struct Event {
    double ms = 0;
};

} /* namespace */

const dim3 &thread_idx() { return current->tid; }
unsigned lane() { return current->linear & 31u; }
void syncthreads() { yield(BLOCK_BARRIER); }

uint64_t warp_exchange(uint64_t value, unsigned src_lane) {
    Fiber *f = current;
    f->slot = value;
    yield(WARP_BARRIER);
    const unsigned src = (f->linear & ~31u) | src_lane;
    if (src >= active_threads || fibers[src].done) deadlock("shuffle from a lane that has exited");
    uint64_t out = fibers[src].slot;
    yield(WARP_BARRIER); /* nobody overwrites a slot before every lane has read */
    return out;
}

uint8_t *dynamic_smem() { return smem_bytes.data(); }

void run(dim3 grid, dim3 block, size_t smem, const std::function<void()> &kernel) {
    const unsigned threads = block.x * block.y * block.z;
    if (threads == 0 || threads > 1024) deadlock("bad block size");
    while (stacks.size() < threads) stacks.push_back(static_cast<char *>(malloc(STACK_BYTES)));
    if (fibers.size() < threads) fibers.resize(threads);
    smem_bytes.assign(smem + 16, 0xA5);
    const char *mode = getenv("NITI_EMU_CP_ASYNC");
    eager_copies = mode && strcmp(mode, "eager") == 0;
    grid_dim = grid;
    block_dim = block;
    active_threads = threads;
    body = &kernel;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                block_idx = dim3(x, y, z);
                run_block(threads);
            }
    body = nullptr;
    current = nullptr;
}

void cp_async16(void *dst, const void *src, bool valid) {
    if (eager_copies) land({Copy{dst, src, valid}});
    else current->open.push_back(Copy{dst, src, valid});
}

void cp_async_commit() {
    Fiber *f = current;
    f->pending.push_back(f->open);
    f->open.clear();
}

void cp_async_wait(int newest_pending_allowed) {
    Fiber *f = current;
    while ((int)f->pending.size() > newest_pending_allowed) {
        land(f->pending.front());
        f->pending.pop_front();
    }
}

/* m16n8k32 s8: rebuild the warp's A (16x32), B (32x8, k x n) and C (16x8) from the lanes' fragments
 * (g = lane / 4, t = lane % 4; byte i of a register is element 4t + i) and return this lane's D. */
void mma_s8(int (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    Fiber *f = current;
    for (int i = 0; i < 4; i++) f->mma_a[i] = a[i];
    f->mma_b[0] = b0;
    f->mma_b[1] = b1;
    yield(WARP_BARRIER);
    int8_t A[16][32], B[32][8];
    const unsigned base = f->linear & ~31u;
    for (unsigned l = 0; l < 32; l++) {
        if (base + l >= active_threads || fibers[base + l].done) deadlock("mma needs all 32 lanes of the warp");
        const Fiber &o = fibers[base + l];
        const unsigned g = l >> 2, t = l & 3;
        for (unsigned i = 0; i < 4; i++) {
            A[g][4 * t + i] = (int8_t)(o.mma_a[0] >> (8 * i));
            A[g + 8][4 * t + i] = (int8_t)(o.mma_a[1] >> (8 * i));
            A[g][16 + 4 * t + i] = (int8_t)(o.mma_a[2] >> (8 * i));
            A[g + 8][16 + 4 * t + i] = (int8_t)(o.mma_a[3] >> (8 * i));
            B[4 * t + i][g] = (int8_t)(o.mma_b[0] >> (8 * i));
            B[16 + 4 * t + i][g] = (int8_t)(o.mma_b[1] >> (8 * i));
        }
    }
    yield(WARP_BARRIER); /* every lane has read the fragments */
    const unsigned g = f->linear % 32 >> 2, t = f->linear & 3;
    const unsigned rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int r = 0; r < 4; r++) {
        uint32_t sum = (uint32_t)c[r];
        for (int k = 0; k < 32; k++) sum += (uint32_t)((int)A[rows[r]][k] * (int)B[k][cols[r]]);
        c[r] = (int)sum;
    }
}

} /* namespace niti_emu */

/* ---- runtime API ----------------------------------------------------------------------------------- */
static cudaError_t emu_last = cudaSuccess;

cudaError_t cudaGetDeviceCount(int *count) {
    *count = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    snprintf(prop->name, sizeof prop->name, "niti CUDA host emulator (not a GPU)");
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = niti_emu::sm_count();
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device) {
    if (device != 0) return cudaErrorInvalidDevice;
    *value = attr == cudaDevAttrComputeCapabilityMajor ? 9 : attr == cudaDevAttrComputeCapabilityMinor ? 0 : 1;
    return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *, cudaFuncAttribute, int value) {
    return value <= 227 * 1024 ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaGetLastError() {
    cudaError_t e = emu_last;
    emu_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t err) {
    switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "invalid argument";
    }
}
const char *cudaGetErrorName(cudaError_t err) {
    switch (err) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorInvalidValue";
    }
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned) {
    *stream = reinterpret_cast<cudaStream_t>(new char[1]);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int) {
    *pool = nullptr;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void *) { return cudaSuccess; }
cudaError_t cudaMalloc(void *ptr, size_t bytes) { return niti_emu::allocate(static_cast<void **>(ptr), bytes); }
cudaError_t cudaMallocAsync(void *ptr, size_t bytes, cudaStream_t) { return niti_emu::allocate(static_cast<void **>(ptr), bytes); }
cudaError_t cudaFree(void *ptr) { return niti_emu::release(ptr); }
cudaError_t cudaFreeAsync(void *ptr, cudaStream_t) { return niti_emu::release(ptr); }
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind) {
    memmove(dst, src, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void *dst, int value, size_t bytes) {
    memset(dst, value, bytes);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }
cudaError_t cudaEventCreate(cudaEvent_t *event) {
    *event = reinterpret_cast<cudaEvent_t>(new niti_emu::Event());
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
    using namespace std::chrono;
    reinterpret_cast<niti_emu::Event *>(event)->ms =
        duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t begin, cudaEvent_t end) {
    *ms = (float)(reinterpret_cast<niti_emu::Event *>(end)->ms - reinterpret_cast<niti_emu::Event *>(begin)->ms);
    return cudaSuccess;
}
#endif /* NITI_CUDA_EMULATION_IMPL */
