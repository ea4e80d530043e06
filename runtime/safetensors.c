/* safetensors.c - the safetensors writer and its validating reader.
 *
 * The reader holds the whole file in memory and parses the header with a
 * small strict JSON parser of its own: the header is a single object
 * whose shape is fixed by the format, so a general JSON library would add
 * a dependency without removing any check. Every number, string and
 * offset is checked against the bytes actually present before use.
 */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "base.h"
#include "report.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c copies tensor data as it is in memory: little-endian hosts only"
#endif

/* The reference implementation rejects headers above 100 MB; so do we,
 * so that a corrupt length cannot make us allocate gigabytes. */
#define ST_MAX_HEADER_BYTES (100u * 1000u * 1000u)
#define ST_CHECKSUM_KEY "checksum"
#define ST_METADATA_KEY "__metadata__"

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [ST_F64] = {"F64", 8},  [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},  [ST_I8] = {"I8", 1},   [ST_U64] = {"U64", 8},
    [ST_U32] = {"U32", 4},  [ST_U16] = {"U16", 2}, [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

size_t st_dtype_size(StDtype dtype)
{
    BOCB_ASSERT((size_t)dtype < BOCB_ARRAY_LEN(dtype_info));
    return dtype_info[dtype].size;
}

const char *st_dtype_name(StDtype dtype)
{
    BOCB_ASSERT((size_t)dtype < BOCB_ARRAY_LEN(dtype_info));
    return dtype_info[dtype].name;
}

static bool dtype_from_name(const char *name, StDtype *dtype)
{
    for (size_t i = 0; i < BOCB_ARRAY_LEN(dtype_info); i++) {
        if (strcmp(dtype_info[i].name, name) == 0) {
            *dtype = (StDtype)i;
            return true;
        }
    }
    return false;
}

int64_t st_element_count(const StTensor *tensor)
{
    int64_t count = 1;
    for (int i = 0; i < tensor->rank; i++)
        count *= tensor->shape[i];
    return count;
}

/* Returns false when the element count or byte size of `shape` overflows. */
static bool shape_bytes(const int64_t *shape, int rank, StDtype dtype, size_t *nbytes)
{
    uint64_t bytes = st_dtype_size(dtype);
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0)
            return false;
        if (shape[i] != 0 && bytes > UINT64_MAX / (uint64_t)shape[i])
            return false;
        bytes *= (uint64_t)shape[i];
    }
    if (bytes > SIZE_MAX)
        return false;
    *nbytes = (size_t)bytes;
    return true;
}

static uint32_t data_checksum(const uint8_t *data, size_t size)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (size > 0) {
        uInt chunk = size > 0x40000000u ? 0x40000000u : (uInt)size;
        crc = crc32(crc, data, chunk);
        data += chunk;
        size -= chunk;
    }
    return (uint32_t)crc;
}

/* ---- writing ------------------------------------------------------------ */

static bool check_write_arguments(const char *path, const StTensor *tensors, int count,
                                  const StMetaEntry *meta, int meta_count, char **error)
{
    for (int i = 0; i < count; i++) {
        const StTensor *t = &tensors[i];
        size_t nbytes;
        if (!t->name || !t->name[0] || strcmp(t->name, ST_METADATA_KEY) == 0) {
            *error = xasprintf("%s: tensor %d has an invalid name '%s'", path, i,
                               t->name ? t->name : "");
            return false;
        }
        if (t->rank < 0 || t->rank > ST_MAX_RANK ||
            !shape_bytes(t->shape, t->rank, t->dtype, &nbytes) || nbytes != t->nbytes) {
            *error = xasprintf("%s: tensor '%s': shape and byte size %zu do not agree",
                               path, t->name, t->nbytes);
            return false;
        }
        for (int j = 0; j < i; j++) {
            if (strcmp(tensors[j].name, t->name) == 0) {
                *error = xasprintf("%s: tensor name '%s' is used twice", path, t->name);
                return false;
            }
        }
    }
    for (int i = 0; i < meta_count; i++) {
        if (strcmp(meta[i].key, ST_CHECKSUM_KEY) == 0) {
            *error = xasprintf("%s: metadata key '%s' is reserved for the data checksum",
                               path, ST_CHECKSUM_KEY);
            return false;
        }
    }
    return true;
}

