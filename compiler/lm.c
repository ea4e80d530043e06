/* lm.c - the fortunes() data source, per-token cross-entropy and the
 * next-token loss (see lm.h). */
#include "lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/text.h"
#include "builtins.h"
#include "ir_spatial.h"

/* ---- fortunes(...) ---------------------------------------------------------- */

#define FORTUNES_DIR "/usr/share/games/fortunes"

static bool string_list(Lower *l, const Value *v, const char ***out, int *n)
{
    if (v->kind != VAL_LIST || v->list.n == 0) {
        diag_error(v->loc, "categories must be a non-empty list of file names, such as "
                   "[\"computers\", \"science\"], not %s", val_format(l, v));
        return false;
    }
    if (v->list.n > TEXT_MAX_CATEGORIES) {
        diag_error(v->loc, "fortunes() takes at most %d categories, not %d",
                   TEXT_MAX_CATEGORIES, v->list.n);
        return false;
    }
    const char **names = arena_calloc(l->arena, (size_t)v->list.n, sizeof *names);
    for (int i = 0; i < v->list.n; i++) {
        const Value *item = &v->list.items[i];
        if (item->kind != VAL_STRING || !item->string[0] || strchr(item->string, '/')) {
            diag_error(item->loc, "a category is the name of a file in the fortunes "
                       "directory, without '/', not %s", val_format(l, item));
            return false;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(names[j], item->string) == 0) {
                diag_error(item->loc, "category \"%s\" is listed twice", item->string);
                return false;
            }
        names[i] = item->string;
    }
    *out = names;
    *n = v->list.n;
    return true;
}

static bool number_in(const Value *v, const char *what, double low, double high, bool high_open,
                      double *out)
{
    if (is_none(v))
        return true;
    double x = v->kind == VAL_NUMBER ? v->number.value : NAN;
    if (!(x >= low && (high_open ? x < high : x <= high))) {
        diag_error(v->loc, "%s must be a number in [%g, %g%c", what, low, high,
                   high_open ? ')' : ']');
        return false;
    }
    *out = x;
    return true;
}

static Value bi_fortunes(Lower *l, const Value *args, SrcLoc loc)
{
    if (l->mode == MODE_MODEL || l->mode == MODE_OPTIMIZER) {
        diag_error(loc, "'fortunes' declares data and belongs in a data declaration");
        return val_error();
    }
    FortuneOptions *o = arena_calloc(l->arena, 1, sizeof *o);
    o->dir = FORTUNES_DIR;
    o->seq_len = 128;
    o->view = TEXT_VIEW_CLASSIFY;
    o->test_fraction = 0.2;
    o->balance = true;
    bool ok = string_list(l, &args[0], (const char ***)&o->categories, &o->ncategories);
    if (!is_none(&args[1])) {
        if (args[1].kind != VAL_STRING || !args[1].string[0]) {
            diag_error(args[1].loc, "dir must be the path of a directory of fortune files");
            ok = false;
        } else {
            o->dir = args[1].string;
        }
    }
    if (!is_none(&args[2]))
        ok &= val_to_int(&args[2], "seq_len", 1, TEXT_MAX_SEQ_LEN, &o->seq_len);
    if (!is_none(&args[3])) {
        const Value *v = &args[3];
        const char *s = v->kind == VAL_SYMBOL || v->kind == VAL_STRING ? v->string : "";
        if (strcmp(s, "classify") == 0) {
            o->view = TEXT_VIEW_CLASSIFY;
        } else if (strcmp(s, "lm") == 0) {
            o->view = TEXT_VIEW_LM;
        } else {
            diag_error(v->loc, "view must be classify or lm, not %s", val_format(l, v));
            ok = false;
        }
    }
    ok &= number_in(&args[4], "test_fraction", 0, 1, true, &o->test_fraction);
    ok &= bool_arg(&args[5], "balance", true, &o->balance);
    if (!ok)
        return val_error();

    DataSpec *d = arena_calloc(l->arena, 1, sizeof *d);
    d->format = DATA_FORTUNES;
    d->path = o->dir;
    d->normalize = NORMALIZE_NONE;
    d->fortunes = o;
    d->loc = loc;
    Value v = val_none(loc);
    v.kind = VAL_DATA;
    v.data = d;
    return v;
}

