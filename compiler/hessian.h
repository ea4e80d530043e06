/* hessian.h - Hessian-vector products of a model's loss, compiled.
 *
 * The product is a composition of the two autodiff passes: reverse mode
 * gives the gradient graph of the mean loss, and forward mode over that
 * graph with tangent v gives H v (Pearlmutter's trick). The result is an
 * ordinary graph, scheduled, fused and JIT-compiled (or interpreted) like
 * a training step, that costs about two gradients per product and never
 * stores a parameter-by-parameter matrix.
 *
 * Vectors over the parameters are flat f64 arrays: the trainable
 * variables of the module in index order, each in row-major order.
 */
#ifndef BOCB_HESSIAN_H
#define BOCB_HESSIAN_H

#include <stdbool.h>
#include <stdint.h>

#include "forward.h"
#include "run.h"

/* Appends to `g` the gradient of the rank-0 node `loss` with respect to
 * each variable vars[i] (grads[i]) and the product of the Hessian with the
 * tangent nodes tangents[i] (hvp[i]). Either is -1 where the loss does not
 * depend on that variable. Returns false after reported errors (an op
 * without a rule). */
bool hessian_vector_graph(IrGraph *g, int loss, const int *vars, const int *tangents,
                          int nvars, int *grads, int *hvp);

/* One graph run by the JIT or by the interpreter over a variable store
 * that the caller owns. */
typedef struct GraphExec {
    const IrGraph *graph;
    Backend backend;
    Schedule sched;
    RtExec *exec;
    Interp *interp;
    void **inputs; /* interpreter: one buffer per graph input */
} GraphExec;

/* Prepares `g` for batches of at most max_batch samples. `jit` is needed
 * for BACKEND_JIT. Returns false and sets *error (malloc'd) when code
 * generation fails. */
bool graph_exec_create(GraphExec *e, const IrGraph *g, RtVarStore *vars, Backend backend,
                       Jit *jit, int64_t max_batch, char **error);
void graph_exec_destroy(GraphExec *e);
/* Returns the buffer of input `name`, sized for the maximum batch. */
void *graph_exec_input(GraphExec *e, const char *name);
void graph_exec_run(GraphExec *e, int64_t batch);
const void *graph_exec_output(const GraphExec *e, const char *name);

/* Element i of an f32 or f64 buffer, as a double, and the reverse: the
 * conversions between the graphs' element types and flat f64 vectors. */
static inline double load_as_f64(DType dt, const void *p, int64_t i)
{
    return dt == DT_F32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}

static inline void store_from_f64(DType dt, void *p, int64_t i, double v)
{
    if (dt == DT_F32)
        ((float *)p)[i] = (float)v;
    else
        ((double *)p)[i] = v;
}

/* The Hessian of a model's mean loss over samples, as an operator. */
typedef struct HessianOp {
    IrGraph *graph; /* inputs x, labels, tangent<k>; outputs loss, grad<k>, hvp<k> */
    DType dtype;
    int nparams;
    int *vars;          /* the trainable variables, in module order */
    int64_t *offsets;   /* where each starts in a flat vector */
    int64_t size;       /* elements of a flat vector */
    int64_t sample_bytes; /* bytes of one sample of x */
    int64_t max_batch;
    RtVarStore *store;
    GraphExec exec;
} HessianOp;

/* Builds the operator from `eval`, a graph with inputs x and labels and a
 * rank-0 output "loss" that is the mean over the batch (the evaluation
 * graph of a compiled cell), over the variables in `store`. Returns false
 * and sets *error (malloc'd) when the graph cannot be differentiated or
 * compiled. */
bool hessian_op_create(HessianOp *h, const IrGraph *eval, RtVarStore *store, Backend backend,
                       Jit *jit, int64_t max_batch, char **error);
void hessian_op_destroy(HessianOp *h);

/* Computes, for the mean loss over the n samples x (laid out as the graph
 * input x expects) with labels, hv = H v and, where not NULL, the gradient
 * and the loss. Batches of max_batch samples are weighted by their size,
 * so the result does not depend on max_batch. */
void hessian_op_apply(HessianOp *h, const void *x, const int32_t *labels, int64_t n,
                      const double *v, double *hv, double *grad, double *loss);

#endif
