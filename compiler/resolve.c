/* resolve.c - name resolution over every model and optimizer body.
 *
 * The evaluator only visits the statements it executes, so a misspelled name
 * inside `if momentum != 0 { ... }` would go unnoticed until someone set
 * the momentum. This pass checks every name in every body, executed or
 * not, with Python's scoping: a name assigned anywhere in a body (or
 * declared as a state, or bound by `for`) is local to the whole body.
 * The evaluator then stays silent about names this pass already reported.
 */
#include <string.h>

#include "eval.h"

typedef VEC(const char *) NameVec;

static bool contains(const NameVec *names, const char *name)
{
    for (int i = 0; i < names->len; i++)
        if (strcmp(names->data[i], name) == 0)
            return true;
    return false;
}

static void collect_locals(const Block *b, NameVec *out);

static void collect_stmt_locals(const Stmt *s, NameVec *out)
{
    switch (s->kind) {
    case ST_ASSIGN:
        if (s->assign.target->kind == EX_NAME)
            VEC_PUSH(out, s->assign.target->name);
        break;
    case ST_STATE:
        VEC_PUSH(out, s->state.name);
        break;
    case ST_FOR:
        VEC_PUSH(out, s->for_.var);
        collect_locals(&s->for_.body, out);
        break;
    case ST_IF:
        collect_locals(&s->if_.then_block, out);
        collect_locals(&s->if_.else_block, out);
        break;
    case ST_REPEAT:
        collect_locals(&s->repeat.body, out);
        break;
    default:
        break;
    }
}

static void collect_locals(const Block *b, NameVec *out)
{
    for (int i = 0; i < b->nstmts; i++)
        collect_stmt_locals(b->stmts[i], out);
}

typedef struct Resolver {
    Lower *l;
    NameVec known;
    NameVec read; /* every name the body reads, for the unused warnings */
} Resolver;

static void check_name(Resolver *r, const char *name, SrcLoc loc)
{
    VEC_PUSH(&r->read, name);
    if (contains(&r->known, name) || scope_find(&r->l->globals, name) || builtin_find(name))
        return;
    NameVec candidates = {0};
    for (int i = 0; i < r->known.len; i++)
        VEC_PUSH(&candidates, r->known.data[i]);
    for (int i = 0; i < r->l->globals.bindings.len; i++)
        VEC_PUSH(&candidates, r->l->globals.bindings.data[i].name);
    for (const char *const *b = builtin_names(); *b; b++)
        VEC_PUSH(&candidates, *b);
    const char *near = closest_name(name, candidates.data, candidates.len);
    const char *message =
        near ? arena_printf(r->l->arena, "unknown name '%s'; did you mean '%s'?", name, near)
             : arena_printf(r->l->arena, "unknown name '%s'", name);
    diag_error(loc, "%s", message);
    VEC_FREE(&candidates);
    struct ReportedName reported = {.loc = loc, .message = message};
    VEC_PUSH(&r->l->unknown_names, reported);
}

static void check_expr(Resolver *r, const Expr *e)
{
    if (!e)
        return;
    switch (e->kind) {
    case EX_NAME:
        check_name(r, e->name, e->loc);
        return;
    case EX_UNARY:
        check_expr(r, e->unary.operand);
        return;
    case EX_BINARY:
        check_expr(r, e->binary.lhs);
        check_expr(r, e->binary.rhs);
        return;
    case EX_CALL:
        check_expr(r, e->call.callee);
        for (int i = 0; i < e->call.nargs; i++)
            check_expr(r, e->call.args[i].value);
        return;
    case EX_LIST:
    case EX_TUPLE:
        for (int i = 0; i < e->list.nitems; i++)
            check_expr(r, e->list.items[i]);
        return;
    case EX_INDEX:
        check_expr(r, e->index.base);
        check_expr(r, e->index.index);
        return;
    case EX_MEMBER:
        check_expr(r, e->member.base);
        return;
    case EX_NUMBER:
    case EX_STRING:
    case EX_BOOL:
        return;
    }
}

static void check_block(Resolver *r, const Block *b);

static void check_stmt(Resolver *r, const Stmt *s)
{
    switch (s->kind) {
    case ST_ASSIGN:
        if (s->assign.compound || s->assign.target->kind != EX_NAME)
            check_expr(r, s->assign.target);
        check_expr(r, s->assign.value);
        return;
    case ST_STATE:
        check_expr(r, s->state.init);
        return;
    case ST_RETURN:
        check_expr(r, s->ret.value);
        return;
    case ST_IF:
        check_expr(r, s->if_.cond);
        check_block(r, &s->if_.then_block);
        check_block(r, &s->if_.else_block);
        return;
    case ST_FOR:
        check_expr(r, s->for_.iterable);
        check_block(r, &s->for_.body);
        return;
    case ST_REPEAT:
        check_expr(r, s->repeat.count);
        check_block(r, &s->repeat.body);
        return;
    case ST_EXPR:
        check_expr(r, s->expr.expr);
        return;
    case ST_DIRECTIVE:
        /* A group's name is not a reference; groups are experiment-only. */
        if (strcmp(s->directive.keyword, "group") != 0)
            check_expr(r, s->directive.value);
        return;
    }
}

static void check_block(Resolver *r, const Block *b)
{
    for (int i = 0; i < b->nstmts; i++)
        check_stmt(r, b->stmts[i]);
}

/* ---- unused names ------------------------------------------------------- */

