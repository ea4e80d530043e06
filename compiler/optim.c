/* optim.c - expands an optimizer's update rule once per parameter.
 *
 * An optimizer is written in .bocb as statements over `param`, `grad`,
 * `step`, `lr`, its hyperparameters and its `state` tensors. Expansion runs
 * the rule with `param` bound to a read of the parameter variable, so the
 * rule's arithmetic becomes IR; at the end, every name that was rebound
 * (the parameter, each state) turns into an IR_ASSIGN. Nothing about any
 * particular optimizer is known here.
 *
 * `hess` is a Hessian-diagonal estimate of the parameter when the caller
 * supplies one (compile_cell does, see gnb_estimates in experiment.c).
 *
 * Hyperparameters are compile-time constants folded into the update, with
 * one exception: `lr` is the graph's rank-0 input, so learning-rate
 * schedules change it every step without recompiling.
 */
#include <string.h>

#include "eval.h"

static const char *const reserved[] = {"param", "grad", "step", "hess"};

/* Reads a state's initial value from full_like(x, value): a broadcast of
 * a constant, whose shape becomes the state's. */
static bool constant_fill(Lower *l, const Value *init, double *value, Shape *shape)
{
    if (init->kind != VAL_TENSOR)
        return false;
    const IrNode *n = ir_node(l->graph, init->tensor);
    if (n->op == IR_BROADCAST)
        n = ir_node(l->graph, n->in[0]);
    if (n->op != IR_CONST || ir_node(l->graph, init->tensor)->shape.batch_axis >= 0)
        return false;
    *value = n->attr.value;
    *shape = ir_node(l->graph, init->tensor)->shape;
    return true;
}

void declare_state(Lower *l, const Stmt *s)
{
    const char *name = s->state.name;
    for (int i = 0; i < l->opt_states.len; i++) {
        if (strcmp(l->opt_states.data[i].name, name) == 0) {
            diag_error(s->state.name_loc, "state '%s' is declared twice", name);
            return;
        }
    }
    for (size_t i = 0; i < BOCB_ARRAY_LEN(reserved); i++) {
        if (strcmp(reserved[i], name) == 0) {
            diag_error(s->state.name_loc, "'%s' is reserved and cannot name a state", name);
            return;
        }
    }
    if (l->opt_decl) {
        for (int i = 0; i < l->opt_decl->nparams; i++) {
            if (strcmp(l->opt_decl->params[i].name, name) == 0) {
                diag_error(s->state.name_loc, "state '%s' would hide the hyperparameter of "
                           "the same name", name);
                diag_note(l->opt_decl->params[i].loc, "hyperparameter declared here");
                return;
            }
        }
    }
    const IrVar *p = &l->module->vars[l->opt_param_var];
    Shape shape = p->shape;
    double v;
    Value init = eval_expr(l, s->state.init);
    if (init.kind == VAL_NUMBER) {
        v = init.number.value;
    } else if (!constant_fill(l, &init, &v, &shape)) {
        if (init.kind != VAL_ERROR)
            diag_error(s->state.init->loc, "the initial value of state '%s' must be a "
                       "number or full_like(x, number), but it is %s", name,
                       init.kind == VAL_TENSOR ? "a computed tensor" : val_kind_name(&init));
        scope_set(l, l->scope, name, val_error());
        return;
    }

    const char *full = arena_printf(l->arena, "%s.%s", p->name, name);
    int var = ir_module_find_var(l->module, full);
    if (var < 0)
        var = ir_module_add_var(l->module, full, IR_VAR_STATE, p->dtype, shape,
                                v == 0 ? IR_INIT_ZEROS : IR_INIT_CONST, v,
                                l->opt_param_var, s->loc);
    int read = ir_var_read(l->graph, var, s->loc);
    struct OptState st = {.name = name, .var = var, .read = read};
    VEC_PUSH(&l->opt_states, st);
    scope_set(l, l->scope, name, val_tensor(read, s->loc));
}

/* Binds the optimizer's hyperparameters: overrides from the experiment,
 * else defaults evaluated in order (so one default may use another). */
static bool bind_hyperparameters(Lower *l, const Configured *opt, int lr, Scope *scope)
{
    const Decl *d = opt->decl;
    bool ok = true, has_lr = false;
    for (int i = 0; i < d->nparams; i++) {
        const Param *p = &d->params[i];
        for (size_t r = 0; r < BOCB_ARRAY_LEN(reserved); r++) {
            if (strcmp(reserved[r], p->name) == 0) {
                diag_error(p->loc, "'%s' is provided by the compiler and cannot be a "
                           "hyperparameter", p->name);
                ok = false;
            }
        }
        if (p->type) {
            diag_error(p->type->loc, "optimizer hyperparameters have no tensor type");
            ok = false;
        }
        if (strcmp(p->name, "lr") == 0) {
            has_lr = true;
            scope_set(l, scope, "lr", val_tensor(lr, p->loc));
            continue;
        }
        Value v = val_none(p->loc);
        for (int k = 0; k < opt->nargs; k++)
            if (strcmp(opt->names[k], p->name) == 0)
                v = opt->values[k];
        if (v.kind == VAL_NONE && p->default_value)
            v = eval_expr(l, p->default_value);
        if (v.kind == VAL_NONE) {
            diag_error(opt->nargs ? opt->locs[0] : d->name_loc,
                       "optimizer '%s' needs a value for '%s'", d->name, p->name);
            ok = false;
        } else if (v.kind == VAL_TENSOR) {
            diag_error(v.loc, "hyperparameter '%s' must be known at compile time", p->name);
            ok = false;
        }
        ok &= v.kind != VAL_ERROR;
        scope_set(l, scope, p->name, v);
    }
    if (!has_lr) {
        diag_error(d->name_loc, "optimizer '%s' must declare a learning rate "
                   "hyperparameter 'lr'", d->name);
        ok = false;
    }
    return ok;
}

