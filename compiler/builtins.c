/* builtins.c - the functions a .bocb program can call without declaring them.
 *
 * Layers (linear, conv2d) create their parameters with PyTorch's default
 * initialisation: kaiming_uniform_(a = sqrt(5)) for weights, which is
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for biases, where
 * fan_in is in_features for linear and in_channels / groups * kh * kw for
 * conv2d. Math functions fold at compile time on numbers and emit IR on
 * tensors, so the same `sqrt` serves a hyperparameter expression and an
 * optimizer update.
 */
#include <math.h>
#include <string.h>

#include "../runtime/data.h"
#include "builtins.h"
#include "lm.h"
#include "ir_spatial.h"
#include "paths.h"

bool is_none(const Value *v)
{
    return v->kind == VAL_NONE;
}

static bool any_error(const Value *args, int n)
{
    for (int i = 0; i < n; i++)
        if (args[i].kind == VAL_ERROR)
            return true;
    return false;
}

bool need_graph(Lower *l, const char *name, SrcLoc loc)
{
    if (l->graph)
        return true;
    diag_error(loc, "'%s' builds tensors and can only be used in a model or an optimizer",
               name);
    return false;
}

int tensor_arg(Lower *l, const Value *v, const char *fn, const char *param)
{
    char what[96];
    snprintf(what, sizeof what, "argument '%s' of '%s'", param, fn);
    return as_tensor(l, v, what);
}

int float_tensor_arg(Lower *l, const Value *v, const char *fn, const char *param)
{
    int x = tensor_arg(l, v, fn, param);
    if (x < 0)
        return -1;
    DType dt = ir_node(l->graph, x)->dtype;
    if (dt != DT_F32 && dt != DT_F64) {
        diag_error(v->loc, "'%s' takes a floating-point tensor, but this one holds %s values",
                   fn, dtype_name(dt));
        return -1;
    }
    return x;
}

/* Reads an int or a pair (a, b) of ints, as PyTorch's kernel_size. */
bool int_pair(const Value *v, const char *what, int64_t min, int64_t out[2])
{
    if (v->kind == VAL_LIST || v->kind == VAL_TUPLE) {
        if (v->list.n != 2) {
            diag_error(v->loc, "%s must be an integer or a pair of integers", what);
            return false;
        }
        return val_to_int(&v->list.items[0], what, min, INT64_C(1) << 30, &out[0]) &&
               val_to_int(&v->list.items[1], what, min, INT64_C(1) << 30, &out[1]);
    }
    if (!val_to_int(v, what, min, INT64_C(1) << 30, &out[0]))
        return false;
    out[1] = out[0];
    return true;
}

bool bool_arg(const Value *v, const char *what, bool fallback, bool *out)
{
    if (is_none(v)) {
        *out = fallback;
        return true;
    }
    if (v->kind != VAL_BOOL) {
        diag_error(v->loc, "%s must be true or false, but it is %s", what, val_kind_name(v));
        return false;
    }
    *out = v->boolean;
    return true;
}

/* Returns a rank-0 node with the number of elements that `axes` of
 * `shape` cover. When a batch axis is among them, the count is computed
 * from the run-time batch size. */
int count_node(Lower *l, const Shape *shape, uint32_t axes, SrcLoc loc)
{
    double count = 1;
    bool batch = false;
    for (int i = 0; i < shape->rank; i++) {
        if (!(axes & (1u << i)))
            continue;
        count *= (double)shape->dims[i];
        batch |= i == shape->batch_axis;
    }
    if (!batch)
        return ir_const(l->graph, l->dtype, count, loc);
    int b = ir_batch(l->graph, l->dtype, loc);
    if (count == 1)
        return b;
    return ir_binary(l->graph, IR_MUL, ir_const(l->graph, l->dtype, count, loc), b, loc);
}

uint32_t all_axes(const Shape *s)
{
    return s->rank ? (uint32_t)((1ull << s->rank) - 1) : 0;
}

static bool axis_mask(Lower *l, const Value *axis, const Shape *s, uint32_t *mask)
{
    (void)l;
    if (is_none(axis)) {
        *mask = all_axes(s);
        return true;
    }
    /* A list or tuple names several axes, e.g. range(1, ndim(param)). */
    bool many = axis->kind == VAL_LIST || axis->kind == VAL_TUPLE;
    int n = many ? axis->list.n : 1;
    *mask = 0;
    for (int i = 0; i < n; i++) {
        const Value *item = many ? &axis->list.items[i] : axis;
        int64_t a;
        if (!val_to_int(item, "axis", -s->rank, s->rank - 1, &a))
            return false;
        uint32_t bit = 1u << (a < 0 ? a + s->rank : a);
        if (*mask & bit) {
            diag_error(item->loc, "axis %lld is named twice", (long long)a);
            return false;
        }
        *mask |= bit;
    }
    return true;
}

/* ---- output sizes --------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Checks that a convolution or pooling window leaves at least one output
 * position along both spatial axes of x (rank 4), and otherwise reports
 * the formula with its values:
 *   output height (in + 2*pad - dilation*(kernel - 1) - 1) / stride + 1 = n
 * Pooling has no dilation and prints the shorter (in + 2*pad - kernel). */
