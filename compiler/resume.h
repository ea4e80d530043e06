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

/* The RtCheckpointFn of rt_train; `context` is a RunCheckpoint. */
bool run_checkpoint_save(void *context, const RtTrainPosition *position,
                         const RtTrainResult *result);

/* Marks the run finished, keeping its result. Returns false after
 * printing why the file could not be written. */
bool run_checkpoint_finish(RunCheckpoint *ck, const RtTrainResult *result);

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
