/* Tests of the CIFAR binary batch reader on small CIFAR-10 and CIFAR-100
 * directories written to a temporary directory, and on truncated files
 * and labels out of range. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cifar.h"

static char temp_dir[64];

static void make_temp_dir(void)
{
    strcpy(temp_dir, "/tmp/bocb-test-cifar-XXXXXX");
    cr_assert_not_null(mkdtemp(temp_dir));
}

static void remove_temp_dir(void)
{
    DIR *dir = opendir(temp_dir);
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", temp_dir, entry->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(temp_dir);
}

TestSuite(cifar, .init = make_temp_dir, .fini = remove_temp_dir);

/* The pixel value of byte `i` of image `n` in the generated files. */
static uint8_t pixel(int n, int i)
{
    return (uint8_t)(n * 7 + i * 13);
}

/* Writes `count` records numbered from `first`, whose label is
 * label_of(n); `label_bytes` is 1 or 2 (a coarse label n % 20 first). */
static void write_batch(const char *name, int first, int count, int label_bytes, int classes,
                        size_t cut)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", temp_dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (int n = first; n < first + count; n++) {
        if (label_bytes == 2)
            fputc(n % 20, f);
        fputc(n % classes, f);
        for (int i = 0; i < CIFAR_IMAGE_BYTES; i++)
            fputc(pixel(n, i), f);
    }
    fclose(f);
    if (cut)
        cr_assert_eq(truncate(path, (off_t)cut), 0);
}

static void expect_load_error(const char *fragment)
{
    DataSplits splits;
    char *error = NULL;
    cr_assert_not(data_load_cifar_dir(&splits, temp_dir, NORMALIZE_UNIT, &error));
    cr_assert_not_null(error);
    cr_assert(strstr(error, fragment), "expected '%s' in: %s", fragment, error);
    free(error);
}

Test(cifar, cifar10_batches_load_in_order)
{
    write_batch("data_batch_1.bin", 0, 3, 1, 10, 0);
    write_batch("data_batch_2.bin", 3, 2, 1, 10, 0);
    write_batch("test_batch.bin", 100, 4, 1, 10, 0);
    DataSplits splits;
    char *error = NULL;
    cr_assert(data_load_cifar_dir(&splits, temp_dir, NORMALIZE_UNIT, &error), "%s", error);
    cr_assert_eq(splits.train.count, 5);
    cr_assert_eq(splits.test.count, 4);
    cr_assert_eq(splits.train.rank, 3);
    cr_assert_eq(splits.train.sample_dims[0], 3);
    cr_assert_eq(splits.train.sample_dims[1], 32);
    cr_assert_eq(splits.train.sample_dims[2], 32);
    cr_assert_eq(splits.train.num_classes, 10);
    for (int n = 0; n < 5; n++) {
        cr_assert_eq(splits.train.labels[n], n % 10);
        cr_assert_eq(splits.train.images[(size_t)n * CIFAR_IMAGE_BYTES + 1500], pixel(n, 1500));
    }
    cr_assert_eq(splits.test.labels[3], 103 % 10);

    /* data_gather converts channel-major bytes to floats in [0, 1]. */
    int64_t index = 4;
    float x[CIFAR_IMAGE_BYTES];
    int32_t y;
    data_gather(&splits, &splits.train, &index, 1, x, &y);
    cr_assert_eq(y, 4);
    cr_assert_float_eq(x[2047], pixel(4, 2047) / 255.0f, 1e-6);
    data_splits_free(&splits);
}

Test(cifar, cifar100_uses_fine_labels)
{
    write_batch("train.bin", 0, 6, 2, 100, 0);
    write_batch("test.bin", 50, 2, 2, 100, 0);
    DataSplits splits;
    char *error = NULL;
    cr_assert(data_load_cifar_dir(&splits, temp_dir, NORMALIZE_STANDARD, &error), "%s", error);
    cr_assert_eq(splits.train.count, 6);
    cr_assert_eq(splits.train.num_classes, 100);
    cr_assert_eq(splits.test.labels[1], 51);
    cr_assert_eq(splits.train.images[5 * CIFAR_IMAGE_BYTES], pixel(5, 0));
    cr_assert(splits.std > 0);
    data_splits_free(&splits);
}

Test(cifar, truncated_record_names_file_and_offset)
{
    write_batch("data_batch_1.bin", 0, 3, 1, 10, 2 * 3073 + 100);
    write_batch("test_batch.bin", 0, 1, 1, 10, 0);
    expect_load_error("data_batch_1.bin: 6246 bytes is not a whole number of 3073-byte "
                      "records; the record at offset 6146 is truncated");
}

Test(cifar, label_out_of_range_names_offset)
{
    write_batch("data_batch_1.bin", 0, 2, 1, 10, 0);
    /* CIFAR-100 labels in a CIFAR-10 test batch: record 10 (offset
     * 10 * 3073) has the first label out of range. */
    write_batch("test_batch.bin", 0, 13, 1, 100, 0);
    expect_load_error("test_batch.bin: label 10 at offset 30730 is out of range; CIFAR-10 "
                      "labels are 0 to 9");
}

Test(cifar, missing_test_batch_is_reported)
{
    write_batch("data_batch_1.bin", 0, 2, 1, 10, 0);
    expect_load_error("test_batch.bin: cannot open");
}

Test(cifar, directory_without_batches_is_reported)
{
    expect_load_error("no CIFAR batches found");
}

Test(cifar, empty_file_is_rejected)
{
    write_batch("train.bin", 0, 0, 2, 100, 0);
    write_batch("test.bin", 0, 1, 2, 100, 0);
    expect_load_error("train.bin: 0 bytes is not a whole number of 3074-byte records");
}
