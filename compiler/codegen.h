/* codegen.h - LLVM code generation and JIT compilation of fused kernels.
 *
 * Kernels are emitted through the LLVM 19 C API into one module, optimised
 * with the `default<O3>` pipeline for the host CPU (its name and features
 * reach the vectorisers through a TargetMachine), and compiled by ORC
 * LLJIT. Only this module and jit.c include llvm-c headers.
 */
#ifndef BOCB_CODEGEN_H
#define BOCB_CODEGEN_H

#include <stdbool.h>

#include "../runtime/exec.h"
#include "kcache.h"
#include "kernel.h"

typedef struct Jit Jit;

typedef struct JitStats {
    int kernels;           /* kernels compiled or loaded so far */
    KCacheStats cache;     /* with a kernel cache (jit_set_cache) */
    double build_seconds;  /* building LLVM IR */
    double opt_seconds;    /* the O3 pipeline */
    double link_seconds;   /* machine code generation and symbol lookup */
} JitStats;

/* Creates a JIT for the host CPU. Returns NULL and sets *error (malloc'd)
 * when LLVM cannot be initialised. */
Jit *jit_create(char **error);
void jit_destroy(Jit *jit);

/* Makes later jit_compile calls look kernels up in the on-disk cache in
 * `dir` (see kcache.h) and store the kernels they compile there; NULL
 * turns the cache off. */
void jit_set_cache(Jit *jit, const char *dir);

/* Compiles `n` kernels as one module and stores their entry points in
 * fns[0..n). Code stays valid until jit_destroy. Returns false and sets
 * *error (malloc'd) on failure. */
bool jit_compile(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns,
                 char **error);
const JitStats *jit_stats(const Jit *jit);

/* Returns the LLVM IR text of the kernels (malloc'd), after the O3
 * pipeline when `optimize` is set (bocbc --emit=llvm). */
char *codegen_emit_llvm(Kernel *const *kernels, int n, bool optimize,
                        char **error);
/* Returns the host assembly of the kernels (malloc'd), compiled after
 * the O3 pipeline (bocbc --emit=asm). */
char *codegen_emit_asm(Kernel *const *kernels, int n, char **error);

/* Shared by codegen.c and jit.c. The parameters use the struct names behind
 * LLVMContextRef, LLVMModuleRef and LLVMTargetMachineRef, so this header
 * needs no llvm-c include. */
struct LLVMOpaqueContext;
struct LLVMOpaqueModule;
struct LLVMOpaqueTargetMachine;

/* Initialises LLVM's native target and creates a TargetMachine for the host
 * CPU and its features. Returns NULL and sets *error (malloc'd) on failure. */
struct LLVMOpaqueTargetMachine *codegen_host_target_machine(char **error);

/* Creates a TargetMachine for the CPU named `cpu` ("x86-64-v2", "znver4")
 * with the features that name implies, or for the host CPU and its
 * detected features when `cpu` is NULL. Returns NULL and sets *error
 * (malloc'd) on failure. */
struct LLVMOpaqueTargetMachine *codegen_target_machine(const char *cpu, char **error);

/* Returns "llvm VERSION; TRIPLE; cpu CPU; features FEATURES" for `tm`
 * (malloc'd): everything besides a kernel's key that its machine code
 * depends on. */
char *codegen_target_id(struct LLVMOpaqueTargetMachine *tm);

/* Returns `module` compiled to an ELF object (malloc'd) and its size in
 * *size, or NULL after setting *error (malloc'd). Code generation changes
 * the module, so pass a clone of one that is still needed. */
void *codegen_emit_object(struct LLVMOpaqueModule *module,
                          struct LLVMOpaqueTargetMachine *tm, size_t *size, char **error);

/* Builds a module in `ctx` with one function per kernel, named symbols[i],
 * with the triple and data layout of `tm`. */
struct LLVMOpaqueModule *codegen_build_module(struct LLVMOpaqueContext *ctx,
                                              struct LLVMOpaqueTargetMachine *tm,
                                              Kernel *const *kernels, int n,
                                              const char *const *symbols);

/* Runs the `default<O3>` pipeline with loop and SLP vectorisation. Returns
 * false and sets *error (malloc'd) on failure. */
bool codegen_optimize(struct LLVMOpaqueModule *module,
                      struct LLVMOpaqueTargetMachine *tm, char **error);

#endif
