/* interp.c - the reference interpreter.
 *
 * Scalar semantics match kernel_eval (compiler/kernel.c) exactly, so a
 * fused kernel and the nodes it came from compute the same bits. f32 ops
 * run in float with the float libm functions and f64 ops in double.
 * max/min propagate NaN and order -0 below +0, sign(NaN) is NaN, and
 * relu(x) is max(x, 0).
 *
 * Buffers are allocated when a node runs and freed after its last use, so
 * the interpreter's peak memory is about the live set rather than the sum
 * of every node.
 */
#include "interp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/ops.h"
#include "../runtime/philox.h"
#include "ir_spatial.h"

/* What a result contains, in increasing order of severity. */
enum { NUMERICS_FINITE, NUMERICS_INF, NUMERICS_NAN };

struct Interp {
    const IrGraph *g;
    RtVarStore *store;
    const void **inputs;
    void **values;
    bool *owned;      /* values[i] was allocated here (not an input/variable) */
    int *last_use;    /* last node reading each value; nnodes = keep */
    void *workspace;
    size_t workspace_bytes;
    RtShardHooks shard_hooks;
    /* --check-numerics: per node, what its last result contained, and the
     * first node of the last run that made a new NaN or infinity. */
    bool check_numerics;
    uint8_t *nonfinite;
    int fault_node;
    uint8_t fault_kind;
};

Interp *interp_create(const IrGraph *g, RtVarStore *store)
{
    BOCB_ASSERT(store->nvars == g->module->nvars);
    Interp *it = xcalloc(1, sizeof *it);
    it->g = g;
    it->store = store;
    it->inputs = xcalloc((size_t)g->ninputs + 1, sizeof *it->inputs);
    it->values = xcalloc((size_t)g->nnodes + 1, sizeof *it->values);
    it->owned = xcalloc((size_t)g->nnodes + 1, sizeof *it->owned);
    it->last_use = xmalloc(size_mul((size_t)g->nnodes + 1, sizeof *it->last_use));
    it->fault_node = -1;

    for (int i = 0; i < g->nnodes; i++)
        it->last_use[i] = i;
    for (int i = 0; i < g->nnodes; i++) {
        const IrNode *n = &g->nodes[i];
        for (int j = 0; j < n->nin; j++) {
            /* An assignment's value must survive until the commit. */
            int when = n->op == IR_ASSIGN ? g->nnodes : i;
            if (it->last_use[n->in[j]] < when)
                it->last_use[n->in[j]] = when;
        }
    }
    for (int i = 0; i < g->noutputs; i++)
        it->last_use[g->outputs[i].node] = g->nnodes;
    return it;
}

static void release_all(Interp *it)
{
    for (int i = 0; i < it->g->nnodes; i++) {
        if (it->owned[i])
            free(it->values[i]);
        it->values[i] = NULL;
        it->owned[i] = false;
    }
}

void interp_destroy(Interp *it)
{
    if (!it)
        return;
    release_all(it);
    free(it->inputs);
    free(it->values);
    free(it->owned);
    free(it->last_use);
    free(it->workspace);
    free(it->nonfinite);
    free(it);
}

void interp_bind_input(Interp *it, int index, const void *data)
{
    BOCB_ASSERT(index >= 0 && index < it->g->ninputs);
    it->inputs[index] = data;
}

void interp_set_shard_hooks(Interp *it, const RtShardHooks *hooks)
{
    it->shard_hooks = *hooks;
}

const void *interp_output(const Interp *it, const char *name)
{
    int node = ir_find_output(it->g, name);
    BOCB_ASSERT(node >= 0);
    return it->values[node];
}

static void *workspace(Interp *it, size_t bytes)
{
    if (bytes > it->workspace_bytes) {
        free(it->workspace);
        it->workspace = xmalloc(bytes);
        it->workspace_bytes = bytes;
    }
    return it->workspace;
}

/* ---- scalar semantics ----------------------------------------------------- */

