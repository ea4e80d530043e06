/* test_gradcheck.c - every VJP and JVP rule against central finite
 * differences, in f64.
 *
 * Each test builds a small graph y = op(params...), reduces it to the scalar
 * loss = sum(y * R) with a fixed random projection R (so every output
 * element matters with a different weight), differentiates it with
 * ad_backward, and runs both the gradient graph and the forward graph in
 * the interpreter. Every parameter element (or 48 of them, spread over
 * the tensor, for large ones) is compared with
 * (loss(p + h) - loss(p - h)) / 2h, h = 1e-5.
 *
 * The same test also pushes a random tangent v through y with fwd_jvp and
 * compares every element of the JVP with (y(p + h v) - y(p - h v)) / 2h,
 * and checks that JVP . R equals the gradient dotted with v. The ops of
 * gradient graphs have no VJP rule and get the JVP checks alone.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/driver.h"
#include "../../compiler/forward.h"
#include "../../compiler/interp.h"
#include "../../compiler/ir_spatial.h"
#include "../../compiler/lm.h"
#include "../../compiler/run.h"
#include "../../runtime/philox.h"

enum { MAX_PARAMS = 6, MAX_CHECKED = 48 };

typedef struct Check Check;

struct Check {
    Arena arena;
    IrModule module;
    IrGraph *g;
    int nparams;
    int vars[MAX_PARAMS];
    double low[MAX_PARAMS], high[MAX_PARAMS];
    int nbound;             /* graph inputs with fixed data */
    int bound_input[4];
    const void *bound_data[4];
    int64_t batch;          /* for graphs with a batch axis */
    double rel_tol;
    /* Called after the parameters get their random values. */
    void (*after_fill)(Check *c, RtVarStore *store);
};

static void check_init(Check *c)
{
    memset(c, 0, sizeof *c);
    arena_init(&c->arena);
    ir_module_init(&c->module, &c->arena);
    c->g = ir_graph_new(&c->module, "gradcheck");
    c->batch = 1;
    c->rel_tol = 1e-6;
}

static void check_free(Check *c)
{
    ir_graph_free(c->g);
    ir_module_free(&c->module);
    arena_free(&c->arena);
}

/* A differentiated parameter of shape dims, with values U(low, high). */
static int param(Check *c, double low, double high, int rank, const int64_t *dims)
{
    char name[32];
    snprintf(name, sizeof name, "p%d", c->nparams);
    int var = ir_module_add_var(&c->module, name, IR_VAR_PARAM, DT_F64, shape_make(rank, dims),
                                IR_INIT_ZEROS, 0, -1, NO_LOC);
    c->vars[c->nparams] = var;
    c->low[c->nparams] = low;
    c->high[c->nparams] = high;
    c->nparams++;
    return ir_var_read(c->g, var, NO_LOC);
}

#define DIMS(...) (sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), ((int64_t[]){__VA_ARGS__})

/* A graph input whose data stays fixed while parameters are perturbed. */
static int fixed_input(Check *c, const char *name, DType dt, Shape s, const void *data)
{
    int node = ir_input(c->g, name, dt, s, NO_LOC);
    c->bound_input[c->nbound] = ir_node(c->g, node)->attr.input;
    c->bound_data[c->nbound] = data;
    c->nbound++;
    return node;
}

static int labels(Check *c, int64_t n, const int32_t *values)
{
    return fixed_input(c, "labels", DT_I32, shape_make(1, &n), values);
}

static double run_loss(Interp *it)
{
    return *(const double *)interp_output(it, "loss");
}

static void fill_params(Check *c, RtVarStore *store)
{
    for (int p = 0; p < c->nparams; p++) {
        double *data = rt_var_data(store, c->vars[p]);
        const RtVar *v = &store->vars[c->vars[p]];
        philox_fill_uniform_f64(philox_key(1234, (uint32_t)p), data, v->numel, c->low[p],
                                c->high[p]);
    }
}

/* The tangents of the parameters: a fixed direction v_p, U(-1, 1). */
static double **make_tangents(Check *c, const RtVarStore *store)
{
    double **v = xcalloc(MAX_PARAMS, sizeof *v);
    for (int p = 0; p < c->nparams; p++) {
        int64_t numel = store->vars[c->vars[p]].numel;
        v[p] = xcalloc((size_t)numel + 1, sizeof(double));
        philox_fill_uniform_f64(philox_key(77, (uint32_t)p), v[p], numel, -1.0, 1.0);
    }
    return v;
}

static void free_tangents(double **v)
{
    for (int p = 0; p < MAX_PARAMS; p++)
        free(v[p]);
    free(v);
}

/* Moves every parameter by s * v_p. */
static void move_params(Check *c, RtVarStore *store, double *const *v, double s)
{
    for (int p = 0; p < c->nparams; p++) {
        double *value = rt_var_data(store, c->vars[p]);
        for (int64_t i = 0; i < store->vars[c->vars[p]].numel; i++)
            value[i] += s * v[p][i];
    }
}

/* Checks the JVP of output "y" of `tangent_graph` (a copy of the forward
 * graph) along v against the central difference
 * (y(p + h v) - y(p - h v)) / 2h of the forward graph `fwd`, element by
 * element. Returns sum(jvp * R), which equals the gradient of the loss
 * dotted with v. */
static double check_jvp(Check *c, IrGraph *tangent_graph, Interp *fwd, int y,
                        RtVarStore *store, double *const *v, const double *r)
{
    IrGraph *g = tangent_graph;
    int tangents[MAX_PARAMS];
    for (int p = 0; p < c->nparams; p++) {
        char name[16];
        snprintf(name, sizeof name, "tangent%d", p);
        const IrVar *var = &c->module.vars[c->vars[p]];
        tangents[p] = ir_input(g, name, DT_F64, var->shape, NO_LOC);
    }
    int ty;
    cr_assert(fwd_jvp(g, c->vars, tangents, c->nparams, &y, 1, &ty), "no tangent graph");
    cr_assert(ty >= 0, "the output gets no tangent");
    ir_add_output(g, "ty", ty);
    cr_assert(ir_verify(g));

    Interp *it = interp_create(g, store);
    for (int p = 0; p < c->nparams; p++)
        interp_bind_input(it, ir_node(g, tangents[p])->attr.input, v[p]);
    interp_bind_input(it, ir_find_input(g, "proj"), r);
    for (int i = 0; i < c->nbound; i++)
        interp_bind_input(it, c->bound_input[i], c->bound_data[i]);
    interp_run(it, c->batch);

    Shape ys = ir_node(g, y)->shape;
    int64_t n = shape_numel(&ys, c->batch);
    double *jvp = xcalloc((size_t)n + 1, sizeof(double));
    double *up = xcalloc((size_t)n + 1, sizeof(double));
    memcpy(jvp, interp_output(it, "ty"), (size_t)n * sizeof(double));

    const double h = 1e-5;
    move_params(c, store, v, h);
    interp_run(fwd, c->batch);
    memcpy(up, interp_output(fwd, "y"), (size_t)n * sizeof(double));
    move_params(c, store, v, -2 * h);
    interp_run(fwd, c->batch);
    const double *down = interp_output(fwd, "y");
    double projected = 0;
    for (int64_t i = 0; i < n; i++) {
        double fd = (up[i] - down[i]) / (2 * h);
        double scale = fmax(1.0, fmax(fabs(fd), fabs(jvp[i])));
        cr_expect(fabs(fd - jvp[i]) <= c->rel_tol * scale,
                  "output element %lld: JVP %.12g, finite difference %.12g", (long long)i,
                  jvp[i], fd);
        projected += jvp[i] * r[i];
    }
    move_params(c, store, v, h);

    interp_destroy(it);
    free(jvp);
    free(up);
    return projected;
}

