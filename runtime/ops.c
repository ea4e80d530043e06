/* ops.c - matrix products, convolutions, max pooling, cross-entropy and
 * sums over axes, in f32 and f64.
 *
 * Each kernel that has arithmetic of its own is written once as a macro
 * over the element type T and expanded for float and double. The public
 * functions dispatch on DType. Every loop runs in a fixed order, so a
 * kernel's result depends only on its inputs and on the OpenBLAS thread
 * count.
 */
#include "ops.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

/* Every kernel here takes f32 or f64 data, so another type is a compiler
 * bug. */
static void assert_float_type(DType dt)
{
    BOCB_ASSERT(dt == DT_F32 || dt == DT_F64);
}

static size_t float_size(DType dt)
{
    assert_float_type(dt);
    return dt == DT_F32 ? sizeof(float) : sizeof(double);
}

/* Returns p advanced by `elems` elements of `elem_size` bytes. */
static inline void *elem_ptr(const void *p, int64_t elems, size_t elem_size)
{
    return (char *)p + (size_t)elems * elem_size;
}

/* ---- Matrix products ---------------------------------------------------- */

static int blas_int(int64_t v)
{
    BOCB_ASSERT(v >= 0 && v <= INT_MAX);
    return (int)v;
}

/* C[m,n] = op(A) op(B) + beta C with explicit leading dimensions, all in
 * row-major order. Leading dimensions are raised to at least 1, as BLAS
 * requires even for an empty matrix (k = 0 in rt_matmul). */
static void gemm(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
                 int64_t k, const void *a, int64_t lda, const void *b,
                 int64_t ldb, double beta, void *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return;
    enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    int im = blas_int(m), in = blas_int(n), ik = blas_int(k);
    int ilda = blas_int(lda > 1 ? lda : 1);
    int ildb = blas_int(ldb > 1 ? ldb : 1);
    int ildc = blas_int(ldc > 1 ? ldc : 1);
    if (dt == DT_F32)
        cblas_sgemm(CblasRowMajor, ta, tb, im, in, ik, 1.0f, a, ilda, b, ildb,
                    (float)beta, c, ildc);
    else if (dt == DT_F64)
        cblas_dgemm(CblasRowMajor, ta, tb, im, in, ik, 1.0, a, ilda, b, ildb,
                    beta, c, ildc);
    else
        BOCB_UNREACHABLE("gemm on a non-float type");
}

void rt_matmul(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
               int64_t k, const void *a, const void *b, void *c, double beta)
{
    assert_float_type(dt);
    BOCB_ASSERT(m >= 0 && n >= 0 && k >= 0);
    int64_t lda = trans_a ? m : k;
    int64_t ldb = trans_b ? k : n;
    gemm(dt, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, n);
}

/* ---- Convolution ---------------------------------------------------------- */

RtConv2d rt_conv2d_make(const Shape *x, const Shape *w, const int64_t stride[2],
                        const int64_t pad[2], const int64_t dilation[2], int64_t groups,
                        int64_t batch)
{
    BOCB_ASSERT(x->rank == 4 && w->rank == 4);
    RtConv2d cv = {
        .n = shape_dim(x, 0, batch), .c = x->dims[1], .h = x->dims[2], .w = x->dims[3],
        .k = w->dims[0], .r = w->dims[2], .s = w->dims[3],
        .stride_h = stride[0], .stride_w = stride[1],
        .pad_h = pad[0], .pad_w = pad[1],
        .dil_h = dilation[0], .dil_w = dilation[1],
        .groups = groups,
    };
    BOCB_ASSERT(rt_conv2d_infer(&cv));
    return cv;
}

RtPool2d rt_pool2d_make(const Shape *x, const int64_t kernel[2], const int64_t stride[2],
                        const int64_t pad[2], int64_t batch)
{
    BOCB_ASSERT(x->rank == 4);
    RtPool2d pl = {
        .n = shape_dim(x, 0, batch), .c = x->dims[1], .h = x->dims[2], .w = x->dims[3],
        .kernel_h = kernel[0], .kernel_w = kernel[1],
        .stride_h = stride[0], .stride_w = stride[1],
        .pad_h = pad[0], .pad_w = pad[1],
    };
    BOCB_ASSERT(rt_pool2d_infer(&pl));
    return pl;
}

bool rt_conv2d_infer(RtConv2d *cv)
{
    if (cv->n < 0 || cv->c < 1 || cv->h < 1 || cv->w < 1 || cv->k < 1 ||
        cv->r < 1 || cv->s < 1)
        return false;
    if (cv->stride_h < 1 || cv->stride_w < 1 || cv->pad_h < 0 ||
        cv->pad_w < 0 || cv->dil_h < 1 || cv->dil_w < 1)
        return false;
    if (cv->groups < 1 || cv->c % cv->groups != 0 || cv->k % cv->groups != 0)
        return false;

    int64_t span_h = cv->dil_h * (cv->r - 1) + 1;
    int64_t span_w = cv->dil_w * (cv->s - 1) + 1;
    int64_t room_h = cv->h + 2 * cv->pad_h - span_h;
    int64_t room_w = cv->w + 2 * cv->pad_w - span_w;
    if (room_h < 0 || room_w < 0)
        return false;
    cv->p = room_h / cv->stride_h + 1;
    cv->q = room_w / cv->stride_w + 1;
    return true;
}

/* Rows of one group's column matrix: (C / groups) * R * S. */
static int64_t conv_col_rows(const RtConv2d *cv)
{
    return cv->c / cv->groups * cv->r * cv->s;
}

/* Elements of the two planes of the direct depthwise kernels. The first
 * is the input with a zero border, [H + 2*pad_h, W + 2*pad_w]. The second
 * is one row of zeros followed by the output rows at the padded width,
 * [1 + P, W + 2*pad_w]. */
static size_t depthwise_scratch_elems(const RtConv2d *cv)
{
    size_t wp = (size_t)(cv->w + 2 * cv->pad_w);
    return size_mul((size_t)(cv->h + 2 * cv->pad_h) + (size_t)cv->p + 1, wp);
}

size_t rt_conv2d_workspace_bytes(DType dt, const RtConv2d *cv)
{
    size_t elems = size_mul((size_t)conv_col_rows(cv), (size_t)(cv->p * cv->q));
    /* A depthwise convolution may run on either path (the direct one in
     * training, both in tests and benchmarks), so it gets room for both. */
    if (rt_conv2d_is_depthwise(cv) && depthwise_scratch_elems(cv) > elems)
        elems = depthwise_scratch_elems(cv);
    return size_mul(elems, float_size(dt));
}

/* True when the column matrix of a group is the input itself: a 1x1
 * kernel with stride 1 and no padding reads every pixel once, in order. */
static bool conv_is_pointwise(const RtConv2d *cv)
{
    return cv->r == 1 && cv->s == 1 && cv->stride_h == 1 &&
           cv->stride_w == 1 && cv->pad_h == 0 && cv->pad_w == 0;
}

static void conv_check(const RtConv2d *cv)
{
    RtConv2d expected = *cv;
    BOCB_ASSERT(rt_conv2d_infer(&expected));
    BOCB_ASSERT(expected.p == cv->p && expected.q == cv->q);
}

/* Stores in [*lo, *hi) the output positions o in [0, out) whose input
 * position o * stride + offset lies inside [0, in). */
static void valid_range(int64_t out, int64_t in, int64_t stride,
                        int64_t offset, int64_t *lo, int64_t *hi)
{
    int64_t first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t end = in - offset <= 0 ? 0 : (in - offset - 1) / stride + 1;
    if (first > out)
        first = out;
    if (end > out)
        end = out;
    if (end < first)
        end = first;
    *lo = first;
    *hi = end;
}

/* im2col writes the column matrix of one group of one image:
 * col[(c*R + r)*S + s][p*Q + q] = x[c][p*stride_h + r*dil_h - pad_h]
 *                                     [q*stride_w + s*dil_w - pad_w],
 * or 0 where that position lies in the padding. col2im adds each column
 * entry back into the input position it came from (dx must be zeroed
 * first). Padding is handled by splitting every row into a zero head, a
 * copied middle and a zero tail, so the inner loops have no branches. */
