/* parser.y - the grammar of .bocb source files.
 *
 * Operators, lowest precedence first:
 *
 *     or
 *     and
 *     not                        prefix
 *     == != < <= > >=            non-associative: a < b < c is an error
 *     + -
 *     * / % @
 *     - +                        prefix
 *     ^                          right-associative, and its right operand
 *                                may carry a prefix sign: -x^2 is -(x^2),
 *                                2^-1 is 2^(-1)
 *     f(args)  a[i]  a.b         postfix
 *
 * Each level has its own nonterminal, so the grammar needs no precedence
 * declarations. The scanner drops the newlines that cannot end a statement
 * (see lexer.l), which leaves NEWLINE as a plain separator here.
 *
 * Error recovery: a statement that fails to parse becomes `error`, which
 * swallows the rest of the statement, including whole `{ ... }` groups,
 * up to the next separator or the '}' of the enclosing block. At top level
 * a broken declaration is skipped the same way up to the next separator.
 * While it skips, bison reports no new error, which keeps one mistake
 * from producing a cascade. Once the broken piece has been skipped, the
 * next statement or declaration reports its own errors again (see
 * end_recovery).
 */

%define api.pure full
%define api.location.type {SrcLoc}
%define api.token.prefix {TOK_}
%define parse.error custom
%define parse.lac full
%locations
%param {yyscan_t scanner}
%expect 0

%code requires {
#include "parse_state.h"

#ifndef YY_TYPEDEF_YY_SCANNER_T
#define YY_TYPEDEF_YY_SCANNER_T
typedef void *yyscan_t;
#endif
}

%code {
#include <limits.h>
#include <string.h>

#include "lexer.h"
#include "parse.h"

static void yyerror(SrcLoc *loc, yyscan_t scanner, const char *message);

/* A rule's location spans its first to its last symbol. An empty rule is
 * located, with zero width, at the end of the symbol before it. */
#define YYLLOC_DEFAULT(current, rhs, n)                                       \
    do {                                                                      \
        if (n) {                                                              \
            (current) = loc_join(YYRHSLOC(rhs, 1), YYRHSLOC(rhs, n));         \
        } else {                                                              \
            (current) = YYRHSLOC(rhs, 0);                                     \
            (current).line = (current).end_line;                              \
            (current).col = (current).end_col;                                \
        }                                                                     \
    } while (0)

#define PS ((ParseState *)yyget_extra(scanner))
#define ARENA (PS->arena)

static Expr *bound_depth(ParseState *ps, Expr *e);
static Expr *make_binary(yyscan_t scanner, SrcLoc loc, BinaryOp op, Expr *lhs, Expr *rhs);
static Expr *make_tuple(ParseState *ps, SrcLoc loc, Expr *first, const ExprSeq *rest);
static void push_arg(ParseState *ps, ArgSeq *seq, Arg arg);
static void check_arg_order(const Expr *callee, const ArgSeq *args);
static Param make_param(SrcLoc loc, const char *name, TypeExpr *type, Expr *default_value);
static TypeExpr *make_type(ParseState *ps, SrcLoc loc, const char *dtype, ExprSeq dims);
static BlockValue make_block(ParseState *ps, SrcLoc loc, StmtSeq stmts);
static void push_stmt(ParseState *ps, StmtSeq *seq, StmtValue value);
static StmtValue make_assign(ParseState *ps, SrcLoc loc, Expr *target, bool compound,
                             BinaryOp op, Expr *value);
static StmtValue make_simple(ParseState *ps, StmtKind kind, SrcLoc loc);
static IfChain start_if_chain(ParseState *ps, SrcLoc loc, Expr *cond, BlockValue then);
static void extend_if_chain(ParseState *ps, IfChain *chain, SrcLoc loc, Expr *cond,
                            BlockValue then);
static StmtValue finish_if_chain(ParseState *ps, IfChain chain, SrcLoc loc,
                                 const BlockValue *else_block);
static Decl *make_decl(ParseState *ps, DeclKind kind, SrcLoc loc, const char *name,
                       SrcLoc name_loc);
static void end_recovery(ParseState *ps, int *error_status);
static void push_decl(ParseState *ps, Decl *decl);
}

%union {
    const char *text;
    NumberValue number;
    Expr *expr;
    ExprSeq exprs;
    Arg arg;
    ArgSeq args;
    Param param;
    ParamSeq params;
    TypeExpr *type;
    BlockValue block;
    StmtValue stmt;
    StmtSeq stmts;
    IfChain chain;
    Decl *decl;
    BinaryOp op;
}

/* The declaration order of the tokens is the order in which a message
 * lists them ("expected ',' or ')'"). */
%token NEWLINE "newline"
/* Returned first by the scanner for parse_expression; never in source. */
%token START_EXPRESSION "start of an expression"
/* Returned by the scanner after it has reported a lexical error. */
%token INVALID "invalid token"
%token <text> IDENT "identifier"
%token <number> NUMBER "number"
%token <text> STRING "string"
%token IMPORT "import" DATA "data" MODEL "model" OPTIMIZER "optimizer"
%token EXPERIMENT "experiment" STATE "state" RETURN "return" IF "if" ELSE "else"
%token FOR "for" IN "in" REPEAT "repeat" TRUE "true" FALSE "false"
%token AND "and" OR "or" NOT "not"
%token REPORT "report" ANALYZE "analyze" QUANTIZE "quantize" GROUP "group"
%token LBRACE "{" LPAREN "(" LBRACKET "[" COMMA "," COLON ":"
%token RPAREN ")" RBRACKET "]" RBRACE "}" ASSIGN "=" DOT "."
%token EQ "==" NE "!=" LT "<" LE "<=" GT ">" GE ">="
%token PLUS "+" MINUS "-" STAR "*" SLASH "/" PERCENT "%" AT "@" CARET "^"
%token PLUS_ASSIGN "+=" MINUS_ASSIGN "-=" TIMES_ASSIGN "*=" DIVIDE_ASSIGN "/="

