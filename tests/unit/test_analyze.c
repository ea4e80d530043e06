/* test_analyze.c - sharpness by power iteration, and the stability criteria.
 *
 * Linear least squares has the Hessian (2 / n) X' X in closed form. With
 * the 8 x 4 design X whose columns are Walsh functions (entries +-1, so
 * X' X = 8 diag(s^2)) scaled by s = (1, 0.9, 0.5, 0.3), the eigenvalues are
 * 2 s_j^2 = 2, 1.62, 0.5, 0.18. The model is a linear layer without bias
 * and one output, trained with the mean squared error against label 0
 * (target 1), whose per-sample loss is (w . x - 1)^2.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/analyze.h"
#include "../../compiler/driver.h"

enum { SAMPLES = 8, FEATURES = 4 };

static const char *const program =
    "import \"std/optim\"\n"
    "model lin(x: [B, 4]) { return linear(x, 1, bias = false) }\n"
    "experiment e { optimizer = sgd(lr = 0.1) }\n";

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

typedef struct LeastSquares {
    Arena arena;
    Lower lower;
    CompiledCell cell;
    RtVarStore store;
} LeastSquares;

/* Compiles the linear model in f64 with the mean squared error. */
static void least_squares_create(LeastSquares *ls)
{
    arena_init(&ls->arena);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    Program *p = load_program_string("analyze-test.bocb", program, &search, &ls->arena);
    cr_assert(p && diag_error_count() == 0, "the test program did not load");
    lower_init(&ls->lower, p, &ls->arena);
    const Decl *exp = p->main->decls[p->main->ndecls - 1];
    ls->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&ls->lower, exp->body.stmts[0]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED);
    ls->lower.loss = (IrLossAttr){.kind = IR_LOSS_MSE};
    Configured m = {.decl = find_decl(&ls->lower, "lin", DECL_MODEL), .label = "lin"};
    DataShape shape = {.rank = 1, .dims = {FEATURES}, .classes = 1};
    cr_assert(compile_cell(&ls->lower, &m, opt.configured, &shape, DT_F64, &ls->cell));
    create_var_store(&ls->store, &ls->cell.module);
    rt_vars_reset(&ls->store, 1);
}

static void least_squares_destroy(LeastSquares *ls)
{
    rt_vars_free(&ls->store);
    compiled_cell_free(&ls->cell);
    lower_free(&ls->lower);
    arena_free(&ls->arena);
}

static void least_squares_case(Backend backend)
{
    LeastSquares ls;
    least_squares_create(&ls);
    static const double scale[FEATURES] = {0.3, 1.0, 0.5, 0.9};
    double x[SAMPLES * FEATURES];
    int32_t labels[SAMPLES] = {0};
    for (int i = 0; i < SAMPLES; i++)
        for (int j = 0; j < FEATURES; j++) {
            /* Walsh function j + 1 at i: the parity of the bits of i & (j + 1). */
            int bits = __builtin_popcount((unsigned)(i & (j + 1)));
            x[i * FEATURES + j] = scale[j] * (bits % 2 ? -1.0 : 1.0);
        }

    Jit *jit = NULL;
    char *error = NULL;
    if (backend == BACKEND_JIT) {
        jit = jit_create(&error);
        cr_assert(jit, "%s", error);
    }
    HessianOp h;
    cr_assert(hessian_op_create(&h, ls.cell.eval, &ls.store, backend, jit, 3, &error), "%s", error);
    cr_assert_eq(h.size, FEATURES);
    double eig[3];
    double vectors[3 * FEATURES];
    analyze_top_eigenvalues(&h, x, labels, SAMPLES, 3, 200, 7, eig, vectors);
    static const double expected[3] = {2.0, 1.62, 0.5};
    for (int k = 0; k < 3; k++)
        cr_expect(fabs(eig[k] - expected[k]) < 1e-6, "eigenvalue %d: %.12g, expected %g", k,
                  eig[k], expected[k]);
    /* The top eigenvector is the axis of the largest scale, feature 1. */
    cr_expect(fabs(fabs(vectors[1]) - 1.0) < 1e-6, "top eigenvector %g %g %g %g", vectors[0],
              vectors[1], vectors[2], vectors[3]);
    hessian_op_destroy(&h);

    double sharpness;
    cr_assert(analyze_sharpness(&ls.cell, &ls.store, jit, x, labels, SAMPLES, 200, &sharpness,
                                &error), "%s", error);
    cr_expect(fabs(sharpness - 2.0) < 1e-6, "sharpness %.12g, expected 2", sharpness);

    jit_destroy(jit);
    least_squares_destroy(&ls);
}

