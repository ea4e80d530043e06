/* repl.h - the interactive session of `bocbc --repl`.
 *
 * A session keeps the declarations entered so far and rebuilds the
 * program from them after every change, so a declaration typed again
 * replaces the earlier one. Every input is registered as a source file of
 * its own ("<input 3>"), so diagnostics point into the line just entered.
 * The current experiment (the last one declared) can be trained step by
 * step; its variables stay in memory between commands.
 *
 * repl.c reads input and runs commands; repl_train.c owns the training
 * state, evaluates tensor expressions and prints values.
 */
#ifndef BOCB_REPL_H
#define BOCB_REPL_H

#include <signal.h>

#include "driver.h"

/* Runs a session on stdin, with line editing and history when stdin is a
 * terminal, after loading opts->input when it is set. Returns the process
 * exit status: BOCB_EXIT_RUNTIME when the standard output could not be
 * written, else BOCB_EXIT_COMPILE when stdin is not a terminal and an
 * input reported an error, else BOCB_EXIT_OK. */
int repl_main(const Options *opts);

/* ---- shared by repl.c and repl_train.c ------------------------------------ */

typedef struct ReplTrainer ReplTrainer;

/* A tensor assigned at the prompt (`h = mlp(x)`). Its expression is
 * evaluated again in each graph that reads it, in order of entry. */
typedef struct TensorLet {
    const char *name;
    const Expr *value;
} TensorLet;

typedef struct ReplSession {
    const Options *opts;
    Arena arena;             /* every AST and string of the session */
    SearchPath search;
    VEC(Module *) imports;   /* modules loaded by import declarations and :load */
    VEC(Decl *) decls;       /* the declarations in force, oldest first */
    VEC(const char *) sources; /* :load paths and typed imports, for :reload */
    VEC(TensorLet) lets;
    Lower *lower;            /* lowered `program`: the globals of every input */
    VEC(Override) overrides; /* from :set */
    const Decl *experiment;  /* the current experiment, or NULL */
    ReplTrainer *trainer;    /* NULL until a command needs training state */
    Jit *jit;                /* created on first use */
    int ninputs;
} ReplSession;

/* Set by the SIGINT handler while a command runs; long loops stop when
 * they see it. */
extern volatile sig_atomic_t repl_interrupted;

/* Returns the session's trainer for its current experiment, creating it
 * (resolving the experiment, loading its data, compiling its first cell)
 * when needed. `loc` is where the command that needs it was typed.
 * Returns NULL after reported errors. */
ReplTrainer *repl_trainer(ReplSession *s, SrcLoc loc);
/* Returns the names of the trainer's variables, NULL-terminated, or NULL
 * when there is no trainer (for completion). */
const char *const *repl_trainer_var_names(const ReplSession *s);
/* Frees the training state. */
void repl_trainer_free(ReplSession *s);
/* Frees the training state after the program or a setting changed, and
 * says so when it had trained. */
void repl_trainer_discard(ReplSession *s);

/* Runs `steps` training steps and prints the mean loss of each group of
 * up to log_every steps. Stops early on Ctrl-C or a non-finite loss. */
void repl_step(ReplSession *s, ReplTrainer *t, int64_t steps);
/* Prints the loss and accuracy on the test split. */
void repl_eval(ReplSession *s, ReplTrainer *t);
/* Prints the sharpness, the top eigenvalue of the Hessian of the mean
 * evaluation loss over the first SHARPNESS_SAMPLES training samples, at
 * the current variables. `loc` is the command's. */
void repl_sharpness(ReplSession *s, ReplTrainer *t, SrcLoc loc);
/* Prints a variable of the trainer (a parameter or optimizer state) or
 * the gradient of the loss with respect to a parameter on the next
 * training batch. `name` is located at `loc`. Returns false after a
 * reported error. */
bool repl_show_var(ReplSession *s, ReplTrainer *t, const char *name, SrcLoc loc,
                   bool gradient);

/* Compiles the cell that a :params, :ir, :ir-grad or :dot argument names:
 * an experiment's first cell, or a model paired with the current
 * experiment's data and first optimizer. With `stage_hook` set, the hook
 * sees the graphs of compile_cell. Returns false after reported errors. */
bool repl_compile_named(ReplSession *s, const char *name, SrcLoc loc,
                        void (*stage_hook)(void *, CellStage, const IrGraph *),
                        void *context, CompiledCell *out);

/* Evaluates an expression typed at the prompt and prints its value; with
 * `type_only`, prints only its kind or tensor type. With `seconds`, stores
 * the time spent building and running it. Returns false after reported
 * errors. */
bool repl_print_expr(ReplSession *s, const Expr *e, bool type_only, double *seconds);
/* Evaluates a tensor-valued `name = expr` and records it as a TensorLet.
 * Returns 1 when it was a tensor (recorded and printed), 0 when the value
 * is known at compile time (the caller declares a constant) and -1 after
 * reported errors. */
int repl_try_tensor_let(ReplSession *s, const Decl *d);

#endif
