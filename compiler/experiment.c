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
#include "builtins.h"
#include "forward.h"
#include "lm.h"
#include "lower.h"
#include "qsdp.h"
#include "paths.h"
#include "recompute.h"

static const char *const setting_names[] = {
    "data", "model", "optimizer", "gradient", "loss", "epochs", "batch",
    "eval_batch", "seed", "seeds", "train_size", "test_size", "steps", "log_every",
    "label_smoothing",
    "schedule", "clip", "default_no_decay",
    "finetune", "lora_rank", "lora_alpha", "lora_targets", "prompt_tokens", "trainable",
    "init", "save",
    "checkpoint_every", "recompute", "augment",
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

/* Returns the items of a list with the items of nested lists in their
 * place, so that `[recipe(t, "resnet50", [sgd, adamw]), lamb]` is a list
 * of three optimizers. */
static const Value *flatten_choices(Lower *l, const Value *list, int *count)
{
    VEC(Value) flat = {0};
    VEC(const Value *) stack = {0};
    for (int i = list->list.n - 1; i >= 0; i--)
        VEC_PUSH(&stack, &list->list.items[i]);
    while (stack.len > 0) {
        const Value *v = stack.data[--stack.len];
        if (v->kind != VAL_LIST) {
            VEC_PUSH(&flat, *v);
            continue;
        }
        for (int i = v->list.n - 1; i >= 0; i--)
            VEC_PUSH(&stack, &v->list.items[i]);
    }
    Value *items = arena_calloc(l->arena, (size_t)flat.len + 1, sizeof(Value));
    if (flat.len > 0) /* an empty list leaves flat.data NULL */
        memcpy(items, flat.data, (size_t)flat.len * sizeof(Value));
    *count = flat.len;
    VEC_FREE(&flat);
    VEC_FREE(&stack);
    return items;
}

/* Reports `name`, which names no declaration of `kind`, suggesting the
 * closest declaration of that kind. */
static void report_unknown_decl(Lower *l, DeclKind kind, const char *kind_name,
                                const char *name, SrcLoc loc)
{
    VEC(const char *) names = {0};
    for (int b = 0; b < l->globals.bindings.len; b++) {
        const Value *g = &l->globals.bindings.data[b].value;
        if (g->kind == VAL_DECL && g->decl->kind == kind)
            VEC_PUSH(&names, g->decl->name);
    }
    const char *near = closest_name(name, names.data, names.len);
    if (near)
        diag_error(loc, "unknown %s '%s'; did you mean '%s'?", kind_name, name, near);
    else
        diag_error(loc, "unknown %s '%s'", kind_name, name);
    VEC_FREE(&names);
}

/* Rejects two entries of a model or optimizer list with the same label.
 * A cell is named by its labels in runs.csv, checkpoints and the summary,
 * so the second would resume from the first one's results instead of
 * training. A sweep's combinations count as entries. */
static bool reject_duplicate_labels(Configured **choices, int n, const char *key,
                                    const char *kind_name)
{
    bool ok = true;
    for (int i = 1; i < n; i++) {
        for (int j = 0; j < i; j++) {
            if (strcmp(choices[i]->label, choices[j]->label) == 0) {
                diag_error(choices[i]->loc, "%s '%s' is listed twice in '%s'", kind_name,
                           choices[i]->label, key);
                diag_note(choices[j]->loc, "first listed here");
                ok = false;
                break;
            }
        }
    }
    return ok;
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
        items = flatten_choices(l, &s->value, &count);
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
            report_unknown_decl(l, kind, kind_name, v->string, v->loc);
        } else {
            diag_error(v->loc, "setting '%s' expects %s %s, but this is %s", key,
                       kind == DECL_MODEL ? "a" : "an", kind_name, val_kind_name(v));
        }
        ok = false;
    }
    return ok & reject_duplicate_labels(*out, *n, key, kind_name);
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
            report_unknown_decl(l, DECL_DATA, "data", v.string, s->value.loc);
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
                           int nallowed)
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
    StrBuf list = {0};
    for (int i = 0; i < nallowed; i++)
        sb_printf(&list, "%s%s", i ? ", " : "", allowed[i]);
    diag_error(v->loc, "setting '%s' must be one of: %s", key, list.data);
    sb_free(&list);
    return false;
}

/* Fills spec->loss from `loss` (already checked by resolve_symbol) and
 * `label_smoothing`, which only cross-entropy takes. */