/* ---- per-token cross-entropy ---------------------------------------------- */

int lower_token_loss(IrGraph *g, int logits, int targets, double ignore, SrcLoc loc)
{
    Shape ls = ir_node(g, logits)->shape, ts = ir_node(g, targets)->shape;
    DType dt = ir_node(g, logits)->dtype;
    BOCB_ASSERT(ls.rank >= 2 && ts.rank == ls.rank - 1);
    BOCB_ASSERT(ls.batch_axis <= 0 && ts.batch_axis == ls.batch_axis);
    int64_t vocab = ls.dims[ls.rank - 1], rows = 1;
    for (int i = 0; i < ts.rank; i++)
        rows *= ts.dims[i];
    Shape rows_shape = shape_make(1, &rows);
    rows_shape.batch_axis = ts.batch_axis;
    Shape table_shape = shape_make(2, (int64_t[]){rows, vocab});
    table_shape.batch_axis = ls.batch_axis;

    int t = ir_reshape(g, targets, rows_shape, loc);
    if (ir_node(g, t)->dtype != dt)
        t = ir_cast(g, t, dt, loc);
    int zero = ir_broadcast(g, ir_const(g, dt, 0.0, loc), rows_shape, loc);
    int top = ir_broadcast(g, ir_const(g, dt, (double)vocab, loc), rows_shape, loc);
    int skip = ir_broadcast(g, ir_const(g, dt, ignore, loc), rows_shape, loc);
    int valid = ir_binary(g, IR_AND, ir_binary(g, IR_GE, t, zero, loc),
                          ir_binary(g, IR_LT, t, top, loc), loc);
    valid = ir_binary(g, IR_AND, valid, ir_binary(g, IR_NE, t, skip, loc), loc);
    /* A masked target still needs a valid class for the kernel, which
     * asserts that every label lies in [0, V). */
    int safe = ir_cast(g, ir_select(g, valid, t, zero, loc), DT_I32, loc);
    int per_token = ir_cross_entropy(g, ir_reshape(g, logits, table_shape, loc), safe, loc);
    int mask = ir_cast(g, valid, dt, loc);
    int total = ir_sum(g, ir_binary(g, IR_MUL, per_token, mask, loc), 1u, loc);
    int count = ir_binary(g, IR_MAX, ir_sum(g, mask, 1u, loc), ir_const(g, dt, 1.0, loc), loc);
    return ir_binary(g, IR_DIV, total, count, loc);
}

static Value bi_token_cross_entropy(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "token_cross_entropy", loc))
        return val_error();
    int logits = float_tensor_arg(l, &args[0], "token_cross_entropy", "logits");
    int targets = tensor_arg(l, &args[1], "token_cross_entropy", "targets");
    if (logits < 0 || targets < 0)
        return val_error();
    double ignore = 0;
    if (!is_none(&args[2])) {
        if (args[2].kind != VAL_NUMBER || !args[2].number.is_integer) {
            diag_error(args[2].loc, "ignore must be an integer token id");
            return val_error();
        }
        ignore = args[2].number.value;
    }
    const Shape *ls = shape_of(l, logits);
    Shape ts = *shape_of(l, targets);
    bool fits = ls->rank >= 2 && ts.rank == ls->rank - 1 && ts.batch_axis == ls->batch_axis &&
                ls->batch_axis <= 0 && ir_node(l->graph, targets)->dtype != DT_BOOL;
    for (int i = 0; fits && i < ts.rank; i++)
        fits = ts.dims[i] == ls->dims[i];
    if (!fits) {
        diag_error(loc, "token_cross_entropy expects logits [..., V] and token ids [...] "
                   "with the same leading axes, the batch axis first, but got %s and %s",
                   shape_text(l, ls), shape_text(l, &ts));
        note_operand_origin(l, "the tensor of logits", &args[0], logits);
        note_operand_origin(l, "the tensor of targets", &args[1], targets);
        return val_error();
    }
    return val_tensor(lower_token_loss(l->graph, logits, targets, ignore, loc), loc);
}