%type <expr> expr or_expr and_expr not_expr cmp_expr add_expr mul_expr unary_expr
%type <expr> pow_expr postfix_expr primary
%type <op> cmp_op mul_op assign_op
%type <text> setting_keyword
%type <exprs> expr_seq expr_list
%type <arg> arg
%type <args> arg_seq arg_list
%type <param> param
%type <params> param_seq param_list
%type <type> type
%type <block> block
%type <stmt> stmt
%type <stmts> stmt_seq stmt_list
%type <chain> if_chain
%type <decl> decl

%initial-action {
    @$ = (SrcLoc){PS->file, 1, 1, 1, 1};
}

%%

program
    : decl_list
    | START_EXPRESSION expr     { PS->expression = $2; }
    | START_EXPRESSION expr NEWLINE { PS->expression = $2; }
    ;

decl_list
    : %empty
    | decl_seq
    | decl_seq NEWLINE
    ;

decl_seq
    : decl                      { push_decl(PS, $1); }
    | decl_seq NEWLINE decl     { push_decl(PS, $3); }
    ;

decl
    : IMPORT STRING {
        $$ = make_decl(PS, DECL_IMPORT, @$, NULL, NO_LOC);
        $$->path = $2;
        $$->path_loc = @2;
    }
    | DATA IDENT "=" expr {
        $$ = make_decl(PS, DECL_DATA, @$, $2, @2);
        $$->value = $4;
    }
    | MODEL IDENT "(" param_list ")" block {
        $$ = make_decl(PS, DECL_MODEL, @$, $2, @2);
        $$->params = $4.items;
        $$->nparams = $4.len;
        $$->body = $6.block;
    }
    | OPTIMIZER IDENT "(" param_list ")" block {
        $$ = make_decl(PS, DECL_OPTIMIZER, @$, $2, @2);
        $$->params = $4.items;
        $$->nparams = $4.len;
        $$->body = $6.block;
    }
    | EXPERIMENT IDENT block {
        $$ = make_decl(PS, DECL_EXPERIMENT, @$, $2, @2);
        $$->body = $3.block;
    }
    | IDENT "=" expr {
        $$ = make_decl(PS, DECL_CONST, @$, $1, @1);
        $$->value = $3;
    }
    | recovery                  { $$ = NULL; end_recovery(PS, &yyerrstatus); }
    ;

param_list
    : %empty                    { $$ = (ParamSeq){0}; }
    | param_seq
    | param_seq ","
    ;

param_seq
    : param                     { $$ = (ParamSeq){0}; ARENA_SEQ_PUSH(ARENA, &$$, $1); }
    | param_seq "," param       { $$ = $1; ARENA_SEQ_PUSH(ARENA, &$$, $3); }
    ;

param
    : IDENT                     { $$ = make_param(@$, $1, NULL, NULL); }
    | IDENT ":" type            { $$ = make_param(@$, $1, $3, NULL); }
    | IDENT "=" expr            { $$ = make_param(@$, $1, NULL, $3); }
    | IDENT ":" type "=" expr   { $$ = make_param(@$, $1, $3, $5); }
    ;

type
    : "[" expr_list "]"         { $$ = make_type(PS, @$, NULL, $2); }
    | IDENT "[" expr_list "]"   { $$ = make_type(PS, @$, $1, $3); }
    ;

block
    : "{" stmt_list "}"         { $$ = make_block(PS, @$, $2); }
    ;

stmt_list
    : %empty                    { $$ = (StmtSeq){0}; }
    | stmt_seq
    | stmt_seq NEWLINE
    ;

stmt_seq
    : stmt                      { $$ = (StmtSeq){0}; push_stmt(PS, &$$, $1); }
    | stmt_seq NEWLINE stmt     { $$ = $1; push_stmt(PS, &$$, $3); }
    ;

stmt
    : expr {
        $$ = make_simple(PS, ST_EXPR, @$);
        $$.stmt->expr.expr = $1;
    }
    | expr "=" expr             { $$ = make_assign(PS, @$, $1, false, BIN_ADD, $3); }
    | setting_keyword "=" expr {
        /* An experiment's `data = ...`, `model = ...`, `optimizer = ...`:
         * the declaration keywords double as setting names. */
        Expr *target = expr_name(PS->arena, @1, $1);
        $$ = make_assign(PS, @$, target, false, BIN_ADD, $3);
    }
    | expr assign_op expr       { $$ = make_assign(PS, @$, $1, true, $2, $3); }
    | STATE IDENT "=" expr {
        $$ = make_simple(PS, ST_STATE, @$);
        $$.stmt->state.name = $2;
        $$.stmt->state.name_loc = @2;
        $$.stmt->state.init = $4;
    }
    | RETURN                    { $$ = make_simple(PS, ST_RETURN, @$); }
    | RETURN expr {
        $$ = make_simple(PS, ST_RETURN, @$);
        $$.stmt->ret.value = $2;
    }
    | if_chain                  { $$ = finish_if_chain(PS, $1, @$, NULL); }
    | if_chain ELSE block       { $$ = finish_if_chain(PS, $1, @$, &$3); }
    | FOR IDENT IN expr block {
        $$ = make_simple(PS, ST_FOR, @$);
        $$.stmt->for_.var = $2;
        $$.stmt->for_.var_loc = @2;
        $$.stmt->for_.iterable = $4;
        $$.stmt->for_.body = $5.block;
        $$.depth = $5.depth;
    }
    | REPEAT expr block {
        $$ = make_simple(PS, ST_REPEAT, @$);
        $$.stmt->repeat.count = $2;
        $$.stmt->repeat.body = $3.block;
        $$.depth = $3.depth;
    }
    | REPORT expr {
        $$ = make_simple(PS, ST_DIRECTIVE, @$);
        $$.stmt->directive.keyword = "report";
        $$.stmt->directive.value = $2;
    }
    | ANALYZE expr {
        $$ = make_simple(PS, ST_DIRECTIVE, @$);
        $$.stmt->directive.keyword = "analyze";
        $$.stmt->directive.value = $2;
    }
    | QUANTIZE expr {
        $$ = make_simple(PS, ST_DIRECTIVE, @$);
        $$.stmt->directive.keyword = "quantize";
        $$.stmt->directive.value = $2;
    }
    | GROUP IDENT "(" arg_list ")" block {
        /* A parameter group of an experiment: its name and selectors are
         * kept as a call, `no_decay(tag = "bias")`, and its settings as a
         * block. */
        $$ = make_simple(PS, ST_DIRECTIVE, @$);
        $$.stmt->directive.keyword = "group";
        $$.stmt->directive.value =
            bound_depth(PS, expr_call(ARENA, loc_join(@2, @5), expr_name(ARENA, @2, $2),
                                      $4.items, $4.len));
        $$.stmt->directive.body = $6.block;
        $$.stmt->directive.has_body = true;
        $$.depth = $6.depth;
    }
    | recovery                  { $$ = (StmtValue){NULL, 0}; end_recovery(PS, &yyerrstatus); }
    ;

