/* The coordinator's journal: one key=value text file, rewritten atomically (temp, fsync, rename) at
 * every transition, so a coordinator killed at any point restarts exactly where it was. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/coordinator.h"

static const char *const site_states[] = {"pending", "staged", "submitting", "submitted", "finished", "fetched", "dropped"};
static const char *const phases[] = {"staging", "training", "aggregating", "done", "failed"};

const char *flas_site_state_name(flas_site_state s) { return (unsigned)s < 7 ? site_states[s] : "?"; }
const char *flas_round_phase_name(flas_round_phase p) { return (unsigned)p < 5 ? phases[p] : "?"; }

static int lookup(const char *const *names, int n, const char *v)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(names[i], v))
            return i;
    return -1;
}

/* Free text (notes, failure) stays on one line. */
static void one_line(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

int flas_journal_save(const char *path, const flas_journal *j, char *err, size_t errlen)
{
    /* Built in memory, then written through the one atomic-write rule (an exclusive, unpredictable
     * temporary: nothing planted in WorkDir can redirect the write). */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char failure[sizeof j->failure];
    snprintf(failure, sizeof failure, "%s", j->failure);
    one_line(failure);
    fprintf(f, "format=flas-coordinator-journal\nversion=1\nfederation=%s\nrun_id=%s\nround=%ld\nphase=%s\nglobal_sha256=%s\n"
               "staged_sha256=%s\nbegin_unix=%lld\nround_started_unix=%lld\nround_started=%.3f\nfailure=%s\nsites=%d\n",
            j->federation, j->run_id, j->round, flas_round_phase_name(j->phase), j->global_sha256,
            j->staged_sha256[0] ? j->staged_sha256 : j->global_sha256, (long long)j->begin_unix,
            (long long)j->round_started_unix, j->round_started, failure, j->n_sites);
    /* %.17g: the ledger is carried exactly; epsilon may be "inf" */
    fprintf(f, "dp_rounds=%lld\ndp_rho=%.17g\ndp_epsilon=%.17g\n", (long long)j->dp_rounds, j->dp_rho, j->dp_epsilon);
    for (int i = 0; i < j->n_sites; i++) {
        const flas_journal_site *s = &j->site[i];
        char note[sizeof s->note];
        snprintf(note, sizeof note, "%s", s->note);
        one_line(note);
        fprintf(f, "site.%d.name=%s\nsite.%d.state=%s\nsite.%d.attempt=%d\nsite.%d.job=%ld\nsite.%d.job_state=%s\n"
                   "site.%d.local_sha256=%s\nsite.%d.local_bytes=%lld\nsite.%d.seconds_fetch=%.3f\nsite.%d.note=%s\n",
                i, j->site_name[i], i, flas_site_state_name(s->state), i, s->attempt, i, s->job, i, s->job_state, i,
                s->local_sha256, i, (long long)s->local_bytes, i, s->seconds_fetch, i, note);
        /* the round's accounting (%.17g: the rate is carried to the next round exactly) */
        fprintf(f, "site.%d.bytes_up=%lld\nsite.%d.seconds_up=%.3f\nsite.%d.submit_unix=%lld\nsite.%d.start_unix=%lld\n"
                   "site.%d.end_unix=%lld\nsite.%d.train_seconds=%.3f\nsite.%d.steps=%lld\nsite.%d.tokens=%lld\n"
                   "site.%d.steps_assigned=%ld\nsite.%d.rate=%.17g\nsite.%d.staged_via=%s\nsite.%d.resume=%s\n"
                   "site.%d.booked=%d\n",
                i, (long long)s->bytes_up, i, s->seconds_up, i, (long long)s->submit_unix, i, (long long)s->start_unix,
                i, (long long)s->end_unix, i, s->train_seconds, i, (long long)s->steps, i, (long long)s->tokens, i,
                s->steps_assigned, i, s->rate, i, s->staged_via, i, s->resume, i, (int)s->booked);
    }
    if (fclose(f) != 0 || !text) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(text);
        return -1;
    }
    int rc = flas_atomic_write_file(path, text, len, err, errlen);
    free(text);
    return rc;
}

/* A count or time the coordinator wrote: decimal digits only, no sign. */
static int whole(const char *v, int64_t *out)
{
    if (!*v || strspn(v, "0123456789") != strlen(v) || strlen(v) > 18)
        return -1;
    *out = strtoll(v, NULL, 10);
    return 0;
}

/* A duration or rate the coordinator wrote: finite and not negative. */
static int nonneg(const char *v, double *out)
{
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x < 0)
        return -1;
    *out = x;
    return 0;
}