static bool resolve_loss(const Setting *settings, ExperimentSpec *spec)
{
    const Setting *loss = &settings[setting_index("loss")];
    const Setting *smoothing = &settings[setting_index("label_smoothing")];
    const Value *v = &loss->value;
    const char *name = !loss->set                ? "cross_entropy"
                       : v->kind == VAL_BUILTIN ? v->builtin->name
                       : v->kind == VAL_SYMBOL  ? v->string
                                                : "";
    spec->loss.kind = strcmp(name, "mse") == 0          ? IR_LOSS_MSE
                      : strcmp(name, "next_token") == 0 ? IR_LOSS_NEXT_TOKEN
                                                        : IR_LOSS_CROSS_ENTROPY;
    if (!smoothing->set || smoothing->value.kind == VAL_ERROR)
        return true;
    const Value *s = &smoothing->value;
    if (s->kind != VAL_NUMBER || !(s->number.value >= 0 && s->number.value <= 1)) {
        diag_error(s->loc, "label_smoothing must be a number in [0, 1]");
        return false;
    }
    if (spec->loss.kind != IR_LOSS_CROSS_ENTROPY) {
        diag_error(smoothing->loc, "label_smoothing applies to loss = cross_entropy only");
        return false;
    }
    spec->loss.label_smoothing = s->number.value;
    return true;
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
        /* The same seed twice would train identical cells twice. */
        for (int j = 0; j < i; j++) {
            if (spec->seeds[j] == (uint64_t)v) {
                diag_error(items[i].loc, "seed %lld is listed twice in 'seeds'", (long long)v);
                diag_note(items[j].loc, "first listed here");
                return false;
            }
        }
    }
    return true;
}

/* ---- learning-rate schedules ---------------------------------------------- */

/* The schedules and their arguments. The first nrequired have no default. */
static const struct ScheduleDef {
    const char *name;
    RtScheduleKind kind;
    int nrequired;
    const char *params[3];
} schedule_defs[] = {
    {"constant", RT_SCHEDULE_CONSTANT, 0, {NULL}},
    {"step", RT_SCHEDULE_STEP, 1, {"every", "gamma"}},
    {"multistep", RT_SCHEDULE_MULTISTEP, 1, {"milestones", "gamma"}},
    {"exponential", RT_SCHEDULE_EXPONENTIAL, 1, {"gamma"}},
    {"cosine", RT_SCHEDULE_COSINE, 0, {"min_lr"}},
    {"warmup", RT_SCHEDULE_WARMUP, 1, {"epochs", "start_factor"}},
    {"warmup_cosine", RT_SCHEDULE_WARMUP_COSINE, 1, {"warmup", "min_lr", "start_factor"}},
};

/* Reads a finite number in [min, max] (an open bound when `open_min`). */
static bool schedule_number(const Value *v, const char *schedule, const char *arg, double min,
                            bool open_min, double max, double *out)
{
    if (v->kind == VAL_ERROR)
        return false;
    if (v->kind != VAL_NUMBER) {
        diag_error(v->loc, "argument '%s' of schedule '%s' must be a number, but it is %s",
                   arg, schedule, val_kind_name(v));
        return false;
    }
    double x = v->number.value;
    if (!(open_min ? x > min : x >= min) || !(x <= max)) {
        char lo[32], hi[32];
        format_double(lo, sizeof lo, min);
        format_double(hi, sizeof hi, max);
        diag_error(v->loc, "argument '%s' of schedule '%s' must be %s %s and at most %s, "
                   "but it is %.17g", arg, schedule, open_min ? ">" : ">=", lo, hi, x);
        return false;
    }
    *out = x;
    return true;
}

static bool schedule_milestones(const Value *v, RtSchedule *out)
{
    if (v->kind == VAL_ERROR)
        return false;
    if (v->kind != VAL_LIST || v->list.n == 0 || v->list.n > RT_MAX_MILESTONES) {
        diag_error(v->loc, "argument 'milestones' of schedule 'multistep' must be a list of "
                   "1 to %d epochs, such as [30, 60]", RT_MAX_MILESTONES);
        return false;
    }
    for (int i = 0; i < v->list.n; i++) {
        int64_t m;
        if (!val_to_int(&v->list.items[i], "a milestone", 1, 100000, &m))
            return false;
        if (i > 0 && m <= out->milestones[i - 1]) {
            diag_error(v->list.items[i].loc, "milestones must increase, but %lld follows %lld",
                       (long long)m, (long long)out->milestones[i - 1]);
            return false;
        }
        out->milestones[i] = m;
    }
    out->nmilestones = v->list.n;
    return true;
}

/* Sets one argument of a schedule after checking its range. */
static bool schedule_arg(const char *schedule, const char *arg, const Value *v, RtSchedule *out)
{
    if (strcmp(arg, "every") == 0) {
        int64_t every;
        if (!val_to_int(v, "argument 'every' of schedule 'step'", 1, 100000, &every))
            return false;
        out->every = every;
        return true;
    }
    if (strcmp(arg, "milestones") == 0)
        return schedule_milestones(v, out);
    if (strcmp(arg, "gamma") == 0)
        return schedule_number(v, schedule, arg, 0, true, 1e6, &out->gamma);
    if (strcmp(arg, "min_lr") == 0)
        return schedule_number(v, schedule, arg, 0, false, 1e6, &out->min_lr);
    if (strcmp(arg, "start_factor") == 0)
        return schedule_number(v, schedule, arg, 0, false, 1, &out->start_factor);
    /* `epochs` of warmup, `warmup` of warmup_cosine: a duration in epochs */
    return schedule_number(v, schedule, arg, 0, true, 100000, &out->warmup_epochs);
}

