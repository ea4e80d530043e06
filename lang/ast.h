/* ast.h - the abstract syntax tree of a .bocb source file.
 *
 * The tree mirrors the grammar in parser.y one node kind per construct.
 * All nodes of a compilation live in one arena and are never freed one by
 * one. Names are not resolved here: an EX_NAME is only an identifier, and
 * the compiler decides what it denotes (a local, a hyperparameter, a model,
 * a builtin op, or a bare symbol such as `backprop` in an experiment).
 */
#ifndef BOCB_AST_H
#define BOCB_AST_H

#include <stdbool.h>
#include <stdio.h>

#include "diag.h"

typedef struct Expr Expr;
typedef struct Stmt Stmt;
typedef struct Decl Decl;

typedef enum BinaryOp {
    BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV, BIN_MOD, BIN_POW, BIN_MATMUL,
    BIN_EQ, BIN_NE, BIN_LT, BIN_LE, BIN_GT, BIN_GE,
    BIN_AND, BIN_OR,
} BinaryOp;

typedef enum UnaryOp {
    UN_NEG,
    UN_PLUS,
    UN_NOT,
} UnaryOp;

/* Returns the operator's spelling: "+", "^", "and", ... */
const char *binary_op_spelling(BinaryOp op);
const char *unary_op_spelling(UnaryOp op);

typedef enum ExprKind {
    EX_NUMBER,  /* 3, 0.05, 1e-3 */
    EX_STRING,  /* "results/quickstart" */
    EX_BOOL,    /* true, false */
    EX_NAME,    /* hidden, relu, B */
    EX_UNARY,   /* -x, not c */
    EX_BINARY,  /* a + b */
    EX_CALL,    /* linear(h, 256, bias = false) */
    EX_LIST,    /* [mlp, lenet] */
    EX_TUPLE,   /* (0.9, 0.999) */
    EX_INDEX,   /* xs[0] */
    EX_MEMBER,  /* block.width */
} ExprKind;

/* A call argument; name is NULL for a positional argument. */
typedef struct Arg {
    const char *name;
    SrcLoc name_loc;
    Expr *value;
} Arg;

/* The parser rejects expressions nested deeper than this, so recursive
 * passes over an Expr recurse at most this many levels. Brackets and blocks
 * nest at most this deep as well. */
enum { AST_MAX_DEPTH = 256 };

struct Expr {
    ExprKind kind;
    SrcLoc loc;
    int depth; /* levels in this subtree: 1 for a leaf, <= AST_MAX_DEPTH */
    union {
        struct {
            double value;
            bool is_integer; /* written without '.', 'e' or 'E' */
        } number;
        const char *string; /* EX_STRING, escapes decoded */
        bool boolean;
        const char *name;
        struct {
            UnaryOp op;
            Expr *operand;
        } unary;
        struct {
            BinaryOp op;
            Expr *lhs, *rhs;
        } binary;
        struct {
            Expr *callee;
            Arg *args;
            int nargs;
        } call;
        struct {
            Expr **items; /* EX_LIST and EX_TUPLE */
            int nitems;
        } list;
        struct {
            Expr *base;
            Expr *index;
        } index;
        struct {
            Expr *base;
            const char *name;
            SrcLoc name_loc;
        } member;
    };
};

/* A tensor type annotation: `[B, 1, 28, 28]` or `f32[B, 784]`. Each dim is
 * an expression; a bare name that is not a known constant is a symbolic
 * dimension such as B. */
typedef struct TypeExpr {
    const char *dtype; /* NULL when omitted */
    Expr **dims;
    int ndims;
    SrcLoc loc;
} TypeExpr;

typedef struct Block {
    Stmt **stmts;
    int nstmts;
    SrcLoc loc; /* from '{' to '}' */
} Block;

typedef enum StmtKind {
    ST_ASSIGN,    /* x = e, param -= e, epochs = 3 (in an experiment) */
    ST_STATE,     /* state m = 0 (optimizers) */
    ST_RETURN,    /* return e */
    ST_IF,        /* if c { ... } else { ... } */
    ST_FOR,       /* for i in range(4) { ... } */
    ST_REPEAT,    /* repeat 3 { ... } */
    ST_EXPR,      /* an expression evaluated for its effect */
    ST_DIRECTIVE, /* report "dir", analyze sharpness(...), quantize weights(...),
                     group no_decay(tag = "bias") { weight_decay = 0 } */
} StmtKind;

