/* coordinator.conf(5): one Federation= record with the round policy, then one Site= record per site.
 * Strict like flas.conf: unknown or repeated keys and bad values are errors reported as file:line. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/coordinator.h"

typedef enum { T_NAME, T_PATH, T_TEXT, T_INT, T_DOUBLE, T_SYNC, T_LIST } key_type;

typedef struct {
    const char *key;
    key_type type;
    size_t offset;  /* in flas_coord_conf (federation keys) or flas_coord_site (site keys) */
    size_t size;    /* of the destination (strings) */
    long lo, hi;    /* bounds (integers) */
} key_spec;

#define FED(k, t, f, lo, hi) {k, t, offsetof(flas_coord_conf, f), sizeof(((flas_coord_conf *)0)->f), lo, hi}
#define SITE(k, t, f, lo, hi) {k, t, offsetof(flas_coord_site, f), sizeof(((flas_coord_site *)0)->f), lo, hi}

static const key_spec fed_keys[] = {
    FED("Federation", T_NAME, federation, 0, 0),
    FED("WorkDir", T_PATH, work_dir, 0, 0),
    FED("InitialGlobal", T_PATH, initial_global, 0, 0),
    FED("KnownHosts", T_PATH, known_hosts, 0, 0),
    FED("Rounds", T_INT, rounds, 1, 100000),
    FED("MinSites", T_INT, min_sites, 1, FLAS_COORD_MAX_SITES),
    FED("RoundDeadline", T_INT, deadline_s, 10, 30L * 86400),
    FED("Strategy", T_NAME, strategy, 0, 0),
    FED("ServerLR", T_DOUBLE, server_lr, 0, 0),
    FED("ServerMomentum", T_DOUBLE, server_momentum, 0, 0),
    FED("MaxUpdateNorm", T_DOUBLE, max_update_norm, 0, 0),
    FED("MaxUpdateRatio", T_DOUBLE, max_update_ratio, 0, 0),
    FED("Sync", T_SYNC, sync, 0, 0),
    FED("BeginDelay", T_INT, begin_delay_s, 0, 86400),
    FED("Reservation", T_TEXT, reservation, 0, 0),
    FED("Signal", T_TEXT, signal, 0, 0),
    FED("PollInterval", T_INT, poll_min_s, 1, 3600),
    FED("PollMax", T_INT, poll_max_s, 1, 3600),
    FED("MaxCheckpointBytes", T_INT, max_checkpoint_bytes, 1, 0),
    FED("CommandTimeout", T_INT, command_timeout_s, FLAS_COORD_MIN_COMMAND_S, 86400),
};

static const key_spec site_keys[] = {
    SITE("Site", T_NAME, name, 0, 0),
    SITE("Host", T_TEXT, ssh.host, 0, 0),
    SITE("Port", T_INT, ssh.port, 1, 65535),
    SITE("User", T_NAME, ssh.user, 0, 0),
    SITE("Identity", T_PATH, ssh.identity, 0, 0),
    SITE("Jump", T_TEXT, ssh.jump_host, 0, 0),
    SITE("StagingRoot", T_PATH, staging_root, 0, 0),
    SITE("Script", T_PATH, script, 0, 0),
    SITE("ScriptArgs", T_LIST, args, 0, 0),
    SITE("Partition", T_NAME, partition, 0, 0),
    SITE("Account", T_NAME, account, 0, 0),
    SITE("Nodes", T_INT, nodes, 1, 100000),
    SITE("Tasks", T_INT, tasks, 1, 10000000),
    SITE("CpusPerTask", T_INT, cpus_per_task, 1, 100000),
    SITE("Time", T_INT, time_min, 1, 525600),
};

#define N(a) (sizeof a / sizeof a[0])

typedef struct {
    const char *path;
    int line;
    char *err;
    size_t errlen;
} where;

