/* spatial.c - the kernels of spatial.h.
 *
 * Data movement (permute, slice, concat) is written once over bytes, since
 * it never does arithmetic. Pooling and maxima are written once as macros
 * over the element type and expanded for float and double. Batched matrix
 * products are a loop of OpenBLAS calls: the OpenBLAS in Debian 12 has no
 * batched GEMM, and the products of attention are large enough per head
 * for the call overhead not to matter.
 */
#include "spatial.h"

#include <math.h>
#include <string.h>

#include "base.h"
#include "ops.h"
#include "quant.h"

int rt_spatial_arity(RtSpatialOp op)
{
    switch (op) {
    case RT_SPATIAL_IOTA:
        return 0;
    case RT_SPATIAL_PERMUTE: case RT_SPATIAL_SLICE: case RT_SPATIAL_AVGPOOL2D:
    case RT_SPATIAL_AVGPOOL2D_GRAD: case RT_SPATIAL_REDUCE_MAX:
        return 1;
    case RT_SPATIAL_CONCAT: case RT_SPATIAL_BMM: case RT_SPATIAL_REDUCE_MAX_GRAD:
        return 2;
    case RT_SPATIAL_DEQUANTIZE:
        return 1;
    case RT_SPATIAL_QUANTIZE:
        return 3;
    }
    BOCB_UNREACHABLE("spatial op");
}

static size_t float_size(DType dt)
{
    BOCB_ASSERT(dt == DT_F32 || dt == DT_F64);
    return dt == DT_F32 ? sizeof(float) : sizeof(double);
}

/* Resolved extents of a shape for batch size `batch`. */
static void resolve_dims(const Shape *s, int64_t batch, int64_t *dims)
{
    for (int i = 0; i < s->rank; i++)
        dims[i] = shape_dim(s, i, batch);
}

/* Product of dims[from .. to-1]. */
static int64_t extent_product(const int64_t *dims, int from, int to)
{
    int64_t n = 1;
    for (int i = from; i < to; i++)
        n *= dims[i];
    return n;
}

/* ---- data movement -------------------------------------------------------- */

/* y[i0, ..., ir-1] = x[...] with y axis i taken from x axis perm[i]. The
 * innermost y axis is one run: a memcpy when it is also x's innermost
 * axis, else a strided gather. */
static void permute(size_t es, int rank, const int64_t *xdims, const int64_t *perm,
                    const void *x, void *y)
{
    int64_t xstride[SHAPE_MAX_RANK], ydims[SHAPE_MAX_RANK], step[SHAPE_MAX_RANK];
    int64_t index[SHAPE_MAX_RANK] = {0};
    BOCB_ASSERT(rank >= 1);
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        xstride[i] = s;
        s *= xdims[i];
    }
    for (int i = 0; i < rank; i++) {
        ydims[i] = xdims[perm[i]];
        step[i] = xstride[perm[i]];
    }
    int64_t total = extent_product(ydims, 0, rank);
    if (total == 0)
        return;
    int64_t run = ydims[rank - 1], run_step = step[rank - 1];
    const char *src = x;
    char *dst = y;
    for (int64_t done = 0; done < total; done += run) {
        int64_t offset = 0;
        for (int i = 0; i < rank - 1; i++)
            offset += index[i] * step[i];
        if (run_step == 1) {
            memcpy(dst, src + (size_t)offset * es, (size_t)run * es);
        } else if (es == sizeof(float)) {
            const float *from = (const float *)src + offset;
            float *to = (float *)dst;
            for (int64_t j = 0; j < run; j++)
                to[j] = from[j * run_step];
        } else {
            const double *from = (const double *)src + offset;
            double *to = (double *)dst;
            for (int64_t j = 0; j < run; j++)
                to[j] = from[j * run_step];
        }
        dst += (size_t)run * es;
        for (int i = rank - 2; i >= 0; i--) {
            if (++index[i] < ydims[i])
                break;
            index[i] = 0;
        }
    }
}

/* Copies `rows` blocks: block i of `len` bytes from src + i * src_pitch to
 * dst + i * dst_pitch. Slices and concatenations are this with the axis
 * and everything inside it as one block. */
static void copy_blocks(int64_t rows, size_t len, const char *src, size_t src_pitch,
                        char *dst, size_t dst_pitch)
{
    for (int64_t i = 0; i < rows; i++)
        memcpy(dst + (size_t)i * dst_pitch, src + (size_t)i * src_pitch, len);
}

