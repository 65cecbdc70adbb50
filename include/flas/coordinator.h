/* flas-coordinator as a library: the federation description (coordinator.conf(5)), the round journal,
 * and the rounds themselves (stage -> submit -> poll -> fetch -> aggregate), driven from outside the
 * sites over SSH. */
#ifndef FLAS_COORDINATOR_H
#define FLAS_COORDINATOR_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "flas/conf.h"
#include "flas/sha256.h"
#include "flas/stage.h"
#include "flas/update.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_COORD_MAX_SITES 32
#define FLAS_COORD_MAX_ARGS 48
/* The shortest wall-clock limit a remote command gets, also at or past the round's deadline: the
 * commands issued there (scancel of a late job) must still have time to run. */
#define FLAS_COORD_MIN_COMMAND_S 5

/* book: the coordinator creates each round's reservation itself at every site where its account may
 * (operator role), for one start time, and deletes it when the site's job is over; elsewhere it uses
 * the admins' Reservation= (or, without one, --begin). */
typedef enum { FLAS_SYNC_NONE = 0, FLAS_SYNC_BEGIN, FLAS_SYNC_RESERVATION, FLAS_SYNC_BOOK } flas_sync_mode;
typedef enum {
    FLAS_BOOK_NONE = 0, /* not booked (yet) */
    FLAS_BOOK_HELD,     /* this round's reservation exists at the site: the jobs go there, it is deleted after */
    FLAS_BOOK_NO_ROLE,  /* the site refused (no operator role, or no room): the admins' reservation or --begin */
    FLAS_BOOK_RELEASED, /* deleted again */
} flas_book_state;

typedef struct flas_coord_site {
    char name[FLAS_CONF_NAME_MAX];          /* Site= (the site's name in its flas.conf) */
    flas_ssh_target ssh;                    /* Host=, Port=, User=, Identity=, Certificate=, Jump= (+ KnownHosts=) */
    char staging_root[FLAS_CONF_PATH_MAX];  /* StagingRoot= at the site */
    char script[FLAS_CONF_PATH_MAX];        /* Script=: the batch script at the site */
    int n_args;                             /* ScriptArgs=a,b,c */
    char args[FLAS_COORD_MAX_ARGS][FLAS_CONF_PATH_MAX];
    char partition[FLAS_CONF_NAME_MAX];     /* Partition= */
    char account[FLAS_CONF_NAME_MAX];       /* Account= */
    int nodes, tasks, cpus_per_task;        /* Nodes=, Tasks=, CpusPerTask= (0: the script decides) */
    int time_min;                           /* Time= minutes (0: the script decides) */
    char tools[FLAS_CONF_PATH_MAX];         /* Tools=: directory of the FLaS tools at the site ("": PATH) */
    int line;
} flas_coord_site;

