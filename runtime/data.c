/* data.c - IDX file reading, dataset loading and batch conversion.
 *
 * An IDX file is a 4-byte magic number (0x00 0x00 TYPE RANK), RANK
 * big-endian u32 dimensions, and then the elements in row-major order.
 * A file that starts with the gzip magic bytes 1f 8b is decompressed with
 * zlib's inflate, and any other file is read as it is.
 */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base.h"

enum {
    IDX_TYPE_U8 = 0x08,
    IDX_MAX_RANK = 4,
    /* Bytes of the file (compressed, for gzip) read per read() call. */
    IDX_INPUT_BUFFER = 1 << 17,
    /* Decompressed bytes are read into a buffer that starts at this size
     * and doubles, so a header that promises far more data than the file
     * has does not allocate the promised amount up front. */
    IDX_INITIAL_BUFFER = 1 << 20,
    /* Maximum number of bytes after the promised data that are counted for
     * the "trailing data" message. Deflate compresses zeros about 1000:1,
     * so counting every trailing byte of a small gzip file could take far
     * longer than reading its data. */
    IDX_MAX_TRAILING_COUNT = 1 << 20,
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

/* ---- Reading plain and gzip-compressed files ------------------------------ */

/* An open IDX file and the state of reading it. */
typedef struct IdxFile {
    const char *path;
    int fd;
    bool gzipped;
    bool inflate_started; /* inflateInit2 succeeded, so inflateEnd is due */
    /* For both kinds of file, next_in and avail_in mark the unread part
     * of `input`. The other fields are used only for gzip. */
    z_stream stream;
    uint8_t *input;       /* IDX_INPUT_BUFFER bytes */
    bool input_ended;     /* read() returned 0 */
    bool member_ended;    /* the current gzip member ended with a valid trailer */
    bool stream_truncated; /* the file ended inside a gzip member */
    uint64_t position;    /* bytes of IDX data (decompressed) produced so far */
    uint64_t bytes_read;  /* bytes read from the file so far */
    /* The cause of the last failed read: an errno value, or else a zlib
     * message. */
    int read_errno;
    const char *zlib_message;
} IdxFile;

/* Returns the kind of a file that is neither regular nor a directory. */
static const char *special_file_kind(mode_t mode)
{
    if (S_ISFIFO(mode))
        return "a named pipe (FIFO)";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "a special file";
}

/* Fails unless `mode` is that of a regular file. Reading a FIFO or a
 * device can block forever or never end, so only regular files are read. */
static bool check_regular_file(const char *path, mode_t mode, char **error)
{
    if (S_ISREG(mode))
        return true;
    if (S_ISDIR(mode))
        return fail(error, "%s: is a directory, but an IDX file was expected",
                    path);
    return fail(error,
                "%s: not a regular file but %s; bocb reads IDX data only from "
                "regular files, so save the data to a file and use its path",
                path, special_file_kind(mode));
}

/* Moves the unread input to the start of the buffer and reads more after
 * it. Returns false on a read error, which it stores in f->read_errno. */
static bool fill_input(IdxFile *f)
{
    z_stream *s = &f->stream;
    if (s->avail_in > 0 && s->next_in != f->input)
        memmove(f->input, s->next_in, s->avail_in);
    s->next_in = f->input;

    ssize_t n;
    do
        n = read(f->fd, f->input + s->avail_in, IDX_INPUT_BUFFER - s->avail_in);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        f->read_errno = errno;
        return false;
    }
    if (n == 0)
        f->input_ended = true;
    s->avail_in += (uInt)n;
    f->bytes_read += (uint64_t)n;
    return true;
}

static void idx_file_close(IdxFile *f)
{
    if (f->inflate_started)
        inflateEnd(&f->stream);
    if (f->fd >= 0)
        close(f->fd);
    free(f->input);
    f->fd = -1;
    f->input = NULL;
    f->inflate_started = false;
}

/* Opens the regular file `path` and detects whether it is gzip-compressed.
 * The file type is checked with stat() before opening, so that opening a
 * FIFO does not wait for a writer. O_NONBLOCK and a second check with
 * fstat() cover a path that is replaced in between. */
