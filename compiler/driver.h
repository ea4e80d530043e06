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
#include "../runtime/comm.h"
#include "run.h"

/* Exit statuses of bocbc. */
enum {
    BOCB_EXIT_OK = 0,
    BOCB_EXIT_COMPILE = 1, /* errors in the program: syntax, names, shapes */
    BOCB_EXIT_USAGE = 2,   /* a command-line mistake */
    BOCB_EXIT_RUNTIME = 3, /* data, reports, memory or code generation failed */
};

typedef enum EmitKind {
    EMIT_NONE,
    EMIT_AST,
    EMIT_IR,      /* the forward graph, before autodiff */
    EMIT_DOT,
    EMIT_KERNELS,
    EMIT_LLVM,
    EMIT_TOKENS,
    EMIT_IR_GRAD, /* the training step after autodiff, before the optimizer */
    EMIT_IR_OPT,  /* the final training step and evaluation graphs */
    EMIT_ASM,
} EmitKind;

typedef enum ColorMode {
    COLOR_AUTO,   /* colour when stderr is a terminal and NO_COLOR is unset */
    COLOR_ALWAYS,
    COLOR_NEVER,
} ColorMode;

typedef struct Options {
    const char *input;
    Backend backend;
    EmitKind emit;
    bool syntax_only;
    bool check_only;         /* compile every cell, train nothing */
    bool list_cells;
    bool repl;               /* an interactive session (repl.c) */
    ColorMode color;
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
    bool compile_aot;        /* -c: write an executable instead of running */
    const char *aot_output;  /* -o, or default_output */
    char *default_output;    /* malloc'd */
    const char *target_cpu;  /* --target-cpu; NULL for the host */
    bool target_cpu_given;
    const char *cache_dir;   /* --cache-dir; NULL for the default */
    bool no_cache;
    /* Sharded training (shard.h): ranks > 0 trains every cell sharded over
     * that many ranks, which are the processes of `comm` under mpirun and
     * are simulated in this process otherwise (comm NULL). */
    int ranks;
    const RtComm *comm;
    bool check_numerics;     /* stop at the first op that makes a NaN or infinity */
    size_t max_memory;       /* bytes a cell may plan; 0 = what the process may allocate */
    const char *summarize;   /* --summarize: a runs.csv to summarise, or NULL */
    const char *version;     /* of bocbc, for REPORT/metadata.json */
    int argc;                /* the command line, for REPORT/metadata.json */
    char **argv;
} Options;

/* Runs bocbc with `opts` and returns the process exit status, one of
 * BOCB_EXIT_OK, BOCB_EXIT_COMPILE and BOCB_EXIT_RUNTIME. */
int driver_main(const Options *opts);

/* Returns whether diagnostics are coloured for --color=`mode`: `auto`
 * colours only when stderr is a terminal, TERM is not "dumb" and NO_COLOR
 * is unset or empty. */
bool driver_color_enabled(ColorMode mode);

/* Finds the standard library: $BOCB_STDLIB, else ../stdlib or
 * ../share/bocb/stdlib next to the executable. Returns a malloc'd path or
 * NULL. */
char *driver_find_stdlib(void);

/* Returns the directory of the running executable (malloc'd), or NULL
 * when /proc/self/exe cannot be read. */
char *driver_executable_dir(void);
/* Writes summary.md and summary.json next to the results table
 * `runs_csv`. Returns BOCB_EXIT_OK, or BOCB_EXIT_RUNTIME after printing
 * why the table cannot be read or the files cannot be written. */
int driver_summarize(const char *runs_csv);

#endif
