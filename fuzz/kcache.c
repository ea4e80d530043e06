/* kcache.c - libFuzzer harness: the input is a kernel-cache entry, stored
 * where the cache looks for the entry of a fixed target and key, then read
 * back with kcache_read, which must reject it or return its object code. */
#include "fuzz.h"

#include <string.h>

#include "kcache.h"
#include "report.h"

static const char target[] = "fuzz-target";
static const char key[] = "fuzz-key";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *dir;
    static char *path;
    if (!dir) {
        char pattern[] = "/tmp/bocb-fuzz-kcache-XXXXXX";
        if (!mkdtemp(pattern))
            abort();
        dir = strdup(pattern);
        path = kcache_entry_path(dir, target, key);
    }
    char *error = NULL;
    if (!rt_write_file_atomic(path, data, size, &error))
        abort();
    KCacheStats stats = {0};
    size_t object_size = 0;
    void *object = kcache_read(dir, target, key, &object_size, &stats);
    if (object && object_size > size)
        abort();
    free(object);
    return 0;
}
