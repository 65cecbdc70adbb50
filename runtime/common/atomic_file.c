/* Atomic file creation (see atomic_file.h). */
#define _GNU_SOURCE
#include "flas/error.h"
#include "flas/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static mode_t process_umask;
static pthread_once_t umask_once = PTHREAD_ONCE_INIT;

static void read_umask(void)
{
    process_umask = umask(0);
    umask(process_umask);
}

mode_t flas_atomic_mode(mode_t wanted)
{
    /* umask() can only be read by setting it: do that once, not in racing threads. */
    pthread_once(&umask_once, read_umask);
    return wanted & ~process_umask;
}

int flas_atomic_create(const char *final_path, char **tmp_path, char *err, size_t errlen)
{
    char *a = strdup(final_path), *b = strdup(final_path), *tmp = NULL;
    int fd = -1;
    if (!a || !b || asprintf(&tmp, "%s/.%s.tmp.XXXXXX", dirname(a), basename(b)) < 0) {
        tmp = NULL;
        flas_fail(err, errlen, "%s: out of memory", final_path);
        goto out;
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd >= 0 && fchmod(fd, flas_atomic_mode(0666)) != 0) {
        flas_fail(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        fd = -1;
        free(tmp);
        tmp = NULL;
    } else if (fd < 0) {
        flas_fail(err, errlen, "%s: cannot create a temporary file: %s", final_path, strerror(errno));
        free(tmp);
        tmp = NULL;
    }
out:
    free(a);
    free(b);
    *tmp_path = tmp;
    return fd;
}

int flas_atomic_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

size_t flas_read_all(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    return got;
}

int flas_fsync_dir_of(const char *path, int dir)
{
    char *copy = strdup(path);
    if (!copy)
        return -1;
    int fd = open(dir ? copy : dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(copy);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    /* Some file systems cannot fsync a directory (EINVAL): the rename is then as durable as they get. */
    if (rc && (errno == EINVAL || errno == EROFS))
        rc = 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int flas_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

static int commit(int fd, const char *tmp_path, const char *final_path, int replace, char *err, size_t errlen)
{
    if (fsync(fd) != 0) {
        flas_fail(err, errlen, "%s: fsync: %s", tmp_path, strerror(errno));
        close(fd);
        unlink(tmp_path);
        return -1;
    }
    if (close(fd) != 0) {
        flas_fail(err, errlen, "%s: close: %s", tmp_path, strerror(errno));
        unlink(tmp_path);
        return -1;
    }
    if (replace ? rename(tmp_path, final_path) != 0
                : renameat2(AT_FDCWD, tmp_path, AT_FDCWD, final_path, RENAME_NOREPLACE) != 0) {
        if (!replace && errno == EEXIST)
            flas_fail(err, errlen, "%s exists (it appeared while it was being written)", final_path);
        else
            flas_fail(err, errlen, "%s: rename to %s: %s", tmp_path, final_path, strerror(errno));
        unlink(tmp_path);
        return -1;
    }
    if (flas_fsync_dir_of(final_path, 0) != 0)
        return flas_fail(err, errlen, "%s: fsync of its directory: %s", final_path, strerror(errno));
    return 0;
}

int flas_atomic_commit(int fd, const char *tmp_path, const char *final_path, char *err, size_t errlen)
{
    return commit(fd, tmp_path, final_path, 1, err, errlen);
}

int flas_atomic_commit_new(int fd, const char *tmp_path, const char *final_path, char *err, size_t errlen)
{
    return commit(fd, tmp_path, final_path, 0, err, errlen);
}

int flas_atomic_write_file(const char *final_path, const void *data, size_t len, char *err, size_t errlen)
{
    char *tmp = NULL;
    int fd = flas_atomic_create(final_path, &tmp, err, errlen), rc = -1;
    if (fd < 0)
        return -1;
    if (flas_atomic_write_all(fd, data, len) != 0) {
        flas_fail(err, errlen, "%s: write: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
    } else {
        rc = flas_atomic_commit(fd, tmp, final_path, err, errlen);
    }
    free(tmp);
    return rc;
}

int flas_atomic_copy(const char *src, const char *final_path, char *err, size_t errlen)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return flas_fail(err, errlen, "%s: %s", src, strerror(errno));
    char *tmp = NULL;
    int out = flas_atomic_create(final_path, &tmp, err, errlen);
    if (out < 0) {
        close(in);
        return -1;
    }
    enum { BLOCK = 1 << 20 };
    char *buf = malloc(BLOCK);
    int ok = buf != NULL, saved = buf ? 0 : ENOMEM;
    for (ssize_t n; ok && (n = read(in, buf, BLOCK)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0 && flas_atomic_write_all(out, buf, (size_t)n) == 0;
        if (!ok)
            saved = errno;
    }
    free(buf);
    close(in);
    int rc;
    if (!ok) {
        rc = flas_fail(err, errlen, "copying %s to %s: %s", src, final_path, strerror(saved ? saved : EIO));
        close(out);
        unlink(tmp);
    } else {
        rc = flas_atomic_commit(out, tmp, final_path, err, errlen);
    }
    free(tmp);
    return rc;
}

void flas_dir_of(const char *path, char *dir, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, len, ".");
    else if (slash == path)
        snprintf(dir, len, "/");
    else
        snprintf(dir, len, "%.*s", (int)(slash - path), path);
}

int flas_mkdir_p(const char *dir, mode_t mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s", dir) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, mode) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, mode) && errno != EEXIST ? -1 : 0;
}
