/* train.c - the training loop.
 *
 * Each epoch visits the training set in a fresh permutation drawn from the
 * Philox stream (seed, SHUFFLE_STREAM + epoch), in batches of cfg->batch;
 * the last batch of an epoch is smaller when the batch size does not divide
 * the set, as with PyTorch's DataLoader(drop_last = False). The loss of
 * every step is kept, so two runs can be compared bit for bit.
 */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "base.h"

enum { SHUFFLE_STREAM = 0x40000000 };

static double read_scalar(DType dt, const void *p, int64_t i)
{
    return dt == DT_F64 ? ((const double *)p)[i] : ((const float *)p)[i];
}

static void write_scalar(DType dt, void *p, double v)
{
    if (dt == DT_F64)
        *(double *)p = v;
    else
        *(float *)p = (float)v;
}

/* Counts rows of logits [n, classes] whose arg-max is the label; ties go to
 * the lowest class index, as torch.argmax does. */
static int64_t count_correct(DType dt, const void *logits, const int32_t *labels,
                             int64_t n, int64_t classes)
{
    int64_t correct = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t best = 0;
        double best_value = read_scalar(dt, logits, i * classes);
        for (int64_t j = 1; j < classes; j++) {
            double v = read_scalar(dt, logits, i * classes + j);
            if (v > best_value) {
                best = j;
                best_value = v;
            }
        }
        correct += best == labels[i];
    }
    return correct;
}

int64_t rt_count_correct(DType dt, const void *logits, const int32_t *labels, int64_t n,
                         int64_t classes)
{
    return count_correct(dt, logits, labels, n, classes);
}

/* Fills the graph's x and labels inputs with samples indices[0..n). */
static void load_batch(RtRunner *r, bool train, const DataSplits *data, const Dataset *ds,
                       const int64_t *indices, int64_t n, float *staging)
{
    void *x = r->input(r->self, train, "x");
    int32_t *labels = r->input(r->self, train, "labels");
    BOCB_ASSERT(x && labels);
    if (r->dtype == DT_F32) {
        data_gather(data, ds, indices, n, x, labels);
        return;
    }
    data_gather(data, ds, indices, n, staging, labels);
    int64_t count = n * ds->sample_size;
    for (int64_t i = 0; i < count; i++)
        ((double *)x)[i] = staging[i];
}

void rt_evaluate(RtRunner *runner, const DataSplits *data, const Dataset *ds,
                 int64_t eval_batch, double *loss, double *accuracy)
{
    int64_t *indices = xmalloc(size_mul((size_t)eval_batch, sizeof(int64_t)));
    float *staging = runner->dtype == DT_F64
                         ? xmalloc(size_mul(size_mul((size_t)eval_batch, (size_t)ds->sample_size),
                                            sizeof(float)))
                         : NULL;
    double total_loss = 0;
    int64_t correct = 0;
    for (int64_t start = 0; start < ds->count; start += eval_batch) {
        int64_t n = ds->count - start < eval_batch ? ds->count - start : eval_batch;
        for (int64_t i = 0; i < n; i++)
            indices[i] = start + i;
        load_batch(runner, false, data, ds, indices, n, staging);
        runner->run(runner->self, false, n);
        const void *l = runner->output(runner->self, false, "loss");
        const void *logits = runner->output(runner->self, false, "logits");
        total_loss += read_scalar(runner->dtype, l, 0) * (double)n;
        correct += count_correct(runner->dtype, logits,
                                 runner->input(runner->self, false, "labels"), n,
                                 ds->num_classes);
    }
    *loss = total_loss / (double)ds->count;
    *accuracy = (double)correct / (double)ds->count;
    free(indices);
    free(staging);
}

/* Writes one finished line to the run's log file, if any. */
static void log_to_file(const RtTrainConfig *cfg, const char *line)
{
    if (!cfg->log_file)
        return;
    fprintf(cfg->log_file, "%s\n", line);
    fflush(cfg->log_file);
}

/* Prints a progress line: rewritten in place on a terminal until `final`,
 * a plain line otherwise, and always a plain line in the log file.
 * `remaining_steps` and the rate of this interval give the ETA. */
static void log_progress(const RtTrainConfig *cfg, int64_t epoch, int64_t step_in_epoch,
                         int64_t steps_per_epoch, double loss, double accuracy,
                         double learning_rate, double seconds, int64_t steps, int64_t images,
                         int64_t remaining_steps, bool final)
{
    if (!cfg->log && !cfg->log_file)
        return;
    double ms = steps ? 1e3 * seconds / (double)steps : 0;
    double rate = seconds > 0 ? (double)images / seconds : 0;
    char lr[32];
    format_double(lr, sizeof lr, learning_rate);
    char *line = xasprintf("%s  epoch %lld/%lld  step %lld/%lld  loss %.4f  acc %.2f%%  lr %s"
                           "  %.2f ms/step  %.0f img/s  ETA %.0f s",
                           cfg->label, (long long)epoch, (long long)cfg->epochs,
                           (long long)step_in_epoch, (long long)steps_per_epoch, loss,
                           100 * accuracy, lr, ms, rate,
                           1e-3 * ms * (double)remaining_steps);
    if (cfg->log) {
        fprintf(cfg->log, "%s%s%s", cfg->log_is_tty ? "\r" : "", line,
                cfg->log_is_tty && !final ? "\033[K" : "\n");
        fflush(cfg->log);
    }
    log_to_file(cfg, line);
    free(line);
}

