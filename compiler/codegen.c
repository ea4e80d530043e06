/* codegen.c - LLVM IR for fused kernels.
 *
 * Every kernel becomes two functions:
 *
 *     void @SYM(ptr %args, i64 %batch, i64 %begin, i64 %end)
 *     internal void @SYM.body(ptr noalias %a0, ..., i64 %batch, i64 %begin, i64 %end)
 *
 * @SYM has the RtKernelFn signature. It loads each argument's base pointer
 * once and calls @SYM.body, which is always inlined. The split lets the
 * pointers carry `noalias`, which the inliner turns into alias scopes on
 * every load and store, so the vectoriser needs no run-time overlap checks.
 * `noalias` is valid because the fusion pass passes a distinct buffer for
 * every argument, and an argument that is both loaded and stored is one
 * pointer.
 *
 * @SYM.body has these blocks:
 *
 *     entry    extents and strides, times the batch size where a KDim sets
 *              so. It returns when the iteration space is empty.
 *     hoisted  the uniform instructions, computed once.
 *     dN       the loop over axis N, outermost first and tested at the
 *              bottom, because the entry check guarantees one iteration.
 *              Loop N < rank-1 keeps one row pointer per argument and adds
 *              the argument's stride at the end of every iteration, so no
 *              loop multiplies an index by a stride except the innermost.
 *              The innermost loop addresses element `row + i * stride`,
 *              which is `row + i` for a unit stride: the form the loop
 *              vectoriser handles best.
 *     dN.end   the exit of loop N.
 *
 * A KFORM_QUANTIZE kernel has the same two functions, and its body is one
 * loop over the buckets [begin, end) (emit_quantize_body).
 *
 * Arithmetic follows kernel_eval exactly (see kernel.c for the semantics):
 * no fast-math flags, so no contraction into FMA and no reassociation.
 * exp, log, pow, tanh and erf are calls to the C library marked `nobuiltin`,
 * not LLVM intrinsics, because LLVM rewrites intrinsics in ways that change
 * the result: pow(x, 2.0) becomes x * x, which differs from glibc's powf
 * for subnormal results, and a constant operand is folded with the host's
 * double-precision function, rounded to float afterwards. The calls are
 * also marked `memory(none)`, since the kernels never read errno.
 */
#include "codegen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "../runtime/base.h"
#include "../runtime/spatial.h"

typedef struct Codegen {
    LLVMContextRef ctx;
    LLVMModuleRef module;
    LLVMBuilderRef builder;
    LLVMTypeRef t_void, t_i1, t_i8, t_i32, t_i64, t_f32, t_f64, t_ptr;
} Codegen;

/* The state of one kernel while its body is built. */
typedef struct KernelGen {
    Codegen *cg;
    const Kernel *k;
    LLVMValueRef fn;
    LLVMValueRef batch, begin, end;
    LLVMValueRef *base;                      /* per argument */
    LLVMValueRef extents[KERNEL_MAX_RANK];
    LLVMValueRef index[KERNEL_MAX_RANK];     /* loop indices at the current point */
    LLVMValueRef *strides;                   /* [arg * rank + axis] */
    bool *streamed;    /* per argument: accessed at a different element per point */
    LLVMValueRef *values;                    /* per instruction */
    LLVMValueRef *sums;  /* per K_ACCUM instruction: its f64 running sum, an alloca */
} KernelGen;

/* ---- small helpers ------------------------------------------------------ */

static LLVMTypeRef value_type(Codegen *cg, DType dt)
{
    switch (dt) {
    case DT_F32: return cg->t_f32;
    case DT_F64: return cg->t_f64;
    case DT_I32: return cg->t_i32;
    case DT_BOOL: return cg->t_i1;
    }
    BOCB_UNREACHABLE("dtype");
}

/* Returns the type of an element in memory: a bool is one byte. */
static LLVMTypeRef memory_type(Codegen *cg, DType dt)
{
    return dt == DT_BOOL ? cg->t_i8 : value_type(cg, dt);
}

static bool is_float(DType dt)
{
    return dt == DT_F32 || dt == DT_F64;
}

static LLVMValueRef const_i64(Codegen *cg, int64_t v)
{
    return LLVMConstInt(cg->t_i64, (unsigned long long)v, true);
}

static LLVMAttributeRef enum_attr(Codegen *cg, const char *name, uint64_t value)
{
    unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
    BOCB_ASSERT(kind != 0);
    return LLVMCreateEnumAttribute(cg->ctx, kind, value);
}

static void add_fn_attr(Codegen *cg, LLVMValueRef fn, const char *name)
{
    LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, enum_attr(cg, name, 0));
}

/* Adds attribute `name` to parameter `index` (0-based) of fn. */
static void add_param_attr(Codegen *cg, LLVMValueRef fn, int index, const char *name)
{
    LLVMAddAttributeAtIndex(fn, (LLVMAttributeIndex)index + 1, enum_attr(cg, name, 0));
}

/* Calls an overloaded LLVM intrinsic such as "llvm.maximum". */
static LLVMValueRef call_intrinsic(Codegen *cg, const char *name,
                                   LLVMTypeRef *overloads, int noverloads,
                                   LLVMValueRef *args, int nargs)
{
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
    BOCB_ASSERT(id != 0);
    LLVMValueRef fn = LLVMGetIntrinsicDeclaration(cg->module, id, overloads,
                                                  (size_t)noverloads);
    LLVMTypeRef fty = LLVMIntrinsicGetType(cg->ctx, id, overloads, (size_t)noverloads);
    return LLVMBuildCall2(cg->builder, fty, fn, args, (unsigned)nargs, "");
}

static LLVMValueRef call_unary_intrinsic(Codegen *cg, const char *name, LLVMValueRef x)
{
    LLVMTypeRef type = LLVMTypeOf(x);
    return call_intrinsic(cg, name, &type, 1, &x, 1);
}

static LLVMValueRef call_binary_intrinsic(Codegen *cg, const char *name,
                                          LLVMValueRef x, LLVMValueRef y)
{
    LLVMTypeRef type = LLVMTypeOf(x);
    LLVMValueRef args[2] = {x, y};
    return call_intrinsic(cg, name, &type, 1, args, 2);
}

/* Calls a C library math function (expf, pow, ...) whose parameters and
 * result all have the type of args[0]. See the file comment for why this
 * is a `nobuiltin` call and not an intrinsic. */
static LLVMValueRef call_libm(Codegen *cg, const char *name, LLVMValueRef *args,
                              int nargs)
{
    LLVMTypeRef type = LLVMTypeOf(args[0]);
    LLVMTypeRef params[2] = {type, type};
    LLVMTypeRef fty = LLVMFunctionType(type, params, (unsigned)nargs, false);
    LLVMValueRef fn = LLVMGetNamedFunction(cg->module, name);
    if (!fn) {
        fn = LLVMAddFunction(cg->module, name, fty);
        add_fn_attr(cg, fn, "nounwind");
    }
    LLVMValueRef call = LLVMBuildCall2(cg->builder, fty, fn, args, (unsigned)nargs, "");
    const char *attrs[] = {"nobuiltin", "nounwind", "willreturn"};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(attrs); i++)
        LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex,
                                 enum_attr(cg, attrs[i], 0));
    /* memory(none) is the `memory` attribute with the value 0. */
    LLVMAddCallSiteAttribute(call, LLVMAttributeFunctionIndex,
                             enum_attr(cg, "memory", 0));
    return call;
}

static bool stride_is_const(KDim d, int64_t value)
{
    return !d.times_batch && d.value == value;
}

static LLVMValueRef float_const(LLVMTypeRef type, double value)
{
    return LLVMConstReal(type, value);
}

/* ---- instructions ------------------------------------------------------- */

static LLVMValueRef emit_load(KernelGen *g, DType dt, LLVMValueRef ptr, const char *name)
{
    Codegen *cg = g->cg;
    LLVMValueRef v = LLVMBuildLoad2(cg->builder, memory_type(cg, dt), ptr, name);
    LLVMSetAlignment(v, (unsigned)dtype_size(dt));
    if (dt == DT_BOOL)
        v = LLVMBuildICmp(cg->builder, LLVMIntNE, v, LLVMConstInt(cg->t_i8, 0, false),
                          name);
    return v;
}

static void emit_store(KernelGen *g, DType dt, LLVMValueRef ptr, LLVMValueRef v)
{
    Codegen *cg = g->cg;
    if (dt == DT_BOOL)
        v = LLVMBuildZExt(cg->builder, v, cg->t_i8, "");
    LLVMValueRef st = LLVMBuildStore(cg->builder, v, ptr);
    LLVMSetAlignment(st, (unsigned)dtype_size(dt));
}

static LLVMValueRef emit_const(Codegen *cg, DType dt, double imm)
{
    switch (dt) {
    case DT_F32:
    case DT_F64:
        return float_const(value_type(cg, dt), imm);
    case DT_I32:
        return LLVMConstInt(cg->t_i32, (unsigned long long)(int64_t)imm, true);
    case DT_BOOL:
        return LLVMConstInt(cg->t_i1, imm != 0, false);
    }
    BOCB_UNREACHABLE("dtype");
}

