/* nn.c - builtins for network building blocks: activations, normalisation,
 * dropout, learnable scales and free-standing parameters, and losses.
 *
 * Everything here lowers to existing IR, so the backward pass comes from
 * the VJP rules of the ops it emits, and elementwise parts fuse with their
 * neighbours. Only erf, sigmoid and random are IR ops of their own.
 *
 * Initialisation follows PyTorch: norm weights 1 and biases 0, layer scale
 * a constant (timm's LayerScale), GRN's gamma and beta 0, and `parameter`
 * zeros, ones or timm's trunc_normal_(std) with absolute bounds [-2, 2].
 *
 * Layouts: a norm over channels works on channels-last tensors [..., C]
 * by default and on channels-first tensors [N, C, ...] with
 * `channels_first = true`, as ConvNeXt uses both.
 *
 * Randomness: dropout and drop_path draw from the IR's `random` op. Its
 * key is a per-layer buffer variable that the run's seed initialises, so
 * the key is a function of the seed and the layer, and its counter is the
 * element index and the training step. In evaluation (Lower.training
 * false) they are the identity.
 */
#include <math.h>
#include <string.h>

#include "builtins.h"

/* ---- small builders ------------------------------------------------------ */

/* A constant with the shape and dtype of `like`. */
static int constant_like(Lower *l, int like, double value, SrcLoc loc)
{
    const IrNode *n = ir_node(l->graph, like);
    Shape s = n->shape;
    return ir_broadcast(l->graph, ir_const(l->graph, n->dtype, value, loc), s, loc);
}

static int binary(Lower *l, IrOp op, int a, int b, SrcLoc loc)
{
    return ir_binary(l->graph, op, a, b, loc);
}

static int broadcast_to(Lower *l, int x, const Shape *to, SrcLoc loc)
{
    return ir_broadcast(l->graph, x, *to, loc);
}

/* `s` with the axes in `axes` set to 1 (a reduced axis loses the batch). */
static Shape kept_shape(const Shape *s, uint32_t axes)
{
    Shape k = *s;
    for (int i = 0; i < s->rank; i++) {
        if (!(axes & (1u << i)))
            continue;
        k.dims[i] = 1;
        if (i == k.batch_axis)
            k.batch_axis = -1;
    }
    return k;
}

/* The mean of x over `axes`, in kept_shape form. */
static int mean_keep(Lower *l, int x, uint32_t axes, SrcLoc loc)
{
    IrGraph *g = l->graph;
    Shape xs = *shape_of(l, x);
    int s = ir_sum(g, x, axes, loc);
    /* count_node adds nodes, which may move g->nodes: read s's shape after. */
    int count = count_node(l, &xs, axes, loc);
    int n = ir_broadcast(g, count, ir_node(g, s)->shape, loc);
    Shape k = kept_shape(&xs, axes);
    return ir_reshape(g, binary(l, IR_DIV, s, n, loc), k, loc);
}

/* The sum of x over `axes`, in kept_shape form. */
static int sum_keep(Lower *l, int x, uint32_t axes, SrcLoc loc)
{
    Shape k = kept_shape(shape_of(l, x), axes);
    return ir_reshape(l->graph, ir_sum(l->graph, x, axes, loc), k, loc);
}

/* Broadcasts a per-channel vector [C] over x, whose channel axis is `axis`. */
static int per_channel(Lower *l, int v, int x, int axis, SrcLoc loc)
{
    Shape xs = *shape_of(l, x);
    Shape column = shape_scalar();
    column.rank = xs.rank - axis;
    column.dims[0] = xs.dims[axis];
    for (int i = 1; i < column.rank; i++)
        column.dims[i] = 1;
    return broadcast_to(l, ir_reshape(l->graph, v, column, loc), &xs, loc);
}

static Shape vector_shape(int64_t n)
{
    return shape_make(1, &n);
}

/* Reads a number argument in [min, max], `fallback` when not given. */
static bool number_arg(const Value *v, const char *what, double min, double max,
                       double fallback, double *out)
{
    if (is_none(v)) {
        *out = fallback;
        return true;
    }
    if (v->kind != VAL_NUMBER) {
        diag_error(v->loc, "%s must be a number, but it is %s", what, val_kind_name(v));
        return false;
    }
    if (!(v->number.value >= min && v->number.value <= max)) {
        diag_error(v->loc, "%s must lie in [%g, %g], but it is %g", what, min, max,
                   v->number.value);
        return false;
    }
    *out = v->number.value;
    return true;
}

