/* driver.c - runs the passes of bocbc in order and reports the results. */

/* realpath() is an X/Open extension to POSIX. */
#define _XOPEN_SOURCE 700

#include "driver.h"
#include "analyze.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../runtime/cifar.h"
#include "../runtime/data.h"
#include "../runtime/ops.h"
#include "../runtime/parallel.h"
#include "../runtime/report.h"
#include "../runtime/text.h"
#include "aot.h"
#include "metadata.h"
#include "progress.h"
#include "resume.h"
#include "shard.h"
#include "summary.h"
#include "weights.h"

/* ---- finding the standard library ----------------------------------------- */

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *driver_executable_dir(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return NULL;
    return xstrndup(exe, (size_t)(slash - exe));
}

char *driver_find_stdlib(void)
{
    const char *env = getenv("BOCB_STDLIB");
    if (env && *env)
        return xstrdup(env);
    char *exe = driver_executable_dir();
    if (!exe)
        return NULL;
    static const char *const candidates[] = {"%s/../stdlib", "%s/../share/bocb/stdlib"};
    for (size_t i = 0; i < BOCB_ARRAY_LEN(candidates); i++) {
        char *path = xasprintf(candidates[i], exe);
        char *real = is_dir(path) ? realpath(path, NULL) : NULL;
        free(path);
        if (real) {
            free(exe);
            return real;
        }
    }
    free(exe);
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

/* Errors reported while loading data: they are run-time errors, not
 * mistakes in the program, and give exit status BOCB_EXIT_RUNTIME. */
static int data_errors;

static int report_errors(void)
{
    int n = diag_reported_count();
    if (n)
        fprintf(stderr, "%d error%s generated.\n", n, n == 1 ? "" : "s");
    if (diag_error_count() > data_errors)
        return BOCB_EXIT_COMPILE;
    return data_errors ? BOCB_EXIT_RUNTIME : BOCB_EXIT_OK;
}

static bool load_data(const ExperimentSpec *spec, DataSplits *splits)
{
    char *error = NULL;
    Normalize normalize = (Normalize)spec->data->normalize;
    bool loaded = spec->data->format == DATA_FORTUNES
                      ? text_load_fortunes(splits, spec->data->fortunes, &error)
                  : spec->data->format == DATA_CIFAR
                      ? data_load_cifar_dir(splits, spec->data->path, normalize, &error)
                      : data_load_idx_dir(splits, spec->data->path, normalize, &error);
    if (!loaded) {
        diag_error(spec->data->loc, "cannot load data%s%s: %s",
                   spec->data->name ? " " : "", spec->data->name ? spec->data->name : "",
                   error);
        data_errors++;
        free(error);
        return false;
    }
    if (spec->data->classes && !data_check_classes(splits, spec->data->classes, &error)) {
        diag_error(spec->data->loc, "invalid data%s%s: %s", spec->data->name ? " " : "",
                   spec->data->name ? spec->data->name : "", error);
        data_errors++;
        free(error);
        data_splits_free(splits);
        return false;
    }
    if (spec->train_size)
        dataset_truncate(&splits->train, spec->train_size);
    if (spec->test_size)
        dataset_truncate(&splits->test, spec->test_size);
    /* The IDX loader accepts images of rank 3 and labels of rank 1 only. */
    BOCB_ASSERT(splits->train.rank <= 3);
    return true;
}

/* Compiles every (model, optimizer) pair. A model or an optimizer that
 * fails once is not compiled again with other partners, so each mistake is
 * reported once. */
static Cell *compile_cells(Lower *l, const Options *opts, const ExperimentSpec *spec,
                           const DataShape *shape, int *ncells)
{
    int n = spec->nmodels * spec->noptimizers;
    Cell *cells = xcalloc((size_t)n + 1, sizeof *cells);
    bool *model_bad = xcalloc((size_t)spec->nmodels + 1, sizeof(bool));
    bool *opt_bad = xcalloc((size_t)spec->noptimizers + 1, sizeof(bool));
    /* reached[o]: optimizer o was expanded in a cell whose model compiled. */
    bool *reached = xcalloc((size_t)spec->noptimizers + 1, sizeof(bool));
    const Configured **unchecked = xcalloc((size_t)spec->noptimizers + 1,
                                           sizeof *unchecked);
    int *unchecked_index = xcalloc((size_t)spec->noptimizers + 1, sizeof(int));
    bool *unchecked_failed = xcalloc((size_t)spec->noptimizers + 1, sizeof(bool));
    l->loss = spec->loss;
    for (int m = 0; m < spec->nmodels; m++) {
        for (int o = 0; o < spec->noptimizers; o++) {
            Cell *c = &cells[m * spec->noptimizers + o];
            c->model = spec->models[m];
            c->optimizer = spec->optimizers[o];
            if (model_bad[m] || opt_bad[o])
                continue;
            /* Should the model fail, the optimizers that no cell has
             * checked yet are expanded over the parameters it created. */
            int nunchecked = 0;
            for (int k = 0; k < spec->noptimizers; k++) {
                if (!reached[k] && !opt_bad[k]) {
                    unchecked_index[nunchecked] = k;
                    unchecked[nunchecked++] = spec->optimizers[k];
                }
            }
            int before = diag_error_count();
            CellOptions options = {.clip = spec->clip, .forward_grad = spec->forward_grad,
                                   .groups = spec->groups,
                                   .finetune = spec->finetune, .recompute = spec->recompute,
                                   .ngroups = spec->ngroups, .check_optimizers = unchecked,
                                   .quantize_weights = spec->quantize_weights,
                                   .quantize_gradients = spec->quantize_gradients,
                                   .shards = opts->ranks == 0 ? 0
                                             : opts->comm ? opts->comm->size : 1,
                                   .shard_index = opts->comm ? opts->comm->rank : 0,
                                   .ncheck_optimizers = nunchecked,
                                   .check_failed = unchecked_failed, .zo = &spec->zo};
            c->ok = compile_cell_with(l, c->model, c->optimizer, shape, DT_F32, &options,
                                      &c->compiled);
            bool model_failed = !c->ok && compile_cell_model_failed(l);
            if (!c->ok && diag_error_count() > before) {
                if (model_failed)
                    model_bad[m] = true;
                else
                    opt_bad[o] = true;
            }
            for (int k = 0; model_failed && k < nunchecked; k++)
                opt_bad[unchecked_index[k]] |= unchecked_failed[k];
            reached[o] |= !model_failed;
        }
    }
    /* With no valid optimizer there is no cell, but the models can still
     * be checked. */
    for (int m = 0; spec->noptimizers == 0 && m < spec->nmodels; m++)
        check_model(l, spec->models[m], shape, DT_F32);
    free(model_bad);
    free(opt_bad);
    free(reached);
    free(unchecked);
    free(unchecked_index);
    free(unchecked_failed);
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

/* Prints the intermediate graphs of the first cell compiled, for
 * --emit=ir and --emit=ir-grad (a Lower.stage_hook). */
typedef struct StageEmitter {
    CellStage stage;
    bool printed;
} StageEmitter;

static void emit_stage(void *context, CellStage stage, const IrGraph *graph)
{
    StageEmitter *e = context;
    if (e->printed || stage != e->stage)
        return;
    ir_print(stdout, graph);
    e->printed = true;
}

static int emit(const Options *opts, const Cell *cell, const ExperimentSpec *spec)
{
    const CompiledCell *cc = &cell->compiled;
    switch (opts->emit) {
    case EMIT_IR_OPT:
        ir_print(stdout, cc->train);
        putchar('\n');
        ir_print(stdout, cc->eval);
        if (cc->zo) {
            putchar('\n');
            ir_print(stdout, cc->zo->perturb);
            putchar('\n');
            ir_print(stdout, cc->zo->update);
        }
        return 0;
    case EMIT_DOT:
        ir_print_dot(stdout, cc->train);
        return 0;
    case EMIT_KERNELS:
    case EMIT_LLVM:
    case EMIT_ASM: {
        Schedule s;
        schedule_graph(cc->train, spec->batch, &s);
        int status = 0;
        if (opts->emit == EMIT_KERNELS) {
            schedule_print(stdout, &s);
        } else {
            char *error = NULL;
            char *text = opts->emit == EMIT_ASM
                             ? codegen_emit_asm(s.kernels, s.nkernels, &error)
                             : codegen_emit_llvm(s.kernels, s.nkernels, true, &error);
            if (text) {
                fputs(text, stdout);
                free(text);
            } else {
                /* messages.py: not reached: LLVM rejects no kernel we build. */
                fprintf(stderr, "bocbc: error: code generation failed: %s\n", error);
                free(error);
                status = BOCB_EXIT_RUNTIME;
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

/* Returns `text` as a quoted CSV field (RFC 4180: quotes doubled), malloc'd. */
static char *csv_field(const char *text)
{
    StrBuf sb = {0};
    sb_append(&sb, "\"");
    for (const char *p = text; *p; p++) {
        if (*p == '"')
            sb_append(&sb, "\"\"");
        else
            sb_appendn(&sb, p, 1);
    }
    sb_append(&sb, "\"");
    return sb.data;
}

/* Writes DIR/summary.md and DIR/summary.json from the results table
 * `runs_csv`. Returns false after printing why not. */
static bool write_summary(const char *runs_csv, const char *dir)
{
    char *error = NULL;
    bool ok = summary_write(runs_csv, dir, &error);
    if (!ok) {
        fprintf(stderr, "bocbc: error: cannot summarize: %s\n", error);
        free(error);
    }
    return ok;
}

/* Appends the last fields of a runs.csv row and ends it. failed_step and
 * failure: the step and the reason of a diverged run on its last row
 * (`result` non-NULL), empty otherwise. sweep and setting: the sweep that
 * the optimizer configuration comes from and its swept values, empty
 * when it comes from none. */
static void append_run_fields(StrBuf *row, const RtTrainResult *result, const Configured *opt)
{
    if (!result || !result->diverged) {
        sb_append(row, ",,");
    } else {
        char *reason = csv_field(result->diverged_reason);
        sb_printf(row, "%lld,%s,", (long long)result->diverged_step, reason);
        free(reason);
    }
    if (opt->sweep) {
        char *sweep = csv_field(opt->sweep), *setting = csv_field(opt->setting);
        sb_printf(row, "%s,%s", sweep, setting);
        free(sweep);
        free(setting);
    } else {
        sb_append(row, ",");
    }
    sb_append(row, "\n");
}

/* Rewrites DIR/epochs.csv, DIR/steps.csv, DIR/runs.csv (epochs.csv with
 * the optimizer family) and the summary with every run so far.
 * Returns false after printing why a file could not be written. */
static bool write_reports(const ExperimentSpec *spec, const RunRecord *runs, int nruns)
{
    StrBuf epochs = {0}, steps = {0}, table = {0};
    sb_append(&table, "experiment,model,optimizer,family,seed,epoch,steps,train_loss,"
                      "train_accuracy,test_loss,test_accuracy,seconds,status,skipped_steps,"
                      "failed_step,failure,sweep,setting\n");
    sb_append(&epochs, "experiment,model,optimizer,seed,epoch,steps,train_loss,"
                       "train_accuracy,test_loss,test_accuracy,seconds,status,skipped_steps\n");
    sb_append(&steps, "experiment,model,optimizer,seed,step,loss,lr\n");
    for (int i = 0; i < nruns; i++) {
        const RunRecord *r = &runs[i];
        char *model = csv_field(r->cell->model->label);
        char *opt = csv_field(r->cell->optimizer->label);
        for (int e = 0; e < r->result.nepochs; e++) {
            const RtEpochResult *er = &r->result.epochs[e];
            bool last = e == r->result.nepochs - 1;
            sb_printf(&epochs, "%s,%s,%s,%llu,%lld,%lld,%.6f,%.6f,%.6f,%.6f,%.3f,%s,%lld\n",
                      spec->name, model, opt, (unsigned long long)r->seed,
                      (long long)er->epoch, (long long)er->steps, er->train_loss,
                      er->train_accuracy, er->test_loss, er->test_accuracy, er->seconds,
                      last && r->result.diverged ? "diverged" : "ok",
                      (long long)er->skipped);
            sb_printf(&table, "%s,%s,%s,%s,%llu,%lld,%lld,%.6f,%.6f,%.6f,%.6f,%.3f,%s,%lld,",
                      spec->name, model, opt,
                      family_name(optimizer_family(r->cell->optimizer->decl->name)),
                      (unsigned long long)r->seed, (long long)er->epoch, (long long)er->steps,
                      er->train_loss, er->train_accuracy, er->test_loss, er->test_accuracy,
                      er->seconds, last && r->result.diverged ? "diverged" : "ok",
                      (long long)er->skipped);
            append_run_fields(&table, last ? &r->result : NULL, r->cell->optimizer);
        }
        for (int64_t s = 0; s < r->result.nsteps; s++)
            sb_printf(&steps, "%s,%s,%s,%llu,%lld,%.9g,%.17g\n", spec->name, model, opt,
                      (unsigned long long)r->seed, (long long)s + 1,
                      (double)r->result.step_losses[s], r->result.step_lrs[s]);
        free(model);
        free(opt);
    }
    const char *names[3] = {"epochs.csv", "steps.csv", "runs.csv"};
    StrBuf *bufs[3] = {&epochs, &steps, &table};
    bool ok = true;
    for (int i = 0; i < 3; i++) {
        char *path = xasprintf("%s/%s", spec->report_dir, names[i]);
        char *error = NULL;
        if (!rt_write_file_atomic(path, bufs[i]->data, bufs[i]->len, &error)) {
            fprintf(stderr, "bocbc: error: %s\n", error);
            free(error);
            ok = false;
        }
        free(path);
        sb_free(bufs[i]);
    }
    /* A grid stopped during its first epoch has no results to summarise yet. */
    bool any_epoch = false;
    for (int i = 0; i < nruns; i++)
        any_epoch |= runs[i].result.nepochs > 0;
    char *runs_csv = xasprintf("%s/runs.csv", spec->report_dir);
    ok = ok && (!any_epoch || write_summary(runs_csv, spec->report_dir));
    free(runs_csv);
    return ok;
}

/* Formats a loss for the table: fixed point, or scientific when huge. */
static const char *format_metric(double v, char *buf, size_t size)
{
    if (isfinite(v) && fabs(v) < 1e5)
        snprintf(buf, size, "%.4f", v);
    else if (isnan(v))
        snprintf(buf, size, "nan");
    else
        snprintf(buf, size, "%.3e", v);
    return buf;
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
        if (r->result.diverged) {
            printf("  diverged at step %lld: %s\n", (long long)r->result.diverged_step,
                   r->result.diverged_reason);
            continue;
        }
        if (r->result.nepochs == 0) {
            /* A signal stopped the run before its first epoch ended. */
            printf("  stopped at step %lld, before the end of epoch 1\n",
                   (long long)r->result.nsteps);
            continue;
        }
        const RtEpochResult *last = &r->result.epochs[r->result.nepochs - 1];
        double seconds = 0;
        for (int e = 0; e < r->result.nepochs; e++)
            seconds += r->result.epochs[e].seconds;
        char test_loss[32], train_loss[32];
        printf("  %6lld  %8.2f%%  %9s  %10s  %9.2f", (long long)last->epoch,
               100 * last->test_accuracy, format_metric(last->test_loss, test_loss, 32),
               format_metric(last->train_loss, train_loss, 32), seconds / r->result.nepochs);
        if (r->result.skipped)
            printf("  %lld of %lld steps skipped (gradient norm not finite)",
                   (long long)r->result.skipped, (long long)r->result.nsteps);
        putchar('\n');
    }
}

static void print_stats(const Cell *c, const CellStats *st)
{
    printf("stats %s / %s: %d kernels, %d steps, schedule %.1f ms, JIT %.1f ms, "
           "kernel cache %d hits %d misses, planned peak %.2f MiB: "
           "arena %.2f MiB (evaluation %.2f MiB), variables %.2f MiB, "
           "workspace %.2f MiB, %lld parameters, %.3f GFLOP per training step, "
           "planned training-step peak %.3f MiB, inference peak %.3f MiB\n",
           c->model->label, c->optimizer->label, st->kernels, st->steps,
           1e3 * st->schedule_seconds, 1e3 * st->jit_seconds, st->cache_hits,
           st->cache_misses, (double)st->planned_bytes / 1048576.0,
           (double)st->arena_bytes / 1048576.0, (double)st->eval_arena_bytes / 1048576.0,
           (double)st->variable_bytes / 1048576.0, (double)st->workspace_bytes / 1048576.0,
           (long long)st->parameters, st->train_flops / 1e9,
           (double)st->train_peak_bytes / 1048576.0,
           (double)st->inference_peak_bytes / 1048576.0);
    if (st->gathered_total > 0)
        printf("  gathered parameters at most %.3f MiB of %.3f MiB in the training-step "
               "arena\n", (double)st->gathered_bytes / 1048576.0,
               (double)st->gathered_total / 1048576.0);
    const IrModule *m = &c->compiled.module;
    for (int v = 0; v < m->nvars; v++) {
        if (m->vars[v].kind != IR_VAR_PARAM)
            continue;
        const char *groups = c->compiled.param_groups ? c->compiled.param_groups[v] : NULL;
        char shape[96];
        printf("  parameter %s %s%s%s: %s\n", m->vars[v].name,
               shape_format(&m->vars[v].shape, shape, sizeof shape),
               m->vars[v].tag ? " tag " : "",
               m->vars[v].tag ? m->vars[v].tag : "",
               m->vars[v].frozen ? "frozen" : groups ? groups : "no group");
    }
}

/* ---- running an experiment ------------------------------------------------ */

/* One experiment, compiled and ready to run. */
typedef struct Job {
    const Decl *decl;
    ExperimentSpec spec;
    DataSplits splits;
    /* The sizes of the splits, kept after --check frees them. */
    int64_t train_count, test_count;
    DataShape shape;
    Cell *cells;
    int ncells;
    bool ready;
} Job;

/* Reads the number after `key` in /proc/self/status (in kB), or 0. */
static size_t proc_status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kb = 0, len = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0)
            kb = strtoull(line + len, NULL, 10);
    fclose(f);
    return kb * 1024;
}

/* Resets the process's peak resident set size (VmHWM) to its current
 * size, as Linux 4.0 and later allow, and returns that size in bytes, or
 * 0 when the peak cannot be reset. */
static size_t reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f)
        return 0;
    bool ok = fputs("5", f) >= 0;
    ok &= fclose(f) == 0;
    return ok ? proc_status_bytes("VmRSS:") : 0;
}

/* Prints how far the resident set grew while a cell was created and
 * trained, beside the memory planned for it (--stats). */
static void print_memory_growth(const Cell *c, size_t rss_before, size_t planned)
{
    size_t peak = proc_status_bytes("VmHWM:");
    if (rss_before == 0 || peak == 0)
        return;
    double growth = peak > rss_before ? (double)(peak - rss_before) : 0.0;
    printf("stats %s / %s: resident memory grew by %.2f MiB at its peak; "
           "%.2f MiB were planned\n", c->model->label, c->optimizer->label,
           growth / 1048576.0, (double)planned / 1048576.0);
}

/* Reads a cgroup v2 memory file of this process's cgroup, or SIZE_MAX. */
static size_t cgroup_memory(const char *file)
{
    char *path = xasprintf("/sys/fs/cgroup/%s", file);
    FILE *f = fopen(path, "r");
    free(path);
    if (!f)
        return SIZE_MAX;
    char text[64] = "";
    bool read = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    if (!read || strncmp(text, "max", 3) == 0)
        return SIZE_MAX;
    return strtoull(text, NULL, 10);
}

static size_t minimum(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* Returns the memory this process may still allocate: physical memory,
 * narrowed by the address-space and data limits (ulimit -v, -d) and the
 * cgroup's memory limit, less what is in use. This is the bound planned
 * memory is checked against. */
static size_t available_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    size_t limit = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : SIZE_MAX;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        size_t used = proc_status_bytes("VmSize:");
        limit = minimum(limit, rl.rlim_cur > used ? rl.rlim_cur - used : 0);
    }
    if (getrlimit(RLIMIT_DATA, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        size_t used = proc_status_bytes("VmData:");
        limit = minimum(limit, rl.rlim_cur > used ? rl.rlim_cur - used : 0);
    }
    size_t cgroup_max = cgroup_memory("memory.max");
    if (cgroup_max != SIZE_MAX) {
        size_t used = cgroup_memory("memory.current");
        used = used == SIZE_MAX ? 0 : used;
        limit = minimum(limit, cgroup_max > used ? cgroup_max - used : 0);
    }
    return limit;
}

/* The batch sizes a job runs: as configured, but no larger than its data,
 * which would only plan memory for nothing. */
static void job_batches(const Job *job, int64_t *batch, int64_t *eval_batch)
{
    const ExperimentSpec *spec = &job->spec;
    int64_t train = job->train_count, test = job->test_count;
    *batch = spec->batch < train ? spec->batch : train;
    *eval_batch = spec->eval_batch < test ? spec->eval_batch : test;
}

/* Returns the bytes a run may plan: --max-memory when given, else what
 * this process may allocate. */
static size_t memory_limit(const Options *opts)
{
    return opts->max_memory ? opts->max_memory : available_memory();
}

/* Checks every cell's planned memory against the limit, before anything
 * trains. */
static bool check_planned_memory(const Options *opts, const Job *job)
{
    int64_t batch, eval_batch;
    job_batches(job, &batch, &eval_batch);
    size_t available = memory_limit(opts);
    bool ok = true;
    for (int c = 0; c < job->ncells; c++) {
        const Cell *cell = &job->cells[c];
        if (!cell->ok)
            continue;
        size_t planned = cell_planned_bytes(&cell->compiled, batch, eval_batch);
        if (planned <= available)
            continue;
        ok = false;
        if (opts->max_memory) {
            fprintf(stderr, "bocbc: error: experiment '%s', %s / %s: the planned memory, "
                    "%.2f MiB, is more than the %.2f MiB of --max-memory; reduce batch, "
                    "eval_batch or the model, or raise --max-memory\n", job->spec.name,
                    cell->model->label, cell->optimizer->label, (double)planned / 1048576.0,
                    (double)opts->max_memory / 1048576.0);
            continue;
        }
        fprintf(stderr, "bocbc: error: experiment '%s', %s / %s: the planned memory, "
                "%.2f GiB, is more than the %.2f GiB this process may allocate; reduce "
                "batch, eval_batch or the model\n", job->spec.name, cell->model->label,
                cell->optimizer->label, (double)planned / 1073741824.0,
                (double)available / 1073741824.0);
        ok = false;
    }
    return ok;
}

/* Loads the experiment's `init` file into the cell's parameters; reports
 * a failure on stderr and returns false. */
static bool load_init(const ExperimentSpec *spec, const Cell *cell, CellRunner *runner,
                      bool quiet)
{
    char *error = NULL;
    int loaded = 0, total = 0;
    if (!weights_load(spec->init_path, &cell->compiled.module, &runner->vars, &loaded, &total,
                      &error)) {
        fprintf(stderr, "bocbc: error: cannot load the parameters of %s: %s\n",
                cell->model->label, error);
        free(error);
        return false;
    }
    if (!quiet)
        printf("loaded %d of %d parameters of %s from %s\n", loaded, total,
               cell->model->label, spec->init_path);
    return true;
}

/* Marks the checkpoint of a run finished. A run that diverged has applied
 * the update of the step that diverged, unless --check-numerics stopped
 * that step before its update, so its variables may hold NaNs. They are
 * replaced by the last finite state: the one the checkpoint file holds,
 * or the initial state when the run saved none. A note names its step. */
static bool finish_checkpoint(const ExperimentSpec *spec, const Cell *cell, CellRunner *runner,
                              RunCheckpoint *ck, const RunRecord *r, const char *label,
                              bool quiet, GridProgress *progress)
{
    const RtTrainResult *result = &r->result;
    if (!result->diverged)
        return run_checkpoint_finish(ck, result);

    int64_t state_step;
    if (runner->fault[0]) {
        state_step = result->diverged_step - 1;
    } else if (ck->has_state) {
        if (!run_checkpoint_roll_back(ck, &runner->vars))
            return false;
        state_step = ck->state_step;
    } else {
        rt_vars_reset(&runner->vars, r->seed);
        if (spec->init_path && !load_init(spec, cell, runner, true))
            return false;
        state_step = 0;
    }
    char *note = state_step == 0
                     ? xasprintf("%s: the checkpoint keeps the initial variables, from before "
                                 "the divergence at step %lld: %s",
                                 label, (long long)result->diverged_step, ck->path)
                     : xasprintf("%s: the checkpoint keeps the variables after step %lld, "
                                 "from before the divergence at step %lld: %s",
                                 label, (long long)state_step,
                                 (long long)result->diverged_step, ck->path);
    if (!quiet)
        printf("%s\n", note);
    grid_progress_log(progress, "%s", note);
    free(note);
    return run_checkpoint_finish_diverged(ck, result, state_step);
}

/* Returns why a run of `spec` writes no checkpoint, or NULL when it
 * writes them: checkpoints need a report directory and one process. */
static const char *no_checkpoint_reason(const ExperimentSpec *spec, const Options *opts)
{
    if (!spec->report_dir)
        return "the experiment has no report directory";
    if (opts->ranks > 0)
        return "sharded runs write none";
    return NULL;
}

/* Returns the message (malloc'd) that ends a run stopped by signal
 * `signo`: that it saved a checkpoint to resume from, or why it did not
 * and what the same command does then. `ck` is the run's checkpoint, or
 * NULL when the run writes none. */
static char *stop_message(const ExperimentSpec *spec, const Options *opts,
                          const RunCheckpoint *ck, int signo)
{
    if (!ck)
        return xasprintf("bocbc: stopped by signal %d; no checkpoint was written, because "
                         "%s, so there is none to resume from", signo,
                         no_checkpoint_reason(spec, opts));
    if (!ck->skipped_nonfinite)
        return xasprintf("bocbc: stopped by signal %d after saving a checkpoint; run the "
                         "same command again to resume", signo);
    if (ck->has_state)
        return xasprintf("bocbc: stopped by signal %d; no checkpoint was written, because "
                         "a variable is not finite (NaN or infinite); the same command "
                         "resumes from the checkpoint of step %lld", signo,
                         (long long)ck->state_step);
    return xasprintf("bocbc: stopped by signal %d; no checkpoint was written, because a "
                     "variable is not finite (NaN or infinite), and none was written "
                     "before; the same command starts the run afresh", signo);
}

/* Trains every cell of a compiled job. Returns BOCB_EXIT_RUNTIME when a
 * report could not be written or code generation failed, else 0;
 * diverged cells are results, not failures. */
static int run_job(const Options *opts, Job *job, Jit *jit)
{
    const ExperimentSpec *spec = &job->spec;
    const DataSplits *splits = &job->splits;
    int64_t batch, eval_batch;
    job_batches(job, &batch, &eval_batch);
    char *error = NULL;
    int nruns = job->ncells * spec->nseeds;
    RunRecord *runs = xcalloc((size_t)nruns + 1, sizeof *runs);
    ShardRecord *shard_records = xcalloc((size_t)nruns + 1, sizeof *shard_records);
    bool writes_reports = !opts->comm || opts->comm->rank == 0;
    /* Checkpoints and resuming cover single-process runs; a sharded run
     * keeps its optimizer state on the ranks and starts afresh. */
    bool checkpoints = spec->report_dir && opts->ranks == 0;
    int done = 0, status = 0;
    char *stop_note = NULL; /* the message of a run stopped by a signal */
    bool tty = isatty(fileno(stdout));
    if (writes_reports)
        printf("experiment %s: %d model%s x %d optimizer%s x %d seed%s on %s "
               "(%lld training / %lld test samples), %s\n",
               spec->name, spec->nmodels, spec->nmodels == 1 ? "" : "s", spec->noptimizers,
               spec->noptimizers == 1 ? "" : "s", spec->nseeds, spec->nseeds == 1 ? "" : "s",
               spec->data->name ? spec->data->name : spec->data->path,
               (long long)splits->train.count, (long long)splits->test.count,
               opts->backend == BACKEND_JIT ? "JIT" : "interpreter");
    fflush(stdout);
    char *settings = xasprintf("epochs=%lld batch=%lld eval_batch=%lld train=%lld test=%lld "
                               "steps=%lld",
                               (long long)spec->epochs, (long long)batch,
                               (long long)eval_batch, (long long)splits->train.count,
                               (long long)splits->test.count, (long long)spec->max_steps);
    bool augment = spec->augment.crop || spec->augment.flip;
    if (augment) {
        /* Augmentation changes results, so a checkpoint records it; a grid
         * without it keeps the settings text of earlier versions. */
        char *with = augment_settings_text(settings, &spec->augment);
        free(settings);
        settings = with;
    }
    GridProgress progress;
    /* Only the rank that writes reports keeps the run log. */
    if (!grid_progress_start(&progress, spec->name, nruns,
                             writes_reports ? spec->report_dir : NULL,
                             opts->quiet ? NULL : stdout))
        status = BOCB_EXIT_RUNTIME;
    RunMetadata meta = {
        .version = opts->version, .argc = opts->argc, .argv = opts->argv,
        .experiment = spec->name, .seeds = spec->seeds, .nseeds = spec->nseeds,
        .backend = opts->backend == BACKEND_JIT ? "JIT" : "interpreter",
    };
    if (spec->report_dir && !run_metadata_write(spec->report_dir, &meta, &error)) {
        /* messages.py: not reached: the report directory was checked before training. */
        fprintf(stderr, "bocbc: error: cannot write the run metadata: %s\n", error);
        free(error);
        status = BOCB_EXIT_RUNTIME;
    }
    run_signals_install();

    if (opts->ranks > 0)
        status = shard_check_run(spec, batch, splits->train.count, opts->ranks);
    for (int c = 0; c < job->ncells && status == 0; c++) {
        const Cell *cell = &job->cells[c];
        for (int s = 0; s < spec->nseeds && status == 0; s++) {
            CellRunner runner;
            CellStats stats;
            size_t rss_before = opts->stats ? reset_peak_rss() : 0;
            if (!cell_runner_create(&runner, &cell->compiled, opts->backend, jit, batch,
                                    eval_batch, memory_limit(opts), &stats, &error)) {
                fprintf(stderr, "bocbc: error: %s / %s: %s\n", cell->model->label,
                        cell->optimizer->label, error);
                free(error);
                status = BOCB_EXIT_RUNTIME;
                break;
            }
            if (opts->check_numerics)
                cell_runner_check_numerics(&runner);
            if (opts->stats)
                print_stats(cell, &stats);
            rt_vars_reset(&runner.vars, spec->seeds[s]);
            if (spec->init_path && !load_init(spec, cell, &runner, opts->quiet)) {
                cell_runner_destroy(&runner);
                status = BOCB_EXIT_RUNTIME;
                break;
            }

            RunRecord *r = &runs[done++];
            r->cell = cell;
            r->seed = spec->seeds[s];
            RunCheckpoint checkpoint;
            RtTrainPosition position;
            ResumeState resume = RESUME_FRESH;
            if (checkpoints) {
                run_checkpoint_init(&checkpoint, spec->report_dir, spec->name,
                                    cell->model->label, cell->optimizer->label, r->seed,
                                    settings, &runner.vars);
                resume = run_checkpoint_restore(&checkpoint, &runner.vars, &position,
                                                &r->result);
            }
            if (resume == RESUME_ERROR || resume == RESUME_FINISHED) {
                if (resume == RESUME_ERROR) {
                    /* The run has no results: it is not a row of the table. */
                    rt_train_result_free(&r->result);
                    done--;
                    status = BOCB_EXIT_RUNTIME;
                }
                else if (!opts->quiet)
                    printf("%s / %s / seed %llu: finished in an earlier run; skipped\n",
                           cell->model->label, cell->optimizer->label,
                           (unsigned long long)r->seed);
                if (resume == RESUME_FINISHED)
                    grid_progress_run_done(&progress, r->result.diverged, true, 0);
                run_checkpoint_free(&checkpoint);
                cell_runner_destroy(&runner);
                if (resume == RESUME_FINISHED && !write_reports(spec, runs, done))
                    status = BOCB_EXIT_RUNTIME;
                continue;
            }
            char *label = spec->nseeds > 1
                              ? xasprintf("%s / %s / seed %llu", cell->model->label,
                                          cell->optimizer->label, (unsigned long long)r->seed)
                              : xasprintf("%s / %s", cell->model->label,
                                          cell->optimizer->label);
            RtSchedule schedule = spec->schedule;
            schedule.base_lr = cell->compiled.base_lr;
            RtTrainConfig cfg = {
                .label = label, .epochs = spec->epochs, .batch = batch,
                .eval_batch = eval_batch, .max_steps = spec->max_steps,
                .log_every = spec->log_every, .seed = r->seed,
                .lr = cell->compiled.base_lr, .schedule = &schedule, .clip = spec->clip > 0,
                .log = opts->quiet ? NULL : stdout, .log_is_tty = tty,
                .stop = &run_stop_signal, .log_file = progress.log,
                .augment = augment ? &spec->augment : NULL,
            };
            if (checkpoints) {
                cfg.resume = resume == RESUME_CONTINUE ? &position : NULL;
                cfg.checkpoint = run_checkpoint_save;
                cfg.checkpoint_context = &checkpoint;
                cfg.checkpoint_every = spec->checkpoint_every;
            }
            if (resume == RESUME_CONTINUE) {
                if (!opts->quiet)
                    printf("%s: resuming at step %lld\n", label, (long long)position.step);
                grid_progress_log(&progress, "%s: resuming at step %lld", label,
                                  (long long)position.step);
            }
            double run_start = now_seconds();
            ShardRecord *sr = &shard_records[done - 1];
            if (opts->ranks > 0) {
                sr->model = cell->model->label;
                sr->optimizer = cell->optimizer->label;
                sr->seed = r->seed;
                status = shard_run_cell(opts->comm ? opts->comm : &(RtComm){.size = 1},
                                        opts->ranks, spec, &runner, jit, &cfg, splits,
                                        &r->result, sr);
            } else {
                rt_train(&cfg, &runner.runner, splits, &r->result);
            }
            if (opts->stats)
                print_memory_growth(cell, rss_before, stats.planned_bytes);
            if (r->result.checkpoint_failed) {
                status = BOCB_EXIT_RUNTIME;
            } else if (r->result.interrupted) {
                status = 128 + run_stop_signal;
                stop_note = stop_message(spec, opts, checkpoints ? &checkpoint : NULL,
                                         run_stop_signal);
            } else if (checkpoints && !finish_checkpoint(spec, cell, &runner, &checkpoint, r,
                                                         label, opts->quiet, &progress)) {
                status = BOCB_EXIT_RUNTIME;
            } else if (!checkpoints && r->result.diverged && writes_reports) {
                char *note = xasprintf("%s: no checkpoint was written, because %s, so the "
                                       "variables stay as the diverged step left them", label,
                                       no_checkpoint_reason(spec, opts));
                if (!opts->quiet)
                    printf("%s\n", note);
                grid_progress_log(&progress, "%s", note);
                free(note);
            }
            if (!r->result.interrupted && !r->result.checkpoint_failed)
                grid_progress_run_done(&progress, r->result.diverged, false,
                                       now_seconds() - run_start);
            if (checkpoints)
                run_checkpoint_free(&checkpoint);
            if (status == 0 && spec->nanalyses > 0) {
                AnalyzeContext analysis = {
                    .cell = &cell->compiled, .store = &runner.vars, .backend = opts->backend,
                    .jit = jit, .data = splits, .label = label, .out = stdout,
                    .report_dir = spec->report_dir,
                };
                if (!analyze_run_all(spec, &analysis))
                    status = BOCB_EXIT_RUNTIME;
            }
            /* --check-numerics reported the op; no later cell runs. */
            if (runner.fault[0])
                status = BOCB_EXIT_RUNTIME;
            free(label);
            if (spec->save_path &&
                !weights_save(spec->save_path, &cell->compiled.module, &runner.vars, &error)) {
                fprintf(stderr, "bocbc: error: cannot save the parameters: %s\n", error);
                free(error);
                status = BOCB_EXIT_RUNTIME;
            } else if (spec->save_path && !opts->quiet) {
                printf("saved the parameters of %s to %s\n", cell->model->label,
                       spec->save_path);
            }
            cell_runner_destroy(&runner);
            if (status == 0 && writes_reports && spec->report_dir &&
                !write_reports(spec, runs, done))
                status = BOCB_EXIT_RUNTIME;
            if (status == 0 && writes_reports && spec->report_dir && opts->ranks > 0 &&
                !shard_write_report(spec->report_dir, spec->name, shard_records, done))
                status = BOCB_EXIT_RUNTIME;
        }
    }
    run_signals_restore();
    grid_progress_finish(&progress, status);
    free(settings);
    if (stop_note)
        fprintf(stderr, "%s\n", stop_note);
    free(stop_note);
    if (done > 0 && writes_reports)
        print_table(spec, runs, done);
    for (int i = 0; i < done; i++)
        rt_train_result_free(&runs[i].result);
    free(runs);
    free(shard_records);
    return status;
}

/* ---- compiling to an executable (-c) -------------------------------------- */

/* Returns the options that a binary written by -c replays before its
 * user's: -e, each -D, and each -I directory and BOCB_PATH entry as a
 * real path (aot_main.c moves those below its copy of the sources). */
static const char **aot_arguments(const Options *opts, const SearchPath *search, int *nargs)
{
    int cap = 2 + 2 * opts->noverrides + 2 * search->ndirs;
    const char **args = xcalloc((size_t)cap + 1, sizeof *args);
    int n = 0;
    if (opts->experiment) {
        args[n++] = xstrdup("-e");
        args[n++] = xstrdup(opts->experiment);
    }
    for (int i = 0; i < opts->noverrides; i++) {
        args[n++] = xstrdup("-D");
        args[n++] = xstrdup(opts->overrides[i].text);
    }
    for (int i = 0; i < search->ndirs; i++) {
        char *real = realpath(search->dirs[i], NULL);
        if (!real)
            continue; /* a directory that does not exist provided no file */
        args[n++] = xstrdup("-I");
        args[n++] = real;
    }
    *nargs = n;
    return args;
}

/* Writes the executable of -c: the kernels of every cell of every job,
 * of its evaluation and training graphs and, for sharded training, its
 * update graph, and the program's sources. Returns an exit status. */
static int build_aot_binary(const Options *opts, const SearchPath *search,
                            const Program *program, Job *jobs, int njobs)
{
    VEC(Schedule) schedules = {0};
    VEC(Kernel *) kernels = {0};
    for (int j = 0; j < njobs; j++) {
        int64_t batch, eval_batch;
        job_batches(&jobs[j], &batch, &eval_batch);
        for (int c = 0; c < jobs[j].ncells; c++) {
            const CompiledCell *cc = &jobs[j].cells[c].compiled;
            Schedule eval, train;
            schedule_graph(cc->eval, eval_batch, &eval);
            schedule_graph(cc->train, batch, &train);
            VEC_PUSH(&schedules, eval);
            VEC_PUSH(&schedules, train);
            if (cc->update) {
                Schedule update;
                schedule_graph(cc->update, 1, &update);
                VEC_PUSH(&schedules, update);
            }
        }
    }
    for (int i = 0; i < schedules.len; i++)
        for (int k = 0; k < schedules.data[i].nkernels; k++)
            VEC_PUSH(&kernels, schedules.data[i].kernels[k]);

    const char **files = xcalloc((size_t)program->nmodules + 1, sizeof *files);
    for (int i = 0; i < program->nmodules; i++) {
        files[i] = realpath(program->modules[i]->path, NULL);
        BOCB_ASSERT(files[i] != NULL); /* the loader has just read it */
    }
    char *main_file = realpath(opts->input, NULL);
    char *stdlib_dir = search->stdlib_dir ? realpath(search->stdlib_dir, NULL) : NULL;
    int nargs = 0;
    const char **args = aot_arguments(opts, search, &nargs);

    AotRequest req = {
        .output = opts->aot_output, .cpu = opts->target_cpu,
        .kernels = kernels.data, .nkernels = kernels.len,
        .files = files, .nfiles = program->nmodules,
        .main_file = main_file, .stdlib_dir = stdlib_dir,
        .args = args, .nargs = nargs,
    };
    char *error = NULL;
    int status = BOCB_EXIT_OK;
    if (!aot_build(&req, &error)) {
        fprintf(stderr, "bocbc: error: cannot write the executable '%s': %s\n",
                opts->aot_output, error);
        free(error);
        status = BOCB_EXIT_RUNTIME;
    }

    for (int i = 0; i < nargs; i++)
        free((char *)args[i]);
    free(args);
    free(stdlib_dir);
    free(main_file);
    for (int i = 0; i < program->nmodules; i++)
        free((char *)files[i]);
    free(files);
    for (int i = 0; i < schedules.len; i++)
        schedule_free(&schedules.data[i]);
    VEC_FREE(&schedules);
    VEC_FREE(&kernels);
    return status;
}

/* Turns the kernel cache on for `jit` unless --no-cache is given or no
 * cache directory is known. */
static void enable_kernel_cache(const Options *opts, Jit *jit)
{
    char *dir = opts->no_cache ? NULL : kcache_dir(opts->cache_dir);
    if (dir)
        jit_set_cache(jit, dir);
    free(dir);
}

/* Returns an earlier job of jobs[0 .. n) that loaded the same data source,
 * or NULL. */
static const Job *job_with_same_data(const Job *jobs, int n, const DataSpec *data)
{
    for (int i = 0; i < n; i++) {
        const DataSpec *other = jobs[i].spec.data;
        if (jobs[i].shape.rank > 0 && other && other->normalize == data->normalize &&
            strcmp(other->path, data->path) == 0 && other->format == data->format &&
            other->fortunes == data->fortunes)
            return &jobs[i];
    }
    return NULL;
}

/* Resolves experiment jobs[index], loads its data and compiles its cells.
 * With --check, data already loaded for an earlier job is not loaded
 * again, because only its shape is needed. Returns false after reported
 * errors. */
static bool prepare_job(const Options *opts, Lower *l, Job *jobs, int index)
{
    Job *job = &jobs[index];
    bool resolved = experiment_resolve(l, job->decl, opts->overrides, opts->noverrides,
                                       &job->spec);
    if (opts->report_dir)
        job->spec.report_dir = opts->report_dir;
    /* Even after errors, the valid models and optimizers are compiled, so
     * that one run reports their mistakes too. */
    if (!job->spec.data)
        return false;
    const Job *same = opts->check_only ? job_with_same_data(jobs, index, job->spec.data) : NULL;
    if (same) {
        job->shape = same->shape;
        job->train_count = same->train_count;
        job->test_count = same->test_count;
    } else {
        if (!load_data(&job->spec, &job->splits))
            return false;
        job->train_count = job->splits.train.count;
        job->test_count = job->splits.test.count;
        const Dataset *train = &job->splits.train;
        job->shape = (DataShape){.rank = train->rank, .classes = train->num_classes};
        for (int i = 0; i < train->rank; i++)
            job->shape.dims[i] = train->sample_dims[i];
        if (job->splits.test.num_classes > job->shape.classes)
            job->shape.classes = job->splits.test.num_classes;
    }

    int errors = diag_error_count();
    job->cells = compile_cells(l, opts, &job->spec, &job->shape, &job->ncells);
    job->ready = resolved && diag_error_count() == errors;
    if (opts->check_only) {
        /* Nothing runs the cells, so their graphs go at once, which keeps
         * the memory of checking a large program to one job's. */
        free_cells(job->cells, job->ncells);
        job->cells = NULL;
        data_splits_free(&job->splits);
    }
    return job->ready;
}

/* Runs the checks of a sharded run (shard_check_run) on every job, so
 * that --check with --ranks rejects what training would reject. Returns
 * the status of the last failed check, else 0. */
static int check_sharding(const Options *opts, const Job *jobs, int njobs)
{
    int status = 0;
    for (int i = 0; i < njobs && opts->ranks > 0; i++) {
        int64_t batch, eval_batch;
        job_batches(&jobs[i], &batch, &eval_batch);
        int checked = shard_check_run(&jobs[i].spec, batch, jobs[i].train_count, opts->ranks);
        if (checked != 0)
            status = checked;
    }
    return status;
}

/* Checks, before anything trains, that every report directory can be
 * created and that no two experiments write to the same one (compared
 * after resolving ".", ".." and symbolic links). */
static bool check_report_dirs(const Job *jobs, int njobs)
{
    bool ok = true;
    char **real = xcalloc((size_t)njobs + 1, sizeof *real);
    for (int i = 0; i < njobs; i++) {
        const char *dir = jobs[i].spec.report_dir;
        if (!dir)
            continue;
        char *error = NULL;
        if (!rt_make_dirs(dir, &error)) {
            fprintf(stderr, "bocbc: error: cannot write the reports of experiment '%s': %s\n",
                    jobs[i].spec.name, error);
            free(error);
            ok = false;
            continue;
        }
        real[i] = realpath(dir, NULL);
        for (int j = 0; real[i] && j < i; j++) {
            if (real[j] && strcmp(real[j], real[i]) == 0) {
                fprintf(stderr, "bocbc: error: experiments '%s' and '%s' would both write "
                        "their reports to '%s'; give them different report directories, "
                        "or run one at a time with -e NAME\n",
                        jobs[j].spec.name, jobs[i].spec.name, real[i]);
                ok = false;
            }
        }
    }
    for (int i = 0; i < njobs; i++)
        free(real[i]);
    free(real);
    return ok;
}

static bool check_memory_and_reports(const Options *opts, const Job *jobs, int njobs)
{
    bool ok = true;
    for (int i = 0; i < njobs; i++)
        ok &= check_planned_memory(opts, &jobs[i]);
    return check_report_dirs(jobs, njobs) && ok;
}

/* Prints the cells of each job, one a line, named as in the progress
 * lines: "experiment / model / optimizer / seed N". */
static void list_cells(const Job *jobs, int njobs)
{
    for (int i = 0; i < njobs; i++) {
        const ExperimentSpec *spec = &jobs[i].spec;
        for (int m = 0; m < spec->nmodels; m++)
            for (int o = 0; o < spec->noptimizers; o++)
                for (int s = 0; s < spec->nseeds; s++)
                    printf("%s / %s / %s / seed %llu\n", spec->name, spec->models[m]->label,
                           spec->optimizers[o]->label, (unsigned long long)spec->seeds[s]);
    }
}

/* Returns the experiments of the main module that opts selects, and
 * their number in *njobs. */
static Job *select_jobs(const Options *opts, const Program *program, int *njobs)
{
    const Module *main = program->main;
    Job *jobs = xcalloc((size_t)main->ndecls + 1, sizeof *jobs);
    int n = 0;
    for (int i = 0; i < main->ndecls; i++) {
        const Decl *d = main->decls[i];
        if (d->kind != DECL_EXPERIMENT)
            continue;
        if (opts->experiment && strcmp(opts->experiment, d->name) != 0)
            continue;
        jobs[n++].decl = d;
    }
    *njobs = n;
    return jobs;
}

/* Compiles every selected experiment, reporting all errors, before any
 * of them trains; then runs them in order. */
static int run_experiments(const Options *opts, Lower *l, const Program *program,
                           const SearchPath *search)
{
    int njobs;
    Job *jobs = select_jobs(opts, program, &njobs);
    int status = 0;
    if (njobs == 0 && opts->check_only && !opts->experiment) {
        /* A file of declarations only, such as a library module: its
         * names were resolved by lower_init, but without data no shape
         * can be checked. */
        free(jobs);
        return report_errors();
    }
    if (njobs == 0) {
        if (opts->experiment)
            fprintf(stderr, "bocbc: error: %s has no experiment called '%s'\n", opts->input,
                    opts->experiment);
        else
            fprintf(stderr, "bocbc: error: %s defines no experiment to run\n", opts->input);
        status = BOCB_EXIT_COMPILE;
    }

    StageEmitter stages = {.stage = opts->emit == EMIT_IR ? CELL_STAGE_FORWARD
                                                          : CELL_STAGE_BACKWARD};
    if (opts->emit == EMIT_IR || opts->emit == EMIT_IR_GRAD) {
        l->stage_hook = emit_stage;
        l->stage_hook_context = &stages;
    }

    bool ok = njobs > 0;
    for (int i = 0; i < njobs; i++) {
        if (opts->list_cells)
            ok &= experiment_resolve(l, jobs[i].decl, opts->overrides, opts->noverrides,
                                     &jobs[i].spec);
        else
            ok &= prepare_job(opts, l, jobs, i);
    }
    if (njobs == 0) {
        /* Reported above. */
    } else if (!ok || diag_error_count()) {
        status = report_errors();
    } else if (opts->list_cells) {
        list_cells(jobs, njobs);
    } else if (opts->check_only) {
        /* Every cell compiled. */
        status = check_sharding(opts, jobs, njobs);
    } else if (opts->emit == EMIT_IR || opts->emit == EMIT_IR_GRAD) {
        /* Every cell compiled, and the stage hook printed what --emit asked for. */
    } else if (opts->compile_aot) {
        status = build_aot_binary(opts, search, program, jobs, njobs);
    } else if (opts->emit == EMIT_NONE && !check_memory_and_reports(opts, jobs, njobs)) {
        status = BOCB_EXIT_RUNTIME;
    } else if (opts->emit != EMIT_NONE) {
        status = emit(opts, &jobs[0].cells[0], &jobs[0].spec);
    } else {
        char *error = NULL;
        Jit *jit = NULL;
        if (opts->backend == BACKEND_JIT && !(jit = jit_create(&error))) {
            /* messages.py: not reached: needs a host LLVM cannot target. */
            fprintf(stderr, "bocbc: error: cannot initialise LLVM: %s\n", error);
            free(error);
            status = BOCB_EXIT_RUNTIME;
        }
        if (jit)
            enable_kernel_cache(opts, jit);
        for (int i = 0; i < njobs && status == 0; i++)
            status = run_job(opts, &jobs[i], jit);
        jit_destroy(jit);
        if (opts->check_numerics && diag_error_count())
            report_errors();
    }

    for (int i = 0; i < njobs; i++) {
        if (jobs[i].cells)
            free_cells(jobs[i].cells, jobs[i].ncells);
        data_splits_free(&jobs[i].splits);
    }
    free(jobs);
    return status;
}

/* Decides whether diagnostics are coloured, as GCC does for
 * -fdiagnostics-color: `auto` colours only when stderr is a terminal
 * whose TERM is not "dumb", and NO_COLOR (when set and not empty) turns
 * `auto` off. */
static bool use_color(ColorMode mode)
{
    if (mode != COLOR_AUTO)
        return mode == COLOR_ALWAYS;
    const char *no_color = getenv("NO_COLOR");
    const char *term = getenv("TERM");
    if (no_color && no_color[0])
        return false;
    if (!term || strcmp(term, "dumb") == 0)
        return false;
    return isatty(fileno(stderr));
}

bool driver_color_enabled(ColorMode mode)
{
    return use_color(mode);
}

/* Returns the import search directories: each -I DIR, then each entry
 * of BOCB_PATH (colon-separated; empty entries are skipped). The strings
 * of BOCB_PATH are copied into `arena`. */
static const char **search_dirs(const Options *opts, Arena *arena, int *ndirs)
{
    VEC(const char *) dirs = {0};
    for (int i = 0; i < opts->ninclude_dirs; i++)
        VEC_PUSH(&dirs, opts->include_dirs[i]);
    const char *env = getenv("BOCB_PATH");
    for (const char *p = env; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        if (len > 0) {
            char *dir = arena_alloc(arena, len + 1);
            memcpy(dir, p, len);
            dir[len] = '\0';
            VEC_PUSH(&dirs, dir);
        }
        p += len + (colon != NULL);
    }
    const char **result = arena_calloc(arena, (size_t)dirs.len + 1, sizeof *result);
    for (int i = 0; i < dirs.len; i++)
        result[i] = dirs.data[i];
    *ndirs = dirs.len;
    VEC_FREE(&dirs);
    return result;
}

/* Prints the tokens of the input file (--emit=tokens). */
static int emit_tokens(const char *path, Arena *arena)
{
    char *error;
    int file = src_load(path, &error);
    if (file == 0) {
        diag_error(NO_LOC, "cannot read '%s': %s", path, error);
        free(error);
        return report_errors();
    }
    lex_print_tokens(stdout, file, arena);
    return report_errors();
}

int driver_summarize(const char *runs_csv)
{
    char *dir = xstrdup(runs_csv);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = '\0';
    else
        strcpy(dir, ".");
    bool ok = write_summary(runs_csv, dir);
    free(dir);
    return ok ? BOCB_EXIT_OK : BOCB_EXIT_RUNTIME;
}

int driver_main(const Options *opts)
{
    diag_set_color(use_color(opts->color));
    Arena arena;
    arena_init(&arena);
    SearchPath search = {.stdlib_dir = opts->stdlib_dir};
    search.dirs = search_dirs(opts, &arena, &search.ndirs);
    int status = 0;
    if (opts->emit == EMIT_TOKENS) {
        status = emit_tokens(opts->input, &arena);
        goto done;
    }

    Program *program = load_program(opts->input, &search, &arena);
    if (!program || diag_error_count()) {
        status = report_errors();
        if (!program)
            status = BOCB_EXIT_COMPILE;
        goto done;
    }
    if (opts->syntax_only)
        goto done;
    if (opts->emit == EMIT_AST) {
        ast_print(stdout, program->main);
        goto done;
    }
    /* Fused kernels and OpenBLAS get the same thread count and take
     * turns, so the cores are never oversubscribed. */
    rt_parallel_set_threads(opts->threads);

    /* Errors in declarations do not stop the experiments from being
     * checked; run_experiments trains nothing once any error exists. */
    Lower l;
    lower_init(&l, program, &arena);
    status = run_experiments(opts, &l, program, &search);
    lower_free(&l);

done:
    arena_free(&arena);
    return status;
}
