/* autodiff.c - reverse mode: one VJP rule per op.
 *
 * The graph is already in topological order, so the backward sweep walks
 * node ids downwards from the loss, and every node's adjoint is complete
 * when it is reached. Only "active" nodes get adjoints: those that depend
 * on a differentiated variable and that the loss depends on. Rules emit
 * ordinary IR nodes, so the backward graph is fused, planned and
 * JIT-compiled like the forward one.
 *
 * Conventions shared with PyTorch: relu'(0) = 0; sign, floor and the
 * comparisons have zero gradient; max(a, b) and min(a, b) split the
 * gradient equally between tied operands.
 */
#include "autodiff.h"
#include "ir_spatial.h"

#include <stdlib.h>

typedef struct Ad {
    IrGraph *g;
    int *adjoint; /* node id -> adjoint node id, or -1 */
    bool *active;
} Ad;

bool ad_has_rule(IrOp op)
{
    switch (op) {
    case IR_INPUT: case IR_VAR: case IR_CONST: case IR_BATCH:
    case IR_NEG: case IR_ABS: case IR_SIGN: case IR_SQRT: case IR_EXP:
    case IR_LOG: case IR_TANH: case IR_RELU: case IR_FLOOR: case IR_CAST:
    case IR_ERF: case IR_SIGMOID: case IR_RANDOM:
    case IR_ADD: case IR_SUB: case IR_MUL: case IR_DIV: case IR_POW:
    case IR_MAX: case IR_MIN: case IR_SELECT:
    case IR_BROADCAST: case IR_RESHAPE: case IR_SUM:
    case IR_MATMUL: case IR_CONV2D: case IR_MAXPOOL2D: case IR_CROSS_ENTROPY:
    case IR_GATHER:
    case IR_PERMUTE: case IR_SLICE: case IR_CONCAT: case IR_BMM: case IR_AVGPOOL2D:
    case IR_REDUCE_MAX: case IR_IOTA: case IR_DEQUANTIZE:
        return true;
    /* Bool-valued ops never carry a gradient, so they never need a rule. */
    case IR_NOT: case IR_LT: case IR_LE: case IR_GT: case IR_GE:
    case IR_EQ: case IR_NE: case IR_AND: case IR_OR:
        return true;
    case IR_CONV2D_GRAD_INPUT: case IR_CONV2D_GRAD_WEIGHT:
    case IR_MAXPOOL2D_GRAD: case IR_CROSS_ENTROPY_GRAD: case IR_ASSIGN:
    case IR_SCATTER_ADD:
    case IR_AVGPOOL2D_GRAD: case IR_REDUCE_MAX_GRAD:
    case IR_SAMPLE_LABELS: /* an i32 result, which is never active */
    case IR_QUANTIZE:      /* i32 words; dequantize passes the gradient on */
    /* Sharded training adds them after differentiation. */
    case IR_GATHER_SHARDS: case IR_REDUCE_SHARDS:
    case IR_OP_COUNT:
        return false;
    }
    return false;
}

int ad_fill_like(IrGraph *g, int like, double value, SrcLoc loc)
{
    IrNode *n = ir_node(g, like);
    Shape shape = n->shape;
    int c = ir_const(g, n->dtype, value, loc);
    return ir_broadcast(g, c, shape, loc);
}

static void accumulate(Ad *ad, int node, int contribution, SrcLoc loc)
{
    if (!ad->active[node] || contribution < 0)
        return;
    int old = ad->adjoint[node];
    ad->adjoint[node] = old < 0 ? contribution
                                : ir_binary(ad->g, IR_ADD, old, contribution, loc);
}

/* Sums dy over the axes that a broadcast from `operand` stretched, and
 * gives the result the operand's shape. */
static int unbroadcast(IrGraph *g, int dy, int operand, SrcLoc loc)
{
    Shape from = ir_node(g, operand)->shape;
    Shape to = ir_node(g, dy)->shape;
    int lead = to.rank - from.rank;
    uint32_t axes = 0;
    for (int i = 0; i < to.rank; i++) {
        int j = i - lead;
        if (j < 0)
            axes |= 1u << i;
        else if (from.dims[j] == 1 && j != from.batch_axis &&
                 (to.dims[i] != 1 || i == to.batch_axis))
            axes |= 1u << i;
    }
    int summed = ir_sum(g, dy, axes, loc);
    return ir_reshape(g, summed, from, loc);
}

