/* flas-train: train one federated round on a site's private token shards (MPI: tensor parallel inside
 * a node, data parallel across ranks), write the local checkpoint. Also --init (a round-0 global model)
 * and --eval (validation loss of any checkpoint). A thin main over runtime/train_*.c; the only thing it
 * adds is the job's end time from libslurm, which is linked into this program and nothing else. */
#include <mpi.h>
#include <slurm/slurm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/train.h"

/* When the Slurm job ends, in unix seconds, or 0 outside a job / when slurmctld cannot say.
 * SLURM_JOB_END_TIME (newer Slurm exports it) is used when present; else libslurm asks slurmctld. */
static double job_end(const char **source)
{
    double end = flas_train_job_end_from_env();
    const char *id = getenv("SLURM_JOB_ID");
    *source = "SLURM_JOB_END_TIME";
    if (end > 0 || !id || !*id)
        return end;
    char *tail;
    unsigned long jobid = strtoul(id, &tail, 10);
    /* libslurm exits the process when it finds no configuration: ask only where there is one. */
    const char *conf = getenv("SLURM_CONF");
    if (*tail || jobid == 0 || access(conf && *conf ? conf : "/etc/slurm/slurm.conf", R_OK))
        return 0;
    slurm_init(NULL);
    long left = slurm_get_rem_time((uint32_t)jobid);
    slurm_fini();
    *source = "libslurm slurm_get_rem_time";
    return left >= 0 ? flas_train_now() + (double)left : 0;
}

int main(int argc, char **argv)
{
    flas_train_opts o;
    char err[1024];
    flas_train_opts_init(&o);
    /* Signals first: a SIGUSR1 during start-up must not kill the job before it can checkpoint. */
    flas_train_signals_install();
    int bad = flas_train_parse_args(&o, argc, argv, err, sizeof err) || flas_train_opts_from_env(&o, err, sizeof err);
    /* FLAS_ERROR comes first: a refused job lacks FLAS_OUTPUT_CHECKPOINT, and its reason is the news. */
    if (!bad && !(o.mode == FLAS_TRAIN_RUN && o.flas_error[0]))
        bad = flas_train_opts_check(&o, err, sizeof err);
    if (o.mode == FLAS_TRAIN_HELP) {
        flas_train_usage(stdout);
        return 0;
    }
    if (o.mode == FLAS_TRAIN_VERSION) {
        printf("flas-train %s\n", FLAS_VERSION);
        return 0;
    }
    MPI_Init(&argc, &argv);
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int rc = 1;
    if (bad) {
        if (rank == 0)
            fprintf(stderr, "flas-train: error: %s\n", err);
        rc = 2; /* a usage error, as flas-convert, flas-prepare and flas-stage report one */
    } else {
        double end = 0;
        const char *source = NULL;
        if (o.mode == FLAS_TRAIN_RUN && rank == 0) {
            end = job_end(&source);
            if (end > 0)
                printf("flas-train: the job ends in %.0f s (%s)\n", end - flas_train_now(), source);
        }
        MPI_Bcast(&end, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        rc = flas_train_main(&o, MPI_COMM_WORLD, end);
    }
    MPI_Finalize();
    return rc;
}
