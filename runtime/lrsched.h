/* lrsched.h - learning-rate schedules, evaluated once per training step.
 *
 * A schedule maps the step number s (counted from 1) to the learning rate
 * fed to the compiled step as its `lr` input, so changing the rate never
 * recompiles anything. Durations are in epochs, as in PyTorch's and timm's
 * schedulers. Two kinds of schedule exist:
 *
 * - per-epoch schedules (step, multistep, exponential) hold the rate for
 *   a whole epoch, like a PyTorch scheduler stepped once per epoch: during
 *   epoch k (counted from 0) the rate is base_lr * gamma^n(k);
 * - per-step schedules (cosine, warmup, warmup_cosine) change it every
 *   step, like timm's schedulers with per-update stepping.
 *
 * The rate is exact at the ends: the first step of a schedule gets its
 * start value, the last step of a cosine gets min_lr, and the first step
 * after a warmup gets base_lr, each computed without rounding error.
 */
#ifndef BOCB_LRSCHED_H
#define BOCB_LRSCHED_H

#include <stdint.h>

typedef enum RtScheduleKind {
    RT_SCHEDULE_CONSTANT,
    RT_SCHEDULE_STEP,          /* gamma^(k / every) */
    RT_SCHEDULE_MULTISTEP,     /* gamma^(milestones <= k) */
    RT_SCHEDULE_EXPONENTIAL,   /* gamma^k */
    RT_SCHEDULE_COSINE,        /* base_lr to min_lr over every step */
    RT_SCHEDULE_WARMUP,        /* linear warmup, then constant */
    RT_SCHEDULE_WARMUP_COSINE, /* linear warmup, then cosine to min_lr */
} RtScheduleKind;

enum { RT_MAX_MILESTONES = 64 };

typedef struct RtSchedule {
    RtScheduleKind kind;
    double base_lr;         /* the optimizer's lr: the peak of the schedule */
    double gamma;           /* decay factor of the per-epoch schedules */
    int64_t every;          /* step: epochs between two decays */
    int64_t milestones[RT_MAX_MILESTONES]; /* multistep: increasing epochs */
    int nmilestones;
    double min_lr;          /* cosine, warmup_cosine: the rate of the last step */
    double warmup_epochs;   /* warmup, warmup_cosine */
    double start_factor;    /* warmup: the first step's rate is base_lr * start_factor */
} RtSchedule;

/* Returns the number of warmup steps: warmup_epochs * steps_per_epoch,
 * rounded to the nearest step, and at least 1 when warmup_epochs > 0. */
int64_t rt_schedule_warmup_steps(const RtSchedule *s, int64_t steps_per_epoch);

/* Returns the learning rate of step `step` (from 1) of a run of
 * `total_steps` steps with `steps_per_epoch` steps per epoch. Steps past
 * total_steps keep the final value of a cosine (min_lr) and continue the
 * per-epoch schedules. */
double rt_schedule_lr(const RtSchedule *s, int64_t step, int64_t steps_per_epoch,
                      int64_t total_steps);

#endif
