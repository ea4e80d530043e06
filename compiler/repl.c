/* repl.c - reading input and running the commands of `bocbc --repl`.
 *
 * Each input (one line, or several while brackets are open or a line ends
 * with an operator) is a declaration, an expression or a `:command`.
 * Declarations go through the same loader and lowering as a file: the
 * program of all declarations in force is lowered again after each one,
 * and an input that adds an error is rejected, leaving the session as it
 * was. On a terminal, libedit provides line editing, a history file and
 * completion. From a pipe, lines are read plainly and no prompt is
 * printed, so scripted sessions give the same output.
 */

/* realpath() is an X/Open extension to POSIX. */
#define _XOPEN_SOURCE 700

#include "repl.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <editline/readline.h>

#include "../runtime/ops.h"
#include "../runtime/report.h"

volatile sig_atomic_t repl_interrupted;

static void on_interrupt(int signal_number)
{
    (void)signal_number;
    repl_interrupted = 1;
}

/* ---- locations in an input ------------------------------------------------ */

/* Returns the span of bytes [start, end) of line 1 of `file`. */
static SrcLoc span(int file, size_t start, size_t end)
{
    int first = (int)start + 1;
    int last = end > start ? (int)end : first;
    return (SrcLoc){.file = file, .line = 1, .col = first, .end_line = 1, .end_col = last};
}

/* ---- the program in force ------------------------------------------------- */

static const char *module_key(const Module *m, char *buf)
{
    char *real = realpath(m->path, buf);
    return real ? real : m->path;
}

static bool has_module(const ReplSession *s, const Module *m)
{
    char a[4096], b[4096];
    const char *key = module_key(m, a);
    for (int i = 0; i < s->imports.len; i++)
        if (strcmp(module_key(s->imports.data[i], b), key) == 0)
            return true;
    return false;
}

/* Lowers the imports and declarations in force into a new Lower. Returns
 * false, leaving s->lower as it was, when that reports an error. */
static bool relower(ReplSession *s)
{
    Module *m = arena_calloc(&s->arena, 1, sizeof *m);
    m->path = "<session>";
    m->ndecls = s->decls.len;
    m->decls = arena_calloc(&s->arena, (size_t)s->decls.len + 1, sizeof(Decl *));
    for (int i = 0; i < s->decls.len; i++)
        m->decls[i] = s->decls.data[i];
    Program *p = arena_calloc(&s->arena, 1, sizeof *p);
    p->nmodules = s->imports.len + 1;
    p->modules = arena_calloc(&s->arena, (size_t)p->nmodules, sizeof(Module *));
    for (int i = 0; i < s->imports.len; i++)
        p->modules[i] = s->imports.data[i];
    p->modules[s->imports.len] = m;
    p->main = m;

    int errors = diag_error_count();
    Lower *l = xcalloc(1, sizeof *l);
    lower_init(l, p, &s->arena);
    if (diag_error_count() > errors) {
        lower_free(l);
        free(l);
        return false;
    }
    if (s->lower) {
        lower_free(s->lower);
        free(s->lower);
    }
    s->lower = l;
    const Decl *experiment = NULL;
    for (int i = 0; i < s->decls.len; i++)
        if (s->decls.data[i]->kind == DECL_EXPERIMENT)
            experiment = s->decls.data[i];
    s->experiment = experiment;
    return true;
}

static void remove_let(ReplSession *s, const char *name)
{
    int kept = 0;
    for (int i = 0; i < s->lets.len; i++)
        if (strcmp(s->lets.data[i].name, name) != 0)
            s->lets.data[kept++] = s->lets.data[i];
    s->lets.len = kept;
}

/* The imports and declarations in force, saved before a change that may
 * be rejected. */
typedef struct Snapshot {
    VEC(Module *) imports;
    VEC(Decl *) decls;
} Snapshot;

