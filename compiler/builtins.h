/* builtins.h - helpers shared by the builtin tables of builtins.c and nn.c.
 *
 * builtins.c holds the layers, tensor ops, math and list functions; nn.c
 * holds activations, normalisation, dropout, extra parameters and losses.
 * builtin_find (eval.h) searches both tables.
 */
#ifndef BOCB_BUILTINS_H
#define BOCB_BUILTINS_H

#include "eval.h"

#define PARAMS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* True for an optional argument that was not given. */
bool is_none(const Value *v);
/* Reports that `name` needs a model or optimizer body when there is no
 * graph; returns whether there is one. */
bool need_graph(Lower *l, const char *name, SrcLoc loc);
/* The tensor node of argument `param` of builtin `fn`, or -1 after
 * reporting. */
int tensor_arg(Lower *l, const Value *v, const char *fn, const char *param);
/* As tensor_arg, and reports a tensor that is not f32 or f64. */
int float_tensor_arg(Lower *l, const Value *v, const char *fn, const char *param);
/* A boolean argument, `fallback` when not given; false after reporting. */
bool bool_arg(const Value *v, const char *what, bool fallback, bool *out);
/* A rank-0 node with the number of elements that `axes` of `shape` cover,
 * computed from the run-time batch size when the batch axis is among them. */
int count_node(Lower *l, const Shape *shape, uint32_t axes, SrcLoc loc);
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
