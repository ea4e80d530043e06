/* data.c - IDX file reading, dataset loading and batch conversion.
 *
 * An IDX file is a 4-byte magic number (0x00 0x00 TYPE RANK), RANK
 * big-endian u32 dimensions, and then the elements in row-major order.
 * Files are read through zlib, which detects gzip data by its magic bytes
 * (0x1f 0x8b) and reads any other file as it is.
 */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "base.h"

enum {
    IDX_TYPE_U8 = 0x08,
    IDX_MAX_RANK = 4,
    /* Bytes requested from zlib per gzread call (it takes an unsigned). */
    IDX_READ_CHUNK = 1 << 24,
    /* Decompressed bytes are read into a buffer that starts at this size
     * and doubles, so a header that promises far more data than the file
     * has does not allocate the promised amount up front. */
    IDX_INITIAL_BUFFER = 1 << 20,
};

/* Largest data size accepted from a header (16 GiB). Real IDX files are
 * far smaller, so a larger size means a corrupt header. */
#define IDX_MAX_DATA_BYTES (UINT64_C(1) << 34)

static bool fail(char **error, const char *fmt, ...) BOCB_PRINTF(2, 3);

/* Stores a formatted message in *error and returns false. */
static bool fail(char **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    *error = xvasprintf(fmt, ap);
    va_end(ap);
    return false;
}

static const char *idx_type_name(int type_code)
{
    switch (type_code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "16-bit integer";
    case 0x0C: return "32-bit integer";
    case 0x0D: return "32-bit float";
    case 0x0E: return "64-bit float";
    default: return "not an IDX type";
    }
}

/* Reads up to `len` bytes, stopping early only at the end of the data or
 * on an error. Returns the count read, or -1 on an error (see gzerror). */
static int64_t gz_read_full(gzFile gz, uint8_t *buf, int64_t len)
{
    int64_t got = 0;
    while (got < len) {
        int64_t want = len - got < IDX_READ_CHUNK ? len - got : IDX_READ_CHUNK;
        int n = gzread(gz, buf + got, (unsigned)want);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += n;
    }
    return got;
}

/* Returns the zlib error message of the last read on the file `path`, or
 * NULL when the data simply ended. *truncated is set when a gzip stream
 * ended before its end marker (zlib reports this as Z_BUF_ERROR). */
static const char *gz_read_error(gzFile gz, const char *path, bool *truncated)
{
    int code = Z_OK;
    const char *message = gzerror(gz, &code);
    *truncated = code == Z_BUF_ERROR;
    if (code == Z_OK || code == Z_BUF_ERROR)
        return NULL;
    /* zlib starts its messages with "PATH: ", which ours already do. */
    size_t len = strlen(path);
    if (strncmp(message, path, len) == 0 && strncmp(message + len, ": ", 2) == 0)
        message += len + 2;
    return message;
}

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Checks the header fields and the declared data size. */
static bool check_idx_header(const char *path, const uint8_t magic[4],
                             bool gzipped, char **error)
{
    if (magic[0] != 0 || magic[1] != 0) {
        if (gzipped)
            return fail(error,
                        "%s: not an IDX file: its decompressed data starts with "
                        "bytes %02x %02x %02x %02x, but IDX data starts with "
                        "00 00 <type> <rank>; check that the path names an IDX file",
                        path, magic[0], magic[1], magic[2], magic[3]);
        return fail(error,
                    "%s: not an IDX file: it starts with bytes %02x %02x %02x %02x, "
                    "but an IDX file starts with 00 00 <type> <rank> and a "
                    "gzip-compressed one with 1f 8b; check that the path names an "
                    "IDX file",
                    path, magic[0], magic[1], magic[2], magic[3]);
    }
    if (magic[2] != IDX_TYPE_U8)
        return fail(error,
                    "%s: unsupported IDX element type 0x%02x (%s); bocb reads "
                    "only type 0x08 (unsigned byte), so convert the data to bytes",
                    path, magic[2], idx_type_name(magic[2]));
    if (magic[3] < 1 || magic[3] > IDX_MAX_RANK)
        return fail(error,
                    "%s: unsupported IDX rank %d; bocb reads ranks 1 to %d, so "
                    "the header is likely corrupt",
                    path, magic[3], IDX_MAX_RANK);
    return true;
}