/* Differentiates sum(y * R) in reverse mode (when `vjp`) and y in forward
 * mode, and compares both with finite differences and with each other. */
static void finish_modes(Check *c, int y, bool vjp)
{
    IrGraph *g = c->g;
    Shape ys = ir_node(g, y)->shape;

    int proj = ir_input(g, "proj", DT_F64, ys, NO_LOC);
    int prod = ir_binary(g, IR_MUL, y, proj, NO_LOC);
    uint32_t all = ys.rank ? (uint32_t)((1u << ys.rank) - 1) : 0;
    int loss = ir_sum(g, prod, all, NO_LOC);
    ir_add_output(g, "loss", loss);
    ir_add_output(g, "y", y);
    IrGraph *forward = ir_graph_clone(g, "forward");
    IrGraph *tangent = ir_graph_clone(g, "tangent");

    int grads[MAX_PARAMS];
    if (vjp) {
        cr_assert(ad_backward(g, loss, c->vars, c->nparams, grads), "no gradient graph");
        for (int p = 0; p < c->nparams; p++) {
            cr_assert(grads[p] >= 0, "parameter %d gets no gradient", p);
            char name[16];
            snprintf(name, sizeof name, "grad%d", p);
            ir_add_output(g, name, grads[p]);
        }
    }
    cr_assert(ir_verify(g));
    cr_assert(ir_verify(forward));

    RtVarStore store;
    create_var_store(&store, &c->module);
    fill_params(c, &store);
    if (c->after_fill)
        c->after_fill(c, &store);
    int64_t nproj = shape_numel(&ys, c->batch);
    double *r = xcalloc((size_t)nproj + 1, sizeof(double));
    philox_fill_uniform_f64(philox_key(99, 0), r, nproj, -1.0, 1.0);

    Interp *full = interp_create(g, &store), *fwd = interp_create(forward, &store);
    int proj_input = ir_node(g, proj)->attr.input;
    interp_bind_input(full, proj_input, r);
    interp_bind_input(fwd, proj_input, r);
    for (int i = 0; i < c->nbound; i++) {
        interp_bind_input(full, c->bound_input[i], c->bound_data[i]);
        interp_bind_input(fwd, c->bound_input[i], c->bound_data[i]);
    }
    interp_run(full, c->batch);
    double base = run_loss(full);
    cr_assert(isfinite(base), "loss is not finite: %g", base);

    double **v = make_tangents(c, &store);
    double jvp_dot_r = check_jvp(c, tangent, fwd, y, &store, v, r);

    const double h = 1e-5;
    double grad_dot_v = 0;
    for (int p = 0; vjp && p < c->nparams; p++) {
        char name[16];
        snprintf(name, sizeof name, "grad%d", p);
        const double *ad = interp_output(full, name);
        double *value = rt_var_data(&store, c->vars[p]);
        int64_t numel = store.vars[c->vars[p]].numel;
        for (int64_t i = 0; i < numel; i++)
            grad_dot_v += ad[i] * v[p][i];
        int64_t stride = numel > MAX_CHECKED ? numel / MAX_CHECKED : 1;
        for (int64_t i = 0; i < numel; i += stride) {
            double saved = value[i];
            value[i] = saved + h;
            interp_run(fwd, c->batch);
            double up = run_loss(fwd);
            value[i] = saved - h;
            interp_run(fwd, c->batch);
            double down = run_loss(fwd);
            value[i] = saved;
            double fd = (up - down) / (2 * h);
            double scale = fmax(1.0, fmax(fabs(fd), fabs(ad[i])));
            cr_expect(fabs(fd - ad[i]) <= c->rel_tol * scale,
                      "param %d element %lld: autodiff %.12g, finite difference %.12g", p,
                      (long long)i, ad[i], fd);
        }
    }
    /* Both modes differentiate the same linearisation: <J v, R> = <v, J^T R>. */
    if (vjp)
        cr_expect(fabs(jvp_dot_r - grad_dot_v) <= 1e-9 * fmax(1.0, fabs(grad_dot_v)),
                  "JVP . R = %.15g but VJP . v = %.15g", jvp_dot_r, grad_dot_v);

    free_tangents(v);
    interp_destroy(full);
    interp_destroy(fwd);
    ir_graph_free(forward);
    ir_graph_free(tangent);
    rt_vars_free(&store);
    free(r);
}

/* Checks the VJP and the JVP rules of y's ops. */
static void finish(Check *c, int y)
{
    finish_modes(c, y, true);
}

/* Checks the JVP rules alone, for the ops that only gradient graphs
 * contain, which have no VJP rule. */
static void finish_jvp(Check *c, int y)
{
    finish_modes(c, y, false);
}

/* ---- elementwise ---------------------------------------------------------- */

static void unary_case(IrOp op, double low, double high)
{
    Check c;
    check_init(&c);
    int x = param(&c, low, high, DIMS(3, 5));
    finish(&c, ir_unary(c.g, op, x, NO_LOC));
    check_free(&c);
}

Test(gradcheck, neg) { unary_case(IR_NEG, -2, 2); }
Test(gradcheck, abs) { unary_case(IR_ABS, -2, 2); }
Test(gradcheck, sqrt) { unary_case(IR_SQRT, 0.5, 3); }
Test(gradcheck, exp) { unary_case(IR_EXP, -2, 2); }
Test(gradcheck, log) { unary_case(IR_LOG, 0.5, 3); }
Test(gradcheck, tanh) { unary_case(IR_TANH, -2, 2); }
Test(gradcheck, relu) { unary_case(IR_RELU, -2, 2); }
Test(gradcheck, erf) { unary_case(IR_ERF, -2.5, 2.5); }
Test(gradcheck, sigmoid) { unary_case(IR_SIGMOID, -4, 4); }

static void binary_case(IrOp op, double low_a, double high_a, double low_b, double high_b)
{
    Check c;
    check_init(&c);
    int a = param(&c, low_a, high_a, DIMS(4, 3));
    int b = param(&c, low_b, high_b, DIMS(4, 3));
    finish(&c, ir_binary(c.g, op, a, b, NO_LOC));
    check_free(&c);
}

