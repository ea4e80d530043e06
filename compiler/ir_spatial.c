/* ir_spatial.c - shape rules, checks and builders of the spatial ops. */
#include "ir_spatial.h"

#include "../runtime/quant.h"

#include <math.h>
#include <string.h>

bool ir_is_spatial(IrOp op)
{
    return op >= IR_PERMUTE && op <= IR_IOTA;
}

RtSpatialOp ir_spatial_kind(IrOp op)
{
    switch (op) {
    case IR_PERMUTE: return RT_SPATIAL_PERMUTE;
    case IR_SLICE: return RT_SPATIAL_SLICE;
    case IR_CONCAT: return RT_SPATIAL_CONCAT;
    case IR_BMM: return RT_SPATIAL_BMM;
    case IR_AVGPOOL2D: return RT_SPATIAL_AVGPOOL2D;
    case IR_AVGPOOL2D_GRAD: return RT_SPATIAL_AVGPOOL2D_GRAD;
    case IR_REDUCE_MAX: return RT_SPATIAL_REDUCE_MAX;
    case IR_REDUCE_MAX_GRAD: return RT_SPATIAL_REDUCE_MAX_GRAD;
    case IR_IOTA: return RT_SPATIAL_IOTA;
    case IR_QUANTIZE: return RT_SPATIAL_QUANTIZE;
    case IR_DEQUANTIZE: return RT_SPATIAL_DEQUANTIZE;
    default: BOCB_UNREACHABLE("not a spatial op");
    }
}

static bool is_float(DType dt)
{
    return dt == DT_F32 || dt == DT_F64;
}

/* ---- shape rules ---------------------------------------------------------- */

bool ir_permute_shape(const Shape *x, const int *perm, Shape *out, const char **why)
{
    bool seen[SHAPE_MAX_RANK] = {false};
    Shape r = *x;
    r.batch_axis = -1;
    for (int i = 0; i < x->rank; i++) {
        if (perm[i] < 0 || perm[i] >= x->rank || seen[perm[i]]) {
            *why = "the axes of a permutation must name every axis of the input once";
            return false;
        }
        seen[perm[i]] = true;
        r.dims[i] = x->dims[perm[i]];
        if (perm[i] == x->batch_axis)
            r.batch_axis = i;
    }
    *out = r;
    return true;
}

bool ir_slice_shape(const Shape *x, int axis, int64_t start, int64_t len, Shape *out,
                    const char **why)
{
    if (axis < 0 || axis >= x->rank) {
        *why = "the axis is out of range";
        return false;
    }
    if (axis == x->batch_axis) {
        *why = "cannot slice along the batch dimension";
        return false;
    }
    if (start < 0 || len < 1 || start + len > x->dims[axis]) {
        *why = "the slice is empty or extends past the end of the axis";
        return false;
    }
    Shape r = *x;
    r.dims[axis] = len;
    *out = r;
    return true;
}

bool ir_concat_shape(const Shape *a, const Shape *b, int axis, Shape *out,
                     const char **why)
{
    if (axis < 0 || axis >= a->rank) {
        *why = "the axis is out of range";
        return false;
    }
    if (axis == a->batch_axis || axis == b->batch_axis) {
        *why = "cannot concatenate along the batch dimension";
        return false;
    }
    bool fits = a->rank == b->rank && a->batch_axis == b->batch_axis;
    for (int i = 0; fits && i < a->rank; i++)
        fits = i == axis || a->dims[i] == b->dims[i];
    if (!fits) {
        *why = "the operands must have the same shape apart from the concatenated axis";
        return false;
    }
    Shape r = *a;
    r.dims[axis] = a->dims[axis] + b->dims[axis];
    *out = r;
    return true;
}

bool ir_bmm_shape(const Shape *a, const Shape *b, bool trans_a, bool trans_b, Shape *out,
                  const char **why)
{
    int rank = a->rank;
    if (rank < 3 || b->rank != rank) {
        *why = "batched matrix products need operands of equal rank, at least 3";
        return false;
    }
    if (a->batch_axis >= rank - 2 || b->batch_axis >= rank - 2) {
        *why = "the batch dimension may only be one of the leading dimensions";
        return false;
    }
    bool same = a->batch_axis == b->batch_axis;
    for (int i = 0; same && i < rank - 2; i++)
        same = a->dims[i] == b->dims[i];
    if (!same) {
        *why = "the leading dimensions of the operands differ";
        return false;
    }
    int64_t m = a->dims[rank - (trans_a ? 1 : 2)], ka = a->dims[rank - (trans_a ? 2 : 1)];
    int64_t kb = b->dims[rank - (trans_b ? 1 : 2)], n = b->dims[rank - (trans_b ? 2 : 1)];
    if (ka != kb) {
        *why = "inner dimensions of the matrix product differ";
        return false;
    }
    Shape r = *a;
    r.dims[rank - 2] = m;
    r.dims[rank - 1] = n;
    *out = r;
    return true;
}

