/* shape.h - element types and tensor shapes with a symbolic batch dimension.
 *
 * A program is compiled once for every batch size up to its maximum: a shape
 * may have one batch axis, whose stored extent is a multiplier of the batch
 * size B (so [B, 784] stores dims {1, 784} with batch_axis 0, and a token
 * matrix [B*49, 64] stores {49, 64}). Everything else is static. The
 * compiler plans memory for the maximum batch, and kernels receive the
 * actual batch size at run time. So the last, smaller batch of an epoch
 * runs through the same compiled code.
 */
#ifndef BOCB_SHAPE_H
#define BOCB_SHAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum DType {
    DT_F32,
    DT_F64,
    DT_I32,
    DT_BOOL, /* stored as one byte, 0 or 1 */
} DType;

enum { SHAPE_MAX_RANK = 6 };

typedef struct Shape {
    int rank;
    int batch_axis; /* -1 when no axis depends on the batch size */
    int64_t dims[SHAPE_MAX_RANK];
} Shape;

/* Returns the size in bytes of one element. */
size_t dtype_size(DType dt);
/* Returns "f32", "f64", "i32" or "bool". */
const char *dtype_name(DType dt);

Shape shape_scalar(void);
/* Builds a static shape from rank dims. */
Shape shape_make(int rank, const int64_t *dims);
/* Returns the extent of axis `axis` for batch size `batch`. */
int64_t shape_dim(const Shape *s, int axis, int64_t batch);
/* Returns the element count for batch size `batch`. */
int64_t shape_numel(const Shape *s, int64_t batch);
bool shape_equal(const Shape *a, const Shape *b);

/* The largest element count a tensor may have per sample (per unit of the
 * batch size): 2^36, which keeps every byte count of a program far below
 * the int64 and size_t limits even at the largest batch. */
#define SHAPE_MAX_ELEMENTS (INT64_C(1) << 36)
/* Returns true when every extent is positive and the element count for
 * batch size 1 is at most SHAPE_MAX_ELEMENTS, computed without overflow. */
bool shape_size_ok(const Shape *s);
/* Writes "[B, 1, 28, 28]" (at most `size` bytes, always terminated) and
 * returns buf. A batch axis with multiplier k > 1 prints as "B*k". */
char *shape_format(const Shape *s, char *buf, size_t size);

#endif
