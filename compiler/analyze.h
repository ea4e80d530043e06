/* analyze.h - loss-surface analysis: sharpness and the stability of SGD.
 *
 * Sharpness is the top eigenvalue of the Hessian of the mean training loss,
 * found by power iteration on Hessian-vector products (hessian.h), with
 * deflation for the following eigenvalues. The stability criteria predict
 * whether SGD with learning rate lr and batch size B stays at a minimum;
 * docs/analysis.md states them with their assumptions.
 */
#ifndef BOCB_ANALYZE_H
#define BOCB_ANALYZE_H

#include <stdbool.h>
#include <stdint.h>

#include "hessian.h"

/* Finds the k eigenvalues of largest magnitude of the Hessian of the mean
 * loss over the n samples (x, labels), largest first, by power iteration
 * from a Philox-random start (key `seed`): at most `iters` products each,
 * stopping when the Rayleigh quotient changes by less than 1e-10 relative.
 * Each vector is kept orthogonal to the ones found before it (deflation).
 * eigenvectors, when not NULL, receives k vectors of h->size elements.
 * At a minimum the Hessian is positive semidefinite, so these are the top
 * eigenvalues; elsewhere a large negative one may come first. */
void analyze_top_eigenvalues(HessianOp *h, const void *x, const int32_t *labels, int64_t n,
                             int k, int iters, uint64_t seed, double *eigenvalues,
                             double *eigenvectors);

/* The sharpness of a compiled cell at the current values of `store`: the
 * top Hessian eigenvalue of its evaluation loss over the n samples
 * (x, labels), with at most `iters` power iterations. Runs through the JIT
 * when `jit` is not NULL, else through the interpreter. Returns false and
 * sets *error (malloc'd) when the Hessian program cannot be built. */
bool analyze_sharpness(const CompiledCell *cell, RtVarStore *store, Jit *jit, const void *x,
                       const int32_t *labels, int64_t n, int iters, double *sharpness,
                       char **error);

/* ---- the stability of linearised SGD at a minimum ------------------------ */

/* The variance factor of a batch mean of B of n samples: 1 / B with
 * replacement, (n - B) / (B (n - 1)) without. */
double stability_batch_factor(int64_t n, int64_t batch, bool replacement);

/* The exact mean-square criterion along a unit vector u: u' T(u u') u for
 * T(M) = (I - lr H) M (I - lr H) + lr^2 f ((1/n) sum_i H_i M H_i - H M H),
 * where lambda = u' H u, q = (1/n) sum_i (u' H_i u)^2 and f is
 * stability_batch_factor. Above 1, E[(u' theta)^2] grows along u. */
double stability_rho_along(double lr, double factor, double lambda, double q);

/* The coherence threshold: true (unstable) when
 * lambda_1(H) >= (2 / lr) / (1 + n / (B sigma)). */
bool stability_coherence_unstable(double lr, int64_t n, int64_t batch, double sigma,
                                  double lambda1);

/* The synthetic experiment with n rank-one per-sample Hessians
 * H_i = c a_i a_i': the first `sigma` samples share the axis a = e_0, and
 * each other sample has an axis of its own, with c = 2 n / sigma so that
 * lambda_1(H) = 2 and the coherence is sigma. */
typedef struct SyntheticCell {
    double rho;        /* the exact criterion, the largest over all axes */
    bool predicted;    /* rho > 1 */
    bool coherence;    /* the coherence threshold's prediction */
    int diverged;      /* repetitions whose |theta| grew */
    bool observed;     /* diverged in more than half of the repetitions */
} SyntheticCell;

/* Runs linearised SGD theta <- theta - lr (1/B) sum_{i in batch} H_i theta
 * from theta_0 = (1, ..., 1), batches drawn without replacement, for
 * `steps` steps and `reps` repetitions (Philox key `seed`), and fills *out.
 * A repetition diverged when |theta| ends above |theta_0|. */
void stability_synthetic_cell(int64_t n, int64_t sigma, double lr, int64_t batch,
                              int64_t steps, int reps, uint64_t seed, SyntheticCell *out);

#endif
