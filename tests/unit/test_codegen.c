/* test_codegen.c - JIT-compiled kernels against kernel_eval, bit for bit.
 *
 * Every check runs a kernel twice on copies of the same inputs, once as
 * JIT-compiled code and once through kernel_eval, and compares the bytes
 * of every argument with memcmp. Inputs mix random values with NaN, +-inf,
 * +-0.0, subnormals and the largest finite values.
 *
 * Every NaN input has the bit pattern of the NaN that x86 generates for an
 * invalid operation (negative, quiet, payload 0). IEEE 754 does not say
 * which operand's NaN a binary operation returns, and LLVM may commute an
 * operation, so NaN inputs with several bit patterns could make correct
 * code differ in the NaN it returns. With one pattern every NaN result has
 * the same bits, except where a negation flips the sign, which both sides
 * then do alike.
 */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "codegen.h"
#include "jit_suite.h"
#include "kernel.h"
#include "philox.h"

enum { MAX_ARGS = 16 };

JIT_SUITE(codegen);

/* ---- values ------------------------------------------------------------- */

static float f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double f64_from_bits(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static uint32_t f32_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static uint64_t f64_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

#define NAN_F32_BITS 0xffc00000u
#define NAN_F64_BITS 0xfff8000000000000ull

static float nan_f32(void)
{
    return f32_from_bits(NAN_F32_BITS);
}

static double nan_f64(void)
{
    return f64_from_bits(NAN_F64_BITS);
}

/* Values that exercise edge cases of every op. Index 0 stands for the NaN
 * with NAN_F32_BITS or NAN_F64_BITS, which f32_special and f64_special
 * return, because C has no literal for it. */
static const float f32_specials[] = {
    0.0f /* NaN */, INFINITY, -INFINITY, 0.0f, -0.0f,
    0x1p-149f /* smallest subnormal */, -0x1.fffffcp-127f /* largest subnormal */,
    0x1p-127f, FLT_MIN, FLT_MAX, -FLT_MAX, 1.0f, -1.0f, 0.5f, -0.5f, 2.0f,
    -3.0f, 1.5f, -2.5f, 88.7f, -103.9f, 2147483648.0f, -2147483648.0f,
    2147483520.0f, 1e-30f, 0x1.4p-73f,
};

static const double f64_specials[] = {
    0.0 /* NaN */, INFINITY, -INFINITY, 0.0, -0.0,
    0x1p-1074 /* smallest subnormal */, -0x0.fffffffffffffp-1022, 0x1p-1030,
    DBL_MIN, DBL_MAX, -DBL_MAX, 1.0, -1.0, 0.5, -0.5, 2.0, -3.0, 1.5, -2.5,
    709.8, -745.2, 2147483648.0, -2147483648.0, -2147483648.9, 2147483647.5,
    1e-300, 0x1.5d5bdbbf91115p+45,
};

static const int32_t i32_specials[] = {
    0, 1, -1, 2, -2, 7, -7, 3, INT32_MIN, INT32_MAX, INT32_MIN + 1, 100000,
};

enum {
    N_F32_SPECIALS = (int)BOCB_ARRAY_LEN(f32_specials),
    N_F64_SPECIALS = (int)BOCB_ARRAY_LEN(f64_specials),
    N_I32_SPECIALS = (int)BOCB_ARRAY_LEN(i32_specials),
};

static float f32_special(int i)
{
    return i == 0 ? nan_f32() : f32_specials[i];
}

static double f64_special(int i)
{
    return i == 0 ? nan_f64() : f64_specials[i];
}

/* splitmix64: a small deterministic generator, so a failure reproduces. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Returns a number in +-[2^-8, 2^9) drawn from the bits of r. */
static double random_moderate(uint64_t r)
{
    double mantissa = 1.0 + (double)((r >> 12) & 0xfffff) / 1048576.0;
    int exponent = (int)((r >> 40) % 17) - 8;
    double v = ldexp(mantissa, exponent);
    return (r >> 63) ? -v : v;
}

/* Returns a special value 20% of the time, an arbitrary bit pattern 10%
 * of the time (NaN patterns replaced by NAN_F32_BITS) and otherwise a
 * moderate number. */
static float random_f32(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    switch (r % 10) {
    case 0:
    case 1:
        return f32_special((int)((r >> 8) % N_F32_SPECIALS));
    case 2: {
        float f = f32_from_bits((uint32_t)(r >> 32));
        return isnan(f) ? nan_f32() : f;
    }
    default:
        return (float)random_moderate(r);
    }
}

static double random_f64(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    switch (r % 10) {
    case 0:
    case 1:
        return f64_special((int)((r >> 8) % N_F64_SPECIALS));
    case 2: {
        double d = f64_from_bits(rng_next(rng));
        return isnan(d) ? nan_f64() : d;
    }
    default:
        return random_moderate(r);
    }
}

static int32_t random_i32(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    switch (r % 4) {
    case 0: return i32_specials[(r >> 8) % N_I32_SPECIALS];
    case 1: return (int32_t)(uint32_t)(r >> 32);
    default: return (int32_t)((r >> 32) % 41) - 20;
    }
}

/* A bool is stored as one byte; a load treats any nonzero byte as true. */
static uint8_t random_bool(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    if (r % 16 == 0)
        return 255;
    return (uint8_t)((r >> 8) & 1);
}

static void fill_random(DType dt, void *data, int64_t n, uint64_t *rng)
{
    for (int64_t i = 0; i < n; i++) {
        switch (dt) {
        case DT_F32: ((float *)data)[i] = random_f32(rng); break;
        case DT_F64: ((double *)data)[i] = random_f64(rng); break;
        case DT_I32: ((int32_t *)data)[i] = random_i32(rng); break;
        case DT_BOOL: ((uint8_t *)data)[i] = random_bool(rng); break;
        }
    }
}

/* ---- kernels ------------------------------------------------------------ */

static KDim fixed(int64_t value)
{
    return (KDim){value, false};
}

static KDim batched(int64_t value)
{
    return (KDim){value, true};
}

static int64_t kdim_eval(KDim d, int64_t batch)
{
    return d.times_batch ? d.value * batch : d.value;
}

/* Writes row-major strides for `extents`, at most one of which may scale
 * with the batch size. */
static void contiguous_strides(const KDim *extents, int rank, KDim *strides)
{
    KDim s = fixed(1);
    for (int d = rank - 1; d >= 0; d--) {
        strides[d] = s;
        cr_assert(!(s.times_batch && extents[d].times_batch), "B*B stride");
        s.value *= extents[d].value;
        s.times_batch = s.times_batch || extents[d].times_batch;
    }
}

/* y = op(x) over n contiguous elements. */
static Kernel *unary_kernel(const char *name, KOp op, DType in, DType out, int64_t n)
{
    KDim extent = fixed(n), stride = fixed(1);
    Kernel *k = kernel_new(name, 1, &extent);
    int x = kernel_add_arg(k, in, false, &stride);
    int y = kernel_add_arg(k, out, true, &stride);
    int v = kernel_add(k, op, out, kernel_load(k, x), -1, -1);
    kernel_store(k, y, v);
    return k;
}

/* z = op(x, y) over n contiguous elements. */
static Kernel *binary_kernel(const char *name, KOp op, DType in, DType out, int64_t n)
{
    KDim extent = fixed(n), stride = fixed(1);
    Kernel *k = kernel_new(name, 1, &extent);
    int x = kernel_add_arg(k, in, false, &stride);
    int y = kernel_add_arg(k, in, false, &stride);
    int z = kernel_add_arg(k, out, true, &stride);
    int v = kernel_add(k, op, out, kernel_load(k, x), kernel_load(k, y), -1);
    kernel_store(k, z, v);
    return k;
}

static void compile_many(Kernel **kernels, int n, RtKernelFn *fns)
{
    char *error = NULL;
    for (int i = 0; i < n; i++)
        kernel_finalize(kernels[i]);
    bool ok = jit_compile(jit, kernels, n, fns, &error);
    cr_assert(ok, "jit_compile of %d kernels failed: %s", n, error ? error : "");
}

static RtKernelFn compile_one(Kernel *k)
{
    RtKernelFn fn = NULL;
    compile_many(&k, 1, &fn);
    return fn;
}

/* ---- running and comparing ---------------------------------------------- */

/* Argument buffers: `jit` for the compiled kernel, `ref` for kernel_eval,
 * with identical contents before the run. */
typedef struct Buffers {
    int nargs;
    int64_t span[MAX_ARGS]; /* elements */
    void *jit[MAX_ARGS];
    void *ref[MAX_ARGS];
} Buffers;

/* Returns one past the largest element offset of argument a. */
static int64_t arg_span(const Kernel *k, int a, int64_t batch)
{
    int64_t last = 0;
    for (int d = 0; d < k->rank; d++) {
        int64_t extent = kdim_eval(k->extents[d], batch);
        if (extent == 0)
            return 1;
        last += (extent - 1) * kdim_eval(k->args[a].strides[d], batch);
    }
    return last + 1;
}

static Buffers buffers_random(const Kernel *k, int64_t batch, uint64_t seed)
{
    Buffers b;
    memset(&b, 0, sizeof b);
    cr_assert(k->nargs <= MAX_ARGS);
    b.nargs = k->nargs;
    uint64_t rng = seed;
    for (int a = 0; a < k->nargs; a++) {
        DType dt = k->args[a].dtype;
        b.span[a] = arg_span(k, a, batch);
        size_t bytes = (size_t)b.span[a] * dtype_size(dt);
        b.jit[a] = xmalloc_aligned(bytes);
        b.ref[a] = xmalloc_aligned(bytes);
        fill_random(dt, b.ref[a], b.span[a], &rng);
        memcpy(b.jit[a], b.ref[a], bytes);
    }
    return b;
}

/* Copies argument a's reference contents to its JIT buffer, after a test
 * wrote inputs of its own into b->ref[a]. */
static void buffers_sync(const Kernel *k, Buffers *b, int a)
{
    memcpy(b->jit[a], b->ref[a], (size_t)b->span[a] * dtype_size(k->args[a].dtype));
}

static void buffers_free(Buffers *b)
{
    for (int a = 0; a < b->nargs; a++) {
        free(b->jit[a]);
        free(b->ref[a]);
    }
}

static void format_element(char *buf, size_t size, DType dt, const void *data, int64_t i)
{
    switch (dt) {
    case DT_F32: {
        float f = ((const float *)data)[i];
        snprintf(buf, size, "%a (0x%08x)", (double)f, f32_bits(f));
        break;
    }
    case DT_F64: {
        double d = ((const double *)data)[i];
        snprintf(buf, size, "%a (0x%016llx)", d, (unsigned long long)f64_bits(d));
        break;
    }
    case DT_I32:
        snprintf(buf, size, "%d", ((const int32_t *)data)[i]);
        break;
    case DT_BOOL:
        snprintf(buf, size, "%u", ((const uint8_t *)data)[i]);
        break;
    }
}

/* Asserts that every argument has the same bytes in both buffer sets. */
static void assert_buffers_equal(const Kernel *k, const Buffers *b)
{
    for (int a = 0; a < b->nargs; a++) {
        DType dt = k->args[a].dtype;
        size_t esize = dtype_size(dt);
        if (memcmp(b->jit[a], b->ref[a], (size_t)b->span[a] * esize) == 0)
            continue;
        int64_t i = 0;
        while (memcmp((const char *)b->jit[a] + i * (int64_t)esize,
                      (const char *)b->ref[a] + i * (int64_t)esize, esize) == 0)
            i++;
        char got[64], want[64];
        format_element(got, sizeof got, dt, b->jit[a], i);
        format_element(want, sizeof want, dt, b->ref[a], i);
        cr_assert_fail("kernel %s, argument a%d, element %lld: jit %s, kernel_eval %s",
                       k->name, a, (long long)i, got, want);
    }
}

/* Runs the JIT kernel over the outermost range split into `pieces` calls
 * and kernel_eval over the whole range in one call. */
static void run_both(const Kernel *k, RtKernelFn fn, Buffers *b, int64_t batch, int pieces)
{
    int64_t outer = kernel_outer_extent(k, batch);
    for (int p = 0; p < pieces; p++)
        fn(b->jit, batch, outer * p / pieces, outer * (p + 1) / pieces);
    kernel_eval(k, b->ref, batch, 0, outer);
}

/* Runs k both ways on random inputs and asserts identical bytes. */
static void check_kernel(const Kernel *k, RtKernelFn fn, int64_t batch, int pieces,
                         uint64_t seed)
{
    Buffers b = buffers_random(k, batch, seed);
    run_both(k, fn, &b, batch, pieces);
    assert_buffers_equal(k, &b);
    buffers_free(&b);
}

/* Writes every pair of special values into the first elements of
 * arguments x and y (float dtypes), so each pair meets at least once. */
static void fill_special_pairs(const Kernel *k, Buffers *b, int x, int y)
{
    DType dt = k->args[x].dtype;
    int n = dt == DT_F32 ? N_F32_SPECIALS : N_F64_SPECIALS;
    cr_assert(b->span[x] >= n * n && b->span[y] >= n * n);
    for (int i = 0; i < n * n; i++) {
        if (dt == DT_F32) {
            ((float *)b->ref[x])[i] = f32_special(i / n);
            ((float *)b->ref[y])[i] = f32_special(i % n);
        } else {
            ((double *)b->ref[x])[i] = f64_special(i / n);
            ((double *)b->ref[y])[i] = f64_special(i % n);
        }
    }
    buffers_sync(k, b, x);
    buffers_sync(k, b, y);
}

static void free_kernels(Kernel **kernels, int n)
{
    for (int i = 0; i < n; i++)
        kernel_free(kernels[i]);
}

/* ---- every op, elementwise ---------------------------------------------- */

static const KOp float_unary_ops[] = {
    K_NEG, K_ABS, K_SIGN, K_SQRT, K_EXP, K_LOG, K_TANH, K_FLOOR, K_ERF, K_SIGMOID,
};

static const KOp arith_ops[] = {K_ADD, K_SUB, K_MUL, K_DIV, K_POW, K_MAX, K_MIN};
static const KOp compare_ops[] = {K_LT, K_LE, K_GT, K_GE, K_EQ, K_NE};

static void check_float_unary(DType dt)
{
    enum { N = (int)BOCB_ARRAY_LEN(float_unary_ops) };
    Kernel *kernels[N];
    RtKernelFn fns[N];
    for (int i = 0; i < N; i++)
        kernels[i] = unary_kernel(kop_name(float_unary_ops[i]), float_unary_ops[i], dt, dt, 4099);
    compile_many(kernels, N, fns);

    for (int i = 0; i < N; i++) {
        Buffers b = buffers_random(kernels[i], 1, 100 + (uint64_t)i);
        for (int j = 0; j < (dt == DT_F32 ? N_F32_SPECIALS : N_F64_SPECIALS); j++) {
            if (dt == DT_F32)
                ((float *)b.ref[0])[j] = f32_special(j);
            else
                ((double *)b.ref[0])[j] = f64_special(j);
        }
        buffers_sync(kernels[i], &b, 0);
        run_both(kernels[i], fns[i], &b, 1, 1);
        assert_buffers_equal(kernels[i], &b);
        buffers_free(&b);
    }
    free_kernels(kernels, N);
}

static void check_float_binary(DType dt)
{
    enum { NA = (int)BOCB_ARRAY_LEN(arith_ops), NC = (int)BOCB_ARRAY_LEN(compare_ops) };
    Kernel *kernels[NA + NC];
    RtKernelFn fns[NA + NC];
    for (int i = 0; i < NA; i++)
        kernels[i] = binary_kernel(kop_name(arith_ops[i]), arith_ops[i], dt, dt, 5003);
    for (int i = 0; i < NC; i++)
        kernels[NA + i] = binary_kernel(kop_name(compare_ops[i]), compare_ops[i], dt,
                                        DT_BOOL, 5003);
    compile_many(kernels, NA + NC, fns);

    for (int i = 0; i < NA + NC; i++) {
        Buffers b = buffers_random(kernels[i], 1, 200 + (uint64_t)i);
        fill_special_pairs(kernels[i], &b, 0, 1);
        run_both(kernels[i], fns[i], &b, 1, 1);
        assert_buffers_equal(kernels[i], &b);
        buffers_free(&b);
    }
    free_kernels(kernels, NA + NC);
}

Test(codegen, unary_f32)
{
    check_float_unary(DT_F32);
}

Test(codegen, unary_f64)
{
    check_float_unary(DT_F64);
}

Test(codegen, binary_f32)
{
    check_float_binary(DT_F32);
}

Test(codegen, binary_f64)
{
    check_float_binary(DT_F64);
}

Test(codegen, i32_ops)
{
    const KOp unary[] = {K_NEG, K_ABS, K_SIGN};
    const KOp binary[] = {K_ADD, K_SUB, K_MUL, K_DIV, K_MAX, K_MIN,
                          K_LT, K_LE, K_GT, K_GE, K_EQ, K_NE};
    enum { NU = (int)BOCB_ARRAY_LEN(unary), NB = (int)BOCB_ARRAY_LEN(binary) };
    Kernel *kernels[NU + NB];
    RtKernelFn fns[NU + NB];
    for (int i = 0; i < NU; i++)
        kernels[i] = unary_kernel(kop_name(unary[i]), unary[i], DT_I32, DT_I32, 1000);
    for (int i = 0; i < NB; i++) {
        DType out = i >= 6 ? DT_BOOL : DT_I32;
        kernels[NU + i] = binary_kernel(kop_name(binary[i]), binary[i], DT_I32, out, 1000);
    }
    compile_many(kernels, NU + NB, fns);

    for (int i = 0; i < NU + NB; i++) {
        Buffers b = buffers_random(kernels[i], 1, 300 + (uint64_t)i);
        if (i >= NU) {
            /* Every pair of specials, including x / 0 and INT32_MIN / -1. */
            for (int j = 0; j < N_I32_SPECIALS * N_I32_SPECIALS; j++) {
                ((int32_t *)b.ref[0])[j] = i32_specials[j / N_I32_SPECIALS];
                ((int32_t *)b.ref[1])[j] = i32_specials[j % N_I32_SPECIALS];
            }
            buffers_sync(kernels[i], &b, 0);
            buffers_sync(kernels[i], &b, 1);
        }
        run_both(kernels[i], fns[i], &b, 1, 1);
        assert_buffers_equal(kernels[i], &b);
        buffers_free(&b);
    }
    free_kernels(kernels, NU + NB);
}

Test(codegen, i32_div_edge_cases)
{
    Kernel *k = binary_kernel("div", K_DIV, DT_I32, DT_I32, 5);
    RtKernelFn fn = compile_one(k);
    int32_t x[5] = {7, INT32_MIN, -7, 0, INT32_MIN};
    int32_t y[5] = {0, -1, 2, 0, 1};
    int32_t z[5] = {0};
    void *args[3] = {x, y, z};
    fn(args, 1, 0, 5);
    cr_assert_eq(z[0], 0, "7 / 0 = %d, expected 0", z[0]);
    cr_assert_eq(z[1], INT32_MIN, "INT32_MIN / -1 = %d, expected INT32_MIN", z[1]);
    cr_assert_eq(z[2], -3, "-7 / 2 = %d, expected -3", z[2]);
    cr_assert_eq(z[3], 0, "0 / 0 = %d, expected 0", z[3]);
    cr_assert_eq(z[4], INT32_MIN, "INT32_MIN / 1 = %d, expected INT32_MIN", z[4]);
    kernel_free(k);
}

Test(codegen, bool_ops)
{
    const KOp binary[] = {K_AND, K_OR, K_EQ, K_NE, K_LT, K_LE, K_GT, K_GE};
    enum { NB = (int)BOCB_ARRAY_LEN(binary) };
    Kernel *kernels[NB + 1];
    RtKernelFn fns[NB + 1];
    kernels[0] = unary_kernel("not", K_NOT, DT_BOOL, DT_BOOL, 1001);
    for (int i = 0; i < NB; i++)
        kernels[1 + i] = binary_kernel(kop_name(binary[i]), binary[i], DT_BOOL, DT_BOOL, 1001);
    compile_many(kernels, NB + 1, fns);
    for (int i = 0; i < NB + 1; i++)
        check_kernel(kernels[i], fns[i], 1, 1, 400 + (uint64_t)i);
    free_kernels(kernels, NB + 1);
}

/* r = select(c, x, y) for every value dtype, with c loaded as bool. */
Test(codegen, select_all_dtypes)
{
    const DType dtypes[] = {DT_F32, DT_F64, DT_I32, DT_BOOL};
    enum { N = (int)BOCB_ARRAY_LEN(dtypes) };
    Kernel *kernels[N];
    RtKernelFn fns[N];
    for (int i = 0; i < N; i++) {
        KDim extent = fixed(777), stride = fixed(1);
        kernels[i] = kernel_new("select", 1, &extent);
        Kernel *k = kernels[i];
        int c = kernel_add_arg(k, DT_BOOL, false, &stride);
        int x = kernel_add_arg(k, dtypes[i], false, &stride);
        int y = kernel_add_arg(k, dtypes[i], false, &stride);
        int r = kernel_add_arg(k, dtypes[i], true, &stride);
        int v = kernel_add(k, K_SELECT, dtypes[i], kernel_load(k, x), kernel_load(k, y),
                           kernel_load(k, c));
        kernel_store(k, r, v);
    }
    compile_many(kernels, N, fns);
    for (int i = 0; i < N; i++)
        check_kernel(kernels[i], fns[i], 1, 1, 500 + (uint64_t)i);
    free_kernels(kernels, N);
}

/* select(x < y, x, y) with the condition computed in the kernel. */
Test(codegen, select_on_comparison)
{
    KDim extent = fixed(2049), stride = fixed(1);
    Kernel *k = kernel_new("select_lt", 1, &extent);
    int x = kernel_add_arg(k, DT_F32, false, &stride);
    int y = kernel_add_arg(k, DT_F32, false, &stride);
    int r = kernel_add_arg(k, DT_F32, true, &stride);
    int lx = kernel_load(k, x), ly = kernel_load(k, y);
    int lt = kernel_add(k, K_LT, DT_BOOL, lx, ly, -1);
    kernel_store(k, r, kernel_add(k, K_SELECT, DT_F32, lx, ly, lt));
    RtKernelFn fn = compile_one(k);
    Buffers b = buffers_random(k, 1, 600);
    fill_special_pairs(k, &b, 0, 1);
    run_both(k, fn, &b, 1, 1);
    assert_buffers_equal(k, &b);
    buffers_free(&b);
    kernel_free(k);
}

Test(codegen, cast_all_pairs)
{
    const DType dtypes[] = {DT_F32, DT_F64, DT_I32, DT_BOOL};
    enum { N = (int)BOCB_ARRAY_LEN(dtypes) };
    Kernel *kernels[N * N];
    RtKernelFn fns[N * N];
    for (int i = 0; i < N * N; i++) {
        char name[32];
        snprintf(name, sizeof name, "cast_%s_%s", dtype_name(dtypes[i / N]),
                 dtype_name(dtypes[i % N]));
        kernels[i] = unary_kernel(name, K_CAST, dtypes[i / N], dtypes[i % N], 3001);
    }
    compile_many(kernels, N * N, fns);
    for (int i = 0; i < N * N; i++)
        check_kernel(kernels[i], fns[i], 1, 1, 700 + (uint64_t)i);
    free_kernels(kernels, N * N);
}

Test(codegen, cast_float_to_i32_saturates)
{
    Kernel *k = unary_kernel("cast", K_CAST, DT_F32, DT_I32, 6);
    RtKernelFn fn = compile_one(k);
    float x[6] = {nan_f32(), INFINITY, -INFINITY, 3e9f, -2.7f, 2147483520.0f};
    int32_t want[6] = {0, INT32_MAX, INT32_MIN, INT32_MAX, -2, 2147483520};
    int32_t y[6] = {0};
    void *args[2] = {x, y};
    fn(args, 1, 0, 6);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(y[i], want[i], "cast of %a gave %d, expected %d", (double)x[i],
                     y[i], want[i]);
    kernel_free(k);
}

/* y = const + batch in each dtype; the constants include -0.0 and inf. */
Test(codegen, const_and_batch)
{
    const DType dtypes[] = {DT_F32, DT_F64, DT_I32};
    const double imms[] = {-0.0, 0.1, -3.0, 1e300, INFINITY, 16777217.0};
    Kernel *kernels[64];
    RtKernelFn fns[64];
    int n = 0;
    for (size_t d = 0; d < BOCB_ARRAY_LEN(dtypes); d++)
        for (size_t c = 0; c < BOCB_ARRAY_LEN(imms); c++) {
            DType dt = dtypes[d];
            double imm = imms[c];
            if (dt == DT_I32 && (imm != floor(imm) || fabs(imm) > 1e9))
                continue;
            KDim extent = fixed(9), stride = fixed(1);
            Kernel *k = kernel_new("const_batch", 1, &extent);
            int y = kernel_add_arg(k, dt, true, &stride);
            int v = kernel_add(k, K_ADD, dt, kernel_const(k, dt, imm),
                               kernel_add(k, K_BATCH, dt, -1, -1, -1), -1);
            kernel_store(k, y, v);
            kernels[n++] = k;
        }
    {
        KDim extent = fixed(9), stride = fixed(1);
        Kernel *k = kernel_new("const_bool", 1, &extent);
        int y = kernel_add_arg(k, DT_BOOL, true, &stride);
        kernel_store(k, y, kernel_const(k, DT_BOOL, 1));
        kernels[n++] = k;
    }
    compile_many(kernels, n, fns);
    const int64_t batches[] = {1, 5, 1000};
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < BOCB_ARRAY_LEN(batches); j++)
            check_kernel(kernels[i], fns[i], batches[j], 1, 800 + (uint64_t)i);
    free_kernels(kernels, n);
}

