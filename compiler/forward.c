/* forward.c - forward mode: one tangent (JVP) rule per op.
 *
 * The graph is in topological order, so one sweep upwards from the first
 * node finds every operand's tangent before its users. A tangent of -1
 * stands for zero, and rules skip the terms it would contribute. Only the
 * nodes that the requested outputs depend on get tangents, and the rules
 * emit ordinary IR nodes, so the result is fused, planned and compiled
 * like any other graph.
 *
 * The rules linearise at the same points as the VJP rules of autodiff.c,
 * so the JVP is the transpose of the VJP everywhere: relu'(0) = 0, tied
 * operands of max and min share the tangent equally, and max pooling and
 * reduce_max follow the first maximum in row-major order. Ops whose value
 * is piecewise constant in an operand (sign, floor, comparisons, random,
 * the argmax selection inside the pooling gradients) have zero tangent
 * with respect to it.
 */
#include "autodiff.h"
#include "forward.h"
#include "ir_spatial.h"

#include <stdlib.h>

typedef struct Fwd {
    IrGraph *g;
    int *tangent; /* node id -> tangent node id, or -1 for zero */
} Fwd;

bool fwd_has_rule(IrOp op)
{
    switch (op) {
    /* The ops of gradient graphs, which reverse mode never differentiates. */
    case IR_CONV2D_GRAD_INPUT: case IR_CONV2D_GRAD_WEIGHT: case IR_MAXPOOL2D_GRAD:
    case IR_CROSS_ENTROPY_GRAD: case IR_SCATTER_ADD: case IR_AVGPOOL2D_GRAD:
    case IR_REDUCE_MAX_GRAD:
    /* An i32 result, which never carries a tangent. */
    case IR_SAMPLE_LABELS:
        return true;
    default:
        return ad_has_rule(op);
    }
}

static int zero_if_none(IrGraph *g, int tangent, int like, SrcLoc loc)
{
    return tangent >= 0 ? tangent : ad_fill_like(g, like, 0.0, loc);
}

/* a + b where either may be -1 (zero). */
static int add_terms(IrGraph *g, int a, int b, SrcLoc loc)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return ir_binary(g, IR_ADD, a, b, loc);
}

static int scale(IrGraph *g, int t, int factor, SrcLoc loc)
{
    return ir_binary(g, IR_MUL, t, factor, loc);
}

/* Rebuilds node n with operands `in`, for the ops that are linear in each
 * of the operands the rules replace. */
static int rebuild(IrGraph *g, const IrNode *n, const int *in)
{
    SrcLoc loc = n->loc;
    switch (n->op) {
    case IR_NEG:
        return ir_unary(g, IR_NEG, in[0], loc);
    case IR_MUL:
        return ir_binary(g, IR_MUL, in[0], in[1], loc);
    case IR_BROADCAST:
        return ir_broadcast(g, in[0], n->shape, loc);
    case IR_RESHAPE:
        return ir_reshape(g, in[0], n->shape, loc);
    case IR_SUM:
        return ir_sum(g, in[0], n->attr.axes, loc);
    case IR_CAST:
        return ir_cast(g, in[0], n->dtype, loc);
    case IR_MATMUL:
        return ir_matmul(g, in[0], in[1], n->attr.matmul.trans_a, n->attr.matmul.trans_b, loc);
    case IR_CONV2D:
        return ir_conv2d(g, in[0], in[1], n->attr.conv, loc);
    case IR_CONV2D_GRAD_INPUT:
        return ir_conv2d_grad_input(g, in[0], in[1], n->shape, n->attr.conv, loc);
    case IR_CONV2D_GRAD_WEIGHT:
        return ir_conv2d_grad_weight(g, in[0], in[1], n->shape, n->attr.conv, loc);
    case IR_MAXPOOL2D_GRAD:
        return ir_maxpool2d_grad(g, in[0], in[1], n->attr.pool, loc);
    case IR_GATHER:
        return ir_gather(g, in[0], in[1], loc);
    case IR_SCATTER_ADD:
        return ir_scatter_add(g, in[0], in[1], n->shape, loc);
    case IR_CROSS_ENTROPY_GRAD: {
        int d = ir_cross_entropy_grad(g, in[0], in[1], in[2], loc);
        ir_node(g, d)->attr.loss = n->attr.loss;
        return d;
    }
    default:
        BOCB_ASSERT(ir_is_spatial(n->op));
        return ir_add_spatial(g, n->op, n->dtype, n->shape, n->nin, in, n->attr.spatial, loc);
    }
}