/* ---- next-token loss ------------------------------------------------------ */

bool lower_next_token_loss(Lower *l, int logits, int x, int labels, const DataShape *data,
                           const char *model_name, SrcLoc loc, int *loss_out,
                           int *last_logits_out)
{
    IrGraph *g = l->graph;
    int64_t steps = data->dims[0], vocab = data->classes;
    Shape want = shape_make(3, (int64_t[]){1, steps, vocab});
    want.batch_axis = 0;
    Shape got = ir_node(g, logits)->shape;
    if (data->rank != 1) {
        diag_error(loc, "loss = next_token needs data of token ids [T], such as "
                   "fortunes(..., view = lm), but one sample has %d axes", data->rank);
        return false;
    }
    if (!shape_equal(&got, &want)) {
        diag_error(loc, "with loss = next_token, model '%s' must return logits %s, one row "
                   "of %lld scores per position, but it returns %s", model_name,
                   shape_text(l, &want), (long long)vocab, shape_text(l, &got));
        return false;
    }
    /* targets[:, t] = x[:, t + 1] for t < T - 1, and the label at T - 1. */
    Shape column = shape_make(2, (int64_t[]){1, 1});
    column.batch_axis = 0;
    int next = ir_reshape(g, ir_cast(g, labels, l->dtype, loc), column, loc);
    int targets = steps > 1 ? ir_concat(g, ir_slice(g, x, 1, 1, steps - 1, loc), next, 1, loc)
                            : next;
    *loss_out = lower_token_loss(g, logits, targets, 0, loc);
    Shape last = shape_make(2, (int64_t[]){1, vocab});
    last.batch_axis = 0;
    *last_logits_out = ir_reshape(g, ir_slice(g, logits, 1, steps - 1, 1, loc), last, loc);
    return true;
}

/* ---- fine-tuning schemes -------------------------------------------------- */

static bool name_list(Lower *l, const Value *v, const char *what, const char ***out, int *n)
{
    if (v->kind != VAL_LIST || v->list.n == 0) {
        diag_error(v->loc, "%s must be a non-empty list of layer names, such as "
                   "[\"qkv\", \"proj\"], not %s", what, val_format(l, v));
        return false;
    }
    const char **names = arena_calloc(l->arena, (size_t)v->list.n, sizeof *names);
    for (int i = 0; i < v->list.n; i++) {
        const Value *item = &v->list.items[i];
        if (item->kind != VAL_STRING || !item->string[0]) {
            diag_error(item->loc, "%s lists layer names in quotes, not %s", what,
                       val_format(l, item));
            return false;
        }
        names[i] = item->string;
    }
    *out = names;
    *n = v->list.n;
    return true;
}

/* Reports a setting that only applies to another scheme. */
static bool reject_unused(const Value *v, const char *setting, const char *scheme)
{
    if (!v || v->kind == VAL_ERROR)
        return true;
    diag_error(v->loc, "setting '%s' applies to finetune = %s only", setting, scheme);
    return false;
}

