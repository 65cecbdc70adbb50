/* GPU communication: device choice, NCCL bootstrap over MPI, bucketed allreduce (see comm_nccl.h). */
#include "comm_nccl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/error.h"
#include "flas/train.h" /* flas_train_agree: one verdict per collective */

/* MPI counts are int: larger buffers move in pieces (as runtime/train_comm.c does on the CPU). */
#define MPI_MAX_FLOATS ((size_t)1 << 30)

static int cuda_fail(char *err, size_t errlen, const char *what, cudaError_t e)
{
    return flas_fail(err, errlen, "%s: %s (CUDA error %d)", what, cudaGetErrorString(e), (int)e);
}

static int nccl_fail(char *err, size_t errlen, const char *what, ncclResult_t r, ncclComm_t comm)
{
    /* ncclGetLastError names the cause (a peer gone, a device clash); the code alone rarely does. */
    const char *last = ncclGetLastError(comm);
    return flas_fail(err, errlen, "%s: %s%s%s", what, ncclGetErrorString(r), last && *last ? ": " : "",
                     last ? last : "");
}

/* ---- device ------------------------------------------------------------------------------------------ */

int flas_gpu_pick_device(MPI_Comm world, flas_gpu_choice *choice, char *err, size_t errlen)
{
    MPI_Comm node;
    int node_rank, node_size, n_devices = 0, ok, a, b, rc = -1;
    int *all = NULL;
    flas_gpu_env env;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);
    memset(choice, 0, sizeof *choice);
    flas_gpu_env_from_process(&env, node_rank);
    cudaError_t e = cudaGetDeviceCount(&n_devices);
    if (e != cudaSuccess)
        ok = cuda_fail(err, errlen, "cudaGetDeviceCount", e) == 0;
    else
        ok = flas_gpu_select(&env, n_devices, choice, err, errlen) == 0;
    all = (int *)malloc(sizeof(int) * (size_t)node_size);
    if (ok && !all)
        ok = flas_fail(err, errlen, "out of memory") == 0;
    if (flas_train_agree(node, ok, err, errlen))
        goto out;
    /* Local ranks must differ within a node; a repeat means an inherited variable (mpirun inside an
     * sbatch script): then every rank of the node, having seen the same array, chooses again from MPI's
     * node rank, which is unique by construction. */
    MPI_Allgather(&choice->local_rank, 1, MPI_INT, all, 1, MPI_INT, node);
    if (flas_gpu_find_repeat(all, node_size, sizeof(int), &a, &b)) {
        flas_gpu_env mpi_only = {NULL, NULL, NULL, node_rank};
        ok = flas_gpu_select(&mpi_only, n_devices, choice, err, errlen) == 0;
    }
    if (ok && (e = cudaSetDevice(choice->device)) != cudaSuccess)
        ok = cuda_fail(err, errlen, "cudaSetDevice", e) == 0;
    rc = flas_train_agree(node, ok, err, errlen);
out:
    free(all);
    MPI_Comm_free(&node);
    return rc;
}

/* ---- init ---------------------------------------------------------------------------------------------- */

/* The verdict of every rank of the dp x tp grid (flas_train_comm's two axes): a dp round, then a tp
 * round, reaches every rank from any failing one. All ranks must call it together. */
static int agree_grid(flas_gpu_comm *c, int ok, char *err, size_t errlen)
{
    ok = flas_train_agree(c->dp.mpi, ok, err, errlen) == 0;
    return flas_train_agree(c->tp.mpi, ok, err, errlen);
}

/* The largest v over the grid (same two rounds). */
static int grid_max(flas_gpu_comm *c, int v)
{
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, c->dp.mpi);
    MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, c->tp.mpi);
    return v;
}

/* Two ranks of g on one physical GPU (*a, *b; -1 if none), from everyone's device UUID. all holds
 * g->size UUIDs. Collective over g. */
static void shared_gpu(const flas_gpu_group *g, const cudaUUID_t *mine, unsigned char *all, int *a, int *b)
{
    MPI_Allgather(mine, (int)sizeof *mine, MPI_BYTE, all, (int)sizeof *mine, MPI_BYTE, g->mpi);
    *a = *b = -1;
    flas_gpu_find_repeat(all, g->size, sizeof *mine, a, b);
}

/* Rank 0 makes the id, MPI carries it, all join. The broadcast carries rank 0's verdict with the id, so
 * that no rank enters ncclCommInitRank (which waits for every peer) when rank 0 could not start. */
static int group_nccl_init(flas_gpu_group *g, char *err, size_t errlen)
{
    struct {
        int ok;
        ncclUniqueId id;
    } boot;
    memset(&boot, 0, sizeof boot);
    if (g->rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&boot.id);
        boot.ok = r == ncclSuccess || nccl_fail(err, errlen, "ncclGetUniqueId", r, NULL) == 0;
    }
    MPI_Bcast(&boot, (int)sizeof boot, MPI_BYTE, 0, g->mpi);
    if (!boot.ok) {
        if (g->rank != 0)
            flas_fail(err, errlen, "rank 0 could not make an NCCL unique id");
        return -1;
    }
    ncclResult_t r = ncclCommInitRank(&g->nccl, g->size, boot.id, g->rank);
    int ok = r == ncclSuccess || nccl_fail(err, errlen, "ncclCommInitRank", r, NULL) == 0;
    if (!ok)
        g->nccl = NULL;
    if (flas_train_agree(g->mpi, ok, err, errlen)) {
        if (g->nccl)
            ncclCommAbort(g->nccl); /* peers failed: nothing to finalise with them */
        g->nccl = NULL;
        return -1;
    }
    return 0;
}