bool st_write(const char *path, const StTensor *tensors, int count,
              const StMetaEntry *meta, int meta_count, char **error)
{
    if (!check_write_arguments(path, tensors, count, meta, meta_count, error))
        return false;

    size_t data_size = 0;
    for (int i = 0; i < count; i++)
        data_size += tensors[i].nbytes;
    uint8_t *data = xmalloc(data_size ? data_size : 1);
    size_t offset = 0;
    for (int i = 0; i < count; i++) {
        if (tensors[i].nbytes)
            memcpy(data + offset, tensors[i].data, tensors[i].nbytes);
        offset += tensors[i].nbytes;
    }

    /* The header: metadata first, then the tensors in data order. */
    StrBuf header = {0};
    sb_append(&header, "{\"" ST_METADATA_KEY "\":{");
    for (int i = 0; i < meta_count; i++) {
        rt_append_json_string(&header, meta[i].key);
        sb_append(&header, ":");
        rt_append_json_string(&header, meta[i].value);
        sb_append(&header, ",");
    }
    sb_printf(&header, "\"" ST_CHECKSUM_KEY "\":\"crc32:%08x\"}",
              data_checksum(data, data_size));
    offset = 0;
    for (int i = 0; i < count; i++) {
        const StTensor *t = &tensors[i];
        sb_append(&header, ",");
        rt_append_json_string(&header, t->name);
        sb_printf(&header, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->dtype));
        for (int d = 0; d < t->rank; d++)
            sb_printf(&header, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(&header, "],\"data_offsets\":[%zu,%zu]}", offset, offset + t->nbytes);
        offset += t->nbytes;
    }
    sb_append(&header, "}");
    /* Pad with spaces so that the data section starts 8-byte aligned. */
    while ((8 + header.len) % 8 != 0)
        sb_append(&header, " ");

    size_t total = 8 + header.len + data_size;
    uint8_t *file = xmalloc(total);
    uint64_t header_len = header.len;
    memcpy(file, &header_len, 8);
    memcpy(file + 8, header.data, header.len);
    if (data_size)
        memcpy(file + 8 + header.len, data, data_size);
    bool ok = rt_write_file_atomic(path, file, total, error);

    free(file);
    free(data);
    sb_free(&header);
    return ok;
}

/* ---- the header parser ---------------------------------------------------- */

typedef struct Parser {
    const char *path;
    const char *text;
    size_t len, pos;
    char **error;
    bool failed;
} Parser;

static bool fail(Parser *p, const char *fmt, ...) BOCB_PRINTF(2, 3);

static bool fail(Parser *p, const char *fmt, ...)
{
    if (p->failed)
        return false;
    va_list ap;
    va_start(ap, fmt);
    char *what = xvasprintf(fmt, ap);
    va_end(ap);
    *p->error = xasprintf("%s: invalid safetensors header at byte %zu of the JSON: %s",
                          p->path, p->pos, what);
    free(what);
    p->failed = true;
    return false;
}

static void skip_space(Parser *p)
{
    while (p->pos < p->len && (p->text[p->pos] == ' ' || p->text[p->pos] == '\t' ||
                               p->text[p->pos] == '\n' || p->text[p->pos] == '\r'))
        p->pos++;
}

static bool expect(Parser *p, char c)
{
    skip_space(p);
    if (p->pos >= p->len || p->text[p->pos] != c)
        return fail(p, "expected '%c'", c);
    p->pos++;
    return true;
}

/* Consumes `c` if it is the next non-space character. */
static bool accept(Parser *p, char c)
{
    skip_space(p);
    if (p->pos < p->len && p->text[p->pos] == c) {
        p->pos++;
        return true;
    }
    return false;
}

