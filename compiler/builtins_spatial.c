/* builtins_spatial.c - builtins that move data between axes, pool, attend
 * and mix tokens.
 *
 * Each builtin checks its arguments and reports mistakes at their source
 * location, then builds IR with the spatial ops and composites of
 * ir_spatial.h. The layers here (attention, window_attention,
 * token_mixing, sep_conv) are blocks of linear and conv2d layers under a
 * naming level of their own, so their parameters are called, for
 * example, `vit.attention1.qkv.weight`.
 */
#include <math.h>
#include <string.h>

#include "builtins.h"
#include "ir_spatial.h"

/* Reads an axis of the rank-`rank` input of `fn`. Negative values count
 * from the end, as in Python. */
static bool axis_arg(const Value *v, int rank, const char *fn, const char *what, int *axis)
{
    int64_t a;
    if (rank == 0) {
        diag_error(v->loc, "%s needs an axis of its input, but the input is a scalar", fn);
        return false;
    }
    if (!val_to_int(v, what, -rank, rank - 1, &a))
        return false;
    *axis = (int)(a < 0 ? a + rank : a);
    return true;
}

/* An axis argument that must not be the batch dimension. */
static bool static_axis_arg(Lower *l, const Value *v, const Shape *s, const char *fn,
                            int *axis)
{
    if (!axis_arg(v, s->rank, fn, "axis", axis))
        return false;
    if (*axis == s->batch_axis) {
        diag_error(v->loc, "%s cannot work along the batch dimension of %s", fn,
                   shape_text(l, s));
        return false;
    }
    return true;
}

static Value string_value(const char *s, SrcLoc loc)
{
    Value v = val_none(loc);
    v.kind = VAL_STRING;
    v.string = s;
    return v;
}

/* Calls the builtin `name` with the given arguments, already bound to its
 * parameters in order (VAL_NONE for a default). */
static int call_layer(Lower *l, const char *name, Value *args, SrcLoc loc)
{
    const Builtin *b = builtin_find(name);
    BOCB_ASSERT(b);
    Value r = b->fn(l, args, loc);
    return r.kind == VAL_TENSOR ? r.tensor : -1;
}

/* linear(x, out, bias, name = local) inside the current naming level. */
static int linear_layer(Lower *l, int x, int64_t out, bool bias, const char *local,
                        SrcLoc loc)
{
    Value args[4] = {val_tensor(x, loc), val_number((double)out, loc), val_bool(bias, loc),
                     local ? string_value(local, loc) : val_none(loc)};
    return call_layer(l, "linear", args, loc);
}

/* conv2d(x, out, kernel, padding = kernel / 2, groups, bias = false). */
static int conv_layer(Lower *l, int x, int64_t out, int64_t kernel, int64_t groups,
                      const char *local, SrcLoc loc)
{
    Value args[9] = {val_tensor(x, loc), val_number((double)out, loc),
                     val_number((double)kernel, loc), val_none(loc),
                     val_number((double)(kernel / 2), loc), val_none(loc),
                     val_number((double)groups, loc), val_bool(false, loc),
                     string_value(local, loc)};
    return call_layer(l, "conv2d", args, loc);
}

/* Layers create parameters, so they belong in models only. */
static bool need_model(Lower *l, const char *name, SrcLoc loc)
{
    if (!need_graph(l, name, loc))
        return false;
    if (l->mode != MODE_MODEL) {
        diag_error(loc, "'%s' creates parameters and can only be used in a model", name);
        return false;
    }
    return true;
}

/* A shape with the same batch axis as `like` and the given extents. */
static Shape shape_like(const Shape *like, int rank, const int64_t *dims, int batch_axis)
{
    Shape s = shape_make(rank, dims);
    s.batch_axis = like->batch_axis >= 0 ? batch_axis : -1;
    return s;
}

/* ---- moving data between axes --------------------------------------------- */