/* The tangent of an op that is linear in each operand of `mask` (bit k =
 * operand k) separately, such as a product: the sum over those operands
 * of the op applied with that operand replaced by its tangent. */
static int multilinear(Fwd *f, const IrNode *n, unsigned mask)
{
    int result = -1;
    for (int k = 0; k < n->nin; k++) {
        int t = f->tangent[n->in[k]];
        if (!(mask & (1u << k)) || t < 0)
            continue;
        int in[IR_MAX_OPERANDS];
        for (int j = 0; j < n->nin; j++)
            in[j] = j == k ? t : n->in[j];
        result = add_terms(f->g, result, rebuild(f->g, n, in), n->loc);
    }
    return result;
}

/* Reshapes `v`, whose shape is `full` without axis `axis`, to `full` with
 * extent 1 there, and broadcasts it to `full`. */
static int expand_axis(IrGraph *g, int v, Shape full, int axis, SrcLoc loc)
{
    Shape kept = full;
    kept.dims[axis] = 1;
    if (kept.batch_axis == axis)
        kept.batch_axis = -1;
    return ir_broadcast(g, ir_reshape(g, v, kept, loc), full, loc);
}

/* max/min: the tangent of the winning operand, the mean of both at a tie
 * (the linearisation that vjp_extremum transposes). */
static int jvp_extremum(Fwd *f, const IrNode *n)
{
    IrGraph *g = f->g;
    SrcLoc loc = n->loc;
    int a = n->in[0], b = n->in[1];
    int ta = zero_if_none(g, f->tangent[a], a, loc);
    int tb = zero_if_none(g, f->tangent[b], b, loc);
    IrOp wins = n->op == IR_MAX ? IR_GT : IR_LT;
    int mean = ir_binary(g, IR_MUL, ir_binary(g, IR_ADD, ta, tb, loc),
                         ad_fill_like(g, a, 0.5, loc), loc);
    int tied = ir_select(g, ir_binary(g, IR_EQ, a, b, loc), mean, tb, loc);
    return ir_select(g, ir_binary(g, wins, a, b, loc), ta, tied, loc);
}

/* Every k x k window of x, as [N, C, k, P, Q]: a depthwise convolution of
 * x with one one-hot filter per window position, with the pooling's
 * stride and padding. Padding reads as 0. */
static int pool_windows(IrGraph *g, int x, const IrNode *pool, Shape windows, SrcLoc loc)
{
    DType dt = pool->dtype;
    const Shape *xs = &ir_node(g, x)->shape;
    int64_t c = xs->dims[1], kh = pool->attr.pool.kernel[0], kw = pool->attr.pool.kernel[1];
    int64_t taps = kh * kw;

    /* filter[c, i, 0, r, s] = 1 when i = r * kw + s */
    Shape fs = shape_make(5, (int64_t[]){c, taps, 1, kh, kw});
    int tap = ir_iota(g, dt, fs, 1, loc);
    int r = ir_iota(g, dt, fs, 3, loc);
    int s = ir_iota(g, dt, fs, 4, loc);
    int kw_c = ir_broadcast(g, ir_const(g, dt, (double)kw, loc), fs, loc);
    int pos = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, r, kw_c, loc), s, loc);
    int hot = ir_select(g, ir_binary(g, IR_EQ, tap, pos, loc),
                        ir_broadcast(g, ir_const(g, dt, 1.0, loc), fs, loc),
                        ir_broadcast(g, ir_const(g, dt, 0.0, loc), fs, loc), loc);
    int filter = ir_reshape(g, hot, shape_make(4, (int64_t[]){c * taps, 1, kh, kw}), loc);

    IrConvAttr conv = {.stride = {pool->attr.pool.stride[0], pool->attr.pool.stride[1]},
                       .pad = {pool->attr.pool.pad[0], pool->attr.pool.pad[1]},
                       .dilation = {1, 1}, .groups = c};
    return ir_reshape(g, ir_conv2d(g, x, filter, conv, loc), windows, loc);
}

