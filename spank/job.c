/* The job record, round discovery, submit-time checks and the FLAS_* environment (see job.h).
 * These run as the user (sbatch, srun, the job's steps) and never need privileges. */
#include "job.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/env.h"
#include "flas/staging.h"

int flas_job_record_format(const flas_job_record *rec, char *buf, size_t len)
{
    int n = snprintf(buf, len, "federation=%s\nround=%ld\nsha256=%s\nerror=%s\n", rec->federation, rec->round,
                     rec->sha256, rec->error);
    return n > 0 && (size_t)n < len ? n : -1;
}

int flas_job_record_parse(const char *text, flas_job_record *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->round = -1;
    unsigned seen = 0;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[640];
        if (len >= sizeof buf)
            return -1;
        memcpy(buf, line, len);
        buf[len] = '\0';
        char *eq = strchr(buf, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        const char *v = eq + 1;
        if (!strcmp(buf, "federation") && flas_name_valid(v)) {
            snprintf(rec->federation, sizeof rec->federation, "%s", v);
            seen |= 1;
        } else if (!strcmp(buf, "round")) {
            rec->round = strcmp(v, "-1") ? flas_parse_round(v) : -1;
            if (rec->round < 0 && strcmp(v, "-1"))
                return -1;
            seen |= 2;
        } else if (!strcmp(buf, "sha256") && (!*v || flas_sha256_is_hex(v))) {
            snprintf(rec->sha256, sizeof rec->sha256, "%s", v);
            seen |= 4;
        } else if (!strcmp(buf, "error") && strlen(v) < sizeof rec->error) {
            snprintf(rec->error, sizeof rec->error, "%s", v);
            seen |= 8;
        } else {
            return -1;
        }
        line += len + (end ? 1 : 0);
    }
    return seen == 15 ? 0 : -1;
}

static int open_fed_subdir(const flas_federation_conf *fed, const char *sub, int flags)
{
    char path[FLAS_CONF_PATH_MAX + 2 * FLAS_CONF_NAME_MAX];
    if (snprintf(path, sizeof path, "%s/%s/%s", fed->staging_root, fed->name, sub) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | flags);
}

int flas_job_record_load(const flas_federation_conf *fed, unsigned long jobid, flas_job_record *rec, char *err,
                         size_t errlen)
{
    int dir = open_fed_subdir(fed, FLAS_STAGE_STATE, 0);
    char name[32], text[1024];
    snprintf(name, sizeof name, "%lu", jobid);
    int fd = dir < 0 ? -1 : openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (dir >= 0)
        close(dir);
    if (fd < 0) {
        snprintf(err, errlen, "no prolog record for job %lu in federation '%s'", jobid, fed->name);
        return -1;
    }
    struct stat st;
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 && st.st_size < (off_t)sizeof text)
        n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "job %lu: prolog record is not a root-owned file", jobid);
        return -1;
    }
    text[n] = '\0';
    if (flas_job_record_parse(text, rec) || strcmp(rec->federation, fed->name)) {
        snprintf(err, errlen, "job %lu: prolog record is malformed", jobid);
        return -1;
    }
    return 0;
}

/* Does dir hold "<name>.sha256" beside "<name>"? */
static int has_sidecar(int dir, const char *name)
{
    char side[300];
    struct stat st;
    snprintf(side, sizeof side, "%s%s", name, FLAS_STAGE_SHA256_SUFFIX);
    return fstatat(dir, side, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
           fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

long flas_newest_round_fd(int global_dir)
{
    int fd = dup(global_dir);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* The dup shares its file offset with global_dir: start from the top, whatever an earlier scan left. */
    rewinddir(d);
    long best = -1;
    for (struct dirent *e; (e = readdir(d));) {
        long r = flas_stage_parse_global_name(e->d_name);
        if (r > best && has_sidecar(global_dir, e->d_name))
            best = r;
    }
    closedir(d);
    return best;
}

int flas_check_user(const flas_federation_conf *fed, uid_t uid, const char *account, char *err, size_t errlen)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &res) || !res) {
        snprintf(err, errlen, "uid %u has no passwd entry", (unsigned)uid);
        return -1;
    }
    gid_t groups[256];
    int ngroups = 256;
    if (getgrouplist(res->pw_name, res->pw_gid, groups, &ngroups) < 0)
        ngroups = 0;
    return flas_conf_allows(fed, res->pw_name, res->pw_gid, groups, ngroups, account, err, errlen);
}

