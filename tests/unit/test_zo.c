/* test_zo.c - the zeroth-order gradient pass (compiler/zo.c, zo_run.c).
 *
 * A linear layer [B, 4] -> 3 with the MSE loss is a quadratic in its
 * parameters, so the two-sided difference is exactly grad . z, and the
 * estimate (grad . z) z has the true gradient as its expectation. The
 * true gradient comes from the same model compiled with backprop (whose
 * rules tests/gradcheck checks against finite differences).
 *
 * - z: the perturbation graph adds scale * z, where z must be
 *   zo_normal_f64/f32 of the element's own index. So it does not depend
 *   on how a loop is split among threads. The same counter gives the
 *   same z in every pass, and its moments are those of N(0, 1).
 * - restore: +eps z, -2 eps z, +eps z returns every parameter to within
 *   1 ulp in f64, and to within the documented f32 bound.
 * - estimate: the mean of many ZO-SGD steps (lr 1, parameters reset
 *   before each) matches the true gradient within 5 standard errors.
 * - queries and one-sided mode: the same statistics.
 * - JIT and interpreter take the same steps.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../runtime/philox.h"

enum { N = 2, IN = 4, OUT = 3, NW = OUT * IN };

/* The test program, with the optimizer's configuration to fill in. */
static const char *const program_format =
    "import \"std/optim\"\n"
    "model tiny(x: [B, 4]) { return linear(x, 3) }\n"
    "model dropped(x: [B, 4]) { return linear(dropout(x, 0.5), 3) }\n"
    "experiment e { optimizer = %s }\n";

static const double xs[N * IN] = {0.5, -1.0, 0.25, 2.0, -0.75, 0.3, 1.5, -0.2};
static const int32_t labels[N] = {1, 2};

typedef struct Cell {
    Arena arena;
    Lower lower;
    CompiledCell compiled;
    CellRunner runner;
    Jit *jit;
    DType dtype;
    int weight, bias;
    const char *model; /* the model's name; NULL for tiny */
    double lr;         /* the learning rate of cell_step, 1 unless set */
} Cell;

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

static void put(DType dt, void *p, double v)
{
    cr_assert(p);
    if (dt == DT_F64)
        *(double *)p = v;
    else
        *(float *)p = (float)v;
}

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

/* Compiles the tiny model with `zo` (NULL = backprop) and `optimizer`, and sets W[k][j] = 0.1 (k + 1) (j - 1.5), b[k] = 0.1 k. */
static void cell_build(Cell *c, const char *model, const ZoSpec *zo, Backend backend,
                       DType dtype, const char *optimizer)
{
    memset(c, 0, sizeof *c);
    c->model = model;
    c->lr = 1;
    arena_init(&c->arena);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    char *program = arena_printf(&c->arena, program_format, optimizer);
    Program *p = load_program_string("zo-test.bocb", program, &search, &c->arena);
    cr_assert(p && diag_error_count() == 0, "the test program did not load");
    lower_init(&c->lower, p, &c->arena);
    const Decl *exp = p->main->decls[p->main->ndecls - 1];
    c->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&c->lower, exp->body.stmts[0]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED);
    Configured m = {.decl = find_decl(&c->lower, c->model ? c->model : "tiny", DECL_MODEL),
                    .label = "tiny"};
    cr_assert(m.decl);
    c->lower.loss.kind = IR_LOSS_MSE;

    c->dtype = dtype;
    DataShape shape = {.rank = 1, .dims = {IN}, .classes = OUT};
    CellOptions options = {.zo = zo};
    cr_assert(compile_cell_with(&c->lower, &m, opt.configured, &shape, c->dtype, &options,
                                &c->compiled));
    char *error = NULL;
    if (backend == BACKEND_JIT) {
        c->jit = jit_create(&error);
        cr_assert(c->jit, "%s", error);
    }
    cr_assert(cell_runner_create(&c->runner, &c->compiled, backend, c->jit, N, N, SIZE_MAX,
                                 NULL, &error), "%s", error);
    rt_vars_reset(&c->runner.vars, 7);
    char name[64];
    snprintf(name, sizeof name, "%s.linear1.weight", c->model ? c->model : "tiny");
    c->weight = ir_module_find_var(&c->compiled.module, name);
    snprintf(name, sizeof name, "%s.linear1.bias", c->model ? c->model : "tiny");
    c->bias = ir_module_find_var(&c->compiled.module, name);
    cr_assert(c->weight >= 0 && c->bias >= 0);
    for (int k = 0; k < OUT; k++) {
        for (int j = 0; j < IN; j++)
            set(c, c->weight, k * IN + j, 0.1 * (k + 1) * (j - 1.5));
        set(c, c->bias, k, 0.1 * k);
    }
}