/* Max pooling: the tangent at each window's first maximum in row-major
 * order, the element that rt_maxpool2d_grad sends the gradient to. */
static int jvp_maxpool(Fwd *f, int id, const IrNode *n)
{
    IrGraph *g = f->g;
    SrcLoc loc = n->loc;
    int x = n->in[0];
    DType dt = n->dtype;
    int64_t taps = n->attr.pool.kernel[0] * n->attr.pool.kernel[1];

    Shape windows = n->shape; /* [N, C, taps, P, Q] */
    windows.rank = 5;
    windows.dims[4] = n->shape.dims[3];
    windows.dims[3] = n->shape.dims[2];
    windows.dims[2] = taps;
    int xw = pool_windows(g, x, n, windows, loc);
    int tw = pool_windows(g, f->tangent[x], n, windows, loc);
    int valid = pool_windows(g, ad_fill_like(g, x, 1.0, loc), n, windows, loc);

    int ymax = expand_axis(g, id, windows, 2, loc);
    int hit = ir_binary(g, IR_AND, ir_binary(g, IR_EQ, xw, ymax, loc),
                        ir_binary(g, IR_GT, valid, ad_fill_like(g, valid, 0.5, loc), loc), loc);
    /* Score taps - i at a maximum and 0 elsewhere: the first maximum has
     * the highest score. */
    int index = ir_iota(g, dt, windows, 2, loc);
    int rank = ir_binary(g, IR_SUB, ad_fill_like(g, index, (double)taps, loc), index, loc);
    int score = ir_select(g, hit, rank, ad_fill_like(g, rank, 0.0, loc), loc);
    int best = expand_axis(g, ir_reduce_max(g, score, 1u << 2, loc), windows, 2, loc);
    int first = ir_binary(g, IR_AND, hit, ir_binary(g, IR_EQ, score, best, loc), loc);
    int picked = ir_select(g, first, tw, ad_fill_like(g, tw, 0.0, loc), loc);
    return ir_sum(g, picked, 1u << 2, loc);
}

/* The tangent of the loss gradient g = dloss * dL/dlogits with respect to
 * the logits: dloss * (softmax Jacobian) t for cross-entropy, whatever
 * the label smoothing, and dloss * (2 / C) t for the mean squared error. */
static int jvp_loss_grad_logits(Fwd *f, const IrNode *n)
{
    IrGraph *g = f->g;
    SrcLoc loc = n->loc;
    int logits = n->in[0], t = f->tangent[logits];
    Shape s = n->shape; /* [N, C] */
    int dloss = expand_axis(g, n->in[2], s, 1, loc);
    int jt;
    if (n->attr.loss.kind == IR_LOSS_MSE) {
        double k = 2.0 / (double)s.dims[1];
        jt = ir_binary(g, IR_MUL, t, ad_fill_like(g, t, k, loc), loc);
    } else {
        int p = ir_softmax(g, logits, 1, false, loc);
        int pt = ir_binary(g, IR_MUL, p, t, loc);
        int dot = expand_axis(g, ir_sum(g, pt, 1u << 1, loc), s, 1, loc);
        jt = ir_binary(g, IR_SUB, pt, ir_binary(g, IR_MUL, p, dot, loc), loc);
    }
    return ir_binary(g, IR_MUL, dloss, jt, loc);
}

/* The per-sample loss: the gradient row (rt_loss_grad with dloss = 1)
 * dotted with the tangent of the logits. */
static int jvp_loss(Fwd *f, int id, const IrNode *n)
{
    IrGraph *g = f->g;
    SrcLoc loc = n->loc;
    int logits = n->in[0];
    int d = ir_cross_entropy_grad(g, logits, n->in[1], ad_fill_like(g, id, 1.0, loc), loc);
    ir_node(g, d)->attr.loss = n->attr.loss;
    int prod = ir_binary(g, IR_MUL, d, f->tangent[logits], loc);
    return ir_sum(g, prod, 1u << 1, loc);
}

