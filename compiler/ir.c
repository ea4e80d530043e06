/* ir.c - graph construction, shape rules, use counts and dead-code removal.
 *
 * Builders infer each node's dtype and shape from its operands and assert
 * that the operands fit. The checks that produce user-facing messages live
 * in the lowering pass, which calls the same shape rules (ir_*_shape)
 * before it builds anything.
 */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    IrOpClass cls;
} op_info[IR_OP_COUNT] = {
    [IR_INPUT] = {"input", IR_CLASS_LEAF},
    [IR_VAR] = {"var", IR_CLASS_LEAF},
    [IR_CONST] = {"const", IR_CLASS_LEAF},
    [IR_BATCH] = {"batch", IR_CLASS_LEAF},
    [IR_NEG] = {"neg", IR_CLASS_ELEMENTWISE},
    [IR_ABS] = {"abs", IR_CLASS_ELEMENTWISE},
    [IR_SIGN] = {"sign", IR_CLASS_ELEMENTWISE},
    [IR_SQRT] = {"sqrt", IR_CLASS_ELEMENTWISE},
    [IR_EXP] = {"exp", IR_CLASS_ELEMENTWISE},
    [IR_LOG] = {"log", IR_CLASS_ELEMENTWISE},
    [IR_TANH] = {"tanh", IR_CLASS_ELEMENTWISE},
    [IR_RELU] = {"relu", IR_CLASS_ELEMENTWISE},
    [IR_FLOOR] = {"floor", IR_CLASS_ELEMENTWISE},
    [IR_NOT] = {"not", IR_CLASS_ELEMENTWISE},
    [IR_CAST] = {"cast", IR_CLASS_ELEMENTWISE},
    [IR_ERF] = {"erf", IR_CLASS_ELEMENTWISE},
    [IR_SIGMOID] = {"sigmoid", IR_CLASS_ELEMENTWISE},
    [IR_RANDOM] = {"random", IR_CLASS_ELEMENTWISE},
    [IR_ADD] = {"add", IR_CLASS_ELEMENTWISE},
    [IR_SUB] = {"sub", IR_CLASS_ELEMENTWISE},
    [IR_MUL] = {"mul", IR_CLASS_ELEMENTWISE},
    [IR_DIV] = {"div", IR_CLASS_ELEMENTWISE},
    [IR_POW] = {"pow", IR_CLASS_ELEMENTWISE},
    [IR_MAX] = {"max", IR_CLASS_ELEMENTWISE},
    [IR_MIN] = {"min", IR_CLASS_ELEMENTWISE},
    [IR_LT] = {"lt", IR_CLASS_ELEMENTWISE},
    [IR_LE] = {"le", IR_CLASS_ELEMENTWISE},
    [IR_GT] = {"gt", IR_CLASS_ELEMENTWISE},
    [IR_GE] = {"ge", IR_CLASS_ELEMENTWISE},
    [IR_EQ] = {"eq", IR_CLASS_ELEMENTWISE},
    [IR_NE] = {"ne", IR_CLASS_ELEMENTWISE},
    [IR_AND] = {"and", IR_CLASS_ELEMENTWISE},
    [IR_OR] = {"or", IR_CLASS_ELEMENTWISE},
    [IR_SELECT] = {"select", IR_CLASS_ELEMENTWISE},
    [IR_BROADCAST] = {"broadcast", IR_CLASS_SHAPE},
    [IR_RESHAPE] = {"reshape", IR_CLASS_SHAPE},
    [IR_SUM] = {"sum", IR_CLASS_REDUCTION},
    [IR_MATMUL] = {"matmul", IR_CLASS_LIBRARY},
    [IR_CONV2D] = {"conv2d", IR_CLASS_LIBRARY},
    [IR_CONV2D_GRAD_INPUT] = {"conv2d_grad_input", IR_CLASS_LIBRARY},
    [IR_CONV2D_GRAD_WEIGHT] = {"conv2d_grad_weight", IR_CLASS_LIBRARY},
    [IR_MAXPOOL2D] = {"max_pool2d", IR_CLASS_LIBRARY},
    [IR_MAXPOOL2D_GRAD] = {"max_pool2d_grad", IR_CLASS_LIBRARY},
    [IR_CROSS_ENTROPY] = {"cross_entropy", IR_CLASS_LIBRARY},
    [IR_CROSS_ENTROPY_GRAD] = {"cross_entropy_grad", IR_CLASS_LIBRARY},
    [IR_GATHER] = {"gather", IR_CLASS_LIBRARY},
    [IR_SCATTER_ADD] = {"scatter_add", IR_CLASS_LIBRARY},
    [IR_PERMUTE] = {"permute", IR_CLASS_LIBRARY},
    [IR_SLICE] = {"slice", IR_CLASS_LIBRARY},
    [IR_CONCAT] = {"concat", IR_CLASS_LIBRARY},
    [IR_BMM] = {"bmm", IR_CLASS_LIBRARY},
    [IR_AVGPOOL2D] = {"avg_pool2d", IR_CLASS_LIBRARY},
    [IR_AVGPOOL2D_GRAD] = {"avg_pool2d_grad", IR_CLASS_LIBRARY},
    [IR_REDUCE_MAX] = {"reduce_max", IR_CLASS_LIBRARY},
    [IR_REDUCE_MAX_GRAD] = {"reduce_max_grad", IR_CLASS_LIBRARY},
    [IR_IOTA] = {"iota", IR_CLASS_LIBRARY},
    [IR_QUANTIZE] = {"quantize", IR_CLASS_LIBRARY},
    [IR_DEQUANTIZE] = {"dequantize", IR_CLASS_LIBRARY},
    [IR_SAMPLE_LABELS] = {"sample_labels", IR_CLASS_LIBRARY},
    [IR_GATHER_SHARDS] = {"gather_shards", IR_CLASS_LIBRARY},
    [IR_REDUCE_SHARDS] = {"reduce_shards", IR_CLASS_LIBRARY},
    [IR_ASSIGN] = {"assign", IR_CLASS_EFFECT},
};

