/* zo.c - the zeroth-order gradient pass: the `gradient = zo(...)` setting
 * and the perturbation and update graphs of a cell (see zo.h). */
#include "zo.h"

#include <math.h>
#include <string.h>

#include "../runtime/philox.h"
#include "autodiff.h"
#include "builtins.h"
#include "lower.h"

/* ---- the setting ----------------------------------------------------------- */

bool zo_is_setting(const Expr *e)
{
    const Expr *callee = e->kind == EX_CALL ? e->call.callee : e;
    return callee->kind == EX_NAME && strcmp(callee->name, "zo") == 0;
}

/* Returns the name an argument value spells: `sign` names a builtin and
 * `none` is a value, so both arrive as such rather than as symbols. */
static const char *symbol_name(const Value *v)
{
    switch (v->kind) {
    case VAL_SYMBOL: return v->string;
    case VAL_BUILTIN: return v->builtin->name;
    case VAL_NONE: return "none";
    default: return "";
    }
}

/* Returns the index of `symbol` in names[0..n), or -1. */
static int choose(const char *symbol, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcmp(symbol, names[i]) == 0)
            return i;
    return -1;
}

/* Reads `backprop`: a pattern or a list of patterns, as strings. */
static bool backprop_patterns(Lower *l, const Arg *arg, const Value *v, ZoSpec *out)
{
    int n = v->kind == VAL_LIST ? v->list.n : 1;
    const Value *items = v->kind == VAL_LIST ? v->list.items : v;
    out->backprop = arena_calloc(l->arena, (size_t)n + 1, sizeof(char *));
    out->nbackprop = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].kind != VAL_STRING) {
            diag_error(arg->value->loc, "argument 'backprop' of zo must be a parameter name "
                       "pattern in quotes, or a list of them");
            return false;
        }
        out->backprop[out->nbackprop++] = items[i].string;
    }
    return true;
}

static bool zo_arg(Lower *l, const Arg *arg, const Value *v, ZoSpec *out)
{
    if (strcmp(arg->name, "backprop") == 0)
        return backprop_patterns(l, arg, v, out);
    if (strcmp(arg->name, "conservative") == 0) {
        if (v->kind != VAL_BOOL) {
            diag_error(arg->value->loc, "argument 'conservative' of zo must be true or false");
            return false;
        }
        out->conservative = v->boolean;
        return true;
    }
    if (strcmp(arg->name, "eps") == 0) {
        if (v->kind != VAL_NUMBER || !(v->number.value > 0) || !isfinite(v->number.value)) {
            diag_error(arg->value->loc, "argument 'eps' of zo must be a finite number > 0");
            return false;
        }
        out->eps = v->number.value;
        return true;
    }
    if (strcmp(arg->name, "queries") == 0) {
        int64_t q;
        if (!val_to_int(v, "argument 'queries' of zo", 1, 64, &q))
            return false;
        out->queries = (int)q;
        return true;
    }
    if (strcmp(arg->name, "sparsity") == 0) {
        if (v->kind != VAL_NUMBER || !(v->number.value >= 0 && v->number.value < 1)) {
            diag_error(arg->value->loc, "argument 'sparsity' of zo must be a number in [0, 1)");
            return false;
        }
        out->sparsity = v->number.value;
        return true;
    }
    const char *symbol = symbol_name(v);
    if (strcmp(arg->name, "mode") == 0) {
        static const char *const modes[] = {"two_sided", "one_sided"};
        int i = choose(symbol, modes, 2);
        if (i >= 0)
            out->mode = (ZoMode)i;
        else
            diag_error(arg->value->loc, "argument 'mode' of zo must be two_sided or one_sided");
        return i >= 0;
    }
    if (strcmp(arg->name, "projection") == 0) {
        static const char *const projections[] = {"value", "sign"};
        int i = choose(symbol, projections, 2);
        if (i >= 0)
            out->sign = i == 1;
        else
            diag_error(arg->value->loc, "argument 'projection' of zo must be value or sign");
        return i >= 0;
    }
    if (strcmp(arg->name, "mask") == 0) {
        static const char *const masks[] = {"random", "magnitude"};
        int i = choose(symbol, masks, 2);
        if (i >= 0)
            out->magnitude_mask = i == 1;
        else
            diag_error(arg->value->loc, "argument 'mask' of zo must be random or magnitude");
        return i >= 0;
    }
    static const char *const blocks[] = {"none", "tensor", "layer"};
    int i = choose(symbol, blocks, 3);
    if (i >= 0)
        out->blocks = (ZoBlocks)i;
    else
        diag_error(arg->value->loc, "argument 'blocks' of zo must be none, tensor or layer");
    return i >= 0;
}

