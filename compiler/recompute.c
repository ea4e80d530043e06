/* recompute.c - activation recomputation (recompute.h).
 *
 * The decision is one forward sweep over the forward nodes, because an
 * operand always has a smaller id than its user:
 *
 *   cheap(v)  v is elementwise (not random) or a broadcast, of rank > 0.
 *   stays(v)  v's storage lives into the backward pass whatever this pass
 *             does: a leaf, a rank-0 value, an output, the root of a
 *             reshape the backward pass reads, or a value that is not
 *             cheap and that the backward pass reads.
 *   ok(v)     cheap v can be computed again from values that are alive
 *             in the backward pass. Each operand of v stays, or is cheap
 *             and ok itself (so it is computed again too), or is cheap and
 *             read by the backward pass (so it is kept). An operand that
 *             is not cheap may also be at most an eighth of v's size. It
 *             is then kept a little longer, which costs less than v.
 *
 * Every forward value that the backward pass reads, and that is cheap, ok
 * and does not stay, is recomputed. A copy of it goes just before its
 * first backward reader, and every backward reader reads the copy. The
 * copy reads copies of its operands that are cheap and ok and do not
 * stay, and its other operands themselves. The original is then read by
 * nodes before the backward pass only, so the memory plan frees it there
 * (or dead-code removal drops it).
 *
 * Random values are never copied: a copy reads the stored random tensor,
 * so a dropout mask in the backward pass is the very mask of the forward
 * pass. Matrix products, convolutions and the other library ops are never
 * copied either.
 */
#include "recompute.h"

#include <stdlib.h>
#include <string.h>

/* An operand may be kept alive into the backward pass in place of a
 * recomputed value when it has at most this fraction of its elements. */
enum { SMALL_OPERAND_RATIO = 8 };

typedef struct Rewrite {
    const IrGraph *g;   /* the graph before the rewrite */
    int backward_start;
    bool *stays, *ok;
    IrNode *out;        /* the new node array */
    int nout;
    int *map;           /* old id -> new id of the original */
    int *copy;          /* old forward id -> new id of its copy, or -1 */
} Rewrite;

static bool cheap(const IrGraph *g, int v, int backward_start)
{
    const IrNode *n = &g->nodes[v];
    if (v >= backward_start || n->shape.rank == 0 || n->op == IR_RANDOM)
        return false;
    return n->op == IR_BROADCAST || ir_op_class(n->op) == IR_CLASS_ELEMENTWISE;
}

/* Compares element counts at batch size 1; a batch axis scales both. */
static bool small_operand(const IrNode *operand, const IrNode *value)
{
    return shape_numel(&operand->shape, 1) * SMALL_OPERAND_RATIO <=
           shape_numel(&value->shape, 1);
}

/* Fills r->stays and r->ok for the forward nodes; `read_back` marks the
 * forward nodes that the backward pass reads. */
static void decide(Rewrite *r, const bool *read_back)
{
    const IrGraph *g = r->g;
    int fwd = r->backward_start;
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i].node < fwd)
            r->stays[g->outputs[i].node] = true;
    /* Reshapes alias their operand, so reading one keeps its root. */
    for (int v = fwd - 1; v >= 0; v--) {
        const IrNode *n = &g->nodes[v];
        bool leaf = n->op == IR_INPUT || n->op == IR_VAR || n->shape.rank == 0;
        if (leaf || (read_back[v] && !cheap(g, v, fwd)))
            r->stays[v] = true;
        if (n->op == IR_RESHAPE && (read_back[v] || r->stays[v]))
            r->stays[n->in[0]] = true;
    }
    for (int v = 0; v < fwd; v++) {
        if (!cheap(g, v, fwd))
            continue;
        const IrNode *n = &g->nodes[v];
        bool ok = true;
        for (int j = 0; j < n->nin && ok; j++) {
            int p = n->in[j];
            if (cheap(g, p, fwd))
                ok = r->ok[p] || read_back[p] || r->stays[p];
            else
                ok = r->stays[p] || small_operand(&g->nodes[p], n);
        }
        r->ok[v] = ok;
    }
}

/* Does a copy read a copy of forward node p rather than p itself? */
static bool copied(const Rewrite *r, int p)
{
    return cheap(r->g, p, r->backward_start) && r->ok[p] && !r->stays[p];
}

static int append(Rewrite *r, IrNode n)
{
    r->out[r->nout] = n;
    return r->nout++;
}

/* Returns the copy of forward node v, appending it (after the copies of
 * its copied operands) when it does not exist yet. Iterative: chains of
 * elementwise ops can be long. */
static int materialize(Rewrite *r, int v)
{
    IntVec stack = {0};
    VEC_PUSH(&stack, v);
    while (stack.len) {
        int x = stack.data[stack.len - 1];
        if (r->copy[x] >= 0) {
            stack.len--;
            continue;
        }
        const IrNode *n = &r->g->nodes[x];
        bool ready = true;
        for (int j = 0; j < n->nin; j++) {
            int p = n->in[j];
            if (copied(r, p) && r->copy[p] < 0) {
                VEC_PUSH(&stack, p);
                ready = false;
            }
        }
        if (!ready)
            continue;
        IrNode c = *n;
        for (int j = 0; j < c.nin; j++)
            c.in[j] = copied(r, c.in[j]) ? r->copy[c.in[j]] : r->map[c.in[j]];
        c.recomputed = true;
        r->copy[x] = append(r, c);
        stack.len--;
    }
    VEC_FREE(&stack);
    return r->copy[v];
}

int recompute_activations(IrGraph *g, int backward_start, int *ids, int nids)
{
    int n = g->nnodes;
    BOCB_ASSERT(backward_start >= 0 && backward_start <= n);
    bool *read_back = xcalloc((size_t)n + 1, sizeof(bool));
    for (int u = backward_start; u < n; u++)
        for (int j = 0; j < g->nodes[u].nin; j++)
            if (g->nodes[u].in[j] < backward_start)
                read_back[g->nodes[u].in[j]] = true;

    Rewrite r = {.g = g, .backward_start = backward_start};
    r.stays = xcalloc((size_t)n + 1, sizeof(bool));
    r.ok = xcalloc((size_t)n + 1, sizeof(bool));
    decide(&r, read_back);
    int recomputed = 0;
    for (int v = 0; v < backward_start; v++)
        if (read_back[v] && copied(&r, v))
            recomputed++;
    if (recomputed == 0) {
        free(read_back);
        free(r.stays);
        free(r.ok);
        return 0;
    }

    /* At most one copy of each forward node. */
    r.out = xmalloc(size_mul((size_t)n + (size_t)backward_start + 1, sizeof(IrNode)));
    r.map = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    r.copy = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    for (int v = 0; v < n; v++)
        r.copy[v] = -1;
    for (int v = 0; v < n; v++) {
        IrNode u = g->nodes[v];
        for (int j = 0; j < u.nin; j++) {
            int p = u.in[j];
            u.in[j] = v >= backward_start && copied(&r, p) ? materialize(&r, p) : r.map[p];
        }
        r.map[v] = append(&r, u);
    }

    free(g->nodes);
    g->nodes = r.out;
    g->nnodes = g->cap_nodes = r.nout;
    for (int i = 0; i < g->noutputs; i++)
        g->outputs[i].node = r.map[g->outputs[i].node];
    for (int i = 0; i < nids; i++)
        if (ids[i] >= 0)
            ids[i] = r.map[ids[i]];
    free(read_back);
    free(r.stays);
    free(r.ok);
    free(r.map);
    free(r.copy);
    return recomputed;
}
