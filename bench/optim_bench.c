/* optim_bench.c - `make bench`: the AdamW update against memory bandwidth.
 *
 * Expands stdlib/optim/adamw.bocb for one parameter of N f32 elements
 * (10 million by default) whose gradient is a graph input, schedules and
 * JIT-compiles it as bocbc does, and times the update. It moves 28 bytes
 * per element: it reads the parameter, the gradient and both moments and
 * writes the parameter and both moments. Measured in the same run:
 *
 *   triad    a[i] = b[i] + s * c[i] over three f32 arrays of N elements
 *            (12 bytes per element), the STREAM benchmark's triad;
 *   C loop   the same AdamW step as one hand-written C loop;
 *   unfused  the same AdamW step as one C loop per operation, the way an
 *            eager framework runs it (one pass over memory per operation).
 *
 * It also times LAMB, whose update adds two norms (a reduction kernel
 * and an update kernel, 40 bytes per element).
 *
 * Prints the best time of each over REPEATS runs, its bytes per second,
 * and the fused update's bandwidth as a fraction of the triad's.
 *
 * Usage: optim_bench [N] [REPEATS]   (BOCB_STDLIB names the stdlib)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../compiler/driver.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *filled(int64_t n, float value)
{
    float *a = xmalloc(size_mul((size_t)n, sizeof(float)));
    for (int64_t i = 0; i < n; i++)
        a[i] = value + 1e-7f * (float)(i & 1023);
    return a;
}

static void triad(int64_t n, float *restrict a, const float *restrict b,
                  const float *restrict c, float s)
{
    for (int64_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

static double best_triad(int64_t n, int repeats)
{
    float *a = filled(n, 0), *b = filled(n, 1), *c = filled(n, 2);
    const float s = 3.0f;
    double best = INFINITY;
    for (int r = 0; r < repeats + 1; r++) {
        double t0 = now();
        triad(n, a, b, c, s);
        double t = now() - t0;
        if (r > 0 && t < best) /* the first run faults the pages in */
            best = t;
    }
    if (a[n / 2] < 0) /* keep the loop */
        puts("");
    free(a);
    free(b);
    free(c);
    return best;
}

/* The arrays of a C AdamW step; d is scratch for the unfused form. */
typedef struct AdamwArrays {
    float *p, *g, *m, *v, *d;
} AdamwArrays;

typedef void (*AdamwStep)(int64_t n, const AdamwArrays *a, float step);

static const float LR = 1e-3f, WD = 1e-2f, B1 = 0.9f, B2 = 0.999f, EPS = 1e-8f;