/* Stores in *bytes the product of the dimensions (one byte per element),
 * or fails when it exceeds IDX_MAX_DATA_BYTES. */
static bool idx_data_bytes(const char *path, int rank, const int64_t *dims,
                           uint64_t *bytes, char **error)
{
    uint64_t total = 1;
    bool too_large = false;
    for (int i = 0; i < rank; i++) {
        if (__builtin_mul_overflow(total, (uint64_t)dims[i], &total) ||
            total > IDX_MAX_DATA_BYTES)
            too_large = true;
    }
    if (!too_large) {
        *bytes = total;
        return true;
    }

    char shape[128] = "";
    size_t used = 0;
    for (int i = 0; i < rank && used < sizeof shape; i++) {
        int n = snprintf(shape + used, sizeof shape - used, "%s%lld",
                         i > 0 ? " x " : "", (long long)dims[i]);
        used += n > 0 ? (size_t)n : 0;
    }
    return fail(error,
                "%s: header dimensions %s give more than the 16 GiB that bocb "
                "accepts for an IDX file, so the header is likely corrupt; "
                "download or re-create the file",
                path, shape);
}

/* Reads the data that follows the header: exactly `bytes` bytes, with
 * nothing after them. */
static bool read_idx_data(const char *path, gzFile gz, uint64_t bytes,
                          uint8_t **data, char **error)
{
    size_t cap = bytes < IDX_INITIAL_BUFFER ? (size_t)bytes : IDX_INITIAL_BUFFER;
    uint8_t *buf = xmalloc(cap);
    uint64_t got = 0;
    const char *zlib_error = NULL;
    bool stream_truncated = false;

    while (got < bytes) {
        if (got == cap) {
            cap = cap * 2 < bytes ? cap * 2 : (size_t)bytes;
            buf = xrealloc(buf, cap);
        }
        int64_t n = gz_read_full(gz, buf + got, (int64_t)(cap - got));
        if (n > 0)
            got += (uint64_t)n;
        if (n < 0 || got < cap) {
            zlib_error = gz_read_error(gz, path, &stream_truncated);
            break;
        }
    }

    if (zlib_error) {
        free(buf);
        return fail(error,
                    "%s: gzip data is corrupt after %llu bytes of IDX data (zlib: "
                    "%s); download the file again",
                    path, (unsigned long long)got, zlib_error);
    }
    if (got < bytes) {
        free(buf);
        return fail(error,
                    "%s: truncated: header promises %llu bytes of data, file has "
                    "%llu%s; download the file again",
                    path, (unsigned long long)bytes, (unsigned long long)got,
                    stream_truncated ? " (the gzip stream also ends early)" : "");
    }

    /* Count whatever follows the promised data. NOTE: zlib skips bytes
     * that follow the end of a gzip stream, so only extra decompressed
     * data is found in a gzip-compressed file. */
    uint8_t extra_buf[4096];
    uint64_t extra = 0;
    int64_t n;
    while ((n = gz_read_full(gz, extra_buf, sizeof extra_buf)) > 0)
        extra += (uint64_t)n;
    zlib_error = gz_read_error(gz, path, &stream_truncated);
    if (extra > 0) {
        free(buf);
        return fail(error,
                    "%s: trailing data: header promises %llu bytes of data, file "
                    "has %llu more after them; the header does not match the "
                    "data, so download or re-create the file",
                    path, (unsigned long long)bytes, (unsigned long long)extra);
    }
    if (zlib_error || stream_truncated) {
        free(buf);
        return fail(error,
                    "%s: the gzip stream is %s after all %llu bytes of IDX data "
                    "(zlib: %s); download the file again",
                    path, stream_truncated ? "cut short" : "corrupt",
                    (unsigned long long)bytes,
                    zlib_error ? zlib_error : "unexpected end of file");
    }
    *data = buf;
    return true;
}