static bool check_window(Lower *l, const char *fn, const Shape *xs, const int64_t kernel[2],
                         const int64_t stride[2], const int64_t pad[2],
                         const int64_t *dilation, SrcLoc loc)
{
    static const char *const axis[2] = {"height", "width"};
    if (xs->rank != 4)
        return true; /* the shape rule reports the rank */
    /* A square window over a square input fails alike in both axes,
     * which is reported once. */
    bool same = xs->dims[2] == xs->dims[3] && kernel[0] == kernel[1] &&
                stride[0] == stride[1] && pad[0] == pad[1] &&
                (!dilation || dilation[0] == dilation[1]);
    static const char *const both = "height and width";
    bool ok = true;
    for (int i = 0; i < (same ? 1 : 2); i++) {
        const char *name = same ? both : axis[i];
        int64_t in = xs->dims[2 + i];
        int64_t d = dilation ? dilation[i] : 1;
        int64_t out = floor_div(in + 2 * pad[i] - d * (kernel[i] - 1) - 1, stride[i]) + 1;
        if (out >= 1)
            continue;
        if (dilation)
            diag_error(loc, "%s output %s (%lld + 2*%lld - %lld*(%lld - 1) - 1) / %lld + 1 "
                       "= %lld must be >= 1", fn, name, (long long)in, (long long)pad[i],
                       (long long)d, (long long)kernel[i], (long long)stride[i],
                       (long long)out);
        else
            diag_error(loc, "%s output %s (%lld + 2*%lld - %lld) / %lld + 1 = %lld must be "
                       ">= 1", fn, name, (long long)in, (long long)pad[i],
                       (long long)kernel[i], (long long)stride[i], (long long)out);
        diag_note(loc, "the input has shape %s", shape_text(l, xs));
        ok = false;
    }
    return ok;
}

/* ---- layers --------------------------------------------------------------- */

static Value bi_linear(Lower *l, const Value *args, SrcLoc loc)
{
    int x = float_tensor_arg(l, &args[0], "linear", "x");
    int64_t out_features;
    bool bias;
    if (x < 0 || !val_to_int(&args[1], "out_features", 1, INT64_C(1) << 30, &out_features) ||
        !bool_arg(&args[2], "bias", true, &bias))
        return val_error();

    IrGraph *g = l->graph;
    Shape xs = *shape_of(l, x);
    if (xs.rank < 2 || xs.batch_axis == xs.rank - 1) {
        diag_error(args[0].loc, "linear expects an input of shape [N, in_features], "
                   "but it has shape %s", shape_text(l, &xs));
        return val_error();
    }
    int64_t in_features = xs.dims[xs.rank - 1];
    int64_t wdims[2] = {out_features, in_features};
    Shape out = xs;
    out.dims[out.rank - 1] = out_features;
    if (!check_tensor_size(l, &out, "the output of linear", loc) ||
        !check_tensor_size(l, &(Shape){.rank = 2, .batch_axis = -1, .dims = {out_features, in_features}},
                           "the weight of linear", loc))
        return val_error();
    const char *name = layer_name(l, "linear", &args[3]);
    double bound = 1.0 / sqrt((double)in_features);

    /* Flatten leading axes: [..., in] -> [rows, in]. */
    Shape flat = shape_scalar();
    flat.rank = 2;
    flat.dims[0] = shape_numel(&xs, 1) / in_features;
    flat.dims[1] = in_features;
    flat.batch_axis = xs.batch_axis >= 0 ? 0 : -1;
    int h = ir_reshape(g, x, flat, loc);

    int w = create_param(l, arena_printf(l->arena, "%s.weight", name), "weight",
                         shape_make(2, wdims), IR_INIT_UNIFORM, bound, loc);
    if (w < 0)
        return val_error();
    int y = lower_lora(l, name, h, ir_matmul(g, h, w, false, true, loc), in_features,
                       out_features, loc);
    if (y < 0)
        return val_error();
    if (bias) {
        int b = create_param(l, arena_printf(l->arena, "%s.bias", name), "bias",
                             shape_make(1, &out_features), IR_INIT_UNIFORM, bound, loc);
        if (b < 0)
            return val_error();
        y = ir_binary(g, IR_ADD, y, ir_broadcast(g, b, ir_node(g, y)->shape, loc), loc);
    }

    return val_tensor(ir_reshape(g, y, out, loc), loc);
}

