/* gemm_peak.c - `make bench`: how fast OpenBLAS alone runs the matrix
 * products of one training step, the machine limit of bench/matrix.py.
 *
 * Reads the shapes that bench/gemm_log.c recorded for one step from
 * stdin, one per line:
 *
 *   COUNT TRANS_A TRANS_B M N K LDA LDB LDC BETA
 *
 * (COUNT may be fractional: the calls of one step, averaged over steps).
 * For each shape it times cblas_sgemm on matrices of that shape filled
 * with small values, with OpenBLAS on 1 thread and on THREADS threads,
 * the best of REPEATS timings, each timing enough back-to-back calls to
 * last about a millisecond. A step's products on THREADS threads can do
 * no better than each call on THREADS OpenBLAS threads, or than THREADS
 * calls at once on one thread each, so the limit counts the faster of
 * the two per shape:
 *
 *   limit = sum over shapes of COUNT * min(t_THREADS, t_1 / THREADS)
 *
 * Prints one line "gemm_peak: FLOP LIMIT_MS" (FLOP of one step, 2MNK per
 * call) and, with -v, each shape's times and GFLOP/s.
 *
 * Usage: gemm_peak [-v] THREADS [REPEATS] < shapes
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct Shape {
    double count;
    int trans_a, trans_b, m, n, k, lda, ldb, ldc, beta;
} Shape;

/* Elements of a row-major matrix of `rows` rows with leading dimension ld. */
static size_t extent(int rows, int ld)
{
    return (size_t)(rows > 0 ? rows : 1) * (size_t)(ld > 0 ? ld : 1);
}

static float *filled(size_t n)
{
    float *a = malloc(n * sizeof *a);
    if (!a) {
        fputs("gemm_peak: out of memory\n", stderr);
        exit(3);
    }
    for (size_t i = 0; i < n; i++)
        a[i] = 1e-3f * (float)(i % 97);
    return a;
}

/* Seconds per call of one shape on `threads` OpenBLAS threads. */
static double time_shape(const Shape *s, int threads, int repeats)
{
    openblas_set_num_threads(threads);
    /* Stored rows: op(A) is M x K, so A has K rows when transposed. */
    float *a = filled(extent(s->trans_a ? s->k : s->m, s->lda));
    float *b = filled(extent(s->trans_b ? s->n : s->k, s->ldb));
    float *c = filled(extent(s->m, s->ldc));
    enum CBLAS_TRANSPOSE ta = s->trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = s->trans_b ? CblasTrans : CblasNoTrans;
    float beta = s->beta ? 1.0f : 0.0f;

    /* One untimed call to fault the pages in, then a call count that
     * makes a timing last about a millisecond. */
    double t0 = now();
    cblas_sgemm(CblasRowMajor, ta, tb, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb, beta,
                c, s->ldc);
    double once = now() - t0;
    int calls = once > 1e-3 ? 1 : (int)fmin(1e4, 1e-3 / fmax(once, 1e-7));
    double best = INFINITY;
    for (int r = 0; r < repeats; r++) {
        t0 = now();
        for (int i = 0; i < calls; i++)
            cblas_sgemm(CblasRowMajor, ta, tb, s->m, s->n, s->k, 1.0f, a, s->lda, b, s->ldb,
                        beta, c, s->ldc);
        best = fmin(best, (now() - t0) / calls);
    }
    free(a);
    free(b);
    free(c);
    return best;
}

static void usage(void)
{
    fputs("usage: gemm_peak [-v] THREADS [REPEATS] < shapes\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    int argi = 1, verbose = 0;
    if (argi < argc && strcmp(argv[argi], "-v") == 0) {
        verbose = 1;
        argi++;
    }
    if (argi >= argc)
        usage();
    int threads = atoi(argv[argi++]);
    int repeats = argi < argc ? atoi(argv[argi++]) : 5;
    if (threads < 1 || repeats < 1 || argi != argc)
        usage();

    double flop = 0, limit = 0;
    Shape s;
    int line = 0, got;
    while ((got = scanf("%lf %d %d %d %d %d %d %d %d %d", &s.count, &s.trans_a, &s.trans_b,
                        &s.m, &s.n, &s.k, &s.lda, &s.ldb, &s.ldc, &s.beta)) == 10) {
        line++;
        if (s.count < 0 || s.m < 0 || s.n < 0 || s.k < 0) {
            fprintf(stderr, "gemm_peak: line %d: negative count or size\n", line);
            return 1;
        }
        if (s.m == 0 || s.n == 0 || s.count == 0)
            continue;
        double one = time_shape(&s, 1, repeats);
        double many = threads > 1 ? time_shape(&s, threads, repeats) : one;
        double t = fmin(many, one / threads);
        double f = 2.0 * s.m * s.n * s.k;
        flop += s.count * f;
        limit += s.count * t;
        if (verbose)
            printf("%10.2f x %c%c %5d %6d %6d: 1 thread %8.1f us (%6.1f GFLOP/s), "
                   "%d threads %8.1f us (%6.1f GFLOP/s)\n",
                   s.count, s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n, s.k,
                   1e6 * one, f / one / 1e9, threads, 1e6 * many, f / many / 1e9);
    }
    if (got != EOF) {
        fprintf(stderr, "gemm_peak: line %d: expected 10 numbers\n", line + 1);
        return 1;
    }
    printf("gemm_peak: %.6e %.6f\n", flop, 1e3 * limit);
    return 0;
}
