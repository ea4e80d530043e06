/* test_qkernel.c - the generated quantization kernels against
 * runtime/quant.c, byte for byte, and against kernel_eval.
 *
 * The quantize kernel (KFORM_QUANTIZE) must write the bytes of
 * rt_quant_encode, and a kernel with K_DEQUANT the values of
 * rt_quant_decode. The grid covers f32 and f64, every width, every
 * rounding, buckets whose codes do and do not start on a byte, and a
 * partial last bucket. Its buckets are random, constant, all zero (with
 * both signs of zero), NaN, infinite, overflowing, too narrow to divide,
 * or huge. Buffers end at an inaccessible page, so a kernel that reads
 * or writes past its words faults.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base.h"
#include "codegen.h"
#include "jit_suite.h"
#include "kcache.h"
#include "kernel.h"
#include "quant.h"
#include "spatial.h"

JIT_SUITE(qkernel);

static const RtRounding roundings[] = {RT_ROUND_NEAREST, RT_ROUND_STOCHASTIC, RT_ROUND_SHIFT};
/* 8 puts every bucket on a byte boundary, 12 does with even widths, and
 * 1, 3 and 13 only with 8 bits. */
static const int64_t bucket_sizes[] = {1, 3, 8, 12, 13};
enum { FULL_BUCKETS = 11, TAG = 77 };

/* ---- buffers that end at an inaccessible page ----------------------------- */

typedef struct Guarded {
    void *map;
    size_t map_size;
    uint8_t *data; /* `size` bytes ending where the inaccessible page starts */
} Guarded;

static Guarded guarded_alloc(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (size + page - 1) / page + 1;
    Guarded g = {.map_size = pages * page};
    g.map = mmap(NULL, g.map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g.map, MAP_FAILED, "mmap of %zu bytes failed", g.map_size);
    uint8_t *guard = (uint8_t *)g.map + (pages - 1) * page;
    cr_assert_eq(mprotect(guard, page, PROT_NONE), 0, "mprotect failed");
    g.data = guard - size;
    return g;
}

static void guarded_free(Guarded *g)
{
    munmap(g->map, g->map_size);
}

/* ---- test tensors --------------------------------------------------------- */

/* What the elements of a bucket are. */
typedef enum Pattern {
    PAT_RANDOM,
    PAT_CONSTANT,
    PAT_ZEROS,       /* -0 and +0 alternating: the minimum keeps the first */
    PAT_NAN,
    PAT_POS_INF,
    PAT_NEG_INF,
    PAT_OVERFLOW,    /* -max and +max: the range is infinite */
    PAT_NARROW,      /* 0 and the smallest subnormal: the scale underflows */
    PAT_HUGE,
    PAT_MIXED_ZEROS, /* random values with zeros of both signs */
    NPATTERNS,
} Pattern;

static double pattern_value(Pattern p, DType dt, int64_t i, int64_t at)
{
    double u = 6 * (double)philox_uniform_f32(philox_key(99, (uint32_t)p), (uint64_t)i) - 3;
    double max = dt == DT_F32 ? FLT_MAX : DBL_MAX;
    double tiny = dt == DT_F32 ? (double)FLT_TRUE_MIN : DBL_TRUE_MIN;
    switch (p) {
    case PAT_RANDOM: return u;
    case PAT_CONSTANT: return 0.75;
    case PAT_ZEROS: return at % 2 ? 0.0 : -0.0;
    case PAT_NAN: return at == 1 ? NAN : u;
    case PAT_POS_INF: return at == 2 ? INFINITY : u;
    case PAT_NEG_INF: return at == 0 ? -INFINITY : u;
    case PAT_OVERFLOW: return at % 2 ? max : -max;
    case PAT_NARROW: return at % 2 ? tiny : 0.0;
    case PAT_HUGE: return u * 1e30;
    case PAT_MIXED_ZEROS:
        if (at % 3 != 0)
            return u;
        return at % 2 ? 0.0 : -0.0;
    case NPATTERNS: break;
    }
    BOCB_UNREACHABLE("pattern");
}