static void snapshot_take(const ReplSession *s, Snapshot *snap)
{
    memset(snap, 0, sizeof *snap);
    for (int i = 0; i < s->imports.len; i++)
        VEC_PUSH(&snap->imports, s->imports.data[i]);
    for (int i = 0; i < s->decls.len; i++)
        VEC_PUSH(&snap->decls, s->decls.data[i]);
}

/* Puts the saved lists back (with `restore`) and frees the snapshot. */
static void snapshot_end(ReplSession *s, Snapshot *snap, bool restore)
{
    if (restore) {
        s->imports.len = 0;
        for (int i = 0; i < snap->imports.len; i++)
            VEC_PUSH(&s->imports, snap->imports.data[i]);
        s->decls.len = 0;
        for (int i = 0; i < snap->decls.len; i++)
            VEC_PUSH(&s->decls, snap->decls.data[i]);
    }
    VEC_FREE(&snap->imports);
    VEC_FREE(&snap->decls);
}

/* Adds the modules and declarations of a loaded program to the lists in
 * force. A declaration replaces one of the same name from an earlier
 * input; two of one name in `p` stay, for lowering to report. */
static void add_program(ReplSession *s, const Program *p)
{
    for (int i = 0; i < p->nmodules; i++)
        if (p->modules[i] != p->main && !has_module(s, p->modules[i]))
            VEC_PUSH(&s->imports, p->modules[i]);
    int first_new = s->decls.len;
    for (int i = 0; i < p->main->ndecls; i++) {
        Decl *d = p->main->decls[i];
        if (d->kind == DECL_IMPORT)
            continue;
        int kept = 0;
        for (int j = 0; j < s->decls.len; j++)
            if (j >= first_new || strcmp(s->decls.data[j]->name, d->name) != 0)
                s->decls.data[kept++] = s->decls.data[j];
            else
                first_new--;
        s->decls.len = kept;
        VEC_PUSH(&s->decls, d);
    }
}

/* Lowers the program after a change. On success, the tensors kept at the
 * prompt under a redeclared name are dropped, and so is the training
 * state. On an error, the snapshot is restored. */
static bool commit_change(ReplSession *s, Snapshot *snap)
{
    bool ok = relower(s);
    if (ok) {
        for (int i = 0; i < s->decls.len; i++)
            remove_let(s, s->decls.data[i]->name);
        repl_trainer_discard(s);
    }
    snapshot_end(s, snap, !ok);
    return ok;
}

/* Loads a file with its imports. Returns NULL after reported errors. */
static Program *read_file(ReplSession *s, const char *path, SrcLoc loc)
{
    int errors = diag_error_count();
    struct stat st;
    if (stat(path, &st) != 0) {
        diag_error(loc, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    Program *p = load_program(path, &s->search, &s->arena);
    return p && diag_error_count() == errors ? p : NULL;
}

/* Returns whether an input is a declaration: it starts with a declaration
 * keyword, or with `NAME =`. */
static bool is_declaration(const char *text)
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    const char *start = p;
    while (isalnum((unsigned char)*p) || *p == '_')
        p++;
    size_t len = (size_t)(p - start);
    static const char *const keywords[] = {"import", "data", "model", "optimizer",
                                           "experiment"};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(keywords); i++)
        if (len == strlen(keywords[i]) && strncmp(start, keywords[i], len) == 0)
            return true;
    if (len == 0 || isdigit((unsigned char)*start))
        return false;
    while (*p == ' ' || *p == '\t')
        p++;
    return p[0] == '=' && p[1] != '=';
}

/* Removes the constant `name`, which a tensor kept at the prompt now
 * replaces. When a declaration still needs the constant (the error shows
 * where), the constant stays and the tensor is dropped. */
static void replace_constant(ReplSession *s, const char *name)
{
    int found = -1;
    for (int i = 0; i < s->decls.len; i++)
        if (strcmp(s->decls.data[i]->name, name) == 0)
            found = i;
    if (found < 0)
        return;
    Decl *d = s->decls.data[found];
    memmove(&s->decls.data[found], &s->decls.data[found + 1],
            (size_t)(s->decls.len - found - 1) * sizeof(Decl *));
    s->decls.len--;
    if (relower(s)) {
        repl_trainer_discard(s);
        return;
    }
    VEC_PUSH(&s->decls, d);
    memmove(&s->decls.data[found + 1], &s->decls.data[found],
            (size_t)(s->decls.len - found - 1) * sizeof(Decl *));
    s->decls.data[found] = d;
    s->lets.len--;
}