/* Returns the tangent of node `id`, all of whose operands' tangents are
 * known, or -1 when it is zero. */
static int jvp(Fwd *f, int id)
{
    IrGraph *g = f->g;
    const IrNode n = *ir_node(g, id); /* copy: rules append nodes */
    SrcLoc loc = n.loc;
    int x = n.nin > 0 ? n.in[0] : -1;
    int t0 = n.nin > 0 ? f->tangent[n.in[0]] : -1;
    int t1 = n.nin > 1 ? f->tangent[n.in[1]] : -1;
    int t2 = n.nin > 2 ? f->tangent[n.in[2]] : -1;
    /* straight-through, as its VJP: the round trip is treated as identity */
    if (n.op == IR_DEQUANTIZE)
        return f->tangent[ir_quantized_input(g, &n)];
    if (t0 < 0 && t1 < 0 && t2 < 0)
        return -1;

    switch (n.op) {
    case IR_NEG: case IR_BROADCAST: case IR_RESHAPE: case IR_SUM:
    case IR_PERMUTE: case IR_SLICE: case IR_AVGPOOL2D: case IR_AVGPOOL2D_GRAD:
    case IR_GATHER:
        return multilinear(f, &n, 1u);
    case IR_MUL: case IR_MATMUL: case IR_BMM: case IR_CONV2D:
    case IR_CONV2D_GRAD_INPUT: case IR_CONV2D_GRAD_WEIGHT:
        return multilinear(f, &n, 3u);
    /* Linear in the gradient; the argmax selection is piecewise constant. */
    case IR_MAXPOOL2D_GRAD: case IR_REDUCE_MAX_GRAD: case IR_SCATTER_ADD:
        return multilinear(f, &n, 2u);
    case IR_CAST: {
        bool from_float = ir_node(g, x)->dtype == DT_F32 || ir_node(g, x)->dtype == DT_F64;
        return from_float ? multilinear(f, &n, 1u) : -1;
    }
    case IR_ABS:
        return scale(g, t0, ir_unary(g, IR_SIGN, x, loc), loc);
    case IR_SQRT: {
        int two_y = ir_binary(g, IR_MUL, id, ad_fill_like(g, id, 2.0, loc), loc);
        return ir_binary(g, IR_DIV, t0, two_y, loc);
    }
    case IR_EXP:
        return scale(g, t0, id, loc);
    case IR_LOG:
        return ir_binary(g, IR_DIV, t0, x, loc);
    case IR_TANH: {
        int y2 = ir_binary(g, IR_MUL, id, id, loc);
        return scale(g, t0, ir_binary(g, IR_SUB, ad_fill_like(g, id, 1.0, loc), y2, loc), loc);
    }
    case IR_ERF: {
        /* d erf(x) = 2 / sqrt(pi) exp(-x^2) */
        int x2 = ir_binary(g, IR_MUL, x, x, loc);
        int e = ir_unary(g, IR_EXP, ir_unary(g, IR_NEG, x2, loc), loc);
        return scale(g, t0, ir_binary(g, IR_MUL, e, ad_fill_like(g, x, 1.1283791670955126, loc),
                                      loc), loc);
    }
    case IR_SIGMOID: {
        int one_minus = ir_binary(g, IR_SUB, ad_fill_like(g, id, 1.0, loc), id, loc);
        return scale(g, t0, ir_binary(g, IR_MUL, id, one_minus, loc), loc);
    }
    case IR_RELU: {
        int positive = ir_binary(g, IR_GT, id, ad_fill_like(g, id, 0.0, loc), loc);
        return ir_select(g, positive, t0, ad_fill_like(g, id, 0.0, loc), loc);
    }
    case IR_SIGN: case IR_FLOOR: case IR_RANDOM: case IR_IOTA:
        return -1;
    case IR_ADD:
        return add_terms(g, t0, t1, loc);
    case IR_SUB:
        if (t1 < 0)
            return t0;
        return t0 < 0 ? ir_unary(g, IR_NEG, t1, loc) : ir_binary(g, IR_SUB, t0, t1, loc);
    case IR_DIV: {
        /* d(a/b) = ta / b - tb * (a/b) / b */
        int b = n.in[1];
        int r = t0 >= 0 ? ir_binary(g, IR_DIV, t0, b, loc) : -1;
        if (t1 >= 0) {
            int q = ir_binary(g, IR_DIV, id, b, loc);
            int term = ir_unary(g, IR_NEG, ir_binary(g, IR_MUL, t1, q, loc), loc);
            r = add_terms(g, r, term, loc);
        }
        return r;
    }
    case IR_POW: {
        int a = n.in[0], b = n.in[1], r = -1;
        if (t0 >= 0) {
            int bm1 = ir_binary(g, IR_SUB, b, ad_fill_like(g, b, 1.0, loc), loc);
            int d = ir_binary(g, IR_MUL, b, ir_binary(g, IR_POW, a, bm1, loc), loc);
            r = scale(g, t0, d, loc);
        }
        if (t1 >= 0) {
            int d = ir_binary(g, IR_MUL, id, ir_unary(g, IR_LOG, a, loc), loc);
            r = add_terms(g, r, scale(g, t1, d, loc), loc);
        }
        return r;
    }
    case IR_MAX: case IR_MIN:
        return jvp_extremum(f, &n);
    case IR_SELECT:
        if (t1 < 0 && t2 < 0)
            return -1;
        return ir_select(g, n.in[0], zero_if_none(g, t1, n.in[1], loc),
                         zero_if_none(g, t2, n.in[2], loc), loc);
    case IR_CONCAT: {
        int in[2] = {zero_if_none(g, t0, n.in[0], loc), zero_if_none(g, t1, n.in[1], loc)};
        return rebuild(g, &n, in);
    }
    case IR_MAXPOOL2D:
        return jvp_maxpool(f, id, &n);
    case IR_REDUCE_MAX: {
        /* reduce_max_grad of ones marks each output's first maximum. */
        uint32_t axes = (uint32_t)n.attr.spatial.p[0];
        int mask = ir_reduce_max_grad(g, x, ad_fill_like(g, id, 1.0, loc), axes, loc);
        return ir_sum(g, ir_binary(g, IR_MUL, t0, mask, loc), axes, loc);
    }
    case IR_CROSS_ENTROPY:
        return jvp_loss(f, id, &n);
    case IR_CROSS_ENTROPY_GRAD: {
        int r = t2 >= 0 ? multilinear(f, &n, 4u) : -1;
        if (t0 >= 0)
            r = add_terms(g, r, jvp_loss_grad_logits(f, &n), loc);
        return r;
    }
    default:
        BOCB_UNREACHABLE("jvp of an op without a rule");
    }
}

