/* driver.c - runs the passes of bocbc in order and reports the results. */

/* realpath() is an X/Open extension to POSIX. */
#define _XOPEN_SOURCE 700

#include "driver.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../runtime/data.h"
#include "../runtime/ops.h"
#include "../runtime/report.h"

/* ---- finding the standard library ----------------------------------------- */

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *driver_find_stdlib(void)
{
    const char *env = getenv("BOCB_STDLIB");
    if (env && *env)
        return xstrdup(env);
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    static const char *const candidates[] = {"%s/../stdlib", "%s/../share/bocb/stdlib"};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(candidates); i++) {
        char *path = xasprintf(candidates[i], exe);
        char *real = is_dir(path) ? realpath(path, NULL) : NULL;
        free(path);
        if (real)
            return real;
    }
    return NULL;
}

/* ---- cells ---------------------------------------------------------------- */

typedef struct Cell {
    const Configured *model, *optimizer;
    CompiledCell compiled;
    bool ok;
} Cell;

typedef struct RunRecord {
    const Cell *cell;
    uint64_t seed;
    RtTrainResult result;
} RunRecord;

static int report_errors(void)
{
    int n = diag_reported_count();
    if (n)
        fprintf(stderr, "%d error%s generated.\n", n, n == 1 ? "" : "s");
    return diag_error_count() ? 1 : 0;
}

static bool load_data(const ExperimentSpec *spec, DataSplits *splits)
{
    char *error = NULL;
    if (!data_load_idx_dir(splits, spec->data->path, (Normalize)spec->data->normalize, &error)) {
        diag_error(spec->data->loc, "cannot load data%s%s: %s",
                   spec->data->name ? " " : "", spec->data->name ? spec->data->name : "",
                   error);
        free(error);
        return false;
    }
    if (spec->train_size)
        dataset_truncate(&splits->train, spec->train_size);
    if (spec->test_size)
        dataset_truncate(&splits->test, spec->test_size);
    if (splits->train.rank > 3) {
        diag_error(spec->data->loc, "samples of rank %d are not supported", splits->train.rank);
        return false;
    }
    return true;
}

/* Compiles every (model, optimizer) pair. A model or an optimizer that
 * fails once is not compiled again with other partners, so each mistake is
 * reported once. */
static Cell *compile_cells(Lower *l, const ExperimentSpec *spec, const DataShape *shape,
                           int *ncells)
{
    int n = spec->nmodels * spec->noptimizers;
    Cell *cells = xcalloc((size_t)n + 1, sizeof *cells);
    bool *model_bad = xcalloc((size_t)spec->nmodels + 1, sizeof(bool));
    bool *opt_bad = xcalloc((size_t)spec->noptimizers + 1, sizeof(bool));
    for (int m = 0; m < spec->nmodels; m++) {
        for (int o = 0; o < spec->noptimizers; o++) {
            Cell *c = &cells[m * spec->noptimizers + o];
            c->model = spec->models[m];
            c->optimizer = spec->optimizers[o];
            if (model_bad[m] || opt_bad[o])
                continue;
            int before = diag_error_count();
            c->ok = compile_cell(l, c->model, c->optimizer, shape, DT_F32, &c->compiled);
            if (!c->ok && diag_error_count() > before) {
                if (compile_cell_model_failed(l))
                    model_bad[m] = true;
                else
                    opt_bad[o] = true;
            }
        }
    }
    free(model_bad);
    free(opt_bad);
    *ncells = n;
    return cells;
}

static void free_cells(Cell *cells, int n)
{
    for (int i = 0; i < n; i++)
        if (cells[i].ok)
            compiled_cell_free(&cells[i].compiled);
    free(cells);
}

/* ---- emitting ------------------------------------------------------------- */

static int emit(const Options *opts, const Cell *cell, const ExperimentSpec *spec)
{
    const CompiledCell *cc = &cell->compiled;
    switch (opts->emit) {
    case EMIT_IR:
        ir_print(stdout, cc->train);
        putchar('\n');
        ir_print(stdout, cc->eval);
        return 0;
    case EMIT_DOT:
        ir_print_dot(stdout, cc->train);
        return 0;
    case EMIT_KERNELS:
    case EMIT_LLVM: {
        Schedule s;
        schedule_graph(cc->train, spec->batch, &s);
        int status = 0;
        if (opts->emit == EMIT_KERNELS) {
            schedule_print(stdout, &s);
        } else {
            char *error = NULL;
            char *text = codegen_emit_llvm(s.kernels, s.nkernels, true, &error);
            if (text) {
                fputs(text, stdout);
                free(text);
            } else {
                fprintf(stderr, "bocbc: error: code generation failed: %s\n", error);
                free(error);
                status = 1;
            }
        }
        schedule_free(&s);
        return status;
    }
    default:
        return 0;
    }
}

/* ---- reporting ------------------------------------------------------------ */