static int set_field(flas_journal *j, const char *key, const char *v)
{
    if (!strcmp(key, "format"))
        return strcmp(v, "flas-coordinator-journal") ? -1 : 0;
    if (!strcmp(key, "version"))
        return strcmp(v, "1") ? -1 : 0;
    if (!strcmp(key, "federation"))
        return snprintf(j->federation, sizeof j->federation, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(key, "run_id")) {
        for (const char *c = v; *c; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
                return -1;
        return snprintf(j->run_id, sizeof j->run_id, "%s", v) >= (int)sizeof j->run_id ? -1 : 0;
    }
    if (!strcmp(key, "round"))
        return (j->round = strtol(v, NULL, 10)) < 0 ? -1 : 0;
    if (!strcmp(key, "phase"))
        return (int)(j->phase = (flas_round_phase)lookup(phases, 5, v)) < 0 ? -1 : 0;
    if (!strcmp(key, "global_sha256"))
        return !*v || flas_sha256_is_hex(v) ? (snprintf(j->global_sha256, sizeof j->global_sha256, "%s", v), 0) : -1;
    if (!strcmp(key, "staged_sha256"))
        return !*v || flas_sha256_is_hex(v) ? (snprintf(j->staged_sha256, sizeof j->staged_sha256, "%s", v), 0) : -1;
    if (!strcmp(key, "begin_unix"))
        return (j->begin_unix = strtoll(v, NULL, 10)), 0;
    if (!strcmp(key, "round_started_unix"))
        return (j->round_started_unix = strtoll(v, NULL, 10)), 0;
    if (!strcmp(key, "round_started"))
        return nonneg(v, &j->round_started);
    if (!strcmp(key, "failure"))
        return snprintf(j->failure, sizeof j->failure, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(key, "dp_rounds"))
        return whole(v, &j->dp_rounds);
    if (!strcmp(key, "dp_rho"))
        return strcmp(v, "inf") ? nonneg(v, &j->dp_rho) : (j->dp_rho = INFINITY, 0);
    if (!strcmp(key, "dp_epsilon"))
        return strcmp(v, "inf") ? nonneg(v, &j->dp_epsilon) : (j->dp_epsilon = INFINITY, 0);
    if (!strcmp(key, "sites")) {
        j->n_sites = atoi(v);
        return j->n_sites < 0 || j->n_sites > FLAS_COORD_MAX_SITES ? -1 : 0;
    }
    int i;
    char field[64];
    if (sscanf(key, "site.%d.%63s", &i, field) != 2 || i < 0 || i >= j->n_sites)
        return -1;
    flas_journal_site *s = &j->site[i];
    if (!strcmp(field, "name"))
        return flas_name_valid(v) ? (snprintf(j->site_name[i], sizeof j->site_name[i], "%s", v), 0) : -1;
    if (!strcmp(field, "state"))
        return (int)(s->state = (flas_site_state)lookup(site_states, 7, v)) < 0 ? -1 : 0;
    if (!strcmp(field, "attempt"))
        return (s->attempt = atoi(v)), 0;
    if (!strcmp(field, "job"))
        return (s->job = strtol(v, NULL, 10)), 0;
    if (!strcmp(field, "job_state"))
        return snprintf(s->job_state, sizeof s->job_state, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(field, "local_sha256"))
        return snprintf(s->local_sha256, sizeof s->local_sha256, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(field, "local_bytes"))
        return (s->local_bytes = strtoll(v, NULL, 10)), 0;
    if (!strcmp(field, "seconds_fetch"))
        return (s->seconds_fetch = strtod(v, NULL)), 0;
    if (!strcmp(field, "bytes_up"))
        return whole(v, &s->bytes_up);
    if (!strcmp(field, "seconds_up"))
        return nonneg(v, &s->seconds_up);
    if (!strcmp(field, "submit_unix"))
        return whole(v, &s->submit_unix);
    if (!strcmp(field, "start_unix"))
        return whole(v, &s->start_unix);
    if (!strcmp(field, "end_unix"))
        return whole(v, &s->end_unix);
    if (!strcmp(field, "train_seconds"))
        return nonneg(v, &s->train_seconds);
    if (!strcmp(field, "steps"))
        return whole(v, &s->steps);
    if (!strcmp(field, "tokens"))
        return whole(v, &s->tokens);
    if (!strcmp(field, "steps_assigned")) {
        int64_t x;
        return whole(v, &x) ? -1 : (s->steps_assigned = (long)x, 0);
    }
    if (!strcmp(field, "rate"))
        return nonneg(v, &s->rate);
    if (!strcmp(field, "staged_via")) {
        if (strcmp(v, "") && strcmp(v, "full") && strcmp(v, "delta"))
            return -1;
        return snprintf(s->staged_via, sizeof s->staged_via, "%s", v) < 0 ? -1 : 0;
    }
    if (!strcmp(field, "note"))
        return snprintf(s->note, sizeof s->note, "%s", v) < 0 ? -1 : 0;
    if (!strcmp(field, "booked")) {
        if (strlen(v) != 1 || v[0] < '0' || v[0] > '0' + FLAS_BOOK_RELEASED)
            return -1;
        s->booked = (flas_book_state)(v[0] - '0');
        return 0;
    }
    if (!strcmp(field, "resume")) /* a path the coordinator built (coord_job_checkpoint): never cut */
        return strlen(v) < sizeof s->resume && !strpbrk(v, ", '\"") ? (snprintf(s->resume, sizeof s->resume, "%s", v), 0) : -1;
    return -1;
}

int flas_journal_load(const char *path, flas_journal *j, char *err, size_t errlen)
{
    memset(j, 0, sizeof *j);
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    int n = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        n++;
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq) {
            rc = -1;
            break;
        }
        *eq = '\0';
        rc = set_field(j, line, eq + 1);
    }
    fclose(f);
    /* Every site the journal counts has a name (the coordinator writes one for each): a site without
     * one would be saved as "site.N.name=", which no load accepts (found by tests/fuzz/fuzz_journal). */
    for (int i = 0; rc == 0 && i < j->n_sites; i++)
        if (!j->site_name[i][0])
            rc = -1;
    if (rc)
        snprintf(err, errlen, "%s:%d: the journal is damaged (fix or remove it to start over)", path, n);
    else if (!j->staged_sha256[0]) /* a journal of a version without compressed downlinks */
        snprintf(j->staged_sha256, sizeof j->staged_sha256, "%s", j->global_sha256);
    return rc;
}
