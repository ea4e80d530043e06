/* groups.c - parameter groups: selectors and per-parameter hyperparameters.
 *
 * `group NAME(name = GLOB, rank = R, tag = T) { key = value ... }` in an
 * experiment selects parameters by name pattern, rank or tag (any selector
 * may be a list, and a parameter matching any of them is selected) and
 * gives them other hyperparameters than the optimizer's configuration.
 * Groups apply in order: the built-in no_decay group first, then the
 * experiment's groups in source order, each replacing what the ones before
 * it set. The optimizer is expanded with the result as an ordinary
 * configuration, so nothing about groups reaches the IR except a scaled lr.
 */
#include <fnmatch.h>
#include <math.h>
#include <string.h>

#include "lower.h"

static const char *const selector_names[] = {"name", "rank", "tag"};

/* Returns the items of a list, or v itself as a list of one. */
static const Value *items_of(const Value *v, int *count)
{
    if (v->kind != VAL_LIST) {
        *count = 1;
        return v;
    }
    *count = v->list.n;
    return v->list.items;
}

/* Collects one string or a list of strings into *out. */
static bool strings_of(Lower *l, const Value *v, const char *selector, const char ***out,
                       int *n)
{
    int count;
    const Value *items = items_of(v, &count);
    *out = arena_calloc(l->arena, (size_t)count + 1, sizeof(char *));
    *n = 0;
    for (int i = 0; i < count; i++) {
        if (items[i].kind == VAL_ERROR)
            return false;
        if (items[i].kind != VAL_STRING || !items[i].string[0]) {
            diag_error(items[i].loc, "selector '%s' expects a string or a list of strings, "
                       "such as \"*.bias\", but this is %s", selector,
                       val_kind_name(&items[i]));
            return false;
        }
        (*out)[(*n)++] = items[i].string;
    }
    return true;
}

static bool ranks_of(const Value *v, uint32_t *out)
{
    int count;
    const Value *items = items_of(v, &count);
    for (int i = 0; i < count; i++) {
        int64_t r;
        if (!val_to_int(&items[i], "selector 'rank'", 0, SHAPE_MAX_RANK, &r))
            return false;
        *out |= 1u << r;
    }
    return true;
}

static bool resolve_selector(Lower *l, const Arg *arg, const Value *v, ParamGroup *out)
{
    if (v->kind == VAL_ERROR)
        return false;
    if (strcmp(arg->name, "name") == 0)
        return strings_of(l, v, "name", &out->globs, &out->nglobs);
    if (strcmp(arg->name, "tag") == 0)
        return strings_of(l, v, "tag", &out->tags, &out->ntags);
    return ranks_of(v, &out->ranks);
}

/* Evaluates the settings block of a group: `key = value` statements. */
static bool resolve_settings(Lower *l, const Block *body, ParamGroup *out)
{
    bool ok = true;
    SrcLoc lr_scale_loc = NO_LOC;
    out->keys = arena_calloc(l->arena, (size_t)body->nstmts + 1, sizeof(char *));
    out->values = arena_calloc(l->arena, (size_t)body->nstmts + 1, sizeof(Value));
    out->key_locs = arena_calloc(l->arena, (size_t)body->nstmts + 1, sizeof(SrcLoc));
    for (int i = 0; i < body->nstmts; i++) {
        const Stmt *s = body->stmts[i];
        if (s->kind != ST_ASSIGN || s->assign.compound || s->assign.target->kind != EX_NAME) {
            diag_error(s->loc, "a group contains settings of the form 'hyperparameter = value'");
            ok = false;
            continue;
        }
        const char *key = s->assign.target->name;
        SrcLoc key_loc = s->assign.target->loc;
        Value v = eval_expr(l, s->assign.value);
        if (v.kind == VAL_ERROR) {
            ok = false;
            continue;
        }
        /* lr_scale is kept apart from the settings, so its first
         * location is too. */
        bool repeated = out->has_lr_scale && strcmp(key, "lr_scale") == 0;
        SrcLoc first = lr_scale_loc;
        for (int k = 0; k < out->nsettings && !repeated; k++) {
            if (strcmp(out->keys[k], key) == 0) {
                first = out->key_locs[k];
                repeated = true;
            }
        }
        if (repeated) {
            diag_error(key_loc, "'%s' is set twice in group '%s'", key, out->name);
            diag_note(first, "first set here");
            ok = false;
            continue;
        }
        if (strcmp(key, "lr") == 0) {
            diag_error(key_loc, "a group cannot set 'lr', which the schedule controls; set "
                       "lr_scale, which multiplies it");
            ok = false;
            continue;
        }
        if (strcmp(key, "lr_scale") == 0) {
            if (v.kind != VAL_NUMBER || !(v.number.value >= 0) || !isfinite(v.number.value)) {
                diag_error(v.loc, "'lr_scale' must be a finite number >= 0");
                ok = false;
                continue;
            }
            out->lr_scale = v.number.value;
            out->has_lr_scale = true;
            lr_scale_loc = key_loc;
            continue;
        }
        if (v.kind != VAL_NUMBER && v.kind != VAL_BOOL) {
            diag_error(v.loc, "the value of '%s' must be a number or a boolean, but it is %s",
                       key, val_kind_name(&v));
            ok = false;
            continue;
        }
        out->keys[out->nsettings] = key;
        out->values[out->nsettings] = v;
        out->key_locs[out->nsettings++] = key_loc;
    }
    return ok;
}

