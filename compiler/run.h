/* run.h - executors for a compiled cell: JIT-compiled program or interpreter.
 *
 * Both implement the runtime's RtRunner interface over one variable store,
 * so the training loop cannot tell them apart. The JIT path schedules each
 * graph (fusion, ordering, memory planning), compiles the kernels of both
 * graphs as one LLVM module, and runs the steps. The interpreter path runs
 * the IR node by node.
 */
#ifndef BOCB_RUN_H
#define BOCB_RUN_H

#include "../runtime/exec.h"
#include "../runtime/train.h"
#include "codegen.h"
#include "interp.h"
#include "lower.h"
#include "schedule.h"

typedef enum Backend {
    BACKEND_JIT,
    BACKEND_INTERP,
} Backend;

typedef struct CellStats {
    int kernels;
    int steps;
    double schedule_seconds;
    double jit_seconds;   /* IR build + O3 + machine code, this cell only */
    int cache_hits;       /* kernels loaded from the kernel cache */
    int cache_misses;     /* kernels compiled and written to it */
    size_t planned_bytes; /* cell_planned_bytes: the planned peak */
    size_t arena_bytes;   /* planned peak, training step and evaluation */
    size_t eval_arena_bytes;
    size_t workspace_bytes;
    size_t variable_bytes;
    /* Planned peak of a training step: every variable, the arenas of the
     * training graphs and the scratch buffer. Of an inference-only run of
     * the evaluation graph: parameters, buffers, its arena and scratch. */
    size_t train_peak_bytes;
    size_t inference_peak_bytes;
    int64_t parameters;   /* trainable elements */
    double train_flops;   /* matrix products and convolutions of one
                             training step at the maximum batch */
    /* Sharded training: the planned peak of the parameters that the
     * training step's gather steps hold in its arena at once, and the
     * bytes of all of them (both 0 otherwise). */
    size_t gathered_bytes, gathered_total;
} CellStats;

/* The graphs of a cell, as indices of CellRunner's arrays. The last two
 * exist for gradient = zo only. */
enum {
    CELL_EVAL,
    CELL_TRAIN,
    CELL_ZO_PERTURB,
    CELL_ZO_UPDATE,
    CELL_GRAPHS
};

typedef struct CellRunner {
    RtRunner runner;
    Backend backend;
    RtVarStore vars;
    const CompiledCell *cell;
    int ngraphs;       /* 2, or CELL_GRAPHS for a zeroth-order cell */
    /* JIT */
    Schedule sched[CELL_GRAPHS];
    RtExec *exec[CELL_GRAPHS];
    /* interpreter */
    Interp *interp[CELL_GRAPHS];
    void **inputs[CELL_GRAPHS]; /* per graph input, sized for the maximum batch */
    /* zeroth-order step: the loss and logits of its first forward pass,
     * as the training loop reads them */
    union {
        float f32;
        double f64;
    } zo_loss;
    void *zo_logits;
    char fault[96];    /* --check-numerics: "sqrt made a NaN at m.bocb:3:7" */
} CellRunner;

/* Builds an executor for `cell`, whose graphs run batches of at most
 * `batch` (training) and `eval_batch` (evaluation). `jit` is needed for
 * BACKEND_JIT. Returns false and sets *error (malloc'd) when the planned
 * memory exceeds `memory_limit` bytes (checked before anything is
 * allocated) or code generation fails. */
bool cell_runner_create(CellRunner *r, const CompiledCell *cell, Backend backend, Jit *jit,
                        int64_t batch, int64_t eval_batch, size_t memory_limit,
                        CellStats *stats, char **error);
void cell_runner_destroy(CellRunner *r);

/* Turns on --check-numerics for an interpreter runner: after each run,
 * the first op whose result has a NaN or an infinity that its operands
 * did not have is reported as an error at its source location, and the
 * training loop stops the cell at that step, before its assignments. */
void cell_runner_check_numerics(CellRunner *r);

/* Returns the memory a cell plans to use: its variables, the activation
 * arenas of both graphs for the given batch sizes, and scratch buffers
 * (SIZE_MAX when the sum overflows). */
size_t cell_planned_bytes(const CompiledCell *cell, int64_t batch, int64_t eval_batch);

/* The input, run and output of graph `graph` (a CELL_ index) of either
 * backend. */
void *cell_graph_input(CellRunner *r, int graph, const char *name);
void cell_graph_run(CellRunner *r, int graph, int64_t batch);
const void *cell_graph_output(CellRunner *r, int graph, const char *name);

/* Sets the hooks of the gather and reduce steps of sharded training on
 * every graph of either backend (shard.c). */
void cell_runner_set_shard_hooks(CellRunner *r, const RtShardHooks *hooks);

/* Runs one zeroth-order training step (zo_run.c): the perturbations,
 * forward passes and the update, in the order zo.h describes. */
void zo_run_step(CellRunner *r, int64_t batch);

/* Creates a variable store whose variable i is module variable i, with
 * memory allocated (values set later by rt_vars_reset). */
void create_var_store(RtVarStore *store, const IrModule *m);

#endif
