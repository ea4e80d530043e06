/* parse_state.h - state shared by the scanner (lexer.l) and the parser
 * (parser.y) while one source file is parsed. Only those two files and
 * their generated code include it.
 *
 * The scanner owns the position, the newline rule and the stack of open
 * brackets. The parser reads the bracket stack to point its messages at an
 * unclosed '(' '[' or '{', and stores finished declarations here so that
 * they survive a parse that stops early.
 */
#ifndef BOCB_PARSE_STATE_H
#define BOCB_PARSE_STATE_H

#include "ast.h"

/* An opening bracket the scanner has seen and not yet matched. */
typedef struct OpenBracket {
    char kind; /* '(', '[' or '{' */
    /* Deeper than AST_MAX_DEPTH: the scanner returned it, and will return
     * its closing bracket, as an invalid token. */
    bool over_limit;
    /* A syntax error message has pointed at it with a note. */
    bool noted;
    SrcLoc loc;
} OpenBracket;

typedef struct ParseState {
    Arena *arena;
    Module *module;
    int file;

    /* Scanner: the position of the next byte, 1-based, and its offset. */
    int line, col;
    size_t offset;
    /* Byte offset of the last token (or skipped text) in the source. */
    size_t token_offset;
    /* Kind of the last token returned, 0 before the first one. */
    int last_token;
    /* The last token was a newline separator that directly followed '}'. */
    bool newline_after_brace;
    /* The last token was a separator written as ';', not as a newline. */
    bool separator_is_semicolon;
    /* The last token is an `else` that starts a new line after a '}'. */
    bool else_on_new_line;

    /* Open brackets, innermost last. A closing bracket pops down to its
     * matching opener, so `{ f(x }` still closes the block, and a '{'
     * closes any '(' or '[' left open, since no expression contains a
     * block. */
    VEC(OpenBracket) brackets;
    /* The innermost bracket that was open before the last token, with
     * kind 0 when there was none. */
    OpenBracket innermost_before_token;
    /* The last token was a closing bracket with no matching opener. */
    bool closer_unmatched;
    /* "nested too deeply" was reported for the current run of brackets
     * over the limit; cleared when the depth drops back to the limit. */
    bool nesting_reported;
    /* The scanner has returned end of file, located at eof_loc. */
    bool reached_eof;
    SrcLoc eof_loc;

    /* A token to return before the first one of the text (0 = none):
     * parse_expression starts the grammar at an expression this way. */
    int start_token;

    /* Parser. */
    VEC(Decl *) decls;
    Expr *expression; /* the result of parse_expression */
    /* An expression of the current statement hit AST_MAX_DEPTH and was
     * reported; cleared at each statement and declaration. */
    bool expr_depth_reported;
    /* A block of the current declaration went past AST_MAX_DEPTH and was
     * reported; cleared at each declaration. */
    bool block_depth_reported;
    /* The parser is skipping a broken statement or declaration. */
    bool in_recovery;
    /* The last syntax error reported was found at a separator, and its
     * statement or declaration has not been skipped yet. */
    bool error_at_separator;
    /* A syntax error was reported at end of file. */
    bool eof_error_reported;
} ParseState;

/* The value of a number token. */
typedef struct NumberValue {
    double value;
    bool is_integer;
} NumberValue;

/* Growable arrays of AST pieces, allocated in the arena because bison may
 * discard a semantic value during error recovery and nothing frees it. */
typedef struct ExprSeq {
    Expr **items;
    int len, cap;
} ExprSeq;

typedef struct ArgSeq {
    Arg *items;
    int len, cap;
} ArgSeq;

typedef struct ParamSeq {
    Param *items;
    int len, cap;
} ParamSeq;

/* Statements of one block, and the block nesting depth below them (0 when
 * none of them contains a block). */
typedef struct StmtSeq {
    Stmt **items;
    int len, cap;
    int depth;
} StmtSeq;

/* A block and its nesting depth: 1 plus the deepest block inside it. */
typedef struct BlockValue {
    Block block;
    int depth;
} BlockValue;

/* A statement and the nesting depth of the blocks inside it. */
typedef struct StmtValue {
    Stmt *stmt; /* NULL after a reported error */
    int depth;
} StmtValue;

/* An if statement with its `else if` branches so far. The branches nest:
 * each one is the only statement of the previous branch's else block. */
typedef struct IfChain {
    Stmt *first, *last;
    int branches; /* `else if` branches after the first `if` */
    int depth;
    bool too_deep; /* a branch went past AST_MAX_DEPTH and was dropped */
} IfChain;

/* Doubles the capacity of an arena array, copying the old items. */
void arena_seq_grow(Arena *arena, void **items, int *cap, int len, size_t elem_size);

#define ARENA_SEQ_PUSH(arena, seq, item)                                       \
    do {                                                                      \
        if ((seq)->len == (seq)->cap)                                         \
            arena_seq_grow((arena), (void **)&(seq)->items, &(seq)->cap,      \
                           (seq)->len, sizeof(*(seq)->items));                \
        (seq)->items[(seq)->len++] = (item);                                  \
    } while (0)

#endif
