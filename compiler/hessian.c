/* hessian.c - Hessian-vector products as reverse mode then forward mode. */
#include "hessian.h"

#include <stdlib.h>
#include <string.h>

#include "autodiff.h"

bool hessian_vector_graph(IrGraph *g, int loss, const int *vars, const int *tangents,
                          int nvars, int *grads, int *hvp)
{
    if (!ad_backward(g, loss, vars, nvars, grads))
        return false;
    /* Forward mode over the whole gradient graph: the tangent of grads[i]
     * along v is row i of H v. A gradient of -1 is zero, with zero tangent. */
    int *outs = xcalloc((size_t)nvars + 1, sizeof *outs);
    int nouts = 0;
    for (int i = 0; i < nvars; i++)
        if (grads[i] >= 0)
            outs[nouts++] = grads[i];
    int *tangent = xcalloc((size_t)nouts + 1, sizeof *tangent);
    bool ok = fwd_jvp(g, vars, tangents, nvars, outs, nouts, tangent);
    for (int i = 0, k = 0; i < nvars; i++)
        hvp[i] = grads[i] >= 0 && ok ? tangent[k++] : -1;
    free(outs);
    free(tangent);
    return ok;
}

/* ---- one graph, compiled or interpreted ----------------------------------- */

bool graph_exec_create(GraphExec *e, const IrGraph *g, RtVarStore *vars, Backend backend,
                       Jit *jit, int64_t max_batch, char **error)
{
    memset(e, 0, sizeof *e);
    e->graph = g;
    e->backend = backend;
    if (backend == BACKEND_INTERP) {
        e->interp = interp_create(g, vars);
        e->inputs = xcalloc((size_t)g->ninputs + 1, sizeof *e->inputs);
        for (int i = 0; i < g->ninputs; i++) {
            const IrInput *in = &g->inputs[i];
            size_t bytes = size_mul((size_t)shape_numel(&in->shape, max_batch),
                                    dtype_size(in->dtype));
            e->inputs[i] = xcalloc(bytes ? bytes : 1, 1);
            interp_bind_input(e->interp, i, e->inputs[i]);
        }
        return true;
    }
    schedule_graph(g, max_batch, &e->sched);
    int n = e->sched.nkernels;
    RtKernelFn *fns = xcalloc((size_t)n + 1, sizeof *fns);
    bool ok = n == 0 || jit_compile(jit, e->sched.kernels, n, fns, error);
    if (ok) {
        memcpy(e->sched.program.kernels, fns, (size_t)n * sizeof *fns);
        e->exec = rt_exec_create(&e->sched.program, vars);
    }
    free(fns);
    if (!ok)
        graph_exec_destroy(e);
    return ok;
}

void graph_exec_destroy(GraphExec *e)
{
    rt_exec_destroy(e->exec);
    if (e->sched.program.steps || e->sched.kernels)
        schedule_free(&e->sched);
    interp_destroy(e->interp);
    if (e->inputs) {
        for (int i = 0; i < e->graph->ninputs; i++)
            free(e->inputs[i]);
        free(e->inputs);
    }
    memset(e, 0, sizeof *e);
}

void *graph_exec_input(GraphExec *e, const char *name)
{
    if (e->exec)
        return rt_exec_input(e->exec, name);
    int i = ir_find_input(e->graph, name);
    return i < 0 ? NULL : e->inputs[i];
}

void graph_exec_run(GraphExec *e, int64_t batch)
{
    if (e->exec)
        rt_exec_run(e->exec, batch);
    else
        interp_run(e->interp, batch);
}

const void *graph_exec_output(const GraphExec *e, const char *name)
{
    return e->exec ? rt_exec_output(e->exec, name) : interp_output(e->interp, name);
}

/* ---- the Hessian operator ------------------------------------------------- */