/* Evaluates the value of the `schedule` setting: a schedule name, or a
 * schedule called with arguments by name, such as cosine(min_lr = 1e-6). */
static bool eval_schedule(Lower *l, const Expr *e, RtSchedule *out)
{
    const Expr *callee = e->kind == EX_CALL ? e->call.callee : e;
    if (callee->kind != EX_NAME) {
        Value v = eval_expr(l, e);
        if (v.kind != VAL_ERROR)
            diag_error(e->loc, "setting 'schedule' expects a schedule, such as "
                       "cosine(min_lr = 1e-6), but this is %s", val_kind_name(&v));
        return false;
    }
    const struct ScheduleDef *def = NULL;
    const char *names[BOCB_ARRAY_LEN(schedule_defs)];
    for (size_t i = 0; i < BOCB_ARRAY_LEN(schedule_defs); i++) {
        names[i] = schedule_defs[i].name;
        if (strcmp(schedule_defs[i].name, callee->name) == 0)
            def = &schedule_defs[i];
    }
    if (!def) {
        const char *near = closest_name(callee->name, names, (int)BOCB_ARRAY_LEN(names));
        StrBuf list = {0};
        for (size_t i = 0; i < BOCB_ARRAY_LEN(names); i++)
            sb_printf(&list, "%s%s", i ? ", " : "", names[i]);
        if (near)
            diag_error(callee->loc, "unknown schedule '%s'; did you mean '%s'?", callee->name,
                       near);
        else
            diag_error(callee->loc, "unknown schedule '%s'; the schedules are %s",
                       callee->name, list.data);
        sb_free(&list);
        return false;
    }

    *out = (RtSchedule){.kind = def->kind, .gamma = 0.1};
    bool ok = true, positional = false, given[3] = {false, false, false};
    int nparams = 0;
    while (nparams < 3 && def->params[nparams])
        nparams++;
    for (int a = 0; e->kind == EX_CALL && a < e->call.nargs; a++) {
        const Arg *arg = &e->call.args[a];
        Value v = eval_expr(l, arg->value);
        if (!arg->name) {
            diag_error(arg->value->loc, "arguments of schedule '%s' must be given by name",
                       def->name);
            ok = false;
            positional = true;
            continue;
        }
        int p = 0;
        while (p < nparams && strcmp(def->params[p], arg->name) != 0)
            p++;
        if (p == nparams) {
            const char *near = closest_name(arg->name, def->params, nparams);
            if (near)
                diag_error(arg->name_loc, "schedule '%s' has no argument '%s'; did you mean "
                           "'%s'?", def->name, arg->name, near);
            else if (nparams == 0)
                diag_error(arg->name_loc, "schedule '%s' takes no arguments", def->name);
            else
                diag_error(arg->name_loc, "schedule '%s' has no argument '%s'", def->name,
                           arg->name);
            ok = false;
            continue;
        }
        if (given[p]) {
            diag_error(arg->name_loc, "'%s' is given more than once", arg->name);
            ok = false;
            continue;
        }
        given[p] = true;
        ok &= schedule_arg(def->name, arg->name, &v, out);
    }
    /* A positional argument was probably meant for a required one, so
     * the missing ones are not reported on top of it. */
    for (int p = 0; p < def->nrequired && !positional; p++) {
        if (!given[p]) {
            diag_error(e->loc, "schedule '%s' needs the argument '%s'", def->name,
                       def->params[p]);
            ok = false;
        }
    }
    return ok;
}

/* Reads a setting that is a finite number > 0 (unset: `fallback`). */
static bool as_positive_setting(const Setting *s, const char *key, double fallback, double *out)
{
    *out = fallback;
    if (!s->set || s->value.kind == VAL_ERROR)
        return !s->set;
    if (s->value.kind != VAL_NUMBER || !(s->value.number.value > 0) ||
        !isfinite(s->value.number.value)) {
        diag_error(s->value.loc, "setting '%s' must be a finite number > 0", key);
        return false;
    }
    *out = s->value.number.value;
    return true;
}

