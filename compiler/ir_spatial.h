/* ir_spatial.h - the spatial family of IR ops: transposes, slices,
 * concatenation, batched matrix products, average pooling, maxima over
 * axes and index ramps.
 *
 * They are library ops whose attributes are one RtSpatialAttr, so every
 * pass treats the family alike: the scheduler makes each one an
 * RT_STEP_SPATIAL step, and the interpreter and the executor both run it
 * with rt_spatial_run. Shape rules return false with a static reason,
 * which the lowering pass reports; builders assert them.
 *
 * The batch axis may sit anywhere and moves with a permute, but a slice
 * or a concatenation may not run along it, and a batched product may
 * carry it only in the leading (batch) dimensions.
 */
#ifndef BOCB_IR_SPATIAL_H
#define BOCB_IR_SPATIAL_H

#include "ir.h"
#include "../runtime/quant.h"

/* True for the ops between IR_PERMUTE and IR_IOTA. */
bool ir_is_spatial(IrOp op);
RtSpatialOp ir_spatial_kind(IrOp op);

/* ---- shape rules ---------------------------------------------------------- */

/* perm must be a permutation of 0 .. rank-1. */
bool ir_permute_shape(const Shape *x, const int *perm, Shape *out, const char **why);
bool ir_slice_shape(const Shape *x, int axis, int64_t start, int64_t len, Shape *out,
                    const char **why);
bool ir_concat_shape(const Shape *a, const Shape *b, int axis, Shape *out,
                     const char **why);
/* a [..., M, K] (or [..., K, M] when trans_a) times b [..., K, N] (or
 * [..., N, K]) with equal leading dimensions and rank >= 3. */
bool ir_bmm_shape(const Shape *a, const Shape *b, bool trans_a, bool trans_b, Shape *out,
                  const char **why);
/* The shape of a reduction over `axes` (as ir_sum). */
Shape ir_reduced_shape(const Shape *x, uint32_t axes);

/* Checks the operand and result shapes and dtypes of node n of g against
 * its attributes. Returns false and sets *why when they do not fit. */
bool ir_spatial_check(const IrGraph *g, const IrNode *n, const char **why);

/* ---- builders ------------------------------------------------------------- */

int ir_permute(IrGraph *g, int x, const int *perm, SrcLoc loc);
int ir_slice(IrGraph *g, int x, int axis, int64_t start, int64_t len, SrcLoc loc);
int ir_concat(IrGraph *g, int a, int b, int axis, SrcLoc loc);
int ir_bmm(IrGraph *g, int a, int b, bool trans_a, bool trans_b, SrcLoc loc);
/* Average pooling with PyTorch's avg_pool2d rules (see RtAvgPool2d). */
int ir_avgpool2d(IrGraph *g, int x, IrPoolAttr attr, bool count_include_pad, SrcLoc loc);
int ir_avgpool2d_grad(IrGraph *g, int dy, Shape x_shape, const RtSpatialAttr *attr,
                      SrcLoc loc);
int ir_reduce_max(IrGraph *g, int x, uint32_t axes, SrcLoc loc);
int ir_reduce_max_grad(IrGraph *g, int x, int dy, uint32_t axes, SrcLoc loc);
/* A tensor of `shape` whose elements are their index along `axis`. */
int ir_iota(IrGraph *g, DType dtype, Shape shape, int axis, SrcLoc loc);
/* encode(x) with the bucketed quantizer of runtime/quant.h, as a rank-1
 * i32 tensor of rt_quant_words words: the metadata and packed codes that
 * a sender of x's quantized form transmits. x has no batch axis. `key`
 * (the bit pattern of a rank-0 variable) and `tag` key the draws, and
 * `step` is the rank-0 step counter. */
int ir_quantize(IrGraph *g, int x, int key, int step, int bits, int64_t bucket,
                RtRounding rounding, uint32_t tag, SrcLoc loc);
/* decode(words) for the result `words` of ir_quantize: the value that a
 * receiver decodes, of the quantized tensor's shape and dtype. Its gradient
 * goes to the quantized tensor unchanged (straight-through estimator),
 * which ir_quantized_input names. */
int ir_dequantize(IrGraph *g, int words, SrcLoc loc);
/* The tensor that the operand of dequantize node n quantized. */
int ir_quantized_input(const IrGraph *g, const IrNode *n);

/* ---- composites ------------------------------------------------------------
 *
 * Built from the ops above and the elementwise ones, so their gradients
 * come from the rules of their parts. The callers check the shapes. */

/* softmax (or log_softmax when `log`) along `axis`, which must not be the
 * batch axis. The maximum along the axis is subtracted before exp, so any
 * finite input gives a finite result. In a row that mixes -inf and finite
 * entries, the -inf entries get weight 0. */
int ir_softmax(IrGraph *g, int x, int axis, bool log, SrcLoc loc);
/* torch.roll along one axis: element i moves to (i + shift) mod n. */
int ir_roll(IrGraph *g, int x, int axis, int64_t shift, SrcLoc loc);
/* Scaled dot-product attention over q, k, v [..., T, D] (equal shapes):
 * softmax(q k^T * scale + bias) v, where bias (or -1 for none) broadcasts
 * to [..., T, T], and `causal` gives the scores of key j > query i the
 * value -inf. */
int ir_attention(IrGraph *g, int q, int k, int v, double scale, int bias, bool causal,
                 SrcLoc loc);
/* Swin's window partition: x [N, H, W, C] -> [N * (H/w) * (W/w), w*w, C],
 * windows in row-major order, and its inverse (to [N, H, W, C]). H and W
 * must be multiples of w. */
int ir_window_partition(IrGraph *g, int x, int64_t w, SrcLoc loc);
int ir_window_reverse(IrGraph *g, int windows, int64_t h, int64_t w_img, int64_t w,
                      SrcLoc loc);
/* The attention mask of shifted windows, [(H/w) * (W/w), w*w, w*w]. It is
 * 0 between tokens that came from the same region of the image before the
 * cyclic shift by -shift. Between tokens of different regions it is -100
 * (as in Swin), which softmax turns into weights below e^-90. */
int ir_shifted_window_mask(IrGraph *g, DType dt, int64_t h, int64_t w_img, int64_t w,
                           int64_t shift, SrcLoc loc);
/* The one-hot matrix [w^4, (2w-1)^2] that maps a relative position bias
 * table to the bias of every pair of tokens (i, j) of a w x w window, in
 * row i * w*w + j. The table has one row per offset (dy, dx) in
 * [-(w-1), w-1]^2. */
int ir_relative_position_onehot(IrGraph *g, DType dt, int64_t w, SrcLoc loc);

#endif
