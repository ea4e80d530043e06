/* text.c - fortune files as character-level datasets (see text.h). */
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"

/* Largest fortune file accepted (64 MiB); the biggest Debian one is 250 KB. */
#define TEXT_MAX_FILE_BYTES (INT64_C(1) << 26)

static bool fail(char **error, const char *fmt, ...) BOCB_PRINTF(2, 3);

static bool fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *error = xvasprintf(fmt, ap);
    va_end(ap);
    return false;
}

uint64_t text_fnv1a(const char *s)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

/* Reads the whole regular file `path` into a malloc'd buffer. */
static bool read_text_file(const char *path, char **text, size_t *len, char **error)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0)
        return fail(error, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(error, "%s is not a regular file", path);
    }
    if (st.st_size > TEXT_MAX_FILE_BYTES) {
        close(fd);
        return fail(error, "%s has %lld bytes, more than the %lld that a fortune file may have",
                    path, (long long)st.st_size, (long long)TEXT_MAX_FILE_BYTES);
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 == cap) {
            /* The file grew after fstat: read what it promised and stop. */
            break;
        }
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            int saved = errno;
            close(fd);
            free(buf);
            return fail(error, "cannot read %s: %s", path, strerror(saved));
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return true;
}

/* Returns true when line [p, end) is a separator: "%" alone, with an
 * optional carriage return. */
static bool is_separator(const char *p, const char *end)
{
    size_t n = (size_t)(end - p);
    return (n == 1 && p[0] == '%') || (n == 2 && p[0] == '%' && p[1] == '\r');
}

bool text_split_fortunes(const char *path, const char *text, size_t len, char ***entries,
                         int64_t *count, char **error)
{
    const char *nul = memchr(text, '\0', len);
    if (nul)
        return fail(error, "%s contains a NUL byte at offset %lld; token id 0 is reserved "
                    "for padding, so fortune files must be text", path,
                    (long long)(nul - text));
    VEC(char *) out = {0};
    const char *start = text, *end = text + len, *line = text;
    while (line <= end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *line_end = eol ? eol : end;
        bool last = !eol;
        if (is_separator(line, line_end) || last) {
            const char *entry_end = is_separator(line, line_end) ? line : end;
            /* Drop the newline that ends the entry's last line. */
            if (entry_end > start && entry_end[-1] == '\n')
                entry_end--;
            if (entry_end > start && entry_end[-1] == '\r')
                entry_end--;
            if (entry_end > start)
                VEC_PUSH(&out, xstrndup(start, (size_t)(entry_end - start)));
            start = eol ? eol + 1 : end;
        }
        if (last)
            break;
        line = eol + 1;
    }
    *entries = out.data;
    *count = out.len;
    return true;
}

/* The entries of one category file, in split order. */
typedef struct Category {
    char **entries;
    int64_t count;
    int64_t test;  /* entries[0 .. test) are the test split */
    int64_t used;  /* entries[0 .. used) are used; the rest are cut by balance */
} Category;

typedef struct Keyed {
    uint64_t hash;
    int64_t index;
    char *entry;
} Keyed;

static int compare_keyed(const void *a, const void *b)
{
    const Keyed *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Puts the entries in split order: by FNV-1a hash, ties by position. */
static void order_entries(Category *c)
{
    Keyed *keys = xcalloc((size_t)c->count + 1, sizeof *keys);
    for (int64_t i = 0; i < c->count; i++)
        keys[i] = (Keyed){text_fnv1a(c->entries[i]), i, c->entries[i]};
    qsort(keys, (size_t)c->count, sizeof *keys, compare_keyed);
    for (int64_t i = 0; i < c->count; i++)
        c->entries[i] = keys[i].entry;
    free(keys);
}

static void free_categories(Category *cats, int n)
{
    for (int i = 0; i < n; i++) {
        for (int64_t j = 0; j < cats[i].count; j++)
            free(cats[i].entries[j]);
        free(cats[i].entries);
    }
    free(cats);
}

static void init_dataset(Dataset *ds, const char *path, int64_t count, int64_t seq_len,
                         int classes)
{
    memset(ds, 0, sizeof *ds);
    ds->path = xstrdup(path);
    ds->count = count;
    ds->rank = 1;
    ds->sample_dims[0] = seq_len;
    ds->sample_size = seq_len;
    ds->images = xcalloc((size_t)(count * seq_len) + 1, 1);
    ds->labels = xcalloc((size_t)count + 1, sizeof *ds->labels);
    ds->num_classes = classes;
}

/* One sample per entry of [first, last) of every category. */
static void fill_classify(Dataset *ds, const char *dir, const Category *cats, int n,
                          bool test, int64_t seq_len)
{
    int64_t count = 0;
    for (int i = 0; i < n; i++)
        count += test ? cats[i].test : cats[i].used - cats[i].test;
    init_dataset(ds, dir, count, seq_len, n);
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        int64_t first = test ? 0 : cats[i].test, last = test ? cats[i].test : cats[i].used;
        for (int64_t j = first; j < last; j++, k++) {
            size_t len = strlen(cats[i].entries[j]);
            if (len > (size_t)seq_len)
                len = (size_t)seq_len;
            memcpy(ds->images + k * seq_len, cats[i].entries[j], len);
            ds->labels[k] = i;
        }
    }
}

