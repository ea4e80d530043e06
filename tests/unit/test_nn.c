/* test_nn.c - builtins of compiler/nn.c and the runtime loss against
 * reference values.
 *
 * The reference values were computed by PyTorch 1.13 in float64 with
 * tests/reference/nn_reference.py, whose output is recorded below. Batch
 * norm runs in the interpreter in f64: two training steps (outputs and
 * running statistics, with a zero-variance channel) and one evaluation
 * pass with the running statistics. The losses run through rt_loss and
 * rt_loss_grad directly. Dropout is checked for its keep rate, its scale,
 * and masks that change with the step and the layer.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../compiler/interp.h"
#include "../../compiler/run.h"
#include "../../runtime/ops.h"

/* ---- reference values (tests/reference/nn_reference.py) ------------------- */

static const double want_y1[48] = {
    -0.16777121361037173, 0.33930809532292017, 0.777756598608665,
    1.0882323481820473, 1.2922029195938027, 1.2423232784496194,
    1.0049151018831792, 0.6121104728606456, 0.0,
    0.0, 0.0, 0.0,
    -1.5183323996570905, -1.563357459284797, -1.4194964675515085,
    -1.1062203348059054, -0.6552858768180202, -0.13341050986897343,
    0.3871354360477863, 0.8358985091438491, 0.0,
    0.0, 0.0, 0.0,
    0.5589201200537579, 0.0760672741398403, -0.4397879671930097,
    -0.9188270170167293, -1.3031504408634207, -1.534074298540905,
    -1.5767543042647998, -1.4254139194813342, 0.0,
    0.0, 0.0, 0.0,
    0.7917819234279836, 1.096613782026266, 1.2303170629632818,
    1.1747956543946494, 0.9929323836782723, 0.5953093407588546,
    0.09772806360403169, -0.4324661561825864, 0.0,
    0.0, 0.0, 0.0,
};
static const double want_mean1[3] = {
    0.011964333549445155, 0.06987451382139333, 0.07500000000000001,
};
static const double want_var1[3] = {
    0.9542453250276351, 1.1053684044038585, 0.9,
};
static const double want_mean2[3] = {
    -0.10351721522971735, 0.018769364651101683, 0.11195541996406863,
};
static const double want_var2[3] = {
    0.9170498414159979, 1.1766324826481434, 1.3431971540400163,
};
static const double want_eval[48] = {
    0.10809702517983483, 0.48571105167570655, 0.8122167911528405,
    1.0434232234806722, 2.279819721324822, 2.216014732264622,
    1.9123271803667055, 1.409859751117744, 0.5505281439108142,
    0.5505281439108142, 0.5505281439108142, 0.5505281439108142,
    -0.897644756248744, -0.931174213593397, -0.824043184211871,
    -0.5907513503565778, -0.21136703342207014, 0.45620497221283046,
    1.1220764103922378, 1.6961247057026962, 0.5505281439108142,
    0.5505281439108142, 0.5505281439108142, 0.5505281439108142,
    0.6492526899649395, 0.28967973137961567, -0.09446959464686393,
    -0.4512024789627732, -1.0401017731512114, -1.3354947205515395,
    -1.3900900872349249, -1.1964986464392149, 0.5505281439108142,
    0.5505281439108142, 0.5505281439108142, 0.5505281439108142,
    0.8226612310750226, 1.0496647461103021, 1.1492314872114997,
    1.1078855630592646, 1.8969991389767222, 1.3883680958980322,
    0.7518725795479533, 0.07365927212901717, 0.5505281439108142,
    0.5505281439108142, 0.5505281439108142, 0.5505281439108142,
};
static const double want_smoothed[3] = {
    0.5711248308494534, 4.804805162419494, 1.139249907771405,
};
static const double want_smoothed_grad[15] = {
    -0.08222771213839869, 0.03196299199636954, -0.008561464847068148,
    -0.007869205982489053, 0.06669539097158637, -0.6703539777494093,
    -0.023350050223361656, 0.017852559229759975, 0.9131483545999859,
    -0.23729688585697464, 1.0823465323521615, 0.005353766943332998,
    -0.036262923314642946, -0.01567434013287615, -1.0357630358479755,
};
static const double want_mse[3] = {
    3.5941391729601646, 5.533192411669504, 3.9406413460541985,
};
static const double want_mse_grad[15] = {
    0.4, 0.16049929717475242, -0.5141332520213684,
    -0.4355593825200839, 0.28111000278022624, -1.1719051508736282,
    -0.06474650467517865, 1.1372659225573345, 1.0731811089126746,
    -0.7771156063846528, 2.1778722754804707, -0.38907464759932386,
    -2.386026300441157, -0.8874438332716075, 1.1112459287006153,
};