static LLVMValueRef emit_batch(KernelGen *g, DType dt, const char *name)
{
    Codegen *cg = g->cg;
    if (is_float(dt))
        return LLVMBuildSIToFP(cg->builder, g->batch, value_type(cg, dt), name);
    BOCB_ASSERT(dt == DT_I32);
    return LLVMBuildTrunc(cg->builder, g->batch, cg->t_i32, name);
}

/* sign(x): -1 or +1 for nonzero x, +0.0 for either zero, x for a NaN. */
static LLVMValueRef emit_sign(Codegen *cg, DType dt, LLVMValueRef x, const char *name)
{
    LLVMBuilderRef b = cg->builder;
    LLVMTypeRef type = value_type(cg, dt);
    if (is_float(dt)) {
        LLVMValueRef zero = float_const(type, 0.0);
        LLVMValueRef zero_or_nan = LLVMBuildSelect(
            b, LLVMBuildFCmp(b, LLVMRealOEQ, x, zero, ""), zero, x, "");
        LLVMValueRef neg = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, x, zero, ""),
                                           float_const(type, -1.0), zero_or_nan, "");
        return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, x, zero, ""),
                               float_const(type, 1.0), neg, name);
    }
    LLVMValueRef zero = LLVMConstInt(type, 0, true);
    LLVMValueRef neg = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, x, zero, ""),
                                       LLVMConstInt(type, (unsigned long long)-1, true),
                                       zero, "");
    return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGT, x, zero, ""),
                           LLVMConstInt(type, 1, true), neg, name);
}

static LLVMValueRef emit_unary(Codegen *cg, KOp op, DType dt, LLVMValueRef x,
                               const char *name)
{
    LLVMBuilderRef b = cg->builder;
    bool f32 = dt == DT_F32;
    switch (op) {
    case K_NEG:
        if (is_float(dt))
            return LLVMBuildFNeg(b, x, name);
        return LLVMBuildSub(b, LLVMConstInt(cg->t_i32, 0, false), x, name);
    case K_ABS:
        if (is_float(dt))
            return call_unary_intrinsic(cg, "llvm.fabs", x);
        else {
            /* The i1 false: abs(INT32_MIN) wraps to INT32_MIN, not poison. */
            LLVMValueRef args[2] = {x, LLVMConstInt(cg->t_i1, 0, false)};
            LLVMTypeRef type = cg->t_i32;
            return call_intrinsic(cg, "llvm.abs", &type, 1, args, 2);
        }
    case K_SIGN:
        return emit_sign(cg, dt, x, name);
    case K_SQRT:
        return call_unary_intrinsic(cg, "llvm.sqrt", x);
    case K_FLOOR:
        return call_unary_intrinsic(cg, "llvm.floor", x);
    case K_EXP:
        return call_libm(cg, f32 ? "expf" : "exp", &x, 1);
    case K_LOG:
        return call_libm(cg, f32 ? "logf" : "log", &x, 1);
    case K_TANH:
        return call_libm(cg, f32 ? "tanhf" : "tanh", &x, 1);
    case K_ERF:
        return call_libm(cg, f32 ? "erff" : "erf", &x, 1);
    case K_SIGMOID: {
        LLVMValueRef minus = LLVMBuildFNeg(b, x, "");
        LLVMValueRef e = call_libm(cg, f32 ? "expf" : "exp", &minus, 1);
        LLVMValueRef one = float_const(value_type(cg, dt), 1.0);
        return LLVMBuildFDiv(b, one, LLVMBuildFAdd(b, one, e, ""), name);
    }
    case K_NOT:
        return LLVMBuildXor(b, x, LLVMConstInt(cg->t_i1, 1, false), name);
    default:
        BOCB_UNREACHABLE("unary op");
    }
}

/* i32 division as kernel_eval defines it: x / 0 = 0 and INT32_MIN / -1 =
 * INT32_MIN. Both cases divide by 1 instead, because sdiv by zero or that
 * overflow is undefined (and traps on x86). */
static LLVMValueRef emit_div_i32(Codegen *cg, LLVMValueRef x, LLVMValueRef y,
                                 const char *name)
{
    LLVMBuilderRef b = cg->builder;
    LLVMTypeRef t = cg->t_i32;
    LLVMValueRef zero = LLVMConstInt(t, 0, true);
    LLVMValueRef one = LLVMConstInt(t, 1, true);
    LLVMValueRef by_zero = LLVMBuildICmp(b, LLVMIntEQ, y, zero, "");
    LLVMValueRef overflow = LLVMBuildAnd(
        b, LLVMBuildICmp(b, LLVMIntEQ, x, LLVMConstInt(t, (unsigned long long)INT32_MIN, true), ""),
        LLVMBuildICmp(b, LLVMIntEQ, y, LLVMConstInt(t, (unsigned long long)-1, true), ""), "");
    LLVMValueRef divisor = LLVMBuildSelect(b, LLVMBuildOr(b, by_zero, overflow, ""), one, y, "");
    LLVMValueRef quotient = LLVMBuildSDiv(b, x, divisor, "");
    return LLVMBuildSelect(b, by_zero, zero, quotient, name);
}

static LLVMValueRef emit_arith(Codegen *cg, KOp op, DType dt, LLVMValueRef x,
                               LLVMValueRef y, const char *name)
{
    LLVMBuilderRef b = cg->builder;
    bool fp = is_float(dt);
    switch (op) {
    case K_ADD:
        return fp ? LLVMBuildFAdd(b, x, y, name) : LLVMBuildAdd(b, x, y, name);
    case K_SUB:
        return fp ? LLVMBuildFSub(b, x, y, name) : LLVMBuildSub(b, x, y, name);
    case K_MUL:
        return fp ? LLVMBuildFMul(b, x, y, name) : LLVMBuildMul(b, x, y, name);
    case K_DIV:
        return fp ? LLVMBuildFDiv(b, x, y, name) : emit_div_i32(cg, x, y, name);
    case K_POW: {
        LLVMValueRef args[2] = {x, y};
        return call_libm(cg, dt == DT_F32 ? "powf" : "pow", args, 2);
    }
    case K_MAX:
        return call_binary_intrinsic(cg, fp ? "llvm.maximum" : "llvm.smax", x, y);
    case K_MIN:
        return call_binary_intrinsic(cg, fp ? "llvm.minimum" : "llvm.smin", x, y);
    default:
        BOCB_UNREACHABLE("arithmetic op");
    }
}

/* Compares like C: a float comparison with a NaN operand is false, except
 * `!=` (unordered-or-not-equal), which is true. bool compares as 0 < 1. */
static LLVMValueRef emit_compare(Codegen *cg, KOp op, DType dt, LLVMValueRef x,
                                 LLVMValueRef y, const char *name)
{
    LLVMBuilderRef b = cg->builder;
    if (is_float(dt)) {
        LLVMRealPredicate pred;
        switch (op) {
        case K_LT: pred = LLVMRealOLT; break;
        case K_LE: pred = LLVMRealOLE; break;
        case K_GT: pred = LLVMRealOGT; break;
        case K_GE: pred = LLVMRealOGE; break;
        case K_EQ: pred = LLVMRealOEQ; break;
        case K_NE: pred = LLVMRealUNE; break;
        default: BOCB_UNREACHABLE("comparison op");
        }
        return LLVMBuildFCmp(b, pred, x, y, name);
    }
    bool is_signed = dt == DT_I32;
    LLVMIntPredicate pred;
    switch (op) {
    case K_LT: pred = is_signed ? LLVMIntSLT : LLVMIntULT; break;
    case K_LE: pred = is_signed ? LLVMIntSLE : LLVMIntULE; break;
    case K_GT: pred = is_signed ? LLVMIntSGT : LLVMIntUGT; break;
    case K_GE: pred = is_signed ? LLVMIntSGE : LLVMIntUGE; break;
    case K_EQ: pred = LLVMIntEQ; break;
    case K_NE: pred = LLVMIntNE; break;
    default: BOCB_UNREACHABLE("comparison op");
    }
    return LLVMBuildICmp(b, pred, x, y, name);
}

static LLVMValueRef emit_cast(Codegen *cg, DType to, DType from, LLVMValueRef x,
                              const char *name)
{
    LLVMBuilderRef b = cg->builder;
    LLVMTypeRef type = value_type(cg, to);
    if (to == from)
        return x;
    if (to == DT_BOOL) {
        if (is_float(from))
            return LLVMBuildFCmp(b, LLVMRealUNE, x, float_const(LLVMTypeOf(x), 0.0), name);
        return LLVMBuildICmp(b, LLVMIntNE, x, LLVMConstInt(LLVMTypeOf(x), 0, false), name);
    }
    if (from == DT_BOOL)
        return is_float(to) ? LLVMBuildUIToFP(b, x, type, name)
                            : LLVMBuildZExt(b, x, type, name);
    if (is_float(to) && is_float(from))
        return to == DT_F64 ? LLVMBuildFPExt(b, x, type, name)
                            : LLVMBuildFPTrunc(b, x, type, name);
    if (is_float(to))
        return LLVMBuildSIToFP(b, x, type, name);
    /* float to i32: saturating, NaN to 0, as kernel_eval defines it. */
    LLVMTypeRef overloads[2] = {cg->t_i32, LLVMTypeOf(x)};
    return call_intrinsic(cg, "llvm.fptosi.sat", overloads, 2, &x, 1);
}