Shape ir_reduced_shape(const Shape *x, uint32_t axes)
{
    Shape r = shape_scalar();
    for (int i = 0; i < x->rank; i++) {
        if (axes & (1u << i))
            continue;
        if (i == x->batch_axis)
            r.batch_axis = r.rank;
        r.dims[r.rank++] = x->dims[i];
    }
    return r;
}

static IrPoolAttr pool_attr_of(const RtSpatialAttr *a)
{
    IrPoolAttr p;
    for (int i = 0; i < 2; i++) {
        p.kernel[i] = a->p[i];
        p.stride[i] = a->p[2 + i];
        p.pad[i] = a->p[4 + i];
    }
    return p;
}

static RtSpatialAttr pool_spatial_attr(const IrPoolAttr *p, bool count_include_pad)
{
    RtSpatialAttr a = {.op = RT_SPATIAL_AVGPOOL2D};
    for (int i = 0; i < 2; i++) {
        a.p[i] = p->kernel[i];
        a.p[2 + i] = p->stride[i];
        a.p[4 + i] = p->pad[i];
    }
    a.p[6] = count_include_pad;
    return a;
}

/* The result shape of node n computed from its operands, or false. */
static bool infer(const IrGraph *g, const IrNode *n, Shape *out, const char **why)
{
    const RtSpatialAttr *a = &n->attr.spatial;
    const Shape *s0 = n->nin > 0 ? &g->nodes[n->in[0]].shape : NULL;
    const Shape *s1 = n->nin > 1 ? &g->nodes[n->in[1]].shape : NULL;
    switch (n->op) {
    case IR_PERMUTE: {
        int perm[SHAPE_MAX_RANK];
        for (int i = 0; i < s0->rank; i++)
            perm[i] = (int)a->p[i];
        return ir_permute_shape(s0, perm, out, why);
    }
    case IR_SLICE:
        return ir_slice_shape(s0, (int)a->p[0], a->p[1],
                              a->p[0] >= 0 && a->p[0] < n->shape.rank
                                  ? n->shape.dims[a->p[0]] : 0, out, why);
    case IR_CONCAT:
        return ir_concat_shape(s0, s1, (int)a->p[0], out, why);
    case IR_BMM:
        return ir_bmm_shape(s0, s1, a->p[0] != 0, a->p[1] != 0, out, why);
    case IR_AVGPOOL2D: {
        IrPoolAttr p = pool_attr_of(a);
        return ir_pool2d_shape(s0, &p, out, why);
    }
    case IR_AVGPOOL2D_GRAD: {
        /* The result is the input of the forward pass: check that the
         * forward pass maps it to dy. */
        IrPoolAttr p = pool_attr_of(a);
        Shape y;
        if (!ir_pool2d_shape(&n->shape, &p, &y, why))
            return false;
        if (!shape_equal(&y, s0)) {
            *why = "the gradient does not have the pooling's output shape";
            return false;
        }
        *out = n->shape;
        return true;
    }
    case IR_REDUCE_MAX:
    case IR_REDUCE_MAX_GRAD:
        if ((uint32_t)a->p[0] >> s0->rank) {
            *why = "the reduced axes do not exist";
            return false;
        }
        if (n->op == IR_REDUCE_MAX) {
            *out = ir_reduced_shape(s0, (uint32_t)a->p[0]);
            return true;
        }
        Shape y = ir_reduced_shape(s0, (uint32_t)a->p[0]);
        if (!shape_equal(&y, s1)) {
            *why = "the gradient does not have the reduction's output shape";
            return false;
        }
        *out = *s0;
        return true;
    case IR_QUANTIZE:
        if (n->nin != 3 || g->nodes[n->in[1]].shape.rank != 0 ||
            g->nodes[n->in[2]].shape.rank != 0 || s0->batch_axis >= 0) {
            *why = "quantize takes a tensor without a batch axis, a rank-0 key and a "
                   "rank-0 step";
            return false;
        }
        if (a->p[0] < RT_QUANT_MIN_BITS || a->p[0] > RT_QUANT_MAX_BITS || a->p[1] < 1 ||
            a->p[2] < RT_ROUND_NEAREST || a->p[2] > RT_ROUND_SHIFT || a->p[3] < 0 ||
            a->p[3] >= 0x80000000LL) {
            *why = "the quantizer's bits, bucket, rounding or tag are out of range";
            return false;
        }
        *out = shape_make(1, (int64_t[]){rt_quant_words((int)a->p[0], a->p[1],
                                                        g->nodes[n->in[0]].dtype,
                                                        shape_numel(s0, 1))});
        return true;
    case IR_DEQUANTIZE: {
        const IrNode *q = &g->nodes[n->in[0]];
        if (q->op != IR_QUANTIZE || a->p[0] != q->attr.spatial.p[0] ||
            a->p[1] != q->attr.spatial.p[1]) {
            *why = "dequantize takes the result of a quantize with its bits and bucket";
            return false;
        }
        *out = g->nodes[q->in[0]].shape;
        return true;
    }
    case IR_IOTA:
        if (a->p[0] < 0 || a->p[0] >= n->shape.rank) {
            *why = "the axis is out of range";
            return false;
        }
        *out = n->shape;
        return true;
    default:
        BOCB_UNREACHABLE("not a spatial op");
    }
}