static void cell_create_with(Cell *c, const ZoSpec *zo, Backend backend, DType dtype,
                             const char *optimizer)
{
    cell_build(c, NULL, zo, backend, dtype, optimizer);
}

/* SGD with lr 1; the JIT in f32, the interpreter in f64. */
static void cell_create(Cell *c, const ZoSpec *zo, Backend backend)
{
    cell_create_with(c, zo, backend, backend == BACKEND_JIT ? DT_F32 : DT_F64, "sgd(lr = 1)");
}

static void cell_destroy(Cell *c)
{
    cell_runner_destroy(&c->runner);
    compiled_cell_free(&c->compiled);
    jit_destroy(c->jit);
    lower_free(&c->lower);
    arena_free(&c->arena);
}

/* Reads the parameters as one vector: the weight's 12, then the bias's 3. */
static void params_get(const Cell *c, double *out)
{
    for (int i = 0; i < NW; i++)
        out[i] = get(c, c->weight, i);
    for (int k = 0; k < OUT; k++)
        out[NW + k] = get(c, c->bias, k);
}

static void params_set(Cell *c, const double *in)
{
    for (int i = 0; i < NW; i++)
        set(c, c->weight, i, in[i]);
    for (int k = 0; k < OUT; k++)
        set(c, c->bias, k, in[NW + k]);
}

/* One training step with learning rate c->lr. */
static double cell_step(Cell *c, int64_t step)
{
    RtRunner *r = &c->runner.runner;
    void *x = r->input(r->self, true, "x");
    for (int i = 0; i < N * IN; i++)
        put(c->dtype, (char *)x + i * dtype_size(c->dtype), xs[i]);
    memcpy(r->input(r->self, true, "labels"), labels, sizeof labels);
    put(c->dtype, r->input(r->self, true, "lr"), c->lr);
    put(c->dtype, r->input(r->self, true, "step"), (double)step);
    r->run(r->self, true, N);
    const void *loss = r->output(r->self, true, "loss");
    return c->dtype == DT_F64 ? *(const double *)loss : *(const float *)loss;
}

/* Runs the perturbation graph once. */
static void perturb(Cell *c, double scale, double counter)
{
    put(c->dtype, cell_graph_input(&c->runner, CELL_ZO_PERTURB, "zo_scale"), scale);
    put(c->dtype, cell_graph_input(&c->runner, CELL_ZO_PERTURB, "zo_counter"), counter);
    cell_graph_run(&c->runner, CELL_ZO_PERTURB, 1);
}

/* The value of key buffer `which` ('a', 'b' or 'c') of parameter `var`. */
static double key_of(const Cell *c, int var, char which)
{
    char name[96];
    snprintf(name, sizeof name, "%s.zo_key_%c", c->compiled.module.vars[var].name, which);
    int key = ir_module_find_var(&c->compiled.module, name);
    cr_assert(key >= 0, "no variable %s", name);
    return get(c, key, 0);
}

/* The z of element i of parameter `var` at `counter`, from the C
 * reference, masked as the cell's sparsity masks it. */
static double z_of(const Cell *c, int var, double counter, int i)
{
    double a = key_of(c, var, 'a'), b = key_of(c, var, 'b');
    double sparsity = c->compiled.zo->spec.sparsity;
    char name[96];
    snprintf(name, sizeof name, "%s.zo_sparsity", c->compiled.module.vars[var].name);
    int own = ir_module_find_var(&c->compiled.module, name);
    if (own >= 0)
        sparsity = get(c, own, 0);
    if (sparsity > 0) {
        double key = key_of(c, var, 'c');
        double u = c->dtype == DT_F64
                       ? philox_random_f64(key, counter, (uint64_t)i)
                       : philox_random_f32((float)key, (float)counter, (uint64_t)i);
        if (u < sparsity)
            return 0;
    }
    if (c->dtype == DT_F64)
        return zo_normal_f64(a, b, counter, (uint64_t)i);
    return zo_normal_f32((float)a, (float)b, (float)counter, (uint64_t)i);
}