/* ---- helpers --------------------------------------------------------------- */

/* input(k) of nn_reference.py: [4, 3, 2, 2], channel 2 constant when k = 0. */
static void reference_input(int k, double *x)
{
    for (int n = 0; n < 4; n++)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 4; i++) {
                int at = (n * 3 + c) * 4 + i;
                x[at] = k == 0 && c == 2
                            ? 0.75
                            : sin(0.37 * (at + 11 * k)) * (1 + c) + 0.5 * c - k;
            }
}

static void expect_close(const double *got, const double *want, int n, double tol,
                         const char *what)
{
    for (int i = 0; i < n; i++)
        cr_expect(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i])),
                  "%s[%d]: %.17g, want %.17g", what, i, got[i], want[i]);
}

/* A one-model program compiled into a graph with input x [B, ...]. */
typedef struct Built {
    Arena arena;
    Program *program;
    Lower lower;
    IrModule module;
    IrGraph *train, *eval;
} Built;

static IrGraph *build_graph(Built *b, const char *name, bool training, Shape xs)
{
    Lower *l = &b->lower;
    IrGraph *g = ir_graph_new(&b->module, name);
    l->graph = g;
    l->module = &b->module;
    l->dtype = DT_F64;
    l->training = training;
    Value x = val_tensor(ir_input(g, "x", DT_F64, xs, NO_LOC), NO_LOC);
    Value y = instantiate_model(l, find_decl(l, "m", DECL_MODEL), &x, NULL, NO_LOC);
    cr_assert(y.kind == VAL_TENSOR && diag_error_count() == 0, "the model did not compile");
    ir_add_output(g, "y", y.tensor);
    ir_dce(g);
    cr_assert(ir_verify(g));
    return g;
}

static void build(Built *b, const char *source, Shape xs)
{
    memset(b, 0, sizeof *b);
    arena_init(&b->arena);
    SearchPath search = {.stdlib_dir = "stdlib"};
    b->program = load_program_string("nn-test.bocb", source, &search, &b->arena);
    cr_assert(b->program && diag_error_count() == 0, "the program did not parse");
    lower_init(&b->lower, b->program, &b->arena);
    ir_module_init(&b->module, &b->arena);
    b->train = build_graph(b, "train", true, xs);
    b->eval = build_graph(b, "eval", false, xs);
}

static void built_free(Built *b)
{
    ir_graph_free(b->train);
    ir_graph_free(b->eval);
    ir_module_free(&b->module);
    lower_free(&b->lower);
    arena_free(&b->arena);
}

static const double *var_named(const Built *b, RtVarStore *store, const char *name)
{
    int v = ir_module_find_var(&b->module, name);
    cr_assert(v >= 0, "no variable %s", name);
    return rt_var_data(store, v);
}

/* ---- batch norm -------------------------------------------------------------- */

