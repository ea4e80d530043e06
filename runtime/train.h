/* train.h - the training loop: epochs, shuffled batches, evaluation, logs.
 *
 * The loop drives any executor through RtRunner, so the JIT-compiled
 * program and the reference interpreter train through exactly the same
 * code: same shuffling, same batches, same learning rate, same metrics.
 */
#ifndef BOCB_TRAIN_H
#define BOCB_TRAIN_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "lrsched.h"
#include "shape.h"
#include "vars.h"

/* One executor of a compiled cell, running two graphs over the same
 * variables. The training step has inputs x, labels, lr and step; the
 * evaluation graph has inputs x and labels. Both output loss and logits.
 * A training step compiled with gradient clipping also outputs grad_norm,
 * and leaves every variable unchanged when that norm is not finite. */
typedef struct RtRunner {
    void *self;
    DType dtype; /* of x, lr, step and the outputs */
    RtVarStore *vars;
    int64_t max_batch, max_eval_batch;
    /* Returns the buffer of input `name` of the training or evaluation
     * graph, sized for its maximum batch. */
    void *(*input)(void *self, bool train, const char *name);
    void (*run)(void *self, bool train, int64_t batch);
    const void *(*output)(void *self, bool train, const char *name);
    /* Optional: after a run of the training graph, returns why its results
     * are not to be trusted (a NaN that --check-numerics found), or NULL.
     * The training loop stops the cell at such a step. */
    const char *(*fault)(void *self, bool train);
} RtRunner;

/* The state of a run between two training steps. With the variables and
 * the RtTrainResult so far, it is everything the loop needs to continue
 * as if it had never stopped. Shuffling depends only on the seed and the epoch, and
 * random ops only on the optimizer's step input (`applied` + 1), so no
 * generator state is kept beyond these counters. */
typedef struct RtTrainPosition {
    int64_t epoch;       /* of the next step, from 1 */
    int64_t batch;       /* index of the next batch in that epoch; the
                            epoch's batch count means evaluation is next */
    int64_t step;        /* steps taken */
    int64_t applied;     /* updates applied (steps minus skipped ones) */
    /* Sums over the steps of the current epoch so far. */
    double loss_sum;
    int64_t correct, seen, epoch_steps, skipped;
    double seconds;      /* training time of the epoch so far */
} RtTrainPosition;

struct RtTrainResult;

/* Called between steps to save a checkpoint; returns false after printing
 * why it could not. */
typedef bool (*RtCheckpointFn)(void *context, const RtTrainPosition *position,
                               const struct RtTrainResult *result);

typedef struct RtTrainConfig {
    const char *label; /* "mlp / sgd(lr=0.05)" for log lines */
    int64_t epochs;
    int64_t batch, eval_batch;
    int64_t max_steps; /* 0 = no limit */
    int64_t log_every;
    uint64_t seed;
    double lr;
    const RtSchedule *schedule; /* NULL = the constant rate lr */
    bool clip;         /* the step outputs grad_norm and skips non-finite ones */
    FILE *log;         /* progress lines; NULL = silent */
    bool log_is_tty;   /* rewrite one line in place instead of printing many */
    FILE *log_file;    /* the run's log: every line, never rewritten; NULL = none */
    /* Resuming: NULL starts at step 0. Otherwise the result passed to
     * rt_train already contains the epochs and steps before this position. */
    const RtTrainPosition *resume;
    RtCheckpointFn checkpoint;  /* NULL = no checkpoints */
    void *checkpoint_context;
    int64_t checkpoint_every;   /* steps between checkpoints; 0 = only after
                                   each epoch's evaluation */
    /* When *stop becomes non-zero (a signal handler sets it), the loop
     * finishes the current step, saves a checkpoint and returns with
     * result->interrupted set. NULL = never. */
    const volatile sig_atomic_t *stop;
    /* Random crop and flip of every training batch (augment.h), drawn
     * from `seed` and the step; NULL = none. Evaluation is never augmented. */
    const struct RtAugment *augment;
} RtTrainConfig;

typedef struct RtEpochResult {
    int64_t epoch;
    int64_t steps;       /* cumulative */
    double train_loss;   /* mean over the epoch's steps */
    double train_accuracy;
    double test_loss;
    double test_accuracy;
    double seconds;      /* training time of the epoch, evaluation excluded */
    int64_t skipped;     /* steps of the epoch skipped for a non-finite gradient norm */
} RtEpochResult;

typedef struct RtTrainResult {
    RtEpochResult *epochs;
    int nepochs;
    float *step_losses;  /* the loss of every step, in order */
    double *step_lrs;    /* the learning rate of every step */
    int64_t nsteps;
    int64_t skipped;     /* steps skipped for a non-finite gradient norm */
    bool diverged;       /* stopped at a non-finite training or test loss */
    int64_t diverged_step;
    char diverged_reason[96]; /* "the training loss is nan" */
    bool interrupted;    /* stopped early through cfg->stop */
    bool checkpoint_failed; /* a checkpoint could not be written; the run
                               stopped there */
} RtTrainResult;

/* Trains from the runner's current variables (the caller resets them, or
 * loads them from a checkpoint along with cfg->resume and the result) and
 * evaluates on the test split after every epoch. A non-finite training
 * loss stops the run at once; a non-finite test loss stops it after the
 * epoch. Either way result->diverged is set, and the epoch in which it
 * happened is the last one recorded. With cfg->clip, a step whose gradient
 * norm is not finite has changed nothing (the compiled step guarantees
 * that); it is counted in `skipped`, still advances the schedule, but not
 * the optimizer's `step` input, which counts applied updates. */
void rt_train(const RtTrainConfig *cfg, RtRunner *runner, const DataSplits *data,
              RtTrainResult *result);
void rt_train_result_free(RtTrainResult *r);

/* Counts rows of logits [n, classes] whose arg-max is the label; ties go
 * to the lowest class index, as torch.argmax does. */
int64_t rt_count_correct(DType dt, const void *logits, const int32_t *labels, int64_t n,
                         int64_t classes);

/* Evaluates the runner on a whole dataset; returns mean loss and accuracy. */
void rt_evaluate(RtRunner *runner, const DataSplits *data, const Dataset *ds,
                 int64_t eval_batch, double *loss, double *accuracy);

#endif
