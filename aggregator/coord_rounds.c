/* The coordinator's rounds: a state machine over the journal. Every transition is saved before the
 * next action that depends on it, so a coordinator killed anywhere resumes without submitting a job
 * twice, aggregating twice, or losing a site's update:
 *
 *   staging      upload global_k to each site (verified, resumable), sidecar last
 *   training     submit (journal "submitting" + a unique job name first, so a job whose id was never
 *                recorded is found again by name), poll with back-off, map the final state:
 *                COMPLETED/TIMEOUT -> fetch; PREEMPTED/NODE_FAIL -> salvage (see salvage()) or
 *                resubmit before the deadline; BOOT_FAIL -> resubmit; FAILED/CANCELLED/OUT_OF_MEMORY/
 *                DEADLINE -> drop; fetch the published checkpoint (verified against the site's
 *                manifest). docs/operations.md maps every Slurm state.
 *   aggregating flas_aggregate(global_k, fetched locals) -> global_{k+1} (atomic; rerunning it after a
 *                crash rewrites the same file from the same inputs)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coord_internal.h"
#include "flas/atomic_file.h"
#include "flas/aggregate.h"
#include "flas/checkpoint.h"
#include "flas/staging.h"

/* Test hook: FLAS_COORDINATOR_CRASH_AT=EVENT[:N] kills the coordinator (SIGKILL, no clean-up) at the
 * N-th occurrence (default 1st) of EVENT, to prove that every phase resumes. */
static void crash_point(const char *event)
{
    static int seen;
    const char *spec = getenv("FLAS_COORDINATOR_CRASH_AT");
    if (!spec)
        return;
    size_t n = strcspn(spec, ":");
    if (strlen(event) != n || strncmp(spec, event, n))
        return;
    int want = spec[n] == ':' ? atoi(spec + n + 1) : 1;
    if (++seen == want) {
        fprintf(stderr, "flas-coordinator: test hook: crashing at '%s'\n", event);
        raise(SIGKILL);
    }
}

/* Records a transition. When the journal cannot be written (a full disk, say) the coordinator must not
 * act on the unsaved state: it would submit a job or aggregate a round that a restart does not know of.
 * So the first failure stops every further action; flas_coord_run then exits with the error. */
static int save(coord *k, const char *event)
{
    if (coord_stopped(k))
        return -1; /* after a halt too: what was decided since rests on actions that were refused */
    if (flas_journal_save(k->journal_path, &k->j, k->journal_err, sizeof k->journal_err)) {
        fprintf(stderr, "flas-coordinator: cannot save the journal: %s\n", k->journal_err);
        k->journal_broken = 1;
        return -1;
    }
    crash_point(event);
    return 0;
}