typedef struct flas_coord_conf {
    char federation[FLAS_CONF_NAME_MAX];    /* Federation= */
    char work_dir[FLAS_CONF_PATH_MAX];      /* WorkDir=: journal, globals, fetched checkpoints */
    char initial_global[FLAS_CONF_PATH_MAX];/* InitialGlobal=: the model round 0 starts from */
    char known_hosts[FLAS_CONF_PATH_MAX];   /* KnownHosts= */
    int rounds;                             /* Rounds= */
    int min_sites;                          /* MinSites= (default: all sites) */
    int deadline_s;                         /* RoundDeadline= seconds (default 3600) */
    char strategy[32];                      /* Strategy= (flas-aggregate's names; default fedavg) */
    double server_lr, server_momentum;      /* ServerLR=, ServerMomentum= (<0: strategy default) */
    double server_beta1, server_beta2, server_tau; /* ServerBeta1=, ServerBeta2=, ServerTau= (fedadam,
                                               fedyogi; <0: strategy default) */
    /* The sites' optimizer across rounds (flas-train; docs/tuning.md), exported to every job. */
    int inner_keep;                         /* InnerState=keep|reset (FLAS_INNER_STATE; default reset) */
    int lr_run;                             /* LrSchedule=run|round (FLAS_LR_SCHEDULE + FLAS_ROUNDS) */
    int salvage_resume;                     /* Salvage=resume: a preempted job's checkpoint is continued by
                                               the next attempt, not merged as it is (Salvage=merge) */
    double prox;                            /* Prox= FedProx mu (FLAS_PROX; 0: off) */
    double max_update_norm, max_update_ratio; /* MaxUpdateNorm=, MaxUpdateRatio= (0: no bound; aggregation.md) */
    flas_sync_mode sync;                    /* Sync=none|begin|reservation|book */
    int begin_delay_s;                      /* BeginDelay= seconds (Sync=begin; default 10) */
    char reservation[FLAS_CONF_NAME_MAX];   /* Reservation= name; one %d in it = the round (Sync=reservation) */
    char signal[32];                        /* Signal= for sbatch --signal=B:<this> (default USR1@60) */
    int poll_min_s, poll_max_s;             /* PollInterval=, PollMax= (back-off bounds) */
    int64_t max_checkpoint_bytes;           /* MaxCheckpointBytes= (refuse larger downloads) */
    int command_timeout_s;                  /* CommandTimeout= seconds per remote command (default 120) */
    /* Speed-aware rounds (flas_coord_budget_steps): each site trains for about RoundBudget= seconds. */
    int round_budget_s;                     /* RoundBudget= seconds of training per round (0: off) */
    int64_t min_steps;                       /* MinSteps= fewer steps in the budget: a slow site (0: none) */
    int drop_slow_sites;                    /* DropSlowSites=yes: slow sites sit out the round */
    int64_t first_steps;                      /* FirstSteps= steps of a site with no measured rate (0: script's) */
    /* Compressed exchange (flas/update.h). */
    flas_update_enc update_enc;             /* UpdateEncoding= what the sites publish (FLAS_UPDATE of the
                                               jobs; default full) */
    int update_block;                       /* UpdateBlock= int8 values per scale, both directions (128) */
    /* DP-FedAvg at the aggregator (flas/dp.h, docs/aggregation.md): DpClip= turns it on (or "inf");
     * the noise multiplier is DpNoise=, or derived from DpEpsilon= over Rounds= at DpDelta= */
    double dp_clip;                         /* DpClip= C (0: off) */
    double dp_noise;                        /* DpNoise= sigma (or the one DpEpsilon= needs) */
    double dp_epsilon;                      /* DpEpsilon= target over the whole run (0: none) */
    double dp_delta;                        /* DpDelta= (default 1e-6) */
    flas_update_enc global_enc;             /* GlobalEncoding= how the next global travels to a site that
                                               holds the previous one (default full) */
    int n_sites;
    flas_coord_site site[FLAS_COORD_MAX_SITES];
} flas_coord_conf;

/* The merge settings of the description: Strategy='s defaults (flas_agg_defaults) with ServerLR=,
 * ServerMomentum=, ServerBeta1=, ServerBeta2=, ServerTau=, MaxUpdateNorm= and MaxUpdateRatio= laid over
 * them. -1 for an unknown strategy. (The round adds the policy, the sites and DP.) */
struct flas_agg_options;
int flas_coord_agg_options(const flas_coord_conf *c, struct flas_agg_options *o);

/* Parses the description at path (strict Key=Value, errors as "file:line: reason"). */
int flas_coord_conf_load(const char *path, flas_coord_conf *c, char *err, size_t errlen);
int flas_coord_conf_parse(const char *path, const char *text, flas_coord_conf *c, char *err, size_t errlen);

/* The reservation of a round: Reservation= with its %d (if any) replaced by the round; a name without
 * %d is one repeating reservation (Flags=DAILY...) used by every round. -1 if it does not fit. */
int flas_coord_reservation_name(const flas_coord_conf *c, long round, char *buf, size_t len);

/* The wall-clock limit of a remote command run now (now_unix) in a round that started at started_unix:
 * CommandTimeout=, cut to the seconds left until RoundDeadline=, but never under
 * FLAS_COORD_MIN_COMMAND_S (nor over CommandTimeout=). */
double flas_coord_command_limit(const flas_coord_conf *c, int64_t started_unix, int64_t now_unix);