/* Runs an input that is a declaration (or several). */
static void run_declaration(ReplSession *s, const char *name, const char *text)
{
    int errors = diag_error_count();
    Program *p = load_program_string(name, text, &s->search, &s->arena);
    if (diag_error_count() > errors)
        return;
    const Module *m = p->main;
    if (m->ndecls == 1 && m->decls[0]->kind == DECL_CONST) {
        int tensor = repl_try_tensor_let(s, m->decls[0]);
        if (tensor != 0) {
            if (tensor > 0)
                replace_constant(s, m->decls[0]->name);
            return;
        }
    }
    Snapshot snap;
    snapshot_take(s, &snap);
    add_program(s, p);
    if (commit_change(s, &snap))
        for (int i = 0; i < m->ndecls; i++)
            if (m->decls[i]->kind == DECL_IMPORT)
                VEC_PUSH(&s->sources, arena_printf(&s->arena, "import \"%s\"",
                                                   m->decls[i]->path));
}

/* ---- commands ------------------------------------------------------------- */

typedef struct Command {
    ReplSession *session;
    int file;
    const char *text;   /* the whole input */
    const char *name;   /* ":ir" */
    SrcLoc name_loc;
    const char *arg;    /* the rest of the line, trimmed; "" when none */
    size_t arg_offset;  /* of arg in text */
    SrcLoc arg_loc;
} Command;

typedef void (*CommandFn)(Command *c);

typedef struct CommandInfo {
    const char *name;
    const char *args;
    const char *help;
    CommandFn fn;
} CommandInfo;

static const CommandInfo *commands(int *count);

/* Splits the argument at the first blank: the first word and its span. */
static const char *first_word(Command *c, SrcLoc *loc, const char **rest)
{
    size_t n = strcspn(c->arg, " \t");
    *loc = span(c->file, c->arg_offset, c->arg_offset + n);
    const char *r = c->arg + n;
    while (*r == ' ' || *r == '\t')
        r++;
    *rest = r;
    return arena_strndup(&c->session->arena, c->arg, n);
}

static bool expect_no_argument(Command *c)
{
    if (!c->arg[0])
        return true;
    diag_error(c->arg_loc, "'%s' takes no argument", c->name);
    return false;
}

static bool expect_argument(Command *c, const char *what)
{
    if (c->arg[0])
        return true;
    diag_error(c->name_loc, "'%s' expects %s", c->name, what);
    return false;
}

/* Parses the argument as one expression located in the input. */
static const Expr *parse_argument(Command *c)
{
    if (!expect_argument(c, "an expression"))
        return NULL;
    return parse_expression(c->file, c->arg_offset, &c->session->arena);
}

static void cmd_help(Command *c)
{
    if (!expect_no_argument(c))
        return;
    int n;
    const CommandInfo *table = commands(&n);
    puts("Enter declarations (model, optimizer, data, experiment, import, NAME = value)\n"
         "or expressions, whose value is printed. An input continues on the next line\n"
         "while a bracket is open or the line ends with an operator or a comma.\n"
         "In expressions, x and labels are a batch of the current experiment's\n"
         "training data, and NAME = tensor keeps a tensor for later inputs.\n"
         "\n"
         "commands:");
    for (int i = 0; i < n; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s%s%s", table[i].name, table[i].args[0] ? " " : "",
                 table[i].args);
        printf("  %-22s %s\n", head, table[i].help);
    }
}

