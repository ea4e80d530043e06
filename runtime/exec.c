/* exec.c - the executor of compiled programs. */
#include "exec.h"
#include "parallel.h"

#include <stdlib.h>
#include <string.h>

#include "base.h"

struct RtExec {
    const RtProgram *prog;
    RtVarStore *vars;
    unsigned char *arena;
    void *workspace;
    void ***pointers; /* per step, its resolved argument pointers */
    RtShardHooks shard_hooks;
};

void rt_program_free(RtProgram *p)
{
    for (int i = 0; i < p->nsteps; i++) {
        free(p->steps[i].args);
        free(p->steps[i].shapes);
    }
    free(p->steps);
    free(p->inputs);
    free(p->outputs);
    free(p->kernels);
    memset(p, 0, sizeof *p);
}

double rt_program_flops(const RtProgram *p, int64_t batch)
{
    double flops = 0;
    for (int i = 0; i < p->nsteps; i++) {
        const RtStep *s = &p->steps[i];
        const Shape *sh = s->shapes;
        switch (s->kind) {
        case RT_STEP_MATMUL: {
            int64_t k = shape_dim(&sh[0], s->attr.matmul.trans_a ? 0 : 1, batch);
            flops += 2.0 * (double)shape_numel(&sh[2], batch) * (double)k;
            break;
        }
        case RT_STEP_CONV2D:
        case RT_STEP_CONV2D_GRAD_INPUT:
        case RT_STEP_CONV2D_GRAD_WEIGHT: {
            /* Every variant multiplies each output element by a C/g*R*S window. */
            const Shape *y = s->kind == RT_STEP_CONV2D ? &sh[2]
                             : s->kind == RT_STEP_CONV2D_GRAD_INPUT ? &sh[0] : &sh[1];
            const Shape *w = s->kind == RT_STEP_CONV2D_GRAD_WEIGHT ? &sh[2] : &sh[1];
            double window = (double)(w->dims[1] * w->dims[2] * w->dims[3]);
            flops += 2.0 * (double)shape_numel(y, batch) * window;
            break;
        }
        case RT_STEP_SPATIAL: {
            if (s->attr.spatial.op != RT_SPATIAL_BMM)
                break;
            int rank = sh[0].rank;
            int64_t k = sh[0].dims[rank - (s->attr.spatial.p[0] ? 2 : 1)];
            flops += 2.0 * (double)shape_numel(&sh[2], batch) * (double)k;
            break;
        }
        default:
            break;
        }
    }
    return flops;
}

static void *resolve(RtExec *e, RtSlot slot)
{
    if (slot.region == RT_REGION_VAR)
        return rt_var_data(e->vars, (int)slot.offset);
    BOCB_ASSERT(slot.offset < e->prog->arena_bytes);
    return e->arena + slot.offset;
}

RtExec *rt_exec_create(const RtProgram *prog, RtVarStore *vars)
{
    RtExec *e = xcalloc(1, sizeof *e);
    e->prog = prog;
    e->vars = vars;
    e->arena = xmalloc_aligned(prog->arena_bytes ? prog->arena_bytes : 64);
    /* Zeroed so that a program reading a slot it never wrote is at least
     * deterministic; the planner never lets that happen. */
    memset(e->arena, 0, prog->arena_bytes);
    e->workspace = xmalloc_aligned(prog->workspace_bytes ? prog->workspace_bytes : 64);
    e->pointers = xcalloc((size_t)prog->nsteps + 1, sizeof *e->pointers);
    for (int i = 0; i < prog->nsteps; i++) {
        const RtStep *s = &prog->steps[i];
        e->pointers[i] = xcalloc((size_t)s->nargs + 1, sizeof(void *));
        for (int j = 0; j < s->nargs; j++)
            e->pointers[i][j] = resolve(e, s->args[j]);
    }
    return e;
}

void rt_exec_destroy(RtExec *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->prog->nsteps; i++)
        free(e->pointers[i]);
    free(e->pointers);
    free(e->arena);
    free(e->workspace);
    free(e);
}

static const RtPort *find_port(const RtPort *ports, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(ports[i].name, name) == 0)
            return &ports[i];
    return NULL;
}

void *rt_exec_input(RtExec *e, const char *name)
{
    const RtPort *p = find_port(e->prog->inputs, e->prog->ninputs, name);
    return p ? resolve(e, p->slot) : NULL;
}

const void *rt_exec_output(const RtExec *e, const char *name)
{
    const RtPort *p = find_port(e->prog->outputs, e->prog->noutputs, name);
    BOCB_ASSERT(p);
    return resolve((RtExec *)e, p->slot);
}

static RtConv2d conv_of(const RtStep *s, const Shape *x, const Shape *w, int64_t batch)
{
    return rt_conv2d_make(x, w, s->attr.conv.stride, s->attr.conv.pad, s->attr.conv.dilation,
                          s->attr.conv.groups, batch);
}

static RtPool2d pool_of(const RtStep *s, const Shape *x, int64_t batch)
{
    return rt_pool2d_make(x, s->attr.pool.kernel, s->attr.pool.stride, s->attr.pool.pad,
                          batch);
}

/* A fused kernel call, split by rt_parallel_for. */
typedef struct KernelCall {
    RtKernelFn fn;
    void *const *args;
    int64_t batch;
} KernelCall;

static void run_kernel_range(void *context, int64_t begin, int64_t end)
{
    const KernelCall *call = context;
    call->fn(call->args, call->batch, begin, end);
}

/* Kernels with fewer points run on one thread, because waking the pool
 * costs about as much as a kernel of this size computes.
 * NOTE: an estimate from the quickstart's kernels on a 2-core Zen 4. */
