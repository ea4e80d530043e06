/* ast.c - AST constructors, operator spellings and the AST printer.
 *
 * ast_print writes one S-expression per declaration. A declaration or
 * statement that has a block puts each statement of the block on its own
 * line, indented two spaces deeper, and the closing parenthesis follows
 * the last statement on the same line:
 *
 *     (import "std/optim")
 *     (const hidden 256)
 *     (data train (call idx "train.gz" (= batch 64)))
 *     (model mlp (params (x (type [B 784])) (w (type f32[784 10]) 0) (n))
 *       (= h (@ x w))
 *       (return (call relu h)))
 *     (optimizer sgd (params (lr 0.01))
 *       (state v 0)
 *       (-= param (* lr grad)))
 *     (experiment run
 *       (if (> a 1)
 *         (then
 *           (report "big"))
 *         (else
 *           (if (< a 0)
 *             (then
 *               (report "negative")))))
 *       (for i (call range 3)
 *         (call step i))
 *       (repeat 2))
 *
 * Parameters print as (name), (name default), (name (type ...)) or
 * (name (type ...) default). A type prints its dtype, if any, glued to its
 * bracketed dims. Expressions print as:
 *
 *     number      3, 0.05, 1e+20, the shortest form that reads back as
 *                 the same double; a literal written with '.', 'e' or 'E'
 *                 keeps a ".0" when its value is whole (3.0, 25000.0)
 *     string      "..." with \n \t \\ \" escaped and other control bytes as \xHH
 *     bool, name  true, false, hidden
 *     unary       (- x), (+ x), (not c)
 *     binary      (+ a b), (^ x 2), (@ x w), (and a b), (== a b)
 *     call        (call f a b (= name value)), arguments in source order
 *     list        (list a b), (list)
 *     tuple       (tuple a b), (tuple)
 *     index       (index xs i)
 *     member      (. block width)
 *
 * Statements print as (= target value), (+= target value), (state name
 * init), (return value) or (return), (if cond (then ...) [(else ...)]),
 * (for var iterable ...), (repeat count ...), (report value), (analyze
 * value), (quantize value), (group (call name selectors...) ...), and an
 * expression statement as the bare expression. An `else if` shows as an else block that holds one if.
 */
#include "ast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *binary_op_spelling(BinaryOp op)
{
    switch (op) {
    case BIN_ADD: return "+";
    case BIN_SUB: return "-";
    case BIN_MUL: return "*";
    case BIN_DIV: return "/";
    case BIN_MOD: return "%";
    case BIN_POW: return "^";
    case BIN_MATMUL: return "@";
    case BIN_EQ: return "==";
    case BIN_NE: return "!=";
    case BIN_LT: return "<";
    case BIN_LE: return "<=";
    case BIN_GT: return ">";
    case BIN_GE: return ">=";
    case BIN_AND: return "and";
    case BIN_OR: return "or";
    }
    BOCB_UNREACHABLE("unknown BinaryOp");
}

const char *unary_op_spelling(UnaryOp op)
{
    switch (op) {
    case UN_NEG: return "-";
    case UN_PLUS: return "+";
    case UN_NOT: return "not";
    }
    BOCB_UNREACHABLE("unknown UnaryOp");
}

/* ---- Constructors ------------------------------------------------------- */

static Expr *new_expr(Arena *arena, ExprKind kind, SrcLoc loc, int operand_depth)
{
    Expr *e = arena_alloc(arena, sizeof *e);
    e->kind = kind;
    e->loc = loc;
    e->depth = operand_depth + 1;
    return e;
}

static int max_int(int a, int b)
{
    return a > b ? a : b;
}

Expr *expr_number(Arena *arena, SrcLoc loc, double value, bool is_integer)
{
    Expr *e = new_expr(arena, EX_NUMBER, loc, 0);
    e->number.value = value;
    e->number.is_integer = is_integer;
    return e;
}

Expr *expr_string(Arena *arena, SrcLoc loc, const char *value)
{
    Expr *e = new_expr(arena, EX_STRING, loc, 0);
    e->string = value;
    return e;
}

Expr *expr_bool(Arena *arena, SrcLoc loc, bool value)
{
    Expr *e = new_expr(arena, EX_BOOL, loc, 0);
    e->boolean = value;
    return e;
}

Expr *expr_name(Arena *arena, SrcLoc loc, const char *name)
{
    Expr *e = new_expr(arena, EX_NAME, loc, 0);
    e->name = name;
    return e;
}

Expr *expr_unary(Arena *arena, SrcLoc loc, UnaryOp op, Expr *operand)
{
    Expr *e = new_expr(arena, EX_UNARY, loc, operand->depth);
    e->unary.op = op;
    e->unary.operand = operand;
    return e;
}

Expr *expr_binary(Arena *arena, SrcLoc loc, BinaryOp op, Expr *lhs, Expr *rhs)
{
    Expr *e = new_expr(arena, EX_BINARY, loc, max_int(lhs->depth, rhs->depth));
    e->binary.op = op;
    e->binary.lhs = lhs;
    e->binary.rhs = rhs;
    return e;
}

