/* niti_api.h: the C API of the NITI kernel libraries (libniti_cpu.so, libniti_cuda.so).
 *
 * Declarations and constants only: gpu_backend/c_binding.py feeds this file, with the quoted headers
 * it includes (niti_constants.h), to cffi's cdef, keeping `#define NAME <integer literal>` lines and
 * dropping every other preprocessor line (and the __cplusplus block), so keep it to plain prototypes
 * over int8_t..int64_t, uint8_t, uint32_t, enums and integer-literal #defines. Python reads the
 * constants from here (through the loaded library) and copies none of them. Conventions:
 *   - every entry point returns an int status (niti_status, niti_constants.h): NITI_OK,
 *     NITI_E_ARG (invalid argument), NITI_E_OVERFLOW (a value left its declared range) or
 *     NITI_E_NOMEM; niti_last_error() holds the calling thread's last message; outputs are only
 *     meaningful on NITI_OK;
 *   - sizes are int64_t (a negative size is an error, not a huge size_t);
 *   - row-major arrays; activations NHWC, conv weights [O, kh, kw, I], linear weights [out, in];
 *   - `mode` is a rounding mode: 0 nearest, 1 pseudo_stochastic, 2 stochastic (the order of
 *     nitisim.numerics.ROUNDING_MODES); `variant` is a loss variant: 0 niti, 1 fine;
 *   - (seed, step, tensor_id) are the counter-hash coordinates of stochastic rounding/dropout;
 *   - outputs may alias inputs only where noted (elementwise ops: same index read then written).
 */
#ifndef NITI_API_H
#define NITI_API_H
#include <stdint.h>

