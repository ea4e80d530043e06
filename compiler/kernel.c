/* kernel.c - building, checking, evaluating and printing fused kernels.
 *
 * Semantics that IEEE 754 and C leave open, fixed here and reproduced
 * exactly by the generated code (codegen.c):
 *
 *   max, min   NaN when either operand is NaN (torch.maximum/minimum). With
 *              two NaN operands kernel_eval returns a, but generated code
 *              may return either NaN. -0.0 counts as less than +0.0, so
 *              max(-0.0, +0.0) = +0.0 and min(-0.0, +0.0) = -0.0 in either
 *              order (llvm.maximum/llvm.minimum).
 *   sign       -1 or +1 for a nonzero operand, +0.0 for either zero, and
 *              the operand itself for a NaN.
 *   div        IEEE for floats. i32 division truncates toward zero as in
 *              C, x / 0 = 0, and INT32_MIN / -1 wraps to INT32_MIN.
 *   i32        add, sub, mul, neg and abs wrap modulo 2^32.
 *   cast       float to i32 truncates toward zero and saturates: NaN gives
 *              0, and out-of-range values give INT32_MIN or INT32_MAX
 *              (llvm.fptosi.sat). A cast to bool is `x != 0`, so a NaN
 *              becomes true. bool converts to 0 or 1.
 *   exp, log, pow, tanh, erf
 *              the C library's expf/exp, logf/log, powf/pow, tanhf/tanh,
 *              erff/erf.
 *   sigmoid    1 / (1 + exp(-x)) in the operand's type, with the
 *              library's exp.
 *   bool       stored as one byte. A load treats any nonzero byte as true,
 *              and a store writes 0 or 1.
 *
 * Non-NaN results of generated code and kernel_eval are identical bit for
 * bit, and a NaN result is NaN in both. The sign and payload of a NaN may
 * differ: IEEE 754 does not say which operand's NaN an operation returns,
 * LLVM may commute an operation or rewrite fsub -0.0, x into fneg x, and
 * x86 quiets a signaling NaN where a C library function may return it
 * unchanged. The tests compare NaN bits too, with every NaN input equal to
 * the quiet NaN that x86 generates (sign set, payload 0).
 *
 * Text form written by kernel_print (bocbc --emit=kernels): a header with
 * the kernel's name and extents, one line per argument with its dtype, its
 * access (in, out, or inout when an argument is both loaded and stored)
 * and its strides in elements, then one line per instruction. `B` is the
 * run-time batch size, and an instruction computed once before the loops
 * ends with `; uniform`. A K_DEQUANT prints the layout of its encoding
 * (`%1 = dequant f32 a0 numel 72 bits 4 bucket 256`), and a
 * KFORM_QUANTIZE kernel has no instructions but a line for its quantizer
 * after the header (`quantize f32 numel 72 bits 4 bucket 256 shift tag
 * 0`):
 *
 *     kernel fused_3 [B*128, 256] {
 *       arg a0 f32 in strides [256, 1]
 *       arg a1 f32 in strides [0, 0]
 *       arg a2 f32 inout strides [256, 1]
 *       %0 = load f32 a0
 *       %1 = load f32 a1  ; uniform
 *       %2 = const f32 0.5  ; uniform
 *       %3 = mul f32 %1, %2  ; uniform
 *       %4 = load f32 a2
 *       %5 = mul f32 %0, %3
 *       %6 = add f32 %4, %5
 *       store f32 a2, %6
 *     }
 */
#include "kernel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "../runtime/philox.h"
#include "../runtime/spatial.h"

/* ---- building ----------------------------------------------------------- */

static void check_kdim(KDim d)
{
    BOCB_ASSERT(d.value >= 0);
}

Kernel *kernel_new(const char *name, int rank, const KDim *extents)
{
    BOCB_ASSERT(rank >= 1 && rank <= KERNEL_MAX_RANK);
    Kernel *k = xcalloc(1, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name); /* truncates a long name */
    k->rank = rank;
    for (int d = 0; d < rank; d++) {
        check_kdim(extents[d]);
        k->extents[d] = extents[d];
    }
    return k;
}

void kernel_free(Kernel *k)
{
    if (!k)
        return;
    free(k->args);
    free(k->instrs);
    free(k);
}

int kernel_add_arg(Kernel *k, DType dtype, bool written, const KDim *strides)
{
    if (k->nargs + 1 > k->cap_args)
        vec_grow((void **)&k->args, &k->cap_args, k->nargs + 1, sizeof *k->args);
    KArg *arg = &k->args[k->nargs];
    memset(arg, 0, sizeof *arg);
    arg->dtype = dtype;
    arg->written = written;
    for (int d = 0; d < k->rank; d++) {
        check_kdim(strides[d]);
        arg->strides[d] = strides[d];
    }
    return k->nargs++;
}