Test(gradcheck, add) { binary_case(IR_ADD, -2, 2, -2, 2); }
Test(gradcheck, sub) { binary_case(IR_SUB, -2, 2, -2, 2); }
Test(gradcheck, mul) { binary_case(IR_MUL, -2, 2, -2, 2); }
Test(gradcheck, div) { binary_case(IR_DIV, -2, 2, 0.5, 2); }
Test(gradcheck, pow) { binary_case(IR_POW, 0.5, 2, -1, 2); }
Test(gradcheck, max) { binary_case(IR_MAX, -2, 2, -2, 2); }
Test(gradcheck, min) { binary_case(IR_MIN, -2, 2, -2, 2); }

Test(gradcheck, select)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(4, 3));
    int b = param(&c, -2, 2, DIMS(4, 3));
    int cond = ir_binary(c.g, IR_GT, a, b, NO_LOC);
    int sq = ir_binary(c.g, IR_MUL, a, a, NO_LOC);
    finish(&c, ir_select(c.g, cond, sq, b, NO_LOC));
    check_free(&c);
}

Test(gradcheck, same_operand_twice)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(6));
    finish(&c, ir_binary(c.g, IR_MUL, a, a, NO_LOC));
    check_free(&c);
}

/* ---- shapes and reductions ------------------------------------------------ */

Test(gradcheck, broadcast_row)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(3));
    finish(&c, ir_broadcast(c.g, a, shape_make(DIMS(4, 3)), NO_LOC));
    check_free(&c);
}

Test(gradcheck, broadcast_column)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(4, 1));
    finish(&c, ir_broadcast(c.g, a, shape_make(DIMS(4, 3)), NO_LOC));
    check_free(&c);
}

Test(gradcheck, broadcast_scalar)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, 0, NULL);
    finish(&c, ir_broadcast(c.g, a, shape_make(DIMS(2, 3)), NO_LOC));
    check_free(&c);
}

Test(gradcheck, broadcast_over_batch)
{
    Check c;
    check_init(&c);
    c.batch = 3;
    int a = param(&c, -2, 2, DIMS(5));
    Shape to = shape_make(DIMS(1, 5));
    to.batch_axis = 0;
    int b = ir_broadcast(c.g, a, to, NO_LOC);
    /* Divide by the batch size, as a mean over the batch does. */
    int n = ir_broadcast(c.g, ir_batch(c.g, DT_F64, NO_LOC), to, NO_LOC);
    finish(&c, ir_binary(c.g, IR_DIV, b, n, NO_LOC));
    check_free(&c);
}

Test(gradcheck, reshape)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(2, 6));
    int r = ir_reshape(c.g, a, shape_make(DIMS(3, 4)), NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, r, r, NO_LOC));
    check_free(&c);
}

static void sum_case(uint32_t axes)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(3, 4, 5));
    int sq = ir_binary(c.g, IR_MUL, a, a, NO_LOC);
    finish(&c, ir_sum(c.g, sq, axes, NO_LOC));
    check_free(&c);
}

Test(gradcheck, sum_first_axis) { sum_case(1u); }
Test(gradcheck, sum_middle_axis) { sum_case(2u); }
Test(gradcheck, sum_last_axes) { sum_case(6u); }
Test(gradcheck, sum_all_axes) { sum_case(7u); }

/* ---- library ops ---------------------------------------------------------- */

static void matmul_case(bool ta, bool tb)
{
    Check c;
    check_init(&c);
    int64_t m = 3, k = 4, n = 5;
    int a = ta ? param(&c, -1, 1, DIMS(k, m)) : param(&c, -1, 1, DIMS(m, k));
    int b = tb ? param(&c, -1, 1, DIMS(n, k)) : param(&c, -1, 1, DIMS(k, n));
    finish(&c, ir_matmul(c.g, a, b, ta, tb, NO_LOC));
    check_free(&c);
}

Test(gradcheck, matmul) { matmul_case(false, false); }
Test(gradcheck, matmul_trans_a) { matmul_case(true, false); }
Test(gradcheck, matmul_trans_b) { matmul_case(false, true); }
Test(gradcheck, matmul_trans_both) { matmul_case(true, true); }

static void conv_case(int64_t cout, int64_t stride, int64_t pad, int64_t dilation,
                      int64_t groups)
{
    Check c;
    check_init(&c);
    int64_t cin = 4;
    int x = param(&c, -1, 1, DIMS(2, cin, 6, 5));
    int w = param(&c, -1, 1, DIMS(cout, cin / groups, 3, 2));
    IrConvAttr attr = {.stride = {stride, stride}, .pad = {pad, pad},
                       .dilation = {dilation, dilation}, .groups = groups};
    finish(&c, ir_conv2d(c.g, x, w, attr, NO_LOC));
    check_free(&c);
}

Test(gradcheck, conv2d) { conv_case(6, 1, 0, 1, 1); }
Test(gradcheck, conv2d_stride_padding) { conv_case(6, 2, 1, 1, 1); }
Test(gradcheck, conv2d_dilation) { conv_case(6, 1, 2, 2, 1); }
Test(gradcheck, conv2d_groups) { conv_case(6, 1, 1, 1, 2); }
Test(gradcheck, conv2d_depthwise) { conv_case(4, 1, 1, 1, 4); }

static void pool_case(int64_t kernel, int64_t stride, int64_t pad)
{
    Check c;
    check_init(&c);
    int x = param(&c, -1, 1, DIMS(2, 3, 6, 7));
    IrPoolAttr attr = {.kernel = {kernel, kernel}, .stride = {stride, stride},
                       .pad = {pad, pad}};
    finish(&c, ir_maxpool2d(c.g, x, attr, NO_LOC));
    check_free(&c);
}

Test(gradcheck, max_pool2d) { pool_case(2, 2, 0); }
Test(gradcheck, max_pool2d_overlapping_padded) { pool_case(3, 2, 1); }

/* Ties have no derivative; the rule sends each window's gradient to its
 * first maximum in row-major order, and nowhere else. */