#include "niti_constants.h"
#ifdef __cplusplus
extern "C" {
#endif

/* The version of this API: niti_abi_version() of a library built from this header returns it, and
 * the Python binding refuses a library that returns another (a stale build). Raise it on any change
 * of an entry point or a constant here. */
#define NITI_ABI_VERSION 5

/* Elementwise loops go parallel above this many elements of the kernel's largest input (1 << 20):
 * about half a millisecond on one thread. Below it, waking the other threads costs more than it
 * saves, and on a busy machine a parallel region can wait a whole time slice (milliseconds) for a
 * thread to be scheduled. Calibration reads it (parallel_min_elements). */
#define NITI_PARALLEL_MIN_ELEMS 1048576

/* ---- the node call: one ABI for every op whose row (nitisim/contract/ops.py) has a NodeCall -------
 * Each such op is one entry point `int niti_op_<name>(niti_node_call *call)`, defined in its own
 * file csrc/op_<name>.c; the Python binding declares it from the op rows (gpu_backend/node_call.py),
 * so it has no line here. The caller fills the descriptors as the row says (input dtypes and
 * shapes, attrs in the row's order, strings by their vocabulary index: mode -> ROUNDING_MODES) and
 * allocates the outputs; the op checks what it relies on (niti_node_check, cpu_internal.h), writes
 * its outputs and, for an output whose exponent the row says comes from the data, its `exp`. */
typedef struct {
    void *data;                          /* row-major, C-contiguous */
    int32_t dtype;                       /* niti_dtype */
    int32_t ndim;                        /* <= NITI_NODE_MAX_DIMS */
    int64_t shape[NITI_NODE_MAX_DIMS];
    int32_t exp;                         /* the tensor's exponent: read for inputs, written for data-derived outputs */
} niti_tensor;

typedef struct {
    int32_t n_inputs, n_outputs, n_attrs;
    niti_tensor inputs[NITI_NODE_MAX_TENSORS];
    niti_tensor outputs[NITI_NODE_MAX_TENSORS];
    int64_t attrs[NITI_NODE_MAX_ATTRS];
    uint32_t seed, step, tensor_id;      /* counter-hash coordinates (the node's tensor id) */
    int64_t mu;                          /* update bit budget of the step */
} niti_node_call;

/* ---- library ------------------------------------------------------------------------------------ */
int niti_abi_version(void);
const char *niti_last_error(void);
const char *niti_kernel_isa(void);           /* SIMD micro-kernel compiled in: "avx512vnni", "avx2", "scalar" */
/* GEMM engines: "amx" (AMX-INT8 tiles; compiled in where the compiler targets it, used where the CPU
 * and OS allow it) or the build's SIMD micro-kernel. "auto" takes the best usable; the choice is
 * process-wide and results are identical on every engine. */
int niti_set_engine(const char *name);
const char *niti_engine_name(void);          /* the engine GEMMs run on */
const char *niti_engine_note(void);          /* why "auto" passed over a better engine ("" if it did not) */
/* The (m, k, n) block the engine in use computes in: its C tile (m x n) and the K granule it reads
 * (4-byte dot products on the SIMD engines, 64-byte tile rows on AMX); a GEMM costs as if padded to it. */
int niti_gemm_tile(int *m_out, int *k_out, int *n_out);
int niti_set_num_threads(int num_threads);   /* 0: the OpenMP default (OMP_NUM_THREADS or all cores) */
int niti_get_num_threads(int *num_threads_out);

/* ---- counter hash and tables (exported for parity tests) ---------------------------------------- */
int niti_mix32_array(int64_t n, const uint32_t *x, uint32_t *out);
int niti_hash_key_of(uint32_t seed, uint32_t step, uint32_t tensor_id, uint32_t *key_out);
int niti_uniform_below_pow2(int s_bits, uint32_t seed, uint32_t step, uint32_t tensor_id, int64_t n, uint32_t *out);
int niti_fine_exp2_table_q16(int32_t *out256);

/* ---- ranges, shifts, requantization -------------------------------------------------------------- */
int niti_range_bits_s32(int64_t n, const int32_t *x, int *bits_out);
int niti_range_bits_s64(int64_t n, const int64_t *x, int *bits_out);
int niti_round_shift_s64(int64_t n, const int64_t *x, int shift_bits, int mode,
                         uint32_t seed, uint32_t step, uint32_t tensor_id, int64_t *out);
/* int32 accumulator -> int8: s = b(acc) - 7; shifted with `mode` when s > 0; *shift_out = max(s, 0)
 * is the exponent increment. */
int niti_requantize_s32(int64_t n, const int32_t *acc, int mode, uint32_t seed, uint32_t step,
                        uint32_t tensor_id, int8_t *out, int *shift_out);
/* int64 -> int32, status 2 if any value is outside int32 (never wraps). */
int niti_narrow_s64_s32(int64_t n, const int64_t *x, int32_t *out);

/* ---- GEMM: C (M x N) = A (M x K) * B^T, B stored N x K (both operands K-contiguous) -------------
 * int32 outputs (here and below): reductions up to NITI_MAX_K_S32 provably fit and accumulate in int32;
 * longer ones accumulate in int64 and are narrowed with a check: status 2 if a value leaves int32. */
int niti_gemm_s8s8s32(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int32_t *C);
int niti_gemm_s8s8s64(int64_t M, int64_t N, int64_t K, const int8_t *A, const int8_t *B, int64_t *C);

/* ---- linear: x (batch, in), w (out, in), y / dy (batch, out) ------------------------------------- */
int niti_linear_forward(int64_t batch, int64_t in_features, int64_t out_features,
                        const int8_t *x, const int8_t *w, int32_t *y);
int niti_linear_input_grad(int64_t batch, int64_t in_features, int64_t out_features,
                           const int8_t *dy, const int8_t *w, int32_t *dx);
int niti_linear_weight_grad_s32(int64_t batch, int64_t in_features, int64_t out_features,
                                const int8_t *x, const int8_t *dy, int32_t *dw);
int niti_linear_weight_grad_s64(int64_t batch, int64_t in_features, int64_t out_features,
                                const int8_t *x, const int8_t *dy, int64_t *dw);

/* ---- conv2d: x (batch, in_h, in_w, in_c), w (out_c, k_h, k_w, in_c), y / dy (batch, E, F, out_c)
 * with E = (in_h + 2 pad_h - k_h) / stride_h + 1, F likewise (floor). Zero padding. -------------- */
int niti_conv2d_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                        int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        const int8_t *x, const int8_t *w, int32_t *y);
/* niti_conv2d_forward then niti_requantize_s32 of its output (same mode, seed, step, tensor_id), bit
 * for bit, without the int32 tensor in memory: out (batch, E, F, out_c) int8, *shift_out the shift. */
int niti_conv2d_forward_requantize(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                   int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                   int64_t pad_w, const int8_t *x, const int8_t *w, int mode, uint32_t seed,
                                   uint32_t step, uint32_t tensor_id, int8_t *out, int *shift_out);
/* niti_conv2d_input_grad then niti_requantize_s32 of its output, bit for bit, without the int32
 * tensor in memory: out (batch, in_h, in_w, in_c) int8, *shift_out the shift. */