/* ---- NaN and signed-zero semantics, against fixed expectations ---------- */

static void assert_f32_is(float got, float want, const char *what)
{
    if (isnan(want))
        cr_assert(isnan(got), "%s = %a, expected NaN", what, (double)got);
    else
        cr_assert_eq(f32_bits(got), f32_bits(want), "%s = %a, expected %a", what,
                     (double)got, (double)want);
}

Test(codegen, max_min_nan_and_signed_zero)
{
    Kernel *kmax = binary_kernel("max", K_MAX, DT_F32, DT_F32, 8);
    Kernel *kmin = binary_kernel("min", K_MIN, DT_F32, DT_F32, 8);
    Kernel *kernels[2] = {kmax, kmin};
    RtKernelFn fns[2];
    compile_many(kernels, 2, fns);

    float nan = nan_f32();
    float x[8] = {-0.0f, 0.0f, nan, 1.0f, -INFINITY, 3.0f, -0.0f, 0.0f};
    float y[8] = {0.0f, -0.0f, 1.0f, nan, nan, -2.0f, -0.0f, 0.0f};
    float want_max[8] = {0.0f, 0.0f, nan, nan, nan, 3.0f, -0.0f, 0.0f};
    float want_min[8] = {-0.0f, -0.0f, nan, nan, nan, -2.0f, -0.0f, 0.0f};
    float zmax[8], zmin[8], ref[8];
    void *args_max[3] = {x, y, zmax}, *args_min[3] = {x, y, zmin};
    fns[0](args_max, 1, 0, 8);
    fns[1](args_min, 1, 0, 8);
    for (int i = 0; i < 8; i++) {
        char what[96];
        snprintf(what, sizeof what, "jit max(%a, %a)", (double)x[i], (double)y[i]);
        assert_f32_is(zmax[i], want_max[i], what);
        snprintf(what, sizeof what, "jit min(%a, %a)", (double)x[i], (double)y[i]);
        assert_f32_is(zmin[i], want_min[i], what);
    }

    void *args_ref[3] = {x, y, ref};
    kernel_eval(kmax, args_ref, 1, 0, 8);
    for (int i = 0; i < 8; i++)
        assert_f32_is(ref[i], want_max[i], "kernel_eval max");
    kernel_eval(kmin, args_ref, 1, 0, 8);
    for (int i = 0; i < 8; i++)
        assert_f32_is(ref[i], want_min[i], "kernel_eval min");
    free_kernels(kernels, 2);
}

