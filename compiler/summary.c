/* summary.c - reads runs.csv and writes the coupling report.
 *
 * Accuracies are handled in percent. A run counts as failed when the
 * status of its last epoch is not "ok". Failed runs are left out of every
 * mean and listed by name. An optimizer whose runs on a backbone all
 * failed has no accuracy there and cannot be in the top 4.
 */
#include "summary.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/base.h"
#include "../runtime/report.h"

/* Thresholds of the coupling rule; docs/design.md explains the choice. */
#define STRONG_STD 2.5         /* points of accuracy */
#define STRONG_RANGE 10.0      /* points */
#define STRONG_FAMILY_GAP 3.0  /* points between the fixed-LR and adaptive means */
#define STRONG_FAILED 2        /* optimizers with every run failed */
#define TOP_COUNT 4

static const struct {
    const char *optimizer;
    OptimizerFamily family;
} family_table[] = {
    {"sgd", FAMILY_FIXED},          {"sgdp", FAMILY_FIXED},
    {"lion", FAMILY_FIXED},         {"sign_sgd", FAMILY_FIXED},
    {"adam", FAMILY_ADAPTIVE},      {"adamax", FAMILY_ADAPTIVE},
    {"adamw", FAMILY_ADAPTIVE},     {"adamp", FAMILY_ADAPTIVE},
    {"lamb", FAMILY_ADAPTIVE},      {"nadam", FAMILY_ADAPTIVE},
    {"radam", FAMILY_ADAPTIVE},     {"adan", FAMILY_ADAPTIVE},
    {"adabelief", FAMILY_ESTIMATED}, {"adabound", FAMILY_ESTIMATED},
    {"adafactor", FAMILY_ESTIMATED}, {"lars", FAMILY_ESTIMATED},
    {"novograd", FAMILY_ESTIMATED}, {"sophia", FAMILY_ESTIMATED},
    {"adagrad", FAMILY_NO_MOMENTUM}, {"adadelta", FAMILY_NO_MOMENTUM},
    {"rmsprop", FAMILY_NO_MOMENTUM},
};

static const char *const family_names[FAMILY_COUNT] = {
    "fixed-lr", "adaptive", "estimated-lr", "no-momentum", "other",
};

OptimizerFamily optimizer_family(const char *name)
{
    for (size_t i = 0; i < BOCB_ARRAY_LEN(family_table); i++)
        if (strcmp(family_table[i].optimizer, name) == 0)
            return family_table[i].family;
    return FAMILY_OTHER;
}

const char *family_name(OptimizerFamily family)
{
    BOCB_ASSERT((unsigned)family < FAMILY_COUNT);
    return family_names[family];
}

static bool family_from_name(const char *name, OptimizerFamily *family)
{
    for (int i = 0; i < FAMILY_COUNT; i++) {
        if (strcmp(family_names[i], name) == 0) {
            *family = (OptimizerFamily)i;
            return true;
        }
    }
    return false;
}

/* ---- reading runs.csv ------------------------------------------------------ */

typedef VEC(char *) StringVec;

/* Splits one CSV record starting at *p into fields (RFC 4180 quoting) and
 * advances *p past its line end. Returns false for an unterminated quote. */
static bool parse_record(const char **p, StringVec *fields)
{
    const char *s = *p;
    for (;;) {
        StrBuf field = {0};
        sb_append(&field, "");
        if (*s == '"') {
            s++;
            for (;;) {
                if (*s == '\0') {
                    sb_free(&field);
                    return false;
                }
                if (*s == '"' && s[1] == '"') {
                    sb_append(&field, "\"");
                    s += 2;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    sb_appendn(&field, s++, 1);
                }
            }
        }
        while (*s && *s != ',' && *s != '\n' && *s != '\r')
            sb_appendn(&field, s++, 1);
        VEC_PUSH(fields, field.data);
        if (*s != ',')
            break;
        s++;
    }
    if (*s == '\r')
        s++;
    if (*s == '\n')
        s++;
    *p = s;
    return true;
}

static void free_fields(StringVec *fields)
{
    for (int i = 0; i < fields->len; i++)
        free(fields->data[i]);
    fields->len = 0;
}

/* The last epoch of one run. */
typedef struct Run {
    int model, optimizer;
    char *seed;
    long epoch;
    double accuracy; /* percent */
    bool failed;
    /* Of a failed run, from the optional columns failed_step and failure:
     * the step it stopped at (0 = not recorded) and why (NULL = not
     * recorded). */
    long failed_step;
    char *failure;
} Run;

/* One epoch row of a run that did not fail, for the curves. */
typedef struct EpochPoint {
    int model, optimizer;
    long epoch;
    double accuracy; /* percent */
} EpochPoint;

typedef struct Table {
    StringVec models, optimizers;
    VEC(EpochPoint) points;
    OptimizerFamily *families; /* per optimizer */
    /* Per optimizer, from the optional columns sweep and setting: the
     * label of the sweep it is a setting of and the swept values
     * ("lr=0.1, weight_decay=0"), or NULL. */
    char **sweeps, **settings;
    VEC(Run) runs;
} Table;

static int intern(StringVec *names, const char *name)
{
    for (int i = 0; i < names->len; i++)
        if (strcmp(names->data[i], name) == 0)
            return i;
    VEC_PUSH(names, xstrdup(name));
    return names->len - 1;
}

static void free_table(Table *t)
{
    for (int i = 0; i < t->models.len; i++)
        free(t->models.data[i]);
    for (int i = 0; i < t->optimizers.len; i++) {
        free(t->optimizers.data[i]);
        free(t->sweeps ? t->sweeps[i] : NULL);
        free(t->settings ? t->settings[i] : NULL);
    }
    free(t->sweeps);
    free(t->settings);
    for (int i = 0; i < t->runs.len; i++) {
        free(t->runs.data[i].seed);
        free(t->runs.data[i].failure);
    }
    VEC_FREE(&t->models);
    VEC_FREE(&t->optimizers);
    VEC_FREE(&t->runs);
    VEC_FREE(&t->points);
    free(t->families);
}