bool group_resolve(Lower *l, const Stmt *s, ParamGroup *out)
{
    const Expr *call = s->directive.value;
    memset(out, 0, sizeof *out);
    out->name = call->call.callee->name;
    out->loc = call->call.callee->loc;
    out->lr_scale = 1;

    bool ok = true, given[3] = {false, false, false};
    for (int i = 0; i < call->call.nargs; i++) {
        const Arg *arg = &call->call.args[i];
        Value v = eval_expr(l, arg->value);
        if (!arg->name) {
            diag_error(arg->value->loc, "selectors of group '%s' must be given by name: "
                       "name = ..., rank = ... or tag = ...", out->name);
            ok = false;
            continue;
        }
        int k = 0;
        while (k < 3 && strcmp(selector_names[k], arg->name) != 0)
            k++;
        if (k == 3) {
            const char *near = closest_name(arg->name, selector_names, 3);
            if (near)
                diag_error(arg->name_loc, "unknown selector '%s'; did you mean '%s'?",
                           arg->name, near);
            else
                diag_error(arg->name_loc, "unknown selector '%s'; a group selects by name, "
                           "rank or tag", arg->name);
            ok = false;
            continue;
        }
        if (given[k]) {
            diag_error(arg->name_loc, "selector '%s' is given twice; give a list instead",
                       arg->name);
            ok = false;
            continue;
        }
        given[k] = true;
        ok &= resolve_selector(l, arg, &v, out);
    }
    if (call->call.nargs == 0) {
        diag_error(s->loc, "group '%s' has no selector; give name = ..., rank = ... or "
                   "tag = ...", out->name);
        ok = false;
    }
    return resolve_settings(l, &s->directive.body, out) && ok;
}

ParamGroup group_default_no_decay(Lower *l)
{
    static const char *const tags[] = {"bias", "norm", "layer_scale", "pos_embed",
                                       "cls_token"};
    ParamGroup g = {.name = "no_decay", .lr_scale = 1, .is_default = true,
                    .tags = (const char **)tags, .ntags = (int)BOCB_ARRAY_LEN(tags)};
    g.keys = arena_calloc(l->arena, 1, sizeof(char *));
    g.values = arena_calloc(l->arena, 1, sizeof(Value));
    g.key_locs = arena_calloc(l->arena, 1, sizeof(SrcLoc));
    g.keys[0] = "weight_decay";
    g.values[0] = val_number(0, NO_LOC);
    g.nsettings = 1;
    return g;
}

bool group_selects(const ParamGroup *group, const IrVar *v)
{
    if (v->kind != IR_VAR_PARAM || group->failed)
        return false;
    if (group->ranks & (1u << v->shape.rank))
        return true;
    for (int i = 0; v->tag && i < group->ntags; i++)
        if (strcmp(group->tags[i], v->tag) == 0)
            return true;
    const char *dot = strchr(v->name, '.');
    const char *local = dot ? dot + 1 : v->name;
    for (int i = 0; i < group->nglobs; i++)
        if (fnmatch(group->globs[i], local, 0) == 0 || fnmatch(group->globs[i], v->name, 0) == 0)
            return true;
    return false;
}

