/* Tests of the runtime kernels in ops.h against naive loops in double.
 *
 * Each f32 or f64 result is compared with a double-precision reference
 * within tol * scale, where scale is the same computation on the absolute
 * values of the inputs: a bound on the rounding error of any summation
 * order.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

/* Returns a uniform double in [-1, 1) from a xorshift64* generator. */
static double rand_signed(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t bits = rng_state * 0x2545F4914F6CDD1Du;
    return (double)(bits >> 11) * 0x1p-52 - 1.0;
}

static double *random_f64(size_t n)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = rand_signed();
    return v;
}

static double *abs_copy(const double *v, size_t n)
{
    double *a = malloc((n ? n : 1) * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = fabs(v[i]);
    return a;
}

static float *to_f32(const double *v, size_t n)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    for (size_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    return f;
}

/* Rounds every element to float, so f32 kernels and the double reference
 * see the same inputs. */
static void round_to_f32(double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = (float)v[i];
}

static void *filled_nan(DType dt, size_t n)
{
    if (dt == DT_F32) {
        float *f = malloc((n ? n : 1) * sizeof *f);
        for (size_t i = 0; i < n; i++)
            f[i] = NAN;
        return f;
    }
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = NAN;
    return d;
}

static double value_at(DType dt, const void *p, size_t i)
{
    return dt == DT_F32 ? ((const float *)p)[i] : ((const double *)p)[i];
}

/* Expects |got[i] - ref[i]| <= tol * scale[i] + 1e-300 for every i. */
static void expect_close(DType dt, const void *got, const double *ref,
                         const double *scale, size_t n, double tol,
                         const char *what)
{
    int reported = 0;
    for (size_t i = 0; i < n; i++) {
        double g = value_at(dt, got, i);
        double bound = tol * scale[i] + 1e-300;
        bool ok = fabs(g - ref[i]) <= bound;
        cr_expect(ok, "%s %s [%zu]: got %.17g, expected %.17g (bound %.3g)",
                  what, dtype_name(dt), i, g, ref[i], bound);
        if (!ok && ++reported == 5)
            break;
    }
}

/* ---- Matrix products ------------------------------------------------------ */

/* C = op(A) op(B) + beta C in double, A stored [m,k] or [k,m] (trans_a). */
static void naive_matmul(bool trans_a, bool trans_b, int64_t m, int64_t n,
                         int64_t k, const double *a, const double *b, double *c,
                         double beta)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double sum = 0;
            for (int64_t l = 0; l < k; l++) {
                double av = trans_a ? a[l * m + i] : a[i * k + l];
                double bv = trans_b ? b[j * k + l] : b[l * n + j];
                sum += av * bv;
            }
            c[i * n + j] = sum + (beta != 0 ? beta * c[i * n + j] : 0);
        }
}

static void check_matmul(DType dt, bool trans_a, bool trans_b, int64_t m,
                         int64_t n, int64_t k, double beta)
{
    size_t na = (size_t)(m * k), nb = (size_t)(k * n), nc = (size_t)(m * n);
    double *a = random_f64(na), *b = random_f64(nb), *c = random_f64(nc);
    if (dt == DT_F32) {
        round_to_f32(a, na);
        round_to_f32(b, nb);
        round_to_f32(c, nc);
    }
    double *ref = malloc((nc ? nc : 1) * sizeof *ref);
    double *scale = malloc((nc ? nc : 1) * sizeof *scale);
    memcpy(ref, c, nc * sizeof *c);
    double *aa = abs_copy(a, na), *ab = abs_copy(b, nb), *ac = abs_copy(c, nc);
    memcpy(scale, ac, nc * sizeof *c);
    naive_matmul(trans_a, trans_b, m, n, k, a, b, ref, beta);
    naive_matmul(trans_a, trans_b, m, n, k, aa, ab, scale, fabs(beta));

    /* With beta = 0 the old contents of C are ignored, NaN included. */
    void *got;
    if (beta == 0) {
        got = filled_nan(dt, nc);
    } else if (dt == DT_F32) {
        got = to_f32(c, nc);
    } else {
        got = malloc((nc ? nc : 1) * sizeof(double));
        memcpy(got, c, nc * sizeof(double));
    }
    if (dt == DT_F32) {
        float *fa = to_f32(a, na), *fb = to_f32(b, nb);
        rt_matmul(dt, trans_a, trans_b, m, n, k, fa, fb, got, beta);
        free(fa);
        free(fb);
    } else {
        rt_matmul(dt, trans_a, trans_b, m, n, k, a, b, got, beta);
    }

    char what[64];
    snprintf(what, sizeof what, "matmul ta=%d tb=%d beta=%g", trans_a, trans_b, beta);
    double tol = dt == DT_F32 ? 1e-6 : 1e-15;
    expect_close(dt, got, ref, scale, nc, tol * (double)(k + 1), what);

    free(a), free(b), free(c), free(aa), free(ab), free(ac);
    free(ref), free(scale), free(got);
}

Test(matmul, transposes_f32)
{
    for (int t = 0; t < 4; t++)
        for (int bi = 0; bi < 2; bi++) {
            check_matmul(DT_F32, t & 1, t & 2, 7, 5, 11, bi);
            check_matmul(DT_F32, t & 1, t & 2, 33, 17, 65, bi);
        }
}

Test(matmul, transposes_f64)
{
    for (int t = 0; t < 4; t++)
        for (int bi = 0; bi < 2; bi++) {
            check_matmul(DT_F64, t & 1, t & 2, 7, 5, 11, bi);
            check_matmul(DT_F64, t & 1, t & 2, 33, 17, 65, bi);
        }
}

Test(matmul, degenerate_sizes)
{
    check_matmul(DT_F64, false, false, 1, 1, 1, 0);
    check_matmul(DT_F64, true, true, 1, 9, 1, 1);
    /* k = 0: C = beta * C. */
    check_matmul(DT_F64, false, false, 3, 4, 0, 1);
    check_matmul(DT_F32, true, false, 3, 4, 0, 0);
    check_matmul(DT_F64, false, true, 0, 4, 5, 1);
}

