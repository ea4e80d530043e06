/* gemm_log.c - `make bench`: records the shapes of the single-precision
 * matrix products that a process runs, for bench/matrix.py.
 *
 * Built as a shared object and loaded with LD_PRELOAD, it defines
 * cblas_sgemm ahead of OpenBLAS, counts each distinct call shape
 * (transposes, M, N, K, leading dimensions, and whether beta is zero),
 * and calls OpenBLAS's own cblas_sgemm. When the process exits it writes
 * one line per shape to the file named by BOCB_GEMM_LOG:
 *
 *   COUNT TRANS_A TRANS_B M N K LDA LDB LDC BETA
 *
 * with TRANS_A and TRANS_B 0 or 1 and BETA 0 or 1. A process that ran
 * no product writes nothing, so programs that bocbc starts (gnuplot)
 * leave the file alone. Every call goes through one lock: the overhead
 * is a few tens of nanoseconds per product, which matters only for the
 * shape log, never for a timed run.
 */
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*SgemmFn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                        const enum CBLAS_TRANSPOSE, const blasint, const blasint,
                        const blasint, const float, const float *, const blasint,
                        const float *, const blasint, const float, float *, const blasint);

typedef struct GemmShape {
    int trans_a, trans_b, m, n, k, lda, ldb, ldc, beta;
    long long count;
} GemmShape;

enum { MAX_SHAPES = 4096 };

static GemmShape shapes[MAX_SHAPES];
static int nshapes;
static int overflowed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void record(GemmShape s)
{
    pthread_mutex_lock(&lock);
    int i = 0;
    while (i < nshapes &&
           !(shapes[i].trans_a == s.trans_a && shapes[i].trans_b == s.trans_b &&
             shapes[i].m == s.m && shapes[i].n == s.n && shapes[i].k == s.k &&
             shapes[i].lda == s.lda && shapes[i].ldb == s.ldb && shapes[i].ldc == s.ldc &&
             shapes[i].beta == s.beta))
        i++;
    if (i < nshapes)
        shapes[i].count++;
    else if (nshapes < MAX_SHAPES)
        shapes[nshapes++] = (GemmShape){s.trans_a, s.trans_b, s.m, s.n, s.k,
                                        s.lda, s.ldb, s.ldc, s.beta, 1};
    else
        overflowed = 1;
    pthread_mutex_unlock(&lock);
}

void cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta,
                 const enum CBLAS_TRANSPOSE tb, const blasint m, const blasint n,
                 const blasint k, const float alpha, const float *a, const blasint lda,
                 const float *b, const blasint ldb, const float beta, float *c,
                 const blasint ldc)
{
    static SgemmFn next;
    if (!next) {
        next = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
        if (!next) {
            fputs("gemm_log: OpenBLAS's cblas_sgemm not found\n", stderr);
            abort();
        }
    }
    /* bocb calls only the row-major form; a column-major call is logged
     * as the row-major product it equals, C^T = B^T A^T. */
    GemmShape s = {ta != CblasNoTrans, tb != CblasNoTrans, m, n, k, lda, ldb, ldc,
                   beta != 0.0f, 0};
    if (order == CblasColMajor)
        s = (GemmShape){tb != CblasNoTrans, ta != CblasNoTrans, n, m, k, ldb, lda, ldc,
                        beta != 0.0f, 0};
    record(s);
    next(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

__attribute__((destructor)) static void write_log(void)
{
    const char *path = getenv("BOCB_GEMM_LOG");
    if (!path || nshapes == 0)
        return;
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return;
    }
    for (int i = 0; i < nshapes; i++) {
        const GemmShape *s = &shapes[i];
        fprintf(f, "%lld %d %d %d %d %d %d %d %d %d\n", s->count, s->trans_a, s->trans_b,
                s->m, s->n, s->k, s->lda, s->ldb, s->ldc, s->beta);
    }
    if (overflowed)
        fputs("overflow\n", f);
    fclose(f);
}