static Value bi_permute(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "permute", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "permute", "x");
    if (x < 0)
        return val_error();
    Shape xs = *shape_of(l, x), ys;
    const Value *dims = &args[1];
    if ((dims->kind != VAL_LIST && dims->kind != VAL_TUPLE) || dims->list.n != xs.rank) {
        diag_error(dims->loc, "permute needs a list of the %d axes of %s in their new order",
                   xs.rank, shape_text(l, &xs));
        return val_error();
    }
    int perm[SHAPE_MAX_RANK];
    for (int i = 0; i < xs.rank; i++)
        if (!axis_arg(&dims->list.items[i], xs.rank, "permute", "an axis of permute", &perm[i]))
            return val_error();
    const char *why;
    if (!ir_permute_shape(&xs, perm, &ys, &why)) {
        diag_error(dims->loc, "%s", why);
        return val_error();
    }
    return val_tensor(ir_permute(l->graph, x, perm, loc), loc);
}

static Value bi_transpose(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "transpose", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "transpose", "x");
    if (x < 0)
        return val_error();
    const Shape *xs = shape_of(l, x);
    int a, b;
    if (!axis_arg(&args[1], xs->rank, "transpose", "axis", &a) ||
        !axis_arg(&args[2], xs->rank, "transpose", "axis", &b))
        return val_error();
    int perm[SHAPE_MAX_RANK];
    for (int i = 0; i < xs->rank; i++)
        perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return val_tensor(ir_permute(l->graph, x, perm, loc), loc);
}

static Value bi_slice(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "slice", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "slice", "x");
    if (x < 0)
        return val_error();
    Shape xs = *shape_of(l, x);
    int axis;
    if (!static_axis_arg(l, &args[1], &xs, "slice", &axis))
        return val_error();
    int64_t n = xs.dims[axis], start, stop = n;
    if (!val_to_int(&args[2], "start", -n, n, &start) ||
        (!is_none(&args[3]) && !val_to_int(&args[3], "stop", -n, n, &stop)))
        return val_error();
    start = start < 0 ? start + n : start;
    stop = stop < 0 ? stop + n : stop;
    if (stop <= start) {
        diag_error(loc, "slice [%lld, %lld) of axis %d of %s is empty", (long long)start,
                   (long long)stop, axis, shape_text(l, &xs));
        return val_error();
    }
    return val_tensor(ir_slice(l->graph, x, axis, start, stop - start, loc), loc);
}

static Value bi_concat(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "concat", loc))
        return val_error();
    const Value *list = &args[0];
    if ((list->kind != VAL_LIST && list->kind != VAL_TUPLE) || list->list.n < 1) {
        diag_error(list->loc, "concat takes a list of tensors, such as concat([a, b], axis = 1)");
        return val_error();
    }
    int y = float_tensor_arg(l, &list->list.items[0], "concat", "tensors");
    if (y < 0)
        return val_error();
    int axis;
    if (!static_axis_arg(l, &args[1], shape_of(l, y), "concat", &axis))
        return val_error();
    for (int i = 1; i < list->list.n; i++) {
        int t = float_tensor_arg(l, &list->list.items[i], "concat", "tensors");
        if (t < 0)
            return val_error();
        Shape ys = *shape_of(l, y), ts = *shape_of(l, t), out;
        const char *why;
        if (ir_node(l->graph, t)->dtype != ir_node(l->graph, y)->dtype ||
            !ir_concat_shape(&ys, &ts, axis, &out, &why)) {
            diag_error(list->list.items[i].loc, "cannot concatenate %s to %s along axis %d",
                       shape_text(l, &ts), shape_text(l, &ys), axis);
            note_operand_origin(l, "this tensor", &list->list.items[i], t);
            /* Past the second tensor, y is a concat located at the call. */
            if (i == 1)
                note_operand_origin(l, "the first tensor", &list->list.items[0], y);
            return val_error();
        }
        if (!check_tensor_size(l, &out, "the result of concat", loc))
            return val_error();
        y = ir_concat(l->graph, y, t, axis, loc);
    }
    return val_tensor(y, loc);
}

static Value bi_roll(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "roll", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "roll", "x");
    if (x < 0)
        return val_error();
    /* shift and axis are both numbers or both lists of equal length. */
    const Value *shift = &args[1], *axis = &args[2];
    bool lists = shift->kind == VAL_LIST || shift->kind == VAL_TUPLE;
    int n = lists ? shift->list.n : 1;
    if (lists != (axis->kind == VAL_LIST || axis->kind == VAL_TUPLE) ||
        (lists && axis->list.n != n)) {
        diag_error(loc, "roll takes a shift and an axis, or lists of shifts and axes of "
                   "equal length");
        return val_error();
    }
    for (int i = 0; i < n; i++) {
        const Value *s = lists ? &shift->list.items[i] : shift;
        const Value *a = lists ? &axis->list.items[i] : axis;
        int64_t by;
        int ax;
        if (!val_to_int(s, "shift", -(INT64_C(1) << 40), INT64_C(1) << 40, &by) ||
            !static_axis_arg(l, a, shape_of(l, x), "roll", &ax))
            return val_error();
        x = ir_roll(l->graph, x, ax, by, loc);
    }
    return val_tensor(x, loc);
}

