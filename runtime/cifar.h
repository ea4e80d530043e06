/* cifar.h - CIFAR-10 and CIFAR-100 in their binary batch format.
 *
 * A CIFAR-10 batch file is a sequence of 3073-byte records: one label byte
 * (0..9), then a 32 x 32 image as 1024 red, 1024 green and 1024 blue bytes.
 * CIFAR-100 records have two label bytes, the coarse (0..19) and the fine
 * (0..99) label, before the same 3072 image bytes; the fine label is used.
 * Samples load as [3, 32, 32] bytes into the same Dataset as IDX files.
 */
#ifndef BOCB_CIFAR_H
#define BOCB_CIFAR_H

#include <stdbool.h>

#include "data.h"

enum {
    CIFAR_CHANNELS = 3,
    CIFAR_SIDE = 32,
    CIFAR_IMAGE_BYTES = CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE,
};

/* Appends the records of one batch file to `ds`, which is empty or
 * contains earlier batches of the same layout. `label_bytes` is 1 (CIFAR-10)
 * or 2 (CIFAR-100) and `classes` the label bound (10 or 100). Returns
 * false and sets *error (malloc'd) naming the file and the byte offset of
 * a truncated record or an out-of-range label. */
bool cifar_read_batch(Dataset *ds, const char *path, int label_bytes, int classes,
                      char **error);

/* Loads a CIFAR directory. CIFAR-10 is recognised by data_batch_1.bin
 * (training: data_batch_1.bin to data_batch_5.bin, test: test_batch.bin)
 * and CIFAR-100 by train.bin and test.bin. Training batches that are
 * missing after the first are allowed, so small test directories work. */
bool data_load_cifar_dir(DataSplits *splits, const char *dir, Normalize normalize,
                         char **error);

#endif
