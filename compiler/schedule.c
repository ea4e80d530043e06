/* schedule.c - fusion, ordering and memory planning.
 *
 * Roles. Every node gets one:
 *   leaf    inputs and variable reads, which live in their own storage.
 *   scalar  rank-0 constants and arithmetic, such as a learning rate
 *           times a bias correction. Every kernel that needs one
 *           recomputes it, and the code generator hoists it out of the
 *           loops.
 *   fused   elementwise and broadcast nodes, grouped into kernels, and
 *           dequantize, which its kernel decodes inline (K_DEQUANT).
 *   alias   reshapes, which share their operand's storage.
 *   step    library ops and reductions, one step each. A quantize step
 *           runs a generated kernel of the form KFORM_QUANTIZE.
 *   effect  assignments to variables.
 *
 * Fusion is greedy in node order. An elementwise node joins the kernel of
 * an operand with the same shape, unless some other operand depends on
 * that kernel through an outside node, which would create a cycle. The
 * kernels of several operands merge on the same condition. A kernel
 * stores only the members that something outside it reads.
 *
 * Reductions. A sum over every axis of a fused value joins the kernel
 * of its operand, which accumulates it (K_ACCUM) while it computes the
 * operand, so a norm costs no pass of its own. Nothing in that kernel
 * may read the sum, because it is complete only when the kernel ends.
 *
 * Assignments. When the new value of a variable comes out of a kernel, the
 * kernel writes it into the variable in place, and every other step that
 * reads the old value is ordered before that kernel. This is how each
 * parameter's optimizer update becomes one pass over memory. Where that
 * ordering is impossible, the value goes to the arena and a copy step runs
 * after the last reader.
 *
 * Ordering is a topological sort of the steps that prefers the original
 * node order. Memory is planned by linear scan over that order with a
 * best-fit free list, for the maximum batch size.
 */
#include "schedule.h"
#include "ir_spatial.h"

#include "interp.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef enum Role {
    ROLE_LEAF,
    ROLE_SCALAR,
    ROLE_FUSED,
    ROLE_ALIAS,
    ROLE_STEP,
    ROLE_EFFECT,
} Role;

typedef struct Group {
    VEC(int) members; /* ascending node ids */
    Shape shape;      /* iteration space; rank 0 for a stored scalar */
    int min_id, max_id;
    bool dead;        /* merged into another group */
    /* Smallest recomputed member (IrNode.recomputed) and smallest other
     * member, INT_MAX when there is none. */
    int min_copy, min_plain;
} Group;

typedef enum UnitKind {
    UNIT_GROUP,
    UNIT_NODE,
    UNIT_COPY,
} UnitKind;

typedef struct Unit {
    UnitKind kind;
    int index;  /* group id, node id, or the assignment's node id */
    int min_id; /* ordering priority */
    VEC(int) deps;
} Unit;

/* Where a value lives: a node's own arena slot, or a variable. */
typedef struct Storage {
    bool is_var;
    int id; /* root node id, or variable index */
} Storage;

/* A step before memory planning: arguments are storages, not slots. */
typedef struct Draft {
    RtStep step;
    VEC(Storage) args;
    VEC(Shape) shapes;
    int kernel; /* index into kernels, or -1 */
} Draft;

typedef struct Sched {
    const IrGraph *g;
    int n;
    Role *role;
    int *group;
    int *cons_start, *cons; /* consumers, CSR */
    bool *is_output;
    bool *stored;     /* fused node whose value is written to memory */
    int *var_alias;   /* variable a fused node is written into, or -1 */
    int *absorbed;    /* assignment node -> kernel that stores it, or -1 */
    bool *accum;      /* full reduction summed inside its operand's kernel */
    int *stamp;
    int stamp_now;
    VEC(Group) groups;
    VEC(Unit) units;
    int *group_unit;  /* group id -> unit */
    int *node_unit;   /* step or assignment node id -> unit, or -1 */
} Sched;

/* ---- analysis helpers ----------------------------------------------------- */

static const IrNode *node(const Sched *s, int id)
{
    return &s->g->nodes[id];
}

static void build_consumers(Sched *s)
{
    int n = s->n;
    s->cons_start = xcalloc((size_t)n + 2, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < node(s, i)->nin; j++)
            s->cons_start[node(s, i)->in[j] + 1]++;
    for (int i = 0; i < n; i++)
        s->cons_start[i + 1] += s->cons_start[i];
    s->cons = xmalloc(size_mul((size_t)s->cons_start[n] + 1, sizeof(int)));
    int *fill = xcalloc((size_t)n + 1, sizeof(int));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < node(s, i)->nin; j++) {
            int o = node(s, i)->in[j];
            s->cons[s->cons_start[o] + fill[o]++] = i;
        }
    free(fill);
}

static Role role_of(const IrNode *n)
{
    switch (n->op) {
    case IR_INPUT:
    case IR_VAR:
        return ROLE_LEAF;
    case IR_CONST:
    case IR_BATCH:
        return ROLE_SCALAR;
    case IR_RESHAPE:
        return ROLE_ALIAS;
    case IR_ASSIGN:
        return ROLE_EFFECT;
    case IR_BROADCAST:
    case IR_DEQUANTIZE: /* decoded inline by its readers (K_DEQUANT) */
        return n->shape.rank == 0 ? ROLE_SCALAR : ROLE_FUSED;
    default:
        break;
    }
    switch (ir_op_class(n->op)) {
    case IR_CLASS_ELEMENTWISE:
        return n->shape.rank == 0 ? ROLE_SCALAR : ROLE_FUSED;
    case IR_CLASS_REDUCTION:
    case IR_CLASS_LIBRARY:
        return ROLE_STEP;
    default:
        BOCB_UNREACHABLE("node role");
    }
}

/* Does `v` depend on a member of group `target`? A kernel runs as a
 * whole, so reaching any member of another group means depending on all
 * of that group's inputs too. Nodes before the target's first member, in
 * no group that extends past it, cannot depend on it. */
static bool reaches_group(Sched *s, int v, int target)
{
    int min_id = s->groups.data[target].min_id;
    VEC(int) stack = {0};
    s->stamp_now++;
    VEC_PUSH(&stack, v);
    bool found = false;
    while (stack.len && !found) {
        int x = stack.data[--stack.len];
        if (s->stamp[x] == s->stamp_now)
            continue;
        s->stamp[x] = s->stamp_now;
        int gid = s->group[x];
        if (gid == target) {
            found = true;
            break;
        }
        if (x < min_id && (gid < 0 || s->groups.data[gid].max_id < min_id))
            continue;
        for (int j = 0; j < node(s, x)->nin; j++)
            VEC_PUSH(&stack, node(s, x)->in[j]);
        if (gid >= 0) {
            const Group *g = &s->groups.data[gid];
            for (int i = 0; i < g->members.len; i++)
                VEC_PUSH(&stack, g->members.data[i]);
        }
    }
    VEC_FREE(&stack);
    return found;
}

/* Do the outside operands of group `from` (ignoring group `also`) reach
 * group `target`? */
static bool group_inputs_reach(Sched *s, int from, int also, int target)
{
    Group *g = &s->groups.data[from];
    for (int i = 0; i < g->members.len; i++) {
        const IrNode *m = node(s, g->members.data[i]);
        for (int j = 0; j < m->nin; j++) {
            int o = m->in[j];
            if (s->group[o] == from || s->group[o] == also)
                continue;
            if (reaches_group(s, o, target))
                return true;
        }
    }
    return false;
}

static int new_group(Sched *s, int member)
{
    Group gr;
    memset(&gr, 0, sizeof gr);
    gr.shape = node(s, member)->shape;
    gr.min_id = gr.max_id = member;
    gr.min_copy = node(s, member)->recomputed ? member : INT_MAX;
    gr.min_plain = node(s, member)->recomputed ? INT_MAX : member;
    VEC_PUSH(&gr.members, member);
    VEC_PUSH(&s->groups, gr);
    s->group[member] = s->groups.len - 1;
    return s->groups.len - 1;
}

