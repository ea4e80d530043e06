/* vars.c - variable storage and initialisation. */
#include "vars.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "philox.h"

void rt_vars_init(RtVarStore *store)
{
    memset(store, 0, sizeof *store);
}

int rt_vars_add(RtVarStore *store, const char *name, DType dtype, Shape shape,
                RtInit init, double init_value, bool trainable)
{
    BOCB_ASSERT(!store->memory);
    BOCB_ASSERT(shape.batch_axis < 0);
    BOCB_ASSERT(dtype == DT_F32 || dtype == DT_F64);
    if (store->nvars == store->cap)
        vec_grow((void **)&store->vars, &store->cap, store->nvars + 1, sizeof *store->vars);
    RtVar *v = &store->vars[store->nvars];
    memset(v, 0, sizeof *v);
    v->name = xstrdup(name);
    v->dtype = dtype;
    v->shape = shape;
    v->numel = shape_numel(&shape, 1);
    v->init = init;
    v->init_value = init_value;
    v->trainable = trainable;
    return store->nvars++;
}

void rt_vars_allocate(RtVarStore *store)
{
    BOCB_ASSERT(!store->memory);
    size_t offset = 0;
    for (int i = 0; i < store->nvars; i++) {
        RtVar *v = &store->vars[i];
        v->offset = offset;
        size_t bytes = size_mul((size_t)v->numel, dtype_size(v->dtype));
        offset += (bytes + 63) & ~(size_t)63;
    }
    store->bytes = offset;
    store->memory = xmalloc_aligned(offset ? offset : 64);
    memset(store->memory, 0, offset);
}

void *rt_var_data(const RtVarStore *store, int var)
{
    BOCB_ASSERT(store->memory && var >= 0 && var < store->nvars);
    return store->memory + store->vars[var].offset;
}

void rt_vars_reset(RtVarStore *store, uint64_t seed)
{
    for (int i = 0; i < store->nvars; i++) {
        const RtVar *v = &store->vars[i];
        void *data = rt_var_data(store, i);
        PhiloxKey key = philox_key(seed, (uint32_t)i);
        switch (v->init) {
        case RT_INIT_ZEROS:
            memset(data, 0, (size_t)v->numel * dtype_size(v->dtype));
            break;
        case RT_INIT_CONST:
            for (int64_t j = 0; j < v->numel; j++) {
                if (v->dtype == DT_F32)
                    ((float *)data)[j] = (float)v->init_value;
                else
                    ((double *)data)[j] = v->init_value;
            }
            break;
        case RT_INIT_UNIFORM:
            if (v->dtype == DT_F32)
                philox_fill_uniform_f32(key, data, v->numel, (float)-v->init_value,
                                        (float)v->init_value);
            else
                philox_fill_uniform_f64(key, data, v->numel, -v->init_value,
                                        v->init_value);
            break;
        case RT_INIT_TRUNC_NORMAL:
            if (v->dtype == DT_F32)
                philox_fill_trunc_normal_f32(key, data, v->numel, v->init_value);
            else
                philox_fill_trunc_normal_f64(key, data, v->numel, v->init_value);
            break;
        }
    }
}

int64_t rt_vars_trainable_count(const RtVarStore *store)
{
    int64_t n = 0;
    for (int i = 0; i < store->nvars; i++)
        if (store->vars[i].trainable)
            n += store->vars[i].numel;
    return n;
}

void rt_vars_free(RtVarStore *store)
{
    for (int i = 0; i < store->nvars; i++)
        free(store->vars[i].name);
    free(store->vars);
    free(store->memory);
    memset(store, 0, sizeof *store);
}
