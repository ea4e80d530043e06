/* test_optim_zoo.c - every stdlib optimizer against independent references.
 *
 * Each case of tests/optim/reference.h names an optimizer configuration and
 * a problem, with the parameters after each of 10 steps and the optimizer
 * state after the last. tests/optim/make_reference.py computed them with
 * torch.optim 1.13 (for the optimizers torch has) or with NumPy from the
 * published update rule (for the others). Here the same 10 steps run
 * through the compiler: the .bocb rule is expanded for every parameter
 * after reverse-mode autodiff of the problem's loss, then run by the
 * interpreter in f64 and, scheduled and fused, by the JIT in f32.
 *
 * Problems: a quadratic 0.5 * sum(h * (w - c)^2) in a [4, 3] weight, the
 * same from w = 0 (zero parameter norm), the same with h = 0 (zero
 * gradient), and an MLP 3-4-3 with tanh and cross-entropy on 4 samples.
 *
 * The last test checks that the scheduler gives each parameter of the MLP
 * one fused update kernel (elementwise rules) and counts the reductions of
 * the rules that need norms.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/driver.h"

typedef struct RefCase {
    const char *spec;
    const char *problem;
    double lr;
    const double *params; /* REF_STEPS x all parameters, after each step */
    int nstates;
    const char *const *state_names;
    const double *states; /* per state name: the final state of every parameter
                             that has it, in parameter order */
    int nstate_values;    /* the length of states */
} RefCase;

#include "../optim/reference.h"

enum { MLP_BATCH = 4, MLP_FEATURES = 3, MAX_VALUES = 64 };

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

typedef struct Problem {
    Arena arena;
    Program *program;
    Lower lower;
    CompiledCell cell;  /* the MLP */
    IrModule module;    /* the quadratics */
    IrGraph *graph;
    bool is_mlp;
    int params[4];
    int nparams;
} Problem;

static IrModule *module_of(Problem *p)
{
    return p->is_mlp ? &p->cell.module : &p->module;
}

static IrGraph *graph_of(Problem *p)
{
    return p->is_mlp ? p->cell.train : p->graph;
}

/* The quadratic 0.5 * sum(h * (w - c)^2), differentiated by autodiff, and
 * the rule expanded for w, as compile_cell does for a model. */
static void build_quadratic(Problem *p, const Configured *opt, DType dtype)
{
    ir_module_init(&p->module, &p->arena);
    IrGraph *g = ir_graph_new(&p->module, "train_step");
    p->graph = g;
    int64_t dims[2] = {4, 3};
    Shape shape = shape_make(2, dims);
    int w = ir_module_add_var(&p->module, "w", IR_VAR_PARAM, dtype, shape, IR_INIT_ZEROS, 0,
                              -1, NO_LOC);
    int h = ir_input(g, "h", dtype, shape, NO_LOC);
    int c = ir_input(g, "c", dtype, shape, NO_LOC);
    int lr = ir_input(g, "lr", dtype, shape_scalar(), NO_LOC);
    int step = ir_input(g, "step", dtype, shape_scalar(), NO_LOC);
    int diff = ir_binary(g, IR_SUB, ir_var_read(g, w, NO_LOC), c, NO_LOC);
    int weighted = ir_binary(g, IR_MUL, h, ir_binary(g, IR_MUL, diff, diff, NO_LOC), NO_LOC);
    int loss = ir_binary(g, IR_MUL, ir_const(g, dtype, 0.5, NO_LOC),
                         ir_sum(g, weighted, 3, NO_LOC), NO_LOC);
    ir_add_output(g, "loss", loss);
    int grad;
    cr_assert(ad_backward(g, loss, &w, 1, &grad));
    p->lower.graph = g;
    p->lower.module = &p->module;
    p->lower.dtype = dtype;
    cr_assert(expand_optimizer(&p->lower, opt, w, grad, lr, step), "%s did not expand",
              opt->decl->name);
    p->lower.graph = NULL;
    ir_dce(g);
    cr_assert(ir_verify(g));
    p->params[0] = w;
    p->nparams = 1;
}

