/* jit.c - compiling kernel modules in-process with ORC LLJIT.
 *
 * jit_compile builds one module per call (codegen_build_module) and runs
 * the O3 pipeline on it with a TargetMachine for the host. It then adds
 * the module to an LLJIT whose main JITDylib also resolves symbols from
 * the process, so the kernels' calls to expf, powf and the other C library
 * functions link against the libm that the process has loaded.
 *
 * Without a kernel cache, symbols are "NAME.mM.I": the kernel's name, the
 * number of the module (one per jit_compile call) and the kernel's index
 * in that call. Kernels with one name in two calls, or twice in one call,
 * therefore never clash.
 *
 * With a kernel cache (jit_set_cache), each kernel is its own object file
 * whose symbol is derived from the kernel's key (kcache_symbol). Kernels
 * found in the cache are linked from their objects. The others are built
 * as one module and optimised once, then each is emitted as an object of
 * its own, written to the cache and linked. A kernel already linked by an earlier
 * call is reused, because its symbol can be defined only once.
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
#include "kcache.h"

/* A kernel linked from an object: its key and entry point. */
typedef struct LinkedKernel {
    char *key;
    RtKernelFn fn;
} LinkedKernel;

struct Jit {
    LLVMOrcLLJITRef lljit;
    LLVMTargetMachineRef tm; /* for the O3 pipeline (LLJIT has its own) */
    int modules;             /* jit_compile calls so far */
    JitStats stats;
    char *cache_dir;         /* NULL: no kernel cache */
    char *target;            /* codegen_target_id(tm), part of each cache entry */
    LinkedKernel *linked;
    int nlinked;
    bool warned;             /* a cache write failure was reported */
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
    for (int i = 0; i < jit->nlinked; i++)
        free(jit->linked[i].key);
    free(jit->linked);
    free(jit->cache_dir);
    free(jit->target);
    free(jit);
}

