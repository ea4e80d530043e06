/* analyze_weights.c - spectral entropy and power-law alpha of weight
 * matrices in safetensors checkpoints, with CSV output and gnuplot plots.
 *
 * A weight matrix is a tensor of rank 2 or more whose name ends in
 * ".weight", which matches the parameters of the standard library's
 * layers and excludes optimizer state ("x.weight.m").
 */
#include "analyze_weights.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "../runtime/report.h"
#include "../runtime/safetensors.h"
#include "driver.h"

/* LAPACK's symmetric eigensolver (divide and conquer), from OpenBLAS.
 * Debian's libopenblas-dev ships no LAPACKE header, so the Fortran entry
 * point is declared here. */
void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
             double *w, double *work, const int *lwork, int *iwork, const int *liwork,
             int *info);

/* Gram matrices above this order take too long for an analysis pass. */
enum { MAX_ORDER = 4096, MIN_TAIL = 5 };

/* Fills `lambda` (k values, ascending) with the eigenvalues of the smaller
 * Gram matrix of w. */
static bool gram_eigenvalues(const float *w, int64_t rows, int64_t cols, double *lambda)
{
    int64_t k = rows < cols ? rows : cols, other = rows < cols ? cols : rows;
    double *wd = xmalloc(size_mul(size_mul((size_t)rows, (size_t)cols), sizeof(double)));
    for (int64_t i = 0; i < rows * cols; i++)
        wd[i] = w[i];
    double *gram = xcalloc(size_mul((size_t)k, (size_t)k), sizeof(double));
    /* rows <= cols: W W^T = (k x other)(other x k); else W^T W. */
    if (rows <= cols)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)other, 1.0, wd,
                    (int)cols, 0.0, gram, (int)k);
    else
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)other, 1.0, wd,
                    (int)cols, 0.0, gram, (int)k);
    free(wd);

    /* The row-major upper triangle is LAPACK's column-major lower one. */
    int n = (int)k, lwork = -1, liwork = -1, info = 0, iwork_query;
    double work_query;
    dsyevd_("N", "L", &n, gram, &n, lambda, &work_query, &lwork, &iwork_query, &liwork,
            &info);
    lwork = (int)work_query;
    liwork = iwork_query;
    double *work = xmalloc(size_mul((size_t)lwork + 1, sizeof(double)));
    int *iwork = xmalloc(size_mul((size_t)liwork + 1, sizeof(int)));
    if (info == 0)
        dsyevd_("N", "L", &n, gram, &n, lambda, work, &lwork, iwork, &liwork, &info);
    free(work);
    free(iwork);
    free(gram);
    /* Rounding can make zero eigenvalues slightly negative. */
    for (int64_t i = 0; i < k; i++)
        lambda[i] = lambda[i] < 0 ? 0 : lambda[i];
    return info == 0;
}

/* Fits the power-law tail of the ascending eigenvalues lambda[0 .. k). */
static void fit_power_law(const double *lambda, int64_t k, SpectrumStats *out)
{
    out->alpha = out->lambda_min = out->ks = NAN;
    out->tail = 0;
    double best_ks = INFINITY;
    for (int64_t start = 0; start + MIN_TAIL <= k; start++) {
        double xmin = lambda[start];
        if (xmin <= 0)
            continue;
        int64_t n = k - start;
        double log_sum = 0;
        for (int64_t i = start; i < k; i++)
            log_sum += log(lambda[i] / xmin);
        if (log_sum <= 0)
            continue;
        double alpha = 1 + (double)n / log_sum;
        /* KS distance between the tail's empirical CDF and the fitted one. */
        double ks = 0;
        for (int64_t i = start; i < k; i++) {
            double fitted = 1 - pow(lambda[i] / xmin, 1 - alpha);
            double below = (double)(i - start) / (double)n;
            double upto = (double)(i - start + 1) / (double)n;
            ks = fmax(ks, fmax(fabs(fitted - below), fabs(upto - fitted)));
        }
        if (ks < best_ks) {
            best_ks = ks;
            out->alpha = alpha;
            out->lambda_min = xmin;
            out->ks = ks;
            out->tail = (int)n;
        }
    }
}

