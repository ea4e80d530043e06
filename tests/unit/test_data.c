/* Tests of IDX reading and dataset loading on files written to a temporary
 * directory, plain and gzip-compressed, and on Fashion-MNIST when it is
 * installed. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

/* Returns `data` compressed as one gzip member. */
static Bytes gzip_member(const void *data, size_t len)
{
    z_stream s;
    memset(&s, 0, sizeof s);
    cr_assert_eq(deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
                              Z_DEFAULT_STRATEGY),
                 Z_OK);
    uLong bound = deflateBound(&s, (uLong)len);
    Bytes b = {malloc(bound), 0};
    s.next_in = (Bytef *)data;
    s.avail_in = (uInt)len;
    s.next_out = b.data;
    s.avail_out = (uInt)bound;
    cr_assert_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
    b.len = s.total_out;
    deflateEnd(&s);
    return b;
}

/* Appends `data` to b as one gzip member. With `bad_crc` set, the CRC-32
 * in the member's trailer is wrong. */
static void append_gzip_member(Bytes *b, const void *data, size_t len, bool bad_crc)
{
    Bytes member = gzip_member(data, len);
    if (bad_crc)
        member.data[member.len - 8] ^= 0xFF;
    append(b, member.data, member.len);
    free(member.data);
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

/* Opening a FIFO for reading waits for a writer, so a reader that opened
 * it would block here until the timeout. */
Test(data, fifo_instead_of_file, .timeout = 10)
{
    char path[128];
    snprintf(path, sizeof path, "%s/pipe", temp_dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    expect_idx_error(path, "not a regular file");
    expect_idx_error(path, "named pipe (FIFO)");
}

Test(data, symlink_to_fifo, .timeout = 10)
{
    char fifo[128], link[128];
    snprintf(fifo, sizeof fifo, "%s/pipe", temp_dir);
    snprintf(link, sizeof link, "%s/link-to-pipe", temp_dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(symlink(fifo, link), 0);
    expect_idx_error(link, "not a regular file");
}

Test(data, device_instead_of_file, .timeout = 10)
{
    expect_idx_error("/dev/null", "not a regular file but a character device");
}

Test(data, socket_instead_of_file, .timeout = 10)
{
    struct sockaddr_un address;
    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    snprintf(address.sun_path, sizeof address.sun_path, "%s/socket", temp_dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&address, sizeof address), 0);
    expect_idx_error(address.sun_path, "not a regular file but a socket");
    close(fd);
}

Test(data, symlink_to_file)
{
    char *images, *labels;
    write_small_pair("target", false, &images, &labels);
    char link[128];
    snprintf(link, sizeof link, "%s/link-to-images", temp_dir);
    cr_assert_eq(symlink(images, link), 0);
    int type, rank;
    int64_t dims[4];
    uint8_t *data = NULL;
    char *error = NULL;
    cr_assert(idx_read(link, &type, &rank, dims, &data, &error), "%s", error);
    cr_expect_eq(memcmp(data, small_images, 24), 0);
    free(data);
    free(images);
    free(labels);
}

Test(data, tiny_files)
{
    Bytes one_byte = {NULL, 0};
    append(&one_byte, "\x00", 1);
    char *path = write_file("one-byte", one_byte, false);
    expect_idx_error(path, "needs at least 4 bytes, file has 1");
    free(path);
    free(one_byte.data);

    /* Only the gzip magic bytes: a gzip stream that ends at once. */
    Bytes magic = {NULL, 0};
    append(&magic, "\x1f\x8b", 2);
    path = write_file("magic-only.gz", magic, false);
    expect_idx_error(path, "needs at least 4 bytes, file has 0");
    expect_idx_error(path, "the gzip stream also ends early");
    free(path);
    free(magic.data);
}

/* ---- gzip streams --------------------------------------------------------- */

Test(data, gzip_bad_crc)
{
    fill_small_images();
    Bytes idx = idx_bytes(0x08, 3, small_image_dims, small_images, 24);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, idx.data, idx.len, true);
    char *path = write_file("bad-crc.gz", gz, false);
    expect_idx_error(path, "gzip data is corrupt after all 24 bytes of IDX data");
    expect_idx_error(path, "incorrect data check");
    free(path);

    /* The length in the trailer (ISIZE) is checked as well. */
    gz.data[gz.len - 8] ^= 0xFF;
    gz.data[gz.len - 1] ^= 0xFF;
    path = write_file("bad-length.gz", gz, false);
    expect_idx_error(path, "gzip data is corrupt after all 24 bytes of IDX data");
    expect_idx_error(path, "incorrect length check");
    free(path);
    free(gz.data);
    free(idx.data);
}

/* A CRC-32 error at the end of a large member is found after all of its
 * data was decompressed, so the position must count that data. A reader
 * built on gzread (zlib 1.2.13) reported "after 0 bytes" for the 512 KiB
 * file, because gzread drops the output of a call that ends in an error. */
Test(data, gzip_bad_crc_large)
{
    const uint32_t cases[2][3] = {{2, 512, 512}, {3, 1024, 1024}};
    for (int c = 0; c < 2; c++) {
        size_t size = (size_t)cases[c][0] * cases[c][1] * cases[c][2];
        uint8_t *pixels = malloc(size);
        for (size_t i = 0; i < size; i++)
            pixels[i] = (uint8_t)(i * 7 + i / 13);
        Bytes idx = idx_bytes(0x08, 3, cases[c], pixels, size);
        Bytes gz = {NULL, 0};
        append_gzip_member(&gz, idx.data, idx.len, true);
        char *path = write_file("bad-crc-large.gz", gz, false);
        char expected[128];
        snprintf(expected, sizeof expected,
                 "gzip data is corrupt after all %zu bytes of IDX data", size);
        expect_idx_error(path, expected);
        expect_idx_error(path, "incorrect data check");
        free(path);
        free(gz.data);
        free(idx.data);
        free(pixels);
    }
}

Test(data, gzip_bad_crc_mid_data)
{
    /* The first member contains the header and 8 bytes of data and has a
     * wrong CRC-32. The second contains the other 16 bytes. */
    fill_small_images();
    Bytes idx = idx_bytes(0x08, 3, small_image_dims, small_images, 24);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, idx.data, 16 + 8, true);
    append_gzip_member(&gz, idx.data + 24, 16, false);
    char *path = write_file("bad-crc-mid.gz", gz, false);
    expect_idx_error(path, "gzip data is corrupt after 8 of the 24 bytes of IDX data");
    expect_idx_error(path, "incorrect data check");
    free(path);
    free(gz.data);
    free(idx.data);
}

