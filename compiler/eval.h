/* eval.h - the compile-time evaluator shared by the lowering passes.
 *
 * Model bodies, optimizer rules, experiment settings and top-level
 * constants are all evaluated by one small interpreter over Values. A
 * Value is either known at compile time (a number, a list, a model) or a
 * tensor, which is an IR node of the graph being built. Arithmetic on
 * numbers folds, and arithmetic that involves a tensor emits IR. So running a
 * model's body once with its hyperparameters bound *is* instantiating it.
 *
 * Errors are reported through diag at the offending expression and yield
 * VAL_ERROR, a poison value that every consumer passes on silently, so one
 * mistake produces one message and evaluation continues to find others.
 */
#ifndef BOCB_EVAL_H
#define BOCB_EVAL_H

#include "../lang/ast.h"
#include "../lang/parse.h"
#include "ir.h"

typedef struct Value Value;
typedef struct Builtin Builtin;
typedef struct Lower Lower;

/* The stages of compile_cell passed to Lower.stage_hook. */
typedef enum CellStage {
    CELL_STAGE_FORWARD,  /* forward pass, loss and logits */
    CELL_STAGE_BACKWARD, /* plus the gradients of the parameters */
} CellStage;

typedef enum ValueKind {
    VAL_ERROR, /* an error was already reported */
    VAL_NONE,
    VAL_NUMBER,
    VAL_BOOL,
    VAL_STRING,
    VAL_SYMBOL,  /* a bare name in an experiment setting: backprop, unit */
    VAL_LIST,
    VAL_TUPLE,
    VAL_TENSOR,
    VAL_DECL,       /* a model, optimizer or data declaration */
    VAL_BUILTIN,
    VAL_CONFIGURED, /* a model or optimizer with arguments: sgd(lr = 0.05) */
    VAL_DATA,       /* a data source: idx("dir", normalize = unit) */
} ValueKind;

/* Keyword arguments bound to a model or optimizer in an experiment. */
typedef struct Configured {
    const Decl *decl;
    SrcLoc loc; /* where the experiment names it */
    int nargs;
    const char **names;
    Value *values;
    SrcLoc *locs;
    const char *label; /* "sgd(lr=0.05, momentum=0.9)" */
    /* Of one combination of a hyperparameter sweep (sweep.c): the label of
     * the whole sweep, "sgd(lr=[0.1, 0.03])", and the swept values of
     * this combination, "lr=0.1". NULL otherwise. */
    const char *sweep;
    const char *setting;
    /* Of a sweep's combination: the name of the first swept argument and
     * the location of its list, for errors about the sweep as a whole. */
    const char *swept_name;
    SrcLoc swept_loc;
} Configured;

typedef enum DataFormat {
    DATA_IDX,
    DATA_FORTUNES, /* fortunes(...): character-level text, runtime/text.h */
    DATA_CIFAR, /* CIFAR-10 or CIFAR-100 binary batches */
} DataFormat;

/* A data source as written in the program; the driver loads it. */
typedef struct DataSpec {
    DataFormat format;
    const char *path;
    int normalize; /* Normalize from runtime/data.h */
    const struct FortuneOptions *fortunes; /* DATA_FORTUNES; path is its dir */
    const char *name;
    SrcLoc loc;
    int classes; /* idx(..., classes = N); 0 = 1 + the largest label */
} DataSpec;

struct Value {
    ValueKind kind;
    SrcLoc loc;
    union {
        struct {
            double value;
            bool is_integer;
        } number;
        bool boolean;
        const char *string; /* VAL_STRING, VAL_SYMBOL */
        struct {
            Value *items;
            int n;
        } list;
        int tensor; /* node id in lower->graph */
        const Decl *decl;
        const Builtin *builtin;
        Configured *configured;
        DataSpec *data;
    };
};

/* A name bound in a scope. */
typedef struct Binding {
    const char *name;
    Value value;
} Binding;

typedef struct Scope {
    struct Scope *parent;
    VEC(Binding) bindings;
    /* A hash index of bindings, built once a scope has SCOPE_INDEX_MIN of
     * them (the globals of a large program), so that lookups stay O(1):
     * open addressing, each slot 0 or a binding's index + 1. */
    int *index;
    int index_cap; /* a power of two, or 0 */
} Scope;

typedef enum EvalMode {
    MODE_CONST,      /* top-level constants: numbers, strings, lists */
    MODE_EXPERIMENT, /* experiment settings: names may be symbols */
    MODE_MODEL,      /* a model body: builds the forward graph */
    MODE_OPTIMIZER,  /* an optimizer rule: builds one parameter's update */
} EvalMode;

