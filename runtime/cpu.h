/* cpu.h - checking that this CPU runs code compiled for another one.
 *
 * An executable written by `bocbc -c` records the target its kernels were
 * compiled for, as codegen_target_id formats it: "llvm V; TRIPLE; cpu
 * NAME; features +f1,+f2,-f3". On a CPU without one of those features,
 * a kernel would stop the program with SIGILL at its first call. This
 * check reports the missing feature before anything runs.
 */
#ifndef BOCB_CPU_H
#define BOCB_CPU_H

#include <stdbool.h>

/* Returns whether this CPU has every instruction-set feature that
 * `target` requires, among those the compiler's __builtin_cpu_supports
 * can test: the "+" features, and those implied by a CPU named x86-64-v2,
 * -v3 or -v4. Otherwise stores the first missing feature's name in
 * *missing (static storage) and returns false. */
bool rt_cpu_runs_target(const char *target, const char **missing);

#endif
