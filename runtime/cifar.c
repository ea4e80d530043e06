/* cifar.c - the CIFAR binary batch reader. */
#include "cifar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base.h"

static bool fail(char **error, const char *fmt, ...) BOCB_PRINTF(2, 3);

static bool fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *error = xvasprintf(fmt, ap);
    va_end(ap);
    return false;
}

bool cifar_read_batch(Dataset *ds, const char *path, int label_bytes, int classes,
                      char **error)
{
    BOCB_ASSERT(label_bytes == 1 || label_bytes == 2);
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(error, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(error, "%s: not a regular file", path);
    }
    size_t record = (size_t)label_bytes + CIFAR_IMAGE_BYTES;
    size_t size = (size_t)st.st_size;
    if (size == 0 || size % record != 0) {
        fclose(f);
        return fail(error,
                    "%s: %zu bytes is not a whole number of %zu-byte records; the record "
                    "at offset %zu is truncated (is this a CIFAR-%d batch?)",
                    path, size, record, size / record * record, classes);
    }
    int64_t count = (int64_t)(size / record);
    int64_t first = ds->count;
    ds->images = xrealloc(ds->images, size_mul((size_t)(first + count), CIFAR_IMAGE_BYTES));
    ds->labels = xrealloc(ds->labels, size_mul((size_t)(first + count), sizeof(int32_t)));

    uint8_t *buffer = xmalloc(record);
    bool ok = true;
    for (int64_t i = 0; i < count && ok; i++) {
        size_t offset = (size_t)i * record;
        if (fread(buffer, 1, record, f) != record) {
            ok = fail(error, "%s: read failed at offset %zu", path, offset);
            break;
        }
        int label = buffer[label_bytes - 1];
        if (label >= classes) {
            ok = fail(error, "%s: label %d at offset %zu is out of range; CIFAR-%d labels "
                      "are 0 to %d",
                      path, label, offset + (size_t)label_bytes - 1, classes, classes - 1);
            break;
        }
        ds->labels[first + i] = label;
        memcpy(ds->images + (size_t)(first + i) * CIFAR_IMAGE_BYTES, buffer + label_bytes,
               CIFAR_IMAGE_BYTES);
    }
    free(buffer);
    fclose(f);
    if (!ok)
        return false;

    if (!ds->path)
        ds->path = xstrdup(path);
    ds->count = first + count;
    ds->rank = 3;
    ds->sample_dims[0] = CIFAR_CHANNELS;
    ds->sample_dims[1] = CIFAR_SIDE;
    ds->sample_dims[2] = CIFAR_SIDE;
    ds->sample_size = CIFAR_IMAGE_BYTES;
    ds->num_classes = classes;
    return true;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool data_load_cifar_dir(DataSplits *splits, const char *dir, Normalize normalize,
                         char **error)
{
    memset(splits, 0, sizeof *splits);
    if (dir[0] == '\0')
        return fail(error, "the data directory path is empty; point cifar(...) at the "
                           "directory with the CIFAR binary batches");
    char *probe10 = xasprintf("%s/data_batch_1.bin", dir);
    char *probe100 = xasprintf("%s/train.bin", dir);
    bool is10 = file_exists(probe10), is100 = !is10 && file_exists(probe100);
    free(probe10);
    free(probe100);
    if (!is10 && !is100)
        return fail(error, "%s: no CIFAR batches found; expected data_batch_1.bin and "
                           "test_batch.bin (CIFAR-10) or train.bin and test.bin (CIFAR-100)",
                    dir);

    int label_bytes = is10 ? 1 : 2, classes = is10 ? 10 : 100;
    bool ok = true;
    if (is10) {
        for (int b = 1; b <= 5 && ok; b++) {
            char *path = xasprintf("%s/data_batch_%d.bin", dir, b);
            if (b == 1 || file_exists(path))
                ok = cifar_read_batch(&splits->train, path, label_bytes, classes, error);
            free(path);
        }
    } else {
        char *path = xasprintf("%s/train.bin", dir);
        ok = cifar_read_batch(&splits->train, path, label_bytes, classes, error);
        free(path);
    }
    if (ok) {
        char *path = xasprintf("%s/%s", dir, is10 ? "test_batch.bin" : "test.bin");
        ok = cifar_read_batch(&splits->test, path, label_bytes, classes, error);
        free(path);
    }
    if (!ok) {
        data_splits_free(splits);
        return false;
    }

    double mean, std;
    dataset_image_statistics(&splits->train, &mean, &std);
    if (normalize == NORMALIZE_STANDARD && std == 0) {
        fail(error, "%s: every pixel of the training images has the value %.0f, so "
                    "standard normalisation would divide by a standard deviation of 0; "
                    "use unit normalisation",
             splits->train.path, mean * 255);
        data_splits_free(splits);
        return false;
    }
    splits->normalize = normalize;
    splits->mean = (float)mean;
    splits->std = (float)std;
    return true;
}