/* Reads `finetune` and the settings of its schemes (lm.c). */
static bool resolve_finetune(Lower *l, const Setting *settings, ExperimentSpec *spec)
{
    const Value *values[6];
    static const char *const keys[6] = {"finetune", "lora_rank", "lora_alpha", "lora_targets",
                                        "prompt_tokens", "trainable"};
    for (int i = 0; i < 6; i++) {
        const Setting *s = &settings[setting_index(keys[i])];
        values[i] = s->set ? &s->value : NULL;
    }
    FineTuneSettings fs = {values[0], values[1], values[2], values[3], values[4], values[5]};
    return finetune_resolve(l, &fs, &spec->finetune);
}

/* Reads `init` and `save`, the safetensors files that a cell's
 * parameters start from and are written to after training (weights.h). */
static bool resolve_weight_files(const Setting *settings, ExperimentSpec *spec)
{
    bool ok = true;
    const char *keys[2] = {"init", "save"};
    const char **paths[2] = {&spec->init_path, &spec->save_path};
    for (int i = 0; i < 2; i++) {
        const Setting *s = &settings[setting_index(keys[i])];
        if (!s->set || s->value.kind == VAL_ERROR)
            continue;
        if (s->value.kind != VAL_STRING || !s->value.string[0]) {
            diag_error(s->value.loc, "setting '%s' expects the path of a .safetensors file "
                       "in quotes", keys[i]);
            ok = false;
            continue;
        }
        *paths[i] = s->value.string;
    }
    int64_t cells = (int64_t)spec->nmodels * spec->noptimizers * spec->nseeds;
    if (ok && spec->save_path && cells > 1) {
        const Setting *s = &settings[setting_index("save")];
        diag_error(s->value.loc, "setting 'save' writes one file, but this experiment has "
                   "%lld cells (models x optimizers x seeds); keep one of each",
                   (long long)cells);
        ok = false;
    }
    return ok;
}

/* `recompute = none | elementwise` (recompute.h). */
static bool resolve_recompute(Setting *settings, ExperimentSpec *spec)
{
    static const char *const modes[] = {"none", "elementwise"};
    const Setting *s = &settings[setting_index("recompute")];
    bool ok = resolve_symbol(s, "recompute", modes, (int)BOCB_ARRAY_LEN(modes));
    spec->recompute = ok && s->set && s->value.kind == VAL_SYMBOL &&
                      strcmp(s->value.string, "elementwise") == 0;
    return ok;
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

    /* zo(...) is resolved by zo_eval_setting; it is listed for the message. */
    static const char *const gradients[] = {"backprop", "forward_grad", "zo(...)"};
    static const char *const losses[] = {"cross_entropy", "mse", "next_token"};
    const Setting *gradient = &settings[setting_index("gradient")];
    if (!spec->zo.enabled)
        ok &= resolve_symbol(gradient, "gradient", gradients, 3);
    spec->forward_grad = gradient->set && gradient->value.kind == VAL_SYMBOL &&
                         strcmp(gradient->value.string, "forward_grad") == 0;
    ok &= resolve_symbol(&settings[setting_index("loss")], "loss", losses,
                         (int)BOCB_ARRAY_LEN(losses));
    ok &= resolve_loss(settings, spec);

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
    ok &= as_int_setting(&settings[setting_index("checkpoint_every")], "checkpoint_every", 0,
                         big, 0, &spec->checkpoint_every);
    ok &= resolve_seeds(l, settings, spec);
    ok &= as_positive_setting(&settings[setting_index("clip")], "clip", 0, &spec->clip);
    ok &= resolve_finetune(l, settings, spec);
    ok &= resolve_weight_files(settings, spec);
    ok &= resolve_recompute(settings, spec);
    ok &= augment_check_data(spec);
    return ok;
}

/* Evaluates a `group` statement and appends it to spec->groups. A group
 * named no_decay replaces the built-in one. */
static bool add_group(Lower *l, const Stmt *s, ExperimentSpec *spec)
{
    ParamGroup g;
    bool ok = group_resolve(l, s, &g);
    g.failed = !ok;
    for (int i = 0; i < spec->ngroups; i++) {
        if (strcmp(spec->groups[i].name, g.name) != 0)
            continue;
        if (spec->groups[i].is_default) {
            spec->groups[i] = g;
            return ok;
        }
        diag_error(g.loc, "group '%s' is defined twice", g.name);
        diag_note(spec->groups[i].loc, "first defined here");
        return false;
    }
    /* A failed group is kept too, so that a second one of its name is
     * reported. The experiment does not run anyway. */
    spec->groups[spec->ngroups++] = g;
    return ok;
}

/* Reads `default_no_decay` and drops the built-in group when it is false. */
static bool resolve_default_group(const Setting *s, ExperimentSpec *spec)
{
    if (!s->set || s->value.kind == VAL_ERROR)
        return !s->set;
    if (s->value.kind != VAL_BOOL) {
        diag_error(s->value.loc, "setting 'default_no_decay' must be true or false");
        return false;
    }
    if (!s->value.boolean && spec->ngroups > 0 && spec->groups[0].is_default) {
        memmove(spec->groups, spec->groups + 1, (size_t)(spec->ngroups - 1) * sizeof *spec->groups);
        spec->ngroups--;
    }
    return true;
}

