/* cpu_node.c: the checks every node-call entry point (niti_op_<name>, csrc/op_<name>.c) runs on
 * its call before touching memory: the descriptor counts, dtypes and shapes its op row promises.
 * The Python caller checks the same from the row first; these catch a caller that did not. */
#include "cpu_internal.h"

int64_t niti_tensor_elems(const niti_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int niti_same_shape(const niti_tensor *a, const niti_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static int check_tensor(const niti_tensor *t, const char *op, const char *role, int index, int32_t dtype) {
    if (t->dtype != dtype)
        return niti_fail(NITI_E_ARG, "%s: %s %d has dtype code %d, expected %d (niti_dtype)", op, role, index,
                         (int)t->dtype, (int)dtype);
    if (t->ndim < 0 || t->ndim > NITI_NODE_MAX_DIMS)
        return niti_fail(NITI_E_ARG, "%s: %s %d has %d dimensions (0..%d)", op, role, index, (int)t->ndim,
                         NITI_NODE_MAX_DIMS);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0)
            return niti_fail(NITI_E_ARG, "%s: %s %d has a negative extent", op, role, index);
    if (!t->data && niti_tensor_elems(t) > 0) return niti_fail(NITI_E_ARG, "%s: %s %d has no data", op, role, index);
    return NITI_OK;
}

int niti_node_check(const niti_node_call *call, const char *op, int n_in, int n_out, int n_attrs,
                    const int32_t *dtypes) {
    if (!call) return niti_fail(NITI_E_ARG, "%s: NULL node call", op);
    if (call->n_inputs != n_in || call->n_outputs != n_out || call->n_attrs != n_attrs)
        return niti_fail(NITI_E_ARG, "%s: takes %d inputs, %d outputs and %d attrs, got %d, %d and %d", op, n_in, n_out,
                         n_attrs, (int)call->n_inputs, (int)call->n_outputs, (int)call->n_attrs);
    for (int i = 0; i < n_in + n_out; i++) {
        int st = i < n_in ? check_tensor(&call->inputs[i], op, "input", i, dtypes[i])
                          : check_tensor(&call->outputs[i - n_in], op, "output", i - n_in, dtypes[i]);
        if (st) return st;
    }
    return NITI_OK;
}