/* x[0..n) with bucket b following pattern b mod NPATTERNS. */
static void *make_tensor(DType dt, int64_t n, int64_t bucket)
{
    void *x = xcalloc((size_t)n + 1, dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        double v = pattern_value((Pattern)((i / bucket) % NPATTERNS), dt, i, i % bucket);
        if (dt == DT_F32)
            ((float *)x)[i] = (float)v;
        else
            ((double *)x)[i] = v;
    }
    return x;
}

/* One point of the grid: a quantizer and a tensor with a partial last
 * bucket. */
typedef struct Case {
    DType dt;
    int bits;
    RtRounding rounding;
    int64_t bucket, n, words;
    double key, step; /* the rank-0 key and step, in the dtype */
} Case;

static Case make_case(DType dt, int bits, RtRounding rounding, int64_t bucket)
{
    Case c = {.dt = dt, .bits = bits, .rounding = rounding, .bucket = bucket,
              .key = 0.6180339887, .step = 17};
    c.n = FULL_BUCKETS * bucket + (bucket + 1) / 2;
    c.words = rt_quant_words(bits, bucket, dt, c.n);
    return c;
}

static void store_scalar(DType dt, void *at, double v)
{
    if (dt == DT_F32)
        *(float *)at = (float)v;
    else
        *(double *)at = v;
}

static RtQuantizer case_quantizer(const Case *c, const void *key, const void *step)
{
    RtQuantizer q = {
        .bits = c->bits,
        .bucket = c->bucket,
        .rounding = c->rounding,
        .key = rt_quant_key(c->dt, key, TAG),
        .step = rt_quant_step(c->dt, step),
        .tag = TAG,
    };
    return q;
}

static Kernel *quantize_kernel(const Case *c)
{
    KQuantize q = {.dtype = c->dt,
                   .layout = {.bits = c->bits, .bucket = c->bucket, .numel = c->n},
                   .rounding = c->rounding,
                   .tag = TAG};
    return kernel_quantize_new("quantize", &q);
}

/* Expects equal bytes, naming the first difference. */
static void expect_same_bytes(const Case *c, const char *what, const uint8_t *got,
                              const uint8_t *want, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (got[i] == want[i])
            continue;
        cr_expect_fail("%s, %s, %d bits, %s, bucket %lld: byte %zu of %zu is 0x%02x, not 0x%02x",
                       what, dtype_name(c->dt), c->bits, rt_rounding_name(c->rounding),
                       (long long)c->bucket, i, size, got[i], want[i]);
        return;
    }
}

enum {
    NBITS = RT_QUANT_MAX_BITS - RT_QUANT_MIN_BITS + 1,
    MAX_CASES = NBITS * BOCB_ARRAY_LEN(roundings) * BOCB_ARRAY_LEN(bucket_sizes),
};

/* Builds a kernel with `make` for every width, each of the roundings and
 * every bucket size in dtype dt, and JIT-compiles them as one module.
 * Returns the number of cases. */
static int compile_grid(DType dt, const RtRounding *rounds, size_t nrounds,
                        Kernel *(*make)(const Case *), Case *cases, Kernel **kernels,
                        RtKernelFn *fns)
{
    int count = 0;
    for (int bits = RT_QUANT_MIN_BITS; bits <= RT_QUANT_MAX_BITS; bits++)
        for (size_t r = 0; r < nrounds; r++)
            for (size_t b = 0; b < BOCB_ARRAY_LEN(bucket_sizes); b++) {
                cr_assert_lt(count, MAX_CASES);
                cases[count] = make_case(dt, bits, rounds[r], bucket_sizes[b]);
                kernels[count] = make(&cases[count]);
                count++;
            }
    char *error = NULL;
    cr_assert(jit_compile(jit, kernels, count, fns, &error), "%s", error);
    return count;
}

/* ---- quantize ------------------------------------------------------------- */

/* Runs a quantize kernel over every bucket. A kernel whose buckets are
 * independent runs as two ranges, the later one first. */
