/* test_quant.c - the bucketed quantizer (runtime/quant.h) and the IR's
 * quantize op: bit packing, exact constant buckets, error bounds,
 * unbiasedness of the random roundings over many draws, encode/decode
 * against the fused round trip, shards against the whole tensor, and the
 * op in the interpreter against the JIT-compiled program, and its
 * straight-through gradient.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/driver.h"
#include "../../compiler/ir_spatial.h"
#include "../../runtime/quant.h"

static const RtRounding roundings[] = {RT_ROUND_NEAREST, RT_ROUND_STOCHASTIC, RT_ROUND_SHIFT};

static RtQuantizer quantizer(int bits, int64_t bucket, RtRounding rounding, uint32_t step)
{
    RtQuantizer q = {
        .bits = bits,
        .bucket = bucket,
        .rounding = rounding,
        .key = philox_key(1234, 7),
        .step = step,
        .tag = 7,
    };
    return q;
}

/* Deterministic test values in [-scale, scale). */
static void fill_values(float *x, int64_t n, uint64_t seed, float scale)
{
    PhiloxKey key = philox_key(seed, 99);
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (2 * philox_uniform_f32(key, (uint64_t)i) - 1);
}

/* The grid step of a bucket as the quantizer defines it. */
static double bucket_step(const RtQuantizer *q, const float *x, int64_t n)
{
    float lo = x[0], hi = x[0];
    for (int64_t i = 1; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    double levels = (double)((1 << q->bits) - 1) - (q->rounding == RT_ROUND_SHIFT ? 1 : 0);
    return (double)(float)((hi - lo) / (float)levels);
}

Test(quant, packing_round_trips_every_width)
{
    enum { N = 1001 };
    uint8_t codes[N], back[N], packed[N + 1];
    for (int bits = 1; bits <= 8; bits++) {
        for (int i = 0; i < N; i++)
            codes[i] = (uint8_t)(philox_u32(philox_key(5, (uint32_t)bits), (uint64_t)i) &
                                 ((1u << bits) - 1));
        memset(packed, 0xAB, sizeof packed);
        rt_pack_codes(bits, N, codes, packed);
        size_t used = (size_t)(N * bits + 7) / 8;
        cr_expect_eq(packed[used], 0xAB, "%d bits: the packer wrote past %zu bytes", bits, used);
        rt_unpack_codes(bits, N, packed, back);
        cr_expect_arr_eq(codes, back, N, "%d bits: unpacked codes differ", bits);
    }
}

Test(quant, packing_is_lsb_first)
{
    uint8_t codes[4] = {1, 2, 3, 0}, packed[1];
    rt_pack_codes(2, 4, codes, packed);
    cr_expect_eq(packed[0], 1 | 2 << 2 | 3 << 4, "got 0x%02x", packed[0]);
}

Test(quant, constant_and_zero_buckets_are_exact)
{
    enum { N = 40 };
    float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = i < 10 ? 0.0f : i < 20 ? 3.25f : i < 30 ? -1e-30f : 6e37f;
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        for (int bits = RT_QUANT_MIN_BITS; bits <= RT_QUANT_MAX_BITS; bits++) {
            RtQuantizer q = quantizer(bits, 10, roundings[r], 3);
            rt_quant_roundtrip(&q, DT_F32, 0, N, x, y);
            for (int i = 0; i < N; i++)
                cr_expect_eq(y[i], x[i], "%s, %d bits: element %d is %g, not %g",
                             rt_rounding_name(roundings[r]), bits, i, y[i], x[i]);
        }
    }
}

Test(quant, non_finite_bucket_decodes_to_nan)
{
    float x[8] = {1, 2, INFINITY, 4, 1, 2, 3, 4}, y[8];
    RtQuantizer q = quantizer(8, 4, RT_ROUND_NEAREST, 1);
    rt_quant_roundtrip(&q, DT_F32, 0, 8, x, y);
    for (int i = 0; i < 4; i++)
        cr_expect(isnan(y[i]), "element %d of the bucket with inf is %g", i, y[i]);
    for (int i = 4; i < 8; i++)
        cr_expect_eq(y[i], x[i], "element %d of the finite bucket is %g", i, y[i]);
}

