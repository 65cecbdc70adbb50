/* One federation job as the plugin sees it, the record the prolog leaves for the rest of the job,
 * and the work done in each context. Nothing here calls Slurm: the dispatcher (flas_spank.c) gathers
 * the inputs and the tests call these directly. */
#ifndef FLAS_SPANK_JOB_H
#define FLAS_SPANK_JOB_H

#include <stddef.h>
#include <sys/types.h>

#include "flas/conf.h"
#include "flas/sha256.h"

typedef struct flas_job {
    const flas_federation_conf *fed;
    unsigned long jobid;
    uid_t uid;
    gid_t gid;
    char user[FLAS_CONF_NAME_MAX];
    char account[FLAS_CONF_NAME_MAX]; /* "" when unknown */
    long round;                       /* requested round, -1 = newest staged */
    int exit_known;                   /* epilog: 1 when exit_code/signal are known */
    int exit_code, signal;            /* epilog: how the batch script ended (see flas_epilog) */
    char node[FLAS_CONF_NAME_MAX];    /* epilog: node name for the manifest */
    char first_node[FLAS_CONF_NAME_MAX]; /* epilog: the job's first node ("" unknown): it alone publishes */
} flas_job;

/* What the prolog decided, in <stage>/<fed>/state/<jobid> (root-owned). */
typedef struct flas_job_record {
    char federation[FLAS_CONF_NAME_MAX];
    long round;                             /* -1 when no round could be chosen */
    char sha256[FLAS_SHA256_HEX_LEN + 1];   /* verified sha256 of the global model, "" if not verified */
    char error[512];                        /* "" when the job may train; else why not */
} flas_job_record;

/* Root, prolog: checks the user/account, picks and verifies the global model, creates the job's output
 * directory, writes the record. Returns 0 when the job may start (user problems are recorded, never
 * returned: a failing prolog drains the node), -1 only for site faults (err says which). */
int flas_prolog(const flas_job *job, char *err, size_t errlen);
/* Root, in the batch step's slurmstepd when the batch script has exited: records its wait status in
 * state/<jobid>.exit for the epilog (whose own environment says 0:0 even for a job killed at its time
 * limit). 0, or -1 with err set. */
int flas_record_batch_exit(const flas_federation_conf *fed, unsigned long jobid, int wait_status, char *err,
                           size_t errlen);
/* Root, epilog: publishes the job's checkpoint and a manifest in outbox/round-K/. 0, or -1 for site
 * faults only. */
int flas_epilog(const flas_job *job, char *err, size_t errlen);

/* The first host of a Slurm hostlist expression ("lrdn[0001-0004,0010],gpu7" -> "lrdn0001"): the job's
 * batch host, whose epilog alone publishes (every node of a job runs the epilog). 0, or -1 when the
 * expression is malformed or the name would not fit in len. */
int flas_hostlist_first(const char *hostlist, char *out, size_t len);

/* Any user: reads the record the prolog wrote for jobid (refusing one not owned by root). 0 or -1. */
int flas_job_record_load(const flas_federation_conf *fed, unsigned long jobid, flas_job_record *rec, char *err,
                         size_t errlen);
/* Parses/formats the record text (key=value lines). */
int flas_job_record_parse(const char *text, flas_job_record *rec);
int flas_job_record_format(const flas_job_record *rec, char *buf, size_t len);

/* The newest round staged in the directory fd (a round-NNNNNN.h5 with its .sha256 beside it), or -1. */
long flas_newest_round_fd(int global_dir);

/* May uid (with its groups from the group database) and account use fed? 0, or -1 with the reason. */
int flas_check_user(const flas_federation_conf *fed, uid_t uid, const char *account, char *err, size_t errlen);

/* Any user (sbatch/srun side): may this user use fed, and is the requested round (or any) staged?
 * Fills *round_out with the round the job would train now. 0, or -1 with a one-line reason. */
int flas_submit_check(const flas_federation_conf *fed, long round, uid_t uid, const char *account,
                      long *round_out, char *err, size_t errlen);

/* The FLAS_* variables for a job step. */
#define FLAS_ENV_MAX 12
typedef struct flas_env {
    int n;
    struct {
        char name[32];
        char value[FLAS_CONF_PATH_MAX + 256];
    } var[FLAS_ENV_MAX];
} flas_env;

/* Builds the environment of jobid for fed. round is the option value (-1 none). Uses the prolog's
 * record when there is one; sets FLAS_ERROR when the job must not train. */
void flas_job_env(const flas_federation_conf *fed, long round, unsigned long jobid, flas_env *env);
const char *flas_env_get(const flas_env *env, const char *name);

#endif