Expr *expr_call(Arena *arena, SrcLoc loc, Expr *callee, Arg *args, int nargs)
{
    int depth = callee->depth;
    for (int i = 0; i < nargs; i++)
        depth = max_int(depth, args[i].value->depth);
    Expr *e = new_expr(arena, EX_CALL, loc, depth);
    e->call.callee = callee;
    e->call.args = args;
    e->call.nargs = nargs;
    return e;
}

Expr *expr_list(Arena *arena, SrcLoc loc, ExprKind kind, Expr **items, int nitems)
{
    BOCB_ASSERT(kind == EX_LIST || kind == EX_TUPLE);
    int depth = 0;
    for (int i = 0; i < nitems; i++)
        depth = max_int(depth, items[i]->depth);
    Expr *e = new_expr(arena, kind, loc, depth);
    e->list.items = items;
    e->list.nitems = nitems;
    return e;
}

Expr *expr_index(Arena *arena, SrcLoc loc, Expr *base, Expr *index)
{
    Expr *e = new_expr(arena, EX_INDEX, loc, max_int(base->depth, index->depth));
    e->index.base = base;
    e->index.index = index;
    return e;
}

Expr *expr_member(Arena *arena, SrcLoc loc, Expr *base, const char *name, SrcLoc name_loc)
{
    Expr *e = new_expr(arena, EX_MEMBER, loc, base->depth);
    e->member.base = base;
    e->member.name = name;
    e->member.name_loc = name_loc;
    return e;
}

Stmt *stmt_new(Arena *arena, StmtKind kind, SrcLoc loc)
{
    Stmt *s = arena_alloc(arena, sizeof *s);
    s->kind = kind;
    s->loc = loc;
    return s;
}

Decl *decl_new(Arena *arena, DeclKind kind, SrcLoc loc)
{
    Decl *d = arena_alloc(arena, sizeof *d);
    d->kind = kind;
    d->loc = loc;
    return d;
}

/* ---- Printing ----------------------------------------------------------- */

/* Prints the shortest text that reads back as the same double, so 0.05
 * prints as 0.05 and not 0.050000000000000003. Magnitudes from 1e-4 up to
 * 1e15 print without an exponent. */
static void print_number(FILE *out, double value, bool is_integer)
{
    if (is_integer && fabs(value) < 9007199254740992.0) { /* 2^53 */
        fprintf(out, "%.0f", value);
        return;
    }

    char text[400];
    double magnitude = fabs(value);
    if (magnitude >= 1e-4 && magnitude < 1e15) {
        for (int decimals = 0; decimals <= 20; decimals++) {
            snprintf(text, sizeof text, "%.*f", decimals, value);
            if (strtod(text, NULL) == value)
                break;
        }
    } else {
        for (int precision = 1; precision <= 17; precision++) {
            snprintf(text, sizeof text, "%.*g", precision, value);
            if (strtod(text, NULL) == value)
                break;
        }
    }
    if (!is_integer && isfinite(value) && !strpbrk(text, ".e"))
        strcat(text, ".0");
    fputs(text, out);
}

static void print_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '\n': fputs("\\n", out); break;
        case '\t': fputs("\\t", out); break;
        case '\\': fputs("\\\\", out); break;
        case '"': fputs("\\\"", out); break;
        default:
            if (*p < 0x20 || *p == 0x7F)
                fprintf(out, "\\x%02X", *p);
            else
                fputc(*p, out);
        }
    }
    fputc('"', out);
}

static void print_expr(FILE *out, const Expr *e);

static void print_expr_items(FILE *out, Expr *const *items, int n)
{
    for (int i = 0; i < n; i++) {
        fputc(' ', out);
        print_expr(out, items[i]);
    }
}

static void print_expr(FILE *out, const Expr *e)
{
    switch (e->kind) {
    case EX_NUMBER:
        print_number(out, e->number.value, e->number.is_integer);
        break;
    case EX_STRING:
        print_string(out, e->string);
        break;
    case EX_BOOL:
        fputs(e->boolean ? "true" : "false", out);
        break;
    case EX_NAME:
        fputs(e->name, out);
        break;
    case EX_UNARY:
        fprintf(out, "(%s ", unary_op_spelling(e->unary.op));
        print_expr(out, e->unary.operand);
        fputc(')', out);
        break;
    case EX_BINARY:
        fprintf(out, "(%s ", binary_op_spelling(e->binary.op));
        print_expr(out, e->binary.lhs);
        fputc(' ', out);
        print_expr(out, e->binary.rhs);
        fputc(')', out);
        break;
    case EX_CALL:
        fputs("(call ", out);
        print_expr(out, e->call.callee);
        for (int i = 0; i < e->call.nargs; i++) {
            const Arg *arg = &e->call.args[i];
            if (arg->name) {
                fprintf(out, " (= %s ", arg->name);
                print_expr(out, arg->value);
                fputc(')', out);
            } else {
                fputc(' ', out);
                print_expr(out, arg->value);
            }
        }
        fputc(')', out);
        break;
    case EX_LIST:
    case EX_TUPLE:
        fputs(e->kind == EX_LIST ? "(list" : "(tuple", out);
        print_expr_items(out, e->list.items, e->list.nitems);
        fputc(')', out);
        break;
    case EX_INDEX:
        fputs("(index ", out);
        print_expr(out, e->index.base);
        fputc(' ', out);
        print_expr(out, e->index.index);
        fputc(')', out);
        break;
    case EX_MEMBER:
        fputs("(. ", out);
        print_expr(out, e->member.base);
        fprintf(out, " %s)", e->member.name);
        break;
    }
}

