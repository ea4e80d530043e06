/* test_forward_grad.c - the forward-gradient estimator, in f64.
 *
 * A two-layer perceptron's mean cross-entropy gets both the estimate of
 * fwd_gradient_estimate and the exact gradient of ad_backward. The test
 * regenerates the Rademacher tangent v from the documented stream (the
 * parameter's tangent_key buffer, the step, Philox) and checks that the
 * estimate is (grad . v) v to 1e-10, and that a new step gives a new v.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/forward.h"
#include "../../compiler/interp.h"
#include "../../compiler/run.h"
#include "../../runtime/philox.h"

enum { NPARAMS = 3, BATCH = 3 };

typedef struct Mlp {
    Arena arena;
    IrModule module;
    IrGraph *estimate, *exact;
    int vars[NPARAMS];
    int estimates[NPARAMS], grads[NPARAMS];
} Mlp;

static int build(IrGraph *g, const int *vars)
{
    Shape xs = shape_make(2, (int64_t[]){1, 4}), ls = shape_make(1, (int64_t[]){1});
    xs.batch_axis = ls.batch_axis = 0;
    int x = ir_input(g, "x", DT_F64, xs, NO_LOC);
    int labels = ir_input(g, "labels", DT_I32, ls, NO_LOC);
    ir_input(g, "step", DT_F64, shape_scalar(), NO_LOC);
    int w1 = ir_var_read(g, vars[0], NO_LOC), b1 = ir_var_read(g, vars[1], NO_LOC);
    int w2 = ir_var_read(g, vars[2], NO_LOC);
    int h = ir_matmul(g, x, w1, false, true, NO_LOC);
    h = ir_binary(g, IR_ADD, h, ir_broadcast(g, b1, ir_node(g, h)->shape, NO_LOC), NO_LOC);
    h = ir_unary(g, IR_TANH, h, NO_LOC);
    int logits = ir_matmul(g, h, w2, false, true, NO_LOC);
    int total = ir_sum(g, ir_cross_entropy(g, logits, labels, NO_LOC), 1u, NO_LOC);
    return ir_binary(g, IR_DIV, total, ir_batch(g, DT_F64, NO_LOC), NO_LOC);
}

static void mlp_create(Mlp *m)
{
    memset(m, 0, sizeof *m);
    arena_init(&m->arena);
    ir_module_init(&m->module, &m->arena);
    const int64_t shapes[NPARAMS][2] = {{5, 4}, {5, 0}, {3, 5}};
    for (int p = 0; p < NPARAMS; p++) {
        char name[16];
        snprintf(name, sizeof name, "p%d", p);
        m->vars[p] = ir_module_add_var(&m->module, name, IR_VAR_PARAM, DT_F64,
                                       shape_make(shapes[p][1] ? 2 : 1, shapes[p]),
                                       IR_INIT_UNIFORM, 1.0, -1, NO_LOC);
    }
    m->estimate = ir_graph_new(&m->module, "estimate");
    int loss = build(m->estimate, m->vars);
    int step = -1;
    for (int i = 0; i < m->estimate->nnodes; i++)
        if (m->estimate->nodes[i].op == IR_INPUT &&
            strcmp(m->estimate->inputs[m->estimate->nodes[i].attr.input].name, "step") == 0)
            step = i;
    cr_assert(fwd_gradient_estimate(m->estimate, loss, step, m->vars, NPARAMS, m->estimates));

    m->exact = ir_graph_new(&m->module, "exact");
    loss = build(m->exact, m->vars);
    cr_assert(ad_backward(m->exact, loss, m->vars, NPARAMS, m->grads));
    for (int p = 0; p < NPARAMS; p++) {
        char name[16];
        snprintf(name, sizeof name, "g%d", p);
        cr_assert(m->estimates[p] >= 0 && m->grads[p] >= 0);
        ir_add_output(m->estimate, name, m->estimates[p]);
        ir_add_output(m->exact, name, m->grads[p]);
    }
    cr_assert(ir_verify(m->estimate) && ir_verify(m->exact));
}

static void mlp_destroy(Mlp *m)
{
    ir_graph_free(m->estimate);
    ir_graph_free(m->exact);
    ir_module_free(&m->module);
    arena_free(&m->arena);
}

static void bind(Interp *it, const IrGraph *g, const double *x, const int32_t *labels,
                 const double *step)
{
    interp_bind_input(it, ir_find_input(g, "x"), x);
    interp_bind_input(it, ir_find_input(g, "labels"), labels);
    interp_bind_input(it, ir_find_input(g, "step"), step);
}

Test(forward_grad, equals_jvp_times_tangent)
{
    static const double x[BATCH * 4] = {0.1, -0.4, 0.9, 0.3, -0.7, 0.2,
                                        0.5, -0.1, 0.8, -0.6, 0.4, 0.0};
    static const int32_t labels[BATCH] = {1, 0, 2};
    Mlp m;
    mlp_create(&m);
    RtVarStore store;
    create_var_store(&store, &m.module);
    rt_vars_reset(&store, 3);

    Interp *est = interp_create(m.estimate, &store), *exact = interp_create(m.exact, &store);
    double previous_first = 0;
    for (int s = 0; s < 2; s++) {
        double step = 10 + s;
        bind(est, m.estimate, x, labels, &step);
        bind(exact, m.exact, x, labels, &step);
        interp_run(est, BATCH);
        interp_run(exact, BATCH);

        /* v from the documented stream, and grad . v */
        double *v[NPARAMS];
        double dot = 0;
        int64_t positive = 0, total = 0;
        for (int p = 0; p < NPARAMS; p++) {
            char name[32];
            snprintf(name, sizeof name, "p%d.tangent_key", p);
            int key_var = ir_module_find_var(&m.module, name);
            cr_assert(key_var >= 0, "no variable %s", name);
            double key = *(const double *)rt_var_data(&store, key_var);
            int64_t n = store.vars[m.vars[p]].numel;
            v[p] = xcalloc((size_t)n, sizeof(double));
            snprintf(name, sizeof name, "g%d", p);
            const double *grad = interp_output(exact, name);
            for (int64_t j = 0; j < n; j++) {
                v[p][j] = philox_random_f64(key, step, (uint64_t)j) < 0.5 ? -1.0 : 1.0;
                dot += grad[j] * v[p][j];
                positive += v[p][j] > 0;
                total++;
            }
        }
        cr_expect(positive > 0 && positive < total, "v has a single sign: %lld of %lld",
                  (long long)positive, (long long)total);
        for (int p = 0; p < NPARAMS; p++) {
            char name[16];
            snprintf(name, sizeof name, "g%d", p);
            const double *got = interp_output(est, name);
            for (int64_t j = 0; j < store.vars[m.vars[p]].numel; j++) {
                double want = dot * v[p][j];
                cr_expect(fabs(got[j] - want) <= 1e-10 * fmax(1.0, fabs(want)),
                          "step %g, parameter %d element %lld: estimate %.15g, "
                          "(grad . v) v = %.15g", step, p, (long long)j, got[j], want);
            }
            free(v[p]);
        }
        double first = ((const double *)interp_output(est, "g0"))[0];
        if (s == 1)
            cr_expect(first != previous_first, "the estimate did not change with the step");
        previous_first = first;
    }
    interp_destroy(est);
    interp_destroy(exact);
    rt_vars_free(&store);
    mlp_destroy(&m);
}
