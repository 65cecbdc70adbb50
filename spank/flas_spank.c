/* flas.so: the SPANK plugin behind `--federation=NAME`. One dispatch per Slurm callback; the work
 * lives in options.c (what users type), conf.c (flas.conf), job.c (user-side checks and FLAS_*
 * variables) and actions.c (root: prolog verification, epilog publishing).
 *
 * Never drain a node for a user's mistake: user errors are refused at submission (sbatch/salloc/srun),
 * and in the root contexts (prolog, epilog) they are recorded for the job and logged, not returned.
 * Only site faults (flas.conf unreadable, staging root unsafe) fail the prolog or epilog. */
#include <slurm/spank.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "flas/env.h"
#include "job.h"
#include "options.h"

SPANK_PLUGIN(flas, 1);

static flas_plugin_args plugin_args;

static int load_args(int ac, char **av)
{
    char err[512];
    if (flas_plugin_args_parse(ac, av, &plugin_args, err, sizeof err)) {
        slurm_error("flas: %s", err);
        return -1;
    }
    return 0;
}

/* flas.conf and the federation named; 0, or -1 with the reason in err (conf freed). */
static int load_federation(const char *name, flas_conf *conf, const flas_federation_conf **fed, char *err,
                           size_t errlen)
{
    if (flas_conf_load(plugin_args.conf, conf, err, errlen))
        return -1;
    *fed = flas_conf_find(conf, name);
    if (!*fed) {
        snprintf(err, errlen, "federation '%s' is not defined at this site (%.512s)", name, plugin_args.conf);
        flas_conf_free(conf);
        return -1;
    }
    return 0;
}

/* The account of a job being submitted, when the user chose one through the environment (SPANK cannot
 * see sbatch's -A option; the prolog checks the job's real account). */
static const char *submit_account(void)
{
    const char *account = getenv("SBATCH_ACCOUNT");
    return account ? account : getenv("SLURM_ACCOUNT");
}

/* The submitting side's check (see options.h): the federation exists, admits this user, and has the
 * requested round (round >= 0) or any round (round < 0) staged. */
static int check_submission(const char *name, long round)
{
    flas_conf conf;
    const flas_federation_conf *fed;
    char err[1024];
    long chosen = -1;
    if (load_federation(name, &conf, &fed, err, sizeof err)) {
        slurm_error("flas: %s", err);
        return -1;
    }
    int rc = flas_submit_check(fed, round, getuid(), submit_account(), &chosen, err, sizeof err);
    if (rc)
        slurm_error("flas: %s", err);
    else
        slurm_verbose("flas: federation %s, site %s, round %ld", fed->name, fed->site, chosen);
    flas_conf_free(&conf);
    return rc;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    if (load_args(ac, av))
        return -1;
    flas_submission_check = check_submission;
    switch (spank_context()) {
    case S_CTX_ALLOCATOR:
    case S_CTX_LOCAL:
    case S_CTX_REMOTE:
        return flas_options_register(sp);
    default: /* slurmd: keep start-up trivial */
        return 0;
    }
}

/* sbatch, salloc, srun, after every option: the one check no option callback can make. (It is the
 * only refusal that depends on the plugin being "required": an "optional" plugin's failing
 * init_post_opt prints the error but the job is still created.) */
static int check_options_complete(void)
{
    if (!flas_options.federation[0] && flas_options.round >= 0) {
        slurm_error("flas: --federation-round needs --federation=NAME");
        return -1;
    }
    return 0;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
    (void)sp;
    (void)ac;
    (void)av;
    spank_context_t ctx = spank_context();
    if (ctx == S_CTX_ALLOCATOR || ctx == S_CTX_LOCAL)
        return check_options_complete();
    return 0;
}

/* Under --export=NONE the option may not reach the step; the prolog's record still names the job. */
static int federation_of_job(unsigned long jobid, char *name, size_t len)
{
    flas_conf conf;
    char err[512];
    if (flas_conf_load(plugin_args.conf, &conf, err, sizeof err))
        return -1;
    int found = -1;
    for (int i = 0; i < conf.n && found < 0; i++) {
        flas_job_record rec;
        if (flas_job_record_load(&conf.fed[i], jobid, &rec, err, sizeof err) == 0) {
            snprintf(name, len, "%s", conf.fed[i].name);
            found = 0;
        }
    }
    flas_conf_free(&conf);
    return found;
}

/* Every FLAS_* variable the plugin may set in a step (see flas_job_env). */
static const char *const all_vars[] = FLAS_ENV_ALL;

/* A step inherits its parent's FLAS_* (e.g. srun --federation=other inside a flas job): drop what does
 * not hold for this step (not in env) before setting what does. */
static void drop_inherited(spank_t sp, const flas_env *env)
{
    for (size_t i = 0; i < sizeof all_vars / sizeof all_vars[0]; i++)
        if (!env || !flas_env_get(env, all_vars[i]))
            spank_unsetenv(sp, all_vars[i]);
}

