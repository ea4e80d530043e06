/* schedule.h - fusion, ordering and memory planning: IR graph -> RtProgram.
 *
 * The pass groups elementwise nodes into fused kernels and keeps matrix
 * products, convolutions, pooling, cross-entropy and reductions as library
 * steps. It orders everything and gives each value that must exist in
 * memory a slot: an offset in the activation arena chosen by liveness, or
 * a variable updated in place. The result needs only the kernels' machine
 * code (from the JIT) to run.
 */
#ifndef BOCB_SCHEDULE_H
#define BOCB_SCHEDULE_H

#include <stdio.h>

#include "../runtime/exec.h"
#include "ir.h"
#include "kernel.h"

typedef struct Schedule {
    RtProgram program; /* program.kernels is left for the JIT to fill */
    Kernel **kernels;
    int nkernels;
} Schedule;

/* Schedules `g` for batches of up to max_batch samples. There is no
 * failure path: a graph that passes ir_verify can always be scheduled, and
 * a broken invariant is a BOCB_ASSERT. */
void schedule_graph(const IrGraph *g, int64_t max_batch, Schedule *out);
void schedule_free(Schedule *s);

/* Prints the steps and kernels (bocbc --emit=kernels). */
void schedule_print(FILE *out, const Schedule *s);

#endif
