/* Tests of IDX reading and dataset loading on files written to a temporary
 * directory, plain and gzip-compressed, and on Fashion-MNIST when it is
 * installed. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

static char temp_dir[64];

static void make_temp_dir(void)
{
    strcpy(temp_dir, "/tmp/bocb-test-data-XXXXXX");
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

TestSuite(data, .init = make_temp_dir, .fini = remove_temp_dir);

/* A growable byte buffer for building IDX files. */
typedef struct Bytes {
    uint8_t *data;
    size_t len;
} Bytes;

static void append(Bytes *b, const void *src, size_t n)
{
    b->data = realloc(b->data, b->len + n + 1);
    if (n > 0)
        memcpy(b->data + b->len, src, n);
    b->len += n;
}

static void append_be32(Bytes *b, uint32_t v)
{
    uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    append(b, be, 4);
}

/* Returns an IDX header of the given type and dimensions followed by
 * `data_len` bytes of data. */
static Bytes idx_bytes(uint8_t type, int rank, const uint32_t *dims,
                       const uint8_t *data, size_t data_len)
{
    Bytes b = {NULL, 0};
    uint8_t magic[4] = {0, 0, type, (uint8_t)rank};
    append(&b, magic, 4);
    for (int i = 0; i < rank; i++)
        append_be32(&b, dims[i]);
    append(&b, data, data_len);
    return b;
}

/* Writes b to temp_dir/name, gzip-compressed when `gzip` is set, and
 * returns the malloc'd path. */
static char *write_file(const char *name, Bytes b, bool gzip)
{
    char *path = malloc(strlen(temp_dir) + strlen(name) + 2);
    sprintf(path, "%s/%s", temp_dir, name);
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        cr_assert_not_null(gz);
        if (b.len > 0)
            cr_assert_eq(gzwrite(gz, b.data, (unsigned)b.len), (int)b.len);
        cr_assert_eq(gzclose(gz), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f);
        if (b.len > 0)
            cr_assert_eq(fwrite(b.data, 1, b.len, f), b.len);
        cr_assert_eq(fclose(f), 0);
    }
    return path;
}

/* Writes an IDX file with the given contents and frees the bytes. */
static char *write_idx(const char *name, uint8_t type, int rank,
                       const uint32_t *dims, const uint8_t *data,
                       size_t data_len, bool gzip)
{
    Bytes b = idx_bytes(type, rank, dims, data, data_len);
    char *path = write_file(name, b, gzip);
    free(b.data);
    return path;
}

static void expect_contains(const char *message, const char *part)
{
    cr_expect(message != NULL && strstr(message, part) != NULL,
              "message \"%s\" does not contain \"%s\"", message ? message : "(null)",
              part);
}

/* Three 2x4 images with pixel values 10 * i + j and labels 4, 0, 2. */
static const uint32_t small_image_dims[3] = {3, 2, 4};
static const uint32_t small_label_dims[1] = {3};
static uint8_t small_images[24];
static const uint8_t small_labels[3] = {4, 0, 2};

static void fill_small_images(void)
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 8; j++)
            small_images[i * 8 + j] = (uint8_t)(10 * i + j);
}

static void write_small_pair(const char *prefix, bool gzip, char **images,
                             char **labels)
{
    char name[128];
    fill_small_images();
    snprintf(name, sizeof name, "%s-images", prefix);
    *images = write_idx(name, 0x08, 3, small_image_dims, small_images, 24, gzip);
    snprintf(name, sizeof name, "%s-labels", prefix);
    *labels = write_idx(name, 0x08, 1, small_label_dims, small_labels, 3, gzip);
}

/* ---- idx_read ------------------------------------------------------------- */

static void check_idx_read_small(bool gzip)
{
    char *images, *labels;
    write_small_pair(gzip ? "gz" : "plain", gzip, &images, &labels);
    int type = -1, rank = -1;
    int64_t dims[4];
    uint8_t *data = NULL;
    char *error = NULL;
    cr_assert(idx_read(images, &type, &rank, dims, &data, &error), "%s", error);
    cr_expect_eq(type, 0x08);
    cr_expect_eq(rank, 3);
    cr_expect_eq(dims[0], 3);
    cr_expect_eq(dims[1], 2);
    cr_expect_eq(dims[2], 4);
    cr_expect_eq(memcmp(data, small_images, 24), 0);
    free(data);
    free(images);
    free(labels);
}