/* ---- Convolution ---------------------------------------------------------- */

enum ConvMode { CONV_FORWARD, CONV_GRAD_INPUT, CONV_GRAD_WEIGHT };

/* The direct 7-loop convolution. Each mode visits every (image, output
 * channel, output pixel, input channel, tap) and accumulates one product:
 *   forward:     y[n,k,p,q]    += x[n,c,ih,iw] * w[k,c',r,s]
 *   grad_input:  dx[n,c,ih,iw] += dy[n,k,p,q]  * w[k,c',r,s]
 *   grad_weight: dw[k,c',r,s]  += dy[n,k,p,q]  * x[n,c,ih,iw]
 * where c = group * C/groups + c'. `out` is zeroed first. */
static void naive_conv(enum ConvMode mode, const RtConv2d *cv, const double *x,
                       const double *w, const double *dy, double *out,
                       size_t out_count)
{
    memset(out, 0, out_count * sizeof *out);
    int64_t cg = cv->c / cv->groups, kg = cv->k / cv->groups;
    for (int64_t n = 0; n < cv->n; n++)
        for (int64_t k = 0; k < cv->k; k++)
            for (int64_t p = 0; p < cv->p; p++)
                for (int64_t q = 0; q < cv->q; q++)
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t r = 0; r < cv->r; r++)
                            for (int64_t s = 0; s < cv->s; s++) {
                                int64_t ih = p * cv->stride_h - cv->pad_h + r * cv->dil_h;
                                int64_t iw = q * cv->stride_w - cv->pad_w + s * cv->dil_w;
                                if (ih < 0 || ih >= cv->h || iw < 0 || iw >= cv->w)
                                    continue;
                                int64_t c = k / kg * cg + ci;
                                int64_t xi = ((n * cv->c + c) * cv->h + ih) * cv->w + iw;
                                int64_t wi = ((k * cg + ci) * cv->r + r) * cv->s + s;
                                int64_t yi = ((n * cv->k + k) * cv->p + p) * cv->q + q;
                                if (mode == CONV_FORWARD)
                                    out[yi] += x[xi] * w[wi];
                                else if (mode == CONV_GRAD_INPUT)
                                    out[xi] += dy[yi] * w[wi];
                                else
                                    out[wi] += dy[yi] * x[xi];
                            }
}

typedef struct ConvCase {
    int64_t n, c, h, w, k, r, s;
    int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
} ConvCase;