#define DEFINE_SCALAR_OPS(T, SUFFIX, SQRT, EXP, LOG, POW, TANH, FLOOR, FABS, ERF) \
    static T maximum_##SUFFIX(T a, T b)                                       \
    {                                                                         \
        if (a != a || b != b)                                                 \
            return a + b;                                                     \
        if (a == b)                                                           \
            return signbit(a) ? b : a;                                        \
        return a > b ? a : b;                                                 \
    }                                                                         \
    static T minimum_##SUFFIX(T a, T b)                                       \
    {                                                                         \
        if (a != a || b != b)                                                 \
            return a + b;                                                     \
        if (a == b)                                                           \
            return signbit(a) ? a : b;                                        \
        return a < b ? a : b;                                                 \
    }                                                                         \
    static T sign_##SUFFIX(T x)                                               \
    {                                                                         \
        if (x > 0)                                                            \
            return (T)1;                                                      \
        if (x < 0)                                                            \
            return (T)-1;                                                     \
        return x == 0 ? (T)0 : x; /* +0 for either zero; NaN unchanged */     \
    }                                                                         \
    static T unary_##SUFFIX(IrOp op, T x)                                     \
    {                                                                         \
        switch (op) {                                                         \
        case IR_NEG: return -x;                                               \
        case IR_ABS: return FABS(x);                                          \
        case IR_SIGN: return sign_##SUFFIX(x);                                \
        case IR_SQRT: return SQRT(x);                                         \
        case IR_EXP: return EXP(x);                                           \
        case IR_LOG: return LOG(x);                                           \
        case IR_TANH: return TANH(x);                                         \
        case IR_ERF: return ERF(x);                                           \
        case IR_SIGMOID: return (T)1 / ((T)1 + EXP(-x));                      \
        case IR_RELU: return maximum_##SUFFIX(x, (T)0);                       \
        case IR_FLOOR: return FLOOR(x);                                       \
        default: BOCB_UNREACHABLE("unary op");                                \
        }                                                                     \
    }                                                                         \
    static T binary_##SUFFIX(IrOp op, T a, T b)                               \
    {                                                                         \
        switch (op) {                                                         \
        case IR_ADD: return a + b;                                            \
        case IR_SUB: return a - b;                                            \
        case IR_MUL: return a * b;                                            \
        case IR_DIV: return a / b;                                            \
        case IR_POW: return POW(a, b);                                        \
        case IR_MAX: return maximum_##SUFFIX(a, b);                           \
        case IR_MIN: return minimum_##SUFFIX(a, b);                           \
        default: BOCB_UNREACHABLE("binary op");                               \
        }                                                                     \
    }

DEFINE_SCALAR_OPS(float, f32, sqrtf, expf, logf, powf, tanhf, floorf, fabsf, erff)
DEFINE_SCALAR_OPS(double, f64, sqrt, exp, log, pow, tanh, floor, fabs, erf)

static double load_as_double(DType dt, const void *p, int64_t i)
{
    switch (dt) {
    case DT_F32: return ((const float *)p)[i];
    case DT_F64: return ((const double *)p)[i];
    case DT_I32: return ((const int32_t *)p)[i];
    case DT_BOOL: return ((const uint8_t *)p)[i] != 0;
    }
    BOCB_UNREACHABLE("dtype");
}

/* Float to i32 saturates and maps NaN to 0, as kernel_eval does. */
static int32_t saturate_i32(double v)
{
    if (v != v)
        return 0;
    if (v <= -2147483648.0)
        return INT32_MIN;
    if (v >= 2147483647.0)
        return INT32_MAX;
    return (int32_t)v;
}

static void store_from_double(DType dt, void *p, int64_t i, double v)
{
    switch (dt) {
    case DT_F32: ((float *)p)[i] = (float)v; return;
    case DT_F64: ((double *)p)[i] = v; return;
    case DT_I32: ((int32_t *)p)[i] = saturate_i32(v); return;
    case DT_BOOL: ((uint8_t *)p)[i] = v != 0; return;
    }
    BOCB_UNREACHABLE("dtype");
}

static bool compare(IrOp op, double a, double b)
{
    switch (op) {
    case IR_LT: return a < b;
    case IR_LE: return a <= b;
    case IR_GT: return a > b;
    case IR_GE: return a >= b;
    case IR_EQ: return a == b;
    case IR_NE: return a != b;
    default: BOCB_UNREACHABLE("comparison");
    }
}

/* ---- node evaluation ------------------------------------------------------ */

