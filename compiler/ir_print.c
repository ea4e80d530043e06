/* ir_print.c - the text form of the IR (--emit=ir) and Graphviz (--emit=dot).
 *
 * The text form is stable so that lit tests can match it:
 *
 *   graph train_step
 *     var @mlp.linear1.weight : f32[256, 784] param uniform(0.0357142857)
 *     %0 = input "x" : f32[B, 1, 28, 28]
 *     %4 = matmul %3, %2 trans_b : f32[B, 256]
 *     %9 = assign @mlp.linear1.weight, %8 : f32[256, 784]
 *     output "loss" = %12
 *
 * Variables the graph touches come first, then one node per line with its
 * attributes and result type, then the outputs. Numbers print in the
 * shortest form that reads back to the same double.
 */
#include <stdlib.h>
#include <string.h>

#include "ir.h"
#include "ir_spatial.h"

static void print_type(FILE *out, DType dt, const Shape *s)
{
    char buf[128];
    fprintf(out, "%s%s", dtype_name(dt), shape_format(s, buf, sizeof buf));
}

static void print_pair(FILE *out, const char *name, const int64_t v[2])
{
    fprintf(out, " %s [%lld, %lld]", name, (long long)v[0], (long long)v[1]);
}

static void print_axes(FILE *out, uint32_t axes)
{
    fputs(" axes [", out);
    bool first = true;
    for (int i = 0; i < 32; i++) {
        if (!(axes & (1u << i)))
            continue;
        fprintf(out, first ? "%d" : ", %d", i);
        first = false;
    }
    fputc(']', out);
}

static void print_spatial_attrs(FILE *out, const IrNode *n)
{
    const RtSpatialAttr *a = &n->attr.spatial;
    switch (n->op) {
    case IR_PERMUTE:
        fputs(" perm [", out);
        for (int i = 0; i < n->shape.rank; i++)
            fprintf(out, i ? ", %lld" : "%lld", (long long)a->p[i]);
        fputc(']', out);
        break;
    case IR_SLICE:
        fprintf(out, " axis %lld start %lld", (long long)a->p[0], (long long)a->p[1]);
        break;
    case IR_CONCAT:
    case IR_IOTA:
        fprintf(out, " axis %lld", (long long)a->p[0]);
        break;
    case IR_BMM:
        if (a->p[0])
            fputs(" trans_a", out);
        if (a->p[1])
            fputs(" trans_b", out);
        break;
    case IR_AVGPOOL2D:
    case IR_AVGPOOL2D_GRAD:
        print_pair(out, "kernel", &a->p[0]);
        print_pair(out, "stride", &a->p[2]);
        print_pair(out, "pad", &a->p[4]);
        if (a->p[6])
            fputs(" count_include_pad", out);
        break;
    case IR_REDUCE_MAX:
    case IR_REDUCE_MAX_GRAD:
        print_axes(out, (uint32_t)a->p[0]);
        break;
    case IR_QUANTIZE:
        fprintf(out, " bits %lld bucket %lld %s tag %lld", (long long)a->p[0],
                (long long)a->p[1], rt_rounding_name((RtRounding)a->p[2]), (long long)a->p[3]);
        break;
    case IR_DEQUANTIZE:
        fprintf(out, " bits %lld bucket %lld", (long long)a->p[0], (long long)a->p[1]);
        break;
    default:
        BOCB_UNREACHABLE("not a spatial op");
    }
}

static void print_var_decl(FILE *out, const IrVar *v)
{
    char num[64];
    fprintf(out, "  var @%s : ", v->name);
    print_type(out, v->dtype, &v->shape);
    if (v->kind == IR_VAR_PARAM)
        fputs(v->frozen ? " param frozen" : " param", out);
    else if (v->kind == IR_VAR_STATE)
        fputs(" state", out);
    else
        fputs(" buffer", out);
    switch (v->init) {
    case IR_INIT_ZEROS:
        fputs(" zeros", out);
        break;
    case IR_INIT_CONST:
        format_double(num, sizeof num, v->init_value);
        fprintf(out, " const(%s)", num);
        break;
    case IR_INIT_UNIFORM:
        format_double(num, sizeof num, v->init_value);
        fprintf(out, " uniform(%s)", num);
        break;
    case IR_INIT_TRUNC_NORMAL:
        format_double(num, sizeof num, v->init_value);
        fprintf(out, " trunc_normal(%s)", num);
        break;
    }
    fputc('\n', out);
}

