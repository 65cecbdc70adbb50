/* SHA-256 through OpenSSL's EVP interface, streamed in 1 MiB reads. */
#include "flas/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READ_CHUNK (1 << 20)

void flas_sha256_hex(const unsigned char md[FLAS_SHA256_BYTES], char hex[FLAS_SHA256_HEX])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < FLAS_SHA256_BYTES; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[FLAS_SHA256_HEX_LEN] = '\0';
}

int64_t flas_sha256_fd(int fd, char hex[FLAS_SHA256_HEX_LEN + 1])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(READ_CHUNK);
    int64_t total = -1;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        errno = ENOMEM;
        goto out;
    }
    int64_t n = 0;
    for (;;) {
        ssize_t got = read(fd, buf, READ_CHUNK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            goto out;
        if (got == 0)
            break;
        if (EVP_DigestUpdate(ctx, buf, (size_t)got) != 1)
            goto out;
        n += got;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)
        goto out;
    flas_sha256_hex(md, hex);
    total = n;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return total;
}

flas_sha256_ctx *flas_sha256_begin(void)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return (flas_sha256_ctx *)ctx;
}

int flas_sha256_update(flas_sha256_ctx *c, const void *data, size_t len)
{
    return EVP_DigestUpdate((EVP_MD_CTX *)c, data, len) == 1 ? 0 : -1;
}

int flas_sha256_end_raw(flas_sha256_ctx *c, unsigned char md[FLAS_SHA256_BYTES])
{
    unsigned char full[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int ok = c && EVP_DigestFinal_ex((EVP_MD_CTX *)c, full, &mdlen) == 1 && mdlen == FLAS_SHA256_BYTES;
    EVP_MD_CTX_free((EVP_MD_CTX *)c);
    if (ok)
        memcpy(md, full, FLAS_SHA256_BYTES);
    return ok ? 0 : -1;
}

int flas_sha256_end(flas_sha256_ctx *c, char hex[FLAS_SHA256_HEX_LEN + 1])
{
    unsigned char md[FLAS_SHA256_BYTES];
    if (flas_sha256_end_raw(c, md))
        return -1;
    flas_sha256_hex(md, hex);
    return 0;
}

int flas_sha256_raw(const void *data, size_t len, unsigned char md[FLAS_SHA256_BYTES])
{
    unsigned char full[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(data, len, full, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != FLAS_SHA256_BYTES)
        return -1;
    memcpy(md, full, FLAS_SHA256_BYTES);
    return 0;
}

int flas_sha256_update_fd(flas_sha256_ctx *c, int fd, int64_t off, int64_t len)
{
    unsigned char *buf = malloc(READ_CHUNK);
    int64_t done = 0;
    while (buf && done < len) {
        size_t want = len - done < READ_CHUNK ? (size_t)(len - done) : READ_CHUNK;
        ssize_t got = pread(fd, buf, want, off + done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0 || flas_sha256_update(c, buf, (size_t)got))
            break;
        done += got;
    }
    free(buf);
    return done == len ? 0 : -1;
}

int64_t flas_sha256_range(int fd, int64_t off, int64_t len, char hex[FLAS_SHA256_HEX_LEN + 1])
{
    flas_sha256_ctx *c = flas_sha256_begin();
    if (!c)
        return -1;
    if (flas_sha256_update_fd(c, fd, off, len)) {
        flas_sha256_end(c, hex);
        return -1;
    }
    return flas_sha256_end(c, hex) == 0 ? len : -1;
}

int flas_sha256_file(const char *path, char hex[FLAS_SHA256_HEX], uint64_t *bytes, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: cannot open for hashing: %s", path, strerror(errno));
        return -1;
    }
    int64_t n = flas_sha256_fd(fd, hex);
    int saved = errno;
    close(fd);
    if (n < 0) {
        if (err && errlen)
            snprintf(err, errlen, "%s: read error while hashing: %s", path, strerror(saved));
        return -1;
    }
    if (bytes)
        *bytes = (uint64_t)n;
    return 0;
}

void flas_sha256_buffer(const void *data, size_t len, char hex[FLAS_SHA256_HEX])
{
    unsigned char md[FLAS_SHA256_BYTES];
    if (flas_sha256_raw(data, len, md) == 0)
        flas_sha256_hex(md, hex);
    else
        hex[0] = '\0';
}

int flas_sha256_is_hex(const char *s)
{
    int n = 0;
    for (; s && *s; s++, n++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return n == FLAS_SHA256_HEX_LEN;
}