bool zo_eval_setting(Lower *l, const Expr *e, ZoSpec *out)
{
    static const char *const names[] = {"eps", "queries", "mode", "projection", "sparsity",
                                        "blocks", "backprop", "conservative", "mask"};
    enum { NNAMES = (int)BOCB_ARRAY_LEN(names) };
    *out = (ZoSpec){.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                    .loc = e->loc};
    bool ok = true, given[NNAMES] = {false};
    for (int a = 0; e->kind == EX_CALL && a < e->call.nargs; a++) {
        const Arg *arg = &e->call.args[a];
        Value v = eval_expr(l, arg->value);
        if (!arg->name) {
            diag_error(arg->value->loc, "arguments of zo must be given by name");
            ok = false;
            continue;
        }
        int p = 0;
        while (p < NNAMES && strcmp(names[p], arg->name) != 0)
            p++;
        if (p == NNAMES) {
            diag_error(arg->name_loc, "zo has no argument '%s'; its arguments are eps, "
                       "queries, mode, projection, sparsity, mask, blocks, backprop and "
                       "conservative",
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
        ok &= v.kind != VAL_ERROR && zo_arg(l, arg, &v, out);
    }
    return ok;
}

/* ---- z ---------------------------------------------------------------------- */

#define ZO_TWO_PI 6.283185307179586476925286766559

/* Taylor coefficients of sin(x) / x in powers of x^2, highest first. On
 * |x| <= pi/2 the first omitted term is below 1e-9. */
static const double sin_series[] = {
    1.0 / 6227020800.0, -1.0 / 39916800.0, 1.0 / 362880.0, -1.0 / 5040.0,
    1.0 / 120.0,        -1.0 / 6.0,        1.0,
};

/* Writes the C reference with the graph's operation order for one type. */
#define ZO_NORMAL(T, random)                                                          \
    {                                                                                 \
        T u1 = random(key_a, counter, index), u2 = random(key_b, counter, index);     \
        T r = (T)sqrt((T)-2 * (T)log((T)1 - u1));                                    \
        T t = u2 - (T)floor(u2 + (T)0.5);                                             \
        T w = (T)fabs(t) - (T)0.25;                                                   \
        T x = (T)(ZO_TWO_PI) * w;                                                      \
        T x2 = x * x;                                                                 \
        T p = (T)sin_series[0];                                                       \
        for (size_t i = 1; i < BOCB_ARRAY_LEN(sin_series); i++)                       \
            p = p * x2 + (T)sin_series[i];                                            \
        return -(r * (x * p));                                                        \
    }

float zo_normal_f32(float key_a, float key_b, float counter, uint64_t index)
    ZO_NORMAL(float, philox_random_f32)

double zo_normal_f64(double key_a, double key_b, double counter, uint64_t index)
    ZO_NORMAL(double, philox_random_f64)

#undef ZO_NORMAL

/* A constant of type dt broadcast to `shape`. */
static int filled(IrGraph *g, DType dt, double value, Shape shape, SrcLoc loc)
{
    return ir_broadcast(g, ir_const(g, dt, value, loc), shape, loc);
}

/* Variables per parameter in ZoBuild.keys: the keys of the two uniforms of
 * z, the key of the sparsity mask, and the buffer that holds the
 * parameter's sparsity under mask = magnitude (each -1 when unused). */
enum { KEYS = 4 };

/* Builds z for parameter `param` at the rank-0 counter node `counter`:
 * zo_normal_f32/f64 as IR, elementwise, so it fuses into its user. With
 * sparsity s, an element whose uniform number from the third key is below
 * s gets 0; with mask = magnitude, s is the parameter's own buffer. */
static int normal_node(IrGraph *g, const int *keys, double sparsity, int param, int counter,
                       SrcLoc loc)
{
    const IrVar *v = &g->module->vars[param];
    DType dt = v->dtype;
    Shape s = v->shape;
    int u1 = ir_random(g, ir_var_read(g, keys[KEYS * param], loc), counter, s, loc);
    int u2 = ir_random(g, ir_var_read(g, keys[KEYS * param + 1], loc), counter, s, loc);
    int log1 = ir_unary(g, IR_LOG, ir_binary(g, IR_SUB, filled(g, dt, 1, s, loc), u1, loc), loc);
    int r = ir_unary(g, IR_SQRT, ir_binary(g, IR_MUL, filled(g, dt, -2, s, loc), log1, loc), loc);
    int half = ir_binary(g, IR_ADD, u2, filled(g, dt, 0.5, s, loc), loc);
    int t = ir_binary(g, IR_SUB, u2, ir_unary(g, IR_FLOOR, half, loc), loc);
    int w = ir_binary(g, IR_SUB, ir_unary(g, IR_ABS, t, loc), filled(g, dt, 0.25, s, loc), loc);
    int x = ir_binary(g, IR_MUL, filled(g, dt, ZO_TWO_PI, s, loc), w, loc);
    int x2 = ir_binary(g, IR_MUL, x, x, loc);
    int p = filled(g, dt, sin_series[0], s, loc);
    for (size_t i = 1; i < BOCB_ARRAY_LEN(sin_series); i++)
        p = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, p, x2, loc),
                      filled(g, dt, sin_series[i], s, loc), loc);
    int z = ir_unary(g, IR_NEG, ir_binary(g, IR_MUL, r, ir_binary(g, IR_MUL, x, p, loc), loc),
                     loc);
    if (sparsity == 0)
        return z;
    int u3 = ir_random(g, ir_var_read(g, keys[KEYS * param + 2], loc), counter, s, loc);
    int level = keys[KEYS * param + 3] >= 0
                    ? ir_broadcast(g, ir_var_read(g, keys[KEYS * param + 3], loc), s, loc)
                    : filled(g, dt, sparsity, s, loc);
    int keep = ir_binary(g, IR_GE, u3, level, loc);
    return ir_select(g, keep, z, filled(g, dt, 0, s, loc), loc);
}