Test(codegen, sign_of_zero_and_nan)
{
    Kernel *k = unary_kernel("sign", K_SIGN, DT_F64, DT_F64, 7);
    RtKernelFn fn = compile_one(k);
    double x[7] = {-0.0, 0.0, nan_f64(), -5.0, 0x1p-1074, -INFINITY, 2.5};
    double want[7] = {0.0, 0.0, nan_f64(), -1.0, 1.0, -1.0, 1.0};
    double y[7];
    void *args[2] = {x, y};
    fn(args, 1, 0, 7);
    for (int i = 0; i < 7; i++) {
        if (isnan(want[i]))
            cr_assert(isnan(y[i]), "sign(%a) = %a, expected NaN", x[i], y[i]);
        else
            cr_assert_eq(f64_bits(y[i]), f64_bits(want[i]), "sign(%a) = %a, expected %a",
                         x[i], y[i], want[i]);
    }
    kernel_free(k);
}

/* LLVM rewrites llvm.pow(x, 2.0) into x * x, which differs from powf for
 * subnormal results; the generated call must reach powf unchanged. */
Test(codegen, pow_by_constant_two)
{
    KDim extent = fixed(4), stride = fixed(1);
    Kernel *k = kernel_new("square", 1, &extent);
    int x = kernel_add_arg(k, DT_F32, false, &stride);
    int y = kernel_add_arg(k, DT_F32, true, &stride);
    int v = kernel_add(k, K_POW, DT_F32, kernel_load(k, x), kernel_const(k, DT_F32, 2.0), -1);
    kernel_store(k, y, v);
    RtKernelFn fn = compile_one(k);

    float in[4] = {0x1.4p-73f, 0x1.2p-72f, 0x1.18p-70f, 3.0f};
    float out[4];
    void *args[2] = {in, out};
    fn(args, 1, 0, 4);
    volatile float two = 2.0f;
    for (int i = 0; i < 4; i++) {
        float want = powf(in[i], two);
        cr_assert_eq(f32_bits(out[i]), f32_bits(want), "pow(%a, 2) = %a, powf gives %a",
                     (double)in[i], (double)out[i], (double)want);
    }
    kernel_free(k);
}