/* Sizes the result's arrays for `epochs` epochs and `steps` steps,
 * keeping what a resumed result already holds. */
static void reserve_result(RtTrainResult *result, int64_t epochs, int64_t steps)
{
    result->epochs = xrealloc(result->epochs, size_mul((size_t)epochs + 1, sizeof(RtEpochResult)));
    result->step_losses = xrealloc(result->step_losses, size_mul((size_t)steps + 1, sizeof(float)));
    result->step_lrs = xrealloc(result->step_lrs, size_mul((size_t)steps + 1, sizeof(double)));
}

static bool stop_requested(const RtTrainConfig *cfg)
{
    return cfg->stop && *cfg->stop;
}

/* Calls the checkpoint hook, if any. A failed checkpoint stops the run,
 * because continuing would lose the progress that resume relies on. */
static bool save_checkpoint(const RtTrainConfig *cfg, const RtTrainPosition *pos,
                            RtTrainResult *result)
{
    if (!cfg->checkpoint || cfg->checkpoint(cfg->checkpoint_context, pos, result))
        return true;
    result->checkpoint_failed = true;
    return false;
}

void rt_train(const RtTrainConfig *cfg, RtRunner *runner, const DataSplits *data,
              RtTrainResult *result)
{
    const Dataset *train = &data->train;
    if (!cfg->resume)
        memset(result, 0, sizeof *result);
    result->interrupted = false;
    result->checkpoint_failed = false;
    BOCB_ASSERT(cfg->batch <= runner->max_batch && cfg->eval_batch <= runner->max_eval_batch);

    int64_t steps_per_epoch = (train->count + cfg->batch - 1) / cfg->batch;
    int64_t total_steps = steps_per_epoch * cfg->epochs;
    if (cfg->max_steps && cfg->max_steps < total_steps)
        total_steps = cfg->max_steps;
    reserve_result(result, cfg->epochs, total_steps);

    int64_t *perm = xmalloc(size_mul((size_t)train->count, sizeof(int64_t)));
    float *staging = runner->dtype == DT_F64
                         ? xmalloc(size_mul(size_mul((size_t)cfg->batch, (size_t)train->sample_size),
                                            sizeof(float)))
                         : NULL;
    RtTrainPosition pos = cfg->resume ? *cfg->resume : (RtTrainPosition){.epoch = 1};
    BOCB_ASSERT(pos.step == result->nsteps && pos.epoch == result->nepochs + 1);

    for (; pos.epoch <= cfg->epochs && pos.step < total_steps;
         pos = (RtTrainPosition){.epoch = pos.epoch + 1, .step = pos.step,
                                 .applied = pos.applied}) {
        int64_t epoch = pos.epoch;
        philox_permutation(philox_key(cfg->seed, SHUFFLE_STREAM + (uint32_t)epoch), perm,
                           train->count);
        double start = now_seconds() - pos.seconds, log_start = now_seconds();
        int64_t log_steps = 0, log_images = 0, log_correct = 0, log_seen = 0;
        double log_loss = 0, lr = cfg->lr;

        for (; pos.batch < steps_per_epoch && pos.step < total_steps; pos.batch++) {
            int64_t b = pos.batch;
            int64_t first = b * cfg->batch;
            int64_t n = train->count - first < cfg->batch ? train->count - first : cfg->batch;
            load_batch(runner, true, data, train, perm + first, n, staging);
            if (cfg->augment)
                rt_augment_batch(cfg->augment, cfg->seed, pos.step, runner->dtype,
                                 runner->input(runner->self, true, "x"), 0, n,
                                 train->sample_dims, train->rank, data_byte_value(data, 0));
            if (cfg->schedule)
                lr = rt_schedule_lr(cfg->schedule, pos.step + 1, steps_per_epoch, total_steps);
            write_scalar(runner->dtype, runner->input(runner->self, true, "lr"), lr);
            write_scalar(runner->dtype, runner->input(runner->self, true, "step"),
                         (double)(pos.applied + 1));
            runner->run(runner->self, true, n);
            const char *fault = runner->fault ? runner->fault(runner->self, true) : NULL;
            if (cfg->clip && !isfinite(read_scalar(runner->dtype, runner->output(runner->self,
                                                   true, "grad_norm"), 0)))
                pos.skipped++;
            else
                pos.applied++;

            double loss = read_scalar(runner->dtype, runner->output(runner->self, true, "loss"), 0);
            int64_t c = count_correct(runner->dtype, runner->output(runner->self, true, "logits"),
                                      runner->input(runner->self, true, "labels"), n,
                                      train->num_classes);
            result->step_lrs[pos.step] = lr;
            result->step_losses[pos.step++] = (float)loss;
            result->nsteps = pos.step;
            if (fault || !isfinite(loss)) {
                result->diverged = true;
                result->diverged_step = pos.step;
                if (fault)
                    snprintf(result->diverged_reason, sizeof result->diverged_reason, "%s",
                             fault);
                else
                    snprintf(result->diverged_reason, sizeof result->diverged_reason,
                             "the training loss is %g", loss);
                break;
            }
            pos.loss_sum += loss;
            pos.correct += c;
            pos.seen += n;
            pos.epoch_steps++;
            log_loss += loss;
            log_correct += c;
            log_seen += n;
            log_steps++;
            log_images += n;

            bool last = b + 1 == steps_per_epoch || pos.step == total_steps;
            if (log_steps == cfg->log_every || last) {
                double now = now_seconds();
                log_progress(cfg, epoch, b + 1, steps_per_epoch, log_loss / (double)log_steps,
                             (double)log_correct / (double)log_seen, lr, now - log_start,
                             log_steps, log_images, total_steps - pos.step, last);
                log_start = now;
                log_loss = 0;
                log_correct = log_seen = log_steps = log_images = 0;
            }

            bool periodic = cfg->checkpoint_every && pos.step % cfg->checkpoint_every == 0;
            if ((periodic && !last) || stop_requested(cfg)) {
                RtTrainPosition saved = pos;
                saved.batch = b + 1;
                saved.seconds = now_seconds() - start;
                if (!save_checkpoint(cfg, &saved, result) || stop_requested(cfg)) {
                    result->interrupted = !result->checkpoint_failed;
                    goto done;
                }
            }
        }
        RtEpochResult *er = &result->epochs[result->nepochs++];
        er->epoch = epoch;
        er->steps = pos.step;
        er->seconds = now_seconds() - start;
        er->skipped = pos.skipped;
        result->skipped += pos.skipped;
        er->train_loss = pos.epoch_steps ? pos.loss_sum / (double)pos.epoch_steps : NAN;
        er->train_accuracy = pos.seen ? (double)pos.correct / (double)pos.seen : NAN;
        er->test_loss = er->test_accuracy = NAN;
        if (!result->diverged) {
            rt_evaluate(runner, data, &data->test, cfg->eval_batch, &er->test_loss,
                        &er->test_accuracy);
            if (!isfinite(er->test_loss)) {
                result->diverged = true;
                result->diverged_step = pos.step;
                snprintf(result->diverged_reason, sizeof result->diverged_reason,
                         "the test loss is %g after epoch %lld", er->test_loss,
                         (long long)epoch);
            }
        }
        if (result->diverged) {
            char *line = xasprintf("%s  diverged at step %lld: %s; this cell stops here",
                                   cfg->label, (long long)result->diverged_step,
                                   result->diverged_reason);
            if (cfg->log)
                fprintf(cfg->log, "%s%s\n", cfg->log_is_tty ? "\n" : "", line);
            log_to_file(cfg, line);
            free(line);
            break;
        }
        StrBuf line = {0};
        sb_printf(&line, "%s  epoch %lld: train loss %.4f, train acc %.2f%%, test loss "
                  "%.4f, test acc %.2f%%, %.1f s", cfg->label, (long long)epoch,
                  er->train_loss, 100 * er->train_accuracy, er->test_loss,
                  100 * er->test_accuracy, er->seconds);
        if (pos.skipped)
            sb_printf(&line, ", %lld step%s skipped (gradient norm not finite)",
                      (long long)pos.skipped, pos.skipped == 1 ? "" : "s");
        if (cfg->log)
            fprintf(cfg->log, "%s\n", line.data);
        log_to_file(cfg, line.data);
        sb_free(&line);

        /* The epoch is complete: the next position is the start of the next one. */
        bool finished = epoch == cfg->epochs || pos.step == total_steps;
        if (!finished) {
            RtTrainPosition next = {.epoch = epoch + 1, .step = pos.step,
                                    .applied = pos.applied};
            if (!save_checkpoint(cfg, &next, result) || stop_requested(cfg)) {
                result->interrupted = !result->checkpoint_failed;
                break;
            }
        }
    }
done:
    free(perm);
    free(staging);
}

void rt_train_result_free(RtTrainResult *r)
{
    free(r->epochs);
    free(r->step_losses);
    free(r->step_lrs);
    memset(r, 0, sizeof *r);
}
