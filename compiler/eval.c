/* eval.c - the compile-time evaluator: values, scopes, expressions and
 * statements, call binding, and model instantiation.
 *
 * Names resolve innermost first: the current scope and its parents, then
 * the program's declarations and constants, then builtins. In an
 * experiment, a name that resolves to nothing is a symbol (`backprop`,
 * `unit`), and the setting it is assigned to validates it. Everywhere else
 * an unresolved name is an error with a suggestion.
 */
#include "eval.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_MODEL_DEPTH = 32 };

/* ---- values --------------------------------------------------------------- */

Value val_error(void)
{
    Value v;
    memset(&v, 0, sizeof v);
    v.kind = VAL_ERROR;
    return v;
}

Value val_none(SrcLoc loc)
{
    Value v = val_error();
    v.kind = VAL_NONE;
    v.loc = loc;
    return v;
}

Value val_number(double x, SrcLoc loc)
{
    Value v = val_none(loc);
    v.kind = VAL_NUMBER;
    v.number.value = x;
    v.number.is_integer = x == floor(x) && fabs(x) < 9007199254740992.0;
    return v;
}

Value val_bool(bool b, SrcLoc loc)
{
    Value v = val_none(loc);
    v.kind = VAL_BOOL;
    v.boolean = b;
    return v;
}

Value val_tensor(int node, SrcLoc loc)
{
    Value v = val_none(loc);
    v.kind = VAL_TENSOR;
    v.tensor = node;
    return v;
}

const char *val_kind_name(const Value *v)
{
    switch (v->kind) {
    case VAL_ERROR: return "an invalid value";
    case VAL_NONE: return "nothing";
    case VAL_NUMBER: return "a number";
    case VAL_BOOL: return "a boolean";
    case VAL_STRING: return "a string";
    case VAL_SYMBOL: return "a name";
    case VAL_LIST: return "a list";
    case VAL_TUPLE: return "a tuple";
    case VAL_TENSOR: return "a tensor";
    case VAL_DECL:
        switch (v->decl->kind) {
        case DECL_MODEL: return "a model";
        case DECL_OPTIMIZER: return "an optimizer";
        case DECL_DATA: return "a data source";
        default: return "a declaration";
        }
    case VAL_BUILTIN: return "a builtin function";
    case VAL_CONFIGURED:
        return v->configured->decl->kind == DECL_MODEL ? "a model" : "an optimizer";
    case VAL_DATA: return "a data source";
    }
    return "a value";
}

const char *val_format(Lower *l, const Value *v)
{
    char num[64];
    switch (v->kind) {
    case VAL_NUMBER:
        format_double(num, sizeof num, v->number.value);
        return arena_strdup(l->arena, num);
    case VAL_BOOL:
        return v->boolean ? "true" : "false";
    case VAL_STRING:
        return arena_printf(l->arena, "\"%s\"", v->string);
    case VAL_SYMBOL:
        return v->string;
    case VAL_LIST:
    case VAL_TUPLE: {
        StrBuf sb = {0};
        sb_append(&sb, v->kind == VAL_LIST ? "[" : "(");
        for (int i = 0; i < v->list.n; i++) {
            if (i > 0)
                sb_append(&sb, ", ");
            sb_append(&sb, val_format(l, &v->list.items[i]));
        }
        if (v->kind == VAL_TUPLE && v->list.n == 1)
            sb_append(&sb, ",");
        sb_append(&sb, v->kind == VAL_LIST ? "]" : ")");
        const char *r = arena_strdup(l->arena, sb.data);
        sb_free(&sb);
        return r;
    }
    case VAL_DECL:
        return v->decl->name;
    case VAL_BUILTIN:
        return v->builtin->name;
    case VAL_CONFIGURED:
        return v->configured->label;
    case VAL_DATA:
        return v->data->name ? v->data->name : v->data->path;
    case VAL_TENSOR:
        return "<tensor>";
    case VAL_ERROR:
    case VAL_NONE:
        break;
    }
    return "<none>";
}

bool check_override_kind(Lower *l, const Decl *owner, const Param *p, const Value *given)
{
    if (!p->default_value || given->kind == VAL_ERROR)
        return true;
    ExprKind dk = p->default_value->kind;
    /* Only literal defaults fix a kind; a computed default may be anything. */
    bool number = dk == EX_NUMBER ||
                  (dk == EX_UNARY && p->default_value->unary.operand->kind == EX_NUMBER);
    bool boolean = dk == EX_BOOL;
    if (!number && !boolean)
        return true;
    if ((number && given->kind == VAL_NUMBER) || (boolean && given->kind == VAL_BOOL))
        return true;
    const char *want = number ? "a number" : "true or false";
    (void)l;
    diag_error(given->loc, "'%s' of %s '%s' must be %s, but it is %s", p->name,
               owner->kind == DECL_MODEL ? "model" : "optimizer", owner->name, want,
               val_kind_name(given));
    return false;
}

bool val_to_int(const Value *v, const char *what, int64_t min, int64_t max,
                int64_t *out)
{
    if (v->kind == VAL_ERROR)
        return false;
    if (v->kind == VAL_SYMBOL) {
        diag_error(v->loc, "%s must be an integer, but '%s' is not defined", what, v->string);
        return false;
    }
    if (v->kind != VAL_NUMBER) {
        diag_error(v->loc, "%s must be an integer, but it is %s", what, val_kind_name(v));
        return false;
    }
    double x = v->number.value;
    if (x == x && x == floor(x) && (x < (double)min || x > (double)max)) {
        diag_error(v->loc, "%s must be between %lld and %lld, but it is %.17g", what,
                   (long long)min, (long long)max, x);
        return false;
    }
    if (!v->number.is_integer) {
        diag_error(v->loc, "%s must be an integer, but it is not a whole number", what);
        return false;
    }
    if (x < (double)min || x > (double)max) {
        diag_error(v->loc, "%s must be between %lld and %lld, but it is %.17g", what,
                   (long long)min, (long long)max, x);
        return false;
    }
    *out = (int64_t)x;
    return true;
}

/* ---- scopes --------------------------------------------------------------- */

/* Scopes with fewer bindings than this are searched linearly. */
enum { SCOPE_INDEX_MIN = 32 };

static uint32_t hash_name(const char *name)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* Returns the slot of `name` in s->index: the slot that contains its
 * binding, or the empty slot where it would go. */
static int index_slot(const Scope *s, const char *name)
{
    uint32_t mask = (uint32_t)s->index_cap - 1;
    for (uint32_t i = hash_name(name) & mask;; i = (i + 1) & mask) {
        int entry = s->index[i];
        if (entry == 0 || strcmp(s->bindings.data[entry - 1].name, name) == 0)
            return (int)i;
    }
}

/* Rebuilds the index of s with room for twice its bindings. */
static void index_rebuild(Scope *s)
{
    int cap = 64;
    while (cap < 4 * s->bindings.len)
        cap *= 2;
    free(s->index);
    s->index = xcalloc((size_t)cap, sizeof(int));
    s->index_cap = cap;
    for (int i = 0; i < s->bindings.len; i++)
        s->index[index_slot(s, s->bindings.data[i].name)] = i + 1;
}

/* Returns the index in s->bindings of `name`, or -1. The last binding
 * of a name wins, as scope_set never adds a name twice. */
static int binding_of(const Scope *s, const char *name)
{
    if (s->index) {
        int entry = s->index[index_slot(s, name)];
        return entry - 1;
    }
    for (int i = s->bindings.len - 1; i >= 0; i--)
        if (strcmp(s->bindings.data[i].name, name) == 0)
            return i;
    return -1;
}

