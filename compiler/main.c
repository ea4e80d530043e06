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
          "Options that take a value also accept --option=VALUE.\n"
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

/* Records -D KEY=VALUE; spaces around KEY are ignored. */
static bool add_override(Options *o, const char *text)
{
    const char *eq = strchr(text, '=');
    if (!eq)
        return false;
    const char *start = text, *end = eq;
    while (start < end && *start == ' ')
        start++;
    while (end > start && end[-1] == ' ')
        end--;
    if (start == end)
        return false;
    o->overrides = xrealloc(o->overrides, size_mul((size_t)o->noverrides + 1, sizeof(Override)));
    o->overrides[o->noverrides].key = xstrndup(start, (size_t)(end - start));
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

typedef enum OptionKind {
    OPTION_FLAG,  /* takes no value */
    OPTION_VALUE, /* takes one value */
} OptionKind;

/* Returns whether option `name` takes a value; -1 for an unknown option. */
static int option_kind(const char *name)
{
    static const char *const flags[] = {
        "-h", "--help", "--version", "--jit", "--interp", "--syntax-only", "--stats",
        "-q", "--quiet", "--repl", "-c",
    };
    static const char *const valued[] = {
        "-D", "-I", "-e", "--experiment", "--report", "--threads", "--emit", "-o",
    };
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        if (strcmp(flags[i], name) == 0)
            return OPTION_FLAG;
    for (size_t i = 0; i < sizeof valued / sizeof valued[0]; i++)
        if (strcmp(valued[i], name) == 0)
            return OPTION_VALUE;
    return -1;
}

/* Applies option `name` with `value` (NULL for flags). Returns an exit
 * status to stop with, or -1 to go on. */
static int apply_option(Options *o, const char *name, const char *value)
{
    if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(name, "--version") == 0) {
        printf("bocbc %s\n", BOCB_VERSION);
        return 0;
    }
    if (strcmp(name, "--repl") == 0 || strcmp(name, "-c") == 0 || strcmp(name, "-o") == 0)
        return fail_usage("%s is not available in this version of bocbc", name);

    if (strcmp(name, "--jit") == 0) {
        o->backend = BACKEND_JIT;
    } else if (strcmp(name, "--interp") == 0) {
        o->backend = BACKEND_INTERP;
    } else if (strcmp(name, "--syntax-only") == 0) {
        o->syntax_only = true;
    } else if (strcmp(name, "--stats") == 0) {
        o->stats = true;
    } else if (strcmp(name, "-q") == 0 || strcmp(name, "--quiet") == 0) {
        o->quiet = true;
    } else if (strcmp(name, "--emit") == 0) {
        if (!parse_emit(value, &o->emit))
            return fail_usage("unknown --emit value '%s'; expected ast, ir, dot, kernels "
                              "or llvm", value);
    } else if (strcmp(name, "-D") == 0) {
        if (!add_override(o, value))
            return fail_usage("-D expects KEY=VALUE, such as -D epochs=1, not '%s'", value);
    } else if (strcmp(name, "-I") == 0) {
        o->include_dirs[o->ninclude_dirs++] = value;
    } else if (strcmp(name, "-e") == 0 || strcmp(name, "--experiment") == 0) {
        o->experiment = value;
    } else if (strcmp(name, "--report") == 0) {
        if (!value[0])
            return fail_usage("%s expects a directory", name);
        o->report_dir = value;
    } else if (strcmp(name, "--threads") == 0) {
        char *end = NULL;
        long n = strtol(value, &end, 10);
        if (!value[0] || *end || n < 1 || n > 1024)
            return fail_usage("--threads expects a number from 1 to 1024, not '%s'", value);
        o->threads = (int)n;
    }
    return -1;
}

/* Parses the command line into *o. Returns an exit status to stop with,
 * or -1 to go on. */
static int parse_arguments(Options *o, int argc, char **argv)
{
    o->backend = BACKEND_JIT;
    o->include_dirs = xcalloc((size_t)argc + 1, sizeof(char *));

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (o->input)
                return fail_usage("more than one input file given ('%s')", a);
            o->input = a;
            continue;
        }

        /* The value of an option: after '=' (--report=DIR), attached to a
         * short option (-Dkey=value, -Idir), or the next argument. */
        char name[64];
        const char *value = NULL;
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
            value = eq + 1;
        } else if (a[1] != '-' && a[2] && (a[1] == 'D' || a[1] == 'I')) {
            snprintf(name, sizeof name, "-%c", a[1]);
            value = a + 2;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }

        int kind = option_kind(name);
        if (kind < 0)
            return fail_usage("unknown option '%s'", a);
        if (kind == OPTION_FLAG && value)
            return fail_usage("option '%s' takes no value", name);
        if (kind == OPTION_VALUE && !value) {
            if (i + 1 >= argc)
                return fail_usage("option '%s' expects a value", name);
            value = argv[++i];
        }
        int status = apply_option(o, name, value);
        if (status >= 0)
            return status;
    }
    if (!o->input) {
        fputs("bocbc: error: no input file\n", stderr);
        usage(stderr);
        return 1;
    }
    return -1;
}

int main(int argc, char **argv)
{
    Options o;
    memset(&o, 0, sizeof o);
    int status = parse_arguments(&o, argc, argv);
    if (status < 0) {
        char *stdlib_dir = driver_find_stdlib();
        o.stdlib_dir = stdlib_dir;
        status = driver_main(&o);
        free(stdlib_dir);
    }
    free_options(&o);
    return status;
}
