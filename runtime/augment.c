/* augment.c - random crop with padding and horizontal flip (augment.h). */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "philox.h"

/* The Philox stream of augmentation; other streams (shuffling, parameter
 * initialisation) use other ids, so their numbers do not correlate. */
enum { AUGMENT_STREAM = 0x41554700 };

/* Maps 32 random bits to [0, n): the high word of a 32 x 32-bit product.
 * Its bias, at most n / 2^32, is far below anything a crop offset shows. */
static int64_t below(uint32_t bits, int64_t n)
{
    return (int64_t)(((uint64_t)bits * (uint64_t)n) >> 32);
}

RtAugmentDraw rt_augment_draw(const RtAugment *aug, uint64_t seed, int64_t step, int64_t index)
{
    PhiloxCounter ctr = {{(uint32_t)index, (uint32_t)((uint64_t)index >> 32), (uint32_t)step,
                          (uint32_t)((uint64_t)step >> 32)}};
    PhiloxCounter r = philox4x32_10(ctr, philox_key(seed, AUGMENT_STREAM));
    RtAugmentDraw d = {0};
    if (aug->crop) {
        d.dy = below(r.c[0], 2 * aug->padding + 1);
        d.dx = below(r.c[1], 2 * aug->padding + 1);
    }
    /* 24 bits give a uniform number in [0, 1) as philox_uniform_f32 does. */
    double u = ldexp((double)(r.c[2] >> (32 - RT_AUGMENT_FLIP_BITS)), -RT_AUGMENT_FLIP_BITS);
    d.flip = aug->flip && u < aug->flip_p;
    return d;
}

static double load(DType dtype, const void *p, int64_t i)
{
    return dtype == DT_F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static void store(DType dtype, void *p, int64_t i, double v)
{
    if (dtype == DT_F64)
        ((double *)p)[i] = v;
    else
        ((float *)p)[i] = (float)v;
}

void rt_augment_image(const RtAugment *aug, RtAugmentDraw draw, DType dtype, void *image,
                      int64_t channels, int64_t height, int64_t width, double fill,
                      void *scratch)
{
    BOCB_ASSERT(dtype == DT_F32 || dtype == DT_F64);
    int64_t pad = aug->crop ? aug->padding : 0;
    size_t plane_bytes = (size_t)(height * width) * dtype_size(dtype);
    for (int64_t c = 0; c < channels; c++) {
        char *plane = (char *)image + (size_t)c * plane_bytes;
        memcpy(scratch, plane, plane_bytes);
        for (int64_t y = 0; y < height; y++) {
            /* Output pixel (y, x) is pixel (y + dy - pad, x' + dx - pad) of
             * the original, where x' is x mirrored when the draw flips. */
            int64_t sy = y + draw.dy - pad;
            for (int64_t x = 0; x < width; x++) {
                int64_t cx = draw.flip ? width - 1 - x : x;
                int64_t sx = cx + draw.dx - pad;
                bool inside = sy >= 0 && sy < height && sx >= 0 && sx < width;
                store(dtype, plane, y * width + x,
                      inside ? load(dtype, scratch, sy * width + sx) : fill);
            }
        }
    }
}

void rt_augment_batch(const RtAugment *aug, uint64_t seed, int64_t step, DType dtype, void *x,
                      int64_t first, int64_t n, const int64_t *sample_dims, int rank,
                      double fill)
{
    if (rank < 2 || !(aug->crop || aug->flip))
        return;
    int64_t height = sample_dims[rank - 2], width = sample_dims[rank - 1], channels = 1;
    for (int i = 0; i < rank - 2; i++)
        channels *= sample_dims[i];
    size_t sample_bytes = (size_t)(channels * height * width) * dtype_size(dtype);
    void *scratch = xmalloc((size_t)(height * width) * dtype_size(dtype));
    for (int64_t i = 0; i < n; i++) {
        RtAugmentDraw draw = rt_augment_draw(aug, seed, step, first + i);
        rt_augment_image(aug, draw, dtype, (char *)x + (size_t)i * sample_bytes, channels,
                         height, width, fill, scratch);
    }
    free(scratch);
}