Test(data, idx_read_plain)
{
    check_idx_read_small(false);
}

Test(data, idx_read_gzip)
{
    check_idx_read_small(true);
}

/* Expects idx_read on `path` to fail with a message that names the path
 * and contains `reason`. */
static void expect_idx_error(const char *path, const char *reason)
{
    int type, rank;
    int64_t dims[4];
    uint8_t *data = NULL;
    char *error = NULL;
    cr_expect_not(idx_read(path, &type, &rank, dims, &data, &error),
                  "%s was read, expected: %s", path, reason);
    expect_contains(error, path);
    expect_contains(error, reason);
    free(error);
}

Test(data, truncated_plain)
{
    char *path = write_idx("short", 0x08, 3, small_image_dims, small_images, 20, false);
    expect_idx_error(path, "truncated: header promises 24 bytes of data, file has 20");
    free(path);
}

Test(data, truncated_gzip_data)
{
    char *path = write_idx("short.gz", 0x08, 3, small_image_dims, small_images, 20, true);
    expect_idx_error(path, "truncated: header promises 24 bytes of data, file has 20");
    free(path);
}

Test(data, truncated_gzip_stream)
{
    /* 64 KiB of pseudo-random bytes compress poorly, so cutting the gzip
     * file in half leaves about half of the data readable. */
    enum { SIZE = 1 << 16 };
    uint8_t *pixels = malloc(SIZE);
    uint32_t state = 12345;
    for (int i = 0; i < SIZE; i++) {
        state = state * 1103515245u + 12345u;
        pixels[i] = (uint8_t)(state >> 24);
    }
    const uint32_t dims[3] = {16, 64, 64};
    char *path = write_idx("cut.gz", 0x08, 3, dims, pixels, SIZE, true);

    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    uint8_t *compressed = malloc(2 * SIZE);
    size_t len = fread(compressed, 1, 2 * SIZE, f);
    fclose(f);
    Bytes half = {compressed, len / 2};
    free(path);
    path = write_file("cut.gz", half, false);

    expect_idx_error(path, "truncated: header promises 65536 bytes of data, file has ");
    expect_idx_error(path, "the gzip stream also ends early");
    free(path);
    free(pixels);
    free(compressed);
}

Test(data, corrupt_gzip)
{
    /* Flipping bits in the middle of the deflate data breaks either the
     * decompression or the CRC-32 check at the end of the stream. */
    enum { SIZE = 1 << 14 };
    uint8_t *pixels = malloc(SIZE);
    for (int i = 0; i < SIZE; i++)
        pixels[i] = (uint8_t)(i * 7 + i / 13);
    const uint32_t dims[3] = {16, 32, 32};
    char *path = write_idx("bad.gz", 0x08, 3, dims, pixels, SIZE, true);

    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    uint8_t *compressed = malloc(2 * SIZE);
    size_t len = fread(compressed, 1, 2 * SIZE, f);
    fclose(f);
    for (size_t i = len / 2; i < len / 2 + 8; i++)
        compressed[i] ^= 0x5A;
    Bytes damaged = {compressed, len};
    free(path);
    path = write_file("bad.gz", damaged, false);

    expect_idx_error(path, "corrupt");
    expect_idx_error(path, "download the file again");
    free(path);
    free(pixels);
    free(compressed);
}

Test(data, truncated_header)
{
    Bytes b = idx_bytes(0x08, 3, small_image_dims, NULL, 0);
    b.len = 9;
    char *path = write_file("header", b, false);
    expect_idx_error(path, "truncated: the IDX header of rank 3 needs 16 bytes, file has 9");
    free(path);
    free(b.data);

    Bytes empty = {NULL, 0};
    path = write_file("empty", empty, false);
    expect_idx_error(path, "needs at least 4 bytes, file has 0");
    free(path);
}

Test(data, bad_magic)
{
    Bytes zip = {NULL, 0};
    static const char zip_start[] = "PK\x03\x04 not an IDX file";
    append(&zip, zip_start, sizeof zip_start - 1);
    char *path = write_file("archive.zip", zip, false);
    expect_idx_error(path, "not an IDX file: it starts with bytes 50 4b 03 04");
    free(path);

    path = write_file("text.gz", zip, true);
    expect_idx_error(path, "not an IDX file: its decompressed data starts with bytes 50 4b");
    free(path);
    free(zip.data);
}