/* Stores the leading axes of s (all but the last two) in *lead as a shape.
 * Returns false when the batch axis is one of the last two. */
static bool leading_shape(const Shape *s, Shape *lead)
{
    *lead = *s;
    lead->rank = s->rank - 2;
    return s->batch_axis < lead->rank;
}

/* Returns the operand of `node` and sets *trans when `node` is a permute
 * that swaps only the last two axes, so that the product reads the matrix
 * transposed instead of a transposed copy. Otherwise returns node. */
static int fold_transpose(IrGraph *g, int node, bool *trans)
{
    const IrNode *n = ir_node(g, node);
    int rank = n->shape.rank;
    *trans = false;
    if (n->op != IR_PERMUTE || rank < 2)
        return node;
    for (int i = 0; i < rank - 2; i++)
        if (n->attr.spatial.p[i] != i)
            return node;
    if (n->attr.spatial.p[rank - 2] != rank - 1 || n->attr.spatial.p[rank - 1] != rank - 2)
        return node;
    *trans = true;
    return n->in[0];
}

/* s with its last two axes swapped when `trans`. */
static Shape stored_shape(Shape s, bool trans)
{
    if (trans) {
        int64_t t = s.dims[s.rank - 1];
        s.dims[s.rank - 1] = s.dims[s.rank - 2];
        s.dims[s.rank - 2] = t;
    }
    return s;
}

Value lower_matmul(Lower *l, int a, int b, const char *what, SrcLoc loc)
{
    IrGraph *g = l->graph;
    Shape sa = *shape_of(l, a), sb = *shape_of(l, b), out;
    const char *why = NULL;
    DType da = ir_node(g, a)->dtype, db = ir_node(g, b)->dtype;
    if (da != db || (da != DT_F32 && da != DT_F64)) {
        diag_error(loc, "operands of %s must be floating-point tensors of one type, but "
                   "they are %s and %s", what, dtype_name(da), dtype_name(db));
        return val_error();
    }
    if (sa.rank == 2 && sb.rank == 2) {
        if (!ir_matmul_shape(&sa, &sb, false, false, &out, &why)) {
            diag_error(loc, "operands of %s have incompatible shapes %s and %s: %s", what,
                       shape_text(l, &sa), shape_text(l, &sb), why);
            return val_error();
        }
        bool ta, tb;
        int fa = fold_transpose(g, a, &ta), fb = fold_transpose(g, b, &tb);
        return val_tensor(ir_matmul(g, fa, fb, ta, tb, loc), loc);
    }

    /* Batched: broadcast the leading axes, then one product per matrix. */
    Shape la, lb, lead;
    if (sa.rank < 2 || sb.rank < 2)
        why = "both operands need at least two axes";
    else if (!leading_shape(&sa, &la) || !leading_shape(&sb, &lb))
        why = "the batch dimension may only be one of the leading axes";
    else if (!ir_broadcast_shape(&la, &lb, &lead))
        why = "the leading axes do not broadcast";
    if (!why) {
        Shape ta = lead, tb = lead;
        ta.rank = tb.rank = lead.rank + 2;
        ta.dims[lead.rank] = sa.dims[sa.rank - 2];
        ta.dims[lead.rank + 1] = sa.dims[sa.rank - 1];
        tb.dims[lead.rank] = sb.dims[sb.rank - 2];
        tb.dims[lead.rank + 1] = sb.dims[sb.rank - 1];
        if (ir_bmm_shape(&ta, &tb, false, false, &out, &why)) {
            if (!check_tensor_size(l, &out, "the result of a matrix product", loc))
                return val_error();
            bool trans_a, trans_b;
            int fa = fold_transpose(g, a, &trans_a), fb = fold_transpose(g, b, &trans_b);
            fa = ir_broadcast(g, fa, stored_shape(ta, trans_a), loc);
            fb = ir_broadcast(g, fb, stored_shape(tb, trans_b), loc);
            return val_tensor(ir_bmm(g, fa, fb, trans_a, trans_b, loc), loc);
        }
    }
    diag_error(loc, "operands of %s have incompatible shapes %s and %s: %s", what,
               shape_text(l, &sa), shape_text(l, &sb), why);
    return val_error();
}

