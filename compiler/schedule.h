/* schedule.h - fusion, ordering and memory planning: IR graph -> RtProgram.
 *
 * The pass groups elementwise nodes into fused kernels, keeps matrix
 * products, convolutions, pooling, cross-entropy and reductions as library
 * steps, orders everything, and assigns each value that must exist in
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

/* Schedules `g` for batches of up to max_batch samples. Never fails: every
 * verified graph can be scheduled. */
void schedule_graph(const IrGraph *g, int64_t max_batch, Schedule *out);
void schedule_free(Schedule *s);

/* Prints the steps and kernels (bocbc --emit=kernels). */
void schedule_print(FILE *out, const Schedule *s);

#endif
