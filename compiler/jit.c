/* jit.c - compiling kernel modules in-process with ORC LLJIT.
 *
 * jit_compile builds one module per call (codegen_build_module) and runs
 * the O3 pipeline on it with a TargetMachine for the host. It then adds
 * the module to an LLJIT whose main JITDylib also resolves symbols from
 * the process, so the kernels' calls to expf, powf and the other C library
 * functions link against the libm that the process has loaded.
 *
 * Symbols are "NAME.mM.I": the kernel's name, the number of the module
 * (one per jit_compile call) and the kernel's index in that call. Kernels
 * with one name in two calls, or twice in one call, therefore never clash.
 */
#include "codegen.h"

#include <stdlib.h>
#include <string.h>

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>

#include "../runtime/base.h"

struct Jit {
    LLVMOrcLLJITRef lljit;
    LLVMTargetMachineRef tm; /* for the O3 pipeline (LLJIT has its own) */
    int modules;             /* jit_compile calls so far */
    JitStats stats;
};

/* Consumes err and returns "WHAT: LLVM's message" (malloc'd). */
static char *take_error(LLVMErrorRef err, const char *what)
{
    char *message = LLVMGetErrorMessage(err);
    char *result = xasprintf("%s: %s", what, message);
    LLVMDisposeErrorMessage(message);
    return result;
}

static bool create_lljit(Jit *jit, char **error)
{
    LLVMOrcJITTargetMachineBuilderRef jtmb;
    LLVMErrorRef err = LLVMOrcJITTargetMachineBuilderDetectHost(&jtmb);
    if (err) {
        *error = take_error(err, "LLVM could not detect the host for the JIT");
        return false;
    }
    LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
    LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb); /* takes jtmb */
    err = LLVMOrcCreateLLJIT(&jit->lljit, builder);               /* takes builder */
    if (err) {
        jit->lljit = NULL;
        *error = take_error(err, "LLVM could not create the JIT");
        return false;
    }

    LLVMOrcDefinitionGeneratorRef generator;
    err = LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
        &generator, LLVMOrcLLJITGetGlobalPrefix(jit->lljit), NULL, NULL);
    if (err) {
        *error = take_error(err, "LLVM could not search the process for symbols");
        return false;
    }
    LLVMOrcJITDylibAddGenerator(LLVMOrcLLJITGetMainJITDylib(jit->lljit), generator);
    return true;
}

Jit *jit_create(char **error)
{
    Jit *jit = xcalloc(1, sizeof *jit);
    jit->tm = codegen_host_target_machine(error);
    if (!jit->tm || !create_lljit(jit, error)) {
        jit_destroy(jit);
        return NULL;
    }
    return jit;
}

void jit_destroy(Jit *jit)
{
    if (!jit)
        return;
    if (jit->lljit) {
        LLVMErrorRef err = LLVMOrcDisposeLLJIT(jit->lljit);
        if (err) {
            /* The error is only reported, since the JIT is gone either
             * way. It must still be consumed: LLVM builds with assertions
             * abort on an unconsumed error. */
            char *message = take_error(err, "LLVM could not dispose of the JIT");
            fprintf(stderr, "bocbc: %s\n", message);
            free(message);
        }
    }
    if (jit->tm)
        LLVMDisposeTargetMachine(jit->tm);
    free(jit);
}

const JitStats *jit_stats(const Jit *jit)
{
    return &jit->stats;
}

static void free_symbols(char **symbols, int n)
{
    for (int i = 0; i < n; i++)
        free(symbols[i]);
    free(symbols);
}

bool jit_compile(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns,
                 char **error)
{
    if (n == 0)
        return true;
    int module_id = jit->modules++;
    char **symbols = xcalloc((size_t)n, sizeof *symbols);
    for (int i = 0; i < n; i++)
        symbols[i] = xasprintf("%s.m%d.%d", kernels[i]->name, module_id, i);

    double t0 = now_seconds();
    LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
    LLVMContextRef ctx = LLVMOrcThreadSafeContextGetContext(tsc);
    LLVMModuleRef module = codegen_build_module(ctx, jit->tm, kernels, n,
                                                (const char *const *)symbols);
    double t1 = now_seconds();
    jit->stats.build_seconds += t1 - t0;

    if (!codegen_optimize(module, jit->tm, error)) {
        LLVMDisposeModule(module);
        LLVMOrcDisposeThreadSafeContext(tsc);
        free_symbols(symbols, n);
        return false;
    }
    double t2 = now_seconds();
    jit->stats.opt_seconds += t2 - t1;

    /* The ThreadSafeModule takes the module, and the JIT takes the
     * ThreadSafeModule even when adding it fails. The module keeps the
     * context alive after our reference to it is gone. */
    LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(module, tsc);
    LLVMOrcDisposeThreadSafeContext(tsc);
    LLVMErrorRef err = LLVMOrcLLJITAddLLVMIRModule(
        jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), tsm);
    if (err) {
        *error = take_error(err, "LLVM could not add the kernel module to the JIT");
        free_symbols(symbols, n);
        return false;
    }

    /* The first lookup compiles the whole module to machine code. */
    for (int i = 0; i < n; i++) {
        LLVMOrcExecutorAddress address = 0;
        err = LLVMOrcLLJITLookup(jit->lljit, &address, symbols[i]);
        if (err) {
            char *what = xasprintf("LLVM could not compile or find kernel %s",
                                   symbols[i]);
            *error = take_error(err, what);
            free(what);
            free_symbols(symbols, n);
            return false;
        }
        fns[i] = (RtKernelFn)(uintptr_t)address;
    }
    jit->stats.link_seconds += now_seconds() - t2;
    jit->stats.kernels += n;
    free_symbols(symbols, n);
    return true;
}
