/* experiment.c - experiment settings and the compilation of one cell.
 *
 * Settings are `key = value` statements evaluated in experiment mode, where
 * a bare name that is not declared is a symbol (`backprop`) for the setting
 * to validate. Each known setting has one validator below; an unknown key,
 * a repeated key or a missing required key is an error at its location.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "lower.h"

static const char *const setting_names[] = {
    "data", "model", "optimizer", "gradient", "loss", "epochs", "batch",
    "eval_batch", "seed", "seeds", "train_size", "test_size", "steps", "log_every",
};

enum { NSETTINGS = (int)BOCB_ARRAY_LEN(setting_names) };

typedef struct Setting {
    bool set;
    Value value;
    SrcLoc loc; /* of the key */
} Setting;

static int setting_index(const char *key)
{
    for (int i = 0; i < NSETTINGS; i++)
        if (strcmp(setting_names[i], key) == 0)
            return i;
    return -1;
}

static bool record_setting(Lower *l, Setting *settings, const char *key, SrcLoc key_loc,
                           Value v, bool override)
{
    int i = setting_index(key);
    if (i < 0) {
        const char *near = closest_name(key, setting_names, NSETTINGS);
        if (near)
            diag_error(key_loc, "unknown experiment setting '%s'; did you mean '%s'?", key, near);
        else
            diag_error(key_loc, "unknown experiment setting '%s'", key);
        return false;
    }
    if (settings[i].set && !override) {
        diag_error(key_loc, "setting '%s' is given twice", key);
        diag_note(settings[i].loc, "first given here");
        return false;
    }
    (void)l;
    settings[i] = (Setting){.set = true, .value = v, .loc = key_loc};
    /* An override of one of `seed` and `seeds` replaces the other too. */
    if (override && (strcmp(key, "seed") == 0 || strcmp(key, "seeds") == 0))
        settings[setting_index(strcmp(key, "seed") == 0 ? "seeds" : "seed")].set = false;
    return true;
}

/* ---- validators ----------------------------------------------------------- */

static bool as_int_setting(const Setting *s, const char *key, int64_t min, int64_t max,
                           int64_t fallback, int64_t *out)
{
    if (!s->set) {
        *out = fallback;
        return true;
    }
    char what[64];
    snprintf(what, sizeof what, "setting '%s'", key);
    return val_to_int(&s->value, what, min, max, out);
}

/* Accepts one declaration of `kind` (configured or bare) or a list. */
static bool collect_choices(Lower *l, const Setting *s, const char *key, DeclKind kind,
                            Configured ***out, int *n)
{
    const char *kind_name = kind == DECL_MODEL ? "model" : "optimizer";
    const Value *items = &s->value;
    int count = 1;
    *n = 0;
    if (s->value.kind == VAL_ERROR)
        return false;
    if (s->value.kind == VAL_LIST) {
        items = s->value.list.items;
        count = s->value.list.n;
        if (count == 0) {
            diag_error(s->value.loc, "setting '%s' lists no %ss", key, kind_name);
            return false;
        }
    }
    /* Invalid entries are reported and left out, so that the valid ones
     * can still be compiled and checked. */
    *out = arena_calloc(l->arena, (size_t)count + 1, sizeof(Configured *));
    *n = 0;
    bool ok = true;
    for (int i = 0; i < count; i++) {
        const Value *v = &items[i];
        if (v->kind == VAL_ERROR) {
            ok = false;
            continue;
        }
        if (v->kind == VAL_DECL && v->decl->kind == kind) {
            Configured *c = arena_calloc(l->arena, 1, sizeof *c);
            c->decl = v->decl;
            c->loc = v->loc;
            c->label = v->decl->name;
            (*out)[(*n)++] = c;
            continue;
        }
        if (v->kind == VAL_CONFIGURED && v->configured->decl->kind == kind) {
            (*out)[(*n)++] = v->configured;
            continue;
        }
        if (v->kind == VAL_SYMBOL) {
            VEC(const char *) names = {0};
            for (int b = 0; b < l->globals.bindings.len; b++) {
                const Value *g = &l->globals.bindings.data[b].value;
                if (g->kind == VAL_DECL && g->decl->kind == kind)
                    VEC_PUSH(&names, g->decl->name);
            }
            const char *near = closest_name(v->string, names.data, names.len);
            if (near)
                diag_error(v->loc, "unknown %s '%s'; did you mean '%s'?", kind_name,
                           v->string, near);
            else
                diag_error(v->loc, "unknown %s '%s'", kind_name, v->string);
            VEC_FREE(&names);
        } else {
            diag_error(v->loc, "setting '%s' expects %s %s, but this is %s", key,
                       kind == DECL_MODEL ? "a" : "an", kind_name, val_kind_name(v));
        }
        ok = false;
    }
    return ok;
}