/* Returns the index of hyperparameter `key` of optimizer `d`, or -1. */
static int hyperparameter_index(const Decl *d, const char *key)
{
    for (int i = 0; i < d->nparams; i++)
        if (strcmp(d->params[i].name, key) == 0)
            return i;
    return -1;
}

/* Sets `key` in the configuration being built, replacing an earlier value. */
static void set_argument(Configured *c, const char *key, Value v, SrcLoc loc)
{
    for (int k = 0; k < c->nargs; k++) {
        if (strcmp(c->names[k], key) == 0) {
            c->values[k] = v;
            c->locs[k] = loc;
            return;
        }
    }
    c->names[c->nargs] = key;
    c->values[c->nargs] = v;
    c->locs[c->nargs++] = loc;
}

const Configured *group_configure(Lower *l, const Configured *opt, const ParamGroup *groups,
                                  int ngroups, const IrVar *v, double *lr_scale,
                                  const char **label)
{
    *lr_scale = 1;
    *label = NULL;
    int extra = 0;
    for (int g = 0; g < ngroups; g++)
        extra += groups[g].nsettings;
    Configured *c = arena_calloc(l->arena, 1, sizeof *c);
    *c = *opt;
    c->names = arena_calloc(l->arena, (size_t)(opt->nargs + extra) + 1, sizeof(char *));
    c->values = arena_calloc(l->arena, (size_t)(opt->nargs + extra) + 1, sizeof(Value));
    c->locs = arena_calloc(l->arena, (size_t)(opt->nargs + extra) + 1, sizeof(SrcLoc));
    if (opt->nargs > 0) { /* an unconfigured optimizer has NULL arrays */
        memcpy(c->names, opt->names, (size_t)opt->nargs * sizeof(char *));
        memcpy(c->values, opt->values, (size_t)opt->nargs * sizeof(Value));
        memcpy(c->locs, opt->locs, (size_t)opt->nargs * sizeof(SrcLoc));
    }

    bool ok = true;
    StrBuf names = {0}, settings = {0};
    for (int g = 0; g < ngroups; g++) {
        const ParamGroup *group = &groups[g];
        if (!group_selects(group, v))
            continue;
        bool applied = group->has_lr_scale;
        for (int k = 0; k < group->nsettings; k++) {
            int p = hyperparameter_index(opt->decl, group->keys[k]);
            if (p < 0 && group->is_default)
                continue; /* an optimizer without weight decay needs no group */
            if (p < 0) {
                diag_error(group->key_locs[k], "group '%s' sets '%s', which is not a "
                           "hyperparameter of optimizer '%s'", group->name, group->keys[k],
                           opt->decl->name);
                ok = false;
                continue;
            }
            ok &= check_override_kind(l, opt->decl, &opt->decl->params[p], &group->values[k]);
            set_argument(c, group->keys[k], group->values[k], group->key_locs[k]);
            applied = true;
        }
        if (group->has_lr_scale)
            *lr_scale = group->lr_scale;
        if (applied)
            sb_printf(&names, "%s%s", names.len ? ", " : "", group->name);
    }
    for (int k = opt->nargs; k < c->nargs; k++)
        sb_printf(&settings, "%s%s=%s", settings.len ? ", " : "", c->names[k],
                  val_format(l, &c->values[k]));
    for (int k = 0; k < opt->nargs; k++)
        if (c->values[k].kind != opt->values[k].kind ||
            strcmp(val_format(l, &c->values[k]), val_format(l, &opt->values[k])) != 0)
            sb_printf(&settings, "%s%s=%s", settings.len ? ", " : "", c->names[k],
                      val_format(l, &c->values[k]));
    if (*lr_scale != 1) {
        char scale[32];
        format_double(scale, sizeof scale, *lr_scale);
        sb_printf(&settings, "%slr_scale=%s", settings.len ? ", " : "", scale);
    }
    if (names.len)
        *label = arena_printf(l->arena, "%s (%s)", names.data,
                              settings.len ? settings.data : "no change");
    sb_free(&names);
    sb_free(&settings);
    return ok ? c : NULL;
}