static int push_instr(Kernel *k, KInstr in)
{
    BOCB_ASSERT(in.a < k->ninstrs && in.b < k->ninstrs && in.c < k->ninstrs);
    if (k->ninstrs + 1 > k->cap_instrs)
        vec_grow((void **)&k->instrs, &k->cap_instrs, k->ninstrs + 1,
                 sizeof *k->instrs);
    k->instrs[k->ninstrs] = in;
    return k->ninstrs++;
}

static KInstr make_instr(KOp op, DType dtype)
{
    KInstr in;
    memset(&in, 0, sizeof in);
    in.op = op;
    in.dtype = dtype;
    in.a = in.b = in.c = -1;
    in.arg = -1;
    return in;
}

int kernel_add(Kernel *k, KOp op, DType dtype, int a, int b, int c)
{
    BOCB_ASSERT(op != K_LOAD && op != K_STORE && op != K_CONST);
    KInstr in = make_instr(op, dtype);
    in.a = a;
    in.b = b;
    in.c = c;
    return push_instr(k, in);
}

int kernel_load(Kernel *k, int arg)
{
    BOCB_ASSERT(arg >= 0 && arg < k->nargs);
    KInstr in = make_instr(K_LOAD, k->args[arg].dtype);
    in.arg = arg;
    return push_instr(k, in);
}

int kernel_const(Kernel *k, DType dtype, double value)
{
    KInstr in = make_instr(K_CONST, dtype);
    in.imm = value;
    return push_instr(k, in);
}

int kernel_store(Kernel *k, int arg, int value)
{
    BOCB_ASSERT(arg >= 0 && arg < k->nargs);
    KInstr in = make_instr(K_STORE, k->args[arg].dtype);
    in.arg = arg;
    in.a = value;
    return push_instr(k, in);
}

int kernel_accum(Kernel *k, int arg, int value)
{
    BOCB_ASSERT(arg >= 0 && arg < k->nargs);
    KInstr in = make_instr(K_ACCUM, k->args[arg].dtype);
    in.arg = arg;
    in.a = value;
    return push_instr(k, in);
}

int kernel_dequant(Kernel *k, int arg, DType dtype, KQuantLayout layout)
{
    BOCB_ASSERT(arg >= 0 && arg < k->nargs);
    KInstr in = make_instr(K_DEQUANT, dtype);
    in.arg = arg;
    in.quant = layout;
    return push_instr(k, in);
}

/* The quantizer with a layout's bits and bucket; enough to decode. */
static RtQuantizer quantizer_of(KQuantLayout layout)
{
    RtQuantizer q = {.bits = layout.bits, .bucket = layout.bucket};
    return q;
}

static int64_t layout_buckets(KQuantLayout layout)
{
    RtQuantizer q = quantizer_of(layout);
    return rt_quant_buckets(&q, layout.numel);
}

Kernel *kernel_quantize_new(const char *name, const KQuantize *q)
{
    KDim buckets = {layout_buckets(q->layout), false};
    Kernel *k = kernel_new(name, 1, &buckets);
    k->form = KFORM_QUANTIZE;
    k->quantize = *q;
    KDim per_bucket = {q->layout.bucket, false}, none = {0, false};
    kernel_add_arg(k, q->dtype, false, &per_bucket); /* KQ_X */
    kernel_add_arg(k, q->dtype, false, &none);       /* KQ_KEY */
    kernel_add_arg(k, q->dtype, false, &none);       /* KQ_STEP */
    kernel_add_arg(k, DT_I32, true, &none);          /* KQ_WORDS */
    kernel_finalize(k);
    return k;
}

bool kernel_quantize_parallel(const Kernel *k)
{
    BOCB_ASSERT(k->form == KFORM_QUANTIZE);
    const KQuantLayout *l = &k->quantize.layout;
    return (l->bucket * l->bits) % 8 == 0 || layout_buckets(*l) <= 1;
}

const char *kop_name(KOp op)
{
    switch (op) {
    case K_LOAD: return "load";
    case K_CONST: return "const";
    case K_BATCH: return "batch";
    case K_DEQUANT: return "dequant";
    case K_NEG: return "neg";
    case K_ABS: return "abs";
    case K_SIGN: return "sign";
    case K_SQRT: return "sqrt";
    case K_EXP: return "exp";
    case K_LOG: return "log";
    case K_TANH: return "tanh";
    case K_ERF: return "erf";
    case K_SIGMOID: return "sigmoid";
    case K_FLOOR: return "floor";
    case K_NOT: return "not";
    case K_CAST: return "cast";
    case K_ADD: return "add";
    case K_SUB: return "sub";
    case K_MUL: return "mul";
    case K_DIV: return "div";
    case K_POW: return "pow";
    case K_MAX: return "max";
    case K_MIN: return "min";
    case K_LT: return "lt";
    case K_LE: return "le";
    case K_GT: return "gt";
    case K_GE: return "ge";
    case K_EQ: return "eq";
    case K_NE: return "ne";
    case K_AND: return "and";
    case K_OR: return "or";
    case K_RANDOM: return "random";
    case K_SELECT: return "select";
    case K_STORE: return "store";
    case K_ACCUM: return "accum";
    }
    BOCB_UNREACHABLE("KOp");
}

