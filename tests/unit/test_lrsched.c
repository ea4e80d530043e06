/* test_lrsched.c - learning-rate schedules against hand-computed values.
 *
 * Each case fixes steps_per_epoch and total_steps small enough that every
 * expected rate is written out below by hand (the cosine values are
 * (1 + cos(pi * k / n)) / 2 for the listed k and n). The first and last
 * step of each schedule, and the first step after a warmup, are compared
 * with ==, because the schedules promise them without rounding error.
 * A last test compares whole runs with torch.optim.lr_scheduler
 * (torch_reference.h, from make_torch_reference.py).
 */
#include <criterion/criterion.h>
#include <math.h>

#include "../../runtime/lrsched.h"
#include "torch_reference.h"

static void expect_lr(const RtSchedule *s, int64_t step, int64_t per_epoch, int64_t total,
                      double want)
{
    double got = rt_schedule_lr(s, step, per_epoch, total);
    cr_expect(fabs(got - want) <= 1e-15 * fmax(1, fabs(want)),
              "step %lld: lr %.17g, expected %.17g", (long long)step, got, want);
}

static void expect_exact(const RtSchedule *s, int64_t step, int64_t per_epoch, int64_t total,
                         double want)
{
    double got = rt_schedule_lr(s, step, per_epoch, total);
    cr_expect(got == want, "step %lld: lr %.17g, expected exactly %.17g", (long long)step,
              got, want);
}

Test(lrsched, constant)
{
    RtSchedule s = {.kind = RT_SCHEDULE_CONSTANT, .base_lr = 0.05};
    expect_exact(&s, 1, 10, 30, 0.05);
    expect_exact(&s, 30, 10, 30, 0.05);
    expect_exact(&s, 31, 10, 30, 0.05);
}

Test(lrsched, cosine_ends_and_middle)
{
    /* 5 steps: progress 0, 1/4, 1/2, 3/4, 1 */
    RtSchedule s = {.kind = RT_SCHEDULE_COSINE, .base_lr = 1.0, .min_lr = 0.0};
    expect_exact(&s, 1, 5, 5, 1.0);
    expect_lr(&s, 2, 5, 5, 0.85355339059327373); /* (1 + sqrt(2)/2) / 2 */
    expect_lr(&s, 3, 5, 5, 0.5);
    expect_lr(&s, 4, 5, 5, 0.14644660940672624); /* (1 - sqrt(2)/2) / 2 */
    expect_exact(&s, 5, 5, 5, 0.0);
}

Test(lrsched, cosine_min_lr_and_past_end)
{
    RtSchedule s = {.kind = RT_SCHEDULE_COSINE, .base_lr = 0.1, .min_lr = 1e-6};
    expect_exact(&s, 1, 4, 9, 0.1);
    expect_lr(&s, 5, 4, 9, 0.5 * (0.1 + 1e-6)); /* the midpoint */
    expect_exact(&s, 9, 4, 9, 1e-6);
    expect_exact(&s, 10, 4, 9, 1e-6);
    expect_exact(&s, 1000, 4, 9, 1e-6);
}

Test(lrsched, cosine_of_one_step)
{
    RtSchedule s = {.kind = RT_SCHEDULE_COSINE, .base_lr = 0.3, .min_lr = 0.1};
    expect_exact(&s, 1, 1, 1, 0.3);
    expect_exact(&s, 2, 1, 1, 0.1);
}

Test(lrsched, warmup_reaches_peak)
{
    /* 0.5 epochs of 4 steps = 2 warmup steps, from 0.25 * base. */
    RtSchedule s = {.kind = RT_SCHEDULE_WARMUP, .base_lr = 0.4, .warmup_epochs = 0.5,
                    .start_factor = 0.25};
    cr_expect_eq(rt_schedule_warmup_steps(&s, 4), 2);
    expect_exact(&s, 1, 4, 20, 0.1);
    expect_lr(&s, 2, 4, 20, 0.25); /* 0.4 * (0.25 + 0.75 / 2) */
    expect_exact(&s, 3, 4, 20, 0.4);
    expect_exact(&s, 20, 4, 20, 0.4);
}

Test(lrsched, warmup_of_less_than_a_step)
{
    RtSchedule s = {.kind = RT_SCHEDULE_WARMUP, .base_lr = 1.0, .warmup_epochs = 0.01};
    cr_expect_eq(rt_schedule_warmup_steps(&s, 10), 1);
    expect_exact(&s, 1, 10, 20, 0.0);
    expect_exact(&s, 2, 10, 20, 1.0);
}

