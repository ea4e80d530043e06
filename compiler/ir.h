/* ir.h - the graph IR: an SSA dataflow graph of typed tensor values.
 *
 * A graph is an array of nodes in topological order: a node's operands
 * always have smaller ids, so a single forward sweep evaluates it and a
 * single backward sweep differentiates it. Every node has one result with
 * a static dtype and a Shape whose batch axis may scale with the run-time
 * batch size (see shape.h).
 *
 * Persistent state lives in variables owned by the IrModule: parameters
 * and optimizer state. A graph reads a variable with IR_VAR and updates it
 * with IR_ASSIGN. Reads see the value from before the graph ran, and every
 * assignment takes effect when the graph finishes, as in a functional
 * update. The scheduler writes in place only where the result is the same.
 *
 * Elementwise ops take operands of identical shape: broadcasting is always
 * an explicit IR_BROADCAST node (numpy rules), which the fusion pass turns
 * into a zero stride, and whose gradient is a reduction.
 *
 * Builders check their operands with BOCB_ASSERT: the lowering pass reports
 * the user's shape errors before it builds a node, so a failed check here
 * is a compiler bug.
 */
#ifndef BOCB_IR_H
#define BOCB_IR_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../lang/diag.h"
#include "../runtime/shape.h"
#include "../runtime/spatial.h"

typedef enum IrOp {
    /* leaves */
    IR_INPUT, /* graph input bound at run time (images, labels, lr, step) */
    IR_VAR,   /* read of a variable: a parameter or an optimizer state */
    IR_CONST, /* rank-0 constant */
    IR_BATCH, /* rank-0: the run-time batch size */

    /* elementwise, one operand */
    IR_NEG, IR_ABS, IR_SIGN, IR_SQRT, IR_EXP, IR_LOG, IR_TANH, IR_RELU,
    IR_FLOOR, IR_NOT, IR_CAST,
    IR_ERF,     /* the error function */
    IR_SIGMOID, /* 1 / (1 + exp(-x)) */
    /* random(key, step): uniform in [0, 1) from Philox4x32-10. The key is
     * the bit pattern of `key`, and the counter is (element index, step).
     * Both operands are broadcasts of rank-0 values. No gradient. */
    IR_RANDOM,

    /* elementwise, two operands of the same shape and dtype */
    IR_ADD, IR_SUB, IR_MUL, IR_DIV, IR_POW, IR_MAX, IR_MIN,
    IR_LT, IR_LE, IR_GT, IR_GE, IR_EQ, IR_NE, /* result bool */
    IR_AND, IR_OR,                            /* bool operands */

    /* elementwise: select(cond, a, b) = cond ? a : b */
    IR_SELECT,

    /* shape */
    IR_BROADCAST, /* numpy-style, to the node's shape */
    IR_RESHAPE,   /* same element count, row-major order */

    /* reductions */
    IR_SUM, /* over the axes in attr.axes, which are removed */

    /* library ops (runtime/ops.h) */
    IR_MATMUL,              /* [M,K] x [K,N]; transposes in attr.matmul */
    IR_CONV2D,              /* x [N,C,H,W], w [K,C/g,R,S] -> [N,K,P,Q] */
    IR_CONV2D_GRAD_INPUT,   /* dy, w -> dx (shape in the node) */
    IR_CONV2D_GRAD_WEIGHT,  /* x, dy -> dw (shape in the node) */
    IR_MAXPOOL2D,           /* x -> y */
    IR_MAXPOOL2D_GRAD,      /* x, dy -> dx */
    IR_CROSS_ENTROPY,       /* logits [N,C], labels i32 [N] -> loss [N] */
    IR_CROSS_ENTROPY_GRAD,  /* logits, labels, dloss [N] -> dlogits [N,C] */
    IR_GATHER,              /* table [V,D], i32 ids [...] -> rows [..., D] */
    IR_SCATTER_ADD,         /* i32 ids [...], dy [..., D] -> [V,D] (shape in the node) */

    /* library ops of the spatial family (ir_spatial.h), attr.spatial */
    IR_PERMUTE,          /* x -> y, y axis i = x axis p[i] */
    IR_SLICE,            /* x -> y, along axis p[0] from index p[1] */
    IR_CONCAT,           /* a, b -> y, along axis p[0] */
    IR_BMM,              /* [..., M, K] x [..., K, N]; p[0], p[1] transposes */
    IR_AVGPOOL2D,        /* x -> y */
    IR_AVGPOOL2D_GRAD,   /* dy -> dx (shape in the node) */
    IR_REDUCE_MAX,       /* x -> y, over the axes in the mask p[0] */
    IR_REDUCE_MAX_GRAD,  /* x, dy -> dx */
    /* x, key, step -> i32 words holding encode(x), bucketed min-max
     * quantization (runtime/quant.h): each bucket's base and scale, then
     * the packed codes. p[0] bits, p[1] bucket, p[2] RtRounding, p[3] tag,
     * p[4] x's dtype */
    IR_QUANTIZE,
    /* words of an IR_QUANTIZE node -> decode(words), of x's dtype and
     * shape; p[0] bits, p[1] bucket */
    IR_DEQUANTIZE,
    IR_IOTA,             /* -> y, the index along axis p[0] */
    IR_SAMPLE_LABELS,       /* logits [N,C], step -> i32 [N] drawn from softmax */

    /* library ops of sharded training (qsdp.h), attr.var the parameter.
     * The sharded loop runs them through the executor's RtShardHooks. */
    IR_GATHER_SHARDS, /* -> the full value of the parameter, all-gathered */
    /* gradient -> rank-0 token 0; sends the gradient's slices to their
     * owners, which add them into the update graph's input. Dead-code
     * removal keeps it like an assignment. */
    IR_REDUCE_SHARDS,

    /* effects */
    IR_ASSIGN, /* variable attr.var := operand 0 when the graph finishes */

    IR_OP_COUNT
} IrOp;

