/* depthwise.c - `make bench`: the direct depthwise convolution kernels
 * beside the im2col + GEMM path on the same shapes.
 *
 * For each shape it times the forward pass, the input gradient and the
 * weight gradient in f32, each the best of several runs. It prints the
 * milliseconds of both paths and the ratio im2col / direct (above 1 means
 * the direct loops are faster).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "base.h"
#include "ops.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static float *filled(size_t n, unsigned seed)
{
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        v[i] = (float)(seed >> 8) * 0x1p-24f - 0.5f;
    }
    return v;
}

enum { REPEATS = 5 };

typedef struct Buffers {
    float *x, *w, *y, *dx, *dw;
    void *ws;
} Buffers;

/* Runs pass `pass` (0 forward, 1 grad input, 2 grad weight) of one path
 * and returns its best time in ms. */
static double time_pass(const RtConv2d *cv, const Buffers *b, int pass, bool direct)
{
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
        double t0 = now_ms();
        if (pass == 0) {
            if (direct)
                rt_depthwise_forward(DT_F32, cv, b->x, b->w, b->y, b->ws);
            else
                rt_conv2d_im2col_forward(DT_F32, cv, b->x, b->w, b->y, b->ws);
        } else if (pass == 1) {
            if (direct)
                rt_depthwise_grad_input(DT_F32, cv, b->y, b->w, b->dx, b->ws);
            else
                rt_conv2d_im2col_grad_input(DT_F32, cv, b->y, b->w, b->dx, b->ws);
        } else {
            if (direct)
                rt_depthwise_grad_weight(DT_F32, cv, b->x, b->y, b->dw, b->ws);
            else
                rt_conv2d_im2col_grad_weight(DT_F32, cv, b->x, b->y, b->dw, b->ws);
        }
        double t = now_ms() - t0;
        if (t < best)
            best = t;
    }
    return best;
}

int main(void)
{
    /*  n   c    h   w  k=c  r  s stride pad */
    static const int64_t shapes[][7] = {
        {64, 32, 28, 28, 3, 1, 1},
        {64, 64, 14, 14, 3, 2, 1},
        {64, 64, 14, 14, 7, 1, 3},
        {64, 128, 7, 7, 5, 1, 2},
    };
    static const char *pass_name[3] = {"forward", "grad_input", "grad_weight"};
    rt_set_blas_threads(1);
    printf("depthwise conv2d, f32, 1 BLAS thread, best of %d: direct loops vs im2col + GEMM\n",
           REPEATS);
    printf("%-26s %-12s %10s %10s %8s\n", "shape [N,C,H,W] kernel", "pass", "direct ms",
           "im2col ms", "ratio");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int64_t *s = shapes[i];
        RtConv2d cv = {.n = s[0], .c = s[1], .h = s[2], .w = s[3], .k = s[1], .r = s[4],
                       .s = s[4], .stride_h = s[5], .stride_w = s[5], .pad_h = s[6],
                       .pad_w = s[6], .dil_h = 1, .dil_w = 1, .groups = s[1]};
        BOCB_ASSERT(rt_conv2d_infer(&cv));
        size_t nx = (size_t)(cv.n * cv.c * cv.h * cv.w), ny = (size_t)(cv.n * cv.k * cv.p * cv.q);
        size_t nw = (size_t)(cv.k * cv.r * cv.s);
        Buffers b = {.x = filled(nx, 1), .w = filled(nw, 2), .y = filled(ny, 3),
                     .dx = xmalloc(nx * sizeof(float)), .dw = xmalloc(nw * sizeof(float)),
                     .ws = xmalloc(rt_conv2d_workspace_bytes(DT_F32, &cv))};
        char label[64];
        snprintf(label, sizeof label, "[%lld,%lld,%lld,%lld] %lldx%lld/%lld",
                 (long long)cv.n, (long long)cv.c, (long long)cv.h, (long long)cv.w,
                 (long long)cv.r, (long long)cv.s, (long long)cv.stride_h);
        for (int pass = 0; pass < 3; pass++) {
            double direct = time_pass(&cv, &b, pass, true);
            double im2col = time_pass(&cv, &b, pass, false);
            printf("%-26s %-12s %10.2f %10.2f %7.1fx\n", pass == 0 ? label : "",
                   pass_name[pass], direct, im2col, im2col / direct);
        }
        free(b.x), free(b.w), free(b.y), free(b.dx), free(b.dw), free(b.ws);
    }
    return 0;
}