bool ir_spatial_check(const IrGraph *g, const IrNode *n, const char **why)
{
    if (n->attr.spatial.op != ir_spatial_kind(n->op)) {
        *why = "the attributes belong to another op";
        return false;
    }
    /* Quantize computes in the dtype p[4] and returns i32 words, which
     * dequantize reads. */
    DType dt = n->op == IR_QUANTIZE ? (DType)n->attr.spatial.p[4] : n->dtype;
    if (!is_float(dt)) {
        *why = "spatial ops compute on f32 or f64";
        return false;
    }
    if (n->op == IR_QUANTIZE && n->dtype != DT_I32) {
        *why = "quantize returns i32 words";
        return false;
    }
    for (int i = 0; i < n->nin; i++) {
        DType want = n->op == IR_DEQUANTIZE ? DT_I32 : dt;
        if (g->nodes[n->in[i]].dtype != want) {
            *why = "an operand's dtype differs from the one the op computes in";
            return false;
        }
    }
    Shape want;
    if (!infer(g, n, &want, why))
        return false;
    if (n->op == IR_DEQUANTIZE && g->nodes[ir_quantized_input(g, n)].dtype != dt) {
        *why = "dequantize returns the dtype of the quantized tensor";
        return false;
    }
    if (!shape_equal(&want, &n->shape)) {
        *why = "the result shape does not follow from the operands";
        return false;
    }
    return true;
}

/* ---- builders ------------------------------------------------------------- */

/* Adds the node, computes its shape from the operands (for the ops whose
 * shape the caller does not give), and asserts that it is well formed. */
static int build(IrGraph *g, IrOp op, DType dt, const Shape *given, int nin, const int *in,
                 RtSpatialAttr attr, SrcLoc loc)
{
    attr.op = ir_spatial_kind(op);
    int id = ir_add_spatial(g, op, dt, given ? *given : shape_scalar(), nin, in, attr, loc);
    IrNode *n = ir_node(g, id);
    const char *why = NULL;
    if (!given) {
        Shape s;
        BOCB_ASSERT(infer(g, n, &s, &why));
        n->shape = s;
    }
    BOCB_ASSERT(ir_spatial_check(g, n, &why));
    return id;
}

int ir_permute(IrGraph *g, int x, const int *perm, SrcLoc loc)
{
    const Shape *xs = &ir_node(g, x)->shape;
    RtSpatialAttr a = {0};
    bool identity = true;
    for (int i = 0; i < xs->rank; i++) {
        a.p[i] = perm[i];
        identity &= perm[i] == i;
    }
    if (identity)
        return x;
    return build(g, IR_PERMUTE, ir_node(g, x)->dtype, NULL, 1, &x, a, loc);
}