bool weights_spectrum(const float *w, int64_t rows, int64_t cols, SpectrumStats *out)
{
    memset(out, 0, sizeof *out);
    out->rows = rows;
    out->cols = cols;
    int64_t k = rows < cols ? rows : cols;
    BOCB_ASSERT(k >= 1 && k <= MAX_ORDER);
    double *lambda = xmalloc(size_mul((size_t)k, sizeof(double)));
    bool ok = gram_eigenvalues(w, rows, cols, lambda);
    double total = 0;
    for (int64_t i = 0; ok && i < k; i++)
        total += lambda[i];
    ok = ok && total > 0;
    if (ok) {
        double h = 0;
        for (int64_t i = 0; i < k; i++) {
            double p = lambda[i] / total;
            if (p > 0)
                h -= p * log(p);
        }
        out->entropy = k > 1 ? h / log((double)k) : 0;
        fit_power_law(lambda, k, out);
    }
    free(lambda);
    return ok;
}

/* ---- the command ---------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void csv_text(StrBuf *sb, const char *s)
{
    sb_append(sb, "\"");
    for (; *s; s++)
        sb_append(sb, *s == '"' ? "\"\"" : (char[2]){*s, 0});
    sb_append(sb, "\"");
}

static void csv_number(StrBuf *sb, double v)
{
    if (isnan(v))
        sb_append(sb, ",nan");
    else
        sb_printf(sb, ",%.6g", v);
}

/* Appends one row per weight matrix of `path` to `csv`. Returns false
 * after printing why the file cannot be analysed. */
static bool analyze_file(const char *path, int series, StrBuf *csv, char **label_out)
{
    StFile file;
    char *error = NULL;
    if (!st_read(path, &file, &error)) {
        fprintf(stderr, "bocbc: error: %s\n", error);
        free(error);
        return false;
    }
    const char *optimizer = st_meta_get(&file, "optimizer");
    const char *label = optimizer ? optimizer : path;
    *label_out = xstrdup(label);
    int layer = 0;
    bool ok = true;
    for (int i = 0; i < file.tensor_count && ok; i++) {
        const StTensor *t = &file.tensors[i];
        if (t->rank < 2 || !ends_with(t->name, ".weight"))
            continue;
        int64_t rows = t->shape[0], cols = 1;
        for (int d = 1; d < t->rank; d++)
            cols *= t->shape[d];
        int64_t k = rows < cols ? rows : cols;
        if (k < 1 || k > MAX_ORDER) {
            fprintf(stderr, "bocbc: warning: %s: %s is %lld x %lld; skipped, because "
                    "analyze weights handles matrices whose smaller side is 1 to %d\n",
                    path, t->name, (long long)rows, (long long)cols, MAX_ORDER);
            continue;
        }
        float *w = xmalloc(size_mul((size_t)st_element_count(t), sizeof(float)));
        SpectrumStats stats;
        if (!st_to_f32(t, w)) {
            fprintf(stderr, "bocbc: warning: %s: %s has dtype %s; skipped\n", path, t->name,
                    st_dtype_name(t->dtype));
        } else if (weights_spectrum(w, rows, cols, &stats)) {
            layer++;
            sb_printf(csv, "%d,", series);
            csv_text(csv, label);
            sb_printf(csv, ",%d,", layer);
            csv_text(csv, t->name);
            sb_printf(csv, ",%lld,%lld", (long long)rows, (long long)cols);
            csv_number(csv, stats.entropy);
            csv_number(csv, stats.alpha);
            csv_number(csv, stats.lambda_min);
            csv_number(csv, stats.ks);
            sb_printf(csv, ",%d\n", stats.tail);
        } else {
            fprintf(stderr, "bocbc: warning: %s: %s is all zeros or its eigenvalues "
                    "failed to converge; skipped\n", path, t->name);
        }
        free(w);
    }
    st_free(&file);
    return ok;
}

