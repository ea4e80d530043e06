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
#include "update_runner.h"

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

    const Configured *opt = configure_test_optimizer(&s->lower, s->program);
    int64_t n = N;
    s->g = build_update(&s->lower, &s->module, &s->arena, opt, dtype, shape_make(1, &n),
                        &s->param);

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

static UpdateRun update_run(Setup *s, double lr)
{
    return (UpdateRun){.module = &s->module, .graph = s->g, .param = s->param, .n = N,
                       .init = s->init, .grads = &s->grads[0][0], .steps = STEPS, .lr = lr};
}

/* Runs STEPS updates in the interpreter (f64) and returns the parameter. */
static void run_interp(Setup *s, double lr, double *out)
{
    UpdateRun r = update_run(s, lr);
    run_update_interp(&r, out);
}

/* Runs STEPS updates as a scheduled, JIT-compiled program (f32); the
 * whole update must be one kernel writing the parameter in place. */
static void run_jit(Setup *s, double lr, double *out)
{
    UpdateRun r = update_run(s, lr);
    run_update_jit(&r, true, out);
}

static void expect_close(const double *got, const double *want, double tol,
                         const char *backend)
{
    expect_update_close(got, want, N, tol, backend);
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
