/* aot.c - bocbc -c: kernels, sources and options into one object file,
 * linked with libbocb-aot.a into a standalone executable (see aot.h).
 *
 * The object defines these globals, which aot_runtime.c and aot_main.c
 * read (N is the number of entries of each array):
 *
 *     bocb_aot_kernel_count, bocb_aot_kernel_keys[N], bocb_aot_kernel_fns[N]
 *     bocb_aot_file_count, bocb_aot_file_paths[N], bocb_aot_file_texts[N],
 *         bocb_aot_file_sizes[N]
 *     bocb_aot_arg_count, bocb_aot_args[N]
 *     bocb_aot_main_file, bocb_aot_stdlib_dir (NULL when none), bocb_aot_target
 *
 * The kernels have internal linkage: only the table reaches them.
 */
#define _XOPEN_SOURCE 700

#include "aot.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

#include "../runtime/base.h"
#include "codegen.h"
#include "driver.h"
#include "kcache.h"

#ifndef BOCB_AOT_EXTRA_LIBS
#define BOCB_AOT_EXTRA_LIBS ""
#endif

extern char **environ;

/* ---- the runtime library -------------------------------------------------- */

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Returns libbocb-aot.a next to the running bocbc (the build tree) or in
 * ../lib (an installed tree), malloc'd, or NULL. */
static char *find_runtime_library(void)
{
    char *exe = driver_executable_dir();
    static const char *const candidates[] = {"%s/libbocb-aot.a", "%s/../lib/libbocb-aot.a"};
    for (size_t i = 0; exe && i < BOCB_ARRAY_LEN(candidates); i++) {
        char *path = xasprintf(candidates[i], exe);
        if (is_file(path)) {
            free(exe);
            return path;
        }
        free(path);
    }
    free(exe);
    return NULL;
}

/* ---- globals of the object ------------------------------------------------ */

typedef struct Emitter {
    LLVMContextRef ctx;
    LLVMModuleRef module;
    LLVMTypeRef t_ptr, t_i32, t_i64;
} Emitter;

/* Returns a pointer to a private constant copy of `len` bytes of `text`,
 * followed by a NUL. */
static LLVMValueRef const_text(Emitter *e, const char *text, size_t len)
{
    LLVMValueRef init = LLVMConstStringInContext(e->ctx, text, (unsigned)len, false);
    LLVMValueRef g = LLVMAddGlobal(e->module, LLVMTypeOf(init), ".str");
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, true);
    LLVMSetLinkage(g, LLVMPrivateLinkage);
    LLVMSetUnnamedAddr(g, true);
    return g;
}

static LLVMValueRef const_string(Emitter *e, const char *text)
{
    return text ? const_text(e, text, strlen(text)) : LLVMConstNull(e->t_ptr);
}

static void add_global(Emitter *e, const char *name, LLVMValueRef init)
{
    LLVMValueRef g = LLVMAddGlobal(e->module, LLVMTypeOf(init), name);
    LLVMSetInitializer(g, init);
    LLVMSetGlobalConstant(g, true);
}

static void add_count(Emitter *e, const char *name, int count)
{
    add_global(e, name, LLVMConstInt(e->t_i32, (unsigned long long)count, false));
}

static void add_array(Emitter *e, const char *name, LLVMTypeRef type, LLVMValueRef *values,
                      int n)
{
    add_global(e, name, LLVMConstArray2(type, values, (uint64_t)n));
}

/* Reads a whole source file into a malloc'd buffer. */
static char *read_source(const char *path, size_t *len, char **error)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *error = xasprintf("cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    StrBuf sb = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        sb_appendn(&sb, chunk, n);
    bool failed = ferror(f);
    fclose(f);
    if (failed) {
        *error = xasprintf("cannot read '%s': %s", path, strerror(errno));
        sb_free(&sb);
        return NULL;
    }
    *len = sb.len;
    return sb.data ? sb.data : xstrdup("");
}

