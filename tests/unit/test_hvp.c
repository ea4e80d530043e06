/* test_hvp.c - Hessian-vector products against finite differences of
 * gradients, in f64, through the JIT and through the interpreter.
 *
 * A model is compiled as an experiment cell and its evaluation graph turned
 * into a HessianOp. For a random direction v, H v must match
 * (grad(p + h v) - grad(p - h v)) / 2h, h = 1e-5, to a relative error
 * (in the 2-norm) below 1e-6, where the gradients come from the same
 * operator at the moved parameters.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../compiler/hessian.h"
#include "../../runtime/philox.h"

static const char *const program =
    "import \"std/optim\"\n"
    "model mlp(x: [B, 1, 4, 4]) {\n"
    "  h = tanh(linear(flatten(x), 6))\n"
    "  h = relu(linear(h, 5))\n"
    "  return linear(h, 3)\n"
    "}\n"
    "model cnn(x: [B, 1, 4, 4]) {\n"
    "  h = relu(batch_norm(conv2d(x, 3, 3, padding = 1)))\n"
    "  h = max_pool2d(h, 2)\n"
    "  return linear(flatten(h), 3)\n"
    "}\n"
    "experiment e { optimizer = sgd(lr = 0.1) }\n";

enum { SAMPLES = 10, BATCH = 4, PIXELS = 16 };

typedef struct Fixture {
    Arena arena;
    Lower lower;
    CompiledCell cell;
    RtVarStore store;
    Jit *jit;
    HessianOp op;
    double x[SAMPLES * PIXELS];
    int32_t labels[SAMPLES];
} Fixture;

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

/* Compiles `model` in f64, sets every variable (running statistics
 * included, so evaluation-mode batch norm is not the identity) to a fixed
 * random value, and builds the Hessian operator. */
static void fixture_create(Fixture *f, const char *model, Backend backend)
{
    memset(f, 0, sizeof *f);
    arena_init(&f->arena);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    Program *p = load_program_string("hvp-test.bocb", program, &search, &f->arena);
    cr_assert(p && diag_error_count() == 0, "the test program did not load");
    lower_init(&f->lower, p, &f->arena);
    const Decl *exp = p->main->decls[p->main->ndecls - 1];
    f->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&f->lower, exp->body.stmts[0]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED);
    Configured m = {.decl = find_decl(&f->lower, model, DECL_MODEL), .label = model};
    cr_assert(m.decl);
    DataShape shape = {.rank = 3, .dims = {1, 4, 4}, .classes = 3};
    cr_assert(compile_cell(&f->lower, &m, opt.configured, &shape, DT_F64, &f->cell));

    create_var_store(&f->store, &f->cell.module);
    rt_vars_reset(&f->store, 5);
    for (int v = 0; v < f->cell.module.nvars; v++) {
        if (f->cell.module.vars[v].kind != IR_VAR_BUFFER)
            continue;
        philox_fill_uniform_f64(philox_key(31, (uint32_t)v), rt_var_data(&f->store, v),
                                f->store.vars[v].numel, 0.5, 1.5);
    }
    philox_fill_uniform_f64(philox_key(32, 0), f->x, SAMPLES * PIXELS, -1.0, 1.0);
    for (int i = 0; i < SAMPLES; i++)
        f->labels[i] = (int32_t)((i * 7 + 1) % 3);

    char *error = NULL;
    if (backend == BACKEND_JIT) {
        f->jit = jit_create(&error);
        cr_assert(f->jit, "%s", error);
    }
    cr_assert(hessian_op_create(&f->op, f->cell.eval, &f->store, backend, f->jit, BATCH,
                                &error), "%s", error);
}

static void fixture_destroy(Fixture *f)
{
    hessian_op_destroy(&f->op);
    rt_vars_free(&f->store);
    jit_destroy(f->jit);
    compiled_cell_free(&f->cell);
    lower_free(&f->lower);
    arena_free(&f->arena);
}

static void move_params(Fixture *f, const double *v, double s)
{
    for (int k = 0; k < f->op.nparams; k++) {
        double *p = rt_var_data(&f->store, f->op.vars[k]);
        for (int64_t i = 0; i < f->store.vars[f->op.vars[k]].numel; i++)
            p[i] += s * v[f->op.offsets[k] + i];
    }
}