setting_keyword
    : DATA                      { $$ = "data"; }
    | MODEL                     { $$ = "model"; }
    | OPTIMIZER                 { $$ = "optimizer"; }
    ;

assign_op
    : PLUS_ASSIGN               { $$ = BIN_ADD; }
    | MINUS_ASSIGN              { $$ = BIN_SUB; }
    | TIMES_ASSIGN              { $$ = BIN_MUL; }
    | DIVIDE_ASSIGN             { $$ = BIN_DIV; }
    ;

/* An `else if` branch nests as the only statement of the else block of
 * the branch before it; the chain is left-recursive so that a long chain
 * does not grow the parser's stack. */
if_chain
    : IF expr block             { $$ = start_if_chain(PS, @$, $2, $3); }
    | if_chain ELSE IF expr block {
        $$ = $1;
        extend_if_chain(PS, &$$, loc_join(@3, @5), $4, $5);
    }
    ;

/* What remains of a statement or declaration after a syntax error: the
 * parser discards tokens up to a separator, but a '{' starts a group that
 * is skipped up to its matching '}', so the braces of a broken statement
 * do not end the enclosing block early, and an `else` is taken too, so
 * the rest of a broken if statement goes with it. */
recovery
    : error                     { PS->in_recovery = true; }
    | recovery "{" skipped "}"
    | recovery ELSE
    ;

skipped
    : %empty
    | skipped skipped_token
    | skipped "{" skipped "}"
    ;

skipped_token
    : NEWLINE | INVALID | IDENT {} | NUMBER {} | STRING {}
    | IMPORT | DATA | MODEL | OPTIMIZER | EXPERIMENT | STATE | RETURN | IF | ELSE
    | FOR | IN | REPEAT | TRUE | FALSE | AND | OR | NOT | REPORT | ANALYZE | QUANTIZE | GROUP
    | "(" | "[" | "," | ":" | ")" | "]" | "=" | "."
    | EQ | NE | "<" | LE | ">" | GE | "+" | "-" | "*" | "/" | "%" | "@" | "^"
    | PLUS_ASSIGN | MINUS_ASSIGN | TIMES_ASSIGN | DIVIDE_ASSIGN
    ;

expr
    : or_expr
    ;

or_expr
    : and_expr
    | or_expr OR and_expr       { $$ = make_binary(scanner, @$, BIN_OR, $1, $3); }
    ;

and_expr
    : not_expr
    | and_expr AND not_expr     { $$ = make_binary(scanner, @$, BIN_AND, $1, $3); }
    ;

not_expr
    : cmp_expr
    | NOT not_expr              { $$ = bound_depth(PS, expr_unary(ARENA, @$, UN_NOT, $2)); }
    ;

cmp_expr
    : add_expr
    | add_expr cmp_op add_expr  { $$ = make_binary(scanner, @$, $2, $1, $3); }
    ;

cmp_op
    : EQ                        { $$ = BIN_EQ; }
    | NE                        { $$ = BIN_NE; }
    | "<"                       { $$ = BIN_LT; }
    | LE                        { $$ = BIN_LE; }
    | ">"                       { $$ = BIN_GT; }
    | GE                        { $$ = BIN_GE; }
    ;

add_expr
    : mul_expr
    | add_expr "+" mul_expr     { $$ = make_binary(scanner, @$, BIN_ADD, $1, $3); }
    | add_expr "-" mul_expr     { $$ = make_binary(scanner, @$, BIN_SUB, $1, $3); }
    ;

mul_expr
    : unary_expr
    | mul_expr mul_op unary_expr { $$ = make_binary(scanner, @$, $2, $1, $3); }
    ;

mul_op
    : "*"                       { $$ = BIN_MUL; }
    | "/"                       { $$ = BIN_DIV; }
    | "%"                       { $$ = BIN_MOD; }
    | "@"                       { $$ = BIN_MATMUL; }
    ;

unary_expr
    : pow_expr
    | "-" unary_expr            { $$ = bound_depth(PS, expr_unary(ARENA, @$, UN_NEG, $2)); }
    | "+" unary_expr            { $$ = bound_depth(PS, expr_unary(ARENA, @$, UN_PLUS, $2)); }
    ;

pow_expr
    : postfix_expr
    | postfix_expr "^" unary_expr { $$ = make_binary(scanner, @$, BIN_POW, $1, $3); }
    ;

postfix_expr
    : primary
    | postfix_expr "(" arg_list ")" {
        check_arg_order($1, &$3);
        $$ = bound_depth(PS, expr_call(ARENA, @$, $1, $3.items, $3.len));
    }
    | postfix_expr "[" expr "]" {
        $$ = bound_depth(PS, expr_index(ARENA, @$, $1, $3));
    }
    | postfix_expr "." IDENT {
        $$ = bound_depth(PS, expr_member(ARENA, @$, $1, $3, @3));
    }
    ;

