/* cifar.c - libFuzzer harness: reads the input as a CIFAR batch file.
 * An even first byte selects CIFAR-10 (one label byte, 10 classes) and an
 * odd one CIFAR-100 (coarse and fine label bytes, 100 classes). The rest
 * of the input is the file. */
#include "fuzz.h"

#include "cifar.h"
#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool hundred = data[0] & 1;
    FuzzFile batch = fuzz_file_create(data + 1, size - 1);
    Dataset ds = {0};
    char *error = NULL;
    /* On failure the records read before the fault may remain. */
    cifar_read_batch(&ds, batch.path, hundred ? 2 : 1, hundred ? 100 : 10, &error);
    dataset_free(&ds);
    free(error);
    fuzz_file_close(&batch);
    return 0;
}
