/* test_shard_steps.c - the gather_shards and reduce_shards steps of
 * sharded training (ir.h) in the interpreter and the executor, on a
 * graph built here:
 *
 *   h = x gather(w1)           forward
 *   y = h gather(w2)
 *   reduce(w2, h^T y)          the "gradients" of w2 and w1
 *   reduce(w1, x^T (y gather(w2)^T))
 *
 * Both backends must call the hooks in program order, pass the gathered
 * values on and hand each reduce step the value a graph with plain
 * variable reads computes. Dead-code removal keeps the reduce steps,
 * which nothing reads, and the memory plan keeps one gathered weight at
 * a time.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "../../compiler/driver.h"
#include "../../compiler/interp.h"
#include "../../compiler/schedule.h"

enum { N = 8, NUMEL = N * N, MAX_EVENTS = 8 };

/* What the hooks saw: the variable of each call, in order, and the
 * gradient each reduce step sent. */
typedef struct Recorder {
    const RtVarStore *store; /* the weights that gathers return */
    int events[MAX_EVENTS];  /* gather: var + 1; reduce: -(var + 1) */
    int nevents;
    float reduced[2][NUMEL];
} Recorder;

static void record_gather(void *context, int var, void *out)
{
    Recorder *r = context;
    cr_assert_lt(r->nevents, MAX_EVENTS);
    r->events[r->nevents++] = var + 1;
    memcpy(out, rt_var_data(r->store, var), sizeof(float) * NUMEL);
}

static void record_reduce(void *context, int var, const void *grad)
{
    Recorder *r = context;
    cr_assert_lt(r->nevents, MAX_EVENTS);
    cr_assert(var == 0 || var == 1);
    r->events[r->nevents++] = -(var + 1);
    memcpy(r->reduced[var], grad, sizeof(float) * NUMEL);
}

typedef struct Net {
    Arena arena;
    IrModule module;
    IrGraph *g;
    int w1, w2;
} Net;

/* Builds the graph of the file comment. With `sharded` it reads the
 * weights through gathers and sends the gradients through reduce steps,
 * else it reads the variables and outputs the gradients g1 and g2. */
static void build(Net *n, bool sharded)
{
    memset(n, 0, sizeof *n);
    arena_init(&n->arena);
    ir_module_init(&n->module, &n->arena);
    Shape square = shape_make(2, (int64_t[]){N, N});
    n->w1 = ir_module_add_var(&n->module, "w1", IR_VAR_PARAM, DT_F32, square, IR_INIT_UNIFORM,
                              1.0, -1, NO_LOC);
    n->w2 = ir_module_add_var(&n->module, "w2", IR_VAR_PARAM, DT_F32, square, IR_INIT_UNIFORM,
                              1.0, -1, NO_LOC);
    IrGraph *g = n->g = ir_graph_new(&n->module, "step");
    int x = ir_input(g, "x", DT_F32, square, NO_LOC);
    int w1 = sharded ? ir_gather_shards(g, n->w1, NO_LOC) : ir_var_read(g, n->w1, NO_LOC);
    int h = ir_matmul(g, x, w1, false, false, NO_LOC);
    int w2 = sharded ? ir_gather_shards(g, n->w2, NO_LOC) : ir_var_read(g, n->w2, NO_LOC);
    int y = ir_matmul(g, h, w2, false, false, NO_LOC);
    ir_add_output(g, "y", y);
    int g2 = ir_matmul(g, h, y, true, false, NO_LOC);
    if (sharded) {
        ir_reduce_shards(g, n->w2, g2, NO_LOC);
        w2 = ir_gather_shards(g, n->w2, NO_LOC);
    } else {
        ir_add_output(g, "g2", g2);
    }
    int dh = ir_matmul(g, y, w2, false, true, NO_LOC);
    int g1 = ir_matmul(g, x, dh, true, false, NO_LOC);
    if (sharded)
        ir_reduce_shards(g, n->w1, g1, NO_LOC);
    else
        ir_add_output(g, "g1", g1);
    ir_dce(g);
    cr_assert(ir_verify(g));
}

