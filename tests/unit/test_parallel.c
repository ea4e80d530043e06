/* test_parallel.c - rt_parallel_for: the static partition covers the range
 * exactly once, in the chunks its formula gives, on distinct threads, and
 * a JIT-compiled kernel split by it writes what one call writes. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <string.h>

#include "base.h"
#include "codegen.h"
#include "kernel.h"
#include "parallel.h"

enum { MAX_CHUNKS = 8, EXTENT = 1000 };

typedef struct Record {
    pthread_mutex_t lock;
    int visits[EXTENT];
    int nranges;
    int64_t begins[MAX_CHUNKS], ends[MAX_CHUNKS];
    pthread_t threads[MAX_CHUNKS];
} Record;

static void record_range(void *context, int64_t begin, int64_t end)
{
    Record *r = context;
    pthread_mutex_lock(&r->lock);
    cr_assert_lt(r->nranges, MAX_CHUNKS);
    r->begins[r->nranges] = begin;
    r->ends[r->nranges] = end;
    r->threads[r->nranges] = pthread_self();
    r->nranges++;
    for (int64_t i = begin; i < end; i++)
        r->visits[i]++;
    pthread_mutex_unlock(&r->lock);
}

static void run_recorded(Record *r, int64_t extent)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    rt_parallel_for(extent, record_range, r);
    pthread_mutex_destroy(&r->lock);
}

Test(parallel, covers_range_once)
{
    static Record r;
    for (int threads = 1; threads <= 4; threads++) {
        rt_parallel_set_threads(threads);
        cr_assert_eq(rt_parallel_threads(), threads);
        run_recorded(&r, EXTENT);
        cr_assert_eq(r.nranges, threads, "%d threads ran %d ranges", threads, r.nranges);
        for (int i = 0; i < EXTENT; i++)
            cr_assert_eq(r.visits[i], 1, "%d threads: index %d visited %d times", threads,
                         i, r.visits[i]);
    }
}

Test(parallel, static_chunks)
{
    static Record r;
    rt_parallel_set_threads(3);
    for (int run = 0; run < 3; run++) {
        run_recorded(&r, EXTENT);
        for (int k = 0; k < r.nranges; k++) {
            /* Find which chunk this range is and compare with the formula. */
            int t = -1;
            for (int c = 0; c < 3; c++)
                if (r.begins[k] == rt_parallel_chunk_begin(EXTENT, c, 3))
                    t = c;
            cr_assert_geq(t, 0, "range [%lld, %lld) starts at no chunk boundary",
                          (long long)r.begins[k], (long long)r.ends[k]);
            cr_assert_eq(r.ends[k], rt_parallel_chunk_begin(EXTENT, t + 1, 3));
        }
    }
    cr_assert_eq(rt_parallel_chunk_begin(EXTENT, 0, 3), 0);
    cr_assert_eq(rt_parallel_chunk_begin(EXTENT, 1, 3), 333);
    cr_assert_eq(rt_parallel_chunk_begin(EXTENT, 2, 3), 666);
    cr_assert_eq(rt_parallel_chunk_begin(EXTENT, 3, 3), EXTENT);
}

Test(parallel, distinct_threads)
{
    static Record r;
    rt_parallel_set_threads(4);
    run_recorded(&r, EXTENT);
    cr_assert_eq(r.nranges, 4);
    for (int a = 0; a < r.nranges; a++)
        for (int b = a + 1; b < r.nranges; b++)
            cr_assert(!pthread_equal(r.threads[a], r.threads[b]),
                      "ranges %d and %d ran on one thread", a, b);
}

Test(parallel, extent_below_threads)
{
    static Record r;
    rt_parallel_set_threads(4);
    run_recorded(&r, 2);
    cr_assert_eq(r.nranges, 2);
    cr_assert_eq(r.visits[0], 1);
    cr_assert_eq(r.visits[1], 1);
    run_recorded(&r, 0);
    cr_assert_eq(r.nranges, 0);
}

/* y = exp(x) * 0.5 + x over [ROWS, COLS], one JIT call against a split. */
enum { ROWS = 97, COLS = 33 };

typedef struct Split {
    RtKernelFn fn;
    void **args;
} Split;

static void run_split(void *context, int64_t begin, int64_t end)
{
    Split *s = context;
    s->fn(s->args, 1, begin, end);
}

Test(parallel, split_kernel_matches_one_call)
{
    KDim extents[2] = {{ROWS, false}, {COLS, false}};
    KDim strides[2] = {{COLS, false}, {1, false}};
    Kernel *k = kernel_new("split", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, strides);
    int y = kernel_add_arg(k, DT_F32, true, strides);
    int lx = kernel_load(k, x);
    int e = kernel_add(k, K_EXP, DT_F32, lx, -1, -1);
    int h = kernel_add(k, K_MUL, DT_F32, e, kernel_const(k, DT_F32, 0.5), -1);
    kernel_store(k, y, kernel_add(k, K_ADD, DT_F32, h, lx, -1));
    kernel_finalize(k);

    char *error = NULL;
    Jit *jit = jit_create(&error);
    cr_assert_not_null(jit, "jit_create failed: %s", error ? error : "");
    RtKernelFn fn;
    cr_assert(jit_compile(jit, &k, 1, &fn, &error), "jit_compile failed: %s", error);

    static float in[ROWS * COLS], one[ROWS * COLS], split[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        in[i] = (float)((i * 37) % 101) / 25.0f - 2.0f;
    void *args_one[2] = {in, one};
    fn(args_one, 1, 0, ROWS);

    void *args_split[2] = {in, split};
    Split s = {fn, args_split};
    rt_parallel_set_threads(3);
    rt_parallel_for(ROWS, run_split, &s);
    cr_assert_eq(memcmp(one, split, sizeof one), 0, "the split kernel wrote other values");

    jit_destroy(jit);
    kernel_free(k);
}