/* The 32x32 -> 64-bit product of a and b, split into its high and low
 * words. */
static LLVMValueRef mul_hi_lo(Codegen *cg, uint32_t a, LLVMValueRef b, LLVMValueRef *lo)
{
    LLVMBuilderRef bld = cg->builder;
    LLVMValueRef wide = LLVMBuildMul(bld, const_i64(cg, a), LLVMBuildZExt(bld, b, cg->t_i64, ""), "");
    *lo = LLVMBuildTrunc(bld, wide, cg->t_i32, "");
    return LLVMBuildTrunc(bld, LLVMBuildLShr(bld, wide, const_i64(cg, 32), ""), cg->t_i32, "");
}

/* Philox4x32-10 (runtime/philox.c) inline: replaces the counter c[0..3]
 * with its block under the key words k0, k1. */
static void emit_philox(Codegen *cg, LLVMValueRef *c, LLVMValueRef k0, LLVMValueRef k1)
{
    LLVMBuilderRef b = cg->builder;
    for (int round = 0; round < 10; round++) {
        if (round > 0) {
            k0 = LLVMBuildAdd(b, k0, LLVMConstInt(cg->t_i32, 0x9E3779B9u, false), "");
            k1 = LLVMBuildAdd(b, k1, LLVMConstInt(cg->t_i32, 0xBB67AE85u, false), "");
        }
        LLVMValueRef lo0, lo1;
        LLVMValueRef hi0 = mul_hi_lo(cg, 0xD2511F53u, c[0], &lo0);
        LLVMValueRef hi1 = mul_hi_lo(cg, 0xCD9E8D57u, c[2], &lo1);
        c[0] = LLVMBuildXor(b, LLVMBuildXor(b, hi1, c[1], ""), k0, "");
        c[1] = lo1;
        c[2] = LLVMBuildXor(b, LLVMBuildXor(b, hi0, c[3], ""), k1, "");
        c[3] = lo0;
    }
}

/* Emits the double in [0, 1) from the top 53 bits of the words (hi, lo),
 * as runtime/philox.c and runtime/quant.c convert them. */
static LLVMValueRef emit_unit_f64(Codegen *cg, LLVMValueRef hi_word, LLVMValueRef lo_word,
                                  const char *name)
{
    LLVMBuilderRef b = cg->builder;
    LLVMValueRef hi = LLVMBuildShl(b, LLVMBuildZExt(b, hi_word, cg->t_i64, ""),
                                   const_i64(cg, 32), "");
    LLVMValueRef bits = LLVMBuildOr(b, hi, LLVMBuildZExt(b, lo_word, cg->t_i64, ""), "");
    LLVMValueRef top = LLVMBuildLShr(b, bits, const_i64(cg, 11), "");
    return LLVMBuildFMul(b, LLVMBuildUIToFP(b, top, cg->t_f64, ""),
                         float_const(cg->t_f64, 0x1p-53), name);
}

/* Splits a 64-bit value into its low and high 32-bit words. */
static void split_words(Codegen *cg, LLVMValueRef v, LLVMValueRef *lo, LLVMValueRef *hi)
{
    LLVMBuilderRef b = cg->builder;
    *lo = LLVMBuildTrunc(b, v, cg->t_i32, "");
    *hi = LLVMBuildTrunc(b, LLVMBuildLShr(b, v, const_i64(cg, 32), ""), cg->t_i32, "");
}

/* Emits a rank-0 step value as a counter word: saturated to [0, 2^32 - 1],
 * with NaN as 0, as philox.c and rt_quant_step convert it. */
static LLVMValueRef emit_step_word(Codegen *cg, LLVMValueRef step)
{
    LLVMTypeRef overloads[2] = {cg->t_i32, LLVMTypeOf(step)};
    return call_intrinsic(cg, "llvm.fptoui.sat", overloads, 2, &step, 1);
}

/* philox_random_f32/f64 (runtime/philox.c) inline: Philox4x32-10 of the
 * counter (index, step, 0) under the key bits of `key`, converted to a
 * uniform number in [0, 1) the same way. */
static LLVMValueRef emit_random(KernelGen *g, DType dt, LLVMValueRef key, LLVMValueRef step,
                                const char *name)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    bool f32 = dt == DT_F32;

    LLVMValueRef linear = g->index[0];
    for (int d = 1; d < g->k->rank; d++)
        linear = LLVMBuildAdd(b, LLVMBuildMul(b, linear, g->extents[d], ""), g->index[d], "");

    LLVMValueRef k0, k1;
    if (f32) {
        k0 = LLVMBuildBitCast(b, key, cg->t_i32, "");
        k1 = LLVMConstInt(cg->t_i32, 0, false);
    } else {
        split_words(cg, LLVMBuildBitCast(b, key, cg->t_i64, ""), &k0, &k1);
    }
    LLVMValueRef c[4];
    split_words(cg, linear, &c[0], &c[1]);
    c[2] = emit_step_word(cg, step);
    c[3] = LLVMConstInt(cg->t_i32, 0, false);
    emit_philox(cg, c, k0, k1);

    if (f32) {
        LLVMValueRef top = LLVMBuildLShr(b, c[0], LLVMConstInt(cg->t_i32, 8, false), "");
        return LLVMBuildFMul(b, LLVMBuildUIToFP(b, top, cg->t_f32, ""),
                             float_const(cg->t_f32, 0x1p-24), name);
    }
    return emit_unit_f64(cg, c[0], c[1], name);
}

/* ---- quantized tensors (runtime/quant.h) -------------------------------- */

/* Returns the address `bytes` bytes past `base`. */
static LLVMValueRef byte_ptr(Codegen *cg, LLVMValueRef base, LLVMValueRef bytes)
{
    return LLVMBuildInBoundsGEP2(cg->builder, cg->t_i8, base, &bytes, 1, "");
}

/* Loads or stores a bucket's base or scale. The words buffer is only
 * guaranteed the alignment of an i32. */
static LLVMValueRef load_meta(Codegen *cg, LLVMTypeRef type, LLVMValueRef ptr)
{
    LLVMValueRef v = LLVMBuildLoad2(cg->builder, type, ptr, "");
    LLVMSetAlignment(v, sizeof(int32_t));
    return v;
}

static void store_meta(Codegen *cg, LLVMValueRef v, LLVMValueRef ptr)
{
    LLVMSetAlignment(LLVMBuildStore(cg->builder, v, ptr), sizeof(int32_t));
}

/* The byte offset of the first code in an encoding: the metadata of every
 * bucket comes first. */
static int64_t codes_offset(DType dt, KQuantLayout layout)
{
    int64_t buckets = (layout.numel + layout.bucket - 1) / layout.bucket;
    return buckets * 2 * (int64_t)dtype_size(dt);
}

/* K_DEQUANT at element `index` of the encoded tensor: base + scale * code
 * of its bucket, in the dtype, as rt_quant_decode_at computes it. */
static LLVMValueRef emit_dequant(Codegen *cg, DType dt, KQuantLayout layout,
                                 LLVMValueRef words, LLVMValueRef index, const char *name)
{
    LLVMBuilderRef b = cg->builder;
    LLVMTypeRef type = value_type(cg, dt);
    int64_t es = (int64_t)dtype_size(dt);

    LLVMValueRef bucket = LLVMBuildUDiv(b, index, const_i64(cg, layout.bucket), "");
    LLVMValueRef meta = LLVMBuildMul(b, bucket, const_i64(cg, 2 * es), "");
    LLVMValueRef base = load_meta(cg, type, byte_ptr(cg, words, meta));
    LLVMValueRef scale = load_meta(
        cg, type, byte_ptr(cg, words, LLVMBuildAdd(b, meta, const_i64(cg, es), "")));

    /* The code's bits start at `shift` in byte `at`. The next byte is
     * loaded only when the code reaches into it; otherwise `at` is loaded
     * again, and the mask drops its copy. So no load passes the codes. */
    LLVMValueRef bit = LLVMBuildMul(b, index, const_i64(cg, layout.bits), "");
    LLVMValueRef at = LLVMBuildAdd(b, const_i64(cg, codes_offset(dt, layout)),
                                   LLVMBuildLShr(b, bit, const_i64(cg, 3), ""), "");
    LLVMValueRef shift = LLVMBuildTrunc(b, LLVMBuildAnd(b, bit, const_i64(cg, 7), ""),
                                        cg->t_i32, "");
    LLVMValueRef spans = LLVMBuildICmp(
        b, LLVMIntUGT, LLVMBuildAdd(b, shift, LLVMConstInt(cg->t_i32, (unsigned)layout.bits, false), ""),
        LLVMConstInt(cg->t_i32, 8, false), "");
    LLVMValueRef next = LLVMBuildAdd(b, at, LLVMBuildZExt(b, spans, cg->t_i64, ""), "");
    LLVMValueRef lo = LLVMBuildZExt(b, LLVMBuildLoad2(b, cg->t_i8, byte_ptr(cg, words, at), ""),
                                    cg->t_i32, "");
    LLVMValueRef hi = LLVMBuildZExt(b, LLVMBuildLoad2(b, cg->t_i8, byte_ptr(cg, words, next), ""),
                                    cg->t_i32, "");
    LLVMValueRef pair = LLVMBuildOr(b, lo, LLVMBuildShl(b, hi, LLVMConstInt(cg->t_i32, 8, false), ""), "");
    LLVMValueRef code = LLVMBuildAnd(b, LLVMBuildLShr(b, pair, shift, ""),
                                     LLVMConstInt(cg->t_i32, (1u << layout.bits) - 1, false), "");

    LLVMValueRef scaled = LLVMBuildFMul(b, scale, LLVMBuildUIToFP(b, code, type, ""), "");
    return LLVMBuildFAdd(b, base, scaled, name);
}

