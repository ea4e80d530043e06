/* main.c - the bocbc command line.
 *
 * Options are parsed with getopt_long, so long options take their value
 * as `--option=VALUE` or as the next argument, may be abbreviated to a
 * unique prefix, and may come before or after the input file. The exit
 * status names the kind of failure (the BOCB_EXIT_* codes in driver.h).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "analyze_weights.h"
#include "driver.h"
#include "repl.h"
#include "qsdp.h"
#include "memory_size.h"

#define BOCB_VERSION "0.1.0"

static void usage(FILE *out)
{
    fputs("usage: bocbc [options] FILE.bocb\n"
          "       bocbc [options] --repl [FILE.bocb]\n"
          "       bocbc analyze weights [--out DIR] CHECKPOINT.safetensors...\n"
          "\n"
          "Compiles and runs the experiments of a .bocb program.\n"
          "\n"
          "modes:\n"
          "  --jit               compile kernels with LLVM and run them (default)\n"
          "  --interp            run the reference interpreter instead (slow; the oracle)\n"
          "  --syntax-only       parse FILE and its imports and report errors, nothing else\n"
          "  --check             parse, resolve and compile every cell, then stop without\n"
          "                      training; a file without experiments has its names\n"
          "                      checked, but no shapes\n"
          "  --list-cells        print the cells (model / optimizer / seed) of each\n"
          "                      experiment, one per line, and stop\n"
          "  -c                  compile the selected experiments into a standalone\n"
          "                      executable (see -o) instead of running them\n"
          "  --emit=WHAT         print a stage of the first cell and stop; WHAT is one of\n"
          "                        tokens   the tokens of FILE, one per line\n"
          "                        ast      the syntax tree of FILE\n"
          "                        ir       the lowered forward graph (loss and logits)\n"
          "                        ir-grad  the training step after autodiff\n"
          "                        ir-opt   the final training step and evaluation graphs,\n"
          "                                 after optimizer expansion and dead-code removal\n"
          "                        kernels  the fused kernels and the steps that run them\n"
          "                        dot      the final training step for Graphviz\n"
          "                        llvm     the LLVM IR of the kernels after the O3 pipeline\n"
          "                        asm      the host assembly of the kernels\n"
          "  --repl              start an interactive session, after loading FILE if\n"
          "                      given; also the mode of 'bocbc' without a file when\n"
          "                      stdin is a terminal\n"
          "  --summarize=CSV     write summary.md and summary.json next to the results\n"
          "                      table CSV (a runs.csv that --report wrote) and stop;\n"
          "                      no FILE.bocb is needed\n"
          "\n"
          "options:\n"
          "  -o FILE             with -c: the executable to write (default: FILE.bocb\n"
          "                      without its directory and .bocb suffix)\n"
          "  --target-cpu=CPU    with -c: the instruction set of the kernels: host (the\n"
          "                      default), x86-64, x86-64-v2, x86-64-v3 or x86-64-v4\n"
          "  --cache-dir=DIR     keep compiled kernels in DIR (default: $BOCB_CACHE_DIR,\n"
          "                      else $XDG_CACHE_HOME/bocb, else ~/.cache/bocb)\n"
          "  --no-cache          neither read nor write the kernel cache\n"
          "  -D KEY=VALUE        override an experiment setting, e.g. -D epochs=1\n"
          "                      (repeatable)\n"
          "  -e, --experiment=NAME\n"
          "                      run only experiment NAME (default: every experiment)\n"
          "  -I DIR              search DIR for imports (repeatable; see 'imports' below)\n"
          "  --report=DIR        write report files to DIR instead of the experiment's\n"
          "                      report directory (default: the experiment's, or none)\n"
          "  --threads=N         threads for fused kernels and OpenBLAS matrix products,\n"
          "                      1 to 1024 (default: the CPUs bocbc may run on for\n"
          "                      kernels, OpenBLAS's choice for matrix products)\n"
          "  --check-numerics    check the result of every op and stop at the first that\n"
          "                      makes a NaN or an infinity from finite operands, naming\n"
          "                      the op and its source location (runs the interpreter)\n"
          "  --max-memory=SIZE   reject a cell that plans more than SIZE bytes before it\n"
          "                      runs; SIZE takes a K, M, G or T suffix (powers of 1024)\n"
          "                      (default: the memory this process may allocate)\n"
          "  --stats             print kernel count, compile time in ms, kernel cache\n"
          "                      hits and planned memory in MiB for each cell\n"
          "  --ranks=N           train sharded, simulating N ranks (1 to 256) in this\n"
          "                      process; under mpirun, the ranks are the processes\n"
          "  -q, --quiet         print no progress lines, only the results table\n"
          "  --color=WHEN        colour diagnostics: auto, always or never (default: auto,\n"
          "                      which colours only when stderr is a terminal and NO_COLOR\n"
          "                      is unset or empty)\n"
          "  -h, --help          print this help and exit\n"
          "  --version           print the version and exit\n"
          "\n"
          "imports:\n"
          "  An import path is looked up relative to the importing file, then in each\n"
          "  -I DIR in order, then in each directory of BOCB_PATH, then (for std/...)\n"
          "  in the standard library.\n"
          "\n"
          "environment:\n"
          "  BOCB_CACHE_DIR      directory of the kernel cache (see --cache-dir)\n"
          "  BOCB_PATH           colon-separated directories to search for imports\n"
          "  BOCB_STDLIB         directory of the standard library (the one that\n"
          "                      contains optim/); default: found next to bocbc\n"
          "  CC                  with -c: the C compiler that links the executable\n"
          "                      (default: cc)\n"
          "  NO_COLOR            when set and not empty, --color=auto does not colour\n"
          "  TERM                when 'dumb', --color=auto does not colour\n"
          "  XDG_DATA_HOME       the REPL keeps its history in XDG_DATA_HOME/bocb/history\n"
          "                      (default: ~/.local/share/bocb/history)\n"
          "\n"
          "exit status:\n"
          "  0  success\n"
          "  1  errors in the program (syntax, names, shapes, settings), or an\n"
          "     input or import file that cannot be read\n"
          "  2  command-line usage error\n"
          "  3  run-time error: unreadable data, a report or the standard output that\n"
          "     cannot be written, too little memory, or a failure of code generation\n"
          "  130  stopped by SIGINT after saving a checkpoint; the same command resumes\n"
          "  143  stopped by SIGTERM after saving a checkpoint; the same command resumes\n",
          out);
}

static int fail_usage(const char *fmt, const char *arg)
{
    fputs("bocbc: error: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs("\nTry 'bocbc --help' for more information.\n", stderr);
    return BOCB_EXIT_USAGE;
}

static bool parse_emit(const char *what, EmitKind *out)
{
    static const struct {
        const char *name;
        EmitKind kind;
    } kinds[] = {
        {"tokens", EMIT_TOKENS}, {"ast", EMIT_AST},         {"ir", EMIT_IR},
        {"ir-grad", EMIT_IR_GRAD}, {"ir-opt", EMIT_IR_OPT}, {"dot", EMIT_DOT},
        {"kernels", EMIT_KERNELS}, {"llvm", EMIT_LLVM},     {"asm", EMIT_ASM},
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
    free(o->default_output);
}

/* getopt_long codes of the options without a short form. */
enum {
    OPT_VERSION = 256,
    OPT_JIT,
    OPT_INTERP,
    OPT_SYNTAX_ONLY,
    OPT_CHECK,
    OPT_LIST_CELLS,
    OPT_EMIT,
    OPT_REPORT,
    OPT_THREADS,
    OPT_RANKS,
    OPT_STATS,
    OPT_COLOR,
    OPT_REPL,
    OPT_TARGET_CPU,
    OPT_CACHE_DIR,
    OPT_NO_CACHE,
    OPT_CHECK_NUMERICS,
    OPT_MAX_MEMORY,
    OPT_SUMMARIZE,
};