static bool is_differentiable_value(const IrNode *n)
{
    return n->dtype == DT_F32 || n->dtype == DT_F64;
}

/* Reports every op without a rule that lies between a variable and an
 * output, once per op and location. */
static bool check_rules(IrGraph *g, const bool *active, int last)
{
    bool ok = true;
    for (int i = 0; i <= last; i++) {
        const IrNode *n = ir_node(g, i);
        if (!active[i] || fwd_has_rule(n->op))
            continue;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) {
            const IrNode *m = ir_node(g, j);
            seen = active[j] && m->op == n->op && m->loc.file == n->loc.file &&
                   m->loc.line == n->loc.line && m->loc.col == n->loc.col;
        }
        /* messages.py: not reached: every op of a differentiated path has a
         * rule; this reports an op added without one. */
        if (!seen)
            diag_error(n->loc, "no tangent rule for '%s'", ir_op_name(n->op));
        ok = false;
    }
    return ok;
}

bool fwd_jvp(IrGraph *g, const int *vars, const int *tangents, int nvars, const int *outs,
             int nouts, int *out_tangents)
{
    int last = -1;
    for (int k = 0; k < nouts; k++) {
        BOCB_ASSERT(outs[k] >= 0 && outs[k] < g->nnodes);
        last = outs[k] > last ? outs[k] : last;
    }
    int nforward = g->nnodes;
    int *var_tangent = xmalloc(size_mul((size_t)g->module->nvars + 1, sizeof *var_tangent));
    for (int v = 0; v < g->module->nvars; v++)
        var_tangent[v] = -1;
    for (int k = 0; k < nvars; k++) {
        const IrNode *t = ir_node(g, tangents[k]);
        const IrVar *v = &g->module->vars[vars[k]];
        BOCB_ASSERT(t->dtype == v->dtype && shape_equal(&t->shape, &v->shape));
        var_tangent[vars[k]] = tangents[k];
    }

    /* Active: depends on a moving variable, and an output depends on it. */
    bool *depends = xcalloc((size_t)nforward + 1, sizeof *depends);
    bool *needed = xcalloc((size_t)nforward + 1, sizeof *needed);
    for (int i = 0; i <= last; i++) {
        const IrNode *n = ir_node(g, i);
        if (n->op == IR_VAR)
            depends[i] = var_tangent[n->attr.var] >= 0;
        for (int j = 0; j < n->nin; j++)
            depends[i] |= depends[n->in[j]];
        if (n->op == IR_DEQUANTIZE)
            depends[i] |= depends[ir_quantized_input(g, n)];
        depends[i] &= is_differentiable_value(n);
    }
    for (int k = 0; k < nouts; k++)
        needed[outs[k]] = true;
    for (int i = last; i >= 0; i--) {
        const IrNode *n = ir_node(g, i);
        for (int j = 0; needed[i] && j < n->nin; j++)
            needed[n->in[j]] = true;
    }
    for (int i = 0; i <= last; i++)
        depends[i] &= needed[i];
    bool ok = check_rules(g, depends, last);

    Fwd f = {.g = g};
    f.tangent = xmalloc(size_mul((size_t)nforward + 1, sizeof *f.tangent));
    for (int i = 0; i < nforward; i++)
        f.tangent[i] = -1;
    for (int i = 0; ok && i <= last; i++) {
        if (!depends[i])
            continue;
        const IrNode *n = ir_node(g, i);
        f.tangent[i] = n->op == IR_VAR ? var_tangent[n->attr.var] : jvp(&f, i);
    }
    for (int k = 0; k < nouts; k++)
        out_tangents[k] = ok ? f.tangent[outs[k]] : -1;

    free(var_tangent);
    free(depends);
    free(needed);
    free(f.tangent);
    return ok;
}