static void slice(size_t es, const Shape *xs, const Shape *ys, int axis, int64_t start,
                  int64_t batch, const void *x, void *y)
{
    int64_t xd[SHAPE_MAX_RANK], yd[SHAPE_MAX_RANK];
    resolve_dims(xs, batch, xd);
    resolve_dims(ys, batch, yd);
    int64_t outer = extent_product(xd, 0, axis);
    size_t inner = (size_t)extent_product(xd, axis + 1, xs->rank) * es;
    copy_blocks(outer, (size_t)yd[axis] * inner, (const char *)x + (size_t)start * inner,
                (size_t)xd[axis] * inner, y, (size_t)yd[axis] * inner);
}

static void concat(size_t es, const Shape *as, const Shape *bs, int axis, int64_t batch,
                   const void *a, const void *b, void *y)
{
    int64_t ad[SHAPE_MAX_RANK], bd[SHAPE_MAX_RANK];
    resolve_dims(as, batch, ad);
    resolve_dims(bs, batch, bd);
    int64_t outer = extent_product(ad, 0, axis);
    size_t inner = (size_t)extent_product(ad, axis + 1, as->rank) * es;
    size_t alen = (size_t)ad[axis] * inner, blen = (size_t)bd[axis] * inner;
    copy_blocks(outer, alen, a, alen, y, alen + blen);
    copy_blocks(outer, blen, b, blen, (char *)y + alen, alen + blen);
}

/* ---- batched matrix products ---------------------------------------------- */

void rt_batched_matmul(DType dt, bool trans_a, bool trans_b, int64_t count, int64_t m,
                       int64_t n, int64_t k, const void *a, const void *b, void *c)
{
    size_t es = float_size(dt);
    for (int64_t i = 0; i < count; i++)
        rt_matmul(dt, trans_a, trans_b, m, n, k, (const char *)a + (size_t)(i * m * k) * es,
                  (const char *)b + (size_t)(i * k * n) * es,
                  (char *)c + (size_t)(i * m * n) * es, 0.0);
}

static void bmm(DType dt, const RtSpatialAttr *at, const Shape *shapes, void *const *buf,
                int64_t batch)
{
    int64_t ad[SHAPE_MAX_RANK], yd[SHAPE_MAX_RANK];
    int rank = shapes[2].rank;
    resolve_dims(&shapes[0], batch, ad);
    resolve_dims(&shapes[2], batch, yd);
    bool ta = at->p[0] != 0, tb = at->p[1] != 0;
    int64_t k = ad[rank - (ta ? 2 : 1)];
    rt_batched_matmul(dt, ta, tb, extent_product(yd, 0, rank - 2), yd[rank - 2],
                      yd[rank - 1], k, buf[0], buf[1], buf[2]);
}

/* ---- average pooling ------------------------------------------------------ */

/* The window of output (p, q): rows [h0, h1) and columns [w0, w1) of the
 * plane, and the divisor of its sum. */
typedef struct PoolWindow {
    int64_t h0, h1, w0, w1, count;
} PoolWindow;

/* Clips [o * stride - pad, + kernel) to the plane [0, in) in [*lo, *hi)
 * and returns the size of the window inside the padded plane. */
static int64_t clip_window(int64_t o, int64_t stride, int64_t pad, int64_t kernel,
                           int64_t in, int64_t *lo, int64_t *hi)
{
    int64_t start = o * stride - pad, end = start + kernel;
    if (end > in + pad)
        end = in + pad;
    *lo = start < 0 ? 0 : start;
    *hi = end > in ? in : end;
    return end - start;
}

static PoolWindow pool_window(const RtAvgPool2d *pl, int64_t p, int64_t q)
{
    PoolWindow w;
    int64_t fh = clip_window(p, pl->stride[0], pl->pad[0], pl->kernel[0], pl->h, &w.h0, &w.h1);
    int64_t fw = clip_window(q, pl->stride[1], pl->pad[1], pl->kernel[1], pl->w, &w.w0, &w.w1);
    w.count = pl->count_include_pad ? fh * fw : (w.h1 - w.h0) * (w.w1 - w.w0);
    return w;
}