static void append_utf8(StrBuf *sb, uint32_t cp)
{
    char buf[4];
    size_t n;
    if (cp < 0x80) {
        buf[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        buf[0] = (char)(0xF0 | (cp >> 18));
        buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_appendn(sb, buf, n);
}

static bool parse_hex4(Parser *p, uint32_t *value)
{
    if (p->len - p->pos < 4)
        return fail(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return fail(p, "invalid hex digit in \\u escape");
    }
    *value = v;
    return true;
}

static bool parse_escape(Parser *p, StrBuf *sb)
{
    if (p->pos >= p->len)
        return fail(p, "unterminated string");
    char c = p->text[p->pos++];
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = strchr(from, c);
    if (c != 'u') {
        if (!hit || c == '\0')
            return fail(p, "invalid escape '\\%c' in a string", c);
        sb_appendn(sb, &to[hit - from], 1);
        return true;
    }
    uint32_t cp;
    if (!parse_hex4(p, &cp))
        return false;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        uint32_t low;
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return fail(p, "unpaired surrogate in a \\u escape");
        p->pos += 2;
        if (!parse_hex4(p, &low))
            return false;
        if (low < 0xDC00 || low > 0xDFFF)
            return fail(p, "unpaired surrogate in a \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return fail(p, "unpaired surrogate in a \\u escape");
    }
    if (cp == 0)
        return fail(p, "\\u0000 is not allowed in a string");
    append_utf8(sb, cp);
    return true;
}

/* Parses a JSON string into a malloc'd C string. */
static char *parse_string(Parser *p)
{
    if (!expect(p, '"'))
        return NULL;
    StrBuf sb = {0};
    sb_append(&sb, "");
    for (;;) {
        if (p->pos >= p->len) {
            fail(p, "unterminated string");
            break;
        }
        unsigned char c = (unsigned char)p->text[p->pos++];
        if (c == '"')
            return sb.data;
        if (c < 0x20) {
            fail(p, "control character 0x%02x in a string", c);
            break;
        }
        if (c == '\\') {
            if (!parse_escape(p, &sb))
                break;
            continue;
        }
        sb_appendn(&sb, (const char *)&c, 1);
    }
    sb_free(&sb);
    return NULL;
}

/* Parses a non-negative integer that fits in int64. */
static bool parse_count(Parser *p, int64_t *value, const char *what)
{
    skip_space(p);
    if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9')
        return fail(p, "%s must be a non-negative integer", what);
    if (p->text[p->pos] == '0' && p->pos + 1 < p->len && p->text[p->pos + 1] >= '0' &&
        p->text[p->pos + 1] <= '9')
        return fail(p, "%s has a leading zero", what);
    int64_t v = 0;
    while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') {
        int digit = p->text[p->pos++] - '0';
        if (v > (INT64_MAX - digit) / 10)
            return fail(p, "%s is too large", what);
        v = v * 10 + digit;
    }
    if (p->pos < p->len && (p->text[p->pos] == '.' || p->text[p->pos] == 'e' ||
                            p->text[p->pos] == 'E'))
        return fail(p, "%s must be an integer", what);
    *value = v;
    return true;
}

/* A tensor entry as parsed, before it is checked against the data. */
typedef struct Entry {
    char *name;
    StDtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    int64_t begin, end;
} Entry;

static bool parse_shape(Parser *p, Entry *e)
{
    if (!expect(p, '['))
        return false;
    e->rank = 0;
    if (accept(p, ']'))
        return true;
    do {
        if (e->rank == ST_MAX_RANK)
            return fail(p, "tensor '%s' has more than %d dimensions", e->name, ST_MAX_RANK);
        if (!parse_count(p, &e->shape[e->rank], "a shape dimension"))
            return false;
        e->rank++;
    } while (accept(p, ','));
    return expect(p, ']');
}

static bool parse_offsets(Parser *p, Entry *e)
{
    if (!expect(p, '[') || !parse_count(p, &e->begin, "a data offset") ||
        !expect(p, ',') || !parse_count(p, &e->end, "a data offset") || !expect(p, ']'))
        return false;
    if (e->end < e->begin)
        return fail(p, "tensor '%s' has data_offsets [%lld, %lld] that end before they begin",
                    e->name, (long long)e->begin, (long long)e->end);
    return true;
}

/* Parses {"dtype": ..., "shape": [...], "data_offsets": [b, e]}. */
static bool parse_entry(Parser *p, Entry *e)
{
    bool seen_dtype = false, seen_shape = false, seen_offsets = false;
    if (!expect(p, '{'))
        return false;
    do {
        char *key = parse_string(p);
        if (!key || !expect(p, ':')) {
            free(key);
            return false;
        }
        bool ok;
        if (strcmp(key, "dtype") == 0 && !seen_dtype) {
            char *name = parse_string(p);
            ok = name != NULL;
            if (ok && !dtype_from_name(name, &e->dtype))
                ok = fail(p, "tensor '%s' has the unknown dtype '%s'", e->name, name);
            free(name);
            seen_dtype = true;
        } else if (strcmp(key, "shape") == 0 && !seen_shape) {
            ok = parse_shape(p, e);
            seen_shape = true;
        } else if (strcmp(key, "data_offsets") == 0 && !seen_offsets) {
            ok = parse_offsets(p, e);
            seen_offsets = true;
        } else {
            ok = fail(p, "tensor '%s' has an unexpected or repeated key '%s'", e->name, key);
        }
        free(key);
        if (!ok)
            return false;
    } while (accept(p, ','));
    if (!expect(p, '}'))
        return false;
    if (!seen_dtype || !seen_shape || !seen_offsets)
        return fail(p, "tensor '%s' is missing its %s", e->name,
                    !seen_dtype ? "dtype" : !seen_shape ? "shape" : "data_offsets");
    return true;
}

static bool parse_metadata(Parser *p, StFile *file)
{
    if (!expect(p, '{'))
        return false;
    if (accept(p, '}'))
        return true;
    do {
        char *key = parse_string(p);
        if (!key)
            return false;
        char *value = NULL;
        bool is_string = expect(p, ':') && accept(p, '"');
        if (is_string) {
            p->pos--; /* parse_string expects the opening quote */
            value = parse_string(p);
        } else {
            fail(p, "metadata value of '%s' is not a string; metadata values must be strings",
                 key);
        }
        if (!value) {
            free(key);
            return false;
        }
        if (st_meta_get(file, key)) {
            fail(p, "metadata key '%s' appears twice", key);
            free(key);
            free(value);
            return false;
        }
        file->meta = xrealloc(file->meta, sizeof *file->meta * (size_t)(file->meta_count + 1));
        file->meta[file->meta_count++] = (StMetaEntry){key, value};
    } while (accept(p, ','));
    return expect(p, '}');
}

static void free_entries(Entry *entries, int count)
{
    for (int i = 0; i < count; i++)
        free(entries[i].name);
    free(entries);
}

static bool parse_header(Parser *p, StFile *file, Entry **entries_out, int *count_out)
{
    Entry *entries = NULL;
    int count = 0;
    bool seen_metadata = false;
    bool ok = expect(p, '{');
    if (ok && !accept(p, '}')) {
        do {
            char *name = parse_string(p);
            if (!name || !expect(p, ':')) {
                free(name);
                ok = false;
                break;
            }
            if (strcmp(name, ST_METADATA_KEY) == 0) {
                free(name);
                ok = !seen_metadata ? parse_metadata(p, file)
                                    : fail(p, "\"" ST_METADATA_KEY "\" appears twice");
                seen_metadata = true;
                if (!ok)
                    break;
                continue;
            }
            for (int i = 0; i < count && ok; i++)
                if (strcmp(entries[i].name, name) == 0)
                    ok = fail(p, "tensor name '%s' appears twice", name);
            if (ok && name[0] == '\0')
                ok = fail(p, "a tensor has an empty name");
            entries = xrealloc(entries, sizeof *entries * (size_t)(count + 1));
            entries[count] = (Entry){.name = name};
            count++;
            if (!ok || !parse_entry(p, &entries[count - 1])) {
                ok = false;
                break;
            }
        } while (accept(p, ','));
        ok = ok && expect(p, '}');
    }
    skip_space(p);
    if (ok && p->pos != p->len)
        ok = fail(p, "unexpected bytes after the header object");
    if (!ok) {
        free_entries(entries, count);
        return false;
    }
    *entries_out = entries;
    *count_out = count;
    return true;
}

/* ---- reading ---------------------------------------------------------------- */

static int compare_entries_by_offset(const void *a, const void *b)
{
    const Entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Checks sizes and offsets against the data section and fills the
 * tensors of `file`. */
static bool check_entries(StFile *file, Entry *entries, int count, const uint8_t *data,
                          size_t data_size, char **error)
{
    if (count > 1)
        qsort(entries, (size_t)count, sizeof *entries, compare_entries_by_offset);
    int64_t expected_begin = 0;
    for (int i = 0; i < count; i++) {
        Entry *e = &entries[i];
        size_t nbytes;
        if (!shape_bytes(e->shape, e->rank, e->dtype, &nbytes)) {
            *error = xasprintf("%s: tensor '%s': its shape overflows the address space",
                               file->path, e->name);
            return false;
        }
        if ((uint64_t)e->end > data_size) {
            *error = xasprintf("%s: tensor '%s': data_offsets [%lld, %lld] reach beyond the "
                               "%zu-byte data section; the file is truncated or corrupt",
                               file->path, e->name, (long long)e->begin,
                               (long long)e->end, data_size);
            return false;
        }
        if ((uint64_t)(e->end - e->begin) != nbytes) {
            *error = xasprintf("%s: tensor '%s': data_offsets [%lld, %lld] hold %lld bytes, "
                               "but dtype %s and its shape need %zu",
                               file->path, e->name, (long long)e->begin, (long long)e->end,
                               (long long)(e->end - e->begin), st_dtype_name(e->dtype),
                               nbytes);
            return false;
        }
        if (e->begin != expected_begin) {
            *error = xasprintf("%s: tensor '%s': data_offsets [%lld, %lld] %s the previous "
                               "tensor, which ends at %lld",
                               file->path, e->name, (long long)e->begin, (long long)e->end,
                               e->begin < expected_begin ? "overlap" : "leave a gap after",
                               (long long)expected_begin);
            return false;
        }
        expected_begin = e->end;
    }
    if ((uint64_t)expected_begin != data_size) {
        *error = xasprintf("%s: the data section has %zu bytes but the tensors cover %lld; "
                           "the file has trailing bytes or is corrupt",
                           file->path, data_size, (long long)expected_begin);
        return false;
    }

    file->tensors = xcalloc((size_t)(count ? count : 1), sizeof *file->tensors);
    for (int i = 0; i < count; i++) {
        Entry *e = &entries[i];
        StTensor *t = &file->tensors[i];
        t->name = e->name;
        e->name = NULL; /* now owned by the file */
        t->dtype = e->dtype;
        t->rank = e->rank;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->data = data + e->begin;
        t->nbytes = (size_t)(e->end - e->begin);
    }
    file->tensor_count = count;
    return true;
}

static bool verify_checksum(StFile *file, const uint8_t *data, size_t data_size, char **error)
{
    const char *stored = st_meta_get(file, ST_CHECKSUM_KEY);
    if (!stored)
        return true;
    unsigned expected;
    int used = 0;
    if (sscanf(stored, "crc32:%8x%n", &expected, &used) != 1 || used != 14 ||
        stored[used] != '\0') {
        *error = xasprintf("%s: metadata '%s' is '%s', expected 'crc32:' and 8 hex digits",
                           file->path, ST_CHECKSUM_KEY, stored);
        return false;
    }
    uint32_t actual = data_checksum(data, data_size);
    if (actual != expected) {
        *error = xasprintf("%s: the data checksum is crc32:%08x but the header records "
                           "crc32:%08x; the file is corrupt",
                           file->path, actual, expected);
        return false;
    }
    file->checksum_verified = true;
    return true;
}

bool st_read_memory(const char *name, uint8_t *bytes, size_t size, StFile *file,
                    char **error)
{
    memset(file, 0, sizeof *file);
    file->path = xstrdup(name);
    file->bytes = bytes;
    file->size = size;

    if (size < 8) {
        *error = xasprintf("%s: %zu bytes is too short for a safetensors file, which starts "
                           "with an 8-byte header length",
                           name, size);
        st_free(file);
        return false;
    }
    uint64_t header_len;
    memcpy(&header_len, bytes, 8);
    if (header_len > size - 8 || header_len > ST_MAX_HEADER_BYTES) {
        *error = xasprintf("%s: the header length %llu at offset 0 exceeds %s (%zu bytes); "
                           "the file is truncated or not a safetensors file",
                           name, (unsigned long long)header_len,
                           header_len > size - 8 ? "the file size" : "the 100 MB limit",
                           header_len > size - 8 ? size : (size_t)ST_MAX_HEADER_BYTES);
        st_free(file);
        return false;
    }
    if (memchr(bytes + 8, '\0', (size_t)header_len)) {
        *error = xasprintf("%s: the header contains a NUL byte; the file is corrupt", name);
        st_free(file);
        return false;
    }

    Parser p = {.path = name, .text = (const char *)bytes + 8, .len = (size_t)header_len,
                .error = error};
    Entry *entries = NULL;
    int count = 0;
    if (!parse_header(&p, file, &entries, &count)) {
        st_free(file);
        return false;
    }
    const uint8_t *data = bytes + 8 + header_len;
    size_t data_size = size - 8 - (size_t)header_len;
    bool ok = check_entries(file, entries, count, data, data_size, error) &&
              verify_checksum(file, data, data_size, error);
    free_entries(entries, count);
    if (!ok)
        st_free(file);
    return ok;
}

bool st_read(const char *path, StFile *file, char **error)
{
    memset(file, 0, sizeof *file);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        *error = xasprintf("%s: cannot open: %s", path, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *error = xasprintf("%s: not a regular file", path);
        close(fd);
        return false;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *bytes = xmalloc(size ? size : 1);
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, bytes + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *error = xasprintf("%s: read failed at offset %zu: %s", path, done,
                               n < 0 ? strerror(errno) : "unexpected end of file");
            free(bytes);
            close(fd);
            return false;
        }
        done += (size_t)n;
    }
    close(fd);
    return st_read_memory(path, bytes, size, file, error);
}

const StTensor *st_find(const StFile *file, const char *name)
{
    for (int i = 0; i < file->tensor_count; i++)
        if (strcmp(file->tensors[i].name, name) == 0)
            return &file->tensors[i];
    return NULL;
}

const char *st_meta_get(const StFile *file, const char *key)
{
    for (int i = 0; i < file->meta_count; i++)
        if (strcmp(file->meta[i].key, key) == 0)
            return file->meta[i].value;
    return NULL;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exponent = (h >> 10) & 0x1F;
    uint32_t mantissa = h & 0x3FF;
    uint32_t bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        /* A subnormal half is mantissa * 2^-24, exact in float. */
        float v = (float)mantissa * 0x1p-24f;
        return sign ? -v : v;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

bool st_to_f32(const StTensor *tensor, float *out)
{
    if (tensor->dtype != ST_F32 && tensor->dtype != ST_F64 && tensor->dtype != ST_F16 &&
        tensor->dtype != ST_BF16)
        return false;
    int64_t n = st_element_count(tensor);
    const uint8_t *src = tensor->data;
    for (int64_t i = 0; i < n; i++) {
        switch (tensor->dtype) {
        case ST_F32:
            memcpy(&out[i], src + 4 * i, 4);
            break;
        case ST_F64: {
            double d;
            memcpy(&d, src + 8 * i, 8);
            out[i] = (float)d;
            break;
        }
        case ST_F16: {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            out[i] = half_to_float(h);
            break;
        }
        case ST_BF16: {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
            break;
        }
        default:
            BOCB_UNREACHABLE("dtype checked above");
        }
    }
    return true;
}

void st_free(StFile *file)
{
    for (int i = 0; i < file->tensor_count; i++)
        free((char *)file->tensors[i].name);
    for (int i = 0; i < file->meta_count; i++) {
        free((char *)file->meta[i].key);
        free((char *)file->meta[i].value);
    }
    free(file->tensors);
    free(file->meta);
    free(file->bytes);
    free(file->path);
    memset(file, 0, sizeof *file);
}