/* Signature of a builtin or of a declared model/optimizer, used to bind
 * call arguments to parameters. */
typedef struct Signature {
    const char *what; /* "'linear'" or "model 'mlp'", for messages */
    const char *const *names;
    int nparams;
    int nrequired; /* the first nrequired parameters have no default */
} Signature;

/* The arguments of a call, evaluated. */
typedef struct CallArgs {
    const Value *positional;
    int npositional;
    const char *const *kw_names;
    const Value *kw_values;
    const SrcLoc *kw_locs;
    int nkw;
    SrcLoc loc; /* the whole call */
} CallArgs;

/* A builtin receives its arguments bound to its parameters, in order;
 * an optional parameter that was not given is VAL_NONE. */
typedef Value (*BuiltinFn)(Lower *l, const Value *args, SrcLoc loc);

struct Builtin {
    const char *name;
    const char *const *params; /* parameter names, NULL-terminated */
    int nrequired;             /* the first nrequired have no default */
    BuiltinFn fn;
};

typedef struct LayerCounter {
    const char *kind;
    int count;
    int depth;
} LayerCounter;

/* The state of a lowering run. One Lower compiles one program; it is
 * reused for every cell of an experiment. */
struct Lower {
    Arena *arena;
    const Program *program;
    Scope globals;          /* declarations and top-level constants */

    /* The graph under construction (NULL outside models and optimizers). */
    IrGraph *graph;
    IrModule *module;
    DType dtype;
    bool training;
    IrLossAttr loss; /* the experiment's loss, appended by compile_cell */
    /* The cell's fine-tuning scheme while compile_cell runs (lm.h), which
     * the linear and prompt_tokens builtins consult; NULL = full. */
    const struct FineTune *finetune;
    EvalMode mode;
    Scope *scope;

    /* Parameter naming: a stack of "mlp.block1" prefixes, with one layer
     * counter table per level. */
    StrBuf prefix;
    VEC(LayerCounter) counters;
    int depth;
    VEC(int) vars_seen; /* variables named by the current instantiation */

    /* Model bodies: the value of `return`, once executed. */
    bool returned;
    Value return_value;

    bool model_failed; /* the last compile_cell failed in its model */
    const Decl *current_decl; /* the model or optimizer being evaluated */
    /* The locals of each body, as collected by is_local_name. */
    VEC(struct BodyLocals { const Decl *decl; VEC(const char *) names; }) body_locals;
    /* Unknown names reported by resolve_names, with their messages. */
    VEC(struct ReportedName { SrcLoc loc; const char *message; }) unknown_names;

    /* Optimizer rules: the parameter being updated and its state. */
    int opt_param_var;
    /* Per variable of `module`: the Hessian-diagonal estimate that rules
     * read as `hess`, or -1. NULL when there is none (gnb_estimates). */
    const int *opt_hess;
    const Decl *opt_decl;
    VEC(struct OptState { const char *name; int var; int read; }) opt_states;

    /* Called by compile_cell with the training step after the forward
     * pass and again after autodiff (bocbc --emit=ir and ir-grad). NULL
     * when no caller prints the intermediate graphs. */
    void (*stage_hook)(void *context, CellStage stage, const IrGraph *graph);
    void *stage_hook_context;
};

/* ---- values --------------------------------------------------------------- */

Value val_error(void);
Value val_none(SrcLoc loc);
Value val_number(double v, SrcLoc loc);
Value val_bool(bool b, SrcLoc loc);
Value val_tensor(int node, SrcLoc loc);
/* Returns a name for the kind in messages: "a number", "a tensor", ... */
const char *val_kind_name(const Value *v);
/* Formats a compile-time value for labels and messages (arena string). */
const char *val_format(Lower *l, const Value *v);

/* Reports an argument `given` for parameter `p` of `owner` (a model or an
 * optimizer) whose kind differs from the kind of the parameter's default
 * value: a number for a number, a boolean for a boolean. Returns false
 * after reporting. */
bool check_override_kind(Lower *l, const Decl *owner, const Param *p, const Value *given);

/* ---- hyperparameter sweeps (sweep.c) ---- */

enum { SWEEP_MAX_CELLS = 4096 };

typedef Value (*SweepConfigureFn)(Lower *l, const Decl *d, const CallArgs *args);

