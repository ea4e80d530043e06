/* repl_train.c - the training state of a REPL session, and values.
 *
 * The trainer runs the first cell of the current experiment: its first
 * model, first optimizer and first seed. Its variables live as long as
 * the program does not change, so :step continues where the last one
 * stopped, through the same shuffled batches, learning-rate schedule and
 * step counter that `bocbc` would use for that cell.
 *
 * An expression typed at the prompt is lowered into a graph of its own,
 * with `x` and `labels` bound to the first REPL_SAMPLES training samples,
 * and run by the reference interpreter. A model called in it is named
 * like the experiment's instance of that model, so it reads the trained
 * parameters when the trainer has them.
 */
#include "repl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/data.h"
#include "../runtime/philox.h"
#include "analyze.h"
#include "autodiff.h"

/* The Philox stream of the shuffle of each epoch, as runtime/train.c
 * draws it, so that the REPL trains on the same batches as bocbc. */
enum { SHUFFLE_STREAM = 0x40000000 };

/* Samples bound to `x` and `labels` in expressions. */
enum { REPL_SAMPLES = 8 };

/* Elements that a tensor summary lists. */
enum { SUMMARY_ELEMENTS = 6 };

struct ReplTrainer {
    ExperimentSpec spec;
    DataSplits splits;
    DataShape shape;
    /* Set once the cell is compiled and its runner created. */
    bool compiled;
    CompiledCell cell;
    IrGraph *forward; /* the training step after the forward pass, for :grad */
    CellRunner runner;
    const char **var_names;
    int64_t batch, eval_batch;
    int64_t steps_per_epoch;
    int64_t steps;    /* steps run */
    int64_t applied;  /* steps whose update was applied (see clip) */
    int64_t epoch;    /* of the next step, from 1 */
    int64_t position; /* of the next batch in the epoch */
    int64_t *perm;
    double lr;
};

/* ---- the trainer ---------------------------------------------------------- */

void repl_trainer_discard(ReplSession *s)
{
    ReplTrainer *t = s->trainer;
    if (t && t->steps > 0)
        printf("discarded %lld training step%s of experiment %s\n",
               (long long)t->steps, t->steps == 1 ? "" : "s", t->spec.name);
    repl_trainer_free(s);
}

void repl_trainer_free(ReplSession *s)
{
    ReplTrainer *t = s->trainer;
    if (!t)
        return;
    if (t->compiled) {
        cell_runner_destroy(&t->runner);
        ir_graph_free(t->forward);
        compiled_cell_free(&t->cell);
    }
    data_splits_free(&t->splits);
    free(t->var_names);
    free(t->perm);
    free(t);
    s->trainer = NULL;
}

const char *const *repl_trainer_var_names(const ReplSession *s)
{
    return s->trainer ? s->trainer->var_names : NULL;
}

/* Resolves the current experiment and loads its data. */
static ReplTrainer *trainer_prepare(ReplSession *s, SrcLoc loc)
{
    if (s->trainer)
        return s->trainer;
    if (!s->experiment) {
        diag_error(loc, "no experiment is declared yet; declare one, or load a file that "
                   "has one with ':load FILE'");
        return NULL;
    }
    ReplTrainer *t = xcalloc(1, sizeof *t);
    int errors = diag_error_count();
    bool ok = experiment_resolve(s->lower, s->experiment, s->overrides.data, s->overrides.len,
                                 &t->spec);
    if (!ok || !t->spec.data || diag_error_count() > errors) {
        free(t);
        return NULL;
    }
    const DataSpec *data = t->spec.data;
    char *error = NULL;
    if (!data_load_idx_dir(&t->splits, data->path, (Normalize)data->normalize, &error)) {
        diag_error(data->loc, "cannot load the data of experiment '%s': %s", t->spec.name,
                   error);
        free(error);
        free(t);
        return NULL;
    }
    if (t->spec.train_size)
        dataset_truncate(&t->splits.train, t->spec.train_size);
    if (t->spec.test_size)
        dataset_truncate(&t->splits.test, t->spec.test_size);
    const Dataset *train = &t->splits.train;
    t->shape = (DataShape){.rank = train->rank, .classes = train->num_classes};
    for (int i = 0; i < train->rank; i++)
        t->shape.dims[i] = train->sample_dims[i];
    if (t->splits.test.num_classes > t->shape.classes)
        t->shape.classes = t->splits.test.num_classes;
    s->trainer = t;
    return t;
}