int ir_slice(IrGraph *g, int x, int axis, int64_t start, int64_t len, SrcLoc loc)
{
    Shape s;
    const char *why;
    BOCB_ASSERT(ir_slice_shape(&ir_node(g, x)->shape, axis, start, len, &s, &why));
    if (shape_equal(&s, &ir_node(g, x)->shape))
        return x;
    RtSpatialAttr a = {.p = {axis, start}};
    return build(g, IR_SLICE, ir_node(g, x)->dtype, &s, 1, &x, a, loc);
}

int ir_concat(IrGraph *g, int a, int b, int axis, SrcLoc loc)
{
    int in[2] = {a, b};
    RtSpatialAttr attr = {.p = {axis}};
    return build(g, IR_CONCAT, ir_node(g, a)->dtype, NULL, 2, in, attr, loc);
}

int ir_bmm(IrGraph *g, int a, int b, bool trans_a, bool trans_b, SrcLoc loc)
{
    int in[2] = {a, b};
    RtSpatialAttr attr = {.p = {trans_a, trans_b}};
    return build(g, IR_BMM, ir_node(g, a)->dtype, NULL, 2, in, attr, loc);
}

int ir_avgpool2d(IrGraph *g, int x, IrPoolAttr attr, bool count_include_pad, SrcLoc loc)
{
    return build(g, IR_AVGPOOL2D, ir_node(g, x)->dtype, NULL, 1, &x,
                 pool_spatial_attr(&attr, count_include_pad), loc);
}

int ir_avgpool2d_grad(IrGraph *g, int dy, Shape x_shape, const RtSpatialAttr *attr,
                      SrcLoc loc)
{
    return build(g, IR_AVGPOOL2D_GRAD, ir_node(g, dy)->dtype, &x_shape, 1, &dy, *attr, loc);
}

int ir_reduce_max(IrGraph *g, int x, uint32_t axes, SrcLoc loc)
{
    if (axes == 0)
        return x;
    RtSpatialAttr a = {.p = {axes}};
    return build(g, IR_REDUCE_MAX, ir_node(g, x)->dtype, NULL, 1, &x, a, loc);
}

int ir_reduce_max_grad(IrGraph *g, int x, int dy, uint32_t axes, SrcLoc loc)
{
    int in[2] = {x, dy};
    RtSpatialAttr a = {.p = {axes}};
    return build(g, IR_REDUCE_MAX_GRAD, ir_node(g, x)->dtype, NULL, 2, in, a, loc);
}

int ir_iota(IrGraph *g, DType dtype, Shape shape, int axis, SrcLoc loc)
{
    RtSpatialAttr a = {.p = {axis}};
    return build(g, IR_IOTA, dtype, &shape, 0, NULL, a, loc);
}

int ir_quantize(IrGraph *g, int x, int key, int step, int bits, int64_t bucket,
                RtRounding rounding, uint32_t tag, SrcLoc loc)
{
    int in[3] = {x, key, step};
    RtSpatialAttr a = {.p = {bits, bucket, rounding, tag, ir_node(g, x)->dtype}};
    return build(g, IR_QUANTIZE, DT_I32, NULL, 3, in, a, loc);
}

int ir_dequantize(IrGraph *g, int words, SrcLoc loc)
{
    const IrNode *q = ir_node(g, words);
    BOCB_ASSERT(q->op == IR_QUANTIZE);
    RtSpatialAttr a = {.p = {q->attr.spatial.p[0], q->attr.spatial.p[1]}};
    return build(g, IR_DEQUANTIZE, ir_node(g, q->in[0])->dtype, NULL, 1, &words, a, loc);
}

int ir_quantized_input(const IrGraph *g, const IrNode *n)
{
    BOCB_ASSERT(n->op == IR_DEQUANTIZE);
    return g->nodes[n->in[0]].in[0];
}

/* ---- composites ----------------------------------------------------------- */

static int scalar_like(IrGraph *g, int like, double value, SrcLoc loc)
{
    const IrNode *n = ir_node(g, like);
    Shape s = n->shape;
    return ir_broadcast(g, ir_const(g, n->dtype, value, loc), s, loc);
}

/* x reduced over `axis` by ir_sum or ir_reduce_max, then broadcast back to
 * x's shape. */
static int spread(IrGraph *g, int reduced, const Shape *x, int axis, SrcLoc loc)
{
    Shape kept = *x;
    kept.dims[axis] = 1;
    return ir_broadcast(g, ir_reshape(g, reduced, kept, loc), *x, loc);
}

