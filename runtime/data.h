/* data.h - datasets: IDX files (MNIST, Fashion-MNIST), batching, shuffling.
 *
 * A dataset keeps its samples as they are stored on disk (bytes for IDX
 * images) and converts one batch at a time to floats, so the full
 * Fashion-MNIST training set costs 47 MB instead of 188 MB. Loading
 * validates everything a later step relies on: the magic number, the
 * dimensions, the file length, that images and labels agree in count, and
 * that every label is a valid class index.
 */
#ifndef BOCB_DATA_H
#define BOCB_DATA_H

#include <stdbool.h>
#include <stdint.h>

#include "philox.h"

enum { DATASET_MAX_RANK = 3 };

typedef enum Normalize {
    NORMALIZE_NONE,     /* raw byte values 0..255 */
    NORMALIZE_UNIT,     /* x / 255, in [0, 1] */
    NORMALIZE_STANDARD, /* (x / 255 - mean) / std, statistics of the training split */
} Normalize;

typedef struct Dataset {
    char *path;          /* the images file, for messages */
    int64_t count;       /* samples */
    int rank;            /* rank of one sample: 3 for [C, H, W] */
    int64_t sample_dims[DATASET_MAX_RANK];
    int64_t sample_size; /* elements per sample */
    uint8_t *images;     /* count * sample_size bytes */
    int32_t *labels;     /* count class indices */
    char *labels_path;   /* the labels file, for messages */
    int num_classes;     /* 1 + the largest label (of both splits after
                          * data_load_idx_dir; kept by dataset_truncate) */
} Dataset;

/* The train and test splits of one source, with the normalisation to
 * apply when batches are formed. */
typedef struct DataSplits {
    Dataset train, test;
    Normalize normalize;
    float mean, std; /* of train images / 255, for NORMALIZE_STANDARD */
} DataSplits;

/* Reads an IDX file, gzip-compressed or not (detected from its first
 * bytes, not its name). A path that is not a regular file after following
 * symlinks, such as a FIFO or a device, fails at once. The data buffer
 * grows as data arrives and never beyond the size that the header
 * promises, however much the file decompresses to. On success stores the
 * element type code (0x08 = unsigned byte), the dimensions and a malloc'd
 * copy of the data. On failure returns false and sets *error to a
 * malloc'd message that names the file, what is wrong with it and what to
 * do. */
bool idx_read(const char *path, int *type_code, int *rank, int64_t dims[4],
              uint8_t **data, char **error);

/* Loads an images/labels pair of IDX files into `ds`. */
bool dataset_load_idx(Dataset *ds, const char *images_path,
                      const char *labels_path, char **error);

/* Loads the standard four MNIST-style files from `dir`:
 * train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
 * and t10k-labels-idx1-ubyte, each optionally ending in ".gz". */
bool data_load_idx_dir(DataSplits *splits, const char *dir,
                       Normalize normalize, char **error);

/* Checks that every label of both splits is below `classes`, and makes
 * `classes` the class count of both. On failure sets *error to a
 * message that names the labels file and the offset of the first label
 * out of range. */
bool data_check_classes(DataSplits *splits, int classes, char **error);

/* Computes the mean and standard deviation of all pixels of `ds`, scaled
 * to [0, 1]. */
void dataset_image_statistics(const Dataset *ds, double *mean, double *std);

void dataset_free(Dataset *ds);
void data_splits_free(DataSplits *splits);

/* Keeps only the first `count` samples (no-op when count >= ds->count). */
void dataset_truncate(Dataset *ds, int64_t count);

/* Returns the value of pixel byte `b` in the splits' normalisation, as
 * data_gather converts it (before rounding to float). */
double data_byte_value(const DataSplits *splits, uint8_t b);

/* Converts samples indices[0..n) into x (n * sample_size floats, in the
 * splits' normalisation) and their labels into y. */
void data_gather(const DataSplits *splits, const Dataset *ds,
                 const int64_t *indices, int64_t n, float *x, int32_t *y);

#endif