static void group_init(flas_gpu_group *g, MPI_Comm comm)
{
    g->mpi = comm;
    MPI_Comm_rank(comm, &g->rank);
    MPI_Comm_size(comm, &g->size);
    g->nccl = NULL;
}

int flas_gpu_comm_init(flas_gpu_comm *c, MPI_Comm dp, MPI_Comm tp, flas_gpu_comm_kind requested, char *err,
                       size_t errlen)
{
    memset(c, 0, sizeof *c);
    group_init(&c->dp, dp);
    group_init(&c->tp, tp);
    cudaUUID_t uuid;
    struct cudaDeviceProp prop;
    memset(&uuid, 0, sizeof uuid);
    cudaError_t e = cudaGetDevice(&c->device);
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(&prop, c->device);
    int ok = e == cudaSuccess || cuda_fail(err, errlen, "the current CUDA device", e) == 0;
    if (ok)
        uuid = prop.uuid;
    int most = c->dp.size > c->tp.size ? c->dp.size : c->tp.size;
    unsigned char *all = (unsigned char *)malloc(sizeof uuid * (size_t)most);
    if (ok && !all)
        ok = flas_fail(err, errlen, "out of memory") == 0;
    if (agree_grid(c, ok, err, errlen)) {
        free(all);
        return -1;
    }
    int a, b, ta, tb;
    shared_gpu(&c->dp, &uuid, all, &a, &b);
    shared_gpu(&c->tp, &uuid, all, &ta, &tb);
    free(all);
    if (a < 0 && ta >= 0) /* a pair of the tp group, named by its tp ranks */
        a = ta, b = tb;
    /* NCCL asked for where this rank's group shares a GPU: refused, and the reason reaches every rank. */
    flas_gpu_comm_kind kind;
    ok = flas_gpu_comm_resolve(requested, a, b, &kind, err, errlen) == 0;
    if (agree_grid(c, ok, err, errlen))
        return -1;
    /* One kind for the whole grid: a tp group must not mix NCCL and MPI ranks, so AUTO takes MPI
     * wherever any group shares a GPU. */
    int shared_anywhere = grid_max(c, a >= 0);
    flas_gpu_comm_resolve(requested, shared_anywhere ? 0 : -1, shared_anywhere ? 1 : -1, &c->kind, NULL, 0);
    if (c->kind != FLAS_GPU_COMM_NCCL)
        return 0;
    /* One group after the other, with a grid verdict between: a group that failed must not leave a
     * peer of another group waiting inside its ncclCommInitRank. */
    ok = c->dp.size <= 1 || group_nccl_init(&c->dp, err, errlen) == 0;
    if (agree_grid(c, ok, err, errlen) == 0) {
        ok = c->tp.size <= 1 || group_nccl_init(&c->tp, err, errlen) == 0;
        if (agree_grid(c, ok, err, errlen) == 0)
            return 0;
    }
    flas_gpu_comm_abort(c);
    return -1;
}

/* ---- allreduce ----------------------------------------------------------------------------------------- */

static int stage_reserve(flas_gpu_comm *c, size_t floats, char *err, size_t errlen)
{
    if (c->stage_floats >= floats)
        return 0;
    if (c->stage)
        cudaFreeHost(c->stage);
    c->stage = NULL;
    c->stage_floats = 0;
    /* Pinned: the copies run at full PCIe speed and need no driver bounce buffer. */
    cudaError_t e = cudaMallocHost((void **)&c->stage, floats * sizeof(float));
    if (e != cudaSuccess) {
        c->stage = NULL;
        return cuda_fail(err, errlen, "cudaMallocHost of the MPI staging buffer", e);
    }
    c->stage_floats = floats;
    return 0;
}

/* Host-staged: device -> pinned host -> MPI_Allreduce -> device, one bucket at a time. After a CUDA
 * failure the rank keeps joining the MPI reductions (peers wait on them) and reports at the end. */