#define DEFINE_CONV_COLUMNS(T, SFX)                                           \
    static void im2col_##SFX(const RtConv2d *cv, const T *x, T *col)          \
    {                                                                         \
        const int64_t cg = cv->c / cv->groups;                                \
        const int64_t h = cv->h, w = cv->w, p_n = cv->p, q_n = cv->q;         \
        const int64_t sw = cv->stride_w;                                      \
        for (int64_t c = 0; c < cg; c++) {                                    \
            const T *xc = x + c * h * w;                                      \
            for (int64_t r = 0; r < cv->r; r++) {                             \
                int64_t off_h = r * cv->dil_h - cv->pad_h;                    \
                int64_t p_lo, p_hi;                                           \
                valid_range(p_n, h, cv->stride_h, off_h, &p_lo, &p_hi);       \
                for (int64_t s = 0; s < cv->s; s++) {                         \
                    int64_t off_w = s * cv->dil_w - cv->pad_w;                \
                    int64_t q_lo, q_hi;                                       \
                    valid_range(q_n, w, sw, off_w, &q_lo, &q_hi);             \
                    T *dst = col + ((c * cv->r + r) * cv->s + s) * p_n * q_n; \
                    memset(dst, 0, (size_t)(p_lo * q_n) * sizeof(T));         \
                    for (int64_t p = p_lo; p < p_hi; p++) {                   \
                        const T *xrow = xc + (p * cv->stride_h + off_h) * w;  \
                        T *d = dst + p * q_n;                                 \
                        for (int64_t q = 0; q < q_lo; q++)                    \
                            d[q] = 0;                                         \
                        if (sw == 1) {                                        \
                            memcpy(d + q_lo, xrow + q_lo + off_w,             \
                                   (size_t)(q_hi - q_lo) * sizeof(T));        \
                        } else {                                              \
                            for (int64_t q = q_lo; q < q_hi; q++)             \
                                d[q] = xrow[q * sw + off_w];                  \
                        }                                                     \
                        for (int64_t q = q_hi; q < q_n; q++)                  \
                            d[q] = 0;                                         \
                    }                                                         \
                    memset(dst + p_hi * q_n, 0,                               \
                           (size_t)((p_n - p_hi) * q_n) * sizeof(T));         \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void col2im_##SFX(const RtConv2d *cv, const T *col, T *dx)         \
    {                                                                         \
        const int64_t cg = cv->c / cv->groups;                                \
        const int64_t h = cv->h, w = cv->w, p_n = cv->p, q_n = cv->q;         \
        const int64_t sw = cv->stride_w;                                      \
        for (int64_t c = 0; c < cg; c++) {                                    \
            T *dxc = dx + c * h * w;                                          \
            for (int64_t r = 0; r < cv->r; r++) {                             \
                int64_t off_h = r * cv->dil_h - cv->pad_h;                    \
                int64_t p_lo, p_hi;                                           \
                valid_range(p_n, h, cv->stride_h, off_h, &p_lo, &p_hi);       \
                for (int64_t s = 0; s < cv->s; s++) {                         \
                    int64_t off_w = s * cv->dil_w - cv->pad_w;                \
                    int64_t q_lo, q_hi;                                       \
                    valid_range(q_n, w, sw, off_w, &q_lo, &q_hi);             \
                    const T *src =                                            \
                        col + ((c * cv->r + r) * cv->s + s) * p_n * q_n;      \
                    for (int64_t p = p_lo; p < p_hi; p++) {                   \
                        T *dxrow = dxc + (p * cv->stride_h + off_h) * w;      \
                        const T *srow = src + p * q_n;                        \
                        if (sw == 1) {                                        \
                            T *d = dxrow + off_w;                             \
                            for (int64_t q = q_lo; q < q_hi; q++)             \
                                d[q] += srow[q];                              \
                        } else {                                              \
                            for (int64_t q = q_lo; q < q_hi; q++)             \
                                dxrow[q * sw + off_w] += srow[q];             \
                        }                                                     \
                    }                                                         \
                }                                                             \
            }                                                                 \
        }                                                                     \
    }

DEFINE_CONV_COLUMNS(float, f32)
DEFINE_CONV_COLUMNS(double, f64)

static void im2col(DType dt, const RtConv2d *cv, const void *x, void *col)
{
    if (dt == DT_F32)
        im2col_f32(cv, x, col);
    else
        im2col_f64(cv, x, col);
}

static void col2im(DType dt, const RtConv2d *cv, const void *col, void *dx)
{
    if (dt == DT_F32)
        col2im_f32(cv, col, dx);
    else
        col2im_f64(cv, col, dx);
}

/* Offsets in elements of one group's slice of x, w and y. */
typedef struct ConvGroupSlice {
    int64_t x, w, y;
} ConvGroupSlice;

static ConvGroupSlice conv_slice(const RtConv2d *cv, int64_t image, int64_t group)
{
    int64_t cg = cv->c / cv->groups, kg = cv->k / cv->groups;
    ConvGroupSlice slice = {
        .x = (image * cv->c + group * cg) * cv->h * cv->w,
        .w = group * kg * conv_col_rows(cv),
        .y = (image * cv->k + group * kg) * cv->p * cv->q,
    };
    return slice;
}

/* ---- Depthwise convolution ------------------------------------------------ */

bool rt_conv2d_is_depthwise(const RtConv2d *cv)
{
    return cv->groups == cv->c && cv->groups > 1;
}

/* Depthwise convolutions (one input channel per group, and output channel
 * kc reads input channel kc / multiplier) run as direct loops, because
 * im2col would copy every input R*S times for GEMMs with a single row.
 *
 * Each input plane is first copied into a zero-bordered plane of width
 * Wp = W + 2*pad_w, so no loop tests bounds. With stride 1, output row p
 * is computed at the full width Wp as well (the extra columns are
 * scratch), which makes tap (r, s) one contiguous loop over the whole
 * plane: out[i] += w[r, s] * padded[i + r*dil_h*Wp + s*dil_w] for every
 * i, instead of one short loop per row. Other strides loop per row. Sums
 * of products (the weight gradient) run in 8 independent lanes that are
 * added in a fixed order at the end, so they vectorise without -ffast-math
 * and stay deterministic. */
enum { DOT_LANES = 8 };

typedef struct DepthwisePlan {
    int64_t hp, wp;   /* the padded input plane */
    int64_t run;      /* stride 1: elements of one flat tap loop */
    bool flat;        /* stride 1 in both directions */
} DepthwisePlan;

static DepthwisePlan depthwise_plan(const RtConv2d *cv)
{
    DepthwisePlan pl = {.hp = cv->h + 2 * cv->pad_h, .wp = cv->w + 2 * cv->pad_w};
    pl.flat = cv->stride_h == 1 && cv->stride_w == 1;
    pl.run = (cv->p - 1) * pl.wp + cv->q;
    return pl;
}

/* Offset in the padded plane of tap (r, s). */
static int64_t tap_offset(const RtConv2d *cv, const DepthwisePlan *pl, int64_t r, int64_t s)
{
    return r * cv->dil_h * pl->wp + s * cv->dil_w;
}

#define DEFINE_DEPTHWISE(T, SFX)                                              \
    /* Sum of a[i] * b[i * stride_b] for i in [0, n). */                      \
    static T dot_lanes_##SFX(const T *a, const T *b, int64_t n, int64_t stride_b) \
    {                                                                         \
        T lane[DOT_LANES] = {0};                                              \
        int64_t i = 0;                                                        \
        for (; i + DOT_LANES <= n; i += DOT_LANES)                            \
            for (int j = 0; j < DOT_LANES; j++)                               \
                lane[j] += a[i + j] * b[(i + j) * stride_b];                  \
        T sum = 0;                                                            \
        for (int j = 0; j < DOT_LANES; j++)                                   \
            sum += lane[j];                                                   \
        for (; i < n; i++)                                                    \
            sum += a[i] * b[i * stride_b];                                    \
        return sum;                                                           \
    }                                                                         \
                                                                              \
    /* out[i] += sum over s of w[s] * src[i + s * dil] for i in [0, n): the  \
     * taps of one kernel row, three at a time, so that out is loaded and    \
     * stored once per three taps. */                                         \
    static void flat_taps_##SFX(T *out, const T *src, const T *w, int64_t taps, \
                                int64_t dil, int64_t n)                       \
    {                                                                         \
        int64_t s = 0;                                                        \
        for (; s + 3 <= taps; s += 3) {                                       \
            const T w0 = w[s], w1 = w[s + 1], w2 = w[s + 2];                  \
            const T *a = src + s * dil, *b = a + dil, *c = b + dil;           \
            for (int64_t i = 0; i < n; i++)                                   \
                out[i] += w0 * a[i] + w1 * b[i] + w2 * c[i];                  \
        }                                                                     \
        for (; s < taps; s++) {                                               \
            const T ws = w[s], *a = src + s * dil;                            \
            for (int64_t i = 0; i < n; i++)                                   \
                out[i] += ws * a[i];                                          \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* The adjoint of flat_taps: dst[i + s * dil] += w[s] * src[i]. Three    \
     * taps at a time, as dst[j] += w0 src[j] + w1 src[j - dil] + w2 src[j - \
     * 2 dil], which reads up to 2 * dil elements before src and after       \
     * src[n - 1]: the caller keeps those zero. */                            \
    static void flat_taps_adjoint_##SFX(T *dst, const T *src, const T *w,     \
                                        int64_t taps, int64_t dil, int64_t n) \
    {                                                                         \
        int64_t s = 0;                                                        \
        for (; s + 3 <= taps; s += 3) {                                       \
            const T w0 = w[s], w1 = w[s + 1], w2 = w[s + 2];                  \
            const T *a = src, *b = src - dil, *c = src - 2 * dil;             \
            T *d = dst + s * dil;                                             \
            for (int64_t j = 0; j < n + 2 * dil; j++)                         \
                d[j] += w0 * a[j] + w1 * b[j] + w2 * c[j];                    \
        }                                                                     \
        for (; s < taps; s++) {                                               \
            const T ws = w[s];                                                \
            T *d = dst + s * dil;                                             \
            for (int64_t i = 0; i < n; i++)                                   \
                d[i] += ws * src[i];                                          \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* Copies plane x [H, W] into the middle of padded [Hp, Wp], whose        \
     * border must already be zero. */                                        \
    static void pad_plane_##SFX(const RtConv2d *cv, const DepthwisePlan *pl,  \
                                const T *x, T *padded)                        \
    {                                                                         \
        for (int64_t h = 0; h < cv->h; h++)                                   \
            memcpy(padded + (h + cv->pad_h) * pl->wp + cv->pad_w,             \
                   x + h * cv->w, (size_t)cv->w * sizeof(T));                 \
    }                                                                         \
                                                                              \
    /* Copies rows of width Q to rows of width Wp (other columns zero). */   \
    static void widen_##SFX(const RtConv2d *cv, const DepthwisePlan *pl,      \
                            const T *rows, T *wide)                           \
    {                                                                         \
        memset(wide, 0, (size_t)(cv->p * pl->wp) * sizeof(T));                \
        for (int64_t p = 0; p < cv->p; p++)                                   \
            memcpy(wide + p * pl->wp, rows + p * cv->q, (size_t)cv->q * sizeof(T)); \
    }                                                                         \
                                                                              \
    static void dw_forward_##SFX(const RtConv2d *cv, const T *x, const T *w,  \
                                 T *y, T *padded, T *wide)                    \
    {                                                                         \
        const DepthwisePlan pl = depthwise_plan(cv);                          \
        const int64_t mult = cv->k / cv->c, rs = cv->r * cv->s;               \
        const int64_t sh = cv->stride_h, sw = cv->stride_w;                   \
        memset(padded, 0, (size_t)(pl.hp * pl.wp) * sizeof(T));               \
        for (int64_t n = 0; n < cv->n; n++) {                                 \
            for (int64_t kc = 0; kc < cv->k; kc++) {                          \
                if (kc % mult == 0)                                           \
                    pad_plane_##SFX(cv, &pl,                                  \
                                    x + (n * cv->c + kc / mult) * cv->h * cv->w, \
                                    padded);                                  \
                T *out = y + (n * cv->k + kc) * cv->p * cv->q;                \
                const T *wk = w + kc * rs;                                    \
                if (pl.flat) {                                                \
                    memset(wide, 0, (size_t)pl.run * sizeof(T));              \
                    for (int64_t r = 0; r < cv->r; r++)                       \
                        flat_taps_##SFX(wide, padded + tap_offset(cv, &pl, r, 0), \
                                        wk + r * cv->s, cv->s, cv->dil_w,     \
                                        pl.run);                              \
                    for (int64_t p = 0; p < cv->p; p++)                       \
                        memcpy(out + p * cv->q, wide + p * pl.wp,             \
                               (size_t)cv->q * sizeof(T));                    \
                    continue;                                                 \
                }                                                             \
                memset(out, 0, (size_t)(cv->p * cv->q) * sizeof(T));          \
                for (int64_t p = 0; p < cv->p; p++)                           \
                    for (int64_t r = 0; r < cv->r; r++)                       \
                        for (int64_t s = 0; s < cv->s; s++) {                 \
                            const T wv = wk[r * cv->s + s];                   \
                            const T *src = padded + p * sh * pl.wp +          \
                                           tap_offset(cv, &pl, r, s);         \
                            T *row = out + p * cv->q;                         \
                            for (int64_t q = 0; q < cv->q; q++)               \
                                row[q] += wv * src[q * sw];                   \
                        }                                                     \
            }                                                                 \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void dw_grad_input_##SFX(const RtConv2d *cv, const T *dy,          \
                                    const T *w, T *dx, T *padded, T *wide)    \
    {                                                                         \
        const DepthwisePlan pl = depthwise_plan(cv);                          \
        const int64_t mult = cv->k / cv->c, rs = cv->r * cv->s;               \
        const int64_t sh = cv->stride_h, sw = cv->stride_w;                   \
        for (int64_t n = 0; n < cv->n; n++) {                                 \
            for (int64_t c = 0; c < cv->c; c++) {                             \
                /* The padded plane gathers the adjoints of every output     \
                 * channel of input channel c, then its middle is dx. */     \
                memset(padded, 0, (size_t)(pl.hp * pl.wp) * sizeof(T));       \
                for (int64_t kc = c * mult; kc < (c + 1) * mult; kc++) {      \
                    const T *g = dy + (n * cv->k + kc) * cv->p * cv->q;       \
                    const T *wk = w + kc * rs;                                \
                    if (pl.flat)                                              \
                        widen_##SFX(cv, &pl, g, wide);                        \
                    for (int64_t r = 0; r < cv->r; r++) {                     \
                        if (pl.flat) {                                        \
                            flat_taps_adjoint_##SFX(                          \
                                padded + tap_offset(cv, &pl, r, 0), wide,     \
                                wk + r * cv->s, cv->s, cv->dil_w, pl.run);    \
                            continue;                                         \
                        }                                                     \
                        for (int64_t s = 0; s < cv->s; s++) {                 \
                            const T wv = wk[r * cv->s + s];                   \
                            T *dst = padded + tap_offset(cv, &pl, r, s);      \
                            for (int64_t p = 0; p < cv->p; p++) {             \
                                T *drow = dst + p * sh * pl.wp;               \
                                const T *grow = g + p * cv->q;                \
                                for (int64_t q = 0; q < cv->q; q++)           \
                                    drow[q * sw] += wv * grow[q];             \
                            }                                                 \
                        }                                                     \
                    }                                                         \
                }                                                             \
                T *plane = dx + (n * cv->c + c) * cv->h * cv->w;              \
                for (int64_t h = 0; h < cv->h; h++)                           \
                    memcpy(plane + h * cv->w,                                 \
                           padded + (h + cv->pad_h) * pl.wp + cv->pad_w,      \
                           (size_t)cv->w * sizeof(T));                        \
            }                                                                 \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void dw_grad_weight_##SFX(const RtConv2d *cv, const T *x,          \
                                     const T *dy, T *dw, T *padded, T *wide)  \
    {                                                                         \
        const DepthwisePlan pl = depthwise_plan(cv);                          \
        const int64_t mult = cv->k / cv->c, rs = cv->r * cv->s;               \
        const int64_t sh = cv->stride_h, sw = cv->stride_w;                   \
        memset(dw, 0, (size_t)(cv->k * rs) * sizeof(T));                      \
        memset(padded, 0, (size_t)(pl.hp * pl.wp) * sizeof(T));               \
        for (int64_t n = 0; n < cv->n; n++) {                                 \
            for (int64_t kc = 0; kc < cv->k; kc++) {                          \
                if (kc % mult == 0)                                           \
                    pad_plane_##SFX(cv, &pl,                                  \
                                    x + (n * cv->c + kc / mult) * cv->h * cv->w, \
                                    padded);                                  \
                const T *g = dy + (n * cv->k + kc) * cv->p * cv->q;           \
                if (pl.flat)                                                  \
                    widen_##SFX(cv, &pl, g, wide);                            \
                for (int64_t r = 0; r < cv->r; r++)                           \
                    for (int64_t s = 0; s < cv->s; s++) {                     \
                        const T *src = padded + tap_offset(cv, &pl, r, s);    \
                        T sum = 0;                                            \
                        if (pl.flat) {                                        \
                            sum = dot_lanes_##SFX(wide, src, pl.run, 1);      \
                        } else {                                              \
                            for (int64_t p = 0; p < cv->p; p++)               \
                                sum += dot_lanes_##SFX(g + p * cv->q,         \
                                                       src + p * sh * pl.wp,  \
                                                       cv->q, sw);            \
                        }                                                     \
                        dw[kc * rs + r * cv->s + s] += sum;                   \
                    }                                                         \
            }                                                                 \
        }                                                                     \
    }

