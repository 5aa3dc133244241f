/* cpu_node.c: the checks every node-call entry point (niti_op_<name>, csrc/op_<name>.c) runs on
 * its call before touching memory, stamped out for the CPU library from niti_node_check.h. */
#include "cpu_internal.h"
#include "niti_node_check.h"

NITI_DEFINE_NODE_CHECKS(niti_, niti_tensor, niti_node_call, niti_fail)
