/* resume.h - per-run checkpoints in the report directory, and stop signals.
 *
 * Each run of a grid (model, optimizer, seed) has one checkpoint file,
 * REPORT/checkpoints/NAME.safetensors. While the run trains, the file is
 * replaced atomically every `checkpoint_every` steps and after every
 * epoch. When the run ends, the file is marked finished and keeps the
 * run's results. Rerunning the experiment therefore skips finished runs and
 * continues an interrupted one from its last checkpoint.
 */
#ifndef BOCB_RESUME_H
#define BOCB_RESUME_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "../runtime/checkpoint.h"

enum { RUN_IDENTITY_COUNT = 5 };

typedef struct RunCheckpoint {
    char *path;
    const RtVarStore *vars;
    StMetaEntry identity[RUN_IDENTITY_COUNT]; /* experiment, model, optimizer, seed, settings */
    char *seed_text, *settings_text;
    /* Whether the file contains a state of this run (saved by it, or the
     * one it resumed from), and the step after which that state was taken. */
    bool has_state;
    int64_t state_step;
    /* Whether the last state that training offered (run_checkpoint_save)
     * was not written, because a variable was not finite. */
    bool skipped_nonfinite;
} RunCheckpoint;

typedef enum ResumeState {
    RESUME_FRESH,    /* no checkpoint: start at step 0 */
    RESUME_CONTINUE, /* a checkpoint of an unfinished run was loaded */
    RESUME_FINISHED, /* the run finished earlier; its result was loaded */
    RESUME_ERROR,    /* the checkpoint is invalid or belongs to another run */
} ResumeState;

/* Names the checkpoint of one run under `report_dir`. `settings` sums up
 * the experiment settings that change the result (epochs, batch sizes,
 * data sizes, step limit). A checkpoint written under other settings is
 * rejected on resume. */
void run_checkpoint_init(RunCheckpoint *ck, const char *report_dir, const char *experiment,
                         const char *model, const char *optimizer, uint64_t seed,
                         const char *settings, const RtVarStore *vars);
void run_checkpoint_free(RunCheckpoint *ck);

/* Loads the run's checkpoint, if there is one, into `vars`, *position and
 * *result. Prints the reason and returns RESUME_ERROR when it cannot be
 * used. */
ResumeState run_checkpoint_restore(RunCheckpoint *ck, RtVarStore *vars,
                                   RtTrainPosition *position, RtTrainResult *result);

/* The RtCheckpointFn of rt_train; `context` is a RunCheckpoint. A state
 * with a NaN or an infinity in a variable is not written, so the file
 * keeps the last finite one; ck->skipped_nonfinite records which
 * happened. */
bool run_checkpoint_save(void *context, const RtTrainPosition *position,
                         const RtTrainResult *result);

/* Loads the variables of the state that the file contains into `vars`,
 * for a run that diverged after that state; ck->has_state must be true.
 * Returns false after printing why the file could not be read. */
bool run_checkpoint_roll_back(RunCheckpoint *ck, RtVarStore *vars);

/* Marks the run finished, keeping its result. Returns false after
 * printing why the file could not be written. */
bool run_checkpoint_finish(RunCheckpoint *ck, const RtTrainResult *result);

/* Marks a diverged run finished, keeping its result and the variables in
 * `ck->vars`, which are the state after step `state_step`, the last finite
 * one. The metadata entry "variables_step" records that step. */
bool run_checkpoint_finish_diverged(RunCheckpoint *ck, const RtTrainResult *result,
                                    int64_t state_step);

/* The number of the first SIGINT or SIGTERM received while the handlers
 * are installed; 0 before that. */
extern volatile sig_atomic_t run_stop_signal;

/* Makes SIGINT and SIGTERM set run_stop_signal instead of ending the
 * process, so the training loop can finish its step and save. A second
 * signal of the same kind ends the process at once. */
void run_signals_install(void);

/* Puts back the handlers that were there before run_signals_install. */
void run_signals_restore(void);

#endif