static void cmd_load(Command *c)
{
    ReplSession *s = c->session;
    if (!expect_argument(c, "a file name"))
        return;
    const char *path = arena_strdup(&s->arena, c->arg);
    Program *p = read_file(s, path, c->arg_loc);
    if (!p)
        return;
    Snapshot snap;
    snapshot_take(s, &snap);
    add_program(s, p);
    if (commit_change(s, &snap))
        VEC_PUSH(&s->sources, path);
}

/* Loads every :load file and typed import again, from the files as they
 * are now. The declarations typed at the prompt stay unless a file
 * defines the same name. Either every source loads or nothing changes. */
static void cmd_reload(Command *c)
{
    ReplSession *s = c->session;
    if (!expect_no_argument(c))
        return;
    if (s->sources.len == 0) {
        diag_error(c->name_loc, "nothing to reload; ':load FILE' loads a file");
        return;
    }
    Snapshot snap;
    snapshot_take(s, &snap);
    s->imports.len = 0;
    bool ok = true;
    for (int i = 0; i < s->sources.len && ok; i++) {
        const char *source = s->sources.data[i];
        int errors = diag_error_count();
        Program *p = strncmp(source, "import ", 7) == 0
                         ? load_program_string("<reload>", source, &s->search, &s->arena)
                         : read_file(s, source, c->name_loc);
        ok = p && diag_error_count() == errors;
        if (ok)
            add_program(s, p);
    }
    if (!ok) {
        snapshot_end(s, &snap, true);
        puts("nothing reloaded");
    } else if (commit_change(s, &snap)) {
        printf("reloaded %d source%s\n", s->sources.len, s->sources.len == 1 ? "" : "s");
    } else {
        puts("nothing reloaded");
    }
}

static void cmd_type(Command *c)
{
    const Expr *e = parse_argument(c);
    if (e)
        repl_print_expr(c->session, e, true, NULL);
}

static void cmd_time(Command *c)
{
    const Expr *e = parse_argument(c);
    double seconds = 0;
    if (e && repl_print_expr(c->session, e, false, &seconds))
        printf("time: %.3f ms\n", 1e3 * seconds);
}

/* Prints the graph of the stage that :ir or :ir-grad requests. */
typedef struct StagePrinter {
    CellStage stage;
    bool printed;
} StagePrinter;

static void print_stage(void *context, CellStage stage, const IrGraph *graph)
{
    StagePrinter *p = context;
    if (p->printed || stage != p->stage)
        return;
    ir_print(stdout, graph);
    putchar('\n');
    p->printed = true;
}

static void ir_command(Command *c, CellStage stage)
{
    if (!expect_argument(c, "a model or experiment name"))
        return;
    StagePrinter printer = {.stage = stage};
    CompiledCell cell;
    if (repl_compile_named(c->session, c->arg, c->arg_loc, print_stage, &printer, &cell))
        compiled_cell_free(&cell);
}

static void cmd_ir(Command *c)
{
    ir_command(c, CELL_STAGE_FORWARD);
}

static void cmd_ir_grad(Command *c)
{
    ir_command(c, CELL_STAGE_BACKWARD);
}

static void cmd_dot(Command *c)
{
    ReplSession *s = c->session;
    if (!expect_argument(c, "a model or experiment name and a file name"))
        return;
    SrcLoc name_loc;
    const char *path;
    const char *name = first_word(c, &name_loc, &path);
    if (!path[0]) {
        diag_error(name_loc, "':dot' expects a file name after '%s'", name);
        return;
    }
    CompiledCell cell;
    if (!repl_compile_named(s, name, name_loc, NULL, NULL, &cell))
        return;
    size_t path_offset = c->arg_offset + (size_t)(path - c->arg);
    FILE *out = fopen(path, "w");
    if (!out) {
        SrcLoc path_loc = span(c->file, path_offset, path_offset + strlen(path));
        diag_error(path_loc, "cannot write '%s': %s", path, strerror(errno));
    } else {
        ir_print_dot(out, cell.train);
        if (fclose(out) != 0) {
            SrcLoc path_loc = span(c->file, path_offset, path_offset + strlen(path));
            /* messages.py: not reached: needs a full disk. */
            diag_error(path_loc, "cannot write '%s': %s", path, strerror(errno));
        } else {
            printf("wrote the training step of %s to %s\n", name, path);
        }
    }
    compiled_cell_free(&cell);
}