static double now_real(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

int flas_coord_budget_steps(const flas_coord_conf *c, const double *rate, long *steps, int *slow)
{
    int n_slow = 0;
    for (int i = 0; i < c->n_sites; i++) {
        steps[i] = 0;
        slow[i] = 0;
        if (c->round_budget_s <= 0)
            continue; /* off: every site trains what its script says */
        if (!(rate[i] > 0) || !isfinite(rate[i])) {
            steps[i] = (long)c->first_steps; /* not measured yet */
            continue;
        }
        /* the steps that take the budget at this site's rate; every site then ends about together */
        double x = floor((double)c->round_budget_s * rate[i]);
        steps[i] = x < 1 ? 1 : x > (double)(1L << 40) ? 1L << 40 : (long)x;
        if (c->min_steps > 0 && x < (double)c->min_steps) {
            slow[i] = 1;
            n_slow++;
        }
    }
    return n_slow;
}

/* A new round's sites: everything of the last round forgotten but each site's measured rate, from which
 * the round's steps per site follow (speed-aware rounds). */
static void reset_sites(coord *k)
{
    double rate[FLAS_COORD_MAX_SITES];
    long steps[FLAS_COORD_MAX_SITES];
    int slow[FLAS_COORD_MAX_SITES];
    for (int i = 0; i < k->j.n_sites; i++) {
        rate[i] = k->j.site[i].rate;
        memset(&k->j.site[i], 0, sizeof k->j.site[i]);
        k->j.site[i].state = FLAS_SITE_PENDING;
        k->j.site[i].rate = rate[i];
    }
    k->j.begin_unix = 0;
    k->j.round_started = now_real();
    k->j.round_started_unix = (int64_t)k->j.round_started;
    memset(&k->stats, 0, sizeof k->stats);
    flas_coord_budget_steps(k->c, rate, steps, slow);
    for (int i = 0; i < k->j.n_sites; i++) {
        k->j.site[i].steps_assigned = steps[i];
        if (!slow[i])
            continue;
        if (k->c->drop_slow_sites) {
            /* it stays out while its rate (the last one measured) stays under MinSteps= in the budget */
            k->j.site[i].state = FLAS_SITE_DROPPED;
            coord_note(k, i, "dropped this round: too slow, %.3g steps/s reaches %ld of MinSteps=%lld in "
                       "RoundBudget=%d s", rate[i], steps[i], (long long)k->c->min_steps, k->c->round_budget_s);
        } else {
            coord_note(k, i, "slow: %.3g steps/s reaches %ld of MinSteps=%lld in RoundBudget=%d s", rate[i],
                       steps[i], (long long)k->c->min_steps, k->c->round_budget_s);
        }
    }
}

/* A new journal: round 0 starts from InitialGlobal, copied into WorkDir so the run is self-contained. */
static int init_journal(coord *k, char *err, size_t errlen)
{
    const flas_coord_conf *c = k->c;
    char dir[FLAS_CONF_PATH_MAX + 32], g0[FLAS_CONF_PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/global", c->work_dir);
    if (flas_mkdir_p(dir, 0755)) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    flas_coord_global_path(c, 0, g0, sizeof g0);
    if (flas_atomic_copy(c->initial_global, g0, err, errlen))
        return -1;
    memset(&k->j, 0, sizeof k->j);
    snprintf(k->j.federation, sizeof k->j.federation, "%s", c->federation);
    unsigned char rnd[4];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
        if (fd >= 0)
            close(fd);
        snprintf(err, errlen, "/dev/urandom: cannot read a run id");
        return -1;
    }
    close(fd);
    snprintf(k->j.run_id, sizeof k->j.run_id, "%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3]);
    if (flas_sha256_file(g0, k->j.global_sha256, NULL, err, errlen))
        return -1;
    snprintf(k->j.staged_sha256, sizeof k->j.staged_sha256, "%s", k->j.global_sha256); /* round 0: the same file */
    k->j.n_sites = c->n_sites;
    for (int i = 0; i < c->n_sites; i++)
        snprintf(k->j.site_name[i], sizeof k->j.site_name[i], "%s", c->site[i].name);
    reset_sites(k);
    k->j.phase = FLAS_PHASE_STAGING;
    return save(k, "init");
}

static int journal_matches_conf(const coord *k, char *err, size_t errlen)
{
    if (strcmp(k->j.federation, k->c->federation) || k->j.n_sites != k->c->n_sites) {
        snprintf(err, errlen, "%s belongs to another federation or site list than the description", k->journal_path);
        return -1;
    }
    for (int i = 0; i < k->j.n_sites; i++)
        if (strcmp(k->j.site_name[i], k->c->site[i].name)) {
            snprintf(err, errlen, "%s: site %d is '%s' in the journal but '%s' in the description", k->journal_path, i,
                     k->j.site_name[i], k->c->site[i].name);
            return -1;
        }
    return 0;
}

static int past_deadline(const coord *k) { return time(NULL) > k->j.round_started_unix + k->c->deadline_s; }

static int count(const coord *k, flas_site_state st)
{
    int n = 0;
    for (int i = 0; i < k->j.n_sites; i++)
        n += k->j.site[i].state == st;
    return n;
}

static void drop(coord *k, int i, const char *why)
{
    k->j.site[i].state = FLAS_SITE_DROPPED;
    if (why)
        coord_note(k, i, "dropped this round: %s", why);
}

/* One pass over the sites in the staging phase; 1 when every site is staged or dropped. */
static int step_staging(coord *k)
{
    for (int i = 0; i < k->j.n_sites && !coord_stopped(k); i++) {
        if (k->j.site[i].state != FLAS_SITE_PENDING)
            continue;
        if (coord_stage_global(k, i) == 0) {
            k->j.site[i].state = FLAS_SITE_STAGED;
            k->j.site[i].note[0] = '\0';
            save(k, "staged");
        } else if (past_deadline(k)) {
            drop(k, i, "the global model could not be staged before the deadline");
            save(k, "dropped");
        }
    }
    return coord_stopped(k) || count(k, FLAS_SITE_PENDING) == 0;
}

static int is_state(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return 1;
    return 0;
}

coord_job_action coord_state_action(const char *state)
{
    /* UNKNOWN: purged from the controller already; its manifest tells what happened */
    static const char *const fetch[] = {"COMPLETED", "TIMEOUT", "UNKNOWN", NULL};
    static const char *const salvage[] = {"PREEMPTED", "NODE_FAIL", NULL};
    static const char *const lost[] = {"FAILED", "CANCELLED", "OUT_OF_MEMORY", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
                                       NULL};
    if (is_state(state, fetch))
        return COORD_JOB_FETCH;
    if (is_state(state, salvage))
        return COORD_JOB_SALVAGE;
    if (!strcmp(state, "BOOT_FAIL")) /* never ran: nothing to salvage */
        return COORD_JOB_RETRY;
    if (is_state(state, lost))
        return COORD_JOB_LOST;
    return COORD_JOB_WAIT; /* PENDING, RUNNING, COMPLETING, SUSPENDED, REQUEUED, ... and any state to come */
}

/* The figures of a fetched local checkpoint for the accounting and the next round's rate: its training
 * seconds (/metrics), steps and tokens (meta). The file is the site's, not yet validated by the
 * aggregator: the reader's gate applies, and values out of range count as unknown (0). */
static void local_figures(coord *k, int i)
{
    char path[FLAS_CONF_PATH_MAX + 128], err[512];
    flas_journal_site *s = &k->j.site[i];
    s->train_seconds = 0;
    s->steps = s->tokens = 0;
    flas_coord_local_path(k->c, k->j.round, k->c->site[i].name, path, sizeof path);
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    if (!r) {
        fprintf(stderr, "flas-coordinator: round %ld: %s: no training figures: %s\n", k->j.round, k->c->site[i].name,
                err);
        return;
    }
    const flas_ckpt_meta *m = flas_ckpt_meta_of(r);
    flas_ckpt_metrics mt;
    if (m->step >= 0 && m->step <= (1LL << 40))
        s->steps = m->step;
    if (m->tokens_trained >= 0)
        s->tokens = m->tokens_trained;
    if (flas_ckpt_get_metrics(r, &mt, err, sizeof err) == 0 && isfinite(mt.train_seconds) && mt.train_seconds > 0 &&
        mt.train_seconds < 1e9)
        s->train_seconds = mt.train_seconds;
    else
        fprintf(stderr, "flas-coordinator: round %ld: %s: the checkpoint has no training seconds\n", k->j.round,
                k->c->site[i].name);
    flas_ckpt_close(r);
}

/* What is left of site i's interrupted job (PREEMPTED, NODE_FAIL). A preempted job had GraceTime to
 * write its checkpoint, and its epilog published it: with Salvage=merge (the default) that is the site's
 * update for the round, merged as a TIMEOUT's would be, so the other sites need not wait for the
 * preemptor to leave. Otherwise (Salvage=resume, or nothing published: a failed node's epilog may never
 * run) the next attempt continues the newest checkpoint in the job's directory, if it left one, rather
 * than starting again from the global model. Returns 1 when the site's update is to be fetched, 0 when a
 * new attempt is to be submitted, -1 when the site could not be asked (ask again on the next pass). */
static int salvage(coord *k, int i, const char *state)
{
    flas_journal_site *s = &k->j.site[i];
    char remote[FLAS_CONF_PATH_MAX + 256], sha[FLAS_SHA256_HEX_LEN + 1];
    int64_t size = 0;
    if (!k->c->salvage_resume && coord_read_manifest(k, i, s->job, remote, sizeof remote, &size, sha) == 0) {
        fprintf(stderr, "flas-coordinator: round %ld: %s: job %ld %s; merging the checkpoint it published\n",
                k->j.round, k->c->site[i].name, s->job, state);
        return 1;
    }
    char path[sizeof s->resume];
    int found = coord_job_checkpoint(k, i, s->job, path, sizeof path);
    if (found < 0)
        return -1;
    if (found) {
        snprintf(s->resume, sizeof s->resume, "%s", path);
        coord_note(k, i, "job %ld %s; attempt %d continues its checkpoint %s", s->job, state, s->attempt + 1, path);
    } else {
        coord_note(k, i, "job %ld %s without a checkpoint; attempt %d starts from the global model", s->job, state,
                   s->attempt + 1);
    }
    return 0;
}

/* Sync=book: a site whose job is over gives its reservation back (the others' jobs may still run in
 * theirs). A deletion that fails is tried again on the next pass; at the end of the training phase
 * once more, and then the reservation ends by itself at its Duration. */
static void release_bookings(coord *k)
{
    for (int i = 0; i < k->j.n_sites && !coord_stopped(k); i++) {
        flas_journal_site *s = &k->j.site[i];
        if (s->booked == FLAS_BOOK_HELD && (s->state == FLAS_SITE_FINISHED || s->state == FLAS_SITE_FETCHED ||
                                            s->state == FLAS_SITE_DROPPED) && coord_unbook(k, i) == 0) {
            s->booked = FLAS_BOOK_RELEASED;
            save(k, "released");
        }
    }
}

/* One polling pass of the training phase; returns 1 if anything changed. */
static int step_training(coord *k)
{
    int changed = 0;
    if ((k->c->sync == FLAS_SYNC_BEGIN || k->c->sync == FLAS_SYNC_BOOK) && k->j.begin_unix == 0) {
        k->j.begin_unix = time(NULL) + k->c->begin_delay_s; /* one start time for every site */
        if (save(k, "begin"))
            return 1;
    }
    for (int i = 0; i < k->j.n_sites && !coord_stopped(k); i++) {
        flas_journal_site *s = &k->j.site[i];
        if (s->state == FLAS_SITE_STAGED) {
            if (past_deadline(k)) {
                drop(k, i, "deadline passed before the job could be submitted");
                save(k, "dropped");
                continue;
            }
            s->attempt++;
            s->state = FLAS_SITE_SUBMITTING; /* saved before sbatch: see coord_find_job on resume */
            if (save(k, "submitting"))
                return 1; /* never sbatch a job the journal does not announce */
        }
        if (s->state == FLAS_SITE_SUBMITTING && k->c->sync == FLAS_SYNC_BOOK && s->booked == FLAS_BOOK_NONE) {
            /* booked (and saved) before the first sbatch, so that a crash never leaves a reservation the
             * journal does not know of: a booking repeated after one finds its own name */
            int b = coord_book(k, i);
            if (b < 0) {
                if (past_deadline(k)) {
                    drop(k, i, "could not book a reservation before the deadline");
                    save(k, "dropped");
                }
                continue;
            }
            s->booked = (flas_book_state)b;
            if (save(k, "booked"))
                return 1;
        }
        if (s->state == FLAS_SITE_SUBMITTING) {
            long id = coord_find_job(k, i, s->attempt); /* submitted before a crash? */
            if (id == 0) {
                id = coord_submit(k, i);
                crash_point("sbatch-returned");
            }
            if (id > 0) {
                s->job = id;
                s->state = FLAS_SITE_SUBMITTED;
                snprintf(s->job_state, sizeof s->job_state, "SUBMITTED");
                s->note[0] = '\0';
                fprintf(stderr, "flas-coordinator: round %ld: %s: job %ld submitted (attempt %d)\n", k->j.round,
                        k->c->site[i].name, id, s->attempt);
                save(k, "submitted");
                changed = 1;
            } else if (past_deadline(k)) {
                drop(k, i, "could not submit before the deadline");
                save(k, "dropped");
            }
            continue;
        }
        if (s->state != FLAS_SITE_SUBMITTED)
            continue;
        char state[32];
        if (coord_job_state(k, i, s->job, state, sizeof state))
            continue; /* SSH trouble: try again next pass */
        if (strcmp(state, s->job_state)) {
            snprintf(s->job_state, sizeof s->job_state, "%s", state);
            fprintf(stderr, "flas-coordinator: round %ld: %s: job %ld %s\n", k->j.round, k->c->site[i].name, s->job,
                    state);
            changed = 1;
            save(k, "job-state");
        }
        coord_job_action act = coord_state_action(state);
        if (act == COORD_JOB_FETCH) {
            /* UNKNOWN: its times are lost (the accounting shows them unknown) */
            if (strcmp(state, "UNKNOWN"))
                coord_job_times(k, i, s->job);
            s->state = FLAS_SITE_FINISHED;
            save(k, "finished");
        } else if (act == COORD_JOB_SALVAGE || act == COORD_JOB_RETRY) {
            int merge = act == COORD_JOB_SALVAGE ? salvage(k, i, state) : 0;
            if (merge < 0)
                continue; /* SSH trouble: salvage on the next pass */
            if (merge) {
                coord_job_times(k, i, s->job);
                s->state = FLAS_SITE_FINISHED; /* fetched below, as a completed job's */
                save(k, "finished");
            } else if (past_deadline(k)) {
                drop(k, i, "job was interrupted and the deadline has passed");
                save(k, "retry");
            } else {
                s->state = FLAS_SITE_STAGED; /* resubmitted next pass with attempt + 1 */
                save(k, "retry");
            }
        } else if (act == COORD_JOB_LOST) {
            char why[96];
            snprintf(why, sizeof why, "job %ld ended %s", s->job, state);
            drop(k, i, why);
            save(k, "dropped");
        } else if (past_deadline(k)) {
            coord_cancel(k, i, s->job);
            drop(k, i, "round deadline reached; job cancelled");
            save(k, "dropped");
        }
    }
    release_bookings(k);
    /* Fetch what finished. */
    for (int i = 0; i < k->j.n_sites && !coord_stopped(k); i++) {
        flas_journal_site *s = &k->j.site[i];
        if (s->state != FLAS_SITE_FINISHED)
            continue;
        char remote[FLAS_CONF_PATH_MAX + 256], sha[FLAS_SHA256_HEX_LEN + 1];
        int64_t size = 0;
        int m = coord_read_manifest(k, i, s->job, remote, sizeof remote, &size, sha);
        if (m == 0 && coord_fetch(k, i, remote, size, sha) == 0) {
            s->state = FLAS_SITE_FETCHED;
            s->note[0] = '\0';
            local_figures(k, i);
            changed = 1;
            save(k, "fetched");
        } else if (m > 0 || m == -2) {
            drop(k, i, NULL);
            changed = 1;
            save(k, "dropped");
        } else if (past_deadline(k)) {
            coord_cancel(k, i, s->job); /* in case it still runs (its state could not be read): it is over */
            drop(k, i, "the checkpoint could not be fetched before the deadline");
            save(k, "dropped");
        }
    }
    return changed;
}

static int training_done(const coord *k)
{
    return coord_stopped(k) || count(k, FLAS_SITE_FETCHED) + count(k, FLAS_SITE_DROPPED) == k->j.n_sites;
}

/* The losses flas-train stored in a local checkpoint (/metrics); NaN when absent. */
static void local_losses(const char *path, double *train, double *valid)
{
    char err[512];
    *train = *valid = NAN;
    flas_ckpt_reader *r = flas_ckpt_open(path, MPI_COMM_NULL, err, sizeof err);
    flas_ckpt_metrics m;
    if (r && flas_ckpt_get_metrics(r, &m, err, sizeof err) == 0) {
        *train = m.train_loss;
        *valid = m.valid_loss;
    }
    if (r)
        flas_ckpt_close(r);
}

/* The aggregator's reason for refusing input `path`, for the one-line round summary: without the
 * input's path in front (the line names the site), ';' (it separates the sites) and control characters
 * replaced, at most 160 characters. */
static void short_reason(const char *reason, const char *path, char *buf, size_t len)
{
    size_t pl = strlen(path), o = 0;
    if (!strncmp(reason, path, pl) && !strncmp(reason + pl, ": ", 2))
        reason += pl + 2;
    size_t most = len - 1 < 160 ? len - 1 : 160;
    for (; *reason && o < most; reason++)
        buf[o++] = *reason == ';' ? ',' : (unsigned char)*reason < 0x20 ? ' ' : *reason;
    if (*reason && o >= 3)
        memcpy(buf + o - 3, "...", 3);
    buf[o] = '\0';
}

/* Round start to now (the new global just written). A journal of an older coordinator has whole seconds. */
static double round_critical(const coord *k)
{
    double t0 = k->j.round_started > 0 ? k->j.round_started : (double)k->j.round_started_unix;
    return now_real() - t0;
}

int flas_coord_agg_options(const flas_coord_conf *c, flas_agg_options *o)
{
    flas_agg_strategy strat;
    if (flas_agg_strategy_parse(c->strategy, &strat))
        return -1;
    flas_agg_defaults(o, strat);
    /* a key not given (< 0) leaves the strategy's default */
    if (c->server_lr >= 0)
        o->lr = c->server_lr;
    if (c->server_momentum >= 0)
        o->momentum = c->server_momentum;
    if (c->server_beta1 >= 0)
        o->beta1 = c->server_beta1;
    if (c->server_beta2 >= 0)
        o->beta2 = c->server_beta2;
    if (c->server_tau >= 0)
        o->tau = c->server_tau;
    o->max_update_norm = c->max_update_norm;
    o->max_update_ratio = c->max_update_ratio;
    return 0;
}

static int aggregate(coord *k, char *err, size_t errlen)
{
    const flas_coord_conf *c = k->c;
    char prev[FLAS_CONF_PATH_MAX + 64], next[FLAS_CONF_PATH_MAX + 64];
    char paths[FLAS_COORD_MAX_SITES][FLAS_CONF_PATH_MAX + 128];
    const char *inputs[FLAS_COORD_MAX_SITES], *sites[FLAS_COORD_MAX_SITES];
    int n = 0;
    flas_coord_global_path(c, k->j.round, prev, sizeof prev);
    flas_coord_global_path(c, k->j.round + 1, next, sizeof next);
    for (int i = 0; i < k->j.n_sites; i++)
        if (k->j.site[i].state == FLAS_SITE_FETCHED) {
            flas_coord_local_path(c, k->j.round, c->site[i].name, paths[n], sizeof paths[n]);
            inputs[n] = paths[n];
            sites[n] = c->site[i].name; /* where the file came from is the site's identity, not what it says */
            n++;
        }
    flas_agg_options o;
    if (flas_coord_agg_options(c, &o)) {
        snprintf(err, errlen, "unknown Strategy=%s", c->strategy);
        return FLAS_AGG_USAGE;
    }
    o.policy = FLAS_AGG_DROP_BAD;
    o.min_sites = c->min_sites;
    o.input_sites = sites;
    if (c->dp_clip > 0) { /* DP-FedAvg: equal weights, clipped updates, noise from a fresh seed */
        o.uniform = 1;
        o.dp_clip = c->dp_clip;
        o.dp_noise = c->dp_noise;
        o.dp_delta = c->dp_delta;
    }
    /* A compressed downlink: the sites trained from the params-only copy they hold (staged_sha256), and
     * the new global is written together with its update against that copy, whose decode it is. */
    char delta[FLAS_CONF_PATH_MAX + 64], base_model[FLAS_CONF_PATH_MAX + 64], next_model[FLAS_CONF_PATH_MAX + 64];
    if (c->global_enc != FLAS_UPDATE_FULL) {
        flas_coord_delta_path(c, k->j.round + 1, delta, sizeof delta);
        flas_coord_site_model_path(c, k->j.round, base_model, sizeof base_model);
        flas_coord_site_model_path(c, k->j.round + 1, next_model, sizeof next_model);
        if (strcmp(k->j.staged_sha256, k->j.global_sha256))
            o.base_sha256 = k->j.staged_sha256;
        o.emit_update = delta;
        o.emit_enc = c->global_enc;
        o.emit_block = c->update_block;
    }
    flas_agg_report rep;
    memset(&rep, 0, sizeof rep);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = flas_aggregate(prev, inputs, n, next, &o, &rep, err, errlen);
    if (rc == FLAS_AGG_OK && c->global_enc != FLAS_UPDATE_FULL) {
        /* What the sites will rebuild (flas-update apply), made here by the same code: its sha256 is
         * what they must get, and what their next updates name as their base. */
        flas_update_opts uo = {.enc = c->global_enc, .block = c->update_block};
        char why[1024];
        if (flas_update_apply_file(base_model, delta, next_model, &uo, why, sizeof why)) {
            snprintf(err, errlen, "the next global's compressed copy: %.900s", why);
            rc = FLAS_AGG_FAILED;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    k->stats.seconds_aggregate = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    if (rc == FLAS_AGG_OK) {
        printf("round %ld:", k->j.round);
        for (int i = 0, r = 0; i < k->j.n_sites; i++) {
            const flas_journal_site *s = &k->j.site[i];
            if (s->state == FLAS_SITE_FETCHED && r < rep.n_inputs) {
                const flas_agg_input_report *in = &rep.inputs[r];
                double train, valid;
                char why[168] = "";
                local_losses(inputs[r], &train, &valid);
                if (!in->used)
                    short_reason(in->reason[0] ? in->reason : "no reason given", inputs[r], why, sizeof why);
                r++;
                char queue[24] = "?", dpn[64] = "";
                if (c->dp_clip > 0 && in->update_norm >= 0)
                    snprintf(dpn, sizeof dpn, " update norm %.3g clipped x%.3g", in->update_norm, in->clip_factor);
                if (s->submit_unix > 0 && s->start_unix >= s->submit_unix)
                    snprintf(queue, sizeof queue, "%llds", (long long)(s->start_unix - s->submit_unix));
                printf(" %s job %ld %s loss %.3f valid %.3f, %lld tokens %lld steps (assigned %ld) up %.1f MB %.2fs "
                       "queue %s train %.2fs down %.1f MB weight %.3f%s fetch %.2fs%s%s%s;",
                       c->site[i].name, s->job, s->job_state, train, valid, (long long)in->tokens, (long long)s->steps,
                       s->steps_assigned, s->bytes_up / 1e6, s->seconds_up, queue, s->train_seconds,
                       s->local_bytes / 1e6, in->weight, dpn, s->seconds_fetch, in->used ? "" : " (refused by the aggregator: ",
                       why, in->used ? "" : ")");
            } else {
                printf(" %s dropped (%s);", c->site[i].name, s->note);
            }
        }
        printf(" staged %.1f MB in %.2fs; %s aggregation %.2fs; critical path %.2fs -> global round %ld",
               k->stats.bytes_staged / 1e6, k->stats.seconds_stage, c->strategy, k->stats.seconds_aggregate,
               round_critical(k), k->j.round + 1);
        if (c->dp_clip > 0) {
            k->j.dp_rounds = rep.dp_rounds;
            k->j.dp_rho = rep.dp_rho;
            k->j.dp_epsilon = rep.dp_epsilon;
            printf("; DP clip %g noise %g: privacy spent epsilon %.4g at delta %g over %lld rounds", c->dp_clip,
                   c->dp_noise, rep.dp_epsilon, rep.dp_delta, (long long)rep.dp_rounds);
        }
        printf("\n");
        fflush(stdout);
    }
    flas_agg_report_free(&rep);
    return rc;
}

int flas_coord_run(const flas_coord_conf *c, char *err, size_t errlen)
{
    static coord k; /* large (journal + sessions): not on the stack */
    memset(&k, 0, sizeof k);
    k.c = c;
    snprintf(k.journal_path, sizeof k.journal_path, "%s/journal", c->work_dir);
    if (flas_mkdir_p(c->work_dir, 0755)) {
        snprintf(err, errlen, "%s: %s", c->work_dir, strerror(errno));
        return 2;
    }
    /* One coordinator per WorkDir: two would both act on one journal. The lock goes with the process. */
    char lock[FLAS_CONF_PATH_MAX + 16];
    snprintf(lock, sizeof lock, "%s/lock", c->work_dir);
    int lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB)) {
        snprintf(err, errlen, "%s: %s", lock,
                 lock_fd >= 0 && errno == EWOULDBLOCK ? "another flas-coordinator runs this federation" : strerror(errno));
        if (lock_fd >= 0)
            close(lock_fd);
        return 2;
    }
    int resume = access(k.journal_path, F_OK) == 0;
    if (resume ? flas_journal_load(k.journal_path, &k.j, err, errlen) || journal_matches_conf(&k, err, errlen)
               : init_journal(&k, err, errlen)) {
        close(lock_fd);
        return 2;
    }
    if (resume)
        fprintf(stderr, "flas-coordinator: resuming round %ld (%s)\n", k.j.round, flas_round_phase_name(k.j.phase));
    int rc = 0;
    while (rc == 0 && k.j.phase != FLAS_PHASE_DONE && !coord_stopped(&k)) {
        if (k.j.phase == FLAS_PHASE_FAILED) {
            snprintf(err, errlen, "round %ld failed: %s", k.j.round, k.j.failure);
            rc = 1;
            break;
        }
        if (k.j.round >= c->rounds) {
            k.j.phase = FLAS_PHASE_DONE;
            save(&k, "done");
            break;
        }
        /* Before a round (or the rest of one, on resume) does anything at a site: every site it still
         * needs must hold a certificate good for now (coord_cert_ok); else stop, journal as it is. */
        if (k.j.phase == FLAS_PHASE_STAGING || k.j.phase == FLAS_PHASE_TRAINING)
            for (int i = 0; i < k.j.n_sites && !k.halted; i++)
                if (k.j.site[i].state != FLAS_SITE_DROPPED && k.j.site[i].state != FLAS_SITE_FETCHED)
                    coord_cert_ok(&k, i, 1);
        if (k.halted)
            break;
        char dir[FLAS_CONF_PATH_MAX + 32];
        flas_coord_round_dir(c, k.j.round, dir, sizeof dir);
        flas_mkdir_p(dir, 0755);
        if (k.j.phase == FLAS_PHASE_STAGING) {
            int wait = c->poll_min_s;
            while (!step_staging(&k)) {
                sleep((unsigned)wait);
                wait = wait * 2 > c->poll_max_s ? c->poll_max_s : wait * 2;
            }
            if (coord_stopped(&k))
                break;
            k.j.phase = FLAS_PHASE_TRAINING;
            save(&k, "training");
        }
        if (k.j.phase == FLAS_PHASE_TRAINING) {
            int wait = c->poll_min_s;
            while (!training_done(&k)) {
                if (step_training(&k))
                    wait = c->poll_min_s;
                else
                    wait = wait * 2 > c->poll_max_s ? c->poll_max_s : wait * 2;
                if (!training_done(&k))
                    sleep((unsigned)wait);
            }
            release_bookings(&k); /* a site dropped in the last pass */
            if (coord_stopped(&k))
                break;
            if (count(&k, FLAS_SITE_FETCHED) < c->min_sites) {
                snprintf(k.j.failure, sizeof k.j.failure, "only %d of %d sites delivered an update (MinSites=%d)",
                         count(&k, FLAS_SITE_FETCHED), k.j.n_sites, c->min_sites);
                k.j.phase = FLAS_PHASE_FAILED;
                save(&k, "failed");
                continue;
            }
            k.j.phase = FLAS_PHASE_AGGREGATING;
            save(&k, "aggregating");
        }
        if (k.j.phase == FLAS_PHASE_AGGREGATING) {
            char aerr[1024], next[FLAS_CONF_PATH_MAX + 64];
            int a = aggregate(&k, aerr, sizeof aerr);
            if (a != FLAS_AGG_OK) {
                snprintf(k.j.failure, sizeof k.j.failure, "aggregation refused: %.480s", aerr);
                k.j.phase = FLAS_PHASE_FAILED;
                save(&k, "failed");
                continue;
            }
            crash_point("aggregated");
            flas_coord_global_path(c, k.j.round + 1, next, sizeof next);
            char model[FLAS_CONF_PATH_MAX + 64];
            flas_coord_site_model_path(c, k.j.round + 1, model, sizeof model);
            if (flas_sha256_file(next, k.j.global_sha256, NULL, err, errlen) ||
                flas_sha256_file(model, k.j.staged_sha256, NULL, err, errlen)) {
                rc = 2;
                break;
            }
            /* The round's history line, then the journal that advances the round. A crash between the two
             * records the round again on resume, replacing its line: never twice, never lost. */
            char tsv[FLAS_CONF_PATH_MAX + 16], herr[1024];
            snprintf(tsv, sizeof tsv, "%s/rounds.tsv", c->work_dir);
            if (flas_coord_record_round(tsv, &k.j, round_critical(&k), k.stats.seconds_aggregate, herr, sizeof herr)) {
                snprintf(err, errlen, "cannot record round %ld: %.900s", k.j.round, herr);
                rc = 2;
                break;
            }
            coord_plot_rounds(c);
            crash_point("recorded");
            /* each merged site's rate, measured this round, sizes its next round */
            for (int i = 0; i < k.j.n_sites; i++) {
                flas_journal_site *s = &k.j.site[i];
                if (s->state == FLAS_SITE_FETCHED && s->steps > 0 && s->train_seconds > 0)
                    s->rate = (double)s->steps / s->train_seconds;
            }
            k.j.round++;
            if (k.j.round >= c->rounds)
                k.j.phase = FLAS_PHASE_DONE; /* the sites' records of the last round stay for `status` */
            else {
                reset_sites(&k);
                k.j.phase = FLAS_PHASE_STAGING;
            }
            save(&k, "next-round");
        }
    }
    for (int i = 0; i < FLAS_COORD_MAX_SITES; i++)
        flas_ssh_close(k.ssh[i]);
    if (k.journal_broken) {
        snprintf(err, errlen, "cannot save the journal (stopped before acting on unsaved state): %.900s", k.journal_err);
        rc = 2;
    } else if (k.halted) {
        /* the journal holds the last transition made before the halt: a re-run resumes there, finds the
         * jobs still running at the sites, and repeats nothing that was done */
        snprintf(err, errlen, "%s", k.halt_why);
        rc = 3;
    }
    close(lock_fd);
    if (rc == 0) {
        char g[FLAS_CONF_PATH_MAX + 64];
        flas_coord_global_path(c, k.j.round, g, sizeof g);
        printf("flas-coordinator: %ld rounds done; global model: %s\n", k.j.round, g);
    }
    return rc;
}

int flas_coord_status(const flas_coord_conf *c, FILE *out, char *err, size_t errlen)
{
    char path[FLAS_CONF_PATH_MAX + 16];
    flas_journal j;
    snprintf(path, sizeof path, "%s/journal", c->work_dir);
    if (flas_journal_load(path, &j, err, errlen))
        return -1;
    if (j.phase == FLAS_PHASE_DONE)
        fprintf(out, "federation %s: all %ld rounds done, global sha256 %.16s...; the last round:\n", j.federation,
                j.round, j.global_sha256);
    else
        fprintf(out, "federation %s: round %ld of %d, phase %s, global sha256 %.16s...\n", j.federation, j.round,
                c->rounds, flas_round_phase_name(j.phase), j.global_sha256);
    if (j.phase == FLAS_PHASE_FAILED)
        fprintf(out, "failure: %s\n", j.failure);
    if (j.dp_rounds > 0)
        fprintf(out, "privacy spent by the global: epsilon %.4g at delta %g over %lld DP rounds (RDP rho %.6g)\n",
                j.dp_epsilon, c->dp_delta, (long long)j.dp_rounds, j.dp_rho);
    fprintf(out, "%-12s %-11s %-8s %-7s %-12s %-12s %s\n", "site", "state", "job", "attempt", "job state", "fetched",
            "note");
    for (int i = 0; i < j.n_sites; i++) {
        const flas_journal_site *s = &j.site[i];
        char fetched[32] = "-";
        if (s->local_bytes > 0)
            snprintf(fetched, sizeof fetched, "%.1f MB %.1fs", s->local_bytes / 1e6, s->seconds_fetch);
        fprintf(out, "%-12s %-11s %-8ld %-7d %-12s %-12s %s\n", j.site_name[i], flas_site_state_name(s->state), s->job,
                s->attempt, s->job_state[0] ? s->job_state : "-", fetched, s->note);
    }
    /* the round's accounting so far */
    fprintf(out, "%-12s %-10s %-9s %-8s %-9s %-15s %-12s %-10s %s\n", "site", "up MB", "up s", "queue s", "train s",
            "steps (given)", "tokens", "steps/s", "down MB");
    for (int i = 0; i < j.n_sites; i++) {
        const flas_journal_site *s = &j.site[i];
        char queue[24] = "-", steps[40], rate[24] = "-";
        if (s->submit_unix > 0 && s->start_unix >= s->submit_unix)
            snprintf(queue, sizeof queue, "%lld", (long long)(s->start_unix - s->submit_unix));
        snprintf(steps, sizeof steps, "%lld (%s)", (long long)s->steps, "-");
        if (s->steps_assigned > 0)
            snprintf(steps, sizeof steps, "%lld (%ld)", (long long)s->steps, s->steps_assigned);
        if (s->rate > 0)
            snprintf(rate, sizeof rate, "%.2f", s->rate);
        fprintf(out, "%-12s %-10.2f %-9.2f %-8s %-9.2f %-15s %-12lld %-10s %.2f\n", j.site_name[i], s->bytes_up / 1e6,
                s->seconds_up, queue, s->train_seconds, steps, (long long)s->tokens, rate, s->local_bytes / 1e6);
    }
    coord_print_history(c, out);
    /* transfers in flight (or the last one), as the running coordinator last noted them */
    for (int i = 0; i < j.n_sites; i++) {
        char tpath[FLAS_CONF_PATH_MAX + 96], what[FLAS_CONF_PATH_MAX + 64];
        long long done, total, when;
        snprintf(tpath, sizeof tpath, "%s/transfer.%s", c->work_dir, j.site_name[i]);
        FILE *f = fopen(tpath, "r");
        if (!f)
            continue;
        if (fscanf(f, "%1087s %lld %lld %lld", what, &done, &total, &when) == 4 && total > 0)
            fprintf(out, "transfer %s: %s %.1f of %.1f MB (%.0f%%), %lld s ago\n", j.site_name[i], what, done / 1e6,
                    total / 1e6, 100.0 * (double)done / (double)total, (long long)(time(NULL) - when));
        fclose(f);
    }
    return 0;
}
