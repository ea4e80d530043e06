/* Tests of the spatial kernels (runtime/spatial.h) against naive loops,
 * and of the Swin composites (compiler/ir_spatial.h) against the index
 * arithmetic of the Swin Transformer's reference construction, run in the
 * interpreter.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../compiler/interp.h"
#include "../../compiler/ir_spatial.h"
#include "../../compiler/run.h"
#include "spatial.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Du;

static double rand_signed(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Du) >> 11) * 0x1p-52 - 1.0;
}

static double *random_f64(size_t n)
{
    double *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = rand_signed();
    return v;
}

/* ---- average pooling ------------------------------------------------------ */

typedef struct PoolCase {
    int64_t n, c, h, w, kh, kw, sh, sw, ph, pw;
} PoolCase;

static const PoolCase pool_cases[] = {
    {2, 3, 7, 6, 3, 3, 2, 2, 1, 1},
    {1, 2, 5, 7, 2, 3, 1, 2, 1, 1},
    {2, 1, 4, 4, 2, 2, 2, 2, 0, 0},
    {1, 2, 6, 5, 5, 3, 1, 1, 2, 1},
};

/* The reference pads the plane with zeros explicitly and counts real
 * elements with a second, padded plane of ones. */
static void naive_avgpool(const RtAvgPool2d *pl, const double *x, double *y)
{
    int64_t hp = pl->h + 2 * pl->pad[0], wp = pl->w + 2 * pl->pad[1];
    double *padded = calloc((size_t)(hp * wp), sizeof *padded);
    double *ones = calloc((size_t)(hp * wp), sizeof *ones);
    for (int64_t plane = 0; plane < pl->n * pl->c; plane++) {
        for (int64_t i = 0; i < pl->h; i++)
            for (int64_t j = 0; j < pl->w; j++) {
                padded[(i + pl->pad[0]) * wp + j + pl->pad[1]] = x[(plane * pl->h + i) * pl->w + j];
                ones[(i + pl->pad[0]) * wp + j + pl->pad[1]] = 1;
            }
        for (int64_t p = 0; p < pl->p; p++)
            for (int64_t q = 0; q < pl->q; q++) {
                double sum = 0, count = 0;
                for (int64_t a = 0; a < pl->kernel[0]; a++)
                    for (int64_t b = 0; b < pl->kernel[1]; b++) {
                        int64_t at = (p * pl->stride[0] + a) * wp + q * pl->stride[1] + b;
                        sum += padded[at];
                        count += ones[at];
                    }
                if (pl->count_include_pad)
                    count = (double)(pl->kernel[0] * pl->kernel[1]);
                y[(plane * pl->p + p) * pl->q + q] = sum / count;
            }
    }
    free(padded);
    free(ones);
}

static RtAvgPool2d avgpool_from(const PoolCase *pc, bool include)
{
    RtAvgPool2d pl = {
        .n = pc->n, .c = pc->c, .h = pc->h, .w = pc->w,
        .kernel = {pc->kh, pc->kw}, .stride = {pc->sh, pc->sw}, .pad = {pc->ph, pc->pw},
        .count_include_pad = include,
    };
    pl.p = (pc->h + 2 * pc->ph - pc->kh) / pc->sh + 1;
    pl.q = (pc->w + 2 * pc->pw - pc->kw) / pc->sw + 1;
    return pl;
}

Test(avgpool, naive_and_adjoint)
{
    for (size_t i = 0; i < sizeof pool_cases / sizeof pool_cases[0]; i++) {
        for (int include = 0; include < 2; include++) {
            RtAvgPool2d pl = avgpool_from(&pool_cases[i], include);
            size_t nx = (size_t)(pl.n * pl.c * pl.h * pl.w), ny = (size_t)(pl.n * pl.c * pl.p * pl.q);
            double *x = random_f64(nx), *dy = random_f64(ny);
            double *y = malloc(ny * sizeof *y), *ref = malloc(ny * sizeof *ref);
            double *dx = malloc(nx * sizeof *dx);
            rt_avgpool2d_forward(DT_F64, &pl, x, y);
            naive_avgpool(&pl, x, ref);
            for (size_t j = 0; j < ny; j++)
                cr_expect(fabs(y[j] - ref[j]) <= 1e-14, "case %zu include %d element %zu: %.17g vs %.17g",
                          i, include, j, y[j], ref[j]);

            /* <avg(x), dy> = <x, avg_grad(dy)> */
            rt_avgpool2d_grad(DT_F64, &pl, dy, dx);
            double a = 0, b = 0;
            for (size_t j = 0; j < ny; j++)
                a += y[j] * dy[j];
            for (size_t j = 0; j < nx; j++)
                b += x[j] * dx[j];
            cr_expect(fabs(a - b) <= 1e-12, "case %zu include %d: <y, dy> %.17g, <x, dx> %.17g",
                      i, include, a, b);

            /* f32 agrees with f64 */
            float *xf = malloc(nx * sizeof *xf), *yf = malloc(ny * sizeof *yf);
            for (size_t j = 0; j < nx; j++)
                xf[j] = (float)x[j];
            rt_avgpool2d_forward(DT_F32, &pl, xf, yf);
            for (size_t j = 0; j < ny; j++)
                cr_expect(fabs(yf[j] - ref[j]) <= 1e-6, "f32 case %zu element %zu", i, j);
            free(x), free(dy), free(y), free(ref), free(dx), free(xf), free(yf);
        }
    }
}