struct Stmt {
    StmtKind kind;
    SrcLoc loc;
    union {
        struct {
            Expr *target; /* EX_NAME (EX_MEMBER/EX_INDEX are rejected later) */
            bool compound;
            BinaryOp op;  /* for compound assignment: += -= *= /= */
            Expr *value;
        } assign;
        struct {
            const char *name;
            SrcLoc name_loc;
            Expr *init;
        } state;
        struct {
            Expr *value; /* NULL for a bare `return` */
        } ret;
        struct {
            Expr *cond;
            Block then_block;
            Block else_block; /* nstmts == 0 and has_else false without else */
            bool has_else;
        } if_;
        struct {
            const char *var;
            SrcLoc var_loc;
            Expr *iterable;
            Block body;
        } for_;
        struct {
            Expr *count;
            Block body;
        } repeat;
        struct {
            Expr *expr;
        } expr;
        struct {
            const char *keyword; /* "report", "analyze", "quantize" or "group" */
            Expr *value;         /* for a group: its name called with its selectors */
            Block body;          /* the settings of a group */
            bool has_body;
        } directive;
    };
};

typedef enum DeclKind {
    DECL_IMPORT,     /* import "std/optim" */
    DECL_CONST,      /* hidden = 256 */
    DECL_DATA,       /* data fashion = idx("...") */
    DECL_MODEL,      /* model mlp(x: [B, 784], hidden = 256) { ... } */
    DECL_OPTIMIZER,  /* optimizer sgd(lr = 0.01) { ... } */
    DECL_EXPERIMENT, /* experiment quickstart { ... } */
} DeclKind;

/* A parameter of a model or optimizer. A model's tensor inputs carry a
 * type; hyperparameters carry a default value (or neither, when the caller
 * must supply it). */
typedef struct Param {
    const char *name;
    SrcLoc loc;
    TypeExpr *type;
    Expr *default_value;
} Param;

struct Decl {
    DeclKind kind;
    SrcLoc loc;       /* the whole declaration */
    const char *name; /* NULL for DECL_IMPORT */
    SrcLoc name_loc;
    Param *params; /* DECL_MODEL, DECL_OPTIMIZER */
    int nparams;
    Block body;        /* DECL_MODEL, DECL_OPTIMIZER, DECL_EXPERIMENT */
    Expr *value;       /* DECL_CONST, DECL_DATA */
    const char *path;  /* DECL_IMPORT: the string as written */
    SrcLoc path_loc;   /* DECL_IMPORT: the string literal */
    struct Module *module; /* the module that contains this declaration */
};

typedef struct Module {
    const char *path; /* as registered with src_register */
    int file;
    Decl **decls;
    int ndecls;
} Module;

/* Prints the tree in a stable, indented form (bocbc --emit=ast). The
 * format is described at the top of ast.c. */
void ast_print(FILE *out, const Module *m);

/* Expression constructors. Each allocates a zeroed node in `arena`, sets
 * its location and computes its depth from its operands. Strings and
 * arrays are stored as given, not copied, so they must live at least as
 * long as the arena. None of them checks AST_MAX_DEPTH: the parser does. */
Expr *expr_number(Arena *arena, SrcLoc loc, double value, bool is_integer);
Expr *expr_string(Arena *arena, SrcLoc loc, const char *value);
Expr *expr_bool(Arena *arena, SrcLoc loc, bool value);
Expr *expr_name(Arena *arena, SrcLoc loc, const char *name);
Expr *expr_unary(Arena *arena, SrcLoc loc, UnaryOp op, Expr *operand);
Expr *expr_binary(Arena *arena, SrcLoc loc, BinaryOp op, Expr *lhs, Expr *rhs);
Expr *expr_call(Arena *arena, SrcLoc loc, Expr *callee, Arg *args, int nargs);
/* kind is EX_LIST or EX_TUPLE. */
Expr *expr_list(Arena *arena, SrcLoc loc, ExprKind kind, Expr **items, int nitems);
Expr *expr_index(Arena *arena, SrcLoc loc, Expr *base, Expr *index);
Expr *expr_member(Arena *arena, SrcLoc loc, Expr *base, const char *name,
                  SrcLoc name_loc);

/* Allocate a zeroed statement or declaration of the given kind; the caller
 * fills in the kind's fields. */
Stmt *stmt_new(Arena *arena, StmtKind kind, SrcLoc loc);
Decl *decl_new(Arena *arena, DeclKind kind, SrcLoc loc);

#endif