Test(gradcheck, max_pool2d_ties_first_element)
{
    Check c;
    check_init(&c);
    int x = param(&c, 0, 0, DIMS(1, 1, 2, 4));
    IrPoolAttr attr = {.kernel = {2, 2}, .stride = {2, 2}, .pad = {0, 0}};
    int y = ir_maxpool2d(c.g, x, attr, NO_LOC);
    int loss = ir_sum(c.g, y, 15u, NO_LOC);
    ir_add_output(c.g, "loss", loss);
    int grad;
    cr_assert(ad_backward(c.g, loss, c.vars, 1, &grad));
    ir_add_output(c.g, "grad", grad);

    RtVarStore store;
    create_var_store(&store, &c.module);
    /* Window 1 is all 7s; window 2 has a tie between its second and
     * fourth elements. */
    const double values[8] = {7, 7, 1, 5, 7, 7, 2, 5};
    memcpy(rt_var_data(&store, c.vars[0]), values, sizeof values);
    Interp *it = interp_create(c.g, &store);
    interp_run(it, 1);
    const double *g = interp_output(it, "grad");
    const double expected[8] = {1, 0, 0, 1, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(g[i], expected[i], "element %d: gradient %g, expected %g", i, g[i],
                     expected[i]);
    interp_destroy(it);
    rt_vars_free(&store);
    check_free(&c);
}

Test(gradcheck, cross_entropy)
{
    static const int32_t y[4] = {0, 3, 4, 1};
    Check c;
    check_init(&c);
    int logits = param(&c, -3, 3, DIMS(4, 5));
    finish(&c, ir_cross_entropy(c.g, logits, labels(&c, 4, y), NO_LOC));
    check_free(&c);
}

/* Logits near 1e4 overflow exp() unless the row maximum is subtracted. */
Test(gradcheck, cross_entropy_large_logits)
{
    static const int32_t y[3] = {2, 0, 1};
    Check c;
    check_init(&c);
    c.rel_tol = 1e-5;
    int logits = param(&c, 1e4 - 2, 1e4 + 2, DIMS(3, 4));
    finish(&c, ir_cross_entropy(c.g, logits, labels(&c, 3, y), NO_LOC));
    check_free(&c);
}

/* A two-layer perceptron with a mean cross-entropy over a symbolic batch:
 * the rules composed, as the compiler composes them for a model. */
Test(gradcheck, mlp_composite)
{
    static const int32_t y[3] = {1, 0, 2};
    static const double xv[12] = {0.1, -0.4, 0.9, 0.3, -0.7, 0.2,
                                  0.5, -0.1, 0.8, -0.6, 0.4, 0.0};
    Check c;
    check_init(&c);
    c.batch = 3;
    IrGraph *g = c.g;
    int w1 = param(&c, -1, 1, DIMS(5, 4));
    int b1 = param(&c, -1, 1, DIMS(5));
    int w2 = param(&c, -1, 1, DIMS(3, 5));
    Shape xs = shape_make(DIMS(1, 4)), ls = shape_make(DIMS(1));
    xs.batch_axis = ls.batch_axis = 0;
    int x = fixed_input(&c, "x", DT_F64, xs, xv);
    int lab = fixed_input(&c, "labels", DT_I32, ls, y);

    int h = ir_matmul(g, x, w1, false, true, NO_LOC);
    h = ir_binary(g, IR_ADD, h, ir_broadcast(g, b1, ir_node(g, h)->shape, NO_LOC), NO_LOC);
    h = ir_unary(g, IR_RELU, ir_unary(g, IR_TANH, h, NO_LOC), NO_LOC);
    int logits = ir_matmul(g, h, w2, false, true, NO_LOC);
    int ce = ir_cross_entropy(g, logits, lab, NO_LOC);
    int total = ir_sum(g, ce, 1u, NO_LOC);
    int mean = ir_binary(g, IR_DIV, total, ir_batch(g, DT_F64, NO_LOC), NO_LOC);
    finish(&c, mean);
    check_free(&c);
}

/* ---- builtins through the language ---------------------------------------- */

/* Labels and per-class losses of the runtime loss op, with label smoothing
 * and as mean squared error. */
static void loss_case(IrLossAttr attr)
{
    static const int32_t y[4] = {0, 3, 4, 1};
    Check c;
    check_init(&c);
    int logits = param(&c, -3, 3, DIMS(4, 5));
    finish(&c, ir_loss(c.g, logits, labels(&c, 4, y), attr, NO_LOC));
    check_free(&c);
}

Test(gradcheck, cross_entropy_label_smoothing)
{
    loss_case((IrLossAttr){.kind = IR_LOSS_CROSS_ENTROPY, .label_smoothing = 0.1});
}

Test(gradcheck, cross_entropy_full_smoothing)
{
    loss_case((IrLossAttr){.kind = IR_LOSS_CROSS_ENTROPY, .label_smoothing = 1.0});
}

Test(gradcheck, mse_loss)
{
    loss_case((IrLossAttr){.kind = IR_LOSS_MSE});
}

/* Repeated ids sum their rows' gradients; an id outside the table gets a
 * zero row and contributes nothing. */
Test(gradcheck, gather_repeated_ids)
{
    static const int32_t ids[8] = {1, 3, 1, 0, 4, 7, -1, 1};
    Check c;
    check_init(&c);
    int table = param(&c, -2, 2, DIMS(5, 3));
    int in = fixed_input(&c, "ids", DT_I32, shape_make(DIMS(2, 4)), ids);
    int rows = ir_gather(c.g, table, in, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, rows, rows, NO_LOC));
    check_free(&c);
}

typedef struct Lang {
    Program *program;
    Lower lower;
    double step; /* the value bound to the graph's step input */
} Lang;

/* Instantiates `model m(x: SHAPE) { return BODY }` on parameter p0 of
 * shape dims (values in [low, high]) and makes every parameter the model
 * creates a checked parameter too, with values in [0.5, 1.5]. */
static int lang_model(Check *c, Lang *lang, const char *shape, const char *body,
                      bool training, double low, double high, int rank, const int64_t *dims)
{
    memset(lang, 0, sizeof *lang);
    char *text = xasprintf("model m(x: %s) {\n  return %s\n}\n", shape, body);
    SearchPath search = {.stdlib_dir = "stdlib"};
    lang->program = load_program_string("gradcheck.bocb", text, &search, &c->arena);
    free(text);
    cr_assert(lang->program && diag_error_count() == 0, "the model did not parse");
    Lower *l = &lang->lower;
    lower_init(l, lang->program, &c->arena);
    l->graph = c->g;
    l->module = &c->module;
    l->dtype = DT_F64;
    l->training = training;

    Value x = val_tensor(param(c, low, high, rank, dims), NO_LOC);
    int first_new = c->module.nvars;
    Value y = instantiate_model(l, find_decl(l, "m", DECL_MODEL), &x, NULL, NO_LOC);
    cr_assert(y.kind == VAL_TENSOR && diag_error_count() == 0, "the model did not compile");
    for (int v = first_new; v < c->module.nvars; v++) {
        if (c->module.vars[v].kind != IR_VAR_PARAM)
            continue;
        cr_assert(c->nparams < MAX_PARAMS);
        c->vars[c->nparams] = v;
        c->low[c->nparams] = 0.5;
        c->high[c->nparams] = 1.5;
        c->nparams++;
    }
    int step = ir_find_input(c->g, "step");
    if (step >= 0) {
        lang->step = 7;
        c->bound_input[c->nbound] = step;
        c->bound_data[c->nbound] = &lang->step;
        c->nbound++;
    }
    return y.tensor;
}

static void lang_free(Lang *lang)
{
    lower_free(&lang->lower);
}

static void lang_case(const char *shape, const char *body, bool training, int rank,
                      const int64_t *dims)
{
    Check c;
    Lang lang;
    check_init(&c);
    finish(&c, lang_model(&c, &lang, shape, body, training, -2, 2, rank, dims));
    lang_free(&lang);
    check_free(&c);
}

