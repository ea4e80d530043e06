/* gzip.c - libFuzzer harness: reads a gzip-compressed IDX file. The
 * input's first two bytes are replaced by the gzip magic bytes 1f 8b,
 * so every input takes the decompression path of idx_read. */
#include "fuzz.h"

#include <string.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t *copy = malloc(size);
    memcpy(copy, data, size);
    copy[0] = 0x1f;
    copy[1] = 0x8b;
    FuzzFile f = fuzz_file_create(copy, size);
    free(copy);
    int type_code, rank;
    int64_t dims[4];
    uint8_t *contents = NULL;
    char *error = NULL;
    if (idx_read(f.path, &type_code, &rank, dims, &contents, &error))
        free(contents);
    free(error);
    fuzz_file_close(&f);
    return 0;
}