static void run_quantize(const Kernel *k, RtKernelFn fn, void *const *args)
{
    int64_t nb = k->extents[0].value, mid = nb / 2;
    if (!kernel_quantize_parallel(k)) {
        if (fn)
            fn(args, 1, 0, nb);
        else
            kernel_eval(k, args, 1, 0, nb);
        return;
    }
    if (fn) {
        fn(args, 1, mid, nb);
        fn(args, 1, 0, mid);
    } else {
        kernel_eval(k, args, 1, mid, nb);
        kernel_eval(k, args, 1, 0, mid);
    }
}

static void check_quantize(DType dt)
{
    Case cases[MAX_CASES];
    Kernel *kernels[MAX_CASES];
    RtKernelFn fns[MAX_CASES];
    int count = compile_grid(dt, roundings, BOCB_ARRAY_LEN(roundings), quantize_kernel, cases,
                             kernels, fns);

    size_t es = dtype_size(dt);
    for (int i = 0; i < count; i++) {
        const Case *c = &cases[i];
        size_t size = (size_t)c->words * sizeof(int32_t);
        void *x = make_tensor(dt, c->n, c->bucket);
        void *key = xcalloc(1, es), *step = xcalloc(1, es);
        store_scalar(dt, key, c->key);
        store_scalar(dt, step, c->step);

        uint8_t *want = xcalloc(size + 1, 1);
        RtQuantizer q = case_quantizer(c, key, step);
        rt_quant_encode(&q, dt, 0, c->n, x, want);

        Guarded generated = guarded_alloc(size);
        uint8_t *evaluated = xmalloc(size + 1);
        memset(generated.data, 0xA5, size);
        memset(evaluated, 0xA5, size);
        void *gen_args[KQ_NARGS] = {x, key, step, generated.data};
        void *eval_args[KQ_NARGS] = {x, key, step, evaluated};
        run_quantize(kernels[i], fns[i], gen_args);
        run_quantize(kernels[i], NULL, eval_args);

        expect_same_bytes(c, "generated", generated.data, want, size);
        expect_same_bytes(c, "kernel_eval", evaluated, want, size);
        bool aligned = c->bucket * c->bits % 8 == 0;
        cr_expect_eq(kernel_quantize_parallel(kernels[i]), aligned,
                     "bucket %lld, %d bits: parallel should be %d", (long long)c->bucket,
                     c->bits, aligned);

        guarded_free(&generated);
        free(evaluated);
        free(want);
        free(key);
        free(step);
        free(x);
        kernel_free(kernels[i]);
    }
}

Test(qkernel, quantize_matches_encoder_f32) { check_quantize(DT_F32); }
Test(qkernel, quantize_matches_encoder_f64) { check_quantize(DT_F64); }

/* A NaN or out-of-range step saturates as rt_quant_step does, and the
 * key's bits select the stream: a second key gives other codes. */
Test(qkernel, quantize_step_and_key)
{
    static const double steps[] = {-3, 0, 1e12, 4294967295.0, NAN};
    Case c = make_case(DT_F32, 3, RT_ROUND_STOCHASTIC, 13);
    Kernel *k = quantize_kernel(&c);
    RtKernelFn fn;
    char *error = NULL;
    cr_assert(jit_compile(jit, &k, 1, &fn, &error), "%s", error);
    size_t size = (size_t)c.words * sizeof(int32_t);
    void *x = make_tensor(DT_F32, c.n, c.bucket);
    uint8_t *want = xcalloc(size, 1), *got = xcalloc(size, 1), *first = xcalloc(size, 1);
    for (size_t s = 0; s <= BOCB_ARRAY_LEN(steps); s++) {
        /* The last round keeps the step and changes the key. */
        float key = s < BOCB_ARRAY_LEN(steps) ? (float)c.key : 0.25f;
        float step = (float)steps[s < BOCB_ARRAY_LEN(steps) ? s : 0];
        RtQuantizer q = case_quantizer(&c, &key, &step);
        memset(want, 0, size);
        rt_quant_encode(&q, DT_F32, 0, c.n, x, want);
        void *args[KQ_NARGS] = {x, &key, &step, got};
        fn(args, 1, 0, k->extents[0].value);
        expect_same_bytes(&c, "generated", got, want, size);
        if (s == 0)
            memcpy(first, got, size);
    }
    cr_expect_neq(memcmp(first, got, size), 0, "another key gave the same codes");
    free(first);
    free(got);
    free(want);
    free(x);
    kernel_free(k);
}