DEFINE_DEPTHWISE(float, f32)
DEFINE_DEPTHWISE(double, f64)

enum { DEPTHWISE_FORWARD, DEPTHWISE_GRAD_INPUT, DEPTHWISE_GRAD_WEIGHT };

static void depthwise(DType dt, const RtConv2d *cv, int mode, const void *a,
                      const void *b, void *out, void *workspace)
{
    size_t es = float_size(dt);
    conv_check(cv);
    BOCB_ASSERT(rt_conv2d_is_depthwise(cv));
    DepthwisePlan pl = depthwise_plan(cv);
    /* wide is preceded by a row of zeros, which flat_taps_adjoint reads. */
    void *padded = workspace;
    memset(elem_ptr(workspace, pl.hp * pl.wp, es), 0, size_mul((size_t)pl.wp, es));
    void *wide = elem_ptr(workspace, (pl.hp + 1) * pl.wp, es);
    if (es == sizeof(float)) {
        if (mode == DEPTHWISE_FORWARD)
            dw_forward_f32(cv, a, b, out, padded, wide);
        else if (mode == DEPTHWISE_GRAD_INPUT)
            dw_grad_input_f32(cv, a, b, out, padded, wide);
        else
            dw_grad_weight_f32(cv, a, b, out, padded, wide);
    } else {
        if (mode == DEPTHWISE_FORWARD)
            dw_forward_f64(cv, a, b, out, padded, wide);
        else if (mode == DEPTHWISE_GRAD_INPUT)
            dw_grad_input_f64(cv, a, b, out, padded, wide);
        else
            dw_grad_weight_f64(cv, a, b, out, padded, wide);
    }
}