primary
    : NUMBER                    { $$ = expr_number(ARENA, @$, $1.value, $1.is_integer); }
    | STRING                    { $$ = expr_string(ARENA, @$, $1); }
    | TRUE                      { $$ = expr_bool(ARENA, @$, true); }
    | FALSE                     { $$ = expr_bool(ARENA, @$, false); }
    | IDENT                     { $$ = expr_name(ARENA, @$, $1); }
    | "(" expr ")"              { $$ = $2; }
    | "(" ")"                   { $$ = expr_list(ARENA, @$, EX_TUPLE, NULL, 0); }
    | "(" expr "," ")"          { $$ = make_tuple(PS, @$, $2, NULL); }
    | "(" expr "," expr_seq ")" { $$ = make_tuple(PS, @$, $2, &$4); }
    | "(" expr "," expr_seq "," ")" { $$ = make_tuple(PS, @$, $2, &$4); }
    | "[" expr_list "]" {
        $$ = bound_depth(PS, expr_list(ARENA, @$, EX_LIST, $2.items, $2.len));
    }
    ;

/* Zero or more expressions with an optional trailing comma. */
expr_list
    : %empty                    { $$ = (ExprSeq){0}; }
    | expr_seq
    | expr_seq ","
    ;

expr_seq
    : expr                      { $$ = (ExprSeq){0}; ARENA_SEQ_PUSH(ARENA, &$$, $1); }
    | expr_seq "," expr         { $$ = $1; ARENA_SEQ_PUSH(ARENA, &$$, $3); }
    ;

arg_list
    : %empty                    { $$ = (ArgSeq){0}; }
    | arg_seq
    | arg_seq ","
    ;

arg_seq
    : arg                       { $$ = (ArgSeq){0}; push_arg(PS, &$$, $1); }
    | arg_seq "," arg           { $$ = $1; push_arg(PS, &$$, $3); }
    ;

arg
    : expr                      { $$ = (Arg){NULL, NO_LOC, $1}; }
    | IDENT "=" expr            { $$ = (Arg){$1, @1, $3}; }
    ;

%%

/* ---- Building the tree ------------------------------------------------- */

void arena_seq_grow(Arena *arena, void **items, int *cap, int len, size_t elem_size)
{
    BOCB_ASSERT(len < (1 << 29));
    int new_cap = *cap ? *cap * 2 : 4;
    void *grown = arena_calloc(arena, (size_t)new_cap, elem_size);
    if (len > 0)
        memcpy(grown, *items, size_mul((size_t)len, elem_size));
    *items = grown;
    *cap = new_cap;
}

/* Returns the operand of e with the greatest depth. */
static Expr *deepest_operand(Expr *e)
{
    Expr *deepest = NULL;
    switch (e->kind) {
    case EX_UNARY:
        return e->unary.operand;
    case EX_BINARY:
        return e->binary.lhs->depth >= e->binary.rhs->depth ? e->binary.lhs : e->binary.rhs;
    case EX_CALL:
        deepest = e->call.callee;
        for (int i = 0; i < e->call.nargs; i++)
            if (e->call.args[i].value->depth > deepest->depth)
                deepest = e->call.args[i].value;
        return deepest;
    case EX_LIST:
    case EX_TUPLE:
        for (int i = 0; i < e->list.nitems; i++)
            if (!deepest || e->list.items[i]->depth > deepest->depth)
                deepest = e->list.items[i];
        return deepest;
    case EX_INDEX:
        return e->index.base->depth >= e->index.index->depth ? e->index.base : e->index.index;
    case EX_MEMBER:
        return e->member.base;
    default:
        BOCB_UNREACHABLE("a leaf expression deeper than AST_MAX_DEPTH");
    }
}

/* Keeps expressions within AST_MAX_DEPTH: a deeper one is reported (once
 * per statement) and replaced by its deepest operand, whose depth is
 * within the limit because every operand went through here first. */
static Expr *bound_depth(ParseState *ps, Expr *e)
{
    if (e->depth <= AST_MAX_DEPTH)
        return e;
    if (!ps->expr_depth_reported) {
        diag_error(e->loc, "expression nested too deeply (the limit is %d levels)",
                   AST_MAX_DEPTH);
        ps->expr_depth_reported = true;
    }
    return deepest_operand(e);
}

static Expr *make_binary(yyscan_t scanner, SrcLoc loc, BinaryOp op, Expr *lhs, Expr *rhs)
{
    return bound_depth(PS, expr_binary(ARENA, loc, op, lhs, rhs));
}

/* Builds the tuple (first, rest...); rest is NULL for (first,). */
static Expr *make_tuple(ParseState *ps, SrcLoc loc, Expr *first, const ExprSeq *rest)
{
    ExprSeq items = {0};
    ARENA_SEQ_PUSH(ps->arena, &items, first);
    for (int i = 0; rest && i < rest->len; i++)
        ARENA_SEQ_PUSH(ps->arena, &items, rest->items[i]);
    return bound_depth(ps, expr_list(ps->arena, loc, EX_TUPLE, items.items, items.len));
}

static void push_arg(ParseState *ps, ArgSeq *seq, Arg arg)
{
    ARENA_SEQ_PUSH(ps->arena, seq, arg);
}

/* Reports the first positional argument that follows a keyword argument,
 * naming the callee when it is a name. */
static void check_arg_order(const Expr *callee, const ArgSeq *args)
{
    bool keyword = false;
    for (int i = 0; i < args->len; i++) {
        const Arg *a = &args->items[i];
        keyword |= a->name != NULL;
        if (a->name || !keyword)
            continue;
        if (callee->kind == EX_NAME)
            diag_error(a->value->loc, "positional argument of '%s' follows a keyword "
                       "argument", callee->name);
        else
            diag_error(a->value->loc, "positional argument follows a keyword argument");
        return;
    }
}

static Param make_param(SrcLoc loc, const char *name, TypeExpr *type, Expr *default_value)
{
    return (Param){name, loc, type, default_value};
}