const char *ir_op_name(IrOp op)
{
    BOCB_ASSERT(op >= 0 && op < IR_OP_COUNT && op_info[op].name);
    return op_info[op].name;
}

IrOpClass ir_op_class(IrOp op)
{
    BOCB_ASSERT(op >= 0 && op < IR_OP_COUNT && op_info[op].name);
    return op_info[op].cls;
}

/* ---- modules and graphs --------------------------------------------------- */

void ir_module_init(IrModule *m, Arena *arena)
{
    memset(m, 0, sizeof *m);
    m->arena = arena;
}

void ir_module_free(IrModule *m)
{
    free(m->vars);
    m->vars = NULL;
    m->nvars = m->cap_vars = 0;
}

int ir_module_add_var(IrModule *m, const char *name, IrVarKind kind,
                      DType dtype, Shape shape, IrInit init, double init_value,
                      int owner, SrcLoc loc)
{
    BOCB_ASSERT(shape.batch_axis < 0);
    if (m->nvars == m->cap_vars)
        vec_grow((void **)&m->vars, &m->cap_vars, m->nvars + 1, sizeof *m->vars);
    IrVar *v = &m->vars[m->nvars];
    v->name = arena_strdup(m->arena, name);
    v->kind = kind;
    v->dtype = dtype;
    v->shape = shape;
    v->init = init;
    v->init_value = init_value;
    v->owner = owner;
    v->tag = NULL;
    v->loc = loc;
    v->frozen = false;
    return m->nvars++;
}

int ir_module_find_var(const IrModule *m, const char *name)
{
    for (int i = 0; i < m->nvars; i++)
        if (strcmp(m->vars[i].name, name) == 0)
            return i;
    return -1;
}

IrGraph *ir_graph_new(IrModule *m, const char *name)
{
    IrGraph *g = xcalloc(1, sizeof *g);
    g->module = m;
    g->name = arena_strdup(m->arena, name);
    return g;
}

void ir_graph_free(IrGraph *g)
{
    if (!g)
        return;
    free(g->nodes);
    free(g->inputs);
    free(g->outputs);
    free(g);
}

IrGraph *ir_graph_clone(const IrGraph *g, const char *name)
{
    IrGraph *c = ir_graph_new(g->module, name);
    c->nnodes = c->cap_nodes = g->nnodes;
    c->nodes = xmalloc(size_mul((size_t)g->nnodes + 1, sizeof *c->nodes));
    memcpy(c->nodes, g->nodes, (size_t)g->nnodes * sizeof *c->nodes);
    c->ninputs = c->cap_inputs = g->ninputs;
    c->inputs = xmalloc(size_mul((size_t)g->ninputs + 1, sizeof *c->inputs));
    memcpy(c->inputs, g->inputs, (size_t)g->ninputs * sizeof *c->inputs);
    c->noutputs = c->cap_outputs = g->noutputs;
    c->outputs = xmalloc(size_mul((size_t)g->noutputs + 1, sizeof *c->outputs));
    memcpy(c->outputs, g->outputs, (size_t)g->noutputs * sizeof *c->outputs);
    return c;
}

