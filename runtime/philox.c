/* philox.c - Philox4x32-10, stream keys, uniform floats and permutations. */
#include "philox.h"

#include <math.h>
#include <string.h>

#include "base.h"

enum {
    PHILOX_ROUNDS = 10,
};

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
/* Weyl sequence increments of the key: the fractional parts of the golden
 * ratio and of sqrt(3), as 32-bit fixed-point numbers. */
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)

static inline uint32_t mul_hi_lo(uint32_t a, uint32_t b, uint32_t *lo)
{
    uint64_t product = (uint64_t)a * b;
    *lo = (uint32_t)product;
    return (uint32_t)(product >> 32);
}

PhiloxCounter philox4x32_10(PhiloxCounter ctr, PhiloxKey key)
{
    uint32_t c0 = ctr.c[0], c1 = ctr.c[1], c2 = ctr.c[2], c3 = ctr.c[3];
    uint32_t k0 = key.k[0], k1 = key.k[1];

    for (int round = 0; round < PHILOX_ROUNDS; round++) {
        if (round > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint32_t lo0, lo1;
        uint32_t hi0 = mul_hi_lo(PHILOX_M0, c0, &lo0);
        uint32_t hi1 = mul_hi_lo(PHILOX_M1, c2, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }

    PhiloxCounter out = {{c0, c1, c2, c3}};
    return out;
}

/* The splitmix64 output function: a bijection of 64-bit words in which
 * every input bit affects every output bit. */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

PhiloxKey philox_key(uint64_t seed, uint32_t stream)
{
    /* The seed and the stream pass through separate mixers before they
     * are combined, so neither (seed + 1, stream) nor (seed, stream + 1)
     * nor swapping the two values lands on a related key. The odd
     * constant keeps stream 0 from contributing zero. */
    uint64_t seed_bits = mix64(seed);
    uint64_t stream_bits = mix64((uint64_t)stream * UINT64_C(0x9E3779B97F4A7C15) +
                                 UINT64_C(0x632BE59BD9B4E019));
    uint64_t mixed = mix64(seed_bits ^ stream_bits);
    PhiloxKey key = {{(uint32_t)mixed, (uint32_t)(mixed >> 32)}};
    return key;
}

static PhiloxCounter philox_block(PhiloxKey key, uint64_t block)
{
    PhiloxCounter ctr = {{(uint32_t)block, (uint32_t)(block >> 32), 0, 0}};
    return philox4x32_10(ctr, key);
}

uint32_t philox_u32(PhiloxKey key, uint64_t index)
{
    return philox_block(key, index / 4).c[index % 4];
}

/* The top 24 bits scaled by 2^-24: the largest result is 1 - 2^-24, which
 * a float represents exactly, so the result stays below 1. */
static inline float bits_to_unit_f32(uint32_t bits)
{
    return (float)(bits >> 8) * 0x1p-24f;
}

/* The top 53 bits of (hi, lo) scaled by 2^-53, at most 1 - 2^-53. */
static inline double bits_to_unit_f64(uint32_t hi, uint32_t lo)
{
    uint64_t bits = ((uint64_t)hi << 32) | lo;
    return (double)(bits >> 11) * 0x1p-53;
}

float philox_uniform_f32(PhiloxKey key, uint64_t index)
{
    return bits_to_unit_f32(philox_u32(key, index));
}

double philox_uniform_f64(PhiloxKey key, uint64_t index)
{
    /* Words 2i and 2i+1 are words (0, 1) or (2, 3) of block i/2. */
    PhiloxCounter block = philox_block(key, index / 2);
    int word = (int)(index % 2) * 2;
    return bits_to_unit_f64(block.c[word], block.c[word + 1]);
}

static uint32_t saturate_step(double step)
{
    if (!(step > 0))
        return 0;
    if (step >= 4294967295.0)
        return UINT32_MAX;
    return (uint32_t)step;
}

static PhiloxCounter random_block(uint64_t key_bits, double step, uint64_t index)
{
    PhiloxKey key = {{(uint32_t)key_bits, (uint32_t)(key_bits >> 32)}};
    PhiloxCounter ctr = {{(uint32_t)index, (uint32_t)(index >> 32), saturate_step(step), 0}};
    return philox4x32_10(ctr, key);
}

float philox_random_f32(float key, float step, uint64_t index)
{
    uint32_t bits;
    memcpy(&bits, &key, sizeof bits);
    return bits_to_unit_f32(random_block(bits, step, index).c[0]);
}

double philox_random_f64(double key, double step, uint64_t index)
{
    uint64_t bits;
    memcpy(&bits, &key, sizeof bits);
    PhiloxCounter block = random_block(bits, step, index);
    return bits_to_unit_f64(block.c[0], block.c[1]);
}

/* One N(0, 1) draw per call, from the Box-Muller pair of uniform draws
 * 2j and 2j+1 of stream `key`, starting at *draw and advancing it. */
static double normal_draw(PhiloxKey key, uint64_t *draw)
{
    double u1 = philox_uniform_f64(key, 2 * *draw), u2 = philox_uniform_f64(key, 2 * *draw + 1);
    (*draw)++;
    /* 1 - u1 lies in (0, 1], so the logarithm is finite. */
    return sqrt(-2.0 * log(1.0 - u1)) * cos(6.283185307179586 * u2);
}

static double trunc_normal(PhiloxKey key, uint64_t *draw, double std)
{
    for (;;) {
        double v = std * normal_draw(key, draw);
        if (v >= -2.0 && v <= 2.0)
            return v;
    }
}

void philox_fill_trunc_normal_f32(PhiloxKey key, float *out, int64_t n, double std)
{
    uint64_t draw = 0;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)trunc_normal(key, &draw, std);
}

void philox_fill_trunc_normal_f64(PhiloxKey key, double *out, int64_t n, double std)
{
    uint64_t draw = 0;
    for (int64_t i = 0; i < n; i++)
        out[i] = trunc_normal(key, &draw, std);
}

/* Maps u in [0, 1) to [low, high). Rounding of low + (high - low) * u can
 * reach high when u is close to 1, so such a value is replaced by the
 * largest value below high. */
static inline float scale_f32(float u, float low, float high)
{
    float v = low + (high - low) * u;
    return v < high ? v : nextafterf(high, low);
}

static inline double scale_f64(double u, double low, double high)
{
    double v = low + (high - low) * u;
    return v < high ? v : nextafter(high, low);
}

void philox_fill_uniform_f32(PhiloxKey key, float *out, int64_t n, float low,
                             float high)
{
    BOCB_ASSERT(n >= 0);
    BOCB_ASSERT(low < high);
    /* out[i] equals scale_f32(philox_uniform_f32(key, i)), computed one
     * block of four values at a time. */
    for (int64_t i = 0; i < n; i += 4) {
        PhiloxCounter block = philox_block(key, (uint64_t)i / 4);
        int64_t count = n - i < 4 ? n - i : 4;
        for (int64_t j = 0; j < count; j++)
            out[i + j] = scale_f32(bits_to_unit_f32(block.c[j]), low, high);
    }
}

void philox_fill_uniform_f64(PhiloxKey key, double *out, int64_t n,
                             double low, double high)
{
    BOCB_ASSERT(n >= 0);
    BOCB_ASSERT(low < high);
    for (int64_t i = 0; i < n; i += 2) {
        PhiloxCounter block = philox_block(key, (uint64_t)i / 2);
        out[i] = scale_f64(bits_to_unit_f64(block.c[0], block.c[1]), low, high);
        if (i + 1 < n)
            out[i + 1] = scale_f64(bits_to_unit_f64(block.c[2], block.c[3]), low, high);
    }
}

/* Consecutive 32-bit words of one key's stream, starting at index 0. */
typedef struct WordStream {
    PhiloxKey key;
    uint64_t next_block;
    PhiloxCounter block;
    int used; /* words of `block` already returned (4 when it is spent) */
} WordStream;

static uint32_t next_word(WordStream *ws)
{
    if (ws->used == 4) {
        ws->block = philox_block(ws->key, ws->next_block++);
        ws->used = 0;
    }
    return ws->block.c[ws->used++];
}

static uint64_t next_u64(WordStream *ws)
{
    uint64_t hi = next_word(ws);
    return (hi << 32) | next_word(ws);
}

/* Returns a uniform integer in [0, bound), without bias.
 *
 * For bounds up to 2^32 this is Lemire's multiply-and-reject method. The
 * result is the high word of word * bound. A draw is rejected when the low
 * word falls below 2^32 mod bound, because those low words are the excess
 * that would favour some results. The remainder costs a division, so it is
 * computed only in the rare case that the low word is below bound. Larger
 * bounds draw 64 bits, mask them to the next power of two and reject
 * values >= bound. */
static uint64_t bounded(WordStream *ws, uint64_t bound)
{
    BOCB_ASSERT(bound > 0);
    if (bound <= UINT64_C(1) << 32) {
        uint64_t product = (uint64_t)next_word(ws) * bound;
        uint32_t low = (uint32_t)product;
        if (low < bound) {
            uint32_t threshold = (uint32_t)((UINT64_C(1) << 32) % bound);
            while (low < threshold) {
                product = (uint64_t)next_word(ws) * bound;
                low = (uint32_t)product;
            }
        }
        return product >> 32;
    }

    uint64_t mask = bound - 1;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    mask |= mask >> 32;
    uint64_t value;
    do {
        value = next_u64(ws) & mask;
    } while (value >= bound);
    return value;
}

void philox_permutation(PhiloxKey key, int64_t *perm, int64_t n)
{
    BOCB_ASSERT(n >= 0);
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;

    /* Fisher-Yates from the back: position i swaps with a uniform
     * position in [0, i]. The draws consume the key's words in order. */
    WordStream ws = {.key = key, .next_block = 0, .used = 4};
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)bounded(&ws, (uint64_t)i + 1);
        int64_t tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
    }
}
