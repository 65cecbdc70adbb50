/* What the coordinator does at one site over SSH: stage the global model, submit the round's job,
 * ask Slurm for its state, fetch the published checkpoint. Every answer from the site is checked
 * before it is believed. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flas/atomic_file.h"
#include "coord_internal.h"
#include "flas/env.h"
#include "flas/error.h"
#include "flas/ssh_cert.h"
#include "flas/staging.h"

/* Progress of a transfer, for `flas-coordinator status` while it runs: WorkDir/transfer.<site>, one line
 * rewritten (not fsync'ed: it is a hint, not state) at most every 16 MiB. */
typedef struct {
    const coord *k;
    int site;
    int64_t last;
} progress_ctx;

static void note_progress(const char *what, int64_t done, int64_t total, void *vctx)
{
    progress_ctx *p = vctx;
    if (done != total && done - p->last < (16 << 20))
        return;
    p->last = done;
    char path[FLAS_CONF_PATH_MAX + 96], line[FLAS_CONF_PATH_MAX + 200], err[256];
    snprintf(path, sizeof path, "%s/transfer.%s", p->k->c->work_dir, p->k->c->site[p->site].name);
    int n = snprintf(line, sizeof line, "%s %lld %lld %lld\n", what, (long long)done, (long long)total,
                     (long long)time(NULL));
    if (n > 0 && (size_t)n < sizeof line)
        flas_atomic_write_file(path, line, (size_t)n, err, sizeof err); /* progress only: a failure is harmless */
}

double flas_coord_command_limit(const flas_coord_conf *c, int64_t started_unix, int64_t now_unix)
{
    double most = c->command_timeout_s > 0 ? c->command_timeout_s : 120;
    double limit = (double)(started_unix + c->deadline_s - now_unix);
    if (limit > most)
        limit = most;
    if (limit < FLAS_COORD_MIN_COMMAND_S)
        limit = most < FLAS_COORD_MIN_COMMAND_S ? most : FLAS_COORD_MIN_COMMAND_S;
    return limit;
}

int coord_cert_ok(coord *k, int i, int round_start)
{
    const flas_coord_site *site = &k->c->site[i];
    char path[sizeof site->ssh.certificate + 16], why[1024], at[48];
    static flas_ssh_cert cert;
    flas_ssh_cert_path(&site->ssh, path, sizeof path);
    if (!path[0])
        return 0;
    int64_t now = time(NULL);
    /* The margin: one remote command may run CommandTimeout= seconds; a certificate with less left is
     * treated as expired, so no action begins that a reconnection with it could not finish. A round
     * longer than what is left still begins: when the certificate ends mid-round the coordinator stops
     * at the next action (jobs keep running) and a re-run after renewal resumes there. */
    if (flas_ssh_cert_load(path, &cert, why, sizeof why)) {
        snprintf(k->halt_why, sizeof k->halt_why, "site %s: %.900s; fix or renew it and run flas-coordinator again",
                 site->name, why);
        k->halted = 1;
    } else if (flas_ssh_cert_check(&cert, FLAS_SSH_CERT_USER, site->ssh.user, now, k->c->command_timeout_s, why,
                                   sizeof why)) {
        snprintf(k->halt_why, sizeof k->halt_why, "certificate for site %s (%.700s) %.600s; renew it (e.g. log in "
                 "again through the site's 2FA) and run flas-coordinator again", site->name, path, why);
        k->halted = 1;
    }
    if (k->halted) {
        fprintf(stderr, "flas-coordinator: round %ld: stopping: %s\n", k->j.round, k->halt_why);
        return -1;
    }
    int64_t deadline = k->j.round_started_unix + k->c->deadline_s;
    if (round_start && cert.valid_before < (uint64_t)deadline) {
        flas_ssh_cert_time(cert.valid_before, at, sizeof at);
        fprintf(stderr, "flas-coordinator: round %ld: warning: certificate for site %s (%s) expires at %s, before "
                "the round's deadline: the coordinator will stop then (jobs keep running) until it is renewed\n",
                k->j.round, site->name, path, at);
    }
    return 0;
}

/* Site i's session, its exec limit set for a Slurm command run now: a hung sbatch or squeue at a site
 * (or a site that never answers) costs at most that, and never holds the round past its deadline. */
flas_ssh *coord_ssh(coord *k, int i)
{
    if (k->halted || coord_cert_ok(k, i, 0))
        return NULL; /* no action at any site after a halt */
    if (!k->ssh[i]) {
        char err[1024];
        k->ssh[i] = flas_ssh_connect(&k->c->site[i].ssh, err, sizeof err);
        if (!k->ssh[i])
            coord_note(k, i, "%s", err);
    }
    if (k->ssh[i])
        flas_ssh_set_exec_limit(k->ssh[i], flas_coord_command_limit(k->c, k->j.round_started_unix, time(NULL)));
    return k->ssh[i];
}