int ir_softmax(IrGraph *g, int x, int axis, bool log, SrcLoc loc)
{
    Shape xs = ir_node(g, x)->shape;
    BOCB_ASSERT(axis >= 0 && axis < xs.rank && axis != xs.batch_axis);
    uint32_t mask = 1u << axis;
    int m = ir_reduce_max(g, x, mask, loc);
    int z = ir_binary(g, IR_SUB, x, spread(g, m, &xs, axis, loc), loc);
    int e = ir_unary(g, IR_EXP, z, loc);
    int total = ir_sum(g, e, mask, loc);
    if (log)
        return ir_binary(g, IR_SUB, z,
                         spread(g, ir_unary(g, IR_LOG, total, loc), &xs, axis, loc), loc);
    return ir_binary(g, IR_DIV, e, spread(g, total, &xs, axis, loc), loc);
}

int ir_roll(IrGraph *g, int x, int axis, int64_t shift, SrcLoc loc)
{
    int64_t n = ir_node(g, x)->shape.dims[axis];
    int64_t s = ((shift % n) + n) % n;
    if (s == 0)
        return x;
    int tail = ir_slice(g, x, axis, n - s, s, loc);
    int head = ir_slice(g, x, axis, 0, n - s, loc);
    return ir_concat(g, tail, head, axis, loc);
}

/* A [t, t] bool tensor, true where the column index exceeds the row's. */
static int above_diagonal(IrGraph *g, DType dt, int64_t t, SrcLoc loc)
{
    int64_t dims[2] = {t, t};
    Shape s = shape_make(2, dims);
    int row = ir_iota(g, dt, s, 0, loc), col = ir_iota(g, dt, s, 1, loc);
    return ir_binary(g, IR_GT, col, row, loc);
}

int ir_attention(IrGraph *g, int q, int k, int v, double scale, int bias, bool causal,
                 SrcLoc loc)
{
    int scores = ir_bmm(g, q, k, false, true, loc);
    scores = ir_binary(g, IR_MUL, scores, scalar_like(g, scores, scale, loc), loc);
    Shape ss = ir_node(g, scores)->shape;
    if (bias >= 0)
        scores = ir_binary(g, IR_ADD, scores, ir_broadcast(g, bias, ss, loc), loc);
    if (causal) {
        int masked = ir_broadcast(g, above_diagonal(g, ir_node(g, q)->dtype,
                                                    ss.dims[ss.rank - 1], loc), ss, loc);
        scores = ir_select(g, masked, scalar_like(g, scores, -INFINITY, loc), scores, loc);
    }
    int weights = ir_softmax(g, scores, ss.rank - 1, false, loc);
    return ir_bmm(g, weights, v, false, false, loc);
}

static const int window_order[6] = {0, 1, 3, 2, 4, 5};

int ir_window_partition(IrGraph *g, int x, int64_t w, SrcLoc loc)
{
    Shape xs = ir_node(g, x)->shape;
    BOCB_ASSERT(xs.rank == 4 && xs.batch_axis <= 0 && xs.dims[1] % w == 0 &&
                xs.dims[2] % w == 0);
    int64_t nh = xs.dims[1] / w, nw = xs.dims[2] / w;
    int64_t grid[6] = {xs.dims[0], nh, w, nw, w, xs.dims[3]};
    Shape gs = shape_make(6, grid);
    gs.batch_axis = xs.batch_axis;
    int t = ir_permute(g, ir_reshape(g, x, gs, loc), window_order, loc);
    int64_t flat[3] = {xs.dims[0] * nh * nw, w * w, xs.dims[3]};
    Shape fs = shape_make(3, flat);
    fs.batch_axis = xs.batch_axis;
    return ir_reshape(g, t, fs, loc);
}

int ir_window_reverse(IrGraph *g, int windows, int64_t h, int64_t w_img, int64_t w,
                      SrcLoc loc)
{
    Shape ws = ir_node(g, windows)->shape;
    int64_t nh = h / w, nw = w_img / w;
    BOCB_ASSERT(ws.rank == 3 && ws.dims[0] % (nh * nw) == 0 && ws.dims[1] == w * w);
    int64_t grid[6] = {ws.dims[0] / (nh * nw), nh, nw, w, w, ws.dims[2]};
    Shape gs = shape_make(6, grid);
    gs.batch_axis = ws.batch_axis;
    int t = ir_permute(g, ir_reshape(g, windows, gs, loc), window_order, loc);
    int64_t image[4] = {grid[0], h, w_img, ws.dims[2]};
    Shape is = shape_make(4, image);
    is.batch_axis = ws.batch_axis;
    return ir_reshape(g, t, is, loc);
}