/* Windows of seq_len + 1 bytes over the joined entries of one split.
 * Returns false when the split's text is shorter than one window. */
static bool fill_lm(Dataset *ds, const char *dir, const Category *cats, int n, bool test,
                    int64_t seq_len, char **error)
{
    StrBuf text = {0};
    for (int i = 0; i < n; i++) {
        int64_t first = test ? 0 : cats[i].test, last = test ? cats[i].test : cats[i].used;
        for (int64_t j = first; j < last; j++) {
            sb_append(&text, cats[i].entries[j]);
            sb_append(&text, "\n");
        }
    }
    int64_t len = (int64_t)text.len;
    if (len < seq_len + 1) {
        sb_free(&text);
        return fail(error, "the %s split of the fortunes in %s has %lld characters, fewer "
                    "than one window of seq_len + 1 = %lld; use a smaller seq_len or more "
                    "categories", test ? "test" : "training", dir, (long long)len,
                    (long long)(seq_len + 1));
    }
    /* Windows start at 0, seq_len, 2 seq_len, ..., and one more ends at the
     * end of the text unless the last regular window already does. */
    int64_t regular = (len - 1) / seq_len;
    int64_t count = regular + ((len - 1) % seq_len != 0);
    init_dataset(ds, dir, count, seq_len, TEXT_VOCAB);
    const unsigned char *bytes = (const unsigned char *)text.data;
    for (int64_t k = 0; k < count; k++) {
        int64_t start = k < regular ? k * seq_len : len - seq_len - 1;
        memcpy(ds->images + k * seq_len, bytes + start, (size_t)seq_len);
        ds->labels[k] = bytes[start + seq_len];
    }
    sb_free(&text);
    return true;
}

static bool load_categories(const FortuneOptions *o, Category *cats, char **error)
{
    for (int i = 0; i < o->ncategories; i++) {
        char *path = xasprintf("%s/%s", o->dir, o->categories[i]);
        char *text = NULL;
        size_t len = 0;
        bool ok = read_text_file(path, &text, &len, error) &&
                  text_split_fortunes(path, text, len, &cats[i].entries, &cats[i].count,
                                      error);
        free(text);
        if (ok && cats[i].count == 0)
            ok = fail(error, "%s has no entries: a fortune file is text with entries "
                      "separated by lines that contain only %%", path);
        free(path);
        if (!ok)
            return false;
        order_entries(&cats[i]);
    }
    return true;
}

bool text_load_fortunes(DataSplits *splits, const FortuneOptions *o, char **error)
{
    memset(splits, 0, sizeof *splits);
    if (o->ncategories < 1 || o->ncategories > TEXT_MAX_CATEGORIES)
        return fail(error, "between 1 and %d categories are needed, not %d",
                    TEXT_MAX_CATEGORIES, o->ncategories);
    if (o->seq_len < 1 || o->seq_len > TEXT_MAX_SEQ_LEN)
        return fail(error, "seq_len must be in [1, %d], not %lld", TEXT_MAX_SEQ_LEN,
                    (long long)o->seq_len);
    if (!(o->test_fraction >= 0 && o->test_fraction < 1))
        return fail(error, "test_fraction must be in [0, 1), not %g", o->test_fraction);
    for (int i = 0; i < o->ncategories; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(o->categories[i], o->categories[j]) == 0)
                return fail(error, "category '%s' is listed twice", o->categories[i]);

    Category *cats = xcalloc((size_t)o->ncategories, sizeof *cats);
    if (!load_categories(o, cats, error)) {
        free_categories(cats, o->ncategories);
        return false;
    }
    int64_t smallest = cats[0].count;
    for (int i = 1; i < o->ncategories; i++)
        if (cats[i].count < smallest)
            smallest = cats[i].count;
    for (int i = 0; i < o->ncategories; i++) {
        cats[i].used = o->balance ? smallest : cats[i].count;
        cats[i].test = (int64_t)llround((double)cats[i].used * o->test_fraction);
    }

    int64_t total_test = 0;
    for (int i = 0; i < o->ncategories; i++)
        total_test += cats[i].test;
    bool ok = true;
    if (total_test == 0)
        ok = fail(error, "test_fraction %g leaves no test entries in %s; evaluation needs "
                  "at least one", o->test_fraction, o->dir);
    for (int i = 0; i < o->ncategories && ok; i++)
        if (o->view == TEXT_VIEW_CLASSIFY && cats[i].test == cats[i].used)
            ok = fail(error, "%s/%s has %lld entries, which leaves none for training "
                      "with test_fraction %g", o->dir, o->categories[i],
                      (long long)cats[i].used, o->test_fraction);
    if (ok && o->view == TEXT_VIEW_CLASSIFY) {
        fill_classify(&splits->train, o->dir, cats, o->ncategories, false, o->seq_len);
        fill_classify(&splits->test, o->dir, cats, o->ncategories, true, o->seq_len);
    } else if (ok) {
        ok = fill_lm(&splits->train, o->dir, cats, o->ncategories, false, o->seq_len, error) &&
             fill_lm(&splits->test, o->dir, cats, o->ncategories, true, o->seq_len, error);
    }
    free_categories(cats, o->ncategories);
    if (!ok) {
        data_splits_free(splits);
        return false;
    }
    splits->normalize = NORMALIZE_NONE;
    splits->mean = 0;
    splits->std = 1;
    return true;
}