/* Every job step (as the job's user): export FLAS_* to the tasks and to inner srun steps. */
int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
    (void)ac;
    (void)av;
    uint32_t jobid = 0;
    if (spank_get_item(sp, S_JOB_ID, &jobid) != ESPANK_SUCCESS)
        return 0;
    char name[FLAS_CONF_NAME_MAX];
    snprintf(name, sizeof name, "%s", flas_options.federation);
    if (!name[0] && federation_of_job(jobid, name, sizeof name))
        return 0; /* not a federation job */
    flas_conf conf;
    const flas_federation_conf *fed;
    char err[1024];
    if (load_federation(name, &conf, &fed, err, sizeof err)) {
        drop_inherited(sp, NULL);
        spank_setenv(sp, FLAS_ENV_FEDERATION, name, 1);
        spank_setenv(sp, FLAS_ENV_ERROR, err, 1);
        slurm_error("flas: %s", err);
        return 0;
    }
    flas_env env;
    flas_job_env(fed, flas_options.round, jobid, &env);
    drop_inherited(sp, &env);
    for (int i = 0; i < env.n; i++)
        spank_setenv(sp, env.var[i].name, env.var[i].value, 1);
    const char *error = flas_env_get(&env, FLAS_ENV_ERROR);
    if (error)
        slurm_error("flas: federation %s: %s (flas-train will refuse to train)", fed->name, error);
    flas_conf_free(&conf);
    return 0;
}

/* prolog/epilog: the job's identity from the environment slurmd gives the job script context. */
static int job_from_env(spank_t sp, const flas_federation_conf *fed, const flas_opts *opts, flas_job *job)
{
    memset(job, 0, sizeof *job);
    job->fed = fed;
    job->round = opts->round;
    const char *id = getenv("SLURM_JOB_ID"), *user = getenv("SLURM_JOB_USER"), *gid = getenv("SLURM_JOB_GID");
    const char *account = getenv("SLURM_JOB_ACCOUNT"), *node = getenv("SLURMD_NODENAME");
    uid_t uid;
    if (!id || !user || !gid || spank_get_item(sp, S_JOB_UID, &uid) != ESPANK_SUCCESS)
        return -1;
    job->jobid = strtoul(id, NULL, 10);
    job->uid = uid;
    job->gid = (gid_t)strtoul(gid, NULL, 10);
    snprintf(job->user, sizeof job->user, "%s", user);
    snprintf(job->account, sizeof job->account, "%s", account ? account : "");
    snprintf(job->node, sizeof job->node, "%s", node ? node : "");
    /* slurmd's own list of the job's nodes; malformed or absent: every node publishes (one-node jobs) */
    const char *nodes = getenv("SLURM_JOB_NODELIST");
    if (!nodes)
        nodes = getenv("SLURM_NODELIST");
    if (!nodes || flas_hostlist_first(nodes, job->first_node, sizeof job->first_node))
        job->first_node[0] = '\0';
    /* "exit:signal" -- but 0:0 for a job killed at its time limit: the batch step's own record
     * (flas_record_batch_exit) wins when present. */
    const char *ec = getenv("SLURM_JOB_EXIT_CODE2");
    if (ec && sscanf(ec, "%d:%d", &job->exit_code, &job->signal) == 2)
        job->exit_known = 1;
    return 0;
}

static int job_script(spank_t sp, int ac, char **av, int epilog)
{
    flas_opts opts;
    if (load_args(ac, av))
        return -1; /* a broken plugstack line is the site's fault */
    flas_options_getopt(sp, &opts);
    if (!opts.federation[0])
        return 0;
    const char *what = epilog ? "epilog" : "prolog";
    flas_conf conf;
    const flas_federation_conf *fed;
    char err[1024];
    if (flas_conf_load(plugin_args.conf, &conf, err, sizeof err)) {
        slurm_error("flas: %s: %s", what, err);
        return -1;
    }
    err[0] = '\0';
    fed = flas_conf_find(&conf, opts.federation);
    flas_job job;
    int rc = 0;
    if (!fed) /* defined at submission, removed since: the job runs without a federation */
        slurm_error("flas: %s: federation '%s' is no longer defined in %s", what, opts.federation, conf.path);
    else if (job_from_env(sp, fed, &opts, &job))
        slurm_error("flas: %s: job identity missing from the environment", what);
    else if ((rc = epilog ? flas_epilog(&job, err, sizeof err) : flas_prolog(&job, err, sizeof err)))
        slurm_error("flas: %s of job %lu: site fault: %s", what, job.jobid, err);
    else
        slurm_info("flas: %s of job %lu (federation %s) done%s%s", what, job.jobid, fed->name, err[0] ? ": " : "",
                   err);
    flas_conf_free(&conf);
    return rc;
}

int slurm_spank_job_prolog(spank_t sp, int ac, char **av) { return job_script(sp, ac, av, 0); }

#define BATCH_STEP 0xfffffffbu /* SLURM_BATCH_SCRIPT in slurm.h, which the plugin does not include */

/* The batch step's stepd (root), when the batch script exits: record how it ended for the epilog.
 * Never fails the step: a missing record only makes the manifest say less. */
int slurm_spank_task_exit(spank_t sp, int ac, char **av)
{
    (void)ac;
    (void)av;
    uint32_t step = 0, jobid = 0;
    int status = 0;
    if (spank_context() != S_CTX_REMOTE || !flas_options.federation[0] ||
        spank_get_item(sp, S_JOB_STEPID, &step) != ESPANK_SUCCESS || step != BATCH_STEP ||
        spank_get_item(sp, S_JOB_ID, &jobid) != ESPANK_SUCCESS ||
        spank_get_item(sp, S_TASK_EXIT_STATUS, &status) != ESPANK_SUCCESS)
        return 0;
    flas_conf conf;
    const flas_federation_conf *fed;
    char err[1024];
    if (load_federation(flas_options.federation, &conf, &fed, err, sizeof err) == 0) {
        if (flas_record_batch_exit(fed, jobid, status, err, sizeof err))
            slurm_error("flas: job %u: cannot record how the batch script ended: %s", jobid, err);
        flas_conf_free(&conf);
    }
    return 0;
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av) { return job_script(sp, ac, av, 1); }
