/* diag.c - the source file registry and diagnostic printing.
 *
 * A line ends at "\n", "\r\n" or a lone "\r". Columns in locations are
 * 1-based byte offsets within the line, so a tab counts as one column. The
 * caret line under a quoted source line copies the tabs of that line and
 * has one column per UTF-8 character, which keeps the caret under the
 * right character in a terminal for tabs and for non-wide characters.
 */
#include "diag.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
static bool use_color;

/* SGR escape sequences for colour output, as GCC uses them by default:
 * a bold location, a bold red "error", bold magenta "warning", bold
 * cyan "note" and a bold green caret line. */
#define SGR_BOLD "\033[1m"
#define SGR_ERROR "\033[1;31m"
#define SGR_WARNING "\033[1;35m"
#define SGR_NOTE "\033[1;36m"
#define SGR_CARET "\033[1;32m"
#define SGR_RESET "\033[0m"

/* Returns `sgr` when diagnostics are coloured, else "". */
static const char *color(const char *sgr)
{
    return use_color ? sgr : "";
}

/* ---- Source registry ---------------------------------------------------- */

bool src_ends_line(const char *text, size_t len, size_t i)
{
    return text[i] == '\n' || (text[i] == '\r' && (i + 1 == len || text[i + 1] != '\n'));
}

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
        if (src_ends_line(text, len, i))
            nlines++;
    f.line_starts = xcalloc((size_t)nlines, sizeof(size_t));
    f.nlines = nlines;
    int line = 1;
    for (size_t i = 0; i < len; i++)
        if (src_ends_line(text, len, i))
            f.line_starts[line++] = i + 1;

    VEC_PUSH(&sources, f);
    return sources.len;
}

void src_forget_all(void)
{
    for (int i = 0; i < sources.len; i++) {
        free(sources.data[i].path);
        free(sources.data[i].text);
        free(sources.data[i].line_starts);
    }
    VEC_FREE(&sources);
}

/* Returns "a directory", "a FIFO" and so on for a stat() mode. */
static const char *file_type_name(mode_t mode)
{
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    return "a special file";
}

static char *not_regular_message(const char *path, mode_t mode)
{
    struct stat link;
    bool is_symlink = lstat(path, &link) == 0 && S_ISLNK(link.st_mode);
    return xasprintf("not a regular file (%s%s)", is_symlink ? "a symbolic link to " : "",
                     file_type_name(mode));
}

/* Returns whether st describes a file that src_load() accepts, or stores
 * the reason why not in *error. */
static bool check_source_file(const char *path, const struct stat *st, char **error)
{
    if (!S_ISREG(st->st_mode)) {
        *error = not_regular_message(path, st->st_mode);
        return false;
    }
    if (st->st_size > SRC_MAX_BYTES) {
        *error = xasprintf("file too large: %lld bytes; the limit is %d MiB",
                           (long long)st->st_size, SRC_MAX_BYTES >> 20);
        return false;
    }
    return true;
}

/* Reads fd to its end, but stops after SRC_MAX_BYTES + 1 bytes so that a
 * file that grew after fstat() cannot make the read unbounded. Stores a
 * malloc'd buffer and its length and returns 0, or returns an errno value. */
