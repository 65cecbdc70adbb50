/* coordinator.conf(5): one Federation= record with the round policy, then one Site= record per site.
 * Read by the shared Key=Value parser (flas/kv.h), like flas.conf: the same value rules, and unknown or
 * repeated keys and bad values are errors reported as FILE:LINE. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/coordinator.h"
#include "flas/dp.h"
#include "flas/error.h"
#include "flas/kv.h"

#define CONF_MAX_BYTES (1 << 20) /* as flas.conf: a description bigger than 1 MiB is a mistake */

/* Sync=none|begin|reservation|book */
static int parse_sync(const char *v, void *rec, char *why, size_t whylen)
{
    flas_sync_mode *m = &((flas_coord_conf *)rec)->sync;
    if (!strcmp(v, "none"))
        *m = FLAS_SYNC_NONE;
    else if (!strcmp(v, "begin"))
        *m = FLAS_SYNC_BEGIN;
    else if (!strcmp(v, "reservation"))
        *m = FLAS_SYNC_RESERVATION;
    else if (!strcmp(v, "book"))
        *m = FLAS_SYNC_BOOK;
    else
        return flas_fail(why, whylen, "expected none, begin, reservation or book");
    return 0;
}

/* ScriptArgs=a,b,c: the batch script's arguments, without shell metacharacters. */
static int parse_args(const char *v, void *rec, char *why, size_t whylen)
{
    flas_coord_site *s = rec;
    s->n_args = 0;
    for (const char *c = v; *c;) {
        size_t len = strcspn(c, ",");
        if (len == 0 || len >= FLAS_CONF_PATH_MAX || s->n_args == FLAS_COORD_MAX_ARGS)
            return flas_fail(why, whylen, "expected up to %d comma-separated arguments", FLAS_COORD_MAX_ARGS);
        memcpy(s->args[s->n_args], c, len);
        s->args[s->n_args][len] = '\0';
        for (size_t i = 0; i < len; i++)
            if (!isalnum((unsigned char)c[i]) && !strchr("/._-=:+", c[i]))
                return flas_fail(why, whylen, "'%s' has characters other than [A-Za-z0-9/._-=:+]", s->args[s->n_args]);
        s->n_args++;
        c += len + (c[len] == ',');
    }
    return 0;
}

/* DropSlowSites=yes|no */
static int parse_drop_slow(const char *v, void *rec, char *why, size_t whylen)
{
    int *d = &((flas_coord_conf *)rec)->drop_slow_sites;
    if (!strcmp(v, "yes"))
        *d = 1;
    else if (!strcmp(v, "no"))
        *d = 0;
    else
        return flas_fail(why, whylen, "expected yes or no");
    return 0;
}

/* InnerState=reset|keep */
static int parse_inner_state(const char *v, void *rec, char *why, size_t whylen)
{
    int *d = &((flas_coord_conf *)rec)->inner_keep;
    if (!strcmp(v, "keep") || !strcmp(v, "reset"))
        return *d = v[0] == 'k', 0;
    return flas_fail(why, whylen, "expected reset or keep");
}

/* Salvage=merge|resume */
static int parse_salvage(const char *v, void *rec, char *why, size_t whylen)
{
    int *d = &((flas_coord_conf *)rec)->salvage_resume;
    if (!strcmp(v, "merge") || !strcmp(v, "resume"))
        return *d = !strcmp(v, "resume"), 0;
    return flas_fail(why, whylen, "expected merge or resume");
}

/* LrSchedule=round|run */
static int parse_lr_schedule(const char *v, void *rec, char *why, size_t whylen)
{
    int *d = &((flas_coord_conf *)rec)->lr_run;
    if (!strcmp(v, "run") || !strcmp(v, "round"))
        return *d = !strcmp(v, "run"), 0;
    return flas_fail(why, whylen, "expected round or run");
}

