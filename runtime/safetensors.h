/* safetensors.h - reading and writing tensors in the safetensors format.
 *
 * A safetensors file is an unsigned 64-bit little-endian header length N,
 * N bytes of UTF-8 JSON, then the data section. The JSON maps each tensor
 * name to {"dtype", "shape", "data_offsets": [begin, end]}, with offsets
 * relative to the start of the data section, and may hold a
 * "__metadata__" map of string to string. Tensor data is little-endian and
 * row-major, and the tensors cover the data section without gaps or
 * overlaps.
 *
 * Files written here carry a CRC-32 of the data section under the
 * metadata key "checksum" (value "crc32:" and 8 hex digits). A reader
 * verifies it when it is present. Files from other tools have none and
 * load all the same, so st_read reports whether the check ran. A file is
 * validated completely before a caller sees any tensor: header bounds,
 * JSON syntax, dtypes, shapes, that each byte size matches its shape, and
 * that every offset lies inside the file.
 *
 * Writes are atomic: the file goes to a temporary name in the same
 * directory, is flushed to disk and renamed over the target, so a crash
 * leaves either the old file or the new one.
 */
#ifndef BOCB_SAFETENSORS_H
#define BOCB_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { ST_MAX_RANK = 8 };

typedef enum StDtype {
    ST_F64,
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U64,
    ST_U32,
    ST_U16,
    ST_U8,
    ST_BOOL,
} StDtype;

/* One tensor. In a file returned by st_read, `name` and `data` point into
 * the StFile and live until st_free. */
typedef struct StTensor {
    const char *name;
    StDtype dtype;
    int rank;                    /* 0 for a scalar */
    int64_t shape[ST_MAX_RANK];
    const void *data;            /* nbytes little-endian bytes */
    size_t nbytes;               /* element count * st_dtype_size(dtype) */
} StTensor;

/* One "__metadata__" entry. */
typedef struct StMetaEntry {
    const char *key;
    const char *value;
} StMetaEntry;

/* A loaded file; everything in it is owned by the StFile. */
typedef struct StFile {
    char *path;              /* for messages */
    uint8_t *bytes;          /* the whole file */
    size_t size;
    StTensor *tensors;       /* in the order of their data offsets */
    int tensor_count;
    StMetaEntry *meta;       /* "checksum" included, when present */
    int meta_count;
    bool checksum_verified;  /* the file had a "checksum" entry and it matched */
} StFile;

/* Returns the byte size of one element of `dtype`. */
size_t st_dtype_size(StDtype dtype);

/* Returns the safetensors spelling of `dtype` ("F32", "BF16", ...). */
const char *st_dtype_name(StDtype dtype);

/* Writes `count` tensors and `meta_count` metadata entries to `path`
 * atomically, adding the "checksum" entry. Tensor names must be non-empty,
 * unique and not "__metadata__"; "checksum" is reserved as a metadata key.
 * Returns false and sets *error (malloc'd) on failure, leaving any old file
 * at `path` untouched. */
bool st_write(const char *path, const StTensor *tensors, int count,
              const StMetaEntry *meta, int meta_count, char **error);

/* Reads and validates `path`. On failure returns false, sets *error to a
 * malloc'd message that names the file and what is wrong, and leaves
 * *file empty (st_free on it is still allowed). */
bool st_read(const char *path, StFile *file, char **error);

/* Like st_read on `size` bytes already in memory; takes ownership of
 * `bytes` (a malloc'd buffer) in all cases. `name` is used in messages. */
bool st_read_memory(const char *name, uint8_t *bytes, size_t size, StFile *file,
                    char **error);

/* Returns the tensor called `name`, or NULL. */
const StTensor *st_find(const StFile *file, const char *name);

/* Returns the metadata value of `key`, or NULL. */
const char *st_meta_get(const StFile *file, const char *key);

/* Returns the element count of `tensor` (1 for a scalar). */
int64_t st_element_count(const StTensor *tensor);

/* Converts a floating-point tensor (F64, F32, F16 or BF16) to floats in
 * `out`, which has room for st_element_count(tensor) values. Returns false for
 * other dtypes. */
bool st_to_f32(const StTensor *tensor, float *out);

void st_free(StFile *file);

#endif