/* Returns H v for a fixed random v and checks it against the finite
 * difference of gradients. */
static double *check_hvp(const char *model, Backend backend)
{
    Fixture f;
    fixture_create(&f, model, backend);
    int64_t n = f.op.size;
    double *v = xcalloc((size_t)n, sizeof *v), *hv = xcalloc((size_t)n, sizeof *hv);
    double *up = xcalloc((size_t)n, sizeof *up), *down = xcalloc((size_t)n, sizeof *down);
    double *scratch = xcalloc((size_t)n, sizeof *scratch);
    philox_fill_uniform_f64(philox_key(33, 0), v, n, -1.0, 1.0);

    double loss;
    hessian_op_apply(&f.op, f.x, f.labels, SAMPLES, v, hv, NULL, &loss);
    cr_assert(isfinite(loss));
    const double h = 1e-5;
    move_params(&f, v, h);
    hessian_op_apply(&f.op, f.x, f.labels, SAMPLES, v, scratch, up, NULL);
    move_params(&f, v, -2 * h);
    hessian_op_apply(&f.op, f.x, f.labels, SAMPLES, v, scratch, down, NULL);
    move_params(&f, v, h);

    double err = 0, norm = 0;
    for (int64_t i = 0; i < n; i++) {
        double fd = (up[i] - down[i]) / (2 * h);
        err += (hv[i] - fd) * (hv[i] - fd);
        norm += fd * fd;
    }
    cr_assert(norm > 1e-6, "the finite difference is zero: the test checks nothing");
    cr_expect(sqrt(err / norm) < 1e-6, "%s: relative error of H v is %.3g", model,
              sqrt(err / norm));

    free(v);
    free(up);
    free(down);
    free(scratch);
    fixture_destroy(&f);
    return hv;
}

static void hvp_case(const char *model)
{
    double *interp = check_hvp(model, BACKEND_INTERP);
    double *jit = check_hvp(model, BACKEND_JIT);
    Fixture f;
    fixture_create(&f, model, BACKEND_INTERP);
    for (int64_t i = 0; i < f.op.size; i++)
        cr_expect(fabs(interp[i] - jit[i]) <= 1e-10 * fmax(1.0, fabs(interp[i])),
                  "element %lld: interpreter %.15g, JIT %.15g", (long long)i, interp[i],
                  jit[i]);
    fixture_destroy(&f);
    free(interp);
    free(jit);
}

Test(hvp, mlp_matches_finite_differences) { hvp_case("mlp"); }
Test(hvp, cnn_batch_norm_eval_matches_finite_differences) { hvp_case("cnn"); }

/* H is symmetric: u . (H v) = v . (H u). */
Test(hvp, symmetric)
{
    Fixture f;
    fixture_create(&f, "cnn", BACKEND_INTERP);
    int64_t n = f.op.size;
    double *u = xcalloc((size_t)n, sizeof *u), *v = xcalloc((size_t)n, sizeof *v);
    double *hu = xcalloc((size_t)n, sizeof *hu), *hv = xcalloc((size_t)n, sizeof *hv);
    philox_fill_uniform_f64(philox_key(34, 0), u, n, -1.0, 1.0);
    philox_fill_uniform_f64(philox_key(35, 0), v, n, -1.0, 1.0);
    hessian_op_apply(&f.op, f.x, f.labels, SAMPLES, u, hu, NULL, NULL);
    hessian_op_apply(&f.op, f.x, f.labels, SAMPLES, v, hv, NULL, NULL);
    double uhv = 0, vhu = 0;
    for (int64_t i = 0; i < n; i++) {
        uhv += u[i] * hv[i];
        vhu += v[i] * hu[i];
    }
    cr_expect(fabs(uhv - vhu) <= 1e-10 * fmax(1.0, fabs(uhv)), "u.Hv = %.15g, v.Hu = %.15g",
              uhv, vhu);
    free(u);
    free(v);
    free(hu);
    free(hv);
    fixture_destroy(&f);
}