static const ZoSpec two_sided = {.enabled = true, .eps = 1e-3, .queries = 1,
                                 .mode = ZO_TWO_SIDED};

static void check_perturbation_is_z(Backend backend, double tolerance)
{
    Cell c;
    cell_create(&c, &two_sided, backend);
    double before[NW + OUT], after[NW + OUT], again[NW + OUT];
    params_get(&c, before);
    perturb(&c, 0.5, 12);
    params_get(&c, after);
    for (int i = 0; i < NW + OUT; i++) {
        int var = i < NW ? c.weight : c.bias, index = i < NW ? i : i - NW;
        double z = z_of(&c, var, 12, index);
        cr_expect(fabs((after[i] - before[i]) - 0.5 * z) <= tolerance * (1 + fabs(before[i])),
                  "element %d: moved %.17g, 0.5 z = %.17g", i, after[i] - before[i], 0.5 * z);
    }
    /* The same counter gives the same z in a later pass; another counter
     * gives another z. */
    params_set(&c, before);
    perturb(&c, 0.5, 12);
    params_get(&c, again);
    for (int i = 0; i < NW + OUT; i++)
        cr_expect(again[i] == after[i], "element %d differs between passes", i);
    params_set(&c, before);
    perturb(&c, 0.5, 13);
    params_get(&c, again);
    int same = 0;
    for (int i = 0; i < NW + OUT; i++)
        same += again[i] == after[i];
    cr_expect(same == 0, "%d elements did not change with the counter", same);
    cell_destroy(&c);
}

Test(zo, perturbation_is_z_interp) { check_perturbation_is_z(BACKEND_INTERP, 1e-15); }
Test(zo, perturbation_is_z_jit) { check_perturbation_is_z(BACKEND_JIT, 2e-7); }

/* 2^17 draws: mean 0 and variance 1 within 5 standard errors, the fourth
 * moment 3, and the share inside one standard deviation that of N(0, 1). */
static void check_moments(bool f64)
{
    enum { COUNT = 1 << 17 };
    double sum = 0, squares = 0, fourth = 0;
    int64_t inside = 0;
    for (int i = 0; i < COUNT; i++) {
        double z = f64 ? zo_normal_f64(0.25, -0.625, 3, (uint64_t)i)
                       : zo_normal_f32(0.25f, -0.625f, 3, (uint64_t)i);
        sum += z;
        squares += z * z;
        fourth += z * z * z * z;
        inside += fabs(z) < 1;
    }
    double mean = sum / COUNT, var = squares / COUNT - mean * mean;
    cr_expect(fabs(mean) < 5 / sqrt(COUNT), "mean %g", mean);
    cr_expect(fabs(var - 1) < 5 * sqrt(2.0 / COUNT), "variance %g", var);
    cr_expect(fabs(fourth / COUNT - 3) < 5 * sqrt(96.0 / COUNT), "fourth moment %g",
              fourth / COUNT);
    double share = (double)inside / COUNT, p = 0.6826894921370859;
    cr_expect(fabs(share - p) < 5 * sqrt(p * (1 - p) / COUNT), "share %g", share);
}

Test(zo, normal_moments_f64) { check_moments(true); }
Test(zo, normal_moments_f32) { check_moments(false); }

/* The distance from a to b in units in the last place of a. */
static double ulps(DType dt, double a, double b)
{
    if (a == b)
        return 0;
    double ulp = dt == DT_F64 ? nextafter(fabs(a), INFINITY) - fabs(a)
                              : (double)(nextafterf((float)fabs(a), INFINITY) - (float)fabs(a));
    return fabs(a - b) / ulp;
}

static void check_restore(Backend backend, double max_ulps)
{
    Cell c;
    cell_create(&c, &two_sided, backend);
    double before[NW + OUT], after[NW + OUT], worst = 0;
    for (int counter = 1; counter <= 200; counter++) {
        params_get(&c, before);
        perturb(&c, 1e-3, counter);
        perturb(&c, -2e-3, counter);
        perturb(&c, 1e-3, counter);
        params_get(&c, after);
        for (int i = 0; i < NW + OUT; i++)
            worst = fmax(worst, ulps(c.dtype, before[i], after[i]));
    }
    cr_expect(worst <= max_ulps, "a parameter moved by %g ulps", worst);
    cell_destroy(&c);
}

Test(zo, restore_f64) { check_restore(BACKEND_INTERP, 1); }
Test(zo, restore_f32) { check_restore(BACKEND_JIT, 1); }