/* Broadcasts dy, the adjoint of sum(x, axes), back to x's shape. */
static int unsum(IrGraph *g, int dy, int x, uint32_t axes, SrcLoc loc)
{
    Shape xs = ir_node(g, x)->shape;
    Shape kept = xs;
    for (int i = 0; i < xs.rank; i++) {
        if (axes & (1u << i)) {
            kept.dims[i] = 1;
            if (i == kept.batch_axis)
                kept.batch_axis = -1;
        }
    }
    int r = ir_reshape(g, dy, kept, loc);
    return ir_broadcast(g, r, xs, loc);
}

static int zero_where_false(IrGraph *g, int cond, int value, SrcLoc loc)
{
    return ir_select(g, cond, value, ad_fill_like(g, value, 0.0, loc), loc);
}

/* max/min: the operand that wins gets dy, tied operands get dy / 2. */
static void vjp_extremum(Ad *ad, const IrNode n, int dy)
{
    IrGraph *g = ad->g;
    SrcLoc loc = n.loc;
    int a = n.in[0], b = n.in[1];
    IrOp wins = n.op == IR_MAX ? IR_GT : IR_LT;
    int half = ir_binary(g, IR_MUL, dy, ad_fill_like(g, dy, 0.5, loc), loc);
    int tie = ir_binary(g, IR_EQ, a, b, loc);
    int zero = ad_fill_like(g, dy, 0.0, loc);

    if (ad->active[a]) {
        int a_wins = ir_binary(g, wins, a, b, loc);
        int ga = ir_select(g, a_wins, dy, ir_select(g, tie, half, zero, loc), loc);
        accumulate(ad, a, ga, loc);
    }
    if (ad->active[b]) {
        int b_wins = ir_binary(g, wins, b, a, loc);
        int gb = ir_select(g, b_wins, dy, ir_select(g, tie, half, zero, loc), loc);
        accumulate(ad, b, gb, loc);
    }
}

static void vjp_matmul(Ad *ad, const IrNode n, int dy)
{
    IrGraph *g = ad->g;
    int a = n.in[0], b = n.in[1];
    bool ta = n.attr.matmul.trans_a, tb = n.attr.matmul.trans_b;
    SrcLoc loc = n.loc;

    /* With C = op(A) op(B): dop(A) = dC op(B)^T and dop(B) = op(A)^T dC,
     * transposed back when A or B is stored transposed. */
    if (ad->active[a]) {
        int da = ta ? ir_matmul(g, b, dy, tb, true, loc)
                    : ir_matmul(g, dy, b, false, !tb, loc);
        accumulate(ad, a, da, loc);
    }
    if (ad->active[b]) {
        int db = tb ? ir_matmul(g, dy, a, true, ta, loc)
                    : ir_matmul(g, a, dy, !ta, false, loc);
        accumulate(ad, b, db, loc);
    }
}

/* The batched product follows the rule of vjp_matmul. */
static void vjp_bmm(Ad *ad, const IrNode n, int dy)
{
    IrGraph *g = ad->g;
    int a = n.in[0], b = n.in[1];
    bool ta = n.attr.spatial.p[0] != 0, tb = n.attr.spatial.p[1] != 0;
    SrcLoc loc = n.loc;
    if (ad->active[a]) {
        int da = ta ? ir_bmm(g, b, dy, tb, true, loc) : ir_bmm(g, dy, b, false, !tb, loc);
        accumulate(ad, a, da, loc);
    }
    if (ad->active[b]) {
        int db = tb ? ir_bmm(g, dy, a, true, ta, loc) : ir_bmm(g, a, dy, !ta, false, loc);
        accumulate(ad, b, db, loc);
    }
}

/* A slice's adjoint is dy placed back at its position along the axis,
 * with zeros before and after it. */
static int unslice(IrGraph *g, int dy, const Shape *x, int axis, int64_t start, SrcLoc loc)
{
    Shape part = ir_node(g, dy)->shape;
    int64_t len = part.dims[axis], after = x->dims[axis] - start - len;
    int r = dy;
    if (start > 0) {
        part.dims[axis] = start;
        int zeros = ir_broadcast(g, ir_const(g, ir_node(g, dy)->dtype, 0.0, loc), part, loc);
        r = ir_concat(g, zeros, r, axis, loc);
    }
    if (after > 0) {
        part.dims[axis] = after;
        int zeros = ir_broadcast(g, ir_const(g, ir_node(g, dy)->dtype, 0.0, loc), part, loc);
        r = ir_concat(g, r, zeros, axis, loc);
    }
    return r;
}

