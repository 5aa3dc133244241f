/* niti_cuda_api.h: the C API of the CUDA kernel library (libniti_cuda.so).
 *
 * Declarations and constants only: gpu_backend/c_binding.py feeds this file, with the quoted headers
 * it includes (niti_constants.h), to cffi's cdef, as niti_api.h, so keep it to plain prototypes over
 * void, int, double, char, int8_t..int64_t and uint32_t, enums and integer-literal #defines.
 * Conventions, beyond those of niti_api.h (statuses, int64_t sizes, row-major NHWC / OHWI layouts,
 * `mode` and `variant` codes, counter-hash coordinates), whose op semantics these kernels mirror exactly:
 *   - NITI_E_CUDA is a CUDA error (no driver, no device, no machine code for this GPU, a failed launch);
 *     niti_cuda_last_error() holds the calling thread's last message;
 *   - one device per process (niti_cuda_init, or device 0 on first use) and one CUDA stream: every
 *     entry point queues its work on that stream in call order and returns without waiting, except
 *     the queries, niti_cuda_copy_out, niti_cuda_synchronize, niti_cuda_timer_stop and
 *     niti_cuda_marks_read, which wait;
 *     calls from several host threads are serialised by a lock;
 *   - array arguments of the ops are device pointers (from niti_cuda_alloc); `*_host` ones are host;
 *   - exponents live on the device as int32 scalars: a GEMM op writes *exp_y = *exp_x + *exp_w,
 *     requantize writes *exp_out = *exp_in + shift, and so on, so a training step needs no host
 *     synchronisation per layer. Exponent pointers may be NULL when not wanted (an input exponent
 *     read as NULL counts as 0);
 *   - checks that depend on data (an int64 -> int32 narrowing or a momentum velocity leaving int32,
 *     a label outside [0, classes), a logit exponent above 40, a node-call op's own checks) run on
 *     the device: the op raises a sticky device flag and its outputs are undefined; the next niti_cuda_copy_out or
 *     niti_cuda_synchronize returns 2 (overflow) or 1 (invalid data) with the reason, and clears it;
 *   - outputs never alias inputs (the exponent slots included).
 */
#ifndef NITI_CUDA_API_H
#define NITI_CUDA_API_H
#include <stdint.h>

