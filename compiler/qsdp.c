/* qsdp.c - the `quantize` statements and the rewrite that simulates
 * quantized communication in one process (see qsdp.h).
 *
 * The weight path is rewritten after the forward pass is built, so the
 * forward pass and the backward pass both compute at the quantized
 * weights (in a sharded run both gather them), while the optimizer,
 * expanded later, reads the full-precision weights it owns. The gradient
 * path wraps each gradient before the optimizer sees it. Gradients pass
 * through the `quantize`/`dequantize` pair unchanged (straight-through),
 * so the gradient with respect to the quantized weights is applied to the
 * full-precision ones.
 */
#include "qsdp.h"

#include <string.h>

#include "builtins.h"
#include "ir_spatial.h"

/* The tag is ((var * QSDP_MAX_RANKS + rank) * 4 + kind), below 2^31. */
enum { QSDP_MAX_VARS = 1 << 21 };

uint32_t qsdp_tag(int var, QsdpKind kind, int rank)
{
    BOCB_ASSERT(var >= 0 && var < QSDP_MAX_VARS && rank >= 0 && rank < QSDP_MAX_RANKS);
    return ((uint32_t)var * QSDP_MAX_RANKS + (uint32_t)rank) * 4 + (uint32_t)kind;
}

/* ---- the statement ---------------------------------------------------------- */

static const char *const targets[] = {"weights", "gradients"};
static const char *const arg_names[] = {"bits", "bucket", "rounding", "iterate"};
static const char *const rounding_names[] = {"nearest", "stochastic", "shift"};

enum { ARG_BITS, ARG_BUCKET, ARG_ROUNDING, ARG_ITERATE, NARGS };

static bool resolve_rounding(const Value *v, RtRounding *out)
{
    if (v->kind == VAL_ERROR)
        return false;
    if (v->kind == VAL_SYMBOL) {
        for (int i = 0; i < (int)BOCB_ARRAY_LEN(rounding_names); i++) {
            if (strcmp(v->string, rounding_names[i]) == 0) {
                *out = (RtRounding)i;
                return true;
            }
        }
        const char *near = closest_name(v->string, rounding_names,
                                        (int)BOCB_ARRAY_LEN(rounding_names));
        if (near) {
            diag_error(v->loc, "unknown rounding '%s'; did you mean '%s'?", v->string, near);
            return false;
        }
    }
    diag_error(v->loc, "'rounding' must be nearest, stochastic or shift");
    return false;
}

/* Evaluates one named argument of weights(...) or gradients(...). */
static bool resolve_arg(Lower *l, const Arg *arg, bool weights, bool *given, QuantSetting *q)
{
    const char *target = weights ? "weights" : "gradients";
    if (!arg->name) {
        diag_error(arg->value->loc, "arguments of %s(...) must be given by name: bits, "
                   "bucket, rounding%s", target, weights ? " or iterate" : "");
        return false;
    }
    int k = 0;
    while (k < NARGS && strcmp(arg_names[k], arg->name) != 0)
        k++;
    if (k == NARGS || (k == ARG_ITERATE && !weights)) {
        const char *near = closest_name(arg->name, arg_names, weights ? NARGS : ARG_ITERATE);
        if (near)
            diag_error(arg->name_loc, "%s(...) has no argument '%s'; did you mean '%s'?",
                       target, arg->name, near);
        else
            diag_error(arg->name_loc, "%s(...) has no argument '%s'; it takes %s", target,
                       arg->name, weights ? "bits, bucket, rounding and iterate"
                                          : "bits, bucket and rounding");
        return false;
    }
    if (given[k]) {
        diag_error(arg->name_loc, "argument '%s' is given twice", arg->name);
        return false;
    }
    given[k] = true;

    Value v = eval_expr(l, arg->value);
    if (v.kind == VAL_ERROR)
        return false;
    int64_t n;
    switch (k) {
    case ARG_BITS:
        if (!val_to_int(&v, "'bits'", RT_QUANT_MIN_BITS, RT_QUANT_MAX_BITS, &n))
            return false;
        q->bits = (int)n;
        return true;
    case ARG_BUCKET:
        if (!val_to_int(&v, "'bucket'", 1, INT64_C(1) << 30, &q->bucket))
            return false;
        return true;
    case ARG_ROUNDING:
        return resolve_rounding(&v, &q->rounding);
    default:
        if (v.kind != VAL_BOOL) {
            diag_error(v.loc, "'iterate' must be true or false");
            return false;
        }
        q->iterate = v.boolean;
        return true;
    }
}

