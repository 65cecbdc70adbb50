/* The CUDA path's pure decisions: a rank's GPU and the communication kind (see flas/gpu_select.h). */
#include "flas/gpu_select.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "flas/error.h"

void flas_gpu_env_from_process(flas_gpu_env *e, int mpi_node_rank)
{
    e->slurm_localid = getenv("SLURM_LOCALID");
    e->ompi_local_rank = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    e->mpi_localrankid = getenv("MPI_LOCALRANKID");
    e->mpi_node_rank = mpi_node_rank;
}

/* A plain decimal 0..INT_MAX: no sign, no spaces, no suffix (strtol would take " 1", "+1" and "1x"). */
static int parse_index(const char *s, int *out)
{
    long v = 0;
    if (!*s)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX)
            return -1;
    }
    *out = (int)v;
    return 0;
}

int flas_gpu_select(const flas_gpu_env *e, int n_devices, flas_gpu_choice *out, char *err, size_t errlen)
{
    const struct { const char *name, *value; } vars[] = {
        {"SLURM_LOCALID", e->slurm_localid},
        {"OMPI_COMM_WORLD_LOCAL_RANK", e->ompi_local_rank},
        {"MPI_LOCALRANKID", e->mpi_localrankid},
    };
    memset(out, 0, sizeof *out);
    if (n_devices <= 0)
        return flas_fail(err, errlen, "no CUDA device is visible to this rank (CUDA_VISIBLE_DEVICES, driver?)");
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        if (!vars[i].value)
            continue;
        if (parse_index(vars[i].value, &out->local_rank))
            return flas_fail(err, errlen, "%s='%.64s' is not a node-local rank (a non-negative integer)", vars[i].name,
                             vars[i].value);
        out->source = vars[i].name;
        out->device = out->local_rank % n_devices;
        return 0;
    }
    if (e->mpi_node_rank < 0)
        return flas_fail(err, errlen, "no node-local rank: none of SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, "
                                      "MPI_LOCALRANKID is set and no MPI node rank was given");
    out->local_rank = e->mpi_node_rank;
    out->source = "MPI node rank";
    out->device = out->local_rank % n_devices;
    return 0;
}

int flas_gpu_find_repeat(const void *keys, int n, size_t width, int *a, int *b)
{
    /* Ranks per node are few (GPUs per node, or cores when they share): quadratic is fine. */
    const unsigned char *k = keys;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (memcmp(k + (size_t)i * width, k + (size_t)j * width, width) == 0) {
                *a = i;
                *b = j;
                return 1;
            }
    return 0;
}

static const char *const kind_names[] = {"auto", "nccl", "mpi"};

const char *flas_gpu_comm_kind_name(flas_gpu_comm_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "?";
}

int flas_gpu_comm_kind_parse(const char *s, flas_gpu_comm_kind *k, char *err, size_t errlen)
{
    for (unsigned i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (s && strcmp(s, kind_names[i]) == 0) {
            *k = (flas_gpu_comm_kind)i;
            return 0;
        }
    return flas_fail(err, errlen, "--comm '%.64s' is not one of auto, nccl, mpi", s ? s : "");
}

int flas_gpu_comm_resolve(flas_gpu_comm_kind requested, int shared_a, int shared_b, flas_gpu_comm_kind *out,
                          char *err, size_t errlen)
{
    int shared = shared_a >= 0 && shared_b >= 0;
    switch (requested) {
    case FLAS_GPU_COMM_AUTO: *out = shared ? FLAS_GPU_COMM_MPI : FLAS_GPU_COMM_NCCL; return 0;
    case FLAS_GPU_COMM_MPI: *out = FLAS_GPU_COMM_MPI; return 0;
    case FLAS_GPU_COMM_NCCL:
        if (shared)
            return flas_fail(err, errlen, "ranks %d and %d share one GPU: NCCL needs a GPU per rank; use --comm mpi "
                                          "or fewer ranks per node", shared_a, shared_b);
        *out = FLAS_GPU_COMM_NCCL;
        return 0;
    }
    return flas_fail(err, errlen, "unknown communication kind %d", (int)requested);
}