/* Site i's session for a transfer. The commands a transfer runs at the site hash the checkpoint, in
 * time proportional to its size (minutes for a large model): CommandTimeout= would cut them, so they
 * are bounded by the round's deadline alone (never under the minimum). */
static flas_ssh *coord_ssh_transfer(coord *k, int i)
{
    flas_ssh *s = coord_ssh(k, i);
    if (s) {
        double left = (double)(k->j.round_started_unix + k->c->deadline_s - time(NULL));
        flas_ssh_set_exec_limit(s, left > FLAS_COORD_MIN_COMMAND_S ? left : FLAS_COORD_MIN_COMMAND_S);
    }
    return s;
}

void coord_ssh_lost(coord *k, int i)
{
    flas_ssh_close(k->ssh[i]);
    k->ssh[i] = NULL;
}

/* Runs cmd at site i; -1 (and the session is dropped, to be reopened) when SSH itself failed or the
 * command ran past its limit: either way its answer is unknown, and the callers try again later. */
static int site_exec(coord *k, int i, const char *cmd, char *out, size_t outlen, int *status)
{
    char err[1024], errout[2048];
    flas_ssh *s = coord_ssh(k, i);
    if (!s)
        return -1;
    if (flas_ssh_exec(s, cmd, out, outlen, errout, sizeof errout, status, err, sizeof err)) {
        coord_note(k, i, "%s (%.40s%s)", err, cmd, strlen(cmd) > 40 ? "..." : "");
        coord_ssh_lost(k, i);
        return -1;
    }
    if (*status != 0)
        coord_note(k, i, "'%.60s...' exited %d: %.200s", cmd, *status, errout);
    return 0;
}

static void stage_dir(const coord *k, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", k->c->site[i].staging_root, k->c->federation);
}

/* Rebuilds round K's model at site i from round K-1's, which the site holds, and the round's update:
 * uploads the update next to the models (a name the plugin never takes for a round's model), runs
 * flas-update apply there with the sha256 the result must have, and removes the update. 0 when the
 * model is in place; -1 when anything failed (the caller then sends the whole model). */
static int stage_by_update(coord *k, int i, const char *dir, const char *remote, flas_xfer_stats *st)
{
    char prev_name[32], rname[32], base[FLAS_CONF_PATH_MAX + 200], rdelta[FLAS_CONF_PATH_MAX + 200];
    char delta[FLAS_CONF_PATH_MAX + 64], cmd[16384], err[1024], out[512], errout[1024];
    char q_tool[FLAS_CONF_PATH_MAX + 40], q_base[sizeof base + 8], q_delta[sizeof rdelta + 8], q_out[FLAS_CONF_PATH_MAX + 220];
    const flas_coord_site *site = &k->c->site[i];
    flas_stage_global_name(prev_name, sizeof prev_name, k->j.round - 1);
    flas_stage_round_dir(rname, sizeof rname, k->j.round);
    snprintf(base, sizeof base, "%s/%s/%s", dir, FLAS_STAGE_GLOBAL, prev_name);
    snprintf(rdelta, sizeof rdelta, "%s/%s/%s.delta.h5", dir, FLAS_STAGE_GLOBAL, rname);
    flas_coord_delta_path(k->c, k->j.round, delta, sizeof delta);
    char tool[FLAS_CONF_PATH_MAX + 32];
    snprintf(tool, sizeof tool, "%s%sflas-update", site->tools, site->tools[0] ? "/" : "");
    if (flas_shell_quote(tool, q_tool, sizeof q_tool) || flas_shell_quote(base, q_base, sizeof q_base) ||
        flas_shell_quote(rdelta, q_delta, sizeof q_delta) || flas_shell_quote(remote, q_out, sizeof q_out))
        return -1;
    flas_ssh *s = coord_ssh_transfer(k, i);
    if (!s)
        return -1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    flas_xfer_opts o = {0};
    progress_ctx pc = {k, i, 0};
    o.progress = note_progress;
    o.progress_ctx = &pc;
    if (flas_xfer_upload(s, delta, rdelta, &o, st, err, sizeof err)) {
        coord_note(k, i, "compressed global: %s", err);
        coord_ssh_lost(k, i);
        return -1;
    }
    int n = snprintf(cmd, sizeof cmd, "%s apply -q --base %s --update %s --output %s --expect-sha256 %s; rc=$?; "
                                      "rm -f -- %s; exit $rc", q_tool, q_base, q_delta, q_out, k->j.staged_sha256, q_delta);
    if (n < 0 || (size_t)n >= sizeof cmd)
        return -1;
    int status = -1;
    if (flas_ssh_exec(s, cmd, out, sizeof out, errout, sizeof errout, &status, err, sizeof err)) {
        coord_note(k, i, "compressed global: %s", err);
        coord_ssh_lost(k, i);
        return -1;
    }
    if (status != 0) {
        /* 3: rebuilt, but not the same bytes (another FLaS or HDF5 version at the site); 1: no or another
         * base there; 127: no flas-update. Each is a reason to send the whole model, not to fail. */
        coord_note(k, i, "compressed global not applied (exit %d: %.200s); sending the whole model", status,
                   errout[0] ? errout : out);
        return -1;
    }
    /* the staging time of this site: the upload and the rebuild at the site */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    return 0;
}

