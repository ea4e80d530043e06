/* Tests of the safetensors writer and reader: round trips, a file laid out
 * by hand the way other tools write it, and truncated, corrupt and
 * malformed files, each of which must be rejected with a message naming
 * the file and the fault. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "safetensors.h"

static char temp_dir[64];
static char file_path[128];

static void make_temp_dir(void)
{
    strcpy(temp_dir, "/tmp/bocb-test-st-XXXXXX");
    cr_assert_not_null(mkdtemp(temp_dir));
    snprintf(file_path, sizeof file_path, "%s/model.safetensors", temp_dir);
}

static void remove_temp_dir(void)
{
    unlink(file_path);
    rmdir(temp_dir);
}

TestSuite(safetensors, .init = make_temp_dir, .fini = remove_temp_dir);

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bytes = malloc((size_t)n + 1);
    cr_assert_eq(fread(bytes, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return bytes;
}

static void write_all(const char *path, const void *bytes, size_t size)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, size, f), size);
    fclose(f);
}

/* Writes an 8-byte length, the header text and `data_size` data bytes. */
static void write_raw(const char *header, const void *data, size_t data_size)
{
    uint64_t len = strlen(header);
    size_t size = 8 + len + data_size;
    uint8_t *bytes = malloc(size);
    memcpy(bytes, &len, 8);
    memcpy(bytes + 8, header, len);
    if (data_size)
        memcpy(bytes + 8 + len, data, data_size);
    write_all(file_path, bytes, size);
    free(bytes);
}

static const float weights[6] = {1.5f, -2.0f, 0.25f, 3.0f, -0.5f, 8.0f};
static const int64_t steps[1] = {1234567890123LL};
static const uint8_t flags[3] = {1, 0, 1};

static void write_sample(void)
{
    StTensor tensors[3] = {
        {.name = "layer.w", .dtype = ST_F32, .rank = 2, .shape = {2, 3},
         .data = weights, .nbytes = sizeof weights},
        {.name = "step", .dtype = ST_I64, .rank = 0, .data = steps, .nbytes = 8},
        {.name = "flags \"q\"", .dtype = ST_U8, .rank = 1, .shape = {3},
         .data = flags, .nbytes = 3},
    };
    StMetaEntry meta[2] = {{"format", "bocb-checkpoint"}, {"note", "tab\there"}};
    char *error = NULL;
    bool ok = st_write(file_path, tensors, 3, meta, 2, &error);
    cr_assert(ok, "%s", error ? error : "");
}

/* Reads file_path expecting failure and checks the message names the file
 * and contains `fragment`. */
static void expect_rejected(const char *fragment)
{
    StFile file;
    char *error = NULL;
    cr_assert_not(st_read(file_path, &file, &error), "accepted a file that should fail");
    cr_assert_not_null(error);
    cr_assert(strstr(error, file_path), "message does not name the file: %s", error);
    cr_assert(strstr(error, fragment), "expected '%s' in: %s", fragment, error);
    cr_assert_eq(file.tensor_count, 0);
    st_free(&file);
    free(error);
}

Test(safetensors, round_trip_keeps_tensors_and_metadata)
{
    write_sample();
    StFile file;
    char *error = NULL;
    cr_assert(st_read(file_path, &file, &error), "%s", error ? error : "");
    cr_assert(file.checksum_verified);
    cr_assert_eq(file.tensor_count, 3);

    const StTensor *w = st_find(&file, "layer.w");
    cr_assert_not_null(w);
    cr_assert_eq(w->dtype, ST_F32);
    cr_assert_eq(w->rank, 2);
    cr_assert_eq(w->shape[0], 2);
    cr_assert_eq(w->shape[1], 3);
    cr_assert_eq(memcmp(w->data, weights, sizeof weights), 0);

    const StTensor *step = st_find(&file, "step");
    cr_assert_not_null(step);
    cr_assert_eq(step->rank, 0);
    cr_assert_eq(st_element_count(step), 1);
    int64_t value;
    memcpy(&value, step->data, 8);
    cr_assert_eq(value, steps[0]);

    const StTensor *f = st_find(&file, "flags \"q\"");
    cr_assert_not_null(f);
    cr_assert_eq(memcmp(f->data, flags, 3), 0);

    cr_assert_str_eq(st_meta_get(&file, "format"), "bocb-checkpoint");
    cr_assert_str_eq(st_meta_get(&file, "note"), "tab\there");
    cr_assert_not_null(st_meta_get(&file, "checksum"));
    cr_assert_null(st_find(&file, "missing"));
    st_free(&file);
}