/* ---- the graphs ---------------------------------------------------------- */

static int scalar_input(IrGraph *g, const char *name, DType dt, SrcLoc loc)
{
    return ir_input(g, name, dt, shape_scalar(), loc);
}

/* Points every operand of the nodes from `first` on that reads variable
 * `var` at `value` instead. */
static void redirect_reads(IrGraph *g, int first, int var, int value)
{
    for (int i = first; i < g->nnodes; i++) {
        IrNode *n = &g->nodes[i];
        for (int k = 0; k < n->nin; k++) {
            const IrNode *in = &g->nodes[n->in[k]];
            if (in->op == IR_VAR && in->attr.var == var && n->in[k] != value)
                n->in[k] = value;
        }
    }
}

/* What the builders of the two graphs share. */
typedef struct ZoBuild {
    const ZoSpec *zo;
    const int *params; /* the trainable parameters, in module order */
    int nparams;
    const int *keys;   /* per module variable: KEYS variables */
    const int *block;  /* per module variable: the block of a parameter */
    int nblocks;
} ZoBuild;

/* Returns a rank-0 boolean node: the graph's zo_block input equals the
 * block of parameter p. */
static int block_active(IrGraph *g, const ZoBuild *b, int p, int zo_block, SrcLoc loc)
{
    DType dt = g->nodes[zo_block].dtype;
    return ir_binary(g, IR_EQ, zo_block, ir_const(g, dt, b->block[p], loc), loc);
}

/* The perturbation graph: p += zo_scale * z for every parameter (of the
 * current block). */
