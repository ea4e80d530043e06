/* test_finetune.c - fine-tuning schemes: frozen parameters, LoRA and
 * prompt tuning, compiled from a small program and run in the interpreter
 * (f64) and the JIT (f32).
 *
 * Checked: the trainable set (its element count, which variables are
 * frozen, that no optimizer state belongs to a frozen parameter), that
 * frozen weights are bit-identical after training while the trainable ones
 * move, and that LoRA with B = 0 gives the base model's logits exactly.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../../compiler/driver.h"
#include "../../compiler/lm.h"
#include "../../compiler/weights.h"

enum { N = 2, MAX_INPUT = 16 };

static const char *const program =
    "import \"std/optim\"\n"
    "model tiny(x: [B, 4]) {\n"
    "  h = relu(linear(x, 6, name = \"fc1\"))\n"
    "  return linear(h, 3, name = \"head\")\n"
    "}\n"
    "model prompted(x: [B, 2, 4]) {\n"
    "  t = linear(prompt_tokens(x), 4, name = \"mix\")\n"
    "  t = slice(t, 1, size(t, 1) - 2)\n"
    "  return linear(reshape(t, [-1, 8]), 3, name = \"head\")\n"
    "}\n"
    "experiment e { optimizer = adamw(lr = 0.1) }\n";

typedef struct Cell {
    Arena arena;
    Lower lower;
    CompiledCell compiled;
    CellRunner runner;
    Jit *jit;
    DType dtype;
    int64_t input_size;
} Cell;

static const char *stdlib_dir(void)
{
    const char *env = getenv("BOCB_STDLIB");
    return env ? env : "stdlib";
}

static void cell_create(Cell *c, const char *model, const FineTune *finetune, Backend backend)
{
    memset(c, 0, sizeof *c);
    arena_init(&c->arena);
    SearchPath search = {.stdlib_dir = stdlib_dir()};
    Program *p = load_program_string("finetune-test.bocb", program, &search, &c->arena);
    cr_assert(p && diag_error_count() == 0, "the test program did not load");
    lower_init(&c->lower, p, &c->arena);
    const Decl *exp = p->main->decls[p->main->ndecls - 1];
    c->lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&c->lower, exp->body.stmts[0]->assign.value);
    cr_assert(opt.kind == VAL_CONFIGURED);
    Configured m = {.decl = find_decl(&c->lower, model, DECL_MODEL), .label = model};
    cr_assert(m.decl);

    c->dtype = backend == BACKEND_JIT ? DT_F32 : DT_F64;
    bool prompted = strcmp(model, "prompted") == 0;
    DataShape shape = prompted ? (DataShape){.rank = 2, .dims = {2, 4}, .classes = 3}
                               : (DataShape){.rank = 1, .dims = {4}, .classes = 3};
    c->input_size = prompted ? 8 : 4;
    CellOptions options = {.finetune = finetune};
    cr_assert(compile_cell_with(&c->lower, &m, opt.configured, &shape, c->dtype, &options,
                                &c->compiled), "the cell did not compile");
    char *error = NULL;
    if (backend == BACKEND_JIT) {
        c->jit = jit_create(&error);
        cr_assert(c->jit, "%s", error);
    }
    cr_assert(cell_runner_create(&c->runner, &c->compiled, backend, c->jit, N, N, SIZE_MAX,
                                 NULL, &error), "%s", error);
    rt_vars_reset(&c->runner.vars, 7);
}

static void cell_destroy(Cell *c)
{
    cell_runner_destroy(&c->runner);
    compiled_cell_free(&c->compiled);
    jit_destroy(c->jit);
    lower_free(&c->lower);
    arena_free(&c->arena);
}

static int var_named(const Cell *c, const char *name)
{
    int v = ir_module_find_var(&c->compiled.module, name);
    cr_assert(v >= 0, "no variable %s", name);
    return v;
}

static size_t var_bytes(const Cell *c, int v)
{
    return (size_t)c->runner.vars.vars[v].numel * dtype_size(c->dtype);
}

static void set_input(Cell *c, bool train, const double *x, const int32_t *labels)
{
    RtRunner *r = &c->runner.runner;
    void *in = r->input(r->self, train, "x");
    for (int i = 0; i < N * c->input_size; i++) {
        if (c->dtype == DT_F64)
            ((double *)in)[i] = x[i];
        else
            ((float *)in)[i] = (float)x[i];
    }
    memcpy(r->input(r->self, train, "labels"), labels, N * sizeof(int32_t));
}

static void train_step(Cell *c, const double *x, const int32_t *labels, int64_t step)
{
    RtRunner *r = &c->runner.runner;
    set_input(c, true, x, labels);
    void *lr = r->input(r->self, true, "lr"), *step_in = r->input(r->self, true, "step");
    if (c->dtype == DT_F64) {
        *(double *)lr = 0.1;
        *(double *)step_in = (double)step;
    } else {
        *(float *)lr = 0.1f;
        *(float *)step_in = (float)step;
    }
    r->run(r->self, true, N);
}

static const double inputs[N * MAX_INPUT] = {
    0.5, -1.0, 0.25, 2.0, -0.75, 1.5, 0.1, -0.3,
    1.0, 0.2, -0.6, 0.8, 0.4, -1.2, 0.9, -0.1,
};
static const int32_t labels[N] = {2, 0};

static FineTune lora(const char **targets, int ntargets)
{
    static const char *trainable[] = {"head"};
    return (FineTune){.kind = FINETUNE_LORA, .lora_rank = 2, .lora_alpha = 4,
                      .lora_targets = targets, .nlora_targets = ntargets,
                      .trainable = trainable, .ntrainable = 1};
}

/* No optimizer state may belong to a frozen parameter. */
static void expect_no_state_of_frozen(const Cell *c)
{
    const IrModule *m = &c->compiled.module;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_STATE || m->vars[v].owner < 0)
            continue;
        cr_expect_not(m->vars[m->vars[v].owner].frozen, "state %s belongs to frozen %s",
                      m->vars[v].name, m->vars[m->vars[v].owner].name);
    }
}