int coord_stage_global(coord *k, int i)
{
    char dir[FLAS_CONF_PATH_MAX + 80], name[32], remote[FLAS_CONF_PATH_MAX + 200], local[FLAS_CONF_PATH_MAX + 64];
    char side[FLAS_CONF_PATH_MAX + 220], text[160], err[1024];
    stage_dir(k, i, dir, sizeof dir);
    flas_stage_global_name(name, sizeof name, k->j.round);
    snprintf(remote, sizeof remote, "%s/%s/%s", dir, FLAS_STAGE_GLOBAL, name);
    snprintf(side, sizeof side, "%s%s", remote, FLAS_STAGE_SHA256_SUFFIX);
    /* the model the sites train from: the global, or its params-only copy under a compressed downlink */
    flas_coord_site_model_path(k->c, k->j.round, local, sizeof local);
    flas_xfer_stats st;
    memset(&st, 0, sizeof st);
    int via_update = k->c->global_enc != FLAS_UPDATE_FULL && k->j.round > 0 && stage_by_update(k, i, dir, remote, &st) == 0;
    flas_ssh *s = coord_ssh_transfer(k, i);
    if (!s)
        return -1;
    if (!via_update) {
        progress_ctx pc = {k, i, 0};
        flas_xfer_opts o = {0};
        o.progress = note_progress;
        o.progress_ctx = &pc;
        if (flas_xfer_upload(s, local, remote, &o, &st, err, sizeof err)) {
            coord_note(k, i, "%s", err);
            coord_ssh_lost(k, i);
            return -1;
        }
        if (st.resumed_at > 0)
            fprintf(stderr, "flas-coordinator: round %ld: %s: upload resumed after a cut at %lld verified bytes\n",
                    k->j.round, k->c->site[i].name, (long long)st.resumed_at);
        if (strcmp(st.sha256, k->j.staged_sha256)) {
            coord_note(k, i, "global model changed under the coordinator (sha256 %s, journal %s)", st.sha256,
                       k->j.staged_sha256);
            return -1;
        }
    }
    /* The sidecar comes last: the plugin treats a round as staged only once it exists, and verifies the
     * model against it (also one rebuilt from an update: flas-update checked it already). */
    snprintf(text, sizeof text, "%s  %s\n", k->j.staged_sha256, name);
    if (flas_xfer_put_text(s, side, text, err, sizeof err)) {
        coord_note(k, i, "%s", err);
        coord_ssh_lost(k, i);
        return -1;
    }
    k->stats.seconds_stage += st.seconds;
    k->stats.bytes_staged += st.sent;
    /* the accounting's "bytes up" is what the site received: the model, or the update it was rebuilt
     * from (also when the upload resumed a cut one or found it already there); the seconds are what
     * this round spent on it */
    k->j.site[i].bytes_up = st.size;
    k->j.site[i].seconds_up += st.seconds;
    snprintf(k->j.site[i].staged_via, sizeof k->j.site[i].staged_via, "%s", via_update ? "delta" : "full");
    if (via_update)
        fprintf(stderr, "flas-coordinator: round %ld: %s: global rebuilt at the site from a %s update of %.1f MB\n",
                k->j.round, k->c->site[i].name, flas_update_enc_name(k->c->global_enc), st.size / 1e6);
    return 0;
}

void coord_job_name(const coord *k, int i, int attempt, char *buf, size_t len)
{
    /* The run id makes a name unique to this coordinator's run: a restarted coordinator looking for the
     * job it may have submitted can never adopt another run's job of the same round and site. */
    snprintf(buf, len, "flas-%s-r%ld-%s-a%d-%s", k->c->federation, k->j.round, k->c->site[i].name, attempt,
             k->j.run_id);
}

static void append(char *cmd, size_t len, const char *fmt, const char *v)
{
    size_t n = strlen(cmd);
    snprintf(cmd + n, len - n, fmt, v);
}

void coord_booking_name(const coord *k, char *buf, size_t len)
{
    snprintf(buf, len, "flas-%s-r%ld-%s", k->c->federation, k->j.round, k->j.run_id);
}

