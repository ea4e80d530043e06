/* test_quant.c - the bucketed quantizer (runtime/quant.h) and the IR's
 * quantize and dequantize ops. The quantizer: bit packing, exact constant
 * buckets, error bounds, unbiasedness of the random roundings over many
 * draws, encode/decode against the fused round trip, and shards against
 * the whole tensor. The ops: the interpreter and the JIT-compiled program
 * against the runtime's encoder and decoder, the checks of the pair, and
 * its straight-through gradient.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/autodiff.h"
#include "../../compiler/forward.h"
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

/* codes = quantize(x), out = dequantize(codes) * 2 + 1 over a parameter
 * x [3, 700], so the pair sits between fused kernels and its buckets
 * cross rows. Both are outputs. */
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
    int codes = ir_quantize(g, ir_var_read(g, q->x, NO_LOC), ir_var_read(g, q->key, NO_LOC),
                            step, bits, 500, rounding, 3, NO_LOC);
    int xq = ir_dequantize(g, codes, NO_LOC);
    int two = ir_broadcast(g, ir_const(g, DT_F32, 2.0, NO_LOC), s, NO_LOC);
    int one = ir_broadcast(g, ir_const(g, DT_F32, 1.0, NO_LOC), s, NO_LOC);
    int out = ir_binary(g, IR_ADD, ir_binary(g, IR_MUL, xq, two, NO_LOC), one, NO_LOC);
    ir_add_output(g, "codes", codes);
    ir_add_output(g, "out", out);
    cr_assert(ir_verify(g));
}

static void free_quant_graph(QuantGraph *q)
{
    ir_graph_free(q->g);
    ir_module_free(&q->module);
    arena_free(&q->arena);
}

enum { OP_N = 2100, OP_MAX_WORDS = 600 };

typedef struct QuantRun {
    uint32_t codes[OP_MAX_WORDS];
    float out[OP_N];
} QuantRun;

static void run_quant_interp(QuantGraph *q, RtVarStore *store, float step, int64_t words,
                             QuantRun *r)
{
    Interp *it = interp_create(q->g, store);
    interp_bind_input(it, ir_find_input(q->g, "step"), &step);
    interp_run(it, 1);
    memcpy(r->codes, interp_output(it, "codes"), (size_t)words * 4);
    memcpy(r->out, interp_output(it, "out"), sizeof r->out);
    interp_destroy(it);
}

static void run_quant_jit(QuantGraph *q, RtVarStore *store, float step, int64_t words,
                          QuantRun *r)
{
    Schedule sched;
    schedule_graph(q->g, 1, &sched);
    char *error = NULL;
    Jit *jit = jit_create(&error);
    cr_assert(jit, "%s", error);
    cr_assert(jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels, &error),
              "%s", error);
    RtExec *e = rt_exec_create(&sched.program, store);
    *(float *)rt_exec_input(e, "step") = step;
    rt_exec_run(e, 1);
    memcpy(r->codes, rt_exec_output(e, "codes"), (size_t)words * 4);
    memcpy(r->out, rt_exec_output(e, "out"), sizeof r->out);
    rt_exec_destroy(e);
    schedule_free(&sched);
    jit_destroy(jit);
}

Test(quant, ops_interpreter_match_jit_and_runtime)
{
    /* 3 bits fill the last word; 5 bits leave 3 padding bytes, which
     * must be zero. */
    static const int widths[] = {3, 5};
    static QuantRun interp, jit;
    static uint32_t want_codes[OP_MAX_WORDS];
    static float decoded[OP_N];
    for (size_t r = 0; r < BOCB_ARRAY_LEN(roundings); r++) {
        for (size_t b = 0; b < BOCB_ARRAY_LEN(widths); b++) {
            int bits = widths[b];
            QuantGraph q;
            build_quant_graph(&q, roundings[r], bits);
            int64_t words = rt_quant_words(bits, 500, DT_F32, OP_N);
            cr_assert_leq(words, OP_MAX_WORDS);
            cr_assert_eq(q.g->nodes[q.g->outputs[0].node].shape.dims[0], words);
            RtVarStore store;
            create_var_store(&store, &q.module);
            rt_vars_reset(&store, 42);
            float step = 17;
            memset(&interp, 0xff, sizeof interp);
            memset(&jit, 0xff, sizeof jit);
            run_quant_interp(&q, &store, step, words, &interp);
            run_quant_jit(&q, &store, step, words, &jit);

            RtQuantizer rq = {
                .bits = bits,
                .bucket = 500,
                .rounding = roundings[r],
                .key = rt_quant_key(DT_F32, rt_var_data(&store, q.key), 3),
                .step = 17,
                .tag = 3,
            };
            memset(want_codes, 0, sizeof want_codes);
            rt_quant_encode(&rq, DT_F32, 0, OP_N, rt_var_data(&store, q.x),
                            (uint8_t *)want_codes);
            rt_quant_decode(&rq, DT_F32, OP_N, (const uint8_t *)want_codes, decoded);
            const char *name = rt_rounding_name(roundings[r]);
            for (int64_t i = 0; i < words; i++) {
                cr_expect_eq(interp.codes[i], want_codes[i],
                             "%s, %d bits: interpreter word %lld is %08x, not %08x", name,
                             bits, (long long)i, interp.codes[i], want_codes[i]);
                cr_expect_eq(jit.codes[i], want_codes[i],
                             "%s, %d bits: JIT word %lld is %08x, not %08x", name, bits,
                             (long long)i, jit.codes[i], want_codes[i]);
            }
            for (int i = 0; i < OP_N; i++) {
                float want = decoded[i] * 2 + 1;
                cr_expect_eq(interp.out[i], want, "%s, %d bits: interpreter element %d is "
                             "%g, not %g", name, bits, i, interp.out[i], want);
                cr_expect_eq(jit.out[i], want, "%s, %d bits: JIT element %d is %g, not %g",
                             name, bits, i, jit.out[i], want);
            }
            rt_vars_free(&store);
            free_quant_graph(&q);
        }
    }
}

