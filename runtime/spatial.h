/* spatial.h - data movement, batched products, average pooling and maxima
 * over axes: the library kernels behind transposes, slices, concatenation,
 * attention and the token mixers.
 *
 * Every op here is one RtSpatialOp with a small integer attribute block,
 * so the compiler, the interpreter and the executor handle the whole
 * family through one entry point, rt_spatial_run. Its arguments follow
 * the convention of the other library steps: the operand buffers, then
 * the result buffer. shapes[i] describes buffer i, with the batch axis
 * resolved for `batch` at run time. All tensors are dense and row-major.
 * Every loop runs in a fixed order, so results are deterministic.
 */
#ifndef BOCB_SPATIAL_H
#define BOCB_SPATIAL_H

#include <stdbool.h>
#include <stdint.h>

#include "shape.h"

typedef enum RtSpatialOp {
    RT_SPATIAL_PERMUTE,       /* x -> y, where y axis i is x axis p[i] */
    RT_SPATIAL_SLICE,         /* x -> y along axis p[0] from index p[1] */
    RT_SPATIAL_CONCAT,        /* a, b -> y along axis p[0] */
    RT_SPATIAL_BMM,           /* a [..., M, K], b [..., K, N] -> [..., M, N];
                                 p[0], p[1]: a, b stored transposed */
    RT_SPATIAL_AVGPOOL2D,     /* x [N,C,H,W] -> y; p[0..1] kernel, p[2..3]
                                 stride, p[4..5] pad, p[6] count_include_pad */
    RT_SPATIAL_AVGPOOL2D_GRAD,/* dy -> dx; attributes as above */
    RT_SPATIAL_REDUCE_MAX,    /* x -> y over the axes in the mask p[0] */
    RT_SPATIAL_REDUCE_MAX_GRAD, /* x, dy -> dx, with dy sent to one maximal
                                   element */
    RT_SPATIAL_IOTA,          /* -> y, where every element is its index on
                                 axis p[0] */
    RT_SPATIAL_QUANTIZE,      /* x, key, step -> encode(x) (quant.h) as i32
                                 words, zero-padded; p[0] bits, p[1] bucket,
                                 p[2] rounding, p[3] tag, p[4] x's dtype */
    RT_SPATIAL_DEQUANTIZE,    /* words -> decode(words) into y of dtype dt;
                                 p[0] bits, p[1] bucket */
} RtSpatialOp;

enum { RT_SPATIAL_MAX_ATTRS = 7 };

typedef struct RtSpatialAttr {
    RtSpatialOp op;
    int64_t p[RT_SPATIAL_MAX_ATTRS];
} RtSpatialAttr;

/* Returns the number of operands of `op` (the result not counted). */
int rt_spatial_arity(RtSpatialOp op);

/* Returns the number of i32 words that hold the encoding of n elements
 * of dtype dt with `bits` bits in buckets of `bucket` (quant.h): the
 * result size of RT_SPATIAL_QUANTIZE. */
int64_t rt_quant_words(int bits, int64_t bucket, DType dt, int64_t n);

/* Runs `a` on buffers[0 .. arity-1] (operands) into buffers[arity] (the
 * result), in f32 or f64 as `dt` selects (for quantize, as p[4] selects).
 * The compiler checked the shapes. Only the average-pooling extents are
 * asserted again here, so another mismatch is undefined behaviour. The
 * result is overwritten. */
void rt_spatial_run(DType dt, const RtSpatialAttr *a, const Shape *shapes,
                    void *const *buffers, int64_t batch);

/* ---- the kernels, for tests and benchmarks -------------------------------- */

/* The average of each window of x [N, C, H, W]. With count_include_pad the
 * divisor is kernel_h * kernel_w (padding counts as zeros), otherwise the
 * number of window elements inside the plane, as in PyTorch's avg_pool2d. */
typedef struct RtAvgPool2d {
    int64_t n, c, h, w, p, q;
    int64_t kernel[2], stride[2], pad[2];
    bool count_include_pad;
} RtAvgPool2d;

void rt_avgpool2d_forward(DType dt, const RtAvgPool2d *pl, const void *x, void *y);
/* dx is overwritten with the adjoint of the forward pass applied to dy. */
void rt_avgpool2d_grad(DType dt, const RtAvgPool2d *pl, const void *dy, void *dx);

/* Maxima of x (extents dims[0..rank-1]) over the axes in `axes_mask`. A
 * NaN wins over numbers, and among equal maxima the first in row-major
 * order is the selected element, which alone receives the gradient in
 * rt_reduce_max_grad (dx is overwritten). */
void rt_reduce_max(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                   const void *x, void *y);
void rt_reduce_max_grad(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                        const void *x, const void *dy, void *dx);

/* count independent products C[i] = op(A[i]) op(B[i]) of [m, k] by [k, n]
 * matrices stored one after another, through OpenBLAS. */
void rt_batched_matmul(DType dt, bool trans_a, bool trans_b, int64_t count, int64_t m,
                       int64_t n, int64_t k, const void *a, const void *b, void *c);

#endif