static Value bi_conv2d(Lower *l, const Value *args, SrcLoc loc)
{
    int x = float_tensor_arg(l, &args[0], "conv2d", "x");
    int64_t out_channels, kernel[2], stride[2] = {1, 1}, pad[2] = {0, 0};
    int64_t dilation[2] = {1, 1}, groups = 1;
    bool bias;
    if (x < 0 ||
        !val_to_int(&args[1], "out_channels", 1, INT64_C(1) << 30, &out_channels) ||
        !int_pair(&args[2], "kernel_size", 1, kernel) ||
        (!is_none(&args[3]) && !int_pair(&args[3], "stride", 1, stride)) ||
        (!is_none(&args[4]) && !int_pair(&args[4], "padding", 0, pad)) ||
        (!is_none(&args[5]) && !int_pair(&args[5], "dilation", 1, dilation)) ||
        (!is_none(&args[6]) && !val_to_int(&args[6], "groups", 1, INT64_C(1) << 30, &groups)) ||
        !bool_arg(&args[7], "bias", true, &bias))
        return val_error();

    IrGraph *g = l->graph;
    Shape xs = *shape_of(l, x);
    if (xs.rank != 4) {
        diag_error(args[0].loc, "conv2d expects an input of shape [N, C, H, W], but it "
                   "has shape %s", shape_text(l, &xs));
        return val_error();
    }
    int64_t in_channels = xs.dims[1];
    if (in_channels % groups != 0 || out_channels % groups != 0) {
        diag_error(args[6].loc, "groups (%lld) must divide the input channels (%lld) and "
                   "the output channels (%lld)", (long long)groups,
                   (long long)in_channels, (long long)out_channels);
        return val_error();
    }
    IrConvAttr attr = {.groups = groups};
    for (int i = 0; i < 2; i++) {
        attr.stride[i] = stride[i];
        attr.pad[i] = pad[i];
        attr.dilation[i] = dilation[i];
    }
    int64_t wdims[4] = {out_channels, in_channels / groups, kernel[0], kernel[1]};
    Shape ws = shape_make(4, wdims), ys;
    const char *why;
    if (!check_tensor_size(l, &ws, "the weight of conv2d", loc) ||
        !check_window(l, "conv2d", &xs, kernel, stride, pad, dilation, loc))
        return val_error();
    /* The rank, the groups, the window and the weight were checked above;
     * what is left is a batch dimension that a permute moved. */
    if (!ir_conv2d_shape(&xs, &ws, &attr, &ys, &why)) {
        diag_error(args[0].loc, "%s (input %s)", why, shape_text(l, &xs));
        return val_error();
    }
    if (!check_tensor_size(l, &ys, "the output of conv2d", loc))
        return val_error();

    const char *name = layer_name(l, "conv", &args[8]);
    double bound = 1.0 / sqrt((double)(wdims[1] * kernel[0] * kernel[1]));
    int w = create_param(l, arena_printf(l->arena, "%s.weight", name), "weight", ws,
                         IR_INIT_UNIFORM, bound, loc);
    if (w < 0)
        return val_error();
    int y = ir_conv2d(g, x, w, attr, loc);
    if (bias) {
        int b = create_param(l, arena_printf(l->arena, "%s.bias", name), "bias",
                             shape_make(1, &out_channels), IR_INIT_UNIFORM, bound, loc);
        if (b < 0)
            return val_error();
        int64_t cdims[3] = {out_channels, 1, 1};
        int column = ir_reshape(g, b, shape_make(3, cdims), loc);
        y = ir_binary(g, IR_ADD, y, ir_broadcast(g, column, ys, loc), loc);
    }
    return val_tensor(y, loc);
}

/* ---- tensor ops ----------------------------------------------------------- */

static Value bi_relu(Lower *l, const Value *args, SrcLoc loc)
{
    return tensor_unary(l, IR_RELU, &args[0], loc);
}

static Value bi_flatten(Lower *l, const Value *args, SrcLoc loc)
{
    int x = tensor_arg(l, &args[0], "flatten", "x");
    int64_t start = 1;
    if (x < 0 || (!is_none(&args[1]) && !val_to_int(&args[1], "start", 0, 5, &start)))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (start >= xs.rank) {
        diag_error(loc, "flatten(start = %lld) needs an input of rank at least %lld, but "
                   "it has shape %s", (long long)start, (long long)start + 1,
                   shape_text(l, &xs));
        return val_error();
    }
    /* A permute may have moved the batch dimension past start; merging it
     * with other axes would mix the samples. */
    if (xs.batch_axis > start) {
        diag_error(args[0].loc, "flatten(start = %lld) would merge the batch dimension, axis "
                   "%d of %s, with other axes", (long long)start, xs.batch_axis,
                   shape_text(l, &xs));
        return val_error();
    }
    Shape out = xs;
    out.rank = (int)start + 1;
    int64_t rest = 1;
    for (int i = (int)start; i < xs.rank; i++)
        rest *= xs.dims[i];
    out.dims[start] = rest;
    return val_tensor(ir_reshape(l->graph, x, out, loc), loc);
}

/* Formats the element count of a shape: "784", or "B*784" when it
 * depends on the batch size. */
static const char *element_count_text(Lower *l, const Shape *s)
{
    int64_t per_sample = shape_numel(s, 1);
    if (s->batch_axis < 0)
        return arena_printf(l->arena, "%lld", (long long)per_sample);
    if (per_sample == 1)
        return "B";
    return arena_printf(l->arena, "B*%lld", (long long)per_sample);
}