static int read_bounded(int fd, size_t size_hint, char **out, size_t *out_len)
{
    const size_t max = (size_t)SRC_MAX_BYTES + 1;
    size_t cap = size_hint < max ? size_hint + 1 : max;
    char *data = xmalloc(cap);
    size_t len = 0;
    for (;;) {
        if (len == cap) {
            if (cap == max)
                break;
            cap = cap < max / 2 ? cap * 2 : max;
            data = xrealloc(data, cap);
        }
        ssize_t n = read(fd, data + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int saved = errno;
            free(data);
            return saved;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *out = data;
    *out_len = len;
    return 0;
}

int src_load(const char *path, char **error)
{
    *error = NULL;

    /* The path is checked before it is opened, because open() on a FIFO
     * blocks until a writer appears. */
    struct stat st;
    if (stat(path, &st) != 0) {
        *error = xstrdup(strerror(errno));
        return 0;
    }
    if (!check_source_file(path, &st, error))
        return 0;

    /* The path may have been replaced since stat(), so the open file is
     * checked again, and O_NONBLOCK keeps open() from waiting on a FIFO. */
    int fd = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *error = xstrdup(strerror(errno));
        return 0;
    }
    if (fstat(fd, &st) != 0) {
        *error = xstrdup(strerror(errno));
        close(fd);
        return 0;
    }
    if (!check_source_file(path, &st, error)) {
        close(fd);
        return 0;
    }

    char *text = NULL;
    size_t len = 0;
    int read_error = read_bounded(fd, (size_t)st.st_size, &text, &len);
    close(fd);
    if (read_error != 0) {
        *error = xstrdup(strerror(read_error));
        return 0;
    }
    if (len > SRC_MAX_BYTES) {
        *error = xasprintf("file too large: it grew past the limit of %d MiB while it "
                           "was read", SRC_MAX_BYTES >> 20);
        free(text);
        return 0;
    }

    /* A UTF-8 byte-order mark is not part of the program. Dropping it here
     * makes line 1 count its columns from the first character after it. */
    size_t skip = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    int id = src_register(path, text + skip, len - skip);
    free(text);
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

/* Lines longer than this many characters are shown as a window around
 * the span, so that one long line cannot flood the terminal. */
enum { EXCERPT_MAX_CHARS = 200 };
/* A window is EXCERPT_WINDOW_CHARS wide, which leaves room for a "..."
 * marker at each end, and starts EXCERPT_CONTEXT_CHARS before the caret
 * when the line allows. */
enum { EXCERPT_WINDOW_CHARS = EXCERPT_MAX_CHARS - 6, EXCERPT_CONTEXT_CHARS = 60 };

/* Returns the length of the UTF-8 character at line[at], or 1 when the
 * bytes there are not valid UTF-8, so that each invalid byte is one
 * character (print_line_text() prints it as U+FFFD). */
static size_t char_length(const char *line, size_t len, size_t at)
{
    unsigned char c = (unsigned char)line[at];
    size_t n;
    unsigned min, code_point;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        min = 0x80;
        code_point = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        min = 0x800;
        code_point = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        min = 0x10000;
        code_point = c & 0x07;
    } else {
        return 1;
    }
    if (len - at < n)
        return 1;
    for (size_t i = 1; i < n; i++) {
        unsigned char next = (unsigned char)line[at + i];
        if ((next & 0xC0) != 0x80)
            return 1;
        code_point = (code_point << 6) | (next & 0x3F);
    }
    if (code_point < min || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF))
        return 1;
    return n;
}

/* Returns the byte offset reached by moving `count` characters forward
 * from byte `from`, stopping at the end of the line. */
static size_t skip_chars(const char *line, size_t len, size_t from, size_t count)
{
    size_t at = from;
    for (size_t i = 0; i < count && at < len; i++)
        at += char_length(line, len, at);
    return at;
}

/* Returns the number of characters that start in bytes [from, to). */
static size_t count_chars(const char *line, size_t len, size_t from, size_t to)
{
    size_t count = 0;
    for (size_t at = from; at < to && at < len; at += char_length(line, len, at))
        count++;
    return count;
}

/* Returns the offset of the first byte of the character that contains
 * byte `at`, or `at` itself at or past the end of the line. */
static size_t char_start(const char *line, size_t len, size_t at)
{
    if (at >= len)
        return at;
    size_t start = 0;
    while (start + char_length(line, len, start) <= at)
        start += char_length(line, len, start);
    return start;
}

/* Prints bytes [from, to) of a line, which start and end at character
 * boundaries. Control bytes (binary input) print as spaces so that the
 * excerpt cannot move the terminal's cursor, and each byte that is not
 * valid UTF-8 prints as U+FFFD, so that every character takes one column
 * as the caret line assumes. */
static void print_line_text(FILE *out, const char *line, size_t len, size_t from, size_t to)
{
    for (size_t at = from; at < to;) {
        size_t n = char_length(line, len, at);
        unsigned char c = (unsigned char)line[at];
        if (c >= 0x80 && n == 1)
            fputs("\xEF\xBF\xBD", out);
        else if (c == '\t' || (c >= 0x20 && c != 0x7F))
            fwrite(line + at, 1, n, out);
        else
            fputc(' ', out);
        at += n;
    }
}

/* Prints line `loc.line` of the file and a caret line under the span. A
 * file that ends with a line break has an empty last line, which is where
 * an error at end of file points.
 *
 * The caret line has one column per UTF-8 character of the source line
 * and copies its tabs, which keeps the caret under the right character for
 * tabs and for characters one column wide. A line of more than
 * EXCERPT_MAX_CHARS characters is cut to a window around the caret, with
 * "..." where text was left out. */