#include "niti_constants.h"
#ifdef __cplusplus
extern "C" {
#endif

/* The version of this API: niti_cuda_abi_version() of a library built from this header returns it,
 * and the Python binding refuses a library that returns another. Raise it on any change here. */
#define NITI_CUDA_ABI_VERSION 6

/* ---- the node call: one ABI for every op whose row (nitisim/contract/ops.py) has a NodeCall ---------
 * As niti_api.h's niti_node_call, with device data and exponents: each such op is one entry point
 * `int niti_cuda_op_<name>(niti_cuda_node_call *call)` in its own file csrc/op_<name>.cu, declared
 * for Python from the op rows (gpu_backend/node_call.py), not here. The call struct is host memory,
 * read before the entry point returns; `data` and `exp` are device pointers. An input's exponent is
 * read on the device; an output whose exponent the row says comes from the data gets its `exp`
 * written on the device (the caller passes NULL for the others: the kernel-table builder applies
 * their rule). A data-dependent check of the op raises a flag it registered with the library
 * (cuda_internal.cuh: niti_cu_check_flag), reported with the op's name and message by the next
 * synchronising call. */
typedef struct {
    void *data;                          /* device, row-major, C-contiguous */
    int32_t dtype;                       /* niti_dtype */
    int32_t ndim;                        /* <= NITI_NODE_MAX_DIMS */
    int64_t shape[NITI_NODE_MAX_DIMS];
    int32_t *exp;                        /* device int32 exponent slot, or NULL */
} niti_cuda_tensor;

typedef struct {
    int32_t n_inputs, n_outputs, n_attrs;
    niti_cuda_tensor inputs[NITI_NODE_MAX_TENSORS];
    niti_cuda_tensor outputs[NITI_NODE_MAX_TENSORS];
    int64_t attrs[NITI_NODE_MAX_ATTRS];
    uint32_t seed, step, tensor_id;
    int64_t mu;
} niti_cuda_node_call;

/* ---- library and device interface ------------------------------------------------------------------ */
int niti_cuda_abi_version(void);
const char *niti_cuda_last_error(void);
int niti_cuda_device_count(int *count_out);                             /* status 4 when no driver/GPU */
int niti_cuda_device_name(int device, char *name_out, int64_t capacity); /* NUL-terminated, truncated */
int niti_cuda_device_capability(int device, int *major_out, int *minor_out);
int niti_cuda_init(int device);               /* select the device; a second call with another device is status 1 */
int niti_cuda_current_device(int *device_out); /* -1 before initialisation */
int niti_cuda_alloc(int64_t bytes, void **ptr_out); /* stream-ordered; 0 bytes gives NULL; >= 16-byte aligned */
int niti_cuda_free(void *ptr);                       /* stream-ordered: after the work queued so far */
int niti_cuda_copy_in(void *dst, const void *src_host, int64_t bytes);
int niti_cuda_copy_out(void *dst_host, const void *src, int64_t bytes); /* waits; reports device flags */
int niti_cuda_copy_device(void *dst, const void *src, int64_t bytes);
int niti_cuda_memset(void *dst, int byte_value, int64_t bytes);
int niti_cuda_synchronize(void);                                       /* waits; reports device flags */
/* *exp_out = *exp_a + *exp_b + addend (NULL inputs read as 0), on the device. */
int niti_cuda_exp_add(const int32_t *exp_a, const int32_t *exp_b, int32_t addend, int32_t *exp_out);
/* GEMM engine: 0 auto (tensor-core mma on compute capability >= 8.0, else dp4a), 1 mma, 2 dp4a. */
int niti_cuda_set_gemm_kernel(int kernel);
int niti_cuda_get_gemm_kernel(int *kernel_out); /* the engine auto resolves to: 1 or 2 */
/* Conv A operand: 0 auto (the mma engine reads conv forward / stride-1 input-gradient patches straight
 * from the NHWC map when its channel count is a multiple of 16 and it is 16-byte aligned; else it
 * gathers them), 1 gather always (patches materialised by a gather kernel first). Same results. */
int niti_cuda_set_conv_mode(int mode);
int niti_cuda_get_conv_mode(int *mode_out); /* 0 or 1, as set */
/* The A-operand path a conv op would take now (conv mode, engine, shape, src = x for op 0 forward,
 * dy for op 1 input gradient; op 2 weight gradient always gathers): 0 gather, 1 implicit. */
int niti_cuda_conv_path(int op, int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                        int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        const void *src, int *path_out);
/* Milliseconds of stream time between timer_start and timer_stop (CUDA events; stop waits). */
int niti_cuda_timer_start(void);
int niti_cuda_timer_stop(double *ms_out);
/* Per-node stream time: marks_begin records mark 0 and makes room for `capacity` more; each mark
 * records the next on the stream; marks_read waits for the last and writes the n milliseconds
 * between consecutive marks (n must be the number of marks after mark 0; it reads them once). */
int niti_cuda_marks_begin(int64_t capacity);
int niti_cuda_mark(void);
int niti_cuda_marks_read(int64_t n, double *ms_out);

/* ---- ranges and requantization ---------------------------------------------------------------------- */
int niti_cuda_range_bits_s32(int64_t n, const int32_t *x, int32_t *bits_out); /* bits_out on the device */
int niti_cuda_range_bits_s64(int64_t n, const int64_t *x, int32_t *bits_out);
/* s = b(acc) - 7 found on the device (block max + atomicMax); out = clamp(ROUND(acc, s)) when s > 0,
 * clamp(acc) otherwise; *exp_out = *exp_in + max(s, 0). */
int niti_cuda_requantize_s32(int64_t n, const int32_t *acc, const int32_t *exp_in, int mode, uint32_t seed,
                             uint32_t step, uint32_t tensor_id, int8_t *out, int32_t *exp_out);
int niti_cuda_narrow_s64_s32(int64_t n, const int64_t *x, int32_t *out); /* overflow: deferred status 2 */

/* ---- GEMM: C (M x N) = A (M x K) * B^T, B stored N x K (both K-contiguous) ------------------------------
 * Every op with an int32 output accumulates a reduction longer than NITI_MAX_K_S32 (niti_k_fits_s32) in int64 and
 * narrows it with the device check: a value outside int32 is a deferred status 2 (overflow), never a wrap. */
int niti_cuda_gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int32_t *C);
int niti_cuda_gemm_s8s8s64(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int64_t *C); /* any K */

/* ---- linear: x (batch, in), w (out, in), y / dy (batch, out); output exponent = sum of the inputs' --- */
int niti_cuda_linear_forward(int64_t batch, int64_t in_features, int64_t out_features,
                             const int8_t *x, const int32_t *exp_x, const int8_t *w, const int32_t *exp_w,
                             int32_t *y, int32_t *exp_y);
int niti_cuda_linear_input_grad(int64_t batch, int64_t in_features, int64_t out_features,
                                const int8_t *dy, const int32_t *exp_dy, const int8_t *w, const int32_t *exp_w,
                                int32_t *dx, int32_t *exp_dx);
int niti_cuda_linear_weight_grad_s32(int64_t batch, int64_t in_features, int64_t out_features,
                                     const int8_t *x, const int32_t *exp_x, const int8_t *dy, const int32_t *exp_dy,
                                     int32_t *dw, int32_t *exp_dw);