static void print_type(FILE *out, const TypeExpr *type)
{
    fputs("(type ", out);
    if (type->dtype)
        fputs(type->dtype, out);
    fputc('[', out);
    for (int i = 0; i < type->ndims; i++) {
        if (i > 0)
            fputc(' ', out);
        print_expr(out, type->dims[i]);
    }
    fputs("])", out);
}

static void print_params(FILE *out, const Param *params, int n)
{
    fputs("(params", out);
    for (int i = 0; i < n; i++) {
        fprintf(out, " (%s", params[i].name);
        if (params[i].type) {
            fputc(' ', out);
            print_type(out, params[i].type);
        }
        if (params[i].default_value) {
            fputc(' ', out);
            print_expr(out, params[i].default_value);
        }
        fputc(')', out);
    }
    fputc(')', out);
}

static void print_stmt(FILE *out, const Stmt *s, int indent);

/* Prints each statement on a new line at `indent` spaces. */
static void print_block(FILE *out, const Block *b, int indent)
{
    for (int i = 0; i < b->nstmts; i++) {
        fprintf(out, "\n%*s", indent, "");
        print_stmt(out, b->stmts[i], indent);
    }
}

static void print_stmt(FILE *out, const Stmt *s, int indent)
{
    switch (s->kind) {
    case ST_ASSIGN:
        fprintf(out, "(%s%s ", s->assign.compound ? binary_op_spelling(s->assign.op) : "",
                "=");
        print_expr(out, s->assign.target);
        fputc(' ', out);
        print_expr(out, s->assign.value);
        fputc(')', out);
        break;
    case ST_STATE:
        fprintf(out, "(state %s ", s->state.name);
        print_expr(out, s->state.init);
        fputc(')', out);
        break;
    case ST_RETURN:
        fputs("(return", out);
        if (s->ret.value) {
            fputc(' ', out);
            print_expr(out, s->ret.value);
        }
        fputc(')', out);
        break;
    case ST_IF:
        fputs("(if ", out);
        print_expr(out, s->if_.cond);
        fprintf(out, "\n%*s(then", indent + 2, "");
        print_block(out, &s->if_.then_block, indent + 4);
        fputc(')', out);
        if (s->if_.has_else) {
            fprintf(out, "\n%*s(else", indent + 2, "");
            print_block(out, &s->if_.else_block, indent + 4);
            fputc(')', out);
        }
        fputc(')', out);
        break;
    case ST_FOR:
        fprintf(out, "(for %s ", s->for_.var);
        print_expr(out, s->for_.iterable);
        print_block(out, &s->for_.body, indent + 2);
        fputc(')', out);
        break;
    case ST_REPEAT:
        fputs("(repeat ", out);
        print_expr(out, s->repeat.count);
        print_block(out, &s->repeat.body, indent + 2);
        fputc(')', out);
        break;
    case ST_EXPR:
        print_expr(out, s->expr.expr);
        break;
    case ST_DIRECTIVE:
        fprintf(out, "(%s ", s->directive.keyword);
        print_expr(out, s->directive.value);
        if (s->directive.has_body)
            print_block(out, &s->directive.body, indent + 2);
        fputc(')', out);
        break;
    }
}

static void print_decl(FILE *out, const Decl *d)
{
    switch (d->kind) {
    case DECL_IMPORT:
        fputs("(import ", out);
        print_string(out, d->path);
        fputc(')', out);
        break;
    case DECL_CONST:
    case DECL_DATA:
        fprintf(out, "(%s %s ", d->kind == DECL_CONST ? "const" : "data", d->name);
        print_expr(out, d->value);
        fputc(')', out);
        break;
    case DECL_MODEL:
    case DECL_OPTIMIZER:
        fprintf(out, "(%s %s ", d->kind == DECL_MODEL ? "model" : "optimizer", d->name);
        print_params(out, d->params, d->nparams);
        print_block(out, &d->body, 2);
        fputc(')', out);
        break;
    case DECL_EXPERIMENT:
        fprintf(out, "(experiment %s", d->name);
        print_block(out, &d->body, 2);
        fputc(')', out);
        break;
    }
    fputc('\n', out);
}

void ast_print(FILE *out, const Module *m)
{
    for (int i = 0; i < m->ndecls; i++)
        print_decl(out, m->decls[i]);
}
