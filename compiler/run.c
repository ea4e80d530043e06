/* run.c - the JIT and interpreter executors behind RtRunner. */
#include "run.h"
#include "qsdp.h"

#include <stdlib.h>
#include <string.h>

static const IrGraph *graph_of(const CellRunner *r, int graph)
{
    switch (graph) {
    case CELL_EVAL: return r->cell->eval;
    case CELL_TRAIN: return r->cell->train;
    case CELL_ZO_PERTURB: return r->cell->zo->perturb;
    case CELL_ZO_UPDATE: return r->cell->zo->update;
    }
    BOCB_UNREACHABLE("cell graph");
}

void *cell_graph_input(CellRunner *r, int graph, const char *name)
{
    if (r->backend == BACKEND_JIT)
        return rt_exec_input(r->exec[graph], name);
    int i = ir_find_input(graph_of(r, graph), name);
    return i < 0 ? NULL : r->inputs[graph][i];
}

void cell_graph_run(CellRunner *r, int graph, int64_t batch)
{
    if (r->backend == BACKEND_JIT)
        rt_exec_run(r->exec[graph], batch);
    else
        interp_run(r->interp[graph], batch);
}

void cell_runner_set_shard_hooks(CellRunner *r, const RtShardHooks *hooks)
{
    for (int i = 0; i < r->ngraphs; i++) {
        if (r->backend == BACKEND_JIT)
            rt_exec_set_shard_hooks(r->exec[i], hooks);
        else
            interp_set_shard_hooks(r->interp[i], hooks);
    }
}

const void *cell_graph_output(CellRunner *r, int graph, const char *name)
{
    if (r->backend == BACKEND_JIT)
        return rt_exec_output(r->exec[graph], name);
    return interp_output(r->interp[graph], name);
}

static void *runner_input(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    /* The zeroth-order step reads lr and step in its update graph. */
    if (train && r->cell->zo && (strcmp(name, "lr") == 0 || strcmp(name, "step") == 0))
        return cell_graph_input(r, CELL_ZO_UPDATE, name);
    return cell_graph_input(r, train ? CELL_TRAIN : CELL_EVAL, name);
}

static void runner_run(void *self, bool train, int64_t batch)
{
    CellRunner *r = self;
    if (train && r->cell->zo)
        zo_run_step(r, batch);
    else
        cell_graph_run(r, train ? CELL_TRAIN : CELL_EVAL, batch);
}

/* Runs a graph like runner_run, then reports the first op of the
 * training or evaluation graph that made a NaN or an infinity, once per
 * runner. */
static void interp_run_checked(void *self, bool train, int64_t batch)
{
    CellRunner *r = self;
    runner_run(self, train, batch);
    int graph = train ? CELL_TRAIN : CELL_EVAL;
    bool is_nan = false;
    int id = interp_numeric_fault(r->interp[graph], &is_nan);
    if (id < 0 || r->fault[0])
        return;
    const IrNode *n = &graph_of(r, graph)->nodes[id];
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
    int graph = train ? CELL_TRAIN : CELL_EVAL;
    return interp_numeric_fault(r->interp[graph], &is_nan) >= 0 ? r->fault : NULL;
}

void cell_runner_check_numerics(CellRunner *r)
{
    BOCB_ASSERT(r->backend == BACKEND_INTERP);
    for (int t = 0; t < r->ngraphs; t++)
        interp_check_numerics(r->interp[t], true);
    r->runner.run = interp_run_checked;
    r->runner.fault = interp_fault;
}

static const void *runner_output(void *self, bool train, const char *name)
{
    CellRunner *r = self;
    if (train && r->cell->zo && strcmp(name, "loss") == 0)
        return &r->zo_loss;
    if (train && r->cell->zo && strcmp(name, "logits") == 0)
        return r->zo_logits;
    return cell_graph_output(r, train ? CELL_TRAIN : CELL_EVAL, name);
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
                                ir_var_trainable(v));
        BOCB_ASSERT(index == i);
    }
    rt_vars_allocate(store);
}