static bool idx_file_open(IdxFile *f, const char *path, char **error)
{
    memset(f, 0, sizeof *f);
    f->path = path;
    f->fd = -1;

    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT)
            return fail(error, "%s: file not found; check the path", path);
        return fail(error, "%s: cannot read the file: %s", path, strerror(errno));
    }
    if (!check_regular_file(path, st.st_mode, error))
        return false;

    f->fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (f->fd < 0)
        return fail(error, "%s: cannot open the file: %s", path, strerror(errno));
    if (fstat(f->fd, &st) != 0) {
        int err = errno;
        idx_file_close(f);
        return fail(error, "%s: cannot read the file: %s", path, strerror(err));
    }
    if (!check_regular_file(path, st.st_mode, error)) {
        idx_file_close(f);
        return false;
    }
    /* O_NONBLOCK was only for the open() call. */
    int flags = fcntl(f->fd, F_GETFL);
    if (flags != -1)
        fcntl(f->fd, F_SETFL, flags & ~O_NONBLOCK);

    f->input = xmalloc(IDX_INPUT_BUFFER);
    f->stream.next_in = f->input;
    while (f->stream.avail_in < 2 && !f->input_ended) {
        if (!fill_input(f)) {
            idx_file_close(f);
            return fail(error, "%s: cannot read the file: %s", path,
                        strerror(f->read_errno));
        }
    }
    f->gzipped = f->stream.avail_in >= 2 && f->input[0] == 0x1f && f->input[1] == 0x8b;
    if (f->gzipped) {
        /* windowBits 15 + 16 selects gzip decoding with a window of up to
         * 32 KiB, the maximum that deflate uses. */
        int ret = inflateInit2(&f->stream, 15 + 16);
        if (ret != Z_OK) {
            idx_file_close(f);
            return fail(error, "%s: cannot start gzip decompression (zlib: %s)",
                        path, zError(ret));
        }
        f->inflate_started = true;
    }
    return true;
}

/* Copies up to `len` bytes of a plain file into buf. */
static int64_t read_plain(IdxFile *f, uint8_t *buf, uint64_t len)
{
    z_stream *s = &f->stream;
    uint64_t got = 0;
    while (got < len) {
        if (s->avail_in == 0) {
            if (f->input_ended)
                break;
            if (!fill_input(f))
                return -1;
            continue;
        }
        uint64_t n = len - got < s->avail_in ? len - got : s->avail_in;
        memcpy(buf + got, s->next_in, n);
        s->next_in += n;
        s->avail_in -= (uInt)n;
        got += n;
        f->position += n;
    }
    return (int64_t)got;
}

/* Decompresses up to `len` bytes of a gzip file into buf. A file may
 * contain several gzip members one after another, as `cat a.gz b.gz`
 * produces, and their data is read as one. Bytes after the last member
 * that do not start another member are ignored, as zlib 1.2.13's gzread
 * does. gzip 1.12 ignores them too, with a warning unless they are zeros. */
static int64_t read_gzip(IdxFile *f, uint8_t *buf, uint64_t len)
{
    z_stream *s = &f->stream;
    uint64_t got = 0;
    while (got < len) {
        if (f->member_ended) {
            if (s->avail_in < 2 && !f->input_ended) {
                if (!fill_input(f))
                    return -1;
                continue;
            }
            if (s->avail_in < 2 || s->next_in[0] != 0x1f || s->next_in[1] != 0x8b)
                break;
            inflateReset(s);
            f->member_ended = false;
        }
        if (s->avail_in == 0) {
            if (f->input_ended) {
                f->stream_truncated = true;
                break;
            }
            if (!fill_input(f))
                return -1;
            continue;
        }

        uInt want = len - got < UINT_MAX ? (uInt)(len - got) : UINT_MAX;
        s->next_out = buf + got;
        s->avail_out = want;
        int ret = inflate(s, Z_NO_FLUSH);
        uint64_t produced = want - s->avail_out;
        got += produced;
        f->position += produced;
        if (ret == Z_STREAM_END) {
            f->member_ended = true;
        } else if (ret == Z_BUF_ERROR && s->avail_in == 0) {
            /* inflate needs more input, which the next pass reads. */
        } else if (ret != Z_OK) {
            f->zlib_message = s->msg ? s->msg : zError(ret);
            return -1;
        }
    }
    return (int64_t)got;
}

