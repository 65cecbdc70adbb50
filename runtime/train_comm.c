/* Parallel communication of flas-train: the tp x dp rank grid, the core's tensor-parallel hook, the
 * data-parallel gradient reduction, ZeRO-1 slices, and agreement on errors (a rank that fails must never
 * leave the others waiting in a collective). */
#include "flas/train.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COUNT ((size_t)1 << 30) /* MPI counts are int: move larger buffers in pieces */

int flas_train_comm_init(flas_train_comm *c, MPI_Comm world, int tp, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    c->world = world;
    c->tp = c->dp = MPI_COMM_NULL;
    MPI_Comm_rank(world, &c->rank);
    MPI_Comm_size(world, &c->size);
    if (tp < 1 || c->size % tp) {
        snprintf(err, errlen, "--tp %d does not divide the %d MPI ranks (world = tp x dp)", tp, c->size);
        return -1;
    }
    c->tp_size = tp;
    c->dp_size = c->size / tp;
    c->tp_rank = c->rank % tp;
    c->dp_rank = c->rank / tp;
    MPI_Comm_split(world, c->dp_rank, c->tp_rank, &c->tp);
    MPI_Comm_split(world, c->tp_rank, c->dp_rank, &c->dp);
    /* Which ranks share this node: the thread default, and a warning when a tp group spans nodes. */
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &c->node_ranks);
    int leader = c->rank, lo, hi;
    MPI_Bcast(&leader, 1, MPI_INT, 0, node); /* the world rank of the node's first rank names the node */
    MPI_Comm_free(&node);
    MPI_Allreduce(&leader, &lo, 1, MPI_INT, MPI_MIN, c->tp);
    MPI_Allreduce(&leader, &hi, 1, MPI_INT, MPI_MAX, c->tp);
    int spans = lo != hi;
    MPI_Allreduce(&spans, &c->tp_spans_nodes, 1, MPI_INT, MPI_MAX, world);
    int first = leader == c->rank; /* this rank is its node's first: counts the node once */
    MPI_Allreduce(&first, &c->n_nodes, 1, MPI_INT, MPI_SUM, world);
    /* Every rank's node name, for the start line and metrics.jsonl: where a job's ranks really ran (a test
     * compares them with the job's node list). Only names a host may have are kept. */
    char mine[FLAS_TRAIN_HOST_LEN] = "";
    char name[MPI_MAX_PROCESSOR_NAME] = "";
    int n = 0;
    MPI_Get_processor_name(name, &n);
    for (int i = 0; name[i] && i < FLAS_TRAIN_HOST_LEN - 1; i++)
        mine[i] = isalnum((unsigned char)name[i]) || name[i] == '-' || name[i] == '.' ? name[i] : '_';
    if (c->rank == 0)
        c->hosts = calloc((size_t)c->size, FLAS_TRAIN_HOST_LEN);
    if (c->rank == 0 && !c->hosts)
        snprintf(err, errlen, "out of memory");
    if (flas_train_agree(world, c->rank != 0 || c->hosts, err, errlen))
        return -1;
    MPI_Gather(mine, FLAS_TRAIN_HOST_LEN, MPI_CHAR, c->hosts, FLAS_TRAIN_HOST_LEN, MPI_CHAR, 0, world);
    return 0;
}

static const char *host_of(const flas_train_comm *c, int rank) { return c->hosts + (size_t)rank * FLAS_TRAIN_HOST_LEN; }

void flas_train_comm_placement(const flas_train_comm *c, char *buf, size_t len)
{
    size_t o = 0;
    snprintf(buf, len, "?");
    if (!c->hosts || len == 0)
        return;
    buf[0] = '\0';
    for (int a = 0; a < c->size;) {
        int b = a;
        while (b + 1 < c->size && !strcmp(host_of(c, b + 1), host_of(c, a)))
            b++;
        int n = b > a ? snprintf(buf + o, len - o, "%s%s: ranks %d-%d", a ? ", " : "", host_of(c, a), a, b)
                      : snprintf(buf + o, len - o, "%s%s: rank %d", a ? ", " : "", host_of(c, a), a);
        if (n < 0 || (size_t)n >= len - o)
            return;
        o += (size_t)n;
        a = b + 1;
    }
}