/* Evaluates the value of setting `key`. A schedule is evaluated into
 * spec->schedule, and its setting gets the value none. */
static Value eval_setting(Lower *l, const char *key, const Expr *e, ExperimentSpec *spec)
{
    if (strcmp(key, "gradient") == 0) {
        spec->zo.enabled = false;
        if (zo_is_setting(e))
            return zo_eval_setting(l, e, &spec->zo) ? val_none(e->loc) : val_error();
    }
    if (strcmp(key, "augment") == 0)
        return augment_eval_setting(l, e, &spec->augment, &spec->augment_loc)
                   ? val_none(e->loc)
                   : val_error();
    if (strcmp(key, "schedule") != 0)
        return eval_expr(l, e);
    if (!eval_schedule(l, e, &spec->schedule))
        return val_error();
    return val_none(e->loc);
}

/* Returns whether one of the overrides replaces setting `key`, directly
 * or, for `seed` and `seeds`, through the other of the pair. */
static bool is_overridden(const char *key, const Override *overrides, int noverrides)
{
    bool seed_pair = strcmp(key, "seed") == 0 || strcmp(key, "seeds") == 0;
    for (int i = 0; i < noverrides; i++) {
        const char *replaced = overrides[i].key;
        if (strcmp(replaced, key) == 0 ||
            (seed_pair && (strcmp(replaced, "seed") == 0 || strcmp(replaced, "seeds") == 0)))
            return true;
    }
    return false;
}

/* Parses and evaluates the value of a `-D key=value` override; messages
 * point into the argument as typed. */
static bool eval_override(Lower *l, const Override *ov, ExperimentSpec *spec, Value *out,
                          SrcLoc *key_loc)
{
    const char *key = strstr(ov->text, ov->key);
    const char *eq = strchr(ov->text, '=');
    BOCB_ASSERT(key && eq);
    int key_col = (int)(key - ov->text) + 1;
    int file = src_register(COMMAND_LINE_SOURCE, ov->text, strlen(ov->text));
    *key_loc = (SrcLoc){.file = file, .line = 1, .col = key_col, .end_line = 1,
                        .end_col = key_col + (int)strlen(ov->key) - 1};
    Expr *e = parse_expression(file, (size_t)(eq - ov->text) + 1, l->arena);
    if (!e)
        return false;
    *out = eval_setting(l, ov->key, e, spec);
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

    /* The built-in no_decay group comes first, so every other group
     * overrides it. */
    spec->groups = arena_calloc(l->arena, (size_t)exp->body.nstmts + 2, sizeof(ParamGroup));
    spec->groups[spec->ngroups++] = group_default_no_decay(l);

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
                spec->report_dir = source_relative_path(l->arena, v.string, v.loc);
            else if (v.kind != VAL_ERROR) {
                diag_error(v.loc, "'report' expects a directory name in quotes");
                ok = false;
            }
            continue;
        }
        if (s->kind == ST_DIRECTIVE && strcmp(s->directive.keyword, "group") == 0) {
            ok &= add_group(l, s, spec);
            continue;
        }
        if (s->kind == ST_DIRECTIVE && strcmp(s->directive.keyword, "quantize") == 0) {
            ok &= qsdp_resolve(l, s, spec);
            continue;
        }
        if (s->kind == ST_DIRECTIVE && strcmp(s->directive.keyword, "analyze") == 0) {
            if (!spec->analyses)
                spec->analyses = arena_calloc(l->arena, (size_t)exp->body.nstmts + 1,
                                              sizeof *spec->analyses);
            ok &= analyze_resolve(l, s, spec);
            continue;
        }
        if (s->kind != ST_ASSIGN || s->assign.compound || s->assign.target->kind != EX_NAME) {
            diag_error(s->loc, "an experiment contains settings of the form 'key = value'");
            ok = false;
            continue;
        }
        /* The value that an override replaces is not evaluated, so that
         * only the value that would run reports errors. */
        const char *key = s->assign.target->name;
        Value v = val_none(s->assign.value->loc);
        if (!is_overridden(key, overrides, noverrides)) {
            v = eval_setting(l, key, s->assign.value, spec);
            ok &= v.kind != VAL_ERROR;
        }
        ok &= record_setting(l, settings, key, s->assign.target->loc, v, false);
    }
    for (int i = 0; i < noverrides; i++) {
        Value v;
        SrcLoc key_loc;
        if (!eval_override(l, &overrides[i], spec, &v, &key_loc)) {
            ok = false;
            v = val_error();
        }
        ok &= record_setting(l, settings, overrides[i].key, key_loc, v, true);
    }

    /* Settings that failed are poison; validating the rest still finds
     * independent mistakes. */
    ok = validate(l, exp, settings, spec) && ok;
    ok &= resolve_default_group(&settings[setting_index("default_no_decay")], spec);
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
    /* The error points at the configuration, which is the mistake, and the
     * note at the declaration, which is its context. */
    diag_error(opt->loc, "optimizer '%s' needs a value for 'lr'", opt->decl->name);
    diag_note(opt->decl->name_loc, "'%s' is declared here, with no default for 'lr'",
              opt->decl->name);
    return NAN;
}

