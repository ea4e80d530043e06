/* quant.h - bucketed min-max quantization of tensors for communication.
 *
 * A tensor is cut into buckets of `bucket` consecutive elements of its
 * row-major order, counted from element 0 of the whole tensor (a shard
 * must start on a bucket boundary). Each bucket is sent as its metadata,
 * base and scale in the tensor's dtype, and one unsigned code of `bits`
 * bits per element. An element decodes as base + scale * code, computed
 * in the dtype. The codes of a buffer are packed least significant bit
 * first, without padding between buckets.
 *
 * Rounding of t = (x - min) / scale, where scale = (max - min) / levels:
 *   - nearest: floor(t + 1/2);
 *   - stochastic: floor(t) + (u < t - floor(t)) for u uniform in [0, 1),
 *     so the expected decoded value is x;
 *   - shift (for weights): the bucket's grid is moved down by r = v *
 *     scale, v uniform in [0, 1) and one draw per bucket, and x goes to
 *     the nearest point of the moved grid. base = min - r. The expected
 *     decoded value is x, and all elements of a bucket lie on one grid.
 * A bucket whose elements are all equal (all zero included) has scale 0
 * and decodes exactly. A bucket with a NaN or an infinity, or whose range
 * overflows, decodes to NaN in every element, so the training loss shows
 * the failure instead of a silently wrong value.
 *
 * Random draws are Philox4x32-10 blocks. Element i (global index) of a
 * tensor draws with counter (i mod 2^32, i / 2^32, step, tag) under
 * `key`, and the shift of bucket k with counter (k mod 2^32, k / 2^32,
 * step, tag | 2^31). So a value depends only on its global position, the
 * step, the tag and the key, never on how the tensor is split into shards.
 *
 * rt_quant_roundtrip is the fused form, decode(encode(x)) without the
 * codes in memory. It shares every arithmetic step with encode and
 * decode, so the three agree bit for bit (tests/unit/test_quant.c).
 */
#ifndef BOCB_QUANT_H
#define BOCB_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "philox.h"
#include "shape.h"

enum { RT_QUANT_MIN_BITS = 2, RT_QUANT_MAX_BITS = 8 };

typedef enum RtRounding {
    RT_ROUND_NEAREST,
    RT_ROUND_STOCHASTIC,
    RT_ROUND_SHIFT,
} RtRounding;

typedef struct RtQuantizer {
    int bits;           /* RT_QUANT_MIN_BITS .. RT_QUANT_MAX_BITS */
    int64_t bucket;     /* elements per bucket, >= 1 */
    RtRounding rounding;
    PhiloxKey key;      /* unused with nearest rounding */
    uint32_t step;      /* counter word 2 of every draw */
    uint32_t tag;       /* counter word 3, below 2^31 */
} RtQuantizer;

/* Returns the Philox key of a quantizer from the bit pattern of the
 * rank-0 value at `key` (32 bits for f32, 64 for f64) and the tag. */
PhiloxKey rt_quant_key(DType dt, const void *key, uint32_t tag);
/* Returns the rank-0 step value at `step` as a counter word: saturated to
 * [0, 2^32 - 1], with NaN as 0, like philox_random_f32. */
uint32_t rt_quant_step(DType dt, const void *step);

/* Returns the name of a rounding mode as written in a program. */
const char *rt_rounding_name(RtRounding r);

/* Returns the number of buckets that n elements starting at a bucket
 * boundary touch. */
int64_t rt_quant_buckets(const RtQuantizer *q, int64_t n);
/* Returns the size in bytes of the encoding of n elements of dtype dt:
 * the metadata of every bucket, then the packed codes. */
size_t rt_quant_encoded_size(const RtQuantizer *q, DType dt, int64_t n);

/* Encodes x[0..n), the elements with global indices first .. first+n-1,
 * into out (rt_quant_encoded_size bytes). `first` must be a multiple of
 * the bucket size. */
void rt_quant_encode(const RtQuantizer *q, DType dt, int64_t first, int64_t n, const void *x,
                     uint8_t *out);
/* Encodes bucket b of x[0..n) into its place in `out`, the encoding of
 * the whole tensor (rt_quant_encoded_size bytes): its base and scale, and
 * its codes from bit b * bucket * bits of the code section. The element
 * indices are global from 0. When the bucket's codes start inside a byte,
 * the low bits of that byte belong to bucket b - 1 and are kept, so such
 * buckets must be encoded in order. rt_quant_encode is this function for
 * every bucket. */
void rt_quant_encode_bucket(const RtQuantizer *q, DType dt, int64_t n, int64_t b,
                            const void *x, uint8_t *out);
/* Decodes n elements from `in` into y, overwriting it. */
void rt_quant_decode(const RtQuantizer *q, DType dt, int64_t n, const uint8_t *in, void *y);
/* Decodes element i of the n elements encoded in `in` into *y, an element
 * of dtype dt, with the arithmetic of rt_quant_decode. It reads the
 * second byte of a code only when the code reaches into that byte, so it
 * never reads past the encoding. */
void rt_quant_decode_at(const RtQuantizer *q, DType dt, int64_t n, const uint8_t *in,
                        int64_t i, void *y);
/* y = decode(encode(x)), bit for bit, with x and y of n elements; y may
 * be x. */
void rt_quant_roundtrip(const RtQuantizer *q, DType dt, int64_t first, int64_t n,
                        const void *x, void *y);

/* Packs n codes of `bits` bits each (every code < 2^bits) into
 * ceil(n * bits / 8) bytes, least significant bit first, and back. */
void rt_pack_codes(int bits, int64_t n, const uint8_t *codes, uint8_t *out);
void rt_unpack_codes(int bits, int64_t n, const uint8_t *in, uint8_t *codes);

#endif