void scope_set(Lower *l, Scope *s, const char *name, Value v)
{
    (void)l;
    int known = binding_of(s, name);
    if (known >= 0) {
        s->bindings.data[known].value = v;
        return;
    }
    Binding b = {.name = name, .value = v};
    VEC_PUSH(&s->bindings, b);
    if (s->index && 2 * s->bindings.len <= s->index_cap)
        s->index[index_slot(s, name)] = s->bindings.len;
    else if (s->bindings.len >= SCOPE_INDEX_MIN)
        index_rebuild(s);
}

Value *scope_find(Scope *s, const char *name)
{
    for (; s; s = s->parent) {
        int i = binding_of(s, name);
        if (i >= 0)
            return &s->bindings.data[i].value;
    }
    return NULL;
}

Value *scope_find_local(Scope *s, const char *name)
{
    int i = binding_of(s, name);
    return i >= 0 ? &s->bindings.data[i].value : NULL;
}

void scope_free(Scope *s)
{
    VEC_FREE(&s->bindings);
    free(s->index);
    s->index = NULL;
    s->index_cap = 0;
}

/* ---- suggestions ---------------------------------------------------------- */

static int edit_distance(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    if (n > 64 || m > 64)
        return 1000;
    /* Rows i - 2, i - 1 and i of the table. Swapping two adjacent
     * letters ("sdg" for "sgd") costs one edit, as in Damerau's distance. */
    int before[65], prev[65], cur[65];
    for (size_t j = 0; j <= m; j++)
        prev[j] = (int)j;
    for (size_t i = 1; i <= n; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= m; j++) {
            int best = prev[j - 1] + (a[i - 1] != b[j - 1]); /* substitution */
            if (prev[j] + 1 < best)
                best = prev[j] + 1; /* deletion */
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1; /* insertion */
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                before[j - 2] + 1 < best)
                best = before[j - 2] + 1; /* transposition */
            cur[j] = best;
        }
        memcpy(before, prev, sizeof(int) * (m + 1));
        memcpy(prev, cur, sizeof(int) * (m + 1));
    }
    return prev[m];
}

const char *closest_name(const char *name, const char *const *candidates, int n)
{
    const char *best = NULL;
    int best_distance = 1000;
    size_t len = strlen(name);
    int limit = len <= 3 ? 1 : (len <= 6 ? 2 : 3);
    /* An abbreviation ("mom" for "momentum") is the likeliest intent. */
    for (int i = 0; len >= 3 && i < n; i++)
        if (candidates[i] && strncmp(candidates[i], name, len) == 0 && candidates[i][len])
            return candidates[i];
    for (int i = 0; i < n; i++) {
        if (!candidates[i] || strcmp(candidates[i], name) == 0)
            continue;
        int d = edit_distance(name, candidates[i]);
        if (d <= limit && d < best_distance) {
            best = candidates[i];
            best_distance = d;
        }
    }
    return best;
}

void report_unknown_name(Lower *l, const char *name, SrcLoc loc)
{
    /* The same message again: diagnostics count it but print it once. */
    for (int i = 0; i < l->unknown_names.len; i++) {
        SrcLoc seen = l->unknown_names.data[i].loc;
        if (seen.file == loc.file && seen.line == loc.line && seen.col == loc.col) {
            diag_error(loc, "%s", l->unknown_names.data[i].message);
            return;
        }
    }
    if (is_local_name(l, l->current_decl, name)) {
        diag_error(loc, "'%s' is used before it is assigned", name);
        return;
    }
    VEC(const char *) names = {0};
    for (Scope *s = l->scope; s; s = s->parent)
        for (int i = 0; i < s->bindings.len; i++)
            VEC_PUSH(&names, s->bindings.data[i].name);
    for (const char *const *b = builtin_names(); *b; b++)
        VEC_PUSH(&names, *b);
    const char *near = closest_name(name, names.data, names.len);
    if (near)
        diag_error(loc, "unknown name '%s'; did you mean '%s'?", name, near);
    else
        diag_error(loc, "unknown name '%s'", name);
    VEC_FREE(&names);
}

/* ---- tensors -------------------------------------------------------------- */

bool check_tensor_size(Lower *l, const Shape *s, const char *what, SrcLoc loc)
{
    if (shape_size_ok(s))
        return true;
    diag_error(loc, "%s would have shape %s, more than 2^36 elements%s", what,
               shape_text(l, s), s->batch_axis >= 0 ? " per sample" : "");
    return false;
}

const char *shape_text(Lower *l, const Shape *s)
{
    char buf[160];
    return arena_strdup(l->arena, shape_format(s, buf, sizeof buf));
}

/* Returns where `node` was built, or a location without a file when that
 * is the operand `v` itself, where a note would repeat the error's caret. */
static SrcLoc operand_origin(Lower *l, const Value *v, int node)
{
    SrcLoc at = ir_node(l->graph, node)->loc;
    if (at.file == v->loc.file && at.line == v->loc.line && at.col == v->loc.col)
        at.file = 0;
    return at;
}

void note_operand_origin(Lower *l, const char *what, const Value *v, int node)
{
    SrcLoc at = operand_origin(l, v, node);
    if (at.file == 0)
        return;
    diag_note(at, "%s, of shape %s, comes from here", what,
              shape_text(l, &ir_node(l->graph, node)->shape));
}

static void note_operand_type_origin(Lower *l, const char *what, const Value *v, int node)
{
    SrcLoc at = operand_origin(l, v, node);
    if (at.file == 0)
        return;
    diag_note(at, "%s, of element type %s, comes from here", what,
              dtype_name(ir_node(l->graph, node)->dtype));
}

void note_operand_origins(Lower *l, const Value *a, int x, const Value *b, int y)
{
    DType dx = ir_node(l->graph, x)->dtype, dy = ir_node(l->graph, y)->dtype;
    if (dx != dy || (dx != DT_F32 && dx != DT_F64)) {
        note_operand_type_origin(l, "the left operand", a, x);
        note_operand_type_origin(l, "the right operand", b, y);
    } else {
        note_operand_origin(l, "the left operand", a, x);
        note_operand_origin(l, "the right operand", b, y);
    }
}

int as_tensor(Lower *l, const Value *v, const char *what)
{
    switch (v->kind) {
    case VAL_TENSOR:
        return v->tensor;
    case VAL_NUMBER:
        if (!l->graph)
            break;
        return ir_const(l->graph, l->dtype, v->number.value, v->loc);
    case VAL_ERROR:
        return -1;
    default:
        break;
    }
    diag_error(v->loc, "%s must be a tensor, but it is %s", what, val_kind_name(v));
    return -1;
}

