/* recipe.c - the `recipe` builtin: optimizer settings looked up in a table.
 *
 * A recipe table is a list of rows (backbone, optimizer, lr, weight_decay)
 * or (backbone, optimizer, lr, weight_decay, [(name, value), ...]), where
 * backbone and optimizer are strings. `recipe(table, backbone, optimizer)`
 * in an experiment returns the optimizer configured with the row's
 * settings, under the settings given with the optimizer, which win. The
 * optimizer may be a list, giving a list, so a grid over the optimizers
 * of a paper is one line. Rows name optimizers by string, so a table loads
 * even where some of its optimizers are not declared. Only using such a
 * row is an error.
 */
#include <string.h>

#include "eval.h"

/* Returns the string of item i of a row, or NULL when it is not one. */
static const char *row_string(const Value *row, int i)
{
    return row->list.items[i].kind == VAL_STRING ? row->list.items[i].string : NULL;
}

/* Checks that every row of the table has the documented form. */
static bool check_table(const Value *table)
{
    if (table->kind == VAL_ERROR)
        return false;
    if (table->kind == VAL_SYMBOL) { /* a name that nothing defines */
        diag_error(table->loc, "unknown recipe table '%s'; bocb_cifar100 comes with "
                   "import \"std/recipes/bocb\"", table->string);
        return false;
    }
    if (table->kind != VAL_LIST) {
        diag_error(table->loc, "a recipe table is a list of rows (backbone, optimizer, lr, "
                   "weight_decay), but this is %s", val_kind_name(table));
        return false;
    }
    for (int r = 0; r < table->list.n; r++) {
        const Value *row = &table->list.items[r];
        bool ok = row->kind == VAL_TUPLE && (row->list.n == 4 || row->list.n == 5) &&
                  row_string(row, 0) && row_string(row, 1) &&
                  row->list.items[2].kind == VAL_NUMBER && row->list.items[3].kind == VAL_NUMBER;
        if (ok && row->list.n == 5) {
            const Value *extra = &row->list.items[4];
            ok = extra->kind == VAL_LIST;
            for (int i = 0; ok && i < extra->list.n; i++) {
                const Value *pair = &extra->list.items[i];
                ok = pair->kind == VAL_TUPLE && pair->list.n == 2 && row_string(pair, 0);
            }
        }
        if (!ok) {
            diag_error(row->loc, "row %d of the recipe table is not of the form (backbone, "
                       "optimizer, lr, weight_decay) or (backbone, optimizer, lr, "
                       "weight_decay, [(name, value), ...])", r + 1);
            return false;
        }
    }
    return true;
}

static const Value *find_row(const Value *table, const char *backbone, const char *optimizer)
{
    for (int r = 0; r < table->list.n; r++) {
        const Value *row = &table->list.items[r];
        if (strcmp(row_string(row, 0), backbone) == 0 &&
            strcmp(row_string(row, 1), optimizer) == 0)
            return row;
    }
    return NULL;
}

/* Reports a backbone or optimizer the table has no row for, suggesting a
 * close name from the table's column `column`. */
static void report_missing(Lower *l, const Value *table, int column, const char *what,
                           const char *name, const char *backbone, SrcLoc loc)
{
    const char **names = arena_calloc(l->arena, (size_t)table->list.n + 1, sizeof(char *));
    for (int r = 0; r < table->list.n; r++)
        names[r] = row_string(&table->list.items[r], column);
    const char *near = closest_name(name, names, table->list.n);
    if (column == 0 && near)
        diag_error(loc, "the recipe table has no backbone '%s'; did you mean '%s'?", name, near);
    else if (column == 0)
        diag_error(loc, "the recipe table has no backbone '%s'", name);
    else
        diag_error(loc, "the recipe table has no row for %s '%s' with backbone '%s'", what,
                   name, backbone);
}

/* Adds `key = v` to c unless the user already set it; false after
 * reporting a key that is not a hyperparameter of the optimizer. */
static bool add_setting(Lower *l, Configured *c, const char *key, Value v, SrcLoc loc)
{
    for (int k = 0; k < c->nargs; k++)
        if (strcmp(c->names[k], key) == 0)
            return true;
    for (int i = 0; i < c->decl->nparams; i++) {
        if (strcmp(c->decl->params[i].name, key) != 0)
            continue;
        if (!check_override_kind(l, c->decl, &c->decl->params[i], &v))
            return false;
        c->names[c->nargs] = key;
        c->values[c->nargs] = v;
        c->locs[c->nargs++] = loc;
        return true;
    }
    diag_error(loc, "the recipe sets '%s', which is not a hyperparameter of optimizer '%s'",
               key, c->decl->name);
    return false;
}

/* Returns whether `opt` is a hyperparameter sweep: the list of its
 * combinations, which sweep_configure makes. */
