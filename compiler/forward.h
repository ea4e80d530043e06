/* forward.h - forward-mode automatic differentiation (JVP) of the graph IR.
 *
 * Where reverse mode (autodiff.h) pulls one adjoint back from a scalar,
 * forward mode pushes one tangent per node forward from the variables:
 * the tangent of node y = f(x) is J_f(x) t_x. The pass has a rule for
 * every op with a VJP rule and for the ops that only reverse mode emits
 * (the gradients of convolution, pooling, the losses, gathers), so it runs
 * over a gradient graph too. Applied to the gradient of a loss with tangent
 * v, it gives the Hessian-vector product H v (Pearlmutter's R-operator).
 */
#ifndef BOCB_FORWARD_H
#define BOCB_FORWARD_H

#include <stdbool.h>

#include "ir.h"

/* Appends to `g` the tangents of nodes outs[0 .. nouts-1] when each
 * variable vars[i] moves along the node tangents[i] (same shape and dtype
 * as the variable), and stores them in out_tangents (-1 when the node does
 * not depend on any of the variables, so its tangent is zero). Every op on
 * a path from a variable to an output needs a tangent rule. Every op
 * without one is reported through diag at its source location, and the
 * result is then false. */
bool fwd_jvp(IrGraph *g, const int *vars, const int *tangents, int nvars, const int *outs,
             int nouts, int *out_tangents);

/* Returns true when `op` has a tangent rule. */
bool fwd_has_rule(IrOp op);

#endif

/* Appends to `g` the forward-gradient estimate of the gradient of the
 * rank-0 node `loss` with respect to each variable vars[i]: (grad . v) v,
 * where grad . v is the JVP of the loss along a random tangent v, and
 * stores its node in grads[i] (all -1 when the loss depends on none of
 * the variables). E[v v^T] = I, so the estimate is unbiased.
 *
 * v is Rademacher: each element is -1 or +1 with probability 1/2,
 * independently, regenerated every step and never stored. Element j of the
 * tangent of variable NAME is -1 when random(key, step) < 0.5 (the IR's
 * Philox4x32-10 stream, counter (j, step)), where key is the value of the
 * buffer variable "NAME.tangent_key", drawn U(-1, 1) when the variables
 * are initialised from the seed. `step` is the rank-0 step input. Returns
 * false after reported errors (an op without a tangent rule). */
bool fwd_gradient_estimate(IrGraph *g, int loss, int step, const int *vars, int nvars,
                           int *grads);