int flas_submit_check(const flas_federation_conf *fed, long round, uid_t uid, const char *account,
                      long *round_out, char *err, size_t errlen)
{
    if (flas_check_user(fed, uid, account, err, errlen))
        return -1;
    int dir = open_fed_subdir(fed, FLAS_STAGE_GLOBAL, 0);
    if (dir < 0) {
        snprintf(err, errlen, "federation '%s' has no global model staged at site '%s' (%s/%s/%s: %s)", fed->name,
                 fed->site, fed->staging_root, fed->name, FLAS_STAGE_GLOBAL, strerror(errno));
        return -1;
    }
    char name[32];
    if (round >= 0) {
        flas_stage_global_name(name, sizeof name, round);
        int ok = has_sidecar(dir, name);
        close(dir);
        if (!ok) {
            snprintf(err, errlen, "round %ld of federation '%s' is not staged at site '%s' (no complete %s)", round,
                     fed->name, fed->site, name);
            return -1;
        }
        *round_out = round;
        return 0;
    }
    *round_out = flas_newest_round_fd(dir);
    close(dir);
    if (*round_out < 0) {
        snprintf(err, errlen, "federation '%s' has no global model staged at site '%s' yet", fed->name, fed->site);
        return -1;
    }
    return 0;
}

static void env_set(flas_env *env, const char *name, const char *fmt, const char *a, const char *b, const char *c)
{
    if (env->n >= FLAS_ENV_MAX)
        return;
    snprintf(env->var[env->n].name, sizeof env->var[env->n].name, "%s", name);
    snprintf(env->var[env->n].value, sizeof env->var[env->n].value, fmt, a, b, c);
    env->n++;
}

const char *flas_env_get(const flas_env *env, const char *name)
{
    for (int i = 0; i < env->n; i++)
        if (!strcmp(env->var[i].name, name))
            return env->var[i].value;
    return NULL;
}

void flas_job_env(const flas_federation_conf *fed, long round, unsigned long jobid, flas_env *env)
{
    env->n = 0;
    char stage[FLAS_CONF_PATH_MAX + FLAS_CONF_NAME_MAX + 2], num[32], gname[32], err[512] = "";
    snprintf(stage, sizeof stage, "%s/%s", fed->staging_root, fed->name);
    env_set(env, FLAS_ENV_FEDERATION, "%s", fed->name, "", "");
    env_set(env, FLAS_ENV_SITE, "%s", fed->site, "", "");
    env_set(env, FLAS_ENV_STAGE_DIR, "%s", stage, "", "");
    snprintf(num, sizeof num, "%lu", jobid);
    env_set(env, FLAS_ENV_JOB_ID, "%s", num, "", "");

    flas_job_record rec;
    int have_record = flas_job_record_load(fed, jobid, &rec, err, sizeof err) == 0;
    if (have_record && round >= 0 && rec.round != round) {
        /* A step asked for another round than the job was prepared for: its model is unverified. */
        snprintf(err, sizeof err, "step asks for round %ld but the job was prepared for round %ld", round, rec.round);
        have_record = 0;
    }
    long r = have_record ? rec.round : round;
    if (r < 0) {
        int dir = open_fed_subdir(fed, FLAS_STAGE_GLOBAL, 0);
        r = dir < 0 ? -1 : flas_newest_round_fd(dir);
        if (dir >= 0)
            close(dir);
    }
    if (r >= 0) {
        snprintf(num, sizeof num, "%ld", r);
        env_set(env, FLAS_ENV_ROUND, "%s", num, "", "");
        flas_stage_global_name(gname, sizeof gname, r);
        env_set(env, FLAS_ENV_GLOBAL_CHECKPOINT, "%s/%s/%s", stage, FLAS_STAGE_GLOBAL, gname);
    }
    if (have_record && !rec.error[0]) {
        env_set(env, FLAS_ENV_GLOBAL_SHA256, "%s", rec.sha256, "", "");
        snprintf(num, sizeof num, "%lu", jobid);
        env_set(env, FLAS_ENV_OUTPUT_DIR, "%s/%s/%s", stage, FLAS_STAGE_JOBS, num);
        char out[64];
        snprintf(out, sizeof out, "%s/%s/%s", FLAS_STAGE_JOBS, num, FLAS_STAGE_LOCAL_CHECKPOINT);
        env_set(env, FLAS_ENV_OUTPUT_CHECKPOINT, "%s/%s", stage, out, "");
    } else {
        env_set(env, FLAS_ENV_ERROR, "%s", have_record ? rec.error : err, "", "");
    }
}