bool idx_read(const char *path, int *type_code, int *rank, int64_t dims[4],
              uint8_t **data, char **error)
{
    BOCB_ASSERT(error != NULL);
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return fail(error, "%s: file not found; check the path", path);
        return fail(error, "%s: cannot read the file: %s", path, strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        return fail(error, "%s: is a directory, but an IDX file was expected",
                    path);

    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        int err = errno;
        return fail(error, "%s: cannot open the file: %s", path,
                    err ? strerror(err) : "out of memory");
    }
    gzbuffer(gz, 1 << 17);

    /* The header: the magic number, then `rank` big-endian dimensions. */
    uint8_t header[4 + 4 * IDX_MAX_RANK];
    bool ok = false;
    bool truncated = false;
    int64_t got = gz_read_full(gz, header, 4);
    bool gzipped = got > 0 && !gzdirect(gz);
    const char *zlib_error = got < 0 ? gz_read_error(gz, path, &truncated) : NULL;
    if (zlib_error) {
        fail(error, "%s: gzip data is corrupt (zlib: %s); download the file again",
             path, zlib_error);
        goto done;
    }
    if (got < 4) {
        fail(error,
             "%s: truncated: the IDX header needs at least 4 bytes, file has "
             "%lld; download the file again",
             path, (long long)got);
        goto done;
    }
    if (!check_idx_header(path, header, gzipped, error))
        goto done;

    int file_rank = header[3];
    int64_t header_bytes = 4 + 4 * (int64_t)file_rank;
    got = gz_read_full(gz, header + 4, header_bytes - 4);
    if (got < header_bytes - 4) {
        zlib_error = got < 0 ? gz_read_error(gz, path, &truncated) : NULL;
        if (zlib_error)
            fail(error, "%s: gzip data is corrupt (zlib: %s); download the file again",
                 path, zlib_error);
        else
            fail(error,
                 "%s: truncated: the IDX header of rank %d needs %lld bytes, "
                 "file has %lld; download the file again",
                 path, file_rank, (long long)header_bytes, (long long)(4 + got));
        goto done;
    }

    int64_t file_dims[IDX_MAX_RANK] = {0};
    for (int i = 0; i < file_rank; i++)
        file_dims[i] = read_be32(header + 4 + 4 * i);
    uint64_t bytes = 0;
    if (!idx_data_bytes(path, file_rank, file_dims, &bytes, error))
        goto done;

    uint8_t *buf;
    if (!read_idx_data(path, gz, bytes, &buf, error))
        goto done;

    *type_code = header[2];
    *rank = file_rank;
    for (int i = 0; i < IDX_MAX_RANK; i++)
        dims[i] = i < file_rank ? file_dims[i] : 1;
    *data = buf;
    ok = true;

done:
    gzclose(gz);
    return ok;
}

/* ---- Datasets ------------------------------------------------------------- */

