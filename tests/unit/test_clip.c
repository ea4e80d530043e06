/* test_clip.c - gradient clipping by global norm, compiled into the step.
 *
 * A linear classifier [B, 4] -> 3 classes is compiled with clipping and
 * SGD with momentum, and trained for a few steps through the interpreter
 * (f64) and the JIT (f32). The reference is written here by hand: the
 * gradient of the mean cross-entropy of a linear layer,
 *   dlogits = (softmax(logits) - onehot(label)) / N,
 *   dW = dlogits^T x,  db = sum over the batch of dlogits,
 * scaled by min(1, clip / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_
 * (PyTorch 1.13) does, then the torch.optim.SGD momentum update. The two
 * clipped steps are also compared with PyTorch's own result
 * (torch_reference.h, from make_torch_reference.py).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "torch_reference.h"

enum { N = 2, IN = 4, OUT = 3 };

static const char *const program =
    "import \"std/optim\"\n"
    "model tiny(x: [B, 4]) { return linear(x, 3) }\n"
    "model blind(x: [B, 4]) { return linear(x * 0, 3, bias = false) }\n"
    "experiment e { optimizer = sgd(lr = 0.5, momentum = 0.9) }\n";

typedef struct Cell {
    Arena arena;
    Lower lower;
    CompiledCell compiled;
    CellRunner runner;
    Jit *jit;
    DType dtype;
    int weight, bias, weight_buf;
} Cell;

/* Rounds a reference value to the element type of the cell. */
static double rounded(const Cell *c, double v)
{
    return c->dtype == DT_F32 ? (double)(float)v : v;
}

static double get(const Cell *c, int var, int i)
{
    void *data = rt_var_data(&c->runner.vars, var);
    return c->dtype == DT_F64 ? ((double *)data)[i] : ((float *)data)[i];
}

static void set(Cell *c, int var, int i, double v)
{
    void *data = rt_var_data(&c->runner.vars, var);
    if (c->dtype == DT_F64)
        ((double *)data)[i] = v;
    else
        ((float *)data)[i] = (float)v;
}

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

/* Compiles `model` with the experiment's optimizer and `clip`, and creates
 * a runner whose weights are W[k][j] = 0.1 (k + 1) (j - 1.5), b[k] = 0.1 k. */
static void cell_create(Cell *c, const char *model, double clip, Backend backend)
{
    memset(c, 0, sizeof *c);
    arena_init(&c->arena);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    Program *p = load_program_string("clip-test.bocb", program, &search, &c->arena);
    cr_assert(p && diag_error_count() == 0, "the test program did not load");
    lower_init(&c->lower, p, &c->arena);

    const Decl *exp = p->main->decls[p->main->ndecls - 1];
    c->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&c->lower, exp->body.stmts[0]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED);
    Configured m = {.decl = find_decl(&c->lower, model, DECL_MODEL), .label = model};
    cr_assert(m.decl);

    DType dtype = backend == BACKEND_JIT ? DT_F32 : DT_F64;
    c->dtype = dtype;
    DataShape shape = {.rank = 1, .dims = {IN}, .classes = OUT};
    CellOptions options = {.clip = clip};
    cr_assert(compile_cell_with(&c->lower, &m, opt.configured, &shape, dtype, &options,
                                &c->compiled));
    char *error = NULL;
    if (backend == BACKEND_JIT) {
        c->jit = jit_create(&error);
        cr_assert(c->jit, "%s", error);
    }
    cr_assert(cell_runner_create(&c->runner, &c->compiled, backend, c->jit, N, N, SIZE_MAX,
                                 NULL, &error), "%s", error);
    rt_vars_reset(&c->runner.vars, 0);

    char name[64];
    snprintf(name, sizeof name, "%s.linear1.weight", model);
    c->weight = ir_module_find_var(&c->compiled.module, name);
    snprintf(name, sizeof name, "%s.linear1.bias", model);
    c->bias = ir_module_find_var(&c->compiled.module, name);
    snprintf(name, sizeof name, "%s.linear1.weight.buf", model);
    c->weight_buf = ir_module_find_var(&c->compiled.module, name);
    cr_assert(c->weight >= 0 && c->weight_buf >= 0);
    for (int k = 0; k < OUT; k++) {
        for (int j = 0; j < IN; j++)
            set(c, c->weight, k * IN + j, 0.1 * (k + 1) * (j - 1.5));
        if (c->bias >= 0)
            set(c, c->bias, k, 0.1 * k);
    }
}

