/* niti_constants.h: the numbers both kernel libraries (CPU and CUDA) and their Python binding share.
 *
 * Included by both API headers (niti_api.h, niti_cuda_api.h) and by niti_arith.h. The Python binding
 * (gpu_backend/c_binding.py) hands this file to cffi's cdef along with the API header that includes
 * it, so Python reads every value here through the loaded library and keeps no copy. cffi's cdef
 * reads only enums and `#define NAME <integer literal>` lines: no expressions here.
 */
#ifndef NITI_CONSTANTS_H
#define NITI_CONSTANTS_H

/* Status every entry point returns (niti_last_error / niti_cuda_last_error hold the message).
 * NITI_E_CUDA comes only from the CUDA library: no driver, no device, a failed launch. */
typedef enum {
    NITI_OK = 0,
    NITI_E_ARG = 1,      /* invalid argument, or invalid data found by a device check */
    NITI_E_OVERFLOW = 2, /* a value left its declared range */
    NITI_E_NOMEM = 3,    /* out of memory */
    NITI_E_CUDA = 4
} niti_status;

/* Longest int32 reduction whose sum of int8 x int8 products provably fits int32:
 * 131071 * 128 * 128 = 2147467264 < 2**31 - 1 (even with -128 operands). */
#define NITI_MAX_K_S32 131071

/* ---- the node call (niti_op_<name>, niti_cuda_op_<name>: niti_api.h, niti_cuda_api.h) ------------- */
/* Element type of a tensor descriptor; Python maps numpy dtypes to these by name (NITI_DT_INT8 is
 * int8), so an op's row names dtypes as numpy does. */
typedef enum {
    NITI_DT_INT8 = 1,
    NITI_DT_INT16 = 2,
    NITI_DT_INT32 = 3,
    NITI_DT_INT64 = 4,
    NITI_DT_UINT8 = 5,
    NITI_DT_UINT32 = 6
} niti_dtype;

#define NITI_NODE_MAX_DIMS 8    /* dimensions of one tensor descriptor */
#define NITI_NODE_MAX_TENSORS 8 /* inputs, and outputs, of one node call */
#define NITI_NODE_MAX_ATTRS 16  /* int64 attributes of one node call */

#endif /* NITI_CONSTANTS_H */
