/* analyze_surface.c - coherence of the per-sample Hessians and the
 * stability of SGD on a trained model. */
#include "analyze.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff.h"
#include "../runtime/philox.h"

/* The loss attributes of the graph's per-sample loss node. */
static IrLossAttr graph_loss(const IrGraph *g)
{
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == IR_CROSS_ENTROPY)
            return g->nodes[i].attr.loss;
    return (IrLossAttr){.kind = IR_LOSS_CROSS_ENTROPY};
}

/* The Hessian of the per-sample loss in the logits, C x C: diag(p) - p p'
 * for cross-entropy with any label smoothing, (2 / C) I for MSE. */
static void loss_hessian(IrLossKind kind, const double *logits, int64_t c, double *l)
{
    memset(l, 0, (size_t)(c * c) * sizeof *l);
    if (kind == IR_LOSS_MSE) {
        for (int64_t a = 0; a < c; a++)
            l[a * c + a] = 2.0 / (double)c;
        return;
    }
    double max = logits[0], total = 0;
    for (int64_t a = 1; a < c; a++)
        max = logits[a] > max ? logits[a] : max;
    double *p = xcalloc((size_t)c, sizeof *p);
    for (int64_t a = 0; a < c; a++)
        total += p[a] = exp(logits[a] - max);
    for (int64_t a = 0; a < c; a++)
        p[a] /= total;
    for (int64_t a = 0; a < c; a++)
        for (int64_t b = 0; b < c; b++)
            l[a * c + b] = (a == b ? p[a] : 0.0) - p[a] * p[b];
    free(p);
}

/* The largest eigenvalue of the m x m matrix a, whose eigenvalues are real
 * and non-negative (a product of two PSD matrices, or a non-negative
 * symmetric matrix), by power iteration from the all-ones vector. */
static double top_eigenvalue(const double *a, int64_t m)
{
    double *v = xcalloc((size_t)m, sizeof *v), *w = xcalloc((size_t)m, sizeof *w);
    for (int64_t i = 0; i < m; i++)
        v[i] = 1.0 / sqrt((double)m);
    double lambda = 0;
    for (int it = 0; it < 1000; it++) {
        double norm = 0;
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t j = 0; j < m; j++)
                s += a[i * m + j] * v[j];
            w[i] = s;
            norm += s * s;
        }
        norm = sqrt(norm);
        bool done = it > 0 && fabs(norm - lambda) <= 1e-12 * norm;
        lambda = norm;
        if (!(norm > 0))
            break;
        for (int64_t i = 0; i < m; i++)
            v[i] = w[i] / norm;
        if (done)
            break;
    }
    free(v);
    free(w);
    return lambda;
}

/* A graph over `eval` with an extra input "cotangent" shaped like the
 * logits, whose outputs jt<k> are the gradients of sum(logits * cotangent)
 * with respect to the trainable variables: J' cotangent. */
static IrGraph *jacobian_graph(const IrGraph *eval, const int *vars, int nvars)
{
    IrGraph *g = ir_graph_clone(eval, "jacobian_rows");
    int logits = ir_find_output(g, "logits");
    const IrNode *ln = ir_node(g, logits);
    SrcLoc loc = ln->loc;
    int cot = ir_input(g, "cotangent", ln->dtype, ln->shape, loc);
    int prod = ir_binary(g, IR_MUL, logits, cot, loc);
    int total = ir_sum(g, prod, (1u << ir_node(g, prod)->shape.rank) - 1, loc);
    int *grads = xcalloc((size_t)nvars + 1, sizeof *grads);
    BOCB_ASSERT(ad_backward(g, total, vars, nvars, grads));
    for (int k = 0; k < nvars; k++) {
        const IrVar *var = &g->module->vars[vars[k]];
        int node = grads[k] >= 0 ? grads[k]
                                 : ir_broadcast(g, ir_const(g, var->dtype, 0.0, loc),
                                                var->shape, loc);
        char name[32];
        snprintf(name, sizeof name, "jt%d", k);
        ir_add_output(g, name, node);
    }
    free(grads);
    ir_dce(g);
    BOCB_ASSERT(ir_verify(g));
    return g;
}