static void keep_forward(void *context, CellStage stage, const IrGraph *graph)
{
    ReplTrainer *t = context;
    if (stage == CELL_STAGE_FORWARD && !t->forward)
        t->forward = ir_graph_clone(graph, "forward");
}

/* Compiles the first cell and creates its runner, with fresh variables. */
static bool trainer_compile(ReplSession *s, ReplTrainer *t)
{
    const ExperimentSpec *spec = &t->spec;
    Lower *l = s->lower;
    CellOptions options = {.clip = spec->clip, .groups = spec->groups,
                           .ngroups = spec->ngroups, .recompute = spec->recompute};
    l->loss = spec->loss;
    l->stage_hook = keep_forward;
    l->stage_hook_context = t;
    bool ok = compile_cell_with(l, spec->models[0], spec->optimizers[0], &t->shape, DT_F32,
                                &options, &t->cell);
    l->stage_hook = NULL;
    l->stage_hook_context = NULL;
    if (!ok) {
        ir_graph_free(t->forward);
        t->forward = NULL;
        return false;
    }

    int64_t train = t->splits.train.count, test = t->splits.test.count;
    t->batch = spec->batch < train ? spec->batch : train;
    t->eval_batch = spec->eval_batch < test ? spec->eval_batch : test;
    char *error = NULL;
    if (s->opts->backend == BACKEND_JIT && !s->jit && !(s->jit = jit_create(&error))) {
        /* messages.py: not reached: needs a host LLVM cannot target. */
        diag_error(s->experiment->name_loc, "cannot initialise LLVM: %s", error);
        free(error);
        compiled_cell_free(&t->cell);
        ir_graph_free(t->forward);
        t->forward = NULL;
        return false;
    }
    CellStats stats;
    /* NOTE: the planned memory is not checked against what the process
     * may allocate, as bocbc does before it trains. */
    if (!cell_runner_create(&t->runner, &t->cell, s->opts->backend, s->jit, t->batch,
                            t->eval_batch, SIZE_MAX, &stats, &error)) {
        /* messages.py: not reached: LLVM rejects no kernel we build. */
        diag_error(s->experiment->name_loc, "cannot compile experiment '%s': %s", spec->name,
                   error);
        free(error);
        compiled_cell_free(&t->cell);
        ir_graph_free(t->forward);
        t->forward = NULL;
        return false;
    }
    rt_vars_reset(&t->runner.vars, spec->seeds[0]);

    const IrModule *m = &t->cell.module;
    t->var_names = xcalloc((size_t)m->nvars + 1, sizeof(char *));
    for (int v = 0; v < m->nvars; v++)
        t->var_names[v] = m->vars[v].name;
    t->steps_per_epoch = (train + t->batch - 1) / t->batch;
    t->position = t->steps_per_epoch;
    t->perm = xmalloc(size_mul((size_t)train, sizeof(int64_t)));
    t->lr = t->cell.base_lr;
    t->spec.schedule.base_lr = t->cell.base_lr;
    t->compiled = true;
    printf("experiment %s: %s / %s, seed %llu, %lld training / %lld test samples, %s\n",
           spec->name, spec->models[0]->label, spec->optimizers[0]->label,
           (unsigned long long)spec->seeds[0], (long long)train, (long long)test,
           s->opts->backend == BACKEND_JIT ? "JIT" : "interpreter");
    return true;
}