static int fail_at(const where *w, const char *fmt, ...)
{
    int n = snprintf(w->err, w->errlen, "%s:%d: ", w->path, w->line);
    if (n >= 0 && (size_t)n < w->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err + n, w->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Absolute, no ".." component. */
static int path_ok(const char *v)
{
    size_t n = strlen(v);
    return v[0] == '/' && !strstr(v, "/../") && !(n >= 3 && !strcmp(v + n - 3, "/.."));
}

/* Host names and addresses, reservation templates and signal specs: printable, no shell metacharacters. */
static int text_ok(const char *v)
{
    for (; *v; v++)
        if (!isalnum((unsigned char)*v) && !strchr("._-:@%[]", *v))
            return 0;
    return 1;
}

static int set_value(const where *w, const key_spec *k, void *base, const char *v)
{
    char *dst = (char *)base + k->offset;
    char *end;
    switch (k->type) {
    case T_NAME:
        if (!flas_name_valid(v))
            return fail_at(w, "%s=%s: a name is 1-63 characters of [A-Za-z0-9_-], not starting with '-'", k->key, v);
        break;
    case T_PATH:
        if (!path_ok(v) || strlen(v) >= k->size)
            return fail_at(w, "%s=%s: must be an absolute path without '..'", k->key, v);
        break;
    case T_TEXT:
        if (!text_ok(v) || strlen(v) >= k->size)
            return fail_at(w, "%s=%s: unexpected characters (allowed: letters, digits, ._-:@%%[])", k->key, v);
        break;
    case T_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || *end || x < k->lo || (k->hi > 0 && x > k->hi))
            return fail_at(w, "%s=%s: expected a whole number from %ld%s%ld", k->key, v, k->lo, k->hi > 0 ? " to " : "",
                           k->hi > 0 ? k->hi : 0L);
        if (k->size == sizeof(int64_t) && k->size != sizeof(int))
            *(int64_t *)dst = x;
        else
            *(int *)dst = (int)x;
        return 0;
    }
    case T_DOUBLE: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || *end || !(x >= 0 && x < 1e6))
            return fail_at(w, "%s=%s: expected a non-negative number", k->key, v);
        *(double *)dst = x;
        return 0;
    }
    case T_SYNC:
        if (!strcmp(v, "none"))
            *(flas_sync_mode *)dst = FLAS_SYNC_NONE;
        else if (!strcmp(v, "begin"))
            *(flas_sync_mode *)dst = FLAS_SYNC_BEGIN;
        else if (!strcmp(v, "reservation"))
            *(flas_sync_mode *)dst = FLAS_SYNC_RESERVATION;
        else
            return fail_at(w, "Sync=%s: expected none, begin or reservation", v);
        return 0;
    case T_LIST: {
        flas_coord_site *s = base;
        s->n_args = 0;
        for (const char *c = v; *c;) {
            size_t len = strcspn(c, ",");
            if (len == 0 || len >= FLAS_CONF_PATH_MAX || s->n_args == FLAS_COORD_MAX_ARGS)
                return fail_at(w, "ScriptArgs: expected up to %d comma-separated arguments", FLAS_COORD_MAX_ARGS);
            memcpy(s->args[s->n_args], c, len);
            s->args[s->n_args][len] = '\0';
            for (size_t i = 0; i < len; i++)
                if (!isalnum((unsigned char)c[i]) && !strchr("/._-=:+", c[i]))
                    return fail_at(w, "ScriptArgs: '%s' has characters other than [A-Za-z0-9/._-=:+]", s->args[s->n_args]);
            s->n_args++;
            c += len + (c[len] == ',');
        }
        return 0;
    }
    }
    snprintf(dst, k->size, "%s", v);
    return 0;
}

static const key_spec *find_key(const key_spec *keys, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(keys[i].key, name))
            return &keys[i];
    return NULL;
}