static void problem_init(Problem *p, const char *spec, const char *problem, DType dtype)
{
    memset(p, 0, sizeof *p);
    arena_init(&p->arena);
    char *text = xasprintf("import \"std/optim\"\n"
                           "model tiny(x: [B, 3]) { return linear(tanh(linear(x, 4)), 3) }\n"
                           "experiment e { optimizer = %s\n model = tiny() }\n", spec);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    p->program = load_program_string("zoo.bocb", text, &search, &p->arena);
    free(text);
    cr_assert(p->program && diag_error_count() == 0, "%s: the program did not load", spec);
    lower_init(&p->lower, p->program, &p->arena);
    const Decl *exp = p->program->main->decls[2];
    p->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&p->lower, exp->body.stmts[0]->assign.value);
    Value model = eval_expr(&p->lower, exp->body.stmts[1]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED && model.kind == VAL_CONFIGURED,
              "%s: the experiment did not configure", spec);

    p->is_mlp = strcmp(problem, "mlp") == 0;
    if (!p->is_mlp) {
        build_quadratic(p, opt.configured, dtype);
        return;
    }
    DataShape data = {.rank = 1, .dims = {MLP_FEATURES}, .classes = 3};
    cr_assert(compile_cell(&p->lower, model.configured, opt.configured, &data, dtype,
                           &p->cell), "%s: the cell did not compile", spec);
    for (int v = 0; v < p->cell.module.nvars; v++)
        if (p->cell.module.vars[v].kind == IR_VAR_PARAM)
            p->params[p->nparams++] = v;
    cr_assert_eq(p->nparams, 4);
}

static void problem_free(Problem *p)
{
    if (p->is_mlp) {
        compiled_cell_free(&p->cell);
    } else {
        ir_graph_free(p->graph);
        ir_module_free(&p->module);
    }
    lower_free(&p->lower);
    arena_free(&p->arena);
}

static int64_t numel_of(Problem *p, int var)
{
    return shape_numel(&module_of(p)->vars[var].shape, 1);
}

/* Sets the parameters to the problem's starting point. */
static void load_initial(Problem *p, const char *problem, RtVarStore *store, DType dtype)
{
    int64_t at = 0;
    for (int i = 0; i < p->nparams; i++) {
        void *data = rt_var_data(store, p->params[i]);
        for (int64_t k = 0; k < numel_of(p, p->params[i]); k++, at++) {
            double v = p->is_mlp ? ref_mlp_init[at]
                       : strcmp(problem, "quadratic") == 0 ? ref_quad_w0[at] : 0.0;
            if (dtype == DT_F64)
                ((double *)data)[k] = v;
            else
                ((float *)data)[k] = (float)v;
        }
    }
}

/* Fills the problem's data inputs: h and c, or x and labels. */
static void fill_inputs(const char *problem, DType dtype, void *a, void *b)
{
    bool mlp = strcmp(problem, "mlp") == 0;
    int n = mlp ? MLP_BATCH * MLP_FEATURES : 12;
    for (int i = 0; i < n; i++) {
        double va = mlp ? ref_mlp_x[i] : strcmp(problem, "zero_grad") == 0 ? 0 : ref_quad_h[i];
        if (dtype == DT_F64)
            ((double *)a)[i] = va;
        else
            ((float *)a)[i] = (float)va;
    }
    for (int i = 0; i < (mlp ? MLP_BATCH : 12); i++) {
        if (mlp)
            ((int32_t *)b)[i] = ref_mlp_labels[i];
        else if (dtype == DT_F64)
            ((double *)b)[i] = ref_quad_c[i];
        else
            ((float *)b)[i] = (float)ref_quad_c[i];
    }
}

static double read_value(const void *data, DType dtype, int64_t k)
{
    return dtype == DT_F64 ? ((const double *)data)[k] : ((const float *)data)[k];
}