static void print_node(FILE *out, const IrGraph *g, int id)
{
    const IrNode *n = &g->nodes[id];
    const IrModule *m = g->module;
    char num[64];

    fprintf(out, "  %%%d = %s", id, ir_op_name(n->op));
    switch (n->op) {
    case IR_INPUT:
        fprintf(out, " \"%s\"", g->inputs[n->attr.input].name);
        break;
    case IR_VAR:
        fprintf(out, " @%s", m->vars[n->attr.var].name);
        break;
    case IR_CONST:
        format_double(num, sizeof num, n->attr.value);
        fprintf(out, " %s", num);
        break;
    case IR_ASSIGN:
    case IR_REDUCE_SHARDS:
        fprintf(out, " @%s,", m->vars[n->attr.var].name);
        break;
    case IR_GATHER_SHARDS:
        fprintf(out, " @%s", m->vars[n->attr.var].name);
        break;
    default:
        break;
    }
    for (int i = 0; i < n->nin; i++)
        fprintf(out, "%s %%%d", i > 0 ? "," : "", n->in[i]);

    switch (n->op) {
    case IR_MATMUL:
        if (n->attr.matmul.trans_a)
            fputs(" trans_a", out);
        if (n->attr.matmul.trans_b)
            fputs(" trans_b", out);
        break;
    case IR_CONV2D:
    case IR_CONV2D_GRAD_INPUT:
    case IR_CONV2D_GRAD_WEIGHT:
        print_pair(out, "stride", n->attr.conv.stride);
        print_pair(out, "pad", n->attr.conv.pad);
        print_pair(out, "dilation", n->attr.conv.dilation);
        fprintf(out, " groups %lld", (long long)n->attr.conv.groups);
        break;
    case IR_MAXPOOL2D:
    case IR_MAXPOOL2D_GRAD:
        print_pair(out, "kernel", n->attr.pool.kernel);
        print_pair(out, "stride", n->attr.pool.stride);
        print_pair(out, "pad", n->attr.pool.pad);
        break;
    case IR_SUM:
        print_axes(out, n->attr.axes);
        break;
    case IR_CROSS_ENTROPY:
    case IR_CROSS_ENTROPY_GRAD:
        if (n->attr.loss.kind == IR_LOSS_MSE)
            fputs(" mse", out);
        if (n->attr.loss.label_smoothing != 0) {
            char text[64];
            format_double(text, sizeof text, n->attr.loss.label_smoothing);
            fprintf(out, " label_smoothing %s", text);
        }
        break;
    default:
        if (ir_is_spatial(n->op))
            print_spatial_attrs(out, n);
        break;
    }
    fputs(" : ", out);
    print_type(out, n->dtype, &n->shape);
    if (n->recomputed)
        fputs(" recomputed", out);
    fputc('\n', out);
}

void ir_print(FILE *out, const IrGraph *g)
{
    fprintf(out, "graph %s\n", g->name);

    const IrModule *m = g->module;
    bool *used = xcalloc((size_t)m->nvars + 1, sizeof *used);
    for (int i = 0; i < g->nnodes; i++)
        if (ir_names_var(g->nodes[i].op))
            used[g->nodes[i].attr.var] = true;
    for (int v = 0; v < m->nvars; v++)
        if (used[v])
            print_var_decl(out, &m->vars[v]);
    free(used);

    for (int i = 0; i < g->nnodes; i++)
        print_node(out, g, i);
    for (int i = 0; i < g->noutputs; i++)
        fprintf(out, "  output \"%s\" = %%%d\n", g->outputs[i].name, g->outputs[i].node);
}

/* Writes s with the characters that end or break a DOT string escaped. */
static void print_dot_string(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', out);
        if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

void ir_print_dot(FILE *out, const IrGraph *g)
{
    const IrModule *m = g->module;
    char shape[128];

    fputs("digraph \"", out);
    print_dot_string(out, g->name);
    fputs("\" {\n", out);
    fputs("  node [shape=box, fontname=\"monospace\", fontsize=10];\n", out);
    for (int i = 0; i < g->nnodes; i++) {
        const IrNode *n = &g->nodes[i];
        shape_format(&n->shape, shape, sizeof shape);
        const char *style = "";
        switch (ir_op_class(n->op)) {
        case IR_CLASS_LEAF: style = ", style=filled, fillcolor=\"#e8f0fe\""; break;
        case IR_CLASS_LIBRARY: style = ", style=filled, fillcolor=\"#fde8d8\""; break;
        case IR_CLASS_EFFECT: style = ", style=filled, fillcolor=\"#e6f4ea\""; break;
        default: break;
        }
        fprintf(out, "  n%d [label=\"%%%d %s", i, i, ir_op_name(n->op));
        if (ir_names_var(n->op)) {
            fputs(" @", out);
            print_dot_string(out, m->vars[n->attr.var].name);
        } else if (n->op == IR_INPUT) {
            fputc(' ', out);
            print_dot_string(out, g->inputs[n->attr.input].name);
        }
        fprintf(out, "\\n%s%s\"%s];\n", dtype_name(n->dtype), shape, style);
        for (int j = 0; j < n->nin; j++)
            fprintf(out, "  n%d -> n%d;\n", n->in[j], i);
    }
    for (int i = 0; i < g->noutputs; i++) {
        fprintf(out, "  out%d [label=\"", i);
        print_dot_string(out, g->outputs[i].name);
        fputs("\", shape=ellipse];\n", out);
        fprintf(out, "  n%d -> out%d;\n", g->outputs[i].node, i);
    }
    fputs("}\n", out);
}