static bool create_jit(CellRunner *r, Jit *jit, CellStats *stats, char **error)
{
    /* Every graph's kernels go into one module: one O3 run, one link. */
    double t0 = now_seconds();
    KCacheStats cache_before = jit_stats(jit)->cache;
    int n = 0;
    for (int i = 0; i < r->ngraphs; i++)
        n += r->sched[i].nkernels;
    Kernel **all = xcalloc((size_t)n + 1, sizeof *all);
    RtKernelFn *fns = xcalloc((size_t)n + 1, sizeof *fns);
    for (int i = 0, at = 0; i < r->ngraphs; at += r->sched[i++].nkernels)
        if (r->sched[i].nkernels > 0)
            memcpy(all + at, r->sched[i].kernels, (size_t)r->sched[i].nkernels * sizeof *all);
    bool ok = n == 0 || jit_compile(jit, all, n, fns, error);
    double compile_seconds = now_seconds() - t0;
    for (int i = 0, at = 0; ok && i < r->ngraphs; at += r->sched[i++].nkernels)
        if (r->sched[i].nkernels > 0)
            memcpy(r->sched[i].program.kernels, fns + at,
                   (size_t)r->sched[i].nkernels * sizeof *fns);
    free(all);
    free(fns);
    if (!ok)
        return false;

    for (int i = 0; i < r->ngraphs; i++)
        r->exec[i] = rt_exec_create(&r->sched[i].program, &r->vars);
    if (stats) {
        stats->kernels = n;
        stats->jit_seconds = compile_seconds;
        stats->cache_hits = jit_stats(jit)->cache.hits - cache_before.hits;
        stats->cache_misses = jit_stats(jit)->cache.misses - cache_before.misses;
    }
    return true;
}

static void create_interp(CellRunner *r, int64_t batch, int64_t eval_batch)
{
    for (int t = 0; t < r->ngraphs; t++) {
        const IrGraph *g = graph_of(r, t);
        int64_t max = t == CELL_EVAL ? eval_batch : batch;
        r->interp[t] = interp_create(g, &r->vars);
        r->inputs[t] = xcalloc((size_t)g->ninputs + 1, sizeof(void *));
        for (int i = 0; i < g->ninputs; i++) {
            const IrInput *in = &g->inputs[i];
            size_t bytes = size_mul((size_t)shape_numel(&in->shape, max), dtype_size(in->dtype));
            r->inputs[t][i] = xcalloc(bytes ? bytes : 1, 1);
            interp_bind_input(r->interp[t], i, r->inputs[t][i]);
        }
    }
}

/* Bytes of the variables of a module, all of them or only parameters and
 * buffers (what inference needs), or SIZE_MAX when that overflows. */
static size_t variable_bytes_of(const IrModule *m, bool inference)
{
    size_t total = 0;
    for (int i = 0; i < m->nvars; i++) {
        if (inference && m->vars[i].kind == IR_VAR_STATE)
            continue;
        size_t bytes;
        if (__builtin_mul_overflow((size_t)shape_numel(&m->vars[i].shape, 1),
                                   dtype_size(m->vars[i].dtype), &bytes) ||
            __builtin_add_overflow(total, bytes + 64, &total))
            return SIZE_MAX;
    }
    return total;
}

static size_t module_variable_bytes(const IrModule *m)
{
    return variable_bytes_of(m, false);
}

