/* zo.h - zeroth-order gradient estimation (`gradient = zo(...)`).
 *
 * A zeroth-order step replaces the backward graph by two more forward
 * passes. With z a standard normal vector over the trainable parameters,
 * the two-sided estimate is
 *
 *     g = (L(theta + eps z) - L(theta - eps z)) / (2 eps) * z
 *
 * and the one-sided estimate is (L(theta + eps z) - L(theta)) / eps * z;
 * with q queries the q estimates are averaged. The cell compiles three
 * graphs for it besides the evaluation graph:
 *
 * - the training graph is the forward pass alone (training mode), run
 *   once per evaluation of L;
 * - the perturbation graph adds scale * z to every trainable parameter in
 *   place, with `zo_scale` and `zo_counter` as rank-0 inputs;
 * - the update graph restores the parameters and runs the optimizer on
 *   the estimate in one elementwise pass per parameter.
 *
 * z is never stored. Every kernel that needs it regenerates it with
 * Box-Muller from two Philox streams (the IR's `random` op), keyed by two
 * buffers per parameter that the run's seed initialises, and counted by
 * zo_counter = (step - 1) * q + query + 1. So z is a function of (seed,
 * step, query, parameter, element): the same in every pass and for any
 * thread count. With sparsity s, a third stream masks z: an element is
 * perturbed when its uniform number is >= s. With blocks, the rank-0
 * input zo_block of both graphs selects the block that moves; the others
 * keep their values and optimizer state. With backprop patterns, the
 * training graph also differentiates the loss with respect to the
 * matching parameters and updates them; that update (like buffer
 * updates) takes effect in the last forward pass of a step only. The
 * runner (zo_run_step in zo_run.c) drives the sequence.
 */
#ifndef BOCB_ZO_H
#define BOCB_ZO_H

#include <stdbool.h>
#include <stdint.h>

#include "../lang/diag.h"

typedef enum ZoMode {
    ZO_TWO_SIDED,
    ZO_ONE_SIDED,
} ZoMode;

/* Which parameters a step perturbs: all, or one block per step. */
typedef enum ZoBlocks {
    ZO_BLOCKS_NONE,   /* every trainable parameter, every step */
    ZO_BLOCKS_TENSOR, /* one parameter tensor per step */
    ZO_BLOCKS_LAYER,  /* the tensors of one layer (one name prefix) per step */
} ZoBlocks;

/* The value of `gradient = zo(eps = 1e-3, queries = 1, mode = two_sided,
 * projection = value, sparsity = 0, mask = random, blocks = none,
 * backprop = [], conservative = false)`. */
typedef struct ZoSpec {
    bool enabled;
    double eps;
    int queries;
    ZoMode mode;
    bool sign;       /* projection = sign: each query contributes sign(pg) z */
    double sparsity; /* expected fraction of coordinates left unperturbed */
    /* mask = magnitude: each parameter's own sparsity, set at the first
     * step from the magnitudes of all weights (zo_run.c) */
    bool magnitude_mask;
    ZoBlocks blocks;
    /* backprop = patterns: the parameters whose names match one of these
     * fnmatch patterns (with or without the model's prefix, as in
     * groups) get backpropagated gradients instead (hybrid training). */
    const char **backprop;
    int nbackprop;
    /* conservative = true (ZO-SGD-Cons): after the estimate, evaluate the
     * SGD steps p - lr g and p + lr g and keep the best of them and p. */
    bool conservative;
    SrcLoc loc;
} ZoSpec;

/* The extra graphs of a zeroth-order cell (see above). */
typedef struct ZoGraphs {
    ZoSpec spec;
    int nblocks; /* 1 unless spec.blocks; block (step - 1) % nblocks is perturbed */
    struct IrGraph *perturb; /* inputs zo_scale, zo_counter; only assignments */
    struct IrGraph *update;  /* inputs lr, step, zo_pg.K and zo_counter.K per query */
} ZoGraphs;

struct Lower;
struct Expr;

/* Returns true when `e`, the value of setting `gradient`, is a use of zo:
 * the name `zo` or a call of it. */
bool zo_is_setting(const struct Expr *e);
/* Evaluates `zo` or `zo(eps = ..., queries = ..., mode = ...)` into *out.
 * Returns false after reported errors. */
bool zo_eval_setting(struct Lower *l, const struct Expr *e, ZoSpec *out);

/* The standard normal number that the zeroth-order graphs use for element
 * `index` of a parameter whose two key buffers hold key_a and key_b, at
 * counter `counter`: Box-Muller of philox_random_f32/f64 with a polynomial
 * cosine (absolute error below 1e-9), computed in the same order as the
 * graphs compute it. Tests compare the graphs against it. */
float zo_normal_f32(float key_a, float key_b, float counter, uint64_t index);
double zo_normal_f64(double key_a, double key_b, double counter, uint64_t index);

#endif