Test(finetune, lora_trainable_count)
{
    const char *targets[] = {"fc1"};
    FineTune f = lora(targets, 1);
    Cell c;
    cell_create(&c, "tiny", &f, BACKEND_INTERP);
    /* fc1: A [2, 4] + B [6, 2] = 20; head: 3 x 6 + 3 = 21. */
    cr_expect_eq(rt_vars_trainable_count(&c.runner.vars), 41);
    const IrModule *m = &c.compiled.module;
    cr_expect(m->vars[var_named(&c, "tiny.fc1.weight")].frozen);
    cr_expect(m->vars[var_named(&c, "tiny.fc1.bias")].frozen);
    cr_expect_not(m->vars[var_named(&c, "tiny.fc1.lora_A")].frozen);
    cr_expect_not(m->vars[var_named(&c, "tiny.fc1.lora_B")].frozen);
    cr_expect_not(m->vars[var_named(&c, "tiny.head.weight")].frozen);
    cr_expect_eq(ir_module_find_var(m, "tiny.head.lora_A"), -1);
    /* AdamW keeps two moments per trainable parameter, none for frozen. */
    cr_expect_geq(ir_module_find_var(m, "tiny.fc1.lora_B.m"), 0);
    cr_expect_eq(ir_module_find_var(m, "tiny.fc1.weight.m"), -1);
    expect_no_state_of_frozen(&c);
    cell_destroy(&c);
}

Test(finetune, full_trains_everything)
{
    Cell c;
    cell_create(&c, "tiny", NULL, BACKEND_INTERP);
    /* fc1: 6 x 4 + 6 = 30; head: 21. */
    cr_expect_eq(rt_vars_trainable_count(&c.runner.vars), 51);
    cell_destroy(&c);
}

