/* parse.h - the front end's entry points: parsing and module loading. */
#ifndef BOCB_PARSE_H
#define BOCB_PARSE_H

#include "ast.h"

/* Parses a registered source file (see src_register). Syntax errors are
 * reported through diag; the parser recovers at statement and declaration
 * boundaries, so the returned module contains every declaration that parsed.
 * Never returns NULL. All nodes are allocated in `arena`. */
Module *parse_module(int file, Arena *arena);

/* Parses bytes [offset, end) of a registered file as one expression (a
 * `-D key=value` override's value). Returns NULL after reporting syntax
 * errors. */
Expr *parse_expression(int file, size_t offset, Arena *arena);

/* Prints the tokens of a registered file, one a line, as "LINE:COL KIND"
 * followed by the token's text for identifiers, numbers, strings,
 * newlines and invalid tokens (bocbc --emit=tokens). Lexical errors are
 * reported through diag. */
void lex_print_tokens(FILE *out, int file, Arena *arena);

/* A loaded program: the main module and everything it imports, each file
 * parsed once, in dependency order (imports before importers). */
typedef struct Program {
    Module **modules;
    int nmodules;
    Module *main;
} Program;

/* Where imports are looked up. A relative path is tried relative to the
 * importing file, then in each of dirs in order (-I, then BOCB_PATH). A
 * "std/..." path skips the importing file's directory, is tried in dirs,
 * and then resolves against stdlib_dir. */
typedef struct SearchPath {
    const char *stdlib_dir;
    const char **dirs;
    int ndirs;
} SearchPath;

/* Loads `path` and, transitively, its imports. An import path names a file
 * (".bocb" may be omitted) or a directory, which imports every .bocb file
 * in it in name order. Missing files, unreadable files and import cycles
 * are reported through diag at the import's location, and the program
 * returned contains whatever could be loaded. Returns NULL only when the main file
 * itself cannot be read (also reported). */
Program *load_program(const char *path, const SearchPath *search, Arena *arena);

/* Loads a program from a string instead of a file (tests, -e, the REPL).
 * `name` is the display path used in diagnostics. */
Program *load_program_string(const char *name, const char *text,
                             const SearchPath *search, Arena *arena);

#endif