Test(data, unsupported_type)
{
    float values[3] = {1, 2, 3};
    char *path = write_idx("floats", 0x0D, 1, small_label_dims, (const uint8_t *)values,
                           sizeof values, false);
    expect_idx_error(path, "unsupported IDX element type 0x0d (32-bit float)");
    free(path);
}

Test(data, unsupported_rank)
{
    const uint32_t dims[5] = {1, 1, 1, 1, 1};
    const uint8_t pixel = 7;
    char *path = write_idx("rank5", 0x08, 5, dims, &pixel, 1, false);
    expect_idx_error(path, "unsupported IDX rank 5");
    free(path);
}

Test(data, absurd_size)
{
    const uint32_t dims[3] = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    char *path = write_idx("huge", 0x08, 3, dims, NULL, 0, false);
    expect_idx_error(path, "header dimensions 4294967295 x 4294967295 x 4294967295");
    expect_idx_error(path, "16 GiB");
    free(path);

    /* 2^17 * 2^17 = 2^34 bytes is the largest size accepted, so one more
     * row exceeds the limit without overflowing. */
    const uint32_t over[2] = {(1u << 17) + 1, 1u << 17};
    path = write_idx("over", 0x08, 2, over, NULL, 0, false);
    expect_idx_error(path, "16 GiB");
    free(path);
}

Test(data, trailing_bytes)
{
    fill_small_images();
    uint8_t extra[29];
    memcpy(extra, small_images, 24);
    memset(extra + 24, 0xAA, 5);
    char *path = write_idx("long", 0x08, 3, small_image_dims, extra, 29, false);
    expect_idx_error(path, "trailing data: header promises 24 bytes of data, file has 5 more");
    free(path);

    path = write_idx("long.gz", 0x08, 3, small_image_dims, extra, 29, true);
    expect_idx_error(path, "trailing data: header promises 24 bytes of data, file has 5 more");
    free(path);
}

Test(data, missing_file)
{
    char path[128];
    snprintf(path, sizeof path, "%s/absent-images", temp_dir);
    expect_idx_error(path, "file not found");
}

Test(data, directory_instead_of_file)
{
    expect_idx_error(temp_dir, "is a directory");
}

/* ---- dataset_load_idx ----------------------------------------------------- */

static void check_dataset_small(bool gzip)
{
    char *images, *labels;
    write_small_pair(gzip ? "gz" : "plain", gzip, &images, &labels);
    Dataset ds;
    char *error = NULL;
    cr_assert(dataset_load_idx(&ds, images, labels, &error), "%s", error);
    cr_expect_str_eq(ds.path, images);
    cr_expect_eq(ds.count, 3);
    cr_expect_eq(ds.rank, 3);
    cr_expect_eq(ds.sample_dims[0], 1);
    cr_expect_eq(ds.sample_dims[1], 2);
    cr_expect_eq(ds.sample_dims[2], 4);
    cr_expect_eq(ds.sample_size, 8);
    cr_expect_eq(ds.num_classes, 5);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ds.labels[i], small_labels[i]);
    cr_expect_eq(memcmp(ds.images, small_images, 24), 0);
    dataset_free(&ds);
    free(images);
    free(labels);
}

Test(data, load_plain)
{
    check_dataset_small(false);
}

Test(data, load_gzip)
{
    check_dataset_small(true);
}

/* Expects dataset_load_idx to fail with a message containing both parts. */
static void expect_load_error(const char *images, const char *labels,
                              const char *part1, const char *part2)
{
    Dataset ds;
    char *error = NULL;
    cr_expect_not(dataset_load_idx(&ds, images, labels, &error));
    expect_contains(error, part1);
    expect_contains(error, part2);
    free(error);
}

Test(data, wrong_rank)
{
    fill_small_images();
    const uint32_t flat[2] = {3, 8};
    char *flat_images = write_idx("flat-images", 0x08, 2, flat, small_images, 24, false);
    char *images, *labels;
    write_small_pair("ok", false, &images, &labels);
    expect_load_error(flat_images, labels, flat_images, "images file has rank 2");

    const uint32_t label_dims[2] = {3, 1};
    char *wide_labels = write_idx("wide-labels", 0x08, 2, label_dims, small_labels, 3, true);
    expect_load_error(images, wide_labels, wide_labels, "labels file has rank 2");
    free(flat_images), free(images), free(labels), free(wide_labels);
}