static char *read_text(const char *path, char **error)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *error = xasprintf("%s: cannot open the results table", path);
        return NULL;
    }
    StrBuf sb = {0};
    sb_append(&sb, "");
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        sb_appendn(&sb, buf, n);
    fclose(f);
    if (strlen(sb.data) != sb.len) {
        *error = xasprintf("%s: contains a NUL byte; not a results table", path);
        sb_free(&sb);
        return NULL;
    }
    return sb.data;
}

static bool parse_number(const char *text, double *value)
{
    char *end;
    *value = strtod(text, &end);
    return text[0] && *end == '\0';
}

enum { COL_MODEL, COL_OPTIMIZER, COL_FAMILY, COL_SEED, COL_EPOCH, COL_ACCURACY, COL_STATUS,
       COL_COUNT };
static const char *const required_columns[COL_COUNT] = {
    "model", "optimizer", "family", "seed", "epoch", "test_accuracy", "status",
};
/* Columns that a table may leave out: tables written before bocbc
 * recorded why a run failed have neither. */
enum { OPT_FAILED_STEP, OPT_FAILURE, OPT_SWEEP, OPT_SETTING, OPT_COUNT };
static const char *const optional_columns[OPT_COUNT] = {"failed_step", "failure", "sweep",
                                                        "setting"};

/* Reads the step and the reason of a failed run from the optional columns
 * (index -1: absent) of row `f`. */
static void read_failure(const char *const *f, int nfields, const int *opt, Run *run)
{
    if (opt[OPT_FAILED_STEP] >= 0 && opt[OPT_FAILED_STEP] < nfields) {
        double step;
        if (parse_number(f[opt[OPT_FAILED_STEP]], &step) && step >= 1)
            run->failed_step = (long)step;
    }
    if (opt[OPT_FAILURE] >= 0 && opt[OPT_FAILURE] < nfields && f[opt[OPT_FAILURE]][0])
        run->failure = xstrdup(f[opt[OPT_FAILURE]]);
}


/* Adds one data row; `line` is for messages. */
/* Records the sweep and setting of a new optimizer from the optional
 * columns of its first row; an empty sweep field means none. */
static void read_sweep(Table *t, int optimizer, const char *const *f, int nfields,
                       const int *opt)
{
    size_t n = (size_t)t->optimizers.len;
    t->sweeps = xrealloc(t->sweeps, sizeof *t->sweeps * n);
    t->settings = xrealloc(t->settings, sizeof *t->settings * n);
    t->sweeps[optimizer] = t->settings[optimizer] = NULL;
    if (opt[OPT_SWEEP] < 0 || opt[OPT_SWEEP] >= nfields || !f[opt[OPT_SWEEP]][0])
        return;
    t->sweeps[optimizer] = xstrdup(f[opt[OPT_SWEEP]]);
    bool has_setting = opt[OPT_SETTING] >= 0 && opt[OPT_SETTING] < nfields;
    t->settings[optimizer] = xstrdup(has_setting ? f[opt[OPT_SETTING]] : "");
}

static bool add_row(Table *t, const char *path, int line, const StringVec *fields,
                    const int *col, const int *opt, char **error)
{
    for (int c = 0; c < COL_COUNT; c++) {
        if (col[c] >= fields->len) {
            *error = xasprintf("%s:%d: the row has %d fields but column '%s' is field %d",
                               path, line, fields->len, required_columns[c], col[c] + 1);
            return false;
        }
    }
    const char *const *f = (const char *const *)fields->data;
    double epoch, accuracy;
    OptimizerFamily family;
    if (!parse_number(f[col[COL_EPOCH]], &epoch) || epoch < 1) {
        *error = xasprintf("%s:%d: epoch '%s' is not a positive number", path, line,
                           f[col[COL_EPOCH]]);
        return false;
    }
    bool ok_status = strcmp(f[col[COL_STATUS]], "ok") == 0;
    if (!parse_number(f[col[COL_ACCURACY]], &accuracy) ||
        (ok_status && !(accuracy >= 0 && accuracy <= 1))) {
        *error = xasprintf("%s:%d: test_accuracy '%s' is not a number from 0 to 1", path,
                           line, f[col[COL_ACCURACY]]);
        return false;
    }
    if (!family_from_name(f[col[COL_FAMILY]], &family)) {
        *error = xasprintf("%s:%d: family '%s' is not one of fixed-lr, adaptive, "
                           "estimated-lr, no-momentum, other",
                           path, line, f[col[COL_FAMILY]]);
        return false;
    }
    int model = intern(&t->models, f[col[COL_MODEL]]);
    int known = t->optimizers.len;
    int optimizer = intern(&t->optimizers, f[col[COL_OPTIMIZER]]);
    t->families = xrealloc(t->families, sizeof *t->families * (size_t)t->optimizers.len);
    t->families[optimizer] = family;
    if (optimizer == known)
        read_sweep(t, optimizer, f, fields->len, opt);

    if (ok_status) {
        EpochPoint point = {model, optimizer, (long)epoch, 100 * accuracy};
        VEC_PUSH(&t->points, point);
    }
    Run run = {.model = model, .optimizer = optimizer, .seed = xstrdup(f[col[COL_SEED]]),
               .epoch = (long)epoch, .accuracy = 100 * accuracy, .failed = !ok_status};
    if (run.failed)
        read_failure(f, fields->len, opt, &run);
    for (int i = 0; i < t->runs.len; i++) {
        Run *r = &t->runs.data[i];
        if (r->model == model && r->optimizer == optimizer && strcmp(r->seed, run.seed) == 0) {
            if (run.epoch >= r->epoch) {
                free(r->seed);
                free(r->failure);
                *r = run;
            } else {
                free(run.seed);
                free(run.failure);
            }
            return true;
        }
    }
    VEC_PUSH(&t->runs, run);
    return true;
}

