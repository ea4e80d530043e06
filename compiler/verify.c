/* verify.c - the IR verifier.
 *
 * Recomputes what every node's operands imply (arity, dtypes, shapes) and
 * compares it with what the node records. compile_cell runs it on every
 * graph it produces. A failure is a compiler bug, so the verifier prints
 * the first violation and the whole graph for debugging.
 */
#include <stdarg.h>
#include <stdlib.h>

#include "ir.h"
#include "ir_spatial.h"

typedef struct Verifier {
    const IrGraph *g;
    int node;
    bool failed;
} Verifier;

static void fail(Verifier *v, const char *fmt, ...) BOCB_PRINTF(2, 3);

static void fail(Verifier *v, const char *fmt, ...)
{
    if (v->failed)
        return;
    v->failed = true;
    fprintf(stderr, "bocbc: IR verification failed in graph %s at %%%d: ",
            v->g->name, v->node);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int arity(IrOp op)
{
    switch (ir_op_class(op)) {
    case IR_CLASS_LEAF:
        return 0;
    case IR_CLASS_SHAPE:
    case IR_CLASS_REDUCTION:
    case IR_CLASS_EFFECT:
        return 1;
    case IR_CLASS_ELEMENTWISE:
        if (op == IR_SELECT)
            return 3;
        if (op == IR_RANDOM)
            return 2;
        return op < IR_ADD ? 1 : 2;
    case IR_CLASS_LIBRARY:
        if (ir_is_spatial(op))
            return rt_spatial_arity(ir_spatial_kind(op));
        switch (op) {
        case IR_GATHER_SHARDS: return 0;
        case IR_MAXPOOL2D: case IR_REDUCE_SHARDS: return 1;
        case IR_CROSS_ENTROPY_GRAD: return 3;
        default: return 2;
        }
    }
    return -1;
}

static bool is_float(DType dt)
{
    return dt == DT_F32 || dt == DT_F64;
}

static void expect_shape(Verifier *v, const Shape *want, const Shape *got)
{
    if (shape_equal(want, got))
        return;
    char a[128], b[128];
    fail(v, "shape %s, expected %s", shape_format(got, a, sizeof a),
         shape_format(want, b, sizeof b));
}

static void check_elementwise(Verifier *v, const IrNode *n)
{
    const IrGraph *g = v->g;
    const IrNode *a = &g->nodes[n->in[0]];
    for (int i = 1; i < n->nin; i++) {
        const IrNode *b = &g->nodes[n->in[i]];
        if (!shape_equal(&a->shape, &b->shape))
            fail(v, "elementwise operands differ in shape");
    }
    expect_shape(v, &a->shape, &n->shape);

    switch (n->op) {
    case IR_CAST:
        break;
    case IR_NOT: case IR_AND: case IR_OR:
        if (a->dtype != DT_BOOL || n->dtype != DT_BOOL)
            fail(v, "logical op on non-bool values");
        break;
    case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_EQ: case IR_NE:
        if (n->dtype != DT_BOOL || g->nodes[n->in[1]].dtype != a->dtype)
            fail(v, "comparison types");
        break;
    case IR_SELECT:
        if (a->dtype != DT_BOOL)
            fail(v, "select condition is not bool");
        if (g->nodes[n->in[1]].dtype != n->dtype || g->nodes[n->in[2]].dtype != n->dtype)
            fail(v, "select operand types");
        break;
    default:
        for (int i = 0; i < n->nin; i++)
            if (g->nodes[n->in[i]].dtype != n->dtype || !is_float(n->dtype))
                fail(v, "arithmetic on mismatched or non-float types");
        break;
    }
}

/* gather_shards has the type of its parameter; reduce_shards reads a
 * value of that type and gives a rank-0 token. */
static void check_shards(Verifier *v, const IrNode *n)
{
    const IrModule *m = v->g->module;
    int var = n->attr.var;
    if (var < 0 || var >= m->nvars || m->vars[var].kind != IR_VAR_PARAM) {
        fail(v, "%s names %d, which is not a parameter", ir_op_name(n->op), var);
        return;
    }
    const IrVar *p = &m->vars[var];
    const IrNode *value = n->op == IR_GATHER_SHARDS ? n : &v->g->nodes[n->in[0]];
    expect_shape(v, &p->shape, &value->shape);
    if (value->dtype != p->dtype)
        fail(v, "dtype %s, expected %s", dtype_name(value->dtype), dtype_name(p->dtype));
    if (n->op == IR_REDUCE_SHARDS && n->shape.rank != 0)
        fail(v, "reduce_shards must be rank 0");
}

static void check_library(Verifier *v, const IrNode *n)
{
    const IrGraph *g = v->g;
    if (ir_is_spatial(n->op)) {
        const char *why;
        if (!ir_spatial_check(g, n, &why))
            fail(v, "%s", why);
        return;
    }
    if (n->op == IR_GATHER_SHARDS || n->op == IR_REDUCE_SHARDS) {
        check_shards(v, n);
        return;
    }
    const IrNode *a = &g->nodes[n->in[0]];
    const IrNode *b = n->nin > 1 ? &g->nodes[n->in[1]] : NULL;
    Shape want;
    const char *why = NULL;

    switch (n->op) {
    case IR_MATMUL:
        if (!ir_matmul_shape(&a->shape, &b->shape, n->attr.matmul.trans_a,
                             n->attr.matmul.trans_b, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &n->shape);
        break;
    case IR_CONV2D:
        if (!ir_conv2d_shape(&a->shape, &b->shape, &n->attr.conv, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &n->shape);
        break;
    case IR_CONV2D_GRAD_INPUT:
        if (!ir_conv2d_shape(&n->shape, &b->shape, &n->attr.conv, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &a->shape);
        break;
    case IR_CONV2D_GRAD_WEIGHT:
        if (!ir_conv2d_shape(&a->shape, &n->shape, &n->attr.conv, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &b->shape);
        break;
    case IR_MAXPOOL2D:
        if (!ir_pool2d_shape(&a->shape, &n->attr.pool, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &n->shape);
        break;
    case IR_MAXPOOL2D_GRAD:
        if (!ir_pool2d_shape(&a->shape, &n->attr.pool, &want, &why))
            fail(v, "%s", why);
        else
            expect_shape(v, &want, &b->shape);
        expect_shape(v, &a->shape, &n->shape);
        break;
    case IR_CROSS_ENTROPY:
    case IR_CROSS_ENTROPY_GRAD:
        if (a->shape.rank != 2 || b->dtype != DT_I32 || b->shape.rank != 1)
            fail(v, "cross_entropy takes logits [N, C] and i32 labels [N]");
        break;
    case IR_GATHER:
        if (a->shape.rank != 2 || a->shape.batch_axis >= 0 || b->dtype != DT_I32 ||
            b->shape.rank >= SHAPE_MAX_RANK)
            fail(v, "gather takes a table [V, D] and i32 ids");
        else {
            want = b->shape;
            want.dims[want.rank++] = a->shape.dims[1];
            expect_shape(v, &want, &n->shape);
        }
        break;
    case IR_SCATTER_ADD:
        if (n->shape.rank != 2 || a->dtype != DT_I32 || a->shape.rank >= SHAPE_MAX_RANK)
            fail(v, "scatter_add takes i32 ids and rows, and gives a table [V, D]");
        else {
            want = a->shape;
            want.dims[want.rank++] = n->shape.dims[1];
            expect_shape(v, &want, &b->shape);
        }
        break;
    case IR_SAMPLE_LABELS:
        if (a->shape.rank != 2 || b->shape.rank != 0 || b->dtype != a->dtype ||
            n->dtype != DT_I32 || n->shape.rank != 1)
            fail(v, "sample_labels takes logits [N, C] and a step, and gives i32 [N]");
        return; /* float operands, i32 result */
    default:
        BOCB_UNREACHABLE("library op");
    }
    for (int i = 0; i < n->nin; i++) {
        const IrNode *x = &g->nodes[n->in[i]];
        bool labels = ((n->op == IR_CROSS_ENTROPY || n->op == IR_CROSS_ENTROPY_GRAD ||
                        n->op == IR_GATHER) && i == 1) ||
                      (n->op == IR_SCATTER_ADD && i == 0);
        if (!labels && x->dtype != n->dtype)
            fail(v, "operand %d has dtype %s, expected %s", i,
                 dtype_name(x->dtype), dtype_name(n->dtype));
    }
}

static void check_node(Verifier *v, bool *assigned)
{
    const IrGraph *g = v->g;
    const IrModule *m = g->module;
    const IrNode *n = &g->nodes[v->node];

    if (n->op < 0 || n->op >= IR_OP_COUNT) {
        fail(v, "invalid op %d", (int)n->op);
        return;
    }
    if (n->nin != arity(n->op)) {
        fail(v, "%s has %d operands, expected %d", ir_op_name(n->op), n->nin, arity(n->op));
        return;
    }
    for (int i = 0; i < n->nin; i++) {
        if (n->in[i] < 0 || n->in[i] >= v->node) {
            fail(v, "operand %d refers to %%%d, which does not precede it", i, n->in[i]);
            return;
        }
        if (g->nodes[n->in[i]].op == IR_ASSIGN) {
            fail(v, "operand %d is an assignment, which has no value", i);
            return;
        }
    }
    if (n->shape.rank < 0 || n->shape.rank > SHAPE_MAX_RANK ||
        n->shape.batch_axis >= n->shape.rank) {
        fail(v, "malformed shape");
        return;
    }

    switch (ir_op_class(n->op)) {
    case IR_CLASS_LEAF:
        if (n->op == IR_VAR) {
            if (n->attr.var < 0 || n->attr.var >= m->nvars)
                fail(v, "unknown variable %d", n->attr.var);
            else
                expect_shape(v, &m->vars[n->attr.var].shape, &n->shape);
        } else if (n->op == IR_INPUT) {
            if (n->attr.input < 0 || n->attr.input >= g->ninputs)
                fail(v, "unknown input %d", n->attr.input);
            else
                expect_shape(v, &g->inputs[n->attr.input].shape, &n->shape);
        } else if (n->shape.rank != 0) {
            fail(v, "%s must be rank 0", ir_op_name(n->op));
        }
        break;
    case IR_CLASS_ELEMENTWISE:
        check_elementwise(v, n);
        break;
    case IR_CLASS_SHAPE: {
        const IrNode *x = &g->nodes[n->in[0]];
        if (n->op == IR_BROADCAST && !ir_can_broadcast(&x->shape, &n->shape))
            fail(v, "operand does not broadcast to the result shape");
        if (n->op == IR_RESHAPE && (shape_numel(&x->shape, 1) != shape_numel(&n->shape, 1) ||
                                    shape_numel(&x->shape, 2) != shape_numel(&n->shape, 2)))
            fail(v, "reshape changes the element count");
        if (x->dtype != n->dtype)
            fail(v, "shape op changes the dtype");
        break;
    }
    case IR_CLASS_REDUCTION: {
        const IrNode *x = &g->nodes[n->in[0]];
        int kept = 0;
        for (int i = 0; i < x->shape.rank; i++)
            kept += !(n->attr.axes & (1u << i));
        if (kept != n->shape.rank || (n->attr.axes >> x->shape.rank) != 0)
            fail(v, "sum axes do not match the result rank");
        break;
    }
    case IR_CLASS_LIBRARY:
        check_library(v, n);
        break;
    case IR_CLASS_EFFECT: {
        int var = n->attr.var;
        if (var < 0 || var >= m->nvars) {
            fail(v, "assignment to unknown variable %d", var);
            break;
        }
        if (assigned[var])
            fail(v, "variable @%s is assigned twice", m->vars[var].name);
        assigned[var] = true;
        expect_shape(v, &m->vars[var].shape, &g->nodes[n->in[0]].shape);
        break;
    }
    }
}

bool ir_verify(const IrGraph *g)
{
    Verifier v = {.g = g, .node = 0, .failed = false};
    bool *assigned = xcalloc((size_t)g->module->nvars + 1, sizeof *assigned);
    for (v.node = 0; v.node < g->nnodes && !v.failed; v.node++)
        check_node(&v, assigned);
    free(assigned);
    for (int i = 0; i < g->noutputs && !v.failed; i++) {
        int node = g->outputs[i].node;
        if (node < 0 || node >= g->nnodes || g->nodes[node].op == IR_ASSIGN) {
            v.node = node;
            fail(&v, "output \"%s\" does not name a value", g->outputs[i].name);
        }
    }
    if (v.failed)
        ir_print(stderr, g);
    return !v.failed;
}
