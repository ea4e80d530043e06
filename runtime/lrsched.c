/* lrsched.c - learning-rate schedules (see lrsched.h for the conventions). */
#include "lrsched.h"

#include <math.h>

int64_t rt_schedule_warmup_steps(const RtSchedule *s, int64_t steps_per_epoch)
{
    if (s->kind != RT_SCHEDULE_WARMUP && s->kind != RT_SCHEDULE_WARMUP_COSINE)
        return 0;
    if (!(s->warmup_epochs > 0))
        return 0;
    int64_t w = llround(s->warmup_epochs * (double)steps_per_epoch);
    return w < 1 ? 1 : w;
}

/* Interpolates from `start` (progress 0) to `end` (progress 1) along half a
 * cosine. The weights are exactly 1 and 0 at the ends, so both ends are
 * returned without rounding error. */
static double cosine_between(double start, double end, double progress)
{
    if (progress <= 0)
        return start;
    if (progress >= 1)
        return end;
    const double pi = 3.14159265358979323846;
    double c = 0.5 * (1 + cos(pi * progress));
    return start * c + end * (1 - c);
}

/* Returns the factor of a per-epoch schedule for epoch k (from 0). */
static double epoch_factor(const RtSchedule *s, int64_t k)
{
    switch (s->kind) {
    case RT_SCHEDULE_STEP:
        return pow(s->gamma, (double)(k / s->every));
    case RT_SCHEDULE_MULTISTEP: {
        int passed = 0;
        for (int i = 0; i < s->nmilestones; i++)
            passed += s->milestones[i] <= k;
        return pow(s->gamma, passed);
    }
    case RT_SCHEDULE_EXPONENTIAL:
        return pow(s->gamma, (double)k);
    default:
        return 1;
    }
}

/* The cosine part of a schedule: from base_lr at step warmup + 1 to min_lr
 * at total_steps. A cosine of one step stays at base_lr. */
static double cosine_lr(const RtSchedule *s, int64_t step, int64_t warmup, int64_t total_steps)
{
    int64_t span = total_steps - warmup - 1;
    double progress = span > 0 ? (double)(step - warmup - 1) / (double)span
                               : step > total_steps ? 1 : 0;
    return cosine_between(s->base_lr, s->min_lr, progress);
}

double rt_schedule_lr(const RtSchedule *s, int64_t step, int64_t steps_per_epoch,
                      int64_t total_steps)
{
    int64_t warmup = rt_schedule_warmup_steps(s, steps_per_epoch);
    switch (s->kind) {
    case RT_SCHEDULE_CONSTANT:
        return s->base_lr;
    case RT_SCHEDULE_STEP:
    case RT_SCHEDULE_MULTISTEP:
    case RT_SCHEDULE_EXPONENTIAL:
        return s->base_lr * epoch_factor(s, (step - 1) / steps_per_epoch);
    case RT_SCHEDULE_WARMUP:
    case RT_SCHEDULE_WARMUP_COSINE:
        if (step <= warmup) {
            /* Step 1 gets base_lr * start_factor; step warmup + 1, the
             * first one after the warmup, gets base_lr. */
            double f = s->start_factor +
                       (1 - s->start_factor) * (double)(step - 1) / (double)warmup;
            return s->base_lr * f;
        }
        if (s->kind == RT_SCHEDULE_WARMUP)
            return s->base_lr;
        return cosine_lr(s, step, warmup, total_steps);
    case RT_SCHEDULE_COSINE:
        return cosine_lr(s, step, 0, total_steps);
    }
    return s->base_lr;
}
