/* shard.c - the sharded training loop of shard.h.
 *
 * The epochs, shuffling, batches, schedule and divergence rules are those
 * of rt_train (runtime/train.c), so a sharded run visits the samples of a
 * single-process run in the same global batches. Only f32 cells are
 * sharded, which is what the driver compiles.
 */
#include "shard.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "qsdp.h"

/* The shuffle stream of rt_train, so both loops visit the same batches. */
enum { SHUFFLE_STREAM = 0x40000000 };

/* ---- the update graph's executor ------------------------------------------- */

typedef struct UpdateExec {
    const IrGraph *g;
    Schedule sched;
    RtExec *exec;
    Interp *interp;
    void **inputs; /* interpreter only: per graph input */
} UpdateExec;

static bool update_create(UpdateExec *u, const CellRunner *r, Jit *jit, char **error)
{
    memset(u, 0, sizeof *u);
    u->g = r->cell->update;
    RtVarStore *vars = (RtVarStore *)&r->vars;
    if (r->backend == BACKEND_JIT) {
        schedule_graph(u->g, 1, &u->sched);
        if (u->sched.nkernels > 0 &&
            !jit_compile(jit, u->sched.kernels, u->sched.nkernels, u->sched.program.kernels,
                         error)) {
            schedule_free(&u->sched);
            return false;
        }
        u->exec = rt_exec_create(&u->sched.program, vars);
        return true;
    }
    u->interp = interp_create(u->g, vars);
    u->inputs = xcalloc((size_t)u->g->ninputs + 1, sizeof(void *));
    for (int i = 0; i < u->g->ninputs; i++) {
        const IrInput *in = &u->g->inputs[i];
        size_t bytes = size_mul((size_t)shape_numel(&in->shape, 1), dtype_size(in->dtype));
        u->inputs[i] = xcalloc(bytes ? bytes : 1, 1);
        interp_bind_input(u->interp, i, u->inputs[i]);
    }
    return true;
}

static void *update_input(UpdateExec *u, const char *name)
{
    if (u->exec)
        return rt_exec_input(u->exec, name);
    int i = ir_find_input(u->g, name);
    BOCB_ASSERT(i >= 0);
    return u->inputs[i];
}

static void update_run(UpdateExec *u)
{
    if (u->exec)
        rt_exec_run(u->exec, 1);
    else
        interp_run(u->interp, 1);
}

static void update_destroy(UpdateExec *u)
{
    if (u->exec) {
        rt_exec_destroy(u->exec);
        schedule_free(&u->sched);
    }
    if (u->interp) {
        interp_destroy(u->interp);
        for (int i = 0; i < u->g->ninputs; i++)
            free(u->inputs[i]);
        free(u->inputs);
    }
}

/* ---- one rank's view of the shards ------------------------------------------ */

typedef struct Shards {
    const ShardConfig *sc;
    const RtTrainConfig *cfg;
    const QsdpShards *layout;
    CellRunner *runner;
    RtVarStore *vars;
    int procs;      /* processes = shards per parameter */
    int own;        /* the shard this process owns */
    int ranks;      /* ranks whose gradients are summed */
    uint8_t *send, *recv;
    size_t *sizes, *offsets; /* 2 * procs: received blocks, then sent ones */
    float *decoded;
    uint8_t **iterate_codes; /* per parameter: the encoding of the own shard */
    bool iterate_started;    /* the initial weights have been quantized */
    char **grad_names;
    /* The step that the training graph runs, for its gather and reduce
     * steps (gather_hook, reduce_hook). */
    int *param_index;  /* module variable -> parameter k, or -1 */
    int64_t gathered;  /* gather steps run in this step */
    int64_t gathers_per_step; /* gather steps of the training graph */
    char fault[96];    /* the first fault that --check-numerics found here */
    /* The variables that the training program assigns (running batch-norm
     * statistics), with room for a copy: a simulation keeps rank 0's
     * values, as rank 0 of an MPI run, which evaluates, has them. */
    int *assigned;
    int nassigned;
    void **saved;
    float **acc;       /* per parameter: the update graph's gradient input */
    uint32_t step;
    int64_t batch;     /* samples in the global batch */
    int rank;          /* the rank whose gradient the graph computes */
} Shards;

static int64_t valid_len(const QsdpShards *l, int k, int shard)
{
    int64_t first = (int64_t)shard * l->chunk[k];
    if (first >= l->numel[k])
        return 0;
    return l->numel[k] - first < l->chunk[k] ? l->numel[k] - first : l->chunk[k];
}

static RtQuantizer quantizer_for(const Shards *s, const QuantSetting *q, int k, QsdpKind kind,
                                 int rank, uint32_t step)
{
    uint32_t tag = qsdp_tag(s->layout->params[k], kind, rank);
    RtQuantizer r = {
        .bits = q->bits,
        .bucket = q->bucket,
        .rounding = q->rounding,
        .key = rt_quant_key(DT_F32, rt_var_data(s->vars, s->layout->key_var), tag),
        .step = step,
        .tag = tag,
    };
    return r;
}

