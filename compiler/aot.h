/* aot.h - ahead-of-time compilation of a program into a standalone binary.
 *
 * `bocbc -c FILE.bocb -o OUT` compiles the kernels of every cell of the
 * selected experiments into one object file through an LLVM
 * TargetMachine and links it with the AOT runtime library (libbocb-aot.a:
 * the front end, scheduler, interpreter and runtime, without LLVM) into
 * the executable OUT. The object also holds the program's source files,
 * the compile-time options, and a table from kernel key (kcache.h) to
 * entry point.
 *
 * OUT runs like bocbc on the embedded program: it takes the same options
 * and -D overrides, compiles the program again (milliseconds), and looks
 * each kernel up in its table instead of calling LLVM (aot_runtime.c). An
 * override that changes a kernel, such as another model width, is an
 * error that names the missing kernel.
 */
#ifndef BOCB_AOT_H
#define BOCB_AOT_H

#include <stdbool.h>

#include "kernel.h"

typedef struct AotRequest {
    const char *output;       /* the executable to write */
    const char *cpu;          /* LLVM CPU name; NULL for the host */
    Kernel *const *kernels;   /* duplicates are compiled once */
    int nkernels;
    const char *const *files; /* real paths of the program's source files */
    int nfiles;
    const char *main_file;    /* the real path of the file given to bocbc */
    const char *stdlib_dir;   /* real path, or NULL */
    const char *const *args;  /* compile-time options replayed by OUT */
    int nargs;
} AotRequest;

/* Writes the executable `req->output`. Returns false and sets *error
 * (malloc'd) when a source cannot be read, code generation fails, the
 * runtime library is missing or the linker fails. */
bool aot_build(const AotRequest *req, char **error);

#endif