static void vjp_spatial(Ad *ad, const IrNode n, int dy)
{
    IrGraph *g = ad->g;
    SrcLoc loc = n.loc;
    const RtSpatialAttr *a = &n.attr.spatial;
    int x = n.in[0];
    switch (n.op) {
    case IR_PERMUTE: {
        int inverse[SHAPE_MAX_RANK];
        for (int i = 0; i < n.shape.rank; i++)
            inverse[a->p[i]] = i;
        accumulate(ad, x, ir_permute(g, dy, inverse, loc), loc);
        break;
    }
    case IR_SLICE:
        accumulate(ad, x, unslice(g, dy, &ir_node(g, x)->shape, (int)a->p[0], a->p[1], loc),
                   loc);
        break;
    case IR_CONCAT: {
        int axis = (int)a->p[0];
        int64_t len = ir_node(g, x)->shape.dims[axis];
        if (ad->active[x])
            accumulate(ad, x, ir_slice(g, dy, axis, 0, len, loc), loc);
        if (ad->active[n.in[1]])
            accumulate(ad, n.in[1], ir_slice(g, dy, axis, len, n.shape.dims[axis] - len, loc),
                       loc);
        break;
    }
    case IR_BMM:
        vjp_bmm(ad, n, dy);
        break;
    case IR_AVGPOOL2D:
        accumulate(ad, x, ir_avgpool2d_grad(g, dy, ir_node(g, x)->shape, a, loc), loc);
        break;
    case IR_REDUCE_MAX:
        accumulate(ad, x, ir_reduce_max_grad(g, x, dy, (uint32_t)a->p[0], loc), loc);
        break;
    default:
        BOCB_UNREACHABLE("vjp of a spatial op without a rule");
    }
}

