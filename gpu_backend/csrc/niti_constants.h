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

#endif /* NITI_CONSTANTS_H */