/* ---- iteration spaces --------------------------------------------------- */

/* z = x * r + c - s over a [17, 1001] matrix x, with r a row vector
 * (broadcast down the columns), c a column vector and s a scalar. */
Test(codegen, broadcast_row_column_scalar)
{
    KDim extents[2] = {fixed(17), fixed(1001)};
    KDim matrix[2] = {fixed(1001), fixed(1)};
    KDim row[2] = {fixed(0), fixed(1)};
    KDim column[2] = {fixed(1), fixed(0)};
    KDim scalar[2] = {fixed(0), fixed(0)};
    const DType dtypes[] = {DT_F32, DT_F64};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(dtypes); i++) {
        DType dt = dtypes[i];
        Kernel *k = kernel_new("broadcast", 2, extents);
        int x = kernel_add_arg(k, dt, false, matrix);
        int r = kernel_add_arg(k, dt, false, row);
        int c = kernel_add_arg(k, dt, false, column);
        int s = kernel_add_arg(k, dt, false, scalar);
        int z = kernel_add_arg(k, dt, true, matrix);
        int v = kernel_add(k, K_MUL, dt, kernel_load(k, x), kernel_load(k, r), -1);
        v = kernel_add(k, K_ADD, dt, v, kernel_load(k, c), -1);
        v = kernel_add(k, K_SUB, dt, v, kernel_load(k, s), -1);
        kernel_store(k, z, v);
        RtKernelFn fn = compile_one(k);
        for (int j = 0; j < k->ninstrs; j++)
            if (k->instrs[j].op == K_LOAD)
                cr_assert_eq(k->instrs[j].uniform, k->instrs[j].arg == s,
                             "load of a%d: uniform %d", k->instrs[j].arg,
                             k->instrs[j].uniform);
        check_kernel(k, fn, 1, 1, 900 + i);
        check_kernel(k, fn, 1, 3, 950 + i);
        kernel_free(k);
    }
}

