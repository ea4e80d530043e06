/* weights.c - parameters to and from safetensors files (see weights.h). */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "../runtime/safetensors.h"

bool weights_save(const char *path, const IrModule *m, const RtVarStore *store, char **error)
{
    StTensor *tensors = xcalloc((size_t)m->nvars + 1, sizeof *tensors);
    float **converted = xcalloc((size_t)m->nvars + 1, sizeof *converted);
    int count = 0;
    for (int v = 0; v < m->nvars; v++) {
        const IrVar *var = &m->vars[v];
        if (var->kind != IR_VAR_PARAM)
            continue;
        const RtVar *rv = &store->vars[v];
        StTensor *t = &tensors[count];
        t->name = var->name;
        t->dtype = ST_F32;
        t->rank = var->shape.rank;
        for (int i = 0; i < var->shape.rank; i++)
            t->shape[i] = var->shape.dims[i];
        t->nbytes = (size_t)rv->numel * sizeof(float);
        if (rv->dtype == DT_F32) {
            t->data = rt_var_data(store, v);
        } else {
            /* The interpreter keeps f64: files hold f32 either way. */
            const double *src = rt_var_data(store, v);
            converted[count] = xmalloc(t->nbytes + 1);
            for (int64_t i = 0; i < rv->numel; i++)
                converted[count][i] = (float)src[i];
            t->data = converted[count];
        }
        count++;
    }
    StMetaEntry meta[] = {{"format", "bocb parameters"}};
    bool ok = st_write(path, tensors, count, meta, 1, error);
    for (int i = 0; i < count; i++)
        free(converted[i]);
    free(converted);
    free(tensors);
    return ok;
}

/* Returns true when tensor t has the shape of variable `var`. */
static bool same_shape(const StTensor *t, const IrVar *var)
{
    if (t->rank != var->shape.rank)
        return false;
    for (int i = 0; i < t->rank; i++)
        if (t->shape[i] != var->shape.dims[i])
            return false;
    return true;
}

static void shape_string(char *buf, size_t size, int rank, const int64_t *dims)
{
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

bool weights_load(const char *path, const IrModule *m, RtVarStore *store, int *loaded,
                  int *total, char **error)
{
    StFile file;
    if (!st_read(path, &file, error))
        return false;
    /* Check every match before changing anything. */
    int matched = 0, params = 0;
    for (int v = 0; v < m->nvars; v++) {
        const IrVar *var = &m->vars[v];
        if (var->kind != IR_VAR_PARAM)
            continue;
        params++;
        const StTensor *t = st_find(&file, var->name);
        if (!t)
            continue;
        if (!same_shape(t, var)) {
            char want[128], got[128];
            shape_string(want, sizeof want, var->shape.rank, var->shape.dims);
            shape_string(got, sizeof got, t->rank, t->shape);
            *error = xasprintf("%s: tensor '%s' has shape %s, but the parameter has shape %s",
                               path, var->name, got, want);
            st_free(&file);
            return false;
        }
        if (t->dtype != ST_F64 && t->dtype != ST_F32 && t->dtype != ST_F16 &&
            t->dtype != ST_BF16) {
            *error = xasprintf("%s: tensor '%s' has dtype %s; parameters load from F64, F32, "
                               "F16 or BF16", path, var->name, st_dtype_name(t->dtype));
            st_free(&file);
            return false;
        }
        matched++;
    }
    if (matched == 0) {
        *error = xasprintf("%s: no tensor is named after a parameter of this model (such as "
                           "'%s'); was it saved from another model?", path,
                           params ? m->vars[0].name : "none");
        st_free(&file);
        return false;
    }
    for (int v = 0; v < m->nvars; v++) {
        const IrVar *var = &m->vars[v];
        const StTensor *t = var->kind == IR_VAR_PARAM ? st_find(&file, var->name) : NULL;
        if (!t)
            continue;
        const RtVar *rv = &store->vars[v];
        if (t->dtype == ST_F64 && rv->dtype == DT_F64) {
            memcpy(rt_var_data(store, v), t->data, t->nbytes);
            continue;
        }
        float *values = xmalloc((size_t)rv->numel * sizeof(float) + 1);
        BOCB_ASSERT(st_to_f32(t, values));
        if (rv->dtype == DT_F32) {
            memcpy(rt_var_data(store, v), values, (size_t)rv->numel * sizeof(float));
        } else {
            double *dst = rt_var_data(store, v);
            for (int64_t i = 0; i < rv->numel; i++)
                dst[i] = values[i];
        }
        free(values);
    }
    st_free(&file);
    *loaded = matched;
    *total = params;
    return true;
}