/* The offset of the current point in argument `arg`, in elements. */
static LLVMValueRef point_offset(KernelGen *g, int arg)
{
    Codegen *cg = g->cg;
    LLVMValueRef offset = const_i64(cg, 0);
    for (int d = 0; d < g->k->rank; d++) {
        if (stride_is_const(g->k->args[arg].strides[d], 0))
            continue;
        LLVMValueRef term = LLVMBuildMul(cg->builder, g->index[d],
                                         g->strides[arg * g->k->rank + d], "");
        offset = LLVMBuildAdd(cg->builder, offset, term, "");
    }
    return offset;
}

/* Emits instruction i. elem[a] is the element pointer of argument a at the
 * current point; uniform loads read the base pointer instead. */
static LLVMValueRef emit_instr(KernelGen *g, int i, LLVMValueRef *elem)
{
    Codegen *cg = g->cg;
    const Kernel *k = g->k;
    const KInstr *in = &k->instrs[i];
    char name[32];
    snprintf(name, sizeof name, "v%d", i);
    LLVMValueRef a = in->a >= 0 ? g->values[in->a] : NULL;
    LLVMValueRef b = in->b >= 0 ? g->values[in->b] : NULL;
    DType dt = in->dtype;

    switch (in->op) {
    case K_LOAD:
        return emit_load(g, dt, in->uniform ? g->base[in->arg] : elem[in->arg], name);
    case K_CONST:
        return emit_const(cg, dt, in->imm);
    case K_BATCH:
        return emit_batch(g, dt, name);
    case K_DEQUANT: {
        /* A uniform one has zero strides: element 0, before any loop. */
        LLVMValueRef index = in->uniform ? const_i64(cg, 0) : point_offset(g, in->arg);
        return emit_dequant(cg, dt, in->quant, g->base[in->arg], index, name);
    }
    case K_NEG: case K_ABS: case K_SIGN: case K_SQRT: case K_EXP:
    case K_LOG: case K_TANH: case K_FLOOR: case K_NOT: case K_ERF: case K_SIGMOID:
        return emit_unary(cg, in->op, dt, a, name);
    case K_CAST:
        return emit_cast(cg, dt, k->instrs[in->a].dtype, a, name);
    case K_ADD: case K_SUB: case K_MUL: case K_DIV: case K_POW:
    case K_MAX: case K_MIN:
        return emit_arith(cg, in->op, dt, a, b, name);
    case K_LT: case K_LE: case K_GT: case K_GE: case K_EQ: case K_NE:
        return emit_compare(cg, in->op, k->instrs[in->a].dtype, a, b, name);
    case K_AND:
        return LLVMBuildAnd(cg->builder, a, b, name);
    case K_OR:
        return LLVMBuildOr(cg->builder, a, b, name);
    case K_SELECT:
        return LLVMBuildSelect(cg->builder, g->values[in->c], a, b, name);
    case K_RANDOM:
        return emit_random(g, dt, a, b, name);
    case K_STORE:
        emit_store(g, dt, elem[in->arg], a);
        return NULL;
    case K_ACCUM: {
        /* NOTE: the in-order f64 sum keeps a loop with K_ACCUM from being
         * vectorised, so such a kernel is latency-bound (LAMB's first
         * kernel runs at about half the bandwidth of an AdamW update). */
        LLVMValueRef term = dt == DT_F64 ? a : LLVMBuildFPExt(cg->builder, a, cg->t_f64, "");
        LLVMValueRef sum = LLVMBuildLoad2(cg->builder, cg->t_f64, g->sums[i], "");
        LLVMBuildStore(cg->builder, LLVMBuildFAdd(cg->builder, sum, term, ""), g->sums[i]);
        return NULL;
    }
    }
    BOCB_UNREACHABLE("KOp");
}

/* ---- the loop nest ------------------------------------------------------ */

static LLVMValueRef emit_kdim(KernelGen *g, KDim d, const char *name)
{
    LLVMValueRef value = const_i64(g->cg, d.value);
    if (!d.times_batch)
        return value;
    if (d.value == 1)
        return g->batch;
    return LLVMBuildMul(g->cg->builder, g->batch, value, name);
}

/* Returns the address of element `index * stride` past `row`. */
static LLVMValueRef element_ptr(KernelGen *g, int arg, int axis, LLVMValueRef row,
                                LLVMValueRef index)
{
    Codegen *cg = g->cg;
    KDim s = g->k->args[arg].strides[axis];
    if (stride_is_const(s, 0))
        return row;
    LLVMValueRef offset = index;
    if (!stride_is_const(s, 1))
        offset = LLVMBuildMul(cg->builder, index, g->strides[arg * g->k->rank + axis], "");
    return LLVMBuildInBoundsGEP2(cg->builder, memory_type(cg, g->k->args[arg].dtype),
                                 row, &offset, 1, "");
}

/* Emits the non-uniform instructions at the point whose element pointers
 * are elem[]. */
static void emit_point(KernelGen *g, LLVMValueRef *elem)
{
    for (int i = 0; i < g->k->ninstrs; i++)
        if (!g->k->instrs[i].uniform)
            g->values[i] = emit_instr(g, i, elem);
}

/* Emits the loop over `axis` and everything inside it, starting in the
 * current block and leaving the builder in the loop's exit block. row[a]
 * points at argument a's element where every axis >= `axis` is 0. */
static void emit_loop(KernelGen *g, int axis, LLVMValueRef *row)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    const Kernel *k = g->k;
    bool innermost = axis == k->rank - 1;
    LLVMValueRef lo = axis == 0 ? g->begin : const_i64(cg, 0);
    LLVMValueRef hi = axis == 0 ? g->end : g->extents[axis];
    LLVMBasicBlockRef preheader = LLVMGetInsertBlock(b);

    /* Row pointers at the first iteration, for loops that keep them. */
    LLVMValueRef *first = xcalloc((size_t)k->nargs + 1, sizeof *first);
    if (!innermost)
        for (int a = 0; a < k->nargs; a++)
            if (g->streamed[a])
                first[a] = axis == 0 ? element_ptr(g, a, 0, row[a], lo) : row[a];

    char label[32];
    snprintf(label, sizeof label, "d%d", axis);
    LLVMBasicBlockRef header = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, label);
    LLVMBuildBr(b, header);
    LLVMPositionBuilderAtEnd(b, header);
    snprintf(label, sizeof label, "i%d", axis);
    LLVMValueRef index = LLVMBuildPhi(b, cg->t_i64, label);
    g->index[axis] = index;

    LLVMValueRef *cur = xcalloc((size_t)k->nargs + 1, sizeof *cur);
    LLVMValueRef *phis = xcalloc((size_t)k->nargs + 1, sizeof *phis);
    if (innermost) {
        for (int a = 0; a < k->nargs; a++)
            if (g->streamed[a])
                cur[a] = element_ptr(g, a, axis, row[a], index);
        emit_point(g, cur);
    } else {
        for (int a = 0; a < k->nargs; a++) {
            if (!g->streamed[a])
                continue;
            if (stride_is_const(k->args[a].strides[axis], 0)) {
                cur[a] = first[a];
                continue;
            }
            phis[a] = LLVMBuildPhi(b, cg->t_ptr, "");
            cur[a] = phis[a];
        }
        emit_loop(g, axis + 1, cur);
    }

    /* The latch: the current block, after everything the loop contains. */
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMValueRef next = LLVMBuildNSWAdd(b, index, const_i64(cg, 1), "");
    for (int a = 0; a < k->nargs; a++) {
        if (!phis[a])
            continue;
        LLVMValueRef stride = g->strides[a * k->rank + axis];
        LLVMValueRef advanced = LLVMBuildGEP2(b, memory_type(cg, k->args[a].dtype),
                                              phis[a], &stride, 1, "");
        LLVMValueRef values[2] = {first[a], advanced};
        LLVMBasicBlockRef blocks[2] = {preheader, latch};
        LLVMAddIncoming(phis[a], values, blocks, 2);
    }
    LLVMValueRef again = LLVMBuildICmp(b, LLVMIntSLT, next, hi, "");
    snprintf(label, sizeof label, "d%d.end", axis);
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, label);
    LLVMBuildCondBr(b, again, header, exit);
    LLVMValueRef index_values[2] = {lo, next};
    LLVMBasicBlockRef index_blocks[2] = {preheader, latch};
    LLVMAddIncoming(index, index_values, index_blocks, 2);
    LLVMPositionBuilderAtEnd(b, exit);

    free(phis);
    free(cur);
    free(first);
}