static const struct option long_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"jit", no_argument, NULL, OPT_JIT},
    {"interp", no_argument, NULL, OPT_INTERP},
    {"syntax-only", no_argument, NULL, OPT_SYNTAX_ONLY},
    {"check", no_argument, NULL, OPT_CHECK},
    {"list-cells", no_argument, NULL, OPT_LIST_CELLS},
    {"emit", required_argument, NULL, OPT_EMIT},
    {"experiment", required_argument, NULL, 'e'},
    {"report", required_argument, NULL, OPT_REPORT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"ranks", required_argument, NULL, OPT_RANKS},
    {"stats", no_argument, NULL, OPT_STATS},
    {"quiet", no_argument, NULL, 'q'},
    {"color", required_argument, NULL, OPT_COLOR},
    {"repl", no_argument, NULL, OPT_REPL},
    {"target-cpu", required_argument, NULL, OPT_TARGET_CPU},
    {"cache-dir", required_argument, NULL, OPT_CACHE_DIR},
    {"no-cache", no_argument, NULL, OPT_NO_CACHE},
    {"check-numerics", no_argument, NULL, OPT_CHECK_NUMERICS},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"summarize", required_argument, NULL, OPT_SUMMARIZE},
    {NULL, 0, NULL, 0},
};

/* The leading ':' makes getopt_long return ':' for a missing value and
 * print nothing itself. */