bool analyze_coherence(const CompiledCell *cell, RtVarStore *store, Backend backend, Jit *jit,
                       const void *x, const int32_t *labels, int64_t n, Coherence *out,
                       char **error)
{
    const IrGraph *eval = cell->eval;
    const IrModule *m = eval->module;
    int *vars = xcalloc((size_t)m->nvars + 1, sizeof *vars);
    int64_t *offsets = xcalloc((size_t)m->nvars + 1, sizeof *offsets);
    int nvars = 0;
    int64_t size = 0;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        offsets[nvars] = size;
        vars[nvars++] = v;
        size += shape_numel(&m->vars[v].shape, 1);
    }
    const IrNode *ln = ir_node((IrGraph *)eval, ir_find_output(eval, "logits"));
    int64_t classes = ln->shape.dims[1];
    DType dt = ln->dtype;
    double bytes = (double)n * (double)classes * (double)size * sizeof(double);
    if (bytes > 2147483648.0) {
        *error = xasprintf("the Jacobian rows of %lld samples need %.2f GiB, more than the "
                           "2 GiB limit; use fewer samples", (long long)n, bytes / 1073741824.0);
        free(vars);
        free(offsets);
        return false;
    }

    IrGraph *g = jacobian_graph(eval, vars, nvars);
    GraphExec e;
    if (!graph_exec_create(&e, g, store, backend, jit, 1, error)) {
        ir_graph_free(g);
        free(vars);
        free(offsets);
        return false;
    }
    IrLossKind kind = graph_loss(eval).kind;
    int64_t rows = n * classes;
    double *jrows = xcalloc((size_t)(rows * size) + 1, sizeof *jrows);
    double *lh = xcalloc((size_t)(n * classes * classes) + 1, sizeof *lh);
    double *logits = xcalloc((size_t)classes, sizeof *logits);
    int64_t sample_bytes = (int64_t)size_mul((size_t)shape_numel(&eval->inputs[ir_find_input(
                                                 eval, "x")].shape, 1), dtype_size(dt));
    void *xin = graph_exec_input(&e, "x"), *cot = graph_exec_input(&e, "cotangent");
    int32_t *lin = graph_exec_input(&e, "labels");
    for (int64_t i = 0; i < n; i++) {
        memcpy(xin, (const char *)x + i * sample_bytes, (size_t)sample_bytes);
        lin[0] = labels[i];
        for (int64_t c = 0; c < classes; c++) {
            for (int64_t a = 0; a < classes; a++)
                store_from_f64(dt, cot, a, a == c ? 1.0 : 0.0);
            graph_exec_run(&e, 1);
            double *row = jrows + (i * classes + c) * size;
            for (int k = 0; k < nvars; k++) {
                char name[32];
                snprintf(name, sizeof name, "jt%d", k);
                const void *src = graph_exec_output(&e, name);
                DType vdt = m->vars[vars[k]].dtype;
                for (int64_t j = 0; j < shape_numel(&m->vars[vars[k]].shape, 1); j++)
                    row[offsets[k] + j] = load_as_f64(vdt, src, j);
            }
            if (c == 0) {
                const void *lo = graph_exec_output(&e, "logits");
                for (int64_t a = 0; a < classes; a++)
                    logits[a] = load_as_f64(dt, lo, a);
            }
        }
        loss_hessian(kind, logits, classes, lh + i * classes * classes);
    }
    graph_exec_destroy(&e);
    ir_graph_free(g);

    /* K = G G', the Gram matrix of all Jacobian rows (nC x nC). */
    double *k = xcalloc((size_t)(rows * rows) + 1, sizeof *k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)rows, (int)size, 1.0,
                jrows, (int)size, jrows, (int)size, 0.0, k, (int)rows);
    free(jrows);

    double *s = xcalloc((size_t)(n * n) + 1, sizeof *s);
    double *a = xcalloc((size_t)(classes * classes), sizeof *a);
    double *b = xcalloc((size_t)(classes * classes), sizeof *b);
    out->max_lambda_i = 0;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = i; j < n; j++) {
            /* a = L_i K_ij, b = L_j K_ji; tr(H_i H_j) = tr(a b). */
            const double *li = lh + i * classes * classes, *lj = lh + j * classes * classes;
            for (int64_t r = 0; r < classes; r++) {
                for (int64_t q = 0; q < classes; q++) {
                    double sa = 0, sb = 0;
                    for (int64_t t = 0; t < classes; t++) {
                        sa += li[r * classes + t] * k[(i * classes + t) * rows + j * classes + q];
                        sb += lj[r * classes + t] * k[(j * classes + t) * rows + i * classes + q];
                    }
                    a[r * classes + q] = sa;
                    b[r * classes + q] = sb;
                }
            }
            double tr = 0;
            for (int64_t r = 0; r < classes; r++)
                for (int64_t q = 0; q < classes; q++)
                    tr += a[r * classes + q] * b[q * classes + r];
            s[i * n + j] = s[j * n + i] = sqrt(tr > 0 ? tr : 0);
            if (i == j) {
                double top = top_eigenvalue(a, classes);
                out->max_lambda_i = top > out->max_lambda_i ? top : out->max_lambda_i;
            }
        }
    }
    out->lambda_s = top_eigenvalue(s, n);
    out->sigma = out->max_lambda_i > 0 ? out->lambda_s / out->max_lambda_i : 0;
    free(k);
    free(s);
    free(a);
    free(b);
    free(lh);
    free(logits);
    free(vars);
    free(offsets);
    return true;
}

