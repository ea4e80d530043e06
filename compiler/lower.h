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

#include "../runtime/lrsched.h"
#include "eval.h"
#include "ir.h"

/* A `-D key=value` override of an experiment setting. */
typedef struct Override {
    const char *key;
    const char *text; /* the whole "key=value" argument */
} Override;

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
    const char *report_dir; /* NULL = no report files */
    RtSchedule schedule;    /* base_lr is set per cell, from its optimizer */
    double clip;            /* maximum global gradient norm; 0 = no clipping */
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
} CellOptions;

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
/* Returns true when the last failed compile_cell failed in the model
 * (the forward pass), false when it failed in the optimizer. */
bool compile_cell_model_failed(const Lower *l);
void compiled_cell_free(CompiledCell *cell);

#endif
