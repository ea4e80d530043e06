/* kernel.h - a fused elementwise kernel: the unit of code generation.
 *
 * The fusion pass turns a group of elementwise IR nodes into a Kernel: a
 * loop nest over an iteration space and a straight-line list of scalar
 * instructions executed once per point of that space. Buffers are reached
 * through arguments with per-dimension strides, where a zero stride is a
 * broadcast. A Kernel has no reference to the IR graph it came from, so the
 * code generator, the reference evaluator (kernel_eval) and, later, the
 * on-disk kernel cache depend only on this header.
 *
 * That is the form KFORM_POINTS. The quantizer of runtime/quant.h has a
 * form of its own, KFORM_QUANTIZE, with one loop over buckets and no
 * instructions, because its per-bucket minimum and maximum are not
 * point-wise.
 *
 * Extents and strides may scale with the batch size: an extent or stride
 * with `times_batch` set is multiplied by the run-time batch size.
 *
 * Generated code has the signature of RtKernelFn:
 *
 *     void kernel(void *const *args, int64_t batch, int64_t begin, int64_t end);
 *
 * and runs the iterations whose outermost index lies in [begin, end), so
 * a parallel-for can split the outermost dimension.
 */
#ifndef BOCB_KERNEL_H
#define BOCB_KERNEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../runtime/quant.h"
#include "../runtime/shape.h"

enum { KERNEL_MAX_RANK = SHAPE_MAX_RANK };

/* An extent or stride: value, or value * batch when times_batch is set. */
typedef struct KDim {
    int64_t value;
    bool times_batch;
} KDim;

typedef enum KOp {
    /* leaves */
    K_LOAD,  /* element of argument `arg` at the current point */
    K_CONST, /* imm, converted to dtype */
    K_BATCH, /* the run-time batch size, converted to dtype */
    /* the decoded element (rt_quant_decode_at) of the encoding in argument
     * `arg`, an i32 tensor of words, at the current point's offset. The
     * argument's strides count elements of the decoded tensor, not words,
     * and `quant` gives the encoding's layout. dtype is f32 or f64. */
    K_DEQUANT,

    /* unary, operand a */
    K_NEG, K_ABS, K_SIGN, K_SQRT, K_EXP, K_LOG, K_TANH, K_FLOOR,
    K_ERF, K_SIGMOID, /* sigmoid(x) = 1 / (1 + exp(-x)) */
    K_NOT,  /* bool */
    K_CAST, /* a converted to dtype */

    /* binary, operands a and b, same dtype */
    K_ADD, K_SUB, K_MUL, K_DIV, K_POW, K_MAX, K_MIN,
    K_LT, K_LE, K_GT, K_GE, K_EQ, K_NE, /* result bool */
    K_AND, K_OR,                        /* bool operands */

    /* random(key a, step b): philox_random_f32/f64 (runtime/philox.h) at
     * the linear index of the current point in the iteration space, which
     * is row-major, so it is the element index of the kernel's outputs.
     * Never uniform. */
    K_RANDOM,

    /* ternary: c ? a : b with c bool (operand order: c in field c) */
    K_SELECT,

    /* effect: writes value `a` to argument `arg` at the current point */
    K_STORE,

    /* effect: adds value `a` (a float) to a running sum kept in f64. When
     * the kernel returns, it writes the sum over every point it ran (0 when
     * it ran no point), converted to the argument's dtype, to argument
     * `arg`, whose strides are all 0. The sum runs in iteration order,
     * and a call covers [begin, end) only, so a kernel with K_ACCUM must
     * run as one call over the whole range. */
    K_ACCUM,
} KOp;

/* Returns a lower-case name for the op ("add", "select", ...). */
const char *kop_name(KOp op);

/* The layout of an encoding of runtime/quant.h: `numel` elements with
 * `bits` bits each in buckets of `bucket` elements. The codes start after
 * the metadata of every bucket. */
typedef struct KQuantLayout {
    int bits;
    int64_t bucket;
    int64_t numel;
} KQuantLayout;

