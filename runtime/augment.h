/* augment.h - data augmentation of training batches.
 *
 * These are the transforms of the reference CIFAR recipes, torchvision's
 * RandomCrop(size, padding) followed by RandomHorizontalFlip(). Each image
 * is padded on every side and a window of its original size is cut at a
 * random offset. The result is mirrored left to right with some
 * probability. The random numbers of sample i of training step s come
 * from Philox keyed by the seed, with the counter (i, s). The same seed
 * therefore gives the same augmented batches in every run, in a resumed
 * run too, and on any thread count.
 */
#ifndef BOCB_AUGMENT_H
#define BOCB_AUGMENT_H

#include <stdbool.h>
#include <stdint.h>

#include "shape.h"

/* The random bits of the uniform number that decides a flip. A flip
 * happens with probability p rounded up to a multiple of 2^-24, so a p
 * in (0, 2^-24) would flip with probability 2^-24, not p. */
enum { RT_AUGMENT_FLIP_BITS = 24 };

typedef struct RtAugment {
    bool crop;
    int64_t padding;   /* pixels added on each side before cropping */
    bool flip;
    double flip_p;     /* probability of a horizontal flip, in [0, 1] */
} RtAugment;

/* The transform of one sample: the crop window's offset in the padded
 * image (0 .. 2 * padding on each axis) and whether it is flipped. */
typedef struct RtAugmentDraw {
    int64_t dy, dx;
    bool flip;
} RtAugmentDraw;

/* Returns the transform of sample `index` of training step `step` (from
 * 0) for `seed`. */
RtAugmentDraw rt_augment_draw(const RtAugment *aug, uint64_t seed, int64_t step, int64_t index);

/* Applies `draw` to one image of `channels` planes of height x width
 * elements of type `dtype` (DT_F32 or DT_F64), in place: pixels the crop
 * takes from the padding become `fill`, the value a zero byte has after
 * the data's normalisation. `scratch` has room for height x width elements. */
void rt_augment_image(const RtAugment *aug, RtAugmentDraw draw, DType dtype, void *image,
                      int64_t channels, int64_t height, int64_t width, double fill,
                      void *scratch);

/* Augments n samples of a training batch in place. `x` [n, ...sample_dims]
 * contains the batch's samples first .. first + n - 1, so a part of a
 * batch (one rank's, in sharded training) gets the draws it has in the
 * whole.
 * The last two sample axes are height and width and the axes before them
 * are channels; a sample of rank 1 is left alone. */
void rt_augment_batch(const RtAugment *aug, uint64_t seed, int64_t step, DType dtype, void *x,
                      int64_t first, int64_t n, const int64_t *sample_dims, int rank,
                      double fill);

#endif