bool expand_optimizer(Lower *l, const Configured *opt, int param, int grad,
                      int lr, int step)
{
    const Decl *d = opt->decl;
    IrGraph *g = l->graph;
    int errors = diag_error_count();

    Scope scope = {.parent = &l->globals};
    Scope *saved_scope = l->scope;
    EvalMode saved_mode = l->mode;
    l->scope = &scope;
    l->mode = MODE_OPTIMIZER;
    l->opt_param_var = param;
    l->opt_decl = d;
    const Decl *saved_decl = l->current_decl;
    l->current_decl = d;
    l->opt_states.len = 0;
    /* Each combination of a sweep reports its own mistakes, even those
     * that the other combinations repeat. */
    const char *saved_context = diag_set_context(opt->setting);

    bool ok = bind_hyperparameters(l, opt, lr, &scope);
    const IrVar *p = &l->module->vars[param];
    int param_read = ir_var_read(g, param, p->loc);
    if (grad < 0) {
        /* The loss does not depend on this parameter: its gradient is 0. */
        grad = ir_broadcast(g, ir_const(g, p->dtype, 0.0, p->loc), p->shape, p->loc);
    }
    scope_set(l, &scope, "param", val_tensor(param_read, d->name_loc));
    scope_set(l, &scope, "grad", val_tensor(grad, d->name_loc));
    scope_set(l, &scope, "step", val_tensor(step, d->name_loc));
    if (l->opt_hess && l->opt_hess[param] >= 0)
        scope_set(l, &scope, "hess", val_tensor(l->opt_hess[param], d->name_loc));

    bool saved_returned = l->returned;
    l->returned = false;
    if (ok)
        exec_block(l, &d->body);
    l->returned = saved_returned;
    if (diag_error_count() != errors && opt->loc.file && opt->setting)
        diag_note(opt->loc, "in sweep combination %s of optimizer '%s', as configured here",
                  opt->setting, d->name);
    else if (diag_error_count() != errors && opt->loc.file &&
             (opt->nargs > 0 || d->loc.file != opt->loc.file))
        diag_note(opt->loc, "while expanding optimizer '%s', as configured here", d->name);
    ok = ok && diag_error_count() == errors;
    p = &l->module->vars[param]; /* state declarations may have moved it */

    /* Every rebound name becomes an assignment; a state whose name ends up
     * bound to something other than a tensor of its shape is an error. */
    if (ok) {
        Value *np = scope_find(&scope, "param");
        if (np->kind == VAL_TENSOR && np->tensor != param_read)
            ir_assign(g, param, np->tensor, d->name_loc);
        else
            diag_warning(d->name_loc, "optimizer '%s' never assigns 'param', so training "
                         "leaves the parameters unchanged", d->name);
        for (int i = 0; i < l->opt_states.len; i++) {
            const struct OptState *st = &l->opt_states.data[i];
            Value *v = scope_find(&scope, st->name);
            int t = as_tensor(l, v, "a state");
            if (t < 0) {
                ok = false;
                continue;
            }
            Shape shape = ir_node(g, t)->shape;
            if (ir_node(g, t)->dtype != p->dtype) {
                diag_error(v->loc, "state '%s' must keep the element type %s, but it "
                           "becomes %s", st->name, dtype_name(p->dtype),
                           dtype_name(ir_node(g, t)->dtype));
                ok = false;
                continue;
            }
            /* A state keeps the shape it was declared with: its
             * parameter's, or that of its full_like initial value. */
            Shape declared = l->module->vars[st->var].shape;
            if (!ir_can_broadcast(&shape, &declared)) {
                diag_error(v->loc, "state '%s' must keep its declared shape %s, but it "
                           "becomes %s", st->name, shape_text(l, &declared),
                           shape_text(l, &shape));
                ok = false;
                continue;
            }
            t = ir_broadcast(g, t, declared, v->loc);
            if (t != st->read)
                ir_assign(g, st->var, t, v->loc);
        }
    }

    scope_free(&scope);
    l->scope = saved_scope;
    l->mode = saved_mode;
    l->current_decl = saved_decl;
    diag_set_context(saved_context);
    return ok;
}