static Value bi_matmul(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "matmul", loc))
        return val_error();
    int a = float_tensor_arg(l, &args[0], "matmul", "a");
    int b = float_tensor_arg(l, &args[1], "matmul", "b");
    if (a < 0 || b < 0)
        return val_error();
    Value r = lower_matmul(l, a, b, "'matmul'", loc);
    if (r.kind == VAL_ERROR)
        note_operand_origins(l, &args[0], a, &args[1], b);
    return r;
}

/* ---- maxima and softmax --------------------------------------------------- */

static Value bi_amax(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "amax", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "amax", "x");
    if (x < 0)
        return val_error();
    const Shape *xs = shape_of(l, x);
    uint32_t mask = 0;
    const Value *axis = &args[1];
    if (is_none(axis)) {
        mask = xs->rank ? (uint32_t)((1u << xs->rank) - 1) : 0;
    } else {
        bool list = axis->kind == VAL_LIST || axis->kind == VAL_TUPLE;
        int n = list ? axis->list.n : 1;
        for (int i = 0; i < n; i++) {
            int a;
            const Value *item = list ? &axis->list.items[i] : axis;
            if (!axis_arg(item, xs->rank, "amax", "axis", &a))
                return val_error();
            if (mask & (1u << a)) {
                diag_error(item->loc, "axis %d is named twice", a);
                return val_error();
            }
            mask |= 1u << a;
        }
    }
    bool keepdims;
    if (!bool_arg(&args[2], "keepdims", false, &keepdims))
        return val_error();
    Shape input = *xs; /* ir_reduce_max may move the node array */
    int y = ir_reduce_max(l->graph, x, mask, loc);
    if (keepdims)
        y = keep_reduced_axes(l, y, &input, mask, loc);
    return val_tensor(y, loc);
}

static Value softmax(Lower *l, const Value *args, SrcLoc loc, const char *name, bool log)
{
    if (!need_graph(l, name, loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], name, "x");
    if (x < 0)
        return val_error();
    const Shape *xs = shape_of(l, x);
    if (xs->rank == 0) {
        diag_error(loc, "%s needs an axis of its input, but the input is a scalar", name);
        return val_error();
    }
    int axis = xs->rank - 1;
    if (!is_none(&args[1]) && !static_axis_arg(l, &args[1], xs, name, &axis))
        return val_error();
    if (axis == xs->batch_axis) {
        diag_error(loc, "%s needs an axis that is not the batch dimension, but the input "
                   "has shape %s", name, shape_text(l, xs));
        return val_error();
    }
    return val_tensor(ir_softmax(l->graph, x, axis, log, loc), loc);
}

static Value bi_softmax(Lower *l, const Value *args, SrcLoc loc)
{
    return softmax(l, args, loc, "softmax", false);
}

static Value bi_log_softmax(Lower *l, const Value *args, SrcLoc loc)
{
    return softmax(l, args, loc, "log_softmax", true);
}

/* ---- pooling -------------------------------------------------------------- */

/* x, kernel_size, stride = kernel_size, padding = 0, as max_pool2d. */
static bool pool_args(Lower *l, const Value *args, const char *name, int *x, IrPoolAttr *attr,
                      SrcLoc loc)
{
    *x = float_tensor_arg(l, &args[0], name, "x");
    int64_t kernel[2], stride[2], pad[2] = {0, 0};
    if (*x < 0 || !int_pair(&args[1], "kernel_size", 1, kernel))
        return false;
    stride[0] = kernel[0];
    stride[1] = kernel[1];
    if ((!is_none(&args[2]) && !int_pair(&args[2], "stride", 1, stride)) ||
        (!is_none(&args[3]) && !int_pair(&args[3], "padding", 0, pad)))
        return false;
    for (int i = 0; i < 2; i++) {
        attr->kernel[i] = kernel[i];
        attr->stride[i] = stride[i];
        attr->pad[i] = pad[i];
    }
    Shape xs = *shape_of(l, *x), ys;
    const char *why;
    if (!ir_pool2d_shape(&xs, attr, &ys, &why)) {
        diag_error(loc, "%s (input %s)", why, shape_text(l, &xs));
        return false;
    }
    return true;
}

