/* lm.h - language-model pieces of the compiler: the fortunes() data
 * source, the per-token cross-entropy, the next-token loss of experiments
 * with `loss = next_token`, and the fine-tuning schemes (full, LoRA,
 * prompt tuning) that an experiment selects with `finetune`.
 */
#ifndef BOCB_LM_H
#define BOCB_LM_H

#include "eval.h"
#include "lower.h"

/* The builtins of lm.c (fortunes, token_cross_entropy). Returns the table
 * and stores its length in *count. */
const Builtin *builtin_lm_table(int *count);

/* Builds the mean per-token cross-entropy of logits [..., V] against
 * float or integer token ids `targets` [...] (the same leading axes). A
 * target equal to `ignore`, negative, or not below V is masked: it adds
 * nothing to the sum and is not counted in the mean. The mean is over
 * the unmasked tokens, and is 0 when every token is masked. Of the
 * leading axes, only the first may be the batch axis. Returns the rank-0
 * loss node. */
int lower_token_loss(IrGraph *g, int logits, int targets, double ignore, SrcLoc loc);

/* The next-token loss of a model that returns logits [B, T, V] for input
 * ids x [B, T] whose labels [B] are the characters that follow each
 * window: the targets are x shifted left by one with the label appended,
 * and id 0 (padding) is masked. Stores the loss and the logits of the last
 * position [B, V], which the training loop scores against the labels.
 * Returns false after a reported error (logits of the wrong shape). */
bool lower_next_token_loss(Lower *l, int logits, int x, int labels, const DataShape *data,
                           const char *model_name, SrcLoc loc, int *loss_out,
                           int *last_logits_out);

/* ---- fine-tuning schemes ---- */

typedef enum FineTuneKind {
    FINETUNE_FULL,   /* every parameter trains */
    FINETUNE_LORA,   /* low-rank factors beside the targeted linear weights */
    FINETUNE_PROMPT, /* learnable embeddings where the model calls prompt_tokens */
} FineTuneKind;

/* An experiment's `finetune` setting and the settings that go with it. */
typedef struct FineTune {
    FineTuneKind kind;
    int64_t lora_rank;
    double lora_alpha;               /* the update is scaled by alpha / rank */
    const char **lora_targets;       /* layer names, matched as layer_matches */
    int nlora_targets;
    int64_t prompt_tokens;
    const char **trainable;          /* layers that stay trainable under LoRA
                                      * and prompt tuning, such as a new head */
    int ntrainable;
    SrcLoc loc;                      /* of the `finetune` value */
} FineTune;

/* The settings that configure a FineTune, as written in an experiment (or
 * NULL where left out). */
typedef struct FineTuneSettings {
    const Value *finetune, *lora_rank, *lora_alpha, *lora_targets, *prompt_tokens,
        *trainable;
} FineTuneSettings;

/* Validates the fine-tuning settings into a FineTune in the arena. Stores
 * NULL for `finetune = full` without other settings. Returns false after
 * reported errors, such as a LoRA setting without `finetune = lora`. */
bool finetune_resolve(Lower *l, const FineTuneSettings *s, const FineTune **out);

/* Returns true when the layer called `path` ("net.block1.attn.qkv")
 * matches `pattern`: equal to it, or ending in "." followed by it. */
bool layer_matches(const char *path, const char *pattern);

/* Adds LoRA to the linear layer `layer` (a local name under the current
 * prefix) whose product is y = h @ W^T, h [rows, in] and y [rows, out],
 * when l->finetune selects LoRA and targets the layer: creates A [rank, in]
 * (uniform in +-1/sqrt(in)) and B [out, rank] (zeros), tagged "lora", and
 * returns y + (alpha / rank) (h @ A^T) @ B^T. Otherwise returns y. */
int lower_lora(Lower *l, const char *layer, int h, int y, int64_t in, int64_t out,
               SrcLoc loc);

/* Freezes the parameters of `m` that l->finetune does not train: under
 * LoRA all but the "lora" factors, under prompt tuning all but the
 * "prompt" embeddings, and in both cases not the `trainable` layers.
 * Reports an error when the scheme found nothing to add to the model
 * (no targeted layer, no prompt_tokens call). Returns false after
 * reported errors. */
bool finetune_freeze(Lower *l, IrModule *m, const char *model_name, SrcLoc model_loc);

#endif