/* Applies the VJP rule of node `id`, whose adjoint is dy. */
static void vjp(Ad *ad, int id, int dy)
{
    IrGraph *g = ad->g;
    const IrNode n = *ir_node(g, id); /* copy: rules append nodes */
    SrcLoc loc = n.loc;
    int x = n.nin > 0 ? n.in[0] : -1;

    switch (n.op) {
    case IR_NEG:
        accumulate(ad, x, ir_unary(g, IR_NEG, dy, loc), loc);
        break;
    case IR_ABS: {
        int s = ir_unary(g, IR_SIGN, x, loc);
        accumulate(ad, x, ir_binary(g, IR_MUL, dy, s, loc), loc);
        break;
    }
    case IR_SQRT: {
        /* d sqrt(x) = dy / (2 sqrt(x)) */
        int two_y = ir_binary(g, IR_MUL, id, ad_fill_like(g, id, 2.0, loc), loc);
        accumulate(ad, x, ir_binary(g, IR_DIV, dy, two_y, loc), loc);
        break;
    }
    case IR_EXP:
        accumulate(ad, x, ir_binary(g, IR_MUL, dy, id, loc), loc);
        break;
    case IR_LOG:
        accumulate(ad, x, ir_binary(g, IR_DIV, dy, x, loc), loc);
        break;
    case IR_TANH: {
        int y2 = ir_binary(g, IR_MUL, id, id, loc);
        int d = ir_binary(g, IR_SUB, ad_fill_like(g, id, 1.0, loc), y2, loc);
        accumulate(ad, x, ir_binary(g, IR_MUL, dy, d, loc), loc);
        break;
    }
    case IR_ERF: {
        /* d erf(x) = 2 / sqrt(pi) exp(-x^2) */
        int x2 = ir_binary(g, IR_MUL, x, x, loc);
        int e = ir_unary(g, IR_EXP, ir_unary(g, IR_NEG, x2, loc), loc);
        int d = ir_binary(g, IR_MUL, e, ad_fill_like(g, x, 1.1283791670955126, loc), loc);
        accumulate(ad, x, ir_binary(g, IR_MUL, dy, d, loc), loc);
        break;
    }
    case IR_SIGMOID: {
        /* d sigmoid(x) = y (1 - y) */
        int one_minus = ir_binary(g, IR_SUB, ad_fill_like(g, id, 1.0, loc), id, loc);
        int d = ir_binary(g, IR_MUL, id, one_minus, loc);
        accumulate(ad, x, ir_binary(g, IR_MUL, dy, d, loc), loc);
        break;
    }
    case IR_RELU: {
        int positive = ir_binary(g, IR_GT, id, ad_fill_like(g, id, 0.0, loc), loc);
        accumulate(ad, x, zero_where_false(g, positive, dy, loc), loc);
        break;
    }
    case IR_SIGN:
    case IR_FLOOR:
        break; /* zero almost everywhere */
    case IR_CAST:
        if (ir_node(g, x)->dtype == DT_F32 || ir_node(g, x)->dtype == DT_F64)
            accumulate(ad, x, ir_cast(g, dy, ir_node(g, x)->dtype, loc), loc);
        break;
    case IR_ADD:
        accumulate(ad, n.in[0], dy, loc);
        accumulate(ad, n.in[1], dy, loc);
        break;
    case IR_SUB:
        accumulate(ad, n.in[0], dy, loc);
        if (ad->active[n.in[1]])
            accumulate(ad, n.in[1], ir_unary(g, IR_NEG, dy, loc), loc);
        break;
    case IR_MUL:
        if (ad->active[n.in[0]])
            accumulate(ad, n.in[0], ir_binary(g, IR_MUL, dy, n.in[1], loc), loc);
        if (ad->active[n.in[1]])
            accumulate(ad, n.in[1], ir_binary(g, IR_MUL, dy, n.in[0], loc), loc);
        break;
    case IR_DIV:
        if (ad->active[n.in[0]])
            accumulate(ad, n.in[0], ir_binary(g, IR_DIV, dy, n.in[1], loc), loc);
        if (ad->active[n.in[1]]) {
            /* d(a/b)/db = -(a/b)/b */
            int q = ir_binary(g, IR_DIV, id, n.in[1], loc);
            int t = ir_binary(g, IR_MUL, dy, q, loc);
            accumulate(ad, n.in[1], ir_unary(g, IR_NEG, t, loc), loc);
        }
        break;
    case IR_POW: {
        int a = n.in[0], b = n.in[1];
        if (ad->active[a]) {
            /* b * a^(b-1) */
            int bm1 = ir_binary(g, IR_SUB, b, ad_fill_like(g, b, 1.0, loc), loc);
            int p = ir_binary(g, IR_POW, a, bm1, loc);
            int d = ir_binary(g, IR_MUL, b, p, loc);
            accumulate(ad, a, ir_binary(g, IR_MUL, dy, d, loc), loc);
        }
        if (ad->active[b]) {
            int la = ir_unary(g, IR_LOG, a, loc);
            int d = ir_binary(g, IR_MUL, id, la, loc);
            accumulate(ad, b, ir_binary(g, IR_MUL, dy, d, loc), loc);
        }
        break;
    }
    case IR_MAX:
    case IR_MIN:
        vjp_extremum(ad, n, dy);
        break;
    case IR_SELECT: {
        int c = n.in[0];
        if (ad->active[n.in[1]])
            accumulate(ad, n.in[1], zero_where_false(g, c, dy, loc), loc);
        if (ad->active[n.in[2]]) {
            int not_c = ir_unary(g, IR_NOT, c, loc);
            accumulate(ad, n.in[2], zero_where_false(g, not_c, dy, loc), loc);
        }
        break;
    }
    case IR_BROADCAST:
        accumulate(ad, x, unbroadcast(g, dy, x, loc), loc);
        break;
    case IR_RESHAPE:
        accumulate(ad, x, ir_reshape(g, dy, ir_node(g, x)->shape, loc), loc);
        break;
    case IR_SUM:
        accumulate(ad, x, unsum(g, dy, x, n.attr.axes, loc), loc);
        break;
    case IR_MATMUL:
        vjp_matmul(ad, n, dy);
        break;
    case IR_CONV2D: {
        int w = n.in[1];
        if (ad->active[x])
            accumulate(ad, x, ir_conv2d_grad_input(g, dy, w, ir_node(g, x)->shape,
                                                   n.attr.conv, loc), loc);
        if (ad->active[w])
            accumulate(ad, w, ir_conv2d_grad_weight(g, x, dy, ir_node(g, w)->shape,
                                                    n.attr.conv, loc), loc);
        break;
    }
    case IR_MAXPOOL2D:
        accumulate(ad, x, ir_maxpool2d_grad(g, x, dy, n.attr.pool, loc), loc);
        break;
    case IR_CROSS_ENTROPY: {
        int d = ir_cross_entropy_grad(g, x, n.in[1], dy, loc);
        ir_node(g, d)->attr.loss = n.attr.loss;
        accumulate(ad, x, d, loc);
        break;
    }
    case IR_RANDOM:
        break; /* constant with respect to its key and step */
    case IR_GATHER:
        accumulate(ad, x, ir_scatter_add(g, n.in[1], dy, ir_node(g, x)->shape, loc), loc);
        break;
    case IR_PERMUTE: case IR_SLICE: case IR_CONCAT: case IR_BMM: case IR_AVGPOOL2D:
    case IR_REDUCE_MAX:
        vjp_spatial(ad, n, dy);
        break;
    case IR_DEQUANTIZE:
        /* straight-through: the round trip is treated as identity */
        accumulate(ad, ir_quantized_input(g, &n), dy, loc);
        break;
    default:
        BOCB_UNREACHABLE("vjp of an op without a rule");
    }
}

