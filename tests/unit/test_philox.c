/* Tests of the Philox4x32-10 generator, stream keys, uniform floats and
 * permutations. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "philox.h"

static void check_block(PhiloxCounter ctr, PhiloxKey key, const uint32_t expected[4])
{
    PhiloxCounter out = philox4x32_10(ctr, key);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(out.c[i], expected[i], "word %d: got 0x%08x, expected 0x%08x",
                     i, out.c[i], expected[i]);
}

/* The known-answer vectors for philox4x32 with 10 rounds from Random123's
 * kat_vectors file. */
Test(philox, known_answer_zero)
{
    PhiloxCounter ctr = {{0, 0, 0, 0}};
    PhiloxKey key = {{0, 0}};
    const uint32_t expected[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    check_block(ctr, key, expected);
}

Test(philox, known_answer_all_ones)
{
    PhiloxCounter ctr = {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}};
    PhiloxKey key = {{0xffffffff, 0xffffffff}};
    const uint32_t expected[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    check_block(ctr, key, expected);
}

Test(philox, known_answer_pi_digits)
{
    PhiloxCounter ctr = {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}};
    PhiloxKey key = {{0xa4093822, 0x299f31d0}};
    const uint32_t expected[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    check_block(ctr, key, expected);
}

Test(philox, u32_reads_block_words)
{
    PhiloxKey key = philox_key(7, 3);
    for (uint64_t block = 0; block < 3; block++) {
        PhiloxCounter ctr = {{(uint32_t)block, 0, 0, 0}};
        PhiloxCounter out = philox4x32_10(ctr, key);
        for (int word = 0; word < 4; word++)
            cr_expect_eq(philox_u32(key, block * 4 + (uint64_t)word), out.c[word]);
    }
    /* The high half of the block number goes to counter word 1. */
    uint64_t far_block = (UINT64_C(5) << 32) | 9;
    PhiloxCounter ctr = {{9, 5, 0, 0}};
    cr_expect_eq(philox_u32(key, far_block * 4 + 2), philox4x32_10(ctr, key).c[2]);
}

Test(philox, key_differs_by_seed_and_stream)
{
    /* Neighbouring seeds and streams, and swapped values, give distinct
     * keys. */
    enum { N = 16 };
    PhiloxKey keys[N * N];
    for (int seed = 0; seed < N; seed++)
        for (int stream = 0; stream < N; stream++)
            keys[seed * N + stream] = philox_key((uint64_t)seed, (uint32_t)stream);
    for (int i = 0; i < N * N; i++)
        for (int j = i + 1; j < N * N; j++)
            cr_expect(keys[i].k[0] != keys[j].k[0] || keys[i].k[1] != keys[j].k[1],
                      "keys %d and %d collide", i, j);
}

Test(philox, streams_differ)
{
    PhiloxKey a = philox_key(42, 0), b = philox_key(42, 1);
    int equal = 0;
    for (uint64_t i = 0; i < 1000; i++)
        equal += philox_u32(a, i) == philox_u32(b, i);
    cr_expect_lt(equal, 3, "%d of 1000 words agree between streams 0 and 1", equal);
}

Test(philox, uniform_f32_range_and_mean)
{
    PhiloxKey key = philox_key(1, 2);
    enum { N = 1000000 };
    double sum = 0;
    float lo = 1, hi = 0;
    for (uint64_t i = 0; i < N; i++) {
        float u = philox_uniform_f32(key, i);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    cr_expect_geq(lo, 0.0f);
    cr_expect_lt(hi, 1.0f);
    /* The mean of N uniforms has standard deviation 1/sqrt(12 N) = 2.9e-4. */
    cr_expect_lt(fabs(sum / N - 0.5), 2e-3, "mean %g", sum / N);
}

Test(philox, uniform_f64_range_and_mean)
{
    PhiloxKey key = philox_key(1, 3);
    enum { N = 1000000 };
    double sum = 0, lo = 1, hi = 0;
    for (uint64_t i = 0; i < N; i++) {
        double u = philox_uniform_f64(key, i);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    cr_expect_geq(lo, 0.0);
    cr_expect_lt(hi, 1.0);
    cr_expect_lt(fabs(sum / N - 0.5), 2e-3, "mean %g", sum / N);
}

Test(philox, uniform_f64_uses_word_pairs)
{
    PhiloxKey key = philox_key(5, 5);
    for (uint64_t i = 0; i < 8; i++) {
        uint64_t bits = ((uint64_t)philox_u32(key, 2 * i) << 32) | philox_u32(key, 2 * i + 1);
        double expected = (double)(bits >> 11) * 0x1p-53;
        cr_expect_eq(philox_uniform_f64(key, i), expected, "index %llu",
                     (unsigned long long)i);
    }
}

Test(philox, fill_matches_single_draws)
{
    PhiloxKey key = philox_key(11, 4);
    enum { N = 23 };
    float f[N];
    double d[N];
    philox_fill_uniform_f32(key, f, N, -2.0f, 3.0f);
    philox_fill_uniform_f64(key, d, N, -2.0, 3.0);
    for (int i = 0; i < N; i++) {
        float fe = -2.0f + 5.0f * philox_uniform_f32(key, (uint64_t)i);
        double de = -2.0 + 5.0 * philox_uniform_f64(key, (uint64_t)i);
        cr_expect_eq(f[i], fe, "f32 element %d", i);
        cr_expect_eq(d[i], de, "f64 element %d", i);
        cr_expect(f[i] >= -2.0f && f[i] < 3.0f);
        cr_expect(d[i] >= -2.0 && d[i] < 3.0);
    }
}

Test(philox, fill_stays_below_high)
{
    /* With low = 1 and high = 1 + 2^-23 every draw rounds to one of the two
     * floats, and a draw that rounds to high must be moved below it. */
    PhiloxKey key = philox_key(3, 9);
    enum { N = 4096 };
    float *out = malloc(N * sizeof *out);
    float high = 1.0f + 0x1p-23f;
    philox_fill_uniform_f32(key, out, N, 1.0f, high);
    for (int i = 0; i < N; i++)
        cr_expect(out[i] == 1.0f, "element %d is %a", i, (double)out[i]);
    free(out);
}

static bool is_permutation(const int64_t *perm, int64_t n)
{
    bool *seen = calloc((size_t)n + 1, 1);
    bool ok = true;
    for (int64_t i = 0; i < n && ok; i++) {
        if (perm[i] < 0 || perm[i] >= n || seen[perm[i]])
            ok = false;
        else
            seen[perm[i]] = true;
    }
    free(seen);
    return ok;
}

Test(philox, permutation_is_permutation)
{
    const int64_t sizes[] = {0, 1, 2, 3, 10, 1000, 60000};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int64_t n = sizes[t];
        int64_t *perm = malloc((size_t)(n + 1) * sizeof *perm);
        philox_permutation(philox_key(1, 0), perm, n);
        cr_expect(is_permutation(perm, n), "size %lld", (long long)n);
        free(perm);
    }
}

Test(philox, permutation_differs_by_key)
{
    enum { N = 1000 };
    int64_t a[N], b[N], c[N];
    philox_permutation(philox_key(1, 0), a, N);
    philox_permutation(philox_key(1, 1), b, N);
    philox_permutation(philox_key(1, 0), c, N);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < N; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    /* Two random permutations share about one fixed point on average. */
    cr_expect_lt(same_ab, 10, "%d positions agree", same_ab);
    cr_expect_eq(same_ac, N, "the same key gave a different permutation");
}

Test(philox, permutation_is_uniform)
{
    /* Over many keys, each value lands at each position of a 3-element
     * permutation in about a third of the trials. */
    enum { TRIALS = 60000 };
    int counts[3][3] = {{0}};
    for (uint32_t t = 0; t < TRIALS; t++) {
        int64_t perm[3];
        philox_permutation(philox_key(99, t), perm, 3);
        for (int i = 0; i < 3; i++)
            counts[i][perm[i]]++;
    }
    /* Each count is binomial(60000, 1/3): mean 20000, sd 115. */
    for (int i = 0; i < 3; i++)
        for (int v = 0; v < 3; v++)
            cr_expect_lt(abs(counts[i][v] - TRIALS / 3), 700,
                         "position %d holds %d in %d of %d trials", i, v,
                         counts[i][v], TRIALS);
}

Test(philox, trunc_normal_moments)
{
    /* N(0, 1) cut at [-2, 2] has variance 1 - 4 phi(2) / (2 Phi(2) - 1)
     * = 0.77374; with std 0.5 the cut is at 4 standard deviations, which
     * leaves the variance at 0.25 (0.99893 of it). */
    enum { N = 40000 };
    static double v[N];
    const double stds[2] = {1.0, 0.5}, want_var[2] = {0.77374, 0.25 * 0.99893};
    for (int k = 0; k < 2; k++) {
        philox_fill_trunc_normal_f64(philox_key(5, (uint32_t)k), v, N, stds[k]);
        double sum = 0, squares = 0;
        for (int i = 0; i < N; i++) {
            cr_assert(v[i] >= -2 && v[i] <= 2, "value %d is %g", i, v[i]);
            sum += v[i];
            squares += v[i] * v[i];
        }
        double mean = sum / N, var = squares / N - mean * mean;
        /* Standard errors: about 0.0044 for the mean, 0.004 for the variance. */
        cr_expect(fabs(mean) < 0.025, "std %g: mean %g", stds[k], mean);
        cr_expect(fabs(var - want_var[k]) < 0.02, "std %g: variance %g, want %g", stds[k], var,
                  want_var[k]);
    }
    float f[8];
    double d[8];
    philox_fill_trunc_normal_f32(philox_key(6, 0), f, 8, 0.02);
    philox_fill_trunc_normal_f64(philox_key(6, 0), d, 8, 0.02);
    for (int i = 0; i < 8; i++)
        cr_expect(f[i] == (float)d[i], "f32 element %d is the rounded f64 value", i);
}