/* Reads a drop probability p in [0, 1), `fallback` when not given. */
static bool probability_arg(const Value *v, double fallback, double *out)
{
    if (v->kind == VAL_NUMBER && !(v->number.value >= 0 && v->number.value < 1)) {
        diag_error(v->loc, "p must lie in [0, 1), but it is %g", v->number.value);
        return false;
    }
    return number_arg(v, "p", 0, 1, fallback, out);
}

/* The channel axis of x for a channels-last or channels-first op, or -1
 * after reporting a shape without one. */
static int channel_axis(Lower *l, int x, bool channels_first, const char *fn, SrcLoc loc)
{
    const Shape *xs = shape_of(l, x);
    int axis = channels_first ? 1 : xs->rank - 1;
    if (xs->rank < (channels_first ? 2 : 1) || axis == xs->batch_axis) {
        diag_error(loc, "%s expects %s, but the input has shape %s", fn,
                   channels_first ? "channels first, [N, C, ...]" : "channels last, [..., C]",
                   shape_text(l, xs));
        return -1;
    }
    return axis;
}

/* The graph's floating-point tensor argument x, after checking there is a
 * graph. */
static int graph_tensor(Lower *l, const Value *v, const char *fn, SrcLoc loc)
{
    if (!need_graph(l, fn, loc))
        return -1;
    return float_tensor_arg(l, v, fn, "x");
}

static bool in_model(Lower *l, const char *fn, SrcLoc loc)
{
    if (l->mode == MODE_MODEL && l->graph)
        return true;
    diag_error(loc, "'%s' creates variables and can only be used in a model", fn);
    return false;
}

int lower_step_input(Lower *l, SrcLoc loc)
{
    IrGraph *g = l->graph;
    int input = ir_find_input(g, "step");
    if (input < 0)
        return ir_input(g, "step", l->dtype, shape_scalar(), loc);
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == IR_INPUT && g->nodes[i].attr.input == input)
            return i;
    BOCB_UNREACHABLE("graph input without a node");
}

/* ---- activations ----------------------------------------------------------- */

static double sigmoid_of(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* A function that folds on numbers and emits `op` on tensors. */
static Value unary_fn(Lower *l, const Value *x, IrOp op, double (*fold)(double), SrcLoc loc)
{
    if (x->kind == VAL_NUMBER)
        return val_number(fold(x->number.value), loc);
    if (!need_graph(l, ir_op_name(op), loc))
        return val_error();
    return tensor_unary(l, op, x, loc);
}

static Value bi_erf(Lower *l, const Value *args, SrcLoc loc)
{
    return unary_fn(l, &args[0], IR_ERF, erf, loc);
}

static Value bi_sigmoid(Lower *l, const Value *args, SrcLoc loc)
{
    return unary_fn(l, &args[0], IR_SIGMOID, sigmoid_of, loc);
}

/* gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2)); with approximate =
 * "tanh", x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch's GELU. */
static Value bi_gelu(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "gelu", loc);
    if (x < 0)
        return val_error();
    bool tanh_form = false;
    if (!is_none(&args[1])) {
        const Value *a = &args[1];
        const char *s = a->kind == VAL_STRING ? a->string : "";
        if (strcmp(s, "tanh") == 0)
            tanh_form = true;
        else if (strcmp(s, "none") != 0) {
            diag_error(a->loc, "approximate must be \"none\" or \"tanh\"");
            return val_error();
        }
    }
    IrGraph *g = l->graph;
    int inner;
    if (tanh_form) {
        int cube = binary(l, IR_MUL, binary(l, IR_MUL, x, x, loc), x, loc);
        int poly = binary(l, IR_ADD, x, binary(l, IR_MUL, constant_like(l, x, 0.044715, loc), cube, loc), loc);
        int arg = binary(l, IR_MUL, constant_like(l, x, 0.7978845608028654 /* sqrt(2 / pi) */, loc), poly, loc);
        inner = ir_unary(g, IR_TANH, arg, loc);
    } else {
        inner = ir_unary(g, IR_ERF, binary(l, IR_MUL, x, constant_like(l, x, 0.7071067811865476 /* 1 / sqrt(2) */, loc), loc), loc);
    }
    int half_x = binary(l, IR_MUL, x, constant_like(l, x, 0.5, loc), loc);
    return val_tensor(binary(l, IR_MUL, half_x, binary(l, IR_ADD, constant_like(l, x, 1.0, loc), inner, loc),
                          loc), loc);
}

