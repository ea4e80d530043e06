/* test_autodiff.c - the autodiff pass's contract beyond numerics. Ops
 * without a VJP rule are reported at their source locations, all of them
 * in one call, and variables the loss does not depend on get no gradient. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "../../compiler/autodiff.h"

static char *capture_begin(FILE **stream)
{
    *stream = tmpfile();
    cr_assert(*stream);
    diag_set_stream(*stream);
    diag_reset_count();
    return NULL;
}

static char *capture_end(FILE *stream)
{
    diag_set_stream(stderr);
    long size = ftell(stream);
    rewind(stream);
    char *text = xcalloc((size_t)size + 1, 1);
    cr_assert_eq(fread(text, 1, (size_t)size, stream), (size_t)size);
    fclose(stream);
    return text;
}

static SrcLoc at(int file, int line, int col, int len)
{
    return (SrcLoc){.file = file, .line = line, .col = col, .end_line = line,
                    .end_col = col + len - 1};
}

/* Gradient ops have no VJP rules yet, because only Hessian-vector
 * products would need them. Differentiating through two of them must
 * report both, each at its own location. */
Test(autodiff, missing_rules_all_reported)
{
    const char *text = "model m(x: [B, 4]) {\n"
                       "  a = pool_grad(x)\n"
                       "  b = ce_grad(a)\n"
                       "}\n";
    int file = src_register("missing.bocb", text, strlen(text));
    Arena arena;
    arena_init(&arena);
    IrModule m;
    ir_module_init(&m, &arena);
    IrGraph *g = ir_graph_new(&m, "test");

    int64_t dims[4] = {1, 1, 4, 4};
    int w = ir_module_add_var(&m, "w", IR_VAR_PARAM, DT_F32, shape_make(4, dims),
                              IR_INIT_ZEROS, 0, -1, NO_LOC);
    int x = ir_var_read(g, w, NO_LOC);
    IrPoolAttr pool = {.kernel = {2, 2}, .stride = {2, 2}, .pad = {0, 0}};
    int y = ir_maxpool2d(g, x, pool, NO_LOC);
    int dx = ir_maxpool2d_grad(g, x, y, pool, at(file, 2, 7, 9));
    int64_t rows[2] = {4, 4};
    int logits = ir_reshape(g, dx, shape_make(2, rows), NO_LOC);
    int64_t n = 4;
    int labels = ir_input(g, "labels", DT_I32, shape_make(1, &n), NO_LOC);
    int dloss = ir_broadcast(g, ir_const(g, DT_F32, 1, NO_LOC), shape_make(1, &n), NO_LOC);
    int dl = ir_cross_entropy_grad(g, logits, labels, dloss, at(file, 3, 7, 7));
    int loss = ir_sum(g, dl, 3u, NO_LOC);

    FILE *stream;
    capture_begin(&stream);
    int grad = 0;
    bool ok = ad_backward(g, loss, &w, 1, &grad);
    char *out = capture_end(stream);

    cr_expect(!ok);
    cr_expect_eq(grad, -1);
    cr_expect(strstr(out, "missing.bocb:2:7: error: no gradient rule for 'max_pool2d_grad'"),
              "diagnostics were:\n%s", out);
    cr_expect(strstr(out, "missing.bocb:3:7: error: no gradient rule for 'cross_entropy_grad'"),
              "diagnostics were:\n%s", out);
    cr_expect(strstr(out, "  b = ce_grad(a)\n      ^~~~~~~"), "diagnostics were:\n%s", out);
    cr_expect_eq(diag_error_count(), 2);

    free(out);
    ir_graph_free(g);
    ir_module_free(&m);
    arena_free(&arena);
}

Test(autodiff, unused_variable_gets_no_gradient)
{
    Arena arena;
    arena_init(&arena);
    IrModule m;
    ir_module_init(&m, &arena);
    IrGraph *g = ir_graph_new(&m, "test");
    int64_t n = 3;
    int used = ir_module_add_var(&m, "used", IR_VAR_PARAM, DT_F64, shape_make(1, &n),
                                 IR_INIT_ZEROS, 0, -1, NO_LOC);
    int unused = ir_module_add_var(&m, "unused", IR_VAR_PARAM, DT_F64, shape_make(1, &n),
                                   IR_INIT_ZEROS, 0, -1, NO_LOC);
    int x = ir_var_read(g, used, NO_LOC);
    ir_var_read(g, unused, NO_LOC);
    int loss = ir_sum(g, ir_binary(g, IR_MUL, x, x, NO_LOC), 1u, NO_LOC);

    int vars[2] = {used, unused}, grads[2];
    cr_assert(ad_backward(g, loss, vars, 2, grads));
    cr_expect_geq(grads[0], 0);
    cr_expect_eq(grads[1], -1);
    cr_expect(ir_verify(g));

    ir_graph_free(g);
    ir_module_free(&m);
    arena_free(&arena);
}
