/* base.c - allocation wrappers, arenas, growable arrays and strings. */
#include "base.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void bocb_panic(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "bocbc: internal error at %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

static void *check_alloc(void *p, size_t size)
{
    if (!p && size != 0)
        bocb_panic(__FILE__, __LINE__, "out of memory allocating %zu bytes", size);
    return p;
}

size_t size_mul(size_t a, size_t b)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        bocb_panic(__FILE__, __LINE__, "size overflow: %zu * %zu", a, b);
    return r;
}

void *xmalloc(size_t size)
{
    return check_alloc(malloc(size ? size : 1), size);
}

void *xcalloc(size_t count, size_t size)
{
    size_mul(count, size);
    return check_alloc(calloc(count ? count : 1, size ? size : 1), count * size);
}

void *xrealloc(void *ptr, size_t size)
{
    return check_alloc(realloc(ptr, size ? size : 1), size);
}

void *xmalloc_aligned(size_t size)
{
    size_t rounded = (size + 63) & ~(size_t)63;
    if (rounded < size)
        bocb_panic(__FILE__, __LINE__, "size overflow: %zu", size);
    return check_alloc(aligned_alloc(64, rounded ? rounded : 64), size);
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *r = xmalloc(n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

char *xvasprintf(const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    BOCB_ASSERT(n >= 0);
    char *s = xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

/* ---- Arena ------------------------------------------------------------ */

struct ArenaChunk {
    ArenaChunk *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
};

enum { ARENA_CHUNK_MIN = 64 * 1024 };

void arena_init(Arena *arena)
{
    arena->head = NULL;
    arena->used_total = 0;
}

void arena_free(Arena *arena)
{
    ArenaChunk *c = arena->head;
    while (c) {
        ArenaChunk *next = c->next;
        free(c);
        c = next;
    }
    arena->head = NULL;
    arena->used_total = 0;
}

void *arena_alloc(Arena *arena, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    ArenaChunk *c = arena->head;
    if (!c || c->size - c->used < size) {
        size_t chunk = size > ARENA_CHUNK_MIN ? size : ARENA_CHUNK_MIN;
        c = xmalloc(sizeof(ArenaChunk) + chunk);
        c->size = chunk;
        c->used = 0;
        c->next = arena->head;
        arena->head = c;
    }
    void *p = c->data + c->used;
    c->used += size;
    arena->used_total += size;
    memset(p, 0, size);
    return p;
}

void *arena_calloc(Arena *arena, size_t count, size_t size)
{
    return arena_alloc(arena, size_mul(count, size));
}

char *arena_strndup(Arena *arena, const char *s, size_t n)
{
    char *r = arena_alloc(arena, n + 1);
    memcpy(r, s, n);
    r[n] = '\0';
    return r;
}

char *arena_strdup(Arena *arena, const char *s)
{
    return arena_strndup(arena, s, strlen(s));
}

char *arena_printf(Arena *arena, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *tmp = xvasprintf(fmt, ap);
    va_end(ap);
    char *r = arena_strdup(arena, tmp);
    free(tmp);
    return r;
}

/* ---- Growable arrays and strings -------------------------------------- */

void vec_grow(void **data, int *cap, int min_cap, size_t elem_size)
{
    int n = *cap ? *cap : 8;
    while (n < min_cap) {
        if (n > (1 << 29))
            bocb_panic(__FILE__, __LINE__, "array too large (%d elements)", min_cap);
        n *= 2;
    }
    *data = xrealloc(*data, size_mul((size_t)n, elem_size));
    *cap = n;
}

void sb_appendn(StrBuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 64;
        while (cap < sb->len + n + 1)
            cap = size_mul(cap, 2);
        sb->data = xrealloc(sb->data, cap);
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void sb_append(StrBuf *sb, const char *s)
{
    sb_appendn(sb, s, strlen(s));
}

void sb_printf(StrBuf *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    sb_append(sb, s);
    free(s);
}

void sb_free(StrBuf *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = sb->cap = 0;
}

void format_double(char *buf, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(buf, size, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "inf" : "-inf");
        return;
    }
    /* Plain decimals where they are short (700, 0.05), exponents only for
     * very large or small magnitudes (1e-08, 1e+20). */
    double magnitude = fabs(v);
    if (magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e15)) {
        for (int decimals = 0; decimals <= 17; decimals++) {
            snprintf(buf, size, "%.*f", decimals, v);
            if (strtod(buf, NULL) == v)
                return;
        }
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