/* The gradient of the MSE loss at the initial parameters, from one
 * backprop SGD step with lr 1. */
static void true_gradient(Backend backend, double *grad)
{
    Cell c;
    cell_create(&c, NULL, backend);
    double before[NW + OUT], after[NW + OUT];
    params_get(&c, before);
    cell_step(&c, 1);
    params_get(&c, after);
    for (int i = 0; i < NW + OUT; i++)
        grad[i] = before[i] - after[i];
    cell_destroy(&c);
}

/* Checks that one step moved the parameters by (1/q) sum_k (g . z_k) z_k
 * with z_k from the C reference. For a quadratic the two-sided quotient
 * is g . z exactly, and the one-sided one is g . z + eps z'Hz / 2, where
 * z'Hz = 2 / (N C) sum over samples and classes of (z_W x + z_b)^2; the
 * tolerance bounds that term without the 1 / (N C). */
static void check_projection(const Cell *c, const ZoSpec *zo, int step, const double *grad,
                             const double *start, const double *after, const bool *moving)
{
    double expected[NW + OUT] = {0}, slack[NW + OUT] = {0}, largest = 0;
    for (int k = 0; k < zo->queries; k++) {
        double counter = (double)(step - 1) * zo->queries + k + 1, z[NW + OUT], dot = 0;
        for (int i = 0; i < NW + OUT; i++) {
            if (moving && !moving[i])
                z[i] = 0;
            else if (i < NW)
                z[i] = z_of(c, c->weight, counter, i);
            else
                z[i] = z_of(c, c->bias, counter, i - NW);
            dot += grad[i] * z[i];
        }
        if (zo->sign)
            dot = (dot > 0) - (dot < 0);
        double curvature = 0;
        for (int n = 0; n < N; n++) {
            for (int o = 0; o < OUT; o++) {
                double t = z[NW + o];
                for (int j = 0; j < IN; j++)
                    t += z[o * IN + j] * xs[n * IN + j];
                curvature += t * t;
            }
        }
        for (int i = 0; i < NW + OUT; i++) {
            expected[i] += dot * z[i] / zo->queries;
            if (zo->mode == ZO_ONE_SIDED)
                slack[i] += zo->eps * curvature * fabs(z[i]) / zo->queries;
        }
    }
    for (int i = 0; i < NW + OUT; i++)
        largest = fmax(largest, fabs(expected[i]));
    for (int i = 0; i < NW + OUT; i++)
        cr_expect(fabs((start[i] - after[i]) - expected[i]) <= 1e-9 * largest + slack[i],
                  "step %d, coordinate %d: moved %.10g, (g . z) z = %.10g", step, i,
                  start[i] - after[i], expected[i]);
}

/* Averages `steps` ZO-SGD estimates from the initial parameters and
 * checks each coordinate against the true gradient within 5 standard
 * errors of (g . z) z, whose variance is |g|^2 + g_i^2. */
static void check_estimate(const ZoSpec *zo, int steps)
{
    double grad[NW + OUT], norm2 = 0;
    true_gradient(BACKEND_INTERP, grad);
    for (int i = 0; i < NW + OUT; i++)
        norm2 += grad[i] * grad[i];
    cr_assert(norm2 > 1e-4, "the test's gradient is too small to be a test");

    Cell c;
    cell_create(&c, zo, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT], mean[NW + OUT] = {0};
    params_get(&c, start);
    for (int s = 1; s <= steps; s++) {
        params_set(&c, start);
        cell_step(&c, s);
        params_get(&c, after);
        for (int i = 0; i < NW + OUT; i++)
            mean[i] += (start[i] - after[i]) / steps;
        if (s <= 20)
            check_projection(&c, zo, s, grad, start, after, NULL);
    }
    for (int i = 0; i < NW + OUT; i++) {
        double se = sqrt((norm2 + grad[i] * grad[i]) / (steps * zo->queries));
        cr_expect(fabs(mean[i] - grad[i]) < 5 * se + 1e-3 * zo->eps,
                  "coordinate %d: estimate %g, gradient %g, standard error %g", i, mean[i],
                  grad[i], se);
    }
    cell_destroy(&c);
}

Test(zo, estimate_two_sided) { check_estimate(&two_sided, 3000); }