static void build_perturb(IrGraph *g, const ZoBuild *b, DType dt, SrcLoc loc)
{
    int scale = scalar_input(g, "zo_scale", dt, loc);
    int counter = scalar_input(g, "zo_counter", dt, loc);
    int zo_block = b->nblocks > 1 ? scalar_input(g, "zo_block", dt, loc) : -1;
    for (int i = 0; i < b->nparams; i++) {
        int p = b->params[i];
        Shape s = g->module->vars[p].shape;
        int own_scale = scale;
        if (zo_block >= 0)
            own_scale = ir_select(g, block_active(g, b, p, zo_block, loc), scale,
                                  ir_const(g, dt, 0, loc), loc);
        int z = normal_node(g, b->keys, b->zo->sparsity, p, counter, loc);
        int delta = ir_binary(g, IR_MUL, ir_broadcast(g, own_scale, s, loc), z, loc);
        ir_assign(g, p, ir_binary(g, IR_ADD, ir_var_read(g, p, loc), delta, loc), loc);
    }
}

/* The update graph: per parameter, restore theta from the last query's
 * perturbation, form the estimate (1/q) sum_k pg_k z_k (the runner passes
 * sign(pg_k) as pg_k with projection = sign), and expand the optimizer on
 * (restored theta, estimate). With blocks, the assignments of a parameter and of its
 * states take effect only when its block is the current one. */
static bool build_update(Lower *l, IrGraph *g, const Configured *opt,
                         const CellOptions *options, const ZoBuild *b, CompiledCell *out)
{
    const ZoSpec *zo = b->zo;
    DType dt = l->dtype;
    SrcLoc loc = zo->loc;
    l->graph = g;
    int lr = scalar_input(g, "lr", dt, opt->decl->name_loc);
    int step = lower_step_input(l, opt->decl->name_loc);
    int pg[64], counter[64];
    for (int k = 0; k < zo->queries; k++) {
        char name[32];
        snprintf(name, sizeof name, "zo_pg.%d", k);
        pg[k] = scalar_input(g, name, dt, loc);
        snprintf(name, sizeof name, "zo_counter.%d", k);
        counter[k] = scalar_input(g, name, dt, loc);
    }
    int zo_block = b->nblocks > 1 ? scalar_input(g, "zo_block", dt, loc) : -1;
    int nvars = g->module->nvars;
    int *active = xcalloc((size_t)nvars + 1, sizeof *active);

    /* Two-sided runs end at theta - eps z, one-sided ones at theta + eps z. */
    double restore = zo->mode == ZO_TWO_SIDED ? zo->eps : -zo->eps;
    bool ok = true;
    for (int i = 0; ok && i < b->nparams; i++) {
        int p = b->params[i];
        Shape s = g->module->vars[p].shape;
        int grad = -1, last_z = -1;
        for (int k = 0; k < zo->queries; k++) {
            int z = normal_node(g, b->keys, zo->sparsity, p, counter[k], loc);
            int term = ir_binary(g, IR_MUL, ir_broadcast(g, pg[k], s, loc), z, loc);
            grad = grad < 0 ? term : ir_binary(g, IR_ADD, grad, term, loc);
            last_z = z;
        }
        if (zo->queries > 1)
            grad = ir_binary(g, IR_MUL, grad, filled(g, dt, 1.0 / zo->queries, s, loc), loc);
        int restored = ir_binary(g, IR_ADD, ir_var_read(g, p, loc),
                                 ir_binary(g, IR_MUL, filled(g, dt, restore, s, loc), last_z,
                                           loc),
                                 loc);
        if (zo_block >= 0)
            active[p] = block_active(g, b, p, zo_block, loc);
        int first = g->nnodes;
        ok = expand_in_groups(l, opt, options, p, grad, lr, step, &out->param_groups[p]);
        redirect_reads(g, first, p, restored);
    }
    if (ok && zo_block >= 0) {
        /* Module variables may have grown: the optimizer's states. */
        nvars = g->module->nvars;
        int *conds = xcalloc((size_t)nvars + 1, sizeof *conds);
        for (int v = 0; v < nvars; v++) {
            const IrVar *var = &g->module->vars[v];
            int owner = var->kind == IR_VAR_STATE ? var->owner : v;
            conds[v] = owner >= 0 && g->module->vars[owner].kind == IR_VAR_PARAM
                           ? active[owner]
                           : -1;
        }
        ir_guard_assigns_by_var(g, conds, loc);
        free(conds);
    }
    free(active);
    return ok;
}