Value tensor_binary(Lower *l, IrOp op, const char *spelling, const Value *a,
                    const Value *b, SrcLoc loc)
{
    int x = as_tensor(l, a, "operand");
    int y = as_tensor(l, b, "operand");
    if (x < 0 || y < 0)
        return val_error();
    IrGraph *g = l->graph;
    if (ir_node(g, x)->dtype != ir_node(g, y)->dtype) {
        diag_error(loc, "operands of '%s' have different element types (%s and %s)",
                   spelling, dtype_name(ir_node(g, x)->dtype),
                   dtype_name(ir_node(g, y)->dtype));
        note_operand_origins(l, a, x, b, y);
        return val_error();
    }
    DType dt = ir_node(g, x)->dtype;
    bool arithmetic = op == IR_ADD || op == IR_SUB || op == IR_MUL || op == IR_DIV ||
                      op == IR_POW || op == IR_MAX || op == IR_MIN;
    if (arithmetic && dt != DT_F32 && dt != DT_F64) {
        diag_error(loc, "'%s' takes floating-point operands, but these hold %s values",
                   spelling, dtype_name(dt));
        return val_error();
    }
    Shape sa = ir_node(g, x)->shape, sb = ir_node(g, y)->shape, out;
    if (!ir_broadcast_shape(&sa, &sb, &out)) {
        diag_error(loc, "operands of '%s' have incompatible shapes %s and %s",
                   spelling, shape_text(l, &sa), shape_text(l, &sb));
        note_operand_origin(l, "the left operand", a, x);
        note_operand_origin(l, "the right operand", b, y);
        return val_error();
    }
    char what[64];
    snprintf(what, sizeof what, "the result of '%s'", spelling);
    if (!check_tensor_size(l, &out, what, loc))
        return val_error();
    x = ir_broadcast(g, x, out, a->loc);
    y = ir_broadcast(g, y, out, b->loc);
    return val_tensor(ir_binary(g, op, x, y, loc), loc);
}

Value tensor_unary(Lower *l, IrOp op, const Value *x, SrcLoc loc)
{
    int t = as_tensor(l, x, "operand");
    if (t < 0)
        return val_error();
    DType dt = ir_node(l->graph, t)->dtype;
    if (dt != DT_F32 && dt != DT_F64) {
        diag_error(x->loc, "'%s' takes a floating-point tensor, but this one holds %s values",
                   ir_op_name(op), dtype_name(dt));
        return val_error();
    }
    return val_tensor(ir_unary(l->graph, op, t, loc), loc);
}

/* ---- expressions ---------------------------------------------------------- */

static Value eval_name(Lower *l, const Expr *e)
{
    /* Python's rule: a name the body assigns is local to the whole body,
     * so reading it before the assignment does not fall back to a global. */
    Value *v = scope_find(l->scope, e->name);
    if (v && l->scope != &l->globals && !scope_find_local(l->scope, e->name) &&
        is_local_name(l, l->current_decl, e->name)) {
        diag_error(e->loc, "'%s' is used before it is assigned", e->name);
        return val_error();
    }
    if (v && v->kind == VAL_NONE && scope_find_local(&l->globals, e->name) == v) {
        diag_error(e->loc, "constant '%s' is used before its definition", e->name);
        return val_error();
    }
    if (v) {
        Value r = *v;
        r.loc = e->loc;
        return r;
    }
    const Builtin *b = builtin_find(e->name);
    if (b) {
        Value r = val_none(e->loc);
        r.kind = VAL_BUILTIN;
        r.builtin = b;
        return r;
    }
    if (l->mode == MODE_EXPERIMENT) {
        Value r = val_none(e->loc);
        r.kind = VAL_SYMBOL;
        r.string = e->name;
        return r;
    }
    report_unknown_name(l, e->name, e->loc);
    return val_error();
}

static IrOp binary_ir_op(BinaryOp op)
{
    switch (op) {
    case BIN_ADD: return IR_ADD;
    case BIN_SUB: return IR_SUB;
    case BIN_MUL: return IR_MUL;
    case BIN_DIV: return IR_DIV;
    case BIN_POW: return IR_POW;
    case BIN_EQ: return IR_EQ;
    case BIN_NE: return IR_NE;
    case BIN_LT: return IR_LT;
    case BIN_LE: return IR_LE;
    case BIN_GT: return IR_GT;
    case BIN_GE: return IR_GE;
    case BIN_AND: return IR_AND;
    case BIN_OR: return IR_OR;
    case BIN_MOD:
    case BIN_MATMUL:
        break;
    }
    return IR_OP_COUNT;
}

static Value fold_numbers(Lower *l, BinaryOp op, double a, double b, SrcLoc loc)
{
    (void)l;
    switch (op) {
    case BIN_ADD: return val_number(a + b, loc);
    case BIN_SUB: return val_number(a - b, loc);
    case BIN_MUL: return val_number(a * b, loc);
    case BIN_DIV:
        if (b == 0) {
            diag_error(loc, "division by zero");
            return val_error();
        }
        return val_number(a / b, loc);
    case BIN_MOD:
        if (b == 0) {
            diag_error(loc, "division by zero");
            return val_error();
        }
        return val_number(a - b * floor(a / b), loc);
    case BIN_POW: return val_number(pow(a, b), loc);
    case BIN_EQ: return val_bool(a == b, loc);
    case BIN_NE: return val_bool(a != b, loc);
    case BIN_LT: return val_bool(a < b, loc);
    case BIN_LE: return val_bool(a <= b, loc);
    case BIN_GT: return val_bool(a > b, loc);
    case BIN_GE: return val_bool(a >= b, loc);
    case BIN_AND: case BIN_OR: case BIN_MATMUL:
        break;
    }
    return val_error();
}

static bool values_equal(const Value *a, const Value *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case VAL_NUMBER: return a->number.value == b->number.value;
    case VAL_BOOL: return a->boolean == b->boolean;
    case VAL_STRING: case VAL_SYMBOL: return strcmp(a->string, b->string) == 0;
    case VAL_DECL: return a->decl == b->decl;
    case VAL_LIST: case VAL_TUPLE:
        if (a->list.n != b->list.n)
            return false;
        for (int i = 0; i < a->list.n; i++)
            if (!values_equal(&a->list.items[i], &b->list.items[i]))
                return false;
        return true;
    default:
        return false;
    }
}

static Value concat_lists(Lower *l, const Value *a, const Value *b, SrcLoc loc)
{
    Value r = val_none(loc);
    r.kind = a->kind;
    r.list.n = a->list.n + b->list.n;
    r.list.items = arena_calloc(l->arena, (size_t)r.list.n + 1, sizeof(Value));
    memcpy(r.list.items, a->list.items, (size_t)a->list.n * sizeof(Value));
    memcpy(r.list.items + a->list.n, b->list.items, (size_t)b->list.n * sizeof(Value));
    return r;
}

static Value eval_matmul(Lower *l, const Value *a, const Value *b, SrcLoc loc)
{
    int x = as_tensor(l, a, "operand of '@'");
    int y = as_tensor(l, b, "operand of '@'");
    if (x < 0 || y < 0)
        return val_error();
    Value r = lower_matmul(l, x, y, "'@'", loc);
    if (r.kind == VAL_ERROR)
        note_operand_origins(l, a, x, b, y);
    return r;
}