static int mpi_allreduce(flas_gpu_comm *c, flas_gpu_group *g, float *dbuf, size_t n, size_t bucket,
                         cudaStream_t stream, char *err, size_t errlen)
{
    if (bucket > MPI_MAX_FLOATS)
        bucket = MPI_MAX_FLOATS;
    size_t want = n < bucket ? n : bucket;
    int ok = stage_reserve(c, want, err, errlen) == 0;
    if (flas_train_agree(g->mpi, ok, err, errlen))
        return -1;
    for (size_t off = 0; off < n; off += bucket) {
        size_t k = n - off < bucket ? n - off : bucket;
        cudaError_t e = cudaSuccess;
        if (ok) {
            e = cudaMemcpyAsync(c->stage, dbuf + off, k * sizeof(float), cudaMemcpyDeviceToHost, stream);
            if (e == cudaSuccess)
                e = cudaStreamSynchronize(stream);
            if (e != cudaSuccess)
                ok = cuda_fail(err, errlen, "copy to the MPI staging buffer", e) == 0;
        }
        MPI_Allreduce(MPI_IN_PLACE, c->stage, (int)k, MPI_FLOAT, MPI_SUM, g->mpi);
        if (ok) {
            e = cudaMemcpyAsync(dbuf + off, c->stage, k * sizeof(float), cudaMemcpyHostToDevice, stream);
            /* The next bucket overwrites the staging buffer: this copy must be done first. */
            if (e == cudaSuccess)
                e = cudaStreamSynchronize(stream);
            if (e != cudaSuccess)
                ok = cuda_fail(err, errlen, "copy from the MPI staging buffer", e) == 0;
        }
    }
    return flas_train_agree(g->mpi, ok, err, errlen);
}

static int nccl_allreduce(flas_gpu_group *g, float *dbuf, size_t n, size_t bucket, cudaStream_t stream,
                          char *err, size_t errlen)
{
    for (size_t off = 0; off < n; off += bucket) {
        size_t k = n - off < bucket ? n - off : bucket;
        ncclResult_t r = ncclAllReduce(dbuf + off, dbuf + off, k, ncclFloat, ncclSum, g->nccl, stream);
        if (r != ncclSuccess)
            return nccl_fail(err, errlen, "ncclAllReduce", r, g->nccl);
    }
    return 0;
}

static int group_allreduce(flas_gpu_comm *c, flas_gpu_group *g, const char *name, float *dbuf, size_t n,
                           size_t bucket_bytes, cudaStream_t stream, char *err, size_t errlen)
{
    if (g->size <= 1 || n == 0)
        return 0;
    size_t bucket = bucket_bytes / sizeof(float);
    if (bucket == 0)
        bucket = n;
    if (c->kind == FLAS_GPU_COMM_MPI)
        return mpi_allreduce(c, g, dbuf, n, bucket, stream, err, errlen);
    if (!g->nccl)
        return flas_fail(err, errlen, "%s allreduce: the NCCL communicator is not initialised", name);
    return nccl_allreduce(g, dbuf, n, bucket, stream, err, errlen);
}

int flas_gpu_comm_dp_allreduce(flas_gpu_comm *c, float *dbuf, size_t n, size_t bucket_bytes, cudaStream_t stream,
                               char *err, size_t errlen)
{
    if (bucket_bytes == 0)
        bucket_bytes = FLAS_GPU_COMM_DEFAULT_BUCKET_BYTES;
    return group_allreduce(c, &c->dp, "dp", dbuf, n, bucket_bytes, stream, err, errlen);
}

int flas_gpu_comm_tp_allreduce(flas_gpu_comm *c, float *dbuf, size_t n, cudaStream_t stream, char *err,
                               size_t errlen)
{
    /* tp sums are per layer and small: one piece (bucket 0 = all of n), split only for MPI's int counts. */
    return group_allreduce(c, &c->tp, "tp", dbuf, n, 0, stream, err, errlen);
}

int flas_gpu_comm_sync(flas_gpu_comm *c, cudaStream_t stream, char *err, size_t errlen)
{
    cudaError_t e = cudaStreamSynchronize(stream);
    if (e != cudaSuccess)
        return cuda_fail(err, errlen, "cudaStreamSynchronize", e);
    flas_gpu_group *groups[2] = {&c->dp, &c->tp};
    for (int i = 0; i < 2; i++) {
        ncclResult_t async = ncclSuccess;
        if (!groups[i]->nccl)
            continue;
        ncclResult_t r = ncclCommGetAsyncError(groups[i]->nccl, &async);
        if (r != ncclSuccess || async != ncclSuccess)
            return nccl_fail(err, errlen, i ? "tp communicator" : "dp communicator", r != ncclSuccess ? r : async,
                             groups[i]->nccl);
    }
    return 0;
}

/* ---- teardown ------------------------------------------------------------------------------------------- */

static void release(flas_gpu_comm *c, int abort_nccl)
{
    flas_gpu_group *groups[2] = {&c->dp, &c->tp};
    for (int i = 0; i < 2; i++) {
        if (!groups[i]->nccl)
            continue;
        if (abort_nccl) {
            ncclCommAbort(groups[i]->nccl);
        } else {
            /* Finalize flushes what is still queued, so destroy frees an idle communicator. */
            ncclCommFinalize(groups[i]->nccl);
            ncclCommDestroy(groups[i]->nccl);
        }
        groups[i]->nccl = NULL;
    }
    if (c->stage)
        cudaFreeHost(c->stage);
    c->stage = NULL;
    c->stage_floats = 0;
}

void flas_gpu_comm_free(flas_gpu_comm *c) { release(c, 0); }

void flas_gpu_comm_abort(flas_gpu_comm *c) { release(c, 1); }