Test(data, gzip_bad_crc_in_header)
{
    fill_small_images();
    Bytes idx = idx_bytes(0x08, 3, small_image_dims, small_images, 24);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, idx.data, 10, true);
    append_gzip_member(&gz, idx.data + 10, idx.len - 10, false);
    char *path = write_file("bad-crc-header.gz", gz, false);
    expect_idx_error(path, "gzip data is corrupt within the IDX header, after 10 "
                           "decompressed bytes");
    expect_idx_error(path, "incorrect data check");
    free(path);
    free(gz.data);
    free(idx.data);
}

Test(data, gzip_members_concatenated)
{
    /* Three members, split inside the header and inside the data, then
     * bytes that do not start another member, which gzip also ignores. */
    fill_small_images();
    Bytes idx = idx_bytes(0x08, 3, small_image_dims, small_images, 24);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, idx.data, 6, false);
    append_gzip_member(&gz, idx.data + 6, 20, false);
    append_gzip_member(&gz, idx.data + 26, idx.len - 26, false);
    append(&gz, "\0\0\0\0", 4);
    char *path = write_file("members.gz", gz, false);

    int type, rank;
    int64_t dims[4];
    uint8_t *data = NULL;
    char *error = NULL;
    cr_assert(idx_read(path, &type, &rank, dims, &data, &error), "%s", error);
    cr_expect_eq(rank, 3);
    cr_expect_eq(dims[0], 3);
    cr_expect_eq(memcmp(data, small_images, 24), 0);
    free(data);
    free(path);
    free(gz.data);
    free(idx.data);
}

Test(data, gzip_missing_trailer)
{
    fill_small_images();
    Bytes idx = idx_bytes(0x08, 3, small_image_dims, small_images, 24);
    Bytes gz = gzip_member(idx.data, idx.len);
    gz.len -= 8;
    char *path = write_file("no-trailer.gz", gz, false);
    char reason[128];
    snprintf(reason, sizeof reason,
             "the gzip stream is cut short at offset %zu of the file, after all 24 bytes "
             "of IDX data", gz.len);
    expect_idx_error(path, reason);
    free(path);
    free(gz.data);
    free(idx.data);
}

/* Returns the virtual memory size of this process in bytes, or -1 where
 * /proc/self/status has no VmSize line. */