static int add_node(IrGraph *g, IrOp op, DType dtype, Shape shape, int nin,
                    const int *in, SrcLoc loc)
{
    BOCB_ASSERT(nin <= IR_MAX_OPERANDS);
    for (int i = 0; i < nin; i++)
        BOCB_ASSERT(in[i] >= 0 && in[i] < g->nnodes);
    if (g->nnodes == g->cap_nodes)
        vec_grow((void **)&g->nodes, &g->cap_nodes, g->nnodes + 1, sizeof *g->nodes);
    IrNode *n = &g->nodes[g->nnodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->dtype = dtype;
    n->shape = shape;
    n->nin = nin;
    for (int i = 0; i < nin; i++)
        n->in[i] = in[i];
    n->loc = loc;
    return g->nnodes++;
}

/* ---- shape rules ---------------------------------------------------------- */

bool ir_broadcast_shape(const Shape *a, const Shape *b, Shape *out)
{
    int rank = a->rank > b->rank ? a->rank : b->rank;
    /* Two batch axes must line up: [B, 1] against [B] would need two. */
    if (a->batch_axis >= 0 && b->batch_axis >= 0 &&
        a->rank - a->batch_axis != b->rank - b->batch_axis)
        return false;
    Shape r = shape_scalar();
    r.rank = rank;
    for (int i = 0; i < rank; i++) {
        int ia = i - (rank - a->rank), ib = i - (rank - b->rank);
        bool has_a = ia >= 0, has_b = ib >= 0;
        bool batch_a = has_a && ia == a->batch_axis;
        bool batch_b = has_b && ib == b->batch_axis;
        int64_t da = has_a ? a->dims[ia] : 1, db = has_b ? b->dims[ib] : 1;
        if (batch_a && batch_b) {
            if (da != db)
                return false;
            r.dims[i] = da;
            r.batch_axis = i;
        } else if (batch_a || batch_b) {
            /* A batch axis meets a static extent: only 1 stretches. */
            if ((batch_a ? db : da) != 1)
                return false;
            r.dims[i] = batch_a ? da : db;
            r.batch_axis = i;
        } else if (da == db || db == 1) {
            r.dims[i] = da;
        } else if (da == 1) {
            r.dims[i] = db;
        } else {
            return false;
        }
    }
    *out = r;
    return true;
}

bool ir_can_broadcast(const Shape *from, const Shape *to)
{
    Shape r;
    return ir_broadcast_shape(from, to, &r) && shape_equal(&r, to);
}

bool ir_matmul_shape(const Shape *a, const Shape *b, bool trans_a, bool trans_b,
                     Shape *out, const char **why)
{
    if (a->rank != 2 || b->rank != 2) {
        *why = "matmul operands must be matrices (rank 2)";
        return false;
    }
    int am = trans_a ? 1 : 0, ak = trans_a ? 0 : 1;
    int bk = trans_b ? 1 : 0, bn = trans_b ? 0 : 1;
    bool a_k_batch = a->batch_axis == ak, b_k_batch = b->batch_axis == bk;
    if (a->dims[ak] != b->dims[bk] || a_k_batch != b_k_batch) {
        *why = "inner dimensions of matmul differ";
        return false;
    }
    if (b->batch_axis == bn) {
        *why = "matmul cannot produce a batch-sized column dimension";
        return false;
    }
    Shape r = shape_scalar();
    r.rank = 2;
    r.dims[0] = a->dims[am];
    r.dims[1] = b->dims[bn];
    r.batch_axis = a->batch_axis == am ? 0 : -1;
    *out = r;
    return true;
}

static int64_t conv_out_extent(int64_t in, int64_t kernel, int64_t stride,
                               int64_t pad, int64_t dilation)
{
    int64_t span = dilation * (kernel - 1) + 1;
    if (in + 2 * pad < span)
        return 0;
    return (in + 2 * pad - span) / stride + 1;
}

bool ir_conv2d_shape(const Shape *x, const Shape *w, const IrConvAttr *attr,
                     Shape *out, const char **why)
{
    if (x->rank != 4) {
        *why = "conv2d input must have rank 4 [N, C, H, W]";
        return false;
    }
    if (w->rank != 4 || w->batch_axis >= 0) {
        *why = "conv2d weight must have rank 4 [K, C/groups, R, S]";
        return false;
    }
    if (x->batch_axis > 0) {
        *why = "conv2d input may depend on the batch size only in its first axis";
        return false;
    }
    for (int i = 0; i < 2; i++) {
        if (attr->stride[i] < 1 || attr->dilation[i] < 1 || attr->pad[i] < 0) {
            *why = "conv2d stride and dilation must be >= 1 and padding >= 0";
            return false;
        }
    }
    int64_t groups = attr->groups;
    if (groups < 1 || x->dims[1] % groups != 0 || w->dims[0] % groups != 0) {
        *why = "conv2d groups must divide both input and output channels";
        return false;
    }
    if (w->dims[1] * groups != x->dims[1]) {
        *why = "conv2d weight's input channels do not match the input";
        return false;
    }
    int64_t p = conv_out_extent(x->dims[2], w->dims[2], attr->stride[0],
                                attr->pad[0], attr->dilation[0]);
    int64_t q = conv_out_extent(x->dims[3], w->dims[3], attr->stride[1],
                                attr->pad[1], attr->dilation[1]);
    if (p < 1 || q < 1) {
        *why = "conv2d kernel is larger than the padded input";
        return false;
    }
    Shape r = *x;
    r.dims[1] = w->dims[0];
    r.dims[2] = p;
    r.dims[3] = q;
    *out = r;
    return true;
}

bool ir_pool2d_shape(const Shape *x, const IrPoolAttr *attr, Shape *out,
                     const char **why)
{
    if (x->rank != 4) {
        *why = "pooling input must have rank 4 [N, C, H, W]";
        return false;
    }
    if (x->batch_axis > 0) {
        *why = "pooling input may depend on the batch size only in its first axis";
        return false;
    }
    for (int i = 0; i < 2; i++) {
        if (attr->kernel[i] < 1 || attr->stride[i] < 1 || attr->pad[i] < 0) {
            *why = "pooling kernel and stride must be >= 1 and padding >= 0";
            return false;
        }
        if (attr->pad[i] * 2 > attr->kernel[i]) {
            *why = "pooling padding must be at most half the kernel size";
            return false;
        }
    }
    int64_t p = conv_out_extent(x->dims[2], attr->kernel[0], attr->stride[0],
                                attr->pad[0], 1);
    int64_t q = conv_out_extent(x->dims[3], attr->kernel[1], attr->stride[1],
                                attr->pad[1], 1);
    if (p < 1 || q < 1) {
        *why = "pooling window is larger than the padded input";
        return false;
    }
    Shape r = *x;
    r.dims[2] = p;
    r.dims[3] = q;
    *out = r;
    return true;
}

/* ---- builders ------------------------------------------------------------- */

static bool is_float(DType dt)
{
    return dt == DT_F32 || dt == DT_F64;
}

int ir_input(IrGraph *g, const char *name, DType dtype, Shape shape, SrcLoc loc)
{
    BOCB_ASSERT(ir_find_input(g, name) < 0);
    if (g->ninputs == g->cap_inputs)
        vec_grow((void **)&g->inputs, &g->cap_inputs, g->ninputs + 1, sizeof *g->inputs);
    IrInput *in = &g->inputs[g->ninputs];
    in->name = arena_strdup(g->module->arena, name);
    in->dtype = dtype;
    in->shape = shape;
    int id = add_node(g, IR_INPUT, dtype, shape, 0, NULL, loc);
    g->nodes[id].attr.input = g->ninputs++;
    return id;
}

int ir_var_read(IrGraph *g, int var, SrcLoc loc)
{
    BOCB_ASSERT(var >= 0 && var < g->module->nvars);
    const IrVar *v = &g->module->vars[var];
    int id = add_node(g, IR_VAR, v->dtype, v->shape, 0, NULL, loc);
    g->nodes[id].attr.var = var;
    return id;
}

int ir_const(IrGraph *g, DType dtype, double value, SrcLoc loc)
{
    int id = add_node(g, IR_CONST, dtype, shape_scalar(), 0, NULL, loc);
    g->nodes[id].attr.value = value;
    return id;
}

int ir_batch(IrGraph *g, DType dtype, SrcLoc loc)
{
    return add_node(g, IR_BATCH, dtype, shape_scalar(), 0, NULL, loc);
}

int ir_unary(IrGraph *g, IrOp op, int x, SrcLoc loc)
{
    BOCB_ASSERT(ir_op_class(op) == IR_CLASS_ELEMENTWISE && op != IR_CAST);
    const IrNode *n = &g->nodes[x];
    if (op == IR_NOT)
        BOCB_ASSERT(n->dtype == DT_BOOL);
    else
        BOCB_ASSERT(is_float(n->dtype));
    return add_node(g, op, n->dtype, n->shape, 1, &x, loc);
}

int ir_cast(IrGraph *g, int x, DType dtype, SrcLoc loc)
{
    return add_node(g, IR_CAST, dtype, g->nodes[x].shape, 1, &x, loc);
}

int ir_binary(IrGraph *g, IrOp op, int a, int b, SrcLoc loc)
{
    const IrNode *na = &g->nodes[a], *nb = &g->nodes[b];
    BOCB_ASSERT(na->dtype == nb->dtype);
    BOCB_ASSERT(shape_equal(&na->shape, &nb->shape));
    DType result = na->dtype;
    switch (op) {
    case IR_ADD: case IR_SUB: case IR_MUL: case IR_DIV: case IR_POW:
    case IR_MAX: case IR_MIN:
        BOCB_ASSERT(is_float(na->dtype));
        break;
    case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_EQ: case IR_NE:
        result = DT_BOOL;
        break;
    case IR_AND: case IR_OR:
        BOCB_ASSERT(na->dtype == DT_BOOL);
        break;
    default:
        BOCB_UNREACHABLE("not a binary op");
    }
    int in[2] = {a, b};
    return add_node(g, op, result, na->shape, 2, in, loc);
}

int ir_select(IrGraph *g, int cond, int a, int b, SrcLoc loc)
{
    const IrNode *nc = &g->nodes[cond], *na = &g->nodes[a], *nb = &g->nodes[b];
    BOCB_ASSERT(nc->dtype == DT_BOOL && na->dtype == nb->dtype);
    BOCB_ASSERT(shape_equal(&nc->shape, &na->shape));
    BOCB_ASSERT(shape_equal(&na->shape, &nb->shape));
    int in[3] = {cond, a, b};
    return add_node(g, IR_SELECT, na->dtype, na->shape, 3, in, loc);
}

int ir_broadcast(IrGraph *g, int x, Shape to, SrcLoc loc)
{
    const IrNode *n = &g->nodes[x];
    BOCB_ASSERT(ir_can_broadcast(&n->shape, &to));
    if (shape_equal(&n->shape, &to))
        return x;
    return add_node(g, IR_BROADCAST, n->dtype, to, 1, &x, loc);
}

int ir_reshape(IrGraph *g, int x, Shape to, SrcLoc loc)
{
    const IrNode *n = &g->nodes[x];
    /* Equal element counts for every batch size: compare at two sizes. */
    BOCB_ASSERT(shape_numel(&n->shape, 1) == shape_numel(&to, 1));
    BOCB_ASSERT(shape_numel(&n->shape, 2) == shape_numel(&to, 2));
    if (shape_equal(&n->shape, &to))
        return x;
    return add_node(g, IR_RESHAPE, n->dtype, to, 1, &x, loc);
}

int ir_sum(IrGraph *g, int x, uint32_t axes, SrcLoc loc)
{
    const IrNode *n = &g->nodes[x];
    BOCB_ASSERT(is_float(n->dtype));
    BOCB_ASSERT((axes >> n->shape.rank) == 0);
    if (axes == 0)
        return x;
    Shape r = shape_scalar();
    for (int i = 0; i < n->shape.rank; i++) {
        if (axes & (1u << i))
            continue;
        if (i == n->shape.batch_axis)
            r.batch_axis = r.rank;
        r.dims[r.rank++] = n->shape.dims[i];
    }
    int id = add_node(g, IR_SUM, n->dtype, r, 1, &x, loc);
    g->nodes[id].attr.axes = axes;
    return id;
}

int ir_matmul(IrGraph *g, int a, int b, bool trans_a, bool trans_b, SrcLoc loc)
{
    const IrNode *na = &g->nodes[a], *nb = &g->nodes[b];
    Shape r;
    const char *why;
    BOCB_ASSERT(na->dtype == nb->dtype && is_float(na->dtype));
    BOCB_ASSERT(ir_matmul_shape(&na->shape, &nb->shape, trans_a, trans_b, &r, &why));
    int in[2] = {a, b};
    int id = add_node(g, IR_MATMUL, na->dtype, r, 2, in, loc);
    g->nodes[id].attr.matmul.trans_a = trans_a;
    g->nodes[id].attr.matmul.trans_b = trans_b;
    return id;
}

int ir_conv2d(IrGraph *g, int x, int w, IrConvAttr attr, SrcLoc loc)
{
    const IrNode *nx = &g->nodes[x], *nw = &g->nodes[w];
    Shape r;
    const char *why;
    BOCB_ASSERT(nx->dtype == nw->dtype && is_float(nx->dtype));
    BOCB_ASSERT(ir_conv2d_shape(&nx->shape, &nw->shape, &attr, &r, &why));
    int in[2] = {x, w};
    int id = add_node(g, IR_CONV2D, nx->dtype, r, 2, in, loc);
    g->nodes[id].attr.conv = attr;
    return id;
}

int ir_conv2d_grad_input(IrGraph *g, int dy, int w, Shape x_shape,
                         IrConvAttr attr, SrcLoc loc)
{
    Shape y;
    const char *why;
    BOCB_ASSERT(ir_conv2d_shape(&x_shape, &g->nodes[w].shape, &attr, &y, &why));
    BOCB_ASSERT(shape_equal(&y, &g->nodes[dy].shape));
    int in[2] = {dy, w};
    int id = add_node(g, IR_CONV2D_GRAD_INPUT, g->nodes[dy].dtype, x_shape, 2, in, loc);
    g->nodes[id].attr.conv = attr;
    return id;
}

int ir_conv2d_grad_weight(IrGraph *g, int x, int dy, Shape w_shape,
                          IrConvAttr attr, SrcLoc loc)
{
    Shape y;
    const char *why;
    BOCB_ASSERT(ir_conv2d_shape(&g->nodes[x].shape, &w_shape, &attr, &y, &why));
    BOCB_ASSERT(shape_equal(&y, &g->nodes[dy].shape));
    int in[2] = {x, dy};
    int id = add_node(g, IR_CONV2D_GRAD_WEIGHT, g->nodes[dy].dtype, w_shape, 2, in, loc);
    g->nodes[id].attr.conv = attr;
    return id;
}

int ir_maxpool2d(IrGraph *g, int x, IrPoolAttr attr, SrcLoc loc)
{
    Shape r;
    const char *why;
    BOCB_ASSERT(is_float(g->nodes[x].dtype));
    BOCB_ASSERT(ir_pool2d_shape(&g->nodes[x].shape, &attr, &r, &why));
    int id = add_node(g, IR_MAXPOOL2D, g->nodes[x].dtype, r, 1, &x, loc);
    g->nodes[id].attr.pool = attr;
    return id;
}

int ir_maxpool2d_grad(IrGraph *g, int x, int dy, IrPoolAttr attr, SrcLoc loc)
{
    Shape r;
    const char *why;
    BOCB_ASSERT(ir_pool2d_shape(&g->nodes[x].shape, &attr, &r, &why));
    BOCB_ASSERT(shape_equal(&r, &g->nodes[dy].shape));
    int in[2] = {x, dy};
    int id = add_node(g, IR_MAXPOOL2D_GRAD, g->nodes[x].dtype, g->nodes[x].shape, 2, in, loc);
    g->nodes[id].attr.pool = attr;
    return id;
}

static Shape rows_of(const Shape *logits)
{
    Shape r = shape_scalar();
    r.rank = 1;
    r.dims[0] = logits->dims[0];
    r.batch_axis = logits->batch_axis == 0 ? 0 : -1;
    return r;
}

int ir_cross_entropy(IrGraph *g, int logits, int labels, SrcLoc loc)
{
    const IrNode *nl = &g->nodes[logits], *ny = &g->nodes[labels];
    BOCB_ASSERT(nl->shape.rank == 2 && nl->shape.batch_axis != 1);
    BOCB_ASSERT(is_float(nl->dtype) && ny->dtype == DT_I32);
    Shape rows = rows_of(&nl->shape);
    BOCB_ASSERT(shape_equal(&rows, &ny->shape));
    int in[2] = {logits, labels};
    return add_node(g, IR_CROSS_ENTROPY, nl->dtype, rows, 2, in, loc);
}

/* The shape of rows gathered by ids of shape `ids` from a table with rows
 * of `dim` elements: ids' shape with dim appended. */
static Shape gathered_shape(const Shape *ids, int64_t dim)
{
    Shape s = *ids;
    BOCB_ASSERT(s.rank < SHAPE_MAX_RANK);
    s.dims[s.rank++] = dim;
    return s;
}

int ir_gather(IrGraph *g, int table, int ids, SrcLoc loc)
{
    const IrNode *t = &g->nodes[table], *i = &g->nodes[ids];
    BOCB_ASSERT(t->shape.rank == 2 && t->shape.batch_axis < 0 && is_float(t->dtype));
    BOCB_ASSERT(i->dtype == DT_I32);
    int in[2] = {table, ids};
    return add_node(g, IR_GATHER, t->dtype, gathered_shape(&i->shape, t->shape.dims[1]), 2,
                    in, loc);
}

int ir_scatter_add(IrGraph *g, int ids, int dy, Shape table_shape, SrcLoc loc)
{
    const IrNode *i = &g->nodes[ids], *d = &g->nodes[dy];
    BOCB_ASSERT(table_shape.rank == 2 && i->dtype == DT_I32);
    Shape want = gathered_shape(&i->shape, table_shape.dims[1]);
    BOCB_ASSERT(shape_equal(&want, &d->shape));
    int in[2] = {ids, dy};
    return add_node(g, IR_SCATTER_ADD, d->dtype, table_shape, 2, in, loc);
}

int ir_loss(IrGraph *g, int logits, int labels, IrLossAttr attr, SrcLoc loc)
{
    int id = ir_cross_entropy(g, logits, labels, loc);
    g->nodes[id].attr.loss = attr;
    return id;
}

int ir_random(IrGraph *g, int key, int step, Shape shape, SrcLoc loc)
{
    const IrNode *k = &g->nodes[key], *s = &g->nodes[step];
    BOCB_ASSERT(k->shape.rank == 0 && s->shape.rank == 0);
    BOCB_ASSERT(is_float(k->dtype) && s->dtype == k->dtype);
    DType dtype = k->dtype; /* the broadcasts may move the node array */
    int in[2] = {ir_broadcast(g, key, shape, loc), ir_broadcast(g, step, shape, loc)};
    return add_node(g, IR_RANDOM, dtype, shape, 2, in, loc);
}

int ir_cross_entropy_grad(IrGraph *g, int logits, int labels, int dloss,
                          SrcLoc loc)
{
    const IrNode *nl = &g->nodes[logits];
    Shape rows = rows_of(&nl->shape);
    BOCB_ASSERT(shape_equal(&rows, &g->nodes[dloss].shape));
    BOCB_ASSERT(shape_equal(&rows, &g->nodes[labels].shape));
    int in[3] = {logits, labels, dloss};
    return add_node(g, IR_CROSS_ENTROPY_GRAD, nl->dtype, nl->shape, 3, in, loc);
}

int ir_sample_labels(IrGraph *g, int logits, int step, uint32_t stream, SrcLoc loc)
{
    const IrNode *nl = &g->nodes[logits], *ns = &g->nodes[step];
    BOCB_ASSERT(nl->shape.rank == 2 && nl->shape.batch_axis != 1 && is_float(nl->dtype));
    BOCB_ASSERT(ns->shape.rank == 0 && ns->dtype == nl->dtype);
    int in[2] = {logits, step};
    int id = add_node(g, IR_SAMPLE_LABELS, DT_I32, rows_of(&nl->shape), 2, in, loc);
    g->nodes[id].attr.stream = stream;
    return id;
}

int ir_assign(IrGraph *g, int var, int value, SrcLoc loc)
{
    BOCB_ASSERT(var >= 0 && var < g->module->nvars);
    const IrVar *v = &g->module->vars[var];
    const IrNode *n = &g->nodes[value];
    BOCB_ASSERT(n->dtype == v->dtype && shape_equal(&n->shape, &v->shape));
    int id = add_node(g, IR_ASSIGN, v->dtype, v->shape, 1, &value, loc);
    g->nodes[id].attr.var = var;
    return id;
}

int ir_gather_shards(IrGraph *g, int var, SrcLoc loc)
{
    BOCB_ASSERT(var >= 0 && var < g->module->nvars);
    const IrVar *v = &g->module->vars[var];
    BOCB_ASSERT(v->kind == IR_VAR_PARAM);
    int id = add_node(g, IR_GATHER_SHARDS, v->dtype, v->shape, 0, NULL, loc);
    g->nodes[id].attr.var = var;
    return id;
}

int ir_reduce_shards(IrGraph *g, int var, int grad, SrcLoc loc)
{
    BOCB_ASSERT(var >= 0 && var < g->module->nvars);
    const IrVar *v = &g->module->vars[var];
    const IrNode *n = &g->nodes[grad];
    BOCB_ASSERT(v->kind == IR_VAR_PARAM && n->dtype == v->dtype &&
                shape_equal(&n->shape, &v->shape));
    int id = add_node(g, IR_REDUCE_SHARDS, v->dtype, shape_scalar(), 1, &grad, loc);
    g->nodes[id].attr.var = var;
    return id;
}

int ir_add_spatial(IrGraph *g, IrOp op, DType dtype, Shape shape, int nin, const int *in,
                   RtSpatialAttr attr, SrcLoc loc)
{
    int id = add_node(g, op, dtype, shape, nin, in, loc);
    g->nodes[id].attr.spatial = attr;
    return id;
}

void ir_add_output(IrGraph *g, const char *name, int node)
{
    BOCB_ASSERT(node >= 0 && node < g->nnodes);
    BOCB_ASSERT(ir_find_output(g, name) < 0);
    if (g->noutputs == g->cap_outputs)
        vec_grow((void **)&g->outputs, &g->cap_outputs, g->noutputs + 1, sizeof *g->outputs);
    g->outputs[g->noutputs].name = arena_strdup(g->module->arena, name);
    g->outputs[g->noutputs].node = node;
    g->noutputs++;
}

int ir_find_output(const IrGraph *g, const char *name)
{
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(g->outputs[i].name, name) == 0)
            return g->outputs[i].node;
    return -1;
}