void jit_set_cache(Jit *jit, const char *dir)
{
    free(jit->cache_dir);
    jit->cache_dir = dir ? xstrdup(dir) : NULL;
    if (!jit->target)
        jit->target = codegen_target_id(jit->tm);
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

static bool compile_cached(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns,
                           char **error);

bool jit_compile(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns,
                 char **error)
{
    if (n == 0)
        return true;
    if (jit->cache_dir)
        return compile_cached(jit, kernels, n, fns, error);
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

/* ---- compiling through the kernel cache ---------------------------------- */

static RtKernelFn find_linked(const Jit *jit, const char *key)
{
    for (int i = 0; i < jit->nlinked; i++)
        if (strcmp(jit->linked[i].key, key) == 0)
            return jit->linked[i].fn;
    return NULL;
}

/* Links one kernel's object code and records its entry point. */
static bool link_object(Jit *jit, const char *key, const void *object, size_t size,
                        char **error)
{
    char *symbol = kcache_symbol(key);
    LLVMMemoryBufferRef buffer =
        LLVMCreateMemoryBufferWithMemoryRangeCopy(object, size, symbol);
    LLVMErrorRef err = LLVMOrcLLJITAddObjectFile(       /* takes buffer */
        jit->lljit, LLVMOrcLLJITGetMainJITDylib(jit->lljit), buffer);
    LLVMOrcExecutorAddress address = 0;
    if (!err)
        err = LLVMOrcLLJITLookup(jit->lljit, &address, symbol);
    if (err) {
        char *what = xasprintf("LLVM could not link kernel object %s", symbol);
        *error = take_error(err, what);
        free(what);
        free(symbol);
        return false;
    }
    free(symbol);
    jit->linked = xrealloc(jit->linked, (size_t)(jit->nlinked + 1) * sizeof *jit->linked);
    jit->linked[jit->nlinked++] = (LinkedKernel){xstrdup(key), (RtKernelFn)(uintptr_t)address};
    return true;
}

/* Deletes every kernel of `module` but symbols[keep] (and its body). */
static void keep_one_kernel(LLVMModuleRef module, char **symbols, int n, int keep)
{
    for (int i = 0; i < n; i++) {
        if (i == keep)
            continue;
        char *body = xasprintf("%s.body", symbols[i]);
        LLVMValueRef fns[2] = {LLVMGetNamedFunction(module, symbols[i]),
                               LLVMGetNamedFunction(module, body)};
        free(body);
        for (int f = 0; f < 2; f++)
            if (fns[f])
                LLVMDeleteFunction(fns[f]);
    }
}

/* Builds the kernels `missing` as one module, optimises it, and emits,
 * caches and links one object per kernel. */
static bool compile_missing(Jit *jit, Kernel **missing, char **keys, int n, char **error)
{
    char **symbols = xcalloc((size_t)n, sizeof *symbols);
    for (int i = 0; i < n; i++)
        symbols[i] = kcache_symbol(keys[i]);

    double t0 = now_seconds();
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef module = codegen_build_module(ctx, jit->tm, missing, n,
                                                (const char *const *)symbols);
    double t1 = now_seconds();
    jit->stats.build_seconds += t1 - t0;
    bool ok = codegen_optimize(module, jit->tm, error);
    double t2 = now_seconds();
    jit->stats.opt_seconds += t2 - t1;

    for (int i = 0; ok && i < n; i++) {
        LLVMModuleRef one = LLVMCloneModule(module);
        keep_one_kernel(one, symbols, n, i);
        size_t size = 0;
        void *object = codegen_emit_object(one, jit->tm, &size, error);
        LLVMDisposeModule(one);
        if (!object) {
            ok = false;
            break;
        }
        char *write_error = NULL;
        if (!kcache_write(jit->cache_dir, jit->target, keys[i], object, size,
                          &write_error)) {
            jit->stats.cache.write_errors++;
            if (!jit->warned)
                fprintf(stderr, "bocbc: warning: cannot write the kernel cache, so "
                        "kernels are compiled again next time: %s\n", write_error);
            jit->warned = true;
            free(write_error);
        }
        ok = link_object(jit, keys[i], object, size, error);
        free(object);
    }
    jit->stats.link_seconds += now_seconds() - t2;
    LLVMDisposeModule(module);
    LLVMContextDispose(ctx);
    for (int i = 0; i < n; i++)
        free(symbols[i]);
    free(symbols);
    return ok;
}

static bool compile_cached(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns,
                           char **error)
{
    char **keys = xcalloc((size_t)n, sizeof *keys);
    Kernel **missing = xcalloc((size_t)n, sizeof *missing);
    char **missing_keys = xcalloc((size_t)n, sizeof *missing_keys);
    int nmissing = 0;
    bool ok = true;

    for (int i = 0; ok && i < n; i++) {
        keys[i] = kernel_key(kernels[i]);
        if (find_linked(jit, keys[i]))
            continue;
        bool listed = false;
        for (int j = 0; j < nmissing && !listed; j++)
            listed = strcmp(missing_keys[j], keys[i]) == 0;
        if (listed)
            continue;
        double t0 = now_seconds();
        size_t size = 0;
        void *object = kcache_read(jit->cache_dir, jit->target, keys[i], &size,
                                   &jit->stats.cache);
        if (object) {
            jit->stats.cache.hits++;
            ok = link_object(jit, keys[i], object, size, error);
            free(object);
            jit->stats.link_seconds += now_seconds() - t0;
        } else {
            jit->stats.cache.misses++;
            missing[nmissing] = kernels[i];
            missing_keys[nmissing++] = keys[i];
        }
    }
    if (ok && nmissing > 0)
        ok = compile_missing(jit, missing, missing_keys, nmissing, error);
    for (int i = 0; ok && i < n; i++) {
        fns[i] = find_linked(jit, keys[i]);
        BOCB_ASSERT(fns[i] != NULL);
    }
    if (ok)
        jit->stats.kernels += n;

    for (int i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
    free(missing);
    free(missing_keys);
    return ok;
}