static const char short_options[] = ":hD:I:e:qco:";

/* Prints why getopt_long rejected the option at argv[index] and returns
 * BOCB_EXIT_USAGE. */
static int reject_option(int code, char **argv, int index)
{
    const char *arg = argv[index];
    if (code == ':')
        return fail_usage("option '%s' expects a value", arg);
    /* A known long flag given a value ("--jit=3") is returned as '?' with
     * optopt set to its code. */
    const char *eq = strchr(arg, '=');
    if (optopt != 0 && strncmp(arg, "--", 2) == 0 && eq) {
        char *name = xstrndup(arg, (size_t)(eq - arg));
        fail_usage("option '%s' takes no value", name);
        free(name);
        return BOCB_EXIT_USAGE;
    }
    if (optopt != 0 && arg[0] == '-' && arg[1] != '-') {
        char name[3] = {'-', (char)optopt, '\0'};
        return fail_usage("unknown option '%s'", name);
    }

    /* An abbreviation of several long options ("--e") is ambiguous. */
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    StrBuf matches = {0};
    for (const struct option *o = long_options; o->name && len > 2; o++)
        if (strncmp(o->name, arg + 2, len - 2) == 0)
            sb_printf(&matches, "%s--%s", matches.len ? ", " : "", o->name);
    if (matches.data && strchr(matches.data, ',')) {
        char *message = xasprintf("option '%.*s' is ambiguous; it abbreviates %s", (int)len,
                                  arg, matches.data);
        fail_usage("%s", message);
        free(message);
    } else {
        fail_usage("unknown option '%s'", arg);
    }
    sb_free(&matches);
    return BOCB_EXIT_USAGE;
}

/* Returns whether --target-cpu accepts `name`. These are the x86-64
 * micro-architecture levels; "host" is the CPU bocbc runs on. */