/* out = a * b + c over every extent tuple from {1, 3, 17} for ranks 1 to
 * 4, plus tuples with one extent of 1000: a is contiguous, b broadcasts
 * along the innermost axis, and c has reversed (transposed) strides, so
 * the innermost stride of c is not 1. All kernels share one module. */
Test(codegen, ranks_and_odd_extents)
{
    enum { MAXK = 160 };
    Kernel **kernels = xcalloc(MAXK, sizeof *kernels);
    RtKernelFn *fns = xcalloc(MAXK, sizeof *fns);
    int n = 0;
    const int64_t small[3] = {1, 3, 17};
    for (int rank = 1; rank <= 4; rank++) {
        int combos = 1;
        for (int d = 0; d < rank; d++)
            combos *= 3;
        for (int combo = 0; combo < combos + rank; combo++) {
            KDim extents[KERNEL_MAX_RANK];
            int code = combo;
            for (int d = 0; d < rank; d++) {
                if (combo < combos) {
                    extents[d] = fixed(small[code % 3]);
                    code /= 3;
                } else {
                    extents[d] = fixed(d == combo - combos ? 1000 : 3);
                }
            }
            KDim a_strides[KERNEL_MAX_RANK], b_strides[KERNEL_MAX_RANK];
            KDim c_strides[KERNEL_MAX_RANK];
            contiguous_strides(extents, rank, a_strides);
            int64_t step = 1;
            for (int d = 0; d < rank; d++) {
                b_strides[d] = d == rank - 1 ? fixed(0) : a_strides[d];
                c_strides[d] = fixed(step);
                step *= extents[d].value;
            }
            char name[32];
            snprintf(name, sizeof name, "rank%d_%d", rank, combo);
            Kernel *k = kernel_new(name, rank, extents);
            int a = kernel_add_arg(k, DT_F32, false, a_strides);
            int b = kernel_add_arg(k, DT_F32, false, b_strides);
            int c = kernel_add_arg(k, DT_F32, false, c_strides);
            int out = kernel_add_arg(k, DT_F32, true, a_strides);
            int v = kernel_add(k, K_MUL, DT_F32, kernel_load(k, a), kernel_load(k, b), -1);
            v = kernel_add(k, K_ADD, DT_F32, v, kernel_load(k, c), -1);
            kernel_store(k, out, v);
            cr_assert(n < MAXK);
            kernels[n++] = k;
        }
    }
    compile_many(kernels, n, fns);
    for (int i = 0; i < n; i++)
        check_kernel(kernels[i], fns[i], 1, 1, 1000 + (uint64_t)i);
    free_kernels(kernels, n);
    free(fns);
    free(kernels);
}

/* Extents and strides that scale with the batch size, in three layouts. */
Test(codegen, batch_scaled_extents)
{
    Kernel *kernels[3];
    RtKernelFn fns[3];

    /* [B*3, 17]: y = x * col + batch, col a column vector of B*3 rows. */
    {
        KDim extents[2] = {batched(3), fixed(17)};
        KDim matrix[2] = {fixed(17), fixed(1)}, column[2] = {fixed(1), fixed(0)};
        Kernel *k = kernel_new("batch_rows", 2, extents);
        int x = kernel_add_arg(k, DT_F32, false, matrix);
        int col = kernel_add_arg(k, DT_F32, false, column);
        int y = kernel_add_arg(k, DT_F32, true, matrix);
        int v = kernel_add(k, K_MUL, DT_F32, kernel_load(k, x), kernel_load(k, col), -1);
        v = kernel_add(k, K_ADD, DT_F32, v, kernel_add(k, K_BATCH, DT_F32, -1, -1, -1), -1);
        kernel_store(k, y, v);
        kernels[0] = k;
    }
    /* [5, B*2] with a transposed output: its innermost stride is 5. */
    {
        KDim extents[2] = {fixed(5), batched(2)};
        KDim in[2] = {batched(2), fixed(1)}, out[2] = {fixed(1), fixed(5)};
        Kernel *k = kernel_new("batch_transpose", 2, extents);
        int x = kernel_add_arg(k, DT_F64, false, in);
        int y = kernel_add_arg(k, DT_F64, true, out);
        kernel_store(k, y, kernel_add(k, K_EXP, DT_F64, kernel_load(k, x), -1, -1));
        kernels[1] = k;
    }
    /* [2, B, 7]: a bias that is the same for every batch row. */
    {
        KDim extents[3] = {fixed(2), batched(1), fixed(7)};
        KDim full[3] = {batched(7), fixed(7), fixed(1)}, bias[3] = {fixed(7), fixed(0), fixed(1)};
        Kernel *k = kernel_new("batch_middle", 3, extents);
        int x = kernel_add_arg(k, DT_F32, false, full);
        int b = kernel_add_arg(k, DT_F32, false, bias);
        int y = kernel_add_arg(k, DT_F32, true, full);
        int v = kernel_add(k, K_SUB, DT_F32, kernel_load(k, x), kernel_load(k, b), -1);
        kernel_store(k, y, kernel_add(k, K_MAX, DT_F32, v, kernel_const(k, DT_F32, 0), -1));
        kernels[2] = k;
    }
    compile_many(kernels, 3, fns);
    const int64_t batches[] = {1, 2, 7, 32};
    for (int i = 0; i < 3; i++)
        for (size_t j = 0; j < BOCB_ARRAY_LEN(batches); j++)
            check_kernel(kernels[i], fns[i], batches[j], 1, 1200 + 10 * (uint64_t)i + j);
    free_kernels(kernels, 3);
}