/* ---- maxima over axes ----------------------------------------------------- */

Test(reduce_max, every_mask_rank4)
{
    int64_t dims[4] = {3, 2, 4, 5};
    size_t n = 120;
    double *x = random_f64(n);
    for (uint32_t mask = 1; mask < 16; mask++) {
        double y[120], dy[120], dx[120];
        rt_reduce_max(DT_F64, 4, dims, mask, x, y);
        for (size_t o = 0; o < 120; o++)
            dy[o] = (double)o + 1;
        rt_reduce_max_grad(DT_F64, 4, dims, mask, x, dy, dx);

        /* Reference: visit x in row-major order, keep the first maximum of
         * each output position. */
        double best[120];
        int64_t at[120];
        int64_t nout = 0;
        for (size_t i = 0; i < n; i++) {
            int64_t idx[4] = {(int64_t)i / 40, (int64_t)i / 20 % 2, (int64_t)i / 5 % 4,
                              (int64_t)i % 5};
            int64_t o = 0;
            for (int a = 0; a < 4; a++)
                if (!(mask & (1u << a)))
                    o = o * dims[a] + idx[a];
            if (o >= nout) {
                for (int64_t k = nout; k <= o; k++)
                    at[k] = -1;
                nout = o + 1;
            }
            if (at[o] < 0 || x[i] > best[o]) {
                best[o] = x[i];
                at[o] = (int64_t)i;
            }
        }
        for (int64_t o = 0; o < nout; o++)
            cr_expect_eq(y[o], best[o], "mask %u output %lld", mask, (long long)o);
        for (size_t i = 0; i < n; i++) {
            double want = 0;
            for (int64_t o = 0; o < nout; o++)
                if (at[o] == (int64_t)i)
                    want = dy[o];
            cr_expect_eq(dx[i], want, "mask %u gradient element %zu", mask, i);
        }
    }
    free(x);
}

Test(reduce_max, nan_wins_and_takes_the_gradient)
{
    int64_t dims[2] = {2, 3};
    float x[6] = {1, NAN, 5, 2, 7, NAN}, y[2], dy[2] = {3, 4}, dx[6];
    rt_reduce_max(DT_F32, 2, dims, 2u, x, y);
    cr_expect(isnan(y[0]) && isnan(y[1]));
    rt_reduce_max_grad(DT_F32, 2, dims, 2u, x, dy, dx);
    float want[6] = {0, 3, 0, 0, 0, 4};
    for (int i = 0; i < 6; i++)
        cr_expect_eq(dx[i], want[i], "element %d", i);
}

/* ---- data movement and products -------------------------------------------- */

Test(spatial, permute_matches_index_arithmetic)
{
    Shape xs = shape_make(4, (int64_t[]){2, 3, 4, 5});
    RtSpatialAttr a = {.op = RT_SPATIAL_PERMUTE, .p = {3, 1, 0, 2}};
    Shape ys = shape_make(4, (int64_t[]){5, 3, 2, 4});
    double *x = random_f64(120), y[120];
    void *buffers[2] = {x, y};
    Shape shapes[2] = {xs, ys};
    rt_spatial_run(DT_F64, &a, shapes, buffers, 1);
    for (int i0 = 0; i0 < 5; i0++)
        for (int i1 = 0; i1 < 3; i1++)
            for (int i2 = 0; i2 < 2; i2++)
                for (int i3 = 0; i3 < 4; i3++) {
                    /* y[i0, i1, i2, i3] = x[i2, i1, i3, i0] */
                    double want = x[((i2 * 3 + i1) * 4 + i3) * 5 + i0];
                    cr_expect_eq(y[((i0 * 3 + i1) * 2 + i2) * 4 + i3], want);
                }
    free(x);
}