int ir_find_input(const IrGraph *g, const char *name)
{
    for (int i = 0; i < g->ninputs; i++)
        if (strcmp(g->inputs[i].name, name) == 0)
            return i;
    return -1;
}

/* ---- analyses and passes -------------------------------------------------- */

void ir_count_uses(const IrGraph *g, int *uses)
{
    memset(uses, 0, (size_t)g->nnodes * sizeof *uses);
    for (int i = 0; i < g->nnodes; i++)
        for (int j = 0; j < g->nodes[i].nin; j++)
            uses[g->nodes[i].in[j]]++;
    for (int i = 0; i < g->noutputs; i++)
        uses[g->outputs[i].node]++;
}

/* Removes the nodes not marked in `keep`, which no kept node may use, and
 * renumbers the rest in order. Returns the new id of every old node (-1
 * for a removed one), malloc'd. */
static int *compact_nodes(IrGraph *g, const bool *keep)
{
    int *remap = xmalloc(size_mul((size_t)g->nnodes + 1, sizeof *remap));
    int kept = 0;
    for (int i = 0; i < g->nnodes; i++) {
        if (!keep[i]) {
            remap[i] = -1;
            continue;
        }
        IrNode n = g->nodes[i];
        for (int j = 0; j < n.nin; j++)
            n.in[j] = remap[n.in[j]];
        remap[i] = kept;
        g->nodes[kept++] = n;
    }
    g->nnodes = kept;
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i].node = remap[g->outputs[i].node];
    return remap;
}

