/* kcache.c - kernel keys and the on-disk kernel cache (see kcache.h).
 *
 * Entry layout, integers little-endian as on the only target (x86-64):
 *
 *     "BOCBKC01"                        8 bytes
 *     target length, key length,        4 x uint64
 *     object length, object FNV-1a hash
 *     target, key, object               the bytes themselves
 */
#include "kcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "../runtime/report.h"

static const char entry_magic[8] = {'B', 'O', 'C', 'B', 'K', 'C', '0', '1'};

enum { HEADER_BYTES = 8 + 4 * 8 };

char *kernel_key(const Kernel *k)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    BOCB_ASSERT(out != NULL);
    kernel_print(out, k);
    fclose(out);

    /* kernel_print starts with "kernel NAME "; the name is left out. */
    size_t prefix = strlen("kernel ") + strlen(k->name) + 1;
    BOCB_ASSERT(len >= prefix && strncmp(text, "kernel ", 7) == 0);
    memmove(text, text + prefix, len - prefix + 1);
    return text;
}

uint64_t kcache_hash(uint64_t hash, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        hash ^= p[i];
        hash *= UINT64_C(0x100000001b3);
    }
    return hash;
}

char *kcache_symbol(const char *key)
{
    uint64_t h = kcache_hash(KCACHE_HASH_SEED, key, strlen(key));
    return xasprintf("bocbk_%016llx", (unsigned long long)h);
}

char *kcache_dir(const char *flag)
{
    if (flag)
        return xstrdup(flag);
    const char *env = getenv("BOCB_CACHE_DIR");
    if (env && env[0])
        return xstrdup(env);
    /* The XDG base directory specification ignores a relative path. */
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/')
        return xasprintf("%s/bocb", xdg);
    const char *home = getenv("HOME");
    if (home && home[0])
        return xasprintf("%s/.cache/bocb", home);
    return NULL;
}

char *kcache_entry_path(const char *dir, const char *target, const char *key)
{
    uint64_t h = kcache_hash(KCACHE_HASH_SEED, target, strlen(target) + 1);
    h = kcache_hash(h, key, strlen(key));
    return xasprintf("%s/%016llx.o", dir, (unsigned long long)h);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads the whole file at `path` into a malloc'd buffer, or returns NULL. */
static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    unsigned char *data = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? 2 * cap : 65536;
            data = xrealloc(data, cap);
        }
        size_t n = fread(data + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        return NULL;
    }
    *size = len;
    return data;
}

/* Returns whether `data` is a complete, intact entry for target and key. */
static bool entry_valid(const unsigned char *data, size_t size, const char *target,
                        const char *key, size_t *object_offset, size_t *object_size)
{
    if (size < HEADER_BYTES || memcmp(data, entry_magic, 8) != 0)
        return false;
    uint64_t target_len = get_u64(data + 8), key_len = get_u64(data + 16);
    uint64_t object_len = get_u64(data + 24), object_hash = get_u64(data + 32);
    uint64_t rest = size - HEADER_BYTES;
    if (target_len > rest || key_len > rest - target_len ||
        object_len != rest - target_len - key_len)
        return false;
    const unsigned char *p = data + HEADER_BYTES;
    if (target_len != strlen(target) || memcmp(p, target, target_len) != 0)
        return false;
    p += target_len;
    if (key_len != strlen(key) || memcmp(p, key, key_len) != 0)
        return false;
    p += key_len;
    if (object_len == 0 || kcache_hash(KCACHE_HASH_SEED, p, object_len) != object_hash)
        return false;
    *object_offset = (size_t)(p - data);
    *object_size = object_len;
    return true;
}

void *kcache_read(const char *dir, const char *target, const char *key, size_t *size,
                  KCacheStats *stats)
{
    char *path = kcache_entry_path(dir, target, key);
    size_t file_size = 0;
    unsigned char *data = read_file(path, &file_size);
    free(path);
    if (!data)
        return NULL;
    size_t offset, object_size;
    if (!entry_valid(data, file_size, target, key, &offset, &object_size)) {
        stats->rejected++;
        free(data);
        return NULL;
    }
    memmove(data, data + offset, object_size);
    *size = object_size;
    return data;
}

bool kcache_write(const char *dir, const char *target, const char *key, const void *object,
                  size_t size, char **error)
{
    if (!rt_make_dirs(dir, error))
        return false;
    size_t target_len = strlen(target), key_len = strlen(key);
    size_t total = HEADER_BYTES + target_len + key_len + size;
    unsigned char *data = xmalloc(total);
    memcpy(data, entry_magic, 8);
    put_u64(data + 8, target_len);
    put_u64(data + 16, key_len);
    put_u64(data + 24, size);
    put_u64(data + 32, kcache_hash(KCACHE_HASH_SEED, object, size));
    memcpy(data + HEADER_BYTES, target, target_len);
    memcpy(data + HEADER_BYTES + target_len, key, key_len);
    memcpy(data + HEADER_BYTES + target_len + key_len, object, size);

    char *path = kcache_entry_path(dir, target, key);
    bool ok = rt_write_file_atomic(path, data, total, error);
    free(path);
    free(data);
    return ok;
}