/* ---- checking ----------------------------------------------------------- */

static bool is_float(DType dt)
{
    return dt == DT_F32 || dt == DT_F64;
}

/* Returns how many operands (a, b, c in that order) the op takes. */
static int operand_count(KOp op)
{
    switch (op) {
    case K_LOAD:
    case K_CONST:
    case K_BATCH:
    case K_DEQUANT:
        return 0;
    case K_NEG: case K_ABS: case K_SIGN: case K_SQRT: case K_EXP:
    case K_LOG: case K_TANH: case K_FLOOR: case K_NOT: case K_CAST:
    case K_ERF: case K_SIGMOID:
    case K_STORE: case K_ACCUM:
        return 1;
    case K_ADD: case K_SUB: case K_MUL: case K_DIV: case K_POW:
    case K_MAX: case K_MIN:
    case K_LT: case K_LE: case K_GT: case K_GE: case K_EQ: case K_NE:
    case K_AND: case K_OR: case K_RANDOM:
        return 2;
    case K_SELECT:
        return 3;
    }
    BOCB_UNREACHABLE("KOp");
}

static void check_layout(KQuantLayout layout)
{
    BOCB_ASSERT(layout.bits >= RT_QUANT_MIN_BITS && layout.bits <= RT_QUANT_MAX_BITS);
    BOCB_ASSERT(layout.bucket >= 1 && layout.numel >= 0);
}

/* Returns true when an extent may exceed 1 for some batch size. */
static bool extent_may_exceed_one(KDim e)
{
    return e.value > 1 || (e.times_batch && e.value > 0);
}

static void check_instr(const Kernel *k, int i, int *stores, bool *accumulated)
{
    const KInstr *in = &k->instrs[i];
    int n = operand_count(in->op);
    const int ops[3] = {in->a, in->b, in->c};
    for (int j = 0; j < 3; j++) {
        if (j < n)
            BOCB_ASSERT(ops[j] >= 0 && ops[j] < i);
        else
            BOCB_ASSERT(ops[j] == -1);
    }
    DType dt = in->dtype;
    DType da = n >= 1 ? k->instrs[in->a].dtype : dt;
    DType db = n >= 2 ? k->instrs[in->b].dtype : dt;

    switch (in->op) {
    case K_LOAD:
        BOCB_ASSERT(in->arg >= 0 && in->arg < k->nargs);
        BOCB_ASSERT(dt == k->args[in->arg].dtype);
        break;
    case K_CONST:
        if (dt == DT_I32)
            BOCB_ASSERT(in->imm == floor(in->imm) && in->imm >= INT32_MIN &&
                        in->imm <= INT32_MAX);
        if (dt == DT_BOOL)
            BOCB_ASSERT(in->imm == 0 || in->imm == 1);
        break;
    case K_BATCH:
        BOCB_ASSERT(dt != DT_BOOL);
        break;
    case K_DEQUANT:
        BOCB_ASSERT(in->arg >= 0 && in->arg < k->nargs);
        BOCB_ASSERT(k->args[in->arg].dtype == DT_I32 && !k->args[in->arg].written);
        BOCB_ASSERT(is_float(dt));
        check_layout(in->quant);
        break;
    case K_NEG:
    case K_ABS:
    case K_SIGN:
        BOCB_ASSERT(dt != DT_BOOL && da == dt);
        break;
    case K_SQRT: case K_EXP: case K_LOG: case K_TANH: case K_FLOOR:
    case K_ERF: case K_SIGMOID:
        BOCB_ASSERT(is_float(dt) && da == dt);
        break;
    case K_NOT:
        BOCB_ASSERT(dt == DT_BOOL && da == DT_BOOL);
        break;
    case K_CAST:
        break;
    case K_ADD: case K_SUB: case K_MUL: case K_DIV: case K_MAX: case K_MIN:
        BOCB_ASSERT(dt != DT_BOOL && da == dt && db == dt);
        break;
    case K_POW:
    case K_RANDOM:
        BOCB_ASSERT(is_float(dt) && da == dt && db == dt);
        break;
    case K_LT: case K_LE: case K_GT: case K_GE: case K_EQ: case K_NE:
        BOCB_ASSERT(dt == DT_BOOL && da == db);
        break;
    case K_AND:
    case K_OR:
        BOCB_ASSERT(dt == DT_BOOL && da == DT_BOOL && db == DT_BOOL);
        break;
    case K_SELECT:
        BOCB_ASSERT(k->instrs[in->c].dtype == DT_BOOL && da == dt && db == dt);
        break;
    case K_STORE:
        BOCB_ASSERT(in->arg >= 0 && in->arg < k->nargs);
        BOCB_ASSERT(k->args[in->arg].written);
        BOCB_ASSERT(dt == k->args[in->arg].dtype && da == dt);
        stores[in->arg]++;
        break;
    case K_ACCUM:
        BOCB_ASSERT(in->arg >= 0 && in->arg < k->nargs);
        BOCB_ASSERT(k->args[in->arg].written && is_float(dt));
        BOCB_ASSERT(dt == k->args[in->arg].dtype && da == dt);
        for (int d = 0; d < k->rank; d++)
            BOCB_ASSERT(k->args[in->arg].strides[d].value == 0);
        stores[in->arg]++;
        accumulated[in->arg] = true;
        break;
    }
}