static bool resolve_data(Lower *l, const Setting *s, ExperimentSpec *spec)
{
    Value v = s->value;
    if (v.kind == VAL_ERROR)
        return false;
    const char *name = NULL;
    if (v.kind == VAL_DECL && v.decl->kind == DECL_DATA) {
        name = v.decl->name;
        EvalMode saved = l->mode;
        l->mode = MODE_EXPERIMENT;
        v = eval_expr(l, v.decl->value);
        l->mode = saved;
    }
    if (v.kind == VAL_ERROR)
        return false;
    if (v.kind != VAL_DATA) {
        if (v.kind == VAL_SYMBOL)
            diag_error(s->value.loc, "unknown data '%s'", v.string);
        else
            diag_error(v.loc, "setting 'data' expects a data source, such as "
                       "idx(\"/usr/share/datasets/fashion-mnist\"), but this is %s",
                       val_kind_name(&v));
        return false;
    }
    spec->data = v.data;
    if (name)
        spec->data->name = name;
    spec->data_loc = s->value.loc;
    return true;
}

static bool resolve_symbol(const Setting *s, const char *key, const char *const *allowed,
                           int nallowed, const char *const *planned, int nplanned)
{
    if (!s->set)
        return true;
    const Value *v = &s->value;
    const char *name = NULL;
    if (v->kind == VAL_SYMBOL)
        name = v->string;
    else if (v->kind == VAL_BUILTIN)
        name = v->builtin->name;
    for (int i = 0; name && i < nallowed; i++)
        if (strcmp(name, allowed[i]) == 0)
            return true;
    if (v->kind == VAL_ERROR)
        return false;
    for (int i = 0; name && i < nplanned; i++) {
        if (strcmp(name, planned[i]) == 0) {
            diag_error(v->loc, "%s '%s' is not available in this version of bocbc",
                       key, name);
            return false;
        }
    }
    StrBuf list = {0};
    for (int i = 0; i < nallowed; i++)
        sb_printf(&list, "%s%s", i ? ", " : "", allowed[i]);
    diag_error(v->loc, "setting '%s' must be one of: %s", key, list.data);
    sb_free(&list);
    return false;
}

static bool resolve_seeds(Lower *l, Setting *settings, ExperimentSpec *spec)
{
    const Setting *seed = &settings[setting_index("seed")];
    const Setting *seeds = &settings[setting_index("seeds")];
    if (seed->set && seeds->set) {
        diag_error(seeds->loc, "give either 'seed' or 'seeds', not both");
        return false;
    }
    const Value *items = NULL;
    int n = 1;
    Value zero = val_number(0, NO_LOC);
    if ((seeds->set && seeds->value.kind == VAL_ERROR) ||
        (seed->set && seed->value.kind == VAL_ERROR))
        return false;
    if (seeds->set) {
        if (seeds->value.kind != VAL_LIST || seeds->value.list.n == 0) {
            diag_error(seeds->value.loc, "setting 'seeds' expects a list of integers, "
                       "such as [0, 1, 2]");
            return false;
        }
        items = seeds->value.list.items;
        n = seeds->value.list.n;
    } else {
        items = seed->set ? &seed->value : &zero;
    }
    spec->seeds = arena_calloc(l->arena, (size_t)n + 1, sizeof(uint64_t));
    spec->nseeds = n;
    for (int i = 0; i < n; i++) {
        int64_t v;
        if (!val_to_int(&items[i], "a seed", 0, INT64_C(1) << 53, &v))
            return false;
        spec->seeds[i] = (uint64_t)v;
    }
    return true;
}

