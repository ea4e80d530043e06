/* test_augment.c - random crop with padding and horizontal flip.
 *
 * The transform is checked pixel by pixel on a hand-made 4 x 4 image whose
 * pixel (y, x) is 10 * y + x, for chosen offsets. The draws are
 * checked for range, determinism in the seed and the step, and their
 * frequencies. A fake runner checks that rt_train augments training
 * batches only.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../runtime/augment.h"
#include "../../runtime/train.h"

enum { SIDE = 4 };

static void make_image(float *img)
{
    for (int y = 0; y < SIDE; y++)
        for (int x = 0; x < SIDE; x++)
            img[y * SIDE + x] = (float)(10 * y + x);
}

/* Applies `draw` with padding 1 and fill -1 to the test image. */
static void transform(RtAugmentDraw draw, bool crop, bool flip, float *out)
{
    RtAugment aug = {.crop = crop, .padding = 1, .flip = flip, .flip_p = 0.5};
    float scratch[SIDE * SIDE];
    make_image(out);
    rt_augment_image(&aug, draw, DT_F32, out, 1, SIDE, SIDE, -1.0, scratch);
}

static void expect_image(const float *got, const float *want)
{
    for (int i = 0; i < SIDE * SIDE; i++)
        cr_expect_eq(got[i], want[i], "pixel (%d, %d): %g, expected %g", i / SIDE, i % SIDE,
                     got[i], want[i]);
}

Test(augment, crop_offsets_move_the_window)
{
    /* Offsets (dy, dx) = (0, 2) in the image padded by 1: the window starts
     * one row above the image and one column right of its left edge. */
    float got[SIDE * SIDE];
    transform((RtAugmentDraw){.dy = 0, .dx = 2}, true, false, got);
    const float want[SIDE * SIDE] = {
        -1, -1, -1, -1,
        1, 2, 3, -1,
        11, 12, 13, -1,
        21, 22, 23, -1,
    };
    expect_image(got, want);
}

Test(augment, centred_crop_is_identity)
{
    float got[SIDE * SIDE], want[SIDE * SIDE];
    transform((RtAugmentDraw){.dy = 1, .dx = 1}, true, false, got);
    make_image(want);
    expect_image(got, want);
}

Test(augment, flip_mirrors_columns)
{
    float got[SIDE * SIDE];
    transform((RtAugmentDraw){.flip = true}, false, true, got);
    const float want[SIDE * SIDE] = {
        3, 2, 1, 0,
        13, 12, 11, 10,
        23, 22, 21, 20,
        33, 32, 31, 30,
    };
    expect_image(got, want);
}

Test(augment, crop_then_flip)
{
    /* The crop of (dy, dx) = (2, 0), mirrored, as torchvision's RandomCrop
     * followed by RandomHorizontalFlip. */
    float got[SIDE * SIDE];
    transform((RtAugmentDraw){.dy = 2, .dx = 0, .flip = true}, true, true, got);
    const float want[SIDE * SIDE] = {
        12, 11, 10, -1,
        22, 21, 20, -1,
        32, 31, 30, -1,
        -1, -1, -1, -1,
    };
    expect_image(got, want);
}

Test(augment, channels_and_f64)
{
    /* Two planes of a 2 x 2 double image; each plane gets the same window. */
    RtAugment aug = {.crop = true, .padding = 1};
    double img[8] = {1, 2, 3, 4, 5, 6, 7, 8}, scratch[4];
    rt_augment_image(&aug, (RtAugmentDraw){.dy = 2, .dx = 2}, DT_F64, img, 2, 2, 2, 0.5,
                     scratch);
    const double want[8] = {4, 0.5, 0.5, 0.5, 8, 0.5, 0.5, 0.5};
    for (int i = 0; i < 8; i++)
        cr_expect_eq(img[i], want[i], "element %d: %g, expected %g", i, img[i], want[i]);
}