/* A load is uniform when every point reads the same element and that
 * element does not change while the kernel runs. A load of an argument
 * that the kernel also writes is never hoisted, so it reads the value
 * stored by an earlier point, as in kernel_eval. */
static bool load_is_uniform(const Kernel *k, int arg)
{
    if (k->args[arg].written)
        return false;
    for (int d = 0; d < k->rank; d++)
        if (k->args[arg].strides[d].value != 0)
            return false;
    return true;
}

/* The invariants of a KFORM_QUANTIZE kernel, which has no instructions. */
static void check_quantize(const Kernel *k)
{
    const KQuantize *q = &k->quantize;
    BOCB_ASSERT(is_float(q->dtype));
    check_layout(q->layout);
    BOCB_ASSERT(q->rounding >= RT_ROUND_NEAREST && q->rounding <= RT_ROUND_SHIFT);
    BOCB_ASSERT(q->tag < 0x80000000u);
    BOCB_ASSERT(k->rank == 1 && k->ninstrs == 0 && k->nargs == KQ_NARGS);
    BOCB_ASSERT(!k->extents[0].times_batch &&
                k->extents[0].value == layout_buckets(q->layout));
    for (int a = 0; a < KQ_NARGS; a++) {
        BOCB_ASSERT(k->args[a].dtype == (a == KQ_WORDS ? DT_I32 : q->dtype));
        BOCB_ASSERT(k->args[a].written == (a == KQ_WORDS));
    }
}

void kernel_finalize(Kernel *k)
{
    BOCB_ASSERT(k->rank >= 1 && k->rank <= KERNEL_MAX_RANK);
    for (int d = 0; d < k->rank; d++)
        check_kdim(k->extents[d]);
    if (k->form == KFORM_QUANTIZE) {
        check_quantize(k);
        return;
    }
    BOCB_ASSERT(k->form == KFORM_POINTS);

    int *stores = xcalloc((size_t)k->nargs + 1, sizeof *stores);
    bool *accumulated = xcalloc((size_t)k->nargs + 1, sizeof *accumulated);
    for (int i = 0; i < k->ninstrs; i++)
        check_instr(k, i, stores, accumulated);

    for (int a = 0; a < k->nargs; a++) {
        const KArg *arg = &k->args[a];
        BOCB_ASSERT(stores[a] == (arg->written ? 1 : 0));
        /* Two points storing to one element would make the result depend
         * on the iteration order, and a parallel split would race. */
        if (arg->written && !accumulated[a])
            for (int d = 0; d < k->rank; d++)
                BOCB_ASSERT(arg->strides[d].value != 0 ||
                            !extent_may_exceed_one(k->extents[d]));
    }
    free(stores);
    free(accumulated);

    for (int i = 0; i < k->ninstrs; i++) {
        KInstr *in = &k->instrs[i];
        switch (in->op) {
        case K_LOAD:
        case K_DEQUANT:
            in->uniform = load_is_uniform(k, in->arg);
            break;
        case K_CONST:
        case K_BATCH:
            in->uniform = true;
            break;
        case K_STORE:
        case K_RANDOM:
        case K_ACCUM:
            in->uniform = false;
            break;
        default: {
            int n = operand_count(in->op);
            const int ops[3] = {in->a, in->b, in->c};
            in->uniform = true;
            for (int j = 0; j < n; j++)
                in->uniform = in->uniform && k->instrs[ops[j]].uniform;
            break;
        }
        }
    }
}

static int64_t kdim_value(KDim d, int64_t batch)
{
    return d.times_batch ? d.value * batch : d.value;
}

int64_t kernel_outer_extent(const Kernel *k, int64_t batch)
{
    return kdim_value(k->extents[0], batch);
}

/* ---- the reference evaluator -------------------------------------------- */

typedef union KValue {
    float f32;
    double f64;
    int32_t i32;
    bool b;
} KValue;