static bool is_sweep(const Value *opt)
{
    return opt->kind == VAL_LIST && opt->list.n > 0 &&
           opt->list.items[0].kind == VAL_CONFIGURED && opt->list.items[0].configured->sweep;
}

/* Configures one optimizer (a declaration or a configuration) from its
 * row of the table. */
static Value configure_from_row(Lower *l, const Value *table, const char *backbone,
                                const Value *opt)
{
    if (is_sweep(opt)) {
        /* A row gives one setting per optimizer, so a recipe takes no sweep. */
        const Configured *c = opt->list.items[0].configured;
        diag_error(c->swept_loc, "'recipe' takes optimizer names without sweeps, but '%s' "
                   "of optimizer '%s' is given a list; give it one value", c->swept_name,
                   c->decl->name);
        return val_error();
    }
    const Configured *given = opt->kind == VAL_CONFIGURED ? opt->configured : NULL;
    const Decl *d = NULL;
    if (given)
        d = given->decl;
    else if (opt->kind == VAL_DECL)
        d = opt->decl;
    if (!d || d->kind != DECL_OPTIMIZER) {
        if (opt->kind == VAL_SYMBOL)
            diag_error(opt->loc, "unknown optimizer '%s'", opt->string);
        else if (opt->kind != VAL_ERROR)
            diag_error(opt->loc, "'recipe' expects an optimizer, but this is %s",
                       val_kind_name(opt));
        return val_error();
    }
    const Value *row = find_row(table, backbone, d->name);
    if (!row) {
        report_missing(l, table, 1, "optimizer", d->name, backbone, opt->loc);
        return val_error();
    }

    const Value *extra = row->list.n == 5 ? &row->list.items[4] : NULL;
    int room = (given ? given->nargs : 0) + 2 + (extra ? extra->list.n : 0);
    Configured *c = arena_calloc(l->arena, 1, sizeof *c);
    c->decl = d;
    c->loc = opt->loc;
    c->names = arena_calloc(l->arena, (size_t)room + 1, sizeof(char *));
    c->values = arena_calloc(l->arena, (size_t)room + 1, sizeof(Value));
    c->locs = arena_calloc(l->arena, (size_t)room + 1, sizeof(SrcLoc));
    for (int k = 0; given && k < given->nargs; k++) {
        c->names[c->nargs] = given->names[k];
        c->values[c->nargs] = given->values[k];
        c->locs[c->nargs++] = given->locs[k];
    }
    bool ok = add_setting(l, c, "lr", row->list.items[2], row->list.items[2].loc);
    ok &= add_setting(l, c, "weight_decay", row->list.items[3], row->list.items[3].loc);
    for (int i = 0; extra && i < extra->list.n; i++) {
        const Value *pair = &extra->list.items[i];
        ok &= add_setting(l, c, row_string(pair, 0), pair->list.items[1], pair->loc);
    }
    if (!ok) {
        diag_note(opt->loc, "while configuring optimizer '%s' from the recipe", d->name);
        return val_error();
    }

    StrBuf label = {0};
    sb_printf(&label, "%s(", d->name);
    for (int k = 0; k < c->nargs; k++)
        sb_printf(&label, "%s%s=%s", k ? ", " : "", c->names[k], val_format(l, &c->values[k]));
    sb_append(&label, ")");
    c->label = arena_strdup(l->arena, label.data);
    sb_free(&label);

    Value v = val_none(opt->loc);
    v.kind = VAL_CONFIGURED;
    v.configured = c;
    return v;
}

Value builtin_recipe(Lower *l, const Value *args, SrcLoc loc)
{
    if (l->mode != MODE_EXPERIMENT) {
        diag_error(loc, "'recipe' configures optimizers and can only be used in an experiment");
        return val_error();
    }
    const Value *table = &args[0], *backbone = &args[1], *opt = &args[2];
    if (!check_table(table) || backbone->kind == VAL_ERROR || opt->kind == VAL_ERROR)
        return val_error();
    if (backbone->kind != VAL_STRING) {
        diag_error(backbone->loc, "the backbone of 'recipe' is a string, such as \"resnet50\", "
                   "but this is %s", val_kind_name(backbone));
        return val_error();
    }
    bool known = false;
    for (int r = 0; r < table->list.n && !known; r++)
        known = strcmp(row_string(&table->list.items[r], 0), backbone->string) == 0;
    if (!known) {
        report_missing(l, table, 0, "backbone", backbone->string, NULL, backbone->loc);
        return val_error();
    }
    if (opt->kind != VAL_LIST || is_sweep(opt))
        return configure_from_row(l, table, backbone->string, opt);

    Value list = *opt;
    list.loc = loc;
    list.list.items = arena_calloc(l->arena, (size_t)opt->list.n + 1, sizeof(Value));
    for (int i = 0; i < opt->list.n; i++)
        list.list.items[i] = configure_from_row(l, table, backbone->string, &opt->list.items[i]);
    return list;
}