bool dataset_load_idx(Dataset *ds, const char *images_path,
                      const char *labels_path, char **error)
{
    memset(ds, 0, sizeof *ds);
    int image_type, image_rank, label_type, label_rank;
    int64_t image_dims[4], label_dims[4];
    uint8_t *images = NULL, *labels = NULL;

    if (!idx_read(images_path, &image_type, &image_rank, image_dims, &images, error))
        return false;
    if (image_rank != 3) {
        free(images);
        return fail(error,
                    "%s: images file has rank %d, but an images file has rank 3 "
                    "(count, height, width); check that this is the images file "
                    "and not the labels file",
                    images_path, image_rank);
    }
    if (image_dims[1] == 0 || image_dims[2] == 0) {
        free(images);
        return fail(error,
                    "%s: images are %lld x %lld pixels, but an image needs at "
                    "least one pixel; the header is likely corrupt",
                    images_path, (long long)image_dims[1], (long long)image_dims[2]);
    }

    if (!idx_read(labels_path, &label_type, &label_rank, label_dims, &labels, error)) {
        free(images);
        return false;
    }
    if (label_rank != 1) {
        free(images);
        free(labels);
        return fail(error,
                    "%s: labels file has rank %d, but a labels file has rank 1 "
                    "(count); check that this is the labels file and not the "
                    "images file",
                    labels_path, label_rank);
    }
    if (image_dims[0] != label_dims[0]) {
        free(images);
        free(labels);
        return fail(error,
                    "%s has %lld images but %s has %lld labels; use the labels "
                    "file that belongs to these images",
                    images_path, (long long)image_dims[0], labels_path,
                    (long long)label_dims[0]);
    }
    if (image_dims[0] == 0) {
        free(images);
        free(labels);
        return fail(error,
                    "%s: contains no samples; a dataset needs at least one image "
                    "and label",
                    images_path);
    }

    int64_t count = image_dims[0];
    ds->path = xstrdup(images_path);
    ds->count = count;
    ds->rank = 3;
    ds->sample_dims[0] = 1;
    ds->sample_dims[1] = image_dims[1];
    ds->sample_dims[2] = image_dims[2];
    ds->sample_size = image_dims[1] * image_dims[2];
    ds->images = images;
    ds->labels = xmalloc(size_mul((size_t)count, sizeof(int32_t)));
    int max_label = 0;
    /* Labels are unsigned bytes, so every one is a valid class index in
     * [0, 256). */
    for (int64_t i = 0; i < count; i++) {
        ds->labels[i] = labels[i];
        if (labels[i] > max_label)
            max_label = labels[i];
    }
    ds->num_classes = max_label + 1;
    free(labels);
    return true;
}

static const char *const idx_file_names[4] = {
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
};

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Stores in *path the file `name` of `dir`, or `name`.gz when only that
 * exists. The uncompressed file wins when both exist, because someone
 * who decompressed a file may have repaired or replaced it, and it reads
 * faster. */
static bool find_idx_file(const char *dir, const char *name, char **path,
                          char **error)
{
    size_t dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir_len--;
    char *plain = xasprintf("%.*s/%s", (int)dir_len, dir, name);
    char *gz = xasprintf("%s.gz", plain);

    if (file_exists(plain)) {
        *path = plain;
        free(gz);
        return true;
    }
    if (file_exists(gz)) {
        *path = gz;
        free(plain);
        return true;
    }

    if (strstr(dir, "/usr/share/datasets/fashion-mnist"))
        fail(error,
             "%s: file not found (also tried %s); install the Debian package "
             "dataset-fashion-mnist (make deps) or point idx(...) at a "
             "directory with the four IDX files",
             gz, plain);
    else
        fail(error,
             "%s: file not found (also tried %s); point idx(...) at a directory with "
             "the four IDX files train-images-idx3-ubyte, "
             "train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
             "t10k-labels-idx1-ubyte, each optionally gzip-compressed with "
             "the suffix .gz",
             gz, plain);
    free(plain);
    free(gz);
    return false;
}

/* Stores the mean and the population standard deviation of the pixel
 * values / 255 of ds, computed in double from a histogram of the bytes.
 * The variance sums squared deviations from the mean, which is exact
 * enough that images of one constant value get a std of exactly 0. */
static void image_statistics(const Dataset *ds, double *mean, double *std)
{
    uint64_t histogram[256] = {0};
    size_t total = size_mul((size_t)ds->count, (size_t)ds->sample_size);
    for (size_t i = 0; i < total; i++)
        histogram[ds->images[i]]++;

    double sum = 0;
    int values_used = 0;
    for (int b = 0; b < 256; b++) {
        sum += (double)histogram[b] * (b / 255.0);
        values_used += histogram[b] > 0;
    }
    double m = sum / (double)total;
    double squares = 0;
    for (int b = 0; b < 256; b++) {
        double deviation = b / 255.0 - m;
        squares += (double)histogram[b] * deviation * deviation;
    }
    *mean = m;
    *std = values_used > 1 ? sqrt(squares / (double)total) : 0;
}

