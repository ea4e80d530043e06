/* analyze_weights.h - layer-wise spectral metrics of trained weights.
 *
 * W is a weight matrix of rows x cols; a convolution kernel is flattened
 * to out_channels x (in_channels * kh * kw). The eigenvalues lambda_i of
 * the smaller Gram matrix, W W^T or W^T W, are the squared singular values
 * of W. They give two heavy-tailed self-regularisation metrics:
 *
 *   spectral entropy  H = -sum p_i ln p_i / ln k,  p_i = lambda_i / sum lambda,
 *                     k = min(rows, cols); 1 for a flat spectrum, near 0
 *                     when one direction dominates;
 *   power-law alpha   the maximum-likelihood exponent of the tail
 *                     lambda >= lambda_min, 1 + n / sum ln(lambda_i / lambda_min),
 *                     with lambda_min chosen to minimise the Kolmogorov-
 *                     Smirnov distance between the tail and the fitted law.
 *
 * The eigenvalues come from LAPACK's dsyevd in OpenBLAS.
 */
#ifndef BOCB_ANALYZE_WEIGHTS_H
#define BOCB_ANALYZE_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct SpectrumStats {
    int64_t rows, cols;
    double entropy;   /* normalised to [0, 1] */
    double alpha;     /* NAN when the tail has fewer than 5 eigenvalues */
    double lambda_min; /* start of the fitted tail */
    double ks;        /* Kolmogorov-Smirnov distance of the fit */
    int tail;         /* eigenvalues in the tail */
} SpectrumStats;

/* Computes the metrics of the row-major rows x cols matrix `w`. Returns
 * false when LAPACK fails or the matrix is zero. */
bool weights_spectrum(const float *w, int64_t rows, int64_t cols, SpectrumStats *out);

/* Runs `bocbc analyze weights [--out DIR] CHECKPOINT...`: prints one CSV
 * row per weight matrix of each checkpoint, and with --out writes
 * DIR/weights.csv and gnuplot plots of entropy and alpha by layer, one
 * line per optimizer. `argv` starts after "weights". Returns an exit
 * status. */
int analyze_weights_main(int argc, char **argv);

#endif