Test(data, count_mismatch)
{
    char *images, *labels;
    write_small_pair("pair", false, &images, &labels);
    const uint32_t four[1] = {4};
    const uint8_t four_labels[4] = {1, 2, 3, 4};
    char *more_labels = write_idx("more-labels", 0x08, 1, four, four_labels, 4, false);
    Dataset ds;
    char *error = NULL;
    cr_expect_not(dataset_load_idx(&ds, images, more_labels, &error));
    expect_contains(error, images);
    expect_contains(error, more_labels);
    expect_contains(error, "has 3 images");
    expect_contains(error, "has 4 labels");
    free(error);
    free(images), free(labels), free(more_labels);
}

Test(data, empty_dataset)
{
    const uint32_t no_images[3] = {0, 28, 28};
    const uint32_t no_labels[1] = {0};
    char *images = write_idx("none-images", 0x08, 3, no_images, NULL, 0, false);
    char *labels = write_idx("none-labels", 0x08, 1, no_labels, NULL, 0, false);
    expect_load_error(images, labels, images, "contains no samples");
    free(images), free(labels);
}

/* ---- data_load_idx_dir and data_gather ------------------------------------ */

static const char *const standard_names[4] = {
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
};

/* Writes the four standard files: train from the small set, test with two
 * images. Files i with gzip_mask bit i set are gzip-compressed. */
static void write_standard_dir(unsigned gzip_mask)
{
    fill_small_images();
    const uint32_t test_dims[3] = {2, 2, 4};
    const uint32_t test_label_dims[1] = {2};
    const uint8_t test_images[16] = {255, 0, 255, 0, 1, 2, 3, 4,
                                     9, 9, 9, 9, 9, 9, 9, 9};
    const uint8_t test_labels[2] = {6, 1};
    char name[64];
    const struct {
        int rank;
        const uint32_t *dims;
        const uint8_t *data;
        size_t len;
    } files[4] = {
        {3, small_image_dims, small_images, 24},
        {1, small_label_dims, small_labels, 3},
        {3, test_dims, test_images, 16},
        {1, test_label_dims, test_labels, 2},
    };
    for (int i = 0; i < 4; i++) {
        bool gzip = (gzip_mask >> i) & 1;
        snprintf(name, sizeof name, "%s%s", standard_names[i], gzip ? ".gz" : "");
        free(write_idx(name, 0x08, files[i].rank, files[i].dims, files[i].data,
                       files[i].len, gzip));
    }
}

Test(data, load_dir_mixed_compression)
{
    write_standard_dir(0x5);
    DataSplits splits;
    char *error = NULL;
    cr_assert(data_load_idx_dir(&splits, temp_dir, NORMALIZE_UNIT, &error), "%s", error);
    cr_expect_eq(splits.train.count, 3);
    cr_expect_eq(splits.test.count, 2);
    /* Both splits get the class count of the whole source: test has 6. */
    cr_expect_eq(splits.train.num_classes, 7);
    cr_expect_eq(splits.test.num_classes, 7);
    expect_contains(splits.train.path, "train-images-idx3-ubyte.gz");
    data_splits_free(&splits);
}

Test(data, load_dir_prefers_plain)
{
    write_standard_dir(0x0);
    /* A gzip-compressed train images file with different contents: the
     * plain file beside it must win. */
    uint8_t other[24];
    memset(other, 77, sizeof other);
    free(write_idx("train-images-idx3-ubyte.gz", 0x08, 3, small_image_dims, other, 24, true));

    DataSplits splits;
    char *error = NULL;
    cr_assert(data_load_idx_dir(&splits, temp_dir, NORMALIZE_NONE, &error), "%s", error);
    cr_expect_eq(memcmp(splits.train.images, small_images, 24), 0);
    data_splits_free(&splits);
}

Test(data, load_dir_missing_file)
{
    DataSplits splits;
    char *error = NULL;
    cr_expect_not(data_load_idx_dir(&splits, temp_dir, NORMALIZE_UNIT, &error));
    expect_contains(error, temp_dir);
    expect_contains(error, "train-images-idx3-ubyte.gz: file not found");
    expect_contains(error, "point idx(...) at a directory");
    free(error);
}

