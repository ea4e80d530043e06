/* kcache.h - kernel keys and the on-disk cache of compiled kernels.
 *
 * A kernel's key is its text form (kernel_print) without its name, so
 * two kernels with the same loops and instructions share one entry
 * whatever the fusion pass called them. The JIT's on-disk cache and the
 * kernel table of an AOT binary both look kernels up by this key.
 *
 * A cache entry is one file holding one kernel's object code. Its name is
 * a hash of the target (LLVM version, CPU name and CPU features) and the
 * key. The file repeats the target and the key and carries a checksum of
 * the object, so an entry written for another target, a hash collision,
 * a truncated file or flipped bits are all detected when it is read, and
 * the kernel is compiled again. Entries are written atomically (a
 * temporary file renamed over the entry), so a reader never sees half of
 * one. This module does not include LLVM headers: the AOT runtime links
 * it without LLVM.
 */
#ifndef BOCB_KCACHE_H
#define BOCB_KCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel.h"

/* Returns the key of `k` (malloc'd). */
char *kernel_key(const Kernel *k);

/* Returns the 64-bit FNV-1a hash of `len` bytes, continuing from `hash`
 * (start with KCACHE_HASH_SEED). */
#define KCACHE_HASH_SEED UINT64_C(0xcbf29ce484222325)
uint64_t kcache_hash(uint64_t hash, const void *data, size_t len);

/* Returns the symbol of the kernel with key `key` in object code,
 * "bocbk_" and 16 hexadecimal digits of the key's hash (malloc'd). */
char *kcache_symbol(const char *key);

/* Returns the cache directory (malloc'd): `flag` when not NULL, else
 * $BOCB_CACHE_DIR, else $XDG_CACHE_HOME/bocb, else $HOME/.cache/bocb.
 * Returns NULL when none of them is set. */
char *kcache_dir(const char *flag);

typedef struct KCacheStats {
    int hits;     /* kernels loaded from the cache */
    int misses;   /* kernels compiled (no valid entry) */
    int rejected; /* entries that existed but were stale or corrupt */
    int write_errors;
} KCacheStats;

/* Reads the entry for `key` and `target` from `dir`. Returns the object
 * code (malloc'd) and its size in *size, or NULL when there is no entry
 * or it is invalid; an invalid entry counts in stats->rejected. */
void *kcache_read(const char *dir, const char *target, const char *key, size_t *size,
                  KCacheStats *stats);

/* Writes the entry for `key` and `target` to `dir`, creating `dir` when
 * missing. Returns false and sets *error (malloc'd) on failure. */
bool kcache_write(const char *dir, const char *target, const char *key, const void *object,
                  size_t size, char **error);

/* Returns the path of the entry for `key` and `target` (malloc'd). */
char *kcache_entry_path(const char *dir, const char *target, const char *key);

#endif