/* Marks which arguments the loops address per point, and returns for each
 * argument whether the kernel loads it. */
static bool *classify_args(KernelGen *g)
{
    const Kernel *k = g->k;
    bool *loaded = xcalloc((size_t)k->nargs + 1, sizeof *loaded);
    for (int i = 0; i < k->ninstrs; i++) {
        const KInstr *in = &k->instrs[i];
        if (in->op == K_LOAD)
            loaded[in->arg] = true;
        if ((in->op == K_LOAD || in->op == K_STORE) && !in->uniform)
            g->streamed[in->arg] = true;
    }
    return loaded;
}

static void emit_body(KernelGen *g)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    const Kernel *k = g->k;

    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "entry");
    LLVMBasicBlockRef hoisted = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "hoisted");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "done");
    LLVMPositionBuilderAtEnd(b, entry);

    char name[32];
    for (int d = 0; d < k->rank; d++) {
        snprintf(name, sizeof name, "extent%d", d);
        g->extents[d] = emit_kdim(g, k->extents[d], name);
    }
    for (int a = 0; a < k->nargs; a++)
        for (int d = 0; d < k->rank; d++) {
            snprintf(name, sizeof name, "stride%d.%d", a, d);
            g->strides[a * k->rank + d] = emit_kdim(g, k->args[a].strides[d], name);
        }

    /* Running sums start at 0 in the entry block, where SROA turns them
     * into registers. */
    for (int i = 0; i < k->ninstrs; i++) {
        if (k->instrs[i].op != K_ACCUM)
            continue;
        g->sums[i] = LLVMBuildAlloca(b, cg->t_f64, "");
        LLVMBuildStore(b, LLVMConstReal(cg->t_f64, 0.0), g->sums[i]);
    }

    /* Run nothing, not even the hoisted loads, when no point exists. */
    LLVMValueRef nonempty = LLVMBuildICmp(b, LLVMIntSLT, g->begin, g->end, "");
    for (int d = 1; d < k->rank; d++)
        nonempty = LLVMBuildAnd(b, nonempty,
                                LLVMBuildICmp(b, LLVMIntSGT, g->extents[d],
                                              const_i64(cg, 0), ""), "");
    LLVMBuildCondBr(b, nonempty, hoisted, done);

    LLVMPositionBuilderAtEnd(b, hoisted);
    for (int i = 0; i < k->ninstrs; i++)
        if (k->instrs[i].uniform)
            g->values[i] = emit_instr(g, i, NULL);
    emit_loop(g, 0, g->base);
    LLVMBuildBr(b, done);

    LLVMMoveBasicBlockAfter(done, LLVMGetLastBasicBlock(g->fn));
    LLVMPositionBuilderAtEnd(b, done);
    for (int i = 0; i < k->ninstrs; i++) {
        const KInstr *in = &k->instrs[i];
        if (in->op != K_ACCUM)
            continue;
        LLVMValueRef sum = LLVMBuildLoad2(b, cg->t_f64, g->sums[i], "");
        if (in->dtype == DT_F32)
            sum = LLVMBuildFPTrunc(b, sum, cg->t_f32, "");
        emit_store(g, in->dtype, g->base[in->arg], sum);
    }
    LLVMBuildRetVoid(b);
}

/* ---- the quantize kernel ------------------------------------------------ */

enum { LOOP_MAX_CARRIED = 3 };

/* A loop tested at the bottom, so it runs at least once, with an i64
 * index and up to LOOP_MAX_CARRIED values carried from one iteration to
 * the next. Both are phis of the header block. */
typedef struct CountedLoop {
    LLVMBasicBlockRef header;
    LLVMValueRef index;
    LLVMValueRef carried[LOOP_MAX_CARRIED];
    int ncarried;
} CountedLoop;

/* Starts a loop at index `lo` with carried values `init`, leaving the
 * builder in its header. */
static void loop_open(KernelGen *g, CountedLoop *l, const char *label, LLVMValueRef lo,
                      const LLVMValueRef *init, int ncarried)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    BOCB_ASSERT(ncarried <= LOOP_MAX_CARRIED);
    memset(l, 0, sizeof *l);
    LLVMBasicBlockRef preheader = LLVMGetInsertBlock(b);
    l->header = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, label);
    LLVMBuildBr(b, l->header);
    LLVMPositionBuilderAtEnd(b, l->header);
    l->index = LLVMBuildPhi(b, cg->t_i64, "");
    LLVMAddIncoming(l->index, &lo, &preheader, 1);
    l->ncarried = ncarried;
    for (int i = 0; i < ncarried; i++) {
        l->carried[i] = LLVMBuildPhi(b, LLVMTypeOf(init[i]), "");
        LLVMAddIncoming(l->carried[i], (LLVMValueRef *)&init[i], &preheader, 1);
    }
}

/* Ends the loop in the current block, which feeds `next` back to the
 * carried values, and repeats while the index + 1 is below `hi`. The
 * builder continues in the exit block, where `next` holds the values of
 * the last iteration. */
static void loop_close(KernelGen *g, CountedLoop *l, LLVMValueRef hi, const LLVMValueRef *next)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
    LLVMValueRef step = LLVMBuildNSWAdd(b, l->index, const_i64(cg, 1), "");
    LLVMAddIncoming(l->index, &step, &latch, 1);
    for (int i = 0; i < l->ncarried; i++)
        LLVMAddIncoming(l->carried[i], (LLVMValueRef *)&next[i], &latch, 1);
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "exit");
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, step, hi, ""), l->header, exit);
    LLVMPositionBuilderAtEnd(b, exit);
}

/* The values every bucket of a quantize kernel shares. */
typedef struct QuantGen {
    KernelGen *g;
    const KQuantize *q;
    LLVMTypeRef type;              /* of x, base and scale */
    LLVMValueRef k0, k1;           /* the Philox key, rt_quant_key */
    LLVMValueRef step;             /* counter word 2, rt_quant_step */
    LLVMValueRef x, words;         /* argument pointers */
} QuantGen;

/* splitmix64's output function, as philox_key mixes with it. */
static LLVMValueRef emit_mix64(Codegen *cg, LLVMValueRef z)
{
    LLVMBuilderRef b = cg->builder;
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(cg, 30), ""), ""),
                     LLVMConstInt(cg->t_i64, UINT64_C(0xBF58476D1CE4E5B9), false), "");
    z = LLVMBuildMul(b, LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(cg, 27), ""), ""),
                     LLVMConstInt(cg->t_i64, UINT64_C(0x94D049BB133111EB), false), "");
    return LLVMBuildXor(b, z, LLVMBuildLShr(b, z, const_i64(cg, 31), ""), "");
}

/* The key words of philox_key(bits of the key value, tag), as
 * rt_quant_key computes them. */
static void emit_quant_key(QuantGen *qg, LLVMValueRef key)
{
    Codegen *cg = qg->g->cg;
    LLVMBuilderRef b = cg->builder;
    LLVMValueRef seed = qg->q->dtype == DT_F64
                            ? LLVMBuildBitCast(b, key, cg->t_i64, "")
                            : LLVMBuildZExt(b, LLVMBuildBitCast(b, key, cg->t_i32, ""),
                                            cg->t_i64, "");
    uint64_t stream = (uint64_t)qg->q->tag * UINT64_C(0x9E3779B97F4A7C15) +
                      UINT64_C(0x632BE59BD9B4E019);
    LLVMValueRef stream_bits = emit_mix64(cg, LLVMConstInt(cg->t_i64, stream, false));
    LLVMValueRef mixed = emit_mix64(cg, LLVMBuildXor(b, emit_mix64(cg, seed), stream_bits, ""));
    split_words(cg, mixed, &qg->k0, &qg->k1);
}

/* The uniform double of runtime/quant.c's uniform_at: Philox of the
 * counter (index, step, tag) converted from its first two words. */
static LLVMValueRef emit_quant_uniform(QuantGen *qg, LLVMValueRef index, uint32_t tag)
{
    Codegen *cg = qg->g->cg;
    LLVMValueRef c[4];
    split_words(cg, index, &c[0], &c[1]);
    c[2] = qg->step;
    c[3] = LLVMConstInt(cg->t_i32, tag, false);
    emit_philox(cg, c, qg->k0, qg->k1);
    return emit_unit_f64(cg, c[0], c[1], "");
}

