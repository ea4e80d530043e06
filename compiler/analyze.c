/* analyze.c - sharpness by power iteration, and the stability criteria of
 * SGD with the synthetic experiment that tests them. */
#include "analyze.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/philox.h"

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Removes from v its components along the first k rows of basis. */
static void orthogonalize(double *v, const double *basis, int k, int64_t n)
{
    for (int j = 0; j < k; j++) {
        const double *b = basis + (size_t)j * (size_t)n;
        double c = dot(v, b, n);
        for (int64_t i = 0; i < n; i++)
            v[i] -= c * b[i];
    }
}

/* Scales v to unit length; returns false when it is zero. */
static bool normalize(double *v, int64_t n)
{
    double norm = sqrt(dot(v, v, n));
    if (!(norm > 0))
        return false;
    for (int64_t i = 0; i < n; i++)
        v[i] /= norm;
    return true;
}

void analyze_top_eigenvalues(HessianOp *h, const void *x, const int32_t *labels, int64_t n,
                             int k, int iters, uint64_t seed, double *eigenvalues,
                             double *eigenvectors)
{
    int64_t size = h->size;
    double *basis = xcalloc((size_t)k * (size_t)size + 1, sizeof *basis);
    double *hv = xcalloc((size_t)size + 1, sizeof *hv);
    for (int j = 0; j < k; j++) {
        double *v = basis + (size_t)j * (size_t)size;
        philox_fill_uniform_f64(philox_key(seed, (uint32_t)j), v, size, -1.0, 1.0);
        orthogonalize(v, basis, j, size);
        double lambda = 0;
        if (!normalize(v, size)) {
            eigenvalues[j] = 0;
            continue;
        }
        for (int it = 0; it < iters; it++) {
            hessian_op_apply(h, x, labels, n, v, hv, NULL, NULL);
            double previous = lambda;
            lambda = dot(v, hv, size);
            /* Deflation: the products stay in the complement of the
             * eigenvectors found so far. */
            orthogonalize(hv, basis, j, size);
            if (it > 0 && fabs(lambda - previous) <= 1e-10 * fabs(lambda))
                break;
            if (!normalize(hv, size))
                break; /* v is in the null space: lambda = 0 */
            memcpy(v, hv, (size_t)size * sizeof *v);
        }
        eigenvalues[j] = lambda;
    }
    if (eigenvectors)
        memcpy(eigenvectors, basis, (size_t)k * (size_t)size * sizeof *basis);
    free(basis);
    free(hv);
}

void analyze_draw_batch(PhiloxKey key, uint64_t draw, int64_t *order, int64_t n, int64_t batch)
{
    for (int64_t j = 0; j < batch; j++) {
        uint64_t counter = draw * (uint64_t)n + (uint64_t)j;
        int64_t pick = j + (int64_t)(philox_uniform_f64(key, counter) * (double)(n - j));
        pick = pick < n ? pick : n - 1;
        int64_t tmp = order[j];
        order[j] = order[pick];
        order[pick] = tmp;
    }
}

void analyze_gather_batch(const float *x, const int32_t *labels, int64_t sample,
                         const int64_t *order, int64_t batch, float *bx, int32_t *by)
{
    for (int64_t j = 0; j < batch; j++) {
        memcpy(bx + j * sample, x + order[j] * sample, (size_t)sample * sizeof *bx);
        by[j] = labels[order[j]];
    }
}

double analyze_batch_sharpness(HessianOp *h, const float *x, const int32_t *labels, int64_t n,
                               int64_t batch, int draws, int iters, uint64_t seed)
{
    int64_t sample = h->sample_bytes / (int64_t)sizeof(float);
    float *bx = xcalloc((size_t)(batch * sample), sizeof *bx);
    int32_t *by = xcalloc((size_t)batch, sizeof *by);
    int64_t *order = xcalloc((size_t)n, sizeof *order);
    for (int64_t i = 0; i < n; i++)
        order[i] = i;
    PhiloxKey key = philox_key(seed, 1);
    double total = 0;
    for (int d = 0; d < draws; d++) {
        analyze_draw_batch(key, (uint64_t)d, order, n, batch);
        analyze_gather_batch(x, labels, sample, order, batch, bx, by);
        double top;
        analyze_top_eigenvalues(h, bx, by, batch, 1, iters, seed + (uint64_t)d, &top, NULL);
        total += top;
    }
    free(bx);
    free(by);
    free(order);
    return total / draws;
}