Test(safetensors, data_section_is_8_byte_aligned)
{
    write_sample();
    size_t size;
    uint8_t *bytes = read_all(file_path, &size);
    uint64_t header_len;
    memcpy(&header_len, bytes, 8);
    cr_assert_eq((8 + header_len) % 8, 0);
    cr_assert_eq(size, 8 + header_len + sizeof weights + 8 + 3);
    free(bytes);
}

Test(safetensors, file_from_another_tool_loads)
{
    /* The layout other writers produce: no metadata, tensors listed out of
     * data order, a space-padded header. */
    const char *header = "{\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                         " \"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
                         "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[12,14]}}   ";
    uint8_t data[14];
    double a = -3.25;
    uint16_t b[2] = {0x3C00, 0x0001}; /* 1.0 and the smallest subnormal, 2^-24 */
    uint16_t c = 0x4049;              /* bfloat16 3.140625 */
    memcpy(data, &a, 8);
    memcpy(data + 8, b, 4);
    memcpy(data + 12, &c, 2);
    write_raw(header, data, sizeof data);

    StFile file;
    char *error = NULL;
    cr_assert(st_read(file_path, &file, &error), "%s", error ? error : "");
    cr_assert_not(file.checksum_verified);
    cr_assert_str_eq(file.tensors[0].name, "a");

    float out[2];
    cr_assert(st_to_f32(st_find(&file, "a"), out));
    cr_assert_float_eq(out[0], -3.25f, 0);
    cr_assert(st_to_f32(st_find(&file, "b"), out));
    cr_assert_float_eq(out[0], 1.0f, 0);
    cr_assert_float_eq(out[1], ldexpf(1.0f, -24), 0);
    cr_assert(st_to_f32(st_find(&file, "c"), out));
    cr_assert_float_eq(out[0], 3.140625f, 0);
    st_free(&file);
}

Test(safetensors, integer_tensor_is_not_converted_to_f32)
{
    write_sample();
    StFile file;
    char *error = NULL;
    cr_assert(st_read(file_path, &file, &error));
    float out[1];
    cr_assert_not(st_to_f32(st_find(&file, "step"), out));
    st_free(&file);
}

Test(safetensors, every_truncation_is_rejected)
{
    write_sample();
    size_t size;
    uint8_t *bytes = read_all(file_path, &size);
    for (size_t cut = 0; cut < size; cut++) {
        write_all(file_path, bytes, cut);
        StFile file;
        char *error = NULL;
        bool ok = st_read(file_path, &file, &error);
        cr_assert_not(ok, "a file cut to %zu of %zu bytes was accepted", cut, size);
        cr_assert(strstr(error, file_path), "message does not name the file: %s", error);
        st_free(&file);
        free(error);
    }
    free(bytes);
}

Test(safetensors, flipped_data_byte_fails_checksum)
{
    write_sample();
    size_t size;
    uint8_t *bytes = read_all(file_path, &size);
    bytes[size - 5] ^= 0x10;
    write_all(file_path, bytes, size);
    free(bytes);
    expect_rejected("checksum");
}

Test(safetensors, malformed_checksum_value_is_rejected)
{
    float x = 1;
    write_raw("{\"__metadata__\":{\"checksum\":\"md5:00\"},"
              "\"x\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}",
              &x, 4);
    expect_rejected("expected 'crc32:'");
}

Test(safetensors, header_length_beyond_file_is_rejected)
{
    uint8_t bytes[16] = {0};
    uint64_t len = 1000;
    memcpy(bytes, &len, 8);
    memcpy(bytes + 8, "{}      ", 8);
    write_all(file_path, bytes, sizeof bytes);
    expect_rejected("exceeds the file size");
}

Test(safetensors, empty_header_object_loads)
{
    write_raw("{}", NULL, 0);
    StFile file;
    char *error = NULL;
    cr_assert(st_read(file_path, &file, &error), "%s", error ? error : "");
    cr_assert_eq(file.tensor_count, 0);
    st_free(&file);
}

/* A header and the fragment its rejection message must contain. Each
 * header comes with 8 data bytes. */
