/* flas.conf parsing: one record kind (Federation=) read by the shared Key=Value parser (flas/kv.h), which
 * holds the value rules and the "FILE:LINE: reason" messages. Depends on libc only. */
#include "flas/conf.h"

#include <grp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flas/error.h"
#include "flas/kv.h"

#define CONF_MAX_BYTES (1 << 20) /* a config bigger than 1 MiB is a mistake, not a config */

/* AllowUsers=, AllowGroups=, AllowAccounts=: comma-separated names (or *), at most FLAS_CONF_LIST_MAX. */
static int parse_list(const char *value, flas_name_list *list, char *why, size_t whylen)
{
    list->n = 0;
    for (const char *c = value;; c++) {
        size_t len = strcspn(c, ",");
        if (len == 0 || len >= FLAS_CONF_NAME_MAX || list->n == FLAS_CONF_LIST_MAX)
            break;
        memcpy(list->name[list->n], c, len);
        list->name[list->n][len] = '\0';
        if (!flas_name_valid(list->name[list->n]) && strcmp(list->name[list->n], "*") != 0)
            break;
        list->n++;
        c += len;
        if (*c == '\0')
            return 0;
    }
    return flas_fail(why, whylen, "expected a comma-separated list of names (or *), at most %d", FLAS_CONF_LIST_MAX);
}

static int parse_users(const char *v, void *rec, char *why, size_t whylen)
{
    return parse_list(v, &((flas_federation_conf *)rec)->allow_users, why, whylen);
}

static int parse_groups(const char *v, void *rec, char *why, size_t whylen)
{
    return parse_list(v, &((flas_federation_conf *)rec)->allow_groups, why, whylen);
}

static int parse_accounts(const char *v, void *rec, char *why, size_t whylen)
{
    return parse_list(v, &((flas_federation_conf *)rec)->allow_accounts, why, whylen);
}

#define KEY(k, t, f) {.key = k, .type = t, .offset = offsetof(flas_federation_conf, f), \
                      .size = sizeof(((flas_federation_conf *)0)->f)}
#define LIST(k, p) {.key = k, .type = FLAS_KV_CUSTOM, .parse = p}

static const flas_kv_key federation_keys[] = {
    KEY("Federation", FLAS_KV_NAME, name),
    KEY("Site", FLAS_KV_NAME, site),
    KEY("StagingRoot", FLAS_KV_PATH, staging_root),
    LIST("AllowUsers", parse_users),
    LIST("AllowGroups", parse_groups),
    LIST("AllowAccounts", parse_accounts),
};

/* Federation=NAME opens a record (ctx: the flas_conf being filled). */
static void *open_federation(void *ctx, const char *name, int line, char *why, size_t whylen)
{
    flas_conf *conf = ctx;
    if (flas_conf_find(conf, name)) {
        flas_fail(why, whylen, "federation '%s' is defined twice", name);
        return NULL;
    }
    flas_federation_conf *grown = realloc(conf->fed, sizeof *grown * (size_t)(conf->n + 1));
    if (!grown) {
        flas_fail(why, whylen, "out of memory");
        return NULL;
    }
    conf->fed = grown;
    flas_federation_conf *f = &conf->fed[conf->n++];
    memset(f, 0, sizeof *f);
    f->line = line;
    return f;
}

static const flas_kv_kind federation_kind = {federation_keys, sizeof federation_keys / sizeof federation_keys[0],
                                             open_federation};

int flas_conf_parse(const char *path, const char *text, flas_conf *conf, char *err, size_t errlen)
{
    memset(conf, 0, sizeof *conf);
    snprintf(conf->path, sizeof conf->path, "%s", path);
    int rc = flas_kv_parse(path, text, &federation_kind, 1, conf, err, errlen);
    for (int i = 0; rc == 0 && i < conf->n; i++) {
        const flas_federation_conf *f = &conf->fed[i];
        if (!f->site[0])
            rc = flas_fail(err, errlen, "%s:%d: federation '%s' has no Site=", path, f->line, f->name);
        else if (!f->staging_root[0])
            rc = flas_fail(err, errlen, "%s:%d: federation '%s' has no StagingRoot=", path, f->line, f->name);
    }
    if (rc == 0 && conf->n == 0)
        rc = flas_fail(err, errlen, "%s: defines no federation (expected Federation=NAME Site=NAME StagingRoot=PATH)",
                       path);
    if (rc)
        flas_conf_free(conf);
    return rc;
}

int flas_conf_load(const char *path, flas_conf *conf, char *err, size_t errlen)
{
    memset(conf, 0, sizeof *conf);
    char *text;
    if (flas_kv_read_file(path, CONF_MAX_BYTES, &text, err, errlen))
        return -1;
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
        return flas_fail(err, errlen, "user '%s' may not use federation '%s' (AllowUsers/AllowGroups in %s)",
                         user, fed->name, "flas.conf");
    if (fed->allow_accounts.n && account && account[0] && !listed(&fed->allow_accounts, account))
        return flas_fail(err, errlen, "account '%s' may not use federation '%s' (AllowAccounts in flas.conf)",
                         account, fed->name);
    return 0;
}
