/* progress.h - the grid-level progress line and the per-run log file.
 *
 * After every run of a grid, one line gives the runs done, failed and
 * skipped (finished earlier) out of the total, the time so far and an
 * estimate of the time left. With a report directory, the same lines,
 * the training loop's progress lines and the start and end of the grid
 * are appended to REPORT/run.log, never rewritten in place.
 */
#ifndef BOCB_PROGRESS_H
#define BOCB_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

#include "../runtime/base.h"

typedef struct GridProgress {
    const char *experiment;
    int total, done, failed, skipped;
    double start, trained_seconds;
    int trained;
    FILE *out;  /* grid lines; NULL = none */
    FILE *log;  /* REPORT/run.log; NULL = none */
} GridProgress;

/* Starts the grid of `total` runs. Opens REPORT/run.log for appending when
 * `report_dir` is not NULL; returns false after printing why it cannot. */
bool grid_progress_start(GridProgress *p, const char *experiment, int total,
                         const char *report_dir, FILE *out);

/* Records a run that ended: `failed` when it diverged, `skipped` when it
 * had finished in an earlier invocation, else it trained for `seconds`. */
void grid_progress_run_done(GridProgress *p, bool failed, bool skipped, double seconds);

/* Appends a line to the log file only. */
void grid_progress_log(GridProgress *p, const char *fmt, ...) BOCB_PRINTF(2, 3);

/* Writes the end line with the exit status and closes the log. */
void grid_progress_finish(GridProgress *p, int status);

#endif