static LLVMValueRef load_x(QuantGen *qg, LLVMValueRef i)
{
    Codegen *cg = qg->g->cg;
    LLVMValueRef ptr = LLVMBuildInBoundsGEP2(cg->builder, qg->type, qg->x, &i, 1, "");
    return emit_load(qg->g, qg->q->dtype, ptr, "");
}

static LLVMValueRef emit_is_finite(Codegen *cg, LLVMValueRef v)
{
    LLVMValueRef inf = float_const(LLVMTypeOf(v), HUGE_VAL);
    return LLVMBuildFCmp(cg->builder, LLVMRealOLT, call_unary_intrinsic(cg, "llvm.fabs", v),
                         inf, "");
}

/* Widens a value of the quantizer's dtype to double. */
static LLVMValueRef to_f64(QuantGen *qg, LLVMValueRef v)
{
    Codegen *cg = qg->g->cg;
    return qg->q->dtype == DT_F64 ? v : LLVMBuildFPExt(cg->builder, v, cg->t_f64, "");
}

/* Emits bucket_grid of runtime/quant.c for x[start, stop) of bucket
 * `bucket`: the minimum, maximum and finiteness in one pass in element
 * order, then the base and the scale. */
static void emit_bucket_grid(QuantGen *qg, LLVMValueRef bucket, LLVMValueRef start,
                             LLVMValueRef stop, LLVMValueRef *base, LLVMValueRef *scale)
{
    Codegen *cg = qg->g->cg;
    LLVMBuilderRef b = cg->builder;
    const KQuantize *q = qg->q;

    LLVMValueRef first = load_x(qg, start);
    LLVMValueRef init[3] = {first, first, LLVMConstInt(cg->t_i1, 1, false)};
    CountedLoop range;
    loop_open(qg->g, &range, "minmax", start, init, 3);
    LLVMValueRef v = load_x(qg, range.index);
    LLVMValueRef lo = range.carried[0], hi = range.carried[1];
    /* Selects in element order, not llvm.minnum: which of two equal zeros
     * is kept depends on the order, and the base keeps its sign. */
    LLVMValueRef next[3] = {
        LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLT, v, lo, ""), v, lo, ""),
        LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, v, hi, ""), v, hi, ""),
        LLVMBuildAnd(b, range.carried[2], emit_is_finite(cg, v), ""),
    };
    loop_close(qg->g, &range, stop, next);
    lo = next[0];
    hi = next[1];

    LLVMValueRef width = LLVMBuildFSub(b, hi, lo, "");
    LLVMValueRef ok = LLVMBuildAnd(b, next[2], emit_is_finite(cg, width), "");
    uint32_t levels = (1u << q->layout.bits) - 1;
    double steps = q->rounding == RT_ROUND_SHIFT ? (double)levels - 1 : (double)levels;
    LLVMValueRef s = LLVMBuildFDiv(b, width, float_const(qg->type, steps), "");
    LLVMValueRef positive = LLVMBuildFCmp(b, LLVMRealOGT, s, float_const(qg->type, 0.0), "");

    LLVMValueRef grid_base = lo;
    if (q->rounding == RT_ROUND_SHIFT) {
        LLVMValueRef u = emit_quant_uniform(qg, bucket, q->tag | 0x80000000u);
        LLVMValueRef r = LLVMBuildFMul(b, u, to_f64(qg, s), "");
        if (q->dtype == DT_F32)
            r = LLVMBuildFPTrunc(b, r, qg->type, "");
        grid_base = LLVMBuildFSub(b, lo, r, "");
    }
    LLVMValueRef nan = float_const(qg->type, NAN);
    *base = LLVMBuildSelect(b, ok, LLVMBuildSelect(b, positive, grid_base, lo, ""), nan, "base");
    *scale = LLVMBuildSelect(b, ok, LLVMBuildSelect(b, positive, s, float_const(qg->type, 0.0), ""),
                             nan, "scale");
}

/* Emits element_code and code_of of runtime/quant.c: the code of x[i] on
 * the grid (base, scale), 0 when the scale is not positive. */
static LLVMValueRef emit_code(QuantGen *qg, LLVMValueRef i, LLVMValueRef base,
                              LLVMValueRef scale, LLVMValueRef scale_positive)
{
    Codegen *cg = qg->g->cg;
    LLVMBuilderRef b = cg->builder;
    LLVMTypeRef f64 = cg->t_f64;
    LLVMValueRef t = LLVMBuildFDiv(
        b, LLVMBuildFSub(b, to_f64(qg, load_x(qg, i)), to_f64(qg, base), ""), to_f64(qg, scale), "");
    LLVMValueRef c;
    if (qg->q->rounding == RT_ROUND_STOCHASTIC) {
        LLVMValueRef f = call_unary_intrinsic(cg, "llvm.floor", t);
        LLVMValueRef u = emit_quant_uniform(qg, i, qg->q->tag);
        LLVMValueRef up = LLVMBuildFCmp(b, LLVMRealOLT, u, LLVMBuildFSub(b, t, f, ""), "");
        c = LLVMBuildFAdd(b, f, LLVMBuildSelect(b, up, float_const(f64, 1.0), float_const(f64, 0.0), ""), "");
    } else {
        c = call_unary_intrinsic(cg, "llvm.floor", LLVMBuildFAdd(b, t, float_const(f64, 0.5), ""));
    }
    /* Clamped to [0, max code], with NaN as 0, before the conversion. */
    LLVMValueRef max_code = float_const(f64, (double)((1u << qg->q->layout.bits) - 1));
    LLVMValueRef zero = float_const(f64, 0.0);
    c = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, c, zero, ""), c, zero, "");
    c = LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGT, c, max_code, ""), max_code, c, "");
    LLVMValueRef code = LLVMBuildFPToUI(b, c, cg->t_i32, "");
    return LLVMBuildSelect(b, scale_positive, code, LLVMConstInt(cg->t_i32, 0, false), "code");
}

/* Packs the codes of x[start, stop) least significant bit first from bit
 * start * bits of the code section, as runtime/quant.c's Packer does.
 * The byte being filled is stored after every code, which needs no
 * branch in the loop. The bits that a code carries into the next byte
 * are stored by the next code, or by the flush after the loop. In a
 * kernel whose buckets may start inside a byte, the bits of that byte
 * below the start come from the bucket before, which ran earlier in the
 * same call. */
static void emit_bucket_codes(QuantGen *qg, LLVMValueRef start, LLVMValueRef stop,
                              LLVMValueRef base, LLVMValueRef scale)
{
    Codegen *cg = qg->g->cg;
    LLVMBuilderRef b = cg->builder;
    const KQuantize *q = qg->q;
    LLVMValueRef byte_bits = LLVMConstInt(cg->t_i32, 8, false);

    LLVMValueRef bit = LLVMBuildMul(b, start, const_i64(cg, q->layout.bits), "");
    LLVMValueRef at = LLVMBuildAdd(b, const_i64(cg, codes_offset(q->dtype, q->layout)),
                                   LLVMBuildLShr(b, bit, const_i64(cg, 3), ""), "");
    LLVMValueRef acc = LLVMConstInt(cg->t_i32, 0, false);
    LLVMValueRef nacc = acc;
    if (!kernel_quantize_parallel(qg->g->k)) {
        nacc = LLVMBuildTrunc(b, LLVMBuildAnd(b, bit, const_i64(cg, 7), ""), cg->t_i32, "");
        LLVMValueRef kept = LLVMBuildSub(b, LLVMBuildShl(b, LLVMConstInt(cg->t_i32, 1, false), nacc, ""),
                                         LLVMConstInt(cg->t_i32, 1, false), "");
        LLVMValueRef old = LLVMBuildLoad2(b, cg->t_i8, byte_ptr(cg, qg->words, at), "");
        acc = LLVMBuildAnd(b, LLVMBuildZExt(b, old, cg->t_i32, ""), kept, "");
    }
    LLVMValueRef scale_positive =
        LLVMBuildFCmp(b, LLVMRealOGT, scale, float_const(qg->type, 0.0), "");

    LLVMValueRef init[3] = {acc, nacc, at};
    CountedLoop pack;
    loop_open(qg->g, &pack, "codes", start, init, 3);
    LLVMValueRef code = emit_code(qg, pack.index, base, scale, scale_positive);
    acc = LLVMBuildOr(b, pack.carried[0], LLVMBuildShl(b, code, pack.carried[1], ""), "");
    nacc = LLVMBuildAdd(b, pack.carried[1], LLVMConstInt(cg->t_i32, (unsigned)q->layout.bits, false), "");
    at = pack.carried[2];
    LLVMBuildStore(b, LLVMBuildTrunc(b, acc, cg->t_i8, ""), byte_ptr(cg, qg->words, at));
    LLVMValueRef full = LLVMBuildICmp(b, LLVMIntUGE, nacc, byte_bits, "");
    LLVMValueRef next[3] = {
        LLVMBuildSelect(b, full, LLVMBuildLShr(b, acc, byte_bits, ""), acc, ""),
        LLVMBuildSelect(b, full, LLVMBuildSub(b, nacc, byte_bits, ""), nacc, ""),
        LLVMBuildAdd(b, at, LLVMBuildZExt(b, full, cg->t_i64, ""), ""),
    };
    loop_close(qg->g, &pack, stop, next);

    LLVMBasicBlockRef flush = LLVMAppendBasicBlockInContext(cg->ctx, qg->g->fn, "flush");
    LLVMBasicBlockRef packed = LLVMAppendBasicBlockInContext(cg->ctx, qg->g->fn, "packed");
    LLVMValueRef pending = LLVMBuildICmp(b, LLVMIntNE, next[1], LLVMConstInt(cg->t_i32, 0, false), "");
    LLVMBuildCondBr(b, pending, flush, packed);
    LLVMPositionBuilderAtEnd(b, flush);
    LLVMBuildStore(b, LLVMBuildTrunc(b, next[0], cg->t_i8, ""), byte_ptr(cg, qg->words, next[2]));
    LLVMBuildBr(b, packed);
    LLVMPositionBuilderAtEnd(b, packed);
}