static void eval_elementwise(const IrNode *n, void *const *in, void *out,
                             int64_t count)
{
    switch (n->op) {
    case IR_NEG: case IR_ABS: case IR_SIGN: case IR_SQRT: case IR_EXP:
    case IR_LOG: case IR_TANH: case IR_RELU: case IR_FLOOR: case IR_ERF: case IR_SIGMOID:
        if (n->dtype == DT_F32)
            for (int64_t i = 0; i < count; i++)
                ((float *)out)[i] = unary_f32(n->op, ((const float *)in[0])[i]);
        else
            for (int64_t i = 0; i < count; i++)
                ((double *)out)[i] = unary_f64(n->op, ((const double *)in[0])[i]);
        return;
    case IR_ADD: case IR_SUB: case IR_MUL: case IR_DIV: case IR_POW:
    case IR_MAX: case IR_MIN:
        if (n->dtype == DT_F32)
            for (int64_t i = 0; i < count; i++)
                ((float *)out)[i] = binary_f32(n->op, ((const float *)in[0])[i],
                                               ((const float *)in[1])[i]);
        else
            for (int64_t i = 0; i < count; i++)
                ((double *)out)[i] = binary_f64(n->op, ((const double *)in[0])[i],
                                                ((const double *)in[1])[i]);
        return;
    case IR_NOT:
        for (int64_t i = 0; i < count; i++)
            ((uint8_t *)out)[i] = !((const uint8_t *)in[0])[i];
        return;
    case IR_AND:
    case IR_OR:
        for (int64_t i = 0; i < count; i++) {
            bool a = ((const uint8_t *)in[0])[i] != 0, b = ((const uint8_t *)in[1])[i] != 0;
            ((uint8_t *)out)[i] = n->op == IR_AND ? (a && b) : (a || b);
        }
        return;
    default:
        break;
    }
    BOCB_UNREACHABLE("elementwise op");
}

/* Comparisons, casts and select need the operand dtype, which may differ
 * from the result's. */
static void eval_mixed(const IrGraph *g, const IrNode *n, void *const *in,
                       void *out, int64_t count)
{
    DType a_dt = g->nodes[n->in[0]].dtype;
    switch (n->op) {
    case IR_LT: case IR_LE: case IR_GT: case IR_GE: case IR_EQ: case IR_NE:
        for (int64_t i = 0; i < count; i++) {
            /* Widening to double keeps every comparison of f32 and i32
             * values exact. */
            double a = load_as_double(a_dt, in[0], i);
            double b = load_as_double(a_dt, in[1], i);
            ((uint8_t *)out)[i] = compare(n->op, a, b);
        }
        return;
    case IR_CAST:
        for (int64_t i = 0; i < count; i++)
            store_from_double(n->dtype, out, i, load_as_double(a_dt, in[0], i));
        return;
    case IR_RANDOM:
        /* Element i of the contiguous result is element i of the tensor. */
        if (n->dtype == DT_F32)
            for (int64_t i = 0; i < count; i++)
                ((float *)out)[i] = philox_random_f32(((const float *)in[0])[i],
                                                      ((const float *)in[1])[i], (uint64_t)i);
        else
            for (int64_t i = 0; i < count; i++)
                ((double *)out)[i] = philox_random_f64(((const double *)in[0])[i],
                                                       ((const double *)in[1])[i], (uint64_t)i);
        return;
    case IR_SELECT: {
        size_t size = dtype_size(n->dtype);
        for (int64_t i = 0; i < count; i++) {
            const void *src = ((const uint8_t *)in[0])[i]
                                  ? (const char *)in[1] + (size_t)i * size
                                  : (const char *)in[2] + (size_t)i * size;
            memcpy((char *)out + (size_t)i * size, src, size);
        }
        return;
    }
    default:
        eval_elementwise(n, in, out, count);
        return;
    }
}