static bool validate(Lower *l, const Decl *exp, Setting *settings, ExperimentSpec *spec)
{
    bool ok = true;
    static const char *const required[] = {"data", "model", "optimizer"};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(required); i++) {
        if (!settings[setting_index(required[i])].set) {
            diag_error(exp->name_loc, "experiment '%s' does not set '%s'", exp->name,
                       required[i]);
            ok = false;
        }
    }
    if (!ok)
        return false;

    ok &= resolve_data(l, &settings[setting_index("data")], spec);
    const Setting *model = &settings[setting_index("model")];
    ok &= collect_choices(l, model, "model", DECL_MODEL, &spec->models, &spec->nmodels);
    spec->model_loc = model->value.loc;
    ok &= collect_choices(l, &settings[setting_index("optimizer")], "optimizer",
                          DECL_OPTIMIZER, &spec->optimizers, &spec->noptimizers);

    static const char *const gradients[] = {"backprop"};
    static const char *const planned_gradients[] = {"zo", "forward_grad", "hybrid"};
    static const char *const losses[] = {"cross_entropy"};
    ok &= resolve_symbol(&settings[setting_index("gradient")], "gradient", gradients, 1,
                         planned_gradients, 3);
    ok &= resolve_symbol(&settings[setting_index("loss")], "loss", losses, 1, NULL, 0);

    const int64_t big = INT64_C(1) << 40;
    ok &= as_int_setting(&settings[setting_index("epochs")], "epochs", 1, 100000, 1,
                         &spec->epochs);
    ok &= as_int_setting(&settings[setting_index("batch")], "batch", 1, 1 << 16, 128,
                         &spec->batch);
    ok &= as_int_setting(&settings[setting_index("eval_batch")], "eval_batch", 1, 1 << 16,
                         spec->batch, &spec->eval_batch);
    ok &= as_int_setting(&settings[setting_index("train_size")], "train_size", 1, big, 0,
                         &spec->train_size);
    ok &= as_int_setting(&settings[setting_index("test_size")], "test_size", 1, big, 0,
                         &spec->test_size);
    ok &= as_int_setting(&settings[setting_index("steps")], "steps", 1, big, 0,
                         &spec->max_steps);
    ok &= as_int_setting(&settings[setting_index("log_every")], "log_every", 1, big, 100,
                         &spec->log_every);
    ok &= resolve_seeds(l, settings, spec);
    return ok;
}

/* Parses and evaluates the value of a `-D key=value` override; messages
 * point into the argument as typed. */
static bool eval_override(Lower *l, const Override *ov, Value *out, SrcLoc *key_loc)
{
    const char *key = strstr(ov->text, ov->key);
    const char *eq = strchr(ov->text, '=');
    BOCB_ASSERT(key && eq);
    int key_col = (int)(key - ov->text) + 1;
    int file = src_register("command line", ov->text, strlen(ov->text));
    *key_loc = (SrcLoc){.file = file, .line = 1, .col = key_col, .end_line = 1,
                        .end_col = key_col + (int)strlen(ov->key) - 1};
    Expr *e = parse_expression(file, (size_t)(eq - ov->text) + 1, l->arena);
    if (!e)
        return false;
    *out = eval_expr(l, e);
    return out->kind != VAL_ERROR;
}

bool experiment_resolve(Lower *l, const Decl *exp, const Override *overrides,
                        int noverrides, ExperimentSpec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->decl = exp;
    spec->name = exp->name;

    Setting settings[NSETTINGS];
    memset(settings, 0, sizeof settings);
    EvalMode saved_mode = l->mode;
    l->mode = MODE_EXPERIMENT;
    bool ok = true;
    const Stmt *report = NULL;

    for (int i = 0; i < exp->body.nstmts; i++) {
        const Stmt *s = exp->body.stmts[i];
        if (s->kind == ST_DIRECTIVE && strcmp(s->directive.keyword, "report") == 0) {
            if (report) {
                diag_error(s->loc, "'report' is given twice");
                diag_note(report->loc, "first given here");
                ok = false;
                continue;
            }
            report = s;
            Value v = eval_expr(l, s->directive.value);
            if (v.kind == VAL_STRING && v.string[0])
                spec->report_dir = v.string;
            else if (v.kind != VAL_ERROR) {
                diag_error(v.loc, "'report' expects a directory name in quotes");
                ok = false;
            }
            continue;
        }
        if (s->kind == ST_DIRECTIVE) {
            diag_error(s->loc, "'%s' is not available yet; this version supports 'report'",
                       s->directive.keyword);
            ok = false;
            continue;
        }
        if (s->kind != ST_ASSIGN || s->assign.compound || s->assign.target->kind != EX_NAME) {
            diag_error(s->loc, "an experiment contains settings of the form 'key = value'");
            ok = false;
            continue;
        }
        Value v = eval_expr(l, s->assign.value);
        ok &= v.kind != VAL_ERROR;
        ok &= record_setting(l, settings, s->assign.target->name, s->assign.target->loc, v,
                             false);
    }
    for (int i = 0; i < noverrides; i++) {
        Value v;
        SrcLoc key_loc;
        if (!eval_override(l, &overrides[i], &v, &key_loc)) {
            ok = false;
            continue;
        }
        ok &= record_setting(l, settings, overrides[i].key, key_loc, v, true);
    }

    /* Settings that failed are poison; validating the rest still finds
     * independent mistakes. */
    ok = validate(l, exp, settings, spec) && ok;
    l->mode = saved_mode;
    return ok;
}

