/* diag.h - source files, locations and diagnostics.
 *
 * Every token, AST node and IR node carries a SrcLoc. A diagnostic prints
 *
 *     file:line:col: error: message
 *         source line
 *         ^~~~~~
 *
 * and the compiler keeps going, so one run reports every error it can find.
 * The caller decides the exit status from diag_error_count(). Diagnostics go
 * to stderr unless diag_set_stream() redirects them (tests, the REPL).
 */
#ifndef BOCB_DIAG_H
#define BOCB_DIAG_H

#include <stdio.h>

#include "../runtime/base.h"

/* A span in a registered source file. Lines and columns are 1-based;
 * end_line/end_col is the last character of the span (inclusive). file is
 * 0 for "no location" (command-line values, synthesized nodes). */
typedef struct SrcLoc {
    int file;
    int line, col;
    int end_line, end_col;
} SrcLoc;

extern const SrcLoc NO_LOC;

/* Registers a source text (copied) under a display path and returns its
 * file id (>= 1). */
int src_register(const char *path, const char *text, size_t len);
/* Maximum size in bytes of a file that src_load() reads (64 MiB). */
enum { SRC_MAX_BYTES = 64 << 20 };

/* Reads a file and registers it, without a UTF-8 byte-order mark at its
 * start. Returns its id, or 0 when the path cannot be read, is not a
 * regular file (after following symbolic links) or is larger than
 * SRC_MAX_BYTES. On failure *error is set to a malloc'd reason, such as
 * "not a regular file (a FIFO)", for the caller to report and free. */
int src_load(const char *path, char **error);
/* Returns whether byte i of text[0 .. len) ends a line: a '\n', or a '\r'
 * that is not the first half of a "\r\n" pair. */
bool src_ends_line(const char *text, size_t len, size_t i);
/* Frees every registered source. The ids and locations handed out
 * before become invalid, so only a caller that drops every AST and
 * diagnostic first may use it (the fuzzing harnesses, between inputs). */
void src_forget_all(void);
const char *src_path(int file);
const char *src_text(int file);
size_t src_length(int file);

/* Returns a span that covers both a and b (same file assumed). */
SrcLoc loc_join(SrcLoc a, SrcLoc b);

void diag_error(SrcLoc loc, const char *fmt, ...) BOCB_PRINTF(2, 3);
void diag_warning(SrcLoc loc, const char *fmt, ...) BOCB_PRINTF(2, 3);
/* A note attached to the previous diagnostic ("previous definition here"). */
void diag_note(SrcLoc loc, const char *fmt, ...) BOCB_PRINTF(2, 3);
void diag_verror(SrcLoc loc, const char *fmt, va_list ap);

/* Returns the number of errors reported so far, repeats included: a
 * pass compares it before and after to learn whether it failed. */
int diag_error_count(void);
/* Returns the number of errors printed. An error with the same location
 * message and context (diag_set_context) as an earlier one is counted
 * but not printed again, nor are its notes. */
int diag_reported_count(void);
/* Sets the context of the diagnostics that follow (NULL for none) and
 * returns the previous one. A diagnostic repeats an earlier one only when
 * location, message and context all match, so the same mistake found
 * while expanding two combinations of a sweep is printed for each. The
 * string must stay valid until the context is set again. */
const char *diag_set_context(const char *context);
/* Forgets the error count (the REPL does this after each input). */
void diag_reset_count(void);
void diag_set_stream(FILE *stream);
/* Turns ANSI colour on or off for the diagnostics that follow (off at
 * start); the caller decides, from a terminal test and NO_COLOR. */
void diag_set_color(bool on);

#endif
