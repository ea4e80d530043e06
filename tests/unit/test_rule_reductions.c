/* test_rule_reductions.c - the reductions of optimizer rules against a
 * reference written here.
 *
 * A rule that uses every reduction an optimizer can apply to its tensors
 * (the whole-tensor max, min, sum, norm and rms, a row rms and a column
 * mean kept as broadcastable [R, 1] and [1, C] tensors), together with
 * sign, abs, clamp, where, a state and the step number, is expanded for
 * one [R, C] parameter whose gradient is a graph input. Several steps run
 * in the interpreter (f64) and, scheduled and JIT-compiled, in f32; both
 * are compared with the same update computed in double by plain loops.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../runtime/philox.h"

enum { R = 5, C = 6, N = R * C, STEPS = 4 };

static const char rule_source[] =
    "optimizer reductions(lr = 0.1, decay = 0.5) {\n"
    "  state m = 0\n"
    "  m = decay * m + grad / max(abs(grad))\n"
    "  row = rms(grad, -1, keepdims = true)\n"
    "  col = mean(abs(grad), 0, keepdims = true)\n"
    "  tilt = clamp(sum(grad) / norm(grad), -0.5, 0.5)\n"
    "  shift = where(grad > 0, row, col) + min(grad) + rms(param) * sign(grad)\n"
    "  param -= lr * (m + shift + tilt) / step\n"
    "}\n"
    "experiment e { optimizer = reductions(lr = 0.05) }\n";

static const double LR = 0.05, DECAY = 0.5;

typedef struct Setup {
    Arena arena;
    Program *program;
    Lower lower;
    IrModule module;
    IrGraph *g;
    int param;
    double grads[STEPS][N];
    double init[N];
} Setup;

static void setup(Setup *s, DType dtype)
{
    memset(s, 0, sizeof *s);
    arena_init(&s->arena);
    SearchPath search = {0};
    s->program = load_program_string("rule.bocb", rule_source, &search, &s->arena);
    cr_assert(s->program && diag_error_count() == 0, "the rule did not load");
    lower_init(&s->lower, s->program, &s->arena);

    const Decl *exp = s->program->main->decls[1];
    s->lower.mode = MODE_EXPERIMENT;
    Value v = eval_expr(&s->lower, exp->body.stmts[0]->assign.value);
    cr_assert(v.kind == VAL_CONFIGURED, "the optimizer did not configure");

    ir_module_init(&s->module, &s->arena);
    s->g = ir_graph_new(&s->module, "update");
    int64_t dims[2] = {R, C};
    Shape shape = shape_make(2, dims);
    s->param = ir_module_add_var(&s->module, "w", IR_VAR_PARAM, dtype, shape, IR_INIT_ZEROS,
                                 0, -1, NO_LOC);
    int grad = ir_input(s->g, "grad", dtype, shape, NO_LOC);
    int lr = ir_input(s->g, "lr", dtype, shape_scalar(), NO_LOC);
    int step = ir_input(s->g, "step", dtype, shape_scalar(), NO_LOC);
    s->lower.graph = s->g;
    s->lower.module = &s->module;
    s->lower.dtype = dtype;
    cr_assert(expand_optimizer(&s->lower, v.configured, s->param, grad, lr, step));
    cr_assert(diag_error_count() == 0, "the rule did not expand");
    ir_dce(s->g);
    cr_assert(ir_verify(s->g));

    for (int t = 0; t < STEPS; t++)
        philox_fill_uniform_f64(philox_key(11, (uint32_t)t), s->grads[t], N, -1, 1);
    philox_fill_uniform_f64(philox_key(12, 0), s->init, N, -1, 1);
}

static void teardown(Setup *s)
{
    ir_graph_free(s->g);
    ir_module_free(&s->module);
    lower_free(&s->lower);
    arena_free(&s->arena);
}

/* The rule of rule_source, step by step, in double. */
static void reference(const Setup *s, double *w)
{
    double m[N] = {0};
    memcpy(w, s->init, sizeof(double) * N);
    for (int t = 0; t < STEPS; t++) {
        const double *g = s->grads[t];
        double gmax = 0, gmin = INFINITY, sum = 0, sumsq = 0, wsq = 0;
        double row[R] = {0}, col[C] = {0};
        for (int i = 0; i < N; i++) {
            gmax = fmax(gmax, fabs(g[i]));
            gmin = fmin(gmin, g[i]);
            sum += g[i];
            sumsq += g[i] * g[i];
            wsq += w[i] * w[i];
            row[i / C] += g[i] * g[i];
            col[i % C] += fabs(g[i]);
        }
        double tilt = fmin(fmax(sum / sqrt(sumsq), -0.5), 0.5);
        double w_rms = sqrt(wsq / N);
        for (int i = 0; i < N; i++) {
            m[i] = DECAY * m[i] + g[i] / gmax;
            double selected = g[i] > 0 ? sqrt(row[i / C] / C) : col[i % C] / R;
            double sign = g[i] > 0 ? 1 : g[i] < 0 ? -1 : 0;
            double shift = selected + gmin + w_rms * sign;
            w[i] -= LR * (m[i] + shift + tilt) / (t + 1);
        }
    }
}