/* ---- compiling a cell ----------------------------------------------------- */

static double base_learning_rate(Lower *l, const Configured *opt)
{
    for (int k = 0; k < opt->nargs; k++) {
        if (strcmp(opt->names[k], "lr") != 0)
            continue;
        if (opt->values[k].kind == VAL_NUMBER && !(opt->values[k].number.value >= 0)) {
            /* lr is a run-time input of the rule, so the check is here. */
            diag_error(opt->values[k].loc, "the learning rate must be >= 0");
            return NAN;
        }
        if (opt->values[k].kind == VAL_NUMBER)
            return opt->values[k].number.value;
        if (opt->values[k].kind != VAL_ERROR)
            diag_error(opt->values[k].loc, "the learning rate must be a number, but it is %s",
                       val_kind_name(&opt->values[k]));
        return NAN;
    }
    for (int i = 0; i < opt->decl->nparams; i++) {
        const Param *p = &opt->decl->params[i];
        if (strcmp(p->name, "lr") == 0 && p->default_value) {
            Value v = eval_expr(l, p->default_value);
            if (v.kind == VAL_NUMBER)
                return v.number.value;
            if (v.kind != VAL_ERROR)
                diag_error(v.loc, "the learning rate must be a number");
            return NAN;
        }
    }
    diag_error(opt->decl->name_loc, "optimizer '%s' needs a value for 'lr'", opt->decl->name);
    return NAN;
}

/* Returns the Gauss-Newton-Bartlett estimate of each parameter's Hessian
 * diagonal (Liu et al., "Sophia", 2023), per variable of the module (-1
 * for a variable that is not a parameter): labels drawn from the model's
 * own softmax, the gradient g of the mean cross-entropy on those labels,
 * and B * g^2 with B the batch size. The draw uses Philox stream
 * HESS_STREAM keyed by the step, so it is the same for every seed. An
 * optimizer that does not read `hess` leaves these nodes to dead-code
 * elimination. Returns NULL, reporting nothing, when an op of the forward
 * pass has no VJP rule; the training step's own reverse pass reports it. */
enum { HESS_STREAM = 0x48455353 };

static const int *gnb_estimates(Lower *l, IrGraph *g, int logits, int step, SrcLoc loc)
{
    for (int i = 0; i < g->nnodes; i++)
        if (!ad_has_rule(g->nodes[i].op))
            return NULL;
    const IrModule *m = l->module;
    VEC(int) params = {0};
    for (int v = 0; v < m->nvars; v++)
        if (m->vars[v].kind == IR_VAR_PARAM)
            VEC_PUSH(&params, v);
    int *grads = xcalloc((size_t)params.len + 1, sizeof *grads);
    int labels = ir_sample_labels(g, logits, step, HESS_STREAM, loc);
    Value sampled = lower_cross_entropy(l, logits, labels, loc);
    int *hess = arena_calloc(l->arena, (size_t)m->nvars + 1, sizeof *hess);
    for (int v = 0; v < m->nvars; v++)
        hess[v] = -1;
    if (sampled.kind == VAL_TENSOR && ad_backward(g, sampled.tensor, params.data, params.len,
                                                  grads)) {
        for (int i = 0; i < params.len; i++) {
            const IrVar *var = &m->vars[params.data[i]];
            int estimate = ir_broadcast(g, ir_const(g, var->dtype, 0.0, loc), var->shape, loc);
            if (grads[i] >= 0) {
                int squares = ir_binary(g, IR_MUL, grads[i], grads[i], loc);
                int batch = ir_broadcast(g, ir_batch(g, var->dtype, loc), var->shape, loc);
                estimate = ir_binary(g, IR_MUL, batch, squares, loc);
            }
            hess[params.data[i]] = estimate;
        }
    }
    free(grads);
    VEC_FREE(&params);
    return hess;
}

/* Builds the forward pass: inputs, the model, the loss. Returns false
 * after reported errors. */