static bool add_files(Emitter *e, const AotRequest *req, char **error)
{
    int n = req->nfiles;
    LLVMValueRef *paths = xcalloc((size_t)n + 1, sizeof *paths);
    LLVMValueRef *texts = xcalloc((size_t)n + 1, sizeof *texts);
    LLVMValueRef *sizes = xcalloc((size_t)n + 1, sizeof *sizes);
    bool ok = true;
    for (int i = 0; ok && i < n; i++) {
        size_t len = 0;
        char *text = read_source(req->files[i], &len, error);
        if (!text) {
            ok = false;
            break;
        }
        paths[i] = const_string(e, req->files[i]);
        texts[i] = const_text(e, text, len);
        sizes[i] = LLVMConstInt(e->t_i64, len, false);
        free(text);
    }
    if (ok) {
        add_count(e, "bocb_aot_file_count", n);
        add_array(e, "bocb_aot_file_paths", e->t_ptr, paths, n);
        add_array(e, "bocb_aot_file_texts", e->t_ptr, texts, n);
        add_array(e, "bocb_aot_file_sizes", e->t_i64, sizes, n);
    }
    free(paths);
    free(texts);
    free(sizes);
    return ok;
}

/* Adds the kernel table; keys[i] and symbols[i] belong to unique[i]. */
static void add_kernel_table(Emitter *e, char **keys, char **symbols, int n)
{
    LLVMValueRef *key_values = xcalloc((size_t)n + 1, sizeof *key_values);
    LLVMValueRef *fn_values = xcalloc((size_t)n + 1, sizeof *fn_values);
    for (int i = 0; i < n; i++) {
        key_values[i] = const_string(e, keys[i]);
        fn_values[i] = LLVMGetNamedFunction(e->module, symbols[i]);
        BOCB_ASSERT(fn_values[i] != NULL);
        LLVMSetLinkage(fn_values[i], LLVMInternalLinkage);
    }
    add_count(e, "bocb_aot_kernel_count", n);
    add_array(e, "bocb_aot_kernel_keys", e->t_ptr, key_values, n);
    add_array(e, "bocb_aot_kernel_fns", e->t_ptr, fn_values, n);
    free(key_values);
    free(fn_values);
}

static void add_options(Emitter *e, const AotRequest *req, const char *target)
{
    LLVMValueRef *args = xcalloc((size_t)req->nargs + 1, sizeof *args);
    for (int i = 0; i < req->nargs; i++)
        args[i] = const_string(e, req->args[i]);
    add_count(e, "bocb_aot_arg_count", req->nargs);
    add_array(e, "bocb_aot_args", e->t_ptr, args, req->nargs);
    free(args);
    add_global(e, "bocb_aot_main_file", const_string(e, req->main_file));
    add_global(e, "bocb_aot_stdlib_dir", const_string(e, req->stdlib_dir));
    add_global(e, "bocb_aot_target", const_string(e, target));
}

/* ---- object file and link ------------------------------------------------- */

/* Writes `size` bytes to a new temporary file next to `output` and
 * returns its path (malloc'd), or NULL after setting *error. */
static char *write_temporary(const char *output, const void *data, size_t size,
                             char **error)
{
    char *path = xasprintf("%s.XXXXXX", output);
    int fd = mkstemp(path);
    if (fd < 0) {
        *error = xasprintf("cannot create a temporary object file next to '%s': %s",
                           output, strerror(errno));
        free(path);
        return NULL;
    }
    FILE *f = fdopen(fd, "wb");
    bool ok = f && fwrite(data, 1, size, f) == size;
    ok &= f && fclose(f) == 0;
    if (!ok) {
        *error = xasprintf("cannot write '%s': %s", path, strerror(errno));
        unlink(path);
        free(path);
        return NULL;
    }
    return path;
}

/* Runs the C compiler driver ($CC, default cc) to link `object` with the
 * runtime library into `output`. */