int coord_parse_book_reply(int status, const char *out, char *why, size_t whylen)
{
    if (status == 0 && !strncmp(out, "Reservation created: ", 21))
        return FLAS_BOOK_HELD;
    /* the name holds this run's id: a reservation of that name is the one booked before a crash */
    if (strstr(out, "Duplicate reservation name") || strstr(out, "already exists"))
        return FLAS_BOOK_HELD;
    char line[200];
    snprintf(line, sizeof line, "%s", out);
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = ' ';
    /* slurmctld answers a user without the role "Invalid user id" (ESLURM_USER_ID_MISSING: the reservation
     * request is refused as if no operator had sent it), some paths "Access/permission denied" */
    if (strstr(out, "Access/permission denied") || strstr(out, "Invalid user id"))
        flas_fail(why, whylen, "no operator role here (scontrol: %s)", line);
    else
        flas_fail(why, whylen, "scontrol create reservation exited %d: %s", status, line);
    return FLAS_BOOK_NO_ROLE;
}

int coord_book(coord *k, int i)
{
    const flas_coord_site *s = &k->c->site[i];
    char name[FLAS_CONF_NAME_MAX + 64], user[160], cmd[1024], out[512], why[400];
    coord_booking_name(k, name, sizeof name);
    if (flas_shell_quote(s->ssh.user, user, sizeof user))
        return -1;
    /* Relative to the site's own clock, as --begin: time zones and skew do not matter. The reservation
     * lasts the job's time limit (else the round's deadline) past the start, plus a margin: Slurm starts
     * no job in a reservation that ends before the job's limit does. */
    long wait = (long)(k->j.begin_unix - time(NULL));
    long minutes = (s->time_min ? s->time_min : (k->c->deadline_s + 59) / 60) + 2;
    snprintf(cmd, sizeof cmd, "scontrol create reservation ReservationName=%s StartTime=now+%ld Duration=%ld "
             "Users=%s NodeCnt=%d", name, wait > 0 ? wait : 0, minutes, user, s->nodes ? s->nodes : 1);
    if (s->partition[0])
        append(cmd, sizeof cmd, " PartitionName=%s", s->partition);
    append(cmd, sizeof cmd, "%s", " 2>&1");
    int status = -1;
    if (site_exec(k, i, cmd, out, sizeof out, &status))
        return -1;
    int state = coord_parse_book_reply(status, out, why, sizeof why);
    if (state == FLAS_BOOK_NO_ROLE)
        coord_note(k, i, "cannot book reservation %s: %s; the jobs go %s", name, why,
                   k->c->reservation[0] ? "into the admins' reservation" : "with --begin");
    else
        fprintf(stderr, "flas-coordinator: round %ld: %s: booked reservation %s from %ld s from now, %ld min\n",
                k->j.round, s->name, name, wait > 0 ? wait : 0, minutes);
    return state;
}

int coord_unbook(coord *k, int i)
{
    char name[FLAS_CONF_NAME_MAX + 64], cmd[512], out[512];
    coord_booking_name(k, name, sizeof name);
    snprintf(cmd, sizeof cmd, "out=$(scontrol delete ReservationName=%s 2>&1); rc=$?; echo \"$rc $out\"", name);
    int status = -1;
    if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
        return -1;
    /* gone now, or already (it ended by itself, or a crash came after the delete) */
    if (!strncmp(out, "0 ", 2) || strstr(out, "Invalid reservation name") || strstr(out, "not found")) {
        fprintf(stderr, "flas-coordinator: round %ld: %s: reservation %s released\n", k->j.round,
                k->c->site[i].name, name);
        return 0;
    }
    coord_note(k, i, "cannot delete reservation %s: %.200s", name, out);
    return -1;
}