void rt_depthwise_forward(DType dt, const RtConv2d *cv, const void *x, const void *w,
                          void *y, void *workspace)
{
    depthwise(dt, cv, DEPTHWISE_FORWARD, x, w, y, workspace);
}

void rt_depthwise_grad_input(DType dt, const RtConv2d *cv, const void *dy, const void *w,
                             void *dx, void *workspace)
{
    depthwise(dt, cv, DEPTHWISE_GRAD_INPUT, dy, w, dx, workspace);
}

void rt_depthwise_grad_weight(DType dt, const RtConv2d *cv, const void *x, const void *dy,
                              void *dw, void *workspace)
{
    depthwise(dt, cv, DEPTHWISE_GRAD_WEIGHT, x, dy, dw, workspace);
}

/* ---- Convolution entry points --------------------------------------------- */

void rt_conv2d_forward(DType dt, const RtConv2d *cv, const void *x,
                       const void *w, void *y, void *workspace)
{
    if (rt_conv2d_is_depthwise(cv))
        rt_depthwise_forward(dt, cv, x, w, y, workspace);
    else
        rt_conv2d_im2col_forward(dt, cv, x, w, y, workspace);
}

void rt_conv2d_grad_input(DType dt, const RtConv2d *cv, const void *dy,
                          const void *w, void *dx, void *workspace)
{
    if (rt_conv2d_is_depthwise(cv))
        rt_depthwise_grad_input(dt, cv, dy, w, dx, workspace);
    else
        rt_conv2d_im2col_grad_input(dt, cv, dy, w, dx, workspace);
}

void rt_conv2d_grad_weight(DType dt, const RtConv2d *cv, const void *x,
                           const void *dy, void *dw, void *workspace)
{
    if (rt_conv2d_is_depthwise(cv))
        rt_depthwise_grad_weight(dt, cv, x, dy, dw, workspace);
    else
        rt_conv2d_im2col_grad_weight(dt, cv, x, dy, dw, workspace);
}

void rt_conv2d_im2col_forward(DType dt, const RtConv2d *cv, const void *x,
                              const void *w, void *y, void *workspace)
{
    size_t es = float_size(dt);
    conv_check(cv);
    const int64_t kg = cv->k / cv->groups;
    const int64_t rows = conv_col_rows(cv), pq = cv->p * cv->q;
    const bool pointwise = conv_is_pointwise(cv);

    /* Per image and group: y[Kg, PQ] = w[Kg, rows] * col[rows, PQ]. */
    for (int64_t n = 0; n < cv->n; n++) {
        for (int64_t g = 0; g < cv->groups; g++) {
            ConvGroupSlice at = conv_slice(cv, n, g);
            const void *col = elem_ptr(x, at.x, es);
            if (!pointwise) {
                im2col(dt, cv, col, workspace);
                col = workspace;
            }
            gemm(dt, false, false, kg, pq, rows, elem_ptr(w, at.w, es), rows,
                 col, pq, 0.0, elem_ptr(y, at.y, es), pq);
        }
    }
}

void rt_conv2d_im2col_grad_input(DType dt, const RtConv2d *cv, const void *dy,
                                 const void *w, void *dx, void *workspace)
{
    size_t es = float_size(dt);
    conv_check(cv);
    const int64_t kg = cv->k / cv->groups;
    const int64_t rows = conv_col_rows(cv), pq = cv->p * cv->q;
    const bool pointwise = conv_is_pointwise(cv);

    /* col2im accumulates, because several (r, s) taps can read the same
     * input pixel, so dx starts at zero. */
    if (!pointwise)
        memset(dx, 0, size_mul((size_t)(cv->n * cv->c * cv->h * cv->w), es));

    /* Per image and group: dcol[rows, PQ] = w^T[rows, Kg] * dy[Kg, PQ]. */
    for (int64_t n = 0; n < cv->n; n++) {
        for (int64_t g = 0; g < cv->groups; g++) {
            ConvGroupSlice at = conv_slice(cv, n, g);
            void *dx_group = elem_ptr(dx, at.x, es);
            void *dcol = pointwise ? dx_group : workspace;
            gemm(dt, true, false, rows, pq, kg, elem_ptr(w, at.w, es), rows,
                 elem_ptr(dy, at.y, es), pq, 0.0, dcol, pq);
            if (!pointwise)
                col2im(dt, cv, dcol, dx_group);
        }
    }
}

