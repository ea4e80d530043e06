/* shape.c - element types and shapes. */
#include "shape.h"

#include <stdio.h>
#include <string.h>

#include "base.h"

size_t dtype_size(DType dt)
{
    switch (dt) {
    case DT_F32: return 4;
    case DT_F64: return 8;
    case DT_I32: return 4;
    case DT_BOOL: return 1;
    }
    BOCB_UNREACHABLE("dtype");
}

const char *dtype_name(DType dt)
{
    switch (dt) {
    case DT_F32: return "f32";
    case DT_F64: return "f64";
    case DT_I32: return "i32";
    case DT_BOOL: return "bool";
    }
    BOCB_UNREACHABLE("dtype");
}

Shape shape_scalar(void)
{
    Shape s;
    memset(&s, 0, sizeof s);
    s.batch_axis = -1;
    return s;
}

Shape shape_make(int rank, const int64_t *dims)
{
    BOCB_ASSERT(rank >= 0 && rank <= SHAPE_MAX_RANK);
    Shape s = shape_scalar();
    s.rank = rank;
    for (int i = 0; i < rank; i++)
        s.dims[i] = dims[i];
    return s;
}

int64_t shape_dim(const Shape *s, int axis, int64_t batch)
{
    BOCB_ASSERT(axis >= 0 && axis < s->rank);
    return axis == s->batch_axis ? s->dims[axis] * batch : s->dims[axis];
}

int64_t shape_numel(const Shape *s, int64_t batch)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= shape_dim(s, i, batch);
    return n;
}

bool shape_equal(const Shape *a, const Shape *b)
{
    if (a->rank != b->rank || a->batch_axis != b->batch_axis)
        return false;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

bool shape_size_ok(const Shape *s)
{
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) {
        if (s->dims[i] < 1 || __builtin_mul_overflow(n, s->dims[i], &n) ||
            n > SHAPE_MAX_ELEMENTS)
            return false;
    }
    return true;
}

char *shape_format(const Shape *s, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
#define EMIT(...)                                                             \
    do {                                                                      \
        if (used < size) {                                                    \
            int n_ = snprintf(buf + used, size - used, __VA_ARGS__);          \
            used += n_ > 0 ? (size_t)n_ : 0;                                  \
        }                                                                     \
    } while (0)
    EMIT("[");
    for (int i = 0; i < s->rank; i++) {
        if (i > 0)
            EMIT(", ");
        if (i == s->batch_axis && s->dims[i] == 1)
            EMIT("B");
        else if (i == s->batch_axis)
            EMIT("B*%lld", (long long)s->dims[i]);
        else
            EMIT("%lld", (long long)s->dims[i]);
    }
    EMIT("]");
#undef EMIT
    return buf;
}