/* Reads up to `len` bytes of IDX data, stopping early only at the end of
 * the data. Returns the count read, or -1 on an error, which is stored in
 * f->read_errno or f->zlib_message. On an error f->position still counts
 * every byte that was decompressed before it. */
static int64_t idx_file_read(IdxFile *f, uint8_t *buf, uint64_t len)
{
    return f->gzipped ? read_gzip(f, buf, len) : read_plain(f, buf, len);
}

/* Returns the offset in the file of the first byte not yet consumed: for
 * a gzip file, where the compressed data that zlib rejected is. */
static uint64_t consumed_offset(const IdxFile *f)
{
    return f->bytes_read - f->stream.avail_in;
}

/* Fails with the error of the last read of f and the position at which
 * it happened. `header_bytes` and `data_bytes` are the sizes of the header
 * and of the data, as far as they are known. */
static bool fail_read(const IdxFile *f, uint64_t header_bytes, uint64_t data_bytes,
                      char **error)
{
    if (f->read_errno)
        return fail(error, "%s: cannot read the file: %s", f->path,
                    strerror(f->read_errno));
    if (f->position < header_bytes)
        return fail(error,
                    "%s: gzip data is corrupt within the IDX header, after %llu "
                    "decompressed bytes (zlib: %s, before offset %llu of the file); "
                    "download the file again",
                    f->path, (unsigned long long)f->position, f->zlib_message,
                    (unsigned long long)consumed_offset(f));
    uint64_t data_read = f->position - header_bytes;
    if (data_read < data_bytes)
        return fail(error,
                    "%s: gzip data is corrupt after %llu of the %llu bytes of IDX "
                    "data (zlib: %s, before offset %llu of the file); download the "
                    "file again",
                    f->path, (unsigned long long)data_read,
                    (unsigned long long)data_bytes, f->zlib_message,
                    (unsigned long long)consumed_offset(f));
    return fail(error,
                "%s: gzip data is corrupt after all %llu bytes of IDX data "
                "(zlib: %s, before offset %llu of the file); download the file again",
                f->path, (unsigned long long)data_bytes, f->zlib_message,
                (unsigned long long)consumed_offset(f));
}

/* ---- IDX headers and data ------------------------------------------------- */

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
                    "%s: unsupported IDX element type 0x%02x (%s) at offset 2; bocb reads "
                    "only type 0x08 (unsigned byte), so convert the data to bytes",
                    path, magic[2], idx_type_name(magic[2]));
    if (magic[3] < 1 || magic[3] > IDX_MAX_RANK)
        return fail(error,
                    "%s: unsupported IDX rank %d at offset 3; bocb reads ranks 1 to %d, so "
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
                "%s: header dimensions %s (from offset 4) give more than the 16 GiB that bocb "
                "accepts for an IDX file, so the header is likely corrupt; "
                "download or re-create the file",
                path, shape);
}

/* Reads the data that follows the header: exactly `bytes` bytes, with
 * nothing after them. The buffer grows only as data arrives and never
 * beyond `bytes`, so memory stays within the promised size however much
 * a file decompresses to. */