typedef enum IrOpClass {
    IR_CLASS_LEAF,
    IR_CLASS_ELEMENTWISE,
    IR_CLASS_SHAPE,
    IR_CLASS_REDUCTION,
    IR_CLASS_LIBRARY,
    IR_CLASS_EFFECT,
} IrOpClass;

/* Returns true for the ops whose attr.var names a module variable. */
static inline bool ir_names_var(IrOp op)
{
    return op == IR_VAR || op == IR_ASSIGN || op == IR_GATHER_SHARDS ||
           op == IR_REDUCE_SHARDS;
}

/* Returns the op's name as printed and as spelled in messages. */
const char *ir_op_name(IrOp op);
IrOpClass ir_op_class(IrOp op);

enum { IR_MAX_OPERANDS = 3 };

typedef struct IrConvAttr {
    int64_t stride[2], pad[2], dilation[2];
    int64_t groups;
} IrConvAttr;

typedef struct IrPoolAttr {
    int64_t kernel[2], stride[2], pad[2];
} IrPoolAttr;

typedef enum IrLossKind {
    IR_LOSS_CROSS_ENTROPY, /* with label smoothing as PyTorch defines it */
    IR_LOSS_MSE,           /* mean over classes of (x - one_hot(label))^2 */
    /* The experiment's `loss = next_token` (lm.h). The forward pass builds
     * it from ordinary nodes, so no node carries this kind. */
    IR_LOSS_NEXT_TOKEN,
} IrLossKind;

/* IR_CROSS_ENTROPY and its gradient; all zero is plain cross-entropy. */
typedef struct IrLossAttr {
    IrLossKind kind;
    double label_smoothing;
} IrLossAttr;

typedef struct IrNode {
    IrOp op;
    DType dtype;
    Shape shape;
    int nin;
    int in[IR_MAX_OPERANDS];
    SrcLoc loc;
    /* A copy of a forward value that the backward pass recomputes instead
     * of keeping it (recompute.h). Fusion keeps it out of the forward
     * pass's kernels. */
    bool recomputed;
    union {
        double value; /* IR_CONST */
        int var;      /* IR_VAR, IR_ASSIGN, IR_GATHER_SHARDS, IR_REDUCE_SHARDS:
                         index into module->vars */
        int input;    /* IR_INPUT: index into graph->inputs */
        struct {
            bool trans_a, trans_b;
        } matmul;
        IrConvAttr conv;
        IrPoolAttr pool;
        uint32_t axes; /* IR_SUM: bit i set = axis i reduced */
        IrLossAttr loss; /* IR_CROSS_ENTROPY(_GRAD) */
        RtSpatialAttr spatial; /* the ops of ir_spatial.h */
        uint32_t stream; /* IR_SAMPLE_LABELS: Philox stream, keyed with the step */
    } attr;
} IrNode;

typedef enum IrVarKind {
    IR_VAR_PARAM, /* trainable parameter */
    IR_VAR_STATE, /* optimizer state */
    IR_VAR_BUFFER, /* not trained: running statistics, random keys */
} IrVarKind;

typedef enum IrInit {
    IR_INIT_ZEROS,
    IR_INIT_CONST,   /* every element = init_value */
    IR_INIT_UNIFORM, /* U(-init_value, init_value) */
    IR_INIT_TRUNC_NORMAL, /* N(0, init_value^2) truncated to [-2, 2] */
} IrInit;

