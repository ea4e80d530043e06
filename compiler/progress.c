/* progress.c - grid progress lines and REPORT/run.log. */
#include "progress.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "../runtime/base.h"

/* Formats the current UTC time as ISO 8601. */
static void utc_now(char *buf, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool grid_progress_start(GridProgress *p, const char *experiment, int total,
                         const char *report_dir, FILE *out)
{
    memset(p, 0, sizeof *p);
    p->experiment = experiment;
    p->total = total;
    p->start = now_seconds();
    p->out = out;
    if (!report_dir)
        return true;
    char *path = xasprintf("%s/run.log", report_dir);
    p->log = fopen(path, "a");
    if (!p->log) {
        /* messages.py: not reached: the report directory was checked before training. */
        fprintf(stderr, "bocbc: error: cannot open the run log %s: %s\n", path,
                strerror(errno));
        free(path);
        return false;
    }
    free(path);
    char when[32];
    utc_now(when, sizeof when);
    grid_progress_log(p, "%s experiment %s: start, %d runs", when, experiment, total);
    return true;
}

void grid_progress_log(GridProgress *p, const char *fmt, ...)
{
    if (!p->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(p->log, fmt, ap);
    va_end(ap);
    fputc('\n', p->log);
    fflush(p->log);
}

void grid_progress_run_done(GridProgress *p, bool failed, bool skipped, double seconds)
{
    p->done++;
    p->failed += failed;
    p->skipped += skipped;
    if (!skipped) {
        p->trained++;
        p->trained_seconds += seconds;
    }
    double elapsed = now_seconds() - p->start;
    StrBuf line = {0};
    sb_printf(&line, "grid %s: %d/%d runs done, %d failed, %d skipped, %.0f s elapsed",
              p->experiment, p->done, p->total, p->failed, p->skipped, elapsed);
    if (p->trained > 0 && p->done < p->total)
        sb_printf(&line, ", ETA %.0f s",
                  p->trained_seconds / p->trained * (double)(p->total - p->done));
    if (p->out) {
        fprintf(p->out, "%s\n", line.data);
        fflush(p->out);
    }
    grid_progress_log(p, "%s", line.data);
    sb_free(&line);
}

void grid_progress_finish(GridProgress *p, int status)
{
    char when[32];
    utc_now(when, sizeof when);
    grid_progress_log(p, "%s experiment %s: end, exit status %d", when, p->experiment,
                      status);
    if (p->log)
        fclose(p->log);
    p->log = NULL;
}