/* |got - want| / max(1, |want|) <= tol for every parameter element. */
static void check_params(Problem *p, const RefCase *rc, RtVarStore *store, DType dtype,
                         int step, double tol, const char *backend)
{
    int64_t total = 0;
    for (int i = 0; i < p->nparams; i++)
        total += numel_of(p, p->params[i]);
    const double *want = rc->params + (int64_t)step * total;
    int64_t at = 0;
    for (int i = 0; i < p->nparams; i++) {
        const void *data = rt_var_data(store, p->params[i]);
        for (int64_t k = 0; k < numel_of(p, p->params[i]); k++, at++) {
            double got = read_value(data, dtype, k);
            double err = fabs(got - want[at]) / fmax(1.0, fabs(want[at]));
            cr_assert(err <= tol, "%s on %s, %s: step %d, %s[%lld] is %.12g, reference %.12g",
                      rc->spec, rc->problem, backend, step + 1,
                      module_of(p)->vars[p->params[i]].name, (long long)k, got, want[at]);
        }
    }
}

static void check_states(Problem *p, const RefCase *rc, RtVarStore *store, DType dtype,
                         double tol, const char *backend)
{
    const double *want = rc->states;
    for (int s = 0; s < rc->nstates; s++) {
        int found = 0;
        for (int i = 0; i < p->nparams; i++) {
            const IrVar *param = &module_of(p)->vars[p->params[i]];
            char name[128];
            snprintf(name, sizeof name, "%s.%s", param->name, rc->state_names[s]);
            int var = ir_module_find_var(module_of(p), name);
            if (var < 0)
                continue; /* Adafactor keeps `row` for matrices only */
            found++;
            const void *data = rt_var_data(store, var);
            for (int64_t k = 0; k < numel_of(p, var); k++, want++) {
                double got = read_value(data, dtype, k);
                double err = fabs(got - *want) / fmax(1.0, fabs(*want));
                cr_assert(err <= tol, "%s on %s, %s: state %s[%lld] is %.12g, reference %.12g",
                          rc->spec, rc->problem, backend, name, (long long)k, got, *want);
            }
        }
        cr_assert(found > 0, "%s: no parameter has state %s", rc->spec, rc->state_names[s]);
    }
    /* Every reference value was compared: no state is missing or too small. */
    cr_assert_eq(want - rc->states, rc->nstate_values, "%s on %s: %lld state values compared, "
                 "reference has %d", rc->spec, rc->problem, (long long)(want - rc->states),
                 rc->nstate_values);
}

/* Compiles the case's problem and gives it a variable store at the
 * starting point. */
static void start_case(Problem *p, const RefCase *rc, DType dtype, RtVarStore *store)
{
    problem_init(p, rc->spec, rc->problem, dtype);
    create_var_store(store, module_of(p));
    rt_vars_reset(store, 0);
    load_initial(p, rc->problem, store, dtype);
}

static void run_interp(const RefCase *rc)
{
    Problem p;
    RtVarStore store;
    start_case(&p, rc, DT_F64, &store);
    IrGraph *g = graph_of(&p);
    Interp *it = interp_create(g, &store);
    double a[MAX_VALUES], b_f64[MAX_VALUES], lr = rc->lr, step;
    int32_t labels[MAX_VALUES];
    void *b = p.is_mlp ? (void *)labels : (void *)b_f64;
    fill_inputs(rc->problem, DT_F64, a, b);
    interp_bind_input(it, ir_find_input(g, p.is_mlp ? "x" : "h"), a);
    interp_bind_input(it, ir_find_input(g, p.is_mlp ? "labels" : "c"), b);
    interp_bind_input(it, ir_find_input(g, "lr"), &lr);
    interp_bind_input(it, ir_find_input(g, "step"), &step);
    for (int t = 0; t < REF_STEPS; t++) {
        step = t + 1;
        interp_run(it, p.is_mlp ? MLP_BATCH : 1);
        check_params(&p, rc, &store, DT_F64, t, 1e-9, "interpreter");
    }
    check_states(&p, rc, &store, DT_F64, 1e-9, "interpreter");
    interp_destroy(it);
    rt_vars_free(&store);
    problem_free(&p);
}