int niti_conv2d_input_grad_requantize(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                      int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w, const int8_t *dy, const int8_t *w, int mode, uint32_t seed,
                                      uint32_t step, uint32_t tensor_id, int8_t *out, int *shift_out);
/* dx (batch, in_h, in_w, in_c): the col2im scatter-add of dy * w, computed as a gather. */
int niti_conv2d_input_grad(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                           int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                           const int8_t *dy, const int8_t *w, int32_t *dx);
/* dw (out_c, k_h, k_w, in_c), reduced over batch * E * F output pixels. */
int niti_conv2d_weight_grad_s32(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                const int8_t *x, const int8_t *dy, int32_t *dw);
int niti_conv2d_weight_grad_s64(int64_t batch, int64_t in_h, int64_t in_w, int64_t in_c, int64_t out_c,
                                int64_t k_h, int64_t k_w, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                const int8_t *x, const int8_t *dy, int64_t *dw);

/* ---- probes ------------------------------------------------------------------------------------- */
/* Rewrites n bytes in place (values unchanged) on the library's threads, each a contiguous chunk:
 * calibration's cache eviction between timed calls, which thereby also keeps every thread's core
 * busy, as the kernels of a training step do. */
int niti_rewrite_parallel(int64_t n, int8_t *data);

/* ---- activations, pooling, dropout ------------------------------------------------------------- */
int niti_relu_forward(int64_t n, const int8_t *x, int8_t *y);
int niti_relu_backward(int64_t n, const int8_t *x, const int8_t *dy, int8_t *dx); /* dy where x > 0 */
/* Windows over the input padded with -infinity (0 <= pad < kernel, so every window holds a real
 * input and a padded position never wins): out_h = niti_conv_out(in_h, k_h, stride_h, pad_h).
 * Backward routes dy to the first maximum of each window in row-major order among its real inputs;
 * where windows overlap (stride < kernel), the routed errors are summed and saturated to [-127, 127]. */
int niti_maxpool_forward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                         int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x, int8_t *y);
int niti_maxpool_backward(int64_t batch, int64_t in_h, int64_t in_w, int64_t channels, int64_t k_h, int64_t k_w,
                          int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, const int8_t *x,
                          const int8_t *dy, int8_t *dx);
/* keep[f] = 1 iff the top keep_shift bits of hash_bits(seed, step, tensor_id)[f] are all zero
 * (keep probability 2**-keep_shift, 1 <= keep_shift <= 31); one mask per feature. */
int niti_dropout_mask(int64_t features, int keep_shift, uint32_t seed, uint32_t step, uint32_t tensor_id,
                      uint8_t *keep);
int niti_dropout_apply(int64_t rows, int64_t features, const int8_t *x, const uint8_t *keep, int8_t *y);

/* ---- loss gradient: logits (batch, classes) int8 with exponent exp, labels int32 ---------------- */
/* err int8 (batch, classes), exponent -7; p (batch, classes) int64 before the /16, or NULL. */
int niti_loss_grad(int64_t batch, int64_t classes, const int8_t *logits, int exp, const int32_t *labels,
                   int variant, uint32_t seed, uint32_t step, uint32_t tensor_id, int8_t *err, int64_t *p);

/* ---- weight updates (g_acc int32 or int64) ------------------------------------------------------ */
int niti_update_plain_s32(int64_t n, const int8_t *w, const int32_t *g_acc, int mu, int8_t *w_out);
int niti_update_plain_s64(int64_t n, const int8_t *w, const int64_t *g_acc, int mu, int8_t *w_out);
/* status 2 (nothing written) if the new velocity leaves int32 */
int niti_update_momentum_s32(int64_t n, const int8_t *w, const int32_t *g_acc, const int32_t *velocity, int mu,
                             int8_t *w_out, int32_t *velocity_out);
int niti_update_momentum_s64(int64_t n, const int8_t *w, const int64_t *g_acc, const int32_t *velocity, int mu,
                             int8_t *w_out, int32_t *velocity_out);
int niti_update_shadow16_s32(int64_t n, const int16_t *shadow, const int32_t *g_acc, int mu,
                             int8_t *w_out, int16_t *shadow_out);
int niti_update_shadow16_s64(int64_t n, const int16_t *shadow, const int64_t *g_acc, int mu,
                             int8_t *w_out, int16_t *shadow_out);

#ifdef __cplusplus
}
#endif
#endif /* NITI_API_H */