static const ConvCase conv_cases[] = {
    /* n  c   h   w   k  r  s  sh sw ph pw dh dw  g */
    {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 1, 1, 1},
    {3, 4, 7, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 4, 9, 8, 4, 3, 2, 2, 2, 1, 0, 1, 1, 2},
    {1, 6, 8, 7, 6, 3, 3, 1, 2, 2, 1, 2, 1, 6},
    {3, 4, 10, 9, 8, 2, 3, 2, 1, 2, 2, 2, 2, 2},
    {2, 3, 6, 6, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1},
    {3, 4, 6, 5, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2},
    {1, 2, 5, 5, 3, 3, 3, 1, 1, 2, 2, 1, 1, 1},
    {1, 2, 4, 4, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1},
    {1, 2, 9, 9, 2, 2, 2, 3, 3, 0, 0, 1, 1, 1},
    {2, 3, 7, 7, 4, 1, 1, 2, 2, 0, 0, 1, 1, 1},
    {3, 3, 5, 11, 6, 3, 5, 2, 1, 1, 2, 1, 2, 3},
    {1, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 8, 14, 14, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    /* depthwise: stride 2 with padding, channel multiplier 2, 1x1, and
     * stride 1 (the flat path) with dilation and with 4 and 5 kernel
     * columns (taps in groups of three plus a rest) */
    {2, 5, 9, 8, 5, 3, 3, 2, 2, 1, 1, 1, 1, 5},
    {2, 4, 7, 7, 8, 5, 5, 2, 2, 2, 2, 1, 1, 4},
    {1, 3, 6, 6, 3, 1, 1, 1, 1, 0, 0, 1, 1, 3},
    {2, 3, 9, 10, 3, 3, 3, 1, 1, 2, 2, 2, 2, 3},
    {1, 2, 8, 9, 4, 3, 4, 1, 1, 1, 2, 1, 1, 2},
    {1, 2, 7, 7, 2, 5, 5, 1, 1, 2, 2, 1, 1, 2},
    {2, 2, 6, 9, 2, 2, 3, 1, 1, 0, 1, 2, 3, 2},
};

static RtConv2d conv_from_case(const ConvCase *cc)
{
    RtConv2d cv = {
        .n = cc->n, .c = cc->c, .h = cc->h, .w = cc->w,
        .k = cc->k, .r = cc->r, .s = cc->s,
        .stride_h = cc->stride_h, .stride_w = cc->stride_w,
        .pad_h = cc->pad_h, .pad_w = cc->pad_w,
        .dil_h = cc->dil_h, .dil_w = cc->dil_w,
        .groups = cc->groups,
    };
    cr_assert(rt_conv2d_infer(&cv), "case %lldx%lldx%lldx%lld is invalid",
              (long long)cc->n, (long long)cc->c, (long long)cc->h, (long long)cc->w);
    return cv;
}

static void describe_conv(const RtConv2d *cv, char *buf, size_t size)
{
    snprintf(buf, size,
             "conv x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] stride %lldx%lld "
             "pad %lldx%lld dil %lldx%lld groups %lld",
             (long long)cv->n, (long long)cv->c, (long long)cv->h, (long long)cv->w,
             (long long)cv->k, (long long)(cv->c / cv->groups), (long long)cv->r,
             (long long)cv->s, (long long)cv->stride_h, (long long)cv->stride_w,
             (long long)cv->pad_h, (long long)cv->pad_w, (long long)cv->dil_h,
             (long long)cv->dil_w, (long long)cv->groups);
}

/* Runs the three kernels on random data and checks them against the naive
 * loops. Outputs start as NaN, so a kernel that leaves an element
 * unwritten or reads its old value fails. */
static void check_conv(DType dt, const ConvCase *cc)
{
    RtConv2d cv = conv_from_case(cc);
    size_t nx = (size_t)(cv.n * cv.c * cv.h * cv.w);
    size_t nw = (size_t)(cv.k * cv.c / cv.groups * cv.r * cv.s);
    size_t ny = (size_t)(cv.n * cv.k * cv.p * cv.q);
    double *x = random_f64(nx), *w = random_f64(nw), *dy = random_f64(ny);
    if (dt == DT_F32) {
        round_to_f32(x, nx);
        round_to_f32(w, nw);
        round_to_f32(dy, ny);
    }
    double *ax = abs_copy(x, nx), *aw = abs_copy(w, nw), *ady = abs_copy(dy, ny);

    double *ref_y = malloc(ny * sizeof(double)), *scale_y = malloc(ny * sizeof(double));
    double *ref_dx = malloc(nx * sizeof(double)), *scale_dx = malloc(nx * sizeof(double));
    double *ref_dw = malloc(nw * sizeof(double)), *scale_dw = malloc(nw * sizeof(double));
    naive_conv(CONV_FORWARD, &cv, x, w, dy, ref_y, ny);
    naive_conv(CONV_FORWARD, &cv, ax, aw, ady, scale_y, ny);
    naive_conv(CONV_GRAD_INPUT, &cv, x, w, dy, ref_dx, nx);
    naive_conv(CONV_GRAD_INPUT, &cv, ax, aw, ady, scale_dx, nx);
    naive_conv(CONV_GRAD_WEIGHT, &cv, x, w, dy, ref_dw, nw);
    naive_conv(CONV_GRAD_WEIGHT, &cv, ax, aw, ady, scale_dw, nw);

    /* The workspace is exactly the size the kernels ask for, so an
     * overrun shows under AddressSanitizer. */
    void *ws = malloc(rt_conv2d_workspace_bytes(dt, &cv));
    void *y = filled_nan(dt, ny), *dx = filled_nan(dt, nx), *dw = filled_nan(dt, nw);
    const void *kx = x, *kw = w, *kdy = dy;
    float *fx = NULL, *fw = NULL, *fdy = NULL;
    if (dt == DT_F32) {
        kx = fx = to_f32(x, nx);
        kw = fw = to_f32(w, nw);
        kdy = fdy = to_f32(dy, ny);
    }
    rt_conv2d_forward(dt, &cv, kx, kw, y, ws);
    rt_conv2d_grad_input(dt, &cv, kdy, kw, dx, ws);
    rt_conv2d_grad_weight(dt, &cv, kx, kdy, dw, ws);

    char what[256];
    double tol = dt == DT_F32 ? 1e-6 : 1e-14;
    describe_conv(&cv, what, sizeof what);
    strncat(what, " forward", sizeof what - strlen(what) - 1);
    expect_close(dt, y, ref_y, scale_y, ny, tol, what);
    describe_conv(&cv, what, sizeof what);
    strncat(what, " grad_input", sizeof what - strlen(what) - 1);
    expect_close(dt, dx, ref_dx, scale_dx, nx, tol, what);
    describe_conv(&cv, what, sizeof what);
    strncat(what, " grad_weight", sizeof what - strlen(what) - 1);
    expect_close(dt, dw, ref_dw, scale_dw, nw, tol, what);

    free(x), free(w), free(dy), free(ax), free(aw), free(ady);
    free(ref_y), free(scale_y), free(ref_dx), free(scale_dx);
    free(ref_dw), free(scale_dw);
    free(ws), free(y), free(dx), free(dw), free(fx), free(fw), free(fdy);
}

Test(conv2d, naive_f64)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        check_conv(DT_F64, &conv_cases[i]);
}

Test(conv2d, naive_f32)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++)
        check_conv(DT_F32, &conv_cases[i]);
}

static double dot(const double *a, const double *b, size_t n, double *abs_sum)
{
    double sum = 0, asum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += a[i] * b[i];
        asum += fabs(a[i] * b[i]);
    }
    *abs_sum = asum;
    return sum;
}

/* <conv(x, w), dy> = <x, grad_input(dy, w)> = <w, grad_weight(x, dy)>: all
 * three are the sum of x * w * dy over the same index triples. The
 * relative error is measured against the sum of |<conv(x, w)_i, dy_i>|. */
Test(conv2d, adjoint_identity_f64)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        RtConv2d cv = conv_from_case(&conv_cases[i]);
        size_t nx = (size_t)(cv.n * cv.c * cv.h * cv.w);
        size_t nw = (size_t)(cv.k * cv.c / cv.groups * cv.r * cv.s);
        size_t ny = (size_t)(cv.n * cv.k * cv.p * cv.q);
        double *x = random_f64(nx), *w = random_f64(nw), *dy = random_f64(ny);
        double *y = malloc(ny * sizeof *y), *dx = malloc(nx * sizeof *dx);
        double *dw = malloc(nw * sizeof *dw);
        void *ws = malloc(rt_conv2d_workspace_bytes(DT_F64, &cv));
        rt_conv2d_forward(DT_F64, &cv, x, w, y, ws);
        rt_conv2d_grad_input(DT_F64, &cv, dy, w, dx, ws);
        rt_conv2d_grad_weight(DT_F64, &cv, x, dy, dw, ws);

        double scale, unused;
        double via_y = dot(y, dy, ny, &scale);
        double via_dx = dot(x, dx, nx, &unused);
        double via_dw = dot(w, dw, nw, &unused);
        char what[256];
        describe_conv(&cv, what, sizeof what);
        cr_expect_leq(fabs(via_y - via_dx), 1e-12 * scale,
                      "%s: <y, dy> = %.17g but <x, dx> = %.17g", what, via_y, via_dx);
        cr_expect_leq(fabs(via_y - via_dw), 1e-12 * scale,
                      "%s: <y, dy> = %.17g but <w, dw> = %.17g", what, via_y, via_dw);
        free(x), free(w), free(dy), free(y), free(dx), free(dw), free(ws);
    }
}