/* Zeroes the bytes after the encoding up to the end of its last word, in
 * the call that encodes the last bucket. */
static void emit_word_padding(QuantGen *qg, LLVMBasicBlockRef done)
{
    Codegen *cg = qg->g->cg;
    LLVMBuilderRef b = cg->builder;
    const KQuantize *q = qg->q;
    RtQuantizer rq = {.bits = q->layout.bits, .bucket = q->layout.bucket};
    int64_t used = (int64_t)rt_quant_encoded_size(&rq, q->dtype, q->layout.numel);
    int64_t words = rt_quant_words(rq.bits, rq.bucket, q->dtype, q->layout.numel);
    int64_t end_bytes = words * (int64_t)sizeof(int32_t);
    if (used == end_bytes) {
        LLVMBuildBr(b, done);
        return;
    }
    LLVMBasicBlockRef pad = LLVMAppendBasicBlockInContext(cg->ctx, qg->g->fn, "padding");
    LLVMValueRef last = LLVMBuildICmp(b, LLVMIntEQ, qg->g->end,
                                      const_i64(cg, qg->g->k->extents[0].value), "");
    LLVMBuildCondBr(b, last, pad, done);
    LLVMPositionBuilderAtEnd(b, pad);
    for (int64_t at = used; at < end_bytes; at++)
        LLVMBuildStore(b, LLVMConstInt(cg->t_i8, 0, false), byte_ptr(cg, qg->words, const_i64(cg, at)));
    LLVMBuildBr(b, done);
}

/* The body of a KFORM_QUANTIZE kernel: rt_quant_encode for the buckets
 * [begin, end), one iteration of the outer loop per bucket. */
static void emit_quantize_body(KernelGen *g)
{
    Codegen *cg = g->cg;
    LLVMBuilderRef b = cg->builder;
    const KQuantize *q = &g->k->quantize;
    QuantGen qg = {.g = g, .q = q, .type = value_type(cg, q->dtype),
                   .x = g->base[KQ_X], .words = g->base[KQ_WORDS]};

    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "entry");
    LLVMBasicBlockRef buckets = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "buckets");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(cg->ctx, g->fn, "done");
    LLVMPositionBuilderAtEnd(b, entry);
    LLVMBuildCondBr(b, LLVMBuildICmp(b, LLVMIntSLT, g->begin, g->end, ""), buckets, done);

    LLVMPositionBuilderAtEnd(b, buckets);
    emit_quant_key(&qg, emit_load(g, q->dtype, g->base[KQ_KEY], "key"));
    qg.step = emit_step_word(cg, emit_load(g, q->dtype, g->base[KQ_STEP], "step"));

    CountedLoop loop;
    loop_open(g, &loop, "bucket", g->begin, NULL, 0);
    LLVMValueRef start = LLVMBuildMul(b, loop.index, const_i64(cg, q->layout.bucket), "start");
    LLVMValueRef stop = LLVMBuildAdd(b, start, const_i64(cg, q->layout.bucket), "");
    LLVMValueRef numel = const_i64(cg, q->layout.numel);
    stop = LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLT, stop, numel, ""), stop, numel, "stop");

    LLVMValueRef base, scale;
    emit_bucket_grid(&qg, loop.index, start, stop, &base, &scale);
    int64_t es = (int64_t)dtype_size(q->dtype);
    LLVMValueRef meta = LLVMBuildMul(b, loop.index, const_i64(cg, 2 * es), "");
    store_meta(cg, base, byte_ptr(cg, qg.words, meta));
    store_meta(cg, scale, byte_ptr(cg, qg.words, LLVMBuildAdd(b, meta, const_i64(cg, es), "")));
    emit_bucket_codes(&qg, start, stop, base, scale);
    loop_close(g, &loop, g->end, NULL);
    emit_word_padding(&qg, done);

    LLVMMoveBasicBlockAfter(done, LLVMGetLastBasicBlock(g->fn));
    LLVMPositionBuilderAtEnd(b, done);
    LLVMBuildRetVoid(b);
}

/* Adds @SYM.body to the module and returns it. */
static LLVMValueRef build_body(Codegen *cg, const Kernel *k, const char *symbol)
{
    int nparams = k->nargs + 3;
    LLVMTypeRef *params = xcalloc((size_t)nparams, sizeof *params);
    for (int a = 0; a < k->nargs; a++)
        params[a] = cg->t_ptr;
    params[k->nargs] = params[k->nargs + 1] = params[k->nargs + 2] = cg->t_i64;
    LLVMTypeRef fty = LLVMFunctionType(cg->t_void, params, (unsigned)nparams, false);
    free(params);

    char *name = xasprintf("%s.body", symbol);
    LLVMValueRef fn = LLVMAddFunction(cg->module, name, fty);
    free(name);
    LLVMSetLinkage(fn, LLVMInternalLinkage);
    add_fn_attr(cg, fn, "alwaysinline");
    add_fn_attr(cg, fn, "nounwind");

    KernelGen g;
    memset(&g, 0, sizeof g);
    g.cg = cg;
    g.k = k;
    g.fn = fn;
    g.base = xcalloc((size_t)k->nargs + 1, sizeof *g.base);
    g.strides = xcalloc((size_t)k->nargs * (size_t)k->rank + 1, sizeof *g.strides);
    g.streamed = xcalloc((size_t)k->nargs + 1, sizeof *g.streamed);
    g.values = xcalloc((size_t)k->ninstrs + 1, sizeof *g.values);
    g.sums = xcalloc((size_t)k->ninstrs + 1, sizeof *g.sums);
    bool *loaded = classify_args(&g);
    /* A quantize kernel reads back the byte where a bucket's codes start
     * when that byte is shared with the bucket before. */
    if (k->form == KFORM_QUANTIZE)
        loaded[KQ_WORDS] = true;

    for (int a = 0; a < k->nargs; a++) {
        g.base[a] = LLVMGetParam(fn, (unsigned)a);
        char pname[16];
        snprintf(pname, sizeof pname, "a%d", a);
        LLVMSetValueName2(g.base[a], pname, strlen(pname));
        add_param_attr(cg, fn, a, "noalias");
        add_param_attr(cg, fn, a, "nocapture");
        if (!k->args[a].written)
            add_param_attr(cg, fn, a, "readonly");
        else if (!loaded[a])
            add_param_attr(cg, fn, a, "writeonly");
    }
    g.batch = LLVMGetParam(fn, (unsigned)k->nargs);
    g.begin = LLVMGetParam(fn, (unsigned)k->nargs + 1);
    g.end = LLVMGetParam(fn, (unsigned)k->nargs + 2);
    LLVMSetValueName2(g.batch, "batch", 5);
    LLVMSetValueName2(g.begin, "begin", 5);
    LLVMSetValueName2(g.end, "end", 3);

    if (k->form == KFORM_QUANTIZE)
        emit_quantize_body(&g);
    else
        emit_body(&g);

    free(loaded);
    free(g.sums);
    free(g.values);
    free(g.streamed);
    free(g.strides);
    free(g.base);
    return fn;
}