Test(augment, draws_are_deterministic)
{
    RtAugment aug = {.crop = true, .padding = 4, .flip = true, .flip_p = 0.5};
    int differ_seed = 0, differ_step = 0;
    for (int i = 0; i < 64; i++) {
        RtAugmentDraw a = rt_augment_draw(&aug, 7, 3, i), b = rt_augment_draw(&aug, 7, 3, i);
        cr_expect(a.dy == b.dy && a.dx == b.dx && a.flip == b.flip, "sample %d", i);
        RtAugmentDraw c = rt_augment_draw(&aug, 8, 3, i), d = rt_augment_draw(&aug, 7, 4, i);
        differ_seed += c.dy != a.dy || c.dx != a.dx || c.flip != a.flip;
        differ_step += d.dy != a.dy || d.dx != a.dx || d.flip != a.flip;
    }
    /* A draw repeats by chance with probability 1/162 per sample. */
    cr_expect_gt(differ_seed, 55);
    cr_expect_gt(differ_step, 55);
}

Test(augment, draw_frequencies)
{
    /* 20000 draws with padding 2: each of the 5 offsets per axis about 4000
     * times, flips about 5000 times at p = 0.25. Bounds are 5 standard
     * deviations of the binomial counts. */
    RtAugment aug = {.crop = true, .padding = 2, .flip = true, .flip_p = 0.25};
    int dy[5] = {0}, dx[5] = {0}, flips = 0;
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        RtAugmentDraw d = rt_augment_draw(&aug, 1, i / 100, i % 100);
        cr_assert(d.dy >= 0 && d.dy <= 4 && d.dx >= 0 && d.dx <= 4, "offset (%lld, %lld)",
                  (long long)d.dy, (long long)d.dx);
        dy[d.dy]++;
        dx[d.dx]++;
        flips += d.flip;
    }
    for (int k = 0; k < 5; k++) {
        cr_expect(fabs(dy[k] - 4000.0) < 5 * 56.6, "dy = %d drawn %d times", k, dy[k]);
        cr_expect(fabs(dx[k] - 4000.0) < 5 * 56.6, "dx = %d drawn %d times", k, dx[k]);
    }
    cr_expect(fabs(flips - 5000.0) < 5 * 61.2, "%d flips", flips);
}

Test(augment, flip_probability_bounds)
{
    RtAugment never = {.flip = true, .flip_p = 0}, always = {.flip = true, .flip_p = 1};
    for (int i = 0; i < 1000; i++) {
        cr_expect(!rt_augment_draw(&never, 3, 0, i).flip);
        cr_expect(rt_augment_draw(&always, 3, 0, i).flip);
    }
}

/* ---- rt_train augments training batches only ---- */

enum { SAMPLES = 4, BATCH = 2, PIXELS = SIDE * SIDE };

typedef struct Fake {
    float x[BATCH * PIXELS], logits[BATCH * 2], loss, lr, step;
    int32_t labels[BATCH];
    float train_seen[8][BATCH * PIXELS], eval_seen[8][BATCH * PIXELS];
    int train_runs, eval_runs;
} Fake;

static void *fake_input(void *self, bool train, const char *name)
{
    Fake *f = self;
    (void)train;
    if (strcmp(name, "x") == 0)
        return f->x;
    if (strcmp(name, "labels") == 0)
        return f->labels;
    return strcmp(name, "lr") == 0 ? &f->lr : strcmp(name, "step") == 0 ? &f->step : NULL;
}

static void fake_run(void *self, bool train, int64_t batch)
{
    Fake *f = self;
    f->loss = 1;
    memset(f->logits, 0, sizeof f->logits);
    cr_assert_eq(batch, BATCH);
    if (train)
        memcpy(f->train_seen[f->train_runs++], f->x, sizeof f->x);
    else
        memcpy(f->eval_seen[f->eval_runs++], f->x, sizeof f->x);
}

static const void *fake_output(void *self, bool train, const char *name)
{
    Fake *f = self;
    (void)train;
    return strcmp(name, "loss") == 0 ? (const void *)&f->loss : f->logits;
}