bool fwd_gradient_estimate(IrGraph *g, int loss, int step, const int *vars, int nvars,
                           int *grads)
{
    BOCB_ASSERT(ir_node(g, loss)->shape.rank == 0);
    IrModule *m = g->module;
    SrcLoc loc = ir_node(g, loss)->loc;
    int *tangents = xcalloc((size_t)nvars + 1, sizeof *tangents);
    for (int i = 0; i < nvars; i++) {
        const IrVar *var = &m->vars[vars[i]];
        DType dt = var->dtype;
        Shape shape = var->shape;
        SrcLoc vloc = var->loc;
        char *name = xasprintf("%s.tangent_key", var->name);
        int key = ir_module_add_var(m, name, IR_VAR_BUFFER, dt, shape_scalar(),
                                    IR_INIT_UNIFORM, 1.0, -1, vloc);
        free(name);
        int step_value = ir_node(g, step)->dtype == dt ? step : ir_cast(g, step, dt, vloc);
        int u = ir_random(g, ir_var_read(g, key, vloc), step_value, shape, vloc);
        int negative = ir_binary(g, IR_LT, u, ad_fill_like(g, u, 0.5, vloc), vloc);
        tangents[i] = ir_select(g, negative, ad_fill_like(g, u, -1.0, vloc),
                                ad_fill_like(g, u, 1.0, vloc), vloc);
    }
    int derivative;
    bool ok = fwd_jvp(g, vars, tangents, nvars, &loss, 1, &derivative);
    for (int i = 0; i < nvars; i++) {
        grads[i] = -1;
        if (!ok || derivative < 0)
            continue;
        int d = ir_broadcast(g, derivative, ir_node(g, tangents[i])->shape, loc);
        grads[i] = ir_binary(g, IR_MUL, d, tangents[i], loc);
    }
    free(tangents);
    return ok;
}
