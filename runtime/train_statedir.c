/* The site's state directory (flas-train --state-dir): the files a site keeps from round to round,
 * never published. Two kinds live there, each filed by round: error-feedback residuals (--update
 * bf16/int8, train_update.c) and the kept inner state (--inner-state keep, train_inner.c). The rules
 * are the same for both and live here: the directory must exist (the default one is created 0700),
 * be writable and outlive the job; a round reads the newest file of an EARLIER round, never its own
 * (a retried round must not read its failed attempt); a file of such a name that is not a regular
 * file is refused, not skipped; pruning removes regular files of exactly the kind's names only and
 * never follows a symbolic link. */
#define _GNU_SOURCE /* dirfd, fstatat */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/error.h"
#include "flas/staging.h"
#include "train_internal.h"

const train_state_kind train_state_residual = {"error-feedback state", flas_stage_residual_name,
                                               flas_stage_parse_residual_name};
const train_state_kind train_state_inner = {"optimizer state", flas_stage_inner_name, flas_stage_parse_inner_name};

int train_state_dir_ok(const flas_train_opts *o, flas_train_comm *c, char *err, size_t errlen)
{
    int ok = 1;
    if ((o->update != FLAS_UPDATE_FULL || o->inner_keep) && c->rank == 0) {
        const char *d = o->state_dir, *src = o->state_dir_from[0] ? o->state_dir_from : "the state directory";
        char out_dir[FLAS_TRAIN_PATH_MAX];
        struct stat st, os;
        flas_dir_of(o->output, out_dir, sizeof out_dir);
        /* the default directory is created private: the residual is the site's state, as its data is */
        if (o->state_dir_default && stat(d, &st) && errno == ENOENT && flas_mkdir_p(d, 0700))
            ok = 0, flas_fail(err, errlen, "cannot create the default state directory %.400s: %s (give "
                              "--state-dir or FLAS_STATE_DIR)", d, strerror(errno));
        else if (stat(d, &st))
            ok = 0, flas_fail(err, errlen, "%s %.400s: %s (the site's state directory must exist)", src, d,
                              strerror(errno));
        else if (!S_ISDIR(st.st_mode))
            ok = 0, flas_fail(err, errlen, "%s %.400s: not a directory", src, d);
        else if (access(d, W_OK | X_OK))
            ok = 0, flas_fail(err, errlen, "%s %.400s: not writable: %s", src, d, strerror(errno));
        /* The job's own directory is new in every job: error feedback kept there would be lost at the
         * next round without a word. */
        else if (stat(out_dir, &os) == 0 && os.st_dev == st.st_dev && os.st_ino == st.st_ino)
            ok = 0, flas_fail(err, errlen, "%s %.400s is the output's directory, which does not outlive the "
                              "job: give a directory of the site that stays from round to round", src, d);
    }
    return flas_train_agree(c->world, ok, err, errlen);
}

int train_state_find_previous(const char *dir, const train_state_kind *k, long round, long *prev, char *err,
                              size_t errlen)
{
    *prev = -1;
    DIR *d = opendir(dir);
    if (!d)
        return flas_fail(err, errlen, "--state-dir %s: %s", dir, strerror(errno));
    long bad = -1;
    for (struct dirent *e; (e = readdir(d));) {
        long r = k->parse(e->d_name);
        if (r < 0 || r >= round)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode)) {
            bad = r > bad ? r : bad;
            continue;
        }
        *prev = r > *prev ? r : *prev;
    }
    closedir(d);
    if (bad > *prev) {
        char name[64];
        k->name(name, sizeof name, bad);
        return flas_fail(err, errlen, "%s/%s is not a regular file: refusing to guess this site's %s (remove it, or "
                         "restore the file)", dir, name, k->what);
    }
    return 0;
}

void train_state_prune(const char *dir, const train_state_kind *k, long keep_from, const flas_train_comm *c)
{
    if (c->rank != 0)
        return;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        long r = k->parse(e->d_name);
        struct stat st;
        if (r < 0 || r >= keep_from || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            train_say(c, "flas-train: removed %s/%s, %s of a round before the last two\n", dir, e->d_name, k->what);
    }
    if (d)
        closedir(d);
}