bool qsdp_resolve(Lower *l, const Stmt *s, ExperimentSpec *spec)
{
    const Expr *e = s->directive.value;
    int target = -1;
    if (e->kind == EX_CALL && e->call.callee->kind == EX_NAME)
        for (int i = 0; i < 2; i++)
            if (strcmp(e->call.callee->name, targets[i]) == 0)
                target = i;
    if (target < 0) {
        diag_error(e->loc, "'quantize' expects weights(...) or gradients(...)");
        return false;
    }
    bool weights = target == 0;
    QuantSetting *q = weights ? &spec->quantize_weights : &spec->quantize_gradients;
    bool ok = true;
    if (q->on) {
        diag_error(s->loc, "'quantize %s' is given twice", targets[target]);
        diag_note(q->loc, "first given here");
        ok = false;
    }

    /* Weights default to the shifted grid, whose expected value is the
     * weight; gradients to stochastic rounding, the unbiased QSGD-style
     * compressor. */
    QuantSetting out = {
        .on = true,
        .bits = 8,
        .bucket = 1024,
        .rounding = weights ? RT_ROUND_SHIFT : RT_ROUND_STOCHASTIC,
        .loc = s->loc,
    };
    bool given[NARGS] = {false};
    for (int i = 0; i < e->call.nargs; i++)
        ok &= resolve_arg(l, &e->call.args[i], weights, given, &out);
    /* A failed statement is kept too, so that a second one is reported;
     * the experiment does not run anyway. */
    *q = out;
    return ok;
}

/* ---- the rewrite ------------------------------------------------------------ */

static int key_read(Lower *l, IrGraph *g, SrcLoc loc)
{
    int var = ir_module_find_var(g->module, QSDP_KEY_VAR);
    if (var < 0)
        var = ir_module_add_var(g->module, QSDP_KEY_VAR, IR_VAR_BUFFER, l->dtype,
                                shape_scalar(), IR_INIT_UNIFORM, 1.0, -1, loc);
    return ir_var_read(g, var, loc);
}

/* Returns the value that a receiver of x decodes: x quantized with
 * setting q by its sender (the codes and metadata that cross the wire),
 * then dequantized. */
static int send_quantized(IrGraph *g, int x, int key, int step, const QuantSetting *q,
                          uint32_t tag, SrcLoc loc)
{
    int words = ir_quantize(g, x, key, step, q->bits, q->bucket, q->rounding, tag, loc);
    return ir_dequantize(g, words, loc);
}

static int append_node(IrGraph *g, const IrNode *n)
{
    if (g->nnodes == g->cap_nodes)
        vec_grow((void **)&g->nodes, &g->cap_nodes, g->nnodes + 1, sizeof *g->nodes);
    g->nodes[g->nnodes] = *n;
    return g->nnodes++;
}

static int append_copy(IrGraph *g, const IrNode *n, const int *remap)
{
    IrNode copy = *n;
    for (int j = 0; j < copy.nin; j++)
        copy.in[j] = remap[copy.in[j]];
    return append_node(g, &copy);
}

static bool is_param_read(const IrGraph *g, const IrNode *n)
{
    return n->op == IR_VAR && g->module->vars[n->attr.var].kind == IR_VAR_PARAM;
}

void qsdp_quantize_weight_reads(Lower *l, IrGraph *g, const QuantSetting *w,
                                bool first_step_only)
{
    IrNode *old = g->nodes;
    int n = g->nnodes;
    int *remap = xcalloc((size_t)n + 1, sizeof *remap);
    g->nodes = NULL;
    g->nnodes = g->cap_nodes = 0;

    /* Leaves have no operands, so moving all of them to the front keeps
     * the order topological and puts every read before its quantizer. */
    for (int i = 0; i < n; i++)
        if (ir_op_class(old[i].op) == IR_CLASS_LEAF)
            remap[i] = append_copy(g, &old[i], remap);

    IrGraph *saved = l->graph;
    l->graph = g;
    int step = lower_step_input(l, w->loc);
    l->graph = saved;
    int key = key_read(l, g, w->loc);
    int first_step = -1;
    if (first_step_only)
        first_step = ir_binary(g, IR_EQ, step, ir_const(g, l->dtype, 1.0, w->loc), w->loc);

    for (int i = 0; i < n; i++) {
        if (!is_param_read(g, &old[i]))
            continue;
        int var = old[i].attr.var, raw = remap[i];
        int q = send_quantized(g, raw, key, step, w, qsdp_tag(var, QSDP_WEIGHTS, 0),
                               old[i].loc);
        if (first_step >= 0)
            q = ir_select(g, ir_broadcast(g, first_step, old[i].shape, w->loc), q, raw,
                          w->loc);
        remap[i] = q;
    }
    for (int i = 0; i < n; i++)
        if (ir_op_class(old[i].op) != IR_CLASS_LEAF)
            remap[i] = append_copy(g, &old[i], remap);
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i].node = remap[g->outputs[i].node];
    free(remap);
    free(old);
}

