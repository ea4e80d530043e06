/* checkpoint.c - saving and restoring a training run through safetensors. */
#include "checkpoint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"

#define FORMAT_KEY "format"
#define FORMAT_VALUE "bocb-checkpoint-1"
#define STATE_KEY "state"
#define REASON_KEY "diverged_reason"

#define POSITION_NAME "bocb.train.position"
#define SUMS_NAME "bocb.train.sums"
#define EPOCHS_NAME "bocb.train.epochs"
#define LOSSES_NAME "bocb.train.step_losses"
#define LRS_NAME "bocb.train.step_lrs"

/* Layout of bocb.train.position (I64). */
enum {
    POS_EPOCH, POS_BATCH, POS_STEP, POS_APPLIED, POS_CORRECT, POS_SEEN, POS_EPOCH_STEPS,
    POS_SKIPPED, POS_RESULT_SKIPPED, POS_DIVERGED, POS_DIVERGED_STEP, POS_COUNT
};
/* Layout of bocb.train.sums (F64). */
enum { SUM_LOSS, SUM_SECONDS, SUM_COUNT };
/* Columns of bocb.train.epochs (F64, one row per finished epoch). */
enum {
    EP_EPOCH, EP_STEPS, EP_TRAIN_LOSS, EP_TRAIN_ACCURACY, EP_TEST_LOSS, EP_TEST_ACCURACY,
    EP_SECONDS, EP_SKIPPED, EP_COUNT
};

static StDtype st_dtype_of(DType dtype)
{
    BOCB_ASSERT(dtype == DT_F32 || dtype == DT_F64);
    return dtype == DT_F32 ? ST_F32 : ST_F64;
}

bool rt_checkpoint_save(const char *path, const RtVarStore *vars,
                        const RtTrainPosition *position, const RtTrainResult *result,
                        bool finished, const StMetaEntry *identity, int nidentity,
                        char **error)
{
    int ntensors = vars->nvars + 5;
    StTensor *tensors = xcalloc((size_t)ntensors, sizeof *tensors);
    for (int i = 0; i < vars->nvars; i++) {
        const RtVar *v = &vars->vars[i];
        StTensor *t = &tensors[i];
        t->name = v->name;
        t->dtype = st_dtype_of(v->dtype);
        t->rank = v->shape.rank;
        for (int d = 0; d < v->shape.rank; d++)
            t->shape[d] = v->shape.dims[d];
        t->data = rt_var_data(vars, i);
        t->nbytes = (size_t)v->numel * dtype_size(v->dtype);
    }

    int64_t pos[POS_COUNT] = {
        [POS_EPOCH] = position->epoch, [POS_BATCH] = position->batch,
        [POS_STEP] = position->step, [POS_APPLIED] = position->applied,
        [POS_CORRECT] = position->correct, [POS_SEEN] = position->seen,
        [POS_EPOCH_STEPS] = position->epoch_steps, [POS_SKIPPED] = position->skipped,
        [POS_RESULT_SKIPPED] = result->skipped, [POS_DIVERGED] = result->diverged,
        [POS_DIVERGED_STEP] = result->diverged_step,
    };
    double sums[SUM_COUNT] = {[SUM_LOSS] = position->loss_sum,
                              [SUM_SECONDS] = position->seconds};
    double *epochs = xcalloc((size_t)result->nepochs * EP_COUNT + 1, sizeof(double));
    for (int e = 0; e < result->nepochs; e++) {
        const RtEpochResult *er = &result->epochs[e];
        double *row = &epochs[e * EP_COUNT];
        row[EP_EPOCH] = (double)er->epoch;
        row[EP_STEPS] = (double)er->steps;
        row[EP_TRAIN_LOSS] = er->train_loss;
        row[EP_TRAIN_ACCURACY] = er->train_accuracy;
        row[EP_TEST_LOSS] = er->test_loss;
        row[EP_TEST_ACCURACY] = er->test_accuracy;
        row[EP_SECONDS] = er->seconds;
        row[EP_SKIPPED] = (double)er->skipped;
    }
    StTensor *extra = &tensors[vars->nvars];
    extra[0] = (StTensor){.name = POSITION_NAME, .dtype = ST_I64, .rank = 1,
                          .shape = {POS_COUNT}, .data = pos, .nbytes = sizeof pos};
    extra[1] = (StTensor){.name = SUMS_NAME, .dtype = ST_F64, .rank = 1,
                          .shape = {SUM_COUNT}, .data = sums, .nbytes = sizeof sums};
    extra[2] = (StTensor){.name = EPOCHS_NAME, .dtype = ST_F64, .rank = 2,
                          .shape = {result->nepochs, EP_COUNT}, .data = epochs,
                          .nbytes = (size_t)result->nepochs * EP_COUNT * sizeof(double)};
    extra[3] = (StTensor){.name = LOSSES_NAME, .dtype = ST_F32, .rank = 1,
                          .shape = {result->nsteps}, .data = result->step_losses,
                          .nbytes = (size_t)result->nsteps * sizeof(float)};
    extra[4] = (StTensor){.name = LRS_NAME, .dtype = ST_F64, .rank = 1,
                          .shape = {result->nsteps}, .data = result->step_lrs,
                          .nbytes = (size_t)result->nsteps * sizeof(double)};

    StMetaEntry *meta = xcalloc((size_t)nidentity + 3, sizeof *meta);
    int nmeta = 0;
    meta[nmeta++] = (StMetaEntry){FORMAT_KEY, FORMAT_VALUE};
    meta[nmeta++] = (StMetaEntry){STATE_KEY, finished ? "finished" : "running"};
    meta[nmeta++] = (StMetaEntry){REASON_KEY, result->diverged_reason};
    for (int i = 0; i < nidentity; i++)
        meta[nmeta++] = identity[i];

    bool ok = st_write(path, tensors, ntensors, meta, nmeta, error);
    free(meta);
    free(epochs);
    free(tensors);
    return ok;
}