/* ---- stability ------------------------------------------------------------ */

static void read_params(const HessianOp *h, double *theta)
{
    for (int k = 0; k < h->nparams; k++) {
        const RtVar *v = &h->store->vars[h->vars[k]];
        const void *p = rt_var_data(h->store, h->vars[k]);
        for (int64_t i = 0; i < v->numel; i++)
            theta[h->offsets[k] + i] = load_as_f64(v->dtype, p, i);
    }
}

static void write_params(HessianOp *h, const double *theta)
{
    for (int k = 0; k < h->nparams; k++) {
        const RtVar *v = &h->store->vars[h->vars[k]];
        void *p = rt_var_data(h->store, h->vars[k]);
        for (int64_t i = 0; i < v->numel; i++)
            store_from_f64(v->dtype, p, i, theta[h->offsets[k] + i]);
    }
}

/* Runs `steps` SGD steps from the current parameters with batches of
 * `batch` of the n samples drawn without replacement, and returns the
 * final loss on all n samples. The parameters are left moved. */
static double sgd_run(HessianOp *h, const float *x, const int32_t *labels, int64_t n,
                      double lr, int64_t batch, int64_t steps, uint64_t seed)
{
    int64_t size = h->size, sample = h->sample_bytes / (int64_t)sizeof(float);
    double *theta = xcalloc((size_t)size, sizeof *theta);
    double *grad = xcalloc((size_t)size, sizeof *grad), *hv = xcalloc((size_t)size, sizeof *hv);
    double *zero = xcalloc((size_t)size, sizeof *zero);
    float *bx = xcalloc((size_t)(batch * sample), sizeof *bx);
    int32_t *by = xcalloc((size_t)batch, sizeof *by);
    int64_t *order = xcalloc((size_t)n, sizeof *order);
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    PhiloxKey key = philox_key(seed, 0);
    read_params(h, theta);
    for (int64_t t = 0; t < steps; t++) {
        analyze_draw_batch(key, (uint64_t)t, order, n, batch);
        analyze_gather_batch(x, labels, sample, order, batch, bx, by);
        hessian_op_apply(h, bx, by, batch, zero, hv, grad, NULL);
        for (int64_t i = 0; i < size; i++)
            theta[i] -= lr * grad[i];
        write_params(h, theta);
    }
    double loss;
    hessian_op_apply(h, x, labels, n, zero, hv, NULL, &loss);
    free(theta);
    free(grad);
    free(hv);
    free(zero);
    free(bx);
    free(by);
    free(order);
    return loss;
}

