/* flas.conf(5): a site's federations, one record per federation, slurm.conf-style Key=Value lines.
 * Parsed by the SPANK plugin (in every Slurm process that loads it) and by admin tools, so this code
 * depends on libc only. Strict: an unknown key, a duplicate key or federation, or a bad value is an
 * error reported as "FILE:LINE: reason". */
#ifndef FLAS_CONF_H
#define FLAS_CONF_H

#include <stddef.h>
#include <sys/types.h>

#include "flas/names.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FLAS_CONF_NAME_MAX FLAS_NAME_MAX /* federation, site, user, group and account names (flas/names.h) */
#define FLAS_CONF_PATH_MAX 1024
#define FLAS_CONF_LIST_MAX 64   /* entries of an Allow* list */

typedef struct flas_name_list {
    int n;                                  /* 0: the key was not given (no restriction) */
    char name[FLAS_CONF_LIST_MAX][FLAS_CONF_NAME_MAX];
} flas_name_list;

typedef struct flas_federation_conf {
    char name[FLAS_CONF_NAME_MAX];          /* Federation= */
    char site[FLAS_CONF_NAME_MAX];          /* Site=: this site's name inside the federation */
    char staging_root[FLAS_CONF_PATH_MAX];  /* StagingRoot=: absolute, root-owned */
    flas_name_list allow_users;             /* AllowUsers= */
    flas_name_list allow_groups;            /* AllowGroups= */
    flas_name_list allow_accounts;          /* AllowAccounts= */
    int line;                               /* where the record starts, for messages */
} flas_federation_conf;

typedef struct flas_conf {
    char path[FLAS_CONF_PATH_MAX];
    int n;
    flas_federation_conf *fed;              /* n records, in file order */
} flas_conf;

/* Parses the file at path. 0, or -1 with "path:line: reason" (or "path: reason") in err. */
int flas_conf_load(const char *path, flas_conf *conf, char *err, size_t errlen);
/* Parses text as if it were the file called path (for tests and for callers that already read it). */
int flas_conf_parse(const char *path, const char *text, flas_conf *conf, char *err, size_t errlen);
void flas_conf_free(flas_conf *conf);
const flas_federation_conf *flas_conf_find(const flas_conf *conf, const char *federation);

/* May user (with primary gid and supplementary groups) and account (NULL or "" = unknown) use fed?
 * 0 if allowed, else -1 with the reason in err. */
int flas_conf_allows(const flas_federation_conf *fed, const char *user, gid_t gid, const gid_t *groups,
                     int ngroups, const char *account, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