ReplTrainer *repl_trainer(ReplSession *s, SrcLoc loc)
{
    ReplTrainer *t = trainer_prepare(s, loc);
    if (!t || t->compiled)
        return t;
    if (!trainer_compile(s, t)) {
        repl_trainer_free(s);
        return NULL;
    }
    return t;
}

/* Starts the next epoch's permutation when the current one is used up. */
static void trainer_next_epoch(ReplTrainer *t)
{
    if (t->position < t->steps_per_epoch)
        return;
    t->epoch++;
    philox_permutation(philox_key(t->spec.seeds[0], SHUFFLE_STREAM + (uint32_t)t->epoch),
                       t->perm, t->splits.train.count);
    t->position = 0;
}

/* Returns the indices of the next batch and their count in *n. */
static const int64_t *trainer_next_batch(ReplTrainer *t, int64_t *n)
{
    trainer_next_epoch(t);
    int64_t first = t->position * t->batch;
    int64_t left = t->splits.train.count - first;
    *n = left < t->batch ? left : t->batch;
    return t->perm + first;
}

static double read_number(DType dt, const void *p, int64_t i)
{
    switch (dt) {
    case DT_F32: return ((const float *)p)[i];
    case DT_F64: return ((const double *)p)[i];
    case DT_I32: return ((const int32_t *)p)[i];
    case DT_BOOL: return ((const unsigned char *)p)[i];
    }
    return NAN;
}

void repl_step(ReplSession *s, ReplTrainer *t, int64_t steps)
{
    RtRunner *r = &t->runner.runner;
    const ExperimentSpec *spec = &t->spec;
    int64_t total = t->steps_per_epoch * spec->epochs;
    if (spec->max_steps && spec->max_steps < total)
        total = spec->max_steps;
    double group_loss = 0;
    int64_t group_steps = 0, skipped = 0;
    for (int64_t i = 0; i < steps; i++) {
        if (repl_interrupted) {
            printf("interrupted after %lld of %lld steps\n", (long long)i, (long long)steps);
            break;
        }
        int64_t n;
        const int64_t *indices = trainer_next_batch(t, &n);
        data_gather(&t->splits, &t->splits.train, indices, n, r->input(r->self, true, "x"),
                    r->input(r->self, true, "labels"));
        /* Past the experiment's planned steps, a cosine stays at min_lr
         * and the per-epoch schedules go on decaying. */
        t->lr = rt_schedule_lr(&spec->schedule, t->steps + 1, t->steps_per_epoch, total);
        *(float *)r->input(r->self, true, "lr") = (float)t->lr;
        *(float *)r->input(r->self, true, "step") = (float)(t->applied + 1);
        r->run(r->self, true, n);
        t->position++;
        t->steps++;
        if (spec->clip > 0 && !isfinite(*(const float *)r->output(r->self, true, "grad_norm")))
            skipped++;
        else
            t->applied++;
        double loss = *(const float *)r->output(r->self, true, "loss");
        if (!isfinite(loss)) {
            printf("step %lld: the training loss is %g; the variables are those after "
                   "this step\n", (long long)t->steps, loss);
            return;
        }
        group_loss += loss;
        group_steps++;
        if (group_steps == spec->log_every || i + 1 == steps) {
            char lr[32];
            format_double(lr, sizeof lr, t->lr);
            printf("step %lld  epoch %lld  loss %.4f  lr %s\n", (long long)t->steps,
                   (long long)t->epoch, group_loss / (double)group_steps, lr);
            group_loss = 0;
            group_steps = 0;
        }
    }
    if (skipped)
        printf("%lld step%s skipped (gradient norm not finite)\n", (long long)skipped,
               skipped == 1 ? "" : "s");
}