static Value bi_reshape(Lower *l, const Value *args, SrcLoc loc)
{
    int x = tensor_arg(l, &args[0], "reshape", "x");
    if (x < 0 || args[1].kind == VAL_ERROR)
        return val_error();
    const Value *dims = &args[1];
    if (dims->kind != VAL_LIST && dims->kind != VAL_TUPLE) {
        diag_error(dims->loc, "the shape of reshape must be a list, such as [-1, 784]");
        return val_error();
    }
    Shape xs = *shape_of(l, x), out = shape_scalar();
    if (dims->list.n > SHAPE_MAX_RANK) {
        diag_error(dims->loc, "tensors have at most %d dimensions", SHAPE_MAX_RANK);
        return val_error();
    }
    /* -1 in the first position keeps the batch dimension: [-1, 784]. */
    out.rank = dims->list.n;
    int64_t known = 1;
    for (int i = 0; i < out.rank; i++) {
        int64_t d;
        if (!val_to_int(&dims->list.items[i], "a reshape dimension", -1, SHAPE_MAX_ELEMENTS, &d))
            return val_error();
        if (d == 0) {
            diag_error(dims->list.items[i].loc, "reshape dimensions must be positive, or -1 "
                       "first for the batch dimension");
            return val_error();
        }
        if (d == -1 && i != 0) {
            diag_error(dims->list.items[i].loc, "only the first dimension of reshape may "
                       "be -1 (the batch dimension)");
            return val_error();
        }
        out.dims[i] = d;
        if (d > 0 && (__builtin_mul_overflow(known, d, &known) || known > SHAPE_MAX_ELEMENTS)) {
            diag_error(dims->list.items[i].loc, "reshape to %s has more than 2^36 elements "
                       "per sample", val_format(l, dims));
            return val_error();
        }
    }
    if (out.rank > 0 && out.dims[0] == -1) {
        int64_t total = shape_numel(&xs, 1);
        if (xs.batch_axis < 0) {
            diag_error(loc, "cannot reshape %s to %s: -1 stands for the batch dimension, "
                       "and the input has none", shape_text(l, &xs), val_format(l, dims));
            return val_error();
        }
        /* Rows of the result are samples only if no axis of size > 1 comes
         * before the batch axis in row-major order. */
        for (int a = 0; a < xs.batch_axis; a++) {
            if (xs.dims[a] > 1) {
                diag_error(loc, "cannot reshape %s to %s: -1 stands for the batch dimension, "
                           "which must come first, but axis %d of size %lld comes before it; "
                           "move it with permute or transpose first", shape_text(l, &xs),
                           val_format(l, dims), a, (long long)xs.dims[a]);
                return val_error();
            }
        }
        if (total % known != 0) {
            diag_error(loc, "cannot reshape %s to %s: each sample has %lld elements, and "
                       "%lld %% %lld = %lld must be 0", shape_text(l, &xs),
                       val_format(l, dims), (long long)total, (long long)total,
                       (long long)known, (long long)(total % known));
            return val_error();
        }
        out.dims[0] = total / known;
        out.batch_axis = 0;
    }
    if (shape_numel(&out, 1) != shape_numel(&xs, 1) ||
        shape_numel(&out, 2) != shape_numel(&xs, 2)) {
        diag_error(loc, "cannot reshape %s to %s: the element counts %s and %s differ",
                   shape_text(l, &xs), val_format(l, dims), element_count_text(l, &xs),
                   element_count_text(l, &out));
        return val_error();
    }
    return val_tensor(ir_reshape(l->graph, x, out, loc), loc);
}

static Value bi_max_pool2d(Lower *l, const Value *args, SrcLoc loc)
{
    int x = float_tensor_arg(l, &args[0], "max_pool2d", "x");
    int64_t kernel[2], stride[2], pad[2] = {0, 0};
    if (x < 0 || !int_pair(&args[1], "kernel_size", 1, kernel))
        return val_error();
    stride[0] = kernel[0];
    stride[1] = kernel[1];
    if ((!is_none(&args[2]) && !int_pair(&args[2], "stride", 1, stride)) ||
        (!is_none(&args[3]) && !int_pair(&args[3], "padding", 0, pad)))
        return val_error();
    IrPoolAttr attr;
    for (int i = 0; i < 2; i++) {
        attr.kernel[i] = kernel[i];
        attr.stride[i] = stride[i];
        attr.pad[i] = pad[i];
    }
    Shape xs = *shape_of(l, x), ys;
    const char *why;
    if (!check_window(l, "max_pool2d", &xs, kernel, stride, pad, NULL, loc))
        return val_error();
    if (!ir_pool2d_shape(&xs, &attr, &ys, &why)) {
        diag_error(loc, "%s (input %s)", why, shape_text(l, &xs));
        return val_error();
    }
    if (!check_tensor_size(l, &ys, "the output of max_pool2d", loc))
        return val_error();
    return val_tensor(ir_maxpool2d(l->graph, x, attr, loc), loc);
}

Value lower_cross_entropy(Lower *l, int logits, int labels, SrcLoc loc)
{
    return lower_loss(l, logits, labels, (IrLossAttr){.kind = IR_LOSS_CROSS_ENTROPY}, loc);
}

Value lower_loss(Lower *l, int logits, int labels, IrLossAttr attr, SrcLoc loc)
{
    IrGraph *g = l->graph;
    int per_sample = ir_loss(g, logits, labels, attr, loc);
    Shape rows = ir_node(g, per_sample)->shape;
    int total = ir_sum(g, per_sample, 1u, loc);
    return val_tensor(ir_binary(g, IR_DIV, total, count_node(l, &rows, 1u, loc), loc), loc);
}

static Value bi_cross_entropy(Lower *l, const Value *args, SrcLoc loc)
{
    int logits = tensor_arg(l, &args[0], "cross_entropy", "logits");
    int labels = tensor_arg(l, &args[1], "cross_entropy", "labels");
    if (logits < 0 || labels < 0)
        return val_error();
    const IrNode *nl = ir_node(l->graph, logits), *ny = ir_node(l->graph, labels);
    if (nl->shape.rank != 2 || ny->dtype != DT_I32 || ny->shape.rank != 1 ||
        ny->shape.dims[0] != nl->shape.dims[0] || ny->shape.batch_axis != nl->shape.batch_axis) {
        diag_error(loc, "cross_entropy expects logits [N, C] and integer labels [N], but "
                   "got %s and %s", shape_text(l, &nl->shape), shape_text(l, &ny->shape));
        note_operand_origin(l, "the tensor of logits", &args[0], logits);
        note_operand_origin(l, "the tensor of labels", &args[1], labels);
        return val_error();
    }
    IrLossAttr attr = {.kind = IR_LOSS_CROSS_ENTROPY};
    if (!is_none(&args[2])) {
        const Value *s = &args[2];
        if (s->kind != VAL_NUMBER || !(s->number.value >= 0 && s->number.value <= 1)) {
            diag_error(s->loc, "label_smoothing must be a number in [0, 1]");
            return val_error();
        }
        attr.label_smoothing = s->number.value;
    }
    return lower_loss(l, logits, labels, attr, loc);
}