Test(gradcheck, gelu) { lang_case("[3, 5]", "gelu(x)", false, DIMS(3, 5)); }
Test(gradcheck, gelu_tanh) { lang_case("[3, 5]", "gelu(x, approximate = \"tanh\")", false, DIMS(3, 5)); }
Test(gradcheck, silu) { lang_case("[3, 5]", "silu(x)", false, DIMS(3, 5)); }
/* Away from the kinks at -3 and 3, where finite differences straddle them. */
Test(gradcheck, hard_swish) { lang_case("[3, 5]", "hard_swish(x * 2.5 + 0.1)", false, DIMS(3, 5)); }
Test(gradcheck, hard_sigmoid) { lang_case("[3, 5]", "hard_sigmoid(x * 2.5 + 0.1)", false, DIMS(3, 5)); }

/* Norm weights and biases are broadcast over rows: their gradients are sums. */
Test(gradcheck, layer_norm_channels_last) { lang_case("[4, 6]", "layer_norm(x)", false, DIMS(4, 6)); }
Test(gradcheck, layer_norm_channels_first)
{
    lang_case("[2, 3, 2, 2]", "layer_norm(x, channels_first = true)", false, DIMS(2, 3, 2, 2));
}
Test(gradcheck, rms_norm) { lang_case("[4, 6]", "rms_norm(x)", false, DIMS(4, 6)); }
Test(gradcheck, rms_norm_channels_first)
{
    lang_case("[2, 3, 2, 2]", "rms_norm(x, channels_first = true)", false, DIMS(2, 3, 2, 2));
}
Test(gradcheck, batch_norm_training) { lang_case("[3, 2, 2, 2]", "batch_norm(x)", true, DIMS(3, 2, 2, 2)); }
Test(gradcheck, batch_norm_rows) { lang_case("[5, 3]", "batch_norm(x)", true, DIMS(5, 3)); }
/* Evaluation reads the running statistics (their initial 0 and 1). */
Test(gradcheck, batch_norm_eval) { lang_case("[3, 2, 2, 2]", "batch_norm(x)", false, DIMS(3, 2, 2, 2)); }
Test(gradcheck, grn_channels_last) { lang_case("[2, 2, 2, 3]", "grn(x)", false, DIMS(2, 2, 2, 3)); }
Test(gradcheck, grn_channels_first)
{
    lang_case("[2, 3, 2, 2]", "grn(x, channels_first = true)", false, DIMS(2, 3, 2, 2));
}
Test(gradcheck, squeeze_excite)
{
    lang_case("[2, 4, 2, 3]", "squeeze_excite(x, rd_ratio = 0.5)", false, DIMS(2, 4, 2, 3));
}
/* The whole-tensor extremes and the root mean square of the rules. */
Test(gradcheck, max_whole) { lang_case("[3, 5]", "max(x) * x", false, DIMS(3, 5)); }
Test(gradcheck, min_whole) { lang_case("[3, 5]", "min(x) * x", false, DIMS(3, 5)); }
Test(gradcheck, rms_whole) { lang_case("[3, 5]", "rms(x) * x", false, DIMS(3, 5)); }
Test(gradcheck, rms_rows)
{
    lang_case("[3, 5]", "rms(x, -1, keepdims = true) * x", false, DIMS(3, 5));
}
Test(gradcheck, rms_columns) { lang_case("[3, 5]", "rms(x, 0) + x", false, DIMS(3, 5)); }
Test(gradcheck, layer_scale) { lang_case("[4, 6]", "layer_scale(x, init = 0.5)", false, DIMS(4, 6)); }
Test(gradcheck, parameter)
{
    lang_case("[4, 6]", "x * parameter([1, 6], init = \"ones\", tag = \"pos_embed\")", false,
              DIMS(4, 6));
}

/* Channel 1 of p0 set to one value: zero variance in every sample. */
static void constant_channel(Check *c, RtVarStore *store)
{
    double *x = rt_var_data(store, c->vars[0]);
    for (int n = 0; n < 3; n++)
        for (int i = 0; i < 4; i++)
            x[(n * 3 + 1) * 4 + i] = 0.3;
}

Test(gradcheck, batch_norm_zero_variance_channel)
{
    Check c;
    Lang lang;
    check_init(&c);
    c.after_fill = constant_channel;
    c.rel_tol = 1e-5; /* 1 / sqrt(eps) amplifies the rounding of the differences */
    finish(&c, lang_model(&c, &lang, "[3, 3, 2, 2]", "batch_norm(x)", true, -2, 2,
                          DIMS(3, 3, 2, 2)));
    lang_free(&lang);
    check_free(&c);
}

/* With the key and the step fixed, the mask is fixed and the gradient is
 * the mask times 1 / (1 - p). */
Test(gradcheck, dropout_fixed_mask) { lang_case("[4, 6]", "dropout(x, p = 0.4)", true, DIMS(4, 6)); }
Test(gradcheck, drop_path_fixed_mask)
{
    lang_case("[6, 2, 3]", "drop_path(x, p = 0.5)", true, DIMS(6, 2, 3));
}
/* ---- spatial ops and attention -------------------------------------------- */

Test(gradcheck, permute)
{
    Check c;
    check_init(&c);
    int x = param(&c, -2, 2, DIMS(2, 3, 4, 5));
    static const int perm[4] = {2, 0, 3, 1};
    int y = ir_permute(c.g, x, perm, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, y, y, NO_LOC));
    check_free(&c);
}

/* A permute that moves the batch axis, then a product with a parameter. */
Test(gradcheck, permute_batch_axis)
{
    static const double xv[24] = {0.3, -0.2, 0.9, 0.1, -0.5, 0.7, 0.4, -0.8,
                                  0.6, 0.2, -0.1, 0.5, -0.9, 0.8, 0.0, -0.3,
                                  0.2, 0.7, -0.6, 0.1, 0.4, -0.4, 0.3, 0.9};
    Check c;
    check_init(&c);
    c.batch = 2;
    Shape xs = shape_make(DIMS(1, 3, 4));
    xs.batch_axis = 0;
    int x = fixed_input(&c, "x", DT_F64, xs, xv);
    int p = param(&c, -1, 1, DIMS(3, 4));
    int h = ir_binary(c.g, IR_MUL, x, ir_broadcast(c.g, p, xs, NO_LOC), NO_LOC);
    static const int perm[3] = {2, 0, 1};
    finish(&c, ir_permute(c.g, h, perm, NO_LOC));
    check_free(&c);
}

static void slice_case(int axis, int64_t start, int64_t len)
{
    Check c;
    check_init(&c);
    int x = param(&c, -2, 2, DIMS(3, 5, 4));
    int y = ir_slice(c.g, x, axis, start, len, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, y, y, NO_LOC));
    check_free(&c);
}

Test(gradcheck, slice_head) { slice_case(1, 0, 2); }
Test(gradcheck, slice_middle) { slice_case(1, 1, 3); }
Test(gradcheck, slice_tail) { slice_case(2, 3, 1); }
Test(gradcheck, slice_first_axis) { slice_case(0, 1, 2); }