/* The direct depthwise loops and the im2col path compute the same three
 * results, up to the order of the sums. */
Test(conv2d, depthwise_matches_im2col)
{
    for (size_t i = 0; i < sizeof conv_cases / sizeof conv_cases[0]; i++) {
        RtConv2d cv = conv_from_case(&conv_cases[i]);
        if (!rt_conv2d_is_depthwise(&cv))
            continue;
        size_t nx = (size_t)(cv.n * cv.c * cv.h * cv.w), nw = (size_t)(cv.k * cv.r * cv.s);
        size_t ny = (size_t)(cv.n * cv.k * cv.p * cv.q);
        double *x = random_f64(nx), *w = random_f64(nw), *dy = random_f64(ny);
        double *out[2][3];
        void *ws = malloc(rt_conv2d_workspace_bytes(DT_F64, &cv));
        for (int path = 0; path < 2; path++) {
            out[path][0] = malloc(ny * sizeof(double));
            out[path][1] = malloc(nx * sizeof(double));
            out[path][2] = malloc(nw * sizeof(double));
        }
        rt_depthwise_forward(DT_F64, &cv, x, w, out[0][0], ws);
        rt_depthwise_grad_input(DT_F64, &cv, dy, w, out[0][1], ws);
        rt_depthwise_grad_weight(DT_F64, &cv, x, dy, out[0][2], ws);
        rt_conv2d_im2col_forward(DT_F64, &cv, x, w, out[1][0], ws);
        rt_conv2d_im2col_grad_input(DT_F64, &cv, dy, w, out[1][1], ws);
        rt_conv2d_im2col_grad_weight(DT_F64, &cv, x, dy, out[1][2], ws);
        size_t sizes[3] = {ny, nx, nw};
        for (int r = 0; r < 3; r++)
            for (size_t j = 0; j < sizes[r]; j++)
                cr_expect(fabs(out[0][r][j] - out[1][r][j]) <= 1e-12,
                          "case %zu result %d element %zu: direct %.17g, im2col %.17g", i, r,
                          j, out[0][r][j], out[1][r][j]);
        for (int path = 0; path < 2; path++)
            for (int r = 0; r < 3; r++)
                free(out[path][r]);
        free(x), free(w), free(dy), free(ws);
    }
}

Test(conv2d, infer_output_size)
{
    RtConv2d cv = {.n = 2, .c = 4, .h = 28, .w = 27, .k = 8, .r = 3, .s = 3,
                   .stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 0,
                   .dil_h = 1, .dil_w = 2, .groups = 2};
    cr_assert(rt_conv2d_infer(&cv));
    cr_expect_eq(cv.p, 14);  /* (28 + 2 - 3) / 2 + 1 */
    cr_expect_eq(cv.q, 23);  /* (27 - 5) / 1 + 1 */
    cr_expect_eq(rt_conv2d_workspace_bytes(DT_F32, &cv),
                 (size_t)(2 * 3 * 3 * 14 * 23) * sizeof(float));
}

Test(conv2d, infer_rejects_invalid)
{
    RtConv2d base = {.n = 1, .c = 4, .h = 5, .w = 5, .k = 4, .r = 3, .s = 3,
                     .stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0,
                     .dil_h = 1, .dil_w = 1, .groups = 1};
    RtConv2d cv = base;
    cv.r = 7;
    cr_expect_not(rt_conv2d_infer(&cv), "a kernel larger than the input");
    cv = base;
    cv.dil_h = 3;
    cr_expect_not(rt_conv2d_infer(&cv), "a dilated kernel larger than the input");
    cv = base;
    cv.groups = 3;
    cr_expect_not(rt_conv2d_infer(&cv), "channels not divisible by groups");
    cv = base;
    cv.stride_w = 0;
    cr_expect_not(rt_conv2d_infer(&cv), "stride 0");
    cv = base;
    cv.pad_h = -1;
    cr_expect_not(rt_conv2d_infer(&cv), "negative padding");
}

Test(conv2d, empty_batch_zeroes_grad_weight)
{
    RtConv2d cv = {.n = 0, .c = 2, .h = 5, .w = 5, .k = 3, .r = 3, .s = 3,
                   .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1,
                   .dil_h = 1, .dil_w = 1, .groups = 1};
    cr_assert(rt_conv2d_infer(&cv));
    double *dw = filled_nan(DT_F64, 3 * 2 * 9);
    double x[1], dy[1];
    void *ws = malloc(rt_conv2d_workspace_bytes(DT_F64, &cv));
    rt_conv2d_grad_weight(DT_F64, &cv, x, dy, dw, ws);
    for (int i = 0; i < 3 * 2 * 9; i++)
        cr_expect_eq(dw[i], 0.0);
    free(dw);
    free(ws);
}

/* ---- Max pooling ---------------------------------------------------------- */

/* Returns the plane index of the selected element of a window: the first
 * NaN if there is one, else the first maximum in row-major order. */
static int64_t naive_pool_select(const RtPool2d *pl, const double *xp, int64_t p,
                                 int64_t q)
{
    int64_t first_nan = -1, best = -1;
    for (int64_t i = 0; i < pl->kernel_h; i++)
        for (int64_t j = 0; j < pl->kernel_w; j++) {
            int64_t ih = p * pl->stride_h - pl->pad_h + i;
            int64_t iw = q * pl->stride_w - pl->pad_w + j;
            if (ih < 0 || ih >= pl->h || iw < 0 || iw >= pl->w)
                continue;
            int64_t at = ih * pl->w + iw;
            if (isnan(xp[at]) && first_nan < 0)
                first_nan = at;
            if (!isnan(xp[at]) && (best < 0 || xp[at] > xp[best]))
                best = at;
        }
    return first_nan >= 0 ? first_nan : best;
}