void rt_conv2d_im2col_grad_weight(DType dt, const RtConv2d *cv, const void *x,
                                  const void *dy, void *dw, void *workspace)
{
    size_t es = float_size(dt);
    conv_check(cv);
    const int64_t kg = cv->k / cv->groups;
    const int64_t rows = conv_col_rows(cv), pq = cv->p * cv->q;
    const bool pointwise = conv_is_pointwise(cv);

    if (cv->n == 0) {
        memset(dw, 0, size_mul((size_t)(cv->k * rows), es));
        return;
    }

    /* Per image and group: dw[Kg, rows] += dy[Kg, PQ] * col^T[PQ, rows].
     * The first image overwrites dw (beta = 0) and later images add to it
     * in image order. */
    for (int64_t n = 0; n < cv->n; n++) {
        double beta = n == 0 ? 0.0 : 1.0;
        for (int64_t g = 0; g < cv->groups; g++) {
            ConvGroupSlice at = conv_slice(cv, n, g);
            const void *col = elem_ptr(x, at.x, es);
            if (!pointwise) {
                im2col(dt, cv, col, workspace);
                col = workspace;
            }
            gemm(dt, false, true, kg, rows, pq, elem_ptr(dy, at.y, es), pq,
                 col, pq, beta, elem_ptr(dw, at.w, es), rows);
        }
    }
}

/* ---- Max pooling ---------------------------------------------------------- */

bool rt_pool2d_infer(RtPool2d *pl)
{
    if (pl->n < 0 || pl->c < 1 || pl->h < 1 || pl->w < 1)
        return false;
    if (pl->kernel_h < 1 || pl->kernel_w < 1 || pl->stride_h < 1 ||
        pl->stride_w < 1 || pl->pad_h < 0 || pl->pad_w < 0)
        return false;
    /* Padding of at most half the window, as PyTorch requires, keeps at
     * least one real element in every window. */
    if (2 * pl->pad_h > pl->kernel_h || 2 * pl->pad_w > pl->kernel_w)
        return false;

    int64_t room_h = pl->h + 2 * pl->pad_h - pl->kernel_h;
    int64_t room_w = pl->w + 2 * pl->pad_w - pl->kernel_w;
    if (room_h < 0 || room_w < 0)
        return false;
    pl->p = room_h / pl->stride_h + 1;
    pl->q = room_w / pl->stride_w + 1;
    return true;
}

static void pool_check(const RtPool2d *pl)
{
    RtPool2d expected = *pl;
    BOCB_ASSERT(rt_pool2d_infer(&expected));
    BOCB_ASSERT(expected.p == pl->p && expected.q == pl->q);
}

/* Output rows [p_lo, p_hi) and columns [q_lo, q_hi) whose windows lie
 * entirely inside the input, without padding. */
typedef struct PoolInterior {
    int64_t p_lo, p_hi, q_lo, q_hi;
} PoolInterior;

/* Stores in [*lo, *hi) the output positions along one axis whose window
 * lies inside the input. */
static void pool_interior_axis(int64_t out, int64_t in, int64_t kernel,
                               int64_t stride, int64_t pad, int64_t *lo,
                               int64_t *hi)
{
    int64_t first = (pad + stride - 1) / stride;
    int64_t end = in - kernel + pad < 0 ? 0 : (in - kernel + pad) / stride + 1;
    if (first > out)
        first = out;
    if (end > out)
        end = out;
    if (end < first)
        end = first;
    *lo = first;
    *hi = end;
}

static PoolInterior pool_interior(const RtPool2d *pl)
{
    PoolInterior in;
    pool_interior_axis(pl->p, pl->h, pl->kernel_h, pl->stride_h, pl->pad_h,
                       &in.p_lo, &in.p_hi);
    pool_interior_axis(pl->q, pl->w, pl->kernel_w, pl->stride_w, pl->pad_w,
                       &in.q_lo, &in.q_hi);
    return in;
}

/* The selection rule of both pooling kernels. Windows are clipped to the
 * plane, so padding is never selected. The scan is row-major and replaces
 * the candidate only on a strictly greater value, so ties go to the first
 * maximum. A NaN replaces a non-NaN candidate and is never replaced
 * (nothing compares greater than NaN), so the first NaN of a window is
 * selected and the output is NaN, as in PyTorch.
 *
 * pool_select_* applies the rule to one window and returns the plane index
 * of the selected element. pool_select_row_* selects a whole output row
 * and takes a faster path for the run of windows that lie inside the
 * plane: each tap, in row-major order, updates every output of the run,
 * so the updates are independent of each other (within one window they
 * form a chain of dependent comparisons). That path uses only `v > best`,
 * which matches the rule when the run has no NaN, and a run that contains
 * a NaN is redone with pool_select_*. */
