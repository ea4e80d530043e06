/* parallel.c - the thread pool behind rt_parallel_for (see parallel.h).
 *
 * Workers sleep on a condition variable between jobs. A job is published
 * by bumping `generation`; worker w (1-based) runs chunk w when w is below
 * the job's chunk count, then reports to `done`. Only one thread, the
 * executor's, submits jobs.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */

#include "parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <unistd.h>

#include "base.h"
#include "ops.h"

typedef struct Pool {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation;
    int nworkers;     /* started so far */
    int pending;      /* chunks of the current job not yet finished */
    /* the current job */
    RtRangeFn fn;
    void *context;
    int64_t extent;
    int nchunks;
} Pool;

static Pool pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .done = PTHREAD_COND_INITIALIZER,
};
static int thread_count = 0; /* 0 until set or first used */

int64_t rt_parallel_chunk_begin(int64_t extent, int t, int nchunks)
{
    /* extent * t cannot overflow: extents are element counts of buffers,
     * far below 2^63 / RT_MAX_THREADS. */
    return extent * t / nchunks;
}

static void run_chunk(RtRangeFn fn, void *context, int64_t extent, int t, int nchunks)
{
    int64_t begin = rt_parallel_chunk_begin(extent, t, nchunks);
    int64_t end = rt_parallel_chunk_begin(extent, t + 1, nchunks);
    if (begin < end)
        fn(context, begin, end);
}

static void *worker_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.generation == seen)
            pthread_cond_wait(&pool.wake, &pool.lock);
        seen = pool.generation;
        if (id >= pool.nchunks)
            continue;
        RtRangeFn fn = pool.fn;
        void *context = pool.context;
        int64_t extent = pool.extent;
        int nchunks = pool.nchunks;
        pthread_mutex_unlock(&pool.lock);

        run_chunk(fn, context, extent, id, nchunks);

        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

/* Returns the CPUs this process may run on (at least 1). */
static int available_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void rt_parallel_set_threads(int threads)
{
    BOCB_ASSERT(threads >= 0 && threads <= RT_MAX_THREADS);
    int n = threads > 0 ? threads : available_cpus();
    thread_count = n < RT_MAX_THREADS ? n : RT_MAX_THREADS;
    if (threads > 0)
        rt_set_blas_threads(thread_count);
}

int rt_parallel_threads(void)
{
    if (thread_count == 0)
        thread_count = available_cpus();
    return thread_count;
}

/* Starts workers until there are `n`. A worker that cannot be started
 * leaves its chunks to the calling thread. */
static int start_workers(int n)
{
    while (pool.nworkers < n) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, worker_main,
                           (void *)(intptr_t)(pool.nworkers + 1)) != 0)
            break;
        pthread_detach(thread);
        pool.nworkers++;
    }
    return pool.nworkers;
}

void rt_parallel_for(int64_t extent, RtRangeFn fn, void *context)
{
    int threads = rt_parallel_threads();
    int nchunks = extent < threads ? (int)extent : threads;
    if (nchunks <= 1) {
        if (extent > 0)
            fn(context, 0, extent);
        return;
    }

    pthread_mutex_lock(&pool.lock);
    int workers = start_workers(nchunks - 1);
    pool.fn = fn;
    pool.context = context;
    pool.extent = extent;
    pool.nchunks = nchunks;
    pool.pending = workers < nchunks - 1 ? workers : nchunks - 1;
    pool.generation++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    run_chunk(fn, context, extent, 0, nchunks);
    /* Chunks whose worker could not be started run here, in order. */
    for (int t = workers + 1; t < nchunks; t++)
        run_chunk(fn, context, extent, t, nchunks);

    pthread_mutex_lock(&pool.lock);
    while (pool.pending > 0)
        pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
}