/* A name the body assigns, at its first assignment. */
typedef struct Assigned {
    const char *name;
    SrcLoc loc;
} Assigned;

typedef VEC(Assigned) AssignedVec;

static void collect_assigned(const Block *b, AssignedVec *out)
{
    for (int i = 0; i < b->nstmts; i++) {
        const Stmt *s = b->stmts[i];
        Assigned a = {0};
        switch (s->kind) {
        case ST_ASSIGN:
            if (s->assign.target->kind == EX_NAME && !s->assign.compound)
                a = (Assigned){s->assign.target->name, s->assign.target->loc};
            break;
        case ST_STATE:
            a = (Assigned){s->state.name, s->state.name_loc};
            break;
        case ST_FOR:
            collect_assigned(&s->for_.body, out);
            break;
        case ST_IF:
            collect_assigned(&s->if_.then_block, out);
            collect_assigned(&s->if_.else_block, out);
            break;
        case ST_REPEAT:
            collect_assigned(&s->repeat.body, out);
            break;
        default:
            break;
        }
        if (!a.name)
            continue;
        bool seen = false;
        for (int j = 0; j < out->len && !seen; j++)
            seen = strcmp(out->data[j].name, a.name) == 0;
        if (!seen)
            VEC_PUSH(out, a);
    }
}

/* Warns about locals that are assigned and never read, and about model
 * hyperparameters that are never read. A name that starts with '_' is
 * exempt, and so are loop variables and an optimizer's 'param', which
 * is its result. */
static void warn_unused(Resolver *r, const Decl *d)
{
    AssignedVec assigned = {0};
    collect_assigned(&d->body, &assigned);
    for (int i = 0; i < assigned.len; i++) {
        const Assigned *a = &assigned.data[i];
        if (a->name[0] == '_' || contains(&r->read, a->name) ||
            (d->kind == DECL_OPTIMIZER && strcmp(a->name, "param") == 0))
            continue;
        bool is_param = false;
        for (int j = 0; j < d->nparams; j++)
            is_param |= strcmp(d->params[j].name, a->name) == 0;
        if (is_param)
            continue; /* reassigning a parameter: it is reported below if unread */
        diag_warning(a->loc, "'%s' is assigned but never read; rename it '_%s' if that is "
                     "intended", a->name, a->name);
    }
    VEC_FREE(&assigned);
    if (d->kind != DECL_MODEL)
        return;
    for (int i = 0; i < d->nparams; i++) {
        const Param *p = &d->params[i];
        if (p->type || p->name[0] == '_' || contains(&r->read, p->name))
            continue;
        diag_warning(p->loc, "hyperparameter '%s' of model '%s' is never read; rename it "
                     "'_%s' if that is intended", p->name, d->name, p->name);
    }
}

static void resolve_decl(Lower *l, const Decl *d)
{
    Resolver r = {.l = l};
    for (int i = 0; i < d->nparams; i++) {
        const Param *p = &d->params[i];
        VEC_PUSH(&r.known, p->name);
        /* Named sizes of an input type, [B, C, H, W], are constants in
         * the body; the first is the batch, which is not. */
        for (int j = 1; p->type && j < p->type->ndims; j++)
            if (p->type->dims[j]->kind == EX_NAME)
                VEC_PUSH(&r.known, p->type->dims[j]->name);
    }
    /* A type reads the hyperparameters and constants it names, [B, N]. */
    for (int i = 0; i < d->nparams; i++)
        for (int j = 0; d->params[i].type && j < d->params[i].type->ndims; j++)
            if (d->params[i].type->dims[j]->kind == EX_NAME)
                VEC_PUSH(&r.read, d->params[i].type->dims[j]->name);
    if (d->kind == DECL_OPTIMIZER) {
        VEC_PUSH(&r.known, "param");
        VEC_PUSH(&r.known, "grad");
        VEC_PUSH(&r.known, "step");
        VEC_PUSH(&r.known, "hess");
    }
    collect_locals(&d->body, &r.known);

    /* Defaults may use the parameters before them. */
    for (int i = 0; i < d->nparams; i++)
        check_expr(&r, d->params[i].default_value);
    int unknown_before = l->unknown_names.len;
    check_block(&r, &d->body);
    /* A misspelled name leaves the name it meant unread: no warning then. */
    if (l->unknown_names.len == unknown_before)
        warn_unused(&r, d);
    VEC_FREE(&r.known);
    VEC_FREE(&r.read);
}

void resolve_names(Lower *l)
{
    for (int m = 0; m < l->program->nmodules; m++) {
        const Module *mod = l->program->modules[m];
        for (int i = 0; i < mod->ndecls; i++) {
            const Decl *d = mod->decls[i];
            if (d->kind == DECL_MODEL || d->kind == DECL_OPTIMIZER)
                resolve_decl(l, d);
        }
    }
}

bool is_local_name(Lower *l, const Decl *d, const char *name)
{
    if (!d)
        return false;
    for (int i = 0; i < l->body_locals.len; i++) {
        if (l->body_locals.data[i].decl != d)
            continue;
        const NameVec *names = (const NameVec *)&l->body_locals.data[i].names;
        return contains(names, name);
    }
    struct BodyLocals entry = {.decl = d};
    collect_locals(&d->body, (NameVec *)&entry.names);
    VEC_PUSH(&l->body_locals, entry);
    return contains((const NameVec *)&entry.names, name);
}