static void cmd_params(Command *c)
{
    if (!expect_argument(c, "a model or experiment name"))
        return;
    CompiledCell cell;
    if (!repl_compile_named(c->session, c->arg, c->arg_loc, NULL, NULL, &cell))
        return;
    const IrModule *m = &cell.module;
    int width = 4;
    for (int v = 0; v < m->nvars; v++)
        if (m->vars[v].kind == IR_VAR_PARAM && (int)strlen(m->vars[v].name) > width)
            width = (int)strlen(m->vars[v].name);
    int64_t total = 0;
    int count = 0;
    for (int v = 0; v < m->nvars; v++) {
        const IrVar *var = &m->vars[v];
        if (var->kind != IR_VAR_PARAM)
            continue;
        char shape[96];
        int64_t n = shape_numel(&var->shape, 1);
        printf("%-*s  %-16s %10lld\n", width, var->name,
               shape_format(&var->shape, shape, sizeof shape), (long long)n);
        total += n;
        count++;
    }
    printf("%d parameter%s, %lld elements\n", count, count == 1 ? "" : "s", (long long)total);
    compiled_cell_free(&cell);
}

/* Reads a positive integer argument, or `fallback` when there is none. */
static bool count_argument(Command *c, int64_t fallback, int64_t *out)
{
    if (!c->arg[0]) {
        *out = fallback;
        return true;
    }
    char *end;
    errno = 0;
    long long n = strtoll(c->arg, &end, 10);
    if (*end || errno || n < 1 || n > INT64_C(1000000000)) {
        diag_error(c->arg_loc, "'%s' expects a number of steps from 1 to 1000000000, not "
                   "'%s'", c->name, c->arg);
        return false;
    }
    *out = n;
    return true;
}

static void cmd_step(Command *c)
{
    int64_t steps;
    if (!count_argument(c, 1, &steps))
        return;
    ReplTrainer *t = repl_trainer(c->session, c->name_loc);
    if (t)
        repl_step(c->session, t, steps);
}

static void cmd_eval(Command *c)
{
    if (!expect_no_argument(c))
        return;
    ReplTrainer *t = repl_trainer(c->session, c->name_loc);
    if (t)
        repl_eval(c->session, t);
}

static void show_command(Command *c, bool gradient)
{
    if (!expect_argument(c, "a parameter name"))
        return;
    ReplTrainer *t = repl_trainer(c->session, c->name_loc);
    if (t)
        repl_show_var(c->session, t, c->arg, c->arg_loc, gradient);
}

static void cmd_show(Command *c)
{
    show_command(c, false);
}

static void cmd_grad(Command *c)
{
    show_command(c, true);
}

static void cmd_sharpness(Command *c)
{
    if (!expect_no_argument(c))
        return;
    ReplTrainer *t = repl_trainer(c->session, c->name_loc);
    if (t)
        repl_sharpness(c->session, t, c->name_loc);
}

/* :set KEY=VALUE overrides an experiment setting as -D does. The current
 * experiment is resolved at once, so a bad value is rejected here. */