static void naive_pool(const RtPool2d *pl, const double *x, const double *dy,
                       double *y, double *dx)
{
    int64_t hw = pl->h * pl->w, pq = pl->p * pl->q;
    memset(dx, 0, (size_t)(pl->n * pl->c * hw) * sizeof *dx);
    for (int64_t plane = 0; plane < pl->n * pl->c; plane++)
        for (int64_t p = 0; p < pl->p; p++)
            for (int64_t q = 0; q < pl->q; q++) {
                int64_t at = naive_pool_select(pl, x + plane * hw, p, q);
                cr_assert_geq(at, 0);
                y[plane * pq + p * pl->q + q] = x[plane * hw + at];
                dx[plane * hw + at] += dy[plane * pq + p * pl->q + q];
            }
}

static RtPool2d make_pool(int64_t n, int64_t c, int64_t h, int64_t w, int64_t kh,
                          int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw)
{
    RtPool2d pl = {.n = n, .c = c, .h = h, .w = w, .kernel_h = kh, .kernel_w = kw,
                   .stride_h = sh, .stride_w = sw, .pad_h = ph, .pad_w = pw};
    cr_assert(rt_pool2d_infer(&pl));
    return pl;
}

/* Runs forward and grad on x and compares them with the naive loops. NaN
 * outputs must match as NaN. */
static void check_pool(DType dt, const RtPool2d *pl, const double *x)
{
    size_t nx = (size_t)(pl->n * pl->c * pl->h * pl->w);
    size_t ny = (size_t)(pl->n * pl->c * pl->p * pl->q);
    /* Gradients are multiples of 1/4, so their sums are exact in f32 and
     * dx must match the reference exactly. */
    double *dy = random_f64(ny);
    for (size_t i = 0; i < ny; i++)
        dy[i] = floor(dy[i] * 8) / 4;
    double *ref_y = malloc(ny * sizeof *ref_y), *ref_dx = malloc(nx * sizeof *ref_dx);
    naive_pool(pl, x, dy, ref_y, ref_dx);

    void *y = filled_nan(dt, ny), *dx = filled_nan(dt, nx);
    if (dt == DT_F32) {
        float *fx = to_f32(x, nx), *fdy = to_f32(dy, ny);
        rt_maxpool2d_forward(dt, pl, fx, y);
        rt_maxpool2d_grad(dt, pl, fx, fdy, dx);
        free(fx);
        free(fdy);
    } else {
        rt_maxpool2d_forward(dt, pl, x, y);
        rt_maxpool2d_grad(dt, pl, x, dy, dx);
    }

    for (size_t i = 0; i < ny; i++) {
        double g = value_at(dt, y, i);
        if (isnan(ref_y[i]))
            cr_expect(isnan(g), "y[%zu] = %g, expected NaN", i, g);
        else
            cr_expect_eq(g, ref_y[i], "y[%zu] = %g, expected %g", i, g, ref_y[i]);
    }
    for (size_t i = 0; i < nx; i++) {
        double g = value_at(dt, dx, i);
        cr_expect_eq(g, ref_dx[i], "dx[%zu] = %g, expected %g", i, g, ref_dx[i]);
    }
    free(dy), free(ref_y), free(ref_dx), free(y), free(dx);
}

/* Returns random values on a coarse grid, so windows often contain ties. */
static double *random_grid(size_t n)
{
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = floor(rand_signed() * 3);
    return v;
}

Test(maxpool, naive_configurations)
{
    const int64_t cfg[][6] = {
        /* kh kw sh sw ph pw */
        {2, 2, 2, 2, 0, 0},
        {3, 3, 2, 2, 0, 0},
        {3, 3, 2, 2, 1, 1},
        {3, 2, 1, 2, 1, 1},
        {2, 3, 3, 1, 0, 1},
        {1, 1, 1, 1, 0, 0},
        {3, 3, 1, 1, 1, 1},
    };
    for (size_t t = 0; t < sizeof cfg / sizeof cfg[0]; t++) {
        RtPool2d pl = make_pool(3, 2, 7, 9, cfg[t][0], cfg[t][1], cfg[t][2],
                                cfg[t][3], cfg[t][4], cfg[t][5]);
        size_t nx = (size_t)(3 * 2 * 7 * 9);
        double *x = random_f64(nx);
        round_to_f32(x, nx);
        check_pool(DT_F32, &pl, x);
        check_pool(DT_F64, &pl, x);
        free(x);
        x = random_grid(nx);
        check_pool(DT_F32, &pl, x);
        check_pool(DT_F64, &pl, x);
        free(x);
    }
}

/* 2x2 windows with stride 2 over an even-sized plane take a forward kernel
 * of their own. Random values, a coarse grid (many ties) and NaNs must
 * give what the naive loops give, forward and gradient. */
Test(maxpool, tiled_2x2_matches_naive)
{
    RtPool2d pl = make_pool(3, 2, 8, 10, 2, 2, 2, 2, 0, 0);
    size_t nx = (size_t)(3 * 2 * 8 * 10);
    double *x = random_f64(nx);
    round_to_f32(x, nx);
    check_pool(DT_F32, &pl, x);
    check_pool(DT_F64, &pl, x);
    free(x);

    x = random_grid(nx);
    check_pool(DT_F32, &pl, x);
    check_pool(DT_F64, &pl, x);

    for (size_t i = 0; i < nx; i += 7)
        x[i] = NAN;
    x[1] = x[10] = x[11] = NAN; /* a window holding three NaNs */
    check_pool(DT_F32, &pl, x);
    check_pool(DT_F64, &pl, x);
    free(x);
}

Test(maxpool, tie_goes_to_first)
{
    /* One 2x2 window of equal values: the whole gradient goes to (0, 0). */
    RtPool2d pl = make_pool(1, 1, 2, 2, 2, 2, 2, 2, 0, 0);
    const double x[4] = {5, 5, 5, 5};
    const double dy[1] = {1.5};
    double y[1], dx[4];
    rt_maxpool2d_forward(DT_F64, &pl, x, y);
    rt_maxpool2d_grad(DT_F64, &pl, x, dy, dx);
    cr_expect_eq(y[0], 5.0);
    cr_expect_eq(dx[0], 1.5);
    cr_expect_eq(dx[1], 0.0);
    cr_expect_eq(dx[2], 0.0);
    cr_expect_eq(dx[3], 0.0);
}

