/* ops.h - the runtime's library kernels: matrix products, convolutions,
 * pooling, cross-entropy and reductions, in f32 and f64.
 *
 * These are the ops that the fusion pass leaves as calls. Matrix products
 * go to OpenBLAS (sgemm/dgemm). Convolutions are im2col + GEMM one image at
 * a time, so the column buffer of one image stays in L2 and the output is
 * produced directly in NCHW layout. Every kernel here is deterministic for
 * a given OpenBLAS thread count. All tensors are dense, row-major (NCHW for
 * images), and `dt` selects float or double for every pointer argument
 * except labels, which are int32.
 */
#ifndef BOCB_OPS_H
#define BOCB_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "philox.h"
#include "shape.h"

/* C[M,N] = op(A) * op(B) + beta * C, where op(A) is [M,K] (A is stored
 * [K,M] when trans_a) and op(B) is [K,N] (stored [N,K] when trans_b). */
void rt_matmul(DType dt, bool trans_a, bool trans_b, int64_t m, int64_t n,
               int64_t k, const void *a, const void *b, void *c, double beta);

/* A 2-D convolution: x [N, C, H, W], w [K, C/groups, R, S], y [N, K, P, Q],
 * with P = (H + 2*pad_h - dil_h*(R-1) - 1) / stride_h + 1 (same for Q). */
typedef struct RtConv2d {
    int64_t n, c, h, w;
    int64_t k, r, s;
    int64_t p, q;
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dil_h, dil_w;
    int64_t groups;
} RtConv2d;

/* Builds the descriptor of a convolution of x by w (batch axes resolved
 * for `batch`) with the given attributes, and fills p and q. Asserts that
 * the result is valid: the compiler checks shapes before building one. */
RtConv2d rt_conv2d_make(const Shape *x, const Shape *w, const int64_t stride[2],
                        const int64_t pad[2], const int64_t dilation[2], int64_t groups,
                        int64_t batch);

/* Fills p and q from the other fields. Returns false if the output would
 * be empty or a field is invalid, which the compiler rules out before. */
bool rt_conv2d_infer(RtConv2d *cv);
/* Bytes of scratch memory the three conv kernels need: one image's column
 * buffer, or for a depthwise convolution at least the planes of the
 * direct kernels. */
size_t rt_conv2d_workspace_bytes(DType dt, const RtConv2d *cv);
void rt_conv2d_forward(DType dt, const RtConv2d *cv, const void *x,
                       const void *w, void *y, void *workspace);
/* dx = conv2d^T(dy, w); dx is overwritten. */
void rt_conv2d_grad_input(DType dt, const RtConv2d *cv, const void *dy,
                          const void *w, void *dx, void *workspace);
/* dw = sum over images of dy (x) im2col(x); dw is overwritten. */
void rt_conv2d_grad_weight(DType dt, const RtConv2d *cv, const void *x,
                           const void *dy, void *dw, void *workspace);

/* True when every group has exactly one input channel (groups == C > 1):
 * a depthwise convolution, which the three conv kernels above compute with
 * direct loops (rt_depthwise_*) instead of im2col + GEMM. Their workspace
 * is the one rt_conv2d_workspace_bytes sizes. */
bool rt_conv2d_is_depthwise(const RtConv2d *cv);
void rt_depthwise_forward(DType dt, const RtConv2d *cv, const void *x, const void *w,
                          void *y, void *workspace);
void rt_depthwise_grad_input(DType dt, const RtConv2d *cv, const void *dy, const void *w,
                             void *dx, void *workspace);
void rt_depthwise_grad_weight(DType dt, const RtConv2d *cv, const void *x, const void *dy,
                              void *dw, void *workspace);
/* The im2col + GEMM path for any convolution, depthwise included, with the
 * contracts of rt_conv2d_forward, _grad_input and _grad_weight. The conv
 * kernels use it for everything but depthwise; tests and `make bench`
 * compare it with the direct depthwise loops. */
void rt_conv2d_im2col_forward(DType dt, const RtConv2d *cv, const void *x,
                              const void *w, void *y, void *workspace);
void rt_conv2d_im2col_grad_input(DType dt, const RtConv2d *cv, const void *dy,
                                 const void *w, void *dx, void *workspace);
void rt_conv2d_im2col_grad_weight(DType dt, const RtConv2d *cv, const void *x,
                                  const void *dy, void *dw, void *workspace);