static void cmd_set(Command *c)
{
    ReplSession *s = c->session;
    if (!c->arg[0]) {
        for (int i = 0; i < s->overrides.len; i++)
            printf("%s\n", s->overrides.data[i].text);
        if (s->overrides.len == 0)
            puts("no settings overridden");
        return;
    }
    const char *eq = strchr(c->arg, '=');
    const char *start = c->arg, *end = eq;
    while (eq && end > start && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    if (!eq || end == start) {
        diag_error(c->arg_loc, "':set' expects KEY=VALUE, such as ':set epochs=1'");
        return;
    }
    Override o = {.key = arena_strndup(&s->arena, start, (size_t)(end - start)),
                  .text = arena_strdup(&s->arena, c->arg)};
    /* A key set again replaces its earlier value. */
    int kept = 0;
    for (int i = 0; i < s->overrides.len; i++)
        if (strcmp(s->overrides.data[i].key, o.key) != 0)
            s->overrides.data[kept++] = s->overrides.data[i];
    int old_len = s->overrides.len;
    Override *old = xcalloc((size_t)old_len + 1, sizeof *old);
    /* The vector has no storage before its first override, and memcpy
     * from NULL is undefined even for 0 bytes. */
    if (old_len > 0)
        memcpy(old, s->overrides.data, (size_t)old_len * sizeof *old);
    s->overrides.len = kept;
    VEC_PUSH(&s->overrides, o);

    if (s->experiment) {
        ExperimentSpec spec;
        int errors = diag_error_count();
        experiment_resolve(s->lower, s->experiment, s->overrides.data, s->overrides.len,
                           &spec);
        if (diag_error_count() > errors) {
            s->overrides.len = 0;
            for (int i = 0; i < old_len; i++)
                VEC_PUSH(&s->overrides, old[i]);
            free(old);
            return;
        }
    }
    free(old);
    repl_trainer_discard(s);
}

static void cmd_quit(Command *c)
{
    /* Handled by the input loop. */
    (void)c;
}

static const CommandInfo command_table[] = {
    {":help", "", "print this list", cmd_help},
    {":load", "FILE", "load the declarations of a .bocb file and its imports", cmd_load},
    {":reload", "", "load every :load file and import again from disk", cmd_reload},
    {":type", "EXPR", "print the kind or tensor type of EXPR without running it", cmd_type},
    {":ir", "NAME", "the forward graph of model or experiment NAME", cmd_ir},
    {":ir-grad", "NAME", "the graph of NAME after autodiff", cmd_ir_grad},
    {":dot", "NAME FILE", "write the training step of NAME to FILE for Graphviz", cmd_dot},
    {":params", "NAME", "parameter names, shapes and element counts of NAME", cmd_params},
    {":step", "[N]", "run N training steps (default 1) and print the loss", cmd_step},
    {":eval", "", "loss and accuracy on the test split", cmd_eval},
    {":show", "PARAM", "summarise a parameter or optimizer state", cmd_show},
    {":grad", "PARAM", "summarise the gradient of PARAM on the next batch", cmd_grad},
    {":sharpness", "", "the top Hessian eigenvalue of the loss on training samples",
     cmd_sharpness},
    {":time", "EXPR", "evaluate EXPR and print the time it took", cmd_time},
    {":set", "KEY=VALUE", "override an experiment setting, as -D does", cmd_set},
    {":quit", "", "end the session (also Ctrl-D)", cmd_quit},
};

static const CommandInfo *commands(int *count)
{
    *count = (int)BOCB_ARRAY_LEN(command_table);
    return command_table;
}

/* Runs a `:command` input. Returns false for :quit. */
static bool run_command(ReplSession *s, int file, const char *text)
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    size_t start = (size_t)(p - text);
    size_t len = strcspn(p, " \t\r\n");
    Command c = {.session = s, .file = file, .text = text};
    c.name = arena_strndup(&s->arena, p, len);
    c.name_loc = span(file, start, start + len);
    const char *arg = p + len;
    while (isspace((unsigned char)*arg))
        arg++;
    size_t arg_len = strlen(arg);
    while (arg_len > 0 && isspace((unsigned char)arg[arg_len - 1]))
        arg_len--;
    c.arg = arena_strndup(&s->arena, arg, arg_len);
    c.arg_offset = (size_t)(arg - text);
    c.arg_loc = span(file, c.arg_offset, c.arg_offset + arg_len);

    if (strcmp(c.name, ":quit") == 0 || strcmp(c.name, ":q") == 0)
        return !expect_no_argument(&c);
    int n;
    const CommandInfo *table = commands(&n);
    const char *names[BOCB_ARRAY_LEN(command_table)];
    for (int i = 0; i < n; i++) {
        names[i] = table[i].name;
        if (strcmp(table[i].name, c.name) == 0) {
            table[i].fn(&c);
            return true;
        }
    }
    const char *near = closest_name(c.name, names, n);
    if (near)
        diag_error(c.name_loc, "unknown command '%s'; did you mean '%s'?", c.name, near);
    else
        diag_error(c.name_loc, "unknown command '%s'; ':help' lists the commands", c.name);
    return true;
}

