/* parallel.h - a parallel-for with static partitioning, for fused kernels.
 *
 * rt_parallel_for splits a range [0, extent) into one contiguous chunk per
 * thread: with T threads, chunk t is [extent * t / T, extent * (t + 1) / T).
 * The partition depends only on extent and T, never on timing, so a run is
 * deterministic for a given thread count. The calling thread runs chunk 0
 * and a pool of T - 1 worker threads, started on first use, runs the rest.
 *
 * The pool and OpenBLAS take turns: the executor runs one step at a time,
 * and rt_parallel_set_threads sets both to the same count, so no more
 * than T threads compute at once.
 */
#ifndef BOCB_PARALLEL_H
#define BOCB_PARALLEL_H

#include <stdint.h>

/* Calls fn(context, begin, end) on disjoint ranges that cover [0, extent). */
typedef void (*RtRangeFn)(void *context, int64_t begin, int64_t end);

/* Sets the threads of the parallel-for and of OpenBLAS to `threads`
 * (1 to RT_MAX_THREADS). With 0, the parallel-for uses the CPUs this
 * process may run on and OpenBLAS keeps its default (OPENBLAS_NUM_THREADS,
 * else the core count). Call it while no parallel-for runs. */
enum { RT_MAX_THREADS = 1024 };
void rt_parallel_set_threads(int threads);

/* Returns the thread count of the parallel-for (at least 1). */
int rt_parallel_threads(void);

/* Runs fn over [0, extent) on min(threads, extent) threads, each with one
 * chunk of the static partition, and returns when all have finished. */
void rt_parallel_for(int64_t extent, RtRangeFn fn, void *context);

/* Returns the first index of chunk `t` of `nchunks` over [0, extent). */
int64_t rt_parallel_chunk_begin(int64_t extent, int t, int nchunks);

#endif