static float max_f32(float a, float b)
{
    if (isnan(a))
        return a;
    if (isnan(b))
        return b;
    if (a == b) /* equal values differ only in the sign of a zero */
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static float min_f32(float a, float b)
{
    if (isnan(a))
        return a;
    if (isnan(b))
        return b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static double max_f64(double a, double b)
{
    if (isnan(a))
        return a;
    if (isnan(b))
        return b;
    if (a == b)
        return signbit(a) ? b : a;
    return a > b ? a : b;
}

static double min_f64(double a, double b)
{
    if (isnan(a))
        return a;
    if (isnan(b))
        return b;
    if (a == b)
        return signbit(a) ? a : b;
    return a < b ? a : b;
}

static float sign_f32(float x)
{
    if (x > 0)
        return 1.0f;
    if (x < 0)
        return -1.0f;
    return x == 0 ? 0.0f : x;
}

static double sign_f64(double x)
{
    if (x > 0)
        return 1.0;
    if (x < 0)
        return -1.0;
    return x == 0 ? 0.0 : x;
}

static float unary_f32(KOp op, float x)
{
    switch (op) {
    case K_NEG: return -x;
    case K_ABS: return fabsf(x);
    case K_SIGN: return sign_f32(x);
    case K_SQRT: return sqrtf(x);
    case K_EXP: return expf(x);
    case K_LOG: return logf(x);
    case K_TANH: return tanhf(x);
    case K_ERF: return erff(x);
    case K_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case K_FLOOR: return floorf(x);
    default: BOCB_UNREACHABLE("f32 unary op");
    }
}

static double unary_f64(KOp op, double x)
{
    switch (op) {
    case K_NEG: return -x;
    case K_ABS: return fabs(x);
    case K_SIGN: return sign_f64(x);
    case K_SQRT: return sqrt(x);
    case K_EXP: return exp(x);
    case K_LOG: return log(x);
    case K_TANH: return tanh(x);
    case K_ERF: return erf(x);
    case K_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case K_FLOOR: return floor(x);
    default: BOCB_UNREACHABLE("f64 unary op");
    }
}

/* i32 arithmetic goes through uint32_t so that overflow wraps instead of
 * being undefined; gcc converts an out-of-range uint32_t to int32_t modulo
 * 2^32. */
static int32_t wrap_i32(uint32_t x)
{
    return (int32_t)x;
}

static int32_t unary_i32(KOp op, int32_t x)
{
    switch (op) {
    case K_NEG: return wrap_i32(0u - (uint32_t)x);
    case K_ABS: return x < 0 ? wrap_i32(0u - (uint32_t)x) : x;
    case K_SIGN:
        if (x > 0)
            return 1;
        return x < 0 ? -1 : 0;
    default: BOCB_UNREACHABLE("i32 unary op");
    }
}

static float binary_f32(KOp op, float a, float b)
{
    switch (op) {
    case K_ADD: return a + b;
    case K_SUB: return a - b;
    case K_MUL: return a * b;
    case K_DIV: return a / b;
    case K_POW: return powf(a, b);
    case K_MAX: return max_f32(a, b);
    case K_MIN: return min_f32(a, b);
    default: BOCB_UNREACHABLE("f32 binary op");
    }
}

static double binary_f64(KOp op, double a, double b)
{
    switch (op) {
    case K_ADD: return a + b;
    case K_SUB: return a - b;
    case K_MUL: return a * b;
    case K_DIV: return a / b;
    case K_POW: return pow(a, b);
    case K_MAX: return max_f64(a, b);
    case K_MIN: return min_f64(a, b);
    default: BOCB_UNREACHABLE("f64 binary op");
    }
}

static int32_t binary_i32(KOp op, int32_t a, int32_t b)
{
    switch (op) {
    case K_ADD: return wrap_i32((uint32_t)a + (uint32_t)b);
    case K_SUB: return wrap_i32((uint32_t)a - (uint32_t)b);
    case K_MUL: return wrap_i32((uint32_t)a * (uint32_t)b);
    case K_DIV:
        if (b == 0)
            return 0;
        if (a == INT32_MIN && b == -1)
            return INT32_MIN;
        return a / b;
    case K_MAX: return a > b ? a : b;
    case K_MIN: return a < b ? a : b;
    default: BOCB_UNREACHABLE("i32 binary op");
    }
}

/* Compares two values of one dtype. The float operators are C's: every
 * comparison with a NaN is false except `!=`, which is true. */
static bool compare(KOp op, DType dt, KValue a, KValue b)
{
    double x, y;
    switch (dt) {
    case DT_F32: x = a.f32; y = b.f32; break; /* exact in double */
    case DT_F64: x = a.f64; y = b.f64; break;
    case DT_I32: x = a.i32; y = b.i32; break;
    case DT_BOOL: x = a.b; y = b.b; break;
    default: BOCB_UNREACHABLE("dtype");
    }
    switch (op) {
    case K_LT: return x < y;
    case K_LE: return x <= y;
    case K_GT: return x > y;
    case K_GE: return x >= y;
    case K_EQ: return x == y;
    case K_NE: return x != y;
    default: BOCB_UNREACHABLE("comparison op");
    }
}

/* Converts a float to i32 as llvm.fptosi.sat does. */
static int32_t float_to_i32(double x)
{
    if (isnan(x))
        return 0;
    if (x >= 2147483648.0)
        return INT32_MAX;
    if (x <= -2147483649.0)
        return INT32_MIN;
    return (int32_t)x;
}

static KValue cast_value(DType to, DType from, KValue v)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (from) {
    case DT_F32:
        switch (to) {
        case DT_F32: r.f32 = v.f32; break;
        case DT_F64: r.f64 = v.f32; break;
        case DT_I32: r.i32 = float_to_i32(v.f32); break;
        case DT_BOOL: r.b = v.f32 != 0; break;
        }
        break;
    case DT_F64:
        switch (to) {
        case DT_F32: r.f32 = (float)v.f64; break;
        case DT_F64: r.f64 = v.f64; break;
        case DT_I32: r.i32 = float_to_i32(v.f64); break;
        case DT_BOOL: r.b = v.f64 != 0; break;
        }
        break;
    case DT_I32:
        switch (to) {
        case DT_F32: r.f32 = (float)v.i32; break;
        case DT_F64: r.f64 = v.i32; break;
        case DT_I32: r.i32 = v.i32; break;
        case DT_BOOL: r.b = v.i32 != 0; break;
        }
        break;
    case DT_BOOL:
        switch (to) {
        case DT_F32: r.f32 = v.b ? 1.0f : 0.0f; break;
        case DT_F64: r.f64 = v.b ? 1.0 : 0.0; break;
        case DT_I32: r.i32 = v.b ? 1 : 0; break;
        case DT_BOOL: r.b = v.b; break;
        }
        break;
    }
    return r;
}

static KValue const_value(DType dt, double imm)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (dt) {
    case DT_F32: r.f32 = (float)imm; break;
    case DT_F64: r.f64 = imm; break;
    case DT_I32: r.i32 = (int32_t)imm; break; /* integral, checked by finalize */
    case DT_BOOL: r.b = imm != 0; break;
    }
    return r;
}