enum { PARALLEL_MIN_POINTS = 1 << 16 };

static void run_kernel(const RtExec *e, const RtStep *s, void **p, int64_t batch)
{
    int64_t extent = s->attr.kernel.outer_extent;
    if (s->attr.kernel.outer_times_batch)
        extent *= batch;
    RtKernelFn fn = e->prog->kernels[s->attr.kernel.index];
    int64_t points = extent * s->attr.kernel.inner_points;
    if (s->attr.kernel.serial || points < PARALLEL_MIN_POINTS) {
        fn(p, batch, 0, extent);
        return;
    }
    KernelCall call = {fn, p, batch};
    rt_parallel_for(extent, run_kernel_range, &call);
}

static void run_step(RtExec *e, const RtStep *s, void **p, int64_t batch)
{
    const Shape *sh = s->shapes;
    DType dt = s->dtype;
    switch (s->kind) {
    case RT_STEP_KERNEL:
        run_kernel(e, s, p, batch);
        return;
    case RT_STEP_MATMUL: {
        bool ta = s->attr.matmul.trans_a, tb = s->attr.matmul.trans_b;
        int64_t m = shape_dim(&sh[2], 0, batch), n = shape_dim(&sh[2], 1, batch);
        int64_t k = shape_dim(&sh[0], ta ? 0 : 1, batch);
        rt_matmul(dt, ta, tb, m, n, k, p[0], p[1], p[2], 0.0);
        return;
    }
    case RT_STEP_CONV2D: {
        RtConv2d cv = conv_of(s, &sh[0], &sh[1], batch);
        rt_conv2d_forward(dt, &cv, p[0], p[1], p[2], e->workspace);
        return;
    }
    case RT_STEP_CONV2D_GRAD_INPUT: {
        RtConv2d cv = conv_of(s, &sh[2], &sh[1], batch);
        rt_conv2d_grad_input(dt, &cv, p[0], p[1], p[2], e->workspace);
        return;
    }
    case RT_STEP_CONV2D_GRAD_WEIGHT: {
        RtConv2d cv = conv_of(s, &sh[0], &sh[2], batch);
        rt_conv2d_grad_weight(dt, &cv, p[0], p[1], p[2], e->workspace);
        return;
    }
    case RT_STEP_MAXPOOL2D: {
        RtPool2d pl = pool_of(s, &sh[0], batch);
        rt_maxpool2d_forward(dt, &pl, p[0], p[1]);
        return;
    }
    case RT_STEP_MAXPOOL2D_GRAD: {
        RtPool2d pl = pool_of(s, &sh[0], batch);
        rt_maxpool2d_grad(dt, &pl, p[0], p[1], p[2]);
        return;
    }
    case RT_STEP_CROSS_ENTROPY:
        rt_loss(dt, s->attr.loss, shape_dim(&sh[0], 0, batch), sh[0].dims[1], p[0], p[1],
                p[2]);
        return;
    case RT_STEP_CROSS_ENTROPY_GRAD:
        rt_loss_grad(dt, s->attr.loss, shape_dim(&sh[0], 0, batch), sh[0].dims[1], p[0],
                     p[1], p[2], p[3]);
        return;
    case RT_STEP_GATHER:
        rt_gather(dt, shape_numel(&sh[1], batch), sh[0].dims[0], sh[0].dims[1], p[0], p[1],
                  p[2]);
        return;
    case RT_STEP_SCATTER_ADD:
        rt_scatter_add(dt, shape_numel(&sh[0], batch), sh[2].dims[0], sh[2].dims[1], p[0],
                       p[1], p[2]);
        return;
    case RT_STEP_SAMPLE_LABELS: {
        DType lt = s->attr.sample.logits_dtype;
        double step = lt == DT_F32 ? *(const float *)p[1] : *(const double *)p[1];
        rt_sample_labels(lt, shape_dim(&sh[0], 0, batch), sh[0].dims[1], p[0],
                         philox_key(s->attr.sample.stream, (uint32_t)step), p[2]);
        return;
    }
    case RT_STEP_REDUCE_SUM: {
        int64_t dims[SHAPE_MAX_RANK];
        for (int i = 0; i < sh[0].rank; i++)
            dims[i] = shape_dim(&sh[0], i, batch);
        rt_reduce_sum(dt, sh[0].rank, dims, s->attr.axes, p[0], p[1]);
        return;
    }
    case RT_STEP_COPY:
        memmove(p[1], p[0], (size_t)shape_numel(&sh[0], batch) * dtype_size(dt));
        return;
    case RT_STEP_SPATIAL:
        rt_spatial_run(dt, &s->attr.spatial, sh, p, batch);
        return;
    case RT_STEP_GATHER_SHARDS:
        BOCB_ASSERT(e->shard_hooks.gather && "gather step without shard hooks");
        e->shard_hooks.gather(e->shard_hooks.context, s->attr.var, p[0]);
        return;
    case RT_STEP_REDUCE_SHARDS:
        BOCB_ASSERT(e->shard_hooks.reduce && "reduce step without shard hooks");
        e->shard_hooks.reduce(e->shard_hooks.context, s->attr.var, p[0]);
        memset(p[1], 0, dtype_size(dt));
        return;
    }
    BOCB_UNREACHABLE("step kind");
}

void rt_exec_set_shard_hooks(RtExec *e, const RtShardHooks *hooks)
{
    e->shard_hooks = *hooks;
}

void rt_exec_run(RtExec *e, int64_t batch)
{
    BOCB_ASSERT(batch >= 1 && batch <= e->prog->max_batch);
    for (int i = 0; i < e->prog->nsteps; i++)
        run_step(e, &e->prog->steps[i], e->pointers[i], batch);
}