Test(finetune, prompt_trainable_count)
{
    static const char *trainable[] = {"head"};
    FineTune f = {.kind = FINETUNE_PROMPT, .prompt_tokens = 3, .trainable = trainable,
                  .ntrainable = 1};
    Cell c;
    cell_create(&c, "prompted", &f, BACKEND_INTERP);
    /* prompt [1, 3, 4] = 12; head: 3 x 8 + 3 = 27; mix is frozen. */
    cr_expect_eq(rt_vars_trainable_count(&c.runner.vars), 39);
    const IrModule *m = &c.compiled.module;
    cr_expect(m->vars[var_named(&c, "prompted.mix.weight")].frozen);
    cr_expect_not(m->vars[var_named(&c, "prompted.prompt")].frozen);
    expect_no_state_of_frozen(&c);
    cell_destroy(&c);
}

/* Trains a few steps; frozen variables keep every bit, trainable ones move. */
static void frozen_case(const char *model, const FineTune *f, Backend backend)
{
    Cell c;
    cell_create(&c, model, f, backend);
    const IrModule *m = &c.compiled.module;
    void *saved[64];
    cr_assert(m->nvars <= 64);
    for (int v = 0; v < m->nvars; v++) {
        saved[v] = malloc(var_bytes(&c, v) + 1);
        memcpy(saved[v], rt_var_data(&c.runner.vars, v), var_bytes(&c, v));
    }
    for (int step = 1; step <= 3; step++)
        train_step(&c, inputs, labels, step);
    int frozen = 0, moved = 0;
    for (int v = 0; v < m->nvars; v++) {
        bool same = memcmp(saved[v], rt_var_data(&c.runner.vars, v), var_bytes(&c, v)) == 0;
        if (m->vars[v].kind == IR_VAR_PARAM && m->vars[v].frozen) {
            cr_expect(same, "frozen %s changed", m->vars[v].name);
            frozen++;
        } else if (m->vars[v].kind == IR_VAR_PARAM) {
            cr_expect_not(same, "trainable %s did not change", m->vars[v].name);
            moved++;
        }
        free(saved[v]);
    }
    cr_expect_gt(frozen, 0);
    cr_expect_gt(moved, 0);
    cell_destroy(&c);
}

Test(finetune, lora_frozen_bits_interp)
{
    const char *targets[] = {"fc1"};
    FineTune f = lora(targets, 1);
    frozen_case("tiny", &f, BACKEND_INTERP);
}

Test(finetune, lora_frozen_bits_jit)
{
    const char *targets[] = {"fc1"};
    FineTune f = lora(targets, 1);
    frozen_case("tiny", &f, BACKEND_JIT);
}

Test(finetune, prompt_frozen_bits_jit)
{
    static const char *trainable[] = {"head"};
    FineTune f = {.kind = FINETUNE_PROMPT, .prompt_tokens = 3, .trainable = trainable,
                  .ntrainable = 1};
    frozen_case("prompted", &f, BACKEND_JIT);
}

/* The evaluation logits of a cell on `inputs`, copied to out[N * 3]. */
static void eval_logits(Cell *c, double *out)
{
    RtRunner *r = &c->runner.runner;
    set_input(c, false, inputs, labels);
    r->run(r->self, false, N);
    const void *logits = r->output(r->self, false, "logits");
    for (int i = 0; i < N * 3; i++)
        out[i] = c->dtype == DT_F64 ? ((const double *)logits)[i]
                                    : (double)((const float *)logits)[i];
}

static void lora_identity_case(Backend backend)
{
    const char *targets[] = {"fc1", "head"};
    FineTune f = lora(targets, 2);
    Cell base, adapted;
    cell_create(&base, "tiny", NULL, backend);
    cell_create(&adapted, "tiny", &f, backend);
    /* The same base weights in both; A keeps its random start, B is 0. */
    const IrModule *m = &base.compiled.module;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        int w = var_named(&adapted, m->vars[v].name);
        memcpy(rt_var_data(&adapted.runner.vars, w), rt_var_data(&base.runner.vars, v),
               var_bytes(&base, v));
    }
    const double *a = rt_var_data(&adapted.runner.vars, var_named(&adapted, "tiny.fc1.lora_A"));
    cr_assert(backend == BACKEND_JIT || a[0] != 0, "lora_A must start nonzero");
    double want[N * 3], got[N * 3];
    eval_logits(&base, want);
    eval_logits(&adapted, got);
    for (int i = 0; i < N * 3; i++)
        cr_expect_eq(got[i], want[i], "logit %d: %.17g with LoRA, %.17g without", i, got[i],
                     want[i]);
    cell_destroy(&base);
    cell_destroy(&adapted);
}

