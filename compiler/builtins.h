/* builtins.h - helpers shared by the builtin tables of builtins.c, nn.c
 * and builtins_spatial.c.
 *
 * builtins.c contains the layers, tensor ops, math and list functions.
 * nn.c contains activations, normalisation, dropout, extra parameters and
 * losses, and builtins_spatial.c the spatial, attention and token-mixing
 * builtins. builtin_find (eval.h) searches all three tables. The argument
 * helpers (is_none, tensor_arg, count_node, ...) are declared in eval.h.
 */
#ifndef BOCB_BUILTINS_H
#define BOCB_BUILTINS_H

#include "eval.h"

#define PARAMS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Returns the shape of `node`. The pointer is into the graph's node
 * array, so it is valid only until the next node is added. */
static inline const Shape *shape_of(Lower *l, int node)
{
    return &ir_node(l->graph, node)->shape;
}

/* The mask of every axis of `s`. */
uint32_t all_axes(const Shape *s);

/* The builtins of nn.c. */
extern const Builtin nn_builtins[];
extern const int nn_nbuiltins;

/* The per-sample loss `attr` of logits [N, C] against labels [N], averaged
 * over the batch. */
Value lower_loss(Lower *l, int logits, int labels, IrLossAttr attr, SrcLoc loc);

/* The graph's rank-0 input "step" (the 1-based training step), created on
 * first use. */
int lower_step_input(Lower *l, SrcLoc loc);

#endif
