/* test_rule_reductions.c - the reductions of optimizer rules against a
 * reference written here.
 *
 * The rule below uses every reduction an optimizer can apply to its
 * tensors: the whole-tensor max, min, sum, norm and rms, and a row rms and
 * a column mean kept as broadcastable [R, 1] and [1, C] tensors. It also
 * uses sign, abs, clamp, where, a state and the step number. The rule is
 * expanded for one [R, C] parameter whose gradient is a graph input.
 * Several steps run in the interpreter (f64) and, scheduled and
 * JIT-compiled, in f32; both are compared with the same update computed
 * in double by plain loops.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../runtime/philox.h"
#include "update_runner.h"

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

    const Configured *opt = configure_test_optimizer(&s->lower, s->program);
    int64_t dims[2] = {R, C};
    s->g = build_update(&s->lower, &s->module, &s->arena, opt, dtype, shape_make(2, dims),
                        &s->param);

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
            double sign = 0;
            if (g[i] > 0)
                sign = 1;
            else if (g[i] < 0)
                sign = -1;
            double shift = selected + gmin + w_rms * sign;
            w[i] -= LR * (m[i] + shift + tilt) / (t + 1);
        }
    }
}

static UpdateRun update_run(Setup *s)
{
    return (UpdateRun){.module = &s->module, .graph = s->g, .param = s->param, .n = N,
                       .init = s->init, .grads = &s->grads[0][0], .steps = STEPS, .lr = LR};
}

Test(rule_reductions, interpreter)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F64);
    reference(&s, want);
    UpdateRun r = update_run(&s);
    run_update_interp(&r, got);
    expect_update_close(got, want, N, 1e-12, "interpreter");
    teardown(&s);
}

Test(rule_reductions, jit)
{
    double want[N], got[N];
    Setup s;
    setup(&s, DT_F32);
    reference(&s, want);
    UpdateRun r = update_run(&s);
    /* The reductions need kernels of their own before the update. */
    run_update_jit(&r, false, got);
    expect_update_close(got, want, N, 1e-5, "JIT");
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