Test(augment, train_batches_only)
{
    uint8_t pixels[SAMPLES * PIXELS];
    int32_t labels[SAMPLES] = {0, 1, 0, 1};
    for (int i = 0; i < SAMPLES * PIXELS; i++)
        pixels[i] = (uint8_t)(1 + i);
    Dataset ds = {.path = "memory", .count = SAMPLES, .rank = 2, .sample_dims = {SIDE, SIDE},
                  .sample_size = PIXELS, .images = pixels, .labels = labels,
                  .num_classes = 2};
    DataSplits data = {.train = ds, .test = ds, .normalize = NORMALIZE_NONE};
    RtAugment aug = {.crop = true, .padding = 2, .flip = true, .flip_p = 0.5};
    Fake f = {0};
    RtRunner runner = {.self = &f, .dtype = DT_F32, .max_batch = BATCH,
                       .max_eval_batch = BATCH, .input = fake_input, .run = fake_run,
                       .output = fake_output};
    RtTrainConfig cfg = {.label = "fake", .epochs = 1, .batch = BATCH, .eval_batch = BATCH,
                         .log_every = 100, .lr = 0.1, .seed = 5, .augment = &aug};
    RtTrainResult r;
    rt_train(&cfg, &runner, &data, &r);
    cr_assert_eq(f.train_runs, 2);
    cr_assert_eq(f.eval_runs, 2);

    /* Evaluation batches are the samples unchanged, in order. */
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < BATCH * PIXELS; i++)
            cr_expect_eq(f.eval_seen[b][i], (float)pixels[b * BATCH * PIXELS + i]);

    /* Each training batch is its shuffled samples with the transform that
     * rt_augment_draw gives for (seed, step, position in the batch). A
     * padded pixel is 0, the value of byte 0 without normalisation. */
    int changed = 0;
    for (int step = 0; step < 2; step++) {
        for (int i = 0; i < BATCH; i++) {
            const float *seen = &f.train_seen[step][i * PIXELS];
            int sample = -1;
            for (int s = 0; s < SAMPLES && sample < 0; s++) {
                float img[PIXELS], scratch[PIXELS];
                for (int p = 0; p < PIXELS; p++)
                    img[p] = pixels[s * PIXELS + p];
                rt_augment_image(&aug, rt_augment_draw(&aug, 5, step, i), DT_F32, img, 1,
                                 SIDE, SIDE, 0.0, scratch);
                if (memcmp(img, seen, sizeof img) == 0)
                    sample = s;
            }
            cr_expect_geq(sample, 0, "step %d, sample %d is no augmented data sample",
                          step, i);
            bool raw = false;
            for (int s = 0; s < SAMPLES; s++) {
                bool same = true;
                for (int p = 0; p < PIXELS; p++)
                    same &= seen[p] == (float)pixels[s * PIXELS + p];
                raw |= same;
            }
            changed += !raw;
        }
    }
    /* Some sample was actually transformed, so the match above is not
     * that of an identity draw alone. */
    cr_expect_gt(changed, 0);
    rt_train_result_free(&r);
}

/* A batch augmented in parts, each given the position of its first
 * sample (the parts of a sharded run's ranks), equals the batch augmented
 * whole. A part that passed position 0 would get other draws. */
Test(augment, parts_of_a_batch_get_the_draws_of_the_whole)
{
    enum { N = 5, FIRST_PART = 3 };
    static const int64_t dims[3] = {1, SIDE, SIDE};
    RtAugment aug = {.crop = true, .padding = 1, .flip = true, .flip_p = 0.5};
    float whole[N][SIDE * SIDE], parts[N][SIDE * SIDE], wrong[N][SIDE * SIDE];
    for (int i = 0; i < N; i++) {
        make_image(whole[i]);
        for (int p = 0; p < SIDE * SIDE; p++)
            whole[i][p] += (float)(100 * i);
    }
    memcpy(parts, whole, sizeof whole);
    memcpy(wrong, whole, sizeof whole);
    rt_augment_batch(&aug, 9, 4, DT_F32, whole, 0, N, dims, 3, -1.0);
    rt_augment_batch(&aug, 9, 4, DT_F32, parts, 0, FIRST_PART, dims, 3, -1.0);
    rt_augment_batch(&aug, 9, 4, DT_F32, parts[FIRST_PART], FIRST_PART, N - FIRST_PART, dims,
                     3, -1.0);
    cr_expect(memcmp(whole, parts, sizeof whole) == 0);
    rt_augment_batch(&aug, 9, 4, DT_F32, wrong, 0, FIRST_PART, dims, 3, -1.0);
    rt_augment_batch(&aug, 9, 4, DT_F32, wrong[FIRST_PART], 0, N - FIRST_PART, dims, 3, -1.0);
    cr_expect(memcmp(whole, wrong, sizeof whole) != 0);
}