static bool read_table(const char *path, Table *t, char **error)
{
    memset(t, 0, sizeof *t);
    char *text = read_text(path, error);
    if (!text)
        return false;
    const char *p = text;
    StringVec fields = {0};
    int col[COL_COUNT] = {0}, opt[OPT_COUNT];
    bool ok = parse_record(&p, &fields);
    int ncolumns = fields.len;
    for (int i = 0; ok && i < fields.len; i++) {
        for (int j = 0; j < i; j++) {
            if (strcmp(fields.data[i], fields.data[j]) == 0) {
                *error = xasprintf("%s:1: the header names column '%s' twice", path,
                                   fields.data[i]);
                ok = false;
                break;
            }
        }
    }
    for (int c = 0; ok && c < OPT_COUNT; c++) {
        opt[c] = -1;
        for (int i = 0; i < fields.len; i++)
            if (strcmp(fields.data[i], optional_columns[c]) == 0)
                opt[c] = i;
    }
    for (int c = 0; ok && c < COL_COUNT; c++) {
        col[c] = -1;
        for (int i = 0; i < fields.len; i++)
            if (strcmp(fields.data[i], required_columns[c]) == 0)
                col[c] = i;
        if (col[c] < 0) {
            *error = xasprintf("%s:1: the header has no column '%s'", path,
                               required_columns[c]);
            ok = false;
        }
    }
    for (int line = 2; ok && *p; line++) {
        free_fields(&fields);
        if (!parse_record(&p, &fields)) {
            *error = xasprintf("%s:%d: unterminated quoted field", path, line);
            ok = false;
        } else if (fields.len == 1 && fields.data[0][0] == '\0') {
            continue;
        } else if (fields.len != ncolumns) {
            *error = xasprintf("%s:%d: the row has %d fields, but the header has %d", path,
                               line, fields.len, ncolumns);
            ok = false;
        } else {
            ok = add_row(t, path, line, &fields, col, opt, error);
        }
    }
    if (ok && t->runs.len == 0) {
        *error = xasprintf("%s: the results table has no runs", path);
        ok = false;
    }
    free_fields(&fields);
    VEC_FREE(&fields);
    free(text);
    if (!ok)
        free_table(t);
    return ok;
}

/* ---- statistics --------------------------------------------------------------- */

/* One (backbone, optimizer) cell. */
typedef struct GridCell {
    int seeds, failed;
    double mean, std; /* over the runs that did not fail; NAN when none */
    bool top;
} GridCell;

typedef struct BackboneStats {
    int best, worst;                 /* optimizer indices; -1 when none */
    int counted;                     /* optimizers after dropping the worst */
    double mean, std, range;         /* over those */
    double family_mean[FAMILY_COUNT];
    int failed_optimizers;
    bool strong;
    char reason[160];
    OptimizerFamily best_family;
} BackboneStats;

static void cell_stats(const Table *t, int m, int o, GridCell *c)
{
    double sum = 0, sum_sq = 0;
    int n = 0;
    memset(c, 0, sizeof *c);
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (r->model != m || r->optimizer != o)
            continue;
        c->seeds++;
        if (r->failed) {
            c->failed++;
            continue;
        }
        sum += r->accuracy;
        n++;
    }
    c->mean = n ? sum / n : NAN;
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (r->model == m && r->optimizer == o && !r->failed)
            sum_sq += (r->accuracy - c->mean) * (r->accuracy - c->mean);
    }
    /* Sample standard deviation over seeds; 0 for a single seed. */
    if (n > 1)
        c->std = sqrt(sum_sq / (n - 1));
    else
        c->std = n == 1 ? 0 : NAN;
}

static void backbone_stats(const Table *t, GridCell *cells, int m, BackboneStats *b)
{
    int nopt = t->optimizers.len;
    GridCell *row = &cells[m * nopt];
    memset(b, 0, sizeof *b);
    b->best = b->worst = -1;
    for (int o = 0; o < nopt; o++) {
        if (row[o].seeds == 0)
            continue;
        if (isnan(row[o].mean)) {
            b->failed_optimizers++;
            continue;
        }
        if (b->best < 0 || row[o].mean > row[b->best].mean)
            b->best = o;
        if (b->worst < 0 || row[o].mean < row[b->worst].mean)
            b->worst = o;
    }

    /* Top 4: repeatedly the best optimizer not yet marked. */
    for (int k = 0; k < TOP_COUNT; k++) {
        int pick = -1;
        for (int o = 0; o < nopt; o++)
            if (!isnan(row[o].mean) && row[o].seeds && !row[o].top &&
                (pick < 0 || row[o].mean > row[pick].mean))
                pick = o;
        if (pick >= 0)
            row[pick].top = true;
    }

    /* Dispersion after dropping the worst optimizer (population std). */
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    int n = 0, valid = 0;
    for (int o = 0; o < nopt; o++)
        valid += row[o].seeds && !isnan(row[o].mean);
    for (int o = 0; o < nopt; o++) {
        if (!row[o].seeds || isnan(row[o].mean) || (valid > 1 && o == b->worst))
            continue;
        sum += row[o].mean;
        lo = fmin(lo, row[o].mean);
        hi = fmax(hi, row[o].mean);
        n++;
    }
    b->counted = n;
    b->mean = n ? sum / n : NAN;
    double sq = 0;
    for (int o = 0; o < nopt; o++)
        if (row[o].seeds && !isnan(row[o].mean) && !(valid > 1 && o == b->worst))
            sq += (row[o].mean - b->mean) * (row[o].mean - b->mean);
    b->std = n ? sqrt(sq / n) : NAN;
    b->range = n ? hi - lo : NAN;

    /* Family means, over the optimizers that have an accuracy. */
    for (int f = 0; f < FAMILY_COUNT; f++) {
        double fs = 0;
        int fn = 0;
        for (int o = 0; o < nopt; o++) {
            if (t->families[o] == (OptimizerFamily)f && row[o].seeds && !isnan(row[o].mean)) {
                fs += row[o].mean;
                fn++;
            }
        }
        b->family_mean[f] = fn ? fs / fn : NAN;
    }
    b->best_family = FAMILY_OTHER;
    for (int f = 0; f < FAMILY_OTHER; f++)
        if (!isnan(b->family_mean[f]) &&
            (b->best_family == FAMILY_OTHER || isnan(b->family_mean[b->best_family]) ||
             b->family_mean[f] > b->family_mean[b->best_family]))
            b->best_family = (OptimizerFamily)f;

    /* The coupling rule. */
    double gap = b->family_mean[FAMILY_ADAPTIVE] - b->family_mean[FAMILY_FIXED];
    if (b->failed_optimizers >= STRONG_FAILED)
        snprintf(b->reason, sizeof b->reason, "%d optimizers failed", b->failed_optimizers);
    else if (b->std > STRONG_STD)
        snprintf(b->reason, sizeof b->reason, "std %.2f > %.1f", b->std, STRONG_STD);
    else if (b->range > STRONG_RANGE)
        snprintf(b->reason, sizeof b->reason, "range %.2f > %.1f", b->range, STRONG_RANGE);
    else if (fabs(gap) > STRONG_FAMILY_GAP)
        snprintf(b->reason, sizeof b->reason, "adaptive - fixed-lr = %+.2f, beyond %.1f", gap,
                 STRONG_FAMILY_GAP);
    b->strong = b->reason[0] != '\0';
    if (!b->strong)
        snprintf(b->reason, sizeof b->reason, "std %.2f, range %.2f, adaptive - fixed-lr %s",
                 b->std, b->range, isnan(gap) ? "n/a" : "within 3.0");
}

