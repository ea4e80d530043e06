/* run.c - the JIT and interpreter executors behind RtRunner. */
#include "run.h"

#include <stdlib.h>
#include <string.h>

static void *jit_input(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    return rt_exec_input(r->exec[train], name);
}

static void jit_run(void *self, bool train, int64_t batch)
{
    CellRunner *r = self;
    rt_exec_run(r->exec[train], batch);
}

static const void *jit_output(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    return rt_exec_output(r->exec[train], name);
}

static const IrGraph *graph_of(const CellRunner *r, bool train)
{
    return train ? r->cell->train : r->cell->eval;
}

static void *interp_input(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    int i = ir_find_input(graph_of(r, train), name);
    return i < 0 ? NULL : r->inputs[train][i];
}

static void interp_run_graph(void *self, bool train, int64_t batch)
{
    CellRunner *r = self;
    interp_run(r->interp[train], batch);
}

/* Runs a graph like interp_run_graph, then reports the first op that
 * made a NaN or an infinity, once per runner. */
static void interp_run_checked(void *self, bool train, int64_t batch)
{
    CellRunner *r = self;
    interp_run(r->interp[train], batch);
    bool is_nan = false;
    int id = interp_numeric_fault(r->interp[train], &is_nan);
    if (id < 0 || r->fault[0])
        return;
    const IrNode *n = &graph_of(r, train)->nodes[id];
    const char *what = is_nan ? "a NaN" : "an infinity";
    diag_error(n->loc, "'%s' made %s from finite operands in the %s (--check-numerics)",
               ir_op_name(n->op), what, train ? "training step" : "evaluation");
    if (n->loc.file)
        snprintf(r->fault, sizeof r->fault, "'%s' made %s at %s:%d:%d", ir_op_name(n->op),
                 what, src_path(n->loc.file), n->loc.line, n->loc.col);
    else
        snprintf(r->fault, sizeof r->fault, "'%s' made %s", ir_op_name(n->op), what);
}

static const char *interp_fault(void *self, bool train)
{
    CellRunner *r = self;
    bool is_nan;
    return interp_numeric_fault(r->interp[train], &is_nan) >= 0 ? r->fault : NULL;
}

void cell_runner_check_numerics(CellRunner *r)
{
    BOCB_ASSERT(r->backend == BACKEND_INTERP);
    for (int t = 0; t < 2; t++)
        interp_check_numerics(r->interp[t], true);
    r->runner.run = interp_run_checked;
    r->runner.fault = interp_fault;
}

static const void *interp_out(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    return interp_output(r->interp[train], name);
}

void create_var_store(RtVarStore *store, const IrModule *m)
{
    rt_vars_init(store);
    for (int i = 0; i < m->nvars; i++) {
        const IrVar *v = &m->vars[i];
        RtInit init = v->init == IR_INIT_ZEROS    ? RT_INIT_ZEROS
                      : v->init == IR_INIT_CONST  ? RT_INIT_CONST
                      : v->init == IR_INIT_UNIFORM ? RT_INIT_UNIFORM
                                                   : RT_INIT_TRUNC_NORMAL;
        int index = rt_vars_add(store, v->name, v->dtype, v->shape, init, v->init_value,
                                v->kind == IR_VAR_PARAM);
        BOCB_ASSERT(index == i);
    }
    rt_vars_allocate(store);
}

static bool create_jit(CellRunner *r, Jit *jit, CellStats *stats, char **error)
{
    /* Both graphs' kernels go into one module: one O3 run, one link. */
    double t0 = now_seconds();
    int n = r->sched[0].nkernels + r->sched[1].nkernels;
    Kernel **all = xcalloc((size_t)n + 1, sizeof *all);
    RtKernelFn *fns = xcalloc((size_t)n + 1, sizeof *fns);
    memcpy(all, r->sched[0].kernels, (size_t)r->sched[0].nkernels * sizeof *all);
    memcpy(all + r->sched[0].nkernels, r->sched[1].kernels,
           (size_t)r->sched[1].nkernels * sizeof *all);
    bool ok = n == 0 || jit_compile(jit, all, n, fns, error);
    if (ok) {
        memcpy(r->sched[0].program.kernels, fns, (size_t)r->sched[0].nkernels * sizeof *fns);
        memcpy(r->sched[1].program.kernels, fns + r->sched[0].nkernels,
               (size_t)r->sched[1].nkernels * sizeof *fns);
    }
    free(all);
    free(fns);
    if (!ok)
        return false;

    for (int i = 0; i < 2; i++)
        r->exec[i] = rt_exec_create(&r->sched[i].program, &r->vars);
    r->runner.input = jit_input;
    r->runner.run = jit_run;
    r->runner.output = jit_output;
    if (stats) {
        stats->kernels = n;
        stats->jit_seconds = now_seconds() - t0;
    }
    return true;
}

