/* Checkpoint write/read throughput of the FLaS library (driven by bench_ckpt_io.py, which runs the
 * h5py and dd peers in the same session).
 *   bench_ckpt_io DIR PRESET RUNS [params|optimizer]          serial driver
 *   mpirun -np N bench_ckpt_io DIR PRESET RUNS [...] mpi       tensor-parallel split over N ranks
 * Prints one line per run: "write SECONDS BYTES" (create -> commit returned: data, fsync, rename,
 * directory fsync) and "read SECONDS BYTES" (open + validate + get_flat of every section). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "flas/checkpoint.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_ckpt_io DIR PRESET RUNS [params|optimizer] [mpi]\n");
        return 2;
    }
    int mpi = argc > 5 && strcmp(argv[5], "mpi") == 0;
    int rank = 0, size = 1;
    MPI_Comm comm = MPI_COMM_NULL;
    if (mpi) {
        MPI_Init(&argc, &argv);
        comm = MPI_COMM_WORLD;
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &size);
    }
    unsigned contents = (argc > 4 && strcmp(argv[4], "optimizer") == 0) ? FLAS_CKPT_OPTIMIZER : 0;
    flas_config c;
    if (flas_config_preset(argv[2], &c)) {
        fprintf(stderr, "unknown preset %s\n", argv[2]);
        return 2;
    }
    c.tied_embeddings = 0; /* the LLaMA-2 layout: separate output head */
    char err[1024], path[1024];
    snprintf(path, sizeof path, "%s/bench-flas.h5", argv[1]);
    flas_param_table t;
    if (flas_param_table_init(&t, &c, rank, size, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    float *buf = malloc(t.n_params * sizeof *buf);
    for (size_t i = 0; i < t.n_params; i++)
        buf[i] = (float)(i % 1000) * 1e-3f;
    flas_ckpt_meta m = {.cfg = c, .role = FLAS_CKPT_GLOBAL, .tp_size = size, .dp_size = 1};
    int nsec = contents ? 3 : 1;
    double bytes = (double)t.n_params_full * sizeof(float) * nsec;
    for (int run = 0; run < atoi(argv[3]); run++) {
        if (mpi)
            MPI_Barrier(comm);
        double t0 = now();
        flas_ckpt_writer *w = flas_ckpt_create(path, &m, contents, comm, err, sizeof err);
        int rc = w ? 0 : -1;
        for (int s = 0; rc == 0 && s < nsec; s++)
            rc = flas_ckpt_put_flat(w, (flas_ckpt_section)s, &t, 0, t.n_params, buf, err, sizeof err);
        if (rc == 0 && contents) {
            flas_ckpt_optimizer o = {1, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
            rc = flas_ckpt_set_optimizer(w, &o, err, sizeof err);
        }
        rc = rc == 0 ? flas_ckpt_commit(w, err, sizeof err) : (flas_ckpt_abort(w), -1);
        double tw = now() - t0;
        if (rc) {
            fprintf(stderr, "write failed: %s\n", err);
            return 1;
        }
        /* Read back hot (page cache): what a resume or the aggregator sees right after a write. */
        if (mpi)
            MPI_Barrier(comm);
        t0 = now();
        flas_ckpt_reader *r = flas_ckpt_open(path, comm, err, sizeof err);
        rc = r ? 0 : -1;
        for (int s = 0; rc == 0 && s < nsec; s++)
            rc = flas_ckpt_get_flat(r, (flas_ckpt_section)s, &t, 0, t.n_params, buf, err, sizeof err);
        flas_ckpt_close(r);
        double tr = now() - t0;
        if (rc) {
            fprintf(stderr, "read failed: %s\n", err);
            return 1;
        }
        if (rank == 0)
            printf("write %.4f %.0f\nread %.4f %.0f\n", tw, bytes, tr, bytes);
        fflush(stdout);
    }
    if (rank == 0)
        unlink(path);
    free(buf);
    flas_param_table_free(&t);
    if (mpi)
        MPI_Finalize();
    return 0;
}