/* x [B, 2, 5] at batch 3: the slice [1, 4) of the last axis, then the
 * concatenation of that slice with the slice [0, 1). */
Test(spatial, slice_and_concat_with_batch)
{
    Shape xs = shape_make(3, (int64_t[]){1, 2, 5});
    xs.batch_axis = 0;
    Shape mid = xs, one = xs, four = xs;
    mid.dims[2] = 3;
    one.dims[2] = 1;
    four.dims[2] = 4;
    double *x = random_f64(30), m[18], head[6], y[24];
    RtSpatialAttr from1 = {.op = RT_SPATIAL_SLICE, .p = {2, 1}};
    RtSpatialAttr from0 = {.op = RT_SPATIAL_SLICE, .p = {2, 0}};
    RtSpatialAttr cat = {.op = RT_SPATIAL_CONCAT, .p = {2}};
    rt_spatial_run(DT_F64, &from1, (Shape[]){xs, mid}, (void *[]){x, m}, 3);
    rt_spatial_run(DT_F64, &from0, (Shape[]){xs, one}, (void *[]){x, head}, 3);
    rt_spatial_run(DT_F64, &cat, (Shape[]){mid, one, four}, (void *[]){m, head, y}, 3);
    for (int r = 0; r < 6; r++) {
        for (int j = 0; j < 3; j++)
            cr_expect_eq(y[r * 4 + j], x[r * 5 + 1 + j], "row %d element %d", r, j);
        cr_expect_eq(y[r * 4 + 3], x[r * 5], "row %d last element", r);
    }
    free(x);
}

Test(spatial, batched_matmul_matches_naive)
{
    int64_t count = 3, m = 4, n = 5, k = 6;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        double *a = random_f64((size_t)(count * m * k)), *b = random_f64((size_t)(count * k * n));
        double c[60];
        rt_batched_matmul(DT_F64, ta, tb, count, m, n, k, a, b, c);
        for (int64_t i = 0; i < count; i++)
            for (int64_t r = 0; r < m; r++)
                for (int64_t col = 0; col < n; col++) {
                    double sum = 0;
                    for (int64_t j = 0; j < k; j++) {
                        double av = ta ? a[i * m * k + j * m + r] : a[i * m * k + r * k + j];
                        double bv = tb ? b[i * k * n + col * k + j] : b[i * k * n + j * n + col];
                        sum += av * bv;
                    }
                    cr_expect(fabs(c[(i * m + r) * n + col] - sum) <= 1e-13,
                              "trans %d %d product %lld [%lld, %lld]", ta, tb, (long long)i,
                              (long long)r, (long long)col);
                }
        free(a), free(b);
    }
}

/* ---- Swin composites ------------------------------------------------------- */

typedef struct Harness {
    Arena arena;
    IrModule module;
    IrGraph *g;
    RtVarStore store;
    Interp *it;
} Harness;

static void harness_init(Harness *h)
{
    arena_init(&h->arena);
    ir_module_init(&h->module, &h->arena);
    h->g = ir_graph_new(&h->module, "swin");
}

static const double *harness_run(Harness *h, int node)
{
    ir_add_output(h->g, "out", node);
    cr_assert(ir_verify(h->g));
    create_var_store(&h->store, &h->module);
    h->it = interp_create(h->g, &h->store);
    interp_run(h->it, 1);
    return interp_output(h->it, "out");
}

static void harness_free(Harness *h)
{
    interp_destroy(h->it);
    rt_vars_free(&h->store);
    ir_graph_free(h->g);
    ir_module_free(&h->module);
    arena_free(&h->arena);
}

/* Swin's mask: label the shifted image with 9 regions by slicing rows and
 * columns at -window and -shift, partition the labels into windows, and
 * mask every pair of tokens with different labels. */