typedef struct IrVar {
    const char *name; /* hierarchical: "mlp.linear1.weight", "...weight.m" */
    IrVarKind kind;
    DType dtype;
    Shape shape; /* never has a batch axis */
    IrInit init;
    double init_value;
    int owner;   /* IR_VAR_STATE: the parameter it belongs to, else -1 */
    const char *tag; /* role for parameter selectors: "weight", "bias",
                        "norm", ...; a static or arena string, or NULL */
    SrcLoc loc;  /* where it was created in the source */
    /* A frozen parameter keeps its initial (or loaded) value: the training
     * step computes no gradient for it, and it gets no optimizer state and
     * no update. Gradient estimators skip it too (ir_var_trainable). */
    bool frozen;
} IrVar;

/* Returns true for a parameter that training updates: not frozen. */
static inline bool ir_var_trainable(const IrVar *v)
{
    return v->kind == IR_VAR_PARAM && !v->frozen;
}

/* Variables shared by the graphs of one model instance (training step,
 * evaluation), and the arena their names live in. */
typedef struct IrModule {
    IrVar *vars;
    int nvars, cap_vars;
    Arena *arena;
} IrModule;

typedef struct IrInput {
    const char *name;
    DType dtype;
    Shape shape;
} IrInput;

typedef struct IrOutput {
    const char *name;
    int node;
} IrOutput;

typedef struct IrGraph {
    const char *name;
    IrModule *module;
    IrNode *nodes;
    int nnodes, cap_nodes;
    IrInput *inputs;
    int ninputs, cap_inputs;
    IrOutput *outputs;
    int noutputs, cap_outputs;
} IrGraph;

/* ---- modules and graphs --------------------------------------------------- */

void ir_module_init(IrModule *m, Arena *arena);
void ir_module_free(IrModule *m);
/* Adds a variable and returns its index. The name is copied. */
int ir_module_add_var(IrModule *m, const char *name, IrVarKind kind,
                      DType dtype, Shape shape, IrInit init, double init_value,
                      int owner, SrcLoc loc);
/* Returns the index of the variable called `name`, or -1. */
int ir_module_find_var(const IrModule *m, const char *name);

IrGraph *ir_graph_new(IrModule *m, const char *name);
void ir_graph_free(IrGraph *g);
/* Returns a deep copy with the same node ids. */
IrGraph *ir_graph_clone(const IrGraph *g, const char *name);

static inline IrNode *ir_node(IrGraph *g, int id) { return &g->nodes[id]; }

/* ---- builders ------------------------------------------------------------- */

int ir_input(IrGraph *g, const char *name, DType dtype, Shape shape, SrcLoc loc);
int ir_var_read(IrGraph *g, int var, SrcLoc loc);
int ir_const(IrGraph *g, DType dtype, double value, SrcLoc loc);
int ir_batch(IrGraph *g, DType dtype, SrcLoc loc);
int ir_unary(IrGraph *g, IrOp op, int x, SrcLoc loc);
int ir_cast(IrGraph *g, int x, DType dtype, SrcLoc loc);
int ir_binary(IrGraph *g, IrOp op, int a, int b, SrcLoc loc);
int ir_select(IrGraph *g, int cond, int a, int b, SrcLoc loc);
int ir_broadcast(IrGraph *g, int x, Shape to, SrcLoc loc);
int ir_reshape(IrGraph *g, int x, Shape to, SrcLoc loc);
int ir_sum(IrGraph *g, int x, uint32_t axes, SrcLoc loc);
int ir_matmul(IrGraph *g, int a, int b, bool trans_a, bool trans_b, SrcLoc loc);
int ir_conv2d(IrGraph *g, int x, int w, IrConvAttr attr, SrcLoc loc);
int ir_conv2d_grad_input(IrGraph *g, int dy, int w, Shape x_shape,
                         IrConvAttr attr, SrcLoc loc);
int ir_conv2d_grad_weight(IrGraph *g, int x, int dy, Shape w_shape,
                          IrConvAttr attr, SrcLoc loc);
int ir_maxpool2d(IrGraph *g, int x, IrPoolAttr attr, SrcLoc loc);
int ir_maxpool2d_grad(IrGraph *g, int x, int dy, IrPoolAttr attr, SrcLoc loc);
int ir_cross_entropy(IrGraph *g, int logits, int labels, SrcLoc loc);
int ir_cross_entropy_grad(IrGraph *g, int logits, int labels, int dloss,
                          SrcLoc loc);