/* ---- writing ------------------------------------------------------------------ */

static void md_number(StrBuf *sb, double v)
{
    if (isnan(v))
        sb_append(sb, " - |");
    else
        sb_printf(sb, " %.2f |", v);
}

static void json_number(StrBuf *sb, double v)
{
    if (isnan(v) || isinf(v))
        sb_append(sb, "null");
    else
        sb_printf(sb, "%.4f", v);
}

/* Escapes '|' so a label cannot break a Markdown table. */
static void md_text(StrBuf *sb, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            sb_append(sb, "\\|");
        else
            sb_appendn(sb, s, 1);
    }
}

/* Appends " at step S" or " at steps S1, S2" for the failed runs of
 * backbone m and optimizer o that recorded their step. */
static void md_failed_steps(StrBuf *md, const Table *t, int m, int o)
{
    int n = 0;
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (r->model == m && r->optimizer == o && r->failed && r->failed_step)
            n++;
    }
    if (n == 0)
        return;
    sb_append(md, n == 1 ? " at step " : " at steps ");
    int written = 0;
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (r->model == m && r->optimizer == o && r->failed && r->failed_step)
            sb_printf(md, "%s%ld", written++ ? ", " : "", r->failed_step);
    }
}

/* Appends the "failures" list of a JSON cell: seed, epoch, step (null when
 * not recorded) and reason (null likewise) of each failed run. */
static void json_failures(StrBuf *js, const Table *t, int m, int o)
{
    sb_append(js, ", \"failures\": [");
    int written = 0;
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (r->model != m || r->optimizer != o || !r->failed)
            continue;
        sb_append(js, written++ ? ", {\"seed\": " : "{\"seed\": ");
        rt_append_json_string(js, r->seed);
        sb_printf(js, ", \"epoch\": %ld, \"step\": ", r->epoch);
        if (r->failed_step)
            sb_printf(js, "%ld", r->failed_step);
        else
            sb_append(js, "null");
        sb_append(js, ", \"reason\": ");
        if (r->failure)
            rt_append_json_string(js, r->failure);
        else
            sb_append(js, "null");
        sb_append(js, "}");
    }
    sb_append(js, "]");
}

/* Appends the text of matrix cell (m, o), "88.10 ± 0.20 failed 1/2 at
 * step 37", between the bars of a Markdown table. */
static void md_cell(StrBuf *md, const Table *t, const GridCell *c, int m, int o)
{
    if (!c->seeds) {
        sb_append(md, " |");
        return;
    }
    sb_append(md, " ");
    if (!isnan(c->mean))
        sb_printf(md, c->top ? "**%.2f ± %.2f**" : "%.2f ± %.2f", c->mean, c->std);
    if (c->failed) {
        sb_printf(md, "%sfailed %d/%d", isnan(c->mean) ? "" : " ", c->failed, c->seeds);
        md_failed_steps(md, t, m, o);
    }
    sb_append(md, " |");
}

/* Ends a Markdown table header whose first `leading` columns are written:
 * one column per backbone, then the separator row. */
static void md_backbone_columns(StrBuf *md, const Table *t, int leading)
{
    for (int m = 0; m < t->models.len; m++) {
        sb_append(md, " ");
        md_text(md, t->models.data[m]);
        sb_append(md, " |");
    }
    sb_append(md, "\n|");
    for (int c = 0; c < leading + t->models.len; c++)
        sb_append(md, "---|");
    sb_append(md, "\n");
}

/* Writes summary.md; `note`, when not NULL, ends the opening paragraph. */
static void write_markdown(StrBuf *md, const Table *t, const GridCell *cells,
                           const BackboneStats *bs, const char *note)
{
    int nm = t->models.len, no = t->optimizers.len;
    sb_printf(md, "# Grid summary\n\nTest accuracy (%%) of the last epoch, mean ± std over "
                  "seeds. **Bold**: top 4 of the backbone. `failed k/n`: k of n seeds "
                  "failed, `at step S` where they stopped; the reasons are under Failed "
                  "runs.%s%s\n\n| optimizer | family |", note ? " " : "", note ? note : "");
    md_backbone_columns(md, t, 2);
    for (int o = 0; o < no; o++) {
        sb_append(md, "| ");
        md_text(md, t->optimizers.data[o]);
        sb_printf(md, " | %s |", family_name(t->families[o]));
        for (int m = 0; m < nm; m++)
            md_cell(md, t, &cells[m * no + o], m, o);
        sb_append(md, "\n");
    }

    sb_append(md, "\n## Per backbone, without its worst optimizer\n\n"
                  "| backbone | optimizers | mean | std | range |");
    for (int f = 0; f < FAMILY_OTHER; f++)
        sb_printf(md, " %s mean |", family_name((OptimizerFamily)f));
    sb_append(md, " coupling | best family | reason |\n|---|---|---|---|---|");
    for (int f = 0; f < FAMILY_OTHER; f++)
        sb_append(md, "---|");
    sb_append(md, "---|---|---|\n");
    for (int m = 0; m < nm; m++) {
        const BackboneStats *b = &bs[m];
        sb_append(md, "| ");
        md_text(md, t->models.data[m]);
        sb_printf(md, " | %d |", b->counted);
        md_number(md, b->mean);
        md_number(md, b->std);
        md_number(md, b->range);
        for (int f = 0; f < FAMILY_OTHER; f++)
            md_number(md, b->family_mean[f]);
        sb_printf(md, " %s | %s | %s |\n", b->strong ? "strong" : "weak",
                  b->best_family == FAMILY_OTHER ? "-" : family_name(b->best_family),
                  b->reason);
    }

    sb_append(md, "\n## Failed runs\n\n");
    int failed = 0;
    for (int i = 0; i < t->runs.len; i++) {
        const Run *r = &t->runs.data[i];
        if (!r->failed)
            continue;
        sb_append(md, "- ");
        md_text(md, t->models.data[r->model]);
        sb_append(md, " / ");
        md_text(md, t->optimizers.data[r->optimizer]);
        sb_printf(md, " / seed %s (epoch %ld)", r->seed, r->epoch);
        if (r->failed_step)
            sb_printf(md, ": stopped at step %ld", r->failed_step);
        if (r->failure) {
            sb_append(md, r->failed_step ? ", " : ": ");
            md_text(md, r->failure);
        }
        sb_append(md, "\n");
        failed++;
    }
    if (!failed)
        sb_append(md, "None.\n");
}

