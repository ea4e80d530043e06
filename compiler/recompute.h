/* recompute.h - activation recomputation: `recompute = elementwise`.
 *
 * The backward pass reads many forward values: the output of an
 * activation for the next layer's weight gradient, the pieces of a GELU or
 * a normalisation for their own gradients. Each one is kept in memory from
 * the forward pass to the backward pass. Where such a value is elementwise
 * in values that are kept anyway, this pass copies its computation next to
 * its first backward reader instead, so the value is computed twice and
 * kept for neither. The copies carry IrNode.recomputed, which keeps them
 * out of the forward pass's kernels (schedule.c).
 */
#ifndef BOCB_RECOMPUTE_H
#define BOCB_RECOMPUTE_H

#include "ir.h"

/* Rewrites `g`, whose nodes from `backward_start` on are the backward
 * pass (ad_backward appended them), so that the backward pass recomputes
 * the forward values it can recompute cheaply. A forward value qualifies
 * when three things hold. It is elementwise or a broadcast, and so never
 * random and never a library op such as a matrix product or a
 * convolution. The backward pass reads it. Each of its operands is kept
 * anyway (a leaf, a rank-0 value, an output, or a value the backward pass
 * reads and does not recompute), is at most an eighth of its size, or
 * qualifies itself. Nodes before
 * `backward_start` keep their ids; later ones move, and the node ids in
 * ids[0..nids) (-1 stays -1) and the graph's outputs are renumbered.
 * Returns the number of forward values the backward pass now recomputes. */
int recompute_activations(IrGraph *g, int backward_start, int *ids, int nids);

#endif