/* Adds @SYM, the RtKernelFn entry point, which calls @SYM.body. */
static void build_kernel(Codegen *cg, const Kernel *k, const char *symbol)
{
    LLVMValueRef body = build_body(cg, k, symbol);

    LLVMTypeRef params[4] = {cg->t_ptr, cg->t_i64, cg->t_i64, cg->t_i64};
    LLVMTypeRef fty = LLVMFunctionType(cg->t_void, params, 4, false);
    LLVMValueRef fn = LLVMAddFunction(cg->module, symbol, fty);
    add_fn_attr(cg, fn, "nounwind");
    add_param_attr(cg, fn, 0, "noalias");
    add_param_attr(cg, fn, 0, "nocapture");
    add_param_attr(cg, fn, 0, "readonly");
    LLVMValueRef args = LLVMGetParam(fn, 0);
    LLVMSetValueName2(args, "args", 4);
    LLVMSetValueName2(LLVMGetParam(fn, 1), "batch", 5);
    LLVMSetValueName2(LLVMGetParam(fn, 2), "begin", 5);
    LLVMSetValueName2(LLVMGetParam(fn, 3), "end", 3);

    LLVMBuilderRef b = cg->builder;
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(cg->ctx, fn, "entry"));
    int ncall = k->nargs + 3;
    LLVMValueRef *call_args = xcalloc((size_t)ncall, sizeof *call_args);
    for (int a = 0; a < k->nargs; a++) {
        LLVMValueRef index = const_i64(cg, a);
        LLVMValueRef slot = LLVMBuildInBoundsGEP2(b, cg->t_ptr, args, &index, 1, "");
        char name[16];
        snprintf(name, sizeof name, "a%d", a);
        call_args[a] = LLVMBuildLoad2(b, cg->t_ptr, slot, name);
        LLVMSetAlignment(call_args[a], sizeof(void *));
    }
    for (int j = 0; j < 3; j++)
        call_args[k->nargs + j] = LLVMGetParam(fn, (unsigned)j + 1);
    LLVMBuildCall2(b, LLVMGlobalGetValueType(body), body, call_args, (unsigned)ncall, "");
    LLVMBuildRetVoid(b);
    free(call_args);
}

/* ---- modules ------------------------------------------------------------ */

LLVMTargetMachineRef codegen_host_target_machine(char **error)
{
    return codegen_target_machine(NULL, error);
}

LLVMTargetMachineRef codegen_target_machine(const char *cpu_name, char **error)
{
    if (LLVMInitializeNativeTarget() || LLVMInitializeNativeAsmPrinter() ||
        LLVMInitializeNativeAsmParser()) {
        *error = xstrdup("LLVM has no native target for this host");
        return NULL;
    }
    char *triple = LLVMGetDefaultTargetTriple();
    char *message = NULL;
    LLVMTargetRef target;
    if (LLVMGetTargetFromTriple(triple, &target, &message)) {
        *error = xasprintf("LLVM target lookup failed for %s: %s", triple,
                           message ? message : "unknown error");
        LLVMDisposeMessage(message);
        LLVMDisposeMessage(triple);
        return NULL;
    }
    /* A named CPU brings its own features; the host's are detected. */
    char *cpu = cpu_name ? NULL : LLVMGetHostCPUName();
    char *features = cpu_name ? NULL : LLVMGetHostCPUFeatures();
    LLVMTargetMachineRef tm = LLVMCreateTargetMachine(
        target, triple, cpu_name ? cpu_name : cpu, features ? features : "",
        LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
    if (!tm)
        *error = xasprintf("LLVM could not create a target machine for %s (cpu %s)",
                           triple, cpu_name ? cpu_name : cpu);
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(triple);
    return tm;
}

char *codegen_target_id(LLVMTargetMachineRef tm)
{
    unsigned major, minor, patch;
    LLVMGetVersion(&major, &minor, &patch);
    char *triple = LLVMGetTargetMachineTriple(tm);
    char *cpu = LLVMGetTargetMachineCPU(tm);
    char *features = LLVMGetTargetMachineFeatureString(tm);
    char *id = xasprintf("llvm %u.%u.%u; %s; cpu %s; features %s", major, minor, patch,
                         triple, cpu, features);
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    LLVMDisposeMessage(triple);
    return id;
}

void *codegen_emit_object(LLVMModuleRef module, LLVMTargetMachineRef tm, size_t *size,
                          char **error)
{
    char *message = NULL;
    LLVMMemoryBufferRef buffer = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, module, LLVMObjectFile, &message,
                                            &buffer)) {
        *error = xasprintf("cannot emit object code: %s",
                           message ? message : "unknown error");
        LLVMDisposeMessage(message);
        return NULL;
    }
    *size = LLVMGetBufferSize(buffer);
    void *object = xmalloc(*size ? *size : 1);
    memcpy(object, LLVMGetBufferStart(buffer), *size);
    LLVMDisposeMemoryBuffer(buffer);
    return object;
}

LLVMModuleRef codegen_build_module(LLVMContextRef ctx, LLVMTargetMachineRef tm,
                                   Kernel *const *kernels, int n,
                                   const char *const *symbols)
{
    Codegen cg;
    memset(&cg, 0, sizeof cg);
    cg.ctx = ctx;
    cg.module = LLVMModuleCreateWithNameInContext("bocb_kernels", ctx);
    cg.builder = LLVMCreateBuilderInContext(ctx);
    cg.t_void = LLVMVoidTypeInContext(ctx);
    cg.t_i1 = LLVMInt1TypeInContext(ctx);
    cg.t_i8 = LLVMInt8TypeInContext(ctx);
    cg.t_i32 = LLVMInt32TypeInContext(ctx);
    cg.t_i64 = LLVMInt64TypeInContext(ctx);
    cg.t_f32 = LLVMFloatTypeInContext(ctx);
    cg.t_f64 = LLVMDoubleTypeInContext(ctx);
    cg.t_ptr = LLVMPointerTypeInContext(ctx, 0);

    char *triple = LLVMGetTargetMachineTriple(tm);
    LLVMSetTarget(cg.module, triple);
    LLVMDisposeMessage(triple);
    LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(tm);
    LLVMSetModuleDataLayout(cg.module, layout);
    LLVMDisposeTargetData(layout);

    for (int i = 0; i < n; i++) {
        /* Computes the uniform flags the build relies on; a no-op when the
         * caller already finalized the kernel. */
        kernel_finalize(kernels[i]);
        build_kernel(&cg, kernels[i], symbols[i]);
    }
    LLVMDisposeBuilder(cg.builder);

    char *message = NULL;
    if (LLVMVerifyModule(cg.module, LLVMReturnStatusAction, &message))
        bocb_panic(__FILE__, __LINE__, "invalid LLVM IR for kernels: %s", message);
    LLVMDisposeMessage(message);
    return cg.module;
}

bool codegen_optimize(LLVMModuleRef module, LLVMTargetMachineRef tm, char **error)
{
    LLVMPassBuilderOptionsRef options = LLVMCreatePassBuilderOptions();
    LLVMPassBuilderOptionsSetLoopVectorization(options, true);
    LLVMPassBuilderOptionsSetSLPVectorization(options, true);
    LLVMPassBuilderOptionsSetLoopInterleaving(options, true);
    LLVMPassBuilderOptionsSetLoopUnrolling(options, true);
    LLVMErrorRef err = LLVMRunPasses(module, "default<O3>", tm, options);
    LLVMDisposePassBuilderOptions(options);
    if (err) {
        char *message = LLVMGetErrorMessage(err);
        *error = xasprintf("LLVM optimisation failed: %s", message);
        LLVMDisposeErrorMessage(message);
        return false;
    }
    return true;
}

static char *codegen_emit_text(Kernel *const *kernels, int n, bool optimize, bool assembly,
                               char **error);

/* Returns `module` compiled to host assembly text (malloc'd), or NULL
 * after setting *error. */
static char *emit_assembly(LLVMModuleRef module, LLVMTargetMachineRef tm, char **error)
{
    char *message = NULL;
    LLVMMemoryBufferRef buffer = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(tm, module, LLVMAssemblyFile, &message,
                                            &buffer)) {
        *error = xasprintf("cannot emit assembly: %s", message ? message : "unknown error");
        LLVMDisposeMessage(message);
        return NULL;
    }
    char *text = xstrndup(LLVMGetBufferStart(buffer), LLVMGetBufferSize(buffer));
    LLVMDisposeMemoryBuffer(buffer);
    return text;
}

char *codegen_emit_asm(Kernel *const *kernels, int n, char **error)
{
    return codegen_emit_text(kernels, n, true, true, error);
}

char *codegen_emit_llvm(Kernel *const *kernels, int n, bool optimize, char **error)
{
    return codegen_emit_text(kernels, n, optimize, false, error);
}

static char *codegen_emit_text(Kernel *const *kernels, int n, bool optimize, bool assembly,
                               char **error)
{
    LLVMTargetMachineRef tm = codegen_host_target_machine(error);
    if (!tm)
        return NULL;
    LLVMContextRef ctx = LLVMContextCreate();
    const char **symbols = xcalloc((size_t)n + 1, sizeof *symbols);
    for (int i = 0; i < n; i++)
        symbols[i] = kernels[i]->name;
    LLVMModuleRef module = codegen_build_module(ctx, tm, kernels, n, symbols);
    free(symbols);

    char *result = NULL;
    if (assembly && codegen_optimize(module, tm, error)) {
        result = emit_assembly(module, tm, error);
    } else if (!assembly && (!optimize || codegen_optimize(module, tm, error))) {
        char *text = LLVMPrintModuleToString(module);
        result = xstrdup(text);
        LLVMDisposeMessage(text);
    }
    LLVMDisposeModule(module);
    LLVMContextDispose(ctx);
    LLVMDisposeTargetMachine(tm);
    return result;
}