bool analyze_stability(AnalyzeContext *c, const float *x, const int32_t *labels, int64_t n,
                       const double *lrs, int nlrs, const double *batches, int nbatches,
                       int64_t steps, StabilityReport *out, char **error)
{
    memset(out, 0, sizeof *out);
    for (int b = 0; b < nbatches; b++) {
        if ((int64_t)batches[b] > n) {
            *error = xasprintf("batch %lld is larger than the %lld samples analysed; raise "
                               "samples or lower the batch", (long long)batches[b],
                               (long long)n);
            return false;
        }
    }
    if (!analyze_coherence(c->cell, c->store, c->backend, c->jit, x, labels, n,
                           &out->coherence, error))
        return false;
    HessianOp h;
    int64_t max_batch = n < 256 ? n : 256;
    if (!hessian_op_create(&h, c->cell->eval, c->store, c->backend, c->jit, max_batch, error))
        return false;
    int64_t size = h.size, sample = h.sample_bytes / (int64_t)sizeof(float);
    double *u = xcalloc((size_t)size, sizeof *u), *hu = xcalloc((size_t)size, sizeof *hu);
    analyze_top_eigenvalues(&h, x, labels, n, 1, 100, 0, &out->lambda1, u);

    /* q = (1/n) sum_i (u' H_i u)^2, one Hessian-vector product per sample. */
    double q = 0;
    for (int64_t i = 0; i < n; i++) {
        hessian_op_apply(&h, x + i * sample, labels + i, 1, u, hu, NULL, NULL);
        double d = 0;
        for (int64_t j = 0; j < size; j++)
            d += u[j] * hu[j];
        q += d * d / (double)n;
    }
    out->q = q;

    double *start = xcalloc((size_t)size, sizeof *start);
    read_params(&h, start);
    hessian_op_apply(&h, x, labels, n, u, hu, NULL, &out->loss_start);
    out->ncells = nlrs * nbatches;
    out->cells = xcalloc((size_t)out->ncells, sizeof *out->cells);
    for (int a = 0; a < nlrs; a++) {
        for (int b = 0; b < nbatches; b++) {
            StabilityCell *cell = &out->cells[a * nbatches + b];
            cell->lr = lrs[a];
            cell->batch = (int64_t)batches[b];
            double factor = stability_batch_factor(n, cell->batch, false);
            cell->rho = stability_rho_along(cell->lr, factor, out->lambda1, q);
            cell->predicted = cell->rho > 1.0;
            cell->coherence = stability_coherence_unstable(cell->lr, n, cell->batch,
                                                           out->coherence.sigma, out->lambda1);
            cell->loss_end = sgd_run(&h, x, labels, n, cell->lr, cell->batch, steps,
                                     (uint64_t)(a * nbatches + b));
            cell->observed = !isfinite(cell->loss_end) || cell->loss_end > out->loss_start + 1.0;
            write_params(&h, start);
        }
    }
    free(start);
    free(u);
    free(hu);
    hessian_op_destroy(&h);
    return true;
}

static const char *verdict(bool unstable)
{
    return unstable ? "unstable" : "stable";
}