/* The job to adopt from `squeue -h -o '%i %u'` lines (id, owner): the first one owned by user, whose
 * name the coordinator's own job would have; another user's job of that name is never adopted.
 * Returns its id, 0 if none; *others (may be NULL) gets the number of jobs of other users listed. */
long flas_coord_pick_own_job(const char *squeue_out, const char *user, int *others);

/* Speed-aware rounds: the steps each site trains this round, from its measured rate (steps per second
 * of training, 0: not measured yet) and RoundBudget=, so that every site trains about as long:
 * steps = floor(RoundBudget x rate), at least 1 (at most 2^40, flas-train's bound). A site with no rate
 * gets FirstSteps=. steps[i] = 0: the coordinator passes nothing and the site's script decides (budget
 * off, or no rate and no FirstSteps=). slow[i] = 1 when a measured site cannot reach MinSteps= in the
 * budget (with DropSlowSites=yes it sits out the round). Returns the number of slow sites. */
int flas_coord_budget_steps(const flas_coord_conf *c, const double *rate, long *steps, int *slow);

/* A job's submit, start and end times from the reply of
 *   TZ=UTC SLURM_TIME_FORMAT=%s squeue -h -t all -j ID -o '%V %S %e'
 * (epoch seconds, so neither side's time zone matters). Exactly one line of three fields; the start and
 * end may be Unknown/N/A/None (then 0: the job never started, or has not ended). Anything else (more
 * fields, signs, letters, times before 2001 or after 5138, start before submit, end before start) is
 * refused: 0, or -1 with the reason in why. */
int flas_coord_parse_job_times(const char *reply, int64_t *submit, int64_t *start, int64_t *end, char *why,
                               size_t whylen);

/* ---- the journal: where a (re)started coordinator picks up -------------------------------------- */

typedef enum {
    FLAS_SITE_PENDING = 0, /* global of this round not yet staged there */
    FLAS_SITE_STAGED,      /* global staged and verified; job not submitted */
    FLAS_SITE_SUBMITTING,  /* sbatch issued (job name known, id maybe not) */
    FLAS_SITE_SUBMITTED,   /* job id known; polling */
    FLAS_SITE_FINISHED,    /* job ended in a state whose checkpoint is to be fetched */
    FLAS_SITE_FETCHED,     /* local checkpoint fetched and verified */
    FLAS_SITE_DROPPED      /* no update from this site this round (reason in note) */
} flas_site_state;

typedef enum {
    FLAS_PHASE_STAGING = 0,
    FLAS_PHASE_TRAINING,
    FLAS_PHASE_AGGREGATING,
    FLAS_PHASE_DONE,
    FLAS_PHASE_FAILED
} flas_round_phase;

typedef struct flas_journal_site {
    flas_site_state state;
    int attempt;                             /* submissions this round */
    long job;                                /* Slurm job id at the site, 0 if none */
    char job_state[32];                      /* last state seen (COMPLETED, TIMEOUT, ...) */
    char local_sha256[FLAS_SHA256_HEX_LEN + 1];
    int64_t local_bytes;                     /* bytes down (the local checkpoint fetched) */
    double seconds_fetch;                    /* ... and the seconds its transfer took */
    int64_t bytes_up;                        /* the global model staged there (its size) */
    double seconds_up;                       /* seconds of the upload (0 when already there) */
    int64_t submit_unix, start_unix, end_unix; /* the job's times from Slurm (0: unknown) */
    double train_seconds;                    /* /metrics train_seconds of the fetched checkpoint */
    int64_t steps, tokens;                   /* its meta step and tokens_trained */
    long steps_assigned;                     /* FLAS_STEPS given to this round's job (0: the script's) */
    char staged_via[8];                      /* how the model reached the site: "full", "delta" ("": not yet) */
    flas_book_state booked;                  /* Sync=book: this round's reservation at the site */
    char resume[FLAS_CONF_PATH_MAX + 64];    /* the checkpoint at the site the next attempt continues (from an
                                                interrupted attempt); "": it starts from the global model */
    double rate;                             /* measured steps per training second, kept across rounds
                                                (the last round that measured it; 0: not yet) */
    char note[256];
} flas_journal_site;