static Value eval_binary(Lower *l, const Expr *e)
{
    BinaryOp op = e->binary.op;
    const char *spelling = binary_op_spelling(op);
    Value a = eval_expr(l, e->binary.lhs);
    if (a.kind == VAL_ERROR)
        return a;

    /* `and` and `or` short-circuit on compile-time booleans. */
    if ((op == BIN_AND || op == BIN_OR) && a.kind == VAL_BOOL) {
        if (a.boolean == (op == BIN_OR))
            return val_bool(a.boolean, e->loc);
    }
    Value b = eval_expr(l, e->binary.rhs);
    if (b.kind == VAL_ERROR)
        return b;

    if (a.kind == VAL_NUMBER && b.kind == VAL_NUMBER && op != BIN_AND && op != BIN_OR &&
        op != BIN_MATMUL)
        return fold_numbers(l, op, a.number.value, b.number.value, e->loc);
    if ((op == BIN_AND || op == BIN_OR) && a.kind == VAL_BOOL && b.kind == VAL_BOOL)
        return val_bool(b.boolean, e->loc);
    if ((op == BIN_EQ || op == BIN_NE) && a.kind != VAL_TENSOR && b.kind != VAL_TENSOR) {
        bool eq = values_equal(&a, &b);
        return val_bool(op == BIN_EQ ? eq : !eq, e->loc);
    }
    if (op == BIN_ADD && a.kind == VAL_LIST && b.kind == VAL_LIST)
        return concat_lists(l, &a, &b, e->loc);
    if (op == BIN_ADD && a.kind == VAL_STRING && b.kind == VAL_STRING) {
        Value r = a;
        r.loc = e->loc;
        r.string = arena_printf(l->arena, "%s%s", a.string, b.string);
        return r;
    }

    bool tensor_operands = (a.kind == VAL_TENSOR || a.kind == VAL_NUMBER) &&
                           (b.kind == VAL_TENSOR || b.kind == VAL_NUMBER);
    if (tensor_operands && l->graph) {
        if (op == BIN_MATMUL)
            return eval_matmul(l, &a, &b, e->loc);
        IrOp ir = binary_ir_op(op);
        if (ir == IR_OP_COUNT || ir == IR_AND || ir == IR_OR) {
            diag_error(e->loc, "'%s' is not defined for tensors", spelling);
            return val_error();
        }
        return tensor_binary(l, ir, spelling, &a, &b, e->loc);
    }
    diag_error(e->loc, "'%s' cannot be applied to %s and %s", spelling,
               val_kind_name(&a), val_kind_name(&b));
    return val_error();
}

static Value eval_unary(Lower *l, const Expr *e)
{
    Value x = eval_expr(l, e->unary.operand);
    if (x.kind == VAL_ERROR)
        return x;
    switch (e->unary.op) {
    case UN_PLUS:
        if (x.kind == VAL_NUMBER || x.kind == VAL_TENSOR)
            return x;
        break;
    case UN_NEG:
        if (x.kind == VAL_NUMBER)
            return val_number(-x.number.value, e->loc);
        if (x.kind == VAL_TENSOR)
            return tensor_unary(l, IR_NEG, &x, e->loc);
        break;
    case UN_NOT:
        if (x.kind == VAL_BOOL)
            return val_bool(!x.boolean, e->loc);
        if (x.kind == VAL_TENSOR && ir_node(l->graph, x.tensor)->dtype == DT_BOOL)
            return val_tensor(ir_unary(l->graph, IR_NOT, x.tensor, e->loc), e->loc);
        break;
    }
    diag_error(e->loc, "'%s' cannot be applied to %s", unary_op_spelling(e->unary.op),
               val_kind_name(&x));
    return val_error();
}

static Value eval_list(Lower *l, const Expr *e)
{
    Value r = val_none(e->loc);
    r.kind = e->kind == EX_LIST ? VAL_LIST : VAL_TUPLE;
    r.list.n = e->list.nitems;
    r.list.items = arena_calloc(l->arena, (size_t)r.list.n + 1, sizeof(Value));
    /* An invalid item stays in the list as poison, so that consumers can
     * still check the others. */
    for (int i = 0; i < r.list.n; i++)
        r.list.items[i] = eval_expr(l, e->list.items[i]);
    return r;
}

static Value eval_index(Lower *l, const Expr *e)
{
    Value base = eval_expr(l, e->index.base);
    Value index = eval_expr(l, e->index.index);
    if (base.kind == VAL_ERROR || index.kind == VAL_ERROR)
        return val_error();
    if (base.kind != VAL_LIST && base.kind != VAL_TUPLE) {
        diag_error(e->index.base->loc, "only lists and tuples can be indexed, not %s",
                   val_kind_name(&base));
        return val_error();
    }
    int64_t i;
    if (!val_to_int(&index, "index", -base.list.n, base.list.n - 1, &i))
        return val_error();
    if (i < 0)
        i += base.list.n;
    Value r = base.list.items[i];
    r.loc = e->loc;
    return r;
}

/* Evaluates the arguments of a call into `args` (arena storage). */
static bool eval_call_args(Lower *l, const Expr *e, CallArgs *args)
{
    int npos = 0, nkw = 0;
    for (int i = 0; i < e->call.nargs; i++) {
        if (e->call.args[i].name)
            nkw++;
        else
            npos++;
    }
    Value *pos = arena_calloc(l->arena, (size_t)npos + 1, sizeof(Value));
    const char **names = arena_calloc(l->arena, (size_t)nkw + 1, sizeof(char *));
    Value *kws = arena_calloc(l->arena, (size_t)nkw + 1, sizeof(Value));
    SrcLoc *locs = arena_calloc(l->arena, (size_t)nkw + 1, sizeof(SrcLoc));
    bool ok = true;
    int ip = 0, ik = 0;
    for (int i = 0; i < e->call.nargs; i++) {
        const Arg *a = &e->call.args[i];
        Value v = eval_expr(l, a->value);
        ok &= v.kind != VAL_ERROR;
        if (a->name) {
            names[ik] = a->name;
            locs[ik] = a->name_loc;
            kws[ik++] = v;
        } else {
            pos[ip++] = v;
        }
    }
    *args = (CallArgs){.positional = pos, .npositional = npos, .kw_names = names,
                       .kw_values = kws, .kw_locs = locs, .nkw = nkw, .loc = e->loc};
    return ok;
}

static Value configure(Lower *l, const Decl *d, const CallArgs *args);

/* Removes the keyword argument `name` from a block call into *name, as
 * for a builtin layer, unless the model has a hyperparameter of that
 * name. Returns whether the call named the block. */
static bool take_block_name(Lower *l, const Decl *model, CallArgs *args, Value *name)
{
    for (int i = 0; i < model->nparams; i++)
        if (strcmp(model->params[i].name, "name") == 0)
            return false;
    for (int k = 0; k < args->nkw; k++) {
        if (strcmp(args->kw_names[k], "name") != 0)
            continue;
        *name = args->kw_values[k];
        const char **names = arena_calloc(l->arena, (size_t)args->nkw, sizeof *names);
        Value *values = arena_calloc(l->arena, (size_t)args->nkw, sizeof *values);
        SrcLoc *locs = arena_calloc(l->arena, (size_t)args->nkw, sizeof *locs);
        int n = 0;
        for (int j = 0; j < args->nkw; j++) {
            if (j == k)
                continue;
            names[n] = args->kw_names[j];
            values[n] = args->kw_values[j];
            locs[n++] = args->kw_locs[j];
        }
        args->kw_names = names;
        args->kw_values = values;
        args->kw_locs = locs;
        args->nkw = n;
        return true;
    }
    return false;
}

static Value eval_call(Lower *l, const Expr *e)
{
    Value callee = eval_expr(l, e->call.callee);
    CallArgs args;
    bool ok = eval_call_args(l, e, &args);
    if (callee.kind == VAL_ERROR)
        return val_error();
    /* Poisoned arguments still go through binding, so that an arity
     * mistake in the same call is reported; the callee returns poison. */

    if (callee.kind == VAL_BUILTIN)
        return call_builtin(l, callee.builtin, &args);
    if (callee.kind == VAL_DECL && callee.decl->kind == DECL_MODEL) {
        if (l->mode == MODE_MODEL) {
            Value block_name;
            bool named = take_block_name(l, callee.decl, &args, &block_name);
            return call_block(l, callee.decl, &args, named ? &block_name : NULL);
        }
        if (l->mode == MODE_EXPERIMENT) {
            Value v = configure(l, callee.decl, &args);
            return ok ? v : val_error();
        }
        diag_error(e->loc, "model '%s' can only be called in a model or an experiment",
                   callee.decl->name);
        return val_error();
    }
    if (callee.kind == VAL_DECL && callee.decl->kind == DECL_OPTIMIZER) {
        if (l->mode == MODE_EXPERIMENT) {
            Value v = sweep_requested(callee.decl, &args)
                          ? sweep_configure(l, callee.decl, &args, configure)
                          : configure(l, callee.decl, &args);
            return ok ? v : val_error();
        }
        diag_error(e->loc, "optimizer '%s' can only be configured in an experiment",
                   callee.decl->name);
        return val_error();
    }
    diag_error(e->call.callee->loc, "%s is not callable", val_kind_name(&callee));
    return val_error();
}