static TypeExpr *make_type(ParseState *ps, SrcLoc loc, const char *dtype, ExprSeq dims)
{
    TypeExpr *type = arena_alloc(ps->arena, sizeof *type);
    type->dtype = dtype;
    type->dims = dims.items;
    type->ndims = dims.len;
    type->loc = loc;
    return type;
}

/* Builds a block. The scanner keeps braces within AST_MAX_DEPTH, but each
 * `else if` adds a block level without a brace, so the depth is checked
 * again here; a block that is too deep is reported and emptied. */
static BlockValue make_block(ParseState *ps, SrcLoc loc, StmtSeq stmts)
{
    BlockValue value = {{stmts.items, stmts.len, loc}, stmts.depth + 1};
    if (value.depth > AST_MAX_DEPTH) {
        if (!ps->block_depth_reported)
            diag_error(loc, "blocks nested too deeply (the limit is %d levels, and each "
                            "'else if' adds one)", AST_MAX_DEPTH);
        ps->block_depth_reported = true;
        value.block.stmts = NULL;
        value.block.nstmts = 0;
        value.depth = 1;
    }
    return value;
}

static void push_stmt(ParseState *ps, StmtSeq *seq, StmtValue value)
{
    ps->expr_depth_reported = false;
    if (!value.stmt)
        return;
    ARENA_SEQ_PUSH(ps->arena, seq, value.stmt);
    if (value.depth > seq->depth)
        seq->depth = value.depth;
}

static StmtValue make_simple(ParseState *ps, StmtKind kind, SrcLoc loc)
{
    return (StmtValue){stmt_new(ps->arena, kind, loc), 0};
}

static StmtValue make_assign(ParseState *ps, SrcLoc loc, Expr *target, bool compound,
                             BinaryOp op, Expr *value)
{
    if (target->kind != EX_NAME && target->kind != EX_MEMBER && target->kind != EX_INDEX) {
        diag_error(target->loc, "cannot assign to this expression; the target of '%s=' must "
                                "be a name, a member (a.b) or an index (a[i])",
                   compound ? binary_op_spelling(op) : "");
        return (StmtValue){NULL, 0};
    }
    StmtValue s = make_simple(ps, ST_ASSIGN, loc);
    s.stmt->assign.target = target;
    s.stmt->assign.compound = compound;
    s.stmt->assign.op = op;
    s.stmt->assign.value = value;
    return s;
}

static IfChain start_if_chain(ParseState *ps, SrcLoc loc, Expr *cond, BlockValue then)
{
    Stmt *s = stmt_new(ps->arena, ST_IF, loc);
    s->if_.cond = cond;
    s->if_.then_block = then.block;
    return (IfChain){s, s, 0, then.depth, false};
}

/* Checks the block depth that a new branch would give the chain. Past
 * the limit the chain is reported once and takes no further branches. */
static bool chain_too_deep(ParseState *ps, IfChain *chain, int new_depth, SrcLoc loc)
{
    if (chain->too_deep)
        return true;
    if (new_depth <= AST_MAX_DEPTH)
        return false;
    if (!ps->block_depth_reported)
        diag_error(loc, "too many 'else if' branches: each one nests a block, and blocks "
                        "nest at most %d levels", AST_MAX_DEPTH);
    ps->block_depth_reported = true;
    chain->too_deep = true;
    return true;
}

static void extend_if_chain(ParseState *ps, IfChain *chain, SrcLoc loc, Expr *cond,
                            BlockValue then)
{
    if (chain_too_deep(ps, chain, chain->branches + 1 + then.depth, loc))
        return;
    Stmt *s = stmt_new(ps->arena, ST_IF, loc);
    s->if_.cond = cond;
    s->if_.then_block = then.block;

    Stmt **items = arena_alloc(ps->arena, sizeof *items);
    items[0] = s;
    chain->last->if_.has_else = true;
    chain->last->if_.else_block = (Block){items, 1, loc};
    chain->last = s;
    chain->branches++;
    if (chain->branches + then.depth > chain->depth)
        chain->depth = chain->branches + then.depth;
}

/* Attaches the final else block and stretches every `if` of the chain,
 * and the else block around each nested one, to the end of the
 * statement. */
static StmtValue finish_if_chain(ParseState *ps, IfChain chain, SrcLoc loc,
                                 const BlockValue *else_block)
{
    if (else_block &&
        !chain_too_deep(ps, &chain, chain.branches + else_block->depth,
                        else_block->block.loc)) {
        chain.last->if_.has_else = true;
        chain.last->if_.else_block = else_block->block;
        if (chain.branches + else_block->depth > chain.depth)
            chain.depth = chain.branches + else_block->depth;
    }

    for (Stmt *s = chain.first; s; ) {
        s->loc.end_line = loc.end_line;
        s->loc.end_col = loc.end_col;
        if (s == chain.last)
            break;
        s->if_.else_block.loc.end_line = loc.end_line;
        s->if_.else_block.loc.end_col = loc.end_col;
        s = s->if_.else_block.stmts[0];
    }
    return (StmtValue){chain.first, chain.depth};
}

static Decl *make_decl(ParseState *ps, DeclKind kind, SrcLoc loc, const char *name,
                       SrcLoc name_loc)
{
    Decl *d = decl_new(ps->arena, kind, loc);
    d->name = name;
    d->name_loc = name_loc;
    d->module = ps->module;
    return d;
}

/* Ends error recovery at a separator or a '}', so that the next statement
 * or declaration reports its own errors (yyerrok). When the error was the
 * separator itself, as in a '{' put on the line after an `if`, what
 * follows still belongs to the broken statement, so bison's usual rule
 * stays in force: no new message until three tokens have been shifted. */
static void end_recovery(ParseState *ps, int *error_status)
{
    ps->in_recovery = false;
    if (ps->error_at_separator)
        ps->error_at_separator = false;
    else
        *error_status = 0;
}

