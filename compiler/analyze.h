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

#include "../runtime/data.h"
#include "../runtime/philox.h"
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

/* Draws batch `draw` of `batch` indices of 0 .. n-1 without replacement
 * into order[0 .. batch-1], by a partial Fisher-Yates shuffle of `order`
 * (a permutation of 0 .. n-1, kept between draws) with Philox numbers of
 * `key` at counters draw * n + j. */
void analyze_draw_batch(PhiloxKey key, uint64_t draw, int64_t *order, int64_t n, int64_t batch);

/* Copies the samples order[0 .. batch-1] of (x, labels), each of `sample`
 * floats, into (bx, by). */
void analyze_gather_batch(const float *x, const int32_t *labels, int64_t sample,
                          const int64_t *order, int64_t batch, float *bx, int32_t *by);

/* The batch sharpness: the mean over `draws` batches of `batch` of the n
 * samples, each drawn without replacement (Philox key `seed`), of the top
 * eigenvalue of the Hessian of the batch's mean loss. */
double analyze_batch_sharpness(HessianOp *h, const float *x, const int32_t *labels, int64_t n,
                               int64_t batch, int draws, int iters, uint64_t seed);

/* The sharpness of a compiled cell at the current values of `store`: the
 * top Hessian eigenvalue of its evaluation loss over the n samples
 * (x, labels), with at most `iters` power iterations. Runs through the JIT
 * when `jit` is not NULL, else through the interpreter. Returns false and
 * sets *error (malloc'd) when the Hessian program cannot be built. */
bool analyze_sharpness(const CompiledCell *cell, RtVarStore *store, Jit *jit, const void *x,
                       const int32_t *labels, int64_t n, int iters, double *sharpness,
                       char **error);

/* The coherence of the per-sample Hessians in Gauss-Newton form,
 * H_i = J_i' L_i J_i, with J_i the Jacobian of sample i's logits and L_i
 * the Hessian of its loss in the logits: S_ij = sqrt(tr(H_i H_j)) and
 * sigma = lambda_1(S) / max_i lambda_1(H_i). */
typedef struct Coherence {
    double sigma;
    double lambda_s;     /* lambda_1(S) */
    double max_lambda_i; /* max_i lambda_1(H_i) */
} Coherence;

/* Computes the coherence of the n samples (x, labels) for the evaluation
 * graph of `cell` at the values of `store`. Only the n * C Jacobian rows
 * J_i' e_c (C classes) are stored, never a parameter-by-parameter matrix:
 * tr(H_i H_j) = tr(L_i K_ij L_j K_ji) with the C x C blocks K_ij = J_i J_j'.
 * Returns false and sets *error (malloc'd) when the rows would need more
 * than 2 GiB or the graph cannot be built. */
bool analyze_coherence(const CompiledCell *cell, RtVarStore *store, Backend backend, Jit *jit,
                       const void *x, const int32_t *labels, int64_t n, Coherence *out,
                       char **error);

/* What an `analyze` statement runs on: a trained cell. */
typedef struct AnalyzeContext {
    const CompiledCell *cell;
    RtVarStore *store;
    Backend backend;
    Jit *jit;
    const DataSplits *data; /* samples come from the start of the training split */
    const char *label;      /* "model / optimizer" for the printed lines */
    FILE *out;
    const char *report_dir; /* NULL: no files */
} AnalyzeContext;

/* Runs every `analyze` statement of the experiment on the cell in c.
 * Returns false after an error it printed to stderr. */
bool analyze_run_all(const ExperimentSpec *spec, AnalyzeContext *c);

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

/* One (lr, B) cell of `analyze stability`. */
typedef struct StabilityCell {
    double lr;
    int64_t batch;
    double rho;      /* the exact criterion along the top eigenvector */
    bool predicted;  /* rho > 1 */
    bool coherence;  /* the coherence threshold's prediction */
    double loss_end; /* after the SGD run */
    bool observed;   /* the run diverged */
} StabilityCell;

typedef struct StabilityReport {
    double lambda1, q, loss_start;
    Coherence coherence;
    StabilityCell *cells; /* lr-major */
    int ncells;
} StabilityReport;

/* Predicts and observes the stability of SGD at the current parameters
 * for every pair of lrs x batches on the n samples (x, labels), running
 * `steps` SGD steps from the current point per pair and restoring it
 * afterwards. A run diverged when its final loss on the n samples is not
 * finite or exceeds the starting loss by more than 1. Returns false and
 * sets *error (malloc'd) when a batch size exceeds n or a graph cannot be
 * built. */
bool analyze_stability(AnalyzeContext *c, const float *x, const int32_t *labels, int64_t n,
                       const double *lrs, int nlrs, const double *batches, int nbatches,
                       int64_t steps, StabilityReport *out, char **error);
/* Prints the table, and writes DIR/stability.csv, DIR/stability.dat and
 * DIR/stability.gp (a gnuplot heatmap script) when c->report_dir is set. */
void stability_report_print(AnalyzeContext *c, const StabilityReport *r, int64_t n,
                            int64_t steps);
void stability_report_free(StabilityReport *r);

#endif
