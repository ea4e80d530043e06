/* zo_run.c - runs one zeroth-order training step over the graphs of
 * zo.c. For query k (counter c_k = (step - 1) * q + k + 1):
 *
 *   two-sided: perturb +eps, L+ ; perturb -2 eps, L- ; pg_k = (L+ - L-) / (2 eps)
 *   one-sided: (L0 once per step) perturb +eps, L+ ; pg_k = (L+ - L0) / eps
 *
 * and every query but the last moves the parameters back with one more
 * perturbation. The update graph then restores the last query's
 * perturbation and applies the optimizer to (1/q) sum_k pg_k z_k in one
 * pass. Only the q scalars pg_k are kept; z is regenerated in each pass.
 *
 * With blocks, only block (step - 1) % nblocks moves in the step. With
 * mask = magnitude, the first step sets each parameter's sparsity from
 * the magnitudes of the weights (set_magnitude_sparsity). With
 * conservative = true (ZO-SGD-Cons), the step also evaluates L(theta)
 * first, restores theta, and instead of the update graph evaluates the
 * SGD steps theta - lr g and theta + lr g with the perturbation graph,
 * keeping the best of the three points.
 *
 * The step reports the loss and logits of its first forward pass: L(theta)
 * when one-sided, L(theta + eps z_0) when two-sided (as MeZO does). Only
 * the last pass commits the training graph's assignments: buffer updates
 * (batch norm's running statistics) and, in hybrid training, the
 * backpropagated updates, so no loss difference sees them. All passes of
 * a step use the same dropout masks, since those are keyed by the step.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "run.h"

static void put(DType dt, void *p, double v)
{
    if (!p) /* an input that no node of the graph reads */
        return;
    if (dt == DT_F64)
        *(double *)p = v;
    else
        *(float *)p = (float)v;
}

static double get(DType dt, const void *p)
{
    return dt == DT_F64 ? *(const double *)p : *(const float *)p;
}

static void perturb(CellRunner *r, double counter, double scale)
{
    DType dt = r->runner.dtype;
    put(dt, cell_graph_input(r, CELL_ZO_PERTURB, "zo_scale"), scale);
    put(dt, cell_graph_input(r, CELL_ZO_PERTURB, "zo_counter"), counter);
    cell_graph_run(r, CELL_ZO_PERTURB, 1);
}

/* Runs the forward pass and returns its loss. The first pass of a step is
 * the one the step reports, and the last commits the training graph's
 * assignments. */
static double forward(CellRunner *r, int64_t batch, bool *first, bool last)
{
    DType dt = r->runner.dtype;
    put(dt, cell_graph_input(r, CELL_TRAIN, "zo_commit"), last ? 1.0 : 0.0);
    cell_graph_run(r, CELL_TRAIN, batch);
    double loss = get(dt, cell_graph_output(r, CELL_TRAIN, "loss"));
    if (*first) {
        const IrGraph *g = r->cell->train;
        const IrNode *n = &g->nodes[ir_find_output(g, "logits")];
        memcpy(r->zo_logits, cell_graph_output(r, CELL_TRAIN, "logits"),
               size_mul((size_t)shape_numel(&n->shape, batch), dtype_size(dt)));
        put(dt, &r->zo_loss, loss);
        *first = false;
    }
    return loss;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* mask = magnitude, the global rule of ZO-Bench's sparse perturbations:
 * T is the s-quantile of |w| over every trainable entry, and each
 * parameter's sparsity buffer gets the fraction of its own entries with
 * |w| <= T. So a tensor of small weights is perturbed more sparsely. */
static void set_magnitude_sparsity(CellRunner *r)
{
    const IrModule *m = &r->cell->module;
    int64_t total = 0;
    for (int v = 0; v < m->nvars; v++)
        if (m->vars[v].kind == IR_VAR_PARAM)
            total += shape_numel(&m->vars[v].shape, 1);
    if (total == 0)
        return;
    double *magnitudes = xmalloc(size_mul((size_t)total, sizeof *magnitudes)), *at = magnitudes;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        int64_t n = shape_numel(&m->vars[v].shape, 1);
        const void *data = rt_var_data(&r->vars, v);
        for (int64_t i = 0; i < n; i++)
            *at++ = fabs(get(m->vars[v].dtype, (const char *)data +
                                                   i * (int64_t)dtype_size(m->vars[v].dtype)));
    }
    qsort(magnitudes, (size_t)total, sizeof *magnitudes, compare_doubles);
    double threshold = magnitudes[(int64_t)(r->cell->zo->spec.sparsity * (double)(total - 1))];
    free(magnitudes);

    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        char *name = xasprintf("%s.zo_sparsity", m->vars[v].name);
        int buffer = ir_module_find_var(m, name);
        free(name);
        BOCB_ASSERT(buffer >= 0);
        DType dt = m->vars[v].dtype;
        int64_t n = shape_numel(&m->vars[v].shape, 1), small = 0;
        const char *data = rt_var_data(&r->vars, v);
        for (int64_t i = 0; i < n; i++)
            small += fabs(get(dt, data + i * (int64_t)dtype_size(dt))) <= threshold;
        put(dt, rt_var_data(&r->vars, buffer), (double)small / (double)n);
    }
}