int qsdp_quantize_gradient(Lower *l, IrGraph *g, int param, int grad, const QuantSetting *q,
                           int rank)
{
    IrGraph *saved = l->graph;
    l->graph = g;
    int step = lower_step_input(l, q->loc);
    l->graph = saved;
    return send_quantized(g, grad, key_read(l, g, q->loc), step, q,
                          qsdp_tag(param, QSDP_GRADIENTS, rank), q->loc);
}

void qsdp_quantize_param_assigns(Lower *l, IrGraph *g, const QuantSetting *w)
{
    IrNode *old = g->nodes;
    int n = g->nnodes;
    int *remap = xcalloc((size_t)n + 1, sizeof *remap);
    g->nodes = NULL;
    g->nnodes = g->cap_nodes = 0;

    /* An assignment has no users, so each one to a parameter can move to
     * the end, after the quantizer of its value. */
    for (int i = 0; i < n; i++) {
        bool param_assign = old[i].op == IR_ASSIGN &&
                            g->module->vars[old[i].attr.var].kind == IR_VAR_PARAM;
        remap[i] = param_assign ? -1 : append_copy(g, &old[i], remap);
    }
    IrGraph *saved = l->graph;
    l->graph = g;
    int step = lower_step_input(l, w->loc);
    l->graph = saved;
    int key = key_read(l, g, w->loc);
    for (int i = 0; i < n; i++) {
        if (remap[i] >= 0)
            continue;
        int var = old[i].attr.var;
        int q = send_quantized(g, remap[old[i].in[0]], key, step, w,
                               qsdp_tag(var, QSDP_ITERATE, 0), old[i].loc);
        ir_assign(g, var, q, old[i].loc);
    }
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i].node = remap[g->outputs[i].node];
    free(remap);
    free(old);
}

/* ---- sharded training ---------------------------------------------------------- */

int64_t qsdp_chunk(int64_t numel, int count, int64_t align)
{
    int64_t blocks = (numel + align - 1) / align;
    return (blocks + count - 1) / count * align;
}

