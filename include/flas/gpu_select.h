/* Which GPU a rank uses and how the ranks talk (NCCL or host-staged MPI): the pure decisions of the
 * CUDA path (runtime/cuda/comm_nccl.h), kept apart from CUDA and MPI so they are unit-tested on any
 * machine. Values in, a choice or a one-line error out; nothing here reads a device. */
#ifndef FLAS_GPU_SELECT_H
#define FLAS_GPU_SELECT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What tells a rank its index among the ranks of its node, most trusted first. Strings are the raw
 * environment values (NULL: unset). */
typedef struct flas_gpu_env {
    const char *slurm_localid;   /* SLURM_LOCALID: srun's node-local task id */
    const char *ompi_local_rank; /* OMPI_COMM_WORLD_LOCAL_RANK: Open MPI (mpirun, or srun with PMIx) */
    const char *mpi_localrankid; /* MPI_LOCALRANKID: MPICH's Hydra launcher */
    int mpi_node_rank;           /* rank within MPI_COMM_TYPE_SHARED of the world; -1: unknown */
} flas_gpu_env;

typedef struct flas_gpu_choice {
    int device;         /* CUDA device index: local_rank % n_devices */
    int local_rank;     /* this rank's index on its node */
    const char *source; /* what gave local_rank: "SLURM_LOCALID", ..., "MPI node rank" (static string) */
} flas_gpu_choice;

/* Fills e from this process's environment (getenv) and the MPI node rank the caller computed. */
void flas_gpu_env_from_process(flas_gpu_env *e, int mpi_node_rank);
/* Local rank from the first of SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID, the MPI node
 * rank; device = local rank modulo n_devices (one device per rank when Slurm's --gpus-per-task or
 * CUDA_VISIBLE_DEVICES leaves each rank one: then every rank sees device 0). A set variable that is not
 * a plain non-negative decimal integer is an error, not skipped: a launcher we misread must not
 * silently put ranks on the wrong GPU. 0, or -1 with err (no device, no source, bad value). */
int flas_gpu_select(const flas_gpu_env *e, int n_devices, flas_gpu_choice *out, char *err, size_t errlen);
/* After each rank of a node chose: 1 if local_ranks[0..n) has a repeated value (*a < *b its first
 * pair), else 0. A repeat means the variable was inherited rather than set per rank (mpirun started
 * inside an sbatch script passes the script's SLURM_LOCALID=0 to every rank): the caller then chooses
 * again with the env strings cleared, from the MPI node rank. Also finds two ranks on one physical
 * GPU when given the devices' UUIDs (width bytes each). */
int flas_gpu_find_repeat(const void *keys, int n, size_t width, int *a, int *b);

/* How gradients and tensor-parallel partial sums move between GPUs. */
typedef enum flas_gpu_comm_kind {
    FLAS_GPU_COMM_AUTO = 0, /* NCCL, unless ranks share a GPU: then MPI */
    FLAS_GPU_COMM_NCCL,     /* device buffers straight through NCCL */
    FLAS_GPU_COMM_MPI       /* device -> pinned host -> MPI_Allreduce -> device: any number of ranks per GPU */
} flas_gpu_comm_kind;

/* "auto", "nccl", "mpi" (--comm). 0, or -1 with err. */
int flas_gpu_comm_kind_parse(const char *s, flas_gpu_comm_kind *k, char *err, size_t errlen);
const char *flas_gpu_comm_kind_name(flas_gpu_comm_kind k);
/* The kind to run: requested, with AUTO decided by whether two ranks of a communicator share a GPU
 * (shared_a, shared_b: two such ranks, -1 if none). NCCL with a shared GPU is an error (NCCL refuses
 * duplicate devices in one communicator), worded for the user. 0, or -1 with err. */
int flas_gpu_comm_resolve(flas_gpu_comm_kind requested, int shared_a, int shared_b, flas_gpu_comm_kind *out,
                          char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
