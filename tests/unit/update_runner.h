/* update_runner.h - runs an expanded optimizer update for several steps
 * in the interpreter and as JIT-compiled kernels, for the unit tests that
 * compare updates with reference values (test_optim.c,
 * test_rule_reductions.c).
 *
 * The update graph reads the inputs "grad", "lr" and "step" (the 1-based
 * step number) and updates the variable `param` of `module`. It runs in
 * whatever element type the module was built with: f64 for the
 * interpreter, f32 for the JIT.
 */
#ifndef BOCB_TEST_UPDATE_RUNNER_H
#define BOCB_TEST_UPDATE_RUNNER_H

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "../../compiler/driver.h"

typedef struct UpdateRun {
    IrModule *module;
    IrGraph *graph;
    int param;           /* the variable the update writes */
    int n;               /* its number of elements */
    const double *init;  /* its values before the first step, n of them */
    const double *grads; /* steps x n gradients, one step after the other */
    int steps;
    double lr;
} UpdateRun;

/* Evaluates `optimizer = ...`, the first statement of the experiment that
 * is the second declaration of the program's main file, and returns the
 * configured optimizer. */
static const Configured *configure_test_optimizer(Lower *lower, const Program *program)
{
    const Decl *exp = program->main->decls[1];
    lower->mode = MODE_EXPERIMENT;
    Value v = eval_expr(lower, exp->body.stmts[0]->assign.value);
    cr_assert(v.kind == VAL_CONFIGURED, "the optimizer did not configure");
    return v.configured;
}

/* Builds the graph "update": the rule of `opt` expanded for one parameter
 * "w" of `shape`, whose gradient is the input "grad". Sets *param to the
 * parameter's variable; the graph belongs to `module`, initialised here. */
static IrGraph *build_update(Lower *lower, IrModule *module, Arena *arena,
                             const Configured *opt, DType dtype, Shape shape, int *param)
{
    ir_module_init(module, arena);
    IrGraph *g = ir_graph_new(module, "update");
    *param = ir_module_add_var(module, "w", IR_VAR_PARAM, dtype, shape, IR_INIT_ZEROS, 0, -1,
                               NO_LOC);
    int grad = ir_input(g, "grad", dtype, shape, NO_LOC);
    int lr = ir_input(g, "lr", dtype, shape_scalar(), NO_LOC);
    int step = ir_input(g, "step", dtype, shape_scalar(), NO_LOC);
    lower->graph = g;
    lower->module = module;
    lower->dtype = dtype;
    cr_assert(expand_optimizer(lower, opt, *param, grad, lr, step));
    cr_assert(diag_error_count() == 0, "the rule did not expand");
    ir_dce(g);
    cr_assert(ir_verify(g));
    return g;
}

/* Runs the steps in the interpreter (f64) and copies the parameter to out. */
static void run_update_interp(const UpdateRun *r, double *out)
{
    RtVarStore store;
    create_var_store(&store, r->module);
    rt_vars_reset(&store, 0);
    memcpy(rt_var_data(&store, r->param), r->init, sizeof(double) * (size_t)r->n);
    Interp *it = interp_create(r->graph, &store);
    double *grad = calloc((size_t)r->n, sizeof *grad);
    double lr = r->lr, step;
    interp_bind_input(it, ir_find_input(r->graph, "grad"), grad);
    interp_bind_input(it, ir_find_input(r->graph, "lr"), &lr);
    interp_bind_input(it, ir_find_input(r->graph, "step"), &step);
    for (int t = 0; t < r->steps; t++) {
        memcpy(grad, r->grads + (size_t)t * (size_t)r->n, sizeof(double) * (size_t)r->n);
        step = t + 1;
        interp_run(it, 1);
    }
    memcpy(out, rt_var_data(&store, r->param), sizeof(double) * (size_t)r->n);
    free(grad);
    interp_destroy(it);
    rt_vars_free(&store);
}

/* Runs the steps as a scheduled, JIT-compiled program (f32) and copies
 * the parameter to out. With one_kernel, the whole update must be one
 * step of the program, a kernel that writes the parameter in place. */
static void run_update_jit(const UpdateRun *r, bool one_kernel, double *out)
{
    RtVarStore store;
    create_var_store(&store, r->module);
    rt_vars_reset(&store, 0);
    float *w = rt_var_data(&store, r->param);
    for (int i = 0; i < r->n; i++)
        w[i] = (float)r->init[i];

    Schedule sched;
    schedule_graph(r->graph, 1, &sched);
    char *error = NULL;
    Jit *jit = jit_create(&error);
    cr_assert(jit, "%s", error);
    cr_assert(jit_compile(jit, sched.kernels, sched.nkernels, sched.program.kernels, &error),
              "%s", error);
    if (one_kernel)
        cr_expect_eq(sched.program.nsteps, 1, "update took %d steps", sched.program.nsteps);

    RtExec *e = rt_exec_create(&sched.program, &store);
    for (int t = 0; t < r->steps; t++) {
        float *grad = rt_exec_input(e, "grad");
        for (int i = 0; i < r->n; i++)
            grad[i] = (float)r->grads[(size_t)t * (size_t)r->n + (size_t)i];
        *(float *)rt_exec_input(e, "lr") = (float)r->lr;
        *(float *)rt_exec_input(e, "step") = (float)(t + 1);
        rt_exec_run(e, 1);
    }
    for (int i = 0; i < r->n; i++)
        out[i] = w[i];
    rt_exec_destroy(e);
    schedule_free(&sched);
    jit_destroy(jit);
    rt_vars_free(&store);
}

/* Expects every element within tol of the reference, relative to
 * max(1, |reference|). */
static void expect_update_close(const double *got, const double *want, int n, double tol,
                                const char *backend)
{
    for (int i = 0; i < n; i++) {
        double err = fabs(got[i] - want[i]) / fmax(1.0, fabs(want[i]));
        cr_expect(err <= tol, "%s: element %d is %.12g, reference %.12g", backend, i,
                  got[i], want[i]);
    }
}

#endif