static void write_json(StrBuf *js, const Table *t, const GridCell *cells,
                       const BackboneStats *bs)
{
    int nm = t->models.len, no = t->optimizers.len;
    sb_append(js, "{\n  \"backbones\": [");
    for (int m = 0; m < nm; m++) {
        const BackboneStats *b = &bs[m];
        sb_append(js, m ? ",\n    {" : "\n    {");
        sb_append(js, "\"name\": ");
        rt_append_json_string(js, t->models.data[m]);
        sb_printf(js, ", \"optimizers_counted\": %d, \"mean\": ", b->counted);
        json_number(js, b->mean);
        sb_append(js, ", \"std\": ");
        json_number(js, b->std);
        sb_append(js, ", \"range\": ");
        json_number(js, b->range);
        sb_append(js, ", \"family_means\": {");
        for (int f = 0; f < FAMILY_OTHER; f++) {
            sb_printf(js, "%s\"%s\": ", f ? ", " : "", family_name((OptimizerFamily)f));
            json_number(js, b->family_mean[f]);
        }
        sb_printf(js, "}, \"coupling\": \"%s\", \"best_family\": ",
                  b->strong ? "strong" : "weak");
        if (b->best_family == FAMILY_OTHER)
            sb_append(js, "null");
        else
            rt_append_json_string(js, family_name(b->best_family));
        sb_append(js, ", \"reason\": ");
        rt_append_json_string(js, b->reason);
        sb_append(js, ",\n     \"cells\": [");
        int written = 0;
        for (int o = 0; o < no; o++) {
            const GridCell *c = &cells[m * no + o];
            if (!c->seeds)
                continue;
            sb_append(js, written++ ? ",\n       {" : "\n       {");
            sb_append(js, "\"optimizer\": ");
            rt_append_json_string(js, t->optimizers.data[o]);
            sb_printf(js, ", \"family\": \"%s\", \"mean\": ", family_name(t->families[o]));
            json_number(js, c->mean);
            sb_append(js, ", \"std\": ");
            json_number(js, c->std);
            sb_printf(js, ", \"seeds\": %d, \"failed\": %d, \"top4\": %s", c->seeds,
                      c->failed, c->top ? "true" : "false");
            json_failures(js, t, m, o);
            sb_append(js, "}");
        }
        sb_append(js, "]}");
    }
    sb_append(js, "\n  ]");
}

/* Appends to `dat` one block per optimizer of backbone `m`: "epoch
 * accuracy" lines, the accuracy averaged over seeds, blocks separated by
 * two blank lines so gnuplot can select them by index. Returns the number
 * of blocks and sets has[o] for the optimizers that have one. */
static int write_curve_blocks(StrBuf *dat, const Table *t, int m, bool *has)
{
    int blocks = 0;
    for (int o = 0; o < t->optimizers.len; o++) {
        has[o] = false;
        long last = 0;
        for (;;) {
            /* The next epoch above `last` with points, in ascending order. */
            long epoch = 0;
            for (int i = 0; i < t->points.len; i++) {
                const EpochPoint *p = &t->points.data[i];
                if (p->model == m && p->optimizer == o && p->epoch > last &&
                    (epoch == 0 || p->epoch < epoch))
                    epoch = p->epoch;
            }
            if (epoch == 0)
                break;
            double sum = 0;
            int n = 0;
            for (int i = 0; i < t->points.len; i++) {
                const EpochPoint *p = &t->points.data[i];
                if (p->model == m && p->optimizer == o && p->epoch == epoch) {
                    sum += p->accuracy;
                    n++;
                }
            }
            sb_printf(dat, "%ld %.4f\n", epoch, sum / n);
            has[o] = true;
            last = epoch;
        }
        if (has[o]) {
            sb_append(dat, "\n\n");
            blocks++;
        }
    }
    return blocks;
}

/* Writes heatmap.dat (optimizers are rows, backbones columns, NaN where a
 * cell has no accuracy), curves.dat and the gnuplot script that draws the
 * heatmap and, per backbone, the test accuracy of every optimizer by
 * epoch. */
