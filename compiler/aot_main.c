/* aot_main.c - main() of a binary written by `bocbc -c`.
 *
 * The binary carries its program's source files. main() writes them to
 * a new private temporary directory, below which each file keeps its
 * absolute path, so relative imports resolve as they did at compile time.
 * It then runs bocbc's own main (main.c, compiled as bocbc_main) on the
 * copy of the main file, with the compile-time options first and the
 * user's after them, so a user's -D KEY=VALUE replaces a compiled-in one.
 * The standard library and -I directories point into the copy, and
 * BOCB_PATH is emptied, so the binary never reads .bocb files from the
 * machine it runs on. BOCB_AOT_SOURCE_ROOT names the directory, so data
 * and report paths relative to a source file resolve where the file was
 * compiled (paths.c). The directory is removed when bocbc_main returns.
 *
 * NOTE: a binary killed by a signal leaves its directory behind in
 * $TMPDIR (default /tmp), named bocb-aot-XXXXXX.
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/base.h"
#include "../runtime/cpu.h"
#include "../runtime/report.h"
#include "paths.h"

/* Defined by the object file that aot.c writes. */
extern const int bocb_aot_file_count;
extern const char *const bocb_aot_file_paths[];
extern const char *const bocb_aot_file_texts[];
extern const int64_t bocb_aot_file_sizes[];
extern const int bocb_aot_arg_count;
extern const char *const bocb_aot_args[];
extern const char *const bocb_aot_main_file;
extern const char *const bocb_aot_stdlib_dir;
extern const char *const bocb_aot_target;

/* main.c's main, compiled under this name into libbocb-aot.a. */
int bocbc_main(int argc, char **argv);

enum { EXIT_RUNTIME = 3 }; /* BOCB_EXIT_RUNTIME of driver.h */

/* Writes every embedded source file below `root`. */
static bool write_sources(const char *root)
{
    for (int i = 0; i < bocb_aot_file_count; i++) {
        char *path = xasprintf("%s%s", root, bocb_aot_file_paths[i]);
        char *dir = xstrdup(path);
        *strrchr(dir, '/') = '\0';
        char *error = NULL;
        bool ok = rt_make_dirs(dir, &error) &&
                  rt_write_file_atomic(path, bocb_aot_file_texts[i],
                                       (size_t)bocb_aot_file_sizes[i], &error);
        free(dir);
        free(path);
        if (!ok) {
            fprintf(stderr, "error: cannot unpack the program's sources: %s\n", error);
            free(error);
            return false;
        }
    }
    return true;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    const char *missing = NULL;
    if (!rt_cpu_runs_target(bocb_aot_target, &missing)) {
        fprintf(stderr, "error: this executable's kernels need the CPU feature '%s', "
                "which this CPU lacks (they were compiled for %s); compile the program "
                "again with bocbc -c --target-cpu=x86-64-v2\n", missing, bocb_aot_target);
        return EXIT_RUNTIME;
    }
    const char *tmp = getenv("TMPDIR");
    char *root = xasprintf("%s/bocb-aot-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        fprintf(stderr, "error: cannot create a temporary directory '%s': %s; set TMPDIR "
                "to a writable directory\n", root, strerror(errno));
        free(root);
        return EXIT_RUNTIME;
    }
    int status = EXIT_RUNTIME;
    if (!write_sources(root))
        goto done;

    char *stdlib = bocb_aot_stdlib_dir ? xasprintf("%s%s", root, bocb_aot_stdlib_dir)
                                       : xasprintf("%s/no-standard-library", root);
    setenv("BOCB_STDLIB", stdlib, 1);
    setenv("BOCB_PATH", "", 1);
    setenv(AOT_SOURCE_ROOT_ENV, root, 1);
    free(stdlib);

    /* argv[0], compile-time options, the user's options, the main file. */
    int n = 0;
    char **args = xcalloc((size_t)(argc + bocb_aot_arg_count + 2), sizeof *args);
    char **owned = xcalloc((size_t)bocb_aot_arg_count + 2, sizeof *owned);
    int nowned = 0;
    args[n++] = argv[0];
    for (int i = 0; i < bocb_aot_arg_count; i++) {
        bool is_dir = i > 0 && strcmp(bocb_aot_args[i - 1], "-I") == 0;
        if (is_dir) {
            owned[nowned] = xasprintf("%s%s", root, bocb_aot_args[i]);
            char *error = NULL;
            if (!rt_make_dirs(owned[nowned], &error))
                free(error); /* a missing -I directory is reported by the loader */
            args[n++] = owned[nowned++];
        } else {
            args[n++] = (char *)bocb_aot_args[i];
        }
    }
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    owned[nowned] = xasprintf("%s%s", root, bocb_aot_main_file);
    args[n++] = owned[nowned++];

    status = bocbc_main(n, args);
    for (int i = 0; i < nowned; i++)
        free(owned[i]);
    free(owned);
    free(args);

done:
    nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(root);
    return status;
}