Test(quant, error_is_bounded_by_bucket_step)
{
    enum { N = 3000, BUCKET = 256 };
    static float x[N], y[N];
    fill_values(x, N, 11, 5.0f);
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        for (int bits = RT_QUANT_MIN_BITS; bits <= RT_QUANT_MAX_BITS; bits++) {
            RtQuantizer q = quantizer(bits, BUCKET, roundings[r], 9);
            rt_quant_roundtrip(&q, DT_F32, 0, N, x, y);
            /* Nearest and shifted rounding move a value by at most half a
             * step, stochastic rounding by less than one; 1e-5 of the step
             * covers rounding of the decode. */
            double bound = roundings[r] == RT_ROUND_STOCHASTIC ? 1.0 : 0.5;
            for (int64_t b = 0; b < N; b += BUCKET) {
                int64_t len = N - b < BUCKET ? N - b : BUCKET;
                double step = bucket_step(&q, x + b, len);
                for (int64_t i = b; i < b + len; i++)
                    cr_expect(fabs((double)y[i] - x[i]) <= step * (bound + 1e-5),
                              "%s, %d bits: element %lld moved by %g, step %g",
                              rt_rounding_name(roundings[r]), bits, (long long)i,
                              fabs((double)y[i] - x[i]), step);
            }
        }
    }
}

/* The mean of the decoded values over `draws` steps, per element. */
static void mean_over_steps(RtRounding rounding, int bits, const float *x, int64_t n,
                            int draws, double *mean)
{
    float y[64];
    BOCB_ASSERT(n <= 64);
    for (int64_t i = 0; i < n; i++)
        mean[i] = 0;
    for (int t = 0; t < draws; t++) {
        RtQuantizer q = quantizer(bits, n, rounding, (uint32_t)t);
        rt_quant_roundtrip(&q, DT_F32, 0, n, x, y);
        for (int64_t i = 0; i < n; i++)
            mean[i] += y[i];
    }
    for (int64_t i = 0; i < n; i++)
        mean[i] /= draws;
}

Test(quant, random_roundings_are_unbiased)
{
    enum { N = 64, DRAWS = 20000 };
    float x[N];
    double mean[N];
    fill_values(x, N, 3, 1.0f);
    const RtRounding random_modes[] = {RT_ROUND_STOCHASTIC, RT_ROUND_SHIFT};
    for (int m = 0; m < 2; m++) {
        for (int bits = 2; bits <= 4; bits++) {
            RtQuantizer q = quantizer(bits, N, random_modes[m], 0);
            double step = bucket_step(&q, x, N);
            mean_over_steps(random_modes[m], bits, x, N, DRAWS, mean);
            /* One draw is off by at most one step, so the standard error
             * of the mean is at most step / sqrt(DRAWS); 5 standard errors
             * fail a fair quantizer with probability below 1e-5 per
             * element. */
            double tol = 5 * step / sqrt((double)DRAWS);
            for (int i = 0; i < N; i++)
                cr_expect(fabs(mean[i] - x[i]) <= tol,
                          "%s, %d bits: element %d has mean %.6f, value %.6f (tol %.2g)",
                          rt_rounding_name(random_modes[m]), bits, i, mean[i], x[i], tol);
        }
    }
}

Test(quant, nearest_rounding_is_biased)
{
    /* The control for the test above: a deterministic rounding of a value
     * at 0.3 steps above the minimum is off by 0.3 steps on average, far
     * beyond that test's tolerance. */
    enum { N = 4, DRAWS = 200 };
    float x[N] = {0.0f, 0.1f, 1.0f, 3.0f};
    double mean[N];
    mean_over_steps(RT_ROUND_NEAREST, 2, x, N, DRAWS, mean);
    cr_expect(fabs(mean[1] - 0.0) < 1e-7, "0.1 went to %g, not the grid point 0", mean[1]);
}

Test(quant, encode_decode_equals_fused_round_trip)
{
    enum { N = 2500 };
    static float x[N], fused[N], decoded[N];
    static double xd[N], fused_d[N], decoded_d[N];
    static uint8_t wire[N * 17 + 4096];
    fill_values(x, N, 21, 3.0f);
    for (int i = 0; i < N; i++)
        xd[i] = (double)x[i] * (1 + 1e-9 * i);
    const int64_t buckets[] = {1, 7, 512, 4096};
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        for (int bits = RT_QUANT_MIN_BITS; bits <= RT_QUANT_MAX_BITS; bits++) {
            for (size_t b = 0; b < BOCB_ARRAY_LEN(buckets); b++) {
                RtQuantizer q = quantizer(bits, buckets[b], roundings[r], 5);
                const char *name = rt_rounding_name(roundings[r]);
                cr_assert(rt_quant_encoded_size(&q, DT_F64, N) <= sizeof wire);

                rt_quant_encode(&q, DT_F32, 0, N, x, wire);
                rt_quant_decode(&q, DT_F32, N, wire, decoded);
                rt_quant_roundtrip(&q, DT_F32, 0, N, x, fused);
                cr_expect(memcmp(decoded, fused, sizeof fused) == 0,
                          "f32 %s, %d bits, bucket %lld: decode(encode) differs from the "
                          "fused round trip", name, bits, (long long)buckets[b]);

                rt_quant_encode(&q, DT_F64, 0, N, xd, wire);
                rt_quant_decode(&q, DT_F64, N, wire, decoded_d);
                rt_quant_roundtrip(&q, DT_F64, 0, N, xd, fused_d);
                cr_expect(memcmp(decoded_d, fused_d, sizeof fused_d) == 0,
                          "f64 %s, %d bits, bucket %lld: decode(encode) differs from the "
                          "fused round trip", name, bits, (long long)buckets[b]);
            }
        }
    }
}

