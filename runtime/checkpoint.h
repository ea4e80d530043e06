/* checkpoint.h - a training run's state in one safetensors file.
 *
 * A checkpoint contains every variable of the store under its own name:
 * parameters, optimizer state and buffers alike, so other tools can load
 * the weights. Under "bocb.train.*" names it keeps the training position
 * and the results so far: per-epoch metrics, the loss and learning rate
 * of every step, and divergence. The metadata records the format, whether the
 * run has finished, and the caller's identity entries (model, optimizer,
 * seed and settings), which a resume compares before it trusts the file.
 */
#ifndef BOCB_CHECKPOINT_H
#define BOCB_CHECKPOINT_H

#include <stdbool.h>

#include "safetensors.h"
#include "train.h"
#include "vars.h"

/* Writes the checkpoint of `vars`, `position` and `result` to `path`
 * atomically. `finished` marks a run that needs no more steps. The
 * `identity` entries are stored as metadata. Returns false and sets
 * *error (malloc'd) on failure; the old file is then untouched. */
bool rt_checkpoint_save(const char *path, const RtVarStore *vars,
                        const RtTrainPosition *position, const RtTrainResult *result,
                        bool finished, const StMetaEntry *identity, int nidentity,
                        char **error);

/* Reads `path` into `vars` (whose variables must match the file's in
 * name, dtype and shape), *position, *result (malloc'd arrays, freed by
 * rt_train_result_free) and *finished. Every identity entry must match
 * the file's metadata. The file is validated completely before anything
 * is changed. Returns false and sets *error (malloc'd) naming the file and
 * the fault. */
bool rt_checkpoint_load(const char *path, RtVarStore *vars, RtTrainPosition *position,
                        RtTrainResult *result, bool *finished,
                        const StMetaEntry *identity, int nidentity, char **error);

#endif