static Value bi_avg_pool2d(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "avg_pool2d", loc))
        return val_error();
    int x;
    IrPoolAttr attr;
    bool include;
    if (!pool_args(l, args, "avg_pool2d", &x, &attr, loc) ||
        !bool_arg(&args[4], "count_include_pad", true, &include))
        return val_error();
    return val_tensor(ir_avgpool2d(l->graph, x, attr, include, loc), loc);
}

/* The mean over the two spatial axes: [N, C, H, W] -> [N, C]. */
static Value bi_global_avg_pool(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "global_avg_pool", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "global_avg_pool", "x");
    if (x < 0)
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 4 || xs.batch_axis > 0) {
        diag_error(args[0].loc, "global_avg_pool expects an input of shape [N, C, H, W], but "
                   "it has shape %s", shape_text(l, &xs));
        return val_error();
    }
    IrGraph *g = l->graph;
    int total = ir_sum(g, x, 12u, loc);
    int n = count_node(l, &xs, 12u, loc); /* may move g->nodes: read the shape after */
    int count = ir_broadcast(g, n, ir_node(g, total)->shape, loc);
    return val_tensor(ir_binary(g, IR_DIV, total, count, loc), loc);
}

/* ---- attention ------------------------------------------------------------ */

/* Splits qkv [..., T, 3 * heads * d] (lead = the axes before T) into q, k
 * and v of shape [..., heads, T, d]. */
static void split_heads(IrGraph *g, int qkv, int64_t heads, int out[3], SrcLoc loc)
{
    Shape s = ir_node(g, qkv)->shape;
    int lead = s.rank - 2;
    int64_t d = s.dims[s.rank - 1] / (3 * heads);

    /* [..., T, 3, h, d] -> [3, ..., h, T, d] */
    Shape split = s;
    split.rank = lead + 4;
    split.dims[lead + 1] = 3;
    split.dims[lead + 2] = heads;
    split.dims[lead + 3] = d;
    int perm[SHAPE_MAX_RANK];
    perm[0] = lead + 1;
    for (int i = 0; i < lead; i++)
        perm[1 + i] = i;
    perm[lead + 1] = lead + 2;
    perm[lead + 2] = lead;
    perm[lead + 3] = lead + 3;
    int t = ir_permute(g, ir_reshape(g, qkv, split, loc), perm, loc);

    Shape part = ir_node(g, t)->shape; /* [3, ..., h, T, d] */
    Shape one = part;
    one.rank--;
    memmove(one.dims, one.dims + 1, (size_t)one.rank * sizeof one.dims[0]);
    one.batch_axis = part.batch_axis >= 0 ? part.batch_axis - 1 : -1;
    for (int i = 0; i < 3; i++)
        out[i] = ir_reshape(g, ir_slice(g, t, 0, i, 1, loc), one, loc);
}

/* [..., h, T, d] -> [..., T, h * d] */
static int merge_heads(IrGraph *g, int o, SrcLoc loc)
{
    Shape s = ir_node(g, o)->shape;
    int lead = s.rank - 3, perm[SHAPE_MAX_RANK];
    for (int i = 0; i < s.rank; i++)
        perm[i] = i;
    perm[lead] = lead + 1;
    perm[lead + 1] = lead;
    Shape merged = s;
    merged.rank = s.rank - 1;
    merged.dims[lead] = s.dims[lead + 1];
    merged.dims[lead + 1] = s.dims[lead] * s.dims[lead + 2];
    return ir_reshape(g, ir_permute(g, o, perm, loc), merged, loc);
}

static bool heads_arg(Lower *l, const Value *v, int64_t channels, int64_t *heads)
{
    if (!val_to_int(v, "heads", 1, INT64_C(1) << 20, heads))
        return false;
    if (channels % *heads != 0) {
        diag_error(v->loc, "heads (%lld) must divide the channels (%lld)", (long long)*heads,
                   (long long)channels);
        return false;
    }
    return true;
}