/* 1 where x >= bound, else 0, in x's dtype. */
static int at_least(IrGraph *g, int x, double bound, SrcLoc loc)
{
    int ge = ir_binary(g, IR_GE, x, scalar_like(g, x, bound, loc), loc);
    return ir_cast(g, ge, ir_node(g, x)->dtype, loc);
}

int ir_shifted_window_mask(IrGraph *g, DType dt, int64_t h, int64_t w_img, int64_t w,
                           int64_t shift, SrcLoc loc)
{
    /* Region of each pixel of the shifted image, as Swin numbers them:
     * rows [0, H-w), [H-w, H-shift) and [H-shift, H), and the same for
     * columns; region = 3 * row band + column band. */
    int64_t dims[4] = {1, h, w_img, 1};
    Shape s = shape_make(4, dims);
    int row = ir_iota(g, dt, s, 1, loc), col = ir_iota(g, dt, s, 2, loc);
    int band_r = ir_binary(g, IR_ADD, at_least(g, row, (double)(h - w), loc),
                           at_least(g, row, (double)(h - shift), loc), loc);
    int band_c = ir_binary(g, IR_ADD, at_least(g, col, (double)(w_img - w), loc),
                           at_least(g, col, (double)(w_img - shift), loc), loc);
    int region = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, band_r,
                                                scalar_like(g, band_r, 3.0, loc), loc),
                           band_c, loc);

    int win = ir_window_partition(g, region, w, loc); /* [nW, N, 1] */
    Shape ws = ir_node(g, win)->shape;
    int64_t n = ws.dims[1], nwin = ws.dims[0];
    int64_t pair[3] = {nwin, n, n}, as_row[3] = {nwin, 1, n};
    Shape ps = shape_make(3, pair);
    int query = ir_broadcast(g, win, ps, loc);
    int key = ir_broadcast(g, ir_reshape(g, win, shape_make(3, as_row), loc), ps, loc);
    int differ = ir_binary(g, IR_NE, query, key, loc);
    int zero = ir_broadcast(g, ir_const(g, dt, 0.0, loc), ps, loc);
    int penalty = ir_broadcast(g, ir_const(g, dt, -100.0, loc), ps, loc);
    return ir_select(g, differ, penalty, zero, loc);
}

int ir_relative_position_onehot(IrGraph *g, DType dt, int64_t w, SrcLoc loc)
{
    int64_t n = w * w, span = 2 * w - 1;
    int64_t pair_dims[2] = {n, n};
    Shape pairs = shape_make(2, pair_dims);
    int coord[2][2]; /* [token i or j][row or column] */
    for (int side = 0; side < 2; side++) {
        int index = ir_iota(g, dt, pairs, side, loc);
        int r = ir_unary(g, IR_FLOOR, ir_binary(g, IR_DIV, index,
                                                scalar_like(g, index, (double)w, loc), loc),
                         loc);
        coord[side][0] = r;
        coord[side][1] = ir_binary(g, IR_SUB, index,
                                   ir_binary(g, IR_MUL, r, scalar_like(g, r, (double)w, loc),
                                             loc), loc);
    }
    /* offset (dr, dc) in [-(w-1), w-1]^2 -> table row (dr + w-1) * (2w-1) + dc + w-1 */
    int dr = ir_binary(g, IR_SUB, coord[0][0], coord[1][0], loc);
    int dc = ir_binary(g, IR_SUB, coord[0][1], coord[1][1], loc);
    int shifted_r = ir_binary(g, IR_ADD, dr, scalar_like(g, dr, (double)(w - 1), loc), loc);
    int shifted_c = ir_binary(g, IR_ADD, dc, scalar_like(g, dc, (double)(w - 1), loc), loc);
    int row = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, shifted_r,
                                             scalar_like(g, shifted_r, (double)span, loc), loc),
                        shifted_c, loc);

    int64_t col_dims[2] = {n * n, 1}, hot_dims[2] = {n * n, span * span};
    Shape hot = shape_make(2, hot_dims);
    int rows = ir_broadcast(g, ir_reshape(g, row, shape_make(2, col_dims), loc), hot, loc);
    int entry = ir_iota(g, dt, hot, 1, loc);
    return ir_cast(g, ir_binary(g, IR_EQ, rows, entry, loc), dt, loc);
}