Test(zo, estimate_one_sided_queries)
{
    ZoSpec zo = {.enabled = true, .eps = 1e-4, .queries = 3, .mode = ZO_ONE_SIDED};
    check_estimate(&zo, 1000);
}

Test(zo, estimate_differs_from_gradient)
{
    /* One step is a single random direction: far from the gradient. */
    double grad[NW + OUT];
    true_gradient(BACKEND_INTERP, grad);
    Cell c;
    cell_create(&c, &two_sided, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT], dist = 0, dot = 0, sq = 0;
    params_get(&c, start);
    cell_step(&c, 1);
    params_get(&c, after);
    for (int i = 0; i < NW + OUT; i++) {
        double e = start[i] - after[i];
        dist += (e - grad[i]) * (e - grad[i]);
        dot += e * grad[i];
        sq += grad[i] * grad[i];
    }
    cr_expect(dist > 1e-3 * sq, "a single estimate equals the gradient");
    /* The projected gradient grad . z: with the single-query estimate
     * e = (grad . z) z, e . grad = (grad . z)^2 >= 0. */
    cr_expect(dot >= 0, "e . grad = %g", dot);
    cell_destroy(&c);
}

Test(zo, jit_matches_interpreter)
{
    Cell a, b;
    ZoSpec zo = {.enabled = true, .eps = 1e-2, .queries = 2, .mode = ZO_TWO_SIDED};
    cell_create_with(&a, &zo, BACKEND_INTERP, DT_F32, "sgd(lr = 1)");
    cell_create_with(&b, &zo, BACKEND_JIT, DT_F32, "sgd(lr = 1)");
    for (int s = 1; s <= 10; s++) {
        double la = cell_step(&a, s), lb = cell_step(&b, s);
        cr_expect(fabs(la - lb) < 1e-4 * (1 + fabs(la)), "step %d: loss %g vs %g", s, la, lb);
    }
    double pa[NW + OUT], pb[NW + OUT];
    params_get(&a, pa);
    params_get(&b, pb);
    for (int i = 0; i < NW + OUT; i++)
        cr_expect(fabs(pa[i] - pb[i]) < 1e-3 * (1 + fabs(pa[i])), "parameter %d: %g vs %g",
                  i, pa[i], pb[i]);
    cell_destroy(&a);
    cell_destroy(&b);
}

Test(zo, estimate_sign_sparse)
{
    /* projection = sign moves by sign(g . z) z; sparsity masks z with
     * the third key. */
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .sign = true, .sparsity = 0.5};
    double grad[NW + OUT];
    true_gradient(BACKEND_INTERP, grad);
    Cell c;
    cell_create(&c, &zo, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT];
    params_get(&c, start);
    int unmoved = 0;
    for (int s = 1; s <= 40; s++) {
        params_set(&c, start);
        cell_step(&c, s);
        params_get(&c, after);
        check_projection(&c, &zo, s, grad, start, after, NULL);
        for (int i = 0; i < NW + OUT; i++)
            unmoved += after[i] == start[i];
    }
    /* Half of the 600 coordinates stay; 5 standard deviations are 61. */
    cr_expect(abs(unmoved - 300) < 61, "%d of 600 coordinates did not move", unmoved);
    cell_destroy(&c);
}

Test(zo, blocks_take_turns)
{
    /* blocks = tensor: step 1 moves the weight alone, step 2 the bias, and
     * the other block keeps its value and its momentum. */
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .blocks = ZO_BLOCKS_TENSOR};
    double grad[NW + OUT];
    true_gradient(BACKEND_INTERP, grad);
    Cell c;
    cell_create(&c, &zo, BACKEND_INTERP);
    cr_assert(c.compiled.zo->nblocks == 2);
    double start[NW + OUT], after[NW + OUT];
    bool weight_only[NW + OUT], bias_only[NW + OUT];
    for (int i = 0; i < NW + OUT; i++) {
        weight_only[i] = i < NW;
        bias_only[i] = i >= NW;
    }
    params_get(&c, start);
    cell_step(&c, 1);
    params_get(&c, after);
    for (int k = 0; k < OUT; k++)
        cr_expect(after[NW + k] == start[NW + k], "step 1 moved bias %d", k);
    check_projection(&c, &zo, 1, grad, start, after, weight_only);
    params_set(&c, start);
    cell_step(&c, 2);
    params_get(&c, after);
    for (int i = 0; i < NW; i++)
        cr_expect(after[i] == start[i], "step 2 moved weight %d", i);
    check_projection(&c, &zo, 2, grad, start, after, bias_only);
    cell_destroy(&c);
}

