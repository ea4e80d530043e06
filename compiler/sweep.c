/* sweep.c - hyperparameter sweeps of an optimizer in an experiment.
 *
 *     optimizer = [sgd(lr = [0.1, 0.03]), adamw(lr = [1e-3, 3e-4], weight_decay = [0.05, 0])]
 *
 * A list given for a hyperparameter whose default is not itself a list
 * expands the configuration into one per combination of the listed
 * values, in the order of nested loops over the arguments from left to
 * right. Each combination is an ordinary configuration, labelled with
 * its values (`adamw(lr=0.001, weight_decay=0.05)`), that remembers the
 * sweep it came from, so the report can group the settings again.
 */
#include <string.h>

#include "lower.h"

/* Returns the parameter of `d` called `name`, or NULL. */
static const Param *find_param(const Decl *d, const char *name)
{
    for (int i = 0; i < d->nparams; i++)
        if (strcmp(d->params[i].name, name) == 0)
            return &d->params[i];
    return NULL;
}

/* Returns true when keyword argument k of `args` sweeps a hyperparameter. */
static bool sweeps_arg(const Decl *d, const CallArgs *args, int k)
{
    if (args->kw_values[k].kind != VAL_LIST)
        return false;
    const Param *p = find_param(d, args->kw_names[k]);
    if (!p || p->type)
        return false;
    return !p->default_value ||
           (p->default_value->kind != EX_LIST && p->default_value->kind != EX_TUPLE);
}

bool sweep_requested(const Decl *d, const CallArgs *args)
{
    if (d->kind != DECL_OPTIMIZER)
        return false;
    for (int k = 0; k < args->nkw; k++)
        if (sweeps_arg(d, args, k))
            return true;
    return false;
}

/* Returns whether sweep values v and w give the same setting: equal
 * booleans, or numbers that compare equal (so -0 equals 0) or print the
 * same. */
static bool same_value(Lower *l, const Value *v, const Value *w)
{
    if (v->kind != w->kind)
        return false;
    if (v->kind == VAL_NUMBER && v->number.value == w->number.value)
        return true;
    return strcmp(val_format(l, w), val_format(l, v)) == 0;
}

/* Reports value v of the sweep of `name`, which repeats the earlier
 * value w. */
static void report_repeat(Lower *l, const char *name, const Value *v, const Value *w)
{
    const char *text = val_format(l, v), *first = val_format(l, w);
    if (strcmp(text, first) == 0)
        diag_error(v->loc, "%s is listed twice in the sweep of '%s'", text, name);
    else
        diag_error(v->loc, "%s equals %s, which is already listed in the sweep of '%s'", text,
                   first, name);
    diag_note(w->loc, "first listed here");
}

/* Checks the values of the swept argument k: at least one, each of the
 * hyperparameter's kind, no two equal. */
static bool check_values(Lower *l, const Decl *d, const CallArgs *args, int k)
{
    const Value *list = &args->kw_values[k];
    if (list->list.n == 0) {
        diag_error(list->loc, "the sweep of '%s' lists no values", args->kw_names[k]);
        return false;
    }
    const Param *p = find_param(d, args->kw_names[k]);
    bool ok = true;
    for (int i = 0; i < list->list.n; i++) {
        const Value *v = &list->list.items[i];
        if (v->kind == VAL_ERROR || !check_override_kind(l, d, p, v)) {
            ok = false;
            continue;
        }
        if (v->kind != VAL_NUMBER && v->kind != VAL_BOOL) {
            diag_error(v->loc, "a sweep of '%s' lists numbers or booleans, but this is %s",
                       args->kw_names[k], val_kind_name(v));
            ok = false;
            continue;
        }
        for (int j = 0; j < i; j++) {
            const Value *w = &list->list.items[j];
            if (same_value(l, v, w)) {
                report_repeat(l, args->kw_names[k], v, w);
                ok = false;
                break;
            }
        }
    }
    return ok;
}

Value sweep_configure(Lower *l, const Decl *d, const CallArgs *args, SweepConfigureFn configure)
{
    bool ok = true;
    int64_t combinations = 1;
    for (int k = 0; k < args->nkw; k++) {
        if (!sweeps_arg(d, args, k))
            continue;
        ok &= check_values(l, d, args, k);
        combinations *= args->kw_values[k].list.n > 0 ? args->kw_values[k].list.n : 1;
        if (combinations > SWEEP_MAX_CELLS) {
            diag_error(args->loc, "the sweep of optimizer '%s' has more than %d combinations",
                       d->name, SWEEP_MAX_CELLS);
            return val_error();
        }
    }
    if (!ok)
        return val_error();

    /* The label of the whole sweep, with its lists, names the row of the
     * report that collects its settings. */
    StrBuf label = {0};
    sb_printf(&label, "%s(", d->name);
    for (int k = 0; k < args->nkw; k++)
        sb_printf(&label, "%s%s=%s", k ? ", " : "", args->kw_names[k],
                  val_format(l, &args->kw_values[k]));
    sb_append(&label, ")");
    const char *sweep = arena_strdup(l->arena, label.data);
    sb_free(&label);
    int first_swept = 0;
    while (!sweeps_arg(d, args, first_swept))
        first_swept++;

    Value *values = arena_calloc(l->arena, (size_t)args->nkw + 1, sizeof(Value));
    Value *items = arena_calloc(l->arena, (size_t)combinations + 1, sizeof(Value));
    for (int64_t c = 0; c < combinations; c++) {
        /* Combination c in mixed radix, the last swept argument fastest. */
        int64_t rest = c;
        StrBuf setting = {0};
        sb_append(&setting, "");
        for (int k = args->nkw - 1; k >= 0; k--) {
            values[k] = args->kw_values[k];
            if (!sweeps_arg(d, args, k))
                continue;
            int n = args->kw_values[k].list.n;
            values[k] = args->kw_values[k].list.items[rest % n];
            rest /= n;
        }
        for (int k = 0; k < args->nkw; k++)
            if (sweeps_arg(d, args, k))
                sb_printf(&setting, "%s%s=%s", setting.len ? ", " : "", args->kw_names[k],
                          val_format(l, &values[k]));
        CallArgs one = *args;
        one.kw_values = values;
        Value v = configure(l, d, &one);
        if (v.kind != VAL_CONFIGURED) {
            /* A mistake outside the lists is the same in every combination,
             * so it is reported once. */
            sb_free(&setting);
            return val_error();
        }
        v.configured->sweep = sweep;
        v.configured->setting = arena_strdup(l->arena, setting.data);
        v.configured->swept_name = args->kw_names[first_swept];
        v.configured->swept_loc = args->kw_values[first_swept].loc;
        sb_free(&setting);
        items[c] = v;
    }
    Value list = val_none(args->loc);
    list.kind = VAL_LIST;
    list.list.items = items;
    list.list.n = (int)combinations;
    return list;
}