static void free_net(Net *n)
{
    ir_graph_free(n->g);
    ir_module_free(&n->module);
    arena_free(&n->arena);
}

static void fill_input(float *x)
{
    for (int i = 0; i < NUMEL; i++)
        x[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
}

/* The gradients of the graph with variable reads, from the interpreter. */
static void reference(Net *n, RtVarStore *store, float g1[NUMEL], float g2[NUMEL])
{
    float x[NUMEL];
    fill_input(x);
    Interp *it = interp_create(n->g, store);
    interp_bind_input(it, ir_find_input(n->g, "x"), x);
    interp_run(it, N);
    memcpy(g1, interp_output(it, "g1"), sizeof(float) * NUMEL);
    memcpy(g2, interp_output(it, "g2"), sizeof(float) * NUMEL);
    interp_destroy(it);
}

static void expect_calls(const Recorder *r, const Net *n, const float *g1, const float *g2)
{
    /* The forward gathers, the reduce of w2, the backward gather of w2,
     * the reduce of w1: program order. */
    const int want[] = {n->w1 + 1, n->w2 + 1, -(n->w2 + 1), n->w2 + 1, -(n->w1 + 1)};
    cr_assert_eq(r->nevents, (int)BOCB_ARRAY_LEN(want));
    for (int i = 0; i < r->nevents; i++)
        cr_expect_eq(r->events[i], want[i], "call %d: %d, expected %d", i, r->events[i],
                     want[i]);
    cr_expect(memcmp(r->reduced[n->w1], g1, sizeof(float) * NUMEL) == 0);
    cr_expect(memcmp(r->reduced[n->w2], g2, sizeof(float) * NUMEL) == 0);
}

static int count_op(const IrGraph *g, IrOp op)
{
    int count = 0;
    for (int i = 0; i < g->nnodes; i++)
        count += g->nodes[i].op == op;
    return count;
}

Test(shard_steps, interpreter_and_executor_call_hooks)
{
    Net plain, sharded;
    build(&plain, false);
    build(&sharded, true);
    cr_assert_eq(count_op(sharded.g, IR_REDUCE_SHARDS), 2);
    cr_assert_eq(count_op(sharded.g, IR_GATHER_SHARDS), 3);
    RtVarStore store;
    create_var_store(&store, &plain.module);
    rt_vars_reset(&store, 1);
    float g1[NUMEL], g2[NUMEL];
    reference(&plain, &store, g1, g2);

    float x[NUMEL];
    fill_input(x);
    Recorder rec = {.store = &store};
    RtShardHooks hooks = {.gather = record_gather, .reduce = record_reduce, .context = &rec};
    Interp *it = interp_create(sharded.g, &store);
    interp_set_shard_hooks(it, &hooks);
    interp_bind_input(it, ir_find_input(sharded.g, "x"), x);
    interp_run(it, N);
    expect_calls(&rec, &sharded, g1, g2);
    interp_destroy(it);

    /* Library steps only, so the program needs no JIT. */
    Schedule sched;
    schedule_graph(sharded.g, N, &sched);
    cr_assert_eq(sched.nkernels, 0);
    cr_expect_eq(sched.program.gathered_bytes, sizeof(float) * NUMEL,
                 "gathered %zu bytes at once", sched.program.gathered_bytes);
    memset(&rec, 0, sizeof rec);
    rec.store = &store;
    RtExec *e = rt_exec_create(&sched.program, &store);
    rt_exec_set_shard_hooks(e, &hooks);
    memcpy(rt_exec_input(e, "x"), x, sizeof x);
    rt_exec_run(e, N);
    expect_calls(&rec, &sharded, g1, g2);
    rt_exec_destroy(e);
    schedule_free(&sched);

    rt_vars_free(&store);
    free_net(&plain);
    free_net(&sharded);
}