static Value bi_attention(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_model(l, "attention", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "attention", "x");
    bool causal, bias;
    if (x < 0 || !bool_arg(&args[2], "causal", false, &causal) ||
        !bool_arg(&args[3], "bias", true, &bias))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 3 || xs.batch_axis > 0) {
        diag_error(args[0].loc, "attention expects tokens of shape [N, T, C], but the input "
                   "has shape %s", shape_text(l, &xs));
        return val_error();
    }
    int64_t c = xs.dims[2], heads;
    if (!heads_arg(l, &args[1], c, &heads))
        return val_error();
    int64_t score_dims[4] = {xs.dims[0], heads, xs.dims[1], xs.dims[1]};
    Shape scores = shape_like(&xs, 4, score_dims, 0);
    if (!check_tensor_size(l, &scores, "the attention scores", loc))
        return val_error();

    IrGraph *g = l->graph;
    size_t saved = l->prefix.len;
    push_prefix(l, layer_name(l, "attention", &args[4]));
    int y = -1, qkv = linear_layer(l, x, 3 * c, bias, "qkv", loc);
    if (qkv >= 0) {
        int t[3];
        split_heads(g, qkv, heads, t, loc);
        double scale = 1.0 / sqrt((double)(c / heads));
        int o = ir_attention(g, t[0], t[1], t[2], scale, -1, causal, loc);
        y = linear_layer(l, merge_heads(g, o, loc), c, true, "proj", loc);
    }
    pop_prefix(l, saved);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* The bias of window attention, broadcast over images: the shifted
 * window mask [nW, 1, N, N] (shift > 0) plus the relative position bias
 * [heads, N, N] from a learned table, or -1 when there is neither. */
static int window_bias(Lower *l, int64_t h, int64_t w_img, int64_t window, int64_t shift,
                       int64_t heads, bool relative, SrcLoc loc)
{
    IrGraph *g = l->graph;
    int64_t n = window * window, nwin = (h / window) * (w_img / window);
    int bias = -1;
    if (relative) {
        int64_t span = (2 * window - 1) * (2 * window - 1);
        int64_t tdims[2] = {span, heads};
        /* Swin draws the table from N(0, 0.02^2), and this uniform has
         * that standard deviation. The table is tagged a bias because Swin
         * exempts it from weight decay, as biases usually are. */
        int table = create_param(l, "relative_bias", "bias", shape_make(2, tdims),
                                 IR_INIT_UNIFORM, 0.02 * sqrt(3.0), loc);
        if (table < 0)
            return -2;
        int hot = ir_relative_position_onehot(g, l->dtype, window, loc);
        int per_pair = ir_matmul(g, hot, table, false, false, loc); /* [N*N, h] */
        static const int swap[2] = {1, 0};
        int64_t bdims[3] = {heads, n, n};
        bias = ir_reshape(g, ir_permute(g, per_pair, swap, loc), shape_make(3, bdims), loc);
    }
    if (shift > 0) {
        int64_t mdims[4] = {nwin, 1, n, n}, full[4] = {nwin, heads, n, n};
        int mask = ir_reshape(g, ir_shifted_window_mask(g, l->dtype, h, w_img, window, shift,
                                                        loc), shape_make(4, mdims), loc);
        Shape fs = shape_make(4, full);
        mask = ir_broadcast(g, mask, fs, loc);
        bias = bias < 0 ? mask : ir_binary(g, IR_ADD, mask, ir_broadcast(g, bias, fs, loc), loc);
    }
    return bias;
}

