/* test_train_loop.c - the training loop's schedule and skipped steps.
 *
 * rt_train drives a fake RtRunner that records the lr and step inputs of
 * every training step and reports a non-finite grad_norm on chosen steps.
 * The expected rates are computed by hand.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../runtime/train.h"

enum { SAMPLES = 8, BATCH = 2, CLASSES = 2, MAX_STEPS = 64 };

typedef struct Fake {
    float x[BATCH], logits[BATCH * CLASSES], loss, grad_norm;
    int32_t labels[BATCH];
    float lr_seen[MAX_STEPS], step_seen[MAX_STEPS];
    float lr, step;
    int runs;
    const bool *skip; /* skip[i]: step i + 1 reports an infinite grad_norm */
} Fake;

static void *fake_input(void *self, bool train, const char *name)
{
    Fake *f = self;
    (void)train;
    if (strcmp(name, "x") == 0)
        return f->x;
    if (strcmp(name, "labels") == 0)
        return f->labels;
    if (strcmp(name, "lr") == 0)
        return &f->lr;
    if (strcmp(name, "step") == 0)
        return &f->step;
    return NULL;
}

static void fake_run(void *self, bool train, int64_t batch)
{
    Fake *f = self;
    (void)batch;
    f->loss = 1.0f;
    memset(f->logits, 0, sizeof f->logits);
    if (!train)
        return;
    cr_assert(f->runs < MAX_STEPS);
    f->lr_seen[f->runs] = f->lr;
    f->step_seen[f->runs] = f->step;
    f->grad_norm = f->skip && f->skip[f->runs] ? INFINITY : 1.0f;
    f->runs++;
}

static const void *fake_output(void *self, bool train, const char *name)
{
    Fake *f = self;
    (void)train;
    if (strcmp(name, "loss") == 0)
        return &f->loss;
    if (strcmp(name, "logits") == 0)
        return f->logits;
    if (strcmp(name, "grad_norm") == 0)
        return &f->grad_norm;
    return NULL;
}

/* A dataset of SAMPLES one-pixel images, in both splits. */
static void make_data(DataSplits *d, uint8_t *pixels, int32_t *labels)
{
    memset(d, 0, sizeof *d);
    for (int i = 0; i < SAMPLES; i++) {
        pixels[i] = (uint8_t)i;
        labels[i] = i % CLASSES;
    }
    Dataset ds = {.path = "memory", .count = SAMPLES, .rank = 1, .sample_dims = {1},
                  .sample_size = 1, .images = pixels, .labels = labels,
                  .num_classes = CLASSES};
    d->train = ds;
    d->test = ds;
    d->normalize = NORMALIZE_UNIT;
}

static void train(Fake *f, const RtSchedule *schedule, bool clip, int64_t epochs,
                  RtTrainResult *result)
{
    uint8_t pixels[SAMPLES];
    int32_t labels[SAMPLES];
    DataSplits data;
    make_data(&data, pixels, labels);
    RtRunner runner = {.self = f, .dtype = DT_F32, .max_batch = BATCH,
                       .max_eval_batch = BATCH, .input = fake_input, .run = fake_run,
                       .output = fake_output};
    RtTrainConfig cfg = {.label = "fake", .epochs = epochs, .batch = BATCH,
                         .eval_batch = BATCH, .log_every = 100, .lr = 0.4,
                         .schedule = schedule, .clip = clip};
    rt_train(&cfg, &runner, &data, result);
}

Test(train_loop, schedule_feeds_lr)
{
    /* 2 epochs of 4 steps: warmup over the first epoch from 0 to 0.4, then
     * a cosine over steps 5..8 down to 0.1. */
    RtSchedule s = {.kind = RT_SCHEDULE_WARMUP_COSINE, .base_lr = 0.4, .min_lr = 0.1,
                    .warmup_epochs = 1};
    Fake f = {0};
    RtTrainResult r;
    train(&f, &s, false, 2, &r);
    cr_assert_eq(f.runs, 8);
    const double want[8] = {0, 0.1, 0.2, 0.3, 0.4, 0.325, 0.175, 0.1};
    for (int i = 0; i < 8; i++) {
        cr_expect(fabs(f.lr_seen[i] - want[i]) < 1e-7, "step %d: lr %g, expected %g", i + 1,
                  f.lr_seen[i], want[i]);
        cr_expect(fabs(r.step_lrs[i] - want[i]) < 1e-15, "step %d: recorded lr %.17g", i + 1,
                  r.step_lrs[i]);
        cr_expect_eq(f.step_seen[i], (float)(i + 1));
    }
    cr_expect_eq(r.skipped, 0);
    rt_train_result_free(&r);
}

Test(train_loop, skipped_steps_counted)
{
    /* Steps 2 and 3 report an infinite gradient norm. */
    const bool skip[8] = {false, true, true, false, false, false, false, false};
    Fake f = {.skip = skip};
    RtTrainResult r;
    train(&f, NULL, true, 2, &r);
    cr_assert_eq(f.runs, 8);
    cr_expect_eq(r.skipped, 2);
    cr_expect_eq(r.epochs[0].skipped, 2);
    cr_expect_eq(r.epochs[1].skipped, 0);
    cr_expect(!r.diverged);
    /* The optimizer's step counts applied updates only. */
    const float want[8] = {1, 2, 2, 2, 3, 4, 5, 6};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(f.step_seen[i], want[i], "step %d: step input %g, expected %g", i + 1,
                     f.step_seen[i], want[i]);
    rt_train_result_free(&r);
}

Test(train_loop, grad_norm_ignored_without_clip)
{
    const bool skip[4] = {true, true, true, true};
    Fake f = {.skip = skip};
    RtTrainResult r;
    train(&f, NULL, false, 1, &r);
    cr_expect_eq(r.skipped, 0);
    cr_expect_eq(f.step_seen[3], 4.0f);
    rt_train_result_free(&r);
}