static bool known_cpu(const char *name)
{
    static const char *const names[] = {"host", "x86-64", "x86-64-v2", "x86-64-v3",
                                        "x86-64-v4"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Applies option `code` with `value` (NULL for flags). Returns an exit
 * status to stop with, or -1 to go on. */
static int apply_option(Options *o, int code, const char *value)
{
    switch (code) {
    case 'h':
        usage(stdout);
        return BOCB_EXIT_OK;
    case OPT_VERSION:
        printf("bocbc %s\n", BOCB_VERSION);
        return BOCB_EXIT_OK;
    case OPT_REPL:
        o->repl = true;
        break;
    case 'c':
        o->compile_aot = true;
        break;
    case 'o':
        if (!value[0])
            return fail_usage("%s expects a file name", "-o");
        o->aot_output = value;
        break;
    case OPT_TARGET_CPU:
        if (!known_cpu(value))
            return fail_usage("--target-cpu expects host, x86-64, x86-64-v2, x86-64-v3 "
                              "or x86-64-v4, not '%s'", value);
        o->target_cpu = strcmp(value, "host") == 0 ? NULL : value;
        o->target_cpu_given = true;
        break;
    case OPT_CACHE_DIR:
        if (!value[0])
            return fail_usage("%s expects a directory", "--cache-dir");
        o->cache_dir = value;
        break;
    case OPT_NO_CACHE:
        o->no_cache = true;
        break;
    case OPT_JIT:
        o->backend = BACKEND_JIT;
        break;
    case OPT_INTERP:
        o->backend = BACKEND_INTERP;
        break;
    case OPT_SYNTAX_ONLY:
        o->syntax_only = true;
        break;
    case OPT_CHECK:
        o->check_only = true;
        break;
    case OPT_LIST_CELLS:
        o->list_cells = true;
        break;
    case OPT_STATS:
        o->stats = true;
        break;
    case OPT_SUMMARIZE:
        o->summarize = value;
        break;
    case 'q':
        o->quiet = true;
        break;
    case OPT_EMIT:
        if (!parse_emit(value, &o->emit))
            return fail_usage("unknown --emit value '%s'; expected tokens, ast, ir, ir-grad, "
                              "ir-opt, kernels, dot, llvm or asm", value);
        break;
    case 'D':
        if (!add_override(o, value))
            return fail_usage("-D expects KEY=VALUE, such as -D epochs=1, not '%s'", value);
        break;
    case 'I':
        o->include_dirs[o->ninclude_dirs++] = value;
        break;
    case 'e':
        o->experiment = value;
        break;
    case OPT_REPORT:
        if (!value[0])
            return fail_usage("%s expects a directory", "--report");
        o->report_dir = value;
        break;
    case OPT_THREADS: {
        char *end = NULL;
        long n = strtol(value, &end, 10);
        if (!value[0] || *end || n < 1 || n > 1024)
            return fail_usage("--threads expects a number from 1 to 1024, not '%s'", value);
        o->threads = (int)n;
        break;
    }
    case OPT_RANKS: {
        char *end = NULL;
        long n = strtol(value, &end, 10);
        if (!value[0] || *end || n < 1 || n > QSDP_MAX_RANKS)
            return fail_usage("--ranks expects a number from 1 to 256, not '%s'", value);
        o->ranks = (int)n;
        break;
    }
    case OPT_COLOR:
        if (strcmp(value, "auto") == 0)
            o->color = COLOR_AUTO;
        else if (strcmp(value, "always") == 0)
            o->color = COLOR_ALWAYS;
        else if (strcmp(value, "never") == 0)
            o->color = COLOR_NEVER;
        else
            return fail_usage("--color expects auto, always or never, not '%s'", value);
        break;
    case OPT_CHECK_NUMERICS:
        o->check_numerics = true;
        break;
    case OPT_MAX_MEMORY:
        if (!parse_memory_size(value, &o->max_memory))
            return fail_usage("--max-memory expects a positive size in bytes, such as 512M "
                              "or 4G, not '%s'", value);
        break;
    default:
        BOCB_ASSERT(!"an option in long_options or short_options has no case");
    }
    return -1;
}

/* Checks the options of -c and sets the default output file. Returns an
 * exit status to stop with, or -1 to go on. */
static int check_aot_options(Options *o)
{
    if (!o->compile_aot) {
        if (o->aot_output)
            return fail_usage("%s needs -c", "-o");
        if (o->target_cpu_given)
            return fail_usage("%s needs -c", "--target-cpu");
        return -1;
    }
    if (o->backend == BACKEND_INTERP)
        return fail_usage("%s", "-c compiles kernels, so it cannot be combined with --interp");
    if (!o->aot_output) {
        const char *slash = strrchr(o->input, '/');
        const char *base = slash ? slash + 1 : o->input;
        size_t len = strlen(base);
        if (len <= 5 || strcmp(base + len - 5, ".bocb") != 0)
            return fail_usage("-o is needed when the input file '%s' does not end in "
                              ".bocb", o->input);
        o->default_output = xstrndup(base, len - 5);
        o->aot_output = o->default_output;
    }
    return -1;
}

/* Parses the command line into *o. Returns an exit status to stop with,
 * or -1 to go on. */
static int parse_arguments(Options *o, int argc, char **argv)
{
    o->backend = BACKEND_JIT;
    o->include_dirs = xcalloc((size_t)argc + 1, sizeof(char *));

    opterr = 0;
    for (;;) {
        int index = optind;
        int code = getopt_long(argc, argv, short_options, long_options, NULL);
        if (code == -1)
            break;
        if (code == '?' || code == ':') {
            /* optind has moved past the rejected argument, unless it was
             * one of several short options in one word. */
            int at = optind > index ? optind - 1 : index;
            return reject_option(code, argv, at < argc ? at : argc - 1);
        }
        int status = apply_option(o, code, optarg);
        if (status >= 0)
            return status;
    }

    for (int i = optind; i < argc; i++) {
        if (o->input)
            return fail_usage("more than one input file given ('%s')", argv[i]);
        o->input = argv[i];
    }
    if (o->summarize && !o->input)
        return -1;
    /* Without a file, a terminal on stdin starts the REPL. */
    if (!o->input && isatty(fileno(stdin)))
        o->repl = true;
    if (o->repl && (o->syntax_only || o->check_only || o->list_cells || o->emit != EMIT_NONE))
        return fail_usage("%s", "--repl cannot be combined with --syntax-only, --check, "
                                "--list-cells or --emit");
    if (!o->input && !o->repl) {
        fputs("bocbc: error: no input file\n", stderr);
        usage(stderr);
        return BOCB_EXIT_USAGE;
    }
    /* Only the interpreter sees every op's result. */
    if (o->check_numerics)
        o->backend = BACKEND_INTERP;
    int modes = o->syntax_only + o->check_only + o->list_cells + (o->emit != EMIT_NONE) +
                o->compile_aot;
    if (modes > 1)
        return fail_usage("%s", "-c, --syntax-only, --check, --list-cells and --emit each "
                                "stop at a different stage; give only one of them");
    return check_aot_options(o);
    return -1;
}

/* `bocbc --list-builtins` prints the name of every builtin, one per line,
 * for the test that checks that docs/language.md documents each one. It
 * is hidden from --help, and it is matched here, before getopt_long, so
 * that it neither makes `--list` an ambiguous abbreviation of
 * --list-cells nor appears in the message about an ambiguous one. */
static bool list_builtins(int argc, char **argv)
{
    if (argc != 2 || strcmp(argv[1], "--list-builtins") != 0)
        return false;
    for (const char *const *name = builtin_names(); *name; name++)
        puts(*name);
    return true;
}

/* Makes every process of an mpirun job one rank of sharded training.
 * Only rank 0 prints progress and writes reports. */
static int join_world(Options *o, const RtComm *world)
{
    o->comm = world;
    char message[160];
    if (o->ranks != 0 && o->ranks != world->size) {
        snprintf(message, sizeof message, "--ranks=%d differs from the %d processes that "
                 "mpirun started; leave --ranks out under mpirun", o->ranks, world->size);
        return fail_usage("%s", message);
    }
    if (world->size > QSDP_MAX_RANKS) {
        snprintf(message, sizeof message, "mpirun started %d processes, more than the %d "
                 "ranks that sharded training supports", world->size, (int)QSDP_MAX_RANKS);
        return fail_usage("%s", message);
    }
    o->ranks = world->size;
    if (world->rank != 0)
        o->quiet = true;
    return -1;
}

int main(int argc, char **argv)
{
    Options o;
    memset(&o, 0, sizeof o);
    if (list_builtins(argc, argv))
        return fflush(stdout) == 0 && !ferror(stdout) ? BOCB_EXIT_OK : BOCB_EXIT_RUNTIME;
    if (argc >= 3 && strcmp(argv[1], "analyze") == 0 && strcmp(argv[2], "weights") == 0)
        return analyze_weights_main(argc - 3, argv + 3);
    o.version = BOCB_VERSION;
    o.argc = argc;
    o.argv = argv;
    int status = parse_arguments(&o, argc, argv);
    RtComm world;
    const char *mpi_error = NULL;
    if (status < 0 && !rt_comm_init(&argc, &argv, &world, &mpi_error)) {
        fprintf(stderr, "bocbc: error: %s\n", mpi_error);
        status = BOCB_EXIT_RUNTIME;
    }
    if (status < 0 && world.mpi)
        status = join_world(&o, &world);
    if (status < 0) {
        if (o.summarize) {
            status = driver_summarize(o.summarize);
            free_options(&o);
            return status;
        }
        char *stdlib_dir = driver_find_stdlib();
        o.stdlib_dir = stdlib_dir;
        status = o.repl ? repl_main(&o) : driver_main(&o);
        free(stdlib_dir);
    }
    /* A rank that stops early would leave the others waiting in a
     * collective, so its failure ends the whole job. */
    if (o.comm && status != BOCB_EXIT_OK) {
        char message[96];
        snprintf(message, sizeof message, "stopped with exit status %d; ending every rank",
                 status);
        rt_comm_abort(&world, status, message);
    }
    if (o.comm)
        rt_comm_finalize(&world);
    free_options(&o);

    /* Output that was lost, for example to a full disk, is a run-time error. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("bocbc: error: cannot write the standard output");
        if (status == BOCB_EXIT_OK)
            status = BOCB_EXIT_RUNTIME;
    }
    return status;
}