/* UpdateEncoding=, GlobalEncoding=: full, bf16 or int8 */
static int parse_enc(const char *v, flas_update_enc *e, char *why, size_t whylen)
{
    if (flas_update_enc_parse(v, e))
        return flas_fail(why, whylen, "expected full, bf16 or int8");
    return 0;
}
static int parse_update_enc(const char *v, void *rec, char *why, size_t whylen)
{
    return parse_enc(v, &((flas_coord_conf *)rec)->update_enc, why, whylen);
}
static int parse_global_enc(const char *v, void *rec, char *why, size_t whylen)
{
    return parse_enc(v, &((flas_coord_conf *)rec)->global_enc, why, whylen);
}

/* DpClip=: a bound, or "inf" (clip nothing: DP without noise, for comparisons only) */
static int parse_dp_clip(const char *v, void *rec, char *why, size_t whylen)
{
    flas_coord_conf *c = rec;
    if (!strcmp(v, "inf")) {
        c->dp_clip = INFINITY;
        return 0;
    }
    char *end;
    int plain = v[strspn(v, "0123456789.eE+-")] == '\0';
    errno = 0;
    double x = strtod(v, &end);
    if (!plain || errno || end == v || *end || !(x > 0 && x < 1e12))
        return flas_fail(why, whylen, "expected a positive number or inf");
    c->dp_clip = x;
    return 0;
}

#define FED(k, t, f, l, h) {.key = k, .type = t, .offset = offsetof(flas_coord_conf, f), \
                            .size = sizeof(((flas_coord_conf *)0)->f), .lo = l, .hi = h}
#define SITE(k, t, f, l, h) {.key = k, .type = t, .offset = offsetof(flas_coord_site, f), \
                             .size = sizeof(((flas_coord_site *)0)->f), .lo = l, .hi = h}
#define CUSTOM(k, p) {.key = k, .type = FLAS_KV_CUSTOM, .parse = p}

static const flas_kv_key fed_keys[] = {
    FED("Federation", FLAS_KV_NAME, federation, 0, 0),
    FED("WorkDir", FLAS_KV_PATH, work_dir, 0, 0),
    FED("InitialGlobal", FLAS_KV_PATH, initial_global, 0, 0),
    FED("KnownHosts", FLAS_KV_PATH, known_hosts, 0, 0),
    FED("Rounds", FLAS_KV_INT, rounds, 1, 100000),
    FED("MinSites", FLAS_KV_INT, min_sites, 1, FLAS_COORD_MAX_SITES),
    FED("RoundDeadline", FLAS_KV_INT, deadline_s, 10, 30L * 86400),
    FED("Strategy", FLAS_KV_NAME, strategy, 0, 0),
    FED("ServerLR", FLAS_KV_DOUBLE, server_lr, 0, 0),
    FED("ServerMomentum", FLAS_KV_DOUBLE, server_momentum, 0, 0),
    FED("ServerBeta1", FLAS_KV_DOUBLE, server_beta1, 0, 0),
    FED("ServerBeta2", FLAS_KV_DOUBLE, server_beta2, 0, 0),
    FED("ServerTau", FLAS_KV_DOUBLE, server_tau, 0, 0),
    CUSTOM("InnerState", parse_inner_state),
    CUSTOM("LrSchedule", parse_lr_schedule),
    CUSTOM("Salvage", parse_salvage),
    FED("Prox", FLAS_KV_DOUBLE, prox, 0, 0),
    FED("MaxUpdateNorm", FLAS_KV_DOUBLE, max_update_norm, 0, 0),
    FED("MaxUpdateRatio", FLAS_KV_DOUBLE, max_update_ratio, 0, 0),
    CUSTOM("Sync", parse_sync),
    FED("BeginDelay", FLAS_KV_INT, begin_delay_s, 0, 86400),
    FED("Reservation", FLAS_KV_TEXT, reservation, 0, 0),
    FED("Signal", FLAS_KV_TEXT, signal, 0, 0),
    FED("PollInterval", FLAS_KV_INT, poll_min_s, 1, 3600),
    FED("PollMax", FLAS_KV_INT, poll_max_s, 1, 3600),
    FED("MaxCheckpointBytes", FLAS_KV_INT, max_checkpoint_bytes, 1, 0),
    FED("CommandTimeout", FLAS_KV_INT, command_timeout_s, FLAS_COORD_MIN_COMMAND_S, 86400),
    FED("RoundBudget", FLAS_KV_INT, round_budget_s, 0, 30L * 86400),
    FED("MinSteps", FLAS_KV_INT, min_steps, 0, 1LL << 40),
    CUSTOM("DropSlowSites", parse_drop_slow),
    FED("FirstSteps", FLAS_KV_INT, first_steps, 1, 1LL << 40),
    CUSTOM("UpdateEncoding", parse_update_enc),
    CUSTOM("GlobalEncoding", parse_global_enc),
    FED("UpdateBlock", FLAS_KV_INT, update_block, FLAS_UPDATE_BLOCK_MIN, FLAS_UPDATE_BLOCK_MAX),
    CUSTOM("DpClip", parse_dp_clip),
    FED("DpNoise", FLAS_KV_DOUBLE, dp_noise, 0, 0),
    FED("DpEpsilon", FLAS_KV_DOUBLE, dp_epsilon, 0, 0),
    FED("DpDelta", FLAS_KV_DOUBLE, dp_delta, 0, 0),
};