bool analyze_sharpness(const CompiledCell *cell, RtVarStore *store, Jit *jit, const void *x,
                       const int32_t *labels, int64_t n, int iters, double *sharpness,
                       char **error)
{
    HessianOp h;
    int64_t batch = n < 256 ? n : 256;
    Backend backend = jit ? BACKEND_JIT : BACKEND_INTERP;
    if (!hessian_op_create(&h, cell->eval, store, backend, jit, batch, error))
        return false;
    analyze_top_eigenvalues(&h, x, labels, n, 1, iters, 0, sharpness, NULL);
    hessian_op_destroy(&h);
    return true;
}

/* ---- stability ------------------------------------------------------------ */

double stability_batch_factor(int64_t n, int64_t batch, bool replacement)
{
    if (replacement || n <= 1)
        return 1.0 / (double)batch;
    return (double)(n - batch) / ((double)batch * (double)(n - 1));
}

double stability_rho_along(double lr, double factor, double lambda, double q)
{
    double drift = 1.0 - lr * lambda;
    return drift * drift + lr * lr * factor * (q - lambda * lambda);
}

bool stability_coherence_unstable(double lr, int64_t n, int64_t batch, double sigma,
                                  double lambda1)
{
    double threshold = (2.0 / lr) / (1.0 + (double)n / ((double)batch * sigma));
    return lambda1 >= threshold;
}

/* The criterion on the axis that `count` samples share: there
 * lambda = count c / n and q = count c^2 / n. For axis-aligned rank-one
 * Hessians, T maps diagonal matrices to diagonal matrices axis by axis, and
 * a positive map attains its spectral radius on the positive semidefinite
 * cone, so rho(T) is the largest of these values. */
static double synthetic_axis_rho(int64_t n, int64_t count, double c, double lr, double factor)
{
    double lambda = (double)count * c / (double)n;
    double q = (double)count * c * c / (double)n;
    return stability_rho_along(lr, factor, lambda, q);
}

void stability_synthetic_cell(int64_t n, int64_t sigma, double lr, int64_t batch,
                              int64_t steps, int reps, uint64_t seed, SyntheticCell *out)
{
    memset(out, 0, sizeof *out);
    double c = 2.0 * (double)n / (double)sigma;
    double factor = stability_batch_factor(n, batch, false);
    out->rho = synthetic_axis_rho(n, sigma, c, lr, factor);
    if (sigma < n) {
        double own = synthetic_axis_rho(n, 1, c, lr, factor);
        out->rho = own > out->rho ? own : out->rho;
    }
    out->predicted = out->rho > 1.0;
    out->coherence = stability_coherence_unstable(lr, n, batch, (double)sigma, 2.0);

    /* theta[0] is the shared axis; sample i >= sigma owns theta[1 + i - sigma]. */
    int64_t dims = 1 + (n - sigma);
    double *theta = xcalloc((size_t)dims, sizeof *theta);
    int64_t *order = xcalloc((size_t)n, sizeof *order);
    double start = sqrt((double)dims);
    for (int r = 0; r < reps; r++) {
        for (int64_t d = 0; d < dims; d++)
            theta[d] = 1.0;
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
        PhiloxKey key = philox_key(seed, (uint32_t)r);
        bool blew_up = false;
        for (int64_t t = 0; t < steps && !blew_up; t++) {
            analyze_draw_batch(key, (uint64_t)t, order, n, batch);
            int64_t shared = 0;
            for (int64_t j = 0; j < batch; j++) {
                if (order[j] < sigma) {
                    shared++;
                } else {
                    double *axis = &theta[1 + order[j] - sigma];
                    *axis *= 1.0 - lr * c / (double)batch;
                }
            }
            theta[0] *= 1.0 - lr * c * (double)shared / (double)batch;
            blew_up = fabs(theta[0]) > 1e150;
        }
        double norm = blew_up ? INFINITY : sqrt(dot(theta, theta, dims));
        out->diverged += norm > start;
    }
    out->observed = 2 * out->diverged > reps;
    free(theta);
    free(order);
}