static void push_decl(ParseState *ps, Decl *decl)
{
    ps->expr_depth_reported = false;
    ps->block_depth_reported = false;
    if (decl)
        VEC_PUSH(&ps->decls, decl);
}

/* ---- Syntax error messages --------------------------------------------- */

/* Tokens that can start an operand; `not` is left out because it cannot
 * follow a binary operator other than `and` and `or`. */
static const int operand_start[] = {
    YYSYMBOL_IDENT, YYSYMBOL_NUMBER, YYSYMBOL_STRING, YYSYMBOL_TRUE, YYSYMBOL_FALSE,
    YYSYMBOL_LPAREN, YYSYMBOL_LBRACKET, YYSYMBOL_MINUS, YYSYMBOL_PLUS,
};

static const int statement_keywords[] = {
    YYSYMBOL_STATE, YYSYMBOL_RETURN, YYSYMBOL_IF, YYSYMBOL_FOR, YYSYMBOL_REPEAT,
    YYSYMBOL_REPORT, YYSYMBOL_ANALYZE, YYSYMBOL_QUANTIZE,
};

static const int declaration_keywords[] = {
    YYSYMBOL_IMPORT, YYSYMBOL_DATA, YYSYMBOL_MODEL, YYSYMBOL_OPTIMIZER, YYSYMBOL_EXPERIMENT,
};

/* Tokens that could continue a complete operand: binary and postfix
 * operators, and assignment. A message after an operand leaves them out,
 * because "expected ')'" helps more than a list of every operator. */
static const int continuations[] = {
    YYSYMBOL_OR, YYSYMBOL_AND, YYSYMBOL_EQ, YYSYMBOL_NE, YYSYMBOL_LT, YYSYMBOL_LE,
    YYSYMBOL_GT, YYSYMBOL_GE, YYSYMBOL_PLUS, YYSYMBOL_MINUS, YYSYMBOL_STAR, YYSYMBOL_SLASH,
    YYSYMBOL_PERCENT, YYSYMBOL_AT, YYSYMBOL_CARET, YYSYMBOL_LPAREN, YYSYMBOL_LBRACKET, YYSYMBOL_DOT,
    YYSYMBOL_ASSIGN, YYSYMBOL_PLUS_ASSIGN, YYSYMBOL_MINUS_ASSIGN, YYSYMBOL_TIMES_ASSIGN,
    YYSYMBOL_DIVIDE_ASSIGN,
};

static bool contains_all(const bool *set, const int *symbols, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!set[symbols[i]])
            return false;
    return true;
}

static void remove_all(bool *set, const int *symbols, size_t n)
{
    for (size_t i = 0; i < n; i++)
        set[symbols[i]] = false;
}

/* Appends a token's name as messages show it: a category for tokens with
 * a value, the quoted spelling for keywords and punctuation. */
static void append_token_name(StrBuf *out, yysymbol_kind_t symbol, bool semicolon)
{
    switch (symbol) {
    case YYSYMBOL_YYEOF:
        sb_append(out, "end of file");
        return;
    case YYSYMBOL_NEWLINE:
        sb_append(out, semicolon ? "';'" : "newline");
        return;
    case YYSYMBOL_IDENT:
        sb_append(out, "identifier");
        return;
    case YYSYMBOL_NUMBER:
        sb_append(out, "number");
        return;
    case YYSYMBOL_STRING:
        sb_append(out, "string");
        return;
    default:
        sb_printf(out, "'%s'", yysymbol_name(symbol));
        return;
    }
}

/* Appends "A", "A or B" or "A, B or C" describing the expected tokens, or
 * returns false when they are too many to be worth listing. */
static bool describe_expected(bool *set, StrBuf *out)
{
    const char *categories[3];
    int ncategories = 0;

    if (contains_all(set, declaration_keywords, BOCB_ARRAY_LEN(declaration_keywords))) {
        categories[ncategories++] = "declaration";
        remove_all(set, declaration_keywords, BOCB_ARRAY_LEN(declaration_keywords));
        set[YYSYMBOL_IDENT] = false;
    }
    if (contains_all(set, operand_start, BOCB_ARRAY_LEN(operand_start))) {
        bool statement = contains_all(set, statement_keywords,
                                      BOCB_ARRAY_LEN(statement_keywords));
        categories[ncategories++] = statement ? "statement" : "expression";
        remove_all(set, operand_start, BOCB_ARRAY_LEN(operand_start));
        remove_all(set, statement_keywords, BOCB_ARRAY_LEN(statement_keywords));
        set[YYSYMBOL_NOT] = false;
    }
    if (set[YYSYMBOL_STAR])
        remove_all(set, continuations, BOCB_ARRAY_LEN(continuations));

    int ntokens = 0;
    for (int s = 0; s < YYNTOKENS; s++)
        ntokens += set[s];
    if (ncategories == 0 && ntokens == 2 && set[YYSYMBOL_IDENT] && set[YYSYMBOL_LBRACKET]) {
        sb_append(out, "type");
        return true;
    }

    int total = ncategories + ntokens;
    if (total == 0 || total > 4)
        return false;

    int written = 0;
    for (int i = 0; i < ncategories; i++, written++) {
        if (written > 0)
            sb_append(out, written == total - 1 ? " or " : ", ");
        sb_append(out, categories[i]);
    }
    /* End of file goes last: "expected newline or end of file". */
    for (int i = 1; i <= YYNTOKENS; i++) {
        int s = i % YYNTOKENS;
        if (!set[s])
            continue;
        if (written > 0)
            sb_append(out, written == total - 1 ? " or " : ", ");
        append_token_name(out, (yysymbol_kind_t)s, false);
        written++;
    }
    return true;
}

static bool is_comparison(yysymbol_kind_t symbol)
{
    return symbol == YYSYMBOL_EQ || symbol == YYSYMBOL_NE || symbol == YYSYMBOL_LT ||
           symbol == YYSYMBOL_LE || symbol == YYSYMBOL_GT || symbol == YYSYMBOL_GE;
}