/* Numbers the blocks of the parameters: one per tensor, or one per layer
 * (the name up to its last '.') in order of first appearance. Returns the
 * number of blocks, 1 without blocks. */
static int number_blocks(const IrModule *m, const ZoSpec *zo, const int *params, int nparams,
                         int *block)
{
    if (zo->blocks == ZO_BLOCKS_NONE)
        return 1;
    int n = 0;
    for (int i = 0; i < nparams; i++) {
        const char *name = m->vars[params[i]].name, *dot = strrchr(name, '.');
        size_t len = zo->blocks == ZO_BLOCKS_LAYER && dot ? (size_t)(dot - name) : strlen(name);
        block[params[i]] = n;
        for (int j = 0; j < i && zo->blocks == ZO_BLOCKS_LAYER; j++) {
            const char *other = m->vars[params[j]].name, *odot = strrchr(other, '.');
            size_t olen = odot ? (size_t)(odot - other) : strlen(other);
            if (olen == len && strncmp(name, other, len) == 0) {
                block[params[i]] = block[params[j]];
                break;
            }
        }
        if (block[params[i]] == n)
            n++;
    }
    return n;
}

/* Returns true when `opt` is sgd without momentum and weight decay, whose
 * step is exactly p - lr g. */
static bool is_plain_sgd(const Configured *opt)
{
    if (strcmp(opt->decl->name, "sgd") != 0)
        return false;
    for (int k = 0; k < opt->nargs; k++) {
        bool matters = strcmp(opt->names[k], "momentum") == 0 ||
                       strcmp(opt->names[k], "weight_decay") == 0;
        const Value *v = &opt->values[k];
        if (matters && !(v->kind == VAL_NUMBER && v->number.value == 0))
            return false;
    }
    return true;
}

/* Reports each backprop pattern that selects no parameter. */
static bool check_patterns(const IrModule *m, const ZoSpec *zo)
{
    bool ok = true;
    for (int i = 0; i < zo->nbackprop; i++) {
        ParamGroup one = {.globs = &zo->backprop[i], .nglobs = 1};
        bool used = false;
        for (int v = 0; v < m->nvars && !used; v++)
            used = group_selects(&one, &m->vars[v]);
        if (!used) {
            diag_error(zo->loc, "backprop pattern '%s' of zo selects no parameter",
                       zo->backprop[i]);
            ok = false;
        }
    }
    return ok;
}

/* Hybrid training: appends to the training graph the gradient of the loss
 * with respect to `params` and their optimizer updates. */
static bool update_by_backprop(Lower *l, const Configured *opt, const CellOptions *options,
                               const int *params, int nparams, CompiledCell *out)
{
    if (nparams == 0)
        return true;
    IrGraph *train = out->train;
    SrcLoc oloc = opt->decl->name_loc;
    l->graph = train;
    int lr = scalar_input(train, "lr", l->dtype, oloc);
    int step = lower_step_input(l, oloc);
    int *grads = xcalloc((size_t)nparams + 1, sizeof *grads);
    int loss = ir_find_output(train, "loss");
    l->opt_hess = NULL;
    bool ok = ad_backward(train, loss, params, nparams, grads);
    for (int i = 0; ok && i < nparams; i++)
        ok = expand_in_groups(l, opt, options, params[i], grads[i], lr, step,
                              &out->param_groups[params[i]]);
    free(grads);
    return ok;
}