/* Bytes of one block of parameter k: an encoded or raw shard. */
static size_t block_bytes(const Shards *s, const QuantSetting *q, int k)
{
    if (!q->on)
        return (size_t)s->layout->chunk[k] * sizeof(float);
    RtQuantizer r = {.bits = q->bits, .bucket = q->bucket};
    return rt_quant_encoded_size(&r, DT_F32, s->layout->chunk[k]);
}

/* Bytes of the encoding of n elements with setting q, or of their raw
 * values when q is off. */
static size_t encoded_bytes(const QuantSetting *q, int64_t n)
{
    if (!q->on)
        return (size_t)n * sizeof(float);
    RtQuantizer r = {.bits = q->bits, .bucket = q->bucket};
    return rt_quant_encoded_size(&r, DT_F32, n);
}

/* The sizes and offsets of the shards of parameter k encoded with q, one
 * per process, in sizes[] and offsets[] (procs entries each). */
static void shard_sizes(const Shards *s, const QuantSetting *q, int k, size_t *sizes,
                        size_t *offsets)
{
    size_t at = 0;
    for (int r = 0; r < s->procs; r++) {
        sizes[r] = encoded_bytes(q, valid_len(s->layout, k, r));
        offsets[r] = at;
        at += sizes[r];
    }
}

/* Encodes (or copies) n elements of x, global indices from `first`. */
static void encode_block(const RtQuantizer *q, bool on, int64_t first, int64_t n,
                         const float *x, uint8_t *out)
{
    if (on)
        rt_quant_encode(q, DT_F32, first, n, x, out);
    else
        memcpy(out, x, (size_t)n * sizeof(float));
}

static void decode_block(const RtQuantizer *q, bool on, int64_t n, const uint8_t *in, float *y)
{
    if (on)
        rt_quant_decode(q, DT_F32, n, in, y);
    else
        memcpy(y, in, (size_t)n * sizeof(float));
}

/* Replaces the own shard of parameter k by its quantized value and keeps
 * the encoding for the next all-gather (the QSDP iterate). */
static void quantize_own_shard(Shards *s, int k, QsdpKind kind, uint32_t step)
{
    const QuantSetting *w = s->sc->weights;
    RtQuantizer q = quantizer_for(s, w, k, kind, 0, step);
    float *shard = rt_var_data(s->vars, s->layout->shard_vars[k]);
    int64_t len = valid_len(s->layout, k, s->own);
    int64_t first = (int64_t)s->own * s->layout->chunk[k];
    rt_quant_encode(&q, DT_F32, first, len, shard, s->iterate_codes[k]);
    rt_quant_decode(&q, DT_F32, len, s->iterate_codes[k], shard);
}

/* All-gathers the shards of parameter k, encoded with the weight setting
 * unless `raw`, into `recv`, and sets s->sizes and s->offsets to the
 * received blocks. */
static void send_weights(Shards *s, int k, bool raw, uint32_t step, uint8_t *recv)
{
    const QuantSetting *w = s->sc->weights;
    bool on = w->on && !raw;
    QuantSetting off = {0};
    shard_sizes(s, on ? w : &off, k, s->sizes, s->offsets);
    RtQuantizer q = on ? quantizer_for(s, w, k, QSDP_WEIGHTS, 0, step) : (RtQuantizer){0};
    const float *shard = rt_var_data(s->vars, s->layout->shard_vars[k]);
    int64_t first = (int64_t)s->own * s->layout->chunk[k];
    if (on && w->iterate)
        memcpy(s->send, s->iterate_codes[k], s->sizes[s->own]);
    else
        encode_block(&q, on, first, valid_len(s->layout, k, s->own), shard, s->send);
    rt_comm_allgatherv(s->sc->comm, s->send, recv, s->sizes, s->offsets);
}

/* Decodes the blocks of parameter k that send_weights received into
 * `recv` into its full value `full`. */
static void decode_weights(Shards *s, int k, bool raw, uint32_t step, const uint8_t *recv,
                           float *full)
{
    const QuantSetting *w = s->sc->weights;
    bool on = w->on && !raw;
    QuantSetting off = {0};
    shard_sizes(s, on ? w : &off, k, s->sizes, s->offsets);
    RtQuantizer q = on ? quantizer_for(s, w, k, QSDP_WEIGHTS, 0, step) : (RtQuantizer){0};
    for (int r = 0; r < s->procs; r++)
        decode_block(&q, on, valid_len(s->layout, k, r), recv + s->offsets[r],
                     full + (int64_t)r * s->layout->chunk[k]);
}

/* All-gathers the shards of parameter k at full precision into its full
 * copy, which the evaluation graph reads. */
static void gather_raw_weights(Shards *s, int k)
{
    send_weights(s, k, true, 0, s->recv);
    decode_weights(s, k, true, 0, s->recv, rt_var_data(s->vars, s->layout->params[k]));
}

/* Sends the slice of rank `rank`'s gradient of parameter k that each
 * process owns to that process, and receives the slices of the own shard
 * in rank order into s->recv: one from every process under MPI, or only
 * this one's when it simulates the ranks. Sets s->sizes and s->offsets
 * to the received blocks. */