/* ---- dequantize ----------------------------------------------------------- */

enum { DQ_WORDS, DQ_DECODED, DQ_OTHER, DQ_FUSED, DQ_NARGS };

/* y = dequant(words) and fused = dequant(words) * other + other, over
 * the n elements of c. */
static Kernel *dequant_kernel(const Case *c)
{
    KDim extent = {c->n, false}, dense = {1, false};
    Kernel *k = kernel_new("dequant", 1, &extent);
    kernel_add_arg(k, DT_I32, false, &dense);
    kernel_add_arg(k, c->dt, true, &dense);
    kernel_add_arg(k, c->dt, false, &dense);
    kernel_add_arg(k, c->dt, true, &dense);
    KQuantLayout layout = {.bits = c->bits, .bucket = c->bucket, .numel = c->n};
    int d = kernel_dequant(k, DQ_WORDS, c->dt, layout);
    kernel_store(k, DQ_DECODED, d);
    int other = kernel_load(k, DQ_OTHER);
    int product = kernel_add(k, K_MUL, c->dt, d, other, -1);
    kernel_store(k, DQ_FUSED, kernel_add(k, K_ADD, c->dt, product, other, -1));
    kernel_finalize(k);
    return k;
}

/* The encoding of case c in a buffer that ends at an inaccessible page. */
static Guarded guarded_encoding(const Case *c)
{
    size_t size = (size_t)c->words * sizeof(int32_t);
    size_t es = dtype_size(c->dt);
    void *x = make_tensor(c->dt, c->n, c->bucket);
    void *key = xcalloc(1, es), *step = xcalloc(1, es);
    store_scalar(c->dt, key, c->key);
    store_scalar(c->dt, step, c->step);
    RtQuantizer q = case_quantizer(c, key, step);
    Guarded words = guarded_alloc(size);
    memset(words.data, 0, size);
    rt_quant_encode(&q, c->dt, 0, c->n, x, words.data);
    free(key);
    free(step);
    free(x);
    return words;
}

static void check_dequant(DType dt)
{
    /* The layout does not depend on the rounding; stochastic gives codes
     * of every value. */
    static const RtRounding stochastic[] = {RT_ROUND_STOCHASTIC};
    Case cases[MAX_CASES];
    Kernel *kernels[MAX_CASES];
    RtKernelFn fns[MAX_CASES];
    int count = compile_grid(dt, stochastic, 1, dequant_kernel, cases, kernels, fns);

    size_t es = dtype_size(dt);
    for (int i = 0; i < count; i++) {
        const Case *c = &cases[i];
        size_t bytes = (size_t)c->n * es;
        Guarded words = guarded_encoding(c);
        RtQuantizer q = {.bits = c->bits, .bucket = c->bucket};
        uint8_t *want = xmalloc(bytes);
        rt_quant_decode(&q, dt, c->n, words.data, want);

        void *other = make_tensor(dt, c->n, c->n);
        uint8_t *out[2][2];
        void *args[2][DQ_NARGS];
        for (int w = 0; w < 2; w++) {
            out[w][0] = xmalloc(bytes);
            out[w][1] = xmalloc(bytes);
            memset(out[w][0], 0xA5, bytes);
            memset(out[w][1], 0xA5, bytes);
            args[w][DQ_WORDS] = words.data;
            args[w][DQ_DECODED] = out[w][0];
            args[w][DQ_OTHER] = other;
            args[w][DQ_FUSED] = out[w][1];
        }
        /* Two ranges, so the second starts inside a bucket. */
        int64_t mid = c->n / 2 + 1;
        fns[i](args[0], 1, mid, c->n);
        fns[i](args[0], 1, 0, mid);
        kernel_eval(kernels[i], args[1], 1, 0, c->n);

        expect_same_bytes(c, "generated dequant", out[0][0], want, bytes);
        expect_same_bytes(c, "kernel_eval dequant", out[1][0], want, bytes);
        expect_same_bytes(c, "generated fused kernel", out[0][1], out[1][1], bytes);

        for (int w = 0; w < 2; w++) {
            free(out[w][0]);
            free(out[w][1]);
        }
        free(other);
        free(want);
        guarded_free(&words);
        kernel_free(kernels[i]);
    }
}