void repl_eval(ReplSession *s, ReplTrainer *t)
{
    double loss, accuracy;
    rt_evaluate(&t->runner.runner, &t->splits, &t->splits.test, t->eval_batch, &loss,
                &accuracy);
    printf("after %lld step%s: test loss %.4f, test accuracy %.2f%%\n", (long long)t->steps,
           t->steps == 1 ? "" : "s", loss, 100 * accuracy);
}

/* The samples and power iterations of :sharpness, as the defaults of
 * `analyze sharpness` in an experiment. */
enum { SHARPNESS_SAMPLES = 512, SHARPNESS_ITERS = 100 };

void repl_sharpness(ReplSession *s, ReplTrainer *t, SrcLoc loc)
{
    const Dataset *train = &t->splits.train;
    int64_t n = train->count < SHARPNESS_SAMPLES ? train->count : SHARPNESS_SAMPLES;
    int64_t *indices = xmalloc(size_mul((size_t)n, sizeof(int64_t)));
    for (int64_t i = 0; i < n; i++)
        indices[i] = i;
    float *x = xmalloc(size_mul((size_t)n, size_mul((size_t)train->sample_size, sizeof(float))));
    int32_t *labels = xmalloc(size_mul((size_t)n, sizeof(int32_t)));
    data_gather(&t->splits, train, indices, n, x, labels);

    double sharpness = 0;
    char *error = NULL;
    Jit *jit = s->opts->backend == BACKEND_JIT ? s->jit : NULL;
    if (analyze_sharpness(&t->cell, &t->runner.vars, jit, x, labels, n, SHARPNESS_ITERS,
                          &sharpness, &error)) {
        printf("after %lld step%s: sharpness %.6g (top Hessian eigenvalue of the loss on "
               "%lld training samples)\n", (long long)t->steps, t->steps == 1 ? "" : "s",
               sharpness, (long long)n);
    } else {
        diag_error(loc, "%s", error);
        free(error);
    }
    free(indices);
    free(x);
    free(labels);
}

/* ---- printing values ------------------------------------------------------ */

/* Prints a tensor of `shape` (for batch size `batch`) held at `data`: its
 * type, minimum, maximum, mean and first elements. */
static void print_tensor(const char *label, DType dt, const Shape *shape, int64_t batch,
                         const void *data)
{
    Shape concrete = *shape;
    if (concrete.batch_axis >= 0)
        concrete.dims[concrete.batch_axis] *= batch;
    concrete.batch_axis = -1;
    char text[128];
    shape_format(&concrete, text, sizeof text);
    int64_t n = shape_numel(&concrete, 1);
    if (label)
        printf("%s: ", label);
    if (concrete.rank == 0) {
        printf("%s %.9g\n", dtype_name(dt), read_number(dt, data, 0));
        return;
    }
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = read_number(dt, data, i);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        sum += v;
    }
    printf("%s%s  min %.6g  max %.6g  mean %.6g\n  [", dtype_name(dt), text, lo, hi,
           n ? sum / (double)n : NAN);
    for (int64_t i = 0; i < n && i < SUMMARY_ELEMENTS; i++)
        printf("%s%.6g", i ? ", " : "", read_number(dt, data, i));
    printf("%s]\n", n > SUMMARY_ELEMENTS ? ", ..." : "");
}

/* Finds variable `name` of the trainer, reporting a missing one. */
static int find_var(ReplSession *s, ReplTrainer *t, const char *name, SrcLoc loc)
{
    const IrModule *m = &t->cell.module;
    int v = ir_module_find_var(m, name);
    if (v >= 0)
        return v;
    const char *near = closest_name(name, t->var_names, m->nvars);
    if (near)
        diag_error(loc, "experiment '%s' has no variable '%s'; did you mean '%s'?",
                   t->spec.name, name, near);
    else
        diag_error(loc, "experiment '%s' has no variable '%s'; ':params %s' lists its "
                   "parameters", t->spec.name, name, t->spec.name);
    return -1;
}

/* Computes the gradient of the training loss with respect to variable v
 * on the next batch, with the interpreter on a copy of the variables, so
 * that neither the variables nor the batch order change. */