static void exchange_gradient(Shards *s, int k, const float *grad, int rank, uint32_t step)
{
    const QuantSetting *g = s->sc->gradients;
    RtQuantizer q = g->on ? quantizer_for(s, g, k, QSDP_GRADIENTS, rank, step) : (RtQuantizer){0};
    size_t *send_sizes = s->sizes + s->procs, *send_offsets = s->offsets + s->procs;
    shard_sizes(s, g, k, send_sizes, send_offsets);
    for (int j = 0; j < s->procs; j++) {
        int64_t first = (int64_t)j * s->layout->chunk[k];
        encode_block(&q, g->on, first, valid_len(s->layout, k, j), grad + first,
                     s->send + send_offsets[j]);
    }
    size_t own = send_sizes[s->own];
    for (int r = 0; r < s->procs; r++) {
        s->sizes[r] = own;
        s->offsets[r] = (size_t)r * own;
    }
    rt_comm_alltoallv(s->sc->comm, s->send, send_sizes, send_offsets, s->recv, s->sizes,
                      s->offsets);
}

/* acc += weight * decode(block), over the own shard's elements. The
 * decoder needs only bits and bucket, which every rank shares. */
static void accumulate_gradient(Shards *s, int k, const uint8_t *block, float weight,
                                float *acc)
{
    const QuantSetting *g = s->sc->gradients;
    RtQuantizer q = {.bits = g->bits, .bucket = g->bucket};
    int64_t len = valid_len(s->layout, k, s->own);
    decode_block(&q, g->on, len, block, s->decoded);
    for (int64_t i = 0; i < len; i++)
        acc[i] = acc[i] + weight * s->decoded[i];
}

/* ---- the steps of the training graph ------------------------------------------ */

/* The part of a global batch of n samples that rank r trains on. */
static void rank_part(int64_t n, int ranks, int r, int64_t *first, int64_t *len)
{
    int64_t base = n / ranks, extra = n % ranks;
    *first = r * base + (r < extra ? r : extra);
    *len = base + (r < extra);
}

/* Runs a gather step of parameter `var`: all-gathers its shards,
 * quantized with the weight setting, and decodes them into `out`. The
 * owners encode with the draws of the step, so the backward pass's gather
 * gives the very values of the forward pass's. */
static void gather_hook(void *context, int var, void *out)
{
    Shards *s = context;
    int k = s->param_index[var];
    BOCB_ASSERT(k >= 0);
    send_weights(s, k, false, s->step, s->recv);
    decode_weights(s, k, false, s->step, s->recv, out);
    s->gathered++;
}

/* Runs the reduce step of parameter `var`: sends the slices of the
 * gradient of s->rank to their owners and adds the received ones into the
 * update graph's input, in rank order, each weighted by its rank's share
 * of the global batch. */
static void reduce_hook(void *context, int var, const void *grad)
{
    Shards *s = context;
    int k = s->param_index[var];
    BOCB_ASSERT(k >= 0);
    exchange_gradient(s, k, grad, s->rank, s->step);
    for (int r = 0; r < s->procs; r++) {
        int from = s->procs == 1 ? s->rank : r;
        int64_t first, from_len;
        rank_part(s->batch, s->ranks, from, &first, &from_len);
        float weight = (float)((double)from_len / (double)s->batch);
        accumulate_gradient(s, k, s->recv + s->offsets[r], weight, s->acc[k]);
    }
}

/* ---- traffic ----------------------------------------------------------------- */

/* Adds what all ranks send in one collective over a parameter of numel
 * elements in an R-rank run: every shard goes to the R - 1 other ranks,
 * in the all-gather from its owner and in the all-to-all to its owner. */
static void count_collective(ShardTraffic *t, bool gradients, const QuantSetting *q,
                             int64_t numel, int64_t chunk, int ranks)
{
    double payload = 0, meta = 0;
    for (int r = 0; r < ranks; r++) {
        int64_t first = (int64_t)r * chunk;
        int64_t len = 0;
        if (first < numel)
            len = numel - first < chunk ? numel - first : chunk;
        payload += q->on ? (double)((len * q->bits + 7) / 8) : (double)len * sizeof(float);
        meta += q->on ? (double)((len + q->bucket - 1) / q->bucket) * 2 * sizeof(float) : 0;
    }
    double copies = ranks - 1;
    if (gradients)
        t->gradients += copies * payload;
    else
        t->weights += copies * payload;
    t->metadata += copies * meta;
}

/* Returns the number of gather steps of variable `var` in the training
 * step: one before its forward readers, and one before its backward
 * readers when it has some. */
static int gathers_of(const IrGraph *train, int var)
{
    int n = 0;
    for (int i = 0; i < train->nnodes; i++)
        n += train->nodes[i].op == IR_GATHER_SHARDS && train->nodes[i].attr.var == var;
    return n;
}

/* The traffic of one training step (`train`) and of one evaluation
 * gather, with the shards an MPI run of sc->ranks ranks would have. */
