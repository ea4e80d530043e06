/* comm.c - the collectives of comm.h on Open MPI.
 *
 * Collectives larger than INT_MAX bytes are not split: MPI counts are
 * int, and a rank's message here is one parameter's encoded shard, so
 * such a message is a model of billions of parameters, far beyond a
 * training step on CPUs. They are rejected with an abort instead.
 */
#include "comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool rt_comm_under_mpirun(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") != NULL;
}

bool rt_comm_init(int *argc, char ***argv, RtComm *world, const char **error)
{
    memset(world, 0, sizeof *world);
    world->size = 1;
    if (!rt_comm_under_mpirun())
        return true;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        *error = "MPI_Init failed";
        return false;
    }
    world->mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &world->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world->size);
    return true;
}

void rt_comm_finalize(RtComm *world)
{
    if (world->mpi)
        MPI_Finalize();
    world->mpi = false;
}

static int message_count(const RtComm *c, size_t bytes)
{
    if (bytes > INT_MAX)
        rt_comm_abort(c, 3, "a message of more than 2^31 bytes; sharded training supports "
                            "parameters of up to 2^31 bytes per shard");
    return (int)bytes;
}

void rt_comm_allgather(const RtComm *c, const void *send, size_t bytes, void *recv)
{
    if (!c->mpi) {
        memmove(recv, send, bytes);
        return;
    }
    int n = message_count(c, bytes);
    MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, MPI_COMM_WORLD);
}

/* MPI counts and displacements are int; a message that does not fit
 * aborts (see the file comment). */
static int *int_array(const RtComm *c, const size_t *values)
{
    int *out = malloc((size_t)c->size * sizeof *out);
    if (!out)
        rt_comm_abort(c, 3, "out of memory for the sizes of a collective");
    for (int r = 0; r < c->size; r++)
        out[r] = message_count(c, values[r]);
    return out;
}

void rt_comm_allgatherv(const RtComm *c, const void *send, void *recv,
                        const size_t *recv_counts, const size_t *recv_offsets)
{
    if (!c->mpi) {
        memmove((char *)recv + recv_offsets[0], send, recv_counts[0]);
        return;
    }
    int *counts = int_array(c, recv_counts), *offsets = int_array(c, recv_offsets);
    MPI_Allgatherv(send, counts[c->rank], MPI_BYTE, recv, counts, offsets, MPI_BYTE,
                   MPI_COMM_WORLD);
    free(counts);
    free(offsets);
}

void rt_comm_alltoallv(const RtComm *c, const void *send, const size_t *send_counts,
                       const size_t *send_offsets, void *recv, const size_t *recv_counts,
                       const size_t *recv_offsets)
{
    if (!c->mpi) {
        memmove((char *)recv + recv_offsets[0], (const char *)send + send_offsets[0],
                send_counts[0]);
        return;
    }
    int *sc = int_array(c, send_counts), *so = int_array(c, send_offsets);
    int *rc = int_array(c, recv_counts), *ro = int_array(c, recv_offsets);
    MPI_Alltoallv(send, sc, so, MPI_BYTE, recv, rc, ro, MPI_BYTE, MPI_COMM_WORLD);
    free(sc);
    free(so);
    free(rc);
    free(ro);
}

void rt_comm_broadcast(const RtComm *c, double *v, int n)
{
    if (c->mpi)
        MPI_Bcast(v, n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
}

void rt_comm_barrier(const RtComm *c)
{
    if (c->mpi)
        MPI_Barrier(MPI_COMM_WORLD);
}

void rt_comm_abort(const RtComm *c, int status, const char *message)
{
    fflush(stdout);
    fprintf(stderr, "bocbc: error: rank %d: %s\n", c->rank, message);
    fflush(stderr);
    if (c->mpi)
        MPI_Abort(MPI_COMM_WORLD, status);
    exit(status);
}