static long long virtual_memory_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmSize:", 7) == 0)
            kib = strtoll(line + 7, NULL, 10);
    fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

/* Expects idx_read on `path` to fail with `reason` while the address space
 * of the process may grow by at most `limit_mib` MiB. With a larger
 * growth, an allocation fails and the message differs. */
static void expect_idx_error_within(const char *path, const char *reason, int limit_mib)
{
    long long used = virtual_memory_bytes();
    if (used < 0)
        cr_skip_test("/proc/self/status does not report VmSize");
    struct rlimit old_limit, limit;
    cr_assert_eq(getrlimit(RLIMIT_AS, &old_limit), 0);
    limit = old_limit;
    limit.rlim_cur = (rlim_t)used + ((rlim_t)limit_mib << 20);
    cr_assert_eq(setrlimit(RLIMIT_AS, &limit), 0);

    int type, rank;
    int64_t dims[4];
    uint8_t *data = NULL;
    char *error = NULL;
    bool ok = idx_read(path, &type, &rank, dims, &data, &error);
    cr_assert_eq(setrlimit(RLIMIT_AS, &old_limit), 0);
    cr_expect_not(ok, "%s was read, expected: %s", path, reason);
    expect_contains(error, path);
    expect_contains(error, reason);
    free(error);
}

/* Returns `count` gzip members of 1 MiB of zeros each, which zlib
 * compresses to about 1 KiB each. */
static Bytes zero_members(int count)
{
    uint8_t *zeros = calloc(1, 1 << 20);
    Bytes member = gzip_member(zeros, 1 << 20);
    Bytes members = {NULL, 0};
    for (int i = 0; i < count; i++)
        append(&members, member.data, member.len);
    free(member.data);
    free(zeros);
    return members;
}

Test(data, gzip_huge_promise)
{
    /* The header promises 16 GiB, the largest size accepted, and the file
     * decompresses to 64 MiB. */
    const uint32_t dims[2] = {1u << 17, 1u << 17};
    Bytes header = idx_bytes(0x08, 2, dims, NULL, 0);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, header.data, header.len, false);
    Bytes zeros = zero_members(64);
    append(&gz, zeros.data, zeros.len);
    char *path = write_file("huge-promise.gz", gz, false);
    /* The buffer doubles up to 128 MiB for 64 MiB of data; while it grows
     * from 64 to 128 MiB both exist. The bound leaves room for that and for
     * a malloc arena, far below the 16 GiB the header promises. */
    expect_idx_error_within(path, "truncated: header promises 17179869184 bytes of data, "
                                  "file has 67108864",
                            384);
    free(path);
    free(zeros.data);
    free(gz.data);
    free(header.data);
}

Test(data, gzip_bomb_after_data)
{
    /* The header promises 1 MiB, and 512 MiB of zeros follow the data. */
    const uint32_t dims[1] = {1u << 20};
    Bytes header = idx_bytes(0x08, 1, dims, NULL, 0);
    Bytes gz = {NULL, 0};
    append_gzip_member(&gz, header.data, header.len, false);
    Bytes zeros = zero_members(1 + 512);
    append(&gz, zeros.data, zeros.len);
    char *path = write_file("bomb.gz", gz, false);
    expect_idx_error_within(path, "trailing data: header promises 1048576 bytes of data, "
                                  "file has more than 1048576 bytes after them",
                            64);
    free(path);
    free(zeros.data);
    free(gz.data);
    free(header.data);
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

Test(data, load_dir_empty_path)
{
    /* An empty path must fail before any file is looked up, so the message
     * names no file in the root directory. */
    DataSplits splits;
    char *error = NULL;
    cr_expect_not(data_load_idx_dir(&splits, "", NORMALIZE_UNIT, &error));
    expect_contains(error, "the data directory path is empty");
    cr_expect_null(strstr(error ? error : "", "/train-images-idx3-ubyte"));
    free(error);
}

Test(data, load_dir_fifo, .timeout = 10)
{
    write_standard_dir(0x0);
    char path[128];
    snprintf(path, sizeof path, "%s/%s", temp_dir, "t10k-images-idx3-ubyte");
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(mkfifo(path, 0600), 0);
    DataSplits splits;
    char *error = NULL;
    cr_expect_not(data_load_idx_dir(&splits, temp_dir, NORMALIZE_UNIT, &error));
    expect_contains(error, path);
    expect_contains(error, "not a regular file");
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