long coord_submit(coord *k, int i)
{
    const flas_coord_site *s = &k->c->site[i];
    char cmd[8192], name[200], num[64], q[FLAS_CONF_PATH_MAX + 8], out[256];
    coord_job_name(k, i, k->j.site[i].attempt, name, sizeof name);
    /* --no-requeue: retries are the coordinator's (a new attempt, within the deadline). A job that Slurm
     * requeued on its own after a node failure would run again beside the attempt that replaces it. */
    snprintf(cmd, sizeof cmd, "sbatch --parsable --no-requeue --federation=%s --federation-round=%ld --job-name=%s "
                              "--signal=B:%s --output=flas-%%x-%%j.out",
             k->c->federation, k->j.round, name, k->c->signal);
    flas_book_state booked = k->j.site[i].booked;
    int begin = k->c->sync == FLAS_SYNC_BEGIN || (k->c->sync == FLAS_SYNC_BOOK && booked != FLAS_BOOK_HELD &&
                                                   !k->c->reservation[0]);
    if (begin && k->j.begin_unix > 0) {
        /* relative, so the site's time zone does not matter */
        long wait = (long)(k->j.begin_unix - time(NULL));
        snprintf(num, sizeof num, "%ld", wait > 0 ? wait : 0);
        append(cmd, sizeof cmd, " --begin=now+%s", num);
    }
    if (k->c->sync == FLAS_SYNC_BOOK && booked == FLAS_BOOK_HELD) {
        char res[FLAS_CONF_NAME_MAX + 64];
        coord_booking_name(k, res, sizeof res);
        append(cmd, sizeof cmd, " --reservation=%s", res);
    } else if (k->c->sync == FLAS_SYNC_RESERVATION || (k->c->sync == FLAS_SYNC_BOOK && k->c->reservation[0])) {
        char res[FLAS_CONF_NAME_MAX + 24];
        if (flas_coord_reservation_name(k->c, k->j.round, res, sizeof res)) {
            coord_note(k, i, "reservation name of round %ld is too long", k->j.round);
            return -1;
        }
        append(cmd, sizeof cmd, " --reservation=%s", res);
    }
    if (s->partition[0])
        append(cmd, sizeof cmd, " --partition=%s", s->partition);
    if (s->account[0])
        append(cmd, sizeof cmd, " --account=%s", s->account);
#define INTOPT(v, flag)                                                                                        \
    if (v) {                                                                                                   \
        snprintf(num, sizeof num, "%d", v);                                                                    \
        append(cmd, sizeof cmd, " " flag "%s", num);                                                           \
    }
    INTOPT(s->nodes, "--nodes=")
    INTOPT(s->tasks, "--ntasks=")
    INTOPT(s->cpus_per_task, "--cpus-per-task=")
    INTOPT(s->time_min, "--time=")
#undef INTOPT
    /* What the coordinator asks of the job through its environment: speed-aware rounds' steps (flas-train
     * takes FLAS_STEPS as its --steps when the script gives none) and the federation's update encoding
     * (FLAS_UPDATE, FLAS_UPDATE_BLOCK). ALL keeps the rest of the submitting environment, as sbatch
     * does without --export; a script that sets these itself wins. */
    char exports[FLAS_CONF_PATH_MAX + 512] = "";
    if (k->j.site[i].steps_assigned > 0)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), "," FLAS_ENV_STEPS "=%ld",
                 k->j.site[i].steps_assigned);
    if (k->c->update_enc != FLAS_UPDATE_FULL)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), "," FLAS_ENV_UPDATE "=%s," FLAS_ENV_UPDATE_BLOCK "=%d",
                 flas_update_enc_name(k->c->update_enc), k->c->update_block);
    if (k->c->inner_keep)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), "," FLAS_ENV_INNER_STATE "=keep");
    if (k->c->lr_run)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), "," FLAS_ENV_LR_SCHEDULE "=run,"
                 FLAS_ENV_ROUNDS "=%d", k->c->rounds);
    if (k->c->prox > 0)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), "," FLAS_ENV_PROX "=%.9g", k->c->prox);
    /* An interrupted attempt's checkpoint, continued (flas-train.sbatch passes FLAS_RESUME as --resume;
     * flas-train refuses it unless it is this site's, of this round, from this round's global). The path
     * is the coordinator's own (staging root, job id, fixed name) and holds no comma or quote. */
    const char *resume = k->j.site[i].resume;
    if (resume[0] && strlen(exports) + strlen(resume) + 32 < sizeof exports)
        snprintf(exports + strlen(exports), sizeof exports - strlen(exports), ",FLAS_RESUME=%s", resume);
    if (exports[0])
        append(cmd, sizeof cmd, " --export=ALL%s", exports);
    flas_shell_quote(s->script, q, sizeof q);
    append(cmd, sizeof cmd, " %s", q);
    for (int a = 0; a < s->n_args; a++) {
        flas_shell_quote(s->args[a], q, sizeof q);
        append(cmd, sizeof cmd, " %s", q);
    }
    int status = -1;
    if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
        return -1;
    long id = coord_parse_sbatch_reply(out);
    if (id < 0) {
        coord_note(k, i, "sbatch answered '%.80s', not a job id", out);
        return -1;
    }
    return id;
}

long coord_parse_sbatch_reply(const char *out)
{
    char *end;
    long id = strtol(out, &end, 10); /* "123" or "123;cluster" */
    if (id <= 0 || (*end && *end != ';' && *end != '\n'))
        return -1;
    return id;
}