/* Moves the parameters by scale * sum_k pg_k z_k over the step's
 * queries: scale = -lr / q is the SGD step on the estimate. */
static void move(CellRunner *r, const double *pg, const double *counter, int queries,
                 double scale)
{
    for (int k = 0; k < queries; k++)
        perturb(r, counter[k], scale * pg[k]);
}

/* ZO-SGD-Cons: from the restored parameters p, evaluates p - lr g and
 * p + lr g (g the estimate) and keeps the one of the three with the lowest
 * loss, the earliest on ties. `base` is L(p). */
static void conservative_step(CellRunner *r, int64_t batch, bool *first, double base,
                              const double *pg, const double *counter, int queries)
{
    DType dt = r->runner.dtype;
    double scale = get(dt, cell_graph_input(r, CELL_ZO_UPDATE, "lr")) / queries;
    move(r, pg, counter, queries, -scale);
    double lower = forward(r, batch, first, false);
    move(r, pg, counter, queries, 2 * scale);
    double upper = forward(r, batch, first, true);
    if (base <= lower && base <= upper)
        move(r, pg, counter, queries, -scale);
    else if (lower <= upper)
        move(r, pg, counter, queries, -2 * scale);
}

void zo_run_step(CellRunner *r, int64_t batch)
{
    const ZoSpec *zo = &r->cell->zo->spec;
    DType dt = r->runner.dtype;
    double step = get(dt, cell_graph_input(r, CELL_ZO_UPDATE, "step"));
    put(dt, cell_graph_input(r, CELL_TRAIN, "step"), step);
    put(dt, cell_graph_input(r, CELL_TRAIN, "lr"),
        get(dt, cell_graph_input(r, CELL_ZO_UPDATE, "lr")));

    /* Block-wise: blocks take turns in module order, one per step. */
    double block = fmod(step - 1, r->cell->zo->nblocks);
    put(dt, cell_graph_input(r, CELL_ZO_PERTURB, "zo_block"), block);
    put(dt, cell_graph_input(r, CELL_ZO_UPDATE, "zo_block"), block);

    if (zo->magnitude_mask && zo->sparsity > 0 && step == 1)
        set_magnitude_sparsity(r);

    bool first = true, two_sided = zo->mode == ZO_TWO_SIDED, cons = zo->conservative;
    double eps = zo->eps, base = 0, pg[64], counter[64];
    if (!two_sided || cons)
        base = forward(r, batch, &first, false);
    for (int k = 0; k < zo->queries; k++) {
        counter[k] = (step - 1) * zo->queries + k + 1;
        bool last = k + 1 == zo->queries && !cons;
        perturb(r, counter[k], eps);
        double plus = forward(r, batch, &first, last && !two_sided);
        if (two_sided) {
            perturb(r, counter[k], -2 * eps);
            pg[k] = (plus - forward(r, batch, &first, last)) / (2 * eps);
        } else {
            pg[k] = (plus - base) / eps;
        }
        if (k + 1 < zo->queries || cons)
            perturb(r, counter[k], two_sided ? eps : -eps);
        if (zo->sign)
            pg[k] = (pg[k] > 0) - (pg[k] < 0);
        char name[32];
        snprintf(name, sizeof name, "zo_pg.%d", k);
        put(dt, cell_graph_input(r, CELL_ZO_UPDATE, name), pg[k]);
        snprintf(name, sizeof name, "zo_counter.%d", k);
        put(dt, cell_graph_input(r, CELL_ZO_UPDATE, name), counter[k]);
    }
    if (cons)
        conservative_step(r, batch, &first, base, pg, counter, zo->queries);
    else
        cell_graph_run(r, CELL_ZO_UPDATE, 1);
}