static const flas_kv_key site_keys[] = {
    SITE("Site", FLAS_KV_NAME, name, 0, 0),
    SITE("Host", FLAS_KV_TEXT, ssh.host, 0, 0),
    SITE("Port", FLAS_KV_INT, ssh.port, 1, 65535),
    SITE("User", FLAS_KV_NAME, ssh.user, 0, 0),
    SITE("Identity", FLAS_KV_PATH, ssh.identity, 0, 0),
    SITE("Certificate", FLAS_KV_PATH, ssh.certificate, 0, 0),
    SITE("Jump", FLAS_KV_TEXT, ssh.jump_host, 0, 0),
    SITE("StagingRoot", FLAS_KV_PATH, staging_root, 0, 0),
    SITE("Script", FLAS_KV_PATH, script, 0, 0),
    CUSTOM("ScriptArgs", parse_args),
    SITE("Partition", FLAS_KV_NAME, partition, 0, 0),
    SITE("Account", FLAS_KV_NAME, account, 0, 0),
    SITE("Nodes", FLAS_KV_INT, nodes, 1, 100000),
    SITE("Tasks", FLAS_KV_INT, tasks, 1, 10000000),
    SITE("CpusPerTask", FLAS_KV_INT, cpus_per_task, 1, 100000),
    SITE("Time", FLAS_KV_INT, time_min, 1, 525600),
    SITE("Tools", FLAS_KV_PATH, tools, 0, 0),
};

#define N(a) (sizeof a / sizeof a[0])

typedef struct {
    flas_coord_conf *c;
    int federation_open; /* the Federation= record has been opened */
} parse_ctx;

static void *open_federation(void *ctx, const char *value, int line, char *why, size_t whylen)
{
    parse_ctx *p = ctx;
    (void)value, (void)line;
    if (p->federation_open) {
        flas_fail(why, whylen, "Federation= must come first, once");
        return NULL;
    }
    p->federation_open = 1;
    return p->c;
}

static void *open_site(void *ctx, const char *value, int line, char *why, size_t whylen)
{
    parse_ctx *p = ctx;
    (void)value;
    if (!p->federation_open) {
        flas_fail(why, whylen, "Site= before Federation=");
        return NULL;
    }
    if (p->c->n_sites == FLAS_COORD_MAX_SITES) {
        flas_fail(why, whylen, "more than %d sites", FLAS_COORD_MAX_SITES);
        return NULL;
    }
    flas_coord_site *s = &p->c->site[p->c->n_sites++];
    s->line = line;
    return s;
}

