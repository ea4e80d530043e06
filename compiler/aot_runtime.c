/* aot_runtime.c - the Jit of an AOT binary: a table lookup, no LLVM.
 *
 * libbocb-aot.a links this file in place of jit.c and codegen.c, so the
 * driver, scheduler and runtime run unchanged in a binary written by
 * `bocbc -c`. jit_compile finds each kernel by its key (kcache.h) in the
 * table that aot.c put into the binary's object file. The functions that
 * would need LLVM itself (--emit=llvm, --emit=asm, -c) report that an AOT
 * binary cannot do that.
 */
#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "aot.h"
#include "codegen.h"
#include "kcache.h"

/* Defined by the object file that aot.c writes. */
extern const int bocb_aot_kernel_count;
extern const char *const bocb_aot_kernel_keys[];
extern const RtKernelFn bocb_aot_kernel_fns[];

struct Jit {
    JitStats stats;
};

Jit *jit_create(char **error)
{
    (void)error;
    return xcalloc(1, sizeof(Jit));
}

void jit_destroy(Jit *jit)
{
    free(jit);
}

/* The kernels were compiled when the binary was: there is nothing to cache. */
void jit_set_cache(Jit *jit, const char *dir)
{
    (void)jit;
    (void)dir;
}

const JitStats *jit_stats(const Jit *jit)
{
    return &jit->stats;
}

static RtKernelFn find_kernel(const char *key)
{
    for (int i = 0; i < bocb_aot_kernel_count; i++)
        if (strcmp(bocb_aot_kernel_keys[i], key) == 0)
            return bocb_aot_kernel_fns[i];
    return NULL;
}

bool jit_compile(Jit *jit, Kernel *const *kernels, int n, RtKernelFn *fns, char **error)
{
    for (int i = 0; i < n; i++) {
        char *key = kernel_key(kernels[i]);
        fns[i] = find_kernel(key);
        free(key);
        if (!fns[i]) {
            *error = xasprintf("kernel %s is not in this binary, because the options "
                               "given change it; pass the same options to bocbc -c to "
                               "compile a binary for them", kernels[i]->name);
            return false;
        }
    }
    jit->stats.kernels += n;
    return true;
}

static char *not_in_aot_binary(const char *what, char **error)
{
    *error = xasprintf("%s needs LLVM, which a binary written by bocbc -c does not "
                       "contain; run bocbc itself", what);
    return NULL;
}

char *codegen_emit_llvm(Kernel *const *kernels, int n, bool optimize, char **error)
{
    (void)kernels, (void)n, (void)optimize;
    return not_in_aot_binary("--emit=llvm", error);
}

char *codegen_emit_asm(Kernel *const *kernels, int n, char **error)
{
    (void)kernels, (void)n;
    return not_in_aot_binary("--emit=asm", error);
}

bool aot_build(const AotRequest *req, char **error)
{
    (void)req;
    not_in_aot_binary("-c", error);
    return false;
}
