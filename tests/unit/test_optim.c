/* test_optim.c - the stdlib optimizers against reference updates.
 *
 * Each test expands an optimizer from stdlib/optim for one parameter whose
 * gradient is a graph input, and feeds it a fixed sequence of gradients.
 * After several steps the parameter is compared with a reference written
 * here from the update equations of torch.optim.SGD and torch.optim.AdamW
 * (PyTorch 1.13), computed in double. The interpreter
 * runs the update in f64 (tolerance 1e-12); the JIT runs it in f32 through
 * the scheduler's in-place update kernel (tolerance 1e-5).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../runtime/philox.h"

enum { N = 37, STEPS = 6 };

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

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

/* Loads the optimizer library and builds param -= rule(grad) for `spec`,
 * e.g. "adamw(lr = 0.01, weight_decay = 0.1)". */
static void setup(Setup *s, DType dtype, const char *spec)
{
    memset(s, 0, sizeof *s);
    arena_init(&s->arena);
    char *text = xasprintf("import \"std/optim\"\nexperiment e { optimizer = %s }\n", spec);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    s->program = load_program_string("optim-test.bocb", text, &search, &s->arena);
    free(text);
    cr_assert(s->program && diag_error_count() == 0, "the stdlib did not load");
    lower_init(&s->lower, s->program, &s->arena);

    /* Evaluate the experiment's `optimizer = ...` to get the configured rule. */
    const Decl *exp = s->program->main->decls[1];
    s->lower.mode = MODE_EXPERIMENT;
    Value v = eval_expr(&s->lower, exp->body.stmts[0]->assign.value);
    cr_assert(v.kind == VAL_CONFIGURED, "optimizer did not configure");

    ir_module_init(&s->module, &s->arena);
    s->g = ir_graph_new(&s->module, "update");
    int64_t n = N;
    s->param = ir_module_add_var(&s->module, "w", IR_VAR_PARAM, dtype, shape_make(1, &n),
                                 IR_INIT_ZEROS, 0, -1, NO_LOC);
    int grad = ir_input(s->g, "grad", dtype, shape_make(1, &n), NO_LOC);
    int lr = ir_input(s->g, "lr", dtype, shape_scalar(), NO_LOC);
    int step = ir_input(s->g, "step", dtype, shape_scalar(), NO_LOC);
    s->lower.graph = s->g;
    s->lower.module = &s->module;
    s->lower.dtype = dtype;
    cr_assert(expand_optimizer(&s->lower, v.configured, s->param, grad, lr, step));
    ir_dce(s->g);
    cr_assert(ir_verify(s->g));

    for (int t = 0; t < STEPS; t++)
        philox_fill_uniform_f64(philox_key(7, (uint32_t)t), s->grads[t], N, -1, 1);
    philox_fill_uniform_f64(philox_key(8, 0), s->init, N, -1, 1);
}

static void teardown(Setup *s)
{
    ir_graph_free(s->g);
    ir_module_free(&s->module);
    lower_free(&s->lower);
    arena_free(&s->arena);
}

/* Runs STEPS updates in the interpreter (f64) and returns the parameter. */
static void run_interp(Setup *s, double lr, double *out)
{
    RtVarStore store;
    create_var_store(&store, &s->module);
    rt_vars_reset(&store, 0);
    memcpy(rt_var_data(&store, s->param), s->init, sizeof s->init);
    Interp *it = interp_create(s->g, &store);
    double grad[N], lr_value = lr, step_value;
    interp_bind_input(it, ir_find_input(s->g, "grad"), grad);
    interp_bind_input(it, ir_find_input(s->g, "lr"), &lr_value);
    interp_bind_input(it, ir_find_input(s->g, "step"), &step_value);
    for (int t = 0; t < STEPS; t++) {
        memcpy(grad, s->grads[t], sizeof grad);
        step_value = t + 1;
        interp_run(it, 1);
    }
    memcpy(out, rt_var_data(&store, s->param), sizeof(double) * N);
    interp_destroy(it);
    rt_vars_free(&store);
}