Value eval_expr(Lower *l, const Expr *e)
{
    switch (e->kind) {
    case EX_NUMBER: {
        Value v = val_number(e->number.value, e->loc);
        v.number.is_integer = e->number.is_integer || v.number.is_integer;
        return v;
    }
    case EX_STRING: {
        Value v = val_none(e->loc);
        v.kind = VAL_STRING;
        v.string = e->string;
        return v;
    }
    case EX_BOOL:
        return val_bool(e->boolean, e->loc);
    case EX_NAME:
        return eval_name(l, e);
    case EX_UNARY:
        return eval_unary(l, e);
    case EX_BINARY:
        return eval_binary(l, e);
    case EX_CALL:
        return eval_call(l, e);
    case EX_LIST:
    case EX_TUPLE:
        return eval_list(l, e);
    case EX_INDEX:
        return eval_index(l, e);
    case EX_MEMBER:
        diag_error(e->loc, "member access is not supported here");
        return val_error();
    }
    BOCB_UNREACHABLE("expression kind");
}

/* ---- argument binding ----------------------------------------------------- */

bool bind_args(Lower *l, const Signature *sig, const CallArgs *args, Value *out)
{
    bool ok = true;
    for (int i = 0; i < sig->nparams; i++)
        out[i] = val_none(args->loc);
    bool *given = arena_calloc(l->arena, (size_t)sig->nparams + 1, sizeof(bool));

    if (args->npositional > sig->nparams) {
        diag_error(args->positional[sig->nparams].loc,
                   "%s takes at most %d positional argument%s, but %d were given",
                   sig->what, sig->nparams, sig->nparams == 1 ? "" : "s",
                   args->npositional);
        ok = false;
    }
    for (int i = 0; i < args->npositional && i < sig->nparams; i++) {
        out[i] = args->positional[i];
        given[i] = true;
    }
    for (int k = 0; k < args->nkw; k++) {
        int idx = -1;
        for (int i = 0; i < sig->nparams; i++)
            if (strcmp(sig->names[i], args->kw_names[k]) == 0)
                idx = i;
        if (idx < 0) {
            const char *near = closest_name(args->kw_names[k], sig->names, sig->nparams);
            if (near)
                diag_error(args->kw_locs[k], "%s has no parameter '%s'; did you mean '%s'?",
                           sig->what, args->kw_names[k], near);
            else
                diag_error(args->kw_locs[k], "%s has no parameter '%s'", sig->what,
                           args->kw_names[k]);
            ok = false;
            continue;
        }
        if (given[idx]) {
            diag_error(args->kw_locs[k], "%s got more than one value for '%s'", sig->what,
                       sig->names[idx]);
            ok = false;
            continue;
        }
        out[idx] = args->kw_values[k];
        given[idx] = true;
    }
    for (int i = 0; i < sig->nrequired; i++) {
        if (!given[i]) {
            diag_error(args->loc, "%s is missing the argument '%s'", sig->what,
                       sig->names[i]);
            ok = false;
        }
    }
    return ok;
}

Signature decl_signature(Lower *l, const Decl *d)
{
    const char **names = arena_calloc(l->arena, (size_t)d->nparams + 1, sizeof(char *));
    int nrequired = 0;
    for (int i = 0; i < d->nparams; i++) {
        names[i] = d->params[i].name;
        if (!d->params[i].default_value && nrequired == i)
            nrequired = i + 1;
    }
    const char *kind = d->kind == DECL_MODEL ? "model" : "optimizer";
    return (Signature){.what = arena_printf(l->arena, "%s '%s'", kind, d->name),
                       .names = names, .nparams = d->nparams, .nrequired = nrequired};
}

/* Binds `name(k = v, ...)` in an experiment: every argument by name, each
 * one a hyperparameter of the declaration. */
static Value configure(Lower *l, const Decl *d, const CallArgs *args)
{
    bool ok = true;
    if (args->npositional > 0) {
        diag_error(args->positional[0].loc,
                   "arguments of %s '%s' in an experiment must be given by name",
                   d->kind == DECL_MODEL ? "model" : "optimizer", d->name);
        ok = false;
    }
    for (int k = 0; k < args->nkw; k++) {
        int idx = -1;
        const char **names = arena_calloc(l->arena, (size_t)d->nparams + 1, sizeof(char *));
        for (int i = 0; i < d->nparams; i++) {
            names[i] = d->params[i].name;
            if (strcmp(d->params[i].name, args->kw_names[k]) == 0)
                idx = i;
        }
        const char *kind = d->kind == DECL_MODEL ? "model" : "optimizer";
        const char *what = d->kind == DECL_MODEL ? "parameter" : "hyperparameter";
        if (idx < 0) {
            const char *near = closest_name(args->kw_names[k], names, d->nparams);
            if (near)
                diag_error(args->kw_locs[k], "%s '%s' has no %s '%s'; did you mean '%s'?",
                           kind, d->name, what, args->kw_names[k], near);
            else
                diag_error(args->kw_locs[k], "%s '%s' has no %s '%s'", kind, d->name, what,
                           args->kw_names[k]);
            ok = false;
        } else if (d->params[idx].type) {
            diag_error(args->kw_locs[k], "'%s' is the tensor input of model '%s' and cannot be set",
                       args->kw_names[k], d->name);
            ok = false;
        } else {
            ok &= check_override_kind(l, d, &d->params[idx], &args->kw_values[k]);
        }
        for (int j = 0; j < k; j++) {
            if (strcmp(args->kw_names[j], args->kw_names[k]) == 0) {
                diag_error(args->kw_locs[k], "'%s' is given more than once", args->kw_names[k]);
                ok = false;
            }
        }
    }
    if (!ok)
        return val_error();

    Configured *c = arena_calloc(l->arena, 1, sizeof *c);
    c->decl = d;
    c->loc = args->loc;
    c->nargs = args->nkw;
    c->names = arena_calloc(l->arena, (size_t)args->nkw + 1, sizeof(char *));
    c->values = arena_calloc(l->arena, (size_t)args->nkw + 1, sizeof(Value));
    c->locs = arena_calloc(l->arena, (size_t)args->nkw + 1, sizeof(SrcLoc));
    StrBuf label = {0};
    sb_printf(&label, "%s(", d->name);
    for (int k = 0; k < args->nkw; k++) {
        c->names[k] = args->kw_names[k];
        c->values[k] = args->kw_values[k];
        c->locs[k] = args->kw_locs[k];
        sb_printf(&label, "%s%s=%s", k ? ", " : "", c->names[k], val_format(l, &c->values[k]));
    }
    sb_append(&label, ")");
    c->label = args->nkw ? arena_strdup(l->arena, label.data) : d->name;
    sb_free(&label);

    Value v = val_none(args->loc);
    v.kind = VAL_CONFIGURED;
    v.configured = c;
    return v;
}

/* ---- statements ----------------------------------------------------------- */

static void exec_stmt(Lower *l, const Stmt *s);