static bool is_differentiable_value(const IrNode *n)
{
    return n->dtype == DT_F32 || n->dtype == DT_F64;
}

/* Marks the nodes that depend on a differentiated variable and on which
 * the loss depends. */
static void mark_active(Ad *ad, int loss, const bool *wrt)
{
    IrGraph *g = ad->g;
    bool *depends = xcalloc((size_t)g->nnodes + 1, sizeof *depends);
    bool *needed = xcalloc((size_t)g->nnodes + 1, sizeof *needed);

    for (int i = 0; i <= loss; i++) {
        const IrNode *n = ir_node(g, i);
        if (n->op == IR_VAR)
            depends[i] = wrt[n->attr.var];
        for (int j = 0; j < n->nin; j++)
            depends[i] |= depends[n->in[j]];
        if (n->op == IR_DEQUANTIZE)
            depends[i] |= depends[ir_quantized_input(g, n)];
        depends[i] &= is_differentiable_value(n);
    }
    needed[loss] = true;
    for (int i = loss; i >= 0; i--) {
        if (!needed[i])
            continue;
        const IrNode *n = ir_node(g, i);
        for (int j = 0; j < n->nin; j++)
            needed[n->in[j]] = true;
    }
    for (int i = 0; i <= loss; i++)
        ad->active[i] = depends[i] && needed[i];
    free(depends);
    free(needed);
}

/* Reports every active op without a VJP rule, once per op and location. */
static bool check_rules(Ad *ad, int loss)
{
    IrGraph *g = ad->g;
    bool ok = true;
    for (int i = 0; i <= loss; i++) {
        const IrNode *n = ir_node(g, i);
        if (!ad->active[i] || ad_has_rule(n->op))
            continue;
        bool seen = false;
        for (int j = 0; j < i && !seen; j++) {
            const IrNode *m = ir_node(g, j);
            seen = ad->active[j] && m->op == n->op && m->loc.file == n->loc.file &&
                   m->loc.line == n->loc.line && m->loc.col == n->loc.col;
        }
        /* messages.py: not reached: every op the language builds has a rule;
         * this reports an op added without one. */
        if (!seen)
            diag_error(n->loc, "no gradient rule for '%s'", ir_op_name(n->op));
        ok = false;
    }
    return ok;
}

bool ad_backward(IrGraph *g, int loss, const int *vars, int nvars, int *grads)
{
    BOCB_ASSERT(loss >= 0 && loss < g->nnodes);
    BOCB_ASSERT(ir_node(g, loss)->shape.rank == 0);

    int nforward = g->nnodes;
    Ad ad = {.g = g};
    bool *wrt = xcalloc((size_t)g->module->nvars + 1, sizeof *wrt);
    for (int i = 0; i < nvars; i++)
        wrt[vars[i]] = true;
    /* Sized for the forward graph: rules only add nodes past it, and only
     * forward nodes ever receive adjoints. */
    ad.adjoint = xmalloc(size_mul((size_t)nforward + 1, sizeof *ad.adjoint));
    ad.active = xcalloc((size_t)nforward + 1, sizeof *ad.active);
    for (int i = 0; i < nforward; i++)
        ad.adjoint[i] = -1;

    mark_active(&ad, loss, wrt);
    bool ok = check_rules(&ad, loss);

    if (ok && ad.active[loss]) {
        SrcLoc loc = ir_node(g, loss)->loc;
        ad.adjoint[loss] = ad_fill_like(g, loss, 1.0, loc);
        for (int i = loss; i >= 0; i--) {
            if (ad.active[i] && ad.adjoint[i] >= 0 &&
                ir_op_class(ir_node(g, i)->op) != IR_CLASS_LEAF)
                vjp(&ad, i, ad.adjoint[i]);
        }
    }

    for (int k = 0; k < nvars; k++) {
        grads[k] = -1;
        if (!ok)
            continue;
        for (int i = 0; i < nforward; i++) {
            const IrNode *n = ir_node(g, i);
            if (n->op != IR_VAR || n->attr.var != vars[k] || ad.adjoint[i] < 0)
                continue;
            grads[k] = grads[k] < 0 ? ad.adjoint[i]
                                    : ir_binary(g, IR_ADD, grads[k], ad.adjoint[i], n->loc);
        }
    }

    free(wrt);
    free(ad.adjoint);
    free(ad.active);
    return ok;
}