static bool read_idx_data(IdxFile *f, uint64_t header_bytes, uint64_t bytes,
                          uint8_t **data, char **error)
{
    const char *path = f->path;
    uint64_t cap = bytes < IDX_INITIAL_BUFFER ? bytes : IDX_INITIAL_BUFFER;
    uint8_t *buf = xmalloc((size_t)cap);
    uint64_t got = 0;

    while (got < bytes) {
        if (got == cap) {
            uint64_t new_cap = cap * 2 < bytes ? cap * 2 : bytes;
            uint8_t *grown = new_cap <= SIZE_MAX ? realloc(buf, (size_t)new_cap) : NULL;
            if (!grown) {
                free(buf);
                return fail(error,
                            "%s: out of memory: allocating %llu bytes for the %llu "
                            "bytes of data that the header promises failed after "
                            "%llu bytes were read; free memory or check the file",
                            path, (unsigned long long)new_cap,
                            (unsigned long long)bytes, (unsigned long long)got);
            }
            buf = grown;
            cap = new_cap;
        }
        int64_t n = idx_file_read(f, buf + got, cap - got);
        if (n < 0) {
            free(buf);
            return fail_read(f, header_bytes, bytes, error);
        }
        got += (uint64_t)n;
        if (got < cap)
            break;
    }
    if (got < bytes) {
        free(buf);
        return fail(error,
                    "%s: truncated: header promises %llu bytes of data, file has "
                    "%llu%s, so the %sdata ends at offset %llu; download the file again",
                    path, (unsigned long long)bytes, (unsigned long long)got,
                    f->stream_truncated ? " (the gzip stream also ends early)" : "",
                    f->gzipped ? "decompressed " : "",
                    (unsigned long long)(header_bytes + got));
    }

    /* Count what follows the promised data, up to a limit. Reading on also
     * reaches the end of a gzip stream, where zlib checks the CRC-32 and
     * the length of the data. */
    uint8_t extra_buf[4096];
    uint64_t extra = 0;
    bool read_failed = false;
    while (extra <= IDX_MAX_TRAILING_COUNT) {
        int64_t n = idx_file_read(f, extra_buf, sizeof extra_buf);
        if (n < 0)
            read_failed = true;
        if (n <= 0)
            break;
        extra += (uint64_t)n;
    }
    if (extra > IDX_MAX_TRAILING_COUNT) {
        free(buf);
        return fail(error,
                    "%s: trailing data: header promises %llu bytes of data, file "
                    "has more than %llu bytes after them; the header does not "
                    "match the data, so download or re-create the file",
                    path, (unsigned long long)bytes,
                    (unsigned long long)IDX_MAX_TRAILING_COUNT);
    }
    if (extra > 0) {
        free(buf);
        return fail(error,
                    "%s: trailing data: header promises %llu bytes of data, file "
                    "has %llu more after them, from %soffset %llu; the header does not "
                    "match the data, so download or re-create the file",
                    path, (unsigned long long)bytes, (unsigned long long)extra,
                    f->gzipped ? "decompressed " : "",
                    (unsigned long long)(header_bytes + bytes));
    }
    if (read_failed) {
        free(buf);
        return fail_read(f, header_bytes, bytes, error);
    }
    if (f->stream_truncated) {
        free(buf);
        return fail(error,
                    "%s: the gzip stream is cut short at offset %llu of the file, "
                    "after all %llu bytes of IDX data, so the data cannot be "
                    "checked against its CRC-32; download the file again",
                    path, (unsigned long long)f->bytes_read, (unsigned long long)bytes);
    }
    *data = buf;
    return true;
}

bool idx_read(const char *path, int *type_code, int *rank, int64_t dims[4],
              uint8_t **data, char **error)
{
    BOCB_ASSERT(error != NULL);
    IdxFile f;
    if (!idx_file_open(&f, path, error))
        return false;

    /* The header: the magic number, then `rank` big-endian dimensions. */
    uint8_t header[4 + 4 * IDX_MAX_RANK];
    bool ok = false;
    int64_t got = idx_file_read(&f, header, 4);
    if (got < 0) {
        fail_read(&f, 4, 0, error);
        goto done;
    }
    if (got < 4) {
        fail(error,
             "%s: truncated: the IDX header needs at least 4 bytes, file has "
             "%lld%s; download the file again",
             path, (long long)got,
             f.stream_truncated ? " (the gzip stream also ends early)" : "");
        goto done;
    }
    if (!check_idx_header(path, header, f.gzipped, error))
        goto done;

    int file_rank = header[3];
    int64_t header_bytes = 4 + 4 * (int64_t)file_rank;
    got = idx_file_read(&f, header + 4, (uint64_t)(header_bytes - 4));
    if (got < 0) {
        fail_read(&f, (uint64_t)header_bytes, 0, error);
        goto done;
    }
    if (got < header_bytes - 4) {
        fail(error,
             "%s: truncated: the IDX header of rank %d needs %lld bytes, "
             "file has %lld%s; download the file again",
             path, file_rank, (long long)header_bytes, (long long)(4 + got),
             f.stream_truncated ? " (the gzip stream also ends early)" : "");
        goto done;
    }

    int64_t file_dims[IDX_MAX_RANK] = {0};
    for (int i = 0; i < file_rank; i++)
        file_dims[i] = read_be32(header + 4 + 4 * i);
    uint64_t bytes = 0;
    if (!idx_data_bytes(path, file_rank, file_dims, &bytes, error))
        goto done;

    uint8_t *buf;
    if (!read_idx_data(&f, (uint64_t)header_bytes, bytes, &buf, error))
        goto done;

    *type_code = header[2];
    *rank = file_rank;
    for (int i = 0; i < IDX_MAX_RANK; i++)
        dims[i] = i < file_rank ? file_dims[i] : 1;
    *data = buf;
    ok = true;

done:
    idx_file_close(&f);
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
                    "%s: images file has rank %d (the byte at offset 3), but an images file has rank 3 "
                    "(count, height, width); check that this is the images file "
                    "and not the labels file",
                    images_path, image_rank);
    }
    if (image_dims[1] == 0 || image_dims[2] == 0) {
        free(images);
        return fail(error,
                    "%s: images are %lld x %lld pixels (the dimensions at offsets 8 "
                    "and 12), but an image needs at least one pixel; the header is "
                    "likely corrupt",
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
                    "%s: labels file has rank %d (the byte at offset 3), but a labels file has rank 1 "
                    "(count); check that this is the labels file and not the "
                    "images file",
                    labels_path, label_rank);
    }
    if (image_dims[0] != label_dims[0]) {
        free(images);
        free(labels);
        return fail(error,
                    "%s has %lld images but %s has %lld labels (the counts at offset "
                    "4 of the two headers); use the labels file that belongs to "
                    "these images",
                    images_path, (long long)image_dims[0], labels_path,
                    (long long)label_dims[0]);
    }
    if (image_dims[0] == 0) {
        free(images);
        free(labels);
        return fail(error,
                    "%s: contains no samples (the count at offset 4 is 0); a dataset "
                    "needs at least one image "
                    "and label",
                    images_path);
    }

    int64_t count = image_dims[0];
    ds->path = xstrdup(images_path);
    ds->labels_path = xstrdup(labels_path);
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