static KValue batch_value(DType dt, int64_t batch)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (dt) {
    case DT_F32: r.f32 = (float)batch; break;
    case DT_F64: r.f64 = (double)batch; break;
    case DT_I32: r.i32 = wrap_i32((uint32_t)batch); break; /* LLVM trunc */
    case DT_BOOL: BOCB_UNREACHABLE("bool batch");
    }
    return r;
}

static KValue load_value(DType dt, const void *base, int64_t offset)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (dt) {
    case DT_F32: r.f32 = ((const float *)base)[offset]; break;
    case DT_F64: r.f64 = ((const double *)base)[offset]; break;
    case DT_I32: r.i32 = ((const int32_t *)base)[offset]; break;
    case DT_BOOL: r.b = ((const uint8_t *)base)[offset] != 0; break;
    }
    return r;
}

static void store_value(DType dt, void *base, int64_t offset, KValue v)
{
    switch (dt) {
    case DT_F32: ((float *)base)[offset] = v.f32; break;
    case DT_F64: ((double *)base)[offset] = v.f64; break;
    case DT_I32: ((int32_t *)base)[offset] = v.i32; break;
    case DT_BOOL: ((uint8_t *)base)[offset] = v.b ? 1 : 0; break;
    }
}

static KValue eval_unary(KOp op, DType dt, KValue a)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (dt) {
    case DT_F32: r.f32 = unary_f32(op, a.f32); break;
    case DT_F64: r.f64 = unary_f64(op, a.f64); break;
    case DT_I32: r.i32 = unary_i32(op, a.i32); break;
    case DT_BOOL: BOCB_UNREACHABLE("bool unary op");
    }
    return r;
}

static KValue eval_binary(KOp op, DType dt, KValue a, KValue b)
{
    KValue r;
    memset(&r, 0, sizeof r);
    switch (dt) {
    case DT_F32: r.f32 = binary_f32(op, a.f32, b.f32); break;
    case DT_F64: r.f64 = binary_f64(op, a.f64, b.f64); break;
    case DT_I32: r.i32 = binary_i32(op, a.i32, b.i32); break;
    case DT_BOOL: BOCB_UNREACHABLE("bool binary op");
    }
    return r;
}

/* Runs every instruction once at the point whose element offset in
 * argument a is offsets[a]. */