static void defaults(flas_coord_conf *c)
{
    memset(c, 0, sizeof *c);
    c->deadline_s = 3600;
    snprintf(c->strategy, sizeof c->strategy, "fedavg");
    c->server_lr = c->server_momentum = -1;
    c->begin_delay_s = 10;
    snprintf(c->signal, sizeof c->signal, "USR1@60");
    c->poll_min_s = 2;
    c->poll_max_s = 30;
    c->max_checkpoint_bytes = (int64_t)1 << 42;
    c->command_timeout_s = 120;
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
    if (missing) {
        snprintf(err, errlen, "%s: %s= is required", path, missing);
        return -1;
    }
    if (c->max_update_ratio > 0 && c->max_update_ratio < 1) {
        snprintf(err, errlen, "%s: MaxUpdateRatio=%g: must be 0 (no bound) or at least 1", path, c->max_update_ratio);
        return -1;
    }
    if (!c->min_sites)
        c->min_sites = c->n_sites;
    if (c->min_sites > c->n_sites) {
        snprintf(err, errlen, "%s: MinSites=%d but only %d sites are described", path, c->min_sites, c->n_sites);
        return -1;
    }
    if (c->sync == FLAS_SYNC_RESERVATION) {
        /* The name is never used as a format: '%' may only begin the one "%d" that stands for the round. */
        const char *pct = strchr(c->reservation, '%');
        if (!c->reservation[0] || (pct && (pct[1] != 'd' || strchr(pct + 1, '%')))) {
            snprintf(err, errlen, "%s: Sync=reservation needs Reservation=NAME (at most one %%d, for the round, and "
                     "no other %%)", path);
            return -1;
        }
    }
    if (c->poll_max_s < c->poll_min_s)
        c->poll_max_s = c->poll_min_s;
    for (int i = 0; i < c->n_sites; i++) {
        flas_coord_site *s = &c->site[i];
        const char *m = !s->ssh.host[0] ? "Host" : !s->ssh.user[0] ? "User" : !s->staging_root[0] ? "StagingRoot"
                        : !s->script[0] ? "Script" : NULL;
        if (m) {
            snprintf(err, errlen, "%s:%d: site '%s' has no %s=", path, s->line, s->name, m);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(c->site[j].name, s->name)) {
                snprintf(err, errlen, "%s:%d: site '%s' is described twice", path, s->line, s->name);
                return -1;
            }
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
    where w = {path, 0, err, errlen};
    unsigned long long seen = 0;
    void *record = NULL; /* c (federation keys) or the current site */
    const key_spec *keys = NULL;
    size_t nkeys = 0;
    const char *line = text;
    while (*line) {
        w.line++;
        size_t len = strcspn(line, "\n");
        char buf[4096];
        if (len >= sizeof buf)
            return fail_at(&w, "line too long");
        memcpy(buf, line, len);
        buf[len] = '\0';
        line += len + (line[len] == '\n');
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        for (char *tok = strtok_r(buf, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
            char *eq = strchr(tok, '=');
            if (!eq || eq == tok || !eq[1])
                return fail_at(&w, "'%s': expected Key=Value", tok);
            *eq = '\0';
            const char *v = eq + 1;
            if (!strcasecmp(tok, "Federation")) {
                if (record)
                    return fail_at(&w, "Federation= must come first, once");
                record = c, keys = fed_keys, nkeys = N(fed_keys), seen = 0;
            } else if (!strcasecmp(tok, "Site")) {
                if (!record)
                    return fail_at(&w, "Site= before Federation=");
                if (c->n_sites == FLAS_COORD_MAX_SITES)
                    return fail_at(&w, "more than %d sites", FLAS_COORD_MAX_SITES);
                record = &c->site[c->n_sites], keys = site_keys, nkeys = N(site_keys), seen = 0;
                c->site[c->n_sites].line = w.line;
                c->n_sites++;
            } else if (!record) {
                return fail_at(&w, "%s= before Federation=", tok);
            }
            const key_spec *k = find_key(keys, nkeys, tok);
            if (!k)
                return fail_at(&w, "unknown key '%s' in a %s record", tok, keys == fed_keys ? "Federation" : "Site");
            unsigned long long bit = 1ull << (k - keys);
            if (seen & bit)
                return fail_at(&w, "%s given twice in one record", k->key);
            seen |= bit;
            if (set_value(&w, k, record, v))
                return -1;
        }
    }
    if (!record) {
        snprintf(err, errlen, "%s: no Federation= record", path);
        return -1;
    }
    return finish(path, c, err, errlen);
}

int flas_coord_conf_load(const char *path, flas_coord_conf *c, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    int toolong = !feof(f);
    fclose(f);
    if (toolong) {
        snprintf(err, errlen, "%s: larger than 1 MiB", path);
        return -1;
    }
    text[n] = '\0';
    return flas_coord_conf_parse(path, text, c, err, errlen);
}

int flas_coord_reservation_name(const flas_coord_conf *c, long round, char *buf, size_t len)
{
    const char *pct = strstr(c->reservation, "%d");
    int n = pct ? snprintf(buf, len, "%.*s%ld%s", (int)(pct - c->reservation), c->reservation, round, pct + 2)
                : snprintf(buf, len, "%s", c->reservation);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
