/* vars.h - storage for a model's variables: parameters and optimizer state.
 *
 * One allocation contains every variable, each 64-byte aligned, so the
 * training step and the evaluation pass use the same memory. Initial values come from Philox streams keyed by the run's seed
 * and the variable's index, so they do not depend on the executor (JIT,
 * interpreter) or the thread count.
 */
#ifndef BOCB_VARS_H
#define BOCB_VARS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shape.h"

typedef enum RtInit {
    RT_INIT_ZEROS,
    RT_INIT_CONST,   /* every element = init_value */
    RT_INIT_UNIFORM, /* U(-init_value, init_value), as PyTorch's default
                        kaiming_uniform_(a = sqrt(5)) for weights and its
                        bias rule both reduce to */
    RT_INIT_TRUNC_NORMAL, /* N(0, init_value^2) truncated to [-2, 2] */
} RtInit;

typedef struct RtVar {
    char *name;
    DType dtype;
    Shape shape;
    int64_t numel;
    size_t offset; /* bytes from the start of the store's memory */
    RtInit init;
    double init_value;
    bool trainable;
} RtVar;

typedef struct RtVarStore {
    RtVar *vars;
    int nvars, cap;
    unsigned char *memory;
    size_t bytes;
} RtVarStore;

void rt_vars_init(RtVarStore *store);
/* Adds a variable before rt_vars_allocate; returns its index. */
int rt_vars_add(RtVarStore *store, const char *name, DType dtype, Shape shape,
                RtInit init, double init_value, bool trainable);
/* Allocates the memory for every variable added so far. */
void rt_vars_allocate(RtVarStore *store);
/* Sets every variable to its initial value for `seed`. */
void rt_vars_reset(RtVarStore *store, uint64_t seed);
void *rt_var_data(const RtVarStore *store, int var);
/* Returns the number of elements of trainable variables. */
int64_t rt_vars_trainable_count(const RtVarStore *store);
void rt_vars_free(RtVarStore *store);

#endif