Test(gradcheck, concat)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(2, 3, 4));
    int b = param(&c, -2, 2, DIMS(2, 5, 4));
    int y = ir_concat(c.g, a, b, 1, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, y, y, NO_LOC));
    check_free(&c);
}

/* The same tensor on both sides: both adjoints accumulate into it. */
Test(gradcheck, concat_same_operand_last_axis)
{
    Check c;
    check_init(&c);
    int a = param(&c, -2, 2, DIMS(3, 2));
    int y = ir_concat(c.g, a, a, 1, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, y, y, NO_LOC));
    check_free(&c);
}

Test(gradcheck, roll_both_ways)
{
    Check c;
    check_init(&c);
    int x = param(&c, -2, 2, DIMS(4, 5));
    int y = ir_roll(c.g, ir_roll(c.g, x, 1, 2, NO_LOC), 0, -3, NO_LOC);
    finish(&c, ir_binary(c.g, IR_MUL, y, x, NO_LOC));
    check_free(&c);
}

static void bmm_case(bool ta, bool tb)
{
    Check c;
    check_init(&c);
    int64_t m = 3, k = 4, n = 2;
    int a = ta ? param(&c, -1, 1, DIMS(2, 2, k, m)) : param(&c, -1, 1, DIMS(2, 2, m, k));
    int b = tb ? param(&c, -1, 1, DIMS(2, 2, n, k)) : param(&c, -1, 1, DIMS(2, 2, k, n));
    finish(&c, ir_bmm(c.g, a, b, ta, tb, NO_LOC));
    check_free(&c);
}

Test(gradcheck, bmm) { bmm_case(false, false); }
Test(gradcheck, bmm_trans_a) { bmm_case(true, false); }
Test(gradcheck, bmm_trans_b) { bmm_case(false, true); }
Test(gradcheck, bmm_trans_both) { bmm_case(true, true); }

/* One matrix shared by every product: broadcast over the leading axes,
 * so its gradient is the sum over them. */
Test(gradcheck, bmm_broadcast_leading)
{
    Check c;
    check_init(&c);
    int a = param(&c, -1, 1, DIMS(3, 2, 4, 5));
    int b = param(&c, -1, 1, DIMS(5, 2));
    int bb = ir_broadcast(c.g, b, shape_make(DIMS(3, 2, 5, 2)), NO_LOC);
    finish(&c, ir_bmm(c.g, a, bb, false, false, NO_LOC));
    check_free(&c);
}

static void avgpool_case(int64_t kh, int64_t kw, int64_t stride, int64_t pad, bool include)
{
    Check c;
    check_init(&c);
    int x = param(&c, -1, 1, DIMS(2, 3, 6, 7));
    IrPoolAttr attr = {.kernel = {kh, kw}, .stride = {stride, stride}, .pad = {pad, pad}};
    finish(&c, ir_avgpool2d(c.g, x, attr, include, NO_LOC));
    check_free(&c);
}

Test(gradcheck, avg_pool2d) { avgpool_case(2, 2, 2, 0, true); }
Test(gradcheck, avg_pool2d_padded_include) { avgpool_case(3, 3, 2, 1, true); }
Test(gradcheck, avg_pool2d_padded_exclude) { avgpool_case(3, 3, 1, 1, false); }
Test(gradcheck, avg_pool2d_rectangular) { avgpool_case(3, 2, 1, 1, true); }

Test(gradcheck, max_pool2d_rectangular_strided)
{
    Check c;
    check_init(&c);
    int x = param(&c, -1, 1, DIMS(2, 2, 7, 6));
    IrPoolAttr attr = {.kernel = {3, 2}, .stride = {2, 1}, .pad = {1, 1}};
    finish(&c, ir_maxpool2d(c.g, x, attr, NO_LOC));
    check_free(&c);
}

static void reduce_max_case(uint32_t axes)
{
    Check c;
    check_init(&c);
    int x = param(&c, -2, 2, DIMS(3, 4, 5));
    finish(&c, ir_reduce_max(c.g, x, axes, NO_LOC));
    check_free(&c);
}

Test(gradcheck, reduce_max_last_axis) { reduce_max_case(4u); }
Test(gradcheck, reduce_max_outer_axes) { reduce_max_case(5u); }
Test(gradcheck, reduce_max_all_axes) { reduce_max_case(7u); }

/* Ties: the gradient goes to the first maximum in row-major order of the
 * reduced axes only. */
Test(gradcheck, reduce_max_ties_first_element)
{
    Check c;
    check_init(&c);
    int x = param(&c, 0, 0, DIMS(2, 2, 3));
    int y = ir_reduce_max(c.g, x, 5u, NO_LOC); /* axes 0 and 2 -> [2] */
    int loss = ir_sum(c.g, y, 1u, NO_LOC);
    ir_add_output(c.g, "loss", loss);
    int grad;
    cr_assert(ad_backward(c.g, loss, c.vars, 1, &grad));
    ir_add_output(c.g, "grad", grad);

    RtVarStore store;
    create_var_store(&store, &c.module);
    /* x[a][b][k]; output b = max over a and k. For b = 0 the maximum 4
     * occurs at (0, 0, 2) and (1, 0, 0); for b = 1 at (0, 1, 1) and (1, 1, 1). */
    const double values[12] = {1, 2, 4, 0, 3, 3,
                               4, 1, 4, 2, 3, 1};
    memcpy(rt_var_data(&store, c.vars[0]), values, sizeof values);
    Interp *it = interp_create(c.g, &store);
    interp_run(it, 1);
    const double *g = interp_output(it, "grad");
    const double expected[12] = {0, 0, 1, 0, 1, 0,
                                 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 12; i++)
        cr_expect_eq(g[i], expected[i], "element %d: gradient %g, expected %g", i, g[i],
                     expected[i]);
    interp_destroy(it);
    rt_vars_free(&store);
    check_free(&c);
}

static void softmax_case(int axis, bool log)
{
    Check c;
    check_init(&c);
    int x = param(&c, -3, 3, DIMS(3, 4, 5));
    finish(&c, ir_softmax(c.g, x, axis, log, NO_LOC));
    check_free(&c);
}

Test(gradcheck, softmax_last_axis) { softmax_case(2, false); }
Test(gradcheck, softmax_middle_axis) { softmax_case(1, false); }
Test(gradcheck, log_softmax_last_axis) { softmax_case(2, true); }
Test(gradcheck, log_softmax_first_axis) { softmax_case(0, true); }

/* Inputs near 1e4 overflow exp() unless the maximum is subtracted. */
Test(gradcheck, log_softmax_large_inputs)
{
    Check c;
    check_init(&c);
    c.rel_tol = 1e-5;
    int x = param(&c, 1e4 - 2, 1e4 + 2, DIMS(3, 4));
    finish(&c, ir_softmax(c.g, x, 1, true, NO_LOC));
    check_free(&c);
}