static bool is_closer(yysymbol_kind_t symbol)
{
    return symbol == YYSYMBOL_RPAREN || symbol == YYSYMBOL_RBRACKET || symbol == YYSYMBOL_RBRACE;
}

static char closer_of(char opener)
{
    return opener == '(' ? ')' : opener == '[' ? ']' : '}';
}

static yysymbol_kind_t closer_symbol(char opener)
{
    return opener == '(' ? YYSYMBOL_RPAREN : opener == '[' ? YYSYMBOL_RBRACKET : YYSYMBOL_RBRACE;
}

/* Returns the innermost bracket that the parser has seen open before the
 * lookahead token, or NULL. At end of file the stack is complete, and the
 * brackets over the depth limit, which the parser never saw, are passed
 * over. */
static const OpenBracket *innermost_open_bracket(const ParseState *ps,
                                                 yysymbol_kind_t found)
{
    if (found == YYSYMBOL_YYEOF) {
        for (int i = ps->brackets.len - 1; i >= 0; i--)
            if (!ps->brackets.data[i].over_limit)
                return &ps->brackets.data[i];
        return NULL;
    }
    const OpenBracket *b = &ps->innermost_before_token;
    return b->kind != 0 && !b->over_limit ? b : NULL;
}

/* Marks the bracket at `loc`, if it is still open, as pointed at by a note,
 * so that end of file does not report it a second time. */
static void mark_noted(ParseState *ps, SrcLoc loc)
{
    for (int i = 0; i < ps->brackets.len; i++) {
        OpenBracket *b = &ps->brackets.data[i];
        if (b->loc.line == loc.line && b->loc.col == loc.col)
            b->noted = true;
    }
}

static int yyreport_syntax_error(const yypcontext_t *ctx, yyscan_t scanner)
{
    ParseState *ps = PS;
    yysymbol_kind_t found = yypcontext_token(ctx);
    SrcLoc loc = *yypcontext_location(ctx);

    /* Bison reports again once three tokens have been shifted after an
     * error, which happens inside a skipped '{ ... }' group, but anything
     * found before the recovery ends is a consequence of the first error. */
    if (ps->in_recovery)
        return 0;
    /* The scanner returns INVALID only after reporting why. */
    if (found == YYSYMBOL_INVALID)
        return 0;
    if (found == YYSYMBOL_YYEOF)
        ps->eof_error_reported = true;
    ps->error_at_separator = found == YYSYMBOL_NEWLINE;

    yysymbol_kind_t expected[YYNTOKENS];
    int nexpected = yypcontext_expected_tokens(ctx, expected, YYNTOKENS);
    if (nexpected < 0)
        return nexpected;
    bool set[YYNTOKENS] = {false};
    for (int i = 0; i < nexpected; i++)
        set[expected[i]] = true;
    set[YYSYMBOL_START_EXPRESSION] = false;

    const OpenBracket *opener = innermost_open_bracket(ps, found);
    bool closer_expected = opener && set[closer_symbol(opener->kind)];

    if (found == YYSYMBOL_ELSE && ps->else_on_new_line) {
        diag_error(loc, "'else' must be on the same line as the '}' that closes the "
                        "'if' block");
        return 0;
    }
    if (is_comparison(found) && !set[found] && set[YYSYMBOL_STAR]) {
        diag_error(loc, "comparison operators cannot be chained; join the comparisons "
                        "with 'and'");
        return 0;
    }

    StrBuf found_name = {0};
    append_token_name(&found_name, found, ps->separator_is_semicolon);
    /* A closer with no opener of its kind is reported as such, unless it
     * stands where the closer of an open '(' or '[' belongs. */
    if (is_closer(found) && ps->closer_unmatched && (!opener || opener->kind == '{')) {
        diag_error(loc, "unmatched %s", found_name.data);
        sb_free(&found_name);
        return 0;
    }

    StrBuf expectation = {0};
    bool described;
    if (found == YYSYMBOL_YYEOF && closer_expected) {
        sb_printf(&expectation, "'%c'", closer_of(opener->kind));
        described = true;
    } else {
        described = describe_expected(set, &expectation);
    }
    const char *hint = "";
    if (found == YYSYMBOL_STAR && ps->token_offset > 0 &&
        src_text(ps->file)[ps->token_offset - 1] == '*')
        hint = "; write '^' for a power";
    if (found == YYSYMBOL_NEWLINE && !ps->separator_is_semicolon && set[YYSYMBOL_LBRACE])
        hint = "; a block's '{' must be on the same line as the code before it";
    if (described)
        diag_error(loc, "expected %s, found %s%s", expectation.data, found_name.data, hint);
    else
        diag_error(loc, "unexpected %s", found_name.data);

    /* Point at the opener when the closer is missing at end of file, when
     * another closer stands in its place, or when a '(' or '[' has run on
     * over a newline, which the scanner hides inside brackets. */
    if (closer_expected &&
        (found == YYSYMBOL_YYEOF || is_closer(found) ||
         (opener->kind != '{' && opener->loc.line != loc.line))) {
        diag_note(opener->loc, "to match this '%c'", opener->kind);
        mark_noted(ps, opener->loc);
    }

    sb_free(&expectation);
    sb_free(&found_name);
    return 0;
}

/* Bison calls this only when its stack is full. The stack holds YYMAXDEPTH
 * (10000) states, which only a run of thousands of prefix operators or '^'
 * can fill, because brackets and blocks stop at AST_MAX_DEPTH. */
static void yyerror(SrcLoc *loc, yyscan_t scanner, const char *message)
{
    (void)scanner;
    if (strcmp(message, "memory exhausted") == 0)
        diag_error(*loc, "expression nested too deeply for the parser");
    else
        diag_error(*loc, "%s", message);
}

/* ---- Entry point --------------------------------------------------------- */

/* Reports the innermost bracket still open at end of file, unless the
 * parser already reported an error there or a note pointed at it. The
 * parser stops without a message when end of file arrives while it is
 * skipping a broken statement, which would leave an unclosed '{'
 * unmentioned. */