#define DEFINE_POOL(T, SFX)                                                   \
    static int64_t pool_select_##SFX(const RtPool2d *pl, const T *x,          \
                                     int64_t p, int64_t q)                    \
    {                                                                         \
        int64_t h0 = p * pl->stride_h - pl->pad_h;                            \
        int64_t w0 = q * pl->stride_w - pl->pad_w;                            \
        int64_t h_lo = h0 > 0 ? h0 : 0;                                       \
        int64_t w_lo = w0 > 0 ? w0 : 0;                                       \
        int64_t h_hi = h0 + pl->kernel_h < pl->h ? h0 + pl->kernel_h : pl->h; \
        int64_t w_hi = w0 + pl->kernel_w < pl->w ? w0 + pl->kernel_w : pl->w; \
        int64_t best_at = h_lo * pl->w + w_lo;                                \
        T best = x[best_at];                                                  \
        for (int64_t ih = h_lo; ih < h_hi; ih++) {                            \
            for (int64_t iw = w_lo; iw < w_hi; iw++) {                        \
                T v = x[ih * pl->w + iw];                                     \
                if (v > best || (v != v && best == best)) {                   \
                    best = v;                                                 \
                    best_at = ih * pl->w + iw;                                \
                }                                                             \
            }                                                                 \
        }                                                                     \
        return best_at;                                                       \
    }                                                                         \
                                                                              \
    static inline void pool_select_one_##SFX(const RtPool2d *pl, const T *x,  \
                                             int64_t p, int64_t q, T *value,  \
                                             int64_t *index)                  \
    {                                                                         \
        int64_t at = pool_select_##SFX(pl, x, p, q);                          \
        value[q] = x[at];                                                     \
        if (index)                                                            \
            index[q] = at;                                                    \
    }                                                                         \
                                                                              \
    /* Stores the selected values of output row p of plane x in value[]    \
     * and, unless index is NULL, their plane indices in index[] (Q entries  \
     * each). Windows [q_lo, q_hi) lie inside the plane. Inlined into two  \
     * callers, so that the index code disappears from one of them. */      \
    static inline __attribute__((always_inline)) void pool_select_row_##SFX(  \
        const RtPool2d *pl, const T *x, int64_t p, int64_t q_lo,              \
        int64_t q_hi, T *value, int64_t *index)                               \
    {                                                                         \
        const int64_t w = pl->w, sw = pl->stride_w;                           \
        const int64_t top = (p * pl->stride_h - pl->pad_h) * w - pl->pad_w;   \
        for (int64_t q = q_lo; q < q_hi; q++) {                               \
            value[q] = x[top + q * sw];                                       \
            if (index)                                                        \
                index[q] = top + q * sw;                                      \
        }                                                                     \
        int saw_nan = 0;                                                      \
        for (int64_t i = 0; i < pl->kernel_h; i++) {                          \
            for (int64_t j = 0; j < pl->kernel_w; j++) {                      \
                const int64_t tap = top + i * w + j;                          \
                /* A flag local to this loop stays in a register, where    \
                 * GCC 12 spills the function-wide one to the stack. */     \
                int tap_nan = 0;                                              \
                for (int64_t q = q_lo; q < q_hi; q++) {                       \
                    T v = x[tap + q * sw];                                    \
                    tap_nan |= v != v;                                        \
                    /* A mask, because GCC 12 compiles a conditional       \
                     * expression here to a branch, which mispredicts on    \
                     * about every other window of random data. */          \
                    if (index) {                                              \
                        int64_t take = -(int64_t)(v > value[q]);              \
                        index[q] = ((tap + q * sw) & take) | (index[q] & ~take); \
                    }                                                         \
                    value[q] = v > value[q] ? v : value[q];                   \
                }                                                             \
                saw_nan |= tap_nan;                                           \
            }                                                                 \
        }                                                                     \
        if (saw_nan)                                                          \
            for (int64_t q = q_lo; q < q_hi; q++)                             \
                pool_select_one_##SFX(pl, x, p, q, value, index);             \
                                                                              \
        for (int64_t q = 0; q < q_lo; q++)                                    \
            pool_select_one_##SFX(pl, x, p, q, value, index);                 \
        for (int64_t q = q_hi; q < pl->q; q++)                                \
            pool_select_one_##SFX(pl, x, p, q, value, index);                 \
    }                                                                         \
                                                                              \
    /* Kept out of line: inlined into the plane loops, the row code runs    \
     * out of registers and reloads its pointers from the stack. */         \
    static __attribute__((noinline)) void pool_select_row_values_##SFX(       \
        const RtPool2d *pl, const T *x, int64_t p, int64_t q_lo,              \
        int64_t q_hi, T *value)                                               \
    {                                                                         \
        pool_select_row_##SFX(pl, x, p, q_lo, q_hi, value, NULL);             \
    }                                                                         \
                                                                              \
    static __attribute__((noinline)) void pool_select_row_indices_##SFX(      \
        const RtPool2d *pl, const T *x, int64_t p, int64_t q_lo,              \
        int64_t q_hi, T *value, int64_t *index)                               \
    {                                                                         \
        BOCB_ASSERT(index != NULL);                                           \
        pool_select_row_##SFX(pl, x, p, q_lo, q_hi, value, index);            \
    }                                                                         \
                                                                              \
    static void maxpool_forward_##SFX(const RtPool2d *pl, const T *x, T *y)   \
    {                                                                         \
        const int64_t hw = pl->h * pl->w, pq = pl->p * pl->q;                 \
        PoolInterior in = pool_interior(pl);                                  \
        for (int64_t plane = 0; plane < pl->n * pl->c; plane++) {             \
            for (int64_t p = 0; p < pl->p; p++) {                             \
                bool inside = p >= in.p_lo && p < in.p_hi;                    \
                pool_select_row_values_##SFX(pl, x + plane * hw, p,           \
                                             inside ? in.q_lo : 0,            \
                                             inside ? in.q_hi : 0,            \
                                             y + plane * pq + p * pl->q);     \
            }                                                                 \
        }                                                                     \
    }                                                                         \
                                                                              \
    /* value and index are scratch rows of Q entries. */                      \
    static void maxpool_grad_##SFX(const RtPool2d *pl, const T *x,            \
                                   const T *dy, T *dx, T *value,              \
                                   int64_t *index)                            \
    {                                                                         \
        const int64_t hw = pl->h * pl->w, pq = pl->p * pl->q;                 \
        PoolInterior in = pool_interior(pl);                                  \
        memset(dx, 0, (size_t)(pl->n * pl->c * hw) * sizeof(T));             \
        for (int64_t plane = 0; plane < pl->n * pl->c; plane++) {             \
            T *dxp = dx + plane * hw;                                         \
            for (int64_t p = 0; p < pl->p; p++) {                             \
                bool inside = p >= in.p_lo && p < in.p_hi;                    \
                pool_select_row_indices_##SFX(pl, x + plane * hw, p,          \
                                              inside ? in.q_lo : 0,           \
                                              inside ? in.q_hi : 0, value,    \
                                              index);                         \
                const T *dyr = dy + plane * pq + p * pl->q;                   \
                for (int64_t q = 0; q < pl->q; q++)                           \
                    dxp[index[q]] += dyr[q];                                  \
            }                                                                 \
        }                                                                     \
    }

DEFINE_POOL(float, f32)
DEFINE_POOL(double, f64)

/* 2x2 windows with stride 2 that tile the plane exactly, the pooling of
 * nearly every CNN, get a forward kernel of their own: each output reads
 * its four inputs once. pool_pick applies the same rule as pool_select_*
 * (replace only on a strictly greater value or on the first NaN, in
 * row-major order) and compiles to compare-and-blend, so at -O3 the loop
 * vectorises: 0.8 ms instead of 2.3 ms for [128, 32, 28, 28] on the
 * development machine. A gradient kernel in the same style measured
 * slower than the generic path below, which is kept for the gradient. */
static bool pool_is_2x2_tiling(const RtPool2d *pl)
{
    return pl->kernel_h == 2 && pl->kernel_w == 2 && pl->stride_h == 2 &&
           pl->stride_w == 2 && pl->pad_h == 0 && pl->pad_w == 0 &&
           pl->h == 2 * pl->p && pl->w == 2 * pl->q;
}

#define DEFINE_POOL_2X2(T, SFX)                                               \
    static inline T pool_pick_##SFX(T best, T v)                              \
    {                                                                         \
        return (v > best || (v != v && best == best)) ? v : best;             \
    }                                                                         \
                                                                              \
    static void maxpool_2x2_forward_##SFX(const RtPool2d *pl, const T *x,     \
                                          T *y)                               \
    {                                                                         \
        for (int64_t row = 0; row < pl->n * pl->c * pl->p; row++) {           \
            const T *r0 = x + row * 2 * pl->w, *r1 = r0 + pl->w;              \
            T *out = y + row * pl->q;                                         \
            for (int64_t q = 0; q < pl->q; q++) {                             \
                T best = pool_pick_##SFX(r0[2 * q], r0[2 * q + 1]);           \
                best = pool_pick_##SFX(best, r1[2 * q]);                      \
                out[q] = pool_pick_##SFX(best, r1[2 * q + 1]);                \
            }                                                                 \
        }                                                                     \
    }                                                                         \

DEFINE_POOL_2X2(float, f32)
DEFINE_POOL_2X2(double, f64)

void rt_maxpool2d_forward(DType dt, const RtPool2d *pl, const void *x, void *y)
{
    assert_float_type(dt);
    pool_check(pl);
    bool tiling = pool_is_2x2_tiling(pl);
    if (dt == DT_F32)
        (tiling ? maxpool_2x2_forward_f32 : maxpool_forward_f32)(pl, x, y);
    else
        (tiling ? maxpool_2x2_forward_f64 : maxpool_forward_f64)(pl, x, y);
}

void rt_maxpool2d_grad(DType dt, const RtPool2d *pl, const void *x,
                       const void *dy, void *dx)
{
    size_t es = float_size(dt);
    pool_check(pl);
    int64_t *index = xmalloc(size_mul((size_t)pl->q, sizeof(int64_t)));
    void *value = xmalloc(size_mul((size_t)pl->q, es));
    if (dt == DT_F32)
        maxpool_grad_f32(pl, x, dy, dx, value, index);
    else
        maxpool_grad_f64(pl, x, dy, dx, value, index);
    free(value);
    free(index);
}

/* ---- Cross-entropy -------------------------------------------------------- */

/* For one row with maximum m at index a (the first maximum), both kernels
 * store e[j] = exp(x[j] - m) and rest = sum of e[j] over j != a, in index
 * order and in the element type. Then
 *   loss = (m - x[label]) + log1p(rest),
 * which is exact in its first term for logits of any magnitude, and keeps
 * full relative accuracy when the prediction is confident (rest << 1),
 * where log(1 + rest) would round to 0. The gradient is
 *   softmax[j] - [j == label] = e[j] / (1 + rest) - [j == label],
 * and for label == a the difference 1 / (1 + rest) - 1 is computed as
 * -rest / (1 + rest), which avoids cancellation. A NaN logit makes the
 * row's loss and gradient NaN. A +inf logit gives a loss of +inf, or NaN
 * when it is the label's logit. */