Test(lrsched, warmup_cosine)
{
    /* 1 epoch of 4 steps of warmup from 0, then a cosine over steps 5..13
     * (8 intervals) from 2 down to 0.2. */
    RtSchedule s = {.kind = RT_SCHEDULE_WARMUP_COSINE, .base_lr = 2.0, .min_lr = 0.2,
                    .warmup_epochs = 1};
    expect_exact(&s, 1, 4, 13, 0.0);
    expect_lr(&s, 2, 4, 13, 0.5);
    expect_lr(&s, 3, 4, 13, 1.0);
    expect_lr(&s, 4, 4, 13, 1.5);
    expect_exact(&s, 5, 4, 13, 2.0);
    expect_lr(&s, 7, 4, 13, 0.2 + 1.8 * 0.85355339059327373); /* progress 2/8 */
    expect_lr(&s, 9, 4, 13, 1.1);                             /* progress 1/2 */
    expect_exact(&s, 13, 4, 13, 0.2);
    expect_exact(&s, 14, 4, 13, 0.2);
}

Test(lrsched, warmup_longer_than_run)
{
    RtSchedule s = {.kind = RT_SCHEDULE_WARMUP_COSINE, .base_lr = 1.0, .warmup_epochs = 10};
    expect_exact(&s, 1, 1, 5, 0.0);
    expect_lr(&s, 5, 1, 5, 0.4);
}

Test(lrsched, step_decays_per_epoch)
{
    /* every 2 epochs of 3 steps, gamma 0.5 */
    RtSchedule s = {.kind = RT_SCHEDULE_STEP, .base_lr = 0.8, .gamma = 0.5, .every = 2};
    expect_exact(&s, 1, 3, 20, 0.8);
    expect_exact(&s, 6, 3, 20, 0.8);
    expect_exact(&s, 7, 3, 20, 0.4);
    expect_exact(&s, 12, 3, 20, 0.4);
    expect_exact(&s, 13, 3, 20, 0.2);
    expect_exact(&s, 20, 3, 20, 0.1);
}

Test(lrsched, multistep_milestones)
{
    RtSchedule s = {.kind = RT_SCHEDULE_MULTISTEP, .base_lr = 1.0, .gamma = 0.1,
                    .milestones = {1, 3}, .nmilestones = 2};
    expect_exact(&s, 1, 2, 10, 1.0);
    expect_exact(&s, 2, 2, 10, 1.0);
    expect_lr(&s, 3, 2, 10, 0.1);
    expect_lr(&s, 6, 2, 10, 0.1);
    expect_lr(&s, 7, 2, 10, 0.01);
    expect_lr(&s, 10, 2, 10, 0.01);
}

Test(lrsched, exponential_per_epoch)
{
    RtSchedule s = {.kind = RT_SCHEDULE_EXPONENTIAL, .base_lr = 1.0, .gamma = 0.9};
    expect_exact(&s, 1, 2, 6, 1.0);
    expect_exact(&s, 2, 2, 6, 1.0);
    expect_lr(&s, 3, 2, 6, 0.9);
    expect_lr(&s, 5, 2, 6, 0.81);
    expect_lr(&s, 6, 2, 6, 0.81);
}

/* The same schedules as PyTorch 1.13's StepLR, MultiStepLR and
 * ExponentialLR stepped per epoch, CosineAnnealingLR and LinearLR stepped
 * per step, and SequentialLR of the two. */
static void expect_run(const RtSchedule *s, int64_t per_epoch, const double *want, int64_t n,
                       const char *name)
{
    for (int64_t step = 1; step <= n; step++) {
        double got = rt_schedule_lr(s, step, per_epoch, n);
        cr_expect(fabs(got - want[step - 1]) <= 1e-12 * fabs(want[step - 1]),
                  "%s, step %lld: lr %.17g, torch %.17g", name, (long long)step, got,
                  want[step - 1]);
    }
}

Test(lrsched, matches_torch)
{
    RtSchedule step = {.kind = RT_SCHEDULE_STEP, .base_lr = 0.8, .gamma = 0.5, .every = 2};
    expect_run(&step, 3, torch_step_lr, 15, "step");
    RtSchedule multistep = {.kind = RT_SCHEDULE_MULTISTEP, .base_lr = 1.0, .gamma = 0.1,
                            .milestones = {1, 3}, .nmilestones = 2};
    expect_run(&multistep, 2, torch_multistep_lr, 10, "multistep");
    RtSchedule exponential = {.kind = RT_SCHEDULE_EXPONENTIAL, .base_lr = 1.0, .gamma = 0.9};
    expect_run(&exponential, 2, torch_exponential_lr, 8, "exponential");
    RtSchedule cosine = {.kind = RT_SCHEDULE_COSINE, .base_lr = 0.1, .min_lr = 1e-6};
    expect_run(&cosine, 3, torch_cosine_lr, 9, "cosine");
    RtSchedule warmup = {.kind = RT_SCHEDULE_WARMUP, .base_lr = 0.4, .warmup_epochs = 0.5,
                         .start_factor = 0.25};
    expect_run(&warmup, 4, torch_warmup_lr, 6, "warmup");
    RtSchedule warmup_cosine = {.kind = RT_SCHEDULE_WARMUP_COSINE, .base_lr = 2.0,
                                .min_lr = 0.2, .warmup_epochs = 1, .start_factor = 0.25};
    expect_run(&warmup_cosine, 4, torch_warmup_cosine_lr, 13, "warmup_cosine");
}