static void write_plot_files(StrBuf *heat, StrBuf *curves, StrBuf *gp, const Table *t,
                             const GridCell *cells)
{
    int nm = t->models.len, no = t->optimizers.len;
    for (int o = 0; o < no; o++) {
        for (int m = 0; m < nm; m++) {
            double v = cells[m * no + o].mean;
            if (isnan(v))
                sb_printf(heat, "%sNaN", m ? " " : "");
            else
                sb_printf(heat, "%s%.4f", m ? " " : "", v);
        }
        sb_append(heat, "\n");
    }

    sb_append(gp, "# Written by bocbc with summary.md; run with gnuplot in this directory.\n"
                  "set terminal pngcairo size 1000,700 noenhanced\n"
                  "set output 'heatmap.png'\n"
                  "set title 'test accuracy (%), mean over seeds'\n"
                  "set palette rgbformulae 33,13,10\n"
                  "set xtics rotate by 30 right (");
    for (int m = 0; m < nm; m++) {
        sb_append(gp, m ? ", " : "");
        rt_append_gnuplot_label(gp, t->models.data, t->models.len, m);
        sb_printf(gp, " %d", m);
    }
    sb_append(gp, ")\nset ytics (");
    for (int o = 0; o < no; o++) {
        sb_append(gp, o ? ", " : "");
        rt_append_gnuplot_label(gp, t->optimizers.data, t->optimizers.len, o);
        sb_printf(gp, " %d", o);
    }
    /* gnuplot draws an image only from at least 2 x 2 values; a smaller
     * grid gets coloured squares instead. */
    sb_printf(gp, ")\nset xrange [-0.5:%d.5]\nset yrange [-0.5:%d.5]\n"
                  "plot 'heatmap.dat' matrix %s notitle, \\\n"
                  "     'heatmap.dat' matrix using 1:2:($3 == $3 ? sprintf('%%.1f', $3) : '') "
                  "with labels notitle\n",
              nm - 1, no - 1,
              nm >= 2 && no >= 2 ? "with image" : "using 1:2:3 with points pt 5 ps 8 palette");

    sb_append(gp, "set xtics autofreq\nset ytics autofreq\nset autoscale\n"
                  "set key outside right\nset xlabel 'epoch'\n"
                  "set ylabel 'test accuracy (%)'\nset grid\n");
    bool *has = xcalloc((size_t)no + 1, sizeof(bool));
    int index = 0;
    for (int m = 0; m < nm; m++) {
        int blocks = write_curve_blocks(curves, t, m, has);
        if (blocks == 0)
            continue;
        sb_printf(gp, "set output 'curves_%d.png'\nset title ", m);
        rt_append_gnuplot_string(gp, t->models.data[m]);
        sb_append(gp, "\nplot ");
        int written = 0;
        for (int o = 0; o < no; o++) {
            if (!has[o])
                continue;
            sb_printf(gp, "%s'curves.dat' index %d using 1:2 with linespoints title ",
                      written++ ? ", \\\n     " : "", index++);
            rt_append_gnuplot_label(gp, t->optimizers.data, t->optimizers.len, o);
        }
        sb_append(gp, "\n");
    }
    free(has);
}

/* Runs gnuplot on DIR/plots.gp. A machine without gnuplot, or a failed
 * plot, still leaves the summary files and the script, with a warning. */
static void render_plots(const char *dir)
{
    int status = rt_run_gnuplot(dir, "plots.gp");
    if (status == 127) {
        /* messages.py: not reached: needs a machine without gnuplot. */
        fprintf(stderr, "bocbc: warning: gnuplot not found; %s/plots.gp was written but "
                "not rendered\n", dir);
        return;
    }
    if (status != 0) {
        /* messages.py: not reached: needs a gnuplot that rejects the script bocbc writes. */
        fprintf(stderr, "bocbc: warning: %s/plots.gp: gnuplot failed with status %d (see "
                "plots.gp.log there); the summary files are complete\n", dir, status);
    }
}

/* ---- hyperparameter sweeps ------------------------------------------------------ */

/* Returns true when some optimizer of the table is a setting of a sweep. */
static bool has_sweeps(const Table *t)
{
    for (int o = 0; t->sweeps && o < t->optimizers.len; o++)
        if (t->sweeps[o])
            return true;
    return false;
}

/* Returns the row of the matrix that optimizer o belongs to: its sweep's
 * label, or its own. */
static const char *row_label(const Table *t, int o)
{
    return t->sweeps && t->sweeps[o] ? t->sweeps[o] : t->optimizers.data[o];
}

/* Builds in `matrix` the table of the accuracy matrix. Every sweep is one
 * row. Its runs on each backbone are those of the sweep's setting with the
 * best mean accuracy there, the first of equal ones. A setting whose runs
 * all failed is chosen only when every setting failed. best[m * rows + row]
 * gets the optimizer of `t` chosen, or -1. Other optimizers are copied as
 * they are. */
static void reduce_sweeps(const Table *t, const GridCell *cells, Table *matrix, int **best)
{
    memset(matrix, 0, sizeof *matrix);
    int nm = t->models.len, no = t->optimizers.len;
    for (int m = 0; m < nm; m++)
        intern(&matrix->models, t->models.data[m]);
    int *row_of = xcalloc((size_t)no + 1, sizeof *row_of);
    for (int o = 0; o < no; o++) {
        row_of[o] = intern(&matrix->optimizers, row_label(t, o));
        matrix->families = xrealloc(matrix->families,
                                    sizeof *matrix->families * (size_t)matrix->optimizers.len);
        matrix->families[row_of[o]] = t->families[o];
    }
    int rows = matrix->optimizers.len;
    *best = xcalloc((size_t)nm * (size_t)rows + 1, sizeof **best);
    for (int m = 0; m < nm; m++) {
        for (int r = 0; r < rows; r++) {
            int pick = -1;
            for (int o = 0; o < no; o++) {
                const GridCell *c = &cells[m * no + o];
                if (row_of[o] != r || !c->seeds)
                    continue;
                const GridCell *p = pick >= 0 ? &cells[m * no + pick] : NULL;
                if (!p || (isnan(p->mean) && !isnan(c->mean)) ||
                    (!isnan(c->mean) && c->mean > p->mean))
                    pick = o;
            }
            (*best)[m * rows + r] = pick;
        }
    }
    for (int i = 0; i < t->runs.len; i++) {
        Run run = t->runs.data[i];
        if ((*best)[run.model * rows + row_of[run.optimizer]] != run.optimizer)
            continue;
        run.optimizer = row_of[run.optimizer];
        run.seed = xstrdup(run.seed);
        run.failure = run.failure ? xstrdup(run.failure) : NULL;
        VEC_PUSH(&matrix->runs, run);
    }
    for (int i = 0; i < t->points.len; i++) {
        EpochPoint point = t->points.data[i];
        if ((*best)[point.model * rows + row_of[point.optimizer]] != point.optimizer)
            continue;
        point.optimizer = row_of[point.optimizer];
        VEC_PUSH(&matrix->points, point);
    }
    free(row_of);
}