void exec_block(Lower *l, const Block *b)
{
    for (int i = 0; i < b->nstmts && !l->returned; i++)
        exec_stmt(l, b->stmts[i]);
}

static void exec_assign(Lower *l, const Stmt *s)
{
    const Expr *target = s->assign.target;
    /* The parser also accepts members and indexes as targets, but lists
     * and tuples are constants here and nothing has members. */
    if (target->kind != EX_NAME) {
        diag_error(target->loc, "only a name can be assigned in %s; build a new list "
                   "instead of assigning to an element or a member",
                   l->mode == MODE_OPTIMIZER ? "an optimizer rule" : "a model");
        return;
    }
    const char *name = target->name;
    Value v;
    if (s->assign.compound) {
        Expr synthetic = {.kind = EX_BINARY, .loc = s->loc};
        synthetic.binary.op = s->assign.op;
        synthetic.binary.lhs = (Expr *)target;
        synthetic.binary.rhs = s->assign.value;
        v = eval_expr(l, &synthetic);
    } else {
        v = eval_expr(l, s->assign.value);
    }

    if (l->mode == MODE_OPTIMIZER && strcmp(name, "param") == 0 && v.kind != VAL_ERROR) {
        const IrVar *p = &l->module->vars[l->opt_param_var];
        int t = as_tensor(l, &v, "the new value of 'param'");
        if (t < 0)
            return;
        Shape shape = ir_node(l->graph, t)->shape;
        if (ir_node(l->graph, t)->dtype != p->dtype) {
            diag_error(s->loc, "assignment gives 'param' the element type %s instead of %s",
                       dtype_name(ir_node(l->graph, t)->dtype), dtype_name(p->dtype));
            return;
        }
        if (!ir_can_broadcast(&shape, &p->shape)) {
            diag_error(s->loc, "assignment changes the shape of 'param' from %s to %s",
                       shape_text(l, &p->shape), shape_text(l, &shape));
            return;
        }
        v = val_tensor(ir_broadcast(l->graph, t, p->shape, s->loc), s->loc);
    }
    scope_set(l, l->scope, name, v);
}

static void exec_if(Lower *l, const Stmt *s)
{
    Value c = eval_expr(l, s->if_.cond);
    if (c.kind == VAL_ERROR)
        return;
    if (c.kind != VAL_BOOL) {
        diag_error(s->if_.cond->loc,
                   "condition of 'if' must be a compile-time boolean, but it is %s%s",
                   val_kind_name(&c),
                   c.kind == VAL_TENSOR ? "; use where(cond, a, b) to select elementwise" : "");
        return;
    }
    if (c.boolean)
        exec_block(l, &s->if_.then_block);
    else if (s->if_.has_else)
        exec_block(l, &s->if_.else_block);
}

static void exec_for(Lower *l, const Stmt *s)
{
    Value it = eval_expr(l, s->for_.iterable);
    if (it.kind == VAL_ERROR)
        return;
    if (it.kind != VAL_LIST && it.kind != VAL_TUPLE) {
        diag_error(s->for_.iterable->loc, "'for' iterates over a list or a tuple, not %s",
                   val_kind_name(&it));
        return;
    }
    for (int i = 0; i < it.list.n && !l->returned; i++) {
        scope_set(l, l->scope, s->for_.var, it.list.items[i]);
        exec_block(l, &s->for_.body);
    }
}

static void exec_stmt(Lower *l, const Stmt *s)
{
    switch (s->kind) {
    case ST_ASSIGN:
        if (l->mode == MODE_EXPERIMENT || l->mode == MODE_CONST)
            BOCB_UNREACHABLE("experiment statements are handled by experiment.c");
        exec_assign(l, s);
        return;
    case ST_STATE:
        if (l->mode != MODE_OPTIMIZER) {
            diag_error(s->loc, "'state' is only allowed in optimizer rules");
            return;
        }
        declare_state(l, s);
        return;
    case ST_RETURN:
        if (l->mode != MODE_MODEL) {
            diag_error(s->loc, "'return' is only allowed in models");
            return;
        }
        if (!s->ret.value) {
            diag_error(s->loc, "a model must return a tensor");
            l->return_value = val_error();
        } else {
            l->return_value = eval_expr(l, s->ret.value);
        }
        l->returned = true;
        return;
    case ST_IF:
        exec_if(l, s);
        return;
    case ST_FOR:
        exec_for(l, s);
        return;
    case ST_REPEAT: {
        Value n = eval_expr(l, s->repeat.count);
        int64_t count;
        if (!val_to_int(&n, "repeat count", 0, 1 << 20, &count))
            return;
        for (int64_t i = 0; i < count && !l->returned; i++)
            exec_block(l, &s->repeat.body);
        return;
    }
    case ST_EXPR:
        eval_expr(l, s->expr.expr);
        return;
    case ST_DIRECTIVE:
        diag_error(s->loc, "'%s' is only allowed in experiments", s->directive.keyword);
        return;
    }
}

/* ---- naming --------------------------------------------------------------- */

void push_prefix(Lower *l, const char *local)
{
    if (l->prefix.len)
        sb_append(&l->prefix, ".");
    sb_append(&l->prefix, local);
    l->depth++;
}

void pop_prefix(Lower *l, size_t saved_len)
{
    l->prefix.len = saved_len;
    if (l->prefix.data)
        l->prefix.data[saved_len] = '\0';
    /* Counters of the level being left start afresh next time. */
    int keep = 0;
    for (int i = 0; i < l->counters.len; i++)
        if (l->counters.data[i].depth < l->depth)
            l->counters.data[keep++] = l->counters.data[i];
    l->counters.len = keep;
    l->depth--;
}

/* Returns true when `name` can be one component of a parameter name: a
 * letter or underscore, then letters, digits and underscores. */
static bool valid_name_component(const char *name)
{
    if (!name[0] || !(isalpha((unsigned char)name[0]) || name[0] == '_'))
        return false;
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false;
    return true;
}

const char *layer_name(Lower *l, const char *kind, const Value *explicit_name)
{
    if (explicit_name && explicit_name->kind != VAL_NONE && explicit_name->kind != VAL_ERROR) {
        if (explicit_name->kind == VAL_STRING && valid_name_component(explicit_name->string))
            return explicit_name->string;
        diag_error(explicit_name->loc, "a layer name must be a string of letters, digits and "
                   "underscores, such as \"head\"");
    }
    for (int i = 0; i < l->counters.len; i++) {
        LayerCounter *c = &l->counters.data[i];
        if (c->depth == l->depth && strcmp(c->kind, kind) == 0)
            return arena_printf(l->arena, "%s%d", kind, ++c->count);
    }
    LayerCounter c = {.kind = kind, .count = 1, .depth = l->depth};
    VEC_PUSH(&l->counters, c);
    return arena_printf(l->arena, "%s1", kind);
}

static int create_var(Lower *l, const char *local, IrVarKind kind, const char *tag,
                      Shape shape, IrInit init, double init_value, SrcLoc loc);

int create_param(Lower *l, const char *local, const char *tag, Shape shape, IrInit init,
                 double init_value, SrcLoc loc)
{
    return create_var(l, local, IR_VAR_PARAM, tag, shape, init, init_value, loc);
}

int create_buffer(Lower *l, const char *local, Shape shape, IrInit init, double init_value,
                  SrcLoc loc)
{
    return create_var(l, local, IR_VAR_BUFFER, NULL, shape, init, init_value, loc);
}