static Value bi_silu(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "silu", loc);
    if (x < 0)
        return val_error();
    return val_tensor(binary(l, IR_MUL, x, ir_unary(l->graph, IR_SIGMOID, x, loc), loc), loc);
}

/* relu6(x + 3) / 6, as torch's Hardsigmoid. */
static int hard_sigmoid_node(Lower *l, int x, SrcLoc loc)
{
    int shifted = binary(l, IR_ADD, x, constant_like(l, x, 3.0, loc), loc);
    int clamped = binary(l, IR_MIN, binary(l, IR_MAX, shifted, constant_like(l, x, 0.0, loc), loc),
                      constant_like(l, x, 6.0, loc), loc);
    return binary(l, IR_DIV, clamped, constant_like(l, x, 6.0, loc), loc);
}

static Value bi_hard_sigmoid(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "hard_sigmoid", loc);
    if (x < 0)
        return val_error();
    return val_tensor(hard_sigmoid_node(l, x, loc), loc);
}

static Value bi_hard_swish(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "hard_swish", loc);
    if (x < 0)
        return val_error();
    return val_tensor(binary(l, IR_MUL, x, hard_sigmoid_node(l, x, loc), loc), loc);
}

/* ---- normalisation ------------------------------------------------------------ */

/* Multiplies y by a learnable per-channel weight (1) and adds a bias (0),
 * both tagged "norm". */
static int norm_affine(Lower *l, int y, int axis, const char *name, bool bias, SrcLoc loc)
{
    Shape cs = vector_shape(shape_of(l, y)->dims[axis]);
    int w = create_param(l, arena_printf(l->arena, "%s.weight", name), "norm", cs,
                         IR_INIT_CONST, 1.0, loc);
    if (w < 0)
        return -1;
    y = binary(l, IR_MUL, y, per_channel(l, w, y, axis, loc), loc);
    if (!bias)
        return y;
    int b = create_param(l, arena_printf(l->arena, "%s.bias", name), "norm", cs,
                         IR_INIT_ZEROS, 0.0, loc);
    if (b < 0)
        return -1;
    return binary(l, IR_ADD, y, per_channel(l, b, y, axis, loc), loc);
}

/* x / sqrt(v + eps), with v in kept_shape form. */
static int divide_by_root(Lower *l, int x, int v, double eps, SrcLoc loc)
{
    int root = ir_unary(l->graph, IR_SQRT, binary(l, IR_ADD, v, constant_like(l, v, eps, loc), loc), loc);
    return binary(l, IR_DIV, x, broadcast_to(l, root, shape_of(l, x), loc), loc);
}

/* layer_norm(x, eps, channels_first, affine, name): normalises over the
 * channel axis with the biased variance, as torch's LayerNorm over the
 * last dimension. */
static Value bi_layer_norm(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "layer_norm", loc);
    double eps;
    bool channels_first, affine;
    if (x < 0 || !number_arg(&args[1], "eps", 0, 1, 1e-5, &eps) ||
        !bool_arg(&args[2], "channels_first", false, &channels_first) ||
        !bool_arg(&args[3], "affine", true, &affine))
        return val_error();
    int axis = channel_axis(l, x, channels_first, "layer_norm", loc);
    if (axis < 0 || (affine && !in_model(l, "layer_norm", loc)))
        return val_error();
    uint32_t axes = 1u << axis;
    Shape xs = *shape_of(l, x); /* a copy: mean_keep adds nodes */
    int centred = binary(l, IR_SUB, x, broadcast_to(l, mean_keep(l, x, axes, loc), &xs, loc), loc);
    int var = mean_keep(l, binary(l, IR_MUL, centred, centred, loc), axes, loc);
    int y = divide_by_root(l, centred, var, eps, loc);
    if (affine)
        y = norm_affine(l, y, axis, layer_name(l, "layer_norm", &args[4]), true, loc);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* rms_norm(x, eps, channels_first, affine, name): x / sqrt(mean(x^2) + eps)
 * times a weight, as torch's RMSNorm (which has no bias). */