/* Appends the sweep sections of summary.md: the setting chosen for each
 * backbone, and the accuracy of every setting. */
static void md_sweeps(StrBuf *md, const Table *t, const GridCell *cells, const Table *matrix,
                      const int *best)
{
    int nm = t->models.len, no = t->optimizers.len, rows = matrix->optimizers.len;
    sb_append(md, "\n## Hyperparameter sweeps\n\nThe setting of each swept optimizer that "
                  "the matrix shows, per backbone: the one with the best mean test "
                  "accuracy. It is chosen on the test split, so its accuracy is an "
                  "optimistic estimate.\n\n| optimizer |");
    md_backbone_columns(md, t, 1);
    for (int r = 0; r < rows; r++) {
        int first = -1;
        for (int o = 0; o < no && first < 0; o++)
            if (t->sweeps[o] && strcmp(t->sweeps[o], matrix->optimizers.data[r]) == 0)
                first = o;
        if (first < 0)
            continue;
        sb_append(md, "| ");
        md_text(md, matrix->optimizers.data[r]);
        sb_append(md, " |");
        for (int m = 0; m < nm; m++) {
            int o = best[m * rows + r];
            sb_append(md, " ");
            md_text(md, o >= 0 ? t->settings[o] : "-");
            sb_append(md, " |");
        }
        sb_append(md, "\n");
    }

    sb_append(md, "\n### All settings\n\n| optimizer | setting |");
    md_backbone_columns(md, t, 2);
    for (int o = 0; o < no; o++) {
        if (!t->sweeps[o])
            continue;
        sb_append(md, "| ");
        md_text(md, t->sweeps[o]);
        sb_append(md, " | ");
        md_text(md, t->settings[o]);
        sb_append(md, " |");
        for (int m = 0; m < nm; m++)
            md_cell(md, t, &cells[m * no + o], m, o);
        sb_append(md, "\n");
    }
}

/* Appends the "sweeps" member of summary.json: per sweep, the setting
 * chosen for each backbone and the cells of every setting. */
static void json_sweeps(StrBuf *js, const Table *t, const GridCell *cells,
                        const Table *matrix, const int *best)
{
    int nm = t->models.len, no = t->optimizers.len, rows = matrix->optimizers.len;
    sb_append(js, ",\n  \"sweeps\": [");
    int written = 0;
    for (int r = 0; r < rows; r++) {
        const char *sweep = matrix->optimizers.data[r];
        bool swept = false;
        for (int o = 0; o < no; o++)
            swept |= t->sweeps[o] && strcmp(t->sweeps[o], sweep) == 0;
        if (!swept)
            continue;
        sb_append(js, written++ ? ",\n    {\"optimizer\": " : "\n    {\"optimizer\": ");
        rt_append_json_string(js, sweep);
        sb_printf(js, ", \"family\": \"%s\", \"best\": {", family_name(matrix->families[r]));
        for (int m = 0; m < nm; m++) {
            int o = best[m * rows + r];
            sb_append(js, m ? ", " : "");
            rt_append_json_string(js, t->models.data[m]);
            sb_append(js, ": ");
            if (o >= 0)
                rt_append_json_string(js, t->settings[o]);
            else
                sb_append(js, "null");
        }
        sb_append(js, "},\n     \"settings\": [");
        int settings = 0;
        for (int o = 0; o < no; o++) {
            if (!t->sweeps[o] || strcmp(t->sweeps[o], sweep) != 0)
                continue;
            sb_append(js, settings++ ? ",\n       {\"setting\": " : "\n       {\"setting\": ");
            rt_append_json_string(js, t->settings[o]);
            sb_append(js, ", \"label\": ");
            rt_append_json_string(js, t->optimizers.data[o]);
            sb_append(js, ", \"cells\": [");
            int ncells = 0;
            for (int m = 0; m < nm; m++) {
                const GridCell *c = &cells[m * no + o];
                if (!c->seeds)
                    continue;
                sb_append(js, ncells++ ? ", {\"backbone\": " : "{\"backbone\": ");
                rt_append_json_string(js, t->models.data[m]);
                sb_append(js, ", \"mean\": ");
                json_number(js, c->mean);
                sb_append(js, ", \"std\": ");
                json_number(js, c->std);
                sb_printf(js, ", \"seeds\": %d, \"failed\": %d}", c->seeds, c->failed);
            }
            sb_append(js, "]}");
        }
        sb_append(js, "]}");
    }
    sb_append(js, "\n  ]");
}

/* Returns the value of `key` in a setting "lr=0.1, weight_decay=0", or
 * NAN when the setting does not give it as a number. */
static double setting_value(const char *setting, const char *key)
{
    size_t len = strlen(key);
    for (const char *p = setting; p && *p;) {
        if (strncmp(p, key, len) == 0 && p[len] == '=') {
            char *end;
            double v = strtod(p + len + 1, &end);
            return end != p + len + 1 && (*end == ',' || *end == '\0') ? v : NAN;
        }
        p = strstr(p, ", ");
        p = p ? p + 2 : NULL;
    }
    return NAN;
}

/* Returns setting `setting` without `key` and its value: the values that
 * tell the lines of a sensitivity plot apart. malloc'd. */
static char *setting_without(const char *setting, const char *key)
{
    StrBuf sb = {0};
    sb_append(&sb, "");
    size_t len = strlen(key);
    for (const char *p = setting; p && *p;) {
        const char *next = strstr(p, ", ");
        size_t n = next ? (size_t)(next - p) : strlen(p);
        if (!(strncmp(p, key, len) == 0 && p[len] == '=')) {
            sb_append(&sb, sb.len ? ", " : "");
            sb_appendn(&sb, p, n);
        }
        p = next ? next + 2 : NULL;
    }
    return sb.data;
}

/* Appends to `dat` and `gp` the sensitivity plots of hyperparameter `key`
 * (lr or weight_decay), one per backbone: the mean test accuracy of each
 * setting against its value of `key`, one line per sweep and values of
 * its other swept hyperparameters. Nothing when no sweep varies `key`.
 * *index counts the blocks of `dat`. */