int niti_cuda_linear_weight_grad_s64(int64_t batch, int64_t in_features, int64_t out_features,
                                     const int8_t *x, const int32_t *exp_x, const int8_t *dy, const int32_t *exp_dy,
                                     int64_t *dw, int32_t *exp_dw); /* int32 partial sums per K chunk, added in int64 */

/* ---- conv2d: x (batch, in_h, in_w, in_c), w (out_c, k_h, k_w, in_c), y / dy (batch, E, F, out_c) ------- */
int niti_cuda_conv2d_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                             int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                             const int8_t *x, const int32_t *exp_x, const int8_t *w, const int32_t *exp_w,
                             int32_t *y, int32_t *exp_y);
int niti_cuda_conv2d_input_grad(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                const int8_t *dy, const int32_t *exp_dy, const int8_t *w, const int32_t *exp_w,
                                int32_t *dx, int32_t *exp_dx);
int niti_cuda_conv2d_weight_grad_s32(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                     int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, const int8_t *x, const int32_t *exp_x, const int8_t *dy,
                                     const int32_t *exp_dy, int32_t *dw, int32_t *exp_dw);
int niti_cuda_conv2d_weight_grad_s64(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                     int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                     int64_t pad_w, const int8_t *x, const int32_t *exp_x, const int8_t *dy,
                                     const int32_t *exp_dy, int64_t *dw, int32_t *exp_dw);

/* ---- activations, pooling, dropout (exponents of relu / maxpool outputs equal their inputs') -------- */
int niti_cuda_relu_forward(int64_t n, const int8_t *x, int8_t *y);
int niti_cuda_relu_backward(int64_t n, const int8_t *x, const int8_t *dy, int8_t *dx); /* dy where x > 0 */
/* Windows over the input padded with -infinity (0 <= pad < kernel: every window holds a real input,
 * a padded position never wins), out_h = niti_conv_out(in_h, k_h, stride_h, pad_h); backward routes
 * dy to the first maximum of each window (row-major, real inputs) and saturates where overlapping
 * windows (stride < kernel) route several errors to one input. */
int niti_cuda_maxpool_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x,
                              int8_t *y);
int niti_cuda_maxpool_backward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                               int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x,
                               const int8_t *dy, int8_t *dx);
/* y[r, f] = x[r, f] if the top keep_shift bits of hash_bits(seed, step, tensor_id)[f] are 0, else 0;
 * one mask per feature shared by the rows; *exp_y = *exp_x + keep_shift (1 <= keep_shift <= 31). */
int niti_cuda_dropout(int64_t rows, int64_t features, int keep_shift, uint32_t seed, uint32_t step,
                      uint32_t tensor_id, const int8_t *x, const int32_t *exp_x, int8_t *y, int32_t *exp_y);

/* ---- loss gradient: logits (batch, classes) int8, their exponent read on the device, labels int32 ---- */
/* err (batch, classes) int8 with *exp_err = -7; p (batch, classes) int64 before the /16, or NULL. */
int niti_cuda_loss_grad(int64_t batch, int64_t classes, const int8_t *logits, const int32_t *exp_logits,
                        const int32_t *labels, int variant, uint32_t seed, uint32_t step, uint32_t tensor_id,
                        int8_t *err, int32_t *exp_err, int64_t *p);

/* ---- weight updates (g_acc int32 or int64; its range b is found on the device) ----------------------- */
int niti_cuda_update_plain_s32(int64_t n, const int8_t *w, const int32_t *g_acc, int mu, int8_t *w_out);
int niti_cuda_update_plain_s64(int64_t n, const int8_t *w, const int64_t *g_acc, int mu, int8_t *w_out);
/* a new velocity outside int32 writes nothing and is reported as a deferred status 2 */
int niti_cuda_update_momentum_s32(int64_t n, const int8_t *w, const int32_t *g_acc, const int32_t *velocity, int mu,
                                  int8_t *w_out, int32_t *velocity_out);
int niti_cuda_update_momentum_s64(int64_t n, const int8_t *w, const int64_t *g_acc, const int32_t *velocity, int mu,
                                  int8_t *w_out, int32_t *velocity_out);
int niti_cuda_update_shadow16_s32(int64_t n, const int16_t *shadow, const int32_t *g_acc, int mu,
                                  int8_t *w_out, int16_t *shadow_out);
int niti_cuda_update_shadow16_s64(int64_t n, const int16_t *shadow, const int64_t *g_acc, int mu,
                                  int8_t *w_out, int16_t *shadow_out);

#ifdef __cplusplus
}
#endif
#endif /* NITI_CUDA_API_H */