static Value bi_rms_norm(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "rms_norm", loc);
    double eps;
    bool channels_first, affine;
    if (x < 0 || !number_arg(&args[1], "eps", 0, 1, 1e-6, &eps) ||
        !bool_arg(&args[2], "channels_first", false, &channels_first) ||
        !bool_arg(&args[3], "affine", true, &affine))
        return val_error();
    int axis = channel_axis(l, x, channels_first, "rms_norm", loc);
    if (axis < 0 || (affine && !in_model(l, "rms_norm", loc)))
        return val_error();
    int ms = mean_keep(l, binary(l, IR_MUL, x, x, loc), 1u << axis, loc);
    int y = divide_by_root(l, x, ms, eps, loc);
    if (affine)
        y = norm_affine(l, y, axis, layer_name(l, "rms_norm", &args[4]), false, loc);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* batch_norm(x, momentum, eps, affine, name) over x [N, C, ...]: in
 * training, normalise with the batch mean and biased variance per channel
 * and update the running statistics as torch's BatchNorm does,
 *     running_mean = (1 - momentum) running_mean + momentum mean
 *     running_var  = (1 - momentum) running_var + momentum var n / (n - 1)
 * with the unbiased variance (n values per channel; n / max(n - 1, 1), so
 * a single value per channel leaves the factor 1 where torch reports an
 * error). In evaluation, normalise with the running statistics. */
static Value bi_batch_norm(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "batch_norm", loc);
    double momentum, eps;
    bool affine;
    if (x < 0 || !number_arg(&args[1], "momentum", 0, 1, 0.1, &momentum) ||
        !number_arg(&args[2], "eps", 0, 1, 1e-5, &eps) ||
        !bool_arg(&args[3], "affine", true, &affine))
        return val_error();
    int axis = channel_axis(l, x, true, "batch_norm", loc);
    if (axis < 0 || !in_model(l, "batch_norm", loc))
        return val_error();

    IrGraph *g = l->graph;
    Shape xs = *shape_of(l, x);
    const char *name = layer_name(l, "batch_norm", &args[4]);
    Shape cs = vector_shape(xs.dims[axis]);
    int running_mean = create_buffer(l, arena_printf(l->arena, "%s.running_mean", name), cs,
                                     IR_INIT_ZEROS, 0.0, loc);
    int running_var = create_buffer(l, arena_printf(l->arena, "%s.running_var", name), cs,
                                    IR_INIT_CONST, 1.0, loc);
    if (running_mean < 0 || running_var < 0)
        return val_error();

    int y;
    if (l->training) {
        uint32_t axes = all_axes(&xs) & ~(1u << axis);
        int mean = mean_keep(l, x, axes, loc);
        int centred = binary(l, IR_SUB, x, broadcast_to(l, mean, &xs, loc), loc);
        int var = mean_keep(l, binary(l, IR_MUL, centred, centred, loc), axes, loc);
        y = divide_by_root(l, centred, var, eps, loc);

        int n = count_node(l, &xs, axes, loc);
        int one = ir_const(g, l->dtype, 1.0, loc);
        int bessel = binary(l, IR_DIV, n, binary(l, IR_MAX, binary(l, IR_SUB, n, one, loc), one, loc),
                         loc);
        int unbiased = binary(l, IR_MUL, ir_reshape(g, var, cs, loc), broadcast_to(l, bessel, &cs, loc),
                           loc);
        int batch_mean = ir_reshape(g, mean, cs, loc);
        int stat[2] = {running_mean, running_var}, value[2] = {batch_mean, unbiased};
        for (int i = 0; i < 2; i++) {
            int old = binary(l, IR_MUL, stat[i], constant_like(l, stat[i], 1.0 - momentum, loc), loc);
            int add = binary(l, IR_MUL, value[i], constant_like(l, value[i], momentum, loc), loc);
            ir_assign(g, ir_node(g, stat[i])->attr.var, binary(l, IR_ADD, old, add, loc), loc);
        }
    } else {
        int centred = binary(l, IR_SUB, x, per_channel(l, running_mean, x, axis, loc), loc);
        Shape column = kept_shape(&xs, all_axes(&xs) & ~(1u << axis));
        y = divide_by_root(l, centred, ir_reshape(g, running_var, column, loc), eps, loc);
    }
    if (affine)
        y = norm_affine(l, y, axis, name, true, loc);
    return y < 0 ? val_error() : val_tensor(y, loc);
}