bool data_load_idx_dir(DataSplits *splits, const char *dir,
                       Normalize normalize, char **error)
{
    memset(splits, 0, sizeof *splits);
    char *paths[4] = {NULL, NULL, NULL, NULL};
    bool ok = false;

    for (int i = 0; i < 4; i++)
        if (!find_idx_file(dir, idx_file_names[i], &paths[i], error))
            goto done;
    if (!dataset_load_idx(&splits->train, paths[0], paths[1], error))
        goto done;
    if (!dataset_load_idx(&splits->test, paths[2], paths[3], error))
        goto done;

    const Dataset *train = &splits->train, *test = &splits->test;
    if (train->sample_dims[1] != test->sample_dims[1] ||
        train->sample_dims[2] != test->sample_dims[2]) {
        fail(error,
             "%s has %lld x %lld images but %s has %lld x %lld images; both "
             "splits must have the same image size",
             train->path, (long long)train->sample_dims[1],
             (long long)train->sample_dims[2], test->path,
             (long long)test->sample_dims[1], (long long)test->sample_dims[2]);
        goto done;
    }

    /* Both splits get the class count of the whole source, so a model
     * sized from either one accepts every label of the other. */
    int classes = train->num_classes > test->num_classes ? train->num_classes
                                                         : test->num_classes;
    splits->train.num_classes = classes;
    splits->test.num_classes = classes;

    double mean, std;
    image_statistics(train, &mean, &std);
    if (normalize == NORMALIZE_STANDARD && std == 0) {
        fail(error,
             "%s: every pixel of the training images has the value %.0f, so "
             "standard normalisation would divide by a standard deviation of 0; "
             "use unit normalisation",
             train->path, mean * 255);
        goto done;
    }
    splits->normalize = normalize;
    splits->mean = (float)mean;
    splits->std = (float)std;
    ok = true;

done:
    for (int i = 0; i < 4; i++)
        free(paths[i]);
    if (!ok)
        data_splits_free(splits);
    return ok;
}

void dataset_free(Dataset *ds)
{
    free(ds->path);
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

void data_splits_free(DataSplits *splits)
{
    dataset_free(&splits->train);
    dataset_free(&splits->test);
}

void dataset_truncate(Dataset *ds, int64_t count)
{
    BOCB_ASSERT(count >= 0);
    /* num_classes stays as loaded, so a model's output size does not
     * depend on how many samples a run keeps. */
    if (count < ds->count)
        ds->count = count;
}

void data_gather(const DataSplits *splits, const Dataset *ds,
                 const int64_t *indices, int64_t n, float *x, int32_t *y)
{
    BOCB_ASSERT(n >= 0);
    /* One float per byte value, computed in double and rounded once. */
    float table[256];
    for (int b = 0; b < 256; b++) {
        double v;
        switch (splits->normalize) {
        case NORMALIZE_NONE:
            v = b;
            break;
        case NORMALIZE_UNIT:
            v = b / 255.0;
            break;
        case NORMALIZE_STANDARD:
            BOCB_ASSERT(splits->std > 0);
            v = (b / 255.0 - (double)splits->mean) / (double)splits->std;
            break;
        default:
            BOCB_UNREACHABLE("normalisation mode");
        }
        table[b] = (float)v;
    }

    const int64_t size = ds->sample_size;
    for (int64_t i = 0; i < n; i++) {
        int64_t sample = indices[i];
        BOCB_ASSERT(sample >= 0 && sample < ds->count);
        const uint8_t *src = ds->images + sample * size;
        float *dst = x + i * size;
        for (int64_t j = 0; j < size; j++)
            dst[j] = table[src[j]];
        y[i] = ds->labels[sample];
    }
}