static void step_traffic(const ShardConfig *sc, const QsdpShards *l, const IrGraph *train,
                         ShardTraffic *step, ShardTraffic *eval)
{
    memset(step, 0, sizeof *step);
    memset(eval, 0, sizeof *eval);
    QuantSetting raw = {0};
    int64_t align = qsdp_alignment(sc->weights, sc->gradients);
    for (int k = 0; k < l->nparams; k++) {
        int64_t chunk = qsdp_chunk(l->numel[k], sc->ranks, align);
        for (int g = gathers_of(train, l->params[k]); g > 0; g--)
            count_collective(step, false, sc->weights, l->numel[k], chunk, sc->ranks);
        count_collective(step, true, sc->gradients, l->numel[k], chunk, sc->ranks);
        count_collective(eval, false, &raw, l->numel[k], chunk, sc->ranks);
    }
    /* Each rank's loss, correct count and flags (stop, numerics fault),
     * as three doubles to every other rank, and with clip its partial sum
     * of squares, as one more. */
    int doubles = sc->clip > 0 ? 4 : 3;
    step->metadata += (double)sc->ranks * (sc->ranks - 1) * doubles * sizeof(double);
}

static void add_traffic(ShardTraffic *to, const ShardTraffic *t)
{
    to->weights += t->weights;
    to->gradients += t->gradients;
    to->metadata += t->metadata;
}

/* ---- the loop ------------------------------------------------------------------ */

int shard_check_run(const ExperimentSpec *spec, int64_t batch, int64_t train_count, int ranks)
{
    char *why = shard_check_data(batch, train_count, ranks);
    if (why) {
        fprintf(stderr, "bocbc: error: experiment %s: %s\n", spec->name, why);
        free(why);
        return 2;
    }
    return 0;
}

char *shard_check_data(int64_t batch, int64_t train_count, int ranks)
{
    int64_t last = train_count % batch;
    if (batch >= ranks && train_count >= ranks && (last == 0 || last >= ranks))
        return NULL;
    return xasprintf("%d ranks need at least one sample each in every step, but the "
                     "training split has %lld samples in batches of %lld (the last one "
                     "%lld); use batch and train_size of at least %d, and a train_size "
                     "whose last batch has at least %d samples", ranks,
                     (long long)train_count, (long long)batch,
                     (long long)(last ? last : batch), ranks, ranks);
}

/* Loads samples first .. first + n - 1 of the global batch `batch`
 * into the training graph's inputs, augments them as they are augmented
 * in the whole batch of step `taken` (steps taken before it), and runs
 * forward and backward. */
static void run_gradient(Shards *s, const DataSplits *data, const int64_t *batch,
                         int64_t first, int64_t n, int64_t taken, uint32_t step, double *loss,
                         double *correct)
{
    RtRunner *r = &s->runner->runner;
    float *x = r->input(r->self, true, "x");
    int32_t *labels = r->input(r->self, true, "labels");
    const Dataset *train = &data->train;
    data_gather(data, train, batch + first, n, x, labels);
    if (s->cfg->augment)
        rt_augment_batch(s->cfg->augment, s->cfg->seed, taken, DT_F32, x, first, n,
                         train->sample_dims, train->rank, data_byte_value(data, 0));
    *(float *)r->input(r->self, true, "step") = (float)step;
    r->run(r->self, true, n);
    *loss = *(const float *)r->output(r->self, true, "loss");
    *correct = (double)rt_count_correct(DT_F32, r->output(r->self, true, "logits"), labels, n,
                                        train->num_classes);
}

/* Returns the sum of squares, in f64 and element order parameter by
 * parameter, of the reduced gradient elements that rank r owns in a run of
 * s->ranks ranks. acc[k] is the own shard under MPI (r is then this
 * process), or the whole of parameter k when this process simulates the
 * ranks. */
static double rank_squares(const Shards *s, float *const *acc, int r)
{
    int64_t align = qsdp_alignment(s->sc->weights, s->sc->gradients);
    double sum = 0;
    for (int k = 0; k < s->layout->nparams; k++) {
        int64_t numel = s->layout->numel[k];
        int64_t chunk = qsdp_chunk(numel, s->ranks, align);
        int64_t first = (int64_t)r * chunk;
        int64_t len = 0;
        if (first < numel)
            len = numel - first < chunk ? numel - first : chunk;
        const float *g = acc[k] + (s->procs == 1 ? first : 0);
        for (int64_t i = 0; i < len; i++)
            sum += (double)g[i] * (double)g[i];
    }
    return sum;
}

/* Clips the reduced gradient to the global norm s->sc->clip as
 * torch.nn.utils.clip_grad_norm_ does: every rank scales its shards by
 * min(1, clip / (norm + 1e-6)). The norm adds the ranks' partial sums in
 * rank order, so every rank computes the same one, and a simulation of
 * the ranks the same as an MPI run. Returns false, changing nothing, when
 * the norm is not finite. */