/* grn(x, eps, channels_first, name): global response normalisation of
 * ConvNeXt V2 over x [N, H, W, C] (or [N, C, H, W]):
 *     g = ||x||_2 over the spatial axes, per sample and channel
 *     y = gamma (x g / (mean_c g + eps)) + beta + x
 * with gamma and beta zero-initialised and tagged "norm". */
static Value bi_grn(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "grn", loc);
    double eps;
    bool channels_first;
    if (x < 0 || !number_arg(&args[1], "eps", 0, 1, 1e-6, &eps) ||
        !bool_arg(&args[2], "channels_first", false, &channels_first))
        return val_error();
    Shape xs = *shape_of(l, x);
    int axis = channel_axis(l, x, channels_first, "grn", loc);
    if (axis < 0)
        return val_error();
    if (xs.rank < 3 || xs.batch_axis > 0) {
        diag_error(loc, "grn expects a batch of feature maps, [N, H, W, C] or [N, C, H, W], "
                   "but the input has shape %s", shape_text(l, &xs));
        return val_error();
    }
    if (!in_model(l, "grn", loc))
        return val_error();
    uint32_t spatial = all_axes(&xs) & ~(1u << axis) & ~1u;
    int norms = ir_unary(l->graph, IR_SQRT, sum_keep(l, binary(l, IR_MUL, x, x, loc), spatial, loc),
                         loc);
    int mean = mean_keep(l, norms, 1u << axis, loc);
    int denom = binary(l, IR_ADD, mean, constant_like(l, mean, eps, loc), loc);
    int scale = binary(l, IR_DIV, norms, broadcast_to(l, denom, shape_of(l, norms), loc), loc);
    int response = binary(l, IR_MUL, x, broadcast_to(l, scale, &xs, loc), loc);

    const char *name = layer_name(l, "grn", &args[3]);
    Shape cs = vector_shape(xs.dims[axis]);
    int gamma = create_param(l, arena_printf(l->arena, "%s.gamma", name), "norm", cs,
                             IR_INIT_ZEROS, 0.0, loc);
    int beta = create_param(l, arena_printf(l->arena, "%s.beta", name), "norm", cs,
                            IR_INIT_ZEROS, 0.0, loc);
    if (gamma < 0 || beta < 0)
        return val_error();
    int y = binary(l, IR_MUL, response, per_channel(l, gamma, x, axis, loc), loc);
    y = binary(l, IR_ADD, y, per_channel(l, beta, x, axis, loc), loc);
    return val_tensor(binary(l, IR_ADD, y, x, loc), loc);
}

/* A linear layer called `name` inside the current layer, through the
 * `linear` builtin. */
static int inner_linear(Lower *l, int x, int64_t out_features, const char *name, SrcLoc loc)
{
    const Builtin *linear = builtin_find("linear");
    Value args[4] = {val_tensor(x, loc), val_number((double)out_features, loc), val_none(loc),
                     val_none(loc)};
    args[3].kind = VAL_STRING;
    args[3].string = name;
    Value y = linear->fn(l, args, loc);
    return y.kind == VAL_TENSOR ? y.tensor : -1;
}

/* squeeze_excite(x, rd_ratio, name) over x [N, C, H, W], as timm's
 * SqueezeExcite: the spatial mean per channel, a linear layer to
 * max(1, round(C rd_ratio)) channels, ReLU, a linear layer back to C,
 * sigmoid, and x scaled per sample and channel by the result. */