void flas_train_comm_hosts_json(const flas_train_comm *c, char *buf, size_t len)
{
    size_t o = 0;
    snprintf(buf, len, "[]");
    if (!c->hosts || len < 3)
        return;
    buf[o++] = '[';
    for (int r = 0; r < c->size; r++) {
        int n = snprintf(buf + o, len - o, "%s\"%s\"", r ? "," : "", host_of(c, r));
        if (n < 0 || (size_t)n >= len - o - 1) {
            snprintf(buf, len, "[]");
            return;
        }
        o += (size_t)n;
    }
    snprintf(buf + o, len - o, "]");
}

void flas_train_comm_free(flas_train_comm *c)
{
    free(c->hosts);
    c->hosts = NULL;
    if (c->tp != MPI_COMM_NULL)
        MPI_Comm_free(&c->tp);
    if (c->dp != MPI_COMM_NULL)
        MPI_Comm_free(&c->dp);
}

void flas_train_tp_allreduce(float *buf, size_t n, void *ctx)
{
    flas_train_comm *c = ctx;
    for (size_t off = 0; off < n; off += MAX_COUNT) {
        size_t k = n - off < MAX_COUNT ? n - off : MAX_COUNT;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, c->tp);
    }
}

void flas_train_dp_allreduce(flas_train_comm *c, float *buf, size_t n, size_t bucket)
{
    if (c->dp_size == 1)
        return;
    if (bucket == 0 || bucket > MAX_COUNT)
        bucket = MAX_COUNT;
    double t0 = MPI_Wtime();
    for (size_t off = 0; off < n; off += bucket) {
        size_t k = n - off < bucket ? n - off : bucket;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, c->dp);
    }
    c->reduce_seconds += MPI_Wtime() - t0;
}

void flas_train_slice(size_t n, int part, int parts, size_t *lo, size_t *hi)
{
    size_t blocks = (n + 15) / 16; /* 64-byte units: slices never share a cache line */
    size_t a = blocks * (size_t)part / (size_t)parts * 16, b = blocks * (size_t)(part + 1) / (size_t)parts * 16;
    *lo = a < n ? a : n;
    *hi = b < n ? b : n;
}

void flas_train_dp_gather_slices(flas_train_comm *c, float *buf, size_t n)
{
    if (c->dp_size == 1)
        return;
    double t0 = MPI_Wtime();
    /* One broadcast per owner (sizes in int pieces) rather than MPI_Allgatherv, whose int displacements
     * cannot address buffers of more than 2^31 floats. */
    for (int r = 0; r < c->dp_size; r++) {
        size_t lo, hi;
        flas_train_slice(n, r, c->dp_size, &lo, &hi);
        for (size_t off = lo; off < hi; off += MAX_COUNT) {
            size_t k = hi - off < MAX_COUNT ? hi - off : MAX_COUNT;
            MPI_Bcast(buf + off, (int)k, MPI_FLOAT, r, c->dp);
        }
    }
    c->reduce_seconds += MPI_Wtime() - t0;
}

int flas_train_agree(MPI_Comm comm, int ok, char *err, size_t errlen)
{
    int rank, size, bad, lowest;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    bad = ok ? size : rank;
    MPI_Allreduce(&bad, &lowest, 1, MPI_INT, MPI_MIN, comm);
    if (lowest == size)
        return 0;
    char msg[1024] = "";
    if (rank == lowest && err)
        snprintf(msg, sizeof msg, "%s", err);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, lowest, comm);
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

int flas_train_slice_table(const flas_param_table *t, size_t lo, size_t hi, flas_param_table *out)
{
    memset(out, 0, sizeof *out);
    out->cfg = t->cfg;
    out->tp_rank = t->tp_rank;
    out->tp_size = t->tp_size;
    out->n_params = hi - lo;
    out->n_params_full = t->n_params_full;
    out->tensors = calloc((size_t)(t->n_tensors ? t->n_tensors : 1), sizeof *out->tensors);
    if (!out->tensors)
        return -1;
    for (int i = 0; i < t->n_tensors; i++) {
        const flas_tensor *x = &t->tensors[i];
        size_t a = x->offset > lo ? x->offset : lo, b = x->offset + x->numel < hi ? x->offset + x->numel : hi;
        if (a >= b)
            continue;
        flas_tensor *y = &out->tensors[out->n_tensors++];
        *y = *x; /* kind, ndim (weight decay), shard (norm ownership) stay; only the extent changes */
        y->offset = a - lo;
        y->numel = b - a;
    }
    return 0;
}