/* Returns true when `args` gives a list for a hyperparameter of optimizer
 * `d` whose default is not a list: a sweep. */
bool sweep_requested(const Decl *d, const CallArgs *args);
/* Returns the list of configurations of `d`, one per combination of the
 * listed values, each made by `configure` from `args` with one value per
 * list. Returns poison after reported errors. */
Value sweep_configure(Lower *l, const Decl *d, const CallArgs *args, SweepConfigureFn configure);

/* Converts a compile-time value to an integer; reports an error naming
 * `what` and returns false when it is not an integer in [min, max]. */
bool val_to_int(const Value *v, const char *what, int64_t min, int64_t max,
                int64_t *out);

/* ---- scopes --------------------------------------------------------------- */

void scope_set(Lower *l, Scope *s, const char *name, Value v);
/* Finds `name` in s or its parents; returns NULL when absent. */
Value *scope_find(Scope *s, const char *name);
/* Finds `name` in s itself, not its parents; NULL when absent. */
Value *scope_find_local(Scope *s, const char *name);
void scope_free(Scope *s);

/* ---- evaluation ----------------------------------------------------------- */

void lower_init(Lower *l, const Program *program, Arena *arena);
void lower_free(Lower *l);

Value eval_expr(Lower *l, const Expr *e);
/* Executes statements until the block ends or a model body returns. */
void exec_block(Lower *l, const Block *b);

/* Binds call arguments to a signature: out[i] receives parameter i, or
 * VAL_NONE with kind set when not given. Reports unknown, missing,
 * repeated and surplus arguments; returns false after any of them. */
bool bind_args(Lower *l, const Signature *sig, const CallArgs *args,
               Value *out);

/* Prints "; did you mean 'x'?" material: returns the closest candidate
 * within a small edit distance, or NULL. */
const char *closest_name(const char *name, const char *const *candidates, int n);
/* Reports an unknown name, suggesting a close match from all scopes,
 * declarations and builtins. For a local of the current body the message
 * is "used before it is assigned". Where resolve_names already reported
 * the name, its message is repeated, which diag counts but prints once. */
void report_unknown_name(Lower *l, const char *name, SrcLoc loc);

/* Checks every name in every model and optimizer body, executed or not,
 * and reports the unknown ones. (resolve.c) */
void resolve_names(Lower *l);
/* Returns true when the body of `d` assigns `name` somewhere (or binds it
 * with `state` or `for`), which makes it local to the whole body. The
 * locals of each body are collected once and cached in l. */
bool is_local_name(Lower *l, const Decl *d, const char *name);

/* ---- tensors -------------------------------------------------------------- */

/* Returns the IR node of a tensor-like value (a number becomes a rank-0
 * constant), or -1 after reporting that `v` is not a tensor. */
int as_tensor(Lower *l, const Value *v, const char *what);
/* Applies an elementwise binary op with numpy broadcasting, reporting a
 * shape mismatch with both shapes at `loc`. */
Value tensor_binary(Lower *l, IrOp op, const char *spelling, const Value *a,
                    const Value *b, SrcLoc loc);
Value tensor_unary(Lower *l, IrOp op, const Value *x, SrcLoc loc);
/* After a shape error, notes where operand `v` (node `node`), described
 * by `what` ("the left operand"), got its shape, unless that is the
 * operand itself. */
void note_operand_origin(Lower *l, const char *what, const Value *v, int node);
/* After a failed matrix product or a binary op of two element types,
 * notes where the left operand a (node x) and the right operand b (node
 * y) come from. Each note shows the element type when the types are the
 * mistake, and the shape otherwise. */
void note_operand_origins(Lower *l, const Value *a, int x, const Value *b, int y);
/* Reports a tensor whose element count is too large (see shape_size_ok)
 * and returns false. `what` names it ("the output of conv2d"). */
bool check_tensor_size(Lower *l, const Shape *s, const char *what, SrcLoc loc);
/* Formats a node's shape as "[B, 256]" in the arena. */
const char *shape_text(Lower *l, const Shape *s);

/* ---- builtins (builtins.c) ------------------------------------------------ */

const Builtin *builtin_find(const char *name);
/* Returns all builtin names (for suggestions), NULL-terminated. */
const char *const *builtin_names(void);
Value call_builtin(Lower *l, const Builtin *b, const CallArgs *args);
/* The builtins of builtins_spatial.c: transposes, slices, attention, token
 * mixers. Returns the table and stores its length in *count. */
const Builtin *builtin_spatial_table(int *count);

