/* safetensors.c - libFuzzer harness: validates the input as a safetensors
 * file (checkpoints and `init` weights), then reads every tensor it
 * accepted, so that a header that passes validation but lies about its
 * tensors shows up as an out-of-bounds read. */
#include "fuzz.h"

#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *bytes = malloc(size + 1);
    if (!bytes)
        abort();
    memcpy(bytes, data, size);
    StFile file;
    char *error = NULL;
    if (st_read_memory("fuzz.safetensors", bytes, size, &file, &error)) {
        volatile uint8_t sink = 0;
        for (int i = 0; i < file.tensor_count; i++) {
            const StTensor *t = &file.tensors[i];
            const uint8_t *p = t->data;
            for (size_t b = 0; b < t->nbytes; b++)
                sink ^= p[b];
        }
        (void)sink;
        st_free(&file);
    }
    free(error);
    return 0;
}