static void run_jit(const RefCase *rc)
{
    Problem p;
    RtVarStore store;
    start_case(&p, rc, DT_F32, &store);

    Schedule sched;
    schedule_graph(graph_of(&p), MLP_BATCH, &sched);
    char *error = NULL;
    Jit *jit = jit_create(&error);
    cr_assert(jit, "%s", error);
    cr_assert(jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels, &error),
              "%s", error);
    RtExec *e = rt_exec_create(&sched.program, &store);
    for (int t = 0; t < REF_STEPS; t++) {
        fill_inputs(rc->problem, DT_F32, rt_exec_input(e, p.is_mlp ? "x" : "h"),
                    rt_exec_input(e, p.is_mlp ? "labels" : "c"));
        *(float *)rt_exec_input(e, "lr") = (float)rc->lr;
        *(float *)rt_exec_input(e, "step") = (float)(t + 1);
        rt_exec_run(e, p.is_mlp ? MLP_BATCH : 1);
        check_params(&p, rc, &store, DT_F32, t, 2e-4, "JIT");
    }
    check_states(&p, rc, &store, DT_F32, 2e-4, "JIT");
    rt_exec_destroy(e);
    schedule_free(&sched);
    jit_destroy(jit);
    rt_vars_free(&store);
    problem_free(&p);
}

/* Runs every reference case of optimizer `name` on both backends. */
static void check_optimizer(const char *name)
{
    size_t len = strlen(name);
    int cases = 0;
    for (size_t i = 0; i < BOCB_ARRAY_LEN(ref_cases); i++) {
        const RefCase *rc = &ref_cases[i];
        if (strncmp(rc->spec, name, len) != 0 || rc->spec[len] != '(')
            continue;
        run_interp(rc);
        run_jit(rc);
        cases++;
    }
    cr_assert(cases >= 4, "only %d reference cases for %s", cases, name);
}

Test(optim_zoo, sgd) { check_optimizer("sgd"); }
Test(optim_zoo, adam) { check_optimizer("adam"); }
Test(optim_zoo, adamw) { check_optimizer("adamw"); }
Test(optim_zoo, adamax) { check_optimizer("adamax"); }
Test(optim_zoo, nadam) { check_optimizer("nadam"); }
Test(optim_zoo, radam) { check_optimizer("radam"); }
Test(optim_zoo, adagrad) { check_optimizer("adagrad"); }
Test(optim_zoo, adadelta) { check_optimizer("adadelta"); }
Test(optim_zoo, rmsprop) { check_optimizer("rmsprop"); }
Test(optim_zoo, sign_sgd) { check_optimizer("sign_sgd"); }
Test(optim_zoo, lion) { check_optimizer("lion"); }
Test(optim_zoo, sgdp) { check_optimizer("sgdp"); }
Test(optim_zoo, adamp) { check_optimizer("adamp"); }
Test(optim_zoo, lamb) { check_optimizer("lamb"); }
Test(optim_zoo, lars) { check_optimizer("lars"); }
Test(optim_zoo, novograd) { check_optimizer("novograd"); }
Test(optim_zoo, adan) { check_optimizer("adan"); }
Test(optim_zoo, adabound) { check_optimizer("adabound"); }
Test(optim_zoo, adabelief) { check_optimizer("adabelief"); }
Test(optim_zoo, adafactor) { check_optimizer("adafactor"); }
Test(optim_zoo, sophia) { check_optimizer("sophia"); }

/* ---- kernel counts --------------------------------------------------------- */

typedef struct Counts {
    int kernels, steps;
} Counts;

static Counts mlp_counts(const char *spec)
{
    Problem p;
    problem_init(&p, spec, "mlp", DT_F32);
    Schedule sched;
    schedule_graph(p.cell.train, MLP_BATCH, &sched);
    Counts c = {sched.nkernels, sched.program.nsteps};
    schedule_free(&sched);
    problem_free(&p);
    return c;
}

/* Plain SGD updates each of the MLP's 4 parameters in one kernel (see
 * test_optim.c). An elementwise rule, however many states it keeps, must
 * add no kernel and no step to that. Its whole update is one pass, and that
 * includes Lion's momentum (which shares only the gradient with the
 * parameter's update) and Adan's copy of the gradient into prev_grad. */