static bool clip_gradient(Shards *s, float *const *acc)
{
    double *partial = xcalloc((size_t)s->ranks, sizeof(double));
    if (s->procs == 1) {
        for (int r = 0; r < s->ranks; r++)
            partial[r] = rank_squares(s, acc, r);
    } else {
        double own = rank_squares(s, acc, s->own);
        rt_comm_allgather(s->sc->comm, &own, sizeof own, partial);
    }
    double total = 0;
    for (int r = 0; r < s->ranks; r++)
        total += partial[r];
    free(partial);
    double norm = sqrt(total);
    if (!isfinite(norm))
        return false;
    float scale = (float)fmin(1.0, s->sc->clip / (norm + 1e-6));
    for (int k = 0; k < s->layout->nparams; k++)
        for (int64_t i = 0; i < s->layout->chunk[k]; i++)
            acc[k][i] *= scale;
    return true;
}

/* Copies the variables that simulated rank v's training program assigned
 * aside after rank 0, and back after every other rank. */
static void keep_rank0_state(Shards *s, int v)
{
    for (int i = 0; i < s->nassigned; i++) {
        void *data = rt_var_data(s->vars, s->assigned[i]);
        size_t bytes = (size_t)s->vars->vars[s->assigned[i]].numel *
                       dtype_size(s->vars->vars[s->assigned[i]].dtype);
        if (v == 0)
            memcpy(s->saved[i], data, bytes);
        else
            memcpy(data, s->saved[i], bytes);
    }
}

/* What one training step found, the same on every rank. */
typedef struct StepOutcome {
    double loss;     /* global mean */
    double correct;  /* over the global batch */
    bool stop;       /* a signal asked some rank to stop after this step */
    int fault_rank;  /* the first rank whose --check-numerics found a
                        fault (the update is then not applied), or -1 */
    bool applied;    /* the update ran (with clip, a non-finite gradient
                        norm skips it) */
} StepOutcome;

/* Flags that each rank sends with its loss, so all ranks act alike. */
enum { FLAG_STOP = 1, FLAG_FAULT = 2 };

/* One training step on the global batch indices[0..n). `step` counts
 * applied updates, as the optimizer's step input does in rt_train. */
static void train_step(Shards *s, UpdateExec *u, const DataSplits *data,
                       const int64_t *indices, int64_t n, int64_t taken, uint32_t step,
                       double lr, StepOutcome *out)
{
    const QsdpShards *l = s->layout;
    const QuantSetting *w = s->sc->weights;
    if (w->on && w->iterate && !s->iterate_started) {
        for (int k = 0; k < l->nparams; k++)
            quantize_own_shard(s, k, QSDP_WEIGHTS, step);
        s->iterate_started = true;
    }
    for (int k = 0; k < l->nparams; k++) {
        s->acc[k] = update_input(u, s->grad_names[k]);
        memset(s->acc[k], 0, (size_t)l->chunk[k] * sizeof(float));
    }
    s->step = step;
    s->batch = n;
    s->gathered = 0;
    /* Each rank's loss, correct count and flags. */
    enum { METRICS = 3 };
    double *metrics = xcalloc((size_t)s->ranks * METRICS + METRICS, sizeof(double));
    int simulated = s->procs == 1 ? s->ranks : 1;
    for (int v = 0; v < simulated; v++) {
        s->rank = s->procs == 1 ? v : s->own;
        int64_t first, len;
        rank_part(n, s->ranks, s->rank, &first, &len);
        double part[METRICS] = {0};
        /* The graph's gather and reduce steps call gather_hook and
         * reduce_hook. */
        run_gradient(s, data, indices, first, len, taken, step, &part[0], &part[1]);
        if (s->procs == 1)
            keep_rank0_state(s, v);
        RtRunner *r = &s->runner->runner;
        const char *fault = r->fault ? r->fault(r->self, true) : NULL;
        if (fault && !s->fault[0])
            snprintf(s->fault, sizeof s->fault, "%s", fault);
        part[2] = (s->cfg->stop && *s->cfg->stop ? FLAG_STOP : 0) | (fault ? FLAG_FAULT : 0);
        rt_comm_allgather(s->sc->comm, part, sizeof part, metrics + METRICS * v);
    }
    /* The traffic that step_traffic counts is the traffic sent. */
    BOCB_ASSERT(s->gathered == simulated * s->gathers_per_step);
    memset(out, 0, sizeof *out);
    out->fault_rank = -1;
    for (int r = 0; r < s->ranks; r++) {
        int64_t f, len;
        rank_part(n, s->ranks, r, &f, &len);
        out->loss += (double)len / (double)n * metrics[METRICS * r];
        out->correct += metrics[METRICS * r + 1];
        int flags = (int)metrics[METRICS * r + 2];
        out->stop |= (flags & FLAG_STOP) != 0;
        if ((flags & FLAG_FAULT) && out->fault_rank < 0)
            out->fault_rank = r;
    }
    free(metrics);
    if (out->fault_rank >= 0 || (s->sc->clip > 0 && !clip_gradient(s, s->acc)))
        return;

    *(float *)update_input(u, "lr") = (float)lr;
    *(float *)update_input(u, "step") = (float)step;
    update_run(u);
    if (w->on && w->iterate)
        for (int k = 0; k < l->nparams; k++)
            quantize_own_shard(s, k, QSDP_ITERATE, step);
    out->applied = true;
}

/* Evaluates on rank 0 with the full-precision weights, and gives every
 * rank the result. */