bool finetune_resolve(Lower *l, const FineTuneSettings *s, const FineTune **out)
{
    *out = NULL;
    FineTune *f = arena_calloc(l->arena, 1, sizeof *f);
    f->kind = FINETUNE_FULL;
    f->lora_rank = 4;
    f->prompt_tokens = 8;
    static const char *const default_targets[] = {"qkv", "proj"};
    static const char *const default_trainable[] = {"head"};
    f->lora_targets = (const char **)default_targets;
    f->nlora_targets = 2;
    f->trainable = (const char **)default_trainable;
    f->ntrainable = 1;
    if (s->finetune) {
        const Value *v = s->finetune;
        if (v->kind == VAL_ERROR)
            return false;
        const char *name = v->kind == VAL_SYMBOL || v->kind == VAL_STRING ? v->string : "";
        if (strcmp(name, "full") == 0) {
            f->kind = FINETUNE_FULL;
        } else if (strcmp(name, "lora") == 0) {
            f->kind = FINETUNE_LORA;
        } else if (strcmp(name, "prompt") == 0) {
            f->kind = FINETUNE_PROMPT;
        } else {
            diag_error(v->loc, "setting 'finetune' must be full, lora or prompt, not %s",
                       val_format(l, v));
            return false;
        }
        f->loc = v->loc;
    }

    bool ok = true;
    if (f->kind == FINETUNE_LORA) {
        if (s->lora_rank)
            ok &= val_to_int(s->lora_rank, "lora_rank", 1, 1 << 16, &f->lora_rank);
        f->lora_alpha = 2.0 * (double)f->lora_rank;
        if (s->lora_alpha) {
            const Value *a = s->lora_alpha;
            if (a->kind != VAL_NUMBER || !(a->number.value > 0) || isinf(a->number.value)) {
                diag_error(a->loc, "lora_alpha must be a finite number > 0");
                ok = false;
            } else {
                f->lora_alpha = a->number.value;
            }
        }
        if (s->lora_targets)
            ok &= name_list(l, s->lora_targets, "lora_targets", &f->lora_targets,
                            &f->nlora_targets);
    } else {
        ok &= reject_unused(s->lora_rank, "lora_rank", "lora");
        ok &= reject_unused(s->lora_alpha, "lora_alpha", "lora");
        ok &= reject_unused(s->lora_targets, "lora_targets", "lora");
    }
    if (f->kind == FINETUNE_PROMPT) {
        if (s->prompt_tokens)
            ok &= val_to_int(s->prompt_tokens, "prompt_tokens", 1, TEXT_MAX_SEQ_LEN,
                             &f->prompt_tokens);
    } else {
        ok &= reject_unused(s->prompt_tokens, "prompt_tokens", "prompt");
    }
    if (f->kind != FINETUNE_FULL) {
        if (s->trainable)
            ok &= name_list(l, s->trainable, "trainable", &f->trainable, &f->ntrainable);
    } else if (s->trainable) {
        ok &= reject_unused(s->trainable, "trainable", "lora or prompt");
    }
    if (ok && f->kind != FINETUNE_FULL)
        *out = f;
    return ok;
}

bool layer_matches(const char *path, const char *pattern)
{
    size_t n = strlen(path), k = strlen(pattern);
    if (n == k)
        return strcmp(path, pattern) == 0;
    return n > k && path[n - k - 1] == '.' && strcmp(path + n - k, pattern) == 0;
}

int lower_lora(Lower *l, const char *layer, int h, int y, int64_t in, int64_t out,
               SrcLoc loc)
{
    const FineTune *f = l->finetune;
    if (!f || f->kind != FINETUNE_LORA)
        return y;
    const char *path = arena_printf(l->arena, "%s.%s", l->prefix.data ? l->prefix.data : "",
                                    layer);
    bool targeted = false;
    for (int i = 0; i < f->nlora_targets && !targeted; i++)
        targeted = layer_matches(path, f->lora_targets[i]);
    if (!targeted)
        return y;
    IrGraph *g = l->graph;
    int a = create_param(l, arena_printf(l->arena, "%s.lora_A", layer), "lora",
                         shape_make(2, (int64_t[]){f->lora_rank, in}), IR_INIT_UNIFORM,
                         1.0 / sqrt((double)in), loc);
    int b = create_param(l, arena_printf(l->arena, "%s.lora_B", layer), "lora",
                         shape_make(2, (int64_t[]){out, f->lora_rank}), IR_INIT_ZEROS, 0, loc);
    if (a < 0 || b < 0)
        return -1;
    int low = ir_matmul(g, ir_matmul(g, h, a, false, true, loc), b, false, true, loc);
    Shape ys = ir_node(g, y)->shape;
    int scale = ir_broadcast(g, ir_const(g, l->dtype, f->lora_alpha / (double)f->lora_rank, loc),
                             ys, loc);
    return ir_binary(g, IR_ADD, y, ir_binary(g, IR_MUL, low, scale, loc), loc);
}