/* Helpers for the builtin files. need_graph reports `name` used outside a
 * model or optimizer. tensor_arg converts argument `param` of `fn` with
 * as_tensor. int_pair reads an integer or a pair of integers >= min.
 * bool_arg reads a boolean, or `fallback` when the argument was left
 * out. count_node returns a rank-0 node with the number of elements that
 * `axes` of `shape` cover, from the run-time batch size when a batch axis
 * is among them. Each returns false or -1 after reporting an error. */
bool is_none(const Value *v);
bool need_graph(Lower *l, const char *name, SrcLoc loc);
int tensor_arg(Lower *l, const Value *v, const char *fn, const char *param);
/* As tensor_arg, and reports a tensor that is not f32 or f64 (such as the
 * bool result of a comparison). */
int float_tensor_arg(Lower *l, const Value *v, const char *fn, const char *param);
bool int_pair(const Value *v, const char *what, int64_t min, int64_t out[2]);
bool bool_arg(const Value *v, const char *what, bool fallback, bool *out);
int count_node(Lower *l, const Shape *shape, uint32_t axes, SrcLoc loc);
/* Reshapes `reduced`, the reduction of a tensor of shape xs over `axes`,
 * so that the reduced axes stay with length 1 and the result broadcasts
 * against the input (keepdims). */
int keep_reduced_axes(Lower *l, int reduced, const Shape *xs, uint32_t axes, SrcLoc loc);
/* Lowers a @ b: a matrix product of rank-2 operands, or a batched one over
 * the leading axes, which broadcast as in numpy. */
Value lower_matmul(Lower *l, int a, int b, const char *what, SrcLoc loc);

/* Creates a parameter (or, when the model is instantiated again for
 * another graph, finds the existing one) called "<prefix>.<local>", and
 * returns a read of it in l->graph. */
int create_param(Lower *l, const char *local, const char *tag, Shape shape, IrInit init,
                 double init_value, SrcLoc loc);
/* As create_param, for a variable that the optimizer never updates (a
 * running statistic, a random key): kind IR_VAR_BUFFER, no tag. */
int create_buffer(Lower *l, const char *local, Shape shape, IrInit init, double init_value,
                  SrcLoc loc);
/* Returns the name of the next layer of `kind` in the current model:
 * `explicit_name` when given, else kind followed by a counter ("linear2"). */
const char *layer_name(Lower *l, const char *kind, const Value *explicit_name);
/* The `recipe(table, backbone, optimizer)` builtin (recipe.c). */
Value builtin_recipe(Lower *l, const Value *args, SrcLoc loc);
/* Returns the mean over the batch of the per-sample cross-entropy of
 * logits [N, C] against i32 labels [N]. */
Value lower_cross_entropy(Lower *l, int logits, int labels, SrcLoc loc);
/* Pushes a naming level (a block instance); pop_prefix restores. */
void push_prefix(Lower *l, const char *local);
void pop_prefix(Lower *l, size_t saved_len);

/* ---- models and optimizers ------------------------------------------------ */

/* Instantiates a model on input tensor `x` (a node of l->graph) with the
 * given keyword overrides (may be NULL), creating or reusing its
 * parameters under `prefix`. Returns the output value (VAL_ERROR after
 * reported errors). */
Value instantiate_model(Lower *l, const Decl *model, const Value *x,
                        const Configured *overrides, SrcLoc call_loc);
/* Instantiates a model called from another model's body (a block):
 * arguments bind to the model's parameters, the tensor input first. */
Value call_block(Lower *l, const Decl *model, const CallArgs *args,
                 const Value *explicit_name);

/* Finds the declaration called `name` of kind `kind` among globals. */
const Decl *find_decl(Lower *l, const char *name, DeclKind kind);

/* Returns the signature of a model or optimizer declaration (arena). */
Signature decl_signature(Lower *l, const Decl *d);

/* Returns the index of a model's tensor input parameter, or -1. */
int model_input_param(const Decl *model);

/* Expands optimizer `opt` for parameter variable `param` with gradient
 * node `grad`, appending its state variables and assignments to
 * l->graph. `lr` and `step` are the graph's rank-0 inputs. Returns false
 * after reported errors. (optim.c) */
bool expand_optimizer(Lower *l, const Configured *opt, int param, int grad,
                      int lr, int step);
/* Executes `state NAME = init` in an optimizer rule. (optim.c) */
void declare_state(Lower *l, const Stmt *s);

#endif
