/* quant.c - the bucketed min-max quantizer of quant.h.
 *
 * Encoding, decoding and the fused round trip are written once as macros
 * over the element type and expanded for float and double. All three go
 * through bucket_grid (the metadata) and code_of (one element), and the
 * decoded value is always base + scale * code in the element type, so
 * they cannot drift apart.
 */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "base.h"

/* Codes are at most 8 bits, so one byte holds any of them unpacked. */
typedef struct Packer {
    uint8_t *out;
    uint32_t acc;
    int nacc;
} Packer;

static void pack_one(Packer *p, int bits, uint32_t code)
{
    p->acc |= code << p->nacc;
    p->nacc += bits;
    while (p->nacc >= 8) {
        *p->out++ = (uint8_t)p->acc;
        p->acc >>= 8;
        p->nacc -= 8;
    }
}

static void pack_flush(Packer *p)
{
    if (p->nacc > 0)
        *p->out++ = (uint8_t)p->acc;
    p->acc = 0;
    p->nacc = 0;
}

/* A packer that continues at bit `bit` of `codes`, keeping the bits below
 * it in that byte, which an earlier bucket wrote and flushed. */
static Packer packer_at(uint8_t *codes, uint64_t bit)
{
    Packer p = {.out = codes + bit / 8, .nacc = (int)(bit % 8)};
    if (p.nacc > 0)
        p.acc = *p.out & ((1u << p.nacc) - 1);
    return p;
}

typedef struct Unpacker {
    const uint8_t *in;
    uint32_t acc;
    int nacc;
} Unpacker;

static uint32_t unpack_one(Unpacker *u, int bits)
{
    while (u->nacc < bits) {
        u->acc |= (uint32_t)*u->in++ << u->nacc;
        u->nacc += 8;
    }
    uint32_t code = u->acc & ((1u << bits) - 1);
    u->acc >>= bits;
    u->nacc -= bits;
    return code;
}

/* Returns code i of the packed codes. The second byte is read only when
 * the code reaches into it, which keeps every read inside the codes. */
static uint32_t code_at(int bits, const uint8_t *codes, int64_t i)
{
    uint64_t bit = (uint64_t)i * (uint64_t)bits;
    uint64_t byte = bit / 8;
    int shift = (int)(bit % 8);
    uint64_t next = byte + (shift + bits > 8 ? 1 : 0);
    uint32_t pair = codes[byte] | (uint32_t)codes[next] << 8;
    return (pair >> shift) & ((1u << bits) - 1);
}

void rt_pack_codes(int bits, int64_t n, const uint8_t *codes, uint8_t *out)
{
    BOCB_ASSERT(bits >= 1 && bits <= 8);
    Packer p = {.out = out};
    for (int64_t i = 0; i < n; i++) {
        BOCB_ASSERT(codes[i] >> bits == 0);
        pack_one(&p, bits, codes[i]);
    }
    pack_flush(&p);
}

void rt_unpack_codes(int bits, int64_t n, const uint8_t *in, uint8_t *codes)
{
    BOCB_ASSERT(bits >= 1 && bits <= 8);
    Unpacker u = {.in = in};
    for (int64_t i = 0; i < n; i++)
        codes[i] = (uint8_t)unpack_one(&u, bits);
}

PhiloxKey rt_quant_key(DType dt, const void *key, uint32_t tag)
{
    uint64_t bits = 0;
    if (dt == DT_F64) {
        memcpy(&bits, key, sizeof(double));
    } else {
        uint32_t bits32;
        memcpy(&bits32, key, sizeof bits32);
        bits = bits32;
    }
    return philox_key(bits, tag);
}

uint32_t rt_quant_step(DType dt, const void *step)
{
    double v = dt == DT_F64 ? *(const double *)step : *(const float *)step;
    if (v >= 4294967295.0)
        return UINT32_MAX;
    return v > 0 ? (uint32_t)v : 0;
}

const char *rt_rounding_name(RtRounding r)
{
    switch (r) {
    case RT_ROUND_NEAREST: return "nearest";
    case RT_ROUND_STOCHASTIC: return "stochastic";
    case RT_ROUND_SHIFT: return "shift";
    }
    BOCB_UNREACHABLE("rounding mode");
}

int64_t rt_quant_buckets(const RtQuantizer *q, int64_t n)
{
    return (n + q->bucket - 1) / q->bucket;
}

size_t rt_quant_encoded_size(const RtQuantizer *q, DType dt, int64_t n)
{
    size_t elem = dt == DT_F64 ? sizeof(double) : sizeof(float);
    size_t meta = size_mul(size_mul((size_t)rt_quant_buckets(q, n), 2), elem);
    return meta + (size_t)((n * q->bits + 7) / 8);
}