/* ---- math on numbers and tensors ------------------------------------------ */

static Value math_unary(Lower *l, const Value *x, IrOp op, double (*fold)(double),
                        SrcLoc loc)
{
    if (x->kind == VAL_NUMBER)
        return val_number(fold(x->number.value), loc);
    if (!need_graph(l, ir_op_name(op), loc))
        return val_error();
    return tensor_unary(l, op, x, loc);
}

/* As the IR's sign: -1 or +1, and zero or NaN unchanged. */
static double sign_of(double x)
{
    if (x > 0)
        return 1;
    if (x < 0)
        return -1;
    return x == 0 ? 0 : x;
}

#define MATH_UNARY(NAME, OP, FOLD)                                            \
    static Value bi_##NAME(Lower *l, const Value *args, SrcLoc loc)           \
    {                                                                         \
        return math_unary(l, &args[0], OP, FOLD, loc);                        \
    }

MATH_UNARY(sqrt, IR_SQRT, sqrt)
MATH_UNARY(exp, IR_EXP, exp)
MATH_UNARY(log, IR_LOG, log)
MATH_UNARY(abs, IR_ABS, fabs)
MATH_UNARY(sign, IR_SIGN, sign_of)
MATH_UNARY(tanh, IR_TANH, tanh)
MATH_UNARY(floor, IR_FLOOR, floor)

static Value math_binary(Lower *l, const Value *a, const Value *b, IrOp op,
                         const char *name, SrcLoc loc)
{
    if (a->kind == VAL_NUMBER && b->kind == VAL_NUMBER) {
        /* The same rule as the kernels: NaN wins, and -0 < +0. */
        double x = a->number.value, y = b->number.value;
        if (isnan(x) || isnan(y))
            return val_number(NAN, loc);
        if (x == y)
            return val_number((op == IR_MAX) == (signbit(x) != 0) ? y : x, loc);
        double larger = x > y ? x : y, smaller = x < y ? x : y;
        return val_number(op == IR_MAX ? larger : smaller, loc);
    }
    if (!need_graph(l, name, loc))
        return val_error();
    return tensor_binary(l, op, name, a, b, loc);
}

/* max(x) and min(x) with one argument: the extreme element of a whole
 * tensor, a rank-0 tensor. The minimum is -max(-x), so it shares the
 * maximum's gradient rule (the first extreme element in row-major order
 * gets it) and its NaN rule. */
static Value whole_extreme(Lower *l, const Value *x, bool minimum, SrcLoc loc)
{
    const char *name = minimum ? "min" : "max";
    if (x->kind == VAL_NUMBER) {
        diag_error(x->loc, "%s of one argument reduces a tensor, but it is given a number; "
                   "compare two numbers with %s(a, b)", name, name);
        return val_error();
    }
    if (!need_graph(l, name, loc))
        return val_error();
    int t = float_tensor_arg(l, x, name, "a");
    if (t < 0)
        return val_error();
    IrGraph *g = l->graph;
    if (minimum)
        t = ir_unary(g, IR_NEG, t, loc);
    int r = ir_reduce_max(g, t, all_axes(shape_of(l, t)), loc);
    return val_tensor(minimum ? ir_unary(g, IR_NEG, r, loc) : r, loc);
}

static Value bi_max(Lower *l, const Value *args, SrcLoc loc)
{
    if (is_none(&args[1]))
        return whole_extreme(l, &args[0], false, loc);
    return math_binary(l, &args[0], &args[1], IR_MAX, "max", loc);
}

static Value bi_min(Lower *l, const Value *args, SrcLoc loc)
{
    if (is_none(&args[1]))
        return whole_extreme(l, &args[0], true, loc);
    return math_binary(l, &args[0], &args[1], IR_MIN, "min", loc);
}

static Value bi_clamp(Lower *l, const Value *args, SrcLoc loc)
{
    Value v = args[0];
    if (!is_none(&args[1]))
        v = math_binary(l, &v, &args[1], IR_MAX, "clamp", loc);
    if (v.kind != VAL_ERROR && !is_none(&args[2]))
        v = math_binary(l, &v, &args[2], IR_MIN, "clamp", loc);
    return v;
}

static Value bi_where(Lower *l, const Value *args, SrcLoc loc)
{
    if (args[0].kind == VAL_BOOL)
        return args[0].boolean ? args[1] : args[2];
    if (!need_graph(l, "where", loc))
        return val_error();
    int c = tensor_arg(l, &args[0], "where", "cond");
    int a = tensor_arg(l, &args[1], "where", "a");
    int b = tensor_arg(l, &args[2], "where", "b");
    if (c < 0 || a < 0 || b < 0)
        return val_error();
    IrGraph *g = l->graph;
    if (ir_node(g, c)->dtype != DT_BOOL) {
        diag_error(args[0].loc, "the condition of where must be a comparison, such as x > 0");
        return val_error();
    }
    Shape sc = ir_node(g, c)->shape, sa = ir_node(g, a)->shape, sb = ir_node(g, b)->shape;
    Shape s1, out;
    if (!ir_broadcast_shape(&sa, &sb, &s1) || !ir_broadcast_shape(&s1, &sc, &out)) {
        diag_error(loc, "operands of where have incompatible shapes %s, %s and %s",
                   shape_text(l, &sc), shape_text(l, &sa), shape_text(l, &sb));
        note_operand_origin(l, "the condition", &args[0], c);
        note_operand_origin(l, "the second operand", &args[1], a);
        note_operand_origin(l, "the third operand", &args[2], b);
        return val_error();
    }
    if (!check_tensor_size(l, &out, "the result of where", loc))
        return val_error();
    c = ir_broadcast(g, c, out, loc);
    a = ir_broadcast(g, a, out, loc);
    b = ir_broadcast(g, b, out, loc);
    return val_tensor(ir_select(g, c, a, b, loc), loc);
}