Test(quant, dequantize_needs_its_quantize)
{
    /* The check rejects a dequantize whose bits differ from those of the
     * quantize it reads, and one whose operand is not a quantize. The
     * verifier then rejects the graph. */
    QuantGraph q;
    build_quant_graph(&q, RT_ROUND_NEAREST, 4);
    IrGraph *g = q.g;
    int codes = g->outputs[0].node;
    int words = ir_input(g, "words", DT_I32, g->nodes[codes].shape, NO_LOC);
    int deq = ir_dequantize(g, codes, NO_LOC);
    const char *why = NULL;
    cr_assert(ir_spatial_check(g, ir_node(g, deq), &why), "%s", why);
    static const char *const want =
        "dequantize takes the result of a quantize with its bits and bucket";
    ir_node(g, deq)->attr.spatial.p[0] = 5;
    cr_expect_not(ir_spatial_check(g, ir_node(g, deq), &why));
    cr_expect_str_eq(why, want);
    ir_node(g, deq)->attr.spatial.p[0] = 4;
    ir_node(g, deq)->in[0] = words;
    why = NULL;
    cr_expect_not(ir_spatial_check(g, ir_node(g, deq), &why));
    cr_expect_str_eq(why, want);
    ir_add_output(g, "again", deq);
    cr_expect_not(ir_verify(g));
    free_quant_graph(&q);
}

Test(quant, gradient_passes_straight_through)
{
    /* loss = sum(dequantize(quantize(w)) * c): the gradient with respect
     * to w is c, as if the pair were the identity (the straight-through
     * estimator), although the quantized value differs from w. Forward
     * mode agrees: along a tangent v of w, the loss moves by sum(c * v). */
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
    int wq = ir_dequantize(g, ir_quantize(g, ir_var_read(g, w, NO_LOC),
                                          ir_var_read(g, key, NO_LOC), step, 2, 64,
                                          RT_ROUND_STOCHASTIC, 1, NO_LOC), NO_LOC);
    int loss = ir_sum(g, ir_binary(g, IR_MUL, wq, c, NO_LOC), 1u, NO_LOC);
    int grad;
    cr_assert(ad_backward(g, loss, &w, 1, &grad));
    int v = ir_input(g, "v", DT_F64, s, NO_LOC), loss_tangent;
    cr_assert(fwd_jvp(g, &w, &v, 1, &loss, 1, &loss_tangent));
    cr_assert_geq(loss_tangent, 0, "forward mode found no path from w to the loss");
    ir_add_output(g, "grad", grad);
    ir_add_output(g, "wq", wq);
    ir_add_output(g, "jvp", loss_tangent);
    cr_assert(ir_verify(g));

    RtVarStore store;
    create_var_store(&store, &module);
    rt_vars_reset(&store, 5);
    double step_value = 3, coefficients[300], tangent[300], want_jvp = 0;
    for (int i = 0; i < 300; i++) {
        coefficients[i] = 0.25 * (i % 7) - 0.5;
        tangent[i] = 0.125 * (i % 5) - 0.25;
        want_jvp += coefficients[i] * tangent[i];
    }
    Interp *it = interp_create(g, &store);
    interp_bind_input(it, ir_find_input(g, "step"), &step_value);
    interp_bind_input(it, ir_find_input(g, "c"), coefficients);
    interp_bind_input(it, ir_find_input(g, "v"), tangent);
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
    double jvp = *(const double *)interp_output(it, "jvp");
    cr_expect(fabs(jvp - want_jvp) <= 1e-12, "forward mode: %.17g, expected %.17g", jvp,
              want_jvp);
    interp_destroy(it);
    rt_vars_free(&store);
    ir_graph_free(g);
    ir_module_free(&module);
    arena_free(&arena);
}