Test(maxpool, overlapping_windows_accumulate)
{
    /* Kernel 3, stride 2 on a 1x5 row: windows [0,3) and [2,5) share
     * column 2, which contains the maximum of both. */
    RtPool2d pl = make_pool(1, 1, 1, 5, 1, 3, 1, 2, 0, 0);
    const float x[5] = {1, 2, 9, 3, 4};
    const float dy[2] = {0.25f, 0.5f};
    float y[2], dx[5];
    rt_maxpool2d_forward(DT_F32, &pl, x, y);
    rt_maxpool2d_grad(DT_F32, &pl, x, dy, dx);
    cr_expect_eq(y[0], 9.0f);
    cr_expect_eq(y[1], 9.0f);
    cr_expect_eq(dx[2], 0.75f);
    cr_expect_eq(dx[0] + dx[1] + dx[3] + dx[4], 0.0f);
}

Test(maxpool, padding_never_selected)
{
    /* All inputs are negative, so padding taken as 0 would win. */
    RtPool2d pl = make_pool(1, 1, 2, 2, 2, 2, 1, 1, 1, 1);
    cr_assert_eq(pl.p, 3);
    cr_assert_eq(pl.q, 3);
    const double x[4] = {-4, -3, -2, -1};
    double dy[9], y[9], dx[4];
    for (int i = 0; i < 9; i++)
        dy[i] = 1;
    rt_maxpool2d_forward(DT_F64, &pl, x, y);
    rt_maxpool2d_grad(DT_F64, &pl, x, dy, dx);
    const double expected_y[9] = {-4, -3, -3, -2, -1, -1, -2, -1, -1};
    for (int i = 0; i < 9; i++)
        cr_expect_eq(y[i], expected_y[i], "y[%d] = %g", i, y[i]);
    const double expected_dx[4] = {1, 2, 2, 4};
    for (int i = 0; i < 4; i++)
        cr_expect_eq(dx[i], expected_dx[i], "dx[%d] = %g", i, dx[i]);
}

Test(maxpool, nan_propagates)
{
    /* A 1x4 row, windows [0,2) and [2,4): the first window contains one NaN,
     * the second two, and the gradient goes to the first NaN of each. */
    RtPool2d pl = make_pool(1, 1, 1, 4, 1, 2, 1, 2, 0, 0);
    const double x[4] = {1, NAN, NAN, NAN};
    const double dy[2] = {1, 2};
    double y[2], dx[4];
    rt_maxpool2d_forward(DT_F64, &pl, x, y);
    rt_maxpool2d_grad(DT_F64, &pl, x, dy, dx);
    cr_expect(isnan(y[0]));
    cr_expect(isnan(y[1]));
    cr_expect_eq(dx[0], 0.0);
    cr_expect_eq(dx[1], 1.0);
    cr_expect_eq(dx[2], 2.0);
    cr_expect_eq(dx[3], 0.0);

    size_t n = 4 * 6;
    double *mixed = random_f64(n);
    round_to_f32(mixed, n);
    mixed[3] = NAN;
    mixed[10] = NAN;
    mixed[11] = NAN;
    RtPool2d grid = make_pool(1, 1, 4, 6, 3, 3, 2, 2, 1, 1);
    check_pool(DT_F64, &grid, mixed);
    check_pool(DT_F32, &grid, mixed);
    free(mixed);

    /* About 5% NaN, so that many interior windows contain one. */
    n = 3 * 2 * 9 * 11;
    double *sparse = random_f64(n);
    round_to_f32(sparse, n);
    for (size_t i = 0; i < n; i++)
        if (rand_signed() > 0.9)
            sparse[i] = NAN;
    RtPool2d halves = make_pool(3, 2, 9, 11, 2, 2, 2, 2, 0, 0);
    RtPool2d overlapping = make_pool(3, 2, 9, 11, 3, 3, 2, 2, 1, 1);
    check_pool(DT_F64, &halves, sparse);
    check_pool(DT_F32, &halves, sparse);
    check_pool(DT_F64, &overlapping, sparse);
    check_pool(DT_F32, &overlapping, sparse);
    free(sparse);
}

Test(maxpool, infer_rejects_wide_padding)
{
    RtPool2d pl = {.n = 1, .c = 1, .h = 4, .w = 4, .kernel_h = 2, .kernel_w = 2,
                   .stride_h = 2, .stride_w = 2, .pad_h = 2, .pad_w = 0};
    cr_expect_not(rt_pool2d_infer(&pl));
}

/* ---- Cross-entropy -------------------------------------------------------- */

/* Returns logsumexp(row) - row[label] in long double, without shifting. */
static double naive_cross_entropy(const double *row, int64_t c, int32_t label)
{
    long double sum = 0;
    for (int64_t j = 0; j < c; j++)
        sum += expl((long double)row[j]);
    return (double)(logl(sum) - row[label]);
}

Test(cross_entropy, naive_small_logits)
{
    enum { N = 6, C = 7 };
    double *logits = random_f64(N * C);
    for (int i = 0; i < N * C; i++)
        logits[i] = (float)(logits[i] * 4);
    const int32_t labels[N] = {0, 6, 3, 3, 1, 5};
    float *flogits = to_f32(logits, N * C);
    double loss[N];
    float floss[N];
    rt_cross_entropy(DT_F64, N, C, logits, labels, loss);
    rt_cross_entropy(DT_F32, N, C, flogits, labels, floss);
    for (int i = 0; i < N; i++) {
        double expected = naive_cross_entropy(logits + i * C, C, labels[i]);
        cr_expect_leq(fabs(loss[i] - expected), 1e-14 * (1 + expected),
                      "f64 row %d: %.17g vs %.17g", i, loss[i], expected);
        cr_expect_leq(fabs(floss[i] - expected), 1e-6 * (1 + expected),
                      "f32 row %d: %.9g vs %.17g", i, (double)floss[i], expected);
    }
    free(logits);
    free(flogits);
}