static const struct {
    const char *header;
    const char *fragment;
} bad_headers[] = {
    {"[1,2]", "expected '{'"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", "expected '}'"},
    {"{\"x\":{\"dtype\":\"Q8\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unknown dtype 'Q8'"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "need 12"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "non-negative integer"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", "must be an integer"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
     "more than 8 dimensions"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", "beyond the 8-byte"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", "end before they begin"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "leave a gap"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"y\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "overlap"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", "trailing bytes"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"x\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", "appears twice"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2]}}", "missing its data_offsets"},
    {"{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"extra\":1}}",
     "unexpected or repeated key 'extra'"},
    {"{\"x\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
     "unexpected or repeated key 'dtype'"},
    {"{\"__metadata__\":{\"k\":5},\"x\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}",
     "metadata values must be strings"},
    {"{\"x\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}} x", "unexpected bytes"},
    {"{\"x\\q\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", "invalid escape"},
    {"{\"x\\ud800\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", "unpaired surrogate"},
    {"{\"x\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}",
     "too large"},
    {"{\"x\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}",
     "overflows"},
    {"{\"\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", "empty name"},
    {"{\"x\":{\"dtype\":\"U8\",\"shape\":[08],\"data_offsets\":[0,8]}}", "leading zero"},
};

Test(safetensors, malformed_headers_are_rejected)
{
    uint8_t data[8] = {0};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(bad_headers); i++) {
        write_raw(bad_headers[i].header, data, sizeof data);
        StFile file;
        char *error = NULL;
        cr_assert_not(st_read(file_path, &file, &error), "accepted header %zu: %s", i,
                      bad_headers[i].header);
        cr_assert(strstr(error, file_path), "message does not name the file: %s", error);
        cr_assert(strstr(error, bad_headers[i].fragment), "header %zu: expected '%s' in: %s",
                  i, bad_headers[i].fragment, error);
        st_free(&file);
        free(error);
    }
}

Test(safetensors, missing_file_is_rejected)
{
    StFile file;
    char *error = NULL;
    cr_assert_not(st_read("/nonexistent/bocb/model.safetensors", &file, &error));
    cr_assert(strstr(error, "/nonexistent/bocb/model.safetensors"));
    cr_assert(strstr(error, "cannot open"));
    free(error);
}

Test(safetensors, failed_write_keeps_old_file)
{
    write_sample();
    size_t old_size;
    uint8_t *old = read_all(file_path, &old_size);

    /* Shape and byte size disagree: rejected before anything is written. */
    float x[2] = {0};
    StTensor bad = {.name = "x", .dtype = ST_F32, .rank = 1, .shape = {3},
                    .data = x, .nbytes = sizeof x};
    char *error = NULL;
    cr_assert_not(st_write(file_path, &bad, 1, NULL, 0, &error));
    cr_assert(strstr(error, "do not agree"), "%s", error);
    free(error);

    StTensor twice[2] = {
        {.name = "x", .dtype = ST_F32, .rank = 1, .shape = {2}, .data = x, .nbytes = 8},
        {.name = "x", .dtype = ST_F32, .rank = 1, .shape = {2}, .data = x, .nbytes = 8},
    };
    error = NULL;
    cr_assert_not(st_write(file_path, twice, 2, NULL, 0, &error));
    cr_assert(strstr(error, "used twice"), "%s", error);
    free(error);

    StMetaEntry reserved = {"checksum", "x"};
    error = NULL;
    cr_assert_not(st_write(file_path, twice, 1, &reserved, 1, &error));
    cr_assert(strstr(error, "reserved"), "%s", error);
    free(error);

    size_t new_size;
    uint8_t *now = read_all(file_path, &new_size);
    cr_assert_eq(new_size, old_size);
    cr_assert_eq(memcmp(now, old, old_size), 0);
    free(old);
    free(now);
}

Test(safetensors, write_into_missing_directory_fails)
{
    float x = 1;
    StTensor t = {.name = "x", .dtype = ST_F32, .rank = 0, .data = &x, .nbytes = 4};
    char *error = NULL;
    cr_assert_not(st_write("/nonexistent/bocb/out.safetensors", &t, 1, NULL, 0, &error));
    cr_assert(strstr(error, "/nonexistent/bocb/out.safetensors"), "%s", error);
    free(error);
}