Test(data, normalisation_modes)
{
    write_standard_dir(0x0);
    /* Reference statistics over the 24 training pixels, in double. */
    double sum = 0, sum_sq = 0;
    for (int i = 0; i < 24; i++) {
        double v = small_images[i] / 255.0;
        sum += v;
        sum_sq += v * v;
    }
    double mean = sum / 24, std = sqrt(sum_sq / 24 - mean * mean);

    const Normalize modes[3] = {NORMALIZE_NONE, NORMALIZE_UNIT, NORMALIZE_STANDARD};
    for (int m = 0; m < 3; m++) {
        DataSplits splits;
        char *error = NULL;
        cr_assert(data_load_idx_dir(&splits, temp_dir, modes[m], &error), "%s", error);
        cr_expect_float_eq(splits.mean, (float)mean, 1e-6);
        cr_expect_float_eq(splits.std, (float)std, 1e-6);

        /* Test samples 1 and 0, in that order. */
        const int64_t indices[2] = {1, 0};
        float x[16];
        int32_t y[2];
        data_gather(&splits, &splits.test, indices, 2, x, y);
        cr_expect_eq(y[0], 1);
        cr_expect_eq(y[1], 6);
        for (int j = 0; j < 16; j++) {
            int64_t sample = indices[j / 8];
            double byte = splits.test.images[sample * 8 + j % 8];
            double expected = byte;
            if (modes[m] == NORMALIZE_UNIT)
                expected = byte / 255.0;
            else if (modes[m] == NORMALIZE_STANDARD)
                expected = (byte / 255.0 - splits.mean) / splits.std;
            cr_expect_float_eq(x[j], (float)expected, 1e-6 * (1 + fabs(expected)),
                               "mode %d element %d: %g vs %g", m, j, (double)x[j],
                               expected);
        }
        data_splits_free(&splits);
    }
}

Test(data, standard_rejects_constant_images)
{
    write_standard_dir(0x0);
    uint8_t flat[24];
    memset(flat, 128, sizeof flat);
    free(write_idx("train-images-idx3-ubyte", 0x08, 3, small_image_dims, flat, 24, false));
    DataSplits splits;
    char *error = NULL;
    cr_expect_not(data_load_idx_dir(&splits, temp_dir, NORMALIZE_STANDARD, &error));
    expect_contains(error, "train-images-idx3-ubyte");
    expect_contains(error, "standard deviation of 0");
    free(error);
}

Test(data, truncate_keeps_classes)
{
    char *images, *labels;
    write_small_pair("cut", false, &images, &labels);
    Dataset ds;
    char *error = NULL;
    cr_assert(dataset_load_idx(&ds, images, labels, &error), "%s", error);
    dataset_truncate(&ds, 2);
    cr_expect_eq(ds.count, 2);
    cr_expect_eq(ds.num_classes, 5);
    dataset_truncate(&ds, 10);
    cr_expect_eq(ds.count, 2);
    dataset_free(&ds);
    free(images), free(labels);
}

Test(data, fashion_mnist)
{
    struct stat st;
    if (stat(FASHION_MNIST_DIR, &st) != 0)
        cr_skip_test("%s is not installed (Debian package dataset-fashion-mnist)",
                     FASHION_MNIST_DIR);
    DataSplits splits;
    char *error = NULL;
    cr_assert(data_load_idx_dir(&splits, FASHION_MNIST_DIR, NORMALIZE_STANDARD, &error),
              "%s", error);
    cr_expect_eq(splits.train.count, 60000);
    cr_expect_eq(splits.test.count, 10000);
    cr_expect_eq(splits.train.sample_dims[0], 1);
    cr_expect_eq(splits.train.sample_dims[1], 28);
    cr_expect_eq(splits.train.sample_dims[2], 28);
    cr_expect_eq(splits.train.num_classes, 10);
    cr_expect_eq(splits.test.num_classes, 10);
    cr_expect_eq(splits.train.labels[0], 9);
    /* Over all training pixels / 255, Fashion-MNIST has mean 0.2860 and
     * population std 0.3530. */
    cr_expect_float_eq(splits.mean, 0.2860f, 1e-4, "mean %g", (double)splits.mean);
    cr_expect_float_eq(splits.std, 0.3530f, 1e-4, "std %g", (double)splits.std);
    data_splits_free(&splits);
}