static void eval_point(const Kernel *k, void *const *args,
                       const int64_t *offsets, int64_t point, int64_t batch,
                       KValue *vals, double *sums)
{
    for (int i = 0; i < k->ninstrs; i++) {
        const KInstr *in = &k->instrs[i];
        KValue r;
        memset(&r, 0, sizeof r);
        switch (in->op) {
        case K_LOAD:
            r = load_value(in->dtype, args[in->arg], offsets[in->arg]);
            break;
        case K_CONST:
            r = const_value(in->dtype, in->imm);
            break;
        case K_BATCH:
            r = batch_value(in->dtype, batch);
            break;
        case K_DEQUANT: {
            RtQuantizer q = quantizer_of(in->quant);
            rt_quant_decode_at(&q, in->dtype, in->quant.numel, args[in->arg],
                               offsets[in->arg], in->dtype == DT_F32 ? (void *)&r.f32
                                                                     : (void *)&r.f64);
            break;
        }
        case K_NEG: case K_ABS: case K_SIGN: case K_SQRT: case K_EXP:
        case K_LOG: case K_TANH: case K_FLOOR: case K_ERF: case K_SIGMOID:
            r = eval_unary(in->op, in->dtype, vals[in->a]);
            break;
        case K_NOT:
            r.b = !vals[in->a].b;
            break;
        case K_CAST:
            r = cast_value(in->dtype, k->instrs[in->a].dtype, vals[in->a]);
            break;
        case K_ADD: case K_SUB: case K_MUL: case K_DIV: case K_POW:
        case K_MAX: case K_MIN:
            r = eval_binary(in->op, in->dtype, vals[in->a], vals[in->b]);
            break;
        case K_LT: case K_LE: case K_GT: case K_GE: case K_EQ: case K_NE:
            r.b = compare(in->op, k->instrs[in->a].dtype, vals[in->a],
                          vals[in->b]);
            break;
        case K_AND:
            r.b = vals[in->a].b && vals[in->b].b;
            break;
        case K_OR:
            r.b = vals[in->a].b || vals[in->b].b;
            break;
        case K_SELECT:
            r = vals[in->c].b ? vals[in->a] : vals[in->b];
            break;
        case K_RANDOM:
            if (in->dtype == DT_F32)
                r.f32 = philox_random_f32(vals[in->a].f32, vals[in->b].f32, (uint64_t)point);
            else
                r.f64 = philox_random_f64(vals[in->a].f64, vals[in->b].f64, (uint64_t)point);
            break;
        case K_STORE:
            store_value(in->dtype, args[in->arg], offsets[in->arg], vals[in->a]);
            break;
        case K_ACCUM:
            sums[i] += in->dtype == DT_F32 ? (double)vals[in->a].f32 : vals[in->a].f64;
            break;
        }
        vals[i] = r;
    }
}

/* Runs every point of [begin, end) in row-major order (kernel_eval). */
static void eval_points(const Kernel *k, void *const *args, int64_t batch, int64_t begin,
                        int64_t end, const int64_t *extents, double *sums)
{
    KValue *vals = xcalloc((size_t)k->ninstrs + 1, sizeof *vals);
    int64_t *offsets = xcalloc((size_t)k->nargs + 1, sizeof *offsets);
    int64_t index[KERNEL_MAX_RANK] = {0};
    index[0] = begin;

    for (;;) {
        for (int a = 0; a < k->nargs; a++) {
            int64_t offset = 0;
            for (int d = 0; d < k->rank; d++)
                offset += index[d] * kdim_value(k->args[a].strides[d], batch);
            offsets[a] = offset;
        }
        /* The row-major linear index of the point, for K_RANDOM. */
        int64_t point = 0;
        for (int d = 0; d < k->rank; d++)
            point = point * extents[d] + index[d];
        eval_point(k, args, offsets, point, batch, vals, sums);

        /* Advance the index like an odometer, innermost axis fastest. */
        int d = k->rank - 1;
        while (d >= 0) {
            index[d]++;
            if (index[d] < (d == 0 ? end : extents[d]))
                break;
            index[d] = 0;
            d--;
        }
        if (d < 0)
            break;
    }
    free(offsets);
    free(vals);
}

/* Runs buckets [begin, end) of a KFORM_QUANTIZE kernel. The call that
 * encodes the last bucket also zeroes the padding of the last word. */
static void eval_quantize(const Kernel *k, void *const *args, int64_t begin, int64_t end)
{
    const KQuantize *kq = &k->quantize;
    DType dt = kq->dtype;
    RtQuantizer q = quantizer_of(kq->layout);
    q.rounding = kq->rounding;
    q.key = rt_quant_key(dt, args[KQ_KEY], kq->tag);
    q.step = rt_quant_step(dt, args[KQ_STEP]);
    q.tag = kq->tag;
    uint8_t *out = args[KQ_WORDS];
    for (int64_t b = begin; b < end; b++)
        rt_quant_encode_bucket(&q, dt, kq->layout.numel, b, args[KQ_X], out);
    if (begin < end && end == k->extents[0].value) {
        size_t used = rt_quant_encoded_size(&q, dt, kq->layout.numel);
        size_t words = (size_t)rt_quant_words(q.bits, q.bucket, dt, kq->layout.numel);
        memset(out + used, 0, words * sizeof(int32_t) - used);
    }
}

