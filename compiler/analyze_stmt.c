/* analyze_stmt.c - the `analyze` statement of experiments.
 *
 * Each analysis is one row of `kinds`: its name, its parameters with their
 * defaults, and the function that runs it on a trained cell. A new
 * analysis adds a row and a function.
 */
#include "analyze.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/philox.h"

typedef bool (*AnalyzeFn)(const AnalyzeRequest *r, AnalyzeContext *c);

struct AnalyzeKind {
    const char *name;
    const char *params[ANALYZE_MAX_ARGS];
    double defaults[ANALYZE_MAX_ARGS]; /* NAN: required */
    bool list[ANALYZE_MAX_ARGS];       /* takes a list of numbers */
    bool integer[ANALYZE_MAX_ARGS];    /* each value an integer >= 1 */
    AnalyzeFn run;
};

static bool run_sharpness(const AnalyzeRequest *r, AnalyzeContext *c);
static bool run_coherence(const AnalyzeRequest *r, AnalyzeContext *c);
static bool run_stability(const AnalyzeRequest *r, AnalyzeContext *c);

static const struct AnalyzeKind kinds[] = {
    /* batch = 0: no batch sharpness */
    {"sharpness", {"samples", "iters", "top", "batch"}, {512, 100, 1, 0}, {0}, {1, 1, 1, 1},
     run_sharpness},
    {"coherence", {"samples"}, {100}, {0}, {1}, run_coherence},
    {"stability", {"lr", "batch", "samples", "steps"}, {NAN, NAN, 100, 100}, {1, 1, 0, 0},
     {0, 1, 1, 1}, run_stability},
};

/* Batches whose top eigenvalues `analyze sharpness(batch = B)` averages. */
enum { BATCH_SHARPNESS_DRAWS = 10 };

static int nparams(const struct AnalyzeKind *k)
{
    int n = 0;
    while (n < ANALYZE_MAX_ARGS && k->params[n])
        n++;
    return n;
}

static int param_index(const struct AnalyzeKind *k, const char *name)
{
    for (int i = 0; i < nparams(k); i++)
        if (strcmp(k->params[i], name) == 0)
            return i;
    return -1;
}

/* Checks one argument value and stores it as a list of numbers. */
static bool store_arg(Lower *l, const struct AnalyzeKind *k, int p, Value v,
                      AnalyzeRequest *out)
{
    int n = v.kind == VAL_LIST ? v.list.n : 1;
    const Value *items = v.kind == VAL_LIST ? v.list.items : &v;
    if (v.kind == VAL_ERROR)
        return false;
    if ((v.kind == VAL_LIST && !k->list[p]) || n < 1) {
        diag_error(v.loc, "'%s' of analyze %s expects %s", k->params[p], k->name,
                   k->list[p] ? "a non-empty list of numbers" : "a number");
        return false;
    }
    out->values[p] = arena_calloc(l->arena, (size_t)n, sizeof(double));
    out->nvalues[p] = n;
    for (int i = 0; i < n; i++) {
        double x = items[i].kind == VAL_NUMBER ? items[i].number.value : NAN;
        bool ok = items[i].kind == VAL_NUMBER && isfinite(x) && x > 0 &&
                  (!k->integer[p] || (x == floor(x) && x <= 1e9));
        if (!ok) {
            diag_error(items[i].loc, "'%s' of analyze %s must be %s", k->params[p], k->name,
                       k->integer[p] ? "an integer >= 1" : "a finite number > 0");
            return false;
        }
        out->values[p][i] = x;
    }
    return true;
}

bool analyze_resolve(Lower *l, const Stmt *s, ExperimentSpec *spec)
{
    const Expr *e = s->directive.value;
    const Expr *callee = e->kind == EX_CALL ? e->call.callee : e;
    const struct AnalyzeKind *k = NULL;
    for (size_t i = 0; callee->kind == EX_NAME && i < BOCB_ARRAY_LEN(kinds); i++)
        if (strcmp(kinds[i].name, callee->name) == 0)
            k = &kinds[i];
    if (!k) {
        diag_error(callee->loc, "unknown analysis; expected sharpness(...), coherence(...) "
                   "or stability(...)");
        return false;
    }
    AnalyzeRequest r = {.kind = k, .loc = s->loc};
    bool ok = true;
    int nargs = e->kind == EX_CALL ? e->call.nargs : 0;
    for (int i = 0; i < nargs && ok; i++) {
        const Arg *a = &e->call.args[i];
        int p = a->name ? param_index(k, a->name) : i;
        if (p < 0 || p >= nparams(k)) {
            SrcLoc loc = a->name ? a->name_loc : a->value->loc;
            StrBuf list = {0};
            for (int j = 0; j < nparams(k); j++)
                sb_printf(&list, "%s%s", j ? ", " : "", k->params[j]);
            diag_error(loc, "analyze %s takes the parameters %s", k->name, list.data);
            sb_free(&list);
            return false;
        }
        if (r.values[p]) {
            diag_error(a->value->loc, "'%s' of analyze %s is given twice", k->params[p],
                       k->name);
            return false;
        }
        ok = store_arg(l, k, p, eval_expr(l, a->value), &r);
    }
    for (int p = 0; ok && p < nparams(k); p++) {
        if (r.values[p])
            continue;
        if (isnan(k->defaults[p])) {
            diag_error(s->loc, "analyze %s needs '%s'", k->name, k->params[p]);
            return false;
        }
        r.values[p] = arena_calloc(l->arena, 1, sizeof(double));
        r.values[p][0] = k->defaults[p];
        r.nvalues[p] = 1;
    }
    /* Batches are drawn without replacement from the analysed samples. */
    int samples = param_index(k, "samples"), batch = param_index(k, "batch");
    for (int i = 0; ok && batch >= 0 && i < r.nvalues[batch]; i++) {
        if (r.values[batch][i] > r.values[samples][0]) {
            diag_error(s->loc, "analyze %s: batch %g is larger than samples = %g", k->name,
                       r.values[batch][i], r.values[samples][0]);
            return false;
        }
    }
    if (ok)
        spec->analyses[spec->nanalyses++] = r;
    return ok;
}

