/* resume.c - per-run checkpoint files and the SIGINT/SIGTERM handlers. */
#include "resume.h"

#include <errno.h>
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "../runtime/base.h"
#include "../runtime/report.h"
#include "../runtime/safetensors.h"

/* Maximum length of a file name part taken from a label. A longer label
 * is cut and followed by a CRC-32 of the whole label, which keeps names
 * apart. */
enum { MAX_NAME_PART = 80 };

/* Appends `label` to `sb` with every character outside [A-Za-z0-9._=-]
 * replaced by '_'. */
static void append_file_part(StrBuf *sb, const char *label)
{
    size_t len = strlen(label);
    size_t keep = len > MAX_NAME_PART ? MAX_NAME_PART : len;
    for (size_t i = 0; i < keep; i++) {
        char c = label[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '=' || c == '-';
        char out = plain ? c : '_';
        sb_appendn(sb, &out, 1);
    }
    if (keep < len)
        sb_printf(sb, "-%08lx", crc32(0L, (const Bytef *)label, (uInt)len));
}

void run_checkpoint_init(RunCheckpoint *ck, const char *report_dir, const char *experiment,
                         const char *model, const char *optimizer, uint64_t seed,
                         const char *settings, const RtVarStore *vars)
{
    memset(ck, 0, sizeof *ck);
    StrBuf path = {0};
    sb_printf(&path, "%s/checkpoints/", report_dir);
    append_file_part(&path, experiment);
    sb_append(&path, "__");
    append_file_part(&path, model);
    sb_append(&path, "__");
    append_file_part(&path, optimizer);
    sb_printf(&path, "__seed%llu.safetensors", (unsigned long long)seed);
    ck->path = path.data;
    ck->vars = vars;
    ck->seed_text = xasprintf("%llu", (unsigned long long)seed);
    ck->settings_text = xstrdup(settings);
    ck->identity[0] = (StMetaEntry){"experiment", experiment};
    ck->identity[1] = (StMetaEntry){"model", model};
    ck->identity[2] = (StMetaEntry){"optimizer", optimizer};
    ck->identity[3] = (StMetaEntry){"seed", ck->seed_text};
    ck->identity[4] = (StMetaEntry){"settings", ck->settings_text};
}

void run_checkpoint_free(RunCheckpoint *ck)
{
    free(ck->path);
    free(ck->seed_text);
    free(ck->settings_text);
    memset(ck, 0, sizeof *ck);
}

/* Removes temporary files that a killed run left while replacing the
 * checkpoint; the checkpoint itself is always whole. */
static void remove_stale_temporaries(const char *path)
{
    char *pattern = xasprintf("%s.tmp.*", path);
    glob_t found;
    if (glob(pattern, GLOB_NOSORT, NULL, &found) == 0) {
        for (size_t i = 0; i < found.gl_pathc; i++)
            unlink(found.gl_pathv[i]);
        globfree(&found);
    }
    free(pattern);
}

ResumeState run_checkpoint_restore(RunCheckpoint *ck, RtVarStore *vars,
                                   RtTrainPosition *position, RtTrainResult *result)
{
    remove_stale_temporaries(ck->path);
    if (access(ck->path, F_OK) != 0 && errno == ENOENT)
        return RESUME_FRESH;
    char *error = NULL;
    /* A checkpoint of the same run under other settings (another `-D
     * epochs=...`, say) is not resumed: the run starts afresh and replaces
     * it, as it replaces the report files of the earlier run. */
    StFile file;
    if (st_read(ck->path, &file, &error)) {
        const char *stored = st_meta_get(&file, "settings");
        bool other = stored && strcmp(stored, ck->settings_text) != 0;
        if (other)
            fprintf(stderr, "bocbc: note: %s was written with the settings '%s'; this run "
                    "has '%s', starts afresh and replaces it\n",
                    ck->path, stored, ck->settings_text);
        st_free(&file);
        if (other)
            return RESUME_FRESH;
    }
    free(error);
    error = NULL;
    bool finished;
    if (!rt_checkpoint_load(ck->path, vars, position, result, &finished, ck->identity,
                            RUN_IDENTITY_COUNT, &error)) {
        fprintf(stderr, "bocbc: error: cannot resume: %s\n", error);
        free(error);
        return RESUME_ERROR;
    }
    if (finished)
        return RESUME_FINISHED;
    ck->has_state = true;
    ck->state_step = position->step;
    return RESUME_CONTINUE;
}

/* Writes the checkpoint. `variables_step`, when not NULL, is stored as the
 * metadata entry "variables_step" after the identity entries. */
static bool save(RunCheckpoint *ck, const RtTrainPosition *position,
                 const RtTrainResult *result, bool finished, const char *variables_step)
{
    StMetaEntry meta[RUN_IDENTITY_COUNT + 1];
    memcpy(meta, ck->identity, sizeof ck->identity);
    int nmeta = RUN_IDENTITY_COUNT;
    if (variables_step)
        meta[nmeta++] = (StMetaEntry){"variables_step", variables_step};
    char *error = NULL;
    char *dir = xasprintf("%s", ck->path);
    *strrchr(dir, '/') = '\0';
    bool ok = rt_make_dirs(dir, &error) &&
              rt_checkpoint_save(ck->path, ck->vars, position, result, finished,
                                 meta, nmeta, &error);
    if (!ok) {
        /* messages.py: not reached: needs a full disk or a read-only directory. */
        fprintf(stderr, "bocbc: error: cannot write the checkpoint: %s\n", error);
        free(error);
    }
    free(dir);
    return ok;
}

/* Returns whether no variable contains a NaN or an infinity. */
static bool variables_finite(const RtVarStore *vars)
{
    for (int i = 0; i < vars->nvars; i++) {
        const RtVar *v = &vars->vars[i];
        const void *data = rt_var_data(vars, i);
        for (int64_t j = 0; j < v->numel; j++) {
            double x = v->dtype == DT_F64 ? ((const double *)data)[j]
                                          : ((const float *)data)[j];
            if (!isfinite(x))
                return false;
        }
    }
    return true;
}

bool run_checkpoint_save(void *context, const RtTrainPosition *position,
                         const RtTrainResult *result)
{
    RunCheckpoint *ck = context;
    /* A step whose loss was finite can still have made a variable infinite
     * through its update. The next step's loss then diverges, and the run
     * rolls back to the file, so the file must keep the older state. */
    ck->skipped_nonfinite = !variables_finite(ck->vars);
    if (ck->skipped_nonfinite)
        return true;
    if (!save(ck, position, result, false, NULL))
        return false;
    ck->has_state = true;
    ck->state_step = position->step;
    return true;
}

bool run_checkpoint_roll_back(RunCheckpoint *ck, RtVarStore *vars)
{
    BOCB_ASSERT(ck->has_state);
    RtTrainPosition position;
    RtTrainResult saved = {0};
    bool finished;
    char *error = NULL;
    bool ok = rt_checkpoint_load(ck->path, vars, &position, &saved, &finished, ck->identity,
                                 RUN_IDENTITY_COUNT, &error);
    if (!ok) {
        /* messages.py: not reached: needs the file to change while the run trains. */
        fprintf(stderr, "bocbc: error: cannot reload the last finite state: %s\n", error);
        free(error);
    }
    rt_train_result_free(&saved);
    return ok;
}

/* Marks the run finished at its last step. */
static bool finish(RunCheckpoint *ck, const RtTrainResult *result, const char *variables_step)
{
    RtTrainPosition end = {.epoch = result->nepochs + 1, .step = result->nsteps,
                           .applied = result->nsteps - result->skipped};
    return save(ck, &end, result, true, variables_step);
}

bool run_checkpoint_finish(RunCheckpoint *ck, const RtTrainResult *result)
{
    return finish(ck, result, NULL);
}

bool run_checkpoint_finish_diverged(RunCheckpoint *ck, const RtTrainResult *result,
                                    int64_t state_step)
{
    char step_text[24];
    snprintf(step_text, sizeof step_text, "%lld", (long long)state_step);
    return finish(ck, result, step_text);
}

volatile sig_atomic_t run_stop_signal;

static struct sigaction old_int, old_term;

static void on_stop_signal(int signo)
{
    if (!run_stop_signal)
        run_stop_signal = signo;
}

void run_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* The first signal requests a clean stop. SA_RESETHAND gives the
     * second one its default action, so a stuck run can still be ended. */
    sa.sa_flags = SA_RESETHAND;
    run_stop_signal = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
}

void run_signals_restore(void)
{
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
}
