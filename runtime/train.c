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

static void log_progress(const RtTrainConfig *cfg, int64_t epoch, int64_t step_in_epoch,
                         int64_t steps_per_epoch, double loss, double accuracy,
                         double learning_rate, double seconds, int64_t steps, int64_t images,
                         bool final)
{
    if (!cfg->log)
        return;
    double ms = steps ? 1e3 * seconds / (double)steps : 0;
    double rate = seconds > 0 ? (double)images / seconds : 0;
    char lr[32];
    format_double(lr, sizeof lr, learning_rate);
    fprintf(cfg->log, "%s%s  epoch %lld/%lld  step %lld/%lld  loss %.4f  acc %.2f%%  lr %s"
            "  %.2f ms/step  %.0f img/s%s",
            cfg->log_is_tty ? "\r" : "", cfg->label, (long long)epoch,
            (long long)cfg->epochs, (long long)step_in_epoch, (long long)steps_per_epoch,
            loss, 100 * accuracy, lr, ms, rate,
            cfg->log_is_tty && !final ? "\033[K" : "\n");
    fflush(cfg->log);
}

void rt_train(const RtTrainConfig *cfg, RtRunner *runner, const DataSplits *data,
              RtTrainResult *result)
{
    const Dataset *train = &data->train;
    memset(result, 0, sizeof *result);
    BOCB_ASSERT(cfg->batch <= runner->max_batch && cfg->eval_batch <= runner->max_eval_batch);

    int64_t steps_per_epoch = (train->count + cfg->batch - 1) / cfg->batch;
    int64_t total_steps = steps_per_epoch * cfg->epochs;
    if (cfg->max_steps && cfg->max_steps < total_steps)
        total_steps = cfg->max_steps;
    result->epochs = xcalloc((size_t)cfg->epochs + 1, sizeof(RtEpochResult));
    result->step_losses = xcalloc((size_t)total_steps + 1, sizeof(float));
    result->step_lrs = xcalloc((size_t)total_steps + 1, sizeof(double));

    int64_t *perm = xmalloc(size_mul((size_t)train->count, sizeof(int64_t)));
    float *staging = runner->dtype == DT_F64
                         ? xmalloc(size_mul(size_mul((size_t)cfg->batch, (size_t)train->sample_size),
                                            sizeof(float)))
                         : NULL;
    int64_t step = 0, applied = 0;

    for (int64_t epoch = 1; epoch <= cfg->epochs && step < total_steps; epoch++) {
        philox_permutation(philox_key(cfg->seed, SHUFFLE_STREAM + (uint32_t)epoch), perm,
                           train->count);
        double start = now_seconds(), loss_sum = 0, log_start = start;
        int64_t correct = 0, seen = 0, epoch_steps = 0, log_steps = 0, log_images = 0;
        int64_t log_correct = 0, log_seen = 0, skipped = 0;
        double log_loss = 0, lr = cfg->lr;

        for (int64_t b = 0; b < steps_per_epoch && step < total_steps; b++) {
            int64_t first = b * cfg->batch;
            int64_t n = train->count - first < cfg->batch ? train->count - first : cfg->batch;
            load_batch(runner, true, data, train, perm + first, n, staging);
            if (cfg->schedule)
                lr = rt_schedule_lr(cfg->schedule, step + 1, steps_per_epoch, total_steps);
            write_scalar(runner->dtype, runner->input(runner->self, true, "lr"), lr);
            write_scalar(runner->dtype, runner->input(runner->self, true, "step"),
                         (double)(applied + 1));
            runner->run(runner->self, true, n);
            const char *fault = runner->fault ? runner->fault(runner->self, true) : NULL;
            if (cfg->clip && !isfinite(read_scalar(runner->dtype, runner->output(runner->self,
                                                   true, "grad_norm"), 0)))
                skipped++;
            else
                applied++;

            double loss = read_scalar(runner->dtype, runner->output(runner->self, true, "loss"), 0);
            int64_t c = count_correct(runner->dtype, runner->output(runner->self, true, "logits"),
                                      runner->input(runner->self, true, "labels"), n,
                                      train->num_classes);
            result->step_lrs[step] = lr;
            result->step_losses[step++] = (float)loss;
            result->nsteps = step;
            if (fault || !isfinite(loss)) {
                result->diverged = true;
                result->diverged_step = step;
                if (fault)
                    snprintf(result->diverged_reason, sizeof result->diverged_reason, "%s",
                             fault);
                else
                    snprintf(result->diverged_reason, sizeof result->diverged_reason,
                             "the training loss is %g", loss);
                break;
            }
            loss_sum += loss;
            correct += c;
            seen += n;
            epoch_steps++;
            log_loss += loss;
            log_correct += c;
            log_seen += n;
            log_steps++;
            log_images += n;

            bool last = b + 1 == steps_per_epoch || step == total_steps;
            if (log_steps == cfg->log_every || last) {
                double now = now_seconds();
                log_progress(cfg, epoch, b + 1, steps_per_epoch, log_loss / (double)log_steps,
                             (double)log_correct / (double)log_seen, lr, now - log_start,
                             log_steps, log_images, last);
                log_start = now;
                log_loss = 0;
                log_correct = log_seen = log_steps = log_images = 0;
            }
        }
        RtEpochResult *er = &result->epochs[result->nepochs++];
        er->epoch = epoch;
        er->steps = step;
        er->seconds = now_seconds() - start;
        er->skipped = skipped;
        result->skipped += skipped;
        er->train_loss = epoch_steps ? loss_sum / (double)epoch_steps : NAN;
        er->train_accuracy = seen ? (double)correct / (double)seen : NAN;
        er->test_loss = er->test_accuracy = NAN;
        if (!result->diverged) {
            rt_evaluate(runner, data, &data->test, cfg->eval_batch, &er->test_loss,
                        &er->test_accuracy);
            if (!isfinite(er->test_loss)) {
                result->diverged = true;
                result->diverged_step = step;
                snprintf(result->diverged_reason, sizeof result->diverged_reason,
                         "the test loss is %g after epoch %lld", er->test_loss,
                         (long long)epoch);
            }
        }
        if (result->diverged) {
            if (cfg->log)
                fprintf(cfg->log, "%s%s  diverged at step %lld: %s; this cell stops here\n",
                        cfg->log_is_tty ? "\n" : "", cfg->label,
                        (long long)result->diverged_step, result->diverged_reason);
            break;
        }
        if (cfg->log)
            fprintf(cfg->log, "%s  epoch %lld: train loss %.4f, train acc %.2f%%, test loss "
                    "%.4f, test acc %.2f%%, %.1f s", cfg->label, (long long)epoch,
                    er->train_loss, 100 * er->train_accuracy, er->test_loss,
                    100 * er->test_accuracy, er->seconds);
        if (cfg->log && skipped)
            fprintf(cfg->log, ", %lld step%s skipped (gradient norm not finite)",
                    (long long)skipped, skipped == 1 ? "" : "s");
        if (cfg->log)
            fputc('\n', cfg->log);
    }
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