bool hessian_op_create(HessianOp *h, const IrGraph *eval, RtVarStore *store, Backend backend,
                       Jit *jit, int64_t max_batch, char **error)
{
    memset(h, 0, sizeof *h);
    const IrModule *m = eval->module;
    int loss = ir_find_output(eval, "loss");
    int x = ir_find_input(eval, "x");
    BOCB_ASSERT(loss >= 0 && x >= 0 && ir_find_input(eval, "labels") >= 0);

    IrGraph *g = ir_graph_clone(eval, "hessian_vector");
    h->graph = g;
    h->dtype = ir_node(g, loss)->dtype;
    h->store = store;
    h->max_batch = max_batch;
    h->sample_bytes = (int64_t)size_mul((size_t)shape_numel(&eval->inputs[x].shape, 1),
                                        dtype_size(eval->inputs[x].dtype));
    h->vars = xcalloc((size_t)m->nvars + 1, sizeof *h->vars);
    h->offsets = xcalloc((size_t)m->nvars + 1, sizeof *h->offsets);
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        h->vars[h->nparams] = v;
        h->offsets[h->nparams] = h->size;
        h->size += shape_numel(&m->vars[v].shape, 1);
        h->nparams++;
    }

    int *tangents = xcalloc((size_t)h->nparams + 1, sizeof *tangents);
    int *grads = xcalloc((size_t)h->nparams + 1, sizeof *grads);
    int *hvp = xcalloc((size_t)h->nparams + 1, sizeof *hvp);
    for (int k = 0; k < h->nparams; k++) {
        const IrVar *var = &m->vars[h->vars[k]];
        char name[32];
        snprintf(name, sizeof name, "tangent%d", k);
        tangents[k] = ir_input(g, name, var->dtype, var->shape, var->loc);
    }
    int errors = diag_error_count();
    bool ok = hessian_vector_graph(g, loss, h->vars, tangents, h->nparams, grads, hvp);
    for (int k = 0; ok && k < h->nparams; k++) {
        char name[32];
        const IrVar *var = &m->vars[h->vars[k]];
        SrcLoc loc = var->loc;
        /* A parameter the loss does not depend on has zero rows. */
        int zero = ir_broadcast(g, ir_const(g, var->dtype, 0.0, loc), var->shape, loc);
        snprintf(name, sizeof name, "grad%d", k);
        ir_add_output(g, name, grads[k] >= 0 ? grads[k] : zero);
        snprintf(name, sizeof name, "hvp%d", k);
        ir_add_output(g, name, hvp[k] >= 0 ? hvp[k] : zero);
    }
    free(tangents);
    free(grads);
    free(hvp);
    if (!ok) {
        *error = xasprintf("the loss cannot be differentiated twice (%d errors above)",
                           diag_error_count() - errors);
        hessian_op_destroy(h);
        return false;
    }
    /* Drop the evaluation graph's other outputs, such as the logits. */
    int kept = 0;
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(g->outputs[i].name, "logits") != 0)
            g->outputs[kept++] = g->outputs[i];
    g->noutputs = kept;
    ir_dce(g);
    BOCB_ASSERT(ir_verify(g));
    if (!graph_exec_create(&h->exec, g, store, backend, jit, max_batch, error)) {
        hessian_op_destroy(h);
        return false;
    }
    return true;
}

void hessian_op_destroy(HessianOp *h)
{
    if (h->exec.graph)
        graph_exec_destroy(&h->exec);
    ir_graph_free(h->graph);
    free(h->vars);
    free(h->offsets);
    memset(h, 0, sizeof *h);
}

void hessian_op_apply(HessianOp *h, const void *x, const int32_t *labels, int64_t n,
                      const double *v, double *hv, double *grad, double *loss)
{
    GraphExec *e = &h->exec;
    for (int k = 0; k < h->nparams; k++) {
        char name[32];
        snprintf(name, sizeof name, "tangent%d", k);
        void *t = graph_exec_input(e, name);
        int64_t numel = h->store->vars[h->vars[k]].numel;
        DType dt = h->store->vars[h->vars[k]].dtype;
        for (int64_t i = 0; i < numel; i++)
            store_from_f64(dt, t, i, v[h->offsets[k] + i]);
    }
    memset(hv, 0, (size_t)h->size * sizeof *hv);
    if (grad)
        memset(grad, 0, (size_t)h->size * sizeof *grad);
    double total = 0;

    void *xin = graph_exec_input(e, "x");
    int32_t *lin = graph_exec_input(e, "labels");
    for (int64_t start = 0; start < n; start += h->max_batch) {
        int64_t b = n - start < h->max_batch ? n - start : h->max_batch;
        memcpy(xin, (const char *)x + start * h->sample_bytes, (size_t)(b * h->sample_bytes));
        memcpy(lin, labels + start, (size_t)b * sizeof *labels);
        graph_exec_run(e, b);
        double weight = (double)b / (double)n;
        total += weight * load_as_f64(h->dtype, graph_exec_output(e, "loss"), 0);
        for (int k = 0; k < h->nparams; k++) {
            char name[32];
            int64_t numel = h->store->vars[h->vars[k]].numel;
            DType dt = h->store->vars[h->vars[k]].dtype;
            snprintf(name, sizeof name, "hvp%d", k);
            const void *out = graph_exec_output(e, name);
            for (int64_t i = 0; i < numel; i++)
                hv[h->offsets[k] + i] += weight * load_as_f64(dt, out, i);
            if (!grad)
                continue;
            snprintf(name, sizeof name, "grad%d", k);
            out = graph_exec_output(e, name);
            for (int64_t i = 0; i < numel; i++)
                grad[h->offsets[k] + i] += weight * load_as_f64(dt, out, i);
        }
    }
    if (loss)
        *loss = total;
}