static void eval_broadcast(const Shape *from, const Shape *to, int64_t batch,
                           size_t size, const void *src, void *dst)
{
    int64_t extent[SHAPE_MAX_RANK], stride[SHAPE_MAX_RANK], index[SHAPE_MAX_RANK];
    int lead = to->rank - from->rank;
    int64_t contiguous = 1;
    for (int i = to->rank - 1; i >= 0; i--) {
        extent[i] = shape_dim(to, i, batch);
        index[i] = 0;
        int j = i - lead;
        int64_t from_extent = j >= 0 ? shape_dim(from, j, batch) : 1;
        stride[i] = from_extent == 1 ? 0 : contiguous;
        contiguous *= from_extent;
    }
    int64_t total = shape_numel(to, batch);
    for (int64_t k = 0; k < total; k++) {
        int64_t offset = 0;
        for (int i = 0; i < to->rank; i++)
            offset += index[i] * stride[i];
        memcpy((char *)dst + (size_t)k * size, (const char *)src + (size_t)offset * size, size);
        for (int i = to->rank - 1; i >= 0; i--) {
            if (++index[i] < extent[i])
                break;
            index[i] = 0;
        }
    }
}

static RtConv2d conv_params(const IrNode *n, const Shape *x, const Shape *w,
                            int64_t batch)
{
    const IrConvAttr *c = &n->attr.conv;
    return rt_conv2d_make(x, w, c->stride, c->pad, c->dilation, c->groups, batch);
}

static RtPool2d pool_params(const IrNode *n, const Shape *x, int64_t batch)
{
    const IrPoolAttr *p = &n->attr.pool;
    return rt_pool2d_make(x, p->kernel, p->stride, p->pad, batch);
}

/* The spatial ops run the runtime's kernel on the operands, then the
 * result, as the executor does. */
static void eval_spatial(const IrGraph *g, const IrNode *n, void *const *in, void *out,
                         int64_t batch)
{
    Shape shapes[IR_MAX_OPERANDS + 1];
    void *buffers[IR_MAX_OPERANDS + 1];
    for (int j = 0; j < n->nin; j++) {
        shapes[j] = g->nodes[n->in[j]].shape;
        buffers[j] = in[j];
    }
    shapes[n->nin] = n->shape;
    buffers[n->nin] = out;
    rt_spatial_run(n->dtype, &n->attr.spatial, shapes, buffers, batch);
}

/* The steps of sharded training, through the hooks the loop set. */
static void eval_shards(Interp *it, const IrNode *n, void *const *in, void *out)
{
    const RtShardHooks *h = &it->shard_hooks;
    if (n->op == IR_GATHER_SHARDS) {
        BOCB_ASSERT(h->gather && "gather_shards without shard hooks");
        h->gather(h->context, n->attr.var, out);
        return;
    }
    BOCB_ASSERT(h->reduce && "reduce_shards without shard hooks");
    h->reduce(h->context, n->attr.var, in[0]);
    store_from_double(n->dtype, out, 0, 0.0);
}