static void cell_destroy(Cell *c)
{
    cell_runner_destroy(&c->runner);
    compiled_cell_free(&c->compiled);
    jit_destroy(c->jit);
    lower_free(&c->lower);
    arena_free(&c->arena);
}

/* Runs one training step on x [N, IN] and labels; returns grad_norm. */
static double cell_step(Cell *c, const double *x, const int32_t *labels, int64_t step)
{
    RtRunner *r = &c->runner.runner;
    void *in = r->input(r->self, true, "x");
    for (int i = 0; i < N * IN; i++) {
        if (c->dtype == DT_F64)
            ((double *)in)[i] = x[i];
        else
            ((float *)in)[i] = (float)x[i];
    }
    memcpy(r->input(r->self, true, "labels"), labels, N * sizeof(int32_t));
    void *lr = r->input(r->self, true, "lr"), *step_in = r->input(r->self, true, "step");
    if (c->dtype == DT_F64) {
        *(double *)lr = 0.5;
        *(double *)step_in = (double)step;
    } else {
        *(float *)lr = 0.5f;
        *(float *)step_in = (float)step;
    }
    r->run(r->self, true, N);
    const void *norm = r->output(r->self, true, "grad_norm");
    return c->dtype == DT_F64 ? *(const double *)norm : *(const float *)norm;
}

/* ---- the reference ------------------------------------------------------ */

typedef struct Reference {
    double w[OUT][IN], b[OUT], w_buf[OUT][IN], b_buf[OUT];
    bool has_bias;
} Reference;

static void reference_init(Reference *ref, bool has_bias)
{
    memset(ref, 0, sizeof *ref);
    ref->has_bias = has_bias;
    for (int k = 0; k < OUT; k++) {
        for (int j = 0; j < IN; j++)
            ref->w[k][j] = 0.1 * (k + 1) * (j - 1.5);
        ref->b[k] = has_bias ? 0.1 * k : 0;
    }
}

/* One clipped SGD step (lr 0.5, momentum 0.9, step 1 when first). Returns
 * the gradient norm before clipping. `scale_x` multiplies the input before the
 * layer (0 for the model `blind`). */
static double reference_step(Reference *ref, const double *x, const int32_t *labels,
                             double clip, bool first, double scale_x)
{
    double dw[OUT][IN] = {{0}}, db[OUT] = {0};
    for (int n = 0; n < N; n++) {
        double logits[OUT], max = -INFINITY, sum = 0;
        for (int k = 0; k < OUT; k++) {
            logits[k] = ref->b[k];
            for (int j = 0; j < IN; j++)
                logits[k] += ref->w[k][j] * x[n * IN + j] * scale_x;
            max = fmax(max, logits[k]);
        }
        for (int k = 0; k < OUT; k++)
            sum += exp(logits[k] - max);
        for (int k = 0; k < OUT; k++) {
            double d = (exp(logits[k] - max) / sum - (k == labels[n])) / N;
            for (int j = 0; j < IN; j++)
                dw[k][j] += d * x[n * IN + j] * scale_x;
            db[k] += ref->has_bias ? d : 0;
        }
    }
    double squares = 0;
    for (int k = 0; k < OUT; k++) {
        squares += db[k] * db[k];
        for (int j = 0; j < IN; j++)
            squares += dw[k][j] * dw[k][j];
    }
    double norm = sqrt(squares);
    double scale = fmin(1.0, clip / (norm + 1e-6));
    for (int k = 0; k < OUT; k++) {
        for (int j = 0; j < IN; j++) {
            ref->w_buf[k][j] = (first ? 0 : 0.9 * ref->w_buf[k][j]) + scale * dw[k][j];
            ref->w[k][j] -= 0.5 * ref->w_buf[k][j];
        }
        ref->b_buf[k] = (first ? 0 : 0.9 * ref->b_buf[k]) + scale * db[k];
        ref->b[k] -= 0.5 * ref->b_buf[k];
    }
    return norm;
}