/* The whole AdamW step in one C loop: what the fused kernel should match. */
static void adamw_loop(int64_t n, const AdamwArrays *a, float step)
{
    float *restrict p = a->p, *restrict m = a->m, *restrict v = a->v;
    const float *restrict g = a->g;
    float step_size = LR / (1 - powf(B1, step)), root_bc2 = sqrtf(1 - powf(B2, step));
    for (int64_t i = 0; i < n; i++) {
        float mi = B1 * m[i] + (1 - B1) * g[i];
        float vi = B2 * v[i] + (1 - B2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * (1 - LR * WD) - step_size * mi / (sqrtf(vi) / root_bc2 + EPS);
    }
}

/* torch.optim.AdamW's single-tensor step, one loop per tensor operation. */
static void adamw_unfused(int64_t n, const AdamwArrays *a, float step)
{
    float *restrict p = a->p, *restrict m = a->m, *restrict v = a->v, *restrict d = a->d;
    const float *restrict g = a->g;
    float bc1 = 1 - powf(B1, step), bc2 = 1 - powf(B2, step);
    for (int64_t i = 0; i < n; i++) p[i] *= 1 - LR * WD;              /* param.mul_ */
    for (int64_t i = 0; i < n; i++) m[i] = m[i] * B1 + (1 - B1) * g[i]; /* lerp_ */
    for (int64_t i = 0; i < n; i++) v[i] *= B2;                        /* mul_ */
    for (int64_t i = 0; i < n; i++) v[i] += (1 - B2) * g[i] * g[i];    /* addcmul_ */
    for (int64_t i = 0; i < n; i++) d[i] = sqrtf(v[i]);                /* sqrt */
    for (int64_t i = 0; i < n; i++) d[i] /= sqrtf(bc2);                /* div_ */
    for (int64_t i = 0; i < n; i++) d[i] += EPS;                       /* add_ */
    for (int64_t i = 0; i < n; i++) p[i] -= LR / bc1 * m[i] / d[i];    /* addcdiv_ */
}

/* Times `fn` on fresh arrays: the best of `repeats` runs after a warm-up. */
static double best_c_step(int64_t n, int repeats, AdamwStep fn)
{
    AdamwArrays a = {filled(n, 0.5f), filled(n, 0.1f), filled(n, 0), filled(n, 0),
                     filled(n, 0)};
    double best = INFINITY;
    for (int r = 0; r < repeats + 1; r++) {
        double t0 = now();
        fn(n, &a, (float)(r + 1));
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    if (a.p[n / 2] > 1e30f) /* keep the loops */
        puts("");
    free(a.p);
    free(a.g);
    free(a.m);
    free(a.v);
    free(a.d);
    return best;
}

/* Times the update of optimizer configuration `spec` (e.g. "adamw()"),
 * compiled as bocbc compiles it, and returns the best time. */
static double best_fused(const char *spec, int64_t n, int repeats, int *nsteps)
{
    Arena arena;
    arena_init(&arena);
    const char *dir = getenv("BOCB_STDLIB");
    SearchPath search = {.stdlib_dir = dir ? dir : "stdlib"};
    char *text = xasprintf("import \"std/optim\"\nexperiment e { optimizer = %s }\n", spec);
    Program *program = load_program_string("bench.bocb", text, &search, &arena);
    free(text);
    if (!program || diag_error_count()) {
        fprintf(stderr, "optim_bench: the stdlib did not load\n");
        exit(1);
    }
    Lower lower;
    lower_init(&lower, program, &arena);
    lower.mode = MODE_EXPERIMENT;
    Value opt = eval_expr(&lower, program->main->decls[1]->body.stmts[0]->assign.value);

    IrModule module;
    ir_module_init(&module, &arena);
    IrGraph *g = ir_graph_new(&module, "update");
    Shape shape = shape_make(1, &n);
    int param = ir_module_add_var(&module, "w", IR_VAR_PARAM, DT_F32, shape, IR_INIT_CONST, 0.5,
                                  -1, NO_LOC);
    int grad = ir_input(g, "grad", DT_F32, shape, NO_LOC);
    int lr = ir_input(g, "lr", DT_F32, shape_scalar(), NO_LOC);
    int step = ir_input(g, "step", DT_F32, shape_scalar(), NO_LOC);
    lower.graph = g;
    lower.module = &module;
    lower.dtype = DT_F32;
    if (opt.kind != VAL_CONFIGURED ||
        !expand_optimizer(&lower, opt.configured, param, grad, lr, step)) {
        fprintf(stderr, "optim_bench: %s did not expand\n", spec);
        exit(1);
    }
    ir_dce(g);

    RtVarStore store;
    create_var_store(&store, &module);
    rt_vars_reset(&store, 0);
    Schedule sched;
    schedule_graph(g, 1, &sched);
    char *error = NULL;
    Jit *jit = jit_create(&error);
    if (!jit || !jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels, &error)) {
        fprintf(stderr, "optim_bench: %s\n", error);
        exit(1);
    }
    *nsteps = sched.program.nsteps;
    RtExec *e = rt_exec_create(&sched.program, &store);
    float *gbuf = rt_exec_input(e, "grad");
    for (int64_t i = 0; i < n; i++)
        gbuf[i] = 0.1f + 1e-7f * (float)(i & 1023);
    *(float *)rt_exec_input(e, "lr") = 1e-3f;
    double best = INFINITY;
    for (int r = 0; r < repeats + 1; r++) {
        *(float *)rt_exec_input(e, "step") = (float)(r + 1);
        double t0 = now();
        rt_exec_run(e, 1);
        double t = now() - t0;
        if (r > 0 && t < best)
            best = t;
    }
    rt_exec_destroy(e);
    schedule_free(&sched);
    jit_destroy(jit);
    rt_vars_free(&store);
    ir_graph_free(g);
    ir_module_free(&module);
    lower_free(&lower);
    arena_free(&arena);
    return best;
}

int main(int argc, char **argv)
{
    int64_t n = argc > 1 ? atoll(argv[1]) : 10000000;
    int repeats = argc > 2 ? atoi(argv[2]) : 10;
    if (n < 1 || repeats < 1) {
        fprintf(stderr, "usage: optim_bench [N] [REPEATS]\n");
        return 2;
    }
    int nsteps = 0, lamb_steps = 0;
    double triad = best_triad(n, repeats);
    double fused = best_fused("adamw()", n, repeats, &nsteps);
    double lamb = best_fused("lamb(weight_decay = 0.01)", n, repeats, &lamb_steps);
    double loop = best_c_step(n, repeats, adamw_loop);
    double unfused = best_c_step(n, repeats, adamw_unfused);
    double gb = 1e-9 * (double)n;
    printf("AdamW update of %lld f32 parameters, best of %d runs\n", (long long)n, repeats);
    printf("%-28s %10s %10s %12s\n", "", "ms", "GB/s", "of triad");
    printf("%-28s %10.2f %10.2f %11.0f%%\n", "STREAM triad (12 B/elem)", 1e3 * triad,
           12 * gb / triad, 100.0);
    printf("%-28s %10.2f %10.2f %11.0f%%\n", "bocb fused (28 B/elem)", 1e3 * fused,
           28 * gb / fused, 100 * (28 * gb / fused) / (12 * gb / triad));
    printf("%-28s %10.2f %10.2f %11.0f%%\n", "one C loop (28 B/elem)", 1e3 * loop,
           28 * gb / loop, 100 * (28 * gb / loop) / (12 * gb / triad));
    printf("%-28s %10.2f %10.2f %11.0f%%\n", "unfused loops (28 B/elem)", 1e3 * unfused,
           28 * gb / unfused, 100 * (28 * gb / unfused) / (12 * gb / triad));
    printf("fused program: %d step%s; unfused is %.2fx the fused time\n", nsteps,
           nsteps == 1 ? "" : "s", unfused / fused);
    /* LAMB: a kernel that reads the gradient, the parameter and both
     * moments, writes both moments and the update, and sums two norms;
     * then one that reads the update and the parameter and writes it. */
    printf("%-28s %10.2f %10.2f %11.0f%%  (%d steps)\n", "bocb LAMB (40 B/elem)", 1e3 * lamb,
           40 * gb / lamb, 100 * (40 * gb / lamb) / (12 * gb / triad), lamb_steps);
    return 0;
}
