/* driver.h - the compiler driver: from a .bocb file to results.
 *
 * The pass list of bocbc, in order:
 *   1. load and parse the program (lang/);
 *   2. bind declarations and resolve the experiment (eval.c, experiment.c);
 *   3. load the data;
 *   4. compile every cell: lowering, autodiff, optimizer expansion
 *      (experiment.c, autodiff.c, optim.c);
 *   5. for each cell and seed, schedule and JIT-compile it (schedule.c,
 *      jit.c) or interpret it (interp.c), then train (runtime/train.c);
 *   6. report.
 */
#ifndef BOCB_DRIVER_H
#define BOCB_DRIVER_H

#include <stdbool.h>

#include "lower.h"
#include "run.h"

typedef enum EmitKind {
    EMIT_NONE,
    EMIT_AST,
    EMIT_IR,
    EMIT_DOT,
    EMIT_KERNELS,
    EMIT_LLVM,
} EmitKind;

typedef struct Options {
    const char *input;
    Backend backend;
    EmitKind emit;
    bool syntax_only;
    bool stats;
    bool quiet;              /* no progress lines */
    const char *experiment;  /* NULL = every experiment of the main file */
    const char *stdlib_dir;
    const char **include_dirs;
    int ninclude_dirs;
    Override *overrides;
    int noverrides;
    int threads;             /* OpenBLAS threads; 0 = its default */
    const char *report_dir;  /* replaces the experiment's `report` directory */
} Options;

/* Runs bocbc with `opts` and returns the process exit status: 0 on
 * success, 1 after errors in the program or its data. */
int driver_main(const Options *opts);

/* Finds the standard library: $BOCB_STDLIB, else ../stdlib or
 * ../share/bocb/stdlib next to the executable. Returns a malloc'd path or
 * NULL. */
char *driver_find_stdlib(void);

#endif
