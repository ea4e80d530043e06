/* Tests of the spectral metrics on matrices with known singular values:
 * the entropy against its closed form, and the power-law fit on
 * eigenvalues placed at the quantiles of a known power law. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "analyze_weights.h"

/* A rows x cols matrix with singular values s[0 .. min): entry i of the
 * diagonal moves to row (7 i) mod rows, and permuting rows keeps the
 * singular values. */
static float *diagonal(int rows, int cols, const double *s)
{
    float *w = calloc((size_t)rows * (size_t)cols, sizeof(float));
    int k = rows < cols ? rows : cols;
    for (int i = 0; i < k; i++)
        w[(size_t)((i * 7) % rows) * (size_t)cols + (size_t)i] = (float)s[i];
    return w;
}

Test(analyze_weights, flat_spectrum_has_entropy_one)
{
    double s[6] = {2, 2, 2, 2, 2, 2};
    float *w = diagonal(6, 10, s);
    SpectrumStats st;
    cr_assert(weights_spectrum(w, 6, 10, &st));
    cr_assert_float_eq(st.entropy, 1.0, 1e-9);
    cr_assert_eq(st.rows, 6);
    free(w);
}

Test(analyze_weights, entropy_matches_closed_form)
{
    /* Tall matrix, so the W^T W branch runs. lambda = s^2 = 1, 4, 9, 16. */
    double s[4] = {1, 2, 3, 4};
    float *w = diagonal(9, 4, s);
    SpectrumStats st;
    cr_assert(weights_spectrum(w, 9, 4, &st));
    double total = 1 + 4 + 9 + 16, h = 0;
    for (int i = 1; i <= 4; i++)
        h -= (i * i / total) * log(i * i / total);
    cr_assert_float_eq(st.entropy, h / log(4.0), 1e-9);
    cr_assert(isnan(st.alpha), "4 eigenvalues are too few for a tail fit");
    free(w);
}

Test(analyze_weights, rank_one_matrix_has_entropy_zero)
{
    double s[5] = {3, 0, 0, 0, 0};
    float *w = diagonal(5, 5, s);
    SpectrumStats st;
    cr_assert(weights_spectrum(w, 5, 5, &st));
    cr_assert_float_eq(st.entropy, 0.0, 1e-9);
    free(w);
}

Test(analyze_weights, zero_matrix_is_rejected)
{
    float w[12] = {0};
    SpectrumStats st;
    cr_assert_not(weights_spectrum(w, 3, 4, &st));
}

Test(analyze_weights, power_law_exponent_is_recovered)
{
    /* lambda_i at the quantiles of a Pareto law with alpha = 3 and
     * lambda_min = 1: P(lambda > x) = x^-(alpha - 1). */
    enum { N = 300 };
    double s[N];
    for (int i = 0; i < N; i++) {
        double u = (i + 0.5) / N;
        s[i] = sqrt(pow(1 - u, -1.0 / 2.0));
    }
    float *w = diagonal(N, N + 20, s);
    SpectrumStats st;
    cr_assert(weights_spectrum(w, N, N + 20, &st));
    cr_assert(fabs(st.alpha - 3.0) < 0.15, "alpha %g, expected about 3", st.alpha);
    cr_assert(st.tail >= 5);
    cr_assert(st.ks < 0.05, "KS distance %g", st.ks);
    free(w);
}