static void print_source_excerpt(FILE *out, SrcLoc loc)
{
    const SourceFile *f = source(loc.file);
    if (loc.line < 1 || loc.line > f->nlines)
        return;

    size_t start = f->line_starts[loc.line - 1];
    size_t end = loc.line < f->nlines ? f->line_starts[loc.line] : f->len;
    if (end > start && f->text[end - 1] == '\n')
        end--;
    if (end > start && f->text[end - 1] == '\r')
        end--;
    const char *line = f->text + start;
    size_t len = end - start;

    /* Byte offsets of the first and last characters of the span on this
     * line. The caret may stand one past the end, at the line break. */
    size_t caret = loc.col >= 1 ? (size_t)loc.col - 1 : 0;
    if (caret > len)
        caret = len;
    caret = char_start(line, len, caret);
    size_t last;
    if (loc.end_line > loc.line)
        last = len > 0 ? len - 1 : 0;
    else if (loc.end_line == loc.line && loc.end_col >= 1)
        last = (size_t)loc.end_col - 1;
    else
        last = caret;
    if (last >= len)
        last = len > 0 ? len - 1 : 0;

    /* The window shows bytes [shown_start, shown_end) of the line. */
    size_t shown_start = 0, shown_end = len;
    if (skip_chars(line, len, 0, EXCERPT_MAX_CHARS) < len) {
        size_t caret_index = count_chars(line, len, 0, caret);
        size_t first = caret_index > EXCERPT_CONTEXT_CHARS
                           ? caret_index - EXCERPT_CONTEXT_CHARS
                           : 0;
        shown_start = skip_chars(line, len, 0, first);
        shown_end = skip_chars(line, len, shown_start, EXCERPT_WINDOW_CHARS);
        if (shown_end == len) {
            /* The window reaches the end of the line, so it moves left to
             * show EXCERPT_WINDOW_CHARS characters. */
            size_t total = caret_index + count_chars(line, len, caret, len);
            shown_start = skip_chars(line, len, 0, total - EXCERPT_WINDOW_CHARS);
        }
    }
    const char *cut_start = shown_start > 0 ? "..." : "";
    const char *cut_end = shown_end < len ? "..." : "";

    fputs(cut_start, out);
    print_line_text(out, line, len, shown_start, shown_end);
    fputs(cut_end, out);
    fputc('\n', out);

    for (size_t i = 0; cut_start[i]; i++)
        fputc(' ', out);
    for (size_t at = shown_start; at < caret; at += char_length(line, len, at))
        fputc(line[at] == '\t' ? '\t' : ' ', out);
    fputs(color(SGR_CARET), out);
    fputc('^', out);
    if (caret < len) {
        size_t at = caret + char_length(line, len, caret);
        for (; at <= last && at < shown_end; at += char_length(line, len, at))
            fputc('~', out);
    }
    fputs(color(SGR_RESET), out);
    fputc('\n', out);
}

static const char *severity_color(const char *severity)
{
    if (strcmp(severity, "error") == 0)
        return color(SGR_ERROR);
    if (strcmp(severity, "warning") == 0)
        return color(SGR_WARNING);
    return color(SGR_NOTE);
}

static void report(const char *severity, SrcLoc loc, const char *fmt, va_list ap)
{
    FILE *out = stream();
    fputs(color(SGR_BOLD), out);
    if (loc.file == 0)
        fputs("bocbc:", out);
    else
        fprintf(out, "%s:%d:%d:", src_path(loc.file), loc.line, loc.col);
    fprintf(out, "%s %s%s:%s ", color(SGR_RESET), severity_color(severity), severity,
            color(SGR_RESET));
    vfprintf(out, fmt, ap);
    fputc('\n', out);
    if (loc.file != 0)
        print_source_excerpt(out, loc);
    fflush(out);
}

/* Errors and warnings already printed, as "file:line:col:message", so that one
 * found again (in each iteration of an unrolled loop, or in each cell of
 * an experiment that shares a model) is printed once. */
static VEC(char *) printed_errors;
static int reported_count;
/* The context set by diag_set_context, part of the key of each error. */
static const char *error_context;
/* The last error was a repeat, so the notes that follow it are too. */
static bool suppressing_notes;

static bool seen_before(SrcLoc loc, const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    char *message = xvasprintf(fmt, copy);
    va_end(copy);
    char *key = xasprintf("%d:%d:%d:%s\n%s", loc.file, loc.line, loc.col, message,
                          error_context ? error_context : "");
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
    /* A repeated warning (one per parameter, say) is printed once. */
    suppressing_notes = seen_before(loc, fmt, ap);
    if (!suppressing_notes)
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

const char *diag_set_context(const char *context)
{
    const char *previous = error_context;
    error_context = context;
    return previous;
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

void diag_set_color(bool on)
{
    use_color = on;
}