static void write_reports(const ExperimentSpec *spec, const RunRecord *runs, int nruns)
{
    char *error = NULL;
    if (!rt_make_dirs(spec->report_dir, &error)) {
        fprintf(stderr, "bocbc: error: %s\n", error);
        free(error);
        return;
    }
    StrBuf epochs = {0}, steps = {0};
    sb_append(&epochs, "experiment,model,optimizer,seed,epoch,steps,train_loss,"
                       "train_accuracy,test_loss,test_accuracy,seconds\n");
    sb_append(&steps, "model,optimizer,seed,step,loss\n");
    for (int i = 0; i < nruns; i++) {
        const RunRecord *r = &runs[i];
        const char *model = r->cell->model->label, *opt = r->cell->optimizer->label;
        for (int e = 0; e < r->result.nepochs; e++) {
            const RtEpochResult *er = &r->result.epochs[e];
            sb_printf(&epochs, "%s,\"%s\",\"%s\",%llu,%lld,%lld,%.6f,%.6f,%.6f,%.6f,%.3f\n",
                      spec->name, model, opt, (unsigned long long)r->seed,
                      (long long)er->epoch, (long long)er->steps, er->train_loss,
                      er->train_accuracy, er->test_loss, er->test_accuracy, er->seconds);
        }
        for (int64_t s = 0; s < r->result.nsteps; s++)
            sb_printf(&steps, "\"%s\",\"%s\",%llu,%lld,%.9g\n", model, opt,
                      (unsigned long long)r->seed, (long long)s + 1,
                      (double)r->result.step_losses[s]);
    }
    const char *names[2] = {"epochs.csv", "steps.csv"};
    StrBuf *bufs[2] = {&epochs, &steps};
    for (int i = 0; i < 2; i++) {
        char *path = xasprintf("%s/%s", spec->report_dir, names[i]);
        if (!rt_write_file_atomic(path, bufs[i]->data, bufs[i]->len, &error)) {
            fprintf(stderr, "bocbc: error: %s\n", error);
            free(error);
            error = NULL;
        }
        free(path);
        sb_free(bufs[i]);
    }
}

static void print_table(const ExperimentSpec *spec, const RunRecord *runs, int nruns)
{
    int wm = 5, wo = 9;
    for (int i = 0; i < nruns; i++) {
        int a = (int)strlen(runs[i].cell->model->label);
        int b = (int)strlen(runs[i].cell->optimizer->label);
        wm = a > wm ? a : wm;
        wo = b > wo ? b : wo;
    }
    printf("\nexperiment %s: test accuracy\n", spec->name);
    printf("%-*s  %-*s  %4s  %6s  %9s  %9s  %10s  %9s\n", wm, "model", wo, "optimizer", "seed",
           "epochs", "test acc", "test loss", "train loss", "s/epoch");
    for (int i = 0; i < nruns; i++) {
        const RunRecord *r = &runs[i];
        printf("%-*s  %-*s  %4llu", wm, r->cell->model->label, wo, r->cell->optimizer->label,
               (unsigned long long)r->seed);
        if (r->result.nepochs == 0) {
            printf("  %6s  %9s  (diverged at step %lld)\n", "-", "-",
                   (long long)r->result.diverged_step);
            continue;
        }
        const RtEpochResult *last = &r->result.epochs[r->result.nepochs - 1];
        double seconds = 0;
        for (int e = 0; e < r->result.nepochs; e++)
            seconds += r->result.epochs[e].seconds;
        printf("  %6lld  %8.2f%%  %9.4f  %10.4f  %9.2f%s\n", (long long)last->epoch,
               100 * last->test_accuracy, last->test_loss, last->train_loss,
               seconds / r->result.nepochs, r->result.diverged ? "  diverged" : "");
    }
}

static void print_stats(const Cell *c, const CellStats *st)
{
    printf("stats %s / %s: %d kernels, %d steps, schedule %.1f ms, JIT %.1f ms, "
           "planned memory: arena %.2f MiB (evaluation %.2f MiB), variables %.2f MiB, "
           "workspace %.2f MiB, %lld parameters, %.3f GFLOP per training step\n",
           c->model->label, c->optimizer->label, st->kernels, st->steps,
           1e3 * st->schedule_seconds, 1e3 * st->jit_seconds,
           (double)st->arena_bytes / 1048576.0, (double)st->eval_arena_bytes / 1048576.0,
           (double)st->variable_bytes / 1048576.0, (double)st->workspace_bytes / 1048576.0,
           (long long)st->parameters, st->train_flops / 1e9);
}

/* ---- running an experiment ------------------------------------------------ */