static void print_gradient(ReplTrainer *t, int v, const char *name)
{
    IrGraph *g = ir_graph_clone(t->forward, "gradient");
    int loss = ir_find_output(g, "loss");
    int grad = -1;
    BOCB_ASSERT(loss >= 0 && ad_backward(g, loss, &v, 1, &grad));
    const IrVar *var = &t->cell.module.vars[v];
    if (grad < 0) {
        printf("%s: the loss does not depend on it\n", name);
        ir_graph_free(g);
        return;
    }
    ir_add_output(g, "gradient", grad);

    RtVarStore copy;
    create_var_store(&copy, &t->cell.module);
    memcpy(copy.memory, t->runner.vars.memory, copy.bytes);
    Interp *it = interp_create(g, &copy);
    int64_t n;
    const int64_t *indices = trainer_next_batch(t, &n);
    void **buffers = xcalloc((size_t)g->ninputs + 1, sizeof(void *));
    for (int i = 0; i < g->ninputs; i++) {
        const IrInput *in = &g->inputs[i];
        size_t bytes = size_mul((size_t)shape_numel(&in->shape, n), dtype_size(in->dtype));
        buffers[i] = xcalloc(bytes + 1, 1);
        interp_bind_input(it, i, buffers[i]);
    }
    int x = ir_find_input(g, "x"), labels = ir_find_input(g, "labels");
    int step = ir_find_input(g, "step");
    data_gather(&t->splits, &t->splits.train, indices, n, buffers[x], buffers[labels]);
    if (step >= 0)
        *(float *)buffers[step] = (float)(t->applied + 1);
    interp_run(it, n);
    print_tensor(name, var->dtype, &var->shape, 1, interp_output(it, "gradient"));
    interp_destroy(it);
    for (int i = 0; i < g->ninputs; i++)
        free(buffers[i]);
    free(buffers);
    rt_vars_free(&copy);
    ir_graph_free(g);
}

bool repl_show_var(ReplSession *s, ReplTrainer *t, const char *name, SrcLoc loc,
                   bool gradient)
{
    int v = find_var(s, t, name, loc);
    if (v < 0)
        return false;
    const IrVar *var = &t->cell.module.vars[v];
    if (!gradient) {
        print_tensor(name, var->dtype, &var->shape, 1, rt_var_data(&t->runner.vars, v));
        return true;
    }
    if (var->kind != IR_VAR_PARAM) {
        diag_error(loc, "'%s' is not a trained parameter, so it has no gradient", name);
        return false;
    }
    print_gradient(t, v, name);
    return true;
}

/* ---- compiling named cells ------------------------------------------------ */

bool repl_compile_named(ReplSession *s, const char *name, SrcLoc loc,
                        void (*stage_hook)(void *, CellStage, const IrGraph *),
                        void *context, CompiledCell *out)
{
    Lower *l = s->lower;
    Value *v = scope_find(&l->globals, name);
    const Decl *d = v && v->kind == VAL_DECL ? v->decl : NULL;
    if (!d || (d->kind != DECL_MODEL && d->kind != DECL_EXPERIMENT)) {
        diag_error(loc, "'%s' is not a model or an experiment", name);
        return false;
    }
    ReplTrainer *t = trainer_prepare(s, loc);
    if (!t)
        return false;
    Configured bare = {.decl = d, .loc = loc, .label = d->name};
    const Configured *model = &bare;
    ExperimentSpec other;
    const ExperimentSpec *spec = &t->spec;
    if (d->kind == DECL_EXPERIMENT && d != s->experiment) {
        int errors = diag_error_count();
        if (!experiment_resolve(l, d, s->overrides.data, s->overrides.len, &other) ||
            diag_error_count() > errors)
            return false;
        spec = &other;
    }
    if (d->kind == DECL_EXPERIMENT)
        model = spec->models[0];
    CellOptions options = {.clip = spec->clip, .groups = spec->groups,
                           .ngroups = spec->ngroups, .recompute = spec->recompute};
    /* NOTE: another experiment's model is compiled for the current
     * experiment's data shape. */
    l->loss = spec->loss;
    l->stage_hook = stage_hook;
    l->stage_hook_context = context;
    bool ok = compile_cell_with(l, model, spec->optimizers[0], &t->shape, DT_F32, &options,
                                out);
    l->stage_hook = NULL;
    l->stage_hook_context = NULL;
    return ok;
}