static void evaluate(Shards *s, const RtTrainConfig *cfg, const DataSplits *data,
                     double *loss, double *accuracy)
{
    for (int k = 0; k < s->layout->nparams; k++)
        gather_raw_weights(s, k);
    double result[2] = {0, 0};
    if (s->sc->comm->rank == 0)
        rt_evaluate(&s->runner->runner, data, &data->test, cfg->eval_batch, &result[0],
                    &result[1]);
    rt_comm_broadcast(s->sc->comm, result, 2);
    *loss = result[0];
    *accuracy = result[1];
}

static void shards_init(Shards *s, ShardConfig *sc, const RtTrainConfig *cfg,
                        CellRunner *runner)
{
    memset(s, 0, sizeof *s);
    s->sc = sc;
    s->cfg = cfg;
    s->layout = runner->cell->shards;
    s->runner = runner;
    s->vars = &runner->vars;
    s->procs = sc->comm->size;
    s->own = sc->comm->rank;
    s->ranks = sc->ranks;
    const QsdpShards *l = s->layout;
    BOCB_ASSERT(l->count == s->procs && l->index == s->own);

    size_t largest = 16;
    int64_t largest_chunk = 1;
    s->iterate_codes = xcalloc((size_t)l->nparams + 1, sizeof(uint8_t *));
    s->grad_names = xcalloc((size_t)l->nparams + 1, sizeof(char *));
    s->acc = xcalloc((size_t)l->nparams + 1, sizeof(float *));
    s->param_index = xmalloc(size_mul((size_t)s->vars->nvars + 1, sizeof(int)));
    for (int v = 0; v < s->vars->nvars; v++)
        s->param_index[v] = -1;
    QuantSetting raw = {0};
    for (int k = 0; k < l->nparams; k++) {
        size_t most = block_bytes(s, &raw, k);
        size_t w = block_bytes(s, sc->weights, k), g = block_bytes(s, sc->gradients, k);
        most = w > most ? w : most;
        most = g > most ? g : most;
        largest = most > largest ? most : largest;
        largest_chunk = l->chunk[k] > largest_chunk ? l->chunk[k] : largest_chunk;
        if (sc->weights->iterate)
            s->iterate_codes[k] = xcalloc(w, 1);
        s->grad_names[k] = xasprintf("grad.%d", k);
        s->param_index[l->params[k]] = k;
        s->gathers_per_step += gathers_of(runner->cell->train, l->params[k]);

        /* The full copy starts from the seed like on every rank; the own
         * shard is a slice of it, padded with zeros. */
        const float *full = rt_var_data(s->vars, l->params[k]);
        float *shard = rt_var_data(s->vars, l->shard_vars[k]);
        memset(shard, 0, (size_t)l->chunk[k] * sizeof(float));
        memcpy(shard, full + (int64_t)s->own * l->chunk[k],
               (size_t)valid_len(l, k, s->own) * sizeof(float));
    }
    const IrGraph *train = runner->cell->train;
    s->assigned = xcalloc((size_t)train->nnodes + 1, sizeof(int));
    s->saved = xcalloc((size_t)train->nnodes + 1, sizeof(void *));
    for (int i = 0; i < train->nnodes; i++) {
        if (train->nodes[i].op != IR_ASSIGN)
            continue;
        const RtVar *var = &s->vars->vars[train->nodes[i].attr.var];
        s->assigned[s->nassigned] = train->nodes[i].attr.var;
        s->saved[s->nassigned++] = xmalloc(size_mul((size_t)var->numel,
                                                    dtype_size(var->dtype)) + 1);
    }
    s->sizes = xcalloc(2 * (size_t)s->procs, sizeof(size_t));
    s->offsets = xcalloc(2 * (size_t)s->procs, sizeof(size_t));
    s->send = xmalloc(size_mul(largest, (size_t)s->procs));
    s->recv = xmalloc(size_mul(largest, (size_t)s->procs));
    s->decoded = xmalloc(size_mul((size_t)largest_chunk, sizeof(float)));
}

static void shards_free(Shards *s)
{
    for (int k = 0; k < s->layout->nparams; k++) {
        free(s->iterate_codes[k]);
        free(s->grad_names[k]);
    }
    free(s->iterate_codes);
    for (int i = 0; i < s->nassigned; i++)
        free(s->saved[i]);
    free(s->saved);
    free(s->assigned);
    free(s->grad_names);
    free(s->acc);
    free(s->param_index);
    free(s->sizes);
    free(s->offsets);
    free(s->send);
    free(s->recv);
    free(s->decoded);
}

static void log_line(const RtTrainConfig *cfg, const RtComm *comm, const char *fmt, ...)
    BOCB_PRINTF(3, 4);

/* The note rt_train adds to an epoch's line for steps skipped by clip. */
static const char *skipped_note(int64_t skipped, char *buf, size_t size)
{
    snprintf(buf, size, ", %lld step%s skipped (gradient norm not finite)", (long long)skipped,
             skipped == 1 ? "" : "s");
    return buf;
}