/* Compares the cell's parameters and momentum buffers with the reference,
 * rounded to the cell's element type, within relative tolerance `tol`. */
static void expect_params(const Cell *c, const Reference *ref, double tol, const char *when)
{
    for (int k = 0; k < OUT; k++) {
        for (int j = 0; j < IN; j++) {
            double got = get(c, c->weight, k * IN + j), want = rounded(c, ref->w[k][j]);
            cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                      "%s: weight[%d][%d] is %.12g, reference %.12g", when, k, j, got, want);
            got = get(c, c->weight_buf, k * IN + j);
            want = rounded(c, ref->w_buf[k][j]);
            cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                      "%s: weight.buf[%d][%d] is %.12g, reference %.12g", when, k, j, got,
                      want);
        }
        if (c->bias >= 0) {
            double got = get(c, c->bias, k), want = rounded(c, ref->b[k]);
            cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                      "%s: bias[%d] is %.12g, reference %.12g", when, k, got, want);
        }
    }
}

static const double batch1[N * IN] = {1.0, -2.0, 0.5, 3.0, -1.5, 0.25, 2.0, -0.75};
static const double batch2[N * IN] = {0.5, 1.5, -2.5, 1.0, 2.0, -1.0, 0.0, 0.5};
static const int32_t labels1[N] = {2, 0};
static const int32_t labels2[N] = {1, 1};

/* Two steps with clip 0.3, which the first step's norm exceeds. */
static void check_clipped_steps(Backend backend, double tol)
{
    Cell c;
    Reference ref;
    cell_create(&c, "tiny", 0.3, backend);
    reference_init(&ref, true);
    double want = reference_step(&ref, batch1, labels1, 0.3, true, 1);
    cr_assert(want > 0.3, "the test needs a norm above clip, not %g", want);
    double got = cell_step(&c, batch1, labels1, 1);
    cr_expect(fabs(got - want) <= tol * want, "grad_norm %.12g, reference %.12g", got, want);
    expect_params(&c, &ref, tol, "step 1");

    want = reference_step(&ref, batch2, labels2, 0.3, false, 1);
    got = cell_step(&c, batch2, labels2, 2);
    cr_expect(fabs(got - want) <= tol * want, "grad_norm %.12g, reference %.12g", got, want);
    expect_params(&c, &ref, tol, "step 2");
    cell_destroy(&c);
}

/* Compares the cell after the two steps of check_clipped_steps with the
 * parameters and momentum buffers PyTorch computed. */
static void expect_torch(const Cell *c, double tol)
{
    for (int i = 0; i < OUT * IN; i++) {
        double want = rounded(c, torch_clip_weight[i]), got = get(c, c->weight, i);
        cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                  "weight element %d is %.12g, torch %.12g", i, got, want);
        want = rounded(c, torch_clip_weight_buf[i]);
        got = get(c, c->weight_buf, i);
        cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                  "weight.buf element %d is %.12g, torch %.12g", i, got, want);
    }
    for (int k = 0; k < OUT; k++) {
        double want = rounded(c, torch_clip_bias[k]), got = get(c, c->bias, k);
        cr_expect(fabs(got - want) <= tol * fmax(1, fabs(want)),
                  "bias element %d is %.12g, torch %.12g", k, got, want);
    }
}

static void check_against_torch(Backend backend, double tol)
{
    Cell c;
    cell_create(&c, "tiny", 0.3, backend);
    double norm = cell_step(&c, batch1, labels1, 1);
    cr_expect(fabs(norm - torch_clip_norms[0]) <= tol * torch_clip_norms[0],
              "step 1: grad_norm %.12g, torch %.12g", norm, torch_clip_norms[0]);
    norm = cell_step(&c, batch2, labels2, 2);
    cr_expect(fabs(norm - torch_clip_norms[1]) <= tol * torch_clip_norms[1],
              "step 2: grad_norm %.12g, torch %.12g", norm, torch_clip_norms[1]);
    expect_torch(&c, tol);
    cell_destroy(&c);
}

