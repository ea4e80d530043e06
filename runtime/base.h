/* base.h - allocation, arenas, growable arrays and invariant checks.
 *
 * Every layer of bocb (lang/, compiler/, runtime/) builds on this header.
 * Two failure channels are kept apart on purpose. A user's mistake (a bad
 * program, a bad data file) is reported by the caller with a located
 * message and a non-zero exit status. A broken invariant of ours is a
 * BOCB_ASSERT, which stays on in release builds and names the failed
 * condition. Allocation failure is fatal, because a compiler or a training
 * run that cannot get memory has no useful way to continue.
 */
#ifndef BOCB_BASE_H
#define BOCB_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h> /* free(), used by VEC_FREE */

#if defined(__GNUC__)
#define BOCB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define BOCB_NORETURN __attribute__((noreturn))
#else
#define BOCB_PRINTF(fmt, args)
#define BOCB_NORETURN
#endif

#define BOCB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Prints "bocbc: internal error at FILE:LINE: MESSAGE" and aborts. */
BOCB_NORETURN void bocb_panic(const char *file, int line, const char *fmt, ...)
    BOCB_PRINTF(3, 4);

/* An invariant of bocb itself; never compiled out. */
#define BOCB_ASSERT(cond)                                                     \
    do {                                                                      \
        if (!(cond))                                                          \
            bocb_panic(__FILE__, __LINE__, "assertion failed: %s", #cond);    \
    } while (0)

#define BOCB_UNREACHABLE(what) bocb_panic(__FILE__, __LINE__, "unreachable: %s", what)

/* Allocation wrappers: they never return NULL, and they panic on size
 * overflow or when the system is out of memory. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Returns 64-byte aligned memory (AVX-512 width), freed with free(). */
void *xmalloc_aligned(size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a malloc'd string formatted like printf. */
char *xasprintf(const char *fmt, ...) BOCB_PRINTF(1, 2);
char *xvasprintf(const char *fmt, va_list ap);

/* Multiplies two sizes, panicking on overflow. */
size_t size_mul(size_t a, size_t b);

/* A bump allocator. Everything allocated from an arena lives until
 * arena_free(), which releases it all at once; a compilation uses one. */
typedef struct ArenaChunk ArenaChunk;
typedef struct Arena {
    ArenaChunk *head;
    size_t used_total;
} Arena;

void arena_init(Arena *arena);
void arena_free(Arena *arena);
/* Returns zeroed memory aligned to 16 bytes. */
void *arena_alloc(Arena *arena, size_t size);
void *arena_calloc(Arena *arena, size_t count, size_t size);
char *arena_strdup(Arena *arena, const char *s);
char *arena_strndup(Arena *arena, const char *s, size_t n);
char *arena_printf(Arena *arena, const char *fmt, ...) BOCB_PRINTF(2, 3);

/* A growable array of T: `VEC(int) v = {0}; VEC_PUSH(&v, 3);`.
 * Elements live in malloc'd memory; VEC_FREE releases it. */
#define VEC(T)                                                                \
    struct {                                                                  \
        T *data;                                                              \
        int len, cap;                                                         \
    }

void vec_grow(void **data, int *cap, int min_cap, size_t elem_size);

/* A growable array of int, nameable in function signatures. */
typedef VEC(int) IntVec;

#define VEC_RESERVE(v, n)                                                     \
    do {                                                                      \
        if ((n) > (v)->cap)                                                   \
            vec_grow((void **)&(v)->data, &(v)->cap, (n), sizeof(*(v)->data)); \
    } while (0)

#define VEC_PUSH(v, x)                                                        \
    do {                                                                      \
        VEC_RESERVE((v), (v)->len + 1);                                       \
        (v)->data[(v)->len++] = (x);                                          \
    } while (0)

#define VEC_FREE(v)                                                           \
    do {                                                                      \
        free((v)->data);                                                      \
        (v)->data = NULL;                                                     \
        (v)->len = (v)->cap = 0;                                              \
    } while (0)

/* A growable string buffer. */
typedef struct StrBuf {
    char *data;
    size_t len, cap;
} StrBuf;

void sb_append(StrBuf *sb, const char *s);
void sb_appendn(StrBuf *sb, const char *s, size_t n);
void sb_printf(StrBuf *sb, const char *fmt, ...) BOCB_PRINTF(2, 3);
void sb_free(StrBuf *sb);

/* Writes the shortest decimal form of v that reads back as the same
 * double: "0.05", "700" and "0.001" without an exponent, "1e-08" and
 * "1e+20" with one, and "nan", "inf", "-inf". */
void format_double(char *buf, size_t size, double v);

/* Returns seconds from a monotonic clock. */
double now_seconds(void);

#endif