/* Runs STEPS updates as a scheduled, JIT-compiled program (f32). */
static void run_jit(Setup *s, double lr, double *out)
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
    /* The whole update must be one kernel writing the parameter in place. */
    cr_expect_eq(sched.program.nsteps, 1, "update took %d steps", sched.program.nsteps);

    RtExec *e = rt_exec_create(&sched.program, &store);
    for (int t = 0; t < STEPS; t++) {
        float *grad = rt_exec_input(e, "grad");
        for (int i = 0; i < N; i++)
            grad[i] = (float)s->grads[t][i];
        *(float *)rt_exec_input(e, "lr") = (float)lr;
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

/* ---- references, from the equations of torch.optim (PyTorch 1.13) ------ */

static void reference_sgd(const Setup *s, double lr, double momentum, double dampening,
                          double weight_decay, bool nesterov, double *w)
{
    double buf[N] = {0};
    memcpy(w, s->init, sizeof(double) * N);
    for (int t = 0; t < STEPS; t++) {
        for (int i = 0; i < N; i++) {
            double d = s->grads[t][i] + weight_decay * w[i];
            if (momentum != 0) {
                buf[i] = t == 0 ? d : momentum * buf[i] + (1 - dampening) * d;
                d = nesterov ? d + momentum * buf[i] : buf[i];
            }
            w[i] -= lr * d;
        }
    }
}

static void reference_adamw(const Setup *s, double lr, double beta1, double beta2,
                            double eps, double weight_decay, bool amsgrad, double *w)
{
    double m[N] = {0}, v[N] = {0}, vmax[N] = {0};
    memcpy(w, s->init, sizeof(double) * N);
    for (int t = 1; t <= STEPS; t++) {
        double bc1 = 1 - pow(beta1, t), bc2 = 1 - pow(beta2, t);
        for (int i = 0; i < N; i++) {
            double g = s->grads[t - 1][i];
            w[i] *= 1 - lr * weight_decay;
            m[i] = beta1 * m[i] + (1 - beta1) * g;
            v[i] = beta2 * v[i] + (1 - beta2) * g * g;
            double second = v[i];
            if (amsgrad) {
                vmax[i] = fmax(vmax[i], v[i]);
                second = vmax[i];
            }
            double denom = sqrt(second) / sqrt(bc2) + eps;
            w[i] -= lr / bc1 * m[i] / denom;
        }
    }
}

/* ---- tests ---------------------------------------------------------------- */

static void check_sgd(const char *spec, double lr, double momentum, double dampening,
                      double weight_decay, bool nesterov)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F64, spec);
    reference_sgd(&s, lr, momentum, dampening, weight_decay, nesterov, want);
    run_interp(&s, lr, got);
    expect_close(got, want, 1e-12, "interpreter");
    teardown(&s);

    setup(&s, DT_F32, spec);
    run_jit(&s, lr, got);
    expect_close(got, want, 1e-5, "JIT");
    teardown(&s);
}

Test(optim, sgd_plain) { check_sgd("sgd(lr = 0.1)", 0.1, 0, 0, 0, false); }
Test(optim, sgd_momentum)
{
    check_sgd("sgd(lr = 0.05, momentum = 0.9)", 0.05, 0.9, 0, 0, false);
}
Test(optim, sgd_nesterov_weight_decay)
{
    check_sgd("sgd(lr = 0.05, momentum = 0.9, nesterov = true, weight_decay = 1e-2)", 0.05,
              0.9, 0, 1e-2, true);
}
Test(optim, sgd_dampening)
{
    check_sgd("sgd(lr = 0.02, momentum = 0.8, dampening = 0.3)", 0.02, 0.8, 0.3, 0, false);
}

static void check_adamw(const char *spec, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool amsgrad)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F64, spec);
    reference_adamw(&s, lr, beta1, beta2, eps, weight_decay, amsgrad, want);
    run_interp(&s, lr, got);
    expect_close(got, want, 1e-12, "interpreter");
    teardown(&s);

    setup(&s, DT_F32, spec);
    run_jit(&s, lr, got);
    expect_close(got, want, 1e-5, "JIT");
    teardown(&s);
}

Test(optim, adamw_defaults) { check_adamw("adamw()", 1e-3, 0.9, 0.999, 1e-8, 1e-2, false); }
Test(optim, adamw_custom)
{
    check_adamw("adamw(lr = 0.01, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, weight_decay = 0.1)",
                0.01, 0.8, 0.99, 1e-6, 0.1, false);
}
Test(optim, adamw_amsgrad)
{
    check_adamw("adamw(lr = 0.01, amsgrad = true)", 0.01, 0.9, 0.999, 1e-8, 1e-2, true);
}