/* With the mean squared error of a linear model, H_i = 2 x_i x_i', so
 * S_ij = 2 |x_i . x_j|. Eight samples on four axes, two per axis with
 * equal length, make S four blocks of equal entries: sigma = 2. Eight
 * copies of one sample make every entry equal: sigma = 8. */
static double coherence_of(LeastSquares *ls, const double *x)
{
    int32_t labels[SAMPLES] = {0};
    Coherence co;
    char *error = NULL;
    cr_assert(analyze_coherence(&ls->cell, &ls->store, BACKEND_INTERP, NULL, x, labels,
                                SAMPLES, &co, &error), "%s", error);
    cr_expect(fabs(co.max_lambda_i - 2 * 0.49) < 1e-12, "max lambda_1(H_i) = %.15g",
              co.max_lambda_i);
    return co.sigma;
}

Test(analyze, coherence_closed_form)
{
    LeastSquares ls;
    least_squares_create(&ls);
    double x[SAMPLES * FEATURES] = {0};
    for (int i = 0; i < SAMPLES; i++)
        x[i * FEATURES + i % FEATURES] = i < FEATURES ? 0.7 : -0.7;
    double sigma = coherence_of(&ls, x);
    cr_expect(fabs(sigma - 2.0) < 1e-9, "two samples per axis: sigma = %.15g", sigma);

    for (int i = 0; i < SAMPLES; i++)
        for (int j = 0; j < FEATURES; j++)
            x[i * FEATURES + j] = j == 2 ? 0.7 : 0.0;
    sigma = coherence_of(&ls, x);
    cr_expect(fabs(sigma - 8.0) < 1e-9, "identical samples: sigma = %.15g", sigma);
    least_squares_destroy(&ls);
}

Test(analyze, least_squares_eigenvalues_interp) { least_squares_case(BACKEND_INTERP); }
Test(analyze, least_squares_eigenvalues_jit) { least_squares_case(BACKEND_JIT); }

Test(analyze, batch_factor)
{
    cr_expect_float_eq(stability_batch_factor(100, 4, true), 0.25, 1e-15);
    cr_expect_float_eq(stability_batch_factor(100, 4, false), 96.0 / (4 * 99), 1e-15);
    /* The whole set as one batch has no noise without replacement. */
    cr_expect_float_eq(stability_batch_factor(100, 100, false), 0.0, 1e-15);
}

/* Full-batch gradient descent (factor 0) is stable exactly when
 * |1 - lr lambda| < 1, so lambda < 2 / lr. */
Test(analyze, rho_full_batch_is_gradient_descent)
{
    cr_expect_float_eq(stability_rho_along(0.5, 0.0, 3.9, 0.0), (1 - 1.95) * (1 - 1.95), 1e-15);
    cr_expect(stability_rho_along(0.5, 0.0, 4.1, 123.0) > 1.0);
    cr_expect(stability_rho_along(0.5, 0.0, 3.9, 123.0) < 1.0);
}

/* One sample, B = 1 with replacement: the step is the sample's own
 * Hessian, so rho = (1 - lr h)^2 exactly, whatever q says about H. */
Test(analyze, rho_single_sample)
{
    double lambda = 1.5, q = lambda * lambda;
    cr_expect_float_eq(stability_rho_along(0.3, 1.0, lambda, q), (1 - 0.45) * (1 - 0.45),
                       1e-15);
}

Test(analyze, coherence_threshold)
{
    /* lambda_1 = 2, lr = 0.5: unstable exactly when B sigma <= n. */
    cr_expect(stability_coherence_unstable(0.5, 100, 10, 10.0, 2.0));
    cr_expect(!stability_coherence_unstable(0.5, 100, 11, 10.0, 2.0));
}

/* The synthetic experiment on a reduced grid (sigma and batch size 1, 6,
 * .., 46: every fifth value of the full grid, with all 1000 steps and 10
 * repetitions): the observed map must match the exact criterion on at
 * least 95% of the cells, and both outcomes must occur, so the agreement
 * is not that of a constant map. */
Test(analyze, synthetic_stability_reduced_grid)
{
    int cells = 0, agree = 0, unstable = 0;
    for (int sigma = 1; sigma <= 50; sigma += 5) {
        for (int batch = 1; batch <= 49; batch += 5) {
            SyntheticCell c;
            stability_synthetic_cell(100, sigma, 0.5, batch, 1000, 10, 2024, &c);
            cells++;
            agree += c.predicted == c.observed;
            unstable += c.observed;
        }
    }
    cr_expect(agree >= 0.95 * cells, "the exact criterion agrees on %d of %d cells", agree,
              cells);
    cr_expect(unstable > 0 && unstable < cells, "%d of %d cells unstable", unstable, cells);
}