/* Returns the tensor `name` if it has `dtype`, rank 1 or 2 as given by
 * `rank`, and (when known) the given dimensions; else sets *error. */
static const StTensor *find_checked(const StFile *file, const char *name, StDtype dtype,
                                    int rank, int64_t dim0, int64_t dim1, char **error)
{
    const StTensor *t = st_find(file, name);
    if (!t) {
        *error = xasprintf("%s: not a bocb checkpoint: tensor '%s' is missing", file->path,
                           name);
        return NULL;
    }
    bool ok = t->dtype == dtype && t->rank == rank && (dim0 < 0 || t->shape[0] == dim0) &&
              (rank < 2 || t->shape[1] == dim1);
    if (!ok) {
        *error = xasprintf("%s: tensor '%s' has dtype %s and rank %d, which a bocb "
                           "checkpoint does not write",
                           file->path, name, st_dtype_name(t->dtype), t->rank);
        return NULL;
    }
    return t;
}

static bool check_identity(const StFile *file, const StMetaEntry *identity, int nidentity,
                           char **error)
{
    const char *format = st_meta_get(file, FORMAT_KEY);
    if (!format || strcmp(format, FORMAT_VALUE) != 0) {
        *error = xasprintf("%s: not a bocb checkpoint (metadata '%s' is '%s', expected '%s')",
                           file->path, FORMAT_KEY, format ? format : "(missing)",
                           FORMAT_VALUE);
        return false;
    }
    if (!file->checksum_verified) {
        *error = xasprintf("%s: the checkpoint has no data checksum", file->path);
        return false;
    }
    for (int i = 0; i < nidentity; i++) {
        const char *stored = st_meta_get(file, identity[i].key);
        if (!stored || strcmp(stored, identity[i].value) != 0) {
            *error = xasprintf("%s: the checkpoint was written for %s '%s', but this run has "
                               "'%s'; delete the file or use another report directory",
                               file->path, identity[i].key, stored ? stored : "(missing)",
                               identity[i].value);
            return false;
        }
    }
    return true;
}

static bool check_variables(const StFile *file, const RtVarStore *vars, char **error)
{
    for (int i = 0; i < vars->nvars; i++) {
        const RtVar *v = &vars->vars[i];
        const StTensor *t = st_find(file, v->name);
        if (!t) {
            *error = xasprintf("%s: variable '%s' is missing", file->path, v->name);
            return false;
        }
        bool same = t->dtype == st_dtype_of(v->dtype) && t->rank == v->shape.rank;
        for (int d = 0; same && d < t->rank; d++)
            same = t->shape[d] == v->shape.dims[d];
        if (!same) {
            *error = xasprintf("%s: variable '%s' has dtype %s and a shape other than the "
                               "model's; the checkpoint belongs to another model",
                               file->path, v->name, st_dtype_name(t->dtype));
            return false;
        }
    }
    /* Every tensor is a variable or one of the five bocb.train tensors. */
    if (file->tensor_count != vars->nvars + 5) {
        *error = xasprintf("%s: the checkpoint has %d tensors, but the model has %d "
                           "variables and a checkpoint adds 5",
                           file->path, file->tensor_count, vars->nvars);
        return false;
    }
    return true;
}