Test(quant, shards_equal_the_whole_tensor)
{
    /* Two shards quantized by their owners with global offsets decode to
     * the round trip of the whole tensor, for every rounding. */
    enum { N = 1000, BUCKET = 64, CUT = 640 };
    static float x[N], whole[N], parts[N];
    static uint8_t wire[N * 2];
    fill_values(x, N, 8, 2.0f);
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        RtQuantizer q = quantizer(4, BUCKET, roundings[r], 12);
        rt_quant_roundtrip(&q, DT_F32, 0, N, x, whole);
        rt_quant_encode(&q, DT_F32, 0, CUT, x, wire);
        rt_quant_decode(&q, DT_F32, CUT, wire, parts);
        rt_quant_encode(&q, DT_F32, CUT, N - CUT, x + CUT, wire);
        rt_quant_decode(&q, DT_F32, N - CUT, wire, parts + CUT);
        cr_expect(memcmp(whole, parts, sizeof whole) == 0, "%s: the shards differ",
                  rt_rounding_name(roundings[r]));
    }
}

Test(quant, encoded_size_counts_metadata_and_codes)
{
    RtQuantizer q = quantizer(4, 1024, RT_ROUND_STOCHASTIC, 0);
    /* 3 buckets of (base, scale) in f32, then 2500 codes of 4 bits. */
    cr_expect_eq(rt_quant_encoded_size(&q, DT_F32, 2500), 3 * 8 + 1250);
    q.bits = 3;
    cr_expect_eq(rt_quant_encoded_size(&q, DT_F64, 5), 16 + 2);
}

/* ---- the IR op in the interpreter and the JIT ------------------------------ */

typedef struct QuantGraph {
    Arena arena;
    IrModule module;
    IrGraph *g;
    int x, key;
} QuantGraph;

/* out = quantize(x) * 2 + 1 over a parameter x [3, 700], so the op sits
 * between fused kernels and its buckets cross rows. */
static void build_quant_graph(QuantGraph *q, RtRounding rounding, int bits)
{
    arena_init(&q->arena);
    ir_module_init(&q->module, &q->arena);
    Shape s = shape_make(2, (int64_t[]){3, 700});
    q->x = ir_module_add_var(&q->module, "x", IR_VAR_PARAM, DT_F32, s, IR_INIT_UNIFORM, 1.0,
                             -1, NO_LOC);
    q->key = ir_module_add_var(&q->module, "key", IR_VAR_BUFFER, DT_F32, shape_scalar(),
                               IR_INIT_UNIFORM, 1.0, -1, NO_LOC);
    q->g = ir_graph_new(&q->module, "quant");
    IrGraph *g = q->g;
    int step = ir_input(g, "step", DT_F32, shape_scalar(), NO_LOC);
    int xq = ir_quantize(g, ir_var_read(g, q->x, NO_LOC), ir_var_read(g, q->key, NO_LOC), step, bits,
                         500, rounding, 3, NO_LOC);
    int two = ir_broadcast(g, ir_const(g, DT_F32, 2.0, NO_LOC), s, NO_LOC);
    int one = ir_broadcast(g, ir_const(g, DT_F32, 1.0, NO_LOC), s, NO_LOC);
    int out = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, xq, two, NO_LOC), one, NO_LOC);
    ir_add_output(g, "out", out);
    cr_assert(ir_verify(g));
}

static void free_quant_graph(QuantGraph *q)
{
    ir_graph_free(q->g);
    ir_module_free(&q->module);
    arena_free(&q->arena);
}