void stability_report_print(AnalyzeContext *c, const StabilityReport *r, int64_t n,
                            int64_t steps)
{
    FILE *o = c->out;
    fprintf(o, "%s: analyze stability on %lld training samples: lambda_1 = %.6g, "
            "q = %.6g, sigma = %.6g, loss %.6g\n", c->label, (long long)n, r->lambda1, r->q,
            r->coherence.sigma, r->loss_start);
    fprintf(o, "%10s %6s %10s %10s %10s %12s %10s\n", "lr", "batch", "rho", "exact",
            "coherence", "loss after", "observed");
    int agree = 0, agree_coherence = 0;
    for (int i = 0; i < r->ncells; i++) {
        const StabilityCell *s = &r->cells[i];
        fprintf(o, "%10.4g %6lld %10.4g %10s %10s %12.4g %10s\n", s->lr, (long long)s->batch,
                s->rho, verdict(s->predicted), verdict(s->coherence), s->loss_end,
                verdict(s->observed));
        agree += s->predicted == s->observed;
        agree_coherence += s->coherence == s->observed;
    }
    fprintf(o, "%s: %lld SGD steps per cell; the exact criterion agrees on %d of %d cells, "
            "the coherence threshold on %d\n", c->label, (long long)steps, agree, r->ncells,
            agree_coherence);
    if (!c->report_dir)
        return;

    char *path = xasprintf("%s/stability.csv", c->report_dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "lr,batch,rho,predicted,coherence,loss_end,observed\n");
        for (int i = 0; i < r->ncells; i++) {
            const StabilityCell *s = &r->cells[i];
            fprintf(f, "%.9g,%lld,%.9g,%d,%d,%.9g,%d\n", s->lr, (long long)s->batch, s->rho,
                    s->predicted, s->coherence, s->loss_end, s->observed);
        }
        fclose(f);
    } else {
        fprintf(stderr, "bocbc: warning: cannot write %s\n", path);
    }
    free(path);

    /* Rows are learning rates, columns batch sizes, in the order given. */
    path = xasprintf("%s/stability.dat", c->report_dir);
    f = fopen(path, "w");
    int nb = 0;
    while (nb < r->ncells && r->cells[nb].lr == r->cells[0].lr)
        nb++;
    if (f) {
        for (int i = 0; i < r->ncells; i++)
            fprintf(f, "%d%s", r->cells[i].predicted + 2 * r->cells[i].observed,
                    (i + 1) % nb ? " " : "\n");
        fclose(f);
    } else {
        fprintf(stderr, "bocbc: warning: cannot write %s\n", path);
    }
    free(path);

    path = xasprintf("%s/stability.gp", c->report_dir);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "# Renders stability.png from stability.dat: gnuplot stability.gp\n"
                   "# (run inside the report directory). 0 = both stable, 1 = predicted\n"
                   "# unstable only, 2 = observed unstable only, 3 = both unstable.\n"
                   "set terminal pngcairo size 800,600\n"
                   "set output \"stability.png\"\n"
                   "set title \"SGD stability: exact criterion vs observed\"\n"
                   "set xlabel \"batch size\"\nset ylabel \"learning rate\"\n"
                   "set cbrange [-0.5:3.5]\nset palette maxcolors 4\n"
                   "set palette defined (0 \"#f7f7f7\", 1 \"#fdae61\", 2 \"#d7191c\", "
                   "3 \"#2c7bb6\")\nset rmargin 18\nunset key\n");
        fprintf(f, "set xtics (");
        for (int b = 0; b < nb; b++)
            fprintf(f, "%s\"%lld\" %d", b ? ", " : "", (long long)r->cells[b].batch, b);
        fprintf(f, ")\nset ytics (");
        for (int a = 0; a * nb < r->ncells; a++)
            fprintf(f, "%s\"%g\" %d", a ? ", " : "", r->cells[a * nb].lr, a);
        fprintf(f, ")\nset cbtics (\"both stable\" 0, \"predicted only\" 1, "
                   "\"observed only\" 2, \"both unstable\" 3)\n"
                   "plot \"stability.dat\" matrix with image\n");
        fclose(f);
    } else {
        fprintf(stderr, "bocbc: warning: cannot write %s\n", path);
    }
    free(path);
}

void stability_report_free(StabilityReport *r)
{
    free(r->cells);
    memset(r, 0, sizeof *r);
}