/* Writes DIR/weights.gp, which plots DIR/weights.csv into
 * DIR/weights_entropy.png and DIR/weights_alpha.png, and runs gnuplot. */
static bool write_plots(const char *dir, char **labels, int series, char **error)
{
    StrBuf gp = {0};
    sb_append(&gp, "# Written by bocbc analyze weights; run with gnuplot in this "
                   "directory.\n"
                   "set datafile separator ','\n"
                   "set terminal pngcairo size 900,540 noenhanced\n"
                   "set key outside right\n"
                   "set xlabel 'layer (weight matrices in file order)'\n"
                   "set grid\n");
    const char *metrics[2][3] = {{"entropy", "7", "spectral entropy (normalised)"},
                                 {"alpha", "8", "power-law alpha of the eigenvalue tail"}};
    for (int m = 0; m < 2; m++) {
        sb_printf(&gp, "set output 'weights_%s.png'\nset ylabel '%s'\nplot ", metrics[m][0],
                  metrics[m][2]);
        for (int s = 0; s < series; s++) {
            sb_printf(&gp, "%s'weights.csv' every ::1 using ($1 == %d ? $3 : 1/0):%s "
                      "with linespoints title ",
                      s ? ", \\\n     " : "", s, metrics[m][1]);
            rt_append_gnuplot_label(&gp, labels, series, s);
        }
        sb_append(&gp, "\n");
    }
    char *path = xasprintf("%s/weights.gp", dir);
    bool ok = rt_write_file_atomic(path, gp.data, gp.len, error);
    sb_free(&gp);
    free(path);
    if (!ok)
        return false;
    int status = rt_run_gnuplot(dir, "weights.gp");
    if (status != 0) {
        *error = xasprintf("%s/weights.gp: gnuplot failed with status %d%s", dir, status,
                           status == 127 ? "; is gnuplot installed?" : "");
        return false;
    }
    return true;
}

/* Reports a mistake in the arguments, followed by the usage line, and
 * returns the exit status of a command-line mistake. */
static int fail_usage(const char *message, const char *arg)
{
    fputs("bocbc: error: ", stderr);
    fprintf(stderr, message, arg);
    fputs(": bocbc analyze weights [--out DIR] FILE.safetensors...\n", stderr);
    return BOCB_EXIT_USAGE;
}

int analyze_weights_main(int argc, char **argv)
{
    const char *out_dir = NULL;
    int first = 0;
    if (argc >= 1 && strcmp(argv[0], "--out") == 0) {
        if (argc < 2 || argv[1][0] == '\0' || argv[1][0] == '-')
            return fail_usage("%s expects a directory", "--out");
        out_dir = argv[1];
        first = 2;
    }
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0)
            return fail_usage("%s DIR may be given once, before the files", "--out");
        if (argv[i][0] == '-')
            return fail_usage("unknown option '%s'", argv[i]);
    }
    if (first >= argc)
        return fail_usage("%s expects checkpoint files", "analyze weights");
    StrBuf csv = {0};
    sb_append(&csv, "series,optimizer,layer,name,rows,cols,entropy,alpha,lambda_min,ks,tail\n");
    bool ok = true;
    int series = 0;
    char **labels = xcalloc((size_t)argc + 1, sizeof *labels);
    for (int i = first; i < argc; i++, series++)
        ok &= analyze_file(argv[i], series, &csv, &labels[series]);
    fputs(csv.data, stdout);

    char *error = NULL;
    if (ok && out_dir) {
        char *path = xasprintf("%s/weights.csv", out_dir);
        ok = rt_make_dirs(out_dir, &error) &&
             rt_write_file_atomic(path, csv.data, csv.len, &error) &&
             write_plots(out_dir, labels, series, &error);
        free(path);
        if (!ok) {
            fprintf(stderr, "bocbc: error: %s\n", error);
            free(error);
        }
    }
    for (int s = 0; s < series; s++)
        free(labels[s]);
    free(labels);
    sb_free(&csv);
    return ok ? BOCB_EXIT_OK : BOCB_EXIT_RUNTIME;
}