int keep_reduced_axes(Lower *l, int reduced, const Shape *xs, uint32_t axes, SrcLoc loc)
{
    Shape kept = *xs;
    for (int i = 0; i < kept.rank; i++)
        if (axes & (1u << i)) {
            kept.dims[i] = 1;
            if (kept.batch_axis == i)
                kept.batch_axis = -1;
        }
    return ir_reshape(l->graph, reduced, kept, loc);
}

static Value reduce(Lower *l, const Value *args, SrcLoc loc, const char *name, bool mean)
{
    if (!need_graph(l, name, loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], name, "x");
    if (x < 0)
        return val_error();
    Shape xs = *shape_of(l, x);
    uint32_t axes;
    if (!axis_mask(l, &args[1], &xs, &axes))
        return val_error();
    bool keepdims;
    if (!bool_arg(&args[2], "keepdims", false, &keepdims))
        return val_error();
    int s = ir_sum(l->graph, x, axes, loc);
    if (mean) {
        /* count_node adds nodes, which may move the node array: read s's
         * shape after it. */
        int count = count_node(l, &xs, axes, loc);
        s = ir_binary(l->graph, IR_DIV, s,
                      ir_broadcast(l->graph, count, ir_node(l->graph, s)->shape, loc), loc);
    }
    if (keepdims)
        s = keep_reduced_axes(l, s, &xs, axes, loc);
    return val_tensor(s, loc);
}

static Value bi_sum(Lower *l, const Value *args, SrcLoc loc)
{
    return reduce(l, args, loc, "sum", false);
}

static Value bi_mean(Lower *l, const Value *args, SrcLoc loc)
{
    return reduce(l, args, loc, "mean", true);
}

/* rms(x, axis, keepdims): the root mean square, sqrt(mean(x^2)), over the
 * axes that sum and mean take. */
static Value bi_rms(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "rms", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "rms", "x");
    if (x < 0)
        return val_error();
    Value squared[3] = {val_tensor(ir_binary(l->graph, IR_MUL, x, x, loc), loc), args[1],
                        args[2]};
    Value m = reduce(l, squared, loc, "rms", true);
    if (m.kind == VAL_ERROR)
        return m;
    return val_tensor(ir_unary(l->graph, IR_SQRT, m.tensor, loc), loc);
}

static Value bi_norm(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "norm", loc))
        return val_error();
    int x = float_tensor_arg(l, &args[0], "norm", "x");
    if (x < 0)
        return val_error();
    IrGraph *g = l->graph;
    int squares = ir_binary(g, IR_MUL, x, x, loc);
    int total = ir_sum(g, squares, all_axes(shape_of(l, x)), loc);
    return val_tensor(ir_unary(g, IR_SQRT, total, loc), loc);
}

/* full_like(x, value): a tensor of x's shape and element type with every
 * element `value`. It is also how an optimizer declares a state whose
 * shape differs from its parameter's (state row = full_like(..., 0)). */
static Value bi_full_like(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "full_like", loc))
        return val_error();
    int x = tensor_arg(l, &args[0], "full_like", "x");
    if (x < 0)
        return val_error();
    if (args[1].kind != VAL_NUMBER) {
        diag_error(args[1].loc, "the value of full_like must be a number known at compile "
                   "time, but it is %s", val_kind_name(&args[1]));
        return val_error();
    }
    Shape xs = *shape_of(l, x); /* a copy: ir_const may move the node array */
    int c = ir_const(l->graph, ir_node(l->graph, x)->dtype, args[1].number.value, loc);
    return val_tensor(ir_broadcast(l->graph, c, xs, loc), loc);
}

/* ndim(x): the rank of a tensor, known at compile time, so an optimizer
 * rule can treat matrices and vectors differently. */
static Value bi_ndim(Lower *l, const Value *args, SrcLoc loc)
{
    int x = tensor_arg(l, &args[0], "ndim", "x");
    if (x < 0)
        return val_error();
    return val_number(shape_of(l, x)->rank, loc);
}

/* size(x, axis): the length of one axis of a tensor, or its number of
 * elements when axis is left out, known at compile time. */
static Value bi_size(Lower *l, const Value *args, SrcLoc loc)
{
    int x = tensor_arg(l, &args[0], "size", "x");
    if (x < 0)
        return val_error();
    const Shape *s = shape_of(l, x);
    uint32_t axes;
    if (!axis_mask(l, &args[1], s, &axes))
        return val_error();
    double n = 1;
    for (int i = 0; i < s->rank; i++) {
        if (!(axes & (1u << i)))
            continue;
        if (i == s->batch_axis) {
            diag_error(loc, "size() of the batch axis is only known at run time");
            return val_error();
        }
        n *= (double)s->dims[i];
    }
    return val_number(n, loc);
}

/* ---- lists and data ------------------------------------------------------- */