static bool link_executable(const char *output, const char *object, const char *library,
                            char **error)
{
    const char *cc = getenv("CC");
    if (!cc || !cc[0])
        cc = "cc";
    /* The object file has no suffix the driver knows, so -x names it. */
    const char *fixed[] = {cc, "-o", output, "-x", "none", object, library, "-lopenblas",
                           "-lz", "-lm", "-lpthread"};
    enum { NFIXED = sizeof fixed / sizeof fixed[0], MAX_EXTRA = 32 };
    const char *argv[NFIXED + MAX_EXTRA + 1];
    memcpy(argv, fixed, sizeof fixed);
    int argc = NFIXED;
    /* The libraries the runtime needs besides those above, as the Makefile
     * found them (Open MPI's link flags, libedit), split at spaces. */
    char *extra = xstrdup(BOCB_AOT_EXTRA_LIBS);
    for (char *save = NULL, *word = strtok_r(extra, " ", &save); word && argc < NFIXED + MAX_EXTRA;
         word = strtok_r(NULL, " ", &save))
        argv[argc++] = word;
    argv[argc] = NULL;
    pid_t pid;
    int spawn_error = posix_spawnp(&pid, cc, NULL, NULL, (char *const *)argv, environ);
    free(extra);
    if (spawn_error != 0) {
        *error = xasprintf("cannot run the linker '%s': %s; set CC to a C compiler",
                           cc, strerror(spawn_error));
        return false;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            *error = xasprintf("cannot wait for the linker '%s': %s", cc, strerror(errno));
            return false;
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        *error = xasprintf("linking '%s' with '%s' failed (see the linker's messages above)",
                           output, library);
        return false;
    }
    return true;
}

bool aot_build(const AotRequest *req, char **error)
{
    char *library = find_runtime_library();
    if (!library) {
        *error = xstrdup("cannot find libbocb-aot.a next to bocbc or in ../lib; "
                         "rebuild bocb with make or reinstall it");
        return false;
    }
    LLVMTargetMachineRef tm = codegen_target_machine(req->cpu, error);
    if (!tm) {
        free(library);
        return false;
    }

    /* One entry per distinct kernel key. */
    int n = 0;
    Kernel **unique = xcalloc((size_t)req->nkernels + 1, sizeof *unique);
    char **keys = xcalloc((size_t)req->nkernels + 1, sizeof *keys);
    char **symbols = xcalloc((size_t)req->nkernels + 1, sizeof *symbols);
    for (int i = 0; i < req->nkernels; i++) {
        char *key = kernel_key(req->kernels[i]);
        bool seen = false;
        for (int j = 0; j < n && !seen; j++)
            seen = strcmp(keys[j], key) == 0;
        if (seen) {
            free(key);
            continue;
        }
        unique[n] = req->kernels[i];
        keys[n] = key;
        symbols[n++] = kcache_symbol(key);
    }

    Emitter e = {.ctx = LLVMContextCreate()};
    e.module = codegen_build_module(e.ctx, tm, unique, n, (const char *const *)symbols);
    e.t_ptr = LLVMPointerTypeInContext(e.ctx, 0);
    e.t_i32 = LLVMInt32TypeInContext(e.ctx);
    e.t_i64 = LLVMInt64TypeInContext(e.ctx);
    char *target = codegen_target_id(tm);
    add_kernel_table(&e, keys, symbols, n);
    add_options(&e, req, target);
    free(target);

    bool ok = add_files(&e, req, error) && codegen_optimize(e.module, tm, error);
    size_t size = 0;
    void *object = ok ? codegen_emit_object(e.module, tm, &size, error) : NULL;
    char *object_path = object ? write_temporary(req->output, object, size, error) : NULL;
    ok = object_path && link_executable(req->output, object_path, library, error);
    if (object_path)
        unlink(object_path);

    free(object_path);
    free(object);
    LLVMDisposeModule(e.module);
    LLVMContextDispose(e.ctx);
    LLVMDisposeTargetMachine(tm);
    for (int i = 0; i < n; i++) {
        free(keys[i]);
        free(symbols[i]);
    }
    free(unique);
    free(keys);
    free(symbols);
    free(library);
    return ok;
}