Test(finetune, lora_zero_b_is_base_interp) { lora_identity_case(BACKEND_INTERP); }
Test(finetune, lora_zero_b_is_base_jit) { lora_identity_case(BACKEND_JIT); }

Test(finetune, layer_matches_paths)
{
    cr_expect(layer_matches("net.block1.attn.qkv", "qkv"));
    cr_expect(layer_matches("net.block1.attn.qkv", "attn.qkv"));
    cr_expect(layer_matches("net.block1.attn.qkv", "net.block1.attn.qkv"));
    cr_expect_not(layer_matches("net.block1.attn.qkv", "kv"));
    cr_expect_not(layer_matches("net.block1.attn.qkv", "block1"));
    cr_expect_not(layer_matches("head", "net.head"));
}

/* Saves the parameters of c to a new temporary file; `path` is a mkstemp
 * template and receives the file's name. */
static void save_to_temp(const Cell *c, char *path)
{
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    char *error = NULL;
    cr_assert(weights_save(path, &c->compiled.module, &c->runner.vars, &error), "%s", error);
}

/* Parameters saved from one cell load bit for bit into a cell of another
 * scheme. The LoRA factors are not in the file, so they keep their
 * initialisation. */
Test(finetune, weights_round_trip_jit)
{
    char path[] = "/tmp/bocb-test-weights-XXXXXX";
    Cell base, adapted;
    cell_create(&base, "tiny", NULL, BACKEND_JIT);
    train_step(&base, inputs, labels, 1);
    save_to_temp(&base, path);
    char *error = NULL;

    const char *targets[] = {"fc1"};
    FineTune f = lora(targets, 1);
    cell_create(&adapted, "tiny", &f, BACKEND_JIT);
    int b = var_named(&adapted, "tiny.fc1.lora_B");
    int loaded = 0, total = 0;
    cr_assert(weights_load(path, &adapted.compiled.module, &adapted.runner.vars, &loaded,
                           &total, &error), "%s", error);
    cr_expect_eq(loaded, 4);
    cr_expect_eq(total, 6);
    const IrModule *m = &base.compiled.module;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        int w = var_named(&adapted, m->vars[v].name);
        cr_expect(memcmp(rt_var_data(&adapted.runner.vars, w), rt_var_data(&base.runner.vars, v),
                         var_bytes(&base, v)) == 0, "%s differs after loading",
                  m->vars[v].name);
    }
    const float *bv = rt_var_data(&adapted.runner.vars, b);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(bv[i], 0.0f);
    cell_destroy(&base);
    cell_destroy(&adapted);
    unlink(path);
}

/* A file saved from another model matches no parameter: an error, and
 * nothing is loaded. Parameter names start with the model's name. */
Test(finetune, weights_other_model)
{
    char path[] = "/tmp/bocb-test-weights-XXXXXX";
    Cell tiny, prompted;
    cell_create(&tiny, "tiny", NULL, BACKEND_INTERP);
    save_to_temp(&tiny, path);
    char *error = NULL;
    cell_create(&prompted, "prompted", NULL, BACKEND_INTERP);
    int mix = var_named(&prompted, "prompted.mix.weight");
    double before = ((const double *)rt_var_data(&prompted.runner.vars, mix))[0];
    int loaded = 0, total = 0;
    cr_assert_not(weights_load(path, &prompted.compiled.module, &prompted.runner.vars, &loaded,
                               &total, &error));
    cr_expect(strstr(error, "no tensor is named after a parameter") != NULL, "%s", error);
    cr_expect_eq(((const double *)rt_var_data(&prompted.runner.vars, mix))[0], before);
    free(error);
    cell_destroy(&tiny);
    cell_destroy(&prompted);
    unlink(path);
}