/* ---- expressions ---------------------------------------------------------- */

/* Returns `e` with `name = "M"` added to each call of a model M, so that
 * a call at the prompt names its parameters "M.linear1.weight", as the
 * experiment's instance does, instead of the block name "M1". */
static Expr *name_model_calls(ReplSession *s, Expr *e)
{
    Arena *arena = &s->arena;
    switch (e->kind) {
    case EX_UNARY:
        return expr_unary(arena, e->loc, e->unary.op, name_model_calls(s, e->unary.operand));
    case EX_BINARY:
        return expr_binary(arena, e->loc, e->binary.op, name_model_calls(s, e->binary.lhs),
                           name_model_calls(s, e->binary.rhs));
    case EX_LIST:
    case EX_TUPLE: {
        Expr **items = arena_calloc(arena, (size_t)e->list.nitems + 1, sizeof(Expr *));
        for (int i = 0; i < e->list.nitems; i++)
            items[i] = name_model_calls(s, e->list.items[i]);
        return expr_list(arena, e->loc, e->kind, items, e->list.nitems);
    }
    case EX_INDEX:
        return expr_index(arena, e->loc, name_model_calls(s, e->index.base),
                          name_model_calls(s, e->index.index));
    case EX_CALL: {
        Arg *args = arena_calloc(arena, (size_t)e->call.nargs + 2, sizeof(Arg));
        int nargs = e->call.nargs;
        bool named = false;
        for (int i = 0; i < nargs; i++) {
            args[i] = e->call.args[i];
            args[i].value = name_model_calls(s, e->call.args[i].value);
            named |= args[i].name && strcmp(args[i].name, "name") == 0;
        }
        const Decl *model = NULL;
        if (e->call.callee->kind == EX_NAME) {
            Value *v = scope_find(&s->lower->globals, e->call.callee->name);
            if (v && v->kind == VAL_DECL && v->decl->kind == DECL_MODEL)
                model = v->decl;
        }
        for (int i = 0; model && i < model->nparams; i++)
            if (strcmp(model->params[i].name, "name") == 0)
                model = NULL;
        if (model && !named) {
            SrcLoc loc = e->call.callee->loc;
            args[nargs++] = (Arg){.name = "name", .name_loc = loc,
                                  .value = expr_string(arena, loc, model->name)};
        }
        return expr_call(arena, e->loc, e->call.callee, args, nargs);
    }
    default:
        return e;
    }
}

static bool mentions_name(const Expr *e, const char *name)
{
    switch (e->kind) {
    case EX_NAME:
        return strcmp(e->name, name) == 0;
    case EX_UNARY:
        return mentions_name(e->unary.operand, name);
    case EX_BINARY:
        return mentions_name(e->binary.lhs, name) || mentions_name(e->binary.rhs, name);
    case EX_LIST:
    case EX_TUPLE:
        for (int i = 0; i < e->list.nitems; i++)
            if (mentions_name(e->list.items[i], name))
                return true;
        return false;
    case EX_INDEX:
        return mentions_name(e->index.base, name) || mentions_name(e->index.index, name);
    case EX_MEMBER:
        return mentions_name(e->member.base, name);
    case EX_CALL:
        for (int i = 0; i < e->call.nargs; i++)
            if (mentions_name(e->call.args[i].value, name))
                return true;
        return mentions_name(e->call.callee, name);
    default:
        return false;
    }
}