void dataset_image_statistics(const Dataset *ds, double *mean, double *std)
{
    image_statistics(ds, mean, std);
}

bool data_load_idx_dir(DataSplits *splits, const char *dir,
                       Normalize normalize, char **error)
{
    memset(splits, 0, sizeof *splits);
    /* An empty path would make the file paths "/train-images-idx3-ubyte"
     * and so on, which would search the root directory. */
    if (dir[0] == '\0')
        return fail(error,
                    "the data directory path is empty; point idx(...) at the "
                    "directory with the four IDX files");

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

/* The size of the header of a labels file: the magic number and one
 * dimension, so label i is at offset IDX_LABELS_HEADER + i. */
enum { IDX_LABELS_HEADER = 8 };

static bool check_labels_below(Dataset *ds, int classes, char **error)
{
    for (int64_t i = 0; i < ds->count; i++)
        if (ds->labels[i] >= classes)
            return fail(error,
                        "%s: label %d at offset %lld of the IDX data is out of range: the data "
                        "declares %d classes, so labels go from 0 to %d; check the "
                        "file or the classes of idx(...)",
                        ds->labels_path, (int)ds->labels[i],
                        (long long)(IDX_LABELS_HEADER + i), classes, classes - 1);
    ds->num_classes = classes;
    return true;
}

bool data_check_classes(DataSplits *splits, int classes, char **error)
{
    return check_labels_below(&splits->train, classes, error) &&
           check_labels_below(&splits->test, classes, error);
}

void dataset_free(Dataset *ds)
{
    free(ds->path);
    free(ds->labels_path);
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

double data_byte_value(const DataSplits *splits, uint8_t b)
{
    switch (splits->normalize) {
    case NORMALIZE_NONE:
        return b;
    case NORMALIZE_UNIT:
        return b / 255.0;
    case NORMALIZE_STANDARD:
        BOCB_ASSERT(splits->std > 0);
        return (b / 255.0 - (double)splits->mean) / (double)splits->std;
    default:
        BOCB_UNREACHABLE("normalisation mode");
    }
}

void data_gather(const DataSplits *splits, const Dataset *ds,
                 const int64_t *indices, int64_t n, float *x, int32_t *y)
{
    BOCB_ASSERT(n >= 0);
    /* One float per byte value, computed in double and rounded once. */
    float table[256];
    for (int b = 0; b < 256; b++)
        table[b] = (float)data_byte_value(splits, (uint8_t)b);

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