void qsdp_reserve_key(Lower *l, const CellOptions *options)
{
    if (!options->quantize_weights.on && !options->quantize_gradients.on)
        return;
    IrModule *m = l->module;
    if (ir_module_find_var(m, QSDP_KEY_VAR) < 0)
        ir_module_add_var(m, QSDP_KEY_VAR, IR_VAR_BUFFER, l->dtype, shape_scalar(),
                          IR_INIT_UNIFORM, 1.0, -1, NO_LOC);
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

int64_t qsdp_alignment(const QuantSetting *weights, const QuantSetting *gradients)
{
    int64_t align = 1;
    const QuantSetting *q[2] = {weights, gradients};
    for (int i = 0; i < 2; i++)
        if (q[i]->on)
            align = align / gcd64(align, q[i]->bucket) * q[i]->bucket;
    return align;
}

/* Returns the first node of g that is not elementwise arithmetic, a
 * broadcast, a leaf or an assignment, or -1. */
static int first_non_elementwise(const IrGraph *g)
{
    for (int i = 0; i < g->nnodes; i++) {
        IrOpClass c = ir_op_class(g->nodes[i].op);
        if (c == IR_CLASS_REDUCTION || c == IR_CLASS_LIBRARY ||
            (c == IR_CLASS_SHAPE && g->nodes[i].op != IR_BROADCAST))
            return i;
    }
    return -1;
}

/* The rewrite of the training step into gather and reduce steps. */
typedef struct ShardRewrite {
    const IrNode *old;    /* the graph before the rewrite */
    IrGraph *g;           /* receives the new nodes */
    int *view_of;         /* old node -> parameter k it is a view of, or -1 */
    int *map;             /* old node -> new node */
    int *backward_copy;   /* old forward view -> its copy for the backward pass */
    int *gathered[2];     /* per parameter: its gather for the forward and
                             the backward pass, or -1 */
} ShardRewrite;

/* Returns true for the ops whose result contains their operand's elements
 * rearranged. A parameter's views are its read and the forward reshapes
 * and permutations of a view. */
static bool is_view_op(IrOp op)
{
    return op == IR_RESHAPE || op == IR_PERMUTE;
}

/* Returns the new node that a node of the given pass reads for old node
 * p: a parameter read becomes the gather of that pass, created here (just
 * before its first reader) when it does not exist yet, and a forward view
 * read by the backward pass becomes a copy that reads the backward
 * gather. Iterative: a view may be a chain. */
static int shard_operand(ShardRewrite *r, int p, bool backward)
{
    int k = r->view_of[p];
    if (k < 0 || (!backward && r->old[p].op != IR_VAR))
        return r->map[p];
    IntVec chain = {0};
    int root = p;
    while (r->old[root].op != IR_VAR && r->backward_copy[root] < 0) {
        VEC_PUSH(&chain, root);
        root = r->old[root].in[0];
    }
    int value;
    if (r->old[root].op == IR_VAR) {
        int *gather = &r->gathered[backward][k];
        if (*gather < 0)
            *gather = ir_gather_shards(r->g, r->old[root].attr.var, r->old[root].loc);
        value = *gather;
    } else {
        value = r->backward_copy[root];
    }
    for (int i = chain.len - 1; i >= 0; i--) {
        int v = chain.data[i];
        IrNode copy = r->old[v];
        copy.in[0] = value;
        copy.recomputed = true;
        value = r->backward_copy[v] = append_node(r->g, &copy);
    }
    VEC_FREE(&chain);
    return value;
}

/* Rewrites the training step g, whose nodes from backward_start on are
 * the backward pass, for sharded training. Every read of parameter k
 * reads a gather. The forward pass's gather goes just before its first
 * forward reader and the backward pass's just before its first backward
 * reader, so the full value is freed between the two. Every gradient
 * grads[k] feeds a reduce step placed right after it (a zero gradient at
 * the end when grads[k] < 0). */
static void add_shard_steps(IrGraph *g, const QsdpShards *s, const int *grads,
                            int backward_start)
{
    int n = g->nnodes, nvars = g->module->nvars;
    ShardRewrite r = {.old = g->nodes, .g = g};
    int *param_of = xmalloc(size_mul((size_t)nvars + 1, sizeof(int)));
    for (int v = 0; v < nvars; v++)
        param_of[v] = -1;
    for (int k = 0; k < s->nparams; k++)
        param_of[s->params[k]] = k;
    r.view_of = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    r.map = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    r.backward_copy = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    for (int i = 0; i < 2; i++) {
        r.gathered[i] = xmalloc(size_mul((size_t)s->nparams + 1, sizeof(int)));
        for (int k = 0; k < s->nparams; k++)
            r.gathered[i][k] = -1;
    }
    /* The reduce steps that follow each node: a list per node. */
    int *first_reduce = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    int *next_reduce = xmalloc(size_mul((size_t)s->nparams + 1, sizeof(int)));
    for (int i = 0; i < n; i++) {
        const IrNode *x = &r.old[i];
        r.backward_copy[i] = first_reduce[i] = -1;
        r.view_of[i] = -1;
        if (x->op == IR_VAR)
            r.view_of[i] = param_of[x->attr.var];
        else if (i < backward_start && is_view_op(x->op))
            r.view_of[i] = r.view_of[x->in[0]];
    }
    for (int k = s->nparams - 1; k >= 0; k--) {
        next_reduce[k] = -1;
        if (grads[k] >= 0) {
            next_reduce[k] = first_reduce[grads[k]];
            first_reduce[grads[k]] = k;
        }
    }

    g->nodes = NULL;
    g->nnodes = g->cap_nodes = 0;
    for (int i = 0; i < n; i++) {
        IrNode x = r.old[i];
        for (int j = 0; j < x.nin; j++)
            x.in[j] = shard_operand(&r, x.in[j], i >= backward_start);
        r.map[i] = append_node(g, &x);
        for (int k = first_reduce[i]; k >= 0; k = next_reduce[k])
            ir_reduce_shards(g, s->params[k], r.map[i], x.loc);
    }
    for (int k = 0; k < s->nparams; k++) {
        if (grads[k] >= 0)
            continue;
        const IrVar *p = &g->module->vars[s->params[k]];
        int zero = ir_broadcast(g, ir_const(g, p->dtype, 0.0, p->loc), p->shape, p->loc);
        ir_reduce_shards(g, s->params[k], zero, p->loc);
    }
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i].node = r.map[g->outputs[i].node];
    free((void *)r.old);
    free(param_of);
    free(r.view_of);
    free(r.map);
    free(r.backward_copy);
    free(r.gathered[0]);
    free(r.gathered[1]);
    free(first_reduce);
    free(next_reduce);
}

/* Extends out->param_groups, which has an entry for each of the first
 * nvars_before variables, to every variable of the module. A shard gets
 * the groups of its parameter. */
