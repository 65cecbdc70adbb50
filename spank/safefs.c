/* No-follow, owner-checked file operations for root-side code (see safefs.h). */
#define _GNU_SOURCE /* renameat2, AT_EMPTY_PATH */
#include "flas/atomic_file.h"
#include "flas/error.h"
#include "safefs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* One path component: not empty, not "." or "..", no '/'. */
static int component_ok(const char *name)
{
    return name && *name && strcmp(name, ".") && strcmp(name, "..") && !strchr(name, '/');
}

int safefs_open_trusted_root(const char *path, char *err, size_t errlen)
{
    if (!path || path[0] != '/')
        return flas_fail(err, errlen, "%s: not an absolute path", path ? path : "(null)");
    int fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return flas_fail(err, errlen, "/: %s", strerror(errno));
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
            return flas_fail(err, errlen, "%s: path component too long", path);
        }
        memcpy(comp, c, len);
        comp[len] = '\0';
        c += len;
        if (!component_ok(comp)) {
            close(fd);
            return flas_fail(err, errlen, "%s: '.' or '..' in path", path);
        }
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int saved = errno;
        close(fd);
        if (next < 0) {
            errno = saved;
            return flas_fail(err, errlen, "%s: component '%s': %s", path, comp,
                        saved == ELOOP || saved == ENOTDIR ? "not a directory (symlink?)" : strerror(saved));
        }
        struct stat st;
        /* Root-owned and writable only by root -- or a sticky directory like /tmp, where nobody else can
         * rename or remove root's entries, so the next component (checked in turn) stays root's. */
        if (fstat(next, &st) || st.st_uid != 0 || ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))) {
            close(next);
            errno = EPERM;
            return flas_fail(err, errlen, "%s: component '%s' is not owned by root or is writable by others", path,
                        comp);
        }
        fd = next;
    }
    return fd;
}

/* err for a failed openat of directory name (errno kept). */
static int not_a_dir(const char *name, char *err, size_t errlen)
{
    return flas_fail(err, errlen, "%s: %s", name,
                errno == ELOOP || errno == ENOTDIR ? "not a directory (symlink?)" : strerror(errno));
}

/* ".<name>.tmp.<host>.<pid>": unique among the nodes that share a staging area, where the same pid can
 * run the same prolog at the same moment on two nodes. */
static int temp_name(char *buf, size_t len, const char *name)
{
    char host[256] = "";
    if (gethostname(host, sizeof host - 1))
        host[0] = '\0';
    for (char *c = host; *c; c++)
        if (*c == '/')
            *c = '_';
    int n = snprintf(buf, len, ".%s.tmp.%s.%ld", name, host, (long)getpid());
    return n > 0 && (size_t)n < len ? 0 : -1;
}

/* renameat2 flags are refused with EINVAL by NFS (and by file systems that lack them), ENOSYS/EOPNOTSUPP
 * elsewhere: then the portable ways below do the same job. */
static int flags_unsupported(int err) { return err == EINVAL || err == ENOSYS || err == EOPNOTSUPP; }