/* The JIT kernel runs in pieces [begin, end), including empty ones, and
 * must match one kernel_eval call over the whole range. A kernel run over
 * a sub-range alone must leave every row outside it untouched. */
Test(codegen, partial_ranges)
{
    KDim extents[2] = {batched(5), fixed(33)};
    KDim strides[2] = {fixed(33), fixed(1)};
    Kernel *k = kernel_new("ranges", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, strides);
    int y = kernel_add_arg(k, DT_F32, true, strides);
    kernel_store(k, y, kernel_add(k, K_TANH, DT_F32, kernel_load(k, x), -1, -1));
    RtKernelFn fn = compile_one(k);

    int64_t batch = 3; /* 15 rows */
    const int64_t cuts[][2] = {{0, 1}, {1, 1}, {1, 7}, {7, 8}, {8, 15}, {15, 15}};
    Buffers b = buffers_random(k, batch, 1300);
    for (size_t i = 0; i < BOCB_ARRAY_LEN(cuts); i++)
        fn(b.jit, batch, cuts[i][0], cuts[i][1]);
    kernel_eval(k, b.ref, batch, 0, 15);
    assert_buffers_equal(k, &b);
    buffers_free(&b);

    b = buffers_random(k, batch, 1301);
    fn(b.jit, batch, 4, 9);
    kernel_eval(k, b.ref, batch, 4, 9);
    assert_buffers_equal(k, &b);
    fn(b.jit, batch, 9, 4); /* end < begin: no work */
    assert_buffers_equal(k, &b);
    buffers_free(&b);

    for (int pieces = 2; pieces <= 15; pieces += 13)
        check_kernel(k, fn, batch, pieces, 1302 + (uint64_t)pieces);
    kernel_free(k);
}

/* With no point to run, a kernel must not touch memory, not even for its
 * hoisted loads: every argument here is a null pointer. */
Test(codegen, empty_space_touches_nothing)
{
    KDim inner_zero[2] = {fixed(3), fixed(0)};
    KDim batch_rows[2] = {batched(2), fixed(5)};
    KDim strides[2] = {fixed(5), fixed(1)}, scalar[2] = {fixed(0), fixed(0)};
    Kernel *kernels[2];
    RtKernelFn fns[2];
    for (int i = 0; i < 2; i++) {
        Kernel *k = kernel_new("empty", 2, i == 0 ? inner_zero : batch_rows);
        int s = kernel_add_arg(k, DT_F32, false, scalar);
        int y = kernel_add_arg(k, DT_F32, true, strides);
        int e = kernel_add(k, K_EXP, DT_F32, kernel_load(k, s), -1, -1);
        kernel_store(k, y, e);
        kernels[i] = k;
    }
    compile_many(kernels, 2, fns);
    void *args[2] = {NULL, NULL};
    fns[0](args, 1, 0, 3);  /* inner extent 0 */
    fns[1](args, 0, 0, 0);  /* batch 0: outer extent 0 */
    fns[1](args, 4, 5, 5);  /* begin == end */
    fns[1](args, 4, 6, 2);  /* end < begin */
    kernel_eval(kernels[0], args, 1, 0, 3);
    kernel_eval(kernels[1], args, 0, 0, 0);
    cr_assert(true, "no kernel dereferenced a null argument");
    free_kernels(kernels, 2);
}

/* y = y * 0.5 + x: y is loaded and stored at the same element. */
Test(codegen, in_place_update)
{
    KDim extents[2] = {fixed(31), fixed(129)};
    KDim strides[2] = {fixed(129), fixed(1)};
    Kernel *k = kernel_new("in_place", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, strides);
    int y = kernel_add_arg(k, DT_F32, true, strides);
    int v = kernel_add(k, K_MUL, DT_F32, kernel_load(k, y), kernel_const(k, DT_F32, 0.5), -1);
    v = kernel_add(k, K_ADD, DT_F32, v, kernel_load(k, x), -1);
    kernel_store(k, y, v);
    RtKernelFn fn = compile_one(k);
    check_kernel(k, fn, 1, 1, 1400);
    check_kernel(k, fn, 1, 4, 1401);
    kernel_free(k);
}

/* Kernels named alike in one call and in two calls get distinct code. */
Test(codegen, same_names_across_modules)
{
    Kernel *first[3] = {
        unary_kernel("k", K_NEG, DT_F32, DT_F32, 100),
        unary_kernel("k", K_ABS, DT_F32, DT_F32, 100),
        unary_kernel("other", K_EXP, DT_F32, DT_F32, 100),
    };
    Kernel *second[2] = {
        unary_kernel("k", K_SQRT, DT_F32, DT_F32, 100),
        unary_kernel("other", K_FLOOR, DT_F32, DT_F32, 100),
    };
    RtKernelFn fns1[3], fns2[2];
    compile_many(first, 3, fns1);
    compile_many(second, 2, fns2);
    cr_assert(fns1[0] != fns1[1], "two kernels named k share code");
    cr_assert(fns1[0] != fns2[0], "k in two modules shares code");

    for (int i = 0; i < 3; i++)
        check_kernel(first[i], fns1[i], 1, 1, 1500 + (uint64_t)i);
    for (int i = 0; i < 2; i++)
        check_kernel(second[i], fns2[i], 1, 1, 1510 + (uint64_t)i);

    const JitStats *stats = jit_stats(jit);
    cr_assert_eq(stats->kernels, 5, "jit_stats counts %d kernels, expected 5", stats->kernels);
    cr_assert(stats->build_seconds > 0 && stats->opt_seconds > 0 && stats->link_seconds > 0,
              "jit_stats times: build %g, opt %g, link %g", stats->build_seconds,
              stats->opt_seconds, stats->link_seconds);
    free_kernels(first, 3);
    free_kernels(second, 2);
}

/* ---- uniform hoisting --------------------------------------------------- */

/* y = x / (1 - pow(beta, step)) where pow(beta, step) is the same at every
 * point, as in Adam's bias correction. */
static Kernel *bias_correction_kernel(void)
{
    KDim extent = fixed(1000), stride = fixed(1), scalar = fixed(0);
    Kernel *k = kernel_new("bias_correction", 1, &extent);
    int x = kernel_add_arg(k, DT_F32, false, &stride);
    int step = kernel_add_arg(k, DT_F32, false, &scalar);
    int y = kernel_add_arg(k, DT_F32, true, &stride);
    int p = kernel_add(k, K_POW, DT_F32, kernel_const(k, DT_F32, 0.9), kernel_load(k, step), -1);
    int bc = kernel_add(k, K_SUB, DT_F32, kernel_const(k, DT_F32, 1.0), p, -1);
    kernel_store(k, y, kernel_add(k, K_DIV, DT_F32, kernel_load(k, x), bc, -1));
    return k;
}