Test(nn, batch_norm_matches_pytorch)
{
    Built b;
    Shape xs = shape_make(4, (int64_t[]){1, 3, 2, 2});
    xs.batch_axis = 0;
    build(&b, "model m(x: [B, 3, 2, 2]) {\n  return batch_norm(x, momentum = 0.1)\n}\n", xs);

    cr_assert_eq(b.module.vars[ir_module_find_var(&b.module, "m.batch_norm1.running_var")].kind,
                 IR_VAR_BUFFER);
    cr_assert_str_eq(b.module.vars[ir_module_find_var(&b.module, "m.batch_norm1.weight")].tag,
                     "norm");

    RtVarStore store;
    create_var_store(&store, &b.module);
    rt_vars_reset(&store, 1);
    double x0[48], x1[48];
    reference_input(0, x0);
    reference_input(1, x1);

    Interp *train = interp_create(b.train, &store), *eval = interp_create(b.eval, &store);
    int input = ir_find_input(b.train, "x");
    interp_bind_input(train, input, x0);
    interp_run(train, 4);
    expect_close(interp_output(train, "y"), want_y1, 48, 1e-12, "y1");
    expect_close(var_named(&b, &store, "m.batch_norm1.running_mean"), want_mean1, 3, 1e-14,
                 "running_mean after step 1");
    expect_close(var_named(&b, &store, "m.batch_norm1.running_var"), want_var1, 3, 1e-14,
                 "running_var after step 1");

    interp_bind_input(train, input, x1);
    interp_run(train, 4);
    expect_close(var_named(&b, &store, "m.batch_norm1.running_mean"), want_mean2, 3, 1e-14,
                 "running_mean after step 2");
    expect_close(var_named(&b, &store, "m.batch_norm1.running_var"), want_var2, 3, 1e-14,
                 "running_var after step 2");

    /* Evaluation reads the running statistics and leaves them alone. */
    interp_bind_input(eval, ir_find_input(b.eval, "x"), x0);
    interp_run(eval, 4);
    expect_close(interp_output(eval, "y"), want_eval, 48, 1e-12, "eval");
    expect_close(var_named(&b, &store, "m.batch_norm1.running_mean"), want_mean2, 3, 1e-14,
                 "running_mean after evaluation");

    interp_destroy(train);
    interp_destroy(eval);
    rt_vars_free(&store);
    built_free(&b);
}

/* ---- losses ------------------------------------------------------------------ */

static void loss_case(RtLoss loss, const double *want, const double *want_grad)
{
    double logits[15], out[3], grad[15];
    static const int32_t labels[3] = {0, 3, 4};
    static const double weights[3] = {0.5, -1.0, 2.0};
    for (int j = 0; j < 3; j++)
        for (int i = 0; i < 5; i++)
            logits[j * 5 + i] = cos(1.3 * (j * 5 + i)) * 3;
    rt_loss(DT_F64, loss, 3, 5, logits, labels, out);
    rt_loss_grad(DT_F64, loss, 3, 5, logits, labels, weights, grad);
    expect_close(out, want, 3, 1e-14, "loss");
    expect_close(grad, want_grad, 15, 1e-14, "gradient");

    /* f32 agrees to its precision. */
    float logits32[15], out32[3], grad32[15], weights32[3] = {0.5f, -1.0f, 2.0f};
    for (int i = 0; i < 15; i++)
        logits32[i] = (float)logits[i];
    rt_loss(DT_F32, loss, 3, 5, logits32, labels, out32);
    rt_loss_grad(DT_F32, loss, 3, 5, logits32, labels, weights32, grad32);
    for (int i = 0; i < 3; i++)
        cr_expect(fabs(out32[i] - want[i]) <= 1e-5 * fmax(1, fabs(want[i])), "f32 loss %d", i);
    for (int i = 0; i < 15; i++)
        cr_expect(fabs(grad32[i] - want_grad[i]) <= 1e-5 * fmax(1, fabs(want_grad[i])),
                  "f32 gradient %d", i);
}

Test(nn, label_smoothing_matches_pytorch)
{
    loss_case((RtLoss){.kind = RT_LOSS_CROSS_ENTROPY, .label_smoothing = 0.1}, want_smoothed,
              want_smoothed_grad);
}

Test(nn, mse_matches_pytorch)
{
    loss_case((RtLoss){.kind = RT_LOSS_MSE}, want_mse, want_mse_grad);
}

/* ---- dropout ------------------------------------------------------------------ */