Test(quant, op_interpreter_matches_jit_and_runtime)
{
    enum { N = 2100 };
    static float interp_out[N], jit_out[N], direct[N];
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        QuantGraph q;
        build_quant_graph(&q, roundings[r], 3);
        RtVarStore store;
        create_var_store(&store, &q.module);
        rt_vars_reset(&store, 42);
        float step = 17;

        Interp *it = interp_create(q.g, &store);
        interp_bind_input(it, ir_find_input(q.g, "step"), &step);
        interp_run(it, 1);
        memcpy(interp_out, interp_output(it, "out"), sizeof interp_out);
        interp_destroy(it);

        Schedule sched;
        schedule_graph(q.g, 1, &sched);
        char *error = NULL;
        Jit *jit = jit_create(&error);
        cr_assert(jit, "%s", error);
        cr_assert(jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels,
                              &error), "%s", error);
        RtExec *e = rt_exec_create(&sched.program, &store);
        *(float *)rt_exec_input(e, "step") = step;
        rt_exec_run(e, 1);
        memcpy(jit_out, rt_exec_output(e, "out"), sizeof jit_out);
        rt_exec_destroy(e);
        schedule_free(&sched);
        jit_destroy(jit);

        RtQuantizer rq = {
            .bits = 3,
            .bucket = 500,
            .rounding = roundings[r],
            .key = rt_quant_key(DT_F32, rt_var_data(&store, q.key), 3),
            .step = 17,
            .tag = 3,
        };
        rt_quant_roundtrip(&rq, DT_F32, 0, N, rt_var_data(&store, q.x), direct);
        const char *name = rt_rounding_name(roundings[r]);
        for (int i = 0; i < N; i++) {
            float want = direct[i] * 2 + 1;
            cr_expect_eq(interp_out[i], want, "%s: interpreter element %d is %g, not %g", name,
                         i, interp_out[i], want);
            cr_expect_eq(jit_out[i], want, "%s: JIT element %d is %g, not %g", name, i,
                         jit_out[i], want);
        }
        rt_vars_free(&store);
        free_quant_graph(&q);
    }
}

Test(quant, gradient_passes_straight_through)
{
    /* loss = sum(quantize(w) * c): the gradient with respect to w is c,
     * as if quantize were the identity (the straight-through estimator),
     * although the quantized value differs from w. */
    Arena arena;
    arena_init(&arena);
    IrModule module;
    ir_module_init(&module, &arena);
    Shape s = shape_make(1, (int64_t[]){300});
    int w = ir_module_add_var(&module, "w", IR_VAR_PARAM, DT_F64, s, IR_INIT_UNIFORM, 1.0, -1,
                              NO_LOC);
    int key = ir_module_add_var(&module, "key", IR_VAR_BUFFER, DT_F64, shape_scalar(),
                                IR_INIT_UNIFORM, 1.0, -1, NO_LOC);
    IrGraph *g = ir_graph_new(&module, "grad");
    int step = ir_input(g, "step", DT_F64, shape_scalar(), NO_LOC);
    int c = ir_input(g, "c", DT_F64, s, NO_LOC);
    int wq = ir_quantize(g, ir_var_read(g, w, NO_LOC), ir_var_read(g, key, NO_LOC), step, 2,
                         64, RT_ROUND_STOCHASTIC, 1, NO_LOC);
    int loss = ir_sum(g, ir_binary(g, IR_MUL, wq, c, NO_LOC), 1u, NO_LOC);
    int grad;
    cr_assert(ad_backward(g, loss, &w, 1, &grad));
    ir_add_output(g, "grad", grad);
    ir_add_output(g, "wq", wq);
    cr_assert(ir_verify(g));

    RtVarStore store;
    create_var_store(&store, &module);
    rt_vars_reset(&store, 5);
    double step_value = 3, coefficients[300];
    for (int i = 0; i < 300; i++)
        coefficients[i] = 0.25 * (i % 7) - 0.5;
    Interp *it = interp_create(g, &store);
    interp_bind_input(it, ir_find_input(g, "step"), &step_value);
    interp_bind_input(it, ir_find_input(g, "c"), coefficients);
    interp_run(it, 1);
    const double *dw = interp_output(it, "grad");
    const double *quantized = interp_output(it, "wq");
    const double *weights = rt_var_data(&store, w);
    int moved = 0;
    for (int i = 0; i < 300; i++) {
        cr_expect_eq(dw[i], coefficients[i], "element %d: gradient %g, expected %g", i, dw[i],
                     coefficients[i]);
        moved += quantized[i] != weights[i];
    }
    cr_expect_gt(moved, 200, "only %d of 300 weights changed under 2-bit quantization", moved);
    interp_destroy(it);
    rt_vars_free(&store);
    ir_graph_free(g);
    ir_module_free(&module);
    arena_free(&arena);
}
