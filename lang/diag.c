/* diag.c - the source file registry and diagnostic printing.
 *
 * Columns are 1-based byte offsets within the line, so a tab counts as one
 * column. The caret line under a quoted source line copies the tabs of
 * that line and skips UTF-8 continuation bytes, which keeps the caret under
 * the right character in a terminal for tabs and for non-wide characters.
 */
#include "diag.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const SrcLoc NO_LOC = {0, 0, 0, 0, 0};

typedef struct SourceFile {
    char *path;
    char *text; /* len bytes followed by a NUL that is not part of the text */
    size_t len;
    size_t *line_starts; /* byte offset of the first byte of each line */
    int nlines;
} SourceFile;

static VEC(SourceFile) sources;
static FILE *diag_stream;
static int error_count;

/* ---- Source registry ---------------------------------------------------- */

int src_register(const char *path, const char *text, size_t len)
{
    SourceFile f = {0};
    f.path = xstrdup(path);
    f.text = xmalloc(len + 1);
    memcpy(f.text, text, len);
    f.text[len] = '\0';
    f.len = len;

    int nlines = 1;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n')
            nlines++;
    f.line_starts = xcalloc((size_t)nlines, sizeof(size_t));
    f.nlines = nlines;
    int line = 1;
    for (size_t i = 0; i < len; i++)
        if (text[i] == '\n')
            f.line_starts[line++] = i + 1;

    VEC_PUSH(&sources, f);
    return sources.len;
}

int src_load(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        return 0;
    }

    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;

    StrBuf text = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        /* The lexer takes an int length, so larger files are rejected. */
        if (text.len + n > INT_MAX) {
            sb_free(&text);
            fclose(f);
            errno = EFBIG;
            return 0;
        }
        sb_appendn(&text, chunk, n);
    }
    if (ferror(f)) {
        int saved = errno ? errno : EIO;
        sb_free(&text);
        fclose(f);
        errno = saved;
        return 0;
    }
    fclose(f);

    int id = src_register(path, text.data ? text.data : "", text.len);
    sb_free(&text);
    return id;
}

static const SourceFile *source(int file)
{
    BOCB_ASSERT(file >= 1 && file <= sources.len);
    return &sources.data[file - 1];
}

const char *src_path(int file)
{
    return source(file)->path;
}

const char *src_text(int file)
{
    return source(file)->text;
}

size_t src_length(int file)
{
    return source(file)->len;
}

/* ---- Locations ---------------------------------------------------------- */

static bool pos_before(int line_a, int col_a, int line_b, int col_b)
{
    return line_a < line_b || (line_a == line_b && col_a < col_b);
}

SrcLoc loc_join(SrcLoc a, SrcLoc b)
{
    if (a.file == 0)
        return b;
    if (b.file == 0)
        return a;
    SrcLoc r = a;
    if (pos_before(b.line, b.col, r.line, r.col)) {
        r.line = b.line;
        r.col = b.col;
    }
    if (pos_before(r.end_line, r.end_col, b.end_line, b.end_col)) {
        r.end_line = b.end_line;
        r.end_col = b.end_col;
    }
    return r;
}

/* ---- Diagnostics -------------------------------------------------------- */

static FILE *stream(void)
{
    return diag_stream ? diag_stream : stderr;
}

static bool is_utf8_continuation(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* Prints line `loc.line` of the file and a caret line under the span. A
 * file that ends with a newline has an empty last line, which is where an
 * error at end of file points. */
static void print_source_excerpt(FILE *out, SrcLoc loc)
{
    const SourceFile *f = source(loc.file);
    if (loc.line < 1 || loc.line > f->nlines)
        return;

    const char *line = f->text + f->line_starts[loc.line - 1];
    size_t len = 0;
    while (line + len < f->text + f->len && line[len] != '\n')
        len++;
    if (len > 0 && line[len - 1] == '\r')
        len--;

    /* Control bytes (binary input, a stray CR) print as spaces so that the
     * excerpt cannot move the terminal's cursor. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        fputc(c == '\t' || (c >= 0x20 && c != 0x7F) ? c : ' ', out);
    }
    fputc('\n', out);

    size_t caret = loc.col >= 1 ? (size_t)loc.col - 1 : 0;
    if (caret > len)
        caret = len;
    for (size_t i = 0; i < caret; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == '\t')
            fputc('\t', out);
        else if (!is_utf8_continuation(c))
            fputc(' ', out);
    }
    fputc('^', out);

    size_t last; /* 0-based index of the last byte of the span on this line */
    if (loc.end_line > loc.line)
        last = len > 0 ? len - 1 : 0;
    else if (loc.end_line == loc.line && loc.end_col >= 1)
        last = (size_t)loc.end_col - 1;
    else
        last = caret;
    if (last >= len)
        last = len > 0 ? len - 1 : 0;
    for (size_t i = caret + 1; i <= last; i++)
        if (!is_utf8_continuation((unsigned char)line[i]))
            fputc('~', out);
    fputc('\n', out);
}

static void report(const char *severity, SrcLoc loc, const char *fmt, va_list ap)
{
    FILE *out = stream();
    if (loc.file == 0)
        fprintf(out, "bocbc: %s: ", severity);
    else
        fprintf(out, "%s:%d:%d: %s: ", src_path(loc.file), loc.line, loc.col, severity);
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    if (loc.file != 0)
        print_source_excerpt(out, loc);
    fflush(out);
}

/* Errors already printed, as "file:line:col:message", so that an error
 * found again (in each iteration of an unrolled loop, or in each cell of
 * an experiment that shares a model) is printed once. */
static VEC(char *) printed_errors;
static int reported_count;
/* The last error was a repeat, so the notes that follow it are too. */
static bool suppressing_notes;

static bool seen_before(SrcLoc loc, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    char *message = xvasprintf(fmt, copy);
    va_end(copy);
    char *key = xasprintf("%d:%d:%d:%s", loc.file, loc.line, loc.col, message);
    free(message);
    for (int i = 0; i < printed_errors.len; i++) {
        if (strcmp(printed_errors.data[i], key) == 0) {
            free(key);
            return true;
        }
    }
    VEC_PUSH(&printed_errors, key);
    return false;
}

void diag_verror(SrcLoc loc, const char *fmt, va_list ap)
{
    error_count++;
    suppressing_notes = seen_before(loc, fmt, ap);
    if (suppressing_notes)
        return;
    reported_count++;
    report("error", loc, fmt, ap);
}

void diag_error(SrcLoc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_verror(loc, fmt, ap);
    va_end(ap);
}

void diag_warning(SrcLoc loc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    suppressing_notes = false;
    report("warning", loc, fmt, ap);
    va_end(ap);
}

void diag_note(SrcLoc loc, const char *fmt, ...)
{
    if (suppressing_notes)
        return;
    va_list ap;
    va_start(ap, fmt);
    report("note", loc, fmt, ap);
    va_end(ap);
}

int diag_error_count(void)
{
    return error_count;
}

int diag_reported_count(void)
{
    return reported_count;
}

void diag_reset_count(void)
{
    error_count = 0;
    reported_count = 0;
    suppressing_notes = false;
    for (int i = 0; i < printed_errors.len; i++)
        free(printed_errors.data[i]);
    VEC_FREE(&printed_errors);
}

void diag_set_stream(FILE *s)
{
    diag_stream = s;
}
