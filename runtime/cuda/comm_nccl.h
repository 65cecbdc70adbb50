/* GPU communication of the CUDA path: which GPU a rank drives, the NCCL communicators of the
 * data-parallel and tensor-parallel groups (bootstrapped over the MPI communicators flas_train_comm
 * already builds), and allreduce-sum of device fp32 buffers over either group, through NCCL or, when
 * several ranks share one GPU (NCCL refuses that), staged through pinned host memory and MPI.
 *
 * Host code only (C, compiles with nvcc or the host compiler); needs cudart, NCCL, MPI and, for the
 * pure decisions, runtime/gpu_select.c + runtime/common/error.c. Every function returns 0, or -1 with a
 * one-line reason in err; none aborts the process.
 *
 * Collectives: the init, the allreduces and flas_gpu_comm_free must be called by every rank of the
 * groups involved, in the same order. A rank whose CUDA call failed still joins the MPI steps (with
 * whatever its buffer holds) and reports the failure afterwards, so its peers never wait forever; a
 * failure inside NCCL cannot be healed that way: call flas_gpu_comm_abort on every rank then. */
#ifndef FLAS_CUDA_COMM_NCCL_H
#define FLAS_CUDA_COMM_NCCL_H

#include <stddef.h>

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include "flas/gpu_select.h"

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch DDP's default bucket: big enough to reach link bandwidth, small enough to overlap. */
#define FLAS_GPU_COMM_DEFAULT_BUCKET_BYTES ((size_t)25 << 20)

/* One process group: its MPI communicator (borrowed) and, with NCCL, its NCCL communicator. */
typedef struct flas_gpu_group {
    MPI_Comm mpi;     /* the caller's; not freed here */
    int rank, size;
    ncclComm_t nccl;  /* NULL with kind MPI, and for a group of one rank (nothing to reduce) */
} flas_gpu_group;

typedef struct flas_gpu_comm {
    flas_gpu_comm_kind kind;  /* NCCL or MPI, never AUTO once initialised */
    int device;               /* the CUDA device this rank drives */
    flas_gpu_group dp, tp;
    float *stage;             /* kind MPI: pinned host staging buffer, grown on demand */
    size_t stage_floats;
} flas_gpu_comm;

/* Chooses this rank's GPU (flas_gpu_select over SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK,
 * MPI_LOCALRANKID, the MPI node rank of world) and makes it current (cudaSetDevice). Collective over
 * world: the ranks of each node compare their local ranks, and when one repeats (mpirun inside an
 * sbatch script: every rank inherited the script's SLURM_LOCALID) they choose again from the MPI node
 * rank. *choice says which source won. */
int flas_gpu_pick_device(MPI_Comm world, flas_gpu_choice *choice, char *err, size_t errlen);

/* Sets up the communication of the dp and tp groups (e.g. flas_train_comm's dp and tp) for the current
 * device. requested AUTO takes NCCL unless two ranks of a group drive one physical GPU (compared by
 * UUID), then MPI; NCCL with a shared GPU is refused. With NCCL, rank 0 of each group makes the unique id
 * (ncclGetUniqueId), MPI_Bcast sends it, and every rank joins with ncclCommInitRank. Collective over
 * dp and tp. */
int flas_gpu_comm_init(flas_gpu_comm *c, MPI_Comm dp, MPI_Comm tp, flas_gpu_comm_kind requested, char *err,
                       size_t errlen);

/* Sums dbuf[0..n) (device fp32) over the dp group, in place, in buckets of bucket_bytes (0: the default)
 * on stream. NCCL: the buckets are only enqueued (the call returns before they run, so it can follow
 * the backward pass bucket by bucket); MPI: each bucket is copied to pinned memory, reduced and copied
 * back before the call returns. Nothing to do for a group of one. */
int flas_gpu_comm_dp_allreduce(flas_gpu_comm *c, float *dbuf, size_t n, size_t bucket_bytes, cudaStream_t stream,
                               char *err, size_t errlen);
/* Sums dbuf[0..n) over the tp group, in place (the partial outputs of wo and w2, the partial input
 * gradients of the column-parallel products: flas_allreduce_fn's role on the CPU). Same rules. */
int flas_gpu_comm_tp_allreduce(flas_gpu_comm *c, float *dbuf, size_t n, cudaStream_t stream, char *err,
                               size_t errlen);
/* Waits for stream and reports an asynchronous NCCL failure of either group. */
int flas_gpu_comm_sync(flas_gpu_comm *c, cudaStream_t stream, char *err, size_t errlen);

/* Orderly teardown (collective with NCCL): destroys the NCCL communicators, frees the staging. */
void flas_gpu_comm_free(flas_gpu_comm *c);
/* After a failure: ncclCommAbort (does not wait for peers), then frees what free would. */
void flas_gpu_comm_abort(flas_gpu_comm *c);

#ifdef __cplusplus
}
#endif
#endif