void ir_dce(IrGraph *g)
{
    bool *live = xcalloc((size_t)g->nnodes + 1, sizeof *live);
    for (int i = 0; i < g->noutputs; i++)
        live[g->outputs[i].node] = true;
    for (int i = g->nnodes - 1; i >= 0; i--) {
        const IrNode *n = &g->nodes[i];
        /* Inputs stay so that the graph's signature does not change. */
        if (n->op == IR_ASSIGN || n->op == IR_INPUT || n->op == IR_REDUCE_SHARDS)
            live[i] = true;
        if (!live[i])
            continue;
        for (int j = 0; j < n->nin; j++)
            live[n->in[j]] = true;
    }
    free(compact_nodes(g, live));
    free(live);
}

void ir_guard_assigns(IrGraph *g, int cond, SrcLoc loc)
{
    BOCB_ASSERT(g->nodes[cond].dtype == DT_BOOL && g->nodes[cond].shape.rank == 0);
    int *conds = xmalloc(size_mul((size_t)g->module->nvars + 1, sizeof *conds));
    for (int v = 0; v < g->module->nvars; v++)
        conds[v] = cond;
    ir_guard_assigns_by_var(g, conds, loc);
    free(conds);
}

void ir_guard_assigns_by_var(IrGraph *g, const int *conds, SrcLoc loc)
{
    /* An assignment has no users, so each one can move to the end of the
     * graph, after the nodes its guard needs. */
    VEC(int) vars = {0};
    VEC(int) values = {0};
    bool *keep = xcalloc((size_t)g->nnodes + 1, sizeof *keep);
    for (int i = 0; i < g->nnodes; i++) {
        const IrNode *n = &g->nodes[i];
        keep[i] = n->op != IR_ASSIGN || conds[n->attr.var] < 0;
        if (!keep[i]) {
            VEC_PUSH(&vars, n->attr.var);
            VEC_PUSH(&values, n->in[0]);
        }
    }
    int *remap = compact_nodes(g, keep);
    for (int i = 0; i < vars.len; i++) {
        int var = vars.data[i], value = remap[values.data[i]];
        int cond = remap[conds[var]];
        BOCB_ASSERT(cond >= 0 && g->nodes[cond].dtype == DT_BOOL &&
                    g->nodes[cond].shape.rank == 0);
        const IrVar *v = &g->module->vars[var];
        int old = ir_var_read(g, var, loc);
        int c = ir_broadcast(g, cond, v->shape, loc);
        ir_assign(g, var, ir_select(g, c, value, old, loc), loc);
    }
    free(remap);
    free(keep);
    VEC_FREE(&vars);
    VEC_FREE(&values);
}
