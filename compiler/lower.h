/* lower.h - from a parsed program to IR: experiments and their cells.
 *
 * An experiment names data, one or more models, one or more optimizers and
 * seeds; every (model, optimizer, seed) combination is a cell. Compiling a
 * cell instantiates the model on the data's sample shape, appends the
 * loss, differentiates it, and expands the optimizer for every parameter,
 * giving two graphs over one set of variables: the training step and the
 * evaluation pass.
 */
#ifndef BOCB_LOWER_H
#define BOCB_LOWER_H

#include <stdint.h>

#include "../runtime/augment.h"
#include "../runtime/lrsched.h"
#include "../runtime/quant.h"
#include "eval.h"
#include "ir.h"
#include "zo.h"

/* A `-D key=value` override of an experiment setting. */
typedef struct Override {
    const char *key;
    const char *text; /* the whole "key=value" argument */
} Override;

/* A parameter group: `group NAME(selectors) { settings }` in an
 * experiment. A parameter is in the group when any selector matches it. */
typedef struct ParamGroup {
    const char *name;
    SrcLoc loc;            /* the group's name; NO_LOC for the default group */
    const char **globs;    /* name = "*.bias" or a list: fnmatch patterns */
    int nglobs;
    uint32_t ranks;        /* rank = 1 or a list: bit r selects rank r */
    const char **tags;     /* tag = "norm" or a list */
    int ntags;
    const char **keys;     /* hyperparameter settings, in source order */
    Value *values;
    SrcLoc *key_locs;
    int nsettings;
    double lr_scale;       /* multiplies the scheduled lr; 1 when not set */
    bool has_lr_scale;
    bool is_default;       /* the built-in no_decay group */
    bool failed;           /* had errors; kept only to report a second group of its name */
} ParamGroup;

/* A `quantize weights(...)` or `quantize gradients(...)` statement of an
 * experiment (qsdp.c). */
typedef struct QuantSetting {
    bool on;
    int bits;           /* 2 .. 8 */
    int64_t bucket;     /* elements per bucket */
    RtRounding rounding;
    bool iterate;       /* weights only: keep the weights quantized */
    SrcLoc loc;         /* of the statement */
} QuantSetting;

/* An `analyze NAME(args)` statement: one row of the table in
 * analyze_stmt.c, with its arguments. A number argument is a list of one. */
enum { ANALYZE_MAX_ARGS = 4 };
typedef struct AnalyzeRequest {
    const struct AnalyzeKind *kind;
    SrcLoc loc;
    double *values[ANALYZE_MAX_ARGS]; /* in the order of the kind's parameters */
    int nvalues[ANALYZE_MAX_ARGS];
} AnalyzeRequest;

typedef struct ExperimentSpec {
    const Decl *decl;
    const char *name;
    DataSpec *data;
    SrcLoc data_loc;
    Configured **models;
    int nmodels;
    SrcLoc model_loc;
    Configured **optimizers;
    int noptimizers;
    uint64_t *seeds;
    int nseeds;
    int64_t epochs;
    int64_t batch;
    int64_t eval_batch;
    int64_t train_size; /* 0 = the whole split */
    int64_t test_size;
    int64_t max_steps;  /* 0 = no limit */
    int64_t log_every;
    int64_t checkpoint_every; /* steps between checkpoints; 0 = after each epoch */
    const char *report_dir; /* NULL = no report files */
    IrLossAttr loss;        /* `loss` and `label_smoothing` */
    RtSchedule schedule;    /* base_lr is set per cell, from its optimizer */
    double clip;            /* maximum global gradient norm; 0 = no clipping */
    bool forward_grad;      /* gradient = forward_grad */
    ParamGroup *groups;     /* in order of precedence, the lowest first */
    int ngroups;
    QuantSetting quantize_weights, quantize_gradients;
    AnalyzeRequest *analyses; /* `analyze` statements, run after each cell trains */
    int nanalyses;
    ZoSpec zo;              /* gradient = zo(...); zo.enabled false otherwise */
    const struct FineTune *finetune; /* `finetune` and its settings (lm.h) */
    const char *init_path; /* `init`: parameters start from this file */
    const char *save_path; /* `save`: parameters are written here after training */
    bool recompute;        /* recompute = elementwise (recompute.h) */
    RtAugment augment;     /* `augment`: transforms of training batches; off when unset */
    SrcLoc augment_loc;
} ExperimentSpec;

/* The data as a model is compiled for it: one sample's shape and the
 * number of classes. */
typedef struct DataShape {
    int rank;
    int64_t dims[3];
    int classes;
} DataShape;

typedef struct CompiledCell {
    IrModule module;
    IrGraph *train; /* inputs x, labels, lr, step; outputs loss, logits */
    IrGraph *eval;  /* inputs x, labels; outputs loss, logits */
    double base_lr;
    /* Per module variable: the groups of a parameter and what they set,
     * "no_decay, head (weight_decay=0, lr_scale=10)", or NULL. */
    const char **param_groups;
    /* Sharded training only (qsdp.h): the optimizer step over this
     * rank's shards, and their layout; NULL otherwise. */
    IrGraph *update;
    struct QsdpShards *shards;
    /* gradient = zo(...): the perturbation and update graphs, and train is
     * the forward pass they run around (zo.h). NULL for backprop. */
    ZoGraphs *zo;
} CompiledCell;

