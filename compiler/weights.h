/* weights.h - a cell's parameters to and from safetensors files: the
 * `init` and `save` settings of an experiment.
 *
 * A file contains one tensor per parameter, named as the parameter
 * ("char_transformer.block1.attn.qkv.weight"), in F32. Loading matches
 * tensors to parameters by name: a parameter without a tensor keeps its
 * initialisation (a new classifier head), and a tensor without a
 * parameter is ignored (a language-model head when fine-tuning a
 * classifier), but a matched pair must agree in shape.
 */
#ifndef BOCB_WEIGHTS_H
#define BOCB_WEIGHTS_H

#include <stdbool.h>
#include <stdio.h>

#include "../runtime/vars.h"
#include "ir.h"

/* Writes every parameter of `m` (frozen or not) with its value in `store`
 * to `path`, atomically. Returns false with *error (malloc'd) set. */
bool weights_save(const char *path, const IrModule *m, const RtVarStore *store, char **error);

/* Copies the tensors of `path` into the parameters of the same names in
 * `store`, converting F64, F32, F16 and BF16 to the store's element type.
 * Fails, changing nothing, when the file is invalid, when a matched
 * tensor's shape differs from its parameter's, or when no tensor matches.
 * On success stores the number of parameters loaded in *loaded and the
 * number of parameters in *total. */
bool weights_load(const char *path, const IrModule *m, RtVarStore *store, int *loaded,
                  int *total, char **error);

#endif