static bool restore_result(const StFile *file, const StTensor *epochs_t,
                           const StTensor *losses_t, const StTensor *lrs_t,
                           RtTrainResult *result, char **error)
{
    memset(result, 0, sizeof *result);
    result->nepochs = (int)epochs_t->shape[0];
    result->nsteps = losses_t->shape[0];
    result->epochs = xcalloc((size_t)result->nepochs + 1, sizeof *result->epochs);
    result->step_losses = xmalloc(size_mul((size_t)result->nsteps + 1, sizeof(float)));
    result->step_lrs = xmalloc(size_mul((size_t)result->nsteps + 1, sizeof(double)));
    if (result->nsteps) {
        memcpy(result->step_losses, losses_t->data, losses_t->nbytes);
        memcpy(result->step_lrs, lrs_t->data, lrs_t->nbytes);
    }
    /* The tensor's data sits wherever the file put it, not necessarily
     * 8-byte aligned: each row is copied out before it is read. */
    const unsigned char *rows = epochs_t->data;
    for (int e = 0; e < result->nepochs; e++) {
        double row[EP_COUNT];
        memcpy(row, rows + (size_t)e * EP_COUNT * sizeof row[0], sizeof row);
        RtEpochResult *er = &result->epochs[e];
        er->epoch = (int64_t)row[EP_EPOCH];
        er->steps = (int64_t)row[EP_STEPS];
        er->train_loss = row[EP_TRAIN_LOSS];
        er->train_accuracy = row[EP_TRAIN_ACCURACY];
        er->test_loss = row[EP_TEST_LOSS];
        er->test_accuracy = row[EP_TEST_ACCURACY];
        er->seconds = row[EP_SECONDS];
        er->skipped = (int64_t)row[EP_SKIPPED];
        if (er->epoch != e + 1 || er->steps < 0 || er->steps > result->nsteps) {
            *error = xasprintf("%s: row %d of '%s' is inconsistent", file->path, e,
                               EPOCHS_NAME);
            rt_train_result_free(result);
            return false;
        }
    }
    const char *reason = st_meta_get(file, REASON_KEY);
    snprintf(result->diverged_reason, sizeof result->diverged_reason, "%s",
             reason ? reason : "");
    return true;
}

bool rt_checkpoint_load(const char *path, RtVarStore *vars, RtTrainPosition *position,
                        RtTrainResult *result, bool *finished,
                        const StMetaEntry *identity, int nidentity, char **error)
{
    StFile file;
    if (!st_read(path, &file, error))
        return false;
    const StTensor *pos_t = NULL, *sums_t = NULL, *epochs_t = NULL, *losses_t = NULL,
                   *lrs_t = NULL;
    bool ok = check_identity(&file, identity, nidentity, error) &&
              check_variables(&file, vars, error) &&
              (pos_t = find_checked(&file, POSITION_NAME, ST_I64, 1, POS_COUNT, 0, error)) &&
              (sums_t = find_checked(&file, SUMS_NAME, ST_F64, 1, SUM_COUNT, 0, error)) &&
              (epochs_t = find_checked(&file, EPOCHS_NAME, ST_F64, 2, -1, EP_COUNT, error)) &&
              (losses_t = find_checked(&file, LOSSES_NAME, ST_F32, 1, -1, 0, error)) &&
              (lrs_t = find_checked(&file, LRS_NAME, ST_F64, 1, losses_t->shape[0], 0, error));
    if (!ok) {
        st_free(&file);
        return false;
    }

    int64_t pos[POS_COUNT];
    double sums[SUM_COUNT];
    memcpy(pos, pos_t->data, sizeof pos);
    memcpy(sums, sums_t->data, sizeof sums);
    const char *state = st_meta_get(&file, STATE_KEY);
    bool consistent = pos[POS_STEP] == losses_t->shape[0] &&
                      pos[POS_EPOCH] == epochs_t->shape[0] + 1 && pos[POS_BATCH] >= 0 &&
                      pos[POS_APPLIED] >= 0 && pos[POS_APPLIED] <= pos[POS_STEP] && state &&
                      (strcmp(state, "finished") == 0 || strcmp(state, "running") == 0);
    if (!consistent) {
        *error = xasprintf("%s: the training position does not agree with the recorded "
                           "steps and epochs; the checkpoint is corrupt",
                           path);
        st_free(&file);
        return false;
    }
    if (!restore_result(&file, epochs_t, losses_t, lrs_t, result, error)) {
        st_free(&file);
        return false;
    }
    result->skipped = pos[POS_RESULT_SKIPPED];
    result->diverged = pos[POS_DIVERGED] != 0;
    result->diverged_step = pos[POS_DIVERGED_STEP];
    *position = (RtTrainPosition){
        .epoch = pos[POS_EPOCH], .batch = pos[POS_BATCH], .step = pos[POS_STEP],
        .applied = pos[POS_APPLIED], .correct = pos[POS_CORRECT], .seen = pos[POS_SEEN],
        .epoch_steps = pos[POS_EPOCH_STEPS], .skipped = pos[POS_SKIPPED],
        .loss_sum = sums[SUM_LOSS], .seconds = sums[SUM_SECONDS],
    };
    *finished = strcmp(state, "finished") == 0;
    for (int i = 0; i < vars->nvars; i++) {
        const StTensor *t = st_find(&file, vars->vars[i].name);
        memcpy(rt_var_data(vars, i), t->data, t->nbytes);
    }
    st_free(&file);
    return true;
}