/* Max pooling: x [N, C, H, W] -> y [N, C, P, Q]. Padding counts as -inf.
 * When several elements of a window share the maximum, the first in
 * row-major window order is the one selected (as in PyTorch's CPU kernel),
 * and the gradient flows to it alone. */
typedef struct RtPool2d {
    int64_t n, c, h, w;
    int64_t p, q;
    int64_t kernel_h, kernel_w;
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
} RtPool2d;

bool rt_pool2d_infer(RtPool2d *pl);
/* Builds the descriptor of pooling x (batch axes resolved for `batch`)
 * and fills p and q; asserts that the result is valid. */
RtPool2d rt_pool2d_make(const Shape *x, const int64_t kernel[2], const int64_t stride[2],
                        const int64_t pad[2], int64_t batch);
void rt_maxpool2d_forward(DType dt, const RtPool2d *pl, const void *x, void *y);
/* dx is overwritten: each dy element is added to the selected x element. */
void rt_maxpool2d_grad(DType dt, const RtPool2d *pl, const void *x,
                       const void *dy, void *dx);

/* Per-sample cross-entropy of logits [N, C] against class indices
 * labels [N]: loss[i] = logsumexp(logits[i]) - logits[i, labels[i]],
 * computed with the row maximum subtracted, so logits of any magnitude
 * give a finite result. Labels must lie in [0, C). */
void rt_cross_entropy(DType dt, int64_t n, int64_t c, const void *logits,
                      const int32_t *labels, void *loss);
/* labels[i] = a class drawn from softmax(logits[i]): the first j whose
 * running sum of exp(logits[i, k] - max) exceeds u * the total, with
 * u = philox_uniform_f64(key, i), all in f64. */
void rt_sample_labels(DType dt, int64_t n, int64_t c, const void *logits, PhiloxKey key,
                      int32_t *labels);
/* dlogits[i, j] = dloss[i] * (softmax(logits[i])[j] - (j == labels[i])). */
void rt_cross_entropy_grad(DType dt, int64_t n, int64_t c, const void *logits,
                           const int32_t *labels, const void *dloss,
                           void *dlogits);

/* out[r, :] = table[ids[r], :] for r < rows, over a table [num, dim];
 * an id outside [0, num) gives a row of zeros. */
void rt_gather(DType dt, int64_t rows, int64_t num, int64_t dim, const void *table,
               const int32_t *ids, void *out);
/* table = 0, then table[ids[r], :] += dy[r, :] for r = 0, 1, ... in order
 * (ids outside [0, num) are skipped), so the sum is deterministic. */
void rt_scatter_add(DType dt, int64_t rows, int64_t num, int64_t dim, const int32_t *ids,
                    const void *dy, void *table);

/* A per-sample classification loss of logits [N, C] against labels [N]. */
typedef enum RtLossKind {
    RT_LOSS_CROSS_ENTROPY, /* with label smoothing */
    RT_LOSS_MSE,           /* mean over j of (logits[i, j] - (j == label))^2 */
} RtLossKind;

typedef struct RtLoss {
    RtLossKind kind;
    double label_smoothing; /* eps in [0, 1]; cross-entropy only */
} RtLoss;

/* Per-sample loss. Cross-entropy with label smoothing eps is PyTorch's
 * (1 - eps) * CE(label) + eps * mean_j(-log softmax_j), computed as
 * rt_cross_entropy's value + eps * (logits[label] - mean_j logits[j]).
 * eps = 0 is exactly rt_cross_entropy. */
void rt_loss(DType dt, RtLoss loss, int64_t n, int64_t c, const void *logits,
             const int32_t *labels, void *out);
/* The gradient of rt_loss times dloss[i]: for cross-entropy
 * softmax - (1 - eps) one_hot - eps / C, for MSE 2 (x - one_hot) / C. */
void rt_loss_grad(DType dt, RtLoss loss, int64_t n, int64_t c, const void *logits,
                  const int32_t *labels, const void *dloss, void *dlogits);

/* y = sum of x over the axes in `axes_mask` (bit i = axis i); y's shape is
 * x's shape without those axes. dims are x's extents. */
void rt_reduce_sum(DType dt, int rank, const int64_t *dims, uint32_t axes_mask,
                   const void *x, void *y);

/* Sets the number of threads OpenBLAS uses (0 = its default). */
void rt_set_blas_threads(int threads);

#endif