static Value bi_range(Lower *l, const Value *args, SrcLoc loc)
{
    int64_t a, b, step = 1;
    const int64_t big = INT64_C(1) << 20;
    if (!val_to_int(&args[0], "range bound", -big, big, &a))
        return val_error();
    if (is_none(&args[1])) {
        b = a;
        a = 0;
    } else if (!val_to_int(&args[1], "range bound", -big, big, &b)) {
        return val_error();
    }
    if (!is_none(&args[2]) && !val_to_int(&args[2], "range step", -big, big, &step))
        return val_error();
    if (step == 0) {
        diag_error(args[2].loc, "range step must not be zero");
        return val_error();
    }
    int64_t n = step > 0 ? (b - a + step - 1) / step : (a - b - step - 1) / -step;
    if (n < 0)
        n = 0;
    if (n > big) {
        diag_error(loc, "range has more than %lld elements", (long long)big);
        return val_error();
    }
    Value r = val_none(loc);
    r.kind = VAL_LIST;
    r.list.n = (int)n;
    r.list.items = arena_calloc(l->arena, (size_t)n + 1, sizeof(Value));
    for (int64_t i = 0; i < n; i++)
        r.list.items[i] = val_number((double)(a + i * step), loc);
    return r;
}

static Value bi_len(Lower *l, const Value *args, SrcLoc loc)
{
    (void)l;
    if (args[0].kind == VAL_LIST || args[0].kind == VAL_TUPLE)
        return val_number(args[0].list.n, loc);
    if (args[0].kind == VAL_STRING)
        return val_number((double)strlen(args[0].string), loc);
    diag_error(args[0].loc, "len() takes a list, a tuple or a string, not %s",
               val_kind_name(&args[0]));
    return val_error();
}

/* str(x): the text of a number, boolean or string, for building layer
 * names such as "stage" + str(i). Integers print without a decimal
 * point; other numbers print with %g. */
static Value bi_str(Lower *l, const Value *args, SrcLoc loc)
{
    Value r = val_none(loc);
    r.kind = VAL_STRING;
    switch (args[0].kind) {
    case VAL_NUMBER: {
        double v = args[0].number.value;
        if (v == floor(v) && fabs(v) < 1e15)
            r.string = arena_printf(l->arena, "%.0f", v);
        else
            r.string = arena_printf(l->arena, "%g", v);
        return r;
    }
    case VAL_BOOL:
        r.string = args[0].boolean ? "true" : "false";
        return r;
    case VAL_STRING:
        r.string = args[0].string;
        return r;
    default:
        diag_error(args[0].loc, "str() takes a number, a boolean or a string, not %s",
                   val_kind_name(&args[0]));
        return val_error();
    }
}

/* require(cond, "message"): a compile-time check, for rules that must
 * reject a combination of hyperparameters (as torch.optim does). */
static Value bi_require(Lower *l, const Value *args, SrcLoc loc)
{
    if (args[0].kind != VAL_BOOL) {
        diag_error(args[0].loc, "the condition of require must be a boolean known at "
                   "compile time, but it is %s", val_kind_name(&args[0]));
        return val_error();
    }
    if (args[1].kind != VAL_STRING) {
        diag_error(args[1].loc, "the message of require must be a string");
        return val_error();
    }
    if (!args[0].boolean) {
        diag_error(loc, "%s", args[1].string);
        /* Stop the body here: what follows assumed the condition. */
        l->returned = true;
        l->return_value = val_error();
        return val_error();
    }
    return val_none(loc);
}

/* Builds the data source of idx() or cifar(); args are (path, normalize). */
static Value data_source(Lower *l, const Value *args, SrcLoc loc, DataFormat format)
{
    Normalize normalize = NORMALIZE_UNIT;
    if (!is_none(&args[1])) {
        const Value *n = &args[1];
        const char *s = n->kind == VAL_SYMBOL || n->kind == VAL_STRING ? n->string : "";
        if (strcmp(s, "unit") == 0)
            normalize = NORMALIZE_UNIT;
        else if (strcmp(s, "standard") == 0)
            normalize = NORMALIZE_STANDARD;
        else if (strcmp(s, "none") == 0)
            normalize = NORMALIZE_NONE;
        else {
            diag_error(n->loc, "normalize must be unit, standard or none, not %s",
                       val_format(l, n));
            return val_error();
        }
    }
    int classes = 0;
    if (!is_none(&args[2])) {
        const Value *c = &args[2];
        if (c->kind != VAL_NUMBER || !c->number.is_integer || c->number.value < 1 ||
            c->number.value > 256) {
            diag_error(c->loc, "classes must be a whole number from 1 to 256, because "
                       "labels are bytes, not %s", val_format(l, c));
            return val_error();
        }
        classes = (int)c->number.value;
    }
    DataSpec *d = arena_calloc(l->arena, 1, sizeof *d);
    d->format = format;
    d->classes = classes;
    d->path = source_relative_path(l->arena, args[0].string, args[0].loc);
    d->normalize = normalize;
    d->loc = loc;
    Value v = val_none(loc);
    v.kind = VAL_DATA;
    v.data = d;
    return v;
}

static Value bi_idx(Lower *l, const Value *args, SrcLoc loc)
{
    if (args[0].kind != VAL_STRING || !args[0].string[0]) {
        diag_error(args[0].loc, "idx() takes the path of a directory with IDX files");
        return val_error();
    }
    return data_source(l, args, loc, DATA_IDX);
}

static Value bi_cifar(Lower *l, const Value *args, SrcLoc loc)
{
    if (args[0].kind != VAL_STRING || !args[0].string[0]) {
        diag_error(args[0].loc, "cifar() takes the path of a directory with CIFAR binary "
                                "batches");
        return val_error();
    }
    return data_source(l, args, loc, DATA_CIFAR);
}