static size_t add_saturating(size_t a, size_t b)
{
    size_t r;
    return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t larger_workspace(const Schedule *sched, int n)
{
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if (sched[i].program.workspace_bytes > most)
            most = sched[i].program.workspace_bytes;
    return most;
}

/* The arenas of every graph but the evaluation graph. */
static size_t training_arenas(const Schedule *sched, int n)
{
    size_t total = 0;
    for (int i = CELL_TRAIN; i < n; i++)
        total = add_saturating(total, sched[i].program.arena_bytes);
    return total;
}

/* Sums the variables, every arena and the scratch buffer of a cell. */
static size_t planned_bytes(const CompiledCell *cell, const Schedule *sched, int n)
{
    size_t planned = add_saturating(module_variable_bytes(&cell->module),
                                    larger_workspace(sched, n));
    planned = add_saturating(planned, sched[CELL_EVAL].program.arena_bytes);
    return add_saturating(planned, training_arenas(sched, n));
}

/* Schedules the n graphs of a cell for the given batch sizes. */
static void schedule_cell(const CellRunner *r, int64_t batch, int64_t eval_batch,
                          Schedule *sched)
{
    for (int i = 0; i < r->ngraphs; i++)
        schedule_graph(graph_of(r, i), i == CELL_EVAL ? eval_batch : batch, &sched[i]);
}

size_t cell_planned_bytes(const CompiledCell *cell, int64_t batch, int64_t eval_batch)
{
    CellRunner r = {.cell = cell, .ngraphs = cell->zo ? CELL_GRAPHS : 2};
    Schedule sched[CELL_GRAPHS];
    schedule_cell(&r, batch, eval_batch, sched);
    size_t planned = planned_bytes(cell, sched, r.ngraphs);
    for (int i = 0; i < r.ngraphs; i++)
        schedule_free(&sched[i]);
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
    r->ngraphs = cell->zo ? CELL_GRAPHS : 2;

    /* Plan first, so that a program too large for the machine is an error
     * before anything is allocated. The interpreter allocates per node,
     * and the plan is its estimate too. */
    double t0 = now_seconds();
    schedule_cell(r, batch, eval_batch, r->sched);
    double t1 = now_seconds();
    size_t planned = planned_bytes(cell, r->sched, r->ngraphs);
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
    r->runner.input = runner_input;
    r->runner.run = runner_run;
    r->runner.output = runner_output;

    if (stats) {
        stats->schedule_seconds = t1 - t0;
        stats->planned_bytes = planned;
        for (int i = 0; i < r->ngraphs; i++)
            stats->steps += r->sched[i].program.nsteps;
        stats->arena_bytes = training_arenas(r->sched, r->ngraphs);
        stats->eval_arena_bytes = r->sched[CELL_EVAL].program.arena_bytes;
        stats->workspace_bytes = larger_workspace(r->sched, r->ngraphs);
        stats->train_flops = rt_program_flops(&r->sched[CELL_TRAIN].program, batch);
        stats->gathered_bytes = r->sched[CELL_TRAIN].program.gathered_bytes;
        stats->gathered_total = r->sched[CELL_TRAIN].program.gathered_total;
        stats->train_peak_bytes = add_saturating(
            add_saturating(module_variable_bytes(&cell->module),
                           larger_workspace(r->sched + CELL_TRAIN, r->ngraphs - CELL_TRAIN)),
            stats->arena_bytes);
        stats->inference_peak_bytes = add_saturating(
            add_saturating(variable_bytes_of(&cell->module, true),
                           larger_workspace(r->sched, 1)),
            stats->eval_arena_bytes);
        stats->variable_bytes = r->vars.bytes;
        stats->parameters = rt_vars_trainable_count(&r->vars);
        if (cell->shards) {
            /* The shard variables train too, but the model's parameters
             * are the full ones. */
            stats->parameters = 0;
            for (int k = 0; k < cell->shards->nparams; k++)
                stats->parameters += cell->shards->numel[k];
        }
    }
    if (backend == BACKEND_JIT) {
        if (!create_jit(r, jit, stats, error)) {
            cell_runner_destroy(r);
            return false;
        }
    } else {
        create_interp(r, batch, eval_batch);
    }
    if (cell->zo) {
        int logits = ir_find_output(cell->train, "logits");
        const IrNode *n = ir_node(cell->train, logits);
        r->zo_logits = xcalloc(size_mul((size_t)shape_numel(&n->shape, batch),
                                        dtype_size(n->dtype)) + 1, 1);
    }
    return true;
}

void cell_runner_destroy(CellRunner *r)
{
    free(r->zo_logits);
    for (int t = 0; t < r->ngraphs; t++) {
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
