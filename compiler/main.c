/* main.c - the bocbc command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

#define BOCB_VERSION "0.1.0"

static void usage(FILE *out)
{
    fputs("usage: bocbc [options] FILE.bocb\n"
          "\n"
          "Compiles and runs the experiments of a .bocb program.\n"
          "\n"
          "modes:\n"
          "  --jit               compile kernels with LLVM and run them (default)\n"
          "  --interp            run the reference interpreter instead (slow; the oracle)\n"
          "  --syntax-only       parse FILE and report errors, nothing else\n"
          "  --emit=WHAT         print a stage of the first cell and stop; WHAT is\n"
          "                      ast, ir (training step and evaluation graphs), dot\n"
          "                      (training step for Graphviz), kernels (fused kernels\n"
          "                      and steps) or llvm (LLVM IR after the O3 pipeline)\n"
          "\n"
          "options:\n"
          "  -D KEY=VALUE        override an experiment setting, e.g. -D epochs=1\n"
          "  -e, --experiment N  run only experiment N (default: every experiment)\n"
          "  -I DIR              search DIR for imports (after the importing file's dir)\n"
          "  --report DIR        write report files to DIR instead of the experiment's\n"
          "  --threads N         threads for OpenBLAS matrix products (default: all cores)\n"
          "  --stats             print kernel count, compile time and planned memory\n"
          "  -q, --quiet         no progress lines, only the results table\n"
          "  -h, --help          print this help\n"
          "  --version           print the version\n"
          "\n"
          "environment:\n"
          "  BOCB_STDLIB         directory of the standard library (std/...)\n",
          out);
}

static int fail_usage(const char *fmt, const char *arg)
{
    fputs("bocbc: error: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'bocbc --help' for more information.\n", stderr);
    return 1;
}

static bool parse_emit(const char *what, EmitKind *out)
{
    static const struct {
        const char *name;
        EmitKind kind;
    } kinds[] = {
        {"ast", EMIT_AST}, {"ir", EMIT_IR}, {"dot", EMIT_DOT},
        {"kernels", EMIT_KERNELS}, {"llvm", EMIT_LLVM},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strcmp(kinds[i].name, what) == 0) {
            *out = kinds[i].kind;
            return true;
        }
    }
    return false;
}

static bool add_override(Options *o, const char *text)
{
    const char *eq = strchr(text, '=');
    if (!eq || eq == text)
        return false;
    o->overrides = xrealloc(o->overrides, size_mul((size_t)o->noverrides + 1, sizeof(Override)));
    o->overrides[o->noverrides].key = xstrndup(text, (size_t)(eq - text));
    o->overrides[o->noverrides].text = text;
    o->noverrides++;
    return true;
}

static void free_options(Options *o)
{
    for (int i = 0; i < o->noverrides; i++)
        free((char *)o->overrides[i].key);
    free(o->overrides);
    free(o->include_dirs);
}

/* Parses the command line into *options and runs bocbc. */
static int parse_and_run(int argc, char **argv, Options *options);

int main(int argc, char **argv)
{
    Options o;
    memset(&o, 0, sizeof o);
    int status = parse_and_run(argc, argv, &o);
    free_options(&o);
    return status;
}

static int parse_and_run(int argc, char **argv, Options *options)
{
    Options *o = options;
    o->backend = BACKEND_JIT;
    o->include_dirs = xcalloc((size_t)argc + 1, sizeof(char *));

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("bocbc %s\n", BOCB_VERSION);
            return 0;
        } else if (strcmp(a, "--jit") == 0) {
            o->backend = BACKEND_JIT;
        } else if (strcmp(a, "--interp") == 0) {
            o->backend = BACKEND_INTERP;
        } else if (strcmp(a, "--syntax-only") == 0) {
            o->syntax_only = true;
        } else if (strcmp(a, "--stats") == 0) {
            o->stats = true;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            o->quiet = true;
        } else if (strncmp(a, "--emit=", 7) == 0) {
            if (!parse_emit(a + 7, &o->emit))
                return fail_usage("unknown --emit value '%s'; expected ast, ir, dot, "
                                  "kernels or llvm", a + 7);
        } else if (strncmp(a, "-D", 2) == 0) {
            const char *text = a[2] ? a + 2 : next;
            if (!a[2])
                i++;
            if (!text || !add_override(o, text))
                return fail_usage("-D expects KEY=VALUE, such as -D epochs=1, not '%s'",
                                  text ? text : "");
        } else if (strcmp(a, "-I") == 0 || (strncmp(a, "-I", 2) == 0 && a[2])) {
            const char *dir = a[2] ? a + 2 : next;
            if (!a[2])
                i++;
            if (!dir)
                return fail_usage("%s expects a directory", a);
            o->include_dirs[o->ninclude_dirs++] = dir;
        } else if (strcmp(a, "-e") == 0 || strcmp(a, "--experiment") == 0) {
            if (!next)
                return fail_usage("%s expects an experiment name", a);
            o->experiment = next;
            i++;
        } else if (strcmp(a, "--report") == 0) {
            if (!next)
                return fail_usage("%s expects a directory", a);
            o->report_dir = next;
            i++;
        } else if (strcmp(a, "--threads") == 0) {
            char *end = NULL;
            long n = next ? strtol(next, &end, 10) : 0;
            if (!next || *end || n < 1 || n > 1024)
                return fail_usage("--threads expects a number from 1 to 1024, not '%s'",
                                  next ? next : "");
            o->threads = (int)n;
            i++;
        } else if (strcmp(a, "--repl") == 0 || strcmp(a, "-c") == 0 ||
                   strcmp(a, "-o") == 0) {
            return fail_usage("%s is not available in this version of bocbc", a);
        } else if (a[0] == '-' && a[1]) {
            return fail_usage("unknown option '%s'", a);
        } else if (o->input) {
            return fail_usage("more than one input file given ('%s')", a);
        } else {
            o->input = a;
        }
    }
    if (!o->input) {
        usage(stderr);
        return 1;
    }
    char *stdlib_dir = driver_find_stdlib();
    o->stdlib_dir = stdlib_dir;
    int status = driver_main(o);
    free(stdlib_dir);
    return status;
}
