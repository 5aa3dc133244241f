/* niti_node_check.h: the checks every node-call entry point runs on its call before touching memory
 * (descriptor counts, dtypes, ranks, extents, data pointers), written once for both libraries.
 *
 * The CPU descriptor (niti_tensor, host exponent) and the CUDA one (niti_cuda_tensor, device
 * exponent pointer) share every field these checks read, and each library reports errors through
 * its own thread-local message (niti_fail, niti_cu_fail), so the functions are stamped out per
 * library by NITI_DEFINE_NODE_CHECKS(prefix, tensor type, call type, fail function): the same code,
 * compiled by gcc for the CPU library and by nvcc for the host side of the CUDA library.
 * The Python caller (gpu_backend/node_call.py) checks the same from the op row first; these catch
 * a caller that did not. */
#ifndef NITI_NODE_CHECK_H
#define NITI_NODE_CHECK_H

#define NITI_DEFINE_NODE_CHECKS(prefix, tensor_t, call_t, fail)                                            \
    int64_t prefix##tensor_elems(const tensor_t *t) {                                                      \
        int64_t n = 1;                                                                                     \
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];                                               \
        return n;                                                                                          \
    }                                                                                                      \
                                                                                                           \
    int prefix##same_shape(const tensor_t *a, const tensor_t *b) {                                        \
        if (a->ndim != b->ndim) return 0;                                                                  \
        for (int d = 0; d < a->ndim; d++)                                                                  \
            if (a->shape[d] != b->shape[d]) return 0;                                                      \
        return 1;                                                                                          \
    }                                                                                                      \
                                                                                                           \
    static int prefix##check_tensor(const tensor_t *t, const char *op, const char *role, int index,       \
                                    int32_t dtype) {                                                       \
        if (t->dtype != dtype)                                                                             \
            return fail(NITI_E_ARG, "%s: %s %d has dtype code %d, expected %d (niti_dtype)", op, role,    \
                        index, (int)t->dtype, (int)dtype);                                                 \
        if (t->ndim < 0 || t->ndim > NITI_NODE_MAX_DIMS)                                                   \
            return fail(NITI_E_ARG, "%s: %s %d has %d dimensions (0..%d)", op, role, index, (int)t->ndim, \
                        NITI_NODE_MAX_DIMS);                                                               \
        for (int d = 0; d < t->ndim; d++)                                                                  \
            if (t->shape[d] < 0) return fail(NITI_E_ARG, "%s: %s %d has a negative extent", op, role, index); \
        if (!t->data && prefix##tensor_elems(t) > 0)                                                       \
            return fail(NITI_E_ARG, "%s: %s %d has no data", op, role, index);                            \
        return NITI_OK;                                                                                    \
    }                                                                                                      \
                                                                                                           \
    int prefix##node_check(const call_t *call, const char *op, int n_in, int n_out, int n_attrs,          \
                           const int32_t *dtypes) {                                                        \
        if (!call) return fail(NITI_E_ARG, "%s: NULL node call", op);                                     \
        if (call->n_inputs != n_in || call->n_outputs != n_out || call->n_attrs != n_attrs)                \
            return fail(NITI_E_ARG, "%s: takes %d inputs, %d outputs and %d attrs, got %d, %d and %d", op, \
                        n_in, n_out, n_attrs, (int)call->n_inputs, (int)call->n_outputs, (int)call->n_attrs); \
        for (int i = 0; i < n_in + n_out; i++) {                                                           \
            int st = i < n_in ? prefix##check_tensor(&call->inputs[i], op, "input", i, dtypes[i])          \
                              : prefix##check_tensor(&call->outputs[i - n_in], op, "output", i - n_in,     \
                                                     dtypes[i]);                                           \
            if (st) return st;                                                                             \
        }                                                                                                  \
        return NITI_OK;                                                                                    \
    }

#endif