void kernel_eval(const Kernel *k, void *const *args, int64_t batch,
                 int64_t begin, int64_t end)
{
    if (k->form == KFORM_QUANTIZE) {
        eval_quantize(k, args, begin, end);
        return;
    }
    int64_t extents[KERNEL_MAX_RANK];
    bool empty = begin >= end;
    for (int d = 0; d < k->rank; d++) {
        extents[d] = kdim_value(k->extents[d], batch);
        empty |= d > 0 && extents[d] <= 0;
    }
    double *sums = xcalloc((size_t)k->ninstrs + 1, sizeof *sums);
    if (!empty)
        eval_points(k, args, batch, begin, end, extents, sums);

    /* An empty range still writes its sums, which are 0. */
    for (int i = 0; i < k->ninstrs; i++) {
        const KInstr *in = &k->instrs[i];
        if (in->op != K_ACCUM)
            continue;
        KValue total;
        memset(&total, 0, sizeof total);
        if (in->dtype == DT_F32)
            total.f32 = (float)sums[i];
        else
            total.f64 = sums[i];
        store_value(in->dtype, args[in->arg], 0, total);
    }
    free(sums);
}

/* ---- printing ----------------------------------------------------------- */

static void print_kdim(FILE *out, KDim d)
{
    if (d.times_batch && d.value == 1)
        fputs("B", out);
    else if (d.times_batch && d.value != 0)
        fprintf(out, "B*%lld", (long long)d.value);
    else
        fprintf(out, "%lld", (long long)d.value);
}

static void print_kdims(FILE *out, const KDim *dims, int n)
{
    fputc('[', out);
    for (int d = 0; d < n; d++) {
        if (d > 0)
            fputs(", ", out);
        print_kdim(out, dims[d]);
    }
    fputc(']', out);
}

/* Prints a constant with the fewest digits that read back to the same
 * value in its dtype. */
static void print_imm(FILE *out, DType dt, double imm)
{
    if (isnan(imm)) {
        fputs(signbit(imm) ? "-nan" : "nan", out);
        return;
    }
    if (isinf(imm)) {
        fputs(imm < 0 ? "-inf" : "inf", out);
        return;
    }
    char buf[64];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, imm);
        double back = strtod(buf, NULL);
        bool same = dt == DT_F32 ? (float)back == (float)imm : back == imm;
        if (same)
            break;
    }
    fputs(buf, out);
}

static const char *arg_access(const Kernel *k, int arg)
{
    if (!k->args[arg].written)
        return "in";
    for (int i = 0; i < k->ninstrs; i++)
        if (k->instrs[i].op == K_LOAD && k->instrs[i].arg == arg)
            return "inout";
    return "out";
}

static void print_layout(FILE *out, KQuantLayout layout)
{
    fprintf(out, "numel %lld bits %d bucket %lld", (long long)layout.numel, layout.bits,
            (long long)layout.bucket);
}

void kernel_print(FILE *out, const Kernel *k)
{
    fprintf(out, "kernel %s ", k->name);
    print_kdims(out, k->extents, k->rank);
    fputs(" {\n", out);
    if (k->form == KFORM_QUANTIZE) {
        const KQuantize *q = &k->quantize;
        fprintf(out, "  quantize %s ", dtype_name(q->dtype));
        print_layout(out, q->layout);
        fprintf(out, " %s tag %u\n", rt_rounding_name(q->rounding), (unsigned)q->tag);
    }

    for (int a = 0; a < k->nargs; a++) {
        fprintf(out, "  arg a%d %s %s strides ", a, dtype_name(k->args[a].dtype),
                arg_access(k, a));
        print_kdims(out, k->args[a].strides, k->rank);
        fputc('\n', out);
    }

    for (int i = 0; i < k->ninstrs; i++) {
        const KInstr *in = &k->instrs[i];
        const char *dt = dtype_name(in->dtype);
        fputs("  ", out);
        switch (in->op) {
        case K_LOAD:
            fprintf(out, "%%%d = load %s a%d", i, dt, in->arg);
            break;
        case K_CONST:
            fprintf(out, "%%%d = const %s ", i, dt);
            print_imm(out, in->dtype, in->imm);
            break;
        case K_BATCH:
            fprintf(out, "%%%d = batch %s", i, dt);
            break;
        case K_DEQUANT:
            fprintf(out, "%%%d = dequant %s a%d ", i, dt, in->arg);
            print_layout(out, in->quant);
            break;
        case K_STORE:
            fprintf(out, "store %s a%d, %%%d", dt, in->arg, in->a);
            break;
        case K_ACCUM:
            fprintf(out, "accum %s a%d, %%%d", dt, in->arg, in->a);
            break;
        case K_SELECT:
            fprintf(out, "%%%d = select %s %%%d, %%%d, %%%d", i, dt, in->c,
                    in->a, in->b);
            break;
        default:
            fprintf(out, "%%%d = %s %s %%%d", i, kop_name(in->op), dt, in->a);
            if (in->b >= 0)
                fprintf(out, ", %%%d", in->b);
            break;
        }
        if (in->uniform)
            fputs("  ; uniform", out);
        fputc('\n', out);
    }
    fputs("}\n", out);
}