/* ---- the table ------------------------------------------------------------ */

static const Builtin builtins[] = {
    {"linear", PARAMS("x", "out_features", "bias", "name"), 2, bi_linear},
    {"conv2d", PARAMS("x", "out_channels", "kernel_size", "stride", "padding", "dilation",
                      "groups", "bias", "name"), 3, bi_conv2d},
    {"relu", PARAMS("x"), 1, bi_relu},
    {"flatten", PARAMS("x", "start"), 1, bi_flatten},
    {"reshape", PARAMS("x", "shape"), 2, bi_reshape},
    {"max_pool2d", PARAMS("x", "kernel_size", "stride", "padding"), 2, bi_max_pool2d},
    {"cross_entropy", PARAMS("logits", "labels", "label_smoothing"), 2, bi_cross_entropy},
    {"sqrt", PARAMS("x"), 1, bi_sqrt},
    {"exp", PARAMS("x"), 1, bi_exp},
    {"log", PARAMS("x"), 1, bi_log},
    {"abs", PARAMS("x"), 1, bi_abs},
    {"sign", PARAMS("x"), 1, bi_sign},
    {"tanh", PARAMS("x"), 1, bi_tanh},
    {"floor", PARAMS("x"), 1, bi_floor},
    {"max", PARAMS("a", "b"), 1, bi_max},
    {"min", PARAMS("a", "b"), 1, bi_min},
    {"clamp", PARAMS("x", "min", "max"), 1, bi_clamp},
    {"where", PARAMS("cond", "a", "b"), 3, bi_where},
    {"sum", PARAMS("x", "axis", "keepdims"), 1, bi_sum},
    {"mean", PARAMS("x", "axis", "keepdims"), 1, bi_mean},
    {"norm", PARAMS("x"), 1, bi_norm},
    {"rms", PARAMS("x", "axis", "keepdims"), 1, bi_rms},
    {"ndim", PARAMS("x"), 1, bi_ndim},
    {"full_like", PARAMS("x", "value"), 2, bi_full_like},
    {"size", PARAMS("x", "axis"), 1, bi_size},
    {"range", PARAMS("start", "stop", "step"), 1, bi_range},
    {"len", PARAMS("x"), 1, bi_len},
    {"str", PARAMS("x"), 1, bi_str},
    {"idx", PARAMS("path", "normalize", "classes"), 1, bi_idx},
    {"cifar", PARAMS("path", "normalize", "classes"), 1, bi_cifar},
    {"require", PARAMS("cond", "message"), 2, bi_require},
    {"recipe", PARAMS("table", "backbone", "optimizer"), 3, builtin_recipe},
};

/* The builtin tables: this file's, nn.c's and the spatial family's. */
static const Builtin *builtin_table(int which, int *n)
{
    switch (which) {
    case 0:
        *n = (int)BOCB_ARRAY_LEN(builtins);
        return builtins;
    case 1:
        *n = nn_nbuiltins;
        return nn_builtins;
    case 2:
        return builtin_spatial_table(n);
    case 3:
        return builtin_lm_table(n);
    default:
        *n = 0;
        return NULL;
    }
}

enum { BUILTIN_TABLES = 4 };

const Builtin *builtin_find(const char *name)
{
    for (int t = 0; t < BUILTIN_TABLES; t++) {
        int n;
        const Builtin *table = builtin_table(t, &n);
        for (int i = 0; i < n; i++)
            if (strcmp(table[i].name, name) == 0)
                return &table[i];
    }
    return NULL;
}

const char *const *builtin_names(void)
{
    static const char **names;
    if (names)
        return names;
    int total = 0;
    for (int t = 0; t < BUILTIN_TABLES; t++) {
        int n;
        builtin_table(t, &n);
        total += n;
    }
    names = xcalloc((size_t)total + 1, sizeof *names);
    int k = 0;
    for (int t = 0; t < BUILTIN_TABLES; t++) {
        int n;
        const Builtin *table = builtin_table(t, &n);
        for (int i = 0; i < n; i++)
            names[k++] = table[i].name;
    }
    return names;
}

Value call_builtin(Lower *l, const Builtin *b, const CallArgs *args)
{
    int n = 0;
    while (b->params[n])
        n++;
    Signature sig = {.what = arena_printf(l->arena, "'%s'", b->name), .names = b->params,
                     .nparams = n, .nrequired = b->nrequired};
    Value *bound = arena_calloc(l->arena, (size_t)n + 1, sizeof(Value));
    if (!bind_args(l, &sig, args, bound) || any_error(bound, n))
        return val_error();

    /* Layers and tensor ops need a graph; math and lists do not. */
    bool graph_only = b->fn == bi_linear || b->fn == bi_conv2d || b->fn == bi_relu ||
                      b->fn == bi_flatten || b->fn == bi_reshape ||
                      b->fn == bi_max_pool2d || b->fn == bi_cross_entropy;
    if (graph_only && !need_graph(l, b->name, args->loc))
        return val_error();
    if ((b->fn == bi_linear || b->fn == bi_conv2d) && l->mode != MODE_MODEL) {
        diag_error(args->loc, "'%s' creates parameters and can only be used in a model",
                   b->name);
        return val_error();
    }
    if (b->fn == bi_idx && (l->mode == MODE_MODEL || l->mode == MODE_OPTIMIZER)) {
        diag_error(args->loc, "'idx' declares data and belongs in a data declaration");
        return val_error();
    }
    return b->fn(l, bound, args->loc);
}