#define DEFINE_CROSS_ENTROPY(T, SFX, EXP, LOG1P)                              \
    static int64_t row_argmax_##SFX(const T *row, int64_t c)                  \
    {                                                                         \
        int64_t at = 0;                                                       \
        for (int64_t j = 1; j < c; j++)                                       \
            if (row[j] > row[at])                                             \
                at = j;                                                       \
        return at;                                                            \
    }                                                                         \
                                                                              \
    /* Stores exp(row[j] - max) in e and returns the sum of those terms     \
     * without the one at the argmax. */                                      \
    static T row_exp_rest_##SFX(const T *row, int64_t c, int64_t at, T *e)    \
    {                                                                         \
        const T m = row[at];                                                  \
        for (int64_t j = 0; j < c; j++)                                       \
            e[j] = EXP(row[j] - m);                                           \
        T rest = 0;                                                           \
        for (int64_t j = 0; j < c; j++)                                       \
            if (j != at)                                                      \
                rest += e[j];                                                 \
        return rest;                                                          \
    }                                                                         \
                                                                              \
    static void cross_entropy_##SFX(int64_t n, int64_t c, const T *logits,    \
                                    const int32_t *labels, T *loss, T *e)     \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T *row = logits + i * c;                                    \
            int32_t label = labels[i];                                        \
            BOCB_ASSERT(label >= 0 && label < c);                             \
            int64_t at = row_argmax_##SFX(row, c);                            \
            T rest = row_exp_rest_##SFX(row, c, at, e);                       \
            loss[i] = (row[at] - row[label]) + LOG1P(rest);                   \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void cross_entropy_grad_##SFX(int64_t n, int64_t c,                \
                                         const T *logits,                     \
                                         const int32_t *labels,               \
                                         const T *dloss, T *dlogits)          \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T *row = logits + i * c;                                    \
            T *d = dlogits + i * c;                                           \
            int32_t label = labels[i];                                        \
            BOCB_ASSERT(label >= 0 && label < c);                             \
            int64_t at = row_argmax_##SFX(row, c);                            \
            T rest = row_exp_rest_##SFX(row, c, at, d);                       \
            T scale = dloss[i] / (1 + rest);                                  \
            for (int64_t j = 0; j < c; j++)                                   \
                d[j] *= scale;                                                \
            if (label == at)                                                  \
                d[label] = -rest * scale;                                     \
            else                                                              \
                d[label] -= dloss[i];                                         \
        }                                                                     \
    }

DEFINE_CROSS_ENTROPY(float, f32, expf, log1pf)
DEFINE_CROSS_ENTROPY(double, f64, exp, log1p)

/* The forward kernel needs scratch space for one row of exponentials. Rows
 * of up to this many classes use the stack, wider rows the heap. */
enum { CROSS_ENTROPY_STACK_CLASSES = 1024 };

void rt_cross_entropy(DType dt, int64_t n, int64_t c, const void *logits,
                      const int32_t *labels, void *loss)
{
    size_t es = float_size(dt);
    BOCB_ASSERT(n >= 0 && c >= 1);
    double stack_scratch[CROSS_ENTROPY_STACK_CLASSES];
    void *scratch = stack_scratch;
    if (c > CROSS_ENTROPY_STACK_CLASSES)
        scratch = xmalloc(size_mul((size_t)c, es));

    if (dt == DT_F32)
        cross_entropy_f32(n, c, logits, labels, loss, scratch);
    else
        cross_entropy_f64(n, c, logits, labels, loss, scratch);

    if (scratch != stack_scratch)
        free(scratch);
}

static double load_float(DType dt, const void *data, int64_t i)
{
    return dt == DT_F32 ? ((const float *)data)[i] : ((const double *)data)[i];
}

void rt_sample_labels(DType dt, int64_t n, int64_t c, const void *logits, PhiloxKey key,
                      int32_t *labels)
{
    assert_float_type(dt);
    BOCB_ASSERT(n >= 0 && c >= 1 && c <= INT32_MAX);
    for (int64_t i = 0; i < n; i++) {
        double row_max = -INFINITY;
        for (int64_t j = 0; j < c; j++)
            row_max = fmax(row_max, load_float(dt, logits, i * c + j));
        double total = 0;
        for (int64_t j = 0; j < c; j++)
            total += exp(load_float(dt, logits, i * c + j) - row_max);
        double target = philox_uniform_f64(key, (uint64_t)i) * total, running = 0;
        int64_t label = c - 1; /* where rounding leaves the target past the end */
        for (int64_t j = 0; j < c; j++) {
            running += exp(load_float(dt, logits, i * c + j) - row_max);
            if (target < running) {
                label = j;
                break;
            }
        }
        labels[i] = (int32_t)label;
    }
}

void rt_cross_entropy_grad(DType dt, int64_t n, int64_t c, const void *logits,
                           const int32_t *labels, const void *dloss,
                           void *dlogits)
{
    assert_float_type(dt);
    BOCB_ASSERT(n >= 0 && c >= 1);
    if (dt == DT_F32)
        cross_entropy_grad_f32(n, c, logits, labels, dloss, dlogits);
    else
        cross_entropy_grad_f64(n, c, logits, labels, dloss, dlogits);
}

/* ---- Embedding rows ------------------------------------------------------- */

void rt_gather(DType dt, int64_t rows, int64_t num, int64_t dim, const void *table,
               const int32_t *ids, void *out)
{
    size_t es = float_size(dt), row_bytes = (size_t)dim * es;
    for (int64_t r = 0; r < rows; r++) {
        char *dst = (char *)out + (size_t)r * row_bytes;
        if (ids[r] >= 0 && ids[r] < num)
            memcpy(dst, (const char *)table + (size_t)ids[r] * row_bytes, row_bytes);
        else
            memset(dst, 0, row_bytes);
    }
}

void rt_scatter_add(DType dt, int64_t rows, int64_t num, int64_t dim, const int32_t *ids,
                    const void *dy, void *table)
{
    memset(table, 0, (size_t)(num * dim) * float_size(dt));
    for (int64_t r = 0; r < rows; r++) {
        if (ids[r] < 0 || ids[r] >= num)
            continue;
        if (dt == DT_F32) {
            float *t = (float *)table + ids[r] * dim;
            const float *d = (const float *)dy + r * dim;
            for (int64_t j = 0; j < dim; j++)
                t[j] += d[j];
        } else {
            double *t = (double *)table + ids[r] * dim;
            const double *d = (const double *)dy + r * dim;
            for (int64_t j = 0; j < dim; j++)
                t[j] += d[j];
        }
    }
}

/* Label smoothing and mean squared error, applied after (or instead of)
 * the cross-entropy loops above. */
#define DEFINE_LOSS_EXTRAS(T, SFX)                                            \
    static T row_mean_##SFX(const T *row, int64_t c)                          \
    {                                                                         \
        T s = 0;                                                              \
        for (int64_t j = 0; j < c; j++)                                       \
            s += row[j];                                                      \
        return s / (T)c;                                                      \
    }                                                                         \
                                                                              \
    static void smooth_##SFX(int64_t n, int64_t c, T eps, const T *logits,    \
                             const int32_t *labels, T *loss)                  \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T *row = logits + i * c;                                    \
            loss[i] += eps * (row[labels[i]] - row_mean_##SFX(row, c));       \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void smooth_grad_##SFX(int64_t n, int64_t c, T eps,                \
                                  const int32_t *labels, const T *dloss,      \
                                  T *dlogits)                                 \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            T *d = dlogits + i * c;                                           \
            T spread = eps / (T)c * dloss[i];                                 \
            for (int64_t j = 0; j < c; j++)                                   \
                d[j] -= spread;                                               \
            d[labels[i]] += eps * dloss[i];                                   \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void mse_##SFX(int64_t n, int64_t c, const T *logits,              \
                          const int32_t *labels, T *loss)                     \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T *row = logits + i * c;                                    \
            BOCB_ASSERT(labels[i] >= 0 && labels[i] < c);                     \
            T s = 0;                                                          \
            for (int64_t j = 0; j < c; j++) {                                 \
                T e = row[j] - (j == labels[i] ? (T)1 : (T)0);                \
                s += e * e;                                                   \
            }                                                                 \
            loss[i] = s / (T)c;                                               \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void mse_grad_##SFX(int64_t n, int64_t c, const T *logits,         \
                               const int32_t *labels, const T *dloss,         \
                               T *dlogits)                                    \
    {                                                                         \
        for (int64_t i = 0; i < n; i++) {                                     \
            const T *row = logits + i * c;                                    \
            BOCB_ASSERT(labels[i] >= 0 && labels[i] < c);                     \
            T scale = (T)2 / (T)c * dloss[i];                                 \
            for (int64_t j = 0; j < c; j++)                                   \
                dlogits[i * c + j] =                                          \
                    scale * (row[j] - (j == labels[i] ? (T)1 : (T)0));        \
        }                                                                     \
    }