static void eval_library(Interp *it, const IrNode *n, void *const *in, void *out,
                         int64_t batch)
{
    const IrGraph *g = it->g;
    if (ir_is_spatial(n->op)) {
        eval_spatial(g, n, in, out, batch);
        return;
    }
    if (n->op == IR_GATHER_SHARDS || n->op == IR_REDUCE_SHARDS) {
        eval_shards(it, n, in, out);
        return;
    }
    const Shape *s0 = &g->nodes[n->in[0]].shape;
    const Shape *s1 = n->nin > 1 ? &g->nodes[n->in[1]].shape : NULL;
    DType dt = n->dtype;

    switch (n->op) {
    case IR_MATMUL: {
        bool ta = n->attr.matmul.trans_a, tb = n->attr.matmul.trans_b;
        int64_t m = shape_dim(&n->shape, 0, batch), cols = shape_dim(&n->shape, 1, batch);
        int64_t k = shape_dim(s0, ta ? 0 : 1, batch);
        rt_matmul(dt, ta, tb, m, cols, k, in[0], in[1], out, 0.0);
        return;
    }
    case IR_CONV2D: {
        RtConv2d cv = conv_params(n, s0, s1, batch);
        rt_conv2d_forward(dt, &cv, in[0], in[1], out,
                          workspace(it, rt_conv2d_workspace_bytes(dt, &cv)));
        return;
    }
    case IR_CONV2D_GRAD_INPUT: {
        RtConv2d cv = conv_params(n, &n->shape, s1, batch);
        rt_conv2d_grad_input(dt, &cv, in[0], in[1], out,
                             workspace(it, rt_conv2d_workspace_bytes(dt, &cv)));
        return;
    }
    case IR_CONV2D_GRAD_WEIGHT: {
        RtConv2d cv = conv_params(n, s0, &n->shape, batch);
        rt_conv2d_grad_weight(dt, &cv, in[0], in[1], out,
                              workspace(it, rt_conv2d_workspace_bytes(dt, &cv)));
        return;
    }
    case IR_MAXPOOL2D: {
        RtPool2d pl = pool_params(n, s0, batch);
        rt_maxpool2d_forward(dt, &pl, in[0], out);
        return;
    }
    case IR_MAXPOOL2D_GRAD: {
        RtPool2d pl = pool_params(n, s0, batch);
        rt_maxpool2d_grad(dt, &pl, in[0], in[1], out);
        return;
    }
    case IR_CROSS_ENTROPY:
        rt_loss(dt, rt_loss_of(&n->attr.loss), shape_dim(s0, 0, batch), s0->dims[1], in[0],
                in[1], out);
        return;
    case IR_GATHER:
        rt_gather(dt, shape_numel(s1, batch), s0->dims[0], s0->dims[1], in[0], in[1], out);
        return;
    case IR_SCATTER_ADD:
        rt_scatter_add(dt, shape_numel(s0, batch), n->shape.dims[0], n->shape.dims[1], in[0],
                       in[1], out);
        return;
    case IR_CROSS_ENTROPY_GRAD:
        rt_loss_grad(dt, rt_loss_of(&n->attr.loss), shape_dim(s0, 0, batch), s0->dims[1],
                     in[0], in[1], in[2], out);
        return;
    case IR_SAMPLE_LABELS: {
        DType lt = g->nodes[n->in[0]].dtype;
        double step = lt == DT_F32 ? *(const float *)in[1] : *(const double *)in[1];
        rt_sample_labels(lt, shape_dim(s0, 0, batch), s0->dims[1], in[0],
                         philox_key(n->attr.stream, (uint32_t)step), out);
        return;
    }
    default:
        BOCB_UNREACHABLE("library op");
    }
}

static void eval_node(Interp *it, int id, int64_t batch)
{
    const IrGraph *g = it->g;
    const IrNode *n = &g->nodes[id];
    void *in[IR_MAX_OPERANDS] = {NULL};
    for (int j = 0; j < n->nin; j++) {
        in[j] = it->values[n->in[j]];
        BOCB_ASSERT(in[j]);
    }

    switch (n->op) {
    case IR_INPUT:
        it->values[id] = (void *)it->inputs[n->attr.input];
        BOCB_ASSERT(it->values[id] && "graph input was not bound");
        return;
    case IR_VAR:
        it->values[id] = rt_var_data(it->store, n->attr.var);
        return;
    case IR_ASSIGN:
        return; /* committed after the last node */
    default:
        break;
    }

    int64_t count = shape_numel(&n->shape, batch);
    size_t size = dtype_size(n->dtype);
    void *out = xmalloc(size_mul((size_t)(count > 0 ? count : 1), size));
    it->values[id] = out;
    it->owned[id] = true;

    switch (ir_op_class(n->op)) {
    case IR_CLASS_LEAF:
        store_from_double(n->dtype, out, 0,
                          n->op == IR_CONST ? n->attr.value : (double)batch);
        return;
    case IR_CLASS_ELEMENTWISE:
        eval_mixed(g, n, in, out, count);
        return;
    case IR_CLASS_SHAPE:
        if (n->op == IR_RESHAPE)
            memcpy(out, in[0], (size_t)count * size);
        else
            eval_broadcast(&g->nodes[n->in[0]].shape, &n->shape, batch, size, in[0], out);
        return;
    case IR_CLASS_REDUCTION: {
        const Shape *xs = &g->nodes[n->in[0]].shape;
        int64_t dims[SHAPE_MAX_RANK];
        for (int i = 0; i < xs->rank; i++)
            dims[i] = shape_dim(xs, i, batch);
        rt_reduce_sum(n->dtype, xs->rank, dims, n->attr.axes, in[0], out);
        return;
    }
    case IR_CLASS_LIBRARY:
        eval_library(it, n, in, out, batch);
        return;
    case IR_CLASS_EFFECT:
        break;
    }
    BOCB_UNREACHABLE("node class");
}