static int create_var(Lower *l, const char *local, IrVarKind kind, const char *tag,
                      Shape shape, IrInit init, double init_value, SrcLoc loc)
{
    const char *name = arena_printf(l->arena, "%s.%s", l->prefix.data ? l->prefix.data : "",
                                    local);
    int var = ir_module_find_var(l->module, name);
    if (var >= 0) {
        for (int i = 0; i < l->vars_seen.len; i++) {
            if (l->vars_seen.data[i] == var) {
                diag_error(loc, "parameter name '%s' is used twice in this model", name);
                diag_note(l->module->vars[var].loc, "first used here");
                return -1;
            }
        }
        /* The model is being instantiated again (evaluation graph). */
        BOCB_ASSERT(shape_equal(&l->module->vars[var].shape, &shape));
    } else {
        var = ir_module_add_var(l->module, name, kind, l->dtype, shape, init,
                                init_value, -1, loc);
        l->module->vars[var].tag = tag;
    }
    VEC_PUSH(&l->vars_seen, var);
    return ir_var_read(l->graph, var, loc);
}

/* ---- models --------------------------------------------------------------- */

int model_input_param(const Decl *model)
{
    for (int i = 0; i < model->nparams; i++)
        if (model->params[i].type)
            return i;
    return -1;
}

/* A named dimension of a model's input type, bound to the size it has
 * in the input the model is given. */
typedef struct NamedDim {
    const char *name;
    int64_t size;
    int axis;
    SrcLoc loc;
} NamedDim;

/* Formats a declared input type as "[B, C, 28, 28]": names as written,
 * with the sizes bound so far where the input matched them. */
static const char *type_text(Lower *l, const TypeExpr *t, const Shape *want,
                             const bool *named)
{
    StrBuf sb = {0};
    sb_append(&sb, "[");
    for (int i = 0; i < t->ndims; i++) {
        if (i > 0)
            sb_append(&sb, ", ");
        if (named[i])
            sb_append(&sb, t->dims[i]->name);
        else
            sb_printf(&sb, "%lld", (long long)want->dims[i]);
    }
    sb_append(&sb, "]");
    const char *r = arena_strdup(l->arena, sb.data);
    sb_free(&sb);
    return r;
}

/* Checks input x against the model's declared tensor type. A name in
 * the first position that is not a constant is the batch dimension. A
 * name elsewhere is bound to the size of its axis on first use. It must
 * have that size wherever it appears again, and it is a constant in the
 * model's body. */
static bool check_input_type(Lower *l, const Decl *model, const Param *p, int x,
                             SrcLoc call_loc)
{
    const TypeExpr *t = p->type;
    Shape s = ir_node(l->graph, x)->shape;
    Shape want = shape_scalar();
    bool ok = true;
    want.rank = t->ndims;
    if (t->ndims > SHAPE_MAX_RANK) {
        diag_error(t->loc, "tensor types have at most %d dimensions", SHAPE_MAX_RANK);
        return false;
    }
    bool named[SHAPE_MAX_RANK] = {false};
    NamedDim dims[SHAPE_MAX_RANK];
    int ndims = 0;
    const char *batch_name = NULL;
    bool same_rank = t->ndims == s.rank;
    for (int i = 0; i < t->ndims; i++) {
        const Expr *d = t->dims[i];
        if (d->kind == EX_NAME && !scope_find(l->scope, d->name)) {
            named[i] = true;
            if (i == 0) {
                batch_name = d->name;
                want.batch_axis = 0;
                want.dims[0] = 1;
                continue;
            }
            if (batch_name && strcmp(batch_name, d->name) == 0) {
                diag_error(d->loc, "'%s' is the batch dimension and can only be the first "
                           "dimension", d->name);
                ok = false;
                continue;
            }
            int64_t size = same_rank ? s.dims[i] : 0;
            const NamedDim *first = NULL;
            for (int j = 0; j < ndims; j++)
                if (strcmp(dims[j].name, d->name) == 0)
                    first = &dims[j];
            if (first && same_rank && s.batch_axis != i && first->size != size) {
                diag_error(call_loc, "dimension '%s' of input '%s' of model '%s' is %lld in "
                           "axis %d, but %lld in axis %d", d->name, p->name, model->name,
                           (long long)first->size, first->axis, (long long)size, i);
                diag_note(first->loc, "'%s' is bound to %lld here", d->name,
                          (long long)first->size);
                diag_note(d->loc, "and must be %lld here too", (long long)first->size);
                ok = false;
                continue;
            }
            want.dims[i] = size;
            if (!first)
                dims[ndims++] = (NamedDim){.name = d->name, .size = size, .axis = i,
                                           .loc = d->loc};
            continue;
        }
        Value v = eval_expr(l, d);
        int64_t n;
        if (!val_to_int(&v, "a tensor dimension", 1, INT64_C(1) << 40, &n)) {
            ok = false;
            continue;
        }
        want.dims[i] = n;
    }
    if (t->dtype && strcmp(t->dtype, "f32") != 0 && strcmp(t->dtype, "f64") != 0) {
        diag_error(t->loc, "unknown element type '%s'; expected f32 or f64", t->dtype);
        ok = false;
    } else if (t->dtype && strcmp(t->dtype, dtype_name(l->dtype)) != 0) {
        diag_error(t->loc, "the input of model '%s' is declared %s, but experiments train "
                   "in %s", model->name, t->dtype, dtype_name(l->dtype));
        ok = false;
    }
    if (ok && !shape_equal(&want, &s)) {
        /* Named sizes were copied from the input, so they can only differ
         * in rank or in whether the axis is the batch. */
        bool any_named = ndims > 0;
        diag_error(call_loc, "model '%s' expects input of shape %s, but it is given %s",
                   model->name, any_named ? type_text(l, t, &want, named)
                                          : shape_text(l, &want), shape_text(l, &s));
        diag_note(t->loc, "input type declared here");
        ok = false;
    }
    for (int i = 0; ok && i < ndims; i++)
        scope_set(l, l->scope, dims[i].name, val_number((double)dims[i].size, dims[i].loc));
    return ok;
}

/* Runs a model body in a fresh scope with `bound` parameter values. */
static Value run_model_body(Lower *l, const Decl *model, Value *bound, SrcLoc call_loc)
{
    Scope scope = {.parent = &l->globals};
    Scope *saved_scope = l->scope;
    EvalMode saved_mode = l->mode;
    const Decl *saved_decl = l->current_decl;
    l->scope = &scope;
    l->mode = MODE_MODEL;
    l->current_decl = model;
    Value result = val_error();

    bool ok = true;
    for (int i = 0; i < model->nparams; i++) {
        const Param *p = &model->params[i];
        Value v = bound[i];
        if (v.kind == VAL_NONE && p->default_value)
            v = eval_expr(l, p->default_value);
        if (v.kind == VAL_ERROR)
            ok = false;
        if (p->type && v.kind == VAL_TENSOR)
            ok &= check_input_type(l, model, p, v.tensor, call_loc);
        else if (p->type && v.kind != VAL_ERROR) {
            diag_error(v.loc, "input '%s' of model '%s' must be a tensor, but it is %s",
                       p->name, model->name, val_kind_name(&v));
            ok = false;
        }
        scope_set(l, &scope, p->name, v);
    }

    if (ok) {
        bool saved_returned = l->returned;
        Value saved_return = l->return_value;
        l->returned = false;
        l->return_value = val_error();
        exec_block(l, &model->body);
        if (!l->returned)
            diag_error(model->name_loc, "model '%s' does not return a value", model->name);
        else
            result = l->return_value;
        if (l->returned && result.kind != VAL_TENSOR && result.kind != VAL_ERROR) {
            diag_error(result.loc, "model '%s' must return a tensor, but this is %s",
                       model->name, val_kind_name(&result));
            result = val_error();
        }
        l->returned = saved_returned;
        l->return_value = saved_return;
    }

    scope_free(&scope);
    l->scope = saved_scope;
    l->mode = saved_mode;
    l->current_decl = saved_decl;
    return result;
}