Test(codegen, uniform_pow_hoisted)
{
    Kernel *k = bias_correction_kernel();
    RtKernelFn fn = compile_one(k);
    for (int i = 0; i < 5; i++)
        cr_assert(k->instrs[i].uniform, "instruction %%%d (%s) is not uniform", i,
                  kop_name(k->instrs[i].op));
    cr_assert(!k->instrs[5].uniform, "the load of x is uniform");

    Buffers b = buffers_random(k, 1, 1600);
    ((float *)b.ref[1])[0] = 7.0f;
    buffers_sync(k, &b, 1);
    run_both(k, fn, &b, 1, 1);
    assert_buffers_equal(k, &b);
    buffers_free(&b);

    /* Before optimisation the call sits in the block before the loops. */
    char *error = NULL;
    char *ir = codegen_emit_llvm(&k, 1, false, &error);
    cr_assert_not_null(ir, "codegen_emit_llvm failed: %s", error ? error : "");
    const char *hoisted = strstr(ir, "\nhoisted:");
    const char *call = strstr(ir, "call float @powf(");
    const char *loop = strstr(ir, "\nd0:");
    cr_assert(hoisted && call && loop, "IR lacks a hoisted block, a powf call or a loop:\n%s", ir);
    cr_assert(hoisted < call && call < loop, "the powf call is not hoisted:\n%s", ir);
    free(ir);

    /* After O3 it is still one call, ahead of every loop phi. */
    ir = codegen_emit_llvm(&k, 1, true, &error);
    cr_assert_not_null(ir, "codegen_emit_llvm failed: %s", error ? error : "");
    call = strstr(ir, "call float @powf(");
    cr_assert_not_null(call, "optimised IR has no powf call:\n%s", ir);
    cr_assert_null(strstr(call + 1, "call float @powf("), "more than one powf call:\n%s", ir);
    const char *phi = strstr(ir, " = phi ");
    cr_assert(phi && call < phi, "the powf call is inside a loop:\n%s", ir);
    free(ir);
    kernel_free(k);
}

/* ---- an optimizer step -------------------------------------------------- */

/* One AdamW step (decoupled weight decay, bias-corrected moments) over n
 * parameters:
 *     p  = p - lr * wd * p
 *     m  = beta1 * m + (1 - beta1) * g
 *     v  = beta2 * v + (1 - beta2) * g * g
 *     p  = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * with lr, beta1, beta2, eps, wd and t read from scalar arguments. */
static Kernel *adamw_kernel(int64_t n)
{
    KDim extent = fixed(n), vec = fixed(1), scalar = fixed(0);
    Kernel *k = kernel_new("adamw", 1, &extent);
    int p = kernel_add_arg(k, DT_F32, true, &vec);
    int g = kernel_add_arg(k, DT_F32, false, &vec);
    int m = kernel_add_arg(k, DT_F32, true, &vec);
    int v = kernel_add_arg(k, DT_F32, true, &vec);
    int lr_arg = kernel_add_arg(k, DT_F32, false, &scalar);
    int beta1_arg = kernel_add_arg(k, DT_F32, false, &scalar);
    int beta2_arg = kernel_add_arg(k, DT_F32, false, &scalar);
    int eps_arg = kernel_add_arg(k, DT_F32, false, &scalar);
    int wd_arg = kernel_add_arg(k, DT_F32, false, &scalar);
    int step_arg = kernel_add_arg(k, DT_F32, false, &scalar);

    int lr = kernel_load(k, lr_arg), beta1 = kernel_load(k, beta1_arg);
    int beta2 = kernel_load(k, beta2_arg), eps = kernel_load(k, eps_arg);
    int wd = kernel_load(k, wd_arg), step = kernel_load(k, step_arg);
    int one = kernel_const(k, DT_F32, 1.0);
#define OP(op, x, y) kernel_add(k, op, DT_F32, x, y, -1)
    int decay = OP(K_MUL, lr, wd);
    int bc1 = OP(K_SUB, one, OP(K_POW, beta1, step));
    int bc2 = OP(K_SUB, one, OP(K_POW, beta2, step));
    int step_size = OP(K_DIV, lr, bc1);
    int bc2_sqrt = kernel_add(k, K_SQRT, DT_F32, bc2, -1, -1);

    int pv = kernel_load(k, p), gv = kernel_load(k, g);
    int p1 = OP(K_SUB, pv, OP(K_MUL, decay, pv));
    int m1 = OP(K_ADD, OP(K_MUL, beta1, kernel_load(k, m)),
                OP(K_MUL, OP(K_SUB, one, beta1), gv));
    int v1 = OP(K_ADD, OP(K_MUL, beta2, kernel_load(k, v)),
                OP(K_MUL, OP(K_MUL, OP(K_SUB, one, beta2), gv), gv));
    int denom = OP(K_ADD, OP(K_DIV, kernel_add(k, K_SQRT, DT_F32, v1, -1, -1), bc2_sqrt), eps);
    int p2 = OP(K_SUB, p1, OP(K_DIV, OP(K_MUL, step_size, m1), denom));
#undef OP
    kernel_store(k, p, p2);
    kernel_store(k, m, m1);
    kernel_store(k, v, v1);
    return k;
}

Test(codegen, adamw_million_elements)
{
    const int64_t n = 1000000;
    Kernel *k = adamw_kernel(n);
    RtKernelFn fn = compile_one(k);

    Buffers b = buffers_random(k, 1, 1700);
    const float scalars[6] = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 12.0f};
    for (int i = 0; i < 6; i++) {
        ((float *)b.ref[4 + i])[0] = scalars[i];
        buffers_sync(k, &b, 4 + i);
    }
    /* The second moment is a running mean of squares: keep it >= 0 except
     * for a few NaN and -0.0 entries from the special values. */
    float *v = b.ref[3];
    for (int64_t i = 0; i < n; i++)
        if (v[i] < 0)
            v[i] = -v[i];
    buffers_sync(k, &b, 3);

    run_both(k, fn, &b, 1, 4);
    assert_buffers_equal(k, &b);
    buffers_free(&b);
    kernel_free(k);
}

/* ---- vectorisation ------------------------------------------------------ */

Test(codegen, contiguous_f32_vectorised)
{
    KDim extents[2] = {batched(4), fixed(4096)};
    KDim strides[2] = {fixed(4096), fixed(1)};
    KDim scalar[2] = {fixed(0), fixed(0)};
    Kernel *k = kernel_new("axpy", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, strides);
    int a = kernel_add_arg(k, DT_F32, false, scalar);
    int y = kernel_add_arg(k, DT_F32, true, strides);
    int v = kernel_add(k, K_MUL, DT_F32, kernel_load(k, a), kernel_load(k, x), -1);
    kernel_store(k, y, kernel_add(k, K_ADD, DT_F32, kernel_load(k, y), v, -1));
    kernel_finalize(k);

    char *error = NULL;
    char *ir = codegen_emit_llvm(&k, 1, true, &error);
    cr_assert_not_null(ir, "codegen_emit_llvm failed: %s", error ? error : "");
    bool vectorised = strstr(ir, "<16 x float>") || strstr(ir, "<8 x float>");
    cr_assert(vectorised, "no <16 x float> or <8 x float> in the O3 IR:\n%s", ir);
    free(ir);
    kernel_free(k);
}

/* ---- kernel.c: flags, printing and invariants --------------------------- */