/* Returns the Gauss-Newton-Bartlett estimate of each parameter's Hessian
 * diagonal (Liu et al., "Sophia", 2023), per variable of the module, with
 * -1 for a variable that is not a parameter. The estimate draws labels
 * from the model's own softmax, takes the gradient g of the mean
 * cross-entropy on those labels, and returns B * g^2 with B the batch
 * size. The draw uses Philox stream HESS_STREAM keyed by the step, so it
 * is the same for every seed. An
 * optimizer that does not read `hess` leaves these nodes to dead-code
 * elimination. Returns NULL, reporting nothing, when an op of the forward
 * pass has no VJP rule; the training step's own reverse pass reports it. */
enum { HESS_STREAM = 0x48455353 };

static const int *gnb_estimates(Lower *l, IrGraph *g, int logits, int step, SrcLoc loc)
{
    /* An assignment (batch_norm's running statistics) is a side effect off
     * every gradient path, so it needs no rule. */
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op != IR_ASSIGN && !ad_has_rule(g->nodes[i].op))
            return NULL;
    const IrModule *m = l->module;
    VEC(int) params = {0};
    for (int v = 0; v < m->nvars; v++)
        if (ir_var_trainable(&m->vars[v]))
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
    /* The input node is located at the model's input declaration, so that
     * a note on where an operand comes from shows its declared shape. */
    int input = model_input_param(model->decl);
    SrcLoc input_loc = input >= 0 ? model->decl->params[input].loc : loc;
    Value x = val_tensor(ir_input(g, "x", l->dtype, xs, input_loc), loc);
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
    if (l->loss.kind == IR_LOSS_NEXT_TOKEN)
        return lower_next_token_loss(l, out.tensor, x.tensor, labels, data, model->decl->name,
                                     out.loc, loss_out, logits_out);
    if (!shape_equal(&got, &want)) {
        diag_error(out.loc, "model '%s' returns %s, but the data has %d class%s, so "
                   "logits of shape %s are expected", model->decl->name,
                   shape_text(l, &got), data->classes, data->classes == 1 ? "" : "es",
                   shape_text(l, &want));
        return false;
    }
    Value loss = lower_loss(l, out.tensor, labels, l->loss, loc);
    *logits_out = out.tensor;
    *loss_out = loss.tensor;
    return true;
}

/* Scales the gradients by min(1, clip / (norm + 1e-6)), where norm is the
 * Euclidean norm of all of them together, as torch.nn.utils.clip_grad_norm_
 * (PyTorch 1.13) does. The 1e-6 also keeps a zero norm from being divided
 * by. Returns the norm node. Entries grads[i] < 0 (no gradient) are
 * skipped. */
static int clip_gradients(IrGraph *g, int *grads, int n, double clip, DType dtype, SrcLoc loc)
{
    int total = -1;
    for (int i = 0; i < n; i++) {
        if (grads[i] < 0)
            continue;
        int square = ir_binary(g, IR_MUL, grads[i], grads[i], loc);
        uint32_t all_axes = (1u << ir_node(g, square)->shape.rank) - 1;
        int sum = ir_sum(g, square, all_axes, loc);
        total = total < 0 ? sum : ir_binary(g, IR_ADD, total, sum, loc);
    }
    if (total < 0)
        total = ir_const(g, dtype, 0.0, loc);
    int norm = ir_unary(g, IR_SQRT, total, loc);
    int denom = ir_binary(g, IR_ADD, norm, ir_const(g, dtype, 1e-6, loc), loc);
    int scale = ir_binary(g, IR_DIV, ir_const(g, dtype, clip, loc), denom, loc);
    scale = ir_binary(g, IR_MIN, scale, ir_const(g, dtype, 1.0, loc), loc);
    for (int i = 0; i < n; i++) {
        if (grads[i] < 0)
            continue;
        Shape shape = ir_node(g, grads[i])->shape;
        grads[i] = ir_binary(g, IR_MUL, grads[i], ir_broadcast(g, scale, shape, loc), loc);
    }
    return norm;
}

/* Expands the optimizer for one parameter with the settings of its
 * groups. `lr` is scaled by the groups' lr_scale. */