/* Runs one complete input. Returns false when the session should end. */
static bool run_input(ReplSession *s, const char *text)
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (!*p || *p == '#')
        return true;
    s->ninputs++;
    char *name = arena_printf(&s->arena, "<input %d>", s->ninputs);
    repl_interrupted = 0;
    bool go_on = true;
    fflush(stdout);
    if (*p == ':') {
        int file = src_register(name, text, strlen(text));
        go_on = run_command(s, file, text);
    } else if (is_declaration(text)) {
        run_declaration(s, name, text);
    } else {
        int file = src_register(name, text, strlen(text));
        const Expr *e = parse_expression(file, 0, &s->arena);
        if (e)
            repl_print_expr(s, e, false, NULL);
    }
    fflush(stdout);
    return go_on;
}

/* ---- reading input -------------------------------------------------------- */

/* Returns whether `text` needs another line: a bracket is still open, or
 * the last token is an operator, a comma or `=`, after which the language
 * continues a statement. Strings and comments are skipped. */
static bool needs_more(const char *text)
{
    int depth = 0;
    char last = 0;
    for (const char *p = text; *p; p++) {
        char ch = *p;
        if (ch == '#') {
            while (*p && *p != '\n')
                p++;
            if (!*p)
                break;
            continue;
        }
        if (ch == '"') {
            for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (!*p)
                return false; /* an unterminated string is the lexer's to report */
            last = '"';
            continue;
        }
        if (strchr("([{", ch))
            depth++;
        else if (strchr(")]}", ch))
            depth--;
        if (!isspace((unsigned char)ch))
            last = ch;
    }
    if (text[0] == ':' || (isspace((unsigned char)text[0]) && text[strspn(text, " \t")] == ':'))
        return false;
    return depth > 0 || (last && strchr(",=+-*/%@^([{<>", last));
}

static char *history_path(void)
{
    const char *data = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    char *dir;
    if (data && data[0] == '/')
        dir = xasprintf("%s/bocb", data);
    else if (home && home[0])
        dir = xasprintf("%s/.local/share/bocb", home);
    else
        return NULL;
    char *error = NULL;
    bool made = rt_make_dirs(dir, &error);
    free(error);
    char *path = made ? xasprintf("%s/history", dir) : NULL;
    free(dir);
    return path;
}

/* ---- completion ----------------------------------------------------------- */

static ReplSession *completing;

/* Returns the next name that starts with `text`, over commands, the
 * globals of the program, tensors kept at the prompt, the trainer's
 * variables and the builtins (libedit's generator protocol: state 0
 * starts over). */
static char *complete_name(const char *text, int state)
{
    static int index;
    static VEC(const char *) names;
    if (state == 0) {
        index = 0;
        names.len = 0;
        ReplSession *s = completing;
        if (text[0] == ':') {
            int n;
            const CommandInfo *table = commands(&n);
            for (int i = 0; i < n; i++)
                VEC_PUSH(&names, table[i].name);
        } else {
            for (int i = 0; s->lower && i < s->lower->globals.bindings.len; i++)
                VEC_PUSH(&names, s->lower->globals.bindings.data[i].name);
            for (int i = 0; i < s->lets.len; i++)
                VEC_PUSH(&names, s->lets.data[i].name);
            for (const char *const *b = builtin_names(); *b; b++)
                VEC_PUSH(&names, *b);
            const char *const *vars = repl_trainer_var_names(s);
            for (int i = 0; vars && vars[i]; i++)
                VEC_PUSH(&names, vars[i]);
        }
    }
    size_t len = strlen(text);
    while (index < names.len) {
        const char *name = names.data[index++];
        if (strncmp(name, text, len) == 0)
            return strdup(name);
    }
    return NULL;
}