bool zo_compile(Lower *l, const Configured *opt, const CellOptions *options,
                CompiledCell *out)
{
    const ZoSpec *zo = options->zo;
    IrModule *m = &out->module;
    DType dt = l->dtype;
    SrcLoc loc = zo->loc;
    if (options->clip > 0) {
        diag_error(loc, "gradient = zo does not support clip: the estimate has no "
                   "gradient norm to clip");
        return false;
    }
    if (zo->conservative && !is_plain_sgd(opt)) {
        diag_error(loc, "zo(conservative = true) takes the steps p - lr g and p + lr g itself, "
                   "so it needs optimizer sgd without momentum and weight decay, not '%s'",
                   opt->label ? opt->label : opt->decl->name);
        return false;
    }

    int nvars = m->nvars, nparams = 0, nbackprop = 0;
    int *params = xcalloc((size_t)nvars + 1, sizeof *params);
    int *backprop = xcalloc((size_t)nvars + 1, sizeof *backprop);
    int *keys = xmalloc(size_mul(KEYS * (size_t)nvars + 1, sizeof *keys));
    for (int i = 0; i < KEYS * nvars; i++)
        keys[i] = -1;
    int *block = xcalloc((size_t)nvars + 1, sizeof *block);
    out->param_groups = arena_calloc(l->arena, (size_t)nvars + 1, sizeof(char *));
    ParamGroup selected = {.globs = zo->backprop, .nglobs = zo->nbackprop};
    for (int v = 0; v < nvars; v++) {
        if (!ir_var_trainable(&m->vars[v]))
            continue;
        if (group_selects(&selected, &m->vars[v]))
            backprop[nbackprop++] = v;
        else
            params[nparams++] = v;
    }
    bool ok = check_patterns(m, zo) && update_by_backprop(l, opt, options, backprop,
                                                         nbackprop, out);

    /* The training graph's assignments (batch norm's running statistics,
     * backpropagated updates) take effect only in the pass where
     * zo_commit > 0. */
    IrGraph *train = out->train;
    for (int i = 0; ok && i < train->nnodes; i++) {
        if (train->nodes[i].op == IR_ASSIGN) {
            int commit = scalar_input(train, "zo_commit", dt, loc);
            ir_guard_assigns(train, ir_binary(train, IR_GT, commit, ir_const(train, dt, 0.5,
                                                                               loc), loc),
                             loc);
            break;
        }
    }
    int nkeys = zo->sparsity > 0 ? 3 : 2;
    for (int i = 0; i < nparams; i++) {
        int p = params[i];
        for (int k = 0; k < nkeys; k++) {
            const char *name = arena_printf(l->arena, "%s.zo_key_%c", m->vars[p].name,
                                            'a' + k);
            keys[KEYS * p + k] = ir_module_add_var(m, name, IR_VAR_BUFFER, m->vars[p].dtype,
                                                   shape_scalar(), IR_INIT_UNIFORM, 1.0, -1,
                                                   m->vars[p].loc);
        }
        if (zo->sparsity > 0 && zo->magnitude_mask)
            keys[KEYS * p + 3] = ir_module_add_var(
                m, arena_printf(l->arena, "%s.zo_sparsity", m->vars[p].name), IR_VAR_BUFFER,
                m->vars[p].dtype, shape_scalar(), IR_INIT_CONST, zo->sparsity, -1,
                m->vars[p].loc);
    }

    ZoGraphs *zg = arena_calloc(l->arena, 1, sizeof *zg);
    ZoBuild b = {.zo = zo, .params = params, .nparams = nparams, .keys = keys,
                 .block = block};
    b.nblocks = number_blocks(m, zo, params, nparams, block);
    zg->spec = *zo;
    zg->nblocks = b.nblocks;
    zg->perturb = ir_graph_new(m, "zo_perturb");
    zg->update = ir_graph_new(m, "zo_update");
    out->zo = zg;

    build_perturb(zg->perturb, &b, dt, loc);
    l->opt_hess = NULL;
    ok = ok && build_update(l, zg->update, opt, options, &b, out);
    l->graph = train;
    free(params);
    free(backprop);
    free(keys);
    free(block);
    if (ok) {
        ir_dce(zg->perturb);
        ir_dce(zg->update);
        BOCB_ASSERT(ir_verify(zg->perturb));
        BOCB_ASSERT(ir_verify(zg->update));
    }
    return ok;
}

void zo_graphs_free(ZoGraphs *zg)
{
    if (!zg)
        return;
    ir_graph_free(zg->perturb);
    ir_graph_free(zg->update);
    zg->perturb = zg->update = NULL;
}
