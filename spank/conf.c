/* flas.conf parsing: strict Key=Value records, errors with file:line. Depends on libc only. */
#include "flas/conf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONF_MAX_BYTES (1 << 20) /* a config bigger than 1 MiB is a mistake, not a config */

static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Absolute, normalised (no "//", ".", "..", trailing '/'), printable. */
static int path_valid(const char *p)
{
    size_t n = strlen(p);
    if (n < 2 || n >= FLAS_CONF_PATH_MAX || p[0] != '/' || p[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isgraph((unsigned char)p[i]))
            return 0;
    const char *c = p;
    while (*c) {
        c++; /* skip '/' */
        size_t len = strcspn(c, "/");
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += len;
    }
    return 1;
}

static int parse_list(const char *value, flas_name_list *list)
{
    list->n = 0;
    const char *c = value;
    while (1) {
        size_t len = strcspn(c, ",");
        if (len == 0 || len >= FLAS_CONF_NAME_MAX || list->n == FLAS_CONF_LIST_MAX)
            return -1;
        memcpy(list->name[list->n], c, len);
        list->name[list->n][len] = '\0';
        if (!flas_name_valid(list->name[list->n]) && strcmp(list->name[list->n], "*") != 0)
            return -1;
        list->n++;
        if (c[len] == '\0')
            return 0;
        c += len + 1;
    }
}

typedef struct {
    const char *path;
    int line;
    char *err;
    size_t errlen;
} where;

/* "path:line: message" into w->err; returns -1. */
static int parse_fail(const where *w, const char *fmt, ...)
{
    if (w->err && w->errlen) {
        int n = snprintf(w->err, w->errlen, "%s:%d: ", w->path, w->line);
        if (n >= 0 && (size_t)n < w->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(w->err + n, w->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

enum { K_FEDERATION, K_SITE, K_STAGING_ROOT, K_ALLOW_USERS, K_ALLOW_GROUPS, K_ALLOW_ACCOUNTS, K_COUNT };
static const char *const key_names[K_COUNT] = {"Federation", "Site", "StagingRoot", "AllowUsers", "AllowGroups",
                                               "AllowAccounts"};

static int set_key(const where *w, flas_federation_conf *f, int key, const char *value)
{
    switch (key) {
    case K_FEDERATION:
        if (!flas_name_valid(value))
            return parse_fail(w, "Federation=%s: a name is 1-63 characters of [A-Za-z0-9_-], not starting with '-'",
                              value);
        strcpy(f->name, value);
        return 0;
    case K_SITE:
        if (!flas_name_valid(value))
            return parse_fail(w, "Site=%s: a name is 1-63 characters of [A-Za-z0-9_-], not starting with '-'", value);
        strcpy(f->site, value);
        return 0;
    case K_STAGING_ROOT:
        if (!path_valid(value))
            return parse_fail(w, "StagingRoot=%s: must be an absolute path without '.', '..', '//' or a trailing '/'",
                              value);
        strcpy(f->staging_root, value);
        return 0;
    default: {
        flas_name_list *l = key == K_ALLOW_USERS ? &f->allow_users
                            : key == K_ALLOW_GROUPS ? &f->allow_groups
                                                    : &f->allow_accounts;
        if (parse_list(value, l))
            return parse_fail(w, "%s=%s: expected a comma-separated list of names (or *), at most %d", key_names[key],
                              value, FLAS_CONF_LIST_MAX);
        return 0;
    }
    }
}

/* One line: whitespace-separated Key=Value tokens; the first key of a record is Federation. */
static int parse_line(const where *w, char *line, flas_conf *conf, unsigned *seen)
{
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok)
            return parse_fail(w, "'%s': expected Key=Value", tok);
        *eq = '\0';
        const char *value = eq + 1;
        int key = -1;
        for (int k = 0; k < K_COUNT; k++)
            if (strcasecmp(tok, key_names[k]) == 0)
                key = k;
        if (key < 0)
            return parse_fail(w, "unknown key '%s' (known: Federation, Site, StagingRoot, AllowUsers, AllowGroups, "
                              "AllowAccounts)", tok);
        if (*value == '\0')
            return parse_fail(w, "%s has an empty value", key_names[key]);
        if (key == K_FEDERATION) {
            if (flas_conf_find(conf, value))
                return parse_fail(w, "federation '%s' is defined twice", value);
            flas_federation_conf *grown = realloc(conf->fed, sizeof *grown * (size_t)(conf->n + 1));
            if (!grown)
                return parse_fail(w, "out of memory");
            conf->fed = grown;
            memset(&conf->fed[conf->n], 0, sizeof conf->fed[0]);
            conf->fed[conf->n].line = w->line;
            conf->n++;
            *seen = 0;
        } else if (conf->n == 0) {
            return parse_fail(w, "%s before any Federation= record", key_names[key]);
        }
        if (*seen & (1u << key))
            return parse_fail(w, "%s given twice for federation '%s'", key_names[key], conf->fed[conf->n - 1].name);
        *seen |= 1u << key;
        if (set_key(w, &conf->fed[conf->n - 1], key, value))
            return -1;
    }
    return 0;
}

static int check_record(const char *path, const flas_federation_conf *f, char *err, size_t errlen)
{
    if (!f->site[0])
        return errf(err, errlen, "%s:%d: federation '%s' has no Site=", path, f->line, f->name);
    if (!f->staging_root[0])
        return errf(err, errlen, "%s:%d: federation '%s' has no StagingRoot=", path, f->line, f->name);
    return 0;
}

int flas_conf_parse(const char *path, const char *text, flas_conf *conf, char *err, size_t errlen)
{
    memset(conf, 0, sizeof *conf);
    snprintf(conf->path, sizeof conf->path, "%s", path);
    char *copy = strdup(text);
    if (!copy)
        return errf(err, errlen, "%s: out of memory", path);
    where w = {path, 0, err, errlen};
    unsigned seen = 0;
    int rc = 0;
    /* strtok_r would skip empty lines and break numbering: split by hand. */
    for (char *line = copy, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        w.line++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        rc = parse_line(&w, line, conf, &seen);
    }
    free(copy);
    for (int i = 0; rc == 0 && i < conf->n; i++)
        rc = check_record(path, &conf->fed[i], err, errlen);
    if (rc == 0 && conf->n == 0)
        rc = errf(err, errlen, "%s: defines no federation (expected Federation=NAME Site=NAME StagingRoot=PATH)", path);
    if (rc)
        flas_conf_free(conf);
    return rc;
}

int flas_conf_load(const char *path, flas_conf *conf, char *err, size_t errlen)
{
    memset(conf, 0, sizeof *conf);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return errf(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size > CONF_MAX_BYTES) {
        close(fd);
        return errf(err, errlen, "%s: not a regular file of at most %d bytes", path, CONF_MAX_BYTES);
    }
    char *text = malloc((size_t)st.st_size + 1);
    ssize_t got = text ? read(fd, text, (size_t)st.st_size) : -1;
    close(fd);
    if (got != st.st_size) {
        free(text);
        return errf(err, errlen, "%s: read failed", path);
    }
    text[got] = '\0';
    if (memchr(text, '\0', (size_t)got)) {
        free(text);
        return errf(err, errlen, "%s: contains a NUL byte", path);
    }
    int rc = flas_conf_parse(path, text, conf, err, errlen);
    free(text);
    return rc;
}

void flas_conf_free(flas_conf *conf)
{
    free(conf->fed);
    conf->fed = NULL;
    conf->n = 0;
}

const flas_federation_conf *flas_conf_find(const flas_conf *conf, const char *federation)
{
    for (int i = 0; i < conf->n; i++)
        if (strcmp(conf->fed[i].name, federation) == 0)
            return &conf->fed[i];
    return NULL;
}

static int listed(const flas_name_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->name[i], "*") == 0 || (name && strcmp(l->name[i], name) == 0))
            return 1;
    return 0;
}

static int group_listed(const flas_name_list *l, gid_t gid, const gid_t *groups, int ngroups)
{
    for (int i = -1; i < ngroups; i++) {
        struct group gr, *res = NULL;
        char buf[4096];
        gid_t g = i < 0 ? gid : groups[i];
        if (getgrgid_r(g, &gr, buf, sizeof buf, &res) == 0 && res && listed(l, res->gr_name))
            return 1;
    }
    return listed(l, "*") ? 1 : 0;
}

int flas_conf_allows(const flas_federation_conf *fed, const char *user, gid_t gid, const gid_t *groups,
                     int ngroups, const char *account, char *err, size_t errlen)
{
    /* Users and groups: allowed if either list admits them; no lists at all means everyone. */
    int restricted = fed->allow_users.n || fed->allow_groups.n;
    if (restricted && !listed(&fed->allow_users, user) && !group_listed(&fed->allow_groups, gid, groups, ngroups))
        return errf(err, errlen, "user '%s' may not use federation '%s' (AllowUsers/AllowGroups in %s)",
                    user, fed->name, "flas.conf");
    if (fed->allow_accounts.n && account && account[0] && !listed(&fed->allow_accounts, account))
        return errf(err, errlen, "account '%s' may not use federation '%s' (AllowAccounts in flas.conf)", account,
                    fed->name);
    return 0;
}