/* The layer path of a parameter: its name without the last component. */
static bool var_in_layers(const IrVar *v, const char *const *layers, int n)
{
    const char *dot = strrchr(v->name, '.');
    size_t len = dot ? (size_t)(dot - v->name) : strlen(v->name);
    char *path = xstrndup(v->name, len);
    bool found = false;
    for (int i = 0; i < n && !found; i++)
        found = layer_matches(path, layers[i]);
    free(path);
    return found;
}

bool finetune_freeze(Lower *l, IrModule *m, const char *model_name, SrcLoc model_loc)
{
    const FineTune *f = l->finetune;
    if (!f || f->kind == FINETUNE_FULL)
        return true;
    const char *added = f->kind == FINETUNE_LORA ? "lora" : "prompt";
    int nadded = 0;
    for (int v = 0; v < m->nvars; v++) {
        IrVar *var = &m->vars[v];
        if (var->kind != IR_VAR_PARAM)
            continue;
        bool own = var->tag && strcmp(var->tag, added) == 0;
        nadded += own;
        var->frozen = !own && !var_in_layers(var, f->trainable, f->ntrainable);
    }
    if (nadded > 0)
        return true;
    if (f->kind == FINETUNE_LORA) {
        diag_error(f->loc, "finetune = lora, but lora_targets names no linear layer of "
                   "model '%s'", model_name);
        diag_note(model_loc, "a target is a layer name such as \"qkv\", or a path such as "
                  "\"block1.attn.qkv\"; bocbc --stats lists the parameters");
    } else {
        diag_error(f->loc, "finetune = prompt, but model '%s' never calls prompt_tokens(...), "
                   "which marks where the prompt goes", model_name);
    }
    return false;
}

static Value bi_prompt_tokens(Lower *l, const Value *args, SrcLoc loc)
{
    if (!need_graph(l, "prompt_tokens", loc))
        return val_error();
    int t = float_tensor_arg(l, &args[0], "prompt_tokens", "x");
    if (t < 0)
        return val_error();
    Shape ts = *shape_of(l, t);
    if (ts.rank != 3 || ts.batch_axis != 0 || ts.dims[0] != 1) {
        diag_error(args[0].loc, "prompt_tokens expects tokens [B, T, D], but got %s",
                   shape_text(l, &ts));
        return val_error();
    }
    const char *name = "prompt";
    if (!is_none(&args[1])) {
        if (args[1].kind != VAL_STRING || !args[1].string[0]) {
            diag_error(args[1].loc, "name must be a non-empty string");
            return val_error();
        }
        name = args[1].string;
    }
    const FineTune *f = l->finetune;
    if (!f || f->kind != FINETUNE_PROMPT)
        return args[0];
    int64_t n = f->prompt_tokens, d = ts.dims[2];
    int p = create_param(l, name, "prompt", shape_make(3, (int64_t[]){1, n, d}),
                         IR_INIT_TRUNC_NORMAL, 0.02, loc);
    if (p < 0)
        return val_error();
    Shape ps = shape_make(3, (int64_t[]){1, n, d});
    ps.batch_axis = 0;
    int batched = ir_broadcast(l->graph, p, ps, loc);
    return val_tensor(ir_concat(l->graph, batched, t, 1, loc), loc);
}

/* ---- the table ------------------------------------------------------------ */

static const Builtin lm_builtins[] = {
    {"fortunes", PARAMS("categories", "dir", "seq_len", "view", "test_fraction", "balance"), 1,
     bi_fortunes},
    {"token_cross_entropy", PARAMS("logits", "targets", "ignore"), 2, bi_token_cross_entropy},
    {"prompt_tokens", PARAMS("x", "name"), 1, bi_prompt_tokens},
};

const Builtin *builtin_lm_table(int *count)
{
    *count = (int)BOCB_ARRAY_LEN(lm_builtins);
    return lm_builtins;
}
