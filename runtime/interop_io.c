/* Bounded input files and atomic output files of the converter (interop_internal.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "flas/atomic_file.h"
#include "flas/error.h"
#include "interop_internal.h"

int ix_file_open(ix_file *f, const char *path, char *err, size_t errlen)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->path, sizeof f->path, "%s", path);
    /* O_NONBLOCK: opening a FIFO or a device must not wait for a writer; regular files ignore it. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return flas_fail(err, errlen, "%s: not a regular file", path);
    }
    f->fd = fd;
    f->size = (uint64_t)st.st_size;
    return 0;
}

void ix_file_close(ix_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

int ix_file_read(ix_file *f, uint64_t off, void *buf, size_t n, char *err, size_t errlen)
{
    if (off > f->size || n > f->size - off)
        return flas_fail(err, errlen, "%s: truncated: needs bytes up to %llu, the file has %llu", f->path,
                         (unsigned long long)off + (unsigned long long)n, (unsigned long long)f->size);
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(f->fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return flas_fail(err, errlen, "%s: read error at byte %llu: %s", f->path,
                             (unsigned long long)(off + done), r < 0 ? strerror(errno) : "file shrank while read");
        done += (size_t)r;
    }
    return 0;
}

int ix_read_elems(ix_file *f, uint64_t off, size_t n, flas_dtype dt, float *out, char *err, size_t errlen)
{
    const size_t es = ix_dtype_size(dt);
    if (dt == FLAS_DT_F32) /* no conversion on little-endian hosts: read straight into place */
        return ix_file_read(f, off, out, n * 4, err, errlen);
    unsigned char *buf = malloc(IX_IO_BYTES);
    if (!buf)
        return flas_fail(err, errlen, "out of memory");
    const size_t per = IX_IO_BYTES / es;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i += per) {
        size_t k = n - i < per ? n - i : per;
        rc = ix_file_read(f, off + (uint64_t)i * es, buf, k * es, err, errlen);
        if (!rc)
            ix_to_f32(buf, k, dt, out + i);
    }
    free(buf);
    return rc;
}

int ix_output_free(const char *path, int force, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : flas_fail(err, errlen, "%s: %s", path, strerror(errno));
    if (!force)
        return flas_fail(err, errlen, "%s exists (give --force to replace it)", path);
    if (S_ISREG(st.st_mode))
        return 0;
    return flas_fail(err, errlen, "%s exists and is not a regular file: not replaced", path);
}

int ix_out_create(ix_out *o, const char *final_path, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    snprintf(o->final, sizeof o->final, "%s", final_path);
    o->buf = malloc(IX_IO_BYTES);
    if (!o->buf)
        return flas_fail(err, errlen, "out of memory");
    o->fd = flas_atomic_create(final_path, &o->tmp, err, errlen);
    if (o->fd < 0) {
        free(o->buf);
        o->buf = NULL;
        return -1;
    }
    return 0;
}

static int flush(ix_out *o, char *err, size_t errlen)
{
    if (o->used && flas_atomic_write_all(o->fd, o->buf, o->used) != 0)
        return flas_fail(err, errlen, "%s: write: %s", o->tmp, strerror(errno));
    o->used = 0;
    return 0;
}

int ix_out_write(ix_out *o, const void *data, size_t n, char *err, size_t errlen)
{
    const char *p = data;
    o->written += n;
    if (n >= IX_IO_BYTES) { /* large pieces go straight to the file */
        if (flush(o, err, errlen))
            return -1;
        if (flas_atomic_write_all(o->fd, p, n) != 0)
            return flas_fail(err, errlen, "%s: write: %s", o->tmp, strerror(errno));
        return 0;
    }
    while (n) {
        size_t k = IX_IO_BYTES - o->used < n ? IX_IO_BYTES - o->used : n;
        memcpy(o->buf + o->used, p, k);
        o->used += k;
        p += k;
        n -= k;
        if (o->used == IX_IO_BYTES && flush(o, err, errlen))
            return -1;
    }
    return 0;
}

int ix_out_zeros(ix_out *o, size_t n, char *err, size_t errlen)
{
    static const unsigned char z[256];
    while (n) {
        size_t k = n < sizeof z ? n : sizeof z;
        if (ix_out_write(o, z, k, err, errlen))
            return -1;
        n -= k;
    }
    return 0;
}

int ix_out_write_floats(ix_out *o, const float *x, size_t n, flas_dtype dt, char *err, size_t errlen)
{
    if (dt == FLAS_DT_F32)
        return ix_out_write(o, x, n * 4, err, errlen);
    unsigned char tmp[16384];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < sizeof tmp / 2 ? n - i : sizeof tmp / 2;
        ix_to_half(x + i, k, dt, tmp);
        if (ix_out_write(o, tmp, 2 * k, err, errlen))
            return -1;
        i += k;
    }
    return 0;
}

int ix_out_commit(ix_out *o, int force, char *err, size_t errlen)
{
    int rc = flush(o, err, errlen);
    free(o->buf);
    o->buf = NULL;
    if (rc) {
        ix_out_abort(o);
        return -1;
    }
    /* Without --force an output that appeared meanwhile is never replaced. Either commit closes the
     * descriptor and removes the temporary on failure. */
    rc = force ? flas_atomic_commit(o->fd, o->tmp, o->final, err, errlen)
               : flas_atomic_commit_new(o->fd, o->tmp, o->final, err, errlen);
    o->fd = -1;
    free(o->tmp);
    o->tmp = NULL;
    return rc;
}

void ix_out_abort(ix_out *o)
{
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    if (o->tmp) {
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
    }
    free(o->buf);
    o->buf = NULL;
}