Test(clip, matches_torch_interp) { check_against_torch(BACKEND_INTERP, 1e-12); }
Test(clip, matches_torch_jit) { check_against_torch(BACKEND_JIT, 2e-6); }

Test(clip, clipped_steps_interp) { check_clipped_steps(BACKEND_INTERP, 1e-12); }
Test(clip, clipped_steps_jit) { check_clipped_steps(BACKEND_JIT, 2e-6); }

Test(clip, norm_below_clip_unchanged)
{
    Cell c;
    Reference ref;
    cell_create(&c, "tiny", 100, BACKEND_INTERP);
    reference_init(&ref, true);
    double want = reference_step(&ref, batch1, labels1, 100, true, 1);
    double got = cell_step(&c, batch1, labels1, 1);
    cr_expect(fabs(got - want) <= 1e-12 * want);
    expect_params(&c, &ref, 1e-12, "unclipped step");
    cell_destroy(&c);
}

/* The model `blind` multiplies its input by 0, so every gradient is 0:
 * the norm is 0, the factor min(1, clip / (0 + 1e-6)) is 1, and nothing
 * may become NaN. */
static void check_zero_gradient(Backend backend)
{
    Cell c;
    Reference ref;
    cell_create(&c, "blind", 1.0, backend);
    reference_init(&ref, false);
    reference_step(&ref, batch1, labels1, 1.0, true, 0);
    double norm = cell_step(&c, batch1, labels1, 1);
    cr_expect(norm == 0, "grad_norm of zero gradients is %g", norm);
    expect_params(&c, &ref, 0, "zero gradient");
    cell_destroy(&c);
}

Test(clip, zero_gradient_interp) { check_zero_gradient(BACKEND_INTERP); }
Test(clip, zero_gradient_jit) { check_zero_gradient(BACKEND_JIT); }

/* After one good step, a batch with an infinite input makes the gradient
 * non-finite: the step is skipped, and the parameters and the momentum
 * buffers keep their values from the good step. */
static void check_infinite_gradient(Backend backend, double tol)
{
    Cell c;
    Reference ref;
    cell_create(&c, "tiny", 0.3, backend);
    reference_init(&ref, true);
    reference_step(&ref, batch1, labels1, 0.3, true, 1);
    cell_step(&c, batch1, labels1, 1);

    double bad[N * IN];
    memcpy(bad, batch2, sizeof bad);
    bad[3] = INFINITY;
    double norm = cell_step(&c, bad, labels2, 2);
    cr_expect(!isfinite(norm), "grad_norm is %g, expected inf or nan", norm);
    expect_params(&c, &ref, tol, "skipped step");
    cell_destroy(&c);
}

Test(clip, infinite_gradient_skips_interp) { check_infinite_gradient(BACKEND_INTERP, 1e-12); }
Test(clip, infinite_gradient_skips_jit) { check_infinite_gradient(BACKEND_JIT, 2e-6); }

/* In f32, inputs of 1e20 keep the loss and every gradient finite, but the
 * sum of squares overflows: the norm is inf and the step is skipped. */
Test(clip, norm_overflow_skips_jit)
{
    Cell c;
    Reference ref;
    cell_create(&c, "tiny", 0.3, BACKEND_JIT);
    reference_init(&ref, true);
    double huge[N * IN];
    for (int i = 0; i < N * IN; i++)
        huge[i] = batch1[i] * 1e20;
    double norm = cell_step(&c, huge, labels1, 1);
    cr_expect(isinf(norm), "grad_norm is %g, expected inf", norm);
    const void *loss = c.runner.runner.output(c.runner.runner.self, true, "loss");
    cr_expect(isfinite(*(const float *)loss), "the loss should stay finite");
    expect_params(&c, &ref, 0, "overflowing norm");
    cell_destroy(&c);
}