Test(zo, blocks_keep_state)
{
    /* With momentum, an inactive block's momentum buffer is unchanged. */
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .blocks = ZO_BLOCKS_TENSOR};
    Cell c;
    cell_create_with(&c, &zo, BACKEND_INTERP, DT_F64, "sgd(lr = 1, momentum = 0.9)");
    int buf = ir_module_find_var(&c.compiled.module, "tiny.linear1.bias.buf");
    cr_assert(buf >= 0);
    cell_step(&c, 1);
    for (int k = 0; k < OUT; k++)
        cr_expect(get(&c, buf, k) == 0, "step 1 changed the bias momentum");
    cell_step(&c, 2);
    int changed = 0;
    for (int k = 0; k < OUT; k++)
        changed += get(&c, buf, k) != 0;
    cr_expect(changed == OUT, "step 2 changed %d of %d bias momenta", changed, OUT);
    cell_destroy(&c);
}

Test(zo, one_kernel_per_parameter)
{
    /* Each perturbation and each restore-and-update of an SGD step is one
     * fused kernel per parameter tensor, with no other step: z and the
     * estimate live in registers. */
    Cell c;
    cell_create(&c, &two_sided, BACKEND_JIT);
    const Schedule *perturb = &c.runner.sched[CELL_ZO_PERTURB];
    const Schedule *update = &c.runner.sched[CELL_ZO_UPDATE];
    cr_expect(perturb->nkernels == 2 && perturb->program.nsteps == 2,
              "perturbation: %d kernels, %d steps", perturb->nkernels,
              perturb->program.nsteps);
    cr_expect(update->nkernels == 2 && update->program.nsteps == 2,
              "update: %d kernels, %d steps", update->nkernels, update->program.nsteps);
    cell_destroy(&c);
}

Test(zo, hybrid_backprop_bias)
{
    /* backprop = "*.bias": the bias takes a backpropagated step, computed
     * in the last forward pass at weights moved by -eps z (so within
     * O(eps) of the gradient), and the weight a zeroth-order step whose
     * quotient sees the old bias. */
    const char *patterns[] = {"*.bias"};
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .backprop = patterns, .nbackprop = 1};
    double grad[NW + OUT], norm = 0;
    true_gradient(BACKEND_INTERP, grad);
    for (int i = 0; i < NW + OUT; i++)
        norm += grad[i] * grad[i];
    norm = sqrt(norm);
    Cell c;
    cell_create(&c, &zo, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT];
    bool weight_only[NW + OUT];
    for (int i = 0; i < NW + OUT; i++)
        weight_only[i] = i < NW;
    params_get(&c, start);
    cell_step(&c, 1);
    params_get(&c, after);
    double weights_after[NW + OUT];
    memcpy(weights_after, after, sizeof after);
    memcpy(weights_after + NW, start + NW, OUT * sizeof *start);
    check_projection(&c, &zo, 1, grad, start, weights_after, weight_only);
    for (int k = 0; k < OUT; k++) {
        double moved = start[NW + k] - after[NW + k];
        cr_expect(fabs(moved - grad[NW + k]) < 1e-2 * norm, "bias %d moved %g, gradient %g",
                  k, moved, grad[NW + k]);
        cr_expect(moved != grad[NW + k] || grad[NW + k] == 0,
                  "bias %d: the step was not taken at the perturbed weights", k);
    }
    cell_destroy(&c);
}

/* The MSE loss of the tiny model at parameters `p`: the mean over the
 * batch of the mean over classes of (W x + b - onehot(label))^2. */
static double mse_loss(const double *p)
{
    double total = 0;
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OUT; o++) {
            double y = p[NW + o];
            for (int j = 0; j < IN; j++)
                y += p[o * IN + j] * xs[n * IN + j];
            y -= o == labels[n];
            total += y * y / (N * OUT);
        }
    }
    return total;
}