Test(qkernel, dequant_matches_decoder_f32) { check_dequant(DT_F32); }
Test(qkernel, dequant_matches_decoder_f64) { check_dequant(DT_F64); }

/* K_DEQUANT reads at the point's strided offset. The decoded vector is
 * broadcast along the rows of [ROWS, n] and along the columns of
 * [n, ROWS]. A one-element tensor broadcast to every point is uniform
 * and decoded once before the loops. */
Test(qkernel, dequant_strided_and_uniform)
{
    enum { ROWS = 5 };
    Case c = make_case(DT_F32, 5, RT_ROUND_NEAREST, 13);
    Case one = make_case(DT_F32, 5, RT_ROUND_NEAREST, 13);
    one.n = 1;
    one.words = rt_quant_words(one.bits, one.bucket, one.dt, one.n);
    KQuantLayout layout = {.bits = c.bits, .bucket = c.bucket, .numel = c.n};
    KQuantLayout single = {.bits = one.bits, .bucket = one.bucket, .numel = 1};

    KDim rows_extents[2] = {{ROWS, false}, {c.n, false}};
    KDim along_rows[2] = {{0, false}, {1, false}}, row_major[2] = {{c.n, false}, {1, false}};
    Kernel *by_rows = kernel_new("by_rows", 2, rows_extents);
    kernel_add_arg(by_rows, DT_I32, false, along_rows);
    kernel_add_arg(by_rows, DT_F32, true, row_major);
    kernel_store(by_rows, 1, kernel_dequant(by_rows, 0, DT_F32, layout));
    kernel_finalize(by_rows);

    KDim cols_extents[2] = {{c.n, false}, {ROWS, false}};
    KDim along_cols[2] = {{1, false}, {0, false}}, col_major[2] = {{ROWS, false}, {1, false}};
    Kernel *by_cols = kernel_new("by_cols", 2, cols_extents);
    kernel_add_arg(by_cols, DT_I32, false, along_cols);
    kernel_add_arg(by_cols, DT_F32, true, col_major);
    kernel_store(by_cols, 1, kernel_dequant(by_cols, 0, DT_F32, layout));
    kernel_finalize(by_cols);

    KDim extent = {ROWS, false}, none = {0, false}, dense = {1, false};
    Kernel *uniform = kernel_new("uniform", 1, &extent);
    kernel_add_arg(uniform, DT_I32, false, &none);
    kernel_add_arg(uniform, DT_F32, true, &dense);
    int d = kernel_dequant(uniform, 0, DT_F32, single);
    kernel_store(uniform, 1, d);
    kernel_finalize(uniform);
    cr_expect(uniform->instrs[d].uniform, "a dequant with zero strides is not uniform");
    cr_expect(!by_rows->instrs[0].uniform, "a strided dequant is uniform");

    Kernel *kernels[3] = {by_rows, by_cols, uniform};
    RtKernelFn fns[3];
    char *error = NULL;
    cr_assert(jit_compile(jit, kernels, 3, fns, &error), "%s", error);

    Guarded words = guarded_encoding(&c), word = guarded_encoding(&one);
    RtQuantizer q = {.bits = c.bits, .bucket = c.bucket};
    float *want = xcalloc((size_t)c.n, sizeof *want), single_want;
    rt_quant_decode(&q, DT_F32, c.n, words.data, want);
    rt_quant_decode(&q, DT_F32, 1, word.data, &single_want);

    float *got = xcalloc((size_t)(ROWS * c.n), sizeof *got);
    fns[0]((void *[]){words.data, got}, 1, 0, ROWS);
    for (int64_t r = 0; r < ROWS; r++)
        cr_expect_arr_eq(got + r * c.n, want, (size_t)c.n * sizeof *got, "row %lld differs",
                         (long long)r);
    memset(got, 0, (size_t)(ROWS * c.n) * sizeof *got);
    fns[1]((void *[]){words.data, got}, 1, 0, c.n);
    for (int64_t j = 0; j < c.n; j++)
        for (int r = 0; r < ROWS; r++)
            cr_expect_eq(memcmp(&got[j * ROWS + r], &want[j], sizeof *got), 0,
                         "column %d, element %lld: %g, not %g", r, (long long)j,
                         got[j * ROWS + r], want[j]);
    fns[2]((void *[]){word.data, got}, 1, 0, ROWS);
    for (int r = 0; r < ROWS; r++)
        cr_expect_eq(memcmp(&got[r], &single_want, sizeof single_want), 0,
                     "uniform point %d: %g, not %g", r, got[r], single_want);

    free(got);
    free(want);
    guarded_free(&word);
    guarded_free(&words);
    for (int i = 0; i < 3; i++)
        kernel_free(kernels[i]);
}