Test(codegen, finalize_uniform_flags)
{
    KDim extents[2] = {batched(1), fixed(8)};
    KDim full[2] = {fixed(8), fixed(1)}, scalar[2] = {fixed(0), fixed(0)};
    Kernel *k = kernel_new("flags", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, full);
    int s = kernel_add_arg(k, DT_F32, false, scalar);
    int y = kernel_add_arg(k, DT_F32, true, full);
    int ls = kernel_load(k, s);                                /* 0: uniform */
    int nb = kernel_add(k, K_BATCH, DT_F32, -1, -1, -1);       /* 1: uniform */
    int prod = kernel_add(k, K_MUL, DT_F32, ls, nb, -1);       /* 2: uniform */
    int lx = kernel_load(k, x);                                /* 3: varies */
    int sum = kernel_add(k, K_ADD, DT_F32, lx, prod, -1);      /* 4: varies */
    kernel_store(k, y, sum);                                   /* 5: never */
    kernel_finalize(k);
    const bool want[6] = {true, true, true, false, false, false};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(k->instrs[i].uniform, want[i], "instruction %%%d (%s): uniform %d",
                     i, kop_name(k->instrs[i].op), k->instrs[i].uniform);
    cr_assert_eq(kernel_outer_extent(k, 9), 9);
    kernel_free(k);
}

Test(codegen, print_format)
{
    KDim extents[2] = {batched(128), fixed(256)};
    KDim full[2] = {fixed(256), fixed(1)}, scalar[2] = {fixed(0), fixed(0)};
    KDim out[2] = {batched(256), fixed(1)};
    Kernel *k = kernel_new("fused_3", 2, extents);
    int x = kernel_add_arg(k, DT_F32, false, full);
    int s = kernel_add_arg(k, DT_F32, false, scalar);
    int y = kernel_add_arg(k, DT_F32, true, out);
    int lx = kernel_load(k, x);
    int ls = kernel_load(k, s);
    int tenth = kernel_const(k, DT_F32, 0.1);
    int h = kernel_add(k, K_MUL, DT_F32, ls, tenth, -1);
    int c = kernel_add(k, K_GT, DT_BOOL, lx, h, -1);
    int r = kernel_add(k, K_SELECT, DT_F32, lx, h, c);
    int ly = kernel_load(k, y);
    kernel_store(k, y, kernel_add(k, K_ADD, DT_F32, ly, r, -1));
    kernel_finalize(k);

    char *text = NULL;
    size_t len = 0;
    FILE *out_file = open_memstream(&text, &len);
    cr_assert_not_null(out_file);
    kernel_print(out_file, k);
    fclose(out_file);
    const char *want =
        "kernel fused_3 [B*128, 256] {\n"
        "  arg a0 f32 in strides [256, 1]\n"
        "  arg a1 f32 in strides [0, 0]\n"
        "  arg a2 f32 inout strides [B*256, 1]\n"
        "  %0 = load f32 a0\n"
        "  %1 = load f32 a1  ; uniform\n"
        "  %2 = const f32 0.1  ; uniform\n"
        "  %3 = mul f32 %1, %2  ; uniform\n"
        "  %4 = gt bool %0, %3\n"
        "  %5 = select f32 %4, %0, %3\n"
        "  %6 = load f32 a2\n"
        "  %7 = add f32 %6, %5\n"
        "  store f32 a2, %7\n"
        "}\n";
    cr_assert_str_eq(text, want, "kernel_print wrote:\n%s", text);
    free(text);
    kernel_free(k);
}

Test(codegen, finalize_rejects_double_store, .signal = SIGABRT)
{
    KDim extent = fixed(4), stride = fixed(1);
    Kernel *k = kernel_new("double_store", 1, &extent);
    int y = kernel_add_arg(k, DT_F32, true, &stride);
    int c = kernel_const(k, DT_F32, 1.0);
    kernel_store(k, y, c);
    kernel_store(k, y, c);
    kernel_finalize(k);
}

Test(codegen, finalize_rejects_missing_store, .signal = SIGABRT)
{
    KDim extent = fixed(4), stride = fixed(1);
    Kernel *k = kernel_new("missing_store", 1, &extent);
    kernel_add_arg(k, DT_F32, true, &stride);
    kernel_finalize(k);
}

Test(codegen, finalize_rejects_mixed_dtypes, .signal = SIGABRT)
{
    KDim extent = fixed(4), stride = fixed(1);
    Kernel *k = kernel_new("mixed", 1, &extent);
    int y = kernel_add_arg(k, DT_F32, true, &stride);
    int v = kernel_add(k, K_ADD, DT_F32, kernel_const(k, DT_F32, 1.0),
                       kernel_const(k, DT_F64, 2.0), -1);
    kernel_store(k, y, v);
    kernel_finalize(k);
}

Test(codegen, finalize_rejects_broadcast_store, .signal = SIGABRT)
{
    KDim extent = fixed(4), scalar = fixed(0);
    Kernel *k = kernel_new("broadcast_store", 1, &extent);
    int y = kernel_add_arg(k, DT_F32, true, &scalar);
    kernel_store(k, y, kernel_const(k, DT_F32, 1.0));
    kernel_finalize(k);
}

/* ---- random numbers ------------------------------------------------------ */

/* y = random(key, step) over a [B*3, 5, 7] space with uniform key and step
 * arguments, split into pieces as threads split it: generated code, the
 * reference evaluator and philox_random at each element's row-major index
 * all agree. */
static void check_random(DType dt)
{
    KDim extents[3] = {batched(3), fixed(5), fixed(7)}, strides[3], zero[3] = {fixed(0), fixed(0), fixed(0)};
    contiguous_strides(extents, 3, strides);
    Kernel *k = kernel_new("random", 3, extents);
    int key = kernel_add_arg(k, dt, false, zero);
    int step = kernel_add_arg(k, dt, false, zero);
    int y = kernel_add_arg(k, dt, true, strides);
    kernel_store(k, y, kernel_add(k, K_RANDOM, dt, kernel_load(k, key), kernel_load(k, step), -1));
    RtKernelFn fn = compile_one(k);

    const int64_t batch = 4, n = batch * 3 * 5 * 7;
    for (int trial = 0; trial < 3; trial++) {
        Buffers b = buffers_random(k, batch, 40 + (uint64_t)trial);
        /* Steps are counts; a negative or NaN step saturates to 0. */
        const double steps[3] = {1, 123456, -2};
        if (dt == DT_F32)
            *(float *)b.jit[1] = *(float *)b.ref[1] = (float)steps[trial];
        else
            *(double *)b.jit[1] = *(double *)b.ref[1] = steps[trial];
        run_both(k, fn, &b, batch, 3);
        assert_buffers_equal(k, &b);
        for (int64_t i = 0; i < n; i++) {
            double got = dt == DT_F32 ? ((float *)b.jit[2])[i] : ((double *)b.jit[2])[i];
            double want = dt == DT_F32
                              ? philox_random_f32(*(float *)b.jit[0], *(float *)b.jit[1],
                                                  (uint64_t)i)
                              : philox_random_f64(*(double *)b.jit[0], *(double *)b.jit[1],
                                                  (uint64_t)i);
            cr_assert(got == want && got >= 0 && got < 1, "element %lld: %.17g, want %.17g",
                      (long long)i, got, want);
        }
        buffers_free(&b);
    }
    free_kernels(&k, 1);
}

Test(codegen, random_f32) { check_random(DT_F32); }
Test(codegen, random_f64) { check_random(DT_F64); }