/* A graph built for one expression at the prompt. */
typedef struct PromptGraph {
    IrModule module;
    IrGraph *graph;
    Scope scope;     /* x, labels and the tensors kept at the prompt */
    ReplTrainer *data; /* the trainer whose samples x and labels are, or NULL */
    Value value;
} PromptGraph;

/* Lowers `e` into pg->graph, after the tensors kept at the prompt. The
 * Lower is put back as it was. */
static bool lower_at_prompt(ReplSession *s, const Expr *e, PromptGraph *pg)
{
    Lower *l = s->lower;
    memset(pg, 0, sizeof *pg);
    ir_module_init(&pg->module, &s->arena);
    pg->graph = ir_graph_new(&pg->module, "prompt");
    pg->scope.parent = &l->globals;

    bool wants_data = mentions_name(e, "x") || mentions_name(e, "labels") || s->lets.len > 0;
    if (wants_data && s->experiment) {
        int errors = diag_error_count();
        pg->data = trainer_prepare(s, e->loc);
        if (diag_error_count() > errors)
            return false;
    }

    IrGraph *saved_graph = l->graph;
    IrModule *saved_module = l->module;
    EvalMode saved_mode = l->mode;
    Scope *saved_scope = l->scope;
    bool saved_training = l->training;
    const Decl *saved_decl = l->current_decl;
    l->graph = pg->graph;
    l->module = &pg->module;
    l->mode = MODE_MODEL;
    l->scope = &pg->scope;
    l->training = false;
    l->dtype = DT_F32;
    l->current_decl = NULL;
    l->counters.len = 0;
    l->vars_seen.len = 0;

    if (pg->data) {
        const DataShape *shape = &pg->data->shape;
        Shape xs = shape_scalar();
        xs.rank = shape->rank + 1;
        xs.batch_axis = 0;
        xs.dims[0] = 1;
        for (int i = 0; i < shape->rank; i++)
            xs.dims[i + 1] = shape->dims[i];
        Shape ys = shape_scalar();
        ys.rank = 1;
        ys.batch_axis = 0;
        ys.dims[0] = 1;
        SrcLoc where = pg->data->spec.data->loc;
        int x = ir_input(pg->graph, "x", DT_F32, xs, where);
        int labels = ir_input(pg->graph, "labels", DT_I32, ys, where);
        /* A declaration called x or labels hides the samples. */
        if (!scope_find(&l->globals, "x"))
            scope_set(l, &pg->scope, "x", val_tensor(x, where));
        if (!scope_find(&l->globals, "labels"))
            scope_set(l, &pg->scope, "labels", val_tensor(labels, where));
    }
    int errors = diag_error_count();
    /* Each instantiation of a model reads the parameters that an earlier
     * one in this graph created. */
    for (int i = 0; i < s->lets.len && diag_error_count() == errors; i++) {
        l->vars_seen.len = 0;
        Value v = eval_expr(l, name_model_calls(s, (Expr *)s->lets.data[i].value));
        scope_set(l, &pg->scope, s->lets.data[i].name, v);
    }
    l->vars_seen.len = 0;
    if (diag_error_count() == errors)
        pg->value = eval_expr(l, name_model_calls(s, (Expr *)e));

    l->graph = saved_graph;
    l->module = saved_module;
    l->mode = saved_mode;
    l->scope = saved_scope;
    l->training = saved_training;
    l->current_decl = saved_decl;
    return diag_error_count() == errors && pg->value.kind != VAL_ERROR;
}

static void prompt_graph_free(PromptGraph *pg)
{
    scope_free(&pg->scope);
    ir_graph_free(pg->graph);
    ir_module_free(&pg->module);
}

/* Runs the graph with the interpreter and prints the tensor `node`.
 * Variables come from the trainer when it has one of the same name and
 * shape, and are otherwise initialised with the experiment's seed. */