/* ---- running ------------------------------------------------------------- */

/* The first n training samples of the context, as the graphs take them. */
static void gather_samples(AnalyzeContext *c, int64_t n, float **x, int32_t **labels)
{
    const Dataset *ds = &c->data->train;
    int64_t *indices = xcalloc((size_t)n, sizeof *indices);
    for (int64_t i = 0; i < n; i++)
        indices[i] = i;
    *x = xcalloc((size_t)(n * ds->sample_size), sizeof **x);
    *labels = xcalloc((size_t)n, sizeof **labels);
    data_gather(c->data, ds, indices, n, *x, *labels);
    free(indices);
}

static int64_t sample_count(AnalyzeContext *c, double requested)
{
    int64_t n = (int64_t)requested;
    return n < c->data->train.count ? n : c->data->train.count;
}

static bool make_hessian(AnalyzeContext *c, int64_t n, HessianOp *h)
{
    char *error = NULL;
    int64_t batch = n < 256 ? n : 256;
    if (hessian_op_create(h, c->cell->eval, c->store, c->backend, c->jit, batch, &error))
        return true;
    /* messages.py: not reached: every op of a model has a tangent rule, so
     * only a code generation failure inside LLVM gets here. */
    fprintf(stderr, "bocbc: error: analyze: %s\n", error);
    free(error);
    return false;
}

static bool run_sharpness(const AnalyzeRequest *r, AnalyzeContext *c)
{
    int64_t n = sample_count(c, r->values[0][0]);
    int iters = (int)r->values[1][0], top = (int)r->values[2][0];
    HessianOp h;
    if (!make_hessian(c, n, &h))
        return false;
    float *x;
    int32_t *labels;
    gather_samples(c, n, &x, &labels);
    double *eig = xcalloc((size_t)top, sizeof *eig);
    analyze_top_eigenvalues(&h, x, labels, n, top, iters, 0, eig, NULL);
    fprintf(c->out, "%s: analyze sharpness on %lld training samples:", c->label,
            (long long)n);
    for (int k = 0; k < top; k++)
        fprintf(c->out, " lambda_%d = %.6g", k + 1, eig[k]);
    fprintf(c->out, "\n");
    int64_t batch = (int64_t)r->values[3][0];
    if (batch > 0) {
        double mean = analyze_batch_sharpness(&h, x, labels, n, batch, BATCH_SHARPNESS_DRAWS,
                                              iters, 0);
        fprintf(c->out, "%s: batch sharpness (B = %lld, mean over %d batches) = %.6g\n",
                c->label, (long long)batch, BATCH_SHARPNESS_DRAWS, mean);
    }
    free(eig);
    free(x);
    free(labels);
    hessian_op_destroy(&h);
    return true;
}

static bool run_coherence(const AnalyzeRequest *r, AnalyzeContext *c)
{
    int64_t n = sample_count(c, r->values[0][0]);
    float *x;
    int32_t *labels;
    gather_samples(c, n, &x, &labels);
    Coherence co;
    char *error = NULL;
    bool ok = analyze_coherence(c->cell, c->store, c->backend, c->jit, x, labels, n, &co,
                                &error);
    if (ok)
        fprintf(c->out, "%s: analyze coherence on %lld training samples: sigma = %.6g "
                "(lambda_1(S) = %.6g, max lambda_1(H_i) = %.6g)\n", c->label, (long long)n,
                co.sigma, co.lambda_s, co.max_lambda_i);
    else {
        /* messages.py: not reached: needs Jacobian rows above 2 GiB, too
         * large for a test. */
        fprintf(stderr, "bocbc: error: analyze coherence: %s\n", error);
        free(error);
    }
    free(x);
    free(labels);
    return ok;
}

static bool run_stability(const AnalyzeRequest *r, AnalyzeContext *c)
{
    int64_t n = sample_count(c, r->values[2][0]);
    int64_t steps = (int64_t)r->values[3][0];
    float *x;
    int32_t *labels;
    gather_samples(c, n, &x, &labels);
    StabilityReport rep;
    char *error = NULL;
    bool ok = analyze_stability(c, x, labels, n, r->values[0], r->nvalues[0], r->values[1],
                                r->nvalues[1], steps, &rep, &error);
    if (!ok) {
        fprintf(stderr, "bocbc: error: analyze stability: %s\n", error);
        free(error);
    } else {
        stability_report_print(c, &rep, n, steps);
        stability_report_free(&rep);
    }
    free(x);
    free(labels);
    return ok;
}

bool analyze_run_all(const ExperimentSpec *spec, AnalyzeContext *c)
{
    bool ok = true;
    for (int i = 0; i < spec->nanalyses; i++)
        ok &= spec->analyses[i].kind->run(&spec->analyses[i], c);
    fflush(c->out);
    return ok;
}