static int run_cells(const Options *opts, const ExperimentSpec *spec, Cell *cells, int ncells,
                     const DataSplits *splits)
{
    char *error = NULL;
    Jit *jit = NULL;
    if (opts->backend == BACKEND_JIT) {
        jit = jit_create(&error);
        if (!jit) {
            fprintf(stderr, "bocbc: error: cannot initialise LLVM: %s\n", error);
            free(error);
            return 1;
        }
    }

    int nruns = ncells * spec->nseeds;
    RunRecord *runs = xcalloc((size_t)nruns + 1, sizeof *runs);
    int done = 0, status = 0;
    bool tty = isatty(fileno(stdout));
    printf("experiment %s: %d model%s x %d optimizer%s x %d seed%s on %s "
           "(%lld training / %lld test samples), %s\n",
           spec->name, spec->nmodels, spec->nmodels == 1 ? "" : "s", spec->noptimizers,
           spec->noptimizers == 1 ? "" : "s", spec->nseeds, spec->nseeds == 1 ? "" : "s",
           spec->data->name ? spec->data->name : spec->data->path,
           (long long)splits->train.count, (long long)splits->test.count,
           opts->backend == BACKEND_JIT ? "JIT" : "interpreter");
    fflush(stdout);

    for (int c = 0; c < ncells && status == 0; c++) {
        for (int s = 0; s < spec->nseeds && status == 0; s++) {
            CellRunner runner;
            CellStats stats;
            if (!cell_runner_create(&runner, &cells[c].compiled, opts->backend, jit,
                                    spec->batch, spec->eval_batch, &stats, &error)) {
                fprintf(stderr, "bocbc: error: code generation failed for %s / %s: %s\n",
                        cells[c].model->label, cells[c].optimizer->label, error);
                free(error);
                status = 1;
                break;
            }
            if (opts->stats)
                print_stats(&cells[c], &stats);
            rt_vars_reset(&runner.vars, spec->seeds[s]);

            RunRecord *r = &runs[done++];
            r->cell = &cells[c];
            r->seed = spec->seeds[s];
            char *label = xasprintf("%s / %s%s", cells[c].model->label,
                                    cells[c].optimizer->label,
                                    spec->nseeds > 1 ? xasprintf(" / seed %llu",
                                                                 (unsigned long long)r->seed)
                                                     : "");
            RtTrainConfig cfg = {
                .label = label, .epochs = spec->epochs, .batch = spec->batch,
                .eval_batch = spec->eval_batch, .max_steps = spec->max_steps,
                .log_every = spec->log_every, .seed = r->seed,
                .lr = cells[c].compiled.base_lr, .log = opts->quiet ? NULL : stdout,
                .log_is_tty = tty,
            };
            rt_train(&cfg, &runner.runner, splits, &r->result);
            free(label);
            cell_runner_destroy(&runner);
            if (spec->report_dir)
                write_reports(spec, runs, done);
        }
    }
    if (status == 0)
        print_table(spec, runs, done);
    for (int i = 0; i < done; i++)
        rt_train_result_free(&runs[i].result);
    free(runs);
    jit_destroy(jit);
    return status;
}

static int run_experiment(const Options *opts, Lower *l, const Decl *exp)
{
    ExperimentSpec spec;
    if (!experiment_resolve(l, exp, opts->overrides, opts->noverrides, &spec))
        return report_errors();
    if (opts->report_dir)
        spec.report_dir = opts->report_dir;

    DataSplits splits;
    memset(&splits, 0, sizeof splits);
    if (!load_data(&spec, &splits))
        return report_errors();
    DataShape shape = {.rank = splits.train.rank, .classes = splits.train.num_classes};
    for (int i = 0; i < shape.rank; i++)
        shape.dims[i] = splits.train.sample_dims[i];
    if (splits.test.num_classes > shape.classes)
        shape.classes = splits.test.num_classes;

    int ncells;
    Cell *cells = compile_cells(l, &spec, &shape, &ncells);
    int status = report_errors();
    if (status == 0 && opts->emit != EMIT_NONE)
        status = emit(opts, &cells[0], &spec);
    else if (status == 0)
        status = run_cells(opts, &spec, cells, ncells, &splits);
    free_cells(cells, ncells);
    data_splits_free(&splits);
    return status;
}

int driver_main(const Options *opts)
{
    Arena arena;
    arena_init(&arena);
    SearchPath search = {.stdlib_dir = opts->stdlib_dir, .dirs = opts->include_dirs,
                         .ndirs = opts->ninclude_dirs};
    int status = 0;

    Program *program = load_program(opts->input, &search, &arena);
    if (!program || diag_error_count()) {
        status = report_errors();
        if (!program)
            status = 1;
        goto done;
    }
    if (opts->syntax_only)
        goto done;
    if (opts->emit == EMIT_AST) {
        ast_print(stdout, program->main);
        goto done;
    }
    if (opts->threads > 0)
        rt_set_blas_threads(opts->threads);

    Lower l;
    lower_init(&l, program, &arena);
    if (diag_error_count()) {
        status = report_errors();
        lower_free(&l);
        goto done;
    }

    int found = 0;
    for (int i = 0; i < program->main->ndecls && status == 0; i++) {
        const Decl *d = program->main->decls[i];
        if (d->kind != DECL_EXPERIMENT)
            continue;
        if (opts->experiment && strcmp(opts->experiment, d->name) != 0)
            continue;
        found++;
        status = run_experiment(opts, &l, d);
    }
    if (status == 0 && found == 0) {
        if (opts->experiment)
            fprintf(stderr, "bocbc: error: %s has no experiment called '%s'\n", opts->input,
                    opts->experiment);
        else
            fprintf(stderr, "bocbc: error: %s defines no experiment to run\n", opts->input);
        status = 1;
    }
    lower_free(&l);

done:
    arena_free(&arena);
    return status;
}
