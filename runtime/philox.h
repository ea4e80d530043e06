/* philox.h - the Philox4x32-10 counter-based random number generator.
 *
 * Salmon, Moraes, Dror and Shaw, "Parallel Random Numbers: As Easy as
 * 1, 2, 3" (SC'11). A 128-bit counter and a 64-bit key map to 128 random
 * bits. There is no sequential state, so element i of a random tensor is a
 * pure function of (key, i). It is the same for any thread count and in
 * any order of evaluation. bocb keys every stream by the experiment seed and a
 * stream id (a parameter's index, an epoch's shuffle, ...).
 */
#ifndef BOCB_PHILOX_H
#define BOCB_PHILOX_H

#include <stdint.h>

typedef struct PhiloxKey {
    uint32_t k[2];
} PhiloxKey;

typedef struct PhiloxCounter {
    uint32_t c[4];
} PhiloxCounter;

/* Returns the 10-round Philox4x32 block for (counter, key). */
PhiloxCounter philox4x32_10(PhiloxCounter ctr, PhiloxKey key);

/* Returns the key for a stream of an experiment: the 64-bit seed mixed
 * with a 32-bit stream id so that nearby seeds and ids do not collide. */
PhiloxKey philox_key(uint64_t seed, uint32_t stream);

/* Returns 32 random bits: word (index % 4) of block (index / 4). */
uint32_t philox_u32(PhiloxKey key, uint64_t index);

/* Returns a float in [0, 1) with 24 random bits. */
float philox_uniform_f32(PhiloxKey key, uint64_t index);
/* Returns a double in [0, 1) with 53 random bits (uses indices 2i, 2i+1). */
double philox_uniform_f64(PhiloxKey key, uint64_t index);

/* Returns element `index` of the IR's `random` op at training step `step`.
 * The key is the bit pattern of `key`, a random variable's value (32 bits
 * for f32, 64 for f64), and the counter is (index, step, 0). The result is
 * a uniform number in [0, 1) made from word 0 (f32) or words 0 and 1 (f64)
 * of the block. The step saturates to [0, 2^32 - 1], and NaN becomes 0.
 * The code generator emits the same computation inline. */
float philox_random_f32(float key, float step, uint64_t index);
double philox_random_f64(double key, double step, uint64_t index);

/* Fills out[0..n) with uniform values in [low, high). */
void philox_fill_uniform_f32(PhiloxKey key, float *out, int64_t n, float low,
                             float high);
void philox_fill_uniform_f64(PhiloxKey key, double *out, int64_t n,
                             double low, double high);

/* Fills out[0..n) with N(0, std^2) values truncated to [-2, 2] (the
 * absolute bounds of timm's trunc_normal_): Box-Muller pairs, redrawing a
 * value outside the bounds. */
void philox_fill_trunc_normal_f32(PhiloxKey key, float *out, int64_t n, double std);
void philox_fill_trunc_normal_f64(PhiloxKey key, double *out, int64_t n, double std);

/* Writes a uniformly random permutation of [0, n) (Fisher-Yates with
 * unbiased bounded draws). */
void philox_permutation(PhiloxKey key, int64_t *perm, int64_t n);

#endif