/* Federation= first: flas_kv_parse names the first kind in "X= before any Federation= record". */
static const flas_kv_kind kinds[] = {
    {fed_keys, N(fed_keys), open_federation},
    {site_keys, N(site_keys), open_site},
};

static void defaults(flas_coord_conf *c)
{
    memset(c, 0, sizeof *c);
    c->deadline_s = 3600;
    snprintf(c->strategy, sizeof c->strategy, "fedavg");
    c->server_lr = c->server_momentum = c->server_beta1 = c->server_beta2 = c->server_tau = -1;
    c->begin_delay_s = 10;
    snprintf(c->signal, sizeof c->signal, "USR1@60");
    c->poll_min_s = 2;
    c->poll_max_s = 30;
    c->max_checkpoint_bytes = (int64_t)1 << 42;
    c->command_timeout_s = 120;
    c->update_block = FLAS_UPDATE_BLOCK_DEFAULT;
}

static int finish(const char *path, flas_coord_conf *c, char *err, size_t errlen)
{
    const char *missing = !c->federation[0]        ? "Federation"
                          : !c->work_dir[0]        ? "WorkDir"
                          : !c->initial_global[0]  ? "InitialGlobal"
                          : !c->known_hosts[0]     ? "KnownHosts"
                          : !c->rounds             ? "Rounds"
                          : c->n_sites == 0        ? "Site"
                                                   : NULL;
    if (missing)
        return flas_fail(err, errlen, "%s: %s= is required", path, missing);
    if (c->max_update_ratio > 0 && c->max_update_ratio < 1)
        return flas_fail(err, errlen, "%s: MaxUpdateRatio=%g: must be 0 (no bound) or at least 1", path,
                         c->max_update_ratio);
    if (!c->min_sites)
        c->min_sites = c->n_sites;
    if (c->min_sites > c->n_sites)
        return flas_fail(err, errlen, "%s: MinSites=%d but only %d sites are described", path, c->min_sites,
                         c->n_sites);
    if (c->sync == FLAS_SYNC_RESERVATION || (c->sync == FLAS_SYNC_BOOK && c->reservation[0])) {
        /* The name is never used as a format: '%' may only begin the one "%d" that stands for the round.
         * Sync=book uses it only at sites where the coordinator may not book. */
        const char *pct = strchr(c->reservation, '%');
        if (!c->reservation[0] || (pct && (pct[1] != 'd' || strchr(pct + 1, '%'))))
            return flas_fail(err, errlen, "%s: Sync=reservation needs Reservation=NAME (at most one %%d, for the "
                             "round, and no other %%)", path);
    }
    /* The speed-aware keys mean nothing without a budget: refused rather than silently ignored. */
    if (!c->round_budget_s && (c->min_steps || c->drop_slow_sites || c->first_steps))
        return flas_fail(err, errlen, "%s: MinSteps=, DropSlowSites= and FirstSteps= need RoundBudget=", path);
    if (c->drop_slow_sites && !c->min_steps)
        return flas_fail(err, errlen, "%s: DropSlowSites=yes needs MinSteps= (what makes a site slow)", path);
    if (c->round_budget_s && c->round_budget_s >= c->deadline_s)
        return flas_fail(err, errlen, "%s: RoundBudget=%d must be shorter than RoundDeadline=%d", path,
                         c->round_budget_s, c->deadline_s);
    if (c->server_beta1 >= 1 || c->server_beta2 >= 1 || c->server_momentum >= 1)
        return flas_fail(err, errlen, "%s: ServerBeta1=, ServerBeta2= and ServerMomentum= must be below 1", path);
    if (c->poll_max_s < c->poll_min_s)
        c->poll_max_s = c->poll_min_s;
    /* DP-FedAvg: the noise multiplier is given, or derived from the budget; never both, never without
     * a clip (the noise is calibrated to it) */
    if (!c->dp_clip && (c->dp_noise > 0 || c->dp_epsilon > 0 || c->dp_delta > 0))
        return flas_fail(err, errlen, "%s: DpNoise=, DpEpsilon= and DpDelta= need DpClip=", path);
    if (c->dp_noise > 0 && c->dp_epsilon > 0)
        return flas_fail(err, errlen, "%s: give DpNoise= or DpEpsilon=, not both", path);
    if (!c->dp_delta)
        c->dp_delta = 1e-6;
    if (!(c->dp_delta < 1))
        return flas_fail(err, errlen, "%s: DpDelta=%g must be below 1", path, c->dp_delta);
    if (isinf(c->dp_clip) && (c->dp_noise > 0 || c->dp_epsilon > 0))
        return flas_fail(err, errlen, "%s: DpClip=inf cannot carry noise (it would be infinite)", path);
    if (c->dp_epsilon > 0) {
        c->dp_noise = flas_dp_sigma_for_epsilon(c->dp_epsilon, c->dp_delta, c->rounds);
        if (!(c->dp_noise > 0))
            return flas_fail(err, errlen, "%s: no noise multiplier reaches DpEpsilon=%g over %d rounds at DpDelta=%g",
                             path, c->dp_epsilon, c->rounds, c->dp_delta);
    }
    for (int i = 0; i < c->n_sites; i++) {
        flas_coord_site *s = &c->site[i];
        const char *m = !s->ssh.host[0] ? "Host" : !s->ssh.user[0] ? "User" : !s->staging_root[0] ? "StagingRoot"
                        : !s->script[0] ? "Script" : NULL;
        if (m)
            return flas_fail(err, errlen, "%s:%d: site '%s' has no %s=", path, s->line, s->name, m);
        if (s->ssh.certificate[0] && !s->ssh.identity[0])
            return flas_fail(err, errlen, "%s:%d: site '%s' has Certificate= but no Identity= (the key it certifies)",
                             path, s->line, s->name);
        for (int j = 0; j < i; j++)
            if (!strcmp(c->site[j].name, s->name))
                return flas_fail(err, errlen, "%s:%d: site '%s' is described twice", path, s->line, s->name);
        snprintf(s->ssh.known_hosts, sizeof s->ssh.known_hosts, "%s", c->known_hosts);
        if (s->ssh.jump_host[0]) { /* Jump=USER@HOST[:PORT] or HOST */
            char *at = strchr(s->ssh.jump_host, '@'), *colon;
            if (at) {
                *at = '\0';
                snprintf(s->ssh.jump_user, sizeof s->ssh.jump_user, "%s", s->ssh.jump_host);
                memmove(s->ssh.jump_host, at + 1, strlen(at + 1) + 1);
            }
            if ((colon = strrchr(s->ssh.jump_host, ':'))) {
                *colon = '\0';
                s->ssh.jump_port = atoi(colon + 1);
            }
        }
    }
    return 0;
}

int flas_coord_conf_parse(const char *path, const char *text, flas_coord_conf *c, char *err, size_t errlen)
{
    defaults(c);
    parse_ctx p = {c, 0};
    if (flas_kv_parse(path, text, kinds, N(kinds), &p, err, errlen))
        return -1;
    if (!p.federation_open)
        return flas_fail(err, errlen, "%s: no Federation= record", path);
    return finish(path, c, err, errlen);
}

int flas_coord_conf_load(const char *path, flas_coord_conf *c, char *err, size_t errlen)
{
    char *text;
    if (flas_kv_read_file(path, CONF_MAX_BYTES, &text, err, errlen))
        return -1;
    int rc = flas_coord_conf_parse(path, text, c, err, errlen);
    free(text);
    return rc;
}

int flas_coord_reservation_name(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    const char *pct = strstr(c->reservation, "%d");
    int n = pct ? snprintf(buf, len, "%.*s%ld%s", (int)(pct - c->reservation), c->reservation, round, pct + 2)
                : snprintf(buf, len, "%s", c->reservation);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
