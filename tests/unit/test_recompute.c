/* test_recompute.c - the recomputation pass (compiler/recompute.c) on
 * graphs built here, where each forward value's fate is known:
 *
 *   a = x w1 + b1        kept: the backward pass reads it, and it is
 *                        computed from a matrix product nothing keeps
 *   s = sigmoid(a)       recomputed from a
 *   y = a s              recomputed for h (SiLU)
 *   r = random(key)      never copied
 *   m = select(r >= 0.3, 1/0.7, 0)
 *                        kept: the dropout mask, from r
 *   d = y m              recomputed for h, with the kept mask
 *   h = relu(d)          recomputed
 *   loss = sum((h w2)^2)
 *
 * The rewritten graph must keep its forward nodes, read only a, m and
 * leaves from the backward pass, copy no random or library op, and give
 * the same gradients bit for bit in the interpreter. ReLU right after a
 * matrix product and bias (an MLP) is left alone.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/driver.h"
#include "../../compiler/recompute.h"

enum { N = 4, IN = 6, HID = 5, OUT = 3, NPARAMS = 3 };

typedef struct Net {
    Arena arena;
    IrModule module;
    IrGraph *g;
    int params[NPARAMS], grads[NPARAMS];
    int backward_start;
    int a, s, y, r, mask, d, h;
} Net;

static int scalar_like(IrGraph *g, double value, Shape shape)
{
    return ir_broadcast(g, ir_const(g, DT_F64, value, NO_LOC), shape, NO_LOC);
}

/* Builds the graph of the file comment (or, with `plain`, h = relu(a)),
 * its backward pass, and outputs g0.. for the gradients. */
static void build(Net *n, bool plain)
{
    memset(n, 0, sizeof *n);
    arena_init(&n->arena);
    ir_module_init(&n->module, &n->arena);
    Shape sx = shape_make(2, (int64_t[]){N, IN}), sh = shape_make(2, (int64_t[]){N, HID});
    n->params[0] = ir_module_add_var(&n->module, "w1", IR_VAR_PARAM, DT_F64,
                                     shape_make(2, (int64_t[]){IN, HID}), IR_INIT_UNIFORM, 0.5,
                                     -1, NO_LOC);
    n->params[1] = ir_module_add_var(&n->module, "b1", IR_VAR_PARAM, DT_F64,
                                     shape_make(1, (int64_t[]){HID}), IR_INIT_UNIFORM, 0.5, -1,
                                     NO_LOC);
    n->params[2] = ir_module_add_var(&n->module, "w2", IR_VAR_PARAM, DT_F64,
                                     shape_make(2, (int64_t[]){HID, OUT}), IR_INIT_UNIFORM, 0.5,
                                     -1, NO_LOC);
    int key = ir_module_add_var(&n->module, "key", IR_VAR_BUFFER, DT_F64, shape_scalar(),
                                IR_INIT_UNIFORM, 1.0, -1, NO_LOC);
    IrGraph *g = n->g = ir_graph_new(&n->module, "step");
    int x = ir_input(g, "x", DT_F64, sx, NO_LOC);
    int step = ir_input(g, "step", DT_F64, shape_scalar(), NO_LOC);
    int mm = ir_matmul(g, x, ir_var_read(g, n->params[0], NO_LOC), false, false, NO_LOC);
    int bias = ir_broadcast(g, ir_var_read(g, n->params[1], NO_LOC), sh, NO_LOC);
    n->a = ir_binary(g, IR_ADD, mm, bias, NO_LOC);
    if (plain) {
        n->h = ir_unary(g, IR_RELU, n->a, NO_LOC);
    } else {
        n->s = ir_unary(g, IR_SIGMOID, n->a, NO_LOC);
        n->y = ir_binary(g, IR_MUL, n->a, n->s, NO_LOC);
        n->r = ir_random(g, ir_var_read(g, key, NO_LOC), step, sh, NO_LOC);
        int keep = ir_binary(g, IR_GE, n->r, scalar_like(g, 0.3, sh), NO_LOC);
        n->mask = ir_select(g, keep, scalar_like(g, 1 / 0.7, sh), scalar_like(g, 0, sh), NO_LOC);
        n->d = ir_binary(g, IR_MUL, n->y, n->mask, NO_LOC);
        n->h = ir_unary(g, IR_RELU, n->d, NO_LOC);
    }
    int out = ir_matmul(g, n->h, ir_var_read(g, n->params[2], NO_LOC), false, false, NO_LOC);
    int loss = ir_sum(g, ir_binary(g, IR_MUL, out, out, NO_LOC), 3u, NO_LOC);
    ir_add_output(g, "loss", loss);
    n->backward_start = g->nnodes;
    cr_assert(ad_backward(g, loss, n->params, NPARAMS, n->grads));
}

static void add_grad_outputs(Net *n)
{
    static const char *const names[NPARAMS] = {"g0", "g1", "g2"};
    for (int i = 0; i < NPARAMS; i++)
        ir_add_output(n->g, names[i], n->grads[i]);
    cr_assert(ir_verify(n->g));
}