#define DEFINE_AVGPOOL(T, SFX)                                                \
    static void avgpool_forward_##SFX(const RtAvgPool2d *pl, const T *x, T *y) \
    {                                                                         \
        for (int64_t plane = 0; plane < pl->n * pl->c; plane++) {             \
            const T *xp = x + plane * pl->h * pl->w;                          \
            T *yp = y + plane * pl->p * pl->q;                                \
            for (int64_t p = 0; p < pl->p; p++)                               \
                for (int64_t q = 0; q < pl->q; q++) {                         \
                    PoolWindow win = pool_window(pl, p, q);                   \
                    T sum = 0;                                                \
                    for (int64_t h = win.h0; h < win.h1; h++)                 \
                        for (int64_t w = win.w0; w < win.w1; w++)             \
                            sum += xp[h * pl->w + w];                         \
                    yp[p * pl->q + q] = sum / (T)win.count;                   \
                }                                                             \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void avgpool_grad_##SFX(const RtAvgPool2d *pl, const T *dy, T *dx) \
    {                                                                         \
        memset(dx, 0, (size_t)(pl->n * pl->c * pl->h * pl->w) * sizeof(T));   \
        for (int64_t plane = 0; plane < pl->n * pl->c; plane++) {             \
            T *dxp = dx + plane * pl->h * pl->w;                              \
            const T *dyp = dy + plane * pl->p * pl->q;                        \
            for (int64_t p = 0; p < pl->p; p++)                               \
                for (int64_t q = 0; q < pl->q; q++) {                         \
                    PoolWindow win = pool_window(pl, p, q);                   \
                    T g = dyp[p * pl->q + q] / (T)win.count;                  \
                    for (int64_t h = win.h0; h < win.h1; h++)                 \
                        for (int64_t w = win.w0; w < win.w1; w++)             \
                            dxp[h * pl->w + w] += g;                          \
                }                                                             \
        }                                                                     \
    }

DEFINE_AVGPOOL(float, f32)
DEFINE_AVGPOOL(double, f64)

void rt_avgpool2d_forward(DType dt, const RtAvgPool2d *pl, const void *x, void *y)
{
    if (float_size(dt) == sizeof(float))
        avgpool_forward_f32(pl, x, y);
    else
        avgpool_forward_f64(pl, x, y);
}

void rt_avgpool2d_grad(DType dt, const RtAvgPool2d *pl, const void *dy, void *dx)
{
    if (float_size(dt) == sizeof(float))
        avgpool_grad_f32(pl, dy, dx);
    else
        avgpool_grad_f64(pl, dy, dx);
}

static RtAvgPool2d avgpool_of(const RtSpatialAttr *at, const Shape *x, const Shape *y,
                              int64_t batch)
{
    RtAvgPool2d pl = {
        .n = shape_dim(x, 0, batch), .c = x->dims[1], .h = x->dims[2], .w = x->dims[3],
        .p = y->dims[2], .q = y->dims[3],
        .kernel = {at->p[0], at->p[1]}, .stride = {at->p[2], at->p[3]},
        .pad = {at->p[4], at->p[5]}, .count_include_pad = at->p[6] != 0,
    };
    for (int i = 0; i < 2; i++) {
        int64_t in = x->dims[2 + i], out = y->dims[2 + i];
        BOCB_ASSERT(pl.kernel[i] >= 1 && pl.stride[i] >= 1 && pl.pad[i] >= 0 &&
                    2 * pl.pad[i] <= pl.kernel[i]);
        BOCB_ASSERT(out == (in + 2 * pl.pad[i] - pl.kernel[i]) / pl.stride[i] + 1);
    }
    return pl;
}

/* ---- maxima over axes ----------------------------------------------------- */

/* The reduced and the kept axes of x, each as extents and strides, so that
 * a loop over kept positions and, inside it, over reduced positions in
 * row-major order visits every element once. */
typedef struct AxisSplit {
    int nkept, nred;
    int64_t kept[SHAPE_MAX_RANK], kept_stride[SHAPE_MAX_RANK];
    int64_t red[SHAPE_MAX_RANK], red_stride[SHAPE_MAX_RANK];
    int64_t nout, nper; /* kept and reduced element counts */
} AxisSplit;

static AxisSplit split_axes(int rank, const int64_t *dims, uint32_t mask)
{
    AxisSplit s = {.nout = 1, .nper = 1};
    int64_t stride = 1, strides[SHAPE_MAX_RANK];
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = stride;
        stride *= dims[i];
    }
    for (int i = 0; i < rank; i++) {
        if (mask & (1u << i)) {
            s.red[s.nred] = dims[i];
            s.red_stride[s.nred++] = strides[i];
            s.nper *= dims[i];
        } else {
            s.kept[s.nkept] = dims[i];
            s.kept_stride[s.nkept++] = strides[i];
            s.nout *= dims[i];
        }
    }
    return s;
}

/* Advances a row-major counter over `extent` and returns the offset of the
 * new position, given the offset of the old one. */
static int64_t step_counter(int n, const int64_t *extent, const int64_t *stride,
                            int64_t *index, int64_t offset)
{
    for (int i = n - 1; i >= 0; i--) {
        if (++index[i] < extent[i])
            return offset + stride[i];
        offset -= (extent[i] - 1) * stride[i];
        index[i] = 0;
    }
    return offset;
}

/* The offset of the selected maximum of the reduced positions around
 * `base`: replaced only by a strictly greater value or by the first NaN,
 * so ties go to the first in row-major order. */
#define DEFINE_REDUCE_MAX(T, SFX)                                             \
    static int64_t select_max_##SFX(const AxisSplit *s, const T *x, int64_t base) \
    {                                                                         \
        int64_t index[SHAPE_MAX_RANK] = {0};                                  \
        int64_t at = base, offset = base;                                     \
        T best = x[base];                                                     \
        for (int64_t j = 1; j < s->nper; j++) {                               \
            offset = step_counter(s->nred, s->red, s->red_stride, index, offset); \
            T v = x[offset];                                                  \
            if (v > best || (v != v && best == best)) {                       \
                best = v;                                                     \
                at = offset;                                                  \
            }                                                                 \
        }                                                                     \
        return at;                                                            \
    }                                                                         \
                                                                              \
    static void reduce_max_##SFX(const AxisSplit *s, const T *x, T *y)        \
    {                                                                         \
        int64_t index[SHAPE_MAX_RANK] = {0}, base = 0;                        \
        for (int64_t o = 0; o < s->nout; o++) {                               \
            y[o] = x[select_max_##SFX(s, x, base)];                           \
            base = step_counter(s->nkept, s->kept, s->kept_stride, index, base); \
        }                                                                     \
    }                                                                         \
                                                                              \
    static void reduce_max_grad_##SFX(const AxisSplit *s, const T *x,         \
                                      const T *dy, T *dx)                     \
    {                                                                         \
        memset(dx, 0, (size_t)(s->nout * s->nper) * sizeof(T));               \
        int64_t index[SHAPE_MAX_RANK] = {0}, base = 0;                        \
        for (int64_t o = 0; o < s->nout; o++) {                               \
            dx[select_max_##SFX(s, x, base)] = dy[o];                         \
            base = step_counter(s->nkept, s->kept, s->kept_stride, index, base); \
        }                                                                     \
    }

DEFINE_REDUCE_MAX(float, f32)
DEFINE_REDUCE_MAX(double, f64)

void rt_reduce_max(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                   const void *x, void *y)
{
    AxisSplit s = split_axes(rank, dims, axes_mask);
    if (s.nout == 0)
        return;
    BOCB_ASSERT(s.nper > 0);
    if (float_size(dt) == sizeof(float))
        reduce_max_f32(&s, x, y);
    else
        reduce_max_f64(&s, x, y);
}

void rt_reduce_max_grad(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                        const void *x, const void *dy, void *dx)
{
    AxisSplit s = split_axes(rank, dims, axes_mask);
    if (s.nout == 0)
        return;
    BOCB_ASSERT(s.nper > 0);
    if (float_size(dt) == sizeof(float))
        reduce_max_grad_f32(&s, x, dy, dx);
    else
        reduce_max_grad_f64(&s, x, dy, dx);
}

/* ---- index ramps ---------------------------------------------------------- */

static void iota(DType dt, const Shape *ys, int axis, int64_t batch, void *y)
{
    int64_t yd[SHAPE_MAX_RANK];
    resolve_dims(ys, batch, yd);
    int64_t outer = extent_product(yd, 0, axis), n = yd[axis];
    int64_t inner = extent_product(yd, axis + 1, ys->rank);
    int64_t at = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < inner; j++, at++) {
                if (dt == DT_F32)
                    ((float *)y)[at] = (float)i;
                else
                    ((double *)y)[at] = (double)i;
            }
}

/* ---- dispatch ------------------------------------------------------------- */

int64_t rt_quant_words(int bits, int64_t bucket, DType dt, int64_t n)
{
    RtQuantizer q = {.bits = bits, .bucket = bucket};
    return (int64_t)((rt_quant_encoded_size(&q, dt, n) + 3) / 4);
}

/* The quantize op: the operand buffers are x, the key and the step, all
 * of dtype p[4], and the result is the encoding of x in whole words,
 * whose padding bytes are zero so that equal encodings compare equal. */
static void quantize(const RtSpatialAttr *a, const Shape *shapes, void *const *buffers,
                     int64_t batch)
{
    DType dt = (DType)a->p[4];
    RtQuantizer q = {
        .bits = (int)a->p[0],
        .bucket = a->p[1],
        .rounding = (RtRounding)a->p[2],
        .key = rt_quant_key(dt, buffers[1], (uint32_t)a->p[3]),
        .step = rt_quant_step(dt, buffers[2]),
        .tag = (uint32_t)a->p[3],
    };
    int64_t n = shape_numel(&shapes[0], batch);
    int64_t words = rt_quant_words(q.bits, q.bucket, dt, n);
    BOCB_ASSERT(words == shape_numel(&shapes[3], batch));
    if (words > 0)
        ((uint32_t *)buffers[3])[words - 1] = 0;
    rt_quant_encode(&q, dt, 0, n, buffers[0], buffers[3]);
}

/* The dequantize op: the encoding's words to y, of dtype dt. */
static void dequantize(DType dt, const RtSpatialAttr *a, const Shape *shapes,
                       void *const *buffers, int64_t batch)
{
    RtQuantizer q = {.bits = (int)a->p[0], .bucket = a->p[1]};
    rt_quant_decode(&q, dt, shape_numel(&shapes[1], batch), buffers[0], buffers[1]);
}

void rt_spatial_run(DType dt, const RtSpatialAttr *a, const Shape *shapes,
                    void *const *buffers, int64_t batch)
{
    /* The one op whose result is not of the computing dtype. */
    if (a->op == RT_SPATIAL_QUANTIZE) {
        quantize(a, shapes, buffers, batch);
        return;
    }
    size_t es = float_size(dt);
    int64_t dims[SHAPE_MAX_RANK];
    switch (a->op) {
    case RT_SPATIAL_PERMUTE:
        resolve_dims(&shapes[0], batch, dims);
        permute(es, shapes[0].rank, dims, a->p, buffers[0], buffers[1]);
        return;
    case RT_SPATIAL_SLICE:
        slice(es, &shapes[0], &shapes[1], (int)a->p[0], a->p[1], batch, buffers[0],
              buffers[1]);
        return;
    case RT_SPATIAL_CONCAT:
        concat(es, &shapes[0], &shapes[1], (int)a->p[0], batch, buffers[0], buffers[1],
               buffers[2]);
        return;
    case RT_SPATIAL_BMM:
        bmm(dt, a, shapes, buffers, batch);
        return;
    case RT_SPATIAL_AVGPOOL2D: {
        RtAvgPool2d pl = avgpool_of(a, &shapes[0], &shapes[1], batch);
        rt_avgpool2d_forward(dt, &pl, buffers[0], buffers[1]);
        return;
    }
    case RT_SPATIAL_AVGPOOL2D_GRAD: {
        RtAvgPool2d pl = avgpool_of(a, &shapes[1], &shapes[0], batch);
        rt_avgpool2d_grad(dt, &pl, buffers[0], buffers[1]);
        return;
    }
    case RT_SPATIAL_REDUCE_MAX:
        resolve_dims(&shapes[0], batch, dims);
        rt_reduce_max(dt, shapes[0].rank, dims, (uint32_t)a->p[0], buffers[0], buffers[1]);
        return;
    case RT_SPATIAL_REDUCE_MAX_GRAD:
        resolve_dims(&shapes[0], batch, dims);
        rt_reduce_max_grad(dt, shapes[0].rank, dims, (uint32_t)a->p[0], buffers[0],
                           buffers[1], buffers[2]);
        return;
    case RT_SPATIAL_IOTA:
        iota(dt, &shapes[0], (int)a->p[0], batch, buffers[0]);
        return;
    case RT_SPATIAL_DEQUANTIZE:
        dequantize(dt, a, shapes, buffers, batch);
        return;
    case RT_SPATIAL_QUANTIZE:
        break; /* run above */
    }
    BOCB_UNREACHABLE("spatial op");
}