DEFINE_LOSS_EXTRAS(float, f32)
DEFINE_LOSS_EXTRAS(double, f64)

void rt_loss(DType dt, RtLoss loss, int64_t n, int64_t c, const void *logits,
             const int32_t *labels, void *out)
{
    assert_float_type(dt);
    BOCB_ASSERT(n >= 0 && c >= 1);
    if (loss.kind == RT_LOSS_MSE) {
        if (dt == DT_F32)
            mse_f32(n, c, logits, labels, out);
        else
            mse_f64(n, c, logits, labels, out);
        return;
    }
    rt_cross_entropy(dt, n, c, logits, labels, out);
    if (loss.label_smoothing == 0)
        return;
    if (dt == DT_F32)
        smooth_f32(n, c, (float)loss.label_smoothing, logits, labels, out);
    else
        smooth_f64(n, c, loss.label_smoothing, logits, labels, out);
}

void rt_loss_grad(DType dt, RtLoss loss, int64_t n, int64_t c, const void *logits,
                  const int32_t *labels, const void *dloss, void *dlogits)
{
    assert_float_type(dt);
    BOCB_ASSERT(n >= 0 && c >= 1);
    if (loss.kind == RT_LOSS_MSE) {
        if (dt == DT_F32)
            mse_grad_f32(n, c, logits, labels, dloss, dlogits);
        else
            mse_grad_f64(n, c, logits, labels, dloss, dlogits);
        return;
    }
    rt_cross_entropy_grad(dt, n, c, logits, labels, dloss, dlogits);
    if (loss.label_smoothing == 0)
        return;
    if (dt == DT_F32)
        smooth_grad_f32(n, c, (float)loss.label_smoothing, labels, dloss, dlogits);
    else
        smooth_grad_f64(n, c, loss.label_smoothing, labels, dloss, dlogits);
}

/* ---- Sums over axes ------------------------------------------------------- */

/* x's axes after dropping those of extent 1 and merging neighbours that are
 * both reduced or both kept, so reduced and kept axes alternate. */
typedef struct ReducePlan {
    int rank;
    int64_t extent[SHAPE_MAX_RANK];
    bool reduced[SHAPE_MAX_RANK];
    int64_t y_stride[SHAPE_MAX_RANK]; /* 0 for a reduced axis */
} ReducePlan;

static ReducePlan reduce_plan(int rank, const int64_t *dims, uint32_t axes_mask)
{
    ReducePlan plan = {0};
    for (int a = 0; a < rank; a++) {
        if (dims[a] == 1)
            continue;
        bool reduced = (axes_mask >> a) & 1;
        if (plan.rank > 0 && plan.reduced[plan.rank - 1] == reduced) {
            plan.extent[plan.rank - 1] *= dims[a];
        } else {
            plan.extent[plan.rank] = dims[a];
            plan.reduced[plan.rank] = reduced;
            plan.rank++;
        }
    }
    if (plan.rank == 0) {
        plan.rank = 1;
        plan.extent[0] = 1;
        plan.reduced[0] = false;
    }

    int64_t stride = 1;
    for (int a = plan.rank - 1; a >= 0; a--) {
        plan.y_stride[a] = plan.reduced[a] ? 0 : stride;
        if (!plan.reduced[a])
            stride *= plan.extent[a];
    }
    return plan;
}

/* x is read once, in row-major order, and each y element receives its
 * terms in that order. A reduced innermost axis is summed into eight
 * partial sums (element j goes to sum j % 8), combined pairwise at the end.
 * The grouping is fixed, so results are deterministic, and GCC 12 at -O2
 * compiles the eight lanes to vector adds. Sums are accumulated in T, so
 * f32 inputs are summed in f32. */
#define DEFINE_REDUCE_SUM(T, SFX)                                             \
    static T sum_contiguous_##SFX(const T *x, int64_t len)                    \
    {                                                                         \
        T lane[8] = {0};                                                      \
        int64_t j = 0;                                                        \
        for (; j + 8 <= len; j += 8)                                          \
            for (int l = 0; l < 8; l++)                                       \
                lane[l] += x[j + l];                                          \
        for (int l = 0; j < len; j++, l++)                                    \
            lane[l] += x[j];                                                  \
        return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +                  \
               ((lane[4] + lane[5]) + (lane[6] + lane[7]));                   \
    }                                                                         \
                                                                              \
    static void reduce_sum_##SFX(const ReducePlan *plan, const T *x, T *y)    \
    {                                                                         \
        const int inner = plan->rank - 1;                                     \
        const int64_t len = plan->extent[inner];                              \
        int64_t outer_count = 1;                                              \
        for (int a = 0; a < inner; a++)                                       \
            outer_count *= plan->extent[a];                                   \
                                                                              \
        int64_t index[SHAPE_MAX_RANK] = {0};                                  \
        int64_t y_at = 0;                                                     \
        for (int64_t o = 0; o < outer_count; o++) {                           \
            const T *xs = x + o * len;                                        \
            if (plan->reduced[inner]) {                                       \
                y[y_at] += sum_contiguous_##SFX(xs, len);                     \
            } else {                                                          \
                T *ys = y + y_at;                                             \
                for (int64_t j = 0; j < len; j++)                             \
                    ys[j] += xs[j];                                           \
            }                                                                 \
            for (int a = inner - 1; a >= 0; a--) {                            \
                index[a]++;                                                   \
                y_at += plan->y_stride[a];                                    \
                if (index[a] < plan->extent[a])                               \
                    break;                                                    \
                y_at -= plan->y_stride[a] * plan->extent[a];                  \
                index[a] = 0;                                                 \
            }                                                                 \
        }                                                                     \
    }

DEFINE_REDUCE_SUM(float, f32)
DEFINE_REDUCE_SUM(double, f64)

void rt_reduce_sum(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                   const void *x, void *y)
{
    size_t es = float_size(dt);
    BOCB_ASSERT(rank >= 0 && rank <= SHAPE_MAX_RANK);
    BOCB_ASSERT((axes_mask >> rank) == 0);

    int64_t x_count = 1, y_count = 1;
    for (int a = 0; a < rank; a++) {
        BOCB_ASSERT(dims[a] >= 0);
        x_count *= dims[a];
        if (!((axes_mask >> a) & 1))
            y_count *= dims[a];
    }
    memset(y, 0, size_mul((size_t)y_count, es));
    if (x_count == 0)
        return;

    ReducePlan plan = reduce_plan(rank, dims, axes_mask);
    if (dt == DT_F32)
        reduce_sum_f32(&plan, x, y);
    else
        reduce_sum_f64(&plan, x, y);
}

/* ---- Threads -------------------------------------------------------------- */

void rt_set_blas_threads(int threads)
{
    BOCB_ASSERT(threads >= 0);
    /* OpenBLAS 0.3.21 treats 0 as a request for its default: the value of
     * OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS), else the core count. */
    openblas_set_num_threads(threads);
}