static void run_and_print(ReplSession *s, PromptGraph *pg, int node)
{
    ir_add_output(pg->graph, "value", node);
    RtVarStore store;
    create_var_store(&store, &pg->module);
    ReplTrainer *t = pg->data;
    rt_vars_reset(&store, t ? t->spec.seeds[0] : 0);
    for (int v = 0; t && t->compiled && v < pg->module.nvars; v++) {
        const IrVar *var = &pg->module.vars[v];
        int w = ir_module_find_var(&t->cell.module, var->name);
        if (w >= 0 && shape_equal(&t->cell.module.vars[w].shape, &var->shape) &&
            t->cell.module.vars[w].dtype == var->dtype)
            memcpy(rt_var_data(&store, v), rt_var_data(&t->runner.vars, w),
                   size_mul((size_t)shape_numel(&var->shape, 1), dtype_size(var->dtype)));
    }

    int64_t n = 1;
    float *x = NULL;
    int32_t *labels = NULL;
    Interp *it = interp_create(pg->graph, &store);
    if (t) {
        n = t->splits.train.count < REPL_SAMPLES ? t->splits.train.count : REPL_SAMPLES;
        int64_t indices[REPL_SAMPLES];
        for (int64_t i = 0; i < n; i++)
            indices[i] = i;
        x = xmalloc(size_mul((size_t)n, size_mul((size_t)t->splits.train.sample_size,
                                                 sizeof(float))));
        labels = xmalloc(size_mul((size_t)n, sizeof(int32_t)));
        data_gather(&t->splits, &t->splits.train, indices, n, x, labels);
        interp_bind_input(it, ir_find_input(pg->graph, "x"), x);
        interp_bind_input(it, ir_find_input(pg->graph, "labels"), labels);
    }
    interp_run(it, n);
    const IrNode *out = &pg->graph->nodes[node];
    print_tensor(NULL, out->dtype, &out->shape, n, interp_output(it, "value"));
    interp_destroy(it);
    free(x);
    free(labels);
    rt_vars_free(&store);
}

/* Returns the kind of a value without its article: "number", "list". */
static const char *kind_word(const Value *v)
{
    const char *kind = val_kind_name(v);
    if (strncmp(kind, "a ", 2) == 0)
        return kind + 2;
    if (strncmp(kind, "an ", 3) == 0)
        return kind + 3;
    return kind;
}

bool repl_print_expr(ReplSession *s, const Expr *e, bool type_only, double *seconds)
{
    double start = now_seconds();
    PromptGraph pg;
    bool ok = lower_at_prompt(s, e, &pg);
    if (ok) {
        const Value *v = &pg.value;
        if (v->kind == VAL_TENSOR) {
            const IrNode *node = &pg.graph->nodes[v->tensor];
            if (type_only)
                printf("%s%s\n", dtype_name(node->dtype), shape_text(s->lower, &node->shape));
            else
                run_and_print(s, &pg, v->tensor);
        } else if (type_only) {
            printf("%s\n", kind_word(v));
        } else if (v->kind != VAL_NONE) {
            printf("%s\n", val_format(s->lower, v));
        }
    }
    prompt_graph_free(&pg);
    if (seconds)
        *seconds = now_seconds() - start;
    return ok;
}

int repl_try_tensor_let(ReplSession *s, const Decl *d)
{
    PromptGraph pg;
    int errors = diag_error_count();
    bool ok = lower_at_prompt(s, d->value, &pg);
    int result = 0;
    if (!ok && diag_error_count() > errors) {
        result = -1;
    } else if (ok && pg.value.kind == VAL_TENSOR) {
        /* An earlier tensor of the same name stays, so that the new
         * expression may read it (h = h + 1). */
        TensorLet let = {.name = d->name, .value = d->value};
        VEC_PUSH(&s->lets, let);
        result = 1;
    }
    prompt_graph_free(&pg);
    return result;
}