bool expand_in_groups(Lower *l, const Configured *opt, const CellOptions *options,
                      int param, int grad, int lr, int step, const char **label)
{
    const Configured *config = opt;
    double lr_scale = 1;
    if (options->ngroups > 0) {
        config = group_configure(l, opt, options->groups, options->ngroups,
                                 &l->module->vars[param], &lr_scale, label);
        if (!config)
            return false;
    }
    if (lr_scale != 1) {
        SrcLoc loc = opt->decl->name_loc;
        lr = ir_binary(l->graph, IR_MUL, lr, ir_const(l->graph, l->dtype, lr_scale, loc), loc);
    }
    return expand_optimizer(l, config, param, grad, lr, step);
}

/* Warns about each group of the experiment that selects no parameter of
 * the model. */
static void warn_empty_groups(Lower *l, const Configured *model, const CellOptions *options,
                              const IrModule *m)
{
    for (int g = 0; g < options->ngroups; g++) {
        const ParamGroup *group = &options->groups[g];
        bool used = false;
        for (int v = 0; v < m->nvars && !used; v++)
            used = group_selects(group, &m->vars[v]);
        if (!used && !group->is_default && !group->failed)
            diag_warning(group->loc, "group '%s' selects no parameter of model '%s'",
                         group->name, model->decl->name);
    }
}

/* Expands each of options->check_optimizers over the parameters that a
 * failed model created before its mistake, with zero gradients and
 * Hessian estimates, so that the optimizers' own mistakes are reported in
 * the same run. Records in options->check_failed which of them reported
 * errors. */
static void check_optimizers_on_partial_model(Lower *l, IrGraph *g, const CellOptions *options)
{
    const IrModule *m = l->module;
    int *hess = arena_calloc(l->arena, (size_t)m->nvars + 1, sizeof *hess);
    for (int v = 0; v < m->nvars; v++) {
        const IrVar *var = &m->vars[v];
        hess[v] = var->kind != IR_VAR_PARAM
                      ? -1
                      : ir_broadcast(g, ir_const(g, var->dtype, 0.0, var->loc), var->shape,
                                     var->loc);
    }
    l->opt_hess = hess;
    int lr = -1, step = -1;
    for (int i = 0; i < options->ncheck_optimizers; i++) {
        const Configured *opt = options->check_optimizers[i];
        SrcLoc oloc = opt->decl->name_loc;
        if (lr < 0) {
            lr = ir_input(g, "lr", l->dtype, shape_scalar(), oloc);
            step = lower_step_input(l, oloc);
        }
        int errors = diag_error_count();
        for (int v = 0; v < m->nvars && diag_error_count() == errors; v++) {
            const char *label = NULL;
            if (m->vars[v].kind == IR_VAR_PARAM)
                expand_in_groups(l, opt, options, v, -1, lr, step, &label);
        }
        if (diag_error_count() == errors)
            base_learning_rate(l, opt);
        options->check_failed[i] = diag_error_count() > errors;
    }
}

bool compile_cell(Lower *l, const Configured *model, const Configured *opt,
                  const DataShape *data, DType dtype, CompiledCell *out)
{
    return compile_cell_with(l, model, opt, data, dtype, NULL, out);
}

