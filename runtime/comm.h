/* comm.h - the collectives of sharded training, over MPI.
 *
 * bocbc links Open MPI but starts it only when it runs under mpirun
 * (which sets OMPI_COMM_WORLD_SIZE), so a plain run pays no MPI start-up
 * and prints nothing from MPI. Without MPI the world is this process
 * alone (rank 0 of 1), and every collective is a copy.
 *
 * Every collective moves bytes; the callers encode and decode tensors
 * (quant.h), so no MPI reduction ever adds values and every sum runs in
 * a fixed order in our code. An MPI failure aborts the whole job: MPI's
 * default error handler does that, and rt_comm_abort is the way for a
 * rank that finds an error of its own.
 */
#ifndef BOCB_COMM_H
#define BOCB_COMM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct RtComm {
    int rank, size;
    bool mpi; /* MPI was started (under mpirun) */
} RtComm;

/* Starts MPI when the process runs under mpirun, and returns the world.
 * Returns false and sets *error (static) when MPI fails to start. */
bool rt_comm_init(int *argc, char ***argv, RtComm *world, const char **error);
/* Ends MPI (MPI_Finalize) when it was started. */
void rt_comm_finalize(RtComm *world);
/* True when the environment says this process was started by mpirun. */
bool rt_comm_under_mpirun(void);

/* Every rank sends `bytes` bytes; recv receives size * bytes, rank r's at
 * offset r * bytes. */
void rt_comm_allgather(const RtComm *c, const void *send, size_t bytes, void *recv);
/* Every rank sends its own number of bytes, so the sizes are arrays over
 * the ranks: counts[r] bytes at offset offsets[r]. Rank r's send goes
 * to recv at recv_offsets[r]; recv_counts[r] must equal the size r sends. */
void rt_comm_allgatherv(const RtComm *c, const void *send, void *recv,
                        const size_t *recv_counts, const size_t *recv_offsets);
/* Every rank sends send_counts[j] bytes at send_offsets[j] to rank j, and
 * receives recv_counts[r] bytes from rank r at recv_offsets[r]. */
void rt_comm_alltoallv(const RtComm *c, const void *send, const size_t *send_counts,
                       const size_t *send_offsets, void *recv, const size_t *recv_counts,
                       const size_t *recv_offsets);
/* Every rank receives rank 0's n doubles in v. */
void rt_comm_broadcast(const RtComm *c, double *v, int n);
/* Waits until every rank has reached this call. */
void rt_comm_barrier(const RtComm *c);
/* Prints "bocbc: error: rank R: message" and ends every rank with exit
 * status `status` (MPI_Abort), or this process alone without MPI. */
_Noreturn void rt_comm_abort(const RtComm *c, int status, const char *message);

#endif