/* ---- keys ----------------------------------------------------------------- */

/* The kernel cache finds kernels by key, so every field that code
 * generation reads must change the key. */
Test(qkernel, keys_change_with_every_field)
{
    Case base = make_case(DT_F32, 4, RT_ROUND_SHIFT, 12);
    Case variants[] = {base, base, base, base, base, base};
    variants[1].dt = DT_F64;
    variants[2].bits = 5;
    variants[3].bucket = 13;
    variants[4].rounding = RT_ROUND_NEAREST;
    variants[5].n = base.n + 1;
    enum { NVARIANTS = BOCB_ARRAY_LEN(variants) };
    char *quantize_keys[NVARIANTS + 1], *dequant_keys[NVARIANTS];
    for (size_t i = 0; i < NVARIANTS; i++) {
        Kernel *k = quantize_kernel(&variants[i]);
        quantize_keys[i] = kernel_key(k);
        kernel_free(k);
        k = dequant_kernel(&variants[i]);
        dequant_keys[i] = kernel_key(k);
        kernel_free(k);
    }
    KQuantize other_tag = {.dtype = base.dt,
                           .layout = {.bits = base.bits, .bucket = base.bucket, .numel = base.n},
                           .rounding = base.rounding,
                           .tag = TAG + 1};
    Kernel *k = kernel_quantize_new("quantize", &other_tag);
    quantize_keys[NVARIANTS] = kernel_key(k);
    kernel_free(k);

    cr_expect(strstr(quantize_keys[0], "quantize f32 numel 138 bits 4 bucket 12 shift tag 77"),
              "unexpected key:\n%s", quantize_keys[0]);
    cr_expect(strstr(dequant_keys[0], "dequant f32 a0 numel 138 bits 4 bucket 12"),
              "unexpected key:\n%s", dequant_keys[0]);
    for (size_t i = 1; i <= NVARIANTS; i++)
        cr_expect_str_neq(quantize_keys[i], quantize_keys[0], "quantize variant %zu", i);
    /* The rounding (variant 4) is not part of a decoder. */
    for (size_t i = 1; i < NVARIANTS; i++)
        if (i != 4)
            cr_expect_str_neq(dequant_keys[i], dequant_keys[0], "dequant variant %zu", i);
    for (size_t i = 0; i <= NVARIANTS; i++)
        free(quantize_keys[i]);
    for (size_t i = 0; i < NVARIANTS; i++)
        free(dequant_keys[i]);
}