bool compile_cell_with(Lower *l, const Configured *model, const Configured *opt,
                       const DataShape *data, DType dtype, const CellOptions *options,
                       CompiledCell *out)
{
    CellOptions none = {0};
    if (!options)
        options = &none;
    memset(out, 0, sizeof *out);
    ir_module_init(&out->module, l->arena);
    l->module = &out->module;
    l->dtype = dtype;
    l->finetune = options->finetune;
    int errors = diag_error_count();

    /* The training step: forward, backward, one update per parameter. */
    IrGraph *train = ir_graph_new(&out->module, "train_step");
    out->train = train;
    l->training = true;
    int logits, loss;
    bool ok = build_forward(l, train, model, data, &logits, &loss) &&
              diag_error_count() == errors &&
              finetune_freeze(l, &out->module, model->decl->name, model->loc);
    l->model_failed = !ok;
    if (!ok && options->ncheck_optimizers > 0)
        check_optimizers_on_partial_model(l, train, options);
    bool simulate = options->shards == 0;
    if (ok) {
        ir_add_output(train, "loss", loss);
        ir_add_output(train, "logits", logits);
        qsdp_reserve_key(l, options);
        if (simulate && options->quantize_weights.on && !options->quantize_weights.iterate) {
            qsdp_quantize_weight_reads(l, train, &options->quantize_weights, false);
            loss = ir_find_output(train, "loss");
            logits = ir_find_output(train, "logits");
        }
        if (l->stage_hook)
            l->stage_hook(l->stage_hook_context, CELL_STAGE_FORWARD, train);
    }
    if (ok && options->zo && options->zo->enabled && options->shards > 0) {
        diag_error(options->zo->loc, "gradient = zo does not support sharded training "
                   "(--ranks or mpirun), because its estimate perturbs whole parameters; "
                   "train it in one process");
        ok = false;
    }
    if (ok && options->zo && options->zo->enabled) {
        ok = zo_compile(l, opt, options, out);
    } else if (ok) {
        VEC(int) params = {0};
        for (int v = 0; v < out->module.nvars; v++)
            if (ir_var_trainable(&out->module.vars[v]))
                VEC_PUSH(&params, v);
        int *grads = xcalloc((size_t)params.len + 1, sizeof *grads);
        SrcLoc oloc = opt->decl->name_loc;
        int lr = ir_input(train, "lr", dtype, shape_scalar(), oloc);
        int step = lower_step_input(l, oloc);

        l->opt_hess = gnb_estimates(l, train, logits, step, oloc);
        int backward_start = train->nnodes;
        ok = options->forward_grad
                 ? fwd_gradient_estimate(train, loss, step, params.data, params.len, grads)
                 : ad_backward(train, loss, params.data, params.len, grads);
        if (ok && options->recompute && !options->forward_grad)
            recompute_activations(train, backward_start, grads, params.len);
        if (ok && l->stage_hook)
            l->stage_hook(l->stage_hook_context, CELL_STAGE_BACKWARD, train);
        for (int i = 0; ok && simulate && options->quantize_gradients.on && i < params.len; i++)
            if (grads[i] >= 0)
                grads[i] = qsdp_quantize_gradient(l, train, params.data[i], grads[i],
                                                  &options->quantize_gradients, 0);
        int grad_norm = -1;
        /* A sharded step clips the reduced gradient (shard.c), not each
         * rank's part of it. */
        if (ok && options->clip > 0 && simulate)
            grad_norm = clip_gradients(train, grads, params.len, options->clip, dtype, oloc);
        out->param_groups = arena_calloc(l->arena, (size_t)out->module.nvars + 1,
                                         sizeof(char *));
        if (ok && !simulate)
            ok = qsdp_build_update(l, opt, options, params.data, grads, params.len,
                                   backward_start, out);
        for (int i = 0; ok && simulate && i < params.len; i++)
            ok = expand_in_groups(l, opt, options, params.data[i], grads[i], lr, step,
                                  &out->param_groups[params.data[i]]);
        if (ok)
            warn_empty_groups(l, model, options, &out->module);
        if (ok && simulate && options->quantize_weights.iterate)
            qsdp_quantize_param_assigns(l, train, &options->quantize_weights);
        if (ok && grad_norm >= 0) {
            /* A non-finite norm (an overflow, a NaN) skips the whole update.
             * NaN < inf is false, so one comparison covers both. */
            int finite = ir_binary(train, IR_LT, grad_norm,
                                   ir_const(train, dtype, INFINITY, oloc), oloc);
            ir_guard_assigns(train, finite, oloc);
            ir_add_output(train, "grad_norm", grad_norm);
        }
        if (ok && simulate && options->quantize_weights.iterate)
            qsdp_quantize_weight_reads(l, train, &options->quantize_weights, true);
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
    l->finetune = NULL;
    if (!ok) {
        /* A failure without a message would hide a mistake from the user.
         * The message may come before the cell: a global constant that
         * failed to evaluate, used as a default argument, fails the cell
         * again without a new error. */
        BOCB_ASSERT(diag_error_count() > 0);
        compiled_cell_free(out);
        return false;
    }
    ir_dce(out->train);
    ir_dce(out->eval);
    BOCB_ASSERT(ir_verify(out->train));
    BOCB_ASSERT(ir_verify(out->eval));
    if (out->update) {
        ir_dce(out->update);
        BOCB_ASSERT(ir_verify(out->update));
    }
    return true;
}

bool check_model(Lower *l, const Configured *model, const DataShape *data, DType dtype)
{
    IrModule module;
    ir_module_init(&module, l->arena);
    l->module = &module;
    l->dtype = dtype;
    l->training = true;
    int errors = diag_error_count(), logits, loss;
    IrGraph *g = ir_graph_new(&module, "forward");
    bool ok = build_forward(l, g, model, data, &logits, &loss) && diag_error_count() == errors;
    l->graph = NULL;
    l->module = NULL;
    ir_graph_free(g);
    ir_module_free(&module);
    return ok;
}

bool compile_cell_model_failed(const Lower *l)
{
    return l->model_failed;
}

void compiled_cell_free(CompiledCell *cell)
{
    ir_graph_free(cell->train);
    ir_graph_free(cell->eval);
    ir_graph_free(cell->update);
    zo_graphs_free(cell->zo);
    ir_module_free(&cell->module);
    memset(cell, 0, sizeof *cell);
}
