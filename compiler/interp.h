/* interp.h - the reference interpreter: runs an IR graph node by node.
 *
 * No fusion, no memory planning and no LLVM: each node gets a buffer of
 * its own and is computed by a plain C loop or a runtime library kernel.
 * It is the oracle that compiled execution is tested against, and the
 * executor for f64 gradient checks. It lives in compiler/ because it reads
 * the IR; runtime/ holds only what a compiled program needs.
 */
#ifndef BOCB_INTERP_H
#define BOCB_INTERP_H

#include <stdint.h>

#include "../runtime/exec.h"
#include "../runtime/vars.h"
#include "../runtime/ops.h"
#include "ir.h"

/* The runtime's description of a loss node (shared with schedule.c). */
static inline RtLoss rt_loss_of(const IrLossAttr *a)
{
    RtLoss r = {.kind = a->kind == IR_LOSS_MSE ? RT_LOSS_MSE : RT_LOSS_CROSS_ENTROPY,
                .label_smoothing = a->label_smoothing};
    return r;
}

typedef struct Interp Interp;

/* Prepares to run `g` on `store`, whose variable i is module variable i.
 * Neither is copied; both must outlive the interpreter. */
Interp *interp_create(const IrGraph *g, RtVarStore *store);
void interp_destroy(Interp *it);

/* Binds graph input `index` to caller memory, read by interp_run. */
void interp_bind_input(Interp *it, int index, const void *data);

/* Sets the hooks that gather_shards and reduce_shards nodes call. A graph
 * with such nodes must not run before this. */
void interp_set_shard_hooks(Interp *it, const RtShardHooks *hooks);

/* Evaluates the graph for `batch` samples, then applies its assignments
 * to the variables. Outputs stay readable until the next run. */
void interp_run(Interp *it, int64_t batch);

/* Turns --check-numerics on or off. While it is on, every run checks the
 * result of each float node, and a run in which some node makes a NaN or
 * an infinity out of finite operands applies none of its assignments. */
void interp_check_numerics(Interp *it, bool on);

/* Returns the first node of the last run that made a NaN or an infinity
 * out of finite operands, and sets *is_nan to whether it was a NaN; or
 * returns -1 when none did or the check is off. */
int interp_numeric_fault(const Interp *it, bool *is_nan);

/* Returns the data of the output called `name` from the last run. */
const void *interp_output(const Interp *it, const char *name);

#endif