static void attention_case(bool causal, bool bias)
{
    Check c;
    check_init(&c);
    int q = param(&c, -1, 1, DIMS(2, 2, 4, 3));
    int k = param(&c, -1, 1, DIMS(2, 2, 4, 3));
    int v = param(&c, -1, 1, DIMS(2, 2, 4, 3));
    int b = bias ? param(&c, -1, 1, DIMS(2, 4, 4)) : -1;
    finish(&c, ir_attention(c.g, q, k, v, 0.5, b, causal, NO_LOC));
    check_free(&c);
}

Test(gradcheck, attention) { attention_case(false, false); }
Test(gradcheck, attention_causal) { attention_case(true, false); }
Test(gradcheck, attention_causal_bias) { attention_case(true, true); }

/* Partition into windows, shift, attend within windows with the shifted
 * mask and a relative position bias table, and reverse: Swin's block. */
Test(gradcheck, shifted_window_attention)
{
    Check c;
    check_init(&c);
    IrGraph *g = c.g;
    int64_t w = 2, shift = 1;
    int x = param(&c, -1, 1, DIMS(1, 4, 4, 3));
    int table = param(&c, -1, 1, DIMS(9, 1));
    int s = ir_roll(g, ir_roll(g, x, 1, -shift, NO_LOC), 2, -shift, NO_LOC);
    int win = ir_window_partition(g, s, w, NO_LOC);                 /* [4, 4, 3] */
    int heads = ir_reshape(g, win, shape_make(DIMS(4, 1, 4, 3)), NO_LOC);
    int mask = ir_shifted_window_mask(g, DT_F64, 4, 4, w, shift, NO_LOC); /* [4, 4, 4] */
    int hot = ir_relative_position_onehot(g, DT_F64, w, NO_LOC);    /* [16, 9] */
    int rel = ir_reshape(g, ir_matmul(g, hot, table, false, false, NO_LOC),
                         shape_make(DIMS(1, 4, 4)), NO_LOC);
    int bias = ir_binary(g, IR_ADD, ir_reshape(g, mask, shape_make(DIMS(4, 1, 4, 4)), NO_LOC),
                         ir_broadcast(g, rel, shape_make(DIMS(4, 1, 4, 4)), NO_LOC), NO_LOC);
    int o = ir_attention(g, heads, heads, heads, 0.7, bias, false, NO_LOC);
    int back = ir_window_reverse(g, ir_reshape(g, o, shape_make(DIMS(4, 4, 3)), NO_LOC), 4, 4,
                                 w, NO_LOC);
    finish(&c, ir_roll(g, ir_roll(g, back, 1, shift, NO_LOC), 2, shift, NO_LOC));
    check_free(&c);
}

Test(gradcheck, conv2d_depthwise_stride2_padded) { conv_case(4, 2, 1, 1, 4); }
Test(gradcheck, conv2d_depthwise_multiplier) { conv_case(8, 2, 1, 1, 4); }
Test(gradcheck, conv2d_depthwise_dilated) { conv_case(4, 1, 2, 2, 4); }

/* ---- ops of gradient graphs: JVP rules alone ------------------------------ */

static void conv_grad_case(bool weight, int64_t stride, int64_t pad, int64_t groups)
{
    Check c;
    check_init(&c);
    int64_t cin = 4, cout = 6;
    IrConvAttr attr = {.stride = {stride, stride}, .pad = {pad, pad}, .dilation = {1, 1},
                       .groups = groups};
    Shape xs = shape_make(DIMS(2, cin, 6, 5)), ws = shape_make(DIMS(cout, cin / groups, 3, 2));
    Shape ys;
    const char *why;
    cr_assert(ir_conv2d_shape(&xs, &ws, &attr, &ys, &why));
    int dy = param(&c, -1, 1, ys.rank, ys.dims);
    int y;
    if (weight) {
        int x = param(&c, -1, 1, xs.rank, xs.dims);
        y = ir_conv2d_grad_weight(c.g, x, dy, ws, attr, NO_LOC);
    } else {
        int w = param(&c, -1, 1, ws.rank, ws.dims);
        y = ir_conv2d_grad_input(c.g, dy, w, xs, attr, NO_LOC);
    }
    finish_jvp(&c, y);
    check_free(&c);
}

Test(jvpcheck, conv2d_grad_input) { conv_grad_case(false, 1, 0, 1); }
Test(jvpcheck, conv2d_grad_input_strided_grouped) { conv_grad_case(false, 2, 1, 2); }
Test(jvpcheck, conv2d_grad_weight) { conv_grad_case(true, 1, 0, 1); }
Test(jvpcheck, conv2d_grad_weight_strided_grouped) { conv_grad_case(true, 2, 1, 2); }

Test(jvpcheck, max_pool2d_grad)
{
    Check c;
    check_init(&c);
    IrPoolAttr attr = {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1}};
    int x = param(&c, -1, 1, DIMS(2, 3, 6, 7));
    Shape ys;
    const char *why;
    cr_assert(ir_pool2d_shape(&ir_node(c.g, x)->shape, &attr, &ys, &why));
    int dy = param(&c, -1, 1, ys.rank, ys.dims);
    finish_jvp(&c, ir_maxpool2d_grad(c.g, x, dy, attr, NO_LOC));
    check_free(&c);
}

static void loss_grad_case(IrLossAttr attr)
{
    static const int32_t y[4] = {0, 3, 4, 1};
    Check c;
    check_init(&c);
    int logits = param(&c, -3, 3, DIMS(4, 5));
    int dloss = param(&c, -1, 1, DIMS(4));
    int d = ir_cross_entropy_grad(c.g, logits, labels(&c, 4, y), dloss, NO_LOC);
    ir_node(c.g, d)->attr.loss = attr;
    finish_jvp(&c, d);
    check_free(&c);
}

Test(jvpcheck, cross_entropy_grad) { loss_grad_case((IrLossAttr){0}); }
Test(jvpcheck, cross_entropy_grad_label_smoothing)
{
    loss_grad_case((IrLossAttr){.kind = IR_LOSS_CROSS_ENTROPY, .label_smoothing = 0.1});
}
Test(jvpcheck, mse_loss_grad) { loss_grad_case((IrLossAttr){.kind = IR_LOSS_MSE}); }

Test(jvpcheck, scatter_add)
{
    static const int32_t ids[8] = {1, 3, 1, 0, 4, 7, -1, 1};
    Check c;
    check_init(&c);
    int dy = param(&c, -2, 2, DIMS(2, 4, 3));
    int in = fixed_input(&c, "ids", DT_I32, shape_make(DIMS(2, 4)), ids);
    int table = ir_scatter_add(c.g, in, dy, shape_make(DIMS(5, 3)), NO_LOC);
    finish_jvp(&c, ir_binary(c.g, IR_MUL, table, table, NO_LOC));
    check_free(&c);
}

