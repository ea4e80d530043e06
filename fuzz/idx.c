/* idx.c - libFuzzer harness: loads an images/labels pair of IDX files.
 * The first two bytes of the input (little-endian) give the length of
 * the images file, which follows them; the rest is the labels file. */
#include "fuzz.h"

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t images_len = ((size_t)data[0] | (size_t)data[1] << 8) % (size - 1);
    FuzzFile images = fuzz_file_create(data + 2, images_len);
    FuzzFile labels = fuzz_file_create(data + 2 + images_len, size - 2 - images_len);
    Dataset ds = {0};
    char *error = NULL;
    if (dataset_load_idx(&ds, images.path, labels.path, &error))
        dataset_free(&ds);
    free(error);
    fuzz_file_close(&images);
    fuzz_file_close(&labels);
    return 0;
}