static void share_param_groups(Lower *l, CompiledCell *out, int nvars_before)
{
    const QsdpShards *s = out->shards;
    const char **groups = arena_calloc(l->arena, (size_t)out->module.nvars + 1,
                                       sizeof(char *));
    memcpy(groups, out->param_groups, (size_t)nvars_before * sizeof(char *));
    for (int k = 0; k < s->nparams; k++)
        groups[s->shard_vars[k]] = groups[s->params[k]];
    out->param_groups = groups;
}

bool qsdp_build_update(Lower *l, const Configured *opt, const CellOptions *options,
                       const int *params, const int *grads, int nparams, int backward_start,
                       CompiledCell *out)
{
    const QuantSetting *qw = &options->quantize_weights, *qg = &options->quantize_gradients;
    if (qw->on && qg->on && qw->bucket % qg->bucket != 0 && qg->bucket % qw->bucket != 0) {
        /* Shards start on a multiple of both bucket sizes, so sizes that
         * do not divide one another would pad every shard to their least
         * common multiple. */
        diag_error(qg->loc, "sharded training needs bucket sizes that divide one another, "
                   "because every shard starts on a bucket boundary of both; the weights "
                   "have buckets of %lld elements and the gradients of %lld",
                   (long long)qw->bucket, (long long)qg->bucket);
        diag_note(qw->loc, "the weights' bucket size is set here");
        return false;
    }
    IrModule *m = &out->module;
    IrGraph *train = out->train;
    QsdpShards *s = arena_calloc(l->arena, 1, sizeof *s);
    s->count = options->shards;
    s->index = options->shard_index;
    s->nparams = nparams;
    s->params = arena_calloc(l->arena, (size_t)nparams + 1, sizeof(int));
    s->shard_vars = arena_calloc(l->arena, (size_t)nparams + 1, sizeof(int));
    s->numel = arena_calloc(l->arena, (size_t)nparams + 1, sizeof(int64_t));
    s->chunk = arena_calloc(l->arena, (size_t)nparams + 1, sizeof(int64_t));
    s->key_var = ir_module_find_var(m, QSDP_KEY_VAR);
    out->shards = s;
    int nvars_before = m->nvars; /* the length of out->param_groups */

    SrcLoc oloc = opt->decl->name_loc;
    IrGraph *u = ir_graph_new(m, "update");
    out->update = u;
    int64_t align = qsdp_alignment(&options->quantize_weights, &options->quantize_gradients);
    l->graph = u;
    const int *hess = l->opt_hess;
    l->opt_hess = NULL;
    int lr = ir_input(u, "lr", l->dtype, shape_scalar(), oloc);
    int step = lower_step_input(l, oloc);
    bool ok = true;
    for (int k = 0; k < nparams && ok; k++) {
        IrVar full = m->vars[params[k]];
        const char *name = arena_printf(l->arena, "grad.%d", k);

        s->params[k] = params[k];
        s->numel[k] = shape_numel(&full.shape, 1);
        s->chunk[k] = qsdp_chunk(s->numel[k], s->count, align);
        Shape shard_shape = shape_make(1, (int64_t[]){s->chunk[k]});
        int shard = ir_module_add_var(m, arena_printf(l->arena, "%s.shard", full.name),
                                      IR_VAR_PARAM, full.dtype, shard_shape, IR_INIT_ZEROS, 0,
                                      -1, full.loc);
        m->vars[shard].tag = full.tag;
        s->shard_vars[k] = shard;

        const Configured *config = opt;
        double lr_scale = 1;
        if (options->ngroups > 0) {
            config = group_configure(l, opt, options->groups, options->ngroups, &full,
                                     &lr_scale, &out->param_groups[params[k]]);
            if (!config) {
                ok = false;
                break;
            }
        }
        int scaled_lr = lr;
        if (lr_scale != 1)
            scaled_lr = ir_binary(u, IR_MUL, lr, ir_const(u, l->dtype, lr_scale, oloc), oloc);
        int grad_shard = ir_input(u, name, l->dtype, shard_shape, oloc);
        ok = expand_optimizer(l, config, shard, grad_shard, scaled_lr, step);
    }
    l->opt_hess = hess;
    l->graph = train;
    if (!ok)
        return false;
    add_shard_steps(train, s, grads, backward_start);
    share_param_groups(l, out, nvars_before);
    int bad = first_non_elementwise(u);
    if (bad >= 0) {
        diag_error(oloc, "optimizer '%s' computes '%s' over a whole parameter, which sharded "
                   "training cannot do on shards; use an elementwise optimizer such as sgd "
                   "or adamw", opt->decl->name, ir_op_name(u->nodes[bad].op));
        return false;
    }
    return true;
}