static Value bi_squeeze_excite(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "squeeze_excite", loc);
    double ratio;
    if (x < 0 || !number_arg(&args[1], "rd_ratio", 1e-6, 1, 0.25, &ratio))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank != 4 || xs.batch_axis > 0) {
        diag_error(loc, "squeeze_excite expects feature maps [N, C, H, W], but the input has "
                   "shape %s", shape_text(l, &xs));
        return val_error();
    }
    if (!in_model(l, "squeeze_excite", loc))
        return val_error();
    IrGraph *g = l->graph;
    int64_t channels = xs.dims[1], reduced = (int64_t)llround((double)channels * ratio);
    if (reduced < 1)
        reduced = 1;

    Shape rows = shape_make(2, (int64_t[]){xs.dims[0], channels});
    rows.batch_axis = xs.batch_axis;
    int pooled = ir_reshape(g, mean_keep(l, x, 0xCu, loc), rows, loc);
    size_t saved = l->prefix.len;
    push_prefix(l, layer_name(l, "squeeze_excite", &args[2]));
    int h = inner_linear(l, pooled, reduced, "fc1", loc);
    h = h < 0 ? -1 : inner_linear(l, ir_unary(g, IR_RELU, h, loc), channels, "fc2", loc);
    pop_prefix(l, saved);
    if (h < 0)
        return val_error();
    int gate = ir_reshape(g, ir_unary(g, IR_SIGMOID, h, loc), kept_shape(&xs, 0xCu), loc);
    return val_tensor(binary(l, IR_MUL, x, broadcast_to(l, gate, &xs, loc), loc), loc);
}

/* ---- dropout --------------------------------------------------------------- */

/* Uniform numbers of shape `shape` for the random layer `name`. */
static int uniform_for(Lower *l, const char *name, Shape shape, SrcLoc loc)
{
    int key = create_buffer(l, arena_printf(l->arena, "%s.key", name), shape_scalar(),
                            IR_INIT_UNIFORM, 1.0, loc);
    if (key < 0)
        return -1;
    return ir_random(l->graph, key, lower_step_input(l, loc), shape, loc);
}

/* keep ? 1 / (1 - p) : 0, for u uniform in [0, 1). */
static int keep_scale(Lower *l, int u, double p, SrcLoc loc)
{
    int keep = binary(l, IR_GE, u, constant_like(l, u, p, loc), loc);
    return ir_select(l->graph, keep, constant_like(l, u, 1.0 / (1.0 - p), loc), constant_like(l, u, 0.0, loc),
                     loc);
}

/* dropout(x, p, name): zeroes each element with probability p and scales
 * the others by 1 / (1 - p), in training; the identity in evaluation. */
static Value bi_dropout(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "dropout", loc);
    double p;
    if (x < 0 || !probability_arg(&args[1], 0.5, &p) ||
        !in_model(l, "dropout", loc))
        return val_error();
    const char *name = layer_name(l, "dropout", &args[2]);
    if (!l->training || p == 0)
        return val_tensor(x, loc);
    int u = uniform_for(l, name, *shape_of(l, x), loc);
    if (u < 0)
        return val_error();
    return val_tensor(binary(l, IR_MUL, x, keep_scale(l, u, p, loc), loc), loc);
}

/* drop_path(x, p, name): stochastic depth, as timm's drop_path: zeroes a
 * whole sample with probability p and scales the others by 1 / (1 - p). */
static Value bi_drop_path(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "drop_path", loc);
    double p;
    if (x < 0 || !probability_arg(&args[1], 0.1, &p) ||
        !in_model(l, "drop_path", loc))
        return val_error();
    Shape xs = *shape_of(l, x);
    if (xs.rank < 1 || xs.batch_axis > 0) {
        diag_error(loc, "drop_path expects samples [N, ...], but the input has shape %s",
                   shape_text(l, &xs));
        return val_error();
    }
    const char *name = layer_name(l, "drop_path", &args[2]);
    if (!l->training || p == 0)
        return val_tensor(x, loc);
    Shape samples = kept_shape(&xs, all_axes(&xs) & ~1u);
    int u = uniform_for(l, name, samples, loc);
    if (u < 0)
        return val_error();
    return val_tensor(binary(l, IR_MUL, x, broadcast_to(l, keep_scale(l, u, p, loc), &xs, loc), loc),
                      loc);
}

/* ---- scales and parameters --------------------------------------------------- */