Test(cross_entropy, large_logits_exact)
{
    /* Logits 1e4, 1e4 - 1, ..., 1e4 - 9 are exact in f32. The loss for
     * label j is j + log1p(sum over i = 1..9 of e^-i). */
    enum { C = 10 };
    double rest = 0;
    for (int i = 1; i < C; i++)
        rest += exp(-i);
    const int32_t labels[3] = {0, 3, 9};
    const double bases[2] = {1e4, -1e4};
    for (int b = 0; b < 2; b++) {
        double logits[3 * C];
        float flogits[3 * C];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < C; j++) {
                logits[i * C + j] = bases[b] - j;
                flogits[i * C + j] = (float)(bases[b] - j);
            }
        double loss[3];
        float floss[3];
        rt_cross_entropy(DT_F64, 3, C, logits, labels, loss);
        rt_cross_entropy(DT_F32, 3, C, flogits, labels, floss);
        for (int i = 0; i < 3; i++) {
            double expected = labels[i] + log1p(rest);
            cr_expect(isfinite(loss[i]) && isfinite(floss[i]));
            cr_expect_leq(fabs(loss[i] - expected), 1e-15 * expected,
                          "f64 base %g label %d: %.17g vs %.17g", bases[b],
                          labels[i], loss[i], expected);
            cr_expect_leq(fabs(floss[i] - expected), 1e-6 * expected,
                          "f32 base %g label %d: %.9g vs %.17g", bases[b],
                          labels[i], (double)floss[i], expected);
        }
    }
}

Test(cross_entropy, huge_logits_finite)
{
    const float flogits[4] = {3e38f, -3e38f, 1e30f, 0};
    const double logits[4] = {1e300, -1e300, 1e299, 0};
    const int32_t labels[1] = {2};
    float floss[1];
    double loss[1];
    float fgrad[4];
    double grad[4];
    const float fdloss[1] = {1};
    const double dloss[1] = {1};
    rt_cross_entropy(DT_F32, 1, 4, flogits, labels, floss);
    rt_cross_entropy(DT_F64, 1, 4, logits, labels, loss);
    rt_cross_entropy_grad(DT_F32, 1, 4, flogits, labels, fdloss, fgrad);
    rt_cross_entropy_grad(DT_F64, 1, 4, logits, labels, dloss, grad);
    cr_expect_eq(floss[0], 3e38f - 1e30f);
    cr_expect_eq(loss[0], 1e300 - 1e299);
    const double expected_grad[4] = {1, 0, -1, 0};
    for (int j = 0; j < 4; j++) {
        cr_expect_eq(fgrad[j], (float)expected_grad[j], "f32 grad[%d] = %g", j,
                     (double)fgrad[j]);
        cr_expect_eq(grad[j], expected_grad[j], "f64 grad[%d] = %g", j, grad[j]);
    }
}

Test(cross_entropy, confident_prediction_accurate)
{
    /* loss = log(1 + e^-40) = 4.248e-18 in f64 and log(1 + e^-20) in f32:
     * computing log(1 + rest) would round both to 0. */
    const double logits[2] = {0, -40};
    const float flogits[2] = {0, -20};
    const int32_t labels[1] = {0};
    double loss[1], grad[2];
    float floss[1], fgrad[2];
    const double dloss[1] = {1};
    const float fdloss[1] = {1};
    rt_cross_entropy(DT_F64, 1, 2, logits, labels, loss);
    rt_cross_entropy(DT_F32, 1, 2, flogits, labels, floss);
    rt_cross_entropy_grad(DT_F64, 1, 2, logits, labels, dloss, grad);
    rt_cross_entropy_grad(DT_F32, 1, 2, flogits, labels, fdloss, fgrad);
    double expected = log1p(exp(-40.0)), fexpected = log1p(exp(-20.0));
    cr_expect_leq(fabs(loss[0] - expected), 1e-15 * expected, "%.17g", loss[0]);
    cr_expect_leq(fabs(floss[0] - fexpected), 1e-6 * fexpected, "%.9g", (double)floss[0]);
    /* d/dx0 = softmax0 - 1 = -e^-40 / (1 + e^-40). */
    double expected_d0 = -exp(-40.0) / (1 + exp(-40.0));
    cr_expect_leq(fabs(grad[0] - expected_d0), 1e-15 * fabs(expected_d0), "%.17g", grad[0]);
    double fexpected_d0 = -exp(-20.0) / (1 + exp(-20.0));
    cr_expect_leq(fabs(fgrad[0] - fexpected_d0), 1e-6 * fabs(fexpected_d0), "%.9g",
                  (double)fgrad[0]);
}

Test(cross_entropy, grad_matches_finite_differences)
{
    enum { N = 4, C = 5 };
    double *logits = random_f64(N * C);
    for (int i = 0; i < N * C; i++)
        logits[i] *= 3;
    logits[2 * C + 1] = 1e4;
    logits[2 * C + 3] = 1e4 - 0.5;
    const int32_t labels[N] = {1, 4, 3, 0};
    const double dloss[N] = {1.0, -0.5, 2.0, 0.25};
    double grad[N * C];
    rt_cross_entropy_grad(DT_F64, N, C, logits, labels, dloss, grad);

    for (int i = 0; i < N; i++) {
        double row_sum = 0, row_abs = 0;
        for (int j = 0; j < C; j++) {
            row_sum += grad[i * C + j];
            row_abs += fabs(grad[i * C + j]);
        }
        cr_expect_leq(fabs(row_sum), 1e-15 * row_abs, "row %d sums to %g", i, row_sum);

        for (int j = 0; j < C; j++) {
            /* Central difference of dloss[i] * loss[i]. For logits near 1e4
             * the step must stay large against their spacing of 1.8e-12. */
            double h = 1e-5 * (1 + fabs(logits[i * C + j]) * 1e-3);
            double saved = logits[i * C + j], up[N], down[N];
            logits[i * C + j] = saved + h;
            rt_cross_entropy(DT_F64, N, C, logits, labels, up);
            logits[i * C + j] = saved - h;
            rt_cross_entropy(DT_F64, N, C, logits, labels, down);
            logits[i * C + j] = saved;
            double numeric = dloss[i] * (up[i] - down[i]) / (2 * h);
            cr_expect_leq(fabs(grad[i * C + j] - numeric), 1e-7,
                          "grad[%d][%d] = %.12g, finite difference %.12g", i, j,
                          grad[i * C + j], numeric);
        }
    }
    free(logits);
}