static void report_unclosed_bracket(ParseState *ps)
{
    if (!ps->reached_eof || ps->eof_error_reported)
        return;
    for (int i = ps->brackets.len - 1; i >= 0; i--) {
        const OpenBracket *b = &ps->brackets.data[i];
        if (b->over_limit || b->noted)
            continue;
        diag_error(ps->eof_loc, "expected '%c', found end of file", closer_of(b->kind));
        diag_note(b->loc, "to match this '%c'", b->kind);
        return;
    }
}

/* Returns a copy of text[0 .. len) for the scanner, with each NUL byte
 * replaced by 0xFF and the two NULs that yy_scan_buffer() requires at the
 * end. At every NUL byte, the scanner that flex 2.6.4 generates calls
 * yy_get_previous_state(), which rescans the current token from its start,
 * so a run of NULs would take time quadratic in its length (a 1 MiB file
 * of NULs still ran after 2 minutes). 0xFF is in the same character classes
 * as NUL in every rule: an invalid character, allowed in comments and
 * strings. The actions that can see one read the original bytes with
 * token_source(). */
static char *scanner_copy(const char *text, size_t len)
{
    char *copy = xmalloc(len + 2);
    for (size_t i = 0; i < len; i++)
        copy[i] = text[i] == '\0' ? '\xFF' : text[i];
    copy[len] = '\0';
    copy[len + 1] = '\0';
    return copy;
}

/* A scanner over bytes [offset, end) of a registered file. */
typedef struct Scanner {
    yyscan_t scanner;
    YY_BUFFER_STATE buffer;
    char *scanned; /* the bytes, as scanner_copy() prepares them */
} Scanner;

static void scanner_open(Scanner *s, ParseState *ps, int file, size_t offset)
{
    if (yylex_init_extra(ps, &s->scanner) != 0)
        bocb_panic(__FILE__, __LINE__, "cannot create the scanner");
    const char *text = src_text(file);
    size_t len = src_length(file);
    ps->offset = offset;
    ps->line = 1;
    ps->col = 1;
    for (size_t i = 0; i < offset; i++) {
        bool line_break = src_ends_line(text, len, i);
        ps->line += line_break;
        ps->col = line_break ? 1 : ps->col + 1;
    }
    s->scanned = scanner_copy(text + offset, len - offset);
    s->buffer = yy_scan_buffer(s->scanned, len - offset + 2, s->scanner);
}

static void scanner_close(Scanner *s)
{
    yy_delete_buffer(s->buffer, s->scanner);
    yylex_destroy(s->scanner);
    free(s->scanned);
}

/* Runs the parser over bytes [offset, end) of a registered file. */
static void run_parser(ParseState *ps, int file, size_t offset)
{
    Scanner s;
    scanner_open(&s, ps, file, offset);
    yyparse(s.scanner);
    report_unclosed_bracket(ps);
    scanner_close(&s);
}

/* Prints `text` with control bytes, quotes and backslashes escaped. */
static void print_token_text(FILE *out, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\\')
            fputs("\\\\", out);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\r')
            fputs("\\r", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c < 0x20 || c == 0x7F)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
}

void lex_print_tokens(FILE *out, int file, Arena *arena)
{
    Module scratch = {.path = src_path(file), .file = file};
    ParseState ps = {0};
    ps.arena = arena;
    ps.module = &scratch;
    ps.file = file;
    Scanner s;
    scanner_open(&s, &ps, file, 0);
    for (;;) {
        YYSTYPE value;
        SrcLoc loc;
        int token = yylex(&value, &loc, s.scanner);
        if (token == TOK_YYEOF)
            break;
        /* The name of a keyword or punctuator is its text, so only the
         * other kinds are followed by their text. */
        fprintf(out, "%d:%d %s", loc.line, loc.col, yysymbol_name(YYTRANSLATE(token)));
        bool has_text = token == TOK_IDENT || token == TOK_NUMBER || token == TOK_STRING ||
                        token == TOK_NEWLINE || token == TOK_INVALID;
        if (has_text) {
            fputc(' ', out);
            const char *text = src_text(file) + ps.token_offset;
            print_token_text(out, text, ps.offset - ps.token_offset);
        }
        fputc('\n', out);
    }
    scanner_close(&s);
    VEC_FREE(&ps.brackets);
}

Expr *parse_expression(int file, size_t offset, Arena *arena)
{
    Module scratch = {.path = src_path(file), .file = file};
    size_t len = src_length(file);
    BOCB_ASSERT(offset <= len);
    /* Texts come from src_load (at most SRC_MAX_BYTES) or the command line. */
    BOCB_ASSERT(len <= INT_MAX);
    int errors = diag_error_count();
    ParseState ps = {0};
    ps.arena = arena;
    ps.module = &scratch;
    ps.file = file;
    ps.start_token = TOK_START_EXPRESSION;
    run_parser(&ps, file, offset);
    VEC_FREE(&ps.decls);
    VEC_FREE(&ps.brackets);
    return diag_error_count() == errors ? ps.expression : NULL;
}

Module *parse_module(int file, Arena *arena)
{
    Module *m = arena_alloc(arena, sizeof *m);
    m->path = arena_strdup(arena, src_path(file));
    m->file = file;

    size_t len = src_length(file);
    BOCB_ASSERT(len <= INT_MAX); /* src_load reads at most SRC_MAX_BYTES */

    ParseState ps = {0};
    ps.arena = arena;
    ps.module = m;
    ps.file = file;
    run_parser(&ps, file, 0);

    m->ndecls = ps.decls.len;
    m->decls = arena_calloc(arena, (size_t)ps.decls.len, sizeof(Decl *));
    if (ps.decls.len > 0)
        memcpy(m->decls, ps.decls.data, (size_t)ps.decls.len * sizeof(Decl *));
    VEC_FREE(&ps.decls);
    VEC_FREE(&ps.brackets);
    return m;
}
