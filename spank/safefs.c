/* No-follow, owner-checked file operations for root-side code (see safefs.h). */
#define _GNU_SOURCE /* renameat2, AT_EMPTY_PATH */
#include "safefs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    int saved = errno;
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    errno = saved;
    return -1;
}

/* One path component: not empty, not "." or "..", no '/'. */
static int component_ok(const char *name)
{
    return name && *name && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/');
}

int safefs_open_trusted_root(const char *path, char *err, size_t errlen)
{
    if (!path || path[0] != '/')
        return errf(err, errlen, "%s: not an absolute path", path ? path : "(null)");
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, "/: %s", strerror(errno));
    char comp[256];
    const char *c = path;
    while (*c) {
        while (*c == '/')
            c++;
        size_t len = strcspn(c, "/");
        if (len == 0)
            break;
        if (len >= sizeof comp) {
            close(fd);
            return errf(err, errlen, "%s: path component too long", path);
        }
        memcpy(comp, c, len);
        comp[len] = '\0';
        c += len;
        if (!component_ok(comp)) {
            close(fd);
            return errf(err, errlen, "%s: '.' or '..' in path", path);
        }
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        close(fd);
        if (next < 0) {
            errno = saved;
            return errf(err, errlen, "%s: component '%s': %s", path, comp,
                        saved == ELOOP || saved == ENOTDIR ? "not a directory (symlink?)" : strerror(saved));
        }
        struct stat st;
        /* Root-owned and writable only by root -- or a sticky directory like /tmp, where nobody else can
         * rename or remove root's entries, so the next component (checked in turn) stays root's. */
        if (fstat(next, &st) || st.st_uid != 0 || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))) {
            close(next);
            errno = EPERM;
            return errf(err, errlen, "%s: component '%s' is not owned by root or is writable by others", path,
                        comp);
        }
        fd = next;
    }
    return fd;
}

int safefs_open_dir(int parent, const char *name, int create, mode_t mode, uid_t owner, gid_t group,
                    uid_t want_owner, char *err, size_t errlen)
{
    if (!component_ok(name)) {
        errno = EINVAL;
        return errf(err, errlen, "'%s': not a single path component", name ? name : "(null)");
    }
    int made = 0;
    if (create) {
        if (mkdirat(parent, name, 0700) == 0)
            made = 1;
        else if (errno != EEXIST)
            return errf(err, errlen, "mkdir %s: %s", name, strerror(errno));
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, "%s: %s", name,
                    errno == ELOOP || errno == ENOTDIR ? "not a directory (symlink?)" : strerror(errno));
    if (made && (fchown(fd, owner, group) || fchmod(fd, mode))) {
        int saved = errno;
        close(fd);
        errno = saved;
        return errf(err, errlen, "%s: cannot set owner/mode: %s", name, strerror(saved));
    }
    struct stat st;
    if (fstat(fd, &st) || (want_owner != SAFEFS_ANY_OWNER && st.st_uid != want_owner)) {
        close(fd);
        errno = EPERM;
        return errf(err, errlen, "%s: owned by uid %u, expected uid %u", name, (unsigned)st.st_uid,
                    (unsigned)want_owner);
    }
    return fd;
}

int safefs_open_regular(int dir, const char *name, struct stat *st, char *err, size_t errlen)
{
    if (!component_ok(name)) {
        errno = EINVAL;
        return errf(err, errlen, "'%s': not a single path component", name ? name : "(null)");
    }
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return errf(err, errlen, "%s: %s", name, errno == ELOOP ? "is a symlink (refused)" : strerror(errno));
    if (fstat(fd, st) || !S_ISREG(st->st_mode)) {
        close(fd);
        errno = EPERM;
        return errf(err, errlen, "%s: not a regular file (refused)", name);
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

int safefs_read_small(int dir, const char *name, char *buf, size_t max, char *err, size_t errlen)
{
    struct stat st;
    int fd = safefs_open_regular(dir, name, &st, err, errlen);
    if (fd < 0)
        return -1;
    if ((size_t)st.st_size > max) {
        close(fd);
        return errf(err, errlen, "%s: larger than %zu bytes (refused)", name, max);
    }
    size_t got = 0;
    while (got < max) {
        ssize_t n = read(fd, buf + got, max - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    return (int)got;
}

static int sync_dir(int dir) { return fsync(dir); }

/* rename without replacing when noreplace (renameat2 RENAME_NOREPLACE): 1 if the target existed. */
static int rename_into(int dir, const char *tmp, const char *name, int noreplace)
{
    if (!noreplace)
        return renameat(dir, tmp, dir, name) ? -1 : 0;
    if (renameat2(dir, tmp, dir, name, RENAME_NOREPLACE) == 0)
        return 0;
    return errno == EEXIST ? 1 : -1;
}

int safefs_write_atomic(int dir, const char *name, const void *data, size_t len, mode_t mode, uid_t owner,
                        gid_t group, int noreplace, char *err, size_t errlen)
{
    char tmp[300];
    if (!component_ok(name) || snprintf(tmp, sizeof tmp, ".%s.tmp.%ld", name, (long)getpid()) >= (int)sizeof tmp) {
        errno = EINVAL;
        return errf(err, errlen, "'%s': bad file name", name ? name : "(null)");
    }
    unlinkat(dir, tmp, 0); /* a leftover of a crashed earlier attempt by this pid */
    int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errf(err, errlen, "create %s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    int ok = 1;
    while (left && ok) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        if (ok) {
            p += n;
            left -= (size_t)n;
        }
    }
    ok = ok && fchown(fd, owner, group) == 0 && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (close(fd))
        ok = 0;
    int rc = ok ? rename_into(dir, tmp, name, noreplace) : -1;
    if (rc != 0) {
        saved = rc < 0 ? errno : saved;
        unlinkat(dir, tmp, 0);
        if (rc < 0) {
            errno = saved;
            return errf(err, errlen, "write %s: %s", name, strerror(saved));
        }
        return 1;
    }
    sync_dir(dir);
    return 0;
}

int safefs_link_fd(int fd, int dir, const char *name, int noreplace, char *err, size_t errlen)
{
    char tmp[300];
    if (!component_ok(name) || snprintf(tmp, sizeof tmp, ".%s.tmp.%ld", name, (long)getpid()) >= (int)sizeof tmp) {
        errno = EINVAL;
        return errf(err, errlen, "'%s': bad file name", name ? name : "(null)");
    }
    unlinkat(dir, tmp, 0);
    /* AT_EMPTY_PATH links the very inode we opened and checked: the user cannot swap it in between. */
    if (linkat(fd, "", dir, tmp, AT_EMPTY_PATH))
        return errf(err, errlen, "link %s: %s", name, strerror(errno));
    int rc = rename_into(dir, tmp, name, noreplace);
    if (rc != 0) {
        int saved = errno;
        unlinkat(dir, tmp, 0);
        if (rc < 0) {
            errno = saved;
            return errf(err, errlen, "rename %s: %s", name, strerror(saved));
        }
        return 1;
    }
    sync_dir(dir);
    return 0;
}