typedef struct KInstr {
    KOp op;
    DType dtype;  /* result dtype (for K_STORE: the stored dtype) */
    int a, b, c;  /* operand instruction indices, -1 when unused */
    int arg;      /* K_LOAD, K_STORE, K_ACCUM, K_DEQUANT: argument index */
    double imm;   /* K_CONST */
    KQuantLayout quant; /* K_DEQUANT */
    bool uniform; /* same value at every point: hoisted out of the loops */
} KInstr;

typedef struct KArg {
    DType dtype;
    bool written;                   /* the kernel stores to it */
    KDim strides[KERNEL_MAX_RANK];  /* in elements; value 0 = broadcast */
} KArg;

/* What a kernel computes. */
typedef enum KForm {
    /* the instructions at every point of the loop nest */
    KFORM_POINTS,
    /* rt_quant_encode of argument KQ_X into KQ_WORDS, one iteration of
     * the single loop per bucket. The kernel has no instructions. */
    KFORM_QUANTIZE,
} KForm;

/* The arguments of a KFORM_QUANTIZE kernel. x is dense, the key and the
 * step are rank-0 values of x's dtype (rt_quant_key, rt_quant_step), and
 * the words are the i32 result of the IR's quantize op: the encoding,
 * then zero bytes up to a whole word. */
enum { KQ_X, KQ_KEY, KQ_STEP, KQ_WORDS, KQ_NARGS };

/* The quantizer of a KFORM_QUANTIZE kernel; the key and the step are
 * arguments. */
typedef struct KQuantize {
    DType dtype; /* of x, and of the base and scale of every bucket */
    KQuantLayout layout;
    RtRounding rounding;
    uint32_t tag;
} KQuantize;

typedef struct Kernel {
    char name[64];
    KForm form;
    KQuantize quantize;             /* KFORM_QUANTIZE */
    int rank;                       /* loop depth, >= 1 */
    KDim extents[KERNEL_MAX_RANK];  /* outermost first */
    KArg *args;
    int nargs;
    KInstr *instrs;
    int ninstrs;
    int cap_args, cap_instrs;
} Kernel;

/* Building. kernel_new() returns a heap kernel freed by kernel_free(). */
Kernel *kernel_new(const char *name, int rank, const KDim *extents);
void kernel_free(Kernel *k);
int kernel_add_arg(Kernel *k, DType dtype, bool written, const KDim *strides);
/* Appends an instruction and returns its index. Operands must precede it. */
int kernel_add(Kernel *k, KOp op, DType dtype, int a, int b, int c);
int kernel_load(Kernel *k, int arg);
int kernel_const(Kernel *k, DType dtype, double value);
int kernel_store(Kernel *k, int arg, int value);
int kernel_accum(Kernel *k, int arg, int value);
int kernel_dequant(Kernel *k, int arg, DType dtype, KQuantLayout layout);

/* Returns a finalized KFORM_QUANTIZE kernel with its KQ_NARGS arguments:
 * one loop over the buckets of q->layout. */
Kernel *kernel_quantize_new(const char *name, const KQuantize *q);
/* Returns whether the buckets of a KFORM_QUANTIZE kernel write disjoint
 * bytes, so that any split of the loop may run in parallel. Otherwise a
 * bucket's codes start inside a byte that the bucket before it wrote, and
 * the kernel must run as one call over every bucket. */
bool kernel_quantize_parallel(const Kernel *k);

/* Computes the `uniform` flags and checks the kernel's invariants (operand
 * order, dtypes, every written argument stored exactly once). Panics on a
 * violation: a malformed kernel is a compiler bug. */
void kernel_finalize(Kernel *k);

/* Returns the number of iterations of the outermost loop for `batch`. */
int64_t kernel_outer_extent(const Kernel *k, int64_t batch);

/* Executes the kernel in C, one point at a time, with the same arithmetic
 * as generated code (f32 ops in float, f64 in double, no contraction).
 * It is the reference that generated code is tested against. A
 * KFORM_QUANTIZE kernel runs rt_quant_encode_bucket for each bucket. */
void kernel_eval(const Kernel *k, void *const *args, int64_t batch,
                 int64_t begin, int64_t end);

/* Prints the kernel in a stable text form (bocbc --emit=kernels). */
void kernel_print(FILE *out, const Kernel *k);

#endif