static void create_interp(CellRunner *r, int64_t batch, int64_t eval_batch)
{
    for (int t = 0; t < 2; t++) {
        const IrGraph *g = graph_of(r, t);
        int64_t max = t ? batch : eval_batch;
        r->interp[t] = interp_create(g, &r->vars);
        r->inputs[t] = xcalloc((size_t)g->ninputs + 1, sizeof(void *));
        for (int i = 0; i < g->ninputs; i++) {
            const IrInput *in = &g->inputs[i];
            size_t bytes = size_mul((size_t)shape_numel(&in->shape, max), dtype_size(in->dtype));
            r->inputs[t][i] = xcalloc(bytes ? bytes : 1, 1);
            interp_bind_input(r->interp[t], i, r->inputs[t][i]);
        }
    }
    r->runner.input = interp_input;
    r->runner.run = interp_run_graph;
    r->runner.output = interp_out;
}

/* Bytes of all variables of a module, or SIZE_MAX when that overflows. */
static size_t module_variable_bytes(const IrModule *m)
{
    size_t total = 0;
    for (int i = 0; i < m->nvars; i++) {
        size_t bytes;
        if (__builtin_mul_overflow((size_t)shape_numel(&m->vars[i].shape, 1),
                                   dtype_size(m->vars[i].dtype), &bytes) ||
            __builtin_add_overflow(total, bytes + 64, &total))
            return SIZE_MAX;
    }
    return total;
}

static size_t add_saturating(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t larger_workspace(const Schedule *eval, const Schedule *train)
{
    return eval->program.workspace_bytes > train->program.workspace_bytes
               ? eval->program.workspace_bytes
               : train->program.workspace_bytes;
}

/* Sums the variables, both arenas and the scratch buffer of a cell. */
static size_t planned_bytes(const CompiledCell *cell, const Schedule *eval,
                            const Schedule *train)
{
    size_t planned = add_saturating(module_variable_bytes(&cell->module),
                                    larger_workspace(eval, train));
    planned = add_saturating(planned, eval->program.arena_bytes);
    return add_saturating(planned, train->program.arena_bytes);
}

size_t cell_planned_bytes(const CompiledCell *cell, int64_t batch, int64_t eval_batch)
{
    Schedule eval, train;
    schedule_graph(cell->eval, eval_batch, &eval);
    schedule_graph(cell->train, batch, &train);
    size_t planned = planned_bytes(cell, &eval, &train);
    schedule_free(&eval);
    schedule_free(&train);
    return planned;
}

bool cell_runner_create(CellRunner *r, const CompiledCell *cell, Backend backend, Jit *jit,
                        int64_t batch, int64_t eval_batch, size_t memory_limit,
                        CellStats *stats, char **error)
{
    memset(r, 0, sizeof *r);
    if (stats)
        memset(stats, 0, sizeof *stats);
    r->cell = cell;
    r->backend = backend;

    /* Plan first, so that a program too large for the machine is an error
     * before anything is allocated. The interpreter allocates per node,
     * and the plan is its estimate too. */
    double t0 = now_seconds();
    schedule_graph(cell->eval, eval_batch, &r->sched[0]);
    schedule_graph(cell->train, batch, &r->sched[1]);
    double t1 = now_seconds();
    size_t planned = planned_bytes(cell, &r->sched[0], &r->sched[1]);
    if (planned > memory_limit) {
        *error = xasprintf("the planned memory, %.2f GiB, is more than the %.2f GiB this "
                           "machine has; reduce batch, eval_batch or the model",
                           (double)planned / 1073741824.0,
                           (double)memory_limit / 1073741824.0);
        cell_runner_destroy(r);
        return false;
    }

    create_var_store(&r->vars, &cell->module);
    r->runner.self = r;
    r->runner.vars = &r->vars;
    r->runner.max_batch = batch;
    r->runner.max_eval_batch = eval_batch;
    r->runner.dtype = ir_node(cell->train, ir_find_output(cell->train, "logits"))->dtype;

    if (stats) {
        stats->schedule_seconds = t1 - t0;
        stats->steps = r->sched[1].program.nsteps + r->sched[0].program.nsteps;
        stats->arena_bytes = r->sched[1].program.arena_bytes;
        stats->eval_arena_bytes = r->sched[0].program.arena_bytes;
        stats->workspace_bytes = larger_workspace(&r->sched[0], &r->sched[1]);
        stats->train_flops = rt_program_flops(&r->sched[1].program, batch);
        stats->variable_bytes = r->vars.bytes;
        stats->parameters = rt_vars_trainable_count(&r->vars);
    }
    if (backend == BACKEND_JIT) {
        if (!create_jit(r, jit, stats, error)) {
            cell_runner_destroy(r);
            return false;
        }
    } else {
        create_interp(r, batch, eval_batch);
    }
    return true;
}

void cell_runner_destroy(CellRunner *r)
{
    for (int t = 0; t < 2; t++) {
        rt_exec_destroy(r->exec[t]);
        if (r->sched[t].program.steps || r->sched[t].kernels)
            schedule_free(&r->sched[t]);
        interp_destroy(r->interp[t]);
        if (r->inputs[t]) {
            int n = graph_of(r, t)->ninputs;
            for (int i = 0; i < n; i++)
                free(r->inputs[t][i]);
            free(r->inputs[t]);
        }
    }
    if (r->vars.memory)
        rt_vars_free(&r->vars);
    memset(r, 0, sizeof *r);
}