long flas_coord_pick_own_job(const char *out, const char *user, int *others)
{
    long found = 0;
    int n_others = 0;
    for (const char *line = out; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[256], owner[128], extra;
        long id;
        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            /* exactly "ID OWNER"; anything else (an array task "12_3", a third field) is not adopted */
            if (sscanf(buf, "%ld %127s %c", &id, owner, &extra) == 2 && id > 0) {
                if (strcmp(owner, user))
                    n_others++;
                else if (!found)
                    found = id;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    if (others)
        *others = n_others;
    return found;
}

long coord_find_job(coord *k, int i, int attempt)
{
    char cmd[512], name[200], user[160], out[4096];
    int status = -1, others = 0;
    const char *login = k->c->site[i].ssh.user;
    coord_job_name(k, i, attempt, name, sizeof name);
    /* A job name is no proof of who submitted it: anyone at the site may submit a job with the name this
     * run's would have. Only the login user's jobs are listed (-u), and the owner squeue reports is
     * checked as well, so another user's job is never adopted as this round's update. */
    if (flas_shell_quote(login, user, sizeof user))
        return -1;
    snprintf(cmd, sizeof cmd, "squeue -h -t all -u %s --name=%s -o '%%i %%u'", user, name);
    if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
        return -1;
    long id = flas_coord_pick_own_job(out, login, &others);
    if (others)
        coord_note(k, i, "ignoring %d job(s) named %s that %s does not own", others, name, login);
    return id;
}

int coord_job_state(coord *k, int i, long job, char *state, size_t len)
{
    char cmd[512], out[1024];
    int status = -1;
    /* squeue lists running jobs and finished ones for MinJobAge. Its exit status and message tell a job
     * the controller has forgotten ("Invalid job id": UNKNOWN, its manifest tells what happened) from a
     * controller that did not answer (try again: the job may well be running). */
    snprintf(cmd, sizeof cmd, "out=$(squeue -h -t all -j %ld -o %%T 2>&1); echo \"$? $out\"", job);
    if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
        return -1;
    char why[320];
    if (coord_parse_job_state(out, job, state, len, why, sizeof why)) {
        coord_note(k, i, "%s", why);
        return -1;
    }
    return 0;
}

int coord_parse_job_state(char *out, long job, char *state, size_t len, char *why, size_t whylen)
{
    char *end;
    long rc = strtol(out, &end, 10);
    if (end == out || *end != ' ')
        return flas_fail(why, whylen, "squeue answered '%.60s'", out);
    char *save = NULL;
    char *line = strtok_r(end + 1, "\n", &save);
    if (rc != 0) {
        if (line && strstr(line, "Invalid job id")) {
            snprintf(state, len, "UNKNOWN");
            return 0;
        }
        return flas_fail(why, whylen, "cannot read the state of job %ld: %.200s", job, line ? line : "squeue failed");
    }
    if (!line) {
        snprintf(state, len, "UNKNOWN");
        return 0;
    }
    for (char *c = line; *c; c++)
        if ((*c < 'A' || *c > 'Z') && *c != '_')
            return flas_fail(why, whylen, "unexpected job state '%.40s'", line);
    snprintf(state, len, "%s", line);
    return 0;
}

/* One time field of the squeue reply: epoch seconds, or Unknown/N/A/None (0). */
static int job_time(const char *f, int64_t *t)
{
    if (!strcmp(f, "Unknown") || !strcmp(f, "N/A") || !strcmp(f, "None")) {
        *t = 0;
        return 0;
    }
    /* 10 or 11 digits: 2001-09-09 to 5138; no sign, no leading zero, nothing else */
    size_t n = strlen(f);
    if (n < 10 || n > 11 || strspn(f, "0123456789") != n || f[0] == '0')
        return -1;
    *t = strtoll(f, NULL, 10);
    return 0;
}

int flas_coord_parse_job_times(const char *reply, int64_t *submit, int64_t *start, int64_t *end, char *why,
                               size_t whylen)
{
    char line[128], a[32], b[32], c[32];
    size_t n = strcspn(reply, "\n");
    /* one line (a trailing newline allowed), short, printable, exactly three space-separated fields */
    if (n >= sizeof line || (reply[n] && reply[n + 1]))
        return flas_fail(why, whylen, "expected one line of three times, got '%.60s'", reply);
    memcpy(line, reply, n);
    line[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] > 0x7e)
            return flas_fail(why, whylen, "control or non-ASCII characters in '%.60s'", line);
    /* split at single spaces by hand: sscanf's " " would take any run of white space */
    char *f[3] = {line, NULL, NULL}, *sp = line;
    for (int k = 1; k < 3 && sp; k++)
        if ((sp = strchr(sp, ' ')))
            *sp++ = '\0', f[k] = sp;
    if (!f[2] || strchr(f[2], ' ') || !*f[0] || !*f[1] || !*f[2] || strlen(f[0]) >= sizeof a ||
        strlen(f[1]) >= sizeof b || strlen(f[2]) >= sizeof c)
        return flas_fail(why, whylen, "expected 'SUBMIT START END', got '%.60s'", reply);
    snprintf(a, sizeof a, "%s", f[0]);
    snprintf(b, sizeof b, "%s", f[1]);
    snprintf(c, sizeof c, "%s", f[2]);
    int64_t t0, t1, t2;
    if (job_time(a, &t0) || t0 == 0 || job_time(b, &t1) || job_time(c, &t2))
        return flas_fail(why, whylen, "not epoch seconds: '%s %s %s'", a, b, c);
    if ((t1 && t1 < t0) || (t2 && (!t1 || t2 < t1)))
        return flas_fail(why, whylen, "times out of order (submit %lld, start %lld, end %lld)", (long long)t0,
                         (long long)t1, (long long)t2);
    *submit = t0;
    *start = t1;
    *end = t2;
    return 0;
}

int coord_job_times(coord *k, int i, long job)
{
    char cmd[256], out[256], why[160];
    int status = -1;
    /* Slurm prints times in the local time of the site; epoch seconds (%s under a stated TZ) compare
     * across sites and with the coordinator's clock without knowing any site's zone. */
    snprintf(cmd, sizeof cmd, "TZ=UTC SLURM_TIME_FORMAT=%%s squeue -h -t all -j %ld -o '%%V %%S %%e'", job);
    if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
        return -1;
    flas_journal_site *s = &k->j.site[i];
    if (flas_coord_parse_job_times(out, &s->submit_unix, &s->start_unix, &s->end_unix, why, sizeof why)) {
        coord_note(k, i, "job %ld times: %s", job, why);
        s->submit_unix = s->start_unix = s->end_unix = 0;
        return -1;
    }
    return 0;
}

int coord_cancel(coord *k, int i, long job)
{
    char cmd[128], out[128];
    int status = -1;
    snprintf(cmd, sizeof cmd, "scancel %ld", job);
    return site_exec(k, i, cmd, out, sizeof out, &status) || status ? -1 : 0;
}

/* A string field of the manifest that must be present; NULL otherwise. */
static const char *jstr(json_t *m, const char *key)
{
    json_t *v = json_object_get(m, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jint(json_t *m, const char *key, long long *out)
{
    json_t *v = json_object_get(m, key);
    if (!json_is_integer(v))
        return -1;
    *out = json_integer_value(v);
    return 0;
}

int coord_job_checkpoint(coord *k, int i, long job, char *path, size_t len)
{
    /* With compressed updates the job's full checkpoint is local-full.h5 (local.h5 is the delta); with a
     * kept inner state it lives in the site's private state directory, which the next round reads: an
     * attempt of the same round starts from the global then. */
    static const char *const names[] = {FLAS_STAGE_LOCAL_FULL_CHECKPOINT, FLAS_STAGE_LOCAL_CHECKPOINT};
    if (k->c->inner_keep)
        return 0;
    char dir[FLAS_CONF_PATH_MAX + 80];
    stage_dir(k, i, dir, sizeof dir);
    for (size_t n = k->c->update_enc == FLAS_UPDATE_FULL ? 1 : 0; n < 2; n++) {
        char p[FLAS_CONF_PATH_MAX + 160], q[2 * sizeof p + 8], cmd[3 * sizeof q + 64], out[64];
        int len_p = snprintf(p, sizeof p, "%s/%s/%ld/%s", dir, FLAS_STAGE_JOBS, job, names[n]);
        /* FLAS_RESUME travels in sbatch's comma-separated --export list */
        if (len_p < 0 || (size_t)len_p >= sizeof p || (size_t)len_p >= len || strpbrk(p, ",'\" ") ||
            flas_shell_quote(p, q, sizeof q))
            return 0;
        /* a plain file of the login account's: the job's own, not a link planted in its place */
        snprintf(cmd, sizeof cmd, "if test -f %s -a ! -L %s -a -O %s; then echo yes; else echo no; fi", q, q, q);
        int status = -1;
        if (site_exec(k, i, cmd, out, sizeof out, &status) || status != 0)
            return -1;
        if (!strcmp(out, "yes\n")) {
            snprintf(path, len, "%s", p);
            return 1;
        }
    }
    return 0;
}

/* Reads and checks the site's manifest for the job; fills the checkpoint's remote path, size, sha256.
 * Returns 0 (fetchable), 1 (the manifest says there is no checkpoint: reason in note), -1 (not there yet
 * or unreadable: retry), -2 (it contradicts what the coordinator knows: drop). */
int coord_read_manifest(coord *k, int i, long job, char *remote, size_t rlen, int64_t *size, char *sha)
{
    char dir[FLAS_CONF_PATH_MAX + 80], rdir[32], mname[FLAS_CONF_NAME_MAX + 64], path[FLAS_CONF_PATH_MAX + 300];
    char text[65536], err[1024];
    const char *site = k->c->site[i].name;
    stage_dir(k, i, dir, sizeof dir);
    flas_stage_round_dir(rdir, sizeof rdir, k->j.round);
    flas_stage_published_name(mname, sizeof mname, site, (unsigned long)job, FLAS_STAGE_MANIFEST_SUFFIX);
    snprintf(path, sizeof path, "%s/%s/%s/%s", dir, FLAS_STAGE_OUTBOX, rdir, mname);
    flas_ssh *s = coord_ssh(k, i);
    if (!s)
        return -1;
    if (flas_xfer_get_text(s, path, text, sizeof text - 1, err, sizeof err)) {
        coord_note(k, i, "manifest: %s", err);
        return -1;
    }
    char ck[NAME_MAX + 1], note[1024];
    int rc = coord_parse_manifest(text, mname, site, k->c->federation, k->j.round, job, k->j.staged_sha256,
                                  k->c->max_checkpoint_bytes, ck, sizeof ck, size, sha, note, sizeof note);
    if (rc == 0) {
        int n = snprintf(remote, rlen, "%s/%s/%s/%s", dir, FLAS_STAGE_OUTBOX, rdir, ck);
        /* a cut path would name another file than the manifest does */
        if (n < 0 || (size_t)n >= rlen) {
            snprintf(note, sizeof note, "manifest %s: the checkpoint's path at the site is too long: refused", mname);
            rc = -2;
        }
    }
    if (rc != 0)
        coord_note(k, i, "%s", note);
    return rc;
}

int coord_parse_manifest(const char *text, const char *mname, const char *site, const char *federation, long round_now,
                         long job, const char *staged_sha256, int64_t max_bytes, char *ckpt, size_t cklen,
                         int64_t *size, char *sha, char *note, size_t notelen)
{
    json_error_t jerr;
    json_t *m = json_loads(text, 0, &jerr);
    long long round = -1, id = -1, bytes = -1;
    const char *ck = NULL, *hex = NULL, *base = NULL;
    int rc = -2;
    if (!m || !json_is_object(m)) {
        flas_fail(note, notelen, "manifest %s is not JSON: %s", mname, m ? "not an object" : jerr.text);
    } else if (!jstr(m, "format") || strcmp(jstr(m, "format"), "flas-manifest") || jint(m, "round", &round) ||
               jint(m, "job_id", &id) || !jstr(m, "site") || strcmp(jstr(m, "site"), site) ||
               !jstr(m, "federation") || strcmp(jstr(m, "federation"), federation) || round != round_now ||
               id != job) {
        flas_fail(note, notelen, "manifest %s does not describe job %ld of round %ld at %s: refused", mname, job,
                  round_now, site);
    } else if (json_is_null(json_object_get(m, "checkpoint"))) {
        const char *why = jstr(m, "error");
        flas_fail(note, notelen, "job %ld published no checkpoint (%s; job state %s)", job,
                  why && *why ? why : "none written", jstr(m, "job_state") ? jstr(m, "job_state") : "?");
        rc = 1;
    } else if (!(ck = jstr(m, "checkpoint")) || !(hex = jstr(m, "sha256")) || !flas_sha256_is_hex(hex) ||
               jint(m, "size", &bytes) || bytes <= 0 || bytes > max_bytes || strchr(ck, '/') || ck[0] == '.' ||
               !ck[0]) {
        /* "" is no file name either: it would have the round's outbox directory itself fetched, which
         * fails at every poll until the deadline instead of dropping the site now (tests/fuzz/fuzz_manifest) */
        flas_fail(note, notelen, "manifest %s has an invalid checkpoint entry: refused", mname);
    } else if (!(base = jstr(m, "base_sha256")) || strcmp(base, staged_sha256)) {
        flas_fail(note, notelen, "job %ld trained from %s, not this round's global %s: refused", job, base ? base : "?",
                  staged_sha256);
    } else if (strlen(ck) >= cklen) {
        /* copied whole or refused: a cut name would be another file (the caller passes NAME_MAX + 1) */
        flas_fail(note, notelen, "manifest %s names a checkpoint of %zu characters, not a file name: refused", mname,
                  strlen(ck));
    } else {
        snprintf(ckpt, cklen, "%s", ck);
        *size = bytes;
        snprintf(sha, FLAS_SHA256_HEX_LEN + 1, "%s", hex);
        rc = 0;
    }
    json_decref(m);
    return rc;
}

int coord_fetch(coord *k, int i, const char *remote, int64_t size, const char *sha)
{
    char local[FLAS_CONF_PATH_MAX + 128], err[1024];
    flas_coord_local_path(k->c, k->j.round, k->c->site[i].name, local, sizeof local);
    flas_ssh *s = coord_ssh_transfer(k, i);
    if (!s)
        return -1;
    flas_xfer_opts o = {0};
    progress_ctx pc = {k, i, 0};
    o.max_size = k->c->max_checkpoint_bytes;
    o.progress = note_progress;
    o.progress_ctx = &pc;
    flas_xfer_stats st;
    if (flas_xfer_download(s, remote, local, size, sha, &o, &st, err, sizeof err)) {
        coord_note(k, i, "%s", err);
        coord_ssh_lost(k, i);
        return -1;
    }
    if (st.resumed_at > 0)
        fprintf(stderr, "flas-coordinator: round %ld: %s: download resumed after a cut at %lld verified bytes\n",
                k->j.round, k->c->site[i].name, (long long)st.resumed_at);
    flas_journal_site *js = &k->j.site[i];
    snprintf(js->local_sha256, sizeof js->local_sha256, "%s", st.sha256);
    js->local_bytes = st.size;
    js->seconds_fetch = st.seconds;
    return 0;
}