static char **complete(const char *text, int start, int end)
{
    (void)start;
    (void)end;
    rl_attempted_completion_over = 1;
    return rl_completion_matches(text, complete_name);
}

/* ---- the session ---------------------------------------------------------- */

/* Reads one line: with libedit on a terminal, else from stdin. Returns a
 * malloc'd line without its newline, or NULL at the end of input. */
static char *read_line(bool interactive, const char *prompt)
{
    if (interactive)
        return readline(prompt);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    if (n > 0 && line[n - 1] == '\n')
        line[--n] = '\0';
    return line;
}

static void session_init(ReplSession *s, const Options *opts)
{
    memset(s, 0, sizeof *s);
    s->opts = opts;
    arena_init(&s->arena);
    s->search.stdlib_dir = opts->stdlib_dir;
    s->search.dirs = opts->include_dirs;
    s->search.ndirs = opts->ninclude_dirs;
    for (int i = 0; i < opts->noverrides; i++)
        VEC_PUSH(&s->overrides, opts->overrides[i]);
    relower(s);
}

static void session_free(ReplSession *s)
{
    repl_trainer_free(s);
    jit_destroy(s->jit);
    if (s->lower) {
        lower_free(s->lower);
        free(s->lower);
    }
    VEC_FREE(&s->imports);
    VEC_FREE(&s->decls);
    VEC_FREE(&s->sources);
    VEC_FREE(&s->lets);
    VEC_FREE(&s->overrides);
    arena_free(&s->arena);
}

int repl_main(const Options *opts)
{
    bool interactive = isatty(fileno(stdin));
    diag_set_color(driver_color_enabled(opts->color));
    if (opts->threads > 0)
        rt_set_blas_threads(opts->threads);
    ReplSession s;
    session_init(&s, opts);
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_interrupt;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, NULL);

    char *history = NULL;
    if (interactive) {
        history = history_path();
        using_history();
        if (history)
            read_history(history);
        completing = &s;
        rl_attempted_completion_function = complete;
        puts("bocb REPL; ':help' lists the commands, ':quit' or Ctrl-D ends it");
    }
    int errors_before = diag_error_count();
    if (opts->input) {
        char *text = xasprintf(":load %s", opts->input);
        run_input(&s, text);
        free(text);
    }

    StrBuf input = {0};
    for (;;) {
        char *line = read_line(interactive, input.len ? "  ... " : "bocb> ");
        if (!line) {
            if (interactive && repl_interrupted) {
                /* Ctrl-C at the prompt drops the input typed so far.
                 * NOTE: a Ctrl-C that arrives while libedit redraws the
                 * line rather than while it waits in read() was seen, on
                 * a loaded machine, to give no new prompt at once. */
                repl_interrupted = 0;
                putchar('\n');
                input.len = 0;
                continue;
            }
            break;
        }
        if (input.len)
            sb_append(&input, "\n");
        sb_append(&input, line);
        free(line);
        if (needs_more(input.data))
            continue;
        if (interactive && input.len)
            add_history(input.data);
        bool go_on = run_input(&s, input.data);
        /* A Ctrl-C that no command saw must not end the next read. */
        repl_interrupted = 0;
        input.len = 0;
        input.data[0] = '\0';
        if (!go_on)
            break;
    }
    if (interactive) {
        putchar('\n');
        if (history)
            write_history(history);
    }
    free(history);
    sb_free(&input);
    session_free(&s);
    if (fflush(stdout) != 0 || ferror(stdout))
        return BOCB_EXIT_RUNTIME;
    /* A script learns from the exit status that one of its inputs failed;
     * at a terminal, the person has seen the errors. */
    if (!interactive && diag_error_count() > errors_before)
        return BOCB_EXIT_COMPILE;
    return BOCB_EXIT_OK;
}