static Value bi_window_attention(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_model(l, "window_attention", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "window_attention", "x");
    int64_t window, shift = 0;
    bool relative;
    if (x < 0 || !val_to_int(&args[2], "window", 1, INT64_C(1) << 20, &window) ||
        (!is_none(&args[3]) && !val_to_int(&args[3], "shift", 0, window - 1, &shift)) ||
        !bool_arg(&args[4], "relative_bias", true, &relative))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 4 || xs.batch_axis > 0) {
        diag_error(args[0].loc, "window_attention expects channels-last images of shape "
                   "[N, H, W, C], but the input has shape %s", shape_text(l, &xs));
        return val_error();
    }
    int64_t h = xs.dims[1], w_img = xs.dims[2], c = xs.dims[3], heads;
    if (h % window != 0 || w_img % window != 0) {
        diag_error(args[2].loc, "the window (%lld) must divide the height and width of %s",
                   (long long)window, shape_text(l, &xs));
        return val_error();
    }
    if (!heads_arg(l, &args[1], c, &heads))
        return val_error();

    IrGraph *g = l->graph;
    int64_t n = window * window, nwin = (h / window) * (w_img / window);
    int64_t span = 2 * window - 1;
    int64_t score_dims[5] = {xs.dims[0], nwin, heads, n, n}, hot_dims[2] = {n * n, span * span};
    Shape scores = shape_like(&xs, 5, score_dims, 0), hot = shape_make(2, hot_dims);
    if (!check_tensor_size(l, &scores, "the attention scores", loc) ||
        (relative && !check_tensor_size(l, &hot, "the relative position one-hot matrix", loc)))
        return val_error();
    size_t saved = l->prefix.len;
    push_prefix(l, layer_name(l, "window_attention", &args[5]));
    int y = -1;
    int shifted = ir_roll(g, ir_roll(g, x, 1, -shift, loc), 2, -shift, loc);
    int qkv = linear_layer(l, ir_window_partition(g, shifted, window, loc), 3 * c, true, "qkv",
                           loc);
    int bias = window_bias(l, h, w_img, window, shift, heads, relative, loc);
    if (qkv >= 0 && bias != -2) {
        /* [N*nW, n, 3C] -> [N, nW, n, 3C]: the mask differs between windows. */
        int64_t per_image[4] = {xs.dims[0], nwin, n, 3 * c};
        int t[3];
        split_heads(g, ir_reshape(g, qkv, shape_like(&xs, 4, per_image, 0), loc), heads, t,
                    loc);
        double scale = 1.0 / sqrt((double)(c / heads));
        int o = ir_attention(g, t[0], t[1], t[2], scale, bias, false, loc);
        int64_t flat[3] = {xs.dims[0] * nwin, n, c};
        int merged = ir_reshape(g, merge_heads(g, o, loc), shape_like(&xs, 3, flat, 0), loc);
        int proj = linear_layer(l, merged, c, true, "proj", loc);
        if (proj >= 0) {
            int back = ir_window_reverse(g, proj, h, w_img, window, loc);
            y = ir_roll(g, ir_roll(g, back, 1, shift, loc), 2, shift, loc);
        }
    }
    pop_prefix(l, saved);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* ---- token mixers --------------------------------------------------------- */

/* MLP-Mixer's token mixing: a two-layer MLP over the token axis of
 * x [N, T, C], with ReLU between the layers. */
static Value bi_token_mixing(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_model(l, "token_mixing", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "token_mixing", "x");
    int64_t hidden;
    if (x < 0 || !val_to_int(&args[1], "hidden", 1, INT64_C(1) << 30, &hidden))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 3 || xs.batch_axis > 0) {
        diag_error(args[0].loc, "token_mixing expects tokens of shape [N, T, C], but the "
                   "input has shape %s", shape_text(l, &xs));
        return val_error();
    }
    IrGraph *g = l->graph;
    static const int swap[3] = {0, 2, 1};
    size_t saved = l->prefix.len;
    push_prefix(l, layer_name(l, "token_mixing", &args[2]));
    int y = -1, h = linear_layer(l, ir_permute(g, x, swap, loc), hidden, true, NULL, loc);
    if (h >= 0)
        h = linear_layer(l, ir_unary(g, IR_RELU, h, loc), xs.dims[1], true, NULL, loc);
    if (h >= 0)
        y = ir_permute(g, h, swap, loc);
    pop_prefix(l, saved);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* PoolFormer's token mixer: avg_pool2d(x) - x over x [N, C, H, W], with a
 * stride of 1, padding pool_size / 2 and count_include_pad = false. */