/* Rows `ids` of `table` [V, D]; an id outside [0, V) gives a zero row. */
int ir_gather(IrGraph *g, int table, int ids, SrcLoc loc);
/* The gradient of ir_gather with respect to the table: dy's rows summed
 * into the rows that `ids` name, in a table of shape `table_shape`. */
int ir_scatter_add(IrGraph *g, int ids, int dy, Shape table_shape, SrcLoc loc);
/* ir_cross_entropy with a loss kind and label smoothing. */
int ir_loss(IrGraph *g, int logits, int labels, IrLossAttr attr, SrcLoc loc);
/* Uniform random numbers of shape `shape`, keyed by the rank-0 value `key`
 * (a variable read) and counted by the rank-0 value `step`. */
int ir_random(IrGraph *g, int key, int step, Shape shape, SrcLoc loc);
/* Labels drawn from softmax(logits) per row, with Philox key
 * philox_key(stream, step) (rt_sample_labels). No gradient flows through. */
int ir_sample_labels(IrGraph *g, int logits, int step, uint32_t stream, SrcLoc loc);
int ir_assign(IrGraph *g, int var, int value, SrcLoc loc);
/* The full value of parameter `var`, all-gathered from its shards. */
int ir_gather_shards(IrGraph *g, int var, SrcLoc loc);
/* Reduce-scatters `grad`, the gradient of parameter `var`. */
int ir_reduce_shards(IrGraph *g, int var, int grad, SrcLoc loc);
/* Adds a node of the spatial family (ir_spatial.h builds them) with the
 * given result type and attributes, unchecked. */
int ir_add_spatial(IrGraph *g, IrOp op, DType dtype, Shape shape, int nin, const int *in,
                   RtSpatialAttr attr, SrcLoc loc);
void ir_add_output(IrGraph *g, const char *name, int node);
/* Returns the node of the output called `name`, or -1. */
int ir_find_output(const IrGraph *g, const char *name);
/* Returns the index of the input called `name`, or -1. */
int ir_find_input(const IrGraph *g, const char *name);

/* ---- shape rules (shared with the lowering pass's checks) ----------------- */

/* Computes the numpy broadcast of a and b. Returns false when they are
 * incompatible. A batch axis matches only a batch axis with the same
 * multiplier, or a static 1. */
bool ir_broadcast_shape(const Shape *a, const Shape *b, Shape *out);
/* Returns true when `from` broadcasts to `to` under the same rules. */
bool ir_can_broadcast(const Shape *from, const Shape *to);
/* Output shapes of the library ops; false (with *why set to a static
 * string) when the operands do not fit. */
bool ir_matmul_shape(const Shape *a, const Shape *b, bool trans_a, bool trans_b,
                     Shape *out, const char **why);
bool ir_conv2d_shape(const Shape *x, const Shape *w, const IrConvAttr *attr,
                     Shape *out, const char **why);
bool ir_pool2d_shape(const Shape *x, const IrPoolAttr *attr, Shape *out,
                     const char **why);

/* ---- analyses and passes -------------------------------------------------- */

/* Fills uses[i] with the number of operand references to node i plus one
 * for each output that names it. */
void ir_count_uses(const IrGraph *g, int *uses);

/* Removes nodes that no output, assignment or reduce_shards depends on,
 * and renumbers the rest (keeping their order). */
void ir_dce(IrGraph *g);

/* Makes every assignment of g conditional on the rank-0 boolean `cond`:
 * each variable gets select(cond, new value, old value), so when cond is
 * false the graph leaves every variable unchanged. The assignments move
 * to the end of the graph; other node ids may change, except those below
 * the first assignment. */
void ir_guard_assigns(IrGraph *g, int cond, SrcLoc loc);
/* Like ir_guard_assigns, with one condition per variable: the assignment
 * of variable v becomes conditional on the rank-0 boolean node conds[v],
 * and stays as it is when conds[v] < 0. No condition may be an
 * assignment. */
void ir_guard_assigns_by_var(IrGraph *g, const int *conds, SrcLoc loc);

/* Checks every structural invariant: operand ids precede their users,
 * operand dtypes and shapes fit each op, variables exist, no variable is
 * assigned twice, outputs exist. Prints the first violation to stderr with
 * the graph and returns false. */
bool ir_verify(const IrGraph *g);

/* Prints the graph in the stable text form of `bocbc --emit=ir`. */
void ir_print(FILE *out, const IrGraph *g);
/* Prints the graph for Graphviz (`bocbc --emit=dot`). */
void ir_print_dot(FILE *out, const IrGraph *g);

#endif
