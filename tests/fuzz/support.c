/* See support.h. */
#define _GNU_SOURCE /* nftw */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[4096];
static pid_t tmpdir_owner;

void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz harness: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode))
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else
        unlink(path);
}

static void remove_tmpdir(void)
{
    /* only the process that made it (libFuzzer's -fork children have their own) */
    if (tmpdir[0] && getpid() == tmpdir_owner)
        rm_tree(tmpdir);
}

const char *fz_tmpdir(void)
{
    if (tmpdir[0])
        return tmpdir;
    const char *base = getenv("TMPDIR");
    if (!base || base[0] != '/')
        base = "/tmp";
    if (snprintf(tmpdir, sizeof tmpdir, "%s/flas-fuzz-XXXXXX", base) >= (int)sizeof tmpdir || !mkdtemp(tmpdir))
        fz_fail("cannot make a temporary directory under %s: %s", base, strerror(errno));
    tmpdir_owner = getpid();
    atexit(remove_tmpdir);
    return tmpdir;
}

static void join(const char *name, char *path, size_t pathlen)
{
    if (snprintf(path, pathlen, "%s/%s", fz_tmpdir(), name) >= (int)pathlen)
        fz_fail("path of %s too long", name);
}

void fz_write_file(const char *name, const void *data, size_t n, char *path, size_t pathlen)
{
    join(name, path, pathlen);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        fz_fail("cannot create %s: %s", path, strerror(errno));
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, (const char *)data + done, n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            fz_fail("cannot write %s: %s", path, strerror(errno));
        done += (size_t)w;
    }
    if (close(fd) != 0)
        fz_fail("cannot write %s: %s", path, strerror(errno));
}

void fz_mkdir(const char *name, char *path, size_t pathlen)
{
    join(name, path, pathlen);
    rm_tree(path);
    if (mkdir(path, 0700) != 0)
        fz_fail("cannot make %s: %s", path, strerror(errno));
}

void fz_remove(const char *name)
{
    char path[4200];
    join(name, path, sizeof path);
    rm_tree(path);
}

char *fz_strndup(const uint8_t *data, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        fz_fail("out of memory");
    if (n)
        memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

size_t fz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **parts, size_t *lens, size_t max)
{
    size_t k = strlen(sep), n = 0, start = 0;
    for (size_t i = 0; n + 1 < max && k && i + k <= size;) {
        if (memcmp(data + i, sep, k) == 0) {
            parts[n] = data + start;
            lens[n++] = i - start;
            i += k;
            start = i;
        } else {
            i++;
        }
    }
    parts[n] = data + start;
    lens[n++] = size - start;
    return n;
}

uint8_t fz_u8(fz_bytes *b)
{
    if (!b->n)
        return 0;
    b->n--;
    return *b->p++;
}

uint16_t fz_u16(fz_bytes *b)
{
    uint16_t lo = fz_u8(b);
    return (uint16_t)(lo | (uint16_t)fz_u8(b) << 8);
}

uint32_t fz_u32(fz_bytes *b)
{
    uint32_t lo = fz_u16(b);
    return lo | (uint32_t)fz_u16(b) << 16;
}

uint64_t fz_u64(fz_bytes *b)
{
    uint64_t lo = fz_u32(b);
    return lo | (uint64_t)fz_u32(b) << 32;
}

size_t fz_str(fz_bytes *b, char *out, size_t max)
{
    size_t n = fz_u8(b);
    if (n > max)
        n = max;
    if (n > b->n)
        n = b->n;
    if (n)
        memcpy(out, b->p, n);
    out[n] = '\0';
    b->p += n;
    b->n -= n;
    return n;
}