Test(cross_entropy, grad_f32_matches_f64)
{
    enum { N = 5, C = 10 };
    double *logits = random_f64(N * C);
    for (int i = 0; i < N * C; i++)
        logits[i] = (float)(logits[i] * 6);
    const int32_t labels[N] = {0, 9, 2, 2, 7};
    const double dloss[N] = {1, 1, 0.5, -1, 3};
    const float fdloss[N] = {1, 1, 0.5f, -1, 3};
    double grad[N * C];
    float fgrad[N * C];
    float *flogits = to_f32(logits, N * C);
    rt_cross_entropy_grad(DT_F64, N, C, logits, labels, dloss, grad);
    rt_cross_entropy_grad(DT_F32, N, C, flogits, labels, fdloss, fgrad);
    for (int i = 0; i < N * C; i++)
        cr_expect_leq(fabs(fgrad[i] - grad[i]), 1e-6 * (fabs(dloss[i / C]) + 1e-30),
                      "element %d: %.9g vs %.17g", i, (double)fgrad[i], grad[i]);
    free(logits);
    free(flogits);
}

Test(cross_entropy, label_out_of_range_aborts, .signal = SIGABRT)
{
    const float logits[3] = {1, 2, 3};
    const int32_t labels[1] = {3};
    float loss[1];
    rt_cross_entropy(DT_F32, 1, 3, logits, labels, loss);
}

/* ---- Sums over axes ------------------------------------------------------- */

static void naive_reduce_sum(int rank, const int64_t *dims, uint32_t mask,
                             const double *x, double *y, size_t ny)
{
    memset(y, 0, ny * sizeof *y);
    int64_t total = 1;
    for (int a = 0; a < rank; a++)
        total *= dims[a];
    for (int64_t i = 0; i < total; i++) {
        int64_t rem = i, yi = 0, ystride = 1;
        for (int a = rank - 1; a >= 0; a--) {
            int64_t idx = rem % dims[a];
            rem /= dims[a];
            if (!((mask >> a) & 1)) {
                yi += idx * ystride;
                ystride *= dims[a];
            }
        }
        y[yi] += x[i];
    }
}

static void check_reduce(DType dt, int rank, const int64_t *dims, uint32_t mask)
{
    size_t nx = 1, ny = 1;
    for (int a = 0; a < rank; a++) {
        nx *= (size_t)dims[a];
        if (!((mask >> a) & 1))
            ny *= (size_t)dims[a];
    }
    double *x = random_f64(nx);
    round_to_f32(x, nx);
    double *ax = abs_copy(x, nx);
    double *ref = malloc((ny ? ny : 1) * sizeof *ref), *scale = malloc((ny ? ny : 1) * sizeof *scale);
    naive_reduce_sum(rank, dims, mask, x, ref, ny);
    naive_reduce_sum(rank, dims, mask, ax, scale, ny);

    void *y = filled_nan(dt, ny);
    if (dt == DT_F32) {
        float *fx = to_f32(x, nx);
        rt_reduce_sum(dt, rank, dims, mask, fx, y);
        free(fx);
    } else {
        rt_reduce_sum(dt, rank, dims, mask, x, y);
    }
    char what[128];
    snprintf(what, sizeof what, "reduce_sum rank %d mask 0x%x", rank, mask);
    expect_close(dt, y, ref, scale, ny, dt == DT_F32 ? 1e-6 : 1e-15, what);
    free(x), free(ax), free(ref), free(scale), free(y);
}

Test(reduce_sum, every_mask_rank4)
{
    const int64_t dims[4] = {3, 4, 5, 6};
    for (uint32_t mask = 0; mask < 16; mask++) {
        check_reduce(DT_F32, 4, dims, mask);
        check_reduce(DT_F64, 4, dims, mask);
    }
}

Test(reduce_sum, unit_axes_and_long_rows)
{
    const int64_t dims[5] = {2, 1, 37, 1, 19};
    for (uint32_t mask = 0; mask < 32; mask++) {
        check_reduce(DT_F32, 5, dims, mask);
        check_reduce(DT_F64, 5, dims, mask);
    }
    const int64_t conv_bias[4] = {128, 64, 14, 14};
    check_reduce(DT_F32, 4, conv_bias, 0xD);
    const int64_t rows[2] = {1000, 10};
    check_reduce(DT_F32, 2, rows, 0x1);
    check_reduce(DT_F64, 2, rows, 0x2);
}

Test(reduce_sum, scalar_and_empty)
{
    const double x[1] = {2.5};
    double y[3] = {NAN, NAN, NAN};
    rt_reduce_sum(DT_F64, 0, NULL, 0, x, y);
    cr_expect_eq(y[0], 2.5);

    /* An axis of extent 0 gives a sum of 0 for every kept element. */
    const int64_t dims[2] = {0, 3};
    rt_reduce_sum(DT_F64, 2, dims, 0x1, x, y);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(y[i], 0.0);
}

Test(reduce_sum, repeatable)
{
    const int64_t dims[3] = {7, 33, 129};
    size_t n = 7 * 33 * 129;
    double *x = random_f64(n);
    float *fx = to_f32(x, n);
    float a[33], b[33];
    rt_reduce_sum(DT_F32, 3, dims, 0x5, fx, a);
    rt_reduce_sum(DT_F32, 3, dims, 0x5, fx, b);
    cr_expect_eq(memcmp(a, b, sizeof a), 0);
    free(x);
    free(fx);
}