/* A uniform double in [0, 1) with 53 bits from the block at `index`. */
static double uniform_at(const RtQuantizer *q, uint64_t index, uint32_t tag)
{
    PhiloxCounter ctr = {{(uint32_t)index, (uint32_t)(index >> 32), q->step, tag}};
    PhiloxCounter r = philox4x32_10(ctr, q->key);
    uint64_t bits = ((uint64_t)r.c[0] << 32 | r.c[1]) >> 11;
    return (double)bits * 0x1p-53;
}

/* The largest code, and the number of grid steps between a bucket's
 * minimum and maximum. The shifted grid spans one step less, so that the
 * shift by up to one step keeps every code below 2^bits. */
static uint32_t max_code(const RtQuantizer *q)
{
    return (1u << q->bits) - 1;
}

static double grid_steps(const RtQuantizer *q)
{
    return q->rounding == RT_ROUND_SHIFT ? (double)max_code(q) - 1 : (double)max_code(q);
}

/* The code of one element: t is (x - base) / scale in double. */
static uint32_t code_of(const RtQuantizer *q, double t, uint64_t index)
{
    double c;
    if (q->rounding == RT_ROUND_STOCHASTIC) {
        double f = floor(t);
        c = f + (uniform_at(q, index, q->tag) < t - f ? 1.0 : 0.0);
    } else {
        c = floor(t + 0.5);
    }
    if (!(c > 0))
        return 0;
    return c > (double)max_code(q) ? max_code(q) : (uint32_t)c;
}

/* BUCKET_GRID(T) defines bucket_grid_T: the base and scale of the bucket
 * x[0..n), which starts at global element index `first`. A range too
 * small to divide into steps (scale underflows to 0) is sent as constant,
 * with an error of at most that range. */
#define BUCKET_GRID(T)                                                             \
    static void bucket_grid_##T(const RtQuantizer *q, int64_t first, const T *x,   \
                                int64_t n, T *base, T *scale)                      \
    {                                                                              \
        T lo = x[0], hi = x[0];                                                    \
        bool finite = true;                                                        \
        for (int64_t i = 0; i < n; i++) {                                          \
            finite &= isfinite(x[i]) != 0;                                         \
            lo = x[i] < lo ? x[i] : lo;                                            \
            hi = x[i] > hi ? x[i] : hi;                                            \
        }                                                                          \
        T range = hi - lo;                                                         \
        if (!finite || !isfinite(range)) {                                         \
            *base = *scale = (T)NAN;                                               \
            return;                                                                \
        }                                                                          \
        T s = range / (T)grid_steps(q);                                            \
        if (!(s > 0)) {                                                            \
            *base = lo;                                                            \
            *scale = 0;                                                            \
            return;                                                                \
        }                                                                          \
        *scale = s;                                                                \
        *base = lo;                                                                \
        if (q->rounding == RT_ROUND_SHIFT) {                                       \
            uint64_t k = (uint64_t)(first / q->bucket);                            \
            *base = lo - (T)(uniform_at(q, k, q->tag | 0x80000000u) * (double)s);  \
        }                                                                          \
    }