Test(optim_zoo, one_kernel_per_parameter)
{
    Counts base = mlp_counts("sgd(lr = 0.1)");
    static const char *const elementwise[] = {
        "sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 0.1)",
        "adam(amsgrad = true, weight_decay = 0.1)", "adamw(amsgrad = true)", "adamax()",
        "nadam()", "radam()", "adagrad(lr_decay = 0.1)", "adadelta()",
        "rmsprop(centered = true, momentum = 0.9)", "sign_sgd(momentum = 0.9)",
        "lion(weight_decay = 0.1)", "adan(weight_decay = 0.1)", "adabound(amsbound = true)",
        "adabelief()", "adabelief(rectify = false)",
    };
    for (size_t i = 0; i < BOCB_ARRAY_LEN(elementwise); i++) {
        Counts c = mlp_counts(elementwise[i]);
        cr_expect_eq(c.kernels, base.kernels, "%s: %d kernels, plain SGD %d", elementwise[i],
                     c.kernels, base.kernels);
        cr_expect_eq(c.steps, base.steps, "%s: %d steps, plain SGD %d", elementwise[i],
                     c.steps, base.steps);
    }
}

/* A rule with norms over whole tensors needs one pass more than plain SGD
 * per parameter: a kernel that updates the moments and accumulates the
 * sums of squares, then the kernel that updates the parameter. SGDP and
 * AdamP also reduce per output channel (library reduction steps) and
 * decide between channel and layer projection, which costs more. */
Test(optim_zoo, passes_of_norm_rules)
{
    Counts base = mlp_counts("sgd(lr = 0.1)");
    static const struct {
        const char *spec;
        int kernels, steps;
    } rules[] = {
        {"novograd()", 1, 1}, {"lamb(weight_decay = 0.1)", 1, 1},
        {"lamb()", 1, 1}, {"lars(lr = 0.1, weight_decay = 0.1)", 1, 1},
        {"sgdp(lr = 0.1)", 3, 7}, {"adamp()", 3, 7},
    };
    for (size_t i = 0; i < BOCB_ARRAY_LEN(rules); i++) {
        Counts c = mlp_counts(rules[i].spec);
        cr_expect_eq(c.kernels - base.kernels, 4 * rules[i].kernels,
                     "%s: %d kernels, plain SGD %d", rules[i].spec, c.kernels, base.kernels);
        cr_expect_eq(c.steps - base.steps, 4 * rules[i].steps, "%s: %d steps, plain SGD %d",
                     rules[i].spec, c.steps, base.steps);
    }
}

/* ---- the Gauss-Newton-Bartlett labels ------------------------------------- */

/* rt_sample_labels, which draws Sophia's labels, follows the softmax: over
 * 20000 rows of logits (0, 1, 2, -inf), the class frequencies are within
 * 0.01 of the probabilities (about three standard deviations), and the
 * class of probability 0 never appears. Philox makes the draw fixed, so
 * the test cannot flicker. */
Test(optim_zoo, sampled_labels_follow_softmax)
{
    enum { ROWS = 20000, CLASSES = 4 };
    static double logits[ROWS * CLASSES];
    static int32_t labels[ROWS];
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < CLASSES; j++)
            logits[i * CLASSES + j] = j < 3 ? j : -INFINITY;
    rt_sample_labels(DT_F64, ROWS, CLASSES, logits, philox_key(3, 7), labels);
    int counts[CLASSES] = {0};
    for (int i = 0; i < ROWS; i++) {
        cr_assert(labels[i] >= 0 && labels[i] < CLASSES, "label %d out of range", labels[i]);
        counts[labels[i]]++;
    }
    double total = 1 + exp(1) + exp(2);
    for (int j = 0; j < 3; j++) {
        double want = exp(j) / total, got = (double)counts[j] / ROWS;
        cr_expect(fabs(got - want) < 0.01, "class %d drawn %.4f of the time, softmax %.4f", j,
                  got, want);
    }
    cr_expect_eq(counts[3], 0, "the class of probability 0 was drawn %d times", counts[3]);
}