Value instantiate_model(Lower *l, const Decl *model, const Value *x,
                        const Configured *overrides, SrcLoc call_loc)
{
    int input = model_input_param(model);
    if (input < 0) {
        diag_error(model->name_loc, "model '%s' has no tensor input; declare one like "
                   "'x: [B, 1, 28, 28]'", model->name);
        return val_error();
    }
    Value *bound = arena_calloc(l->arena, (size_t)model->nparams + 1, sizeof(Value));
    for (int i = 0; i < model->nparams; i++)
        bound[i] = val_none(call_loc);
    bound[input] = *x;
    for (int k = 0; overrides && k < overrides->nargs; k++)
        for (int i = 0; i < model->nparams; i++)
            if (strcmp(model->params[i].name, overrides->names[k]) == 0)
                bound[i] = overrides->values[k];
    for (int i = 0; i < model->nparams; i++) {
        if (bound[i].kind == VAL_NONE && !model->params[i].default_value) {
            diag_error(call_loc, "model '%s' needs a value for '%s'", model->name,
                       model->params[i].name);
            return val_error();
        }
    }

    size_t saved = l->prefix.len;
    push_prefix(l, model->name);
    l->vars_seen.len = 0;
    int errors = diag_error_count();
    Value r = run_model_body(l, model, bound, call_loc);
    pop_prefix(l, saved);
    /* The note helps where the configuration matters (it has arguments)
     * or where the error is far from it (the model is in another file). */
    if (diag_error_count() != errors && overrides && overrides->loc.file &&
        (overrides->nargs > 0 || model->loc.file != overrides->loc.file))
        diag_note(overrides->loc, "while instantiating model '%s', as configured here",
                  model->name);
    return r;
}

Value call_block(Lower *l, const Decl *model, const CallArgs *args,
                 const Value *explicit_name)
{
    if (l->depth >= MAX_MODEL_DEPTH) {
        diag_error(args->loc, "models nested more than %d deep (does '%s' call itself?)",
                   MAX_MODEL_DEPTH, model->name);
        return val_error();
    }
    if (model_input_param(model) < 0) {
        diag_error(args->loc, "model '%s' has no tensor input", model->name);
        return val_error();
    }
    Signature sig = decl_signature(l, model);
    Value *bound = arena_calloc(l->arena, (size_t)model->nparams + 1, sizeof(Value));
    if (!bind_args(l, &sig, args, bound))
        return val_error();
    bool kinds_ok = true;
    for (int i = 0; i < model->nparams; i++) {
        if (bound[i].kind == VAL_ERROR)
            return val_error();
        if (!model->params[i].type && bound[i].kind != VAL_NONE)
            kinds_ok &= check_override_kind(l, model, &model->params[i], &bound[i]);
    }
    if (!kinds_ok)
        return val_error();

    /* name = "" puts the block's parameters at the caller's level, so a
     * model that only configures another one adds no level of its own. */
    size_t saved = l->prefix.len;
    bool same_level = explicit_name && explicit_name->kind == VAL_STRING &&
                      explicit_name->string[0] == '\0';
    if (!same_level)
        push_prefix(l, layer_name(l, model->name, explicit_name));
    Value r = run_model_body(l, model, bound, args->loc);
    pop_prefix(l, saved);
    return r;
}

/* ---- set-up --------------------------------------------------------------- */

const Decl *find_decl(Lower *l, const char *name, DeclKind kind)
{
    Value *v = scope_find(&l->globals, name);
    if (v && v->kind == VAL_DECL && v->decl->kind == kind)
        return v->decl;
    return NULL;
}

static const char *decl_kind_name(DeclKind k)
{
    switch (k) {
    case DECL_MODEL: return "model";
    case DECL_OPTIMIZER: return "optimizer";
    case DECL_DATA: return "data";
    case DECL_EXPERIMENT: return "experiment";
    case DECL_CONST: return "constant";
    case DECL_IMPORT: return "import";
    }
    return "declaration";
}

/* Checks what a declaration's header alone can tell: repeated parameter
 * names, a model's tensor inputs, and names that hide builtins. */
static void check_declaration(Lower *l, const Decl *d)
{
    (void)l;
    if (builtin_find(d->name))
        diag_warning(d->name_loc, "%s '%s' hides the builtin '%s'", decl_kind_name(d->kind),
                     d->name, d->name);
    int inputs = 0;
    for (int i = 0; i < d->nparams; i++) {
        const Param *p = &d->params[i];
        for (int j = 0; j < i; j++) {
            if (strcmp(d->params[j].name, p->name) == 0) {
                diag_error(p->loc, "parameter '%s' is declared twice", p->name);
                diag_note(d->params[j].loc, "first declared here");
            }
        }
        if (!p->type)
            continue;
        if (d->kind == DECL_MODEL && ++inputs == 2)
            diag_error(p->loc, "model '%s' has a second tensor input '%s'; a model takes one "
                       "tensor input", d->name, p->name);
    }
}

void lower_init(Lower *l, const Program *program, Arena *arena)
{
    memset(l, 0, sizeof *l);
    l->arena = arena;
    l->program = program;
    l->scope = &l->globals;
    l->mode = MODE_CONST;
    l->dtype = DT_F32;

    /* Declarations first, so that constants may name any of them; then
     * constants in source order, each seeing the ones before it. */
    VEC(const Decl *) seen = {0};
    for (int m = 0; m < program->nmodules; m++) {
        const Module *mod = program->modules[m];
        for (int i = 0; i < mod->ndecls; i++) {
            const Decl *d = mod->decls[i];
            if (d->kind == DECL_IMPORT)
                continue;
            const Decl *prev = NULL;
            for (int j = 0; j < seen.len; j++)
                if (strcmp(seen.data[j]->name, d->name) == 0)
                    prev = seen.data[j];
            if (prev) {
                diag_error(d->name_loc, "redefinition of '%s'", d->name);
                diag_note(prev->name_loc, "previous definition of %s '%s' is here",
                          decl_kind_name(prev->kind), prev->name);
                continue;
            }
            VEC_PUSH(&seen, d);
            Value v = val_none(d->name_loc);
            if (d->kind != DECL_CONST) {
                v.kind = VAL_DECL;
                v.decl = d;
            }
            scope_set(l, &l->globals, d->name, v);
        }
    }
    for (int i = 0; i < seen.len; i++)
        check_declaration(l, seen.data[i]);
    for (int i = 0; i < seen.len; i++) {
        const Decl *d = seen.data[i];
        if (d->kind != DECL_CONST)
            continue;
        Value v = eval_expr(l, d->value);
        if (v.kind == VAL_TENSOR)
            BOCB_UNREACHABLE("tensor constant without a graph");
        scope_set(l, &l->globals, d->name, v);
    }
    VEC_FREE(&seen);
    resolve_names(l);
}

void lower_free(Lower *l)
{
    scope_free(&l->globals);
    sb_free(&l->prefix);
    VEC_FREE(&l->counters);
    VEC_FREE(&l->vars_seen);
    VEC_FREE(&l->opt_states);
    VEC_FREE(&l->unknown_names);
    for (int i = 0; i < l->body_locals.len; i++)
        VEC_FREE(&l->body_locals.data[i].names);
    VEC_FREE(&l->body_locals);
}