static void log_line(const RtTrainConfig *cfg, const RtComm *comm, const char *fmt, ...)
{
    if (!cfg->log || comm->rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(cfg->log, fmt, ap);
    va_end(ap);
    fflush(cfg->log);
}

bool shard_train(ShardConfig *sc, CellRunner *runner, Jit *jit, const RtTrainConfig *cfg,
                 const DataSplits *data, RtTrainResult *result, char **error)
{
    const Dataset *train = &data->train;
    memset(result, 0, sizeof *result);
    BOCB_ASSERT(runner->runner.dtype == DT_F32 && cfg->clip == (sc->clip > 0));
    BOCB_ASSERT(!shard_check_data(cfg->batch, train->count, sc->ranks));
    UpdateExec u;
    if (!update_create(&u, runner, jit, error))
        return false;
    Shards s;
    shards_init(&s, sc, cfg, runner);
    RtShardHooks hooks = {.gather = gather_hook, .reduce = reduce_hook, .context = &s};
    cell_runner_set_shard_hooks(runner, &hooks);
    ShardTraffic step_bytes, eval_bytes;
    step_traffic(sc, s.layout, runner->cell->train, &step_bytes, &eval_bytes);
    sc->per_step = step_bytes;
    memset(&sc->per_run, 0, sizeof sc->per_run);

    int64_t steps_per_epoch = (train->count + cfg->batch - 1) / cfg->batch;
    int64_t total_steps = steps_per_epoch * cfg->epochs;
    if (cfg->max_steps && cfg->max_steps < total_steps)
        total_steps = cfg->max_steps;
    result->epochs = xcalloc((size_t)cfg->epochs + 1, sizeof(RtEpochResult));
    result->step_losses = xcalloc((size_t)total_steps + 1, sizeof(float));
    result->step_lrs = xcalloc((size_t)total_steps + 1, sizeof(double));
    int64_t *perm = xmalloc(size_mul((size_t)train->count, sizeof(int64_t)));
    int64_t step = 0, applied = 0;
    char note[64];

    for (int64_t epoch = 1; epoch <= cfg->epochs && step < total_steps; epoch++) {
        philox_permutation(philox_key(cfg->seed, SHUFFLE_STREAM + (uint32_t)epoch), perm,
                           train->count);
        double start = now_seconds(), loss_sum = 0, correct = 0, log_start = start;
        int64_t seen = 0, epoch_steps = 0, log_steps = 0, skipped = 0;
        double lr = cfg->lr;
        for (int64_t b = 0; b < steps_per_epoch && step < total_steps; b++) {
            int64_t first = b * cfg->batch;
            int64_t n = train->count - first < cfg->batch ? train->count - first : cfg->batch;
            if (cfg->schedule)
                lr = rt_schedule_lr(cfg->schedule, step + 1, steps_per_epoch, total_steps);
            StepOutcome out;
            train_step(&s, &u, data, perm + first, n, step, (uint32_t)(applied + 1), lr, &out);
            double loss = out.loss;
            if (out.applied)
                applied++;
            else if (out.fault_rank < 0)
                skipped++;
            add_traffic(&sc->per_run, &step_bytes);
            result->step_lrs[step] = lr;
            result->step_losses[step++] = (float)loss;
            result->nsteps = step;
            if (out.fault_rank >= 0 || !isfinite(loss)) {
                result->diverged = true;
                result->diverged_step = step;
                if (s.fault[0])
                    snprintf(result->diverged_reason, sizeof result->diverged_reason, "%s",
                             s.fault);
                else if (out.fault_rank >= 0)
                    snprintf(result->diverged_reason, sizeof result->diverged_reason,
                             "rank %d found a NaN or an infinity (--check-numerics)",
                             out.fault_rank);
                else
                    snprintf(result->diverged_reason, sizeof result->diverged_reason,
                             "the training loss is %g", loss);
                break;
            }
            if (out.stop) {
                /* Sharded runs keep no checkpoint, so the partial epoch
                 * is not recorded. */
                result->interrupted = true;
                break;
            }
            loss_sum += loss;
            correct += out.correct;
            seen += n;
            epoch_steps++;
            log_steps++;
            bool last = b + 1 == steps_per_epoch || step == total_steps;
            if (log_steps == cfg->log_every || last) {
                double now = now_seconds();
                log_line(cfg, sc->comm, "%s  epoch %lld/%lld  step %lld/%lld  loss %.4f  "
                         "%.2f ms/step  %d ranks\n", cfg->label, (long long)epoch,
                         (long long)cfg->epochs, (long long)(b + 1),
                         (long long)steps_per_epoch, loss,
                         1e3 * (now - log_start) / (double)log_steps, sc->ranks);
                log_start = now;
                log_steps = 0;
            }
        }
        if (result->interrupted)
            break;
        RtEpochResult *er = &result->epochs[result->nepochs++];
        er->epoch = epoch;
        er->steps = step;
        er->seconds = now_seconds() - start;
        er->train_loss = epoch_steps ? loss_sum / (double)epoch_steps : NAN;
        er->train_accuracy = seen ? correct / (double)seen : NAN;
        er->test_loss = er->test_accuracy = NAN;
        er->skipped = skipped;
        result->skipped += skipped;
        if (result->diverged)
            break;
        evaluate(&s, cfg, data, &er->test_loss, &er->test_accuracy);
        add_traffic(&sc->per_run, &eval_bytes);
        if (!isfinite(er->test_loss)) {
            result->diverged = true;
            result->diverged_step = step;
            snprintf(result->diverged_reason, sizeof result->diverged_reason,
                     "the test loss is %g after epoch %lld", er->test_loss, (long long)epoch);
            break;
        }
        log_line(cfg, sc->comm, "%s  epoch %lld: train loss %.4f, train acc %.2f%%, test loss "
                 "%.4f, test acc %.2f%%, %.1f s%s\n", cfg->label, (long long)epoch,
                 er->train_loss, 100 * er->train_accuracy, er->test_loss,
                 100 * er->test_accuracy, er->seconds,
                 skipped ? skipped_note(skipped, note, sizeof note) : "");
    }
    if (result->diverged)
        log_line(cfg, sc->comm, "%s  diverged at step %lld: %s; this cell stops here\n",
                 cfg->label, (long long)result->diverged_step, result->diverged_reason);
    free(perm);
    cell_runner_set_shard_hooks(runner, &(RtShardHooks){0});
    shards_free(&s);
    update_destroy(&u);
    return true;
}

/* ---- driving one cell and reports --------------------------------------------- */

static double traffic_total(const ShardTraffic *t)
{
    return t->weights + t->gradients + t->metadata;
}

int shard_run_cell(const RtComm *comm, int ranks, const ExperimentSpec *spec,
                   CellRunner *runner, Jit *jit, const RtTrainConfig *cfg,
                   const DataSplits *data, RtTrainResult *result, ShardRecord *record)
{
    memset(result, 0, sizeof *result);
    ShardConfig sc = {
        .comm = comm,
        .ranks = ranks,
        .weights = &spec->quantize_weights,
        .gradients = &spec->quantize_gradients,
        .clip = spec->clip,
    };
    char *error = NULL;
    if (!shard_train(&sc, runner, jit, cfg, data, result, &error)) {
        fprintf(stderr, "bocbc: error: %s: %s\n", cfg->label, error);
        free(error);
        return 3;
    }
    QuantSetting off = {0};
    ShardConfig fp32 = {.ranks = ranks, .weights = &off, .gradients = &off, .clip = spec->clip};
    ShardTraffic fp32_step, fp32_eval;
    step_traffic(&fp32, runner->cell->shards, runner->cell->train, &fp32_step, &fp32_eval);

    record->ranks = ranks;
    record->per_step = sc.per_step;
    record->per_run = sc.per_run;
    record->fp32_per_step = traffic_total(&fp32_step);
    record->steps = result->nsteps;
    for (int e = 0; e < result->nepochs; e++)
        record->train_seconds += result->epochs[e].seconds;
    if (cfg->log && comm->rank == 0)
        fprintf(cfg->log, "%s  sent per step by all ranks: weights %.0f B, gradients %.0f B, "
                "metadata %.0f B; %.4f of fp32 (%.0f B); %.0f B in the run\n", cfg->label,
                sc.per_step.weights, sc.per_step.gradients, sc.per_step.metadata,
                record->fp32_per_step > 0 ? traffic_total(&sc.per_step) / record->fp32_per_step
                                          : 1.0,
                record->fp32_per_step, traffic_total(&sc.per_run));
    return 0;
}

/* Writes text as a quoted CSV field, with quotes doubled. */
static void write_csv_field(FILE *f, const char *text)
{
    fputc('"', f);
    for (const char *c = text; *c; c++) {
        if (*c == '"')
            fputc('"', f);
        fputc(*c, f);
    }
    fputc('"', f);
}

bool shard_write_report(const char *dir, const char *experiment, const ShardRecord *records,
                        int n)
{
    char *path = xasprintf("%s/communication.csv", dir);
    char *tmp = xasprintf("%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    bool ok = f != NULL;
    if (ok) {
        fputs("experiment,model,optimizer,seed,ranks,steps,weights_bytes_per_step,"
              "gradients_bytes_per_step,metadata_bytes_per_step,bytes_per_step,"
              "fp32_bytes_per_step,bytes_in_run,ms_per_step\n", f);
        for (int i = 0; i < n; i++) {
            const ShardRecord *r = &records[i];
            write_csv_field(f, experiment);
            fputc(',', f);
            write_csv_field(f, r->model);
            fputc(',', f);
            write_csv_field(f, r->optimizer);
            fprintf(f, ",%llu,%d,%lld,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.3f\n",
                    (unsigned long long)r->seed, r->ranks,
                    (long long)r->steps, r->per_step.weights, r->per_step.gradients,
                    r->per_step.metadata, traffic_total(&r->per_step), r->fp32_per_step,
                    traffic_total(&r->per_run),
                    r->steps ? 1e3 * r->train_seconds / (double)r->steps : 0.0);
        }
        ok = fflush(f) == 0 && !ferror(f);
        ok &= fclose(f) == 0;
        ok = ok && rename(tmp, path) == 0;
    }
    if (!ok) {
        fprintf(stderr, "bocbc: error: cannot write %s\n", path);
        remove(tmp);
    }
    free(path);
    free(tmp);
    return ok;
}