/* Classifies count values of a float type: NUMERICS_NAN when any is a
 * NaN, else NUMERICS_INF when any is infinite, else NUMERICS_FINITE. */
static uint8_t classify_values(DType dtype, const void *data, int64_t count)
{
    uint8_t kind = NUMERICS_FINITE;
    for (int64_t k = 0; k < count; k++) {
        double v = dtype == DT_F64 ? ((const double *)data)[k] : ((const float *)data)[k];
        if (isnan(v))
            return NUMERICS_NAN;
        if (isinf(v))
            kind = NUMERICS_INF;
    }
    return kind;
}

/* Records node id as the run's fault when its result has a NaN that no
 * operand had, or an infinity while every operand was finite. Constants
 * are exempt, because the compiler uses infinite ones on purpose (the
 * attention mask, the clipping guard), and so are the operations that
 * only pass such values on. */
static void check_node_numerics(Interp *it, int id, int64_t batch)
{
    const IrNode *n = &it->g->nodes[id];
    it->nonfinite[id] = NUMERICS_FINITE;
    if ((n->dtype != DT_F32 && n->dtype != DT_F64) || !it->values[id])
        return;
    uint8_t kind = classify_values(n->dtype, it->values[id], shape_numel(&n->shape, batch));
    it->nonfinite[id] = kind;
    if (kind == NUMERICS_FINITE || n->op == IR_CONST)
        return;
    uint8_t operands = NUMERICS_FINITE;
    for (int j = 0; j < n->nin; j++)
        if (it->nonfinite[n->in[j]] > operands)
            operands = it->nonfinite[n->in[j]];
    if (operands < kind) {
        it->fault_node = id;
        it->fault_kind = kind;
    }
}

void interp_check_numerics(Interp *it, bool on)
{
    it->check_numerics = on;
    free(it->nonfinite);
    it->nonfinite = on ? xcalloc((size_t)it->g->nnodes + 1, 1) : NULL;
}

int interp_numeric_fault(const Interp *it, bool *is_nan)
{
    if (it->fault_node >= 0)
        *is_nan = it->fault_kind == NUMERICS_NAN;
    return it->fault_node;
}

void interp_run(Interp *it, int64_t batch)
{
    const IrGraph *g = it->g;
    release_all(it);
    it->fault_node = -1;

    for (int i = 0; i < g->nnodes; i++) {
        eval_node(it, i, batch);
        if (it->check_numerics && it->fault_node < 0)
            check_node_numerics(it, i, batch);

        const IrNode *n = &g->nodes[i];
        for (int j = 0; j < n->nin; j++) {
            int src = n->in[j];
            if (it->last_use[src] == i && it->owned[src]) {
                free(it->values[src]);
                it->values[src] = NULL;
                it->owned[src] = false;
            }
        }
    }

    /* Under --check-numerics, a run that made a NaN or an infinity
     * changes no variable, so they keep the last finite state. */
    if (it->fault_node >= 0)
        return;

    /* Every read saw the old values; now the assignments take effect. A
     * value that is itself a variable is copied first, so that swaps and
     * chains of assignments read old values too. */
    for (int i = 0; i < g->nnodes; i++) {
        const IrNode *n = &g->nodes[i];
        int src = n->in[0];
        if (n->op != IR_ASSIGN || it->owned[src])
            continue;
        const RtVar *v = &it->store->vars[n->attr.var];
        size_t bytes = (size_t)v->numel * dtype_size(v->dtype);
        void *copy = xmalloc(bytes);
        memcpy(copy, it->values[src], bytes);
        it->values[src] = copy;
        it->owned[src] = true;
    }
    for (int i = 0; i < g->nnodes; i++) {
        const IrNode *n = &g->nodes[i];
        if (n->op != IR_ASSIGN)
            continue;
        const RtVar *v = &it->store->vars[n->attr.var];
        memcpy(rt_var_data(it->store, n->attr.var), it->values[n->in[0]],
               (size_t)v->numel * dtype_size(v->dtype));
    }
}