/* Renames directory tmp to name unless name exists: 0, 1 if it existed, -1 on error. */
static int rename_dir_noreplace(int dir, const char *tmp, const char *name)
{
    if (renameat2(dir, tmp, dir, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EEXIST)
        return 1;
    if (!flags_unsupported(errno))
        return -1;
    /* rename(2) refuses a non-empty target and replaces only an empty directory, which can only be one a
     * concurrent creator made the same way (an existing name was opened, not created). */
    if (renameat(dir, tmp, dir, name) == 0)
        return 0;
    return errno == EEXIST || errno == ENOTEMPTY ? 1 : -1;
}

/* Makes directory name with its final owner and mode before it appears under that name (mkdir under a
 * temporary name, chown, chmod, rename), so that the prolog of another node of the same job never sees
 * it half made. Returns a descriptor of the directory called name -- ours, or the one another process
 * made first -- or -1 with err set. */
static int create_dir(int parent, const char *name, mode_t mode, uid_t owner, gid_t group, char *err, size_t errlen)
{
    char tmp[320];
    if (temp_name(tmp, sizeof tmp, name)) {
        errno = ENAMETOOLONG;
        return flas_fail(err, errlen, "'%s': name too long", name);
    }
    unlinkat(parent, tmp, AT_REMOVEDIR); /* a leftover of a crashed earlier attempt on this host by this pid */
    if (mkdirat(parent, tmp, 0700))
        return flas_fail(err, errlen, "mkdir %s: %s", name, strerror(errno));
    int fd = openat(parent, tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int rc = fd < 0 || fchown(fd, owner, group) || fchmod(fd, mode) ? -2 : rename_dir_noreplace(parent, tmp, name);
    int saved = errno;
    if (rc == 0) {
        fsync(parent);
        return fd;
    }
    if (fd >= 0)
        close(fd);
    unlinkat(parent, tmp, AT_REMOVEDIR);
    if (rc == 1) { /* another process made it first: use theirs, checked like any existing directory */
        fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        return fd >= 0 ? fd : not_a_dir(name, err, errlen);
    }
    errno = saved;
    if (rc == -2)
        return flas_fail(err, errlen, "%s: cannot set owner/mode: %s", name, strerror(saved));
    return flas_fail(err, errlen, "mkdir %s: %s", name, strerror(saved));
}

int safefs_open_dir(int parent, const char *name, int create, mode_t mode, uid_t owner, gid_t group,
                    uid_t want_owner, char *err, size_t errlen)
{
    if (!component_ok(name)) {
        errno = EINVAL;
        return flas_fail(err, errlen, "'%s': not a single path component", name ? name : "(null)");
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create)
        fd = create_dir(parent, name, mode, owner, group, err, errlen);
    else if (fd < 0)
        return not_a_dir(name, err, errlen);
    if (fd < 0)
        return -1; /* err says why */
    struct stat st;
    if (fstat(fd, &st)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return flas_fail(err, errlen, "%s: %s", name, strerror(saved));
    }
    if (want_owner != SAFEFS_ANY_OWNER && st.st_uid != want_owner) {
        close(fd);
        errno = EPERM;
        return flas_fail(err, errlen, "%s: owned by uid %u, expected uid %u", name, (unsigned)st.st_uid,
                    (unsigned)want_owner);
    }
    return fd;
}

int safefs_open_regular(int dir, const char *name, struct stat *st, char *err, size_t errlen)
{
    if (!component_ok(name)) {
        errno = EINVAL;
        return flas_fail(err, errlen, "'%s': not a single path component", name ? name : "(null)");
    }
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: %s", name, errno == ELOOP ? "is a symlink (refused)" : strerror(errno));
    if (fstat(fd, st) || !S_ISREG(st->st_mode)) {
        close(fd);
        errno = EPERM;
        return flas_fail(err, errlen, "%s: not a regular file (refused)", name);
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
        return flas_fail(err, errlen, "%s: larger than %zu bytes (refused)", name, max);
    }
    size_t got = flas_read_all(fd, buf, max);
    close(fd);
    buf[got] = '\0';
    return (int)got;
}

static int sync_dir(int dir) { return fsync(dir); }

/* Renames file tmp to name, without replacing an existing name when noreplace: 0, 1 if name existed
 * (tmp is left for the caller to remove), -1 on error. */
static int rename_into(int dir, const char *tmp, const char *name, int noreplace)
{
    if (!noreplace)
        return renameat(dir, tmp, dir, name) ? -1 : 0;
    if (renameat2(dir, tmp, dir, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno == EEXIST)
        return 1;
    if (!flags_unsupported(errno))
        return -1;
    /* link(2) never replaces and makes the complete file appear at once; then drop the temporary name. */
    if (linkat(dir, tmp, dir, name, 0))
        return errno == EEXIST ? 1 : -1;
    unlinkat(dir, tmp, 0);
    return 0;
}

int safefs_write_atomic(int dir, const char *name, const void *data, size_t len, mode_t mode, uid_t owner,
                        gid_t group, int noreplace, char *err, size_t errlen)
{
    char tmp[320];
    if (!component_ok(name) || temp_name(tmp, sizeof tmp, name)) {
        errno = EINVAL;
        return flas_fail(err, errlen, "'%s': bad file name", name ? name : "(null)");
    }
    unlinkat(dir, tmp, 0); /* a leftover of a crashed earlier attempt on this host by this pid */
    int fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return flas_fail(err, errlen, "create %s: %s", tmp, strerror(errno));
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
            return flas_fail(err, errlen, "write %s: %s", name, strerror(saved));
        }
        return 1;
    }
    sync_dir(dir);
    return 0;
}

int safefs_link_fd(int fd, int dir, const char *name, int noreplace, char *err, size_t errlen)
{
    char tmp[320];
    if (!component_ok(name) || temp_name(tmp, sizeof tmp, name)) {
        errno = EINVAL;
        return flas_fail(err, errlen, "'%s': bad file name", name ? name : "(null)");
    }
    unlinkat(dir, tmp, 0);
    /* AT_EMPTY_PATH links the very inode we opened and checked: the user cannot swap it in between. */
    if (linkat(fd, "", dir, tmp, AT_EMPTY_PATH))
        return flas_fail(err, errlen, "link %s: %s", name, strerror(errno));
    int rc = rename_into(dir, tmp, name, noreplace);
    if (rc != 0) {
        int saved = errno;
        unlinkat(dir, tmp, 0);
        if (rc < 0) {
            errno = saved;
            return flas_fail(err, errlen, "rename %s: %s", name, strerror(saved));
        }
        return 1;
    }
    sync_dir(dir);
    return 0;
}
