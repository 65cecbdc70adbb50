/* flas-coordinator: runs a federation's rounds from outside the sites (stage the global model over SSH,
 * submit each site's job, poll, fetch the local checkpoints, aggregate). A thin main over
 * include/flas/coordinator.h. */
#include <stdio.h>
#include <string.h>

#include "flas/checkpoint.h"
#include "flas/coordinator.h"
#include "flas/plan.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flas-coordinator run DESCRIPTION\n"
            "       flas-coordinator status DESCRIPTION\n"
            "       flas-coordinator check DESCRIPTION\n"
            "       flas-coordinator plan MODEL --site SPEC... TRAINING [options]   (plan --help)\n"
            "\n"
            "Runs the rounds of a FLaS federation described in DESCRIPTION (coordinator.conf(5)): each round\n"
            "stages the global model at every site over SSH (verified, resumable), submits\n"
            "`sbatch --federation=NAME --federation-round=K` there (synchronised by a common --begin or a\n"
            "reservation), polls the jobs, fetches the published local checkpoints (verified against the\n"
            "site's manifest) and aggregates them into the next global model.\n"
            "\n"
            "  run      run (or resume, from WorkDir/journal) until all rounds are done\n"
            "  status   show the round, each site's job, state and transfer\n"
            "  check    parse the description and exit\n"
            "  plan     predict a round's bytes, transfer, training, aggregation and GPU memory at scale\n"
            "\n"
            "Exit status: 0 done, 1 a round failed (the journal says why), 2 bad description or setup,\n"
            "3 stopped because a site's SSH certificate expired or will within CommandTimeout= (or is\n"
            "unreadable, not yet valid, or not for the site's User=): nothing more was done at any site,\n"
            "jobs there keep running; renew it and run again to resume (plan: 0 printed, 2 bad arguments).\n");
}

int main(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "plan"))
        return flas_plan_main(argc - 1, argv + 1, stdout, stderr);
    if (argc != 3 || (strcmp(argv[1], "run") && strcmp(argv[1], "status") && strcmp(argv[1], "check"))) {
        usage(stderr);
        return 2;
    }
    static flas_coord_conf conf;
    char err[2048];
    if (flas_coord_conf_load(argv[2], &conf, err, sizeof err)) {
        fprintf(stderr, "flas-coordinator: %s\n", err);
        return 2;
    }
    if (!strcmp(argv[1], "check")) {
        printf("%s: federation %s, %d sites, %d rounds, MinSites=%d, strategy %s\n", argv[2], conf.federation,
               conf.n_sites, conf.rounds, conf.min_sites, conf.strategy);
        return 0;
    }
    if (!strcmp(argv[1], "status")) {
        if (flas_coord_status(&conf, stdout, err, sizeof err)) {
            fprintf(stderr, "flas-coordinator: %s\n", err);
            return 2;
        }
        return 0;
    }
    flas_ckpt_hdf5_quiet();
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = flas_coord_run(&conf, err, sizeof err);
    if (rc)
        fprintf(stderr, "flas-coordinator: %s\n", err);
    return rc;
}