Test(jvpcheck, avg_pool2d_grad)
{
    Check c;
    check_init(&c);
    int x = param(&c, -1, 1, DIMS(2, 3, 6, 7));
    IrPoolAttr attr = {.kernel = {3, 3}, .stride = {2, 2}, .pad = {1, 1}};
    int y = ir_avgpool2d(c.g, x, attr, false, NO_LOC);
    Shape ys = ir_node(c.g, y)->shape;
    int dy = param(&c, -1, 1, ys.rank, ys.dims);
    finish_jvp(&c, ir_avgpool2d_grad(c.g, dy, ir_node(c.g, x)->shape,
                                     &ir_node(c.g, y)->attr.spatial, NO_LOC));
    check_free(&c);
}

Test(jvpcheck, reduce_max_grad)
{
    Check c;
    check_init(&c);
    int x = param(&c, -2, 2, DIMS(3, 4, 5));
    int dy = param(&c, -1, 1, DIMS(4));
    finish_jvp(&c, ir_reduce_max_grad(c.g, x, dy, 5u, NO_LOC));
    check_free(&c);
}

/* Runs the JVP of `y` (built over parameter 0 of c) with tangent `v` and
 * compares it with `expected`, exactly: tie cases, where finite
 * differences have no meaning. */
static void expect_tangent(Check *c, int y, const double *x, const double *v,
                           const double *expected, int64_t n)
{
    IrGraph *g = c->g;
    const IrVar *var = &c->module.vars[c->vars[0]];
    int t = ir_input(g, "tangent", DT_F64, var->shape, NO_LOC);
    int ty;
    cr_assert(fwd_jvp(g, c->vars, &t, 1, &y, 1, &ty));
    ir_add_output(g, "ty", ty);
    RtVarStore store;
    create_var_store(&store, &c->module);
    memcpy(rt_var_data(&store, c->vars[0]), x,
           (size_t)shape_numel(&var->shape, 1) * sizeof(double));
    Interp *it = interp_create(g, &store);
    interp_bind_input(it, ir_node(g, t)->attr.input, v);
    interp_run(it, 1);
    const double *got = interp_output(it, "ty");
    for (int64_t i = 0; i < n; i++)
        cr_expect_eq(got[i], expected[i], "element %lld: tangent %g, expected %g",
                     (long long)i, got[i], expected[i]);
    interp_destroy(it);
    rt_vars_free(&store);
}

/* Overlapping windows with ties: each window takes the tangent of its
 * first maximum in row-major order, as the VJP rule sends its gradient. */
Test(jvpcheck, max_pool2d_ties_first_element)
{
    Check c;
    check_init(&c);
    int x = param(&c, 0, 0, DIMS(1, 1, 2, 4));
    IrPoolAttr attr = {.kernel = {2, 2}, .stride = {1, 1}, .pad = {0, 0}};
    int y = ir_maxpool2d(c.g, x, attr, NO_LOC);
    /* Windows: columns 0-1 (all 7), 1-2 (7 at (0,1) and (1,1)), 2-3
     * (5 at (0,3) and (1,3)). */
    const double values[8] = {7, 7, 1, 5, 7, 7, 2, 5};
    const double tangent[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const double expected[3] = {1, 2, 4};
    expect_tangent(&c, y, values, tangent, expected, 3);
    check_free(&c);
}

Test(jvpcheck, reduce_max_ties_first_element)
{
    Check c;
    check_init(&c);
    int x = param(&c, 0, 0, DIMS(2, 2, 3));
    int y = ir_reduce_max(c.g, x, 5u, NO_LOC);
    const double values[12] = {1, 2, 4, 0, 3, 3,
                               4, 1, 4, 2, 3, 1};
    const double tangent[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    const double expected[2] = {3, 5};
    expect_tangent(&c, y, values, tangent, expected, 2);
    check_free(&c);
}

/* ---- per-token cross-entropy (lm.c) ---------------------------------------- */

/* Targets with padding (0), ids outside [0, V) and valid ids: only the
 * valid ones carry a gradient, and the mean divides by their count. */
static const double token_targets[6] = {3, 0, 4, 1, 7, -1};

Test(gradcheck, token_loss_masked)
{
    Check c;
    check_init(&c);
    int logits = param(&c, -3, 3, DIMS(2, 3, 5));
    int t = fixed_input(&c, "targets", DT_F64, shape_make(DIMS(2, 3)), token_targets);
    finish(&c, lower_token_loss(c.g, logits, t, 0, NO_LOC));
    check_free(&c);
}

/* Logits [B, 3, 5] from a product with a parameter, over a symbolic batch
 * of 2, so the token rows fold into the batch axis. */
Test(gradcheck, token_loss_batch_axis)
{
    static const double xv[24] = {0.1, -0.4, 0.9, 0.3, -0.7, 0.2, 0.5, -0.1,
                                  0.8, -0.6, 0.4, 0.0, 0.3, 0.3, -0.2, 0.6,
                                  -0.9, 0.1, 0.7, -0.5, 0.2, 0.4, -0.3, 0.8};
    Check c;
    check_init(&c);
    c.batch = 2;
    IrGraph *g = c.g;
    int w = param(&c, -1, 1, DIMS(5, 4));
    Shape xs = shape_make(DIMS(1, 3, 4)), ts = shape_make(DIMS(1, 3));
    Shape rows = shape_make(DIMS(3, 4)), ls = shape_make(DIMS(1, 3, 5));
    xs.batch_axis = ts.batch_axis = rows.batch_axis = ls.batch_axis = 0;
    int x = fixed_input(&c, "x", DT_F64, xs, xv);
    int t = fixed_input(&c, "targets", DT_F64, ts, token_targets);
    int y = ir_matmul(g, ir_reshape(g, x, rows, NO_LOC), w, false, true, NO_LOC);
    finish(&c, lower_token_loss(g, ir_reshape(g, y, ls, NO_LOC), t, 0, NO_LOC));
    check_free(&c);
}

/* The value: mean over the three valid targets of logsumexp - logit. */
Test(gradcheck, token_loss_value)
{
    Check c;
    check_init(&c);
    int logits = param(&c, -3, 3, DIMS(2, 3, 5));
    int t = fixed_input(&c, "targets", DT_F64, shape_make(DIMS(2, 3)), token_targets);
    ir_add_output(c.g, "loss", lower_token_loss(c.g, logits, t, 0, NO_LOC));
    RtVarStore store;
    create_var_store(&store, &c.module);
    fill_params(&c, &store);
    Interp *it = interp_create(c.g, &store);
    interp_bind_input(it, c.bound_input[0], token_targets);
    interp_run(it, 1);
    const double *z = rt_var_data(&store, c.vars[0]);
    double total = 0;
    int valid = 0;
    for (int r = 0; r < 6; r++) {
        int target = (int)token_targets[r];
        if (target <= 0 || target >= 5)
            continue;
        double sum = 0;
        for (int j = 0; j < 5; j++)
            sum += exp(z[r * 5 + j]);
        total += log(sum) - z[r * 5 + target];
        valid++;
    }
    cr_assert_eq(valid, 3);
    double got = run_loss(it);
    cr_expect(fabs(got - total / valid) <= 1e-12, "loss %.15g, expected %.15g", got,
              total / valid);
    interp_destroy(it);
    rt_vars_free(&store);
    check_free(&c);
}