static void swin_reference_mask(int64_t h, int64_t w_img, int64_t win, int64_t shift,
                                double *mask)
{
    int64_t label[64][64];
    int64_t row_cut[3] = {0, h - win, h - shift}, col_cut[3] = {0, w_img - win, w_img - shift};
    int cnt = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++, cnt++)
            for (int64_t i = row_cut[a]; i < (a < 2 ? row_cut[a + 1] : h); i++)
                for (int64_t j = col_cut[b]; j < (b < 2 ? col_cut[b + 1] : w_img); j++)
                    label[i][j] = cnt;
    int64_t n = win * win, wi = 0;
    for (int64_t bi = 0; bi < h / win; bi++)
        for (int64_t bj = 0; bj < w_img / win; bj++, wi++)
            for (int64_t p = 0; p < n; p++)
                for (int64_t q = 0; q < n; q++) {
                    int64_t lp = label[bi * win + p / win][bj * win + p % win];
                    int64_t lq = label[bi * win + q / win][bj * win + q % win];
                    mask[(wi * n + p) * n + q] = lp != lq ? -100.0 : 0.0;
                }
}

static void mask_case(int64_t h, int64_t w_img, int64_t win, int64_t shift)
{
    Harness hs;
    harness_init(&hs);
    const double *got = harness_run(&hs, ir_shifted_window_mask(hs.g, DT_F64, h, w_img, win,
                                                                shift, NO_LOC));
    int64_t total = (h / win) * (w_img / win) * win * win * win * win;
    double *want = malloc((size_t)total * sizeof *want);
    swin_reference_mask(h, w_img, win, shift, want);
    int masked = 0;
    for (int64_t i = 0; i < total; i++) {
        cr_expect_eq(got[i], want[i], "element %lld: %g, expected %g", (long long)i, got[i],
                     want[i]);
        masked += want[i] != 0;
    }
    cr_expect_gt(masked, 0, "the shifted windows must mask some pairs");
    free(want);
    harness_free(&hs);
}

Test(swin, shifted_window_mask_square) { mask_case(8, 8, 4, 2); }
Test(swin, shifted_window_mask_rectangular) { mask_case(6, 9, 3, 1); }

/* Swin's relative position index. Tokens i and j of a w x w window, at
 * (ri, ci) and (rj, cj), use table row
 * (ri - rj + w - 1) * (2w - 1) + (ci - cj + w - 1). */
Test(swin, relative_position_onehot)
{
    int64_t w = 3, n = 9, span = 25;
    Harness hs;
    harness_init(&hs);
    const double *hot = harness_run(&hs, ir_relative_position_onehot(hs.g, DT_F64, w, NO_LOC));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            int64_t want = (i / w - j / w + w - 1) * (2 * w - 1) + (i % w - j % w + w - 1);
            for (int64_t t = 0; t < span; t++)
                cr_expect_eq(hot[(i * n + j) * span + t], t == want ? 1.0 : 0.0,
                             "pair (%lld, %lld) column %lld", (long long)i, (long long)j,
                             (long long)t);
        }
    harness_free(&hs);
}

/* Token p of window k of an image is pixel (bi*w + p/w, bj*w + p%w), and
 * reversing the partition restores the image. */
Test(swin, window_partition_order_and_reverse)
{
    Harness hs;
    harness_init(&hs);
    Shape is = shape_make(4, (int64_t[]){2, 4, 6, 3});
    int x = ir_iota(hs.g, DT_F64, is, 2, NO_LOC); /* value = column */
    int y = ir_iota(hs.g, DT_F64, is, 1, NO_LOC); /* value = row */
    int code = ir_binary(hs.g, IR_ADD, x, ir_binary(hs.g, IR_MUL, y,
                         ir_broadcast(hs.g, ir_const(hs.g, DT_F64, 10, NO_LOC), is, NO_LOC),
                         NO_LOC), NO_LOC);
    int win = ir_window_partition(hs.g, code, 2, NO_LOC); /* [2*6, 4, 3] */
    int back = ir_window_reverse(hs.g, win, 4, 6, 2, NO_LOC);
    int both = ir_concat(hs.g, ir_reshape(hs.g, win, is, NO_LOC), back, 0, NO_LOC);
    const double *v = harness_run(&hs, both);
    for (int64_t b = 0; b < 2; b++)
        for (int64_t k = 0; k < 6; k++)
            for (int64_t p = 0; p < 4; p++) {
                int64_t row = k / 3 * 2 + p / 2, col = k % 3 * 2 + p % 2;
                cr_expect_eq(v[((b * 6 + k) * 4 + p) * 3], (double)(row * 10 + col),
                             "image %lld window %lld token %lld", (long long)b, (long long)k,
                             (long long)p);
            }
    for (int64_t i = 0; i < 2 * 4 * 6; i++)
        cr_expect_eq(v[144 + i * 3], (double)(i / 6 % 4 * 10 + i % 6), "pixel %lld",
                     (long long)i);
    harness_free(&hs);
}