static void destroy(Net *n)
{
    ir_graph_free(n->g);
    ir_module_free(&n->module);
    arena_free(&n->arena);
}

static int count_op(const IrGraph *g, IrOp op)
{
    int count = 0;
    for (int i = 0; i < g->nnodes; i++)
        count += g->nodes[i].op == op;
    return count;
}

/* Runs `g` once on fixed data and copies the gradients g0.. into out. */
static void run_grads(const IrGraph *g, const IrModule *m, double *out[NPARAMS],
                      const int64_t *sizes)
{
    RtVarStore store;
    create_var_store(&store, m);
    rt_vars_reset(&store, 11);
    double x[N * IN], step = 7;
    for (int i = 0; i < N * IN; i++)
        x[i] = 0.3 * (i % 5) - 0.6 + 0.01 * i;
    Interp *it = interp_create(g, &store);
    interp_bind_input(it, ir_find_input(g, "x"), x);
    interp_bind_input(it, ir_find_input(g, "step"), &step);
    interp_run(it, N);
    static const char *const names[NPARAMS] = {"g0", "g1", "g2"};
    for (int i = 0; i < NPARAMS; i++) {
        out[i] = xmalloc(size_mul((size_t)sizes[i], sizeof(double)));
        memcpy(out[i], interp_output(it, names[i]), (size_t)sizes[i] * sizeof(double));
    }
    interp_destroy(it);
    rt_vars_free(&store);
}

Test(recompute, copies_cheap_values_and_keeps_the_rest)
{
    Net n;
    build(&n, false);
    add_grad_outputs(&n);
    IrGraph *before = ir_graph_clone(n.g, "before");
    int randoms = count_op(n.g, IR_RANDOM), products = count_op(n.g, IR_MATMUL);

    int recomputed = recompute_activations(n.g, n.backward_start, n.grads, NPARAMS);
    cr_assert(ir_verify(n.g));
    /* The backward pass reads s and h, and h is computed again from y
     * and d, so s, y, d and h are copied once each. */
    cr_expect_eq(recomputed, 2, "%d recomputed", recomputed);
    cr_expect_eq(memcmp(n.g->nodes, before->nodes, (size_t)n.backward_start * sizeof(IrNode)),
                 0, "a forward node changed");
    cr_expect_eq(count_op(n.g, IR_RANDOM), randoms);
    cr_expect_eq(count_op(n.g, IR_MATMUL), products);

    int copies = 0;
    for (int v = n.backward_start; v < n.g->nnodes; v++) {
        const IrNode *u = &n.g->nodes[v];
        if (u->recomputed) {
            copies++;
            cr_expect(u->op == IR_BROADCAST || ir_op_class(u->op) == IR_CLASS_ELEMENTWISE,
                      "%%%d %s is copied", v, ir_op_name(u->op));
        }
        for (int j = 0; j < u->nin; j++) {
            int o = u->in[j];
            cr_expect(o != n.s && o != n.y && o != n.d && o != n.h && o != n.r,
                      "%%%d %s reads the forward value %%%d", v, ir_op_name(u->op), o);
        }
    }
    cr_expect_eq(copies, 4, "%d copies", copies);
    for (int v = 0; v < n.backward_start; v++)
        cr_expect(!n.g->nodes[v].recomputed);
    /* The gradients are renumbered with the graph. */
    for (int i = 0; i < NPARAMS; i++) {
        cr_expect_eq(n.grads[i], n.g->outputs[1 + i].node);
        cr_expect(shape_equal(&n.g->nodes[n.grads[i]].shape,
                              &n.module.vars[n.params[i]].shape));
    }

    /* The same gradients, bit for bit. */
    int64_t sizes[NPARAMS] = {IN * HID, HID, HID * OUT};
    double *want[NPARAMS], *got[NPARAMS];
    run_grads(before, &n.module, want, sizes);
    run_grads(n.g, &n.module, got, sizes);
    for (int i = 0; i < NPARAMS; i++) {
        cr_expect_eq(memcmp(want[i], got[i], (size_t)sizes[i] * sizeof(double)), 0,
                     "gradient %d differs", i);
        free(want[i]);
        free(got[i]);
    }
    ir_graph_free(before);
    destroy(&n);
}

Test(recompute, relu_after_a_product_is_kept)
{
    /* relu(x w1 + b1): recomputing it would need x w1, which nothing else
     * keeps and which is as large as the ReLU output. */
    Net n;
    build(&n, true);
    add_grad_outputs(&n);
    int nodes = n.g->nnodes;
    int grads[NPARAMS];
    memcpy(grads, n.grads, sizeof grads);
    cr_expect_eq(recompute_activations(n.g, n.backward_start, n.grads, NPARAMS), 0);
    cr_expect_eq(n.g->nnodes, nodes);
    cr_expect_eq(memcmp(grads, n.grads, sizeof grads), 0);
    destroy(&n);
}