/* Evaluates the settings of experiment `exp`, with `-D` overrides applied
 * (an unknown key is an error). Returns false after reported errors; the
 * spec then still contains every valid setting (spec->data may be NULL), so
 * that the valid cells can be compiled and checked. */
bool experiment_resolve(Lower *l, const Decl *exp, const Override *overrides,
                        int noverrides, ExperimentSpec *spec);

/* What an experiment adds to the training step of each of its cells. */
typedef struct CellOptions {
    double clip; /* maximum global gradient norm; 0 = no clipping */
    /* Estimate the gradient by forward mode (fwd_gradient_estimate)
     * instead of computing it by reverse mode. */
    bool forward_grad;
    const ParamGroup *groups;
    int ngroups;
    /* Quantization of the weights each step reads and of the gradients
     * it applies, as one process simulates it (qsdp.c). */
    QuantSetting quantize_weights, quantize_gradients;
    /* With shards > 0, the training step computes gradients only, and a
     * separate update graph applies the optimizer to shard `shard_index`
     * of `shards` of every parameter (qsdp.h). */
    int shards, shard_index;
    /* When the model fails, the optimizers to expand anyway over the
     * parameters it created before its first mistake, and where to record
     * which of them reported errors. */
    const Configured *const *check_optimizers;
    int ncheck_optimizers;
    bool *check_failed;
    const ZoSpec *zo; /* NULL or not enabled = backprop */
    /* The fine-tuning scheme (lm.h); NULL trains every parameter. */
    const struct FineTune *finetune;
    /* The backward pass recomputes cheap forward values (recompute.h). */
    bool recompute;
} CellOptions;

/* ---- analyses (analyze_stmt.c) ---- */

/* Evaluates the `analyze` statement s and appends it to spec->analyses
 * (sized by the caller). Returns false after reported errors. */
bool analyze_resolve(Lower *l, const Stmt *s, ExperimentSpec *spec);

/* ---- parameter groups (groups.c) ---- */

/* Evaluates a `group` statement of an experiment into `out`. Returns false
 * after reported errors. */
bool group_resolve(Lower *l, const Stmt *s, ParamGroup *out);
/* Returns the built-in group that turns weight decay off for biases,
 * normalisation scales, layer scales, position embeddings and class
 * tokens, selected by their tags. */
ParamGroup group_default_no_decay(Lower *l);
/* Returns true when `group` selects parameter `v`. Names are matched with
 * and without the model's own prefix ("mlp."). */
bool group_selects(const ParamGroup *group, const IrVar *v);
/* Returns the configuration of `opt` for parameter `v`: the settings of
 * every group that selects it applied in order, a later group replacing
 * what an earlier one set. Sets *lr_scale and *label (NULL when no group
 * selects it). Returns NULL after reported errors: a setting that is not a
 * hyperparameter of the optimizer, or of the wrong kind. */
const Configured *group_configure(Lower *l, const Configured *opt, const ParamGroup *groups,
                                  int ngroups, const IrVar *v, double *lr_scale,
                                  const char **label);

/* Compiles one cell for data of shape `data` in element type `dtype`.
 * Returns false after reported errors; `out` is then left empty. */
bool compile_cell(Lower *l, const Configured *model, const Configured *opt,
                  const DataShape *data, DType dtype, CompiledCell *out);
/* Compiles one cell like compile_cell, with `options` (NULL = none). With
 * clipping, the training step also outputs grad_norm, the global gradient
 * norm before clipping, and changes no variable when it is not finite. */
bool compile_cell_with(Lower *l, const Configured *model, const Configured *opt,
                       const DataShape *data, DType dtype, const CellOptions *options,
                       CompiledCell *out);
/* Builds the forward pass of `model` alone, for an experiment without a
 * valid optimizer to pair it with, and frees it. Returns false after
 * reported errors. */
bool check_model(Lower *l, const Configured *model, const DataShape *data, DType dtype);
/* Returns true when the last failed compile_cell failed in the model
 * (the forward pass), false when it failed in the optimizer. */
bool compile_cell_model_failed(const Lower *l);
void compiled_cell_free(CompiledCell *cell);

/* Expands optimizer `opt` for parameter `param` with the settings of its
 * groups (experiment.c); `lr` is scaled by their lr_scale. */
bool expand_in_groups(Lower *l, const Configured *opt, const CellOptions *options,
                      int param, int grad, int lr, int step, const char **label);

/* ---- data augmentation (augment_setting.c) ---- */

/* Evaluates the value `e` of the `augment` setting into `out` and sets
 * *loc to its location. Returns false after reported errors. */
bool augment_eval_setting(Lower *l, const Expr *e, RtAugment *out, SrcLoc *loc);
/* Reports augmentation of data that has no images; returns false then. */
bool augment_check_data(const ExperimentSpec *spec);
/* Returns `settings` with " augment=crop(4),flip(0.5)" appended, malloc'd:
 * the text a checkpoint compares to decide whether it can resume. */
char *augment_settings_text(const char *settings, const RtAugment *aug);

/* ---- zeroth-order cells (zo.c) ---- */

/* Builds the zeroth-order graphs of a cell whose training graph (out->train)
 * holds the forward pass and its outputs. Returns false after reported
 * errors. */
bool zo_compile(Lower *l, const Configured *opt, const CellOptions *options,
                CompiledCell *out);
void zo_graphs_free(ZoGraphs *zg);

#endif