static Value bi_pool_mixer(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "pool_mixer", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "pool_mixer", "x");
    int64_t size = 3;
    if (x < 0 || (!is_none(&args[1]) && !val_to_int(&args[1], "pool_size", 1, 1 << 20, &size)))
        return val_error();
    if (size % 2 == 0) {
        diag_error(args[1].loc, "pool_size must be odd, so that the output keeps the input's "
                   "height and width");
        return val_error();
    }
    IrPoolAttr attr = {.kernel = {size, size}, .stride = {1, 1}, .pad = {size / 2, size / 2}};
    Shape xs = *shape_of(l, x), ys;
    const char *why;
    if (!ir_pool2d_shape(&xs, &attr, &ys, &why)) {
        diag_error(loc, "%s (input %s)", why, shape_text(l, &xs));
        return val_error();
    }
    int pooled = ir_avgpool2d(l->graph, x, attr, false, loc);
    return val_tensor(ir_binary(l->graph, IR_SUB, pooled, x, loc), loc);
}

/* IdentityFormer's token mixer. */
static Value bi_identity_mixer(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "identity_mixer", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "identity_mixer", "x");
    return x < 0 ? val_error() : val_tensor(x, loc);
}

/* ConvFormer's separable convolution over x [N, C, H, W]: a pointwise
 * convolution to expansion * C channels, ReLU, a depthwise k x k
 * convolution with padding k / 2, and a pointwise convolution back to C
 * channels, all without biases. */
static Value bi_sep_conv(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_model(l, "sep_conv", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "sep_conv", "x");
    int64_t expansion = 2, kernel = 7;
    if (x < 0 ||
        (!is_none(&args[1]) && !val_to_int(&args[1], "expansion", 1, 1 << 10, &expansion)) ||
        (!is_none(&args[2]) && !val_to_int(&args[2], "kernel_size", 1, 1 << 10, &kernel)))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 4) {
        diag_error(args[0].loc, "sep_conv expects an input of shape [N, C, H, W], but it has "
                   "shape %s", shape_text(l, &xs));
        return val_error();
    }
    if (kernel % 2 == 0) {
        diag_error(args[2].loc, "kernel_size must be odd, so that the output keeps the "
                   "input's height and width");
        return val_error();
    }
    int64_t c = xs.dims[1], mid = c * expansion;
    size_t saved = l->prefix.len;
    push_prefix(l, layer_name(l, "sep_conv", &args[3]));
    int y = conv_layer(l, x, mid, 1, 1, "pwconv1", loc);
    if (y >= 0)
        y = conv_layer(l, ir_unary(l->graph, IR_RELU, y, loc), mid, kernel, mid, "dwconv", loc);
    if (y >= 0)
        y = conv_layer(l, y, c, 1, 1, "pwconv2", loc);
    pop_prefix(l, saved);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* ---- the table ------------------------------------------------------------ */

static const Builtin spatial_builtins[] = {
    {"permute", PARAMS("x", "dims"), 2, bi_permute},
    {"transpose", PARAMS("x", "axis0", "axis1"), 3, bi_transpose},
    {"slice", PARAMS("x", "axis", "start", "stop"), 3, bi_slice},
    {"concat", PARAMS("tensors", "axis"), 2, bi_concat},
    {"roll", PARAMS("x", "shift", "axis"), 3, bi_roll},
    {"matmul", PARAMS("a", "b"), 2, bi_matmul},
    {"amax", PARAMS("x", "axis", "keepdims"), 1, bi_amax},
    {"softmax", PARAMS("x", "axis"), 1, bi_softmax},
    {"log_softmax", PARAMS("x", "axis"), 1, bi_log_softmax},
    {"avg_pool2d", PARAMS("x", "kernel_size", "stride", "padding", "count_include_pad"), 2,
     bi_avg_pool2d},
    {"global_avg_pool", PARAMS("x"), 1, bi_global_avg_pool},
    {"attention", PARAMS("x", "heads", "causal", "bias", "name"), 2, bi_attention},
    {"window_attention", PARAMS("x", "heads", "window", "shift", "relative_bias", "name"), 3,
     bi_window_attention},
    {"token_mixing", PARAMS("x", "hidden", "name"), 2, bi_token_mixing},
    {"pool_mixer", PARAMS("x", "pool_size"), 1, bi_pool_mixer},
    {"identity_mixer", PARAMS("x"), 1, bi_identity_mixer},
    {"sep_conv", PARAMS("x", "expansion", "kernel_size", "name"), 1, bi_sep_conv},
};

const Builtin *builtin_spatial_table(int *count)
{
    *count = (int)BOCB_ARRAY_LEN(spatial_builtins);
    return spatial_builtins;
}
