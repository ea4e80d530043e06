/* shard.h - sharded data-parallel training (QSDP) over MPI.
 *
 * Every rank owns one shard of every parameter and the optimizer state of
 * that shard (qsdp.h gives the layout). A step runs the training program,
 * whose gather and reduce steps call back into this loop (RtShardHooks):
 *
 *   1. all-gather: just before a layer's first forward step, a gather
 *      step gives it the full value of each of its parameters. Each rank
 *      sends its shards, encoded with the weight quantizer when one is
 *      set, and decodes everyone's. A second gather step just before the
 *      parameter's first backward reader all-gathers it again, so the
 *      memory plan frees the full weights in between, as FSDP does. The
 *      owners encode with the step's draws, so both gathers give the
 *      same values;
 *   2. forward and backward run on this rank's part of the global batch
 *      (contiguous parts, sizes differing by at most one);
 *   3. reduce-scatter as an all-to-all: as soon as the gradient of a
 *      parameter exists, a reduce step encodes the slice of it that rank
 *      j owns and sends it to j. Rank j decodes the slices and adds them
 *      into the update graph's input in rank order, each weighted by its
 *      rank's share of the batch. So codes with different scales are
 *      never added, the sum does not depend on MPI's reduction order,
 *      and the full gradients are freed one by one;
 *   4. with `clip`, every rank sums the squares of its reduced shards,
 *      and the ranks all-gather these partial sums. Each rank then scales
 *      its shards by min(1, clip / (norm + 1e-6)) of the global norm, or
 *      skips the update when the norm is not finite;
 *   5. each rank applies the optimizer to its shards (the update graph).
 *
 * One process can also simulate `ranks` ranks: the program runs once per
 * simulated rank, and its gradients go through the same encoding and the
 * same weighted sum. That process owns the whole of every parameter. The
 * update is elementwise, so it gives the same values on one shard as on
 * many, and the norm of `clip` adds the partial sums of the simulated
 * ranks' shards in rank order. The simulation therefore equals an MPI
 * run with that many ranks bit for bit.
 *
 * Evaluation reads the full-copy variables of the parameters, which the
 * loop all-gathers at full precision before each evaluation.
 *
 * Each shard travels at its encoded size (MPI_Allgatherv and
 * MPI_Alltoallv), so no padding is sent. Bytes are counted over all
 * ranks: in an all-gather or an all-to-all over R ranks every shard goes
 * to the R - 1 other ranks.
 */
#ifndef BOCB_SHARD_H
#define BOCB_SHARD_H

#include "../runtime/comm.h"
#include "run.h"

/* Bytes that all ranks send together, by kind. */
typedef struct ShardTraffic {
    double weights;   /* codes (or raw values) of the weight all-gather */
    double gradients; /* codes (or raw values) of the gradient all-to-all */
    double metadata;  /* bucket bases and scales, each step's loss,
                         correct count and stop flag, and with clip the
                         partial norms */
} ShardTraffic;

/* The communication of one sharded run, for reports. */
typedef struct ShardRecord {
    const char *model, *optimizer; /* labels */
    uint64_t seed;
    int ranks;
    ShardTraffic per_step, per_run;
    double fp32_per_step; /* all kinds, with neither setting on */
    int64_t steps;
    double train_seconds; /* of every epoch, evaluation excluded */
} ShardRecord;

typedef struct ShardConfig {
    const RtComm *comm;
    int ranks;        /* ranks in all: comm->size, or simulated ones when comm->size == 1 */
    const QuantSetting *weights, *gradients;
    double clip;      /* > 0: clip the global gradient norm to this */
    ShardTraffic per_step; /* out: of one training step */
    ShardTraffic per_run;  /* out: every training step and evaluation gather */
} ShardConfig;

/* Returns NULL when every step of a run in batches of `batch` gives each
 * of `ranks` ranks at least one sample, else a message (malloc'd) saying
 * why not. */
char *shard_check_data(int64_t batch, int64_t train_count, int ranks);
/* Checks that spec's cells can train sharded over `ranks` ranks: enough
 * data per step (shard_check_data). Prints the error and returns 2 when
 * they cannot, else returns 0. Training and --check both call it. */
int shard_check_run(const ExperimentSpec *spec, int64_t batch, int64_t train_count, int ranks);

/* Trains a cell compiled with CellOptions.shards (cell->update set) like
 * rt_train, from the runner's current variables: the caller has reset
 * them with the run's seed, the same on every rank. Only rank 0 logs.
 * Evaluation after each epoch runs on rank 0 with the full-precision
 * weights. Returns false and sets *error (malloc'd) when the update graph
 * cannot be compiled. */
bool shard_train(ShardConfig *sc, CellRunner *runner, Jit *jit, const RtTrainConfig *cfg,
                 const DataSplits *data, RtTrainResult *result, char **error);

/* Runs one cell sharded (shard_train), which shard_check_run accepted,
 * and fills *record. Rank 0 prints the bytes sent per step.
 * Returns an exit status (0, or 3 when the update cannot be compiled). */
int shard_run_cell(const RtComm *comm, int ranks, const ExperimentSpec *spec,
                   CellRunner *runner, Jit *jit, const RtTrainConfig *cfg,
                   const DataSplits *data, RtTrainResult *result, ShardRecord *record);

/* Writes communication.csv into dir: one row per record, with the bytes
 * all ranks send per step by kind, what fp32 would send, the bytes of the
 * whole run and the milliseconds per step. Returns false after
 * printing an error. */
bool shard_write_report(const char *dir, const char *experiment, const ShardRecord *records,
                        int n);

#endif