static bool build_forward(Lower *l, IrGraph *g, const Configured *model,
                          const DataShape *data, int *logits_out, int *loss_out)
{
    l->graph = g;
    Shape xs = shape_scalar();
    xs.rank = data->rank + 1;
    xs.batch_axis = 0;
    xs.dims[0] = 1;
    for (int i = 0; i < data->rank; i++)
        xs.dims[i + 1] = data->dims[i];
    Shape ys = shape_scalar();
    ys.rank = 1;
    ys.batch_axis = 0;
    ys.dims[0] = 1;

    SrcLoc loc = model->loc.file ? model->loc : model->decl->name_loc;
    Value x = val_tensor(ir_input(g, "x", l->dtype, xs, loc), loc);
    int labels = ir_input(g, "labels", DT_I32, ys, loc);
    Value out = instantiate_model(l, model->decl, &x, model, loc);
    if (out.kind != VAL_TENSOR)
        return false;

    Shape want = shape_scalar();
    want.rank = 2;
    want.batch_axis = 0;
    want.dims[0] = 1;
    want.dims[1] = data->classes;
    Shape got = ir_node(g, out.tensor)->shape;
    DType got_type = ir_node(g, out.tensor)->dtype;
    if (got_type != l->dtype) {
        diag_error(out.loc, "model '%s' returns %s values, but logits must be %s",
                   model->decl->name, dtype_name(got_type), dtype_name(l->dtype));
        return false;
    }
    if (!shape_equal(&got, &want)) {
        diag_error(out.loc, "model '%s' returns %s, but the data has %d class%s, so "
                   "logits of shape %s are expected", model->decl->name,
                   shape_text(l, &got), data->classes, data->classes == 1 ? "" : "es",
                   shape_text(l, &want));
        return false;
    }
    Value loss = lower_cross_entropy(l, out.tensor, labels, loc);
    *logits_out = out.tensor;
    *loss_out = loss.tensor;
    return true;
}

bool compile_cell(Lower *l, const Configured *model, const Configured *opt,
                  const DataShape *data, DType dtype, CompiledCell *out)
{
    memset(out, 0, sizeof *out);
    ir_module_init(&out->module, l->arena);
    l->module = &out->module;
    l->dtype = dtype;
    int errors = diag_error_count();

    /* The training step: forward, backward, one update per parameter. */
    IrGraph *train = ir_graph_new(&out->module, "train_step");
    out->train = train;
    l->training = true;
    int logits, loss;
    bool ok = build_forward(l, train, model, data, &logits, &loss) &&
              diag_error_count() == errors;
    l->model_failed = !ok;
    if (ok) {
        ir_add_output(train, "loss", loss);
        ir_add_output(train, "logits", logits);

        VEC(int) params = {0};
        for (int v = 0; v < out->module.nvars; v++)
            if (out->module.vars[v].kind == IR_VAR_PARAM)
                VEC_PUSH(&params, v);
        int *grads = xcalloc((size_t)params.len + 1, sizeof *grads);
        SrcLoc oloc = opt->decl->name_loc;
        int lr = ir_input(train, "lr", dtype, shape_scalar(), oloc);
        int step = ir_input(train, "step", dtype, shape_scalar(), oloc);

        l->opt_hess = gnb_estimates(l, train, logits, step, oloc);
        ok = ad_backward(train, loss, params.data, params.len, grads);
        for (int i = 0; ok && i < params.len; i++)
            ok = expand_optimizer(l, opt, params.data[i], grads[i], lr, step);
        free(grads);
        VEC_FREE(&params);
    }

    /* Evaluation: the same model instantiated again over the same
     * variables, without the optimizer. */
    if (ok) {
        IrGraph *eval = ir_graph_new(&out->module, "eval");
        out->eval = eval;
        l->training = false;
        ok = build_forward(l, eval, model, data, &logits, &loss);
        if (ok) {
            ir_add_output(eval, "loss", loss);
            ir_add_output(eval, "logits", logits);
        }
    }

    if (ok) {
        out->base_lr = base_learning_rate(l, opt);
        ok = diag_error_count() == errors && !isnan(out->base_lr);
    }
    l->graph = NULL;
    l->opt_hess = NULL;
    l->module = NULL;
    if (!ok) {
        /* A failure without a message would hide a mistake from the user. */
        BOCB_ASSERT(diag_error_count() > errors);
        compiled_cell_free(out);
        return false;
    }
    ir_dce(out->train);
    ir_dce(out->eval);
    BOCB_ASSERT(ir_verify(out->train));
    BOCB_ASSERT(ir_verify(out->eval));
    return true;
}

bool compile_cell_model_failed(const Lower *l)
{
    return l->model_failed;
}

void compiled_cell_free(CompiledCell *cell)
{
    ir_graph_free(cell->train);
    ir_graph_free(cell->eval);
    ir_module_free(&cell->module);
    memset(cell, 0, sizeof *cell);
}
