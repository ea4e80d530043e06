/* qsdp.h - quantized communication in training (QSDP): the `quantize`
 * statements of experiments and the graph rewrite that simulates, in one
 * process, what the sharded run sends.
 *
 * In a sharded run every rank receives each step's weights in quantized
 * form (the all-gather) and sends its gradient in quantized form (the
 * reduce-scatter). The rewrite inserts the IR's `quantize` op (the
 * sender's packed codes and bucket metadata) and `dequantize` op (what
 * the receiver decodes) where those values enter the training step. Their
 * Philox draws are those of the sharded run: weights keyed by their
 * global element index, gradients by their index and the rank that sends
 * them.
 */
#ifndef BOCB_QSDP_H
#define BOCB_QSDP_H

#include "lower.h"

/* Ranks that a quantized run may have: the rank is a field of the tag. */
enum { QSDP_MAX_RANKS = 256 };

/* What a quantizer's draws are for; part of the tag. */
typedef enum QsdpKind {
    QSDP_WEIGHTS,   /* the weights a step reads (the all-gather) */
    QSDP_GRADIENTS, /* a rank's gradient (the reduce-scatter) */
    QSDP_ITERATE,   /* the new weights of the QSDP iterate */
} QsdpKind;

/* Returns the Philox tag of the draws of `kind` for variable `var`, sent
 * by rank `rank` (0 for weights and iterates, which their owner draws
 * identically for every rank count). */
uint32_t qsdp_tag(int var, QsdpKind kind, int rank);

/* Evaluates a `quantize weights(...)` or `quantize gradients(...)`
 * statement into spec. Returns false after reported errors. */
bool qsdp_resolve(Lower *l, const Stmt *s, ExperimentSpec *spec);

/* The name of the buffer variable whose bit pattern keys the quantizers. */
#define QSDP_KEY_VAR "quantize.key"

/* Rewrites every read of a parameter in g into a read through `quantize`
 * and `dequantize` with setting w (the weights the step receives). With
 * first_step_only, the quantized value is used only when the step input
 * is 1 (the QSDP iterate quantizes the initial weights once). Creates the key variable
 * when the module has none. */
void qsdp_quantize_weight_reads(Lower *l, IrGraph *g, const QuantSetting *w,
                                bool first_step_only);
/* Returns grad, the gradient of parameter `param`, through `quantize`
 * and `dequantize` with setting q as rank `rank` sends it. */
int qsdp_quantize_gradient(Lower *l, IrGraph *g, int param, int grad, const QuantSetting *q,
                           int rank);
/* Quantizes the value that each assignment to a parameter stores (the
 * QSDP iterate x <- Q_w(update)), with setting w. */
void qsdp_quantize_param_assigns(Lower *l, IrGraph *g, const QuantSetting *w);

/* ---- sharded training ------------------------------------------------------
 *
 * Every parameter is flattened and cut into `count` shards of `chunk`
 * elements, the last ones padded with zeros (a shard may be all
 * padding). chunk is a multiple of every bucket size in use, so each
 * shard starts on a bucket boundary and the owners' encodings together
 * equal the encoding of the whole tensor. */
typedef struct QsdpShards {
    int count, index;  /* shards per parameter, and the one this rank owns */
    int nparams;
    int *params;       /* module variable of parameter k (the gathered copy) */
    int *shard_vars;   /* its shard, a [chunk[k]] variable that `update` trains */
    int64_t *numel;    /* elements of parameter k */
    int64_t *chunk;    /* elements of each of its shards */
    int key_var;       /* the QSDP_KEY_VAR variable, or -1 */
} QsdpShards;

/* Returns the shard length of a tensor of numel elements cut into count
 * shards whose starts are multiples of align. */
int64_t qsdp_chunk(int64_t numel, int count, int64_t align);
/* Returns the alignment of shard starts: the least common multiple of the
 * bucket sizes of the settings that are on (1 when none is). */
int64_t qsdp_alignment(const QuantSetting *weights, const QuantSetting *gradients);

/* Creates the key variable of the quantizers when options ask for
 * quantization and the module has none. It is created at the same point
 * of compilation with and without sharding, so it gets the same index,
 * and so the same value from the seed. */
void qsdp_reserve_key(Lower *l, const CellOptions *options);

/* Makes out->train, whose nodes from backward_start on are the backward
 * pass, a gradient step of sharded training: each read of parameter k
 * reads a gather_shards node, one before its first forward reader and
 * one before its first backward reader, and each gradient grads[k] (-1:
 * zero) feeds a reduce_shards node right after it. Builds out->update,
 * whose inputs are lr, step and the reduced gradient shards "grad.<k>",
 * and which applies the optimizer (with the groups of options) to this
 * rank's shards. Returns false after reported errors, among them an
 * optimizer that is not elementwise. */
bool qsdp_build_update(Lower *l, const Configured *opt, const CellOptions *options,
                       const int *params, const int *grads, int nparams, int backward_start,
                       CompiledCell *out);

#endif