/* QUANT_KERNELS(T) defines encode_T, decode_T and roundtrip_T. */
#define QUANT_KERNELS(T)                                                           \
    static uint32_t element_code_##T(const RtQuantizer *q, T x, T base, T scale,   \
                                     uint64_t index)                               \
    {                                                                              \
        if (!(scale > 0))                                                          \
            return 0;                                                              \
        return code_of(q, ((double)x - (double)base) / (double)scale, index);      \
    }                                                                              \
                                                                                   \
    static T decoded_##T(T base, T scale, uint32_t code)                           \
    {                                                                              \
        return base + scale * (T)code;                                             \
    }                                                                              \
                                                                                   \
    static void encode_bucket_##T(const RtQuantizer *q, int64_t first, int64_t n,  \
                                  int64_t b, const T *x, uint8_t *out)             \
    {                                                                              \
        int64_t nb = rt_quant_buckets(q, n);                                       \
        int64_t start = b * q->bucket;                                             \
        int64_t len = n - start < q->bucket ? n - start : q->bucket;               \
        T meta[2];                                                                 \
        bucket_grid_##T(q, first + start, x + start, len, &meta[0], &meta[1]);     \
        memcpy(out + (size_t)b * sizeof meta, meta, sizeof meta);                  \
        Packer p = packer_at(out + (size_t)nb * sizeof meta,                       \
                             (uint64_t)start * (uint64_t)q->bits);                 \
        for (int64_t i = start; i < start + len; i++)                              \
            pack_one(&p, q->bits,                                                  \
                     element_code_##T(q, x[i], meta[0], meta[1],                   \
                                      (uint64_t)(first + i)));                     \
        pack_flush(&p);                                                            \
    }                                                                              \
                                                                                   \
    static void encode_##T(const RtQuantizer *q, int64_t first, int64_t n,         \
                           const T *x, uint8_t *out)                               \
    {                                                                              \
        for (int64_t b = 0; b < rt_quant_buckets(q, n); b++)                       \
            encode_bucket_##T(q, first, n, b, x, out);                             \
    }                                                                              \
                                                                                   \
    static void decode_##T(const RtQuantizer *q, int64_t n, const uint8_t *in,     \
                           T *y)                                                   \
    {                                                                              \
        int64_t nb = rt_quant_buckets(q, n);                                       \
        Unpacker u = {.in = in + (size_t)nb * 2 * sizeof(T)};                      \
        for (int64_t b = 0; b < nb; b++) {                                         \
            int64_t start = b * q->bucket;                                         \
            int64_t len = n - start < q->bucket ? n - start : q->bucket;           \
            T meta[2];                                                             \
            memcpy(meta, in + (size_t)b * sizeof meta, sizeof meta);               \
            for (int64_t i = start; i < start + len; i++)                          \
                y[i] = decoded_##T(meta[0], meta[1], unpack_one(&u, q->bits));     \
        }                                                                          \
    }                                                                              \
                                                                                   \
    static T decode_at_##T(const RtQuantizer *q, int64_t n, const uint8_t *in,      \
                           int64_t i)                                              \
    {                                                                              \
        T meta[2];                                                                 \
        memcpy(meta, in + (size_t)(i / q->bucket) * sizeof meta, sizeof meta);     \
        const uint8_t *codes = in + (size_t)rt_quant_buckets(q, n) * sizeof meta;  \
        return decoded_##T(meta[0], meta[1], code_at(q->bits, codes, i));          \
    }                                                                              \
                                                                                   \
    static void roundtrip_##T(const RtQuantizer *q, int64_t first, int64_t n,      \
                              const T *x, T *y)                                    \
    {                                                                              \
        for (int64_t start = 0; start < n; start += q->bucket) {                   \
            int64_t len = n - start < q->bucket ? n - start : q->bucket;           \
            T base, scale;                                                         \
            bucket_grid_##T(q, first + start, x + start, len, &base, &scale);      \
            for (int64_t i = start; i < start + len; i++) {                        \
                uint32_t c = element_code_##T(q, x[i], base, scale,                \
                                              (uint64_t)(first + i));              \
                y[i] = decoded_##T(base, scale, c);                                \
            }                                                                      \
        }                                                                          \
    }

BUCKET_GRID(float)
BUCKET_GRID(double)
QUANT_KERNELS(float)
QUANT_KERNELS(double)

static void check_quantizer(const RtQuantizer *q, int64_t first)
{
    BOCB_ASSERT(q->bits >= RT_QUANT_MIN_BITS && q->bits <= RT_QUANT_MAX_BITS);
    BOCB_ASSERT(q->bucket >= 1 && first >= 0 && first % q->bucket == 0);
    BOCB_ASSERT(q->tag < 0x80000000u);
}

void rt_quant_encode(const RtQuantizer *q, DType dt, int64_t first, int64_t n, const void *x,
                     uint8_t *out)
{
    check_quantizer(q, first);
    if (dt == DT_F64)
        encode_double(q, first, n, x, out);
    else
        encode_float(q, first, n, x, out);
}

void rt_quant_encode_bucket(const RtQuantizer *q, DType dt, int64_t n, int64_t b,
                            const void *x, uint8_t *out)
{
    check_quantizer(q, 0);
    BOCB_ASSERT(b >= 0 && b < rt_quant_buckets(q, n));
    if (dt == DT_F64)
        encode_bucket_double(q, 0, n, b, x, out);
    else
        encode_bucket_float(q, 0, n, b, x, out);
}

void rt_quant_decode_at(const RtQuantizer *q, DType dt, int64_t n, const uint8_t *in,
                        int64_t i, void *y)
{
    check_quantizer(q, 0);
    BOCB_ASSERT(i >= 0 && i < n);
    if (dt == DT_F64)
        *(double *)y = decode_at_double(q, n, in, i);
    else
        *(float *)y = decode_at_float(q, n, in, i);
}

void rt_quant_decode(const RtQuantizer *q, DType dt, int64_t n, const uint8_t *in, void *y)
{
    check_quantizer(q, 0);
    if (dt == DT_F64)
        decode_double(q, n, in, y);
    else
        decode_float(q, n, in, y);
}

void rt_quant_roundtrip(const RtQuantizer *q, DType dt, int64_t first, int64_t n,
                        const void *x, void *y)
{
    check_quantizer(q, first);
    if (dt == DT_F64)
        roundtrip_double(q, first, n, x, y);
    else
        roundtrip_float(q, first, n, x, y);
}