/* layer_scale(x, init, channels_first, name): x times a learnable
 * per-channel gamma, initialised to `init` and tagged "layer_scale". */
static Value bi_layer_scale(Lower *l, const Value *args, SrcLoc loc)
{
    int x = graph_tensor(l, &args[0], "layer_scale", loc);
    double init;
    bool channels_first;
    if (x < 0 || !number_arg(&args[1], "init", -1e30, 1e30, 1e-5, &init) ||
        !bool_arg(&args[2], "channels_first", false, &channels_first))
        return val_error();
    int axis = channel_axis(l, x, channels_first, "layer_scale", loc);
    if (axis < 0 || !in_model(l, "layer_scale", loc))
        return val_error();
    const char *name = layer_name(l, "layer_scale", &args[3]);
    int gamma = create_param(l, arena_printf(l->arena, "%s.gamma", name), "layer_scale",
                             vector_shape(shape_of(l, x)->dims[axis]), IR_INIT_CONST, init, loc);
    if (gamma < 0)
        return val_error();
    return val_tensor(binary(l, IR_MUL, x, per_channel(l, gamma, x, axis, loc), loc), loc);
}

/* parameter(shape, init, std, tag, name): a free-standing learnable tensor
 * (a class token, position embeddings) with init "zeros", "ones" or
 * "trunc_normal" (N(0, std^2) cut at [-2, 2], std 0.02 by default). */
static Value bi_parameter(Lower *l, const Value *args, SrcLoc loc)
{
    if (!in_model(l, "parameter", loc))
        return val_error();
    const Value *dims = &args[0];
    if (dims->kind != VAL_LIST && dims->kind != VAL_TUPLE) {
        diag_error(dims->loc, "the shape of parameter must be a list, such as [1, 1, 64]");
        return val_error();
    }
    if (dims->list.n > SHAPE_MAX_RANK) {
        diag_error(dims->loc, "tensors have at most %d dimensions", SHAPE_MAX_RANK);
        return val_error();
    }
    Shape s = shape_scalar();
    s.rank = dims->list.n;
    for (int i = 0; i < s.rank; i++)
        if (!val_to_int(&dims->list.items[i], "a parameter dimension", 1, SHAPE_MAX_ELEMENTS,
                        &s.dims[i]))
            return val_error();
    if (!check_tensor_size(l, &s, "the parameter", loc))
        return val_error();

    IrInit init = IR_INIT_ZEROS;
    double value = 0, std;
    const char *kind = is_none(&args[1]) ? "zeros"
                       : args[1].kind == VAL_STRING ? args[1].string : "";
    if (strcmp(kind, "ones") == 0) {
        init = IR_INIT_CONST;
        value = 1;
    } else if (strcmp(kind, "trunc_normal") == 0) {
        init = IR_INIT_TRUNC_NORMAL;
    } else if (strcmp(kind, "zeros") != 0) {
        diag_error(args[1].loc, "init must be \"zeros\", \"ones\" or \"trunc_normal\"");
        return val_error();
    }
    /* At most 1: the bounds stay 2 standard deviations or more away, so
     * redrawing is rare. */
    if (!number_arg(&args[2], "std", 0, 1, 0.02, &std))
        return val_error();
    if (init == IR_INIT_TRUNC_NORMAL)
        value = std;
    const char *tag = "parameter";
    if (!is_none(&args[3])) {
        if (args[3].kind != VAL_STRING || !args[3].string[0]) {
            diag_error(args[3].loc, "the tag of a parameter must be a string, such as "
                       "\"pos_embed\"");
            return val_error();
        }
        tag = args[3].string;
    }
    const char *name = layer_name(l, "parameter", &args[4]);
    int p = create_param(l, name, tag, s, init, value, loc);
    return p < 0 ? val_error() : val_tensor(p, loc);
}

/* embedding(ids, num, dim, name): rows of a learnable table [num, dim]
 * (trunc_normal(0.02), tag "embedding"), one per id, appended as a last
 * axis: ids [...] give [..., dim]. Float ids are truncated toward zero to
 * integers; an id outside [0, num) gives a zero row and no gradient. */