Test(nn, dropout_keep_rate_and_masks)
{
    enum { N = 64, C = 256 };
    Built b;
    Shape xs = shape_make(2, (int64_t[]){1, C});
    xs.batch_axis = 0;
    build(&b, "model m(x: [B, 256]) {\n  return dropout(x, p = 0.25) + 10 * dropout(x, p = 0.25)\n}\n",
          xs);
    RtVarStore store;
    create_var_store(&store, &b.module);
    rt_vars_reset(&store, 5);
    double *x = xcalloc(N * C, sizeof *x);
    for (int i = 0; i < N * C; i++)
        x[i] = 1;
    double step = 1;
    Interp *it = interp_create(b.train, &store);
    interp_bind_input(it, ir_find_input(b.train, "x"), x);
    interp_bind_input(it, ir_find_input(b.train, "step"), &step);

    /* y = a + 10 c with a, c in {0, 4/3}: decode both masks. */
    static uint8_t first[N * C];
    int64_t kept = 0, same_layers = 0, same_steps = 0;
    for (int s = 0; s < 2; s++) {
        step = 1 + s;
        interp_run(it, N);
        const double *y = interp_output(it, "y");
        for (int i = 0; i < N * C; i++) {
            double c = y[i] >= 10 ? 4.0 / 3 : 0, a = y[i] - 10 * c;
            cr_assert(fabs(a) < 1e-12 || fabs(a - 4.0 / 3) < 1e-12, "element %d: %g", i, y[i]);
            uint8_t mask = (uint8_t)((a != 0 ? 1 : 0) | (c != 0 ? 2 : 0));
            if (s == 0) {
                first[i] = mask;
                kept += (mask & 1) + (mask >> 1);
                same_layers += (mask == 0 || mask == 3);
            } else {
                same_steps += mask == first[i];
            }
        }
    }
    /* 2 * 16384 Bernoulli(0.75) draws: the keep rate is within 1% of 0.75
     * (over 5 standard deviations); independent masks agree on
     * 0.75^2 + 0.25^2 = 62.5% of the elements, identical ones on 100%. */
    double rate = (double)kept / (2.0 * N * C);
    cr_expect(fabs(rate - 0.75) < 0.01, "keep rate %g", rate);
    cr_expect(fabs((double)same_layers / (N * C) - 0.625) < 0.02, "layers agree on %lld",
              (long long)same_layers);
    cr_expect((double)same_steps / (N * C) < 0.75, "steps agree on %lld", (long long)same_steps);

    /* Evaluation is the identity. */
    Interp *ev = interp_create(b.eval, &store);
    interp_bind_input(ev, ir_find_input(b.eval, "x"), x);
    interp_run(ev, N);
    const double *y = interp_output(ev, "y");
    for (int i = 0; i < N * C; i++)
        cr_assert(y[i] == 11, "evaluation element %d: %g", i, y[i]);

    interp_destroy(it);
    interp_destroy(ev);
    free(x);
    rt_vars_free(&store);
    built_free(&b);
}

/* ---- embedding ---------------------------------------------------------------- */

/* The model truncates float ids toward zero and gathers rows of its
 * table; an id outside the table gives zeros. */
Test(nn, embedding_gathers_rows)
{
    Built b;
    Shape xs = shape_make(2, (int64_t[]){1, 4});
    xs.batch_axis = 0;
    build(&b, "model m(x: [B, 4]) {\n  return embedding(x, 5, 3)\n}\n", xs);
    int table_var = ir_module_find_var(&b.module, "m.embedding1.weight");
    cr_assert(table_var >= 0);
    cr_assert_str_eq(b.module.vars[table_var].tag, "embedding");
    RtVarStore store;
    create_var_store(&store, &b.module);
    rt_vars_reset(&store, 2);
    const double *table = rt_var_data(&store, table_var);

    static const double ids[8] = {0, 4.9, 2, 2.5, 5, -1, 1, 3};
    static const int want_row[8] = {0, 4, 2, 2, -1, -1, 1, 3};
    Interp *it = interp_create(b.eval, &store);
    interp_bind_input(it, ir_find_input(b.eval, "x"), ids);
    interp_run(it, 2);
    const double *y = interp_output(it, "y");
    for (int r = 0; r < 8; r++)
        for (int j = 0; j < 3; j++) {
            double want = want_row[r] < 0 ? 0 : table[want_row[r] * 3 + j];
            cr_expect(y[r * 3 + j] == want, "row %d column %d: %g, want %g", r, j,
                      y[r * 3 + j], want);
        }
    /* trunc_normal(0.02): small, not all equal. */
    for (int i = 0; i < 15; i++)
        cr_expect(fabs(table[i]) < 0.2 && table[i] != table[(i + 1) % 15], "table[%d] = %g", i,
                  table[i]);
    interp_destroy(it);
    rt_vars_free(&store);
    built_free(&b);
}
