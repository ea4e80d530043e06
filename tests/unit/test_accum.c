/* test_accum.c - K_ACCUM, the running sum that fuses a full reduction into
 * a kernel: the JIT against kernel_eval, bit for bit, and both against a
 * sum computed here in the same order (f64, row-major). */
#include <criterion/criterion.h>

#include <math.h>
#include <signal.h>
#include <string.h>

#include "base.h"
#include "codegen.h"
#include "jit_suite.h"
#include "kernel.h"

enum { ROWS = 37, COLS = 29 };

JIT_SUITE(accum);

/* A [rows, COLS] kernel that stores x^2 to a2 and accumulates x^2 into a1
 * and x into a3; rows scale with the batch size when per_batch is set. */
static Kernel *squares_kernel(DType dt, bool per_batch, int64_t rows)
{
    KDim extents[2] = {{rows, per_batch}, {COLS, false}};
    Kernel *k = kernel_new("squares", 2, extents);
    KDim dense[2] = {{COLS, false}, {1, false}};
    KDim scalar[2] = {{0, false}, {0, false}};
    int x_arg = kernel_add_arg(k, dt, false, dense);
    int sum_arg = kernel_add_arg(k, dt, true, scalar);
    int sq_arg = kernel_add_arg(k, dt, true, dense);
    int plain_arg = kernel_add_arg(k, dt, true, scalar);
    int x = kernel_load(k, x_arg);
    int sq = kernel_add(k, K_MUL, dt, x, x, -1);
    kernel_accum(k, sum_arg, sq);
    kernel_store(k, sq_arg, sq);
    kernel_accum(k, plain_arg, x);
    kernel_finalize(k);
    return k;
}

static void fill(DType dt, void *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double v = sin(0.7 * (double)i) * (1 + (double)(i % 5));
        if (dt == DT_F32)
            ((float *)x)[i] = (float)v;
        else
            ((double *)x)[i] = v;
    }
}

static double value_at(DType dt, const void *x, int64_t i)
{
    return dt == DT_F32 ? ((const float *)x)[i] : ((const double *)x)[i];
}

/* Runs the kernel both ways over rows [begin, end) and checks the sums. */
static void check(DType dt, bool per_batch, int64_t batch, int64_t begin, int64_t end)
{
    int64_t rows = per_batch ? batch : ROWS;
    Kernel *k = squares_kernel(dt, per_batch, per_batch ? 1 : ROWS);
    size_t es = dtype_size(dt), n = (size_t)(rows * COLS);
    void *x = xcalloc(n, es);
    fill(dt, x, (int64_t)n);

    void *out[2][3];
    for (int w = 0; w < 2; w++) {
        out[w][0] = xcalloc(1, es);
        out[w][1] = xcalloc(n, es);
        out[w][2] = xcalloc(1, es);
        /* A stale value, which the kernel must overwrite. */
        memset(out[w][0], 0x42, es);
        memset(out[w][2], 0x42, es);
    }
    void *eval_args[4] = {x, out[0][0], out[0][1], out[0][2]};
    void *jit_args[4] = {x, out[1][0], out[1][1], out[1][2]};
    kernel_eval(k, eval_args, batch, begin, end);

    RtKernelFn fn;
    char *error = NULL;
    Kernel *kernels[1] = {k};
    cr_assert(jit_compile(jit, kernels, 1, &fn, &error), "%s", error);
    fn(jit_args, batch, begin, end);

    cr_expect_eq(memcmp(out[0][0], out[1][0], es), 0, "sum of squares: JIT and eval differ");
    cr_expect_eq(memcmp(out[0][1], out[1][1], n * es), 0, "squares: JIT and eval differ");
    cr_expect_eq(memcmp(out[0][2], out[1][2], es), 0, "sum: JIT and eval differ");

    double squares = 0, plain = 0;
    for (int64_t i = begin * COLS; i < end * COLS; i++) {
        double v = value_at(dt, x, i), sq = dt == DT_F32 ? (double)((float)v * (float)v) : v * v;
        squares += sq;
        plain += v;
    }
    double want_sq = dt == DT_F32 ? (double)(float)squares : squares;
    double want = dt == DT_F32 ? (double)(float)plain : plain;
    cr_expect_eq(value_at(dt, out[1][0], 0), want_sq, "sum of squares is %.17g, expected %.17g",
                 value_at(dt, out[1][0], 0), want_sq);
    cr_expect_eq(value_at(dt, out[1][2], 0), want, "sum is %.17g, expected %.17g",
                 value_at(dt, out[1][2], 0), want);

    for (int w = 0; w < 2; w++)
        for (int j = 0; j < 3; j++)
            free(out[w][j]);
    free(x);
    kernel_free(k);
}

Test(accum, sums_f32) { check(DT_F32, false, 1, 0, ROWS); }
Test(accum, sums_f64) { check(DT_F64, false, 1, 0, ROWS); }
Test(accum, sums_over_batch) { check(DT_F32, true, 23, 0, 23); }

/* No point runs, but the sums are still written: 0. */
Test(accum, empty_range_writes_zero) { check(DT_F32, false, 1, 5, 5); }
Test(accum, empty_batch_writes_zero) { check(DT_F64, true, 0, 0, 0); }

/* An accumulated argument must have zero strides. */
Test(accum, rejects_strided_sum, .signal = SIGABRT)
{
    KDim extents[1] = {{8, false}};
    Kernel *k = kernel_new("bad", 1, extents);
    KDim dense[1] = {{1, false}};
    int a = kernel_add_arg(k, DT_F32, false, dense);
    int b = kernel_add_arg(k, DT_F32, true, dense);
    kernel_accum(k, b, kernel_load(k, a));
    kernel_finalize(k);
}