static Value bi_embedding(Lower *l, const Value *args, SrcLoc loc)
{
    if (!in_model(l, "embedding", loc))
        return val_error();
    int ids = tensor_arg(l, &args[0], "embedding", "ids");
    int64_t num, dim;
    if (ids < 0 || !val_to_int(&args[1], "num", 1, INT64_C(1) << 30, &num) ||
        !val_to_int(&args[2], "dim", 1, INT64_C(1) << 30, &dim))
        return val_error();
    IrGraph *g = l->graph;
    Shape is = *shape_of(l, ids);
    if (is.rank >= SHAPE_MAX_RANK) {
        diag_error(args[0].loc, "embedding adds an axis, so ids have at most %d dimensions, "
                   "but these have shape %s", SHAPE_MAX_RANK - 1, shape_text(l, &is));
        return val_error();
    }
    Shape table = shape_make(2, (int64_t[]){num, dim}), out = is;
    out.dims[out.rank++] = dim;
    if (!check_tensor_size(l, &table, "the table of embedding", loc) ||
        !check_tensor_size(l, &out, "the output of embedding", loc))
        return val_error();
    if (ir_node(g, ids)->dtype != DT_I32)
        ids = ir_cast(g, ids, DT_I32, loc);
    const char *name = layer_name(l, "embedding", &args[3]);
    int w = create_param(l, arena_printf(l->arena, "%s.weight", name), "embedding", table,
                         IR_INIT_TRUNC_NORMAL, 0.02, loc);
    if (w < 0)
        return val_error();
    return val_tensor(ir_gather(g, w, ids, loc), loc);
}

/* ---- losses ------------------------------------------------------------------ */

/* mse(a, b): the mean over every element of (a - b)^2, with broadcasting. */
static Value bi_mse(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "mse", loc))
        return val_error();
    int a = tensor_arg(l, &args[0], "mse", "a"), b = tensor_arg(l, &args[1], "mse", "b");
    if (a < 0 || b < 0)
        return val_error();
    Value va = val_tensor(a, args[0].loc), vb = val_tensor(b, args[1].loc);
    Value diff = tensor_binary(l, IR_SUB, "-", &va, &vb, loc);
    if (diff.kind != VAL_TENSOR)
        return val_error();
    IrGraph *g = l->graph;
    int d = diff.tensor;
    Shape ds = *shape_of(l, d);
    int total = ir_sum(g, binary(l, IR_MUL, d, d, loc), all_axes(&ds), loc);
    return val_tensor(binary(l, IR_DIV, total, count_node(l, &ds, all_axes(&ds), loc), loc), loc);
}

/* ---- the table --------------------------------------------------------------- */

const Builtin nn_builtins[] = {
    {"erf", PARAMS("x"), 1, bi_erf},
    {"sigmoid", PARAMS("x"), 1, bi_sigmoid},
    {"gelu", PARAMS("x", "approximate"), 1, bi_gelu},
    {"silu", PARAMS("x"), 1, bi_silu},
    {"hard_sigmoid", PARAMS("x"), 1, bi_hard_sigmoid},
    {"hard_swish", PARAMS("x"), 1, bi_hard_swish},
    {"layer_norm", PARAMS("x", "eps", "channels_first", "affine", "name"), 1, bi_layer_norm},
    {"rms_norm", PARAMS("x", "eps", "channels_first", "affine", "name"), 1, bi_rms_norm},
    {"batch_norm", PARAMS("x", "momentum", "eps", "affine", "name"), 1, bi_batch_norm},
    {"grn", PARAMS("x", "eps", "channels_first", "name"), 1, bi_grn},
    {"squeeze_excite", PARAMS("x", "rd_ratio", "name"), 1, bi_squeeze_excite},
    {"dropout", PARAMS("x", "p", "name"), 1, bi_dropout},
    {"drop_path", PARAMS("x", "p", "name"), 1, bi_drop_path},
    {"layer_scale", PARAMS("x", "init", "channels_first", "name"), 1, bi_layer_scale},
    {"parameter", PARAMS("shape", "init", "std", "tag", "name"), 1, bi_parameter},
    {"embedding", PARAMS("ids", "num", "dim", "name"), 3, bi_embedding},
    {"mse", PARAMS("a", "b"), 2, bi_mse},
};

const int nn_nbuiltins = (int)BOCB_ARRAY_LEN(nn_builtins);