Test(zo, conservative_keeps_best)
{
    /* ZO-SGD-Cons ends each step at whichever of p, p - lr g and p + lr g
     * (g = (g . z) z for this quadratic) has the lowest loss. */
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .conservative = true};
    double grad[NW + OUT];
    true_gradient(BACKEND_INTERP, grad);
    Cell c;
    cell_create(&c, &zo, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT];
    params_get(&c, start);
    cr_expect(fabs(cell_step(&c, 1) - mse_loss(start)) < 1e-12,
              "the step does not report L(p)");
    int chosen[3] = {0, 0, 0};
    for (int s = 1; s <= 30; s++) {
        params_set(&c, start);
        cell_step(&c, s);
        params_get(&c, after);
        double z[NW + OUT], dot = 0, points[3][NW + OUT], losses[3];
        for (int i = 0; i < NW + OUT; i++) {
            z[i] = i < NW ? z_of(&c, c.weight, s, i) : z_of(&c, c.bias, s, i - NW);
            dot += grad[i] * z[i];
        }
        for (int i = 0; i < NW + OUT; i++) {
            points[0][i] = start[i];
            points[1][i] = start[i] - dot * z[i];
            points[2][i] = start[i] + dot * z[i];
        }
        int best = 0;
        for (int t = 0; t < 3; t++) {
            losses[t] = mse_loss(points[t]);
            if (losses[t] < losses[best])
                best = t;
        }
        double distance = 0;
        for (int i = 0; i < NW + OUT; i++)
            distance = fmax(distance, fabs(after[i] - points[best][i]));
        cr_expect(distance < 1e-9, "step %d: %g away from point %d (losses %g %g %g)", s,
                  distance, best, losses[0], losses[1], losses[2]);
        chosen[best]++;
    }
    cr_expect(chosen[0] + chosen[2] > 0, "every step kept p - lr g, so the test shows little");
    cell_destroy(&c);
}

Test(zo, dropout_same_mask)
{
    /* Both forward passes of a step draw the same dropout mask, so the
     * difference quotient stays of the order of |g . z|. Different masks
     * would change the loss by O(1) and the quotient by O(1 / eps). */
    ZoSpec zo = {.enabled = true, .eps = 1e-4, .queries = 1, .mode = ZO_TWO_SIDED};
    Cell c;
    cell_build(&c, "dropped", &zo, BACKEND_INTERP, DT_F64, "sgd(lr = 0)");
    c.lr = 0;
    for (int s = 1; s <= 20; s++) {
        cell_step(&c, s);
        double pg = *(const double *)cell_graph_input(&c.runner, CELL_ZO_UPDATE, "zo_pg.0");
        cr_expect(fabs(pg) < 100, "step %d: projected gradient %g", s, pg);
    }
    cell_destroy(&c);
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

Test(zo, magnitude_mask)
{
    /* mask = magnitude: the first step sets each tensor's sparsity to the
     * share of its entries at or below the median magnitude of all 15,
     * and masks z with that level. */
    ZoSpec zo = {.enabled = true, .eps = 1e-3, .queries = 1, .mode = ZO_TWO_SIDED,
                 .sparsity = 0.5, .magnitude_mask = true};
    double grad[NW + OUT];
    true_gradient(BACKEND_INTERP, grad);
    Cell c;
    cell_create(&c, &zo, BACKEND_INTERP);
    double start[NW + OUT], after[NW + OUT], sorted[NW + OUT];
    params_get(&c, start);
    for (int i = 0; i < NW + OUT; i++)
        sorted[i] = fabs(start[i]);
    qsort(sorted, NW + OUT, sizeof *sorted, compare_doubles);
    double threshold = sorted[(NW + OUT - 1) / 2];
    int small_weights = 0, small_biases = 0;
    for (int i = 0; i < NW + OUT; i++) {
        if (fabs(start[i]) <= threshold && i < NW)
            small_weights++;
        else if (fabs(start[i]) <= threshold)
            small_biases++;
    }
    cell_step(&c, 1);
    params_get(&c, after);
    int wbuf = ir_module_find_var(&c.compiled.module, "tiny.linear1.weight.zo_sparsity");
    int bbuf = ir_module_find_var(&c.compiled.module, "tiny.linear1.bias.zo_sparsity");
    cr_assert(wbuf >= 0 && bbuf >= 0);
    cr_expect(get(&c, wbuf, 0) == (double)small_weights / NW, "weight sparsity %g, not %g",
              get(&c, wbuf, 0), (double)small_weights / NW);
    cr_expect(get(&c, bbuf, 0) == (double)small_biases / OUT, "bias sparsity %g, not %g",
              get(&c, bbuf, 0), (double)small_biases / OUT);
    check_projection(&c, &zo, 1, grad, start, after, NULL);
    cell_destroy(&c);
}
