/* autodiff.h - reverse-mode automatic differentiation of the graph IR. */
#ifndef BOCB_AUTODIFF_H
#define BOCB_AUTODIFF_H

#include <stdbool.h>

#include "ir.h"

/* Appends to `g` the gradient of the rank-0 node `loss` with respect to
 * each variable vars[i], and stores its node in grads[i] (-1 when the loss
 * does not depend on that variable). A variable read several times gets
 * the sum of the contributions. Each op on a path from a variable to the
 * loss needs a VJP rule. Every op without one is reported through diag at
 * its source location, all in one call, and the result is then false. */
bool ad_backward(IrGraph *g, int loss, const int *vars, int nvars, int *grads);

/* Returns true when `op` has a VJP rule. */
bool ad_has_rule(IrOp op);

/* Returns a constant `value` with the shape and dtype of node `like`. */
int ad_fill_like(IrGraph *g, int like, double value, SrcLoc loc);

#endif