static void run_interp(Setup *s, double *out)
{
    RtVarStore store;
    create_var_store(&store, &s->module);
    rt_vars_reset(&store, 0);
    memcpy(rt_var_data(&store, s->param), s->init, sizeof s->init);
    Interp *it = interp_create(s->g, &store);
    double grad[N], lr = LR, step;
    interp_bind_input(it, ir_find_input(s->g, "grad"), grad);
    interp_bind_input(it, ir_find_input(s->g, "lr"), &lr);
    interp_bind_input(it, ir_find_input(s->g, "step"), &step);
    for (int t = 0; t < STEPS; t++) {
        memcpy(grad, s->grads[t], sizeof grad);
        step = t + 1;
        interp_run(it, 1);
    }
    memcpy(out, rt_var_data(&store, s->param), sizeof(double) * N);
    interp_destroy(it);
    rt_vars_free(&store);
}

static void run_jit(Setup *s, double *out)
{
    RtVarStore store;
    create_var_store(&store, &s->module);
    rt_vars_reset(&store, 0);
    float *w = rt_var_data(&store, s->param);
    for (int i = 0; i < N; i++)
        w[i] = (float)s->init[i];

    Schedule sched;
    schedule_graph(s->g, 1, &sched);
    char *error = NULL;
    Jit *jit = jit_create(&error);
    cr_assert(jit, "%s", error);
    cr_assert(jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels, &error),
              "%s", error);
    RtExec *e = rt_exec_create(&sched.program, &store);
    for (int t = 0; t < STEPS; t++) {
        float *grad = rt_exec_input(e, "grad");
        for (int i = 0; i < N; i++)
            grad[i] = (float)s->grads[t][i];
        *(float *)rt_exec_input(e, "lr") = (float)LR;
        *(float *)rt_exec_input(e, "step") = (float)(t + 1);
        rt_exec_run(e, 1);
    }
    for (int i = 0; i < N; i++)
        out[i] = w[i];
    rt_exec_destroy(e);
    schedule_free(&sched);
    jit_destroy(jit);
    rt_vars_free(&store);
}

static void expect_close(const double *got, const double *want, double tol,
                         const char *backend)
{
    for (int i = 0; i < N; i++) {
        double err = fabs(got[i] - want[i]) / fmax(1.0, fabs(want[i]));
        cr_expect(err <= tol, "%s: element %d is %.12g, reference %.12g", backend, i,
                  got[i], want[i]);
    }
}

Test(rule_reductions, interpreter)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F64);
    reference(&s, want);
    run_interp(&s, got);
    expect_close(got, want, 1e-12, "interpreter");
    teardown(&s);
}

Test(rule_reductions, jit)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F32);
    reference(&s, want);
    run_jit(&s, got);
    expect_close(got, want, 1e-5, "JIT");
    teardown(&s);
}

/* The parameter moved: a rule that lowered to nothing would fail here. */
Test(rule_reductions, moves)
{
    double want[N];
    Setup s;
    setup(&s, DT_F64);
    reference(&s, want);
    double moved = 0;
    for (int i = 0; i < N; i++)
        moved += fabs(want[i] - s.init[i]);
    cr_expect(moved > 0.1, "the reference barely moves (%g)", moved);
    teardown(&s);
}