static void sensitivity_plots(StrBuf *dat, StrBuf *gp, const Table *t, const GridCell *cells,
                              const char *key, int *index)
{
    int nm = t->models.len, no = t->optimizers.len;
    /* A line: the settings of one sweep that agree on everything but key. */
    int *line_of = xcalloc((size_t)no + 1, sizeof *line_of);
    StringVec lines = {0};
    bool positive = true;
    for (int o = 0; o < no; o++) {
        double v = t->sweeps[o] ? setting_value(t->settings[o], key) : NAN;
        line_of[o] = -1;
        if (isnan(v))
            continue;
        positive &= v > 0;
        char *rest = setting_without(t->settings[o], key);
        char *title = rest[0] ? xasprintf("%s %s", t->sweeps[o], rest) : xstrdup(t->sweeps[o]);
        line_of[o] = intern(&lines, title);
        free(title);
        free(rest);
    }
    /* A line of a single value shows no sensitivity. */
    bool varies = false;
    for (int a = 0; a < no && !varies; a++)
        for (int b = 0; b < no && !varies; b++)
            varies = line_of[a] >= 0 && line_of[a] == line_of[b] &&
                     setting_value(t->settings[a], key) != setting_value(t->settings[b], key);
    for (int m = 0; varies && m < nm; m++) {
        sb_printf(gp, "set output 'sensitivity_%s_%d.png'\nset title ", key, m);
        rt_append_gnuplot_string(gp, t->models.data[m]);
        sb_printf(gp, "\nset xlabel '%s'\nset ylabel 'test accuracy (%%)'\nset key below\n"
                      "set xtics norotate\n%s\nplot ", key,
                  positive ? "set logscale x" : "unset logscale x");
        int plotted = 0;
        for (int line = 0; line < lines.len; line++) {
            /* The points of the line in ascending order of the value. */
            double last = -INFINITY;
            int points = 0;
            for (;;) {
                int next = -1;
                for (int o = 0; o < no; o++) {
                    double v = line_of[o] == line ? setting_value(t->settings[o], key) : NAN;
                    if (!isnan(v) && v > last && !isnan(cells[m * no + o].mean) &&
                        (next < 0 || v < setting_value(t->settings[next], key)))
                        next = o;
                }
                if (next < 0)
                    break;
                last = setting_value(t->settings[next], key);
                sb_printf(dat, "%.10g %.4f\n", last, cells[m * no + next].mean);
                points++;
            }
            if (points == 0)
                continue;
            sb_append(dat, "\n\n");
            sb_printf(gp, "%s'sensitivity.dat' index %d using 1:2 with linespoints title ",
                      plotted++ ? ", \\\n     " : "", (*index)++);
            rt_append_gnuplot_string(gp, lines.data[line]);
        }
        /* gnuplot rejects an empty plot command, so a backbone whose
         * settings all failed gets an empty plot. */
        if (plotted == 0)
            sb_append(gp, "NaN notitle\n");
        else
            sb_append(gp, "\n");
    }
    sb_append(gp, varies ? "unset logscale x\n" : "");
    for (int i = 0; i < lines.len; i++)
        free(lines.data[i]);
    VEC_FREE(&lines);
    free(line_of);
}

bool summary_write(const char *runs_csv, const char *dir, char **error)
{
    Table t;
    if (!read_table(runs_csv, &t, error))
        return false;
    int nm = t.models.len, no = t.optimizers.len;
    GridCell *cells = xcalloc((size_t)nm * (size_t)no + 1, sizeof *cells);
    for (int m = 0; m < nm; m++)
        for (int o = 0; o < no; o++)
            cell_stats(&t, m, o, &cells[m * no + o]);

    /* With sweeps, the matrix and everything computed from it see each
     * sweep as one optimizer, at its best setting per backbone. */
    bool sweeps = has_sweeps(&t);
    Table reduced;
    int *best = NULL;
    if (sweeps)
        reduce_sweeps(&t, cells, &reduced, &best);
    const Table *matrix = sweeps ? &reduced : &t;
    int rows = matrix->optimizers.len;
    GridCell *matrix_cells = xcalloc((size_t)nm * (size_t)rows + 1, sizeof *matrix_cells);
    BackboneStats *bs = xcalloc((size_t)nm + 1, sizeof *bs);
    for (int m = 0; m < nm; m++)
        for (int r = 0; r < rows; r++)
            cell_stats(matrix, m, r, &matrix_cells[m * rows + r]);
    for (int m = 0; m < nm; m++)
        backbone_stats(matrix, matrix_cells, m, &bs[m]);

    StrBuf md = {0}, js = {0}, heat = {0}, curves = {0}, gp = {0}, sens = {0};
    write_markdown(&md, matrix, matrix_cells, bs,
                   sweeps ? "A swept optimizer is one row, at its best setting on each "
                            "backbone; every setting is listed under Hyperparameter sweeps."
                          : NULL);
    write_json(&js, matrix, matrix_cells, bs);
    write_plot_files(&heat, &curves, &gp, matrix, matrix_cells);
    if (sweeps) {
        md_sweeps(&md, &t, cells, matrix, best);
        json_sweeps(&js, &t, cells, matrix, best);
        int index = 0;
        sensitivity_plots(&sens, &gp, &t, cells, "lr", &index);
        sensitivity_plots(&sens, &gp, &t, cells, "weight_decay", &index);
    }
    sb_append(&js, "\n}\n");
    const char *names[6] = {"summary.md", "summary.json", "heatmap.dat", "curves.dat",
                            "plots.gp", "sensitivity.dat"};
    StrBuf *bufs[6] = {&md, &js, &heat, &curves, &gp, &sens};
    bool ok = true;
    for (int i = 0; i < 6; i++) {
        char *path = xasprintf("%s/%s", dir, names[i]);
        if (i < 5 || sens.len > 0)
            ok = ok && rt_write_file_atomic(path, bufs[i]->data, bufs[i]->len, error);
        free(path);
        sb_free(bufs[i]);
    }
    if (ok)
        render_plots(dir);
    free(cells);
    free(matrix_cells);
    free(bs);
    free(best);
    if (sweeps)
        free_table(&reduced);
    free_table(&t);
    return ok;
}