typedef struct flas_journal {
    char federation[FLAS_CONF_NAME_MAX];
    char run_id[16];                         /* random, per WorkDir: makes job names unique to this run */
    long round;                              /* the round being run (its global exists) */
    flas_round_phase phase;
    char global_sha256[FLAS_SHA256_HEX_LEN + 1];
    /* sha256 of the model the sites train from this round: the global itself, or under a compressed
     * downlink (GlobalEncoding=) its params-only copy rebuilt from the previous one plus the update
     * (flas_coord_site_model_path); every site's update must name it as its base */
    char staged_sha256[FLAS_SHA256_HEX_LEN + 1];
    int64_t begin_unix;                      /* the round's common --begin time, 0 if none */
    int64_t round_started_unix;              /* for the deadline */
    double round_started;                    /* the same with sub-second precision (accounting) */
    char failure[512];
    /* Privacy spent by the current global (DP-FedAvg, flas/dp.h): rounds merged with DP, their RDP
     * sum rho, and epsilon at DpDelta= (+inf after a round without noise) */
    int64_t dp_rounds;
    double dp_rho, dp_epsilon;
    int n_sites;
    char site_name[FLAS_COORD_MAX_SITES][FLAS_CONF_NAME_MAX];
    flas_journal_site site[FLAS_COORD_MAX_SITES];
} flas_journal;

int flas_journal_load(const char *path, flas_journal *j, char *err, size_t errlen);
int flas_journal_save(const char *path, const flas_journal *j, char *err, size_t errlen);
const char *flas_site_state_name(flas_site_state s);
const char *flas_round_phase_name(flas_round_phase p);

/* Runs rounds until Rounds are done or one fails; resumes from WorkDir/journal. 0 when all rounds are
 * done, 1 when a round failed cleanly (journal says why), 2 for configuration errors, 3 when it stopped
 * because a site's SSH certificate no longer allows an action (before each round, and before every
 * action at a site: expired or expiring within CommandTimeout=, not yet valid, unreadable, not for
 * User=): the journal keeps the last transition made, jobs at the sites run on, and a run after renewal
 * resumes there. */
int flas_coord_run(const flas_coord_conf *c, char *err, size_t errlen);
/* The round history, WorkDir/rounds.tsv: a header, then one tab-separated line per finished round: the
 * round's totals (critical path, and its phases: staging = the uploads' seconds (one site after
 * another), queue = the longest queue wait, training = the longest training, fetch = the downloads'
 * seconds, aggregation, other = the rest: job start-up, the common --begin, polling, checkpoint writes;
 * idle_fastest_s = last job end - first job end among the merged sites) and each site's figures
 * ("-": unknown). flas_coord_record_round records round j->round, replacing a line of that round if one
 * is there (a coordinator that crashed after recording a round records it again on resume: one line
 * stays) and dropping lines of later rounds; the file is rewritten atomically. critical_s: round start
 * to the new global written; aggregate_s: flas_aggregate's seconds. */
int flas_coord_record_round(const char *path, const flas_journal *j, double critical_s, double aggregate_s,
                            char *err, size_t errlen);

/* Prints the journal: round, phase, each site's job and state, transfers, accounting, and the table of
 * finished rounds. */
int flas_coord_status(const flas_coord_conf *c, FILE *out, char *err, size_t errlen);

/* Paths inside WorkDir. */
int flas_coord_global_path(const flas_coord_conf *c, long round, char *buf, size_t len);
int flas_coord_local_path(const flas_coord_conf *c, long round, const char *site, char *buf, size_t len);
int flas_coord_round_dir(const flas_coord_conf *c, long round, char *buf, size_t len);
/* The model the sites train from in a round: the global itself (GlobalEncoding=full, or round 0), else
 * its params-only copy WorkDir/global/round-NNNNNN.staged.h5 = the previous one + the round's update
 * WorkDir/global/round-NNNNNN.delta.h5 (what a site that holds the previous one receives). */
int flas_coord_site_model_path(const flas_coord_conf *c, long round, char *buf, size_t len);
int flas_coord_delta_path(const flas_coord_conf *c, long round, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