static void add_member(Sched *s, int gid, int member)
{
    Group *g = &s->groups.data[gid];
    VEC_PUSH(&g->members, member);
    if (member < g->min_id)
        g->min_id = member;
    if (member > g->max_id)
        g->max_id = member;
    int *least = node(s, member)->recomputed ? &g->min_copy : &g->min_plain;
    if (member < *least)
        *least = member;
    s->group[member] = gid;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Moves every member of group `from` into group `into`. */
static void merge_groups(Sched *s, int into, int from)
{
    Group *src = &s->groups.data[from];
    for (int i = 0; i < src->members.len; i++)
        add_member(s, into, src->members.data[i]);
    src = &s->groups.data[from];
    VEC_FREE(&src->members);
    src->dead = true;
    Group *dst = &s->groups.data[into];
    qsort(dst->members.data, (size_t)dst->members.len, sizeof(int), cmp_int);
}

/* ---- fusion --------------------------------------------------------------- */

/* May group `a` take in group `b` (or, with b < 0, node `v`)? A kernel
 * that contains recomputed copies may contain no other node before its
 * first copy. Every forward node comes before every copy, so copies are
 * computed in the backward pass and never stored by a forward kernel.
 * Without copies in the graph, every fusion is allowed. */
static bool copies_allow_fusion(const Sched *s, int a, int b, int v)
{
    const Group *ga = &s->groups.data[a];
    int min_copy = ga->min_copy, min_plain = ga->min_plain;
    if (b >= 0) {
        const Group *gb = &s->groups.data[b];
        min_copy = gb->min_copy < min_copy ? gb->min_copy : min_copy;
        min_plain = gb->min_plain < min_plain ? gb->min_plain : min_plain;
    } else if (node(s, v)->recomputed) {
        min_copy = v < min_copy ? v : min_copy;
    } else {
        min_plain = v < min_plain ? v : min_plain;
    }
    return min_copy == INT_MAX || min_plain > min_copy;
}

/* Marks the sums that their operand's kernel accumulates: over every axis,
 * of a float value that a kernel computes. */
static void find_accumulated_sums(Sched *s)
{
    for (int v = 0; v < s->n; v++) {
        const IrNode *n = node(s, v);
        if (n->op != IR_SUM || n->shape.rank != 0 || s->role[n->in[0]] != ROLE_FUSED)
            continue;
        if (node(s, n->in[0])->shape.rank == 0)
            continue;
        s->accum[v] = true;
        s->role[v] = ROLE_FUSED;
    }
}

/* Does a member of group `from` read a sum that group `target` accumulates? */
static bool reads_accumulated(const Sched *s, int from, int target)
{
    const Group *g = &s->groups.data[from];
    for (int i = 0; i < g->members.len; i++) {
        const IrNode *m = node(s, g->members.data[i]);
        for (int j = 0; j < m->nin; j++)
            if (s->accum[m->in[j]] && s->group[m->in[j]] == target)
                return true;
    }
    return false;
}

static void fuse(Sched *s)
{
    for (int v = 0; v < s->n; v++) {
        if (s->role[v] != ROLE_FUSED)
            continue;
        const IrNode *n = node(s, v);
        if (s->accum[v]) {
            add_member(s, s->group[n->in[0]], v);
            continue;
        }
        int joined = -1;
        for (int j = 0; j < n->nin && joined < 0; j++) {
            int gid = s->group[n->in[j]];
            if (gid < 0 || !shape_equal(&s->groups.data[gid].shape, &n->shape))
                continue;
            bool legal = copies_allow_fusion(s, gid, -1, v);
            for (int k = 0; k < n->nin && legal; k++)
                legal = !(s->accum[n->in[k]] && s->group[n->in[k]] == gid);
            for (int k = 0; k < n->nin && legal; k++) {
                int o = n->in[k];
                if (s->group[o] != gid && reaches_group(s, o, gid))
                    legal = false;
            }
            if (legal) {
                add_member(s, gid, v);
                joined = gid;
            }
        }
        if (joined < 0) {
            new_group(s, v);
            continue;
        }
        /* Pull the kernels of the other operands in as well, when legal. */
        for (int j = 0; j < n->nin; j++) {
            int other = s->group[n->in[j]];
            if (other < 0 || other == joined || s->groups.data[other].dead ||
                !shape_equal(&s->groups.data[other].shape, &n->shape))
                continue;
            if (!copies_allow_fusion(s, joined, other, -1) ||
                group_inputs_reach(s, other, joined, joined) ||
                group_inputs_reach(s, joined, other, other) ||
                reads_accumulated(s, joined, other) || reads_accumulated(s, other, joined))
                continue;
            merge_groups(s, joined, other);
        }
    }
}

/* Does group `gid` accumulate a sum? */
static bool group_reduces(const Sched *s, int gid)
{
    const Group *g = &s->groups.data[gid];
    for (int i = 0; i < g->members.len; i++)
        if (s->accum[g->members.data[i]])
            return true;
    return false;
}

/* Does group `gid` compute a value that is assigned to a variable? */
static bool group_assigns(const Sched *s, int gid)
{
    const Group *g = &s->groups.data[gid];
    for (int i = 0; i < g->members.len; i++) {
        int v = g->members.data[i];
        for (int c = s->cons_start[v]; c < s->cons_start[v + 1]; c++)
            if (node(s, s->cons[c])->op == IR_ASSIGN)
                return true;
    }
    return false;
}

/* Does group `gid` read node `v` (from outside the group)? */
static bool group_reads(const Sched *s, int gid, int v)
{
    for (int c = s->cons_start[v]; c < s->cons_start[v + 1]; c++)
        if (s->group[s->cons[c]] == gid && s->role[s->cons[c]] == ROLE_FUSED)
            return true;
    return false;
}

/* Horizontal fusion of variable updates. An optimizer rule may update a
 * state from the gradient alone, in an expression that shares no node
 * with the parameter's update (Lion's momentum). Fusion along operands
 * leaves those in separate kernels, each a pass over the gradient. This
 * pass merges kernels of one shape that assign variables and read a common
 * operand, when neither depends on the other. Kernels that accumulate
 * sums count as update kernels here, and two of them (LAMB's two norms)
 * merge without a common operand. */
static void merge_update_siblings(Sched *s)
{
    for (int a = 0; a < s->groups.len; a++) {
        if (s->groups.data[a].dead || !(group_assigns(s, a) || group_reduces(s, a)))
            continue;
        for (int b = a + 1; b < s->groups.len; b++) {
            const Group *ga = &s->groups.data[a], *gb = &s->groups.data[b];
            if (gb->dead || !shape_equal(&ga->shape, &gb->shape) ||
                !(group_assigns(s, b) || group_reduces(s, b)))
                continue;
            if (reads_accumulated(s, a, b) || reads_accumulated(s, b, a) ||
                !copies_allow_fusion(s, a, b, -1))
                continue;
            bool shared = group_reduces(s, a) && group_reduces(s, b);
            for (int i = 0; i < gb->members.len && !shared; i++) {
                const IrNode *m = node(s, gb->members.data[i]);
                for (int j = 0; j < m->nin && !shared; j++) {
                    int o = m->in[j];
                    shared = s->group[o] != b && s->role[o] != ROLE_SCALAR &&
                             group_reads(s, a, o);
                }
            }
            if (!shared || group_inputs_reach(s, a, b, b) || group_inputs_reach(s, b, a, a))
                continue;
            merge_groups(s, a, b);
        }
    }
}

static bool consumed_outside(const Sched *s, int v)
{
    if (s->is_output[v])
        return true;
    for (int c = s->cons_start[v]; c < s->cons_start[v + 1]; c++) {
        int u = s->cons[c];
        Role r = s->role[u];
        if (r == ROLE_FUSED && s->group[u] == s->group[v] && s->group[v] >= 0)
            continue;
        if (r == ROLE_FUSED || r == ROLE_SCALAR) {
            /* A fused consumer in another kernel loads v. A scalar
             * consumer recomputes from v, so then v needs memory only if
             * it is not recomputable itself. */
            if (s->role[v] == ROLE_SCALAR)
                continue;
            return true;
        }
        return true;
    }
    return false;
}

/* Scalars that something must read from memory get a kernel of their own;
 * then every fused node read outside its kernel is stored. */
static void decide_stores(Sched *s)
{
    for (int v = 0; v < s->n; v++) {
        if (s->role[v] == ROLE_SCALAR && consumed_outside(s, v)) {
            s->role[v] = ROLE_FUSED;
            new_group(s, v);
        }
    }
    for (int v = 0; v < s->n; v++)
        if (s->role[v] == ROLE_FUSED)
            s->stored[v] = s->accum[v] || consumed_outside(s, v);
}

/* ---- units and ordering --------------------------------------------------- */

static int add_unit(Sched *s, UnitKind kind, int index, int min_id)
{
    Unit u;
    memset(&u, 0, sizeof u);
    u.kind = kind;
    u.index = index;
    u.min_id = min_id;
    VEC_PUSH(&s->units, u);
    return s->units.len - 1;
}

/* The units whose results `v` is computed from, through aliases and
 * recomputed scalars. Iterative, with each node visited once, because
 * scalar chains can be long and share subexpressions. */
static void producer_units(Sched *s, int v, IntVec *out)
{
    IntVec stack = {0};
    s->stamp_now++;
    VEC_PUSH(&stack, v);
    while (stack.len) {
        int x = stack.data[--stack.len];
        if (s->stamp[x] == s->stamp_now)
            continue;
        s->stamp[x] = s->stamp_now;
        switch (s->role[x]) {
        case ROLE_FUSED:
            VEC_PUSH(out, s->group_unit[s->group[x]]);
            break;
        case ROLE_STEP:
            VEC_PUSH(out, s->node_unit[x]);
            break;
        case ROLE_ALIAS:
        case ROLE_SCALAR:
            for (int j = 0; j < node(s, x)->nin; j++)
                VEC_PUSH(&stack, node(s, x)->in[j]);
            break;
        case ROLE_LEAF:
        case ROLE_EFFECT:
            break;
        }
    }
    VEC_FREE(&stack);
}

/* The units that read the current value of variable `var`: steps and
 * kernels that use a read of it (directly or through aliases and
 * recomputed scalars), and copies that assign such a read elsewhere. */
static void reader_units(Sched *s, int var, IntVec *out)
{
    VEC(int) work = {0};
    for (int v = 0; v < s->n; v++)
        if (node(s, v)->op == IR_VAR && node(s, v)->attr.var == var)
            VEC_PUSH(&work, v);
    while (work.len) {
        int v = work.data[--work.len];
        for (int c = s->cons_start[v]; c < s->cons_start[v + 1]; c++) {
            int u = s->cons[c];
            switch (s->role[u]) {
            case ROLE_FUSED: VEC_PUSH(out, s->group_unit[s->group[u]]); break;
            case ROLE_STEP: VEC_PUSH(out, s->node_unit[u]); break;
            case ROLE_EFFECT:
                if (s->node_unit[u] >= 0)
                    VEC_PUSH(out, s->node_unit[u]);
                break;
            case ROLE_ALIAS:
            case ROLE_SCALAR: VEC_PUSH(&work, u); break;
            case ROLE_LEAF: break;
            }
        }
    }
    VEC_FREE(&work);
}

static void add_dep(Unit *u, int dep, int self)
{
    if (dep == self)
        return;
    for (int i = 0; i < u->deps.len; i++)
        if (u->deps.data[i] == dep)
            return;
    VEC_PUSH(&u->deps, dep);
}

/* Does unit `from` depend, directly or transitively, on unit `target`? */
static bool unit_depends_on(Sched *s, int from, int target)
{
    bool *seen = xcalloc((size_t)s->units.len + 1, sizeof(bool));
    VEC(int) stack = {0};
    VEC_PUSH(&stack, from);
    bool found = false;
    while (stack.len && !found) {
        int u = stack.data[--stack.len];
        if (u == target) {
            found = true;
            break;
        }
        if (seen[u])
            continue;
        seen[u] = true;
        for (int i = 0; i < s->units.data[u].deps.len; i++)
            VEC_PUSH(&stack, s->units.data[u].deps.data[i]);
    }
    VEC_FREE(&stack);
    free(seen);
    return found;
}

/* Orders every unit that reads the old value of variable `var` before
 * unit `writer`, which overwrites it. Returns false, adding nothing, when
 * some reader depends on the writer. */
static bool order_readers_before(Sched *s, int var, int writer)
{
    IntVec readers = {0};
    reader_units(s, var, &readers);
    bool ok = true;
    for (int i = 0; i < readers.len && ok; i++)
        if (readers.data[i] != writer && unit_depends_on(s, readers.data[i], writer))
            ok = false;
    for (int i = 0; i < readers.len && ok; i++)
        add_dep(&s->units.data[writer], readers.data[i], writer);
    VEC_FREE(&readers);
    return ok;
}

/* Does group `gid` read variable `var` through a broadcast, at elements
 * other than the one each point writes? Then the kernel cannot write the
 * variable in place. */
static bool reads_var_elsewhere(const Sched *s, int gid, int var)
{
    const Group *g = &s->groups.data[gid];
    for (int i = 0; i < g->members.len; i++) {
        const IrNode *m = node(s, g->members.data[i]);
        for (int j = 0; j < m->nin; j++) {
            const IrNode *o = node(s, m->in[j]);
            if (o->op == IR_VAR && o->attr.var == var && m->op == IR_BROADCAST)
                return true;
        }
    }
    return false;
}

/* Tries to let the kernel that computes `value` write variable `var` in
 * place, ordering every reader of the old value before it. */
static bool try_in_place(Sched *s, int value, int var)
{
    if (s->role[value] != ROLE_FUSED || s->var_alias[value] >= 0)
        return false;
    int gid = s->group[value];
    if (reads_var_elsewhere(s, gid, var))
        return false;
    bool ok = order_readers_before(s, var, s->group_unit[gid]);
    if (ok)
        s->var_alias[value] = var;
    return ok;
}

/* The kernel that could store the assignment `assign` of a value no
 * kernel computes (a gradient from a matrix product, say) instead of a
 * separate copy: an update kernel of the value's shape that reads it.
 * Returns its group, or -1. */
static int copy_host(Sched *s, int assign)
{
    int value = node(s, assign)->in[0];
    if (s->role[value] != ROLE_LEAF && s->role[value] != ROLE_STEP)
        return -1;
    for (int gid = 0; gid < s->groups.len; gid++) {
        const Group *g = &s->groups.data[gid];
        if (!g->dead && shape_equal(&g->shape, &node(s, value)->shape) &&
            group_reads(s, gid, value) && group_assigns(s, gid))
            return gid;
    }
    return -1;
}

/* Lets the host kernel of `assign` store the value into the variable,
 * ordering every reader of the old value before that kernel, as
 * try_in_place does for a value the kernel computes. */
static bool try_absorb_copy(Sched *s, int assign)
{
    int gid = copy_host(s, assign);
    if (gid < 0 || reads_var_elsewhere(s, gid, node(s, assign)->attr.var))
        return false;
    bool ok = order_readers_before(s, node(s, assign)->attr.var, s->group_unit[gid]);
    if (ok)
        s->absorbed[assign] = gid;
    return ok;
}

static void add_producer_deps(Sched *s, int u, int v)
{
    IntVec producers = {0};
    producer_units(s, v, &producers);
    for (int i = 0; i < producers.len; i++)
        add_dep(&s->units.data[u], producers.data[i], u);
    VEC_FREE(&producers);
}

static void build_units(Sched *s)
{
    s->group_unit = xcalloc((size_t)s->groups.len + 1, sizeof(int));
    s->node_unit = xmalloc(size_mul((size_t)s->n + 1, sizeof(int)));
    for (int i = 0; i < s->groups.len; i++)
        s->group_unit[i] = s->groups.data[i].dead ? -1
                                                  : add_unit(s, UNIT_GROUP, i, s->groups.data[i].min_id);
    for (int v = 0; v < s->n; v++)
        s->node_unit[v] = s->role[v] == ROLE_STEP ? add_unit(s, UNIT_NODE, v, v) : -1;

    /* An assignment of a value that no kernel computes is a copy. */
    for (int v = 0; v < s->n; v++)
        if (node(s, v)->op == IR_ASSIGN && s->role[node(s, v)->in[0]] != ROLE_FUSED &&
            copy_host(s, v) < 0)
            s->node_unit[v] = add_unit(s, UNIT_COPY, v, v);

    for (int u = 0; u < s->units.len; u++) {
        const Unit *un = &s->units.data[u];
        if (un->kind == UNIT_GROUP) {
            const Group *g = &s->groups.data[un->index];
            for (int i = 0; i < g->members.len; i++) {
                const IrNode *m = node(s, g->members.data[i]);
                for (int j = 0; j < m->nin; j++)
                    add_producer_deps(s, u, m->in[j]);
            }
        } else {
            const IrNode *m = node(s, un->index);
            for (int j = 0; j < m->nin; j++)
                add_producer_deps(s, u, m->in[j]);
        }
    }

    /* Assignments from kernels: in place where the order allows, else a
     * copy after the last reader. */
    for (int v = 0; v < s->n; v++) {
        const IrNode *n = node(s, v);
        if (n->op != IR_ASSIGN)
            continue;
        int var = n->attr.var;
        if (s->node_unit[v] < 0 && try_in_place(s, n->in[0], var))
            continue;
        if (s->node_unit[v] < 0 && try_absorb_copy(s, v))
            continue;
        int u = s->node_unit[v];
        if (u < 0) {
            u = add_unit(s, UNIT_COPY, v, v);
            s->node_unit[v] = u;
            add_producer_deps(s, u, n->in[0]);
        }
        IntVec readers = {0};
        reader_units(s, var, &readers);
        for (int i = 0; i < readers.len; i++)
            add_dep(&s->units.data[u], readers.data[i], u);
        VEC_FREE(&readers);
    }
}

/* Kahn's algorithm; among ready units the one with the smallest node id
 * goes first, which keeps the source order wherever it is legal. */
static int *order_units(Sched *s)
{
    int nu = s->units.len;
    int *indegree = xcalloc((size_t)nu + 1, sizeof(int));
    int *order = xmalloc(size_mul((size_t)nu + 1, sizeof(int)));
    bool *done = xcalloc((size_t)nu + 1, sizeof(bool));
    for (int u = 0; u < nu; u++)
        indegree[u] = s->units.data[u].deps.len;
    for (int k = 0; k < nu; k++) {
        int best = -1;
        for (int u = 0; u < nu; u++)
            if (!done[u] && indegree[u] == 0 &&
                (best < 0 || s->units.data[u].min_id < s->units.data[best].min_id))
                best = u;
        BOCB_ASSERT(best >= 0 && "cycle in the step dependencies");
        done[best] = true;
        order[k] = best;
        for (int u = 0; u < nu; u++) {
            const Unit *un = &s->units.data[u];
            for (int i = 0; i < un->deps.len; i++)
                if (un->deps.data[i] == best)
                    indegree[u]--;
        }
    }
    free(indegree);
    free(done);
    return order;
}

/* ---- storage -------------------------------------------------------------- */

static Storage storage_of(const Sched *s, int v)
{
    while (s->role[v] == ROLE_ALIAS)
        v = node(s, v)->in[0];
    const IrNode *n = node(s, v);
    if (n->op == IR_VAR)
        return (Storage){.is_var = true, .id = n->attr.var};
    if (s->role[v] == ROLE_FUSED && s->var_alias[v] >= 0)
        return (Storage){.is_var = true, .id = s->var_alias[v]};
    return (Storage){.is_var = false, .id = v};
}

static bool storage_equal(Storage a, Storage b)
{
    return a.is_var == b.is_var && a.id == b.id;
}

/* ---- kernels -------------------------------------------------------------- */

static KDim kdim(int64_t v, bool times_batch)
{
    return (KDim){.value = v, .times_batch = times_batch && v != 0};
}

static bool kdim_mul(KDim a, KDim b, KDim *out)
{
    if (a.times_batch && b.times_batch && a.value && b.value)
        return false;
    *out = kdim(a.value * b.value, a.times_batch || b.times_batch);
    return true;
}

static bool kdim_equal(KDim a, KDim b)
{
    return a.value == b.value && (a.value == 0 || a.times_batch == b.times_batch);
}

/* Strides, in the iteration space `space`, of a value of shape `from`
 * laid out contiguously: zero on axes it is broadcast along. */
static void strides_for(const Shape *from, const Shape *space, int rank, KDim *strides)
{
    KDim contiguous[SHAPE_MAX_RANK];
    KDim running = kdim(1, false);
    for (int j = from->rank - 1; j >= 0; j--) {
        contiguous[j] = running;
        BOCB_ASSERT(kdim_mul(running, kdim(from->dims[j], j == from->batch_axis), &running));
    }
    int lead = space->rank - from->rank;
    for (int i = 0; i < rank; i++) {
        int j = i - lead;
        bool present = space->rank > 0 && j >= 0 && j < from->rank &&
                       (from->dims[j] != 1 || j == from->batch_axis);
        strides[i] = present ? contiguous[j] : kdim(0, false);
    }
}

typedef struct KBuild {
    Sched *s;
    Kernel *k;
    int gid;
    Shape space;
    int *memo;
    VEC(Storage) arg_storage;
} KBuild;

static int arg_for(KBuild *b, Storage st, DType dt, const KDim *strides)
{
    Kernel *k = b->k;
    for (int a = 0; a < k->nargs; a++) {
        if (!storage_equal(b->arg_storage.data[a], st))
            continue;
        bool same = true;
        for (int i = 0; i < k->rank; i++)
            same &= kdim_equal(k->args[a].strides[i], strides[i]);
        if (same)
            return a;
    }
    VEC_PUSH(&b->arg_storage, st);
    return kernel_add_arg(k, dt, false, strides);
}

static int load_value(KBuild *b, int v)
{
    const IrNode *n = node(b->s, v);
    KDim strides[KERNEL_MAX_RANK];
    strides_for(&n->shape, &b->space, b->k->rank, strides);
    return kernel_load(b->k, arg_for(b, storage_of(b->s, v), n->dtype, strides));
}

static KOp kop_of(IrOp op)
{
    switch (op) {
    case IR_NEG: return K_NEG;
    case IR_ABS: return K_ABS;
    case IR_SIGN: return K_SIGN;
    case IR_SQRT: return K_SQRT;
    case IR_EXP: return K_EXP;
    case IR_LOG: return K_LOG;
    case IR_TANH: return K_TANH;
    case IR_ERF: return K_ERF;
    case IR_SIGMOID: return K_SIGMOID;
    case IR_FLOOR: return K_FLOOR;
    case IR_NOT: return K_NOT;
    case IR_CAST: return K_CAST;
    case IR_ADD: return K_ADD;
    case IR_SUB: return K_SUB;
    case IR_MUL: return K_MUL;
    case IR_DIV: return K_DIV;
    case IR_POW: return K_POW;
    case IR_MAX: return K_MAX;
    case IR_MIN: return K_MIN;
    case IR_LT: return K_LT;
    case IR_LE: return K_LE;
    case IR_GT: return K_GT;
    case IR_GE: return K_GE;
    case IR_EQ: return K_EQ;
    case IR_NE: return K_NE;
    case IR_AND: return K_AND;
    case IR_OR: return K_OR;
    case IR_SELECT: return K_SELECT;
    case IR_RANDOM: return K_RANDOM;
    default: BOCB_UNREACHABLE("no kernel op");
    }
}

/* True when node v is computed by the kernel's instructions (a member of
 * the kernel, or a recomputed scalar), false when it is loaded. */
static bool computed_here(const KBuild *b, int v)
{
    Role r = b->s->role[v];
    return (r == ROLE_FUSED && b->s->group[v] == b->gid) || r == ROLE_SCALAR;
}

static int operand(const KBuild *b, int v)
{
    BOCB_ASSERT(b->memo[v] >= 0);
    return b->memo[v];
}

/* Emits node v, whose operands are already emitted (see emit). */
static int emit_op(KBuild *b, int v)
{
    const IrNode *n = node(b->s, v);
    Kernel *k = b->k;
    switch (n->op) {
    case IR_CONST:
        return kernel_const(k, n->dtype, n->attr.value);
    case IR_BATCH:
        return kernel_add(k, K_BATCH, n->dtype, -1, -1, -1);
    case IR_BROADCAST: {
        int o = n->in[0];
        if (b->s->role[o] == ROLE_SCALAR)
            return operand(b, o);
        return load_value(b, o);
    }
    case IR_RELU: {
        int x = operand(b, n->in[0]);
        return kernel_add(k, K_MAX, n->dtype, x, kernel_const(k, n->dtype, 0.0), -1);
    }
    case IR_SELECT:
        return kernel_add(k, K_SELECT, n->dtype, operand(b, n->in[1]), operand(b, n->in[2]),
                          operand(b, n->in[0]));
    case IR_DEQUANTIZE: {
        /* The words are addressed with the strides of the decoded tensor. */
        KDim strides[KERNEL_MAX_RANK];
        strides_for(&n->shape, &b->space, k->rank, strides);
        int words = arg_for(b, storage_of(b->s, n->in[0]), DT_I32, strides);
        KQuantLayout layout = {.bits = (int)n->attr.spatial.p[0],
                               .bucket = n->attr.spatial.p[1],
                               .numel = shape_numel(&n->shape, 1)};
        return kernel_dequant(k, words, n->dtype, layout);
    }
    default: {
        int x = operand(b, n->in[0]);
        int y = n->nin > 1 ? operand(b, n->in[1]) : -1;
        return kernel_add(k, kop_of(n->op), n->dtype, x, y, -1);
    }
    }
}

/* Returns the instruction computing node `root`, emitting it and
 * everything it needs first. Iterative, because elementwise chains can
 * be hundreds of thousands of nodes long. */
static int emit(KBuild *b, int root)
{
    IntVec stack = {0};
    VEC_PUSH(&stack, root);
    while (stack.len) {
        int v = stack.data[stack.len - 1];
        if (b->memo[v] >= 0) {
            stack.len--;
            continue;
        }
        if (!computed_here(b, v)) {
            b->memo[v] = load_value(b, v);
            stack.len--;
            continue;
        }
        const IrNode *n = node(b->s, v);
        bool ready = true;
        /* Pushed last-first, so operands are emitted in operand order. */
        for (int j = n->nin - 1; j >= 0; j--) {
            int o = n->in[j];
            /* A broadcast loads a stored operand itself, with its strides,
             * and a dequantize decodes the words it reads. */
            if ((n->op == IR_BROADCAST && b->s->role[o] != ROLE_SCALAR) ||
                n->op == IR_DEQUANTIZE)
                continue;
            if (b->memo[o] < 0) {
                VEC_PUSH(&stack, o);
                ready = false;
            }
        }
        if (!ready)
            continue;
        b->memo[v] = emit_op(b, v);
        stack.len--;
    }
    VEC_FREE(&stack);
    return b->memo[root];
}

/* Returns the iterations of the loops inside the outermost one, counting
 * a batch-sized extent as 1. */
static int64_t kernel_inner_points(const Kernel *k)
{
    int64_t points = 1;
    for (int d = 1; d < k->rank; d++)
        points *= k->extents[d].value;
    return points;
}

/* Returns whether the kernel keeps a running sum (K_ACCUM), whose order
 * a split of the outer loop would change. */
static bool kernel_accumulates(const Kernel *k)
{
    for (int i = 0; i < k->ninstrs; i++)
        if (k->instrs[i].op == K_ACCUM)
            return true;
    return false;
}

/* Drops unit extents and merges adjacent dimensions that every argument
 * walks contiguously, so most kernels end up one or two loops deep. */
static void collapse_dims(Kernel *k)
{
    for (int d = k->rank - 1; d >= 0 && k->rank > 1; d--) {
        if (k->extents[d].value != 1 || k->extents[d].times_batch)
            continue;
        for (int i = d; i + 1 < k->rank; i++) {
            k->extents[i] = k->extents[i + 1];
            for (int a = 0; a < k->nargs; a++)
                k->args[a].strides[i] = k->args[a].strides[i + 1];
        }
        k->rank--;
    }
    for (int d = k->rank - 2; d >= 0; d--) {
        KDim merged;
        if (!kdim_mul(k->extents[d], k->extents[d + 1], &merged))
            continue;
        bool ok = true;
        for (int a = 0; a < k->nargs && ok; a++) {
            KDim inner;
            ok = kdim_mul(k->args[a].strides[d + 1], k->extents[d + 1], &inner) &&
                 kdim_equal(inner, k->args[a].strides[d]);
        }
        if (!ok)
            continue;
        k->extents[d] = merged;
        for (int a = 0; a < k->nargs; a++)
            k->args[a].strides[d] = k->args[a].strides[d + 1];
        for (int i = d + 1; i + 1 < k->rank; i++) {
            k->extents[i] = k->extents[i + 1];
            for (int a = 0; a < k->nargs; a++)
                k->args[a].strides[i] = k->args[a].strides[i + 1];
        }
        k->rank--;
    }
}

static void kernel_name(const Sched *s, int gid, char *buf, size_t size)
{
    const Group *g = &s->groups.data[gid];
    const IrModule *m = s->g->module;
    for (int i = 0; i < g->members.len; i++) {
        int v = g->members.data[i];
        if (s->var_alias[v] >= 0) {
            /* Name an optimizer update after its parameter. */
            const IrVar *var = &m->vars[s->var_alias[v]];
            if (var->owner >= 0)
                var = &m->vars[var->owner];
            snprintf(buf, size, "update_%s", var->name);
            for (char *p = buf; *p; p++)
                if (*p == '.')
                    *p = '_';
            return;
        }
    }
    int last = g->members.data[g->members.len - 1];
    snprintf(buf, size, "fused%d_%s", gid, ir_op_name(node(s, last)->op));
}

static Kernel *build_kernel(Sched *s, int gid, Draft *d)
{
    const Group *g = &s->groups.data[gid];
    char name[64];
    kernel_name(s, gid, name, sizeof name);

    KBuild b = {.s = s, .gid = gid, .space = g->shape};
    int rank = g->shape.rank ? g->shape.rank : 1;
    KDim extents[KERNEL_MAX_RANK];
    for (int i = 0; i < rank; i++)
        extents[i] = g->shape.rank ? kdim(g->shape.dims[i], i == g->shape.batch_axis)
                                   : kdim(1, false);
    b.k = kernel_new(name, rank, extents);
    b.memo = xmalloc(size_mul((size_t)s->n + 1, sizeof(int)));
    for (int i = 0; i < s->n; i++)
        b.memo[i] = -1;

    VEC(int) values = {0}, stores = {0};
    for (int i = 0; i < g->members.len; i++) {
        int v = g->members.data[i];
        if (!s->stored[v])
            continue;
        /* An accumulated sum adds up its operand's values. */
        VEC_PUSH(&values, emit(&b, s->accum[v] ? node(s, v)->in[0] : v));
        VEC_PUSH(&stores, v);
    }
    /* Copies into variables that this kernel stores (try_absorb_copy). */
    VEC(int) copies = {0}, copied = {0};
    for (int v = 0; v < s->n; v++) {
        if (s->absorbed[v] != gid)
            continue;
        VEC_PUSH(&copied, emit(&b, node(s, v)->in[0]));
        VEC_PUSH(&copies, v);
    }
    for (int i = 0; i < stores.len; i++) {
        int v = stores.data[i];
        KDim strides[KERNEL_MAX_RANK];
        strides_for(&node(s, v)->shape, &b.space, rank, strides);
        int a = arg_for(&b, storage_of(s, v), node(s, v)->dtype, strides);
        b.k->args[a].written = true;
        if (s->accum[v])
            kernel_accum(b.k, a, values.data[i]);
        else
            kernel_store(b.k, a, values.data[i]);
    }
    for (int i = 0; i < copies.len; i++) {
        const IrNode *n = node(s, copies.data[i]);
        KDim strides[KERNEL_MAX_RANK];
        strides_for(&node(s, n->in[0])->shape, &b.space, rank, strides);
        Storage var = {.is_var = true, .id = n->attr.var};
        int a = arg_for(&b, var, node(s, n->in[0])->dtype, strides);
        b.k->args[a].written = true;
        kernel_store(b.k, a, copied.data[i]);
    }
    VEC_FREE(&copies);
    VEC_FREE(&copied);
    collapse_dims(b.k);
    kernel_finalize(b.k);

    for (int a = 0; a < b.k->nargs; a++) {
        VEC_PUSH(&d->args, b.arg_storage.data[a]);
        Shape none = shape_scalar();
        VEC_PUSH(&d->shapes, none);
    }
    d->step.kind = RT_STEP_KERNEL;
    d->step.attr.kernel.outer_extent = b.k->extents[0].value;
    d->step.attr.kernel.outer_times_batch = b.k->extents[0].times_batch;
    d->step.attr.kernel.inner_points = kernel_inner_points(b.k);
    d->step.attr.kernel.serial = kernel_accumulates(b.k);

    VEC_FREE(&values);
    VEC_FREE(&stores);
    VEC_FREE(&b.arg_storage);
    free(b.memo);
    return b.k;
}

/* The kernel of a quantize node: rt_quant_encode as generated code, one
 * iteration per bucket. The executor may split the buckets across
 * threads unless two buckets share a byte. */
static Kernel *build_quantize_kernel(Sched *s, int v, Draft *d)
{
    const IrNode *n = node(s, v);
    const IrNode *x = node(s, n->in[0]);
    const int64_t *p = n->attr.spatial.p;
    KQuantize q = {
        .dtype = x->dtype,
        .layout = {.bits = (int)p[0], .bucket = p[1], .numel = shape_numel(&x->shape, 1)},
        .rounding = (RtRounding)p[2],
        .tag = (uint32_t)p[3],
    };
    char name[64];
    if (x->op == IR_VAR) {
        snprintf(name, sizeof name, "quantize_%s", s->g->module->vars[x->attr.var].name);
        for (char *c = name; *c; c++)
            if (*c == '.')
                *c = '_';
    } else {
        snprintf(name, sizeof name, "quantize%d", v);
    }
    Kernel *k = kernel_quantize_new(name, &q);

    for (int j = 0; j < n->nin; j++)
        VEC_PUSH(&d->args, storage_of(s, n->in[j]));
    VEC_PUSH(&d->args, storage_of(s, v));
    for (int a = 0; a < d->args.len; a++) {
        Shape none = shape_scalar();
        VEC_PUSH(&d->shapes, none);
    }
    d->step.kind = RT_STEP_KERNEL;
    d->step.attr.kernel.outer_extent = k->extents[0].value;
    d->step.attr.kernel.outer_times_batch = false;
    d->step.attr.kernel.inner_points = q.layout.bucket;
    d->step.attr.kernel.serial = !kernel_quantize_parallel(k);
    return k;
}

/* ---- library steps -------------------------------------------------------- */

static RtStepKind step_kind(IrOp op)
{
    switch (op) {
    case IR_MATMUL: return RT_STEP_MATMUL;
    case IR_CONV2D: return RT_STEP_CONV2D;
    case IR_CONV2D_GRAD_INPUT: return RT_STEP_CONV2D_GRAD_INPUT;
    case IR_CONV2D_GRAD_WEIGHT: return RT_STEP_CONV2D_GRAD_WEIGHT;
    case IR_MAXPOOL2D: return RT_STEP_MAXPOOL2D;
    case IR_MAXPOOL2D_GRAD: return RT_STEP_MAXPOOL2D_GRAD;
    case IR_CROSS_ENTROPY: return RT_STEP_CROSS_ENTROPY;
    case IR_CROSS_ENTROPY_GRAD: return RT_STEP_CROSS_ENTROPY_GRAD;
    case IR_GATHER: return RT_STEP_GATHER;
    case IR_SCATTER_ADD: return RT_STEP_SCATTER_ADD;
    case IR_SAMPLE_LABELS: return RT_STEP_SAMPLE_LABELS;
    case IR_SUM: return RT_STEP_REDUCE_SUM;
    case IR_GATHER_SHARDS: return RT_STEP_GATHER_SHARDS;
    case IR_REDUCE_SHARDS: return RT_STEP_REDUCE_SHARDS;
    default: BOCB_UNREACHABLE("library step");
    }
}

static void draft_arg(Draft *d, Storage st, Shape shape)
{
    VEC_PUSH(&d->args, st);
    VEC_PUSH(&d->shapes, shape);
}

static void build_library_step(Sched *s, int v, Draft *d)
{
    const IrNode *n = node(s, v);
    d->step.kind = ir_is_spatial(n->op) ? RT_STEP_SPATIAL : step_kind(n->op);
    d->step.label = ir_op_name(n->op);
    for (int j = 0; j < n->nin; j++)
        draft_arg(d, storage_of(s, n->in[j]), node(s, n->in[j])->shape);
    draft_arg(d, storage_of(s, v), n->shape);
    switch (n->op) {
    case IR_MATMUL:
        d->step.attr.matmul.trans_a = n->attr.matmul.trans_a;
        d->step.attr.matmul.trans_b = n->attr.matmul.trans_b;
        break;
    case IR_CONV2D: case IR_CONV2D_GRAD_INPUT: case IR_CONV2D_GRAD_WEIGHT:
        for (int i = 0; i < 2; i++) {
            d->step.attr.conv.stride[i] = n->attr.conv.stride[i];
            d->step.attr.conv.pad[i] = n->attr.conv.pad[i];
            d->step.attr.conv.dilation[i] = n->attr.conv.dilation[i];
        }
        d->step.attr.conv.groups = n->attr.conv.groups;
        break;
    case IR_MAXPOOL2D: case IR_MAXPOOL2D_GRAD:
        for (int i = 0; i < 2; i++) {
            d->step.attr.pool.kernel[i] = n->attr.pool.kernel[i];
            d->step.attr.pool.stride[i] = n->attr.pool.stride[i];
            d->step.attr.pool.pad[i] = n->attr.pool.pad[i];
        }
        break;
    case IR_SUM:
        d->step.attr.axes = n->attr.axes;
        break;
    case IR_CROSS_ENTROPY: case IR_CROSS_ENTROPY_GRAD:
        d->step.attr.loss = rt_loss_of(&n->attr.loss);
        break;
    case IR_GATHER_SHARDS: case IR_REDUCE_SHARDS:
        d->step.attr.var = n->attr.var;
        break;
    case IR_SAMPLE_LABELS:
        d->step.attr.sample.stream = n->attr.stream;
        d->step.attr.sample.logits_dtype = node(s, n->in[0])->dtype;
        break;
    default:
        if (ir_is_spatial(n->op))
            d->step.attr.spatial = n->attr.spatial;
        break;
    }
}

/* ---- memory planning ------------------------------------------------------ */

typedef struct Block {
    size_t offset, size;
} Block;

typedef struct Planner {
    VEC(Block) free_blocks; /* sorted by offset, coalesced */
    size_t top, peak;
} Planner;

static size_t plan_alloc(Planner *p, size_t size)
{
    int best = -1;
    for (int i = 0; i < p->free_blocks.len; i++) {
        Block *b = &p->free_blocks.data[i];
        if (b->size >= size && (best < 0 || b->size < p->free_blocks.data[best].size))
            best = i;
    }
    if (best >= 0) {
        Block *b = &p->free_blocks.data[best];
        size_t offset = b->offset;
        b->offset += size;
        b->size -= size;
        if (b->size == 0) {
            memmove(b, b + 1, (size_t)(p->free_blocks.len - best - 1) * sizeof *b);
            p->free_blocks.len--;
        }
        return offset;
    }
    size_t offset = p->top;
    p->top += size;
    if (p->top > p->peak)
        p->peak = p->top;
    return offset;
}

static void plan_release(Planner *p, size_t offset, size_t size)
{
    int i = 0;
    while (i < p->free_blocks.len && p->free_blocks.data[i].offset < offset)
        i++;
    Block nb = {offset, size};
    VEC_RESERVE(&p->free_blocks, p->free_blocks.len + 1);
    memmove(&p->free_blocks.data[i + 1], &p->free_blocks.data[i],
            (size_t)(p->free_blocks.len - i) * sizeof nb);
    p->free_blocks.data[i] = nb;
    p->free_blocks.len++;
    /* Coalesce with the neighbours. */
    if (i + 1 < p->free_blocks.len &&
        p->free_blocks.data[i].offset + p->free_blocks.data[i].size ==
            p->free_blocks.data[i + 1].offset) {
        p->free_blocks.data[i].size += p->free_blocks.data[i + 1].size;
        memmove(&p->free_blocks.data[i + 1], &p->free_blocks.data[i + 2],
                (size_t)(p->free_blocks.len - i - 2) * sizeof nb);
        p->free_blocks.len--;
    }
    if (i > 0 && p->free_blocks.data[i - 1].offset + p->free_blocks.data[i - 1].size ==
                     p->free_blocks.data[i].offset) {
        p->free_blocks.data[i - 1].size += p->free_blocks.data[i].size;
        memmove(&p->free_blocks.data[i], &p->free_blocks.data[i + 1],
                (size_t)(p->free_blocks.len - i - 1) * sizeof nb);
        p->free_blocks.len--;
    }
}

static size_t value_bytes(const IrNode *n, int64_t max_batch)
{
    size_t bytes = size_mul((size_t)shape_numel(&n->shape, max_batch), dtype_size(n->dtype));
    return (bytes + 63) & ~(size_t)63;
}

/* Returns the bytes of the parameters that gather nodes read, each
 * parameter once, in the arena's alignment. */
static size_t gathered_total(const Sched *s)
{
    bool *seen = xcalloc((size_t)s->g->module->nvars + 1, sizeof(bool));
    size_t total = 0;
    for (int v = 0; v < s->n; v++) {
        const IrNode *n = node(s, v);
        if (n->op != IR_GATHER_SHARDS || seen[n->attr.var])
            continue;
        seen[n->attr.var] = true;
        total += value_bytes(n, 1);
    }
    free(seen);
    return total;
}

/* Assigns arena offsets to every arena storage the drafts use. Inputs and
 * outputs live for the whole program; everything else from the step that
 * writes it to the last step that reads it. Sets *gathered to the most
 * bytes that gathered parameters hold at once. */
static size_t plan_memory(Sched *s, Draft *drafts, int ndrafts, int64_t max_batch,
                          size_t *offsets, size_t *gathered)
{
    int n = s->n;
    int *first = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    int *last = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    for (int i = 0; i < n; i++)
        first[i] = last[i] = -1;
    int forever = ndrafts;

    for (int d = 0; d < ndrafts; d++) {
        for (int a = 0; a < drafts[d].args.len; a++) {
            Storage st = drafts[d].args.data[a];
            if (st.is_var)
                continue;
            if (first[st.id] < 0)
                first[st.id] = d;
            last[st.id] = d;
        }
    }
    for (int i = 0; i < s->g->ninputs; i++) {
        for (int v = 0; v < n; v++) {
            if (node(s, v)->op == IR_INPUT && node(s, v)->attr.input == i) {
                first[v] = -1;
                last[v] = forever;
            }
        }
    }
    for (int i = 0; i < s->g->noutputs; i++) {
        Storage st = storage_of(s, s->g->outputs[i].node);
        if (!st.is_var)
            last[st.id] = forever;
    }

    Planner p = {0};
    size_t gathered_now = 0;
    *gathered = 0;
    /* Inputs first, at the bottom of the arena. */
    for (int v = 0; v < n; v++)
        if (node(s, v)->op == IR_INPUT)
            offsets[v] = plan_alloc(&p, value_bytes(node(s, v), max_batch));
    for (int d = 0; d < ndrafts; d++) {
        for (int v = 0; v < n; v++) {
            if (first[v] != d || node(s, v)->op == IR_INPUT)
                continue;
            size_t bytes = value_bytes(node(s, v), max_batch);
            offsets[v] = plan_alloc(&p, bytes);
            if (node(s, v)->op == IR_GATHER_SHARDS)
                gathered_now += bytes;
        }
        if (gathered_now > *gathered)
            *gathered = gathered_now;
        for (int v = 0; v < n; v++) {
            if (last[v] != d || node(s, v)->op == IR_INPUT)
                continue;
            size_t bytes = value_bytes(node(s, v), max_batch);
            plan_release(&p, offsets[v], bytes);
            if (node(s, v)->op == IR_GATHER_SHARDS)
                gathered_now -= bytes;
        }
    }
    VEC_FREE(&p.free_blocks);
    free(first);
    free(last);
    return p.peak;
}

/* ---- the pass ------------------------------------------------------------- */

static RtSlot slot_of(Storage st, const size_t *offsets)
{
    if (st.is_var)
        return (RtSlot){.region = RT_REGION_VAR, .offset = (size_t)st.id};
    return (RtSlot){.region = RT_REGION_ARENA, .offset = offsets[st.id]};
}

static DType dtype_of_storage(const Sched *s, Storage st)
{
    return st.is_var ? s->g->module->vars[st.id].dtype : node(s, st.id)->dtype;
}

void schedule_graph(const IrGraph *g, int64_t max_batch, Schedule *out)
{
    memset(out, 0, sizeof *out);
    Sched s = {.g = g, .n = g->nnodes};
    int n = s.n;
    s.role = xcalloc((size_t)n + 1, sizeof(Role));
    s.group = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    s.is_output = xcalloc((size_t)n + 1, sizeof(bool));
    s.stored = xcalloc((size_t)n + 1, sizeof(bool));
    s.var_alias = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    s.absorbed = xmalloc(size_mul((size_t)n + 1, sizeof(int)));
    s.accum = xcalloc((size_t)n + 1, sizeof(bool));
    s.stamp = xcalloc((size_t)n + 1, sizeof(int));
    for (int i = 0; i < n; i++) {
        s.group[i] = -1;
        s.var_alias[i] = s.absorbed[i] = -1;
        s.role[i] = role_of(&g->nodes[i]);
    }
    for (int i = 0; i < g->noutputs; i++)
        s.is_output[g->outputs[i].node] = true;
    build_consumers(&s);

    find_accumulated_sums(&s);
    fuse(&s);
    merge_update_siblings(&s);
    decide_stores(&s);
    build_units(&s);
    int *order = order_units(&s);

    /* Drafts in execution order. */
    int nu = s.units.len;
    Draft *drafts = xcalloc((size_t)nu + 1, sizeof(Draft));
    VEC(Kernel *) kernels = {0};
    for (int k = 0; k < nu; k++) {
        const Unit *u = &s.units.data[order[k]];
        Draft *d = &drafts[k];
        d->kernel = -1;
        Kernel *kern = NULL;
        switch (u->kind) {
        case UNIT_GROUP:
            kern = build_kernel(&s, u->index, d);
            d->step.dtype = node(&s, s.groups.data[u->index].members.data[0])->dtype;
            break;
        case UNIT_NODE:
            if (node(&s, u->index)->op == IR_QUANTIZE)
                kern = build_quantize_kernel(&s, u->index, d);
            else
                build_library_step(&s, u->index, d);
            d->step.dtype = node(&s, u->index)->dtype;
            break;
        case UNIT_COPY: {
            const IrNode *a = node(&s, u->index);
            d->step.kind = RT_STEP_COPY;
            d->step.label = "copy";
            d->step.dtype = a->dtype;
            draft_arg(d, storage_of(&s, a->in[0]), node(&s, a->in[0])->shape);
            draft_arg(d, (Storage){.is_var = true, .id = a->attr.var}, a->shape);
            break;
        }
        }
        if (kern) {
            d->kernel = kernels.len;
            d->step.attr.kernel.index = kernels.len;
            d->step.label = kern->name;
            VEC_PUSH(&kernels, kern);
        }
    }

    size_t *offsets = xcalloc((size_t)n + 1, sizeof(size_t));
    RtProgram *p = &out->program;
    p->name = g->name;
    p->max_batch = max_batch;
    p->arena_bytes = plan_memory(&s, drafts, nu, max_batch, offsets, &p->gathered_bytes);
    p->gathered_total = gathered_total(&s);

    p->nsteps = nu;
    p->steps = xcalloc((size_t)nu + 1, sizeof(RtStep));
    for (int k = 0; k < nu; k++) {
        Draft *d = &drafts[k];
        RtStep *st = &p->steps[k];
        *st = d->step;
        st->nargs = d->args.len;
        st->args = xcalloc((size_t)st->nargs + 1, sizeof(RtSlot));
        st->shapes = xcalloc((size_t)st->nargs + 1, sizeof(Shape));
        for (int a = 0; a < st->nargs; a++) {
            st->args[a] = slot_of(d->args.data[a], offsets);
            st->shapes[a] = d->shapes.data[a];
        }
        if (st->kind == RT_STEP_CONV2D || st->kind == RT_STEP_CONV2D_GRAD_INPUT ||
            st->kind == RT_STEP_CONV2D_GRAD_WEIGHT) {
            const Shape *x = st->kind == RT_STEP_CONV2D_GRAD_INPUT ? &st->shapes[2] : &st->shapes[0];
            const Shape *w = st->kind == RT_STEP_CONV2D_GRAD_WEIGHT ? &st->shapes[2] : &st->shapes[1];
            /* The scratch buffer is sized for one image, so any batch size will do. */
            RtConv2d cv = rt_conv2d_make(x, w, st->attr.conv.stride, st->attr.conv.pad,
                                         st->attr.conv.dilation, st->attr.conv.groups, 1);
            size_t ws = rt_conv2d_workspace_bytes(st->dtype, &cv);
            if (ws > p->workspace_bytes)
                p->workspace_bytes = ws;
        }
        VEC_FREE(&d->args);
        VEC_FREE(&d->shapes);
    }

    p->ninputs = g->ninputs;
    p->inputs = xcalloc((size_t)g->ninputs + 1, sizeof(RtPort));
    for (int v = 0; v < n; v++) {
        const IrNode *nd = node(&s, v);
        if (nd->op != IR_INPUT)
            continue;
        const IrInput *in = &g->inputs[nd->attr.input];
        p->inputs[nd->attr.input] = (RtPort){.name = in->name, .dtype = in->dtype,
                                             .shape = in->shape,
                                             .slot = slot_of(storage_of(&s, v), offsets)};
    }
    p->noutputs = g->noutputs;
    p->outputs = xcalloc((size_t)g->noutputs + 1, sizeof(RtPort));
    for (int i = 0; i < g->noutputs; i++) {
        int v = g->outputs[i].node;
        Storage st = storage_of(&s, v);
        p->outputs[i] = (RtPort){.name = g->outputs[i].name, .dtype = dtype_of_storage(&s, st),
                                 .shape = node(&s, v)->shape, .slot = slot_of(st, offsets)};
    }
    p->nkernels = kernels.len;
    p->kernels = xcalloc((size_t)kernels.len + 1, sizeof(RtKernelFn));
    out->kernels = kernels.data;
    out->nkernels = kernels.len;

    free(offsets);
    free(drafts);
    free(order);
    for (int i = 0; i < s.groups.len; i++)
        VEC_FREE(&s.groups.data[i].members);
    VEC_FREE(&s.groups);
    for (int i = 0; i < s.units.len; i++)
        VEC_FREE(&s.units.data[i].deps);
    VEC_FREE(&s.units);
    free(s.role);
    free(s.group);
    free(s.is_output);
    free(s.stored);
    free(s.var_alias);
    free(s.absorbed);
    free(s.accum);
    free(s.stamp);
    free(s.cons_start);
    free(s.cons);
    free(s.group_unit);
    free(s.node_unit);
}

void schedule_free(Schedule *s)
{
    for (int i = 0; i < s->nkernels; i++)
        kernel_free(s->kernels[i]);
    free(s->kernels);
    rt_program_free(&s->program);
    memset(s, 0, sizeof *s);
}

static void print_slot(FILE *out, RtSlot slot)
{
    if (slot.region == RT_REGION_VAR)
        fprintf(out, "var%zu", slot.offset);
    else
        fprintf(out, "arena+%zu", slot.offset);
}

void schedule_print(FILE *out, const Schedule *s)
{
    const RtProgram *p = &s->program;
    fprintf(out, "program %s: %d steps, %d kernels, arena %zu bytes at batch %lld",
            p->name, p->nsteps, p->nkernels, p->arena_bytes, (long long)p->max_batch);
    if (p->gathered_bytes > 0)
        fprintf(out, ", gathered parameters at most %zu of %zu bytes", p->gathered_bytes,
                p->gathered_total);
    fputc('\n', out);
    for (int i = 0; i < p->nsteps; i++) {
        const RtStep *st = &p->steps[i];
        fprintf(out, "  step %d: %s", i, st->label);
        if (st->kind == RT_STEP_GATHER_SHARDS || st->kind == RT_STEP_REDUCE_SHARDS)
            fprintf(out, "[var%d]", st->attr.var);
        fputc('(', out);
        for (int a = 0; a < st->nargs; a++) {
            if (a)
                fputs(", ", out);
            print_slot(out, st->args[a]);
        }
        fputs(")\n", out);
    }
    for (int k = 0; k < s->nkernels; k++)
        kernel_print(out, s->kernels[k]);
}
